"""Resident memory, start-up and CPU of ``sanduan edge run`` polling three simulated devices
every second, beside the peer gateway's figure.

    .venv/bin/python bench/footprint.py [--seconds 60] [--port 1883] [--kernels aot,jit,numpy]

Three Modbus RTU slaves (a multi-parameter sonde, an optical DO probe and an LDO probe) are
served by :class:`sanduan.hil.devices.SimulatedBus` on a virtual serial pair; the agent polls
each every second, buffers in SQLite (synchronous FULL) and forwards to the MQTT broker on
``--port``, where a test acker acknowledges every batch. RSS is sampled once a second after a
5 s warm-up; the start-up high-water mark is the process's ``VmHWM`` at the end of the run.

One run per grading set-up: ``aot`` (``grading.engine = "numba"`` with the kernels compiled ahead
of time, the default), ``jit`` (the same engine on numba's JIT, the fallback where the package
was built without a C compiler; ``SANDUAN_KERNELS=jit``), ``numpy``
(``grading.engine = "numpy"``) and ``aot-OO`` (``aot`` with ``PYTHONOPTIMIZE=2``, the interpreter
keeping no docstrings or asserts: how the shipped unit, deploy/systemd/sanduan-edge.service, runs
the agent; docs/benchmarks.md).
"Grading ready" is what the agent logs when it has created its
:class:`~sanduan.edge.grader.Grader`: the time to build the grading tables and to load (and
call once) the kernel, i.e. how long the first batch after start waits for grading; its CPU time
too, the figure to read on a loaded machine. The bench byte-compiles sanduan first, as
installing a package does (the agent would otherwise compile its modules at each start where
PYTHONDONTWRITEBYTECODE is set).

The peer is ThingsBoard IoT Gateway 3.8.5, 64 MiB peak RSS at a 1 s poll in bench/peer.py's
side-by-side run (docs/benchmarks.md). Targets: steady peak RSS <= 48 MiB (0.75 of the peer),
start-up high-water mark <= 64 MiB, first grading <= 10 ms, CPU < 3 % of one core.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.edge.acker import Acker  # noqa: E402

from sanduan.hil.devices import SimulatedBus, SimulatedDevice  # noqa: E402
from sanduan.hil.ports import VirtualSerialPair  # noqa: E402
from sanduan.shared.registers import load_profile  # noqa: E402

VALUES = {"w01009": 7.2, "w01010": 18.5, "w01001": 7.6, "w01014": 410.0, "w01003": 12.0}
WARMUP_S = 5.0
PEER_MIB = 64.0
"""ThingsBoard IoT Gateway 3.8.5, peak RSS at a 1 s poll (bench/peer.py, docs/benchmarks.md)."""
TARGET_PEAK_MIB = 48.0
TARGET_HWM_MIB = 64.0
TARGET_FIRST_MS = 10.0
TARGET_CPU = 3.0

SETUPS: dict[str, tuple[str, str, int]] = {
    # name: (grading.engine, SANDUAN_KERNELS, PYTHONOPTIMIZE)
    "aot": ("numba", "aot", 0),
    "jit": ("numba", "jit", 0),
    "numpy": ("numpy", "auto", 0),
    "aot-OO": ("numba", "aot", 2),
}
AGENT_PACKAGES = (
    "numpy",
    "msgspec",
    "typing_extensions",
    "paho",
    "pymodbus",
    "serial",
    "msgpack",
)
"""What the agent imports besides the standard library and sanduan (byte-compiled for -OO)."""


def station_toml(station: str, port: str, db: Path, broker_port: int, engine: str) -> str:
    devices = ""
    for name, slave, profile in (
        ("sonde", 1, "sonde-multi"),
        ("do1", 2, "do-optical"),
        ("do2", 3, "do-ldo"),
    ):
        devices += (
            f'\n  [[bus.device]]\n  name = "{name}"\n  slave = {slave}\n'
            f'  profile = "{profile}"\n  poll_period_s = 1\n  timeout_s = 0.5\n'
        )
    return f"""
[station]
id = "{station}"

[buffer]
path = "{db}"

[uplink]
broker = "mqtt://127.0.0.1:{broker_port}"
heartbeat_s = 10

[grading]
engine = "{engine}"

[[bus]]
name = "rs485-sim"
port = "{port}"
baudrate = 9600
silence_s = 0
{devices}
"""


def _hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


READY = re.compile(r"grading ready in ([0-9.]+) ms, ([0-9.]+) ms of CPU \(([^)]*)\)")


def first_grading(log_text: str) -> tuple[float, float, str]:
    """(wall ms, CPU ms, what grades) from the agent's "grading ready" log line."""
    m = READY.search(log_text)
    if m is None:
        raise SystemExit(f"no 'grading ready' line in the agent's log: {log_text[-2000:]}")
    return float(m.group(1)), float(m.group(2)), m.group(3)


def compile_sources(optimize: int = 0) -> None:
    """Byte-compile sanduan as an installed package is (pip writes the .pyc files at install),
    so that the agent does not compile its modules at every start where the environment says
    PYTHONDONTWRITEBYTECODE. With ``optimize`` 2 (``-OO``, which pip does not write) also the
    libraries the agent imports, as a deployment that sets PYTHONOPTIMIZE=2 would."""
    for part in ("edge", "central", "shared", "hil"):
        compileall.compile_dir(ROOT / part / "sanduan", quiet=1, optimize=optimize)
    if optimize:
        import importlib.util

        for name in AGENT_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin is not None:
                origin = Path(spec.origin)
                if origin.name == "__init__.py":
                    compileall.compile_dir(origin.parent, quiet=1, optimize=optimize)
                else:
                    compileall.compile_file(origin, quiet=1, optimize=optimize)


def measure(
    seconds: float, broker_port: int, engine: str, kernels: str, optimize: int = 0
) -> tuple[float, float, int, float, str]:
    """(peak RSS MiB, CPU % of one core, readings acknowledged, start-up high-water mark MiB,
    the agent's log) of one agent run."""
    station = f"bench-{uuid.uuid4().hex[:8]}"
    sondes = [
        SimulatedDevice(load_profile("sonde-multi"), slave=1, values=VALUES),
        SimulatedDevice(load_profile("do-optical"), slave=2, values=VALUES),
        SimulatedDevice(load_profile("do-ldo"), slave=3, values=VALUES),
    ]
    with tempfile.TemporaryDirectory() as d, VirtualSerialPair() as (dev_port, agent_port):
        cfg = Path(d) / "station.toml"
        db = Path(d) / "buffer.db"
        cfg.write_text(station_toml(station, agent_port, db, broker_port, engine), "utf-8")
        log_path = Path(d) / "agent.log"
        with (
            log_path.open("wb") as log,
            SimulatedBus(dev_port, sondes),
            Acker(port=broker_port, station=station) as acker,
        ):
            sanduan = str(Path(sys.executable).with_name("sanduan"))
            proc = subprocess.Popen(
                [sanduan, "edge", "run", "--config", str(cfg)],
                stdout=log,
                stderr=log,
                env={
                    **os.environ,
                    "SANDUAN_KERNELS": kernels,
                    "PYTHONOPTIMIZE": str(optimize) if optimize else "",
                },
            )
            p = psutil.Process(proc.pid)
            time.sleep(WARMUP_S)
            cpu0 = p.cpu_times()
            t0 = time.monotonic()
            rss: list[int] = []
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                if proc.poll() is not None:
                    raise SystemExit(f"agent exited: {log_path.read_text()[-2000:]}")
                rss.append(p.memory_info().rss)
            cpu1 = p.cpu_times()
            wall = time.monotonic() - t0
            hwm = _hwm_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            received = len(acker.received)
        log_text = log_path.read_text("utf-8", errors="replace")
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return max(rss) / 2**20, 100.0 * cpu_s / wall, received, hwm, log_text


def verdict(value: float, target: float) -> str:
    return f"{'ok' if value <= target else 'MISS'}, ratio {value / target:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per set-up")
    ap.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    ap.add_argument(
        "--kernels",
        default="aot,jit,numpy,aot-OO",
        help="comma-separated set-ups: aot (default engine), jit (its fallback), numpy,"
        " aot-OO (aot with PYTHONOPTIMIZE=2: no docstrings or asserts in memory)",
    )
    a = ap.parse_args()
    setups = [k.strip() for k in a.kernels.split(",") if k.strip()]
    unknown = [k for k in setups if k not in SETUPS]
    if unknown:
        raise SystemExit(f"unknown set-up(s) {unknown}; choose from {sorted(SETUPS)}")
    compile_sources()
    if any(SETUPS[k][2] for k in setups):
        compile_sources(optimize=2)
    print(
        f"sanduan edge run, 3 simulated devices polled every 1 s, {a.seconds:.0f} s each;"
        f" peer (ThingsBoard IoT Gateway 3.8.5): {PEER_MIB:.0f} MiB peak RSS"
    )
    for name in setups:
        engine, kernels, optimize = SETUPS[name]
        peak, cpu, received, hwm, log_text = measure(a.seconds, a.port, engine, kernels, optimize)
        first, first_cpu, graded_by = first_grading(log_text)
        print(
            f"  {name:6s}  steady peak RSS {peak:5.1f} MiB (target <= {TARGET_PEAK_MIB:.0f}:"
            f" {verdict(peak, TARGET_PEAK_MIB)}; vs peer {peak / PEER_MIB:.2f})"
            f"   start-up high-water {hwm:5.1f} MiB (target <= {TARGET_HWM_MIB:.0f}:"
            f" {verdict(hwm, TARGET_HWM_MIB)})"
            f"   grading ready {first:7.1f} ms after it was asked for, {first_cpu:.1f} ms of CPU"
            f" ({graded_by}; target <= {TARGET_FIRST_MS:.0f}: {verdict(first, TARGET_FIRST_MS)})"
            f"   CPU {cpu:4.2f} % of one core (target < {TARGET_CPU:.0f}:"
            f" {verdict(cpu, TARGET_CPU)})   {received} readings acknowledged"
        )


if __name__ == "__main__":
    main()

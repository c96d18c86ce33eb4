"""Resident memory and CPU of ``sanduan edge run`` polling three simulated devices every second.

    .venv/bin/python bench/footprint.py [--seconds 60] [--port 1883]

Three Modbus RTU slaves (a multi-parameter sonde, an optical DO probe and an LDO probe) are
served by :class:`sanduan.hil.devices.SimulatedBus` on a virtual serial pair; the agent polls
each every second, buffers in SQLite (synchronous FULL) and forwards to the MQTT broker on
``--port``, where a test acker acknowledges every batch. Sampled with psutil once a second
after a 5 s warm-up. Targets: under 120 MB RSS and under 3 % of one core. The start-up high-water
mark (``VmHWM``: loading numba and the grading kernel, before the agent releases LLVM's pages)
is printed too.
"""

from __future__ import annotations

import argparse
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


def measure(seconds: float, broker_port: int, engine: str) -> tuple[float, float, int, float]:
    """(peak RSS MiB, CPU % of one core, readings acknowledged, start-up high-water mark MiB)
    of one agent run."""
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
                [sanduan, "edge", "run", "--config", str(cfg)], stdout=log, stderr=log
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
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return max(rss) / 2**20, 100.0 * cpu_s / wall, received, hwm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per engine")
    ap.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    ap.add_argument("--engine", choices=["numba", "numpy", "both"], default="both")
    a = ap.parse_args()
    engines = ["numba", "numpy"] if a.engine == "both" else [a.engine]
    print(f"sanduan edge run, 3 simulated devices polled every 1 s, {a.seconds:.0f} s each")
    for engine in engines:
        peak, cpu, received, hwm = measure(a.seconds, a.port, engine)
        mb = peak * 1.048576
        print(
            f"  grading.engine={engine:5s}  peak RSS {peak:6.1f} MiB ({mb:.0f} MB, target < 120:"
            f" {'ok' if mb < 120 else 'OVER'}, ratio {mb / 120:.2f})   CPU {cpu:5.2f} % of one"
            f" core (target < 3: {'ok' if cpu < 3 else 'OVER'}, ratio {cpu / 3:.2f})"
            f"   {received} readings acknowledged; start-up high-water mark {hwm:.1f} MiB"
        )


if __name__ == "__main__":
    main()

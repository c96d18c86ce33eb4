"""Side by side: ``sanduan edge run`` against ThingsBoard IoT Gateway 3.8.5 on the same bus.

    .venv/bin/python bench/peer.py                   # both gateways, 60 s windows (~15 min)
    .venv/bin/python bench/peer.py --only sanduan --quick          # smoke run, under 2 min
    .venv/bin/python bench/peer.py --skip-peer       # sanduan only, peer's published figures

The bus: one simulator (the ``sim`` sub-command of this file, run as its own process) serves
3 Modbus RTU slaves on one end of a socat pty pair, each with 5 float32 values in holding
registers 0..9, big-endian ABCD (temperature, pH, conductivity, dissolved oxygen, turbidity).
With ``--baud`` (9600 by default) it waits the wire time of each request and reply before
answering, as a 9600 8N1 line would. Every value it serves encodes when (0.01 s) and by which
unit it was served, so each datapoint that reaches the centre is matched to the request that
read it. The simulator logs every request: the request counts come from the bus, not from the
gateways. The same simulator and the same measurements are used for both gateways.

The centre: a private mosquitto per phase (free port on 127.0.0.1, persistence on), and

- for sanduan, the real collector ``sanduan central run`` with a SQLite store: a reading is
  delivered when it is in the collector's database (and the station has the ack);
  committed = readings in the station's buffer;
- for the peer, an in-process subscriber that plays the ThingsBoard server (answers the
  gateway's ``getSessionLimits`` RPC, records every datapoint of ``v1/gateway/telemetry``).

Phases (each starts everything afresh, warms up, measures a window, then stops the simulator
and waits for the centre to drain): ``idle`` (poll every 600 s), ``poll_1s``, ``fast`` (the
fastest poll, ``--fast-ms``, on the 9600-baud line), ``fast_noline`` (the same without wire
time, as the peer's published figures were taken; skipped by ``--quick``), ``outage`` (1 s
polls, broker stopped for ``--outage`` s, restarted with its persistence file).

CPU is utime+stime of the gateway process (and any children) over the window, as a percentage
of one core; memory is VmRSS sampled every second. Results: a table with the ratios and
PASS/MISS per target, and ``SCRATCH/results.json`` (default SCRATCH=/tmp/sanduan-peer).
The peer is installed from PyPI into ``SCRATCH/venv`` when it is not there yet.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATES = HERE / "peer"

PEER_NAME = "ThingsBoard IoT Gateway"
PEER_VERSION = "3.8.5"
# The gateway does not declare pymodbus: its Modbus connector pip-installs pymodbus 3.9.2,
# pyserial and pyserial-asyncio at first import unless they are there. Install them up front.
PEER_PACKAGES = (
    f"thingsboard-gateway=={PEER_VERSION}",
    "pymodbus==3.9.2",
    "pyserial",
    "pyserial-asyncio",
)
PEER_STORAGES = ("sqlite", "memory")

# The 5 values of each slave: name, HJ 212 code, base value, step per encoded unit.
NAMES = ("temperature", "ph", "conductivity", "dissolved_oxygen", "turbidity")
CODES = ("w01010", "w01001", "w01014", "w01009", "w01003")
BASE = (15.0, 6.0, 400.0, 7.0, 5.0)
STEP = (1e-5, 2e-6, 1e-4, 2e-6, 1e-5)
UNITS = (1, 2, 3)
WRAP_CENTIS = 100_000  # the served time wraps every 1000 s (values stay plausible)
REG_COUNT = 10

TICK = os.sysconf("SC_CLK_TCK")
TAIL_S = 1.0
"""Readings served in the last second before the simulator stops are not counted as lost:
the device poll they belong to may be cut short by the stop (a gateway then drops the poll)."""

# From /work/shared/peers/tbgw/README.md (sqlite storage, pty without line time): used when
# the peer is not measured in this run.
PUBLISHED: dict[str, float] = {
    "requests_per_round": 15.0,
    "fast_readings_per_s": 145.0,
    "cpu_idle_pct": 5.0,
    "cpu_poll_1s_pct": 8.0,
    "rss_mib_peak": 67.4,
    "rss_mib_mean": 66.8,
    "outage_lost": 0.0,
}


# --- the simulated bus ------------------------------------------------------------------------


def encode_value(k: int, unit: int, centis: int) -> float:
    n = (centis % WRAP_CENTIS) * 4 + unit
    return BASE[k] + n * STEP[k]


def decode_value(k: int, value: float) -> tuple[int, int] | None:
    """(unit, served time in 0.01 s modulo WRAP_CENTIS) of a value, None if it is not ours."""
    n = round((value - BASE[k]) / STEP[k])
    if n < 4:
        return None
    return n % 4, n // 4


def sim_registers(unit: int, centis: int) -> list[int]:
    raw = struct.pack(">5f", *(encode_value(k, unit, centis) for k in range(5)))
    return list(struct.unpack(">10H", raw))


def sim_main(argv: list[str]) -> None:
    """The ``sim`` sub-command: serve UNITS on a serial device until SIGTERM."""
    from sanduan.hil.rtu import crc_ok, exception_reply, read_reply

    ap = argparse.ArgumentParser(prog="peer.py sim")
    ap.add_argument("--port", required=True)
    ap.add_argument("--log", required=True, type=Path, help="CSV, one line per request")
    ap.add_argument("--summary", required=True, type=Path)
    ap.add_argument("--baud", type=int, default=0, help="emulate the wire time of this baud rate")
    a = ap.parse_args(argv)

    fd = os.open(a.port, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    t0, t0_epoch = time.monotonic(), time.time()
    stats: dict[str, Any] = {"t0_epoch": t0_epoch, "requests": 0, "bad_bytes": 0, "other": 0}
    running = [True]

    def _stop(signum: int, frame: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    buf = bytearray()
    with a.log.open("w", buffering=1 << 16) as log:
        log.write(f"# t0_epoch={t0_epoch:.6f}\n")
        last_flush = time.monotonic()
        while running[0]:
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except InterruptedError:
                continue
            if ready:
                try:
                    buf += os.read(fd, 512)
                except OSError:
                    time.sleep(0.05)
            while len(buf) >= 8:  # FC03/FC04 requests are 8 bytes
                frame = bytes(buf[:8])
                if not crc_ok(frame):
                    del buf[0]
                    stats["bad_bytes"] += 1
                    continue
                del buf[:8]
                unit, fc, addr, count = struct.unpack(">BBHH", frame[:6])
                if unit not in UNITS:
                    stats["other"] += 1
                    continue
                now = time.time()
                centis = round((time.monotonic() - t0) * 100)
                served = ""
                if fc not in (3, 4):
                    reply = exception_reply(unit, fc, 1)
                elif count == 0 or addr + count > REG_COUNT:
                    reply = exception_reply(unit, fc, 2)
                else:
                    reply = read_reply(unit, fc, sim_registers(unit, centis)[addr : addr + count])
                    served = str(centis)
                if a.baud:
                    time.sleep((len(frame) + len(reply)) * 10.0 / a.baud)
                os.write(fd, reply)
                stats["requests"] += 1
                log.write(f"{now:.4f},{unit},{fc},{addr},{count},{served}\n")
            if time.monotonic() - last_flush > 1:
                log.flush()
                last_flush = time.monotonic()
    stats["t_end_epoch"] = time.time()
    a.summary.write_text(json.dumps(stats, indent=1), "utf-8")


@dataclass
class Served:
    """What the simulator served: request times, and per reading (unit, key, centis) its time."""

    t0_epoch: float
    requests: list[float]
    readings: dict[tuple[int, int, int], float]  # first time each reading was served
    reading_times: list[float]  # one entry per float served (repeats included)
    round_starts: list[float]  # requests that read unit 1 from register 0


def load_served(log: Path) -> Served:
    t0 = 0.0
    requests: list[float] = []
    readings: dict[tuple[int, int, int], float] = {}
    times: list[float] = []
    rounds: list[float] = []
    with log.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                t0 = float(line.split("=", 1)[1])
                continue
            parts = line.rstrip("\n").split(",")
            if len(parts) != 6:
                continue  # a line cut short when the simulator stopped
            t = float(parts[0])
            requests.append(t)
            if not parts[5]:
                continue
            unit, addr, count = int(parts[1]), int(parts[3]), int(parts[4])
            centis = int(parts[5]) % WRAP_CENTIS
            if addr % 2:
                continue
            if unit == UNITS[0] and addr == 0:
                rounds.append(t)
            for k in range(addr // 2, (addr + count) // 2):
                readings.setdefault((unit, k, centis), t)
                times.append(t)
    return Served(t0, requests, readings, times, rounds)


# --- processes and /proc --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.setdefault(int(fields[1]), []).append(int(d.name))
    return out


def process_tree(pid: int) -> list[int]:
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids: Iterable[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return out


def rss_kib(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Procs:
    """Every process a phase starts, each stopped by its own PID."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.p: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.run / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=self.run, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.p[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 20.0) -> float:
        """Stop one process; returns the seconds it took."""
        proc = self.p.pop(name, None)
        t = time.monotonic()
        if proc is None or proc.poll() is not None:
            return 0.0
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return time.monotonic() - t

    def stop_all(self) -> None:
        for name in list(self.p)[::-1]:
            self.stop(name)


# --- the two centres ------------------------------------------------------------------------


class TbSink:
    """Stands in for the ThingsBoard server: records every telemetry datapoint on arrival."""

    SESSION_LIMITS = json.dumps(
        {
            "maxPayloadSize": 65536,
            "maxInflightMessages": 100,
            "rateLimits": {},
            "gatewayRateLimits": {},
        }
    )

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port = port
        self.rows: list[tuple[float, int, int, float]] = []  # arrival, unit, key index, value
        self.other = 0  # datapoints that are none of ours
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-tbsink",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_connect(self, client: Any, *_: Any) -> None:
        client.subscribe("v1/#", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        topic: str = msg.topic
        if topic.startswith("v1/devices/me/rpc/request/"):
            req = json.loads(msg.payload)
            if req.get("method") == "getSessionLimits":
                rid = topic.rsplit("/", 1)[1]
                client.publish(f"v1/devices/me/rpc/response/{rid}", self.SESSION_LIMITS, qos=1)
            return
        if topic != "v1/gateway/telemetry":
            return
        rows = []
        other = 0
        for device, entries in json.loads(msg.payload).items():
            unit = int(str(device).rsplit("-", 1)[1])
            for e in entries if isinstance(entries, list) else [entries]:
                for key, value in e.get("values", e).items():
                    if key == "ts":
                        continue
                    if key in NAMES and isinstance(value, int | float):
                        rows.append((now, unit, NAMES.index(key), float(value)))
                    else:
                        other += 1
        with self.lock:
            self.rows.extend(rows)
            self.other += other

    def count(self) -> int:
        with self.lock:
            return len(self.rows)

    def snapshot(self) -> list[tuple[float, int, int, float]]:
        with self.lock:
            return list(self.rows)

    def start(self) -> TbSink:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("sink: no SUBACK from the broker")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.Error:  # schema not there yet
        return []
    finally:
        con.close()


def edge_committed(db: Path) -> int:
    rows = _query(db, "SELECT value FROM meta WHERE key = 'next_seq'")
    return int(rows[0][0]) - 1 if rows else 0


def edge_dropped(db: Path) -> int:
    rows = _query(db, "SELECT value FROM meta WHERE key = 'dropped'")
    return int(rows[0][0]) if rows else 0


def central_count(db: Path, station: str) -> int:
    rows = _query(db, "SELECT count(*) FROM readings WHERE station = ?", (station,))
    return int(rows[0][0]) if rows else 0


# --- configurations -------------------------------------------------------------------------


def station_toml(
    station: str, tty_path: str, db: Path, port: int, period_s: float, *, line: bool, engine: str
) -> str:
    regs = ", ".join(
        f'{{ name = "{n}", code = "{c}", address = {2 * k}, function = 3, type = "float32",'
        f' order = "ABCD" }}'
        for k, (n, c) in enumerate(zip(NAMES, CODES, strict=True))
    )
    silence = "" if line else "silence_s = 0\n"
    devices = "".join(
        f'\n  [[bus.device]]\n  name = "sonde-{u}"\n  slave = {u}\n  poll_period_s = {period_s}\n'
        f"  timeout_s = 1.0\n  registers = [{regs}]\n"
        for u in UNITS
    )
    return (
        f'[station]\nid = "{station}"\n\n[buffer]\npath = "{db}"\n\n'
        f'[uplink]\nbroker = "mqtt://127.0.0.1:{port}"\n\n'
        f'[grading]\nengine = "{engine}"\n\n'
        f'[[bus]]\nname = "rs485"\nport = "{tty_path}"\nbaudrate = 9600\nparity = "N"\n'
        f"stopbits = 1\n{silence}{devices}"
    )


def central_toml(db: Path, port: int) -> str:
    return (
        f'[central]\nstore = "sqlite:///{db}"\n\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\nclient_id = "bench-central"\n'
    )


def write_peer_config(run: Path, tty_path: str, port: int, period_ms: int, storage: str) -> Path:
    cfg = run / "config"
    for d in (cfg, run / "logs", run / "data"):
        d.mkdir(parents=True, exist_ok=True)
    gw = json.loads((TEMPLATES / "tb_gateway.json").read_text("utf-8"))
    gw["thingsboard"]["port"] = port
    gw["storage"] = json.loads((TEMPLATES / f"storage_{storage}.json").read_text("utf-8"))
    (cfg / "tb_gateway.json").write_text(json.dumps(gw, indent=2), "utf-8")
    template = json.loads((TEMPLATES / "modbus_slave.json").read_text("utf-8"))
    slaves = []
    for u in UNITS:
        slave = dict(template)
        slave.update(port=tty_path, pollPeriod=period_ms, unitId=u, deviceName=f"sonde-{u}")
        # One timeseries entry per value, as the connector is configured for named keys.
        slave["timeseries"] = [
            {"tag": n, "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 2 * k}
            for k, n in enumerate(NAMES)
        ]
        slaves.append(slave)
    (cfg / "modbus_rtu.json").write_text(
        json.dumps({"master": {"slaves": slaves}}, indent=2), "utf-8"
    )
    shutil.copy(TEMPLATES / "logs.json", cfg / "logs.json")
    return cfg


def write_mosquitto_conf(run: Path, port: int) -> Path:
    mq = run / "mqtt"
    mq.mkdir(exist_ok=True)
    text = (TEMPLATES / "mosquitto.conf.in").read_text("utf-8")
    text = text.replace("@PORT@", str(port)).replace("@DIR@", str(mq))
    text = text.replace("@USER@", getpass.getuser())
    path = run / "mosquitto.conf"
    path.write_text(text, "utf-8")
    return path


# --- the peer's installation ----------------------------------------------------------------


def peer_python(scratch: Path) -> Path:
    return scratch / "venv" / "bin" / "python"


def peer_installed(scratch: Path) -> bool:
    py = peer_python(scratch)
    if not (scratch / "venv" / "bin" / "thingsboard-gateway").exists() or not py.exists():
        return False
    check = (
        "import importlib.metadata as m; import thingsboard_gateway, pymodbus;"
        f" assert m.version('thingsboard-gateway') == '{PEER_VERSION}';"
        " assert pymodbus.__version__ == '3.9.2'"
    )
    return subprocess.run([str(py), "-c", check], capture_output=True, check=False).returncode == 0


def install_peer(scratch: Path) -> str | None:
    """Install the peer into SCRATCH/venv if needed; None when ready, else the reason."""
    if peer_installed(scratch):
        print(f"peer: {PEER_NAME} {PEER_VERSION} already installed in {scratch / 'venv'}")
        return None
    print(
        f"peer: installing {PEER_NAME} {PEER_VERSION} from PyPI into {scratch / 'venv'}"
        f" ({', '.join(PEER_PACKAGES)}); this takes a minute",
        flush=True,
    )
    scratch.mkdir(parents=True, exist_ok=True)
    log = scratch / "install.log"
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(scratch / "venv")],
        [str(peer_python(scratch)), "-m", "pip", "install", "-q", *PEER_PACKAGES],
    ]
    with log.open("w", encoding="utf-8") as out:
        for argv in steps:
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
            if rc != 0:
                return f"`{' '.join(argv)}` failed (exit {rc}); see {log}"
    if not peer_installed(scratch):
        return f"installed, but the peer does not import; see {log}"
    freeze = subprocess.run(
        [str(peer_python(scratch)), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=False,
    )
    (scratch / "venv-freeze.txt").write_text(freeze.stdout, "utf-8")
    print(f"peer: installed; packages listed in {scratch / 'venv-freeze.txt'}")
    return None


# --- one phase --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    period_s: float
    line: bool  # emulate 9600-baud wire time
    window_s: float
    outage_s: float = 0.0
    before_s: float = 0.0  # for the outage: polling before the broker stops

    @property
    def period_ms(self) -> int:
        return max(1, round(self.period_s * 1000))


@dataclass
class Delivered:
    """What reached the centre: (arrival epoch, unit, key index, value) per datapoint."""

    rows: list[tuple[float, int, int, float]] = field(default_factory=list)
    unknown: int = 0


def sanduan_delivered(db: Path, station: str) -> Delivered:
    rows = _query(db, "SELECT received_ms, code, value FROM readings WHERE station = ?", (station,))
    out = Delivered()
    for received_ms, code, value in rows:
        if value is None or code not in CODES:
            out.unknown += 1
            continue
        k = CODES.index(code)
        dec = decode_value(k, float(value))
        if dec is None:
            out.unknown += 1
            continue
        out.rows.append((received_ms / 1000.0, dec[0], k, float(value)))
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def rnd(x: float | None, n: int = 1) -> float | None:
    return None if x is None else round(x, n)


class PhaseRunner:
    def __init__(self, gateway: str, phase: Phase, a: Any) -> None:
        self.gw = gateway
        self.ph = phase
        self.a = a
        self.run = Path(a.scratch) / "runs" / f"{gateway}-{phase.name}"
        if self.run.exists():
            shutil.rmtree(self.run)
        self.run.mkdir(parents=True)
        self.procs = Procs(self.run)
        self.port = free_port()
        self.station = f"bench-{phase.name.replace('_', '-')}"
        self.edge_db = self.run / "buffer.db"
        self.central_db = self.run / "central.db"
        self.sink: TbSink | None = None
        self.ev: dict[str, Any] = {"gateway": gateway, "phase": asdict(phase)}

    # centre-side counts
    def delivered_count(self) -> int:
        if self.sink is not None:
            return self.sink.count()
        return central_count(self.central_db, self.station)

    def start_broker(self) -> None:
        conf = write_mosquitto_conf(self.run, self.port)
        self.procs.start("mosquitto", ["mosquitto", "-c", str(conf)])
        if not wait_port(self.port):
            raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.run}")

    def start_centre(self) -> None:
        if self.gw == "peer":
            self.sink = TbSink(self.port).start()
            return
        cfg = self.run / "central.toml"
        cfg.write_text(central_toml(self.central_db, self.port), "utf-8")
        sanduan = str(Path(sys.executable).with_name("sanduan"))
        self.procs.start("central", [sanduan, "central", "run", "--config", str(cfg), "--migrate"])
        out = self.run / "central.out"
        deadline = time.monotonic() + 60
        while b"subscribed to" not in out.read_bytes():
            if self.procs.p["central"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the collector did not subscribe; see {out}")
            time.sleep(0.05)

    def start_gateway(self, tty_path: str) -> subprocess.Popen[bytes]:
        if self.gw == "peer":
            cfg = write_peer_config(
                self.run, tty_path, self.port, self.ph.period_ms, self.a.peer_storage
            )
            env = dict(os.environ, TB_GW_CONFIG_DIR=str(cfg))
            exe = Path(self.a.scratch) / "venv" / "bin" / "thingsboard-gateway"
            return self.procs.start("gateway", [str(exe)], env=env)
        cfg = self.run / "station.toml"
        text = station_toml(
            self.station,
            tty_path,
            self.edge_db,
            self.port,
            self.ph.period_s,
            line=self.ph.line,
            engine=self.a.engine,
        )
        cfg.write_text(text, "utf-8")
        sanduan = str(Path(sys.executable).with_name("sanduan"))
        return self.procs.start("gateway", [sanduan, "edge", "run", "--config", str(cfg)])

    def started(self) -> bool:
        """The gateway produced its first reading (committed; or delivered for the peer)."""
        if self.gw == "peer":
            return self.delivered_count() > 0
        return edge_committed(self.edge_db) > 0

    def execute(self) -> dict[str, Any]:
        from sanduan.hil.ports import VirtualSerialPair

        ev, ph = self.ev, self.ph
        pair = VirtualSerialPair(backend="socat")
        dev_port, gw_port = pair.open()
        try:
            self.start_broker()
            self.start_centre()
            self.procs.start(
                "sim",
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "sim",
                    "--port",
                    dev_port,
                    "--log",
                    str(self.run / "sim.csv"),
                    "--summary",
                    str(self.run / "sim.json"),
                    "--baud",
                    str(9600 if ph.line else 0),
                ],
            )
            time.sleep(0.3)
            ev["t_gateway_start"] = time.time()
            gw = self.start_gateway(gw_port)
            while not self.started():
                if gw.poll() is not None or time.time() - ev["t_gateway_start"] > 120:
                    raise RuntimeError(f"{self.gw} produced nothing; see {self.run}")
                time.sleep(0.05)
            ev["t_first_reading"] = time.time()
            time.sleep(self.a.warmup)
            self.window(gw.pid)
            # Stop the bus, then wait until the centre has everything (or stops receiving).
            self.procs.stop("sim")
            ev["t_sim_stop"] = time.time()
            ev["drained"] = self.drain()
            ev["t_drained"] = time.time()
            ev["gateway_stop_s"] = round(
                self.procs.stop("gateway", signal.SIGINT if self.gw == "peer" else signal.SIGTERM),
                2,
            )
            if self.gw == "sanduan":
                ev["committed"] = edge_committed(self.edge_db)
                ev["edge_dropped"] = edge_dropped(self.edge_db)
        finally:
            self.procs.stop("gateway", signal.SIGKILL)
            self.procs.stop("central")
            if self.sink is not None:
                self.sink.stop()
            self.procs.stop_all()
            pair.close()
        (self.run / "events.json").write_text(json.dumps(ev, indent=1, default=str), "utf-8")
        return self.analyze()

    def window(self, pid: int) -> None:
        ev, ph = self.ev, self.ph
        tree = process_tree(pid)
        ev["gateway_pids"] = tree
        total = ph.before_s + ph.outage_s + ph.window_s if ph.outage_s else ph.window_s
        samples: list[int] = []
        ev["ws"] = time.time()
        c0 = cpu_ticks(tree)
        mono0 = time.monotonic()
        while (t := time.monotonic() - mono0) < total:
            if ph.outage_s and t >= ph.before_s and "t_down" not in ev:
                self.procs.stop("mosquitto")
                ev["t_down"] = time.time()
            if ph.outage_s and t >= ph.before_s + ph.outage_s and "t_up" not in ev:
                self.start_broker()
                ev["t_up"] = time.time()
            samples.append(rss_kib(tree))
            time.sleep(max(0.0, 1 - (time.monotonic() - mono0) % 1))
        c1 = cpu_ticks(tree)
        ev["we"] = time.time()
        ev["cpu_s"] = sum(c1[p] - c0[p] for p in c1 if p in c0) / TICK
        ev["rss_kib"] = samples

    def drain(self) -> bool:
        """Wait until the centre has every reading (sanduan: every committed one; the peer:
        every one served), or nothing new arrived for ``settle`` seconds."""
        settle, timeout = 10.0, self.a.drain_timeout
        t0 = time.monotonic()
        if self.gw == "sanduan":
            time.sleep(2.5)  # the last readings of the bus are committed within 1 s

            def done() -> bool:
                n = edge_committed(self.edge_db)
                return n > 0 and central_count(self.central_db, self.station) >= n

        else:
            cutoff = self.ev["t_sim_stop"] - TAIL_S
            log = load_served(self.run / "sim.csv")
            served = {k for k, t in log.readings.items() if t < cutoff}

            def done() -> bool:
                assert self.sink is not None
                got = {(u, k, c) for _, u, k, v in self.sink.snapshot() for c in _centis(k, v)}
                return served <= got

        last, changed = self.delivered_count(), time.monotonic()
        while time.monotonic() - t0 < timeout:
            if done():
                return True
            time.sleep(0.5)
            n = self.delivered_count()
            if n != last:
                last, changed = n, time.monotonic()
            elif time.monotonic() - changed > settle:
                return False
        return False

    def analyze(self) -> dict[str, Any]:
        ev, ph = self.ev, self.ph
        served = load_served(self.run / "sim.csv")
        if self.sink is not None:
            delivered = Delivered(self.sink.snapshot(), self.sink.other)
        else:
            delivered = sanduan_delivered(self.central_db, self.station)
        ws, we = ev["ws"], ev["we"]
        dur = we - ws
        got: dict[tuple[int, int, int], float] = {}
        for arrival, unit, k, value in delivered.rows:
            for c in _centis(k, value):
                key = (unit, k, c)
                if key not in got or arrival < got[key]:
                    got[key] = arrival
        requests = sum(ws <= t < we for t in served.requests)
        # A poll round reads unit 1's first register once, whichever way it splits the reads.
        # Requests per round count whole rounds only: from the first round start in the window
        # to the last, so a round cut by the window's edges does not skew the figure.
        starts = sorted(t for t in served.round_starts if ws <= t < we)
        rounds = max(0, len(starts) - 1)
        round_requests = sum(starts[0] <= t < starts[-1] for t in served.requests) if rounds else 0
        floats = sum(ws <= t < we for t in served.reading_times)
        in_win = [r for r in delivered.rows if ws <= r[0] < we]
        lat = [
            got[key] - (served.t0_epoch + key[2] / 100.0)
            for key, t in served.readings.items()
            if ws <= t < we and key in got
        ]
        rss = ev["rss_kib"]
        cutoff = ev["t_sim_stop"] - TAIL_S
        counted = [k for k, t in served.readings.items() if t < cutoff]
        res: dict[str, Any] = {
            "gateway": self.gw,
            "phase": ph.name,
            "poll_period_s": ph.period_s,
            "line": "9600 baud" if ph.line else "none",
            "window_s": round(dur, 1),
            "startup_s": round(ev["t_first_reading"] - ev["t_gateway_start"], 2),
            "requests_per_s": round(requests / dur, 1),
            "requests_per_round": round(round_requests / rounds, 2) if rounds else None,
            "readings_read_per_s": round(floats / dur, 1),
            "readings_delivered_per_s": round(len(in_win) / dur, 1),
            "latency_s_p50": rnd(pct(lat, 0.5), 3),
            "latency_s_p95": rnd(pct(lat, 0.95), 3),
            "cpu_pct": round(100.0 * ev["cpu_s"] / dur, 2),
            "rss_mib_peak": round(max(rss) / 1024, 1),
            "rss_mib_mean": round(statistics.mean(rss) / 1024, 1),
            "served": len(counted),
            "served_never_delivered": sum(1 for k in counted if k not in got),
            "delivered": len(delivered.rows),
            "delivered_unknown": delivered.unknown,
            "drained": ev["drained"],
            "drain_s": round(ev["t_drained"] - ev["t_sim_stop"], 1),
            "gateway_stop_s": ev.get("gateway_stop_s"),
            "run_dir": str(self.run),
        }
        if self.gw == "sanduan":
            stored = central_count(self.central_db, self.station)
            res["committed"] = ev.get("committed")
            res["stored"] = stored
            res["lost"] = (ev.get("committed") or 0) - stored
            res["edge_dropped"] = ev.get("edge_dropped")
            seqs = _query(
                self.central_db,
                "SELECT count(DISTINCT seq), min(seq), max(seq) FROM readings WHERE station = ?",
                (self.station,),
            )
            if seqs and seqs[0][0]:
                n, lo, hi = seqs[0]
                res["seq_gaps"] = (hi - lo + 1) - n
        else:
            res["lost"] = res["served_never_delivered"]
        if ph.outage_s:
            td, tu = ev["t_down"], ev["t_up"]
            during = [k for k, t in served.readings.items() if td <= t < tu]
            arrived = [k for k in during if k in got]
            res.update(
                outage_s=round(tu - td, 1),
                outage_served=len(during),
                outage_arrived=len(arrived),
                outage_lost=len(during) - len(arrived),
                outage_backlog_delivered_s_after_restart=rnd(
                    max((got[k] for k in arrived), default=tu) - tu, 1
                ),
            )
        (self.run / "result.json").write_text(json.dumps(res, indent=1), "utf-8")
        return res


def _centis(k: int, value: float) -> list[int]:
    dec = decode_value(k, value)
    return [] if dec is None else [dec[1]]


# --- the comparison ---------------------------------------------------------------------------


def phases(a: Any) -> list[Phase]:
    w = float(a.window)
    out = [
        Phase("idle", 600.0, True, w),
        Phase("poll_1s", 1.0, True, w),
        Phase("fast", a.fast_ms / 1000.0, True, w),
    ]
    if not a.quick:
        out.append(Phase("fast_noline", a.fast_ms / 1000.0, False, w))
    out.append(Phase("outage", 1.0, True, a.after, outage_s=a.outage, before_s=a.before))
    return out


@dataclass
class Row:
    name: str
    sanduan: float | None
    peer: float | None
    peer_note: str
    target: str
    ok: Callable[[float, float | None], bool] | None
    unit: str = ""

    def verdict(self) -> str:
        if self.ok is None or self.sanduan is None:
            return ""
        if "peer" in self.target and self.peer is None:
            return "n/a (no peer figure)"
        return "PASS" if self.ok(self.sanduan, self.peer) else "MISS"

    def ratio(self) -> str:
        if self.sanduan is None or self.peer is None:
            return "-"
        if self.peer == 0:
            return "-" if self.sanduan == 0 else "inf"
        return f"{self.sanduan / self.peer:.2f}"


def _get(results: dict[str, dict[str, Any]], phase: str, key: str) -> float | None:
    r = results.get(phase)
    if r is None or r.get(key) is None:
        return None
    return float(r[key])


def _fast_ok(lost: float | None) -> Callable[[float, float | None], bool]:
    def ok(x: float, y: float | None) -> bool:
        return y is not None and x >= 10 * y and lost == 0

    return ok


def build_rows(
    s: dict[str, dict[str, Any]], p: dict[str, dict[str, Any]], measured_peer: bool
) -> list[Row]:
    def peer(phase: str, key: str, published: str | None) -> tuple[float | None, str]:
        if measured_peer:
            return _get(p, phase, key), ""
        if published is None:
            return None, "not published"
        return PUBLISHED[published], "published"

    rows: list[Row] = []
    v, n = peer("poll_1s", "requests_per_round", "requests_per_round")
    rows.append(
        Row(
            "Modbus requests per poll round (3 x 5 float32)",
            _get(s, "poll_1s", "requests_per_round"),
            v,
            n,
            "sanduan <= peer / 5",
            lambda x, y: y is not None and x <= y / 5,
        )
    )
    for phase, label, pub in (
        ("fast", "readings/s delivered, fastest poll, 9600-baud line", None),
        ("fast_noline", "readings/s delivered, fastest poll, no line time", "fast_readings_per_s"),
    ):
        if phase not in s:
            continue
        v, n = peer(phase, "readings_delivered_per_s", pub)
        lost = _get(s, phase, "lost")
        rows.append(
            Row(
                label,
                _get(s, phase, "readings_delivered_per_s"),
                v,
                n,
                ">= 10 x peer, none lost",
                _fast_ok(lost),
            )
        )
        pv, pn = peer(phase, "readings_read_per_s", None)
        rows.append(
            Row(
                "  readings/s read from the bus",
                _get(s, phase, "readings_read_per_s"),
                pv,
                pn,
                "",
                None,
            )
        )
        pl, pln = peer(phase, "lost", None)
        rows.append(
            Row(
                "  readings lost (sanduan: committed - stored; peer: read, never delivered)",
                lost,
                pl,
                pln,
                "0",
                lambda x, y: x == 0,
            )
        )
    for phase, label, pub in (
        ("idle", "CPU % of one core, idle (poll every 600 s)", "cpu_idle_pct"),
        ("poll_1s", "CPU % of one core, 1 s poll", "cpu_poll_1s_pct"),
    ):
        v, n = peer(phase, "cpu_pct", pub)
        rows.append(
            Row(
                label,
                _get(s, phase, "cpu_pct"),
                v,
                n,
                "sanduan <= peer / 2",
                lambda x, y: y is not None and x <= y / 2,
            )
        )
    for key, label in (("rss_mib_peak", "peak"), ("rss_mib_mean", "mean")):
        v, n = peer("poll_1s", key, key)
        rows.append(
            Row(f"RSS MiB at 1 s poll, {label}", _get(s, "poll_1s", key), v, n, "(no target)", None)
        )
    v, n = peer("outage", "outage_lost", "outage_lost")
    rows.append(
        Row(
            "readings lost across the broker outage",
            _get(s, "outage", "lost"),
            v,
            n,
            "0",
            lambda x, y: x == 0,
        )
    )
    v, n = peer("outage", "outage_backlog_delivered_s_after_restart", None)
    rows.append(
        Row(
            "  outage backlog delivered, s after restart",
            _get(s, "outage", "outage_backlog_delivered_s_after_restart"),
            v,
            n,
            "",
            None,
        )
    )
    return rows


def line_bound(regs_per_request: int, values_per_request: int, baud: int = 9600) -> float:
    """Readings/s a 8N1 line at ``baud`` carries at most: request (8 bytes), reply (5 bytes +
    2 per register) and the 3.5-character silence before each request, nothing else."""
    chars = 8 + 5 + 2 * regs_per_request + 3.5
    return values_per_request * baud / 10.0 / chars


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:g}" if abs(x) >= 100 or x == int(x) else f"{x:.2f}"


def print_table(rows: list[Row]) -> None:
    w = max(len(r.name) for r in rows)
    print(f"\n{'':{w}}  {'sanduan':>9}  {'peer':>18}  {'ratio':>6}  {'target':<24} result")
    for r in rows:
        peer = fmt(r.peer) + (f" ({r.peer_note})" if r.peer_note and r.peer is not None else "")
        if r.peer is None and r.peer_note:
            peer = r.peer_note
        print(
            f"{r.name:{w}}  {fmt(r.sanduan):>9}  {peer:>18}  {r.ratio():>6}  {r.target:<24}"
            f" {r.verdict()}"
        )


def print_phase(res: dict[str, Any]) -> None:
    keys = (
        "requests_per_s",
        "requests_per_round",
        "readings_read_per_s",
        "readings_delivered_per_s",
        "cpu_pct",
        "rss_mib_peak",
        "lost",
        "latency_s_p50",
    )
    extra = ""
    if "outage_lost" in res:
        extra = (
            f" outage: {res['outage_served']} served, {res['outage_arrived']} arrived,"
            f" backlog in {res['outage_backlog_delivered_s_after_restart']} s"
        )
    if "committed" in res:
        extra += f" committed {res['committed']} stored {res['stored']}"
    print(
        f"  {res['gateway']:>7} {res['phase']:<11} "
        + " ".join(f"{k}={res.get(k)}" for k in keys)
        + extra,
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        sim_main(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per phase")
    ap.add_argument("--quick", action="store_true", help="short windows, for a smoke run")
    ap.add_argument("--only", choices=["sanduan", "peer"])
    ap.add_argument("--skip-peer", action="store_true", help="measure sanduan only")
    ap.add_argument(
        "--scratch", default=os.environ.get("SCRATCH", "/tmp/sanduan-peer"), help="work folder"
    )
    ap.add_argument("--fast-ms", type=int, default=1, help="the fastest poll period, ms")
    ap.add_argument("--outage", type=float, default=None, help="broker outage, s (30; quick 10)")
    ap.add_argument("--peer-storage", choices=PEER_STORAGES, default="sqlite")
    ap.add_argument(
        "--engine",
        choices=["numba", "numpy"],
        default="numba",
        help="sanduan grading engine (numba: the default of sanduan edge)",
    )
    a = ap.parse_args(argv)
    if a.quick:
        a.window, a.warmup, a.before, a.after = min(a.duration, 10.0), 3.0, 3.0, 15.0
        a.outage = 10.0 if a.outage is None else a.outage
        a.drain_timeout = 60.0
    else:
        a.window, a.warmup, a.before, a.after = a.duration, 10.0, 10.0, a.duration
        a.outage = 30.0 if a.outage is None else a.outage
        a.drain_timeout = 150.0
    for tool in ("mosquitto", "socat"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install {tool})")
    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    gateways = ["sanduan", "peer"]
    if a.only:
        gateways = [a.only]
    if a.skip_peer and "peer" in gateways:
        gateways.remove("peer")
    peer_problem: str | None = "not measured (--skip-peer or --only sanduan)"
    if "peer" in gateways:
        peer_problem = install_peer(scratch)
        if peer_problem is not None:
            print(f"peer: cannot be installed here: {peer_problem}")
            print("peer: measuring sanduan alone; peer figures are the published ones")
            gateways.remove("peer")
    if not gateways:
        sys.exit("nothing to measure")

    plan = phases(a)
    t_start = time.monotonic()
    print(
        f"bench/peer.py: {', '.join(gateways)}; phases {', '.join(p.name for p in plan)};"
        f" {a.window:g} s windows, warm-up {a.warmup:g} s, outage {a.outage:g} s;"
        f" fastest poll {a.fast_ms} ms; sanduan grading.engine={a.engine};"
        f" peer storage {a.peer_storage}",
        flush=True,
    )
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for gw in gateways:
        results[gw] = {}
        for ph in plan:
            res = PhaseRunner(gw, ph, a).execute()
            results[gw][ph.name] = res
            print_phase(res)
    measured_peer = "peer" in results
    rows = build_rows(results.get("sanduan", {}), results.get("peer", {}), measured_peer)
    bounds = {
        "sanduan_one_request_per_slave": round(line_bound(REG_COUNT, 5), 1),
        "peer_one_request_per_value": round(line_bound(2, 1), 1),
    }
    if "sanduan" in results:
        print_table(rows)
        print(
            "\nwire-time bound on the 9600-baud line (frames and 3.5-character silences only):"
            f" {bounds['sanduan_one_request_per_slave']:g} readings/s with one 10-register read"
            f" per slave, {bounds['peer_one_request_per_value']:g} with one read per value; on"
            " that line no gateway can deliver more than"
            f" {line_bound(REG_COUNT, 5) / line_bound(2, 1):.1f} x a one-read-per-value gateway."
        )
        if not measured_peer:
            print(
                f"\npeer figures marked 'published' are from the peer's README ({PEER_NAME}"
                f" {PEER_VERSION}, sqlite storage, pty without line time): published, not"
                " measured in this run."
            )
    out = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "options": {k: v for k, v in vars(a).items() if k != "func"},
        "peer": {
            "name": PEER_NAME,
            "version": PEER_VERSION,
            "measured": measured_peer,
            "note": None if measured_peer else peer_problem,
            "published": None if measured_peer else PUBLISHED,
        },
        "results": results,
        "wire_bound_readings_per_s_9600": bounds,
        "comparison": [
            {
                "figure": r.name.strip(),
                "sanduan": r.sanduan,
                "peer": r.peer,
                "peer_source": r.peer_note or ("measured" if r.peer is not None else None),
                "ratio": r.ratio(),
                "target": r.target,
                "result": r.verdict(),
            }
            for r in rows
        ],
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    (scratch / "results.json").write_text(json.dumps(out, indent=1), "utf-8")
    print(f"\nresults: {scratch / 'results.json'} ({out['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()

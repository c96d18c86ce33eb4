"""The pieces of an end-to-end run: simulated stations on virtual serial ports, the real edge
agent and collector as processes, and the checks that compare an agent's buffer with the store.

Nothing here reaches into the agent or the collector: they are configured by TOML files, run
as ``sanduan edge run`` / ``sanduan central run`` and inspected through their files, their
store and their command-line reports.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.brokers import shared_port

from sanduan.central.store import StationRow, open_store
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.registers import load_profile

SANDUAN = str(Path(sys.executable).with_name("sanduan"))
BROKER_PORT = shared_port()  # the local Mosquitto (a worker's own under xdist)

# (ts_ms, code, value (None = missing), flag, grade) of one reading, by (station, seq)
Reading = tuple[int, str, float | None, str, int]
Key = tuple[str, int]


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def sanduan_cmd(*args: str) -> list[str]:
    if Path(SANDUAN).exists():
        return [SANDUAN, *args]
    return [sys.executable, "-c", "from sanduan.cli import main; main()", *args]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sanduan_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


# --- simulated devices -----------------------------------------------------------------------


def sonde_values(t: float) -> dict[str, float]:
    """Plausible surface water that drifts, so that every poll reads something new."""
    w = math.sin(t / 5.0)
    return {
        "w01001": round(7.3 + 0.2 * w, 4),  # pH
        "w01009": round(7.9 + 0.5 * w, 4),  # DO
        "w01003": round(12.0 + 3.0 * w, 3),  # turbidity
        "w01014": round(410.0 + 20.0 * w, 2),  # conductivity
        "w01010": round(18.0 + 0.5 * w, 3),  # temperature
        "w01016": round(3.4 + 0.3 * w, 3),  # chlorophyll
    }


def analyzer_values(t: float) -> dict[str, float]:
    w = math.cos(t / 3.0)
    return {"w21003": round(0.48 + 0.1 * w, 4), "w21011": round(0.087 + 0.01 * w, 5)}


class SimStation:
    """One station's RS-485 bus: a virtual serial pair and a simulated bus with a multi-parameter
    sonde (slave 1), an NH3-N analyzer (slave 2) and a TP analyzer (slave 3). The analyzers
    finish a measuring cycle every ``cycle_s`` seconds (one new result each)."""

    def __init__(self, station: str, cycle_s: float = 1.0) -> None:
        self.station = station
        self.silenced_at: float | None = None
        self.pair = VirtualSerialPair()
        dev_port, self.port = self.pair.open()
        try:
            self.devices = [
                SimulatedDevice(load_profile("sonde-multi"), 1, sonde_values, name="sonde"),
                SimulatedDevice(
                    load_profile("nh3n-analyzer"), 2, analyzer_values, cycle_s=cycle_s, name="nh3n"
                ),
                SimulatedDevice(
                    load_profile("tp-analyzer"), 3, analyzer_values, cycle_s=cycle_s, name="tp"
                ),
            ]
            self.bus = SimulatedBus(dev_port, self.devices).start()
        except BaseException:
            self.pair.close()
            raise

    def device(self, name: str) -> SimulatedDevice:
        return next(d for d in self.devices if d.name == name)

    def silence(self) -> None:
        """Every device stops answering: the agent keeps polling but reads nothing new."""
        if self.silenced_at is None:
            self.silenced_at = time.monotonic()
        for d in self.devices:
            d.set_faults(silent=True)

    def close(self) -> None:
        self.bus.stop()
        self.pair.close()


# --- processes -------------------------------------------------------------------------------


class Proc:
    """A ``sanduan`` command in a child process; stderr goes to a log file (and, with
    ``capture``, to ``lines`` as well)."""

    def __init__(self, args: list[str], log: Path, *, capture: bool = False) -> None:
        self.args = args
        self.log_path = log
        self.lines: list[str] = []
        self._fh = log.open("ab")
        self._pump_thread: threading.Thread | None = None
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if capture:
            self.p = subprocess.Popen(
                sanduan_cmd(*args),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=environment,
            )
            self._pump_thread = threading.Thread(target=self._pump, daemon=True)
            self._pump_thread.start()
        else:
            self.p = subprocess.Popen(
                sanduan_cmd(*args), stdout=subprocess.DEVNULL, stderr=self._fh, env=environment
            )

    def _pump(self) -> None:
        assert self.p.stderr is not None
        for raw in self.p.stderr:
            self._fh.write(raw)
            self._fh.flush()
            self.lines.append(raw.decode("utf-8", "replace"))
        self._fh.close()

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        rx = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            # Once the process has exited and its output is read to the end, stop waiting.
            ended = not self.alive() and not (self._pump_thread and self._pump_thread.is_alive())
            found[:] = [line for line in list(self.lines) if rx.search(line)]
            return bool(found) or ended

        assert wait_until(seen, timeout, 0.05) and found, (
            f"no log line matching {pattern!r} in {timeout} s:\n{self.tail()}"
        )
        return found[0]

    def terminate(self, timeout: float = 20) -> int:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        finally:
            self._close_log()

    def kill(self) -> None:
        if self.alive():
            self.p.kill()
        self.p.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self.p.stderr is None and not self._fh.closed:
            self._fh.close()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Procs:
    """Every process a test starts; whatever is still running at the end is killed."""

    started: list[Proc] = field(default_factory=list)

    def add(self, proc: Proc) -> Proc:
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for p in self.started:
            p.kill()


def write_station_config(
    path: Path,
    station: str,
    port: str,
    db: Path,
    *,
    broker_port: int = BROKER_PORT,
    poll_s: float = 0.3,
    ack_timeout_s: float = 2.0,
) -> Path:
    device = f"poll_period_s = {poll_s}\n  timeout_s = 0.2\n  retries = 1\n  backoff_max_s = 1\n"
    path.write_text(
        f"""
[station]
id = "{station}"
name = "e2e {station}"
target_class = 3

[buffer]
path = "{db}"
commit_interval_s = 0.2

[grading]
# The simulated devices serve the same value poll after poll: the stuck-value check would
# rightly flag those repeats D. These tests are about delivery, so it is off here.
stuck_polls = 0

[uplink]
broker = "mqtt://127.0.0.1:{broker_port}"
client_id = "edge-{station}"
heartbeat_s = 1
batch_max_readings = 100
batch_max_age_s = 0.3
ack_timeout_s = {ack_timeout_s}
max_batches_per_s = 50
reconnect_max_s = 1

[[bus]]
name = "rs485-1"
port = "{port}"
baudrate = 9600
parity = "N"
silence_s = 0.0

  [[bus.device]]
  name = "sonde"
  slave = 1
  profile = "sonde-multi"
  {device}
  [[bus.device]]
  name = "nh3n"
  slave = 2
  profile = "nh3n-analyzer"
  {device}
  [[bus.device]]
  name = "tp"
  slave = 3
  profile = "tp-analyzer"
  {device}""",
        encoding="utf-8",
    )
    return path


def write_central_config(
    path: Path,
    store_url: str,
    *,
    broker_port: int = BROKER_PORT,
    group: str | None = None,
    county: Path | None = None,
) -> Path:
    group_line = f'group = "{group}"\n' if group else ""
    county_line = f'county = "{county}"\n' if county else ""
    path.write_text(
        f'[central]\nstore = "{store_url}"\n{county_line}\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{broker_port}"\nsession_expiry_s = 120\n'
        f"{group_line}\n"
        "[ingest]\ngap_timeout_s = 3\nresend_interval_s = 3\n",
        encoding="utf-8",
    )
    return path


class Agent:
    """``sanduan edge run`` for one simulated station."""

    def __init__(
        self, sim: SimStation, tmp: Path, procs: Procs, *, broker_port: int = BROKER_PORT
    ) -> None:
        self.sim = sim
        self.station = sim.station
        self.db = tmp / f"{sim.station}.db"
        self.config = write_station_config(
            tmp / f"{sim.station}.toml", sim.station, sim.port, self.db, broker_port=broker_port
        )
        self.log = tmp / f"{sim.station}.log"
        self.procs = procs
        self.proc: Proc | None = None

    def start(self) -> Agent:
        self.proc = self.procs.add(
            Proc(["edge", "run", "--config", str(self.config), "--log-format", "text"], self.log)
        )
        return self

    def depth(self) -> int | None:
        """Unacknowledged readings in the buffer (None before the file exists)."""
        if not self.db.exists():
            return None
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
            try:
                return int(
                    con.execute("SELECT count(*) FROM reading WHERE acked = 0").fetchone()[0]
                )
            finally:
                con.close()
        except sqlite3.OperationalError:
            return None

    def committed(self) -> int:
        """Readings committed so far (next seq - 1)."""
        if not self.db.exists():
            return 0
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
            finally:
                con.close()
        except sqlite3.OperationalError:
            return 0
        return 0 if row is None else int(row[0]) - 1

    def drain_and_stop(self, timeout: float = 30) -> None:
        """Silence the devices, wait until every committed reading is acknowledged and nothing
        new comes in, then SIGTERM the agent (it must exit 0)."""
        assert self.proc is not None
        self.sim.silence()
        assert self.sim.silenced_at is not None
        last = [self.committed(), self.sim.silenced_at]

        def quiet_and_drained() -> bool:
            n = self.committed()
            if n != last[0]:
                last[0], last[1] = n, time.monotonic()
                return False
            return self.depth() == 0 and time.monotonic() - last[1] >= 1.0

        assert wait_until(quiet_and_drained, timeout), (
            f"{self.station}: buffer not drained (depth {self.depth()}):\n{self.proc.tail()}"
        )
        assert self.proc.terminate() == 0, self.proc.tail()

    def buffer(self) -> tuple[dict[int, Reading], set[int], int]:
        """(readings by seq, unacknowledged seqs, next seq) of the agent's buffer file."""
        con = sqlite3.connect(self.db)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows: dict[int, Reading] = {}
            unacked: set[int] = set()
            for seq, ts, code, value, flag, grade, acked in con.execute(
                "SELECT seq, ts, code, value, flag, grade, acked FROM reading"
            ):
                rows[int(seq)] = (int(ts), str(code), value, str(flag), int(grade))
                if not acked:
                    unacked.add(int(seq))
            nxt = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
            return rows, unacked, int(nxt)
        finally:
            con.close()


class Collector:
    """``sanduan central run`` with its log lines captured."""

    def __init__(
        self, config: Path, client_id: str, log: Path, procs: Procs, *, migrate: bool = False
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.log = log
        self.procs = procs
        self.migrate = migrate
        self.proc: Proc | None = None

    def start(self, *, wait_subscribed: bool = True) -> Collector:
        args = ["central", "run", "--config", str(self.config), "--client-id", self.client_id]
        if self.migrate:
            args.append("--migrate")
        self.proc = self.procs.add(Proc(args, self.log, capture=True))
        if wait_subscribed:
            self.proc.wait_for_line("subscribed to", 60)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.kill()

    def stop(self) -> dict[str, int]:
        """SIGTERM; the counters of its last ``stopped:`` log line."""
        assert self.proc is not None
        assert self.proc.terminate() == 0, self.proc.tail()
        line = self.proc.wait_for_line(r"stopped:", 5)
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split("stopped:", 1)[1])}


# --- checks ----------------------------------------------------------------------------------


def central_rows(store_url: str, stations: Iterable[str]) -> list[tuple[str, int, Reading]]:
    """Every stored reading of ``stations`` (duplicates would show as repeated keys)."""
    wanted = sorted(stations)
    marks = ", ".join("?" * len(wanted))
    s = open_store(store_url)
    try:
        rows = s.query(
            "SELECT station, seq, ts_ms, code, value, flag, grade FROM readings"
            f" WHERE station IN ({marks})",
            wanted,
        )
    finally:
        s.close()
    return [
        (str(st), int(seq), (int(ts), str(code), value, str(flag), int(grade)))
        for st, seq, ts, code, value, flag, grade in rows
    ]


def station_record(store_url: str, station: str) -> StationRow:
    """The store's row of ``station`` (AssertionError when there is none)."""
    s = open_store(store_url)
    try:
        rows = [r for r in s.stations() if r.station == station]
    finally:
        s.close()
    assert rows, f"station {station} is not in the store"
    return rows[0]


def assert_delivered_once(store_url: str, agents: Iterable[Agent]) -> int:
    """Every reading each agent committed is stored in the centre exactly once, with the same
    content, nothing else is stored for these stations, and every buffer is fully
    acknowledged. Returns the number of readings checked."""
    agents = list(agents)
    expected: dict[Key, Reading] = {}
    for a in agents:
        rows, unacked, nxt = a.buffer()
        # The run is far below the space budget: the buffer still holds every seq it assigned.
        assert set(rows) == set(range(1, nxt)), f"{a.station}: buffer lost seqs"
        assert not unacked, f"{a.station}: {len(unacked)} readings never acknowledged"
        expected.update({(a.station, seq): r for seq, r in rows.items()})
    got = central_rows(store_url, (a.station for a in agents))
    keys = [(st, seq) for st, seq, _ in got]
    assert len(keys) == len(set(keys)), "a (station, seq) is stored twice"
    stored = {(st, seq): r for st, seq, r in got}
    missing = sorted(expected.keys() - stored.keys())
    extra = sorted(stored.keys() - expected.keys())
    assert not missing, f"{len(missing)} readings not stored, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} readings stored that no agent committed, e.g. {extra[:5]}"
    differ = [(k, expected[k], stored[k]) for k in expected if expected[k] != stored[k]]
    assert not differ, f"{len(differ)} readings differ (buffer, store), e.g. {differ[:3]}"
    return len(expected)


def central_events(store_url: str, station: str) -> list[tuple[int, str, str | None]]:
    """(event id, kind, code) of the station's events in the store, by event id."""
    s = open_store(store_url)
    try:
        rows = s.query(
            "SELECT event_id, kind, code FROM events WHERE station = ? ORDER BY event_id", [station]
        )
    finally:
        s.close()
    return [(int(i), str(k), None if c is None else str(c)) for i, k, c in rows]


def pending_events(agent: Agent) -> int:
    """Alarm events in the agent's buffer not yet delivered to the broker."""
    con = sqlite3.connect(agent.db)
    try:
        return int(con.execute("SELECT count(*) FROM event").fetchone()[0])
    finally:
        con.close()


def outbox_json(agent: Agent) -> dict[str, Any]:
    r = run_cli("edge", "outbox", "--db", str(agent.db), "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc

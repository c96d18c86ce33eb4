"""The hardware-in-the-loop rig: a county's stations, agents, collector and broker on one machine.

:func:`run_scenario` runs a :class:`~sanduan.hil.scenario.Scenario` end to end:

1. an MQTT broker (the embedded amqtt process, a private Mosquitto, or an external URL);
2. per station bus a virtual serial pair and a :class:`~sanduan.hil.devices.SimulatedBus`
   serving the station's devices, whose values come from the signal models
   (:mod:`sanduan.hil.signals`) on the rig's :class:`~sanduan.shared.clock.ScaledClock`, and
   whose completed polls go to the truth log (:mod:`sanduan.hil.truth`);
3. the collector (``sanduan central run``) and one edge agent per station
   (``sanduan edge run``) as processes, all started with the same ``SANDUAN_SIM_CLOCK``, so the
   rig can SIGKILL and restart them;
4. the fault timeline (:mod:`sanduan.hil.faults`), injected at simulated times;
5. at the end of the period the devices fall silent, the backlog drains, the processes stop;
6. the delivery check (truth log against the collector's store), the section and compensation
   reports of the collector's store, and the same reports computed from the truth alone (the
   truth written as wire batches, ``sanduan central replay`` into a separate SQLite store).

The rig imports nothing of the edge agent or the collector: it writes their configuration files,
runs their commands and reads the collector's ``readings`` table.

Time: the clock starts a short pre-roll before the scenario's start (so the processes are up
when the period begins); readings from the pre-roll are delivered and checked like the others
but fall outside the reported month. A process restart takes real time, which is simulated
hours at high speeds: a killed agent misses those hours of polls (they were never read, so they
are not in the truth log), exactly as a gateway that is down misses its polls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from sanduan.hil.broker import BrokerHandle
from sanduan.hil.devices import SimulatedBus
from sanduan.hil.faults import (
    DEVICE_KINDS,
    PROCESS_KINDS,
    Fault,
    FaultRecord,
    build_timeline,
    device_fault_changes,
)
from sanduan.hil.hj212 import (
    PLATFORM_PW,
    PlatformSim,
    as_sent_over_hj212,
    hj212_drained,
    mn_for,
    platform_check,
)
from sanduan.hil.hostile import HostileStation, StationState, is_forged_batch
from sanduan.hil.ports import VirtualSerialPair
from sanduan.hil.report import RunSummary
from sanduan.hil.scenario import DevicePlan, Scenario, StationPlan, dump_toml, iso
from sanduan.hil.signals import AnalyzerCycle, StationSignals, stable_hash
from sanduan.hil.truth import (
    DeliveryCheck,
    RecordingDevice,
    StoredRow,
    TruthLog,
    compare,
    planned_blocks,
    value_key,
)
from sanduan.shared.clock import ENV_VAR, ScaledClock
from sanduan.shared.config import IngestConfig
from sanduan.shared.model import Flag, WaterBody
from sanduan.shared.registers import DeviceProfile, Role

__all__ = ["ManagedProcess", "Monitor", "Rig", "RigOptions", "run_scenario", "sanduan_argv"]

log = logging.getLogger("sanduan.hil.rig")

MAX_CLOCK_S = 3600.0
"""Upper bound of the agents' clock-based settings (heartbeat, batch age, ack timeout)."""
PREROLL_PER_PROCESS_S = 0.6
"""Real seconds of pre-roll per process started (agents, collector, broker)."""
REAL_BATCHES_PER_S = 5.0
"""Batches a second (real time) each agent may send: nine stations at this rate stay well
within what one collector stores and acknowledges on a small machine."""


def sanduan_argv() -> list[str]:
    """How to run the ``sanduan`` command from this interpreter.

    The ``sanduan`` console script next to ``sys.executable`` when there is one (a venv),
    otherwise the interpreter with ``-c`` calling :func:`sanduan.cli.main`.
    """
    script = Path(sys.executable).with_name("sanduan")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from sanduan.cli import main; main()"]


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --- processes -------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """One child process (an agent or the collector) the rig may kill and restart."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    crashes: int = 0
    expected_down: bool = False
    started_real: float = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, env: Mapping[str, str] | None = None) -> None:
        if self.running:
            return
        if env is not None:
            self.env = dict(env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{self.name}.{self.starts}.log"
        with path.open("wb") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        self.starts += 1
        self.started_real = time.monotonic()
        self.expected_down = False

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` (SIGKILL by default) and reap the process; False if it was not running."""
        self.expected_down = True
        if not self.running:
            return False
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if sig == signal.SIGKILL:
            self.kills += 1
        return True

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        self.expected_down = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def died_unexpectedly(self) -> bool:
        return self.proc is not None and not self.expected_down and self.proc.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_dir / f"{self.name}.{max(0, self.starts - 1)}.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --- the MQTT observer -------------------------------------------------------------------------


@dataclass
class StationView:
    """What the monitor knows about one station from the broker's traffic."""

    acked: set[tuple[int, int]] = field(default_factory=set)
    """(stream, seq) of every reading acknowledged."""
    seen: set[tuple[int, int]] = field(default_factory=set)
    resent: int = 0
    stream: int | None = None
    """The stream of the station's latest ack (None before the first)."""
    streams: list[int] = field(default_factory=list)
    """Every stream acknowledged, in order of first appearance."""
    ack_real: float | None = None
    """Real (monotonic) time of the station's latest ack."""
    buffer_depth: int | None = None
    status_sim: float | None = None
    status_real: float | None = None
    online: bool | None = None
    device_errors: dict[str, int] = field(default_factory=dict)
    next_seq: int | None = None
    clock_offset_s: float | None = None


class Monitor:
    """Watches the broker (status, ack and batch topics) to follow the run.

    It counts readings acknowledged (stored) and readings published more than once (resent),
    and keeps every station's latest heartbeat, plus a history of backlog samples for the fault
    report. It is an observer only: it publishes nothing.
    """

    def __init__(self, host: str, port: int, client_id: str, clock: ScaledClock) -> None:
        import paho.mqtt.client as mqtt

        from sanduan.shared import topics

        self.clock = clock
        self._lock = threading.Lock()
        self.stations: dict[str, StationView] = defaultdict(StationView)
        self.history: list[tuple[float, str, int, dict[str, int]]] = []
        self.resends: list[tuple[float, str, int]] = []
        self.connected = threading.Event()
        self.connects = 0
        self._filters = [
            (topics.filter_for(topics.Kind.STATUS), 0),
            (topics.filter_for(topics.Kind.ACK), 0),
            (topics.filter_for(topics.Kind.BATCH), 0),
        ]
        from paho.mqtt.enums import CallbackAPIVersion

        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set("hil-monitor", "hil")
        # Fractions of a second (paho's annotation says int; it computes with floats).
        c.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self.host = host
        self.port = port

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if getattr(rc, "is_failure", False):
            return
        client.subscribe(self._filters)
        self.connects += 1
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from sanduan.shared import topics, wire
        from sanduan.shared.errors import WireFormatError

        try:
            station, _ = topics.parse(msg.topic)
            m = wire.decode(msg.payload)
        except WireFormatError:
            return
        if isinstance(m, wire.Batch | wire.Ack) and is_forged_batch(m.batch_seq):
            return  # a hostile client's, or the centre's answer to one
        now_sim = self.clock.time()
        with self._lock:
            view = self.stations[station]
            if isinstance(m, wire.Ack):
                if m.stream not in view.streams:
                    view.streams.append(m.stream)
                view.stream = m.stream
                view.ack_real = time.monotonic()
                ranges = m.ranges or ((m.first_seq, m.last_seq),)
                view.acked.update((m.stream, q) for a, b in ranges for q in range(a, b + 1))
            elif isinstance(m, wire.Batch):
                keys = [(m.stream, q) for q in m.seq]
                again = sum(1 for k in keys if k in view.seen)
                view.seen.update(keys)
                if again:
                    view.resent += again
                    self.resends.append((now_sim, station, again))
            elif isinstance(m, wire.Status):
                if msg.retain:  # an old heartbeat kept by the broker (maybe an earlier run's)
                    return
                view.online = m.online
                if m.online:
                    view.buffer_depth = m.buffer_depth
                    view.status_sim = now_sim
                    view.status_real = time.monotonic()
                    view.device_errors = dict(m.device_errors)
                    ns = m.extra.get("next_seq")
                    view.next_seq = ns if isinstance(ns, int) else view.next_seq
                    view.clock_offset_s = m.clock_offset_s
                    self.history.append((now_sim, station, m.buffer_depth, dict(m.device_errors)))

    # -- queries (thread-safe) --------------------------------------------------------------

    def acked_total(self) -> int:
        with self._lock:
            return sum(len(v.acked) for v in self.stations.values())

    def resent_total(self) -> int:
        with self._lock:
            return sum(v.resent for v in self.stations.values())

    def view(self, station: str) -> StationView:
        with self._lock:
            return dataclasses.replace(self.stations[station])

    def known_to_attacker(self, station: str) -> StationState:
        """What a client with the station's login learns from its acks: its stream and some
        seqs the centre has stored."""
        with self._lock:
            v = self.stations[station]
            stream = v.stream or 0
            acked = sorted(q for s, q in v.acked if s == stream)[-50:]
        return StationState(stream, tuple(acked))

    def backlog(self) -> int:
        with self._lock:
            return sum(v.buffer_depth or 0 for v in self.stations.values())

    def history_between(self, t0: float, t1: float) -> list[tuple[float, str, int, dict[str, int]]]:
        with self._lock:
            return [h for h in self.history if t0 <= h[0] <= t1]

    def resent_between(self, t0: float, t1: float, station: str | None = None) -> int:
        with self._lock:
            return sum(n for t, s, n in self.resends if t0 <= t <= t1 and station in (None, s))


# --- device value sources ----------------------------------------------------------------------


def _raw_for(profile: DeviceProfile, flag: Flag) -> dict[str, float]:
    """Status register raw values meaning ``flag`` (the first status register that has one)."""
    for spec in profile.registers:
        if spec.role is Role.STATUS:
            for raw, f in spec.flags.items():
                if f is flag:
                    return {spec.name: float(raw)}
    return {}


CHECK_STANDARDS = {"w21003": 0.5, "w21011": 0.1, "w01019": 4.0, "w21001": 1.0}
"""Concentrations of the check standards analyzers measure during a calibration cycle."""


class AnalyzerSource:
    """The registers of an analyzer at time t: its latest cycle's result, status and time."""

    def __init__(self, plan: DevicePlan, signals: StationSignals) -> None:
        assert plan.analyzer is not None
        self.cycle: AnalyzerCycle = plan.analyzer
        self.codes = plan.codes
        self.signals = signals
        self.profile = plan.profile
        self._cache: tuple[int, dict[str, float]] | None = None
        rt = plan.profile.result_time
        self._rt_name = rt.name if rt is not None else "result_time"
        self._status = {
            "normal": _raw_for(plan.profile, Flag.N),
            "calibration": _raw_for(plan.profile, Flag.C),
            "maintenance": _raw_for(plan.profile, Flag.M),
        }

    def __call__(self, t: float) -> dict[str, float]:
        state = self.cycle.state(t)
        cached = self._cache
        if cached is not None and cached[0] == state.cycle:
            return cached[1]
        out: dict[str, float] = {self._rt_name: state.result_time}
        out |= self._status[state.kind]
        if state.kind == "maintenance":
            out |= dict.fromkeys(self.codes, math.nan)
        elif state.kind == "calibration":
            for c in self.codes:
                dev = ((stable_hash(self.signals.seed, state.cycle, c) % 2001) - 1000) / 1e5
                out[c] = CHECK_STANDARDS.get(c, 1.0) * (1.0 + dev)
        else:
            out |= self.signals.values(self.codes, state.result_time)
        self._cache = (state.cycle, out)
        return out


def _sonde_source(plan: DevicePlan, signals: StationSignals) -> Callable[[float], dict[str, float]]:
    codes = plan.codes

    def values(t: float) -> dict[str, float]:
        return signals.values(codes, t)

    return values


# --- the rig ---------------------------------------------------------------------------------


@dataclass
class RigOptions:
    out_dir: Path
    broker: str | None = None
    """None or "embedded": amqtt process; "mosquitto": a private Mosquitto; else mqtt://..."""
    store: str | None = None
    """None: SQLite in out_dir; or a postgresql:// URL (the rig uses a schema of its own)."""
    days: float | None = None
    speed: float | None = None
    summary_json: Path | None = None
    progress: bool = True
    preroll_s: float = 3.0
    keep_schema: bool = False
    html: bool = True
    serial: Literal["auto", "socat", "python"] | None = None
    """Overrides the scenario's ``rig.serial`` (virtual serial pairs: socat or the relay)."""


@dataclass
class _Bus:
    pair: VirtualSerialPair
    sim: SimulatedBus
    client_port: str


@dataclass
class _Station:
    plan: StationPlan
    process: ManagedProcess
    config_path: Path
    buffer_path: Path
    buses: list[_Bus] = field(default_factory=list)
    devices: dict[str, RecordingDevice] = field(default_factory=dict)
    clock_offset: float = 0.0
    replaced_at: list[float] = field(default_factory=list)
    """Simulated times the station's buffer was deleted (gateway-replaced faults)."""


class Rig:
    """Runs one scenario; see the module docstring. Use :func:`run_scenario`."""

    def __init__(self, scenario: Scenario, options: RigOptions) -> None:
        if options.days is not None:
            scenario = scenario.with_days(options.days)
        if options.speed is not None:
            scenario = dataclasses.replace(scenario, speed=options.speed)
        if options.serial is not None:
            scenario = dataclasses.replace(scenario, serial_backend=options.serial)
        self.sc = scenario
        self.opt = options
        self.out = options.out_dir.resolve()
        self.run_id = f"{int(time.time()):x}{os.getpid() % 0xFFFF:04x}"
        self.truth = TruthLog()
        self.records: list[FaultRecord] = []
        self.stations: dict[str, _Station] = {}
        self.warnings: list[str] = []
        self.phases: dict[str, float] = {}
        self.broker: BrokerHandle | None = None
        self.collector: ManagedProcess | None = None
        self.monitor: Monitor | None = None
        self.store_url = ""
        self.pg_schema: str | None = None
        self.clock = ScaledClock(time.time(), scenario.start, scenario.speed)
        self.faults_injected = 0
        self.hostiles: dict[int, HostileStation] = {}
        """Running or finished hostile clients, by fault index."""
        self._console: Any = None
        self.platform: PlatformSim | None = None
        self.mns: dict[str, str] = {st.id: mn_for(i + 1) for i, st in enumerate(scenario.stations)}
        self.hj212_port = 0

    # -- paths and configs --------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for sub in ("config", "logs", "buffers", "truth", "broker"):
            d = self.out / sub
            if d.exists():
                shutil.rmtree(d)
            d.mkdir()
        for name in ("central.db", "central.db-wal", "central.db-shm", "summary.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.out / name).unlink()

    def _store_url(self) -> str:
        if not self.opt.store:
            return f"sqlite:///{self.out / 'central.db'}"
        url = self.opt.store
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            if parts.scheme == "sqlite":
                return url
            raise ValueError(f"--store must be postgresql://... or sqlite:///..., not {url!r}")
        schema = f"sanduan_hil_{self.run_id}"
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self.pg_schema = schema
        opt = quote(f"-csearch_path={schema}", safe="")
        query = parts.query + ("&" if parts.query else "") + f"options={opt}"
        return urlunsplit(parts._replace(query=query))

    def _protocol(self) -> str:
        assert self.broker is not None
        return "3.1.1" if self.broker.kind == "embedded" else "auto"

    def _validity(self) -> dict[str, Any]:
        if self.sc.days >= 28:
            return {}
        return {"min_days_per_month": int(min(20, max(1, math.floor(self.sc.days) - 1)))}

    def _central_doc(self, store_url: str, with_mqtt: bool) -> dict[str, Any]:
        assert self.broker is not None
        speed = self.sc.speed
        central: dict[str, Any] = {
            "store": store_url,
            "county": str(self.out / "config" / "county.toml"),
            "timezone": self.sc.timezone,
        }
        if self.sc.rules_doc is not None:
            central["rules"] = str(self.out / "config" / "rules.toml")
        doc: dict[str, Any] = {"central": central}
        if with_mqtt:
            doc["mqtt"] = {
                "broker": self.broker.url,
                "protocol": self._protocol(),
                "username": "central",
                "client_id": f"central-{self.run_id}",
            }
            gap = _clamp(1.5 * speed, 300.0, 86_400.0)
            doc["ingest"] = {"gap_timeout_s": gap, "resend_interval_s": gap}
        validity = self._validity()
        if validity:
            doc["validity"] = validity
        logger = self.sc.hj212_station
        if with_mqtt and logger is not None:
            # The collector's HJ 212 times are simulated seconds: a minute of real silence
            # before a connection is closed, and the logger's clock trusted to a day.
            doc["hj212"] = {
                "listen": f"127.0.0.1:{self.hj212_port}",
                "idle_timeout_s": 60.0 * speed,
                "max_future_s": 86_400.0,
                "logger": [{"mn": self.mns[logger], "password": LOGGER_PW, "station": logger}],
            }
        return _deep_merge(doc, self.sc.central_config)

    def _station_doc(self, st: StationPlan, ports: Sequence[str]) -> dict[str, Any]:
        assert self.broker is not None
        speed = self.sc.speed
        buses = []
        for bus, port in zip(st.buses, ports, strict=True):
            # Linux pseudo-terminals refuse parity (tcsetattr EINVAL): a virtual line is 8N1 to
            # the agent whatever the scenario says; line emulation still counts the scenario's
            # bits per character.
            b: dict[str, Any] = {
                "name": bus.name,
                "port": port,
                "baudrate": bus.baudrate,
                "parity": "N",
                "stopbits": bus.stopbits,
                "max_gap": 10,
            }
            if not bus.emulate:
                b["silence_s"] = 0.0
            b["device"] = [
                {
                    "name": d.name,
                    "slave": d.slave,
                    "profile": d.profile_ref,
                    "poll_period_s": d.poll_period_s,
                    "timeout_s": d.timeout_s,
                    "retries": d.retries,
                    "turnaround_s": d.turnaround_s,
                }
                for d in bus.devices
            ]
            buses.append(b)
        doc: dict[str, Any] = {
            "station": {
                "id": st.id,
                "name": st.name,
                "timezone": self.sc.timezone,
                "target_class": st.target_class,
                "water_body": st.water_body,
            },
            "buffer": {"path": str(self.out / "buffers" / f"{st.id}.db")},
            "uplink": {
                "broker": self.broker.url,
                "protocol": self._protocol(),
                "username": st.id,
                "client_id": f"{st.id}-{self.run_id}",
                # The agent's uplink times are simulated seconds: in real time the heartbeat,
                # the batching delay and the ack timeout are a tenth of a second or so at
                # high speeds, and the send rate is limited in real terms so that a backlog
                # drains at a pace the collector keeps up with (no resend storm).
                "heartbeat_s": _clamp(0.12 * speed, 1.0, MAX_CLOCK_S),
                "batch_max_age_s": _clamp(0.1 * speed, 1.0, MAX_CLOCK_S),
                "ack_timeout_s": _clamp(3.0 * speed, 30.0, MAX_CLOCK_S),
                "max_batches_per_s": min(20.0, REAL_BATCHES_PER_S / speed),
                "max_inflight_batches": 2,
                # Half a real second of link latency is minutes of simulated time: only a
                # clock off by more than that is worth a "clock" event.
                "clock_offset_max_s": max(30.0, 0.5 * speed),
            },
            "bus": buses,
        }
        platforms = self._hj212_platforms(st)
        if platforms:
            doc["hj212"] = platforms
        if st.id == self.sc.hj212_station:
            # This station's logger speaks HJ 212 to the collector: no MQTT centre.
            doc["uplink"]["broker"] = f"mqtt://127.0.0.1:{_dead_port()}"
        return _deep_merge(doc, self.sc.station_config)

    def _hj212_platforms(self, st: StationPlan) -> list[dict[str, Any]]:
        """``[[hj212]]`` entries of a station: the provincial platform (hourly data), and for
        the HJ 212 logger station the collector itself (real-time data)."""
        speed = self.sc.speed
        common = {
            "mn": self.mns[st.id],
            # simulated seconds: two real seconds, so that a busy machine is not taken for a
            # lost packet (a connection lost ends the wait at once)
            "ack_timeout_s": _clamp(2.0 * speed, 30.0, 86_400.0),
            "retries": 10,
            "reconnect_max_s": 2.0,
        }
        out: list[dict[str, Any]] = []
        if self.platform is not None:
            out.append(
                {
                    "name": "province",
                    "address": self.platform.address,
                    "password": PLATFORM_PW,
                    "data": ["hourly"],
                    **common,
                }
            )
        if st.id == self.sc.hj212_station:
            out.append(
                {
                    "name": "central",
                    "address": f"127.0.0.1:{self.hj212_port}",
                    "password": LOGGER_PW,
                    "data": ["realtime"],
                    **common,
                }
            )
        return out

    # -- setup --------------------------------------------------------------------------------

    def _env(self, offset: float = 0.0) -> dict[str, str]:
        c = dataclasses.replace(self.clock, offset=offset)
        return {ENV_VAR: c.to_env(), "PYTHONUNBUFFERED": "1"}

    def _build_station(self, plan: StationPlan) -> _Station:
        buses: list[_Bus] = []
        devices: dict[str, RecordingDevice] = {}
        for bus in plan.buses:
            pair = VirtualSerialPair(
                "python" if bus.emulate else self.sc.serial_backend,
                baud=bus.baudrate if bus.emulate else None,
                bits_per_char=bus.bits_per_char,
            )
            # On an emulated line a slave answers after its turnaround plus the 3.5-character
            # silence that tells it the request has ended.
            gap = 0.00175 if bus.baudrate > 19200 else 3.5 * bus.bits_per_char / bus.baudrate
            extra = gap if bus.emulate else 0.0
            dev_port, client_port = pair.open()
            sims: list[RecordingDevice] = []
            for d in bus.devices:
                source: Callable[[float], dict[str, float]]
                if d.analyzer is not None:
                    source = AnalyzerSource(d, plan.signals)
                else:
                    source = _sonde_source(d, plan.signals)
                rd = RecordingDevice(
                    d.profile,
                    station=plan.id,
                    device=d.name,
                    log=self.truth,
                    blocks=planned_blocks(d.profile, max_gap=10),
                    timeout_s=d.timeout_s,
                    slave=d.slave,
                    values=source,
                    turnaround_s=d.turnaround_s + extra,
                    clock=self.clock.time,
                    seed=stable_hash(self.sc.seed, plan.id, d.name) & 0xFFFFFFFF,
                )
                sims.append(rd)
                devices[d.name] = rd
            sim = SimulatedBus(dev_port, sims, baudrate=bus.baudrate, stopbits=bus.stopbits).start()
            buses.append(_Bus(pair, sim, client_port))
        cfg_path = self.out / "config" / f"station-{plan.id}.toml"
        doc = self._station_doc(plan, [b.client_port for b in buses])
        cfg_path.write_text(dump_toml(doc), encoding="utf-8")
        proc = ManagedProcess(
            f"edge-{plan.id}",
            [*sanduan_argv(), "edge", "run", "--config", str(cfg_path)],
            self.out / "logs",
        )
        return _Station(plan, proc, cfg_path, Path(doc["buffer"]["path"]), buses, devices)

    def _write_central_files(self) -> Path:
        cfg = self.out / "config"
        (cfg / "county.toml").write_text(dump_toml(dict(self.sc.county_doc)), encoding="utf-8")
        if self.sc.rules_doc is not None:
            (cfg / "rules.toml").write_text(dump_toml(dict(self.sc.rules_doc)), encoding="utf-8")
        path = cfg / "central.toml"
        path.write_text(dump_toml(self._central_doc(self.store_url, True)), encoding="utf-8")
        return path

    def _check_configs(self, central_cfg: Path) -> None:
        """Let the agent and the collector validate the files the rig wrote (fail early)."""
        first = next(iter(self.stations.values()))
        for argv in (
            [*sanduan_argv(), "edge", "check-config", str(first.config_path)],
            [*sanduan_argv(), "central", "check-config", str(central_cfg)],
        ):
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            if res.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(argv[-3:])} rejected the file the rig wrote:\n"
                    f"{(res.stdout + res.stderr).strip()[-2000:]}"
                )

    # -- faults -------------------------------------------------------------------------------

    def _actions(self, faults: Sequence[Fault]) -> list[tuple[float, int, str, FaultRecord]]:
        acts: list[tuple[float, int, str, FaultRecord]] = []
        for i, f in enumerate(faults):
            rec = FaultRecord(f)
            self.records.append(rec)
            if f.at >= self.sc.end:
                rec.skipped = "after the end of the (shortened) period"
                continue
            if f.kind == "broker" and (self.broker is None or not self.broker.killable):
                rec.skipped = "the broker is external: the rig does not kill it"
                continue
            acts.append((f.at, i * 2, "start", rec))
            if f.duration > 0 or f.kind in PROCESS_KINDS - {"clock"}:
                acts.append((max(f.at, f.end), i * 2 + 1, "end", rec))
        acts.sort(key=lambda a: (a[0], a[1]))
        return acts

    def _device(self, f: Fault) -> RecordingDevice:
        assert f.station is not None and f.device is not None
        return self.stations[f.station].devices[f.device]

    def _apply(self, what: str, rec: FaultRecord) -> None:
        f = rec.fault
        starting = what == "start"
        if starting:
            rec.injected_at = self.clock.time()
            self.faults_injected += 1
        else:
            rec.cleared_at = self.clock.time()
        self._snapshot(rec, "0" if starting else "1")
        if f.kind in DEVICE_KINDS:
            dev = self._device(f)
            changes = device_fault_changes(f)
            if not starting:
                changes = {k: getattr(type(dev.faults)(), k) for k in changes}
            dev.set_faults(**changes)
            return
        handlers: dict[str, Callable[[FaultRecord, bool], None]] = {
            "agent": self._agent_fault,
            "gateway-replaced": self._agent_fault,
            "clock": self._clock_fault,
            "collector": self._collector_fault,
            "broker": self._broker_fault,
            "hostile-station": self._hostile_fault,
            "platform": self._platform_fault,
        }
        handlers[f.kind](rec, starting)

    def _platform_fault(self, rec: FaultRecord, starting: bool) -> None:
        """The provincial platform goes down (stops listening, drops its connections)."""
        assert self.platform is not None
        if starting:
            self.platform.stop()
        else:
            self.platform.start()

    def _agent_fault(self, rec: FaultRecord, starting: bool) -> None:
        """SIGKILL (or SIGTERM) the agent between polls; for gateway-replaced also delete its
        buffer. At the end, start it again."""
        f = rec.fault
        st = self.stations[str(f.station)]
        if not starting:
            self._start_agent(st)
            return
        self._between_polls(st)
        rec.injected_at = self.clock.time()
        self._stop_agent(st, signal.SIGKILL if f.signal == "KILL" else signal.SIGTERM)
        if f.kind == "gateway-replaced":
            files = list(st.buffer_path.parent.glob(st.buffer_path.name + "*"))
            rec.outcome["buffer_bytes_deleted"] = sum(p.stat().st_size for p in files)
            for p in files:
                p.unlink()
            st.replaced_at.append(rec.injected_at)

    def _clock_fault(self, rec: FaultRecord, starting: bool) -> None:
        f = rec.fault
        st = self.stations[str(f.station)]
        self._between_polls(st)
        if starting:
            rec.injected_at = self.clock.time()
        else:
            rec.cleared_at = self.clock.time()
        self._stop_agent(st, None)
        st.clock_offset = f.offset if starting else 0.0
        self._start_agent(st)

    def _collector_fault(self, rec: FaultRecord, starting: bool) -> None:
        assert self.collector is not None
        if starting:
            self.collector.kill(signal.SIGKILL if rec.fault.signal == "KILL" else signal.SIGTERM)
        else:
            self.collector.start(self._env())

    def _broker_fault(self, rec: FaultRecord, starting: bool) -> None:
        assert self.broker is not None
        if not starting:
            self.broker.start()
        elif rec.fault.signal == "KILL":
            self.broker.kill()
        else:
            self.broker.stop()

    def _hostile_fault(self, rec: FaultRecord, starting: bool) -> None:
        f = rec.fault
        if not starting:
            h = self.hostiles[f.index]
            h.stop()
            rec.outcome["attacks_sent"] = dict(sorted(h.sent.items()))
            if h.errors:
                rec.outcome["client_errors"] = h.errors[:3]
            return
        assert self.broker is not None and self.monitor is not None
        station = str(f.station)
        monitor = self.monitor
        others = [f"{s}-{self.run_id}" for s in self.stations if s != station][:1]
        since = time.monotonic()
        self.hostiles[f.index] = HostileStation(
            self.broker.host,
            self.broker.port,
            station,
            state=lambda: monitor.known_to_attacker(station),
            now_ms=lambda: int(self.clock.time() * 1000),
            steal_ids=[f"central-{self.run_id}", *others],
            max_message_bytes=self._max_message_bytes(),
            protocol="3.1.1" if self._protocol() == "3.1.1" else "5",
            interval_s=f.interval_s,
            seed=stable_hash(self.sc.seed, station, f.index) & 0xFFFFFFFF,
            # The collector is up when the station's acks flow again after the fault starts.
            ready=lambda: (monitor.view(station).ack_real or 0.0) > since,
        ).start()

    def _max_message_bytes(self) -> int:
        ingest = self.sc.central_config.get("ingest", {})
        return int(ingest.get("max_message_bytes", IngestConfig().max_message_bytes))

    @staticmethod
    def _stop_agent(st: _Station, sig: signal.Signals | None) -> None:
        """Stop the station's agent (``sig``, or SIGTERM and wait for it when None), telling
        its devices first: a poll the agent started just before is answered after, to nobody
        (not a reading)."""
        for d in st.devices.values():
            d.agent_stopped = True
        if sig is None:
            st.process.terminate()
        else:
            st.process.kill(sig)

    def _start_agent(self, st: _Station) -> None:
        for d in st.devices.values():
            d.agent_stopped = False
        st.process.start(self._env(st.clock_offset))

    def _between_polls(self, st: _Station, quiet_s: float = 0.05, wait_s: float = 2.0) -> None:
        """Wait (up to ``wait_s``) until none of the station's devices has answered a request
        for ``quiet_s`` real seconds, so an agent is stopped between polls, not in one.

        A reading is the agent's responsibility from its buffer commit on, a millisecond after
        the reply; killed halfway through a poll, no gateway could keep what it was reading.
        """
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            last = max((d.last_io_real for d in st.devices.values()), default=-math.inf)
            if time.monotonic() - last >= quiet_s:
                return
            time.sleep(0.002)

    def _snapshot(self, rec: FaultRecord, which: str) -> None:
        """Counters at the start ("0") or the end ("1") of a fault, for its outcome."""
        f = rec.fault
        assert self.monitor is not None
        o = rec.outcome
        if f.kind in DEVICE_KINDS:
            assert f.station is not None and f.device is not None
            c = self.truth.counters[(f.station, f.device)]
            o[f"_requests{which}"] = c.requests
            o[f"_failed{which}"] = c.failed
            o[f"_polls{which}"] = c.polls
            o[f"_agent_errors{which}"] = self.monitor.view(f.station).device_errors.get(f.device, 0)
        elif f.kind in ("agent", "gateway-replaced") and f.station is not None and which == "0":
            o["buffer_depth_at_kill"] = self.monitor.view(f.station).buffer_depth
        elif f.kind in ("collector", "broker") and which == "0":
            o["backlog_before"] = self.monitor.backlog()

    # -- run ----------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text)

    def run(self) -> RunSummary:
        from rich.console import Console

        self._console = Console(stderr=True, quiet=not self.opt.progress)
        t_start = time.monotonic()
        faults = build_timeline(self.sc)
        self._prepare_dirs()
        self.broker = BrokerHandle.create(self.opt.broker, self.out / "broker")
        try:
            self.store_url = self._store_url()
            self._say(
                f"[bold]sanduan hil[/]: scenario [cyan]{self.sc.name}[/] - {len(self.sc.stations)}"
                f" stations, {self.sc.days:g} simulated days at {self.sc.speed:g}x"
                f" (~{self.sc.real_duration_s:.0f} s), broker {self.broker.kind}, store"
                f" {'PostgreSQL' if self.pg_schema else 'SQLite'}"
            )
            self.broker.start()
            if self.sc.platform:
                self.platform = PlatformSim({mn: sid for sid, mn in self.mns.items()})
                self.platform.start()
            if self.sc.hj212_station is not None:
                self.hj212_port = _dead_port()
            for plan in self.sc.stations:
                self.stations[plan.id] = self._build_station(plan)
            central_cfg = self._write_central_files()
            self._check_configs(central_cfg)
            self.collector = ManagedProcess(
                "central",
                [*sanduan_argv(), "central", "run", "--config", str(central_cfg), "--migrate"],
                self.out / "logs",
            )
            # The shared clock: the period starts a pre-roll after the processes do, long
            # enough for all of them to import and connect on a small, busy machine (about
            # half a second of two cores each), so the first hours of the period are polled.
            preroll = max(self.opt.preroll_s, PREROLL_PER_PROCESS_S * (len(self.stations) + 2))
            self.clock = ScaledClock(time.time() + preroll, self.sc.start, self.sc.speed)
            for st in self.stations.values():
                for dev in st.devices.values():
                    dev.clock = self.clock.time
            self.monitor = Monitor(
                self.broker.host, self.broker.port, f"hil-monitor-{self.run_id}", self.clock
            )
            self.monitor.start()
            self.collector.start(self._env())
            for st in self.stations.values():
                st.process.start(self._env())
            self.phases["startup_s"] = time.monotonic() - t_start
            t_run = time.monotonic()
            self._main_loop(self._actions(faults))
            self.phases["run_s"] = time.monotonic() - t_run
            t_drain = time.monotonic()
            drained = self._drain()
            self.phases["drain_s"] = time.monotonic() - t_drain
            if not drained:
                self.warnings.append(
                    f"the backlog did not drain within {self.sc.settle_s:g} s after the period;"
                    " readings still in station buffers count as lost"
                )
            self._stop_processes()
        finally:
            self._teardown()
        t_an = time.monotonic()
        summary = self._analyse()
        self.phases["analysis_s"] = time.monotonic() - t_an
        summary.wall_s = time.monotonic() - t_start
        summary.phases = dict(self.phases)
        summary.write(self.out / "summary.json")
        if self.opt.summary_json is not None:
            summary.write(self.opt.summary_json)
        return summary

    def _main_loop(self, actions: list[tuple[float, int, str, FaultRecord]]) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        assert self.monitor is not None and self.collector is not None
        end = self.sc.end
        total_days = self.sc.days
        pending = list(actions)
        scheduled = sum(1 for a in actions if a[2] == "start")
        columns = (
            TextColumn("[bold]{task.fields[day]}[/]"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self._console, transient=False) as progress:
            task = progress.add_task("run", total=total_days, day="", stats="")
            last_check = 0.0
            while True:
                now = self.clock.time()
                while pending and pending[0][0] <= now:
                    _, _, what, rec = pending.pop(0)
                    self._apply(what, rec)
                if now >= end:
                    break
                if time.monotonic() - last_check > 0.5:
                    last_check = time.monotonic()
                    self._watch_processes()
                day = (now - self.sc.start) / 86_400.0
                progress.update(
                    task,
                    completed=max(0.0, min(total_days, day)),
                    day=(
                        f"day {max(0.0, day):5.1f}/{total_days:g} {iso(now, self.sc.timezone)[:16]}"
                    ),
                    stats=(
                        f"read {len(self.truth):>6}  stored {self.monitor.acked_total():>6}"
                        f"  resent {self.monitor.resent_total():>4}"
                        f"  faults {self.faults_injected}/{scheduled}"
                    ),
                )
                time.sleep(0.05)
        # Whatever is still pending at the end (restarts, fault ends) happens now.
        for _, _, what, rec in pending:
            if what == "end":
                self._apply(what, rec)
            else:
                rec.skipped = "not reached before the end of the period"

    def _watch_processes(self) -> None:
        procs = [st.process for st in self.stations.values()]
        if self.collector is not None:
            procs.append(self.collector)
        for p in procs:
            if p.died_unexpectedly():
                assert p.proc is not None
                p.crashes += 1
                self.warnings.append(
                    f"{p.name} exited on its own (status {p.proc.returncode}) at"
                    f" {iso(self.clock.time(), self.sc.timezone)}; restarted. Log tail:\n"
                    f"{p.log_tail(8)}"
                )
                p.start()
        if self.broker is not None and self.broker.killable and self.broker.proc is not None:
            proc = self.broker.proc
            if proc.poll() is not None and not self._broker_down_expected():
                self.warnings.append("the broker exited on its own; restarted")
                self.broker.start()

    def _broker_down_expected(self) -> bool:
        return any(
            r.fault.kind == "broker" and r.injected_at is not None and r.cleared_at is None
            for r in self.records
        )

    def _drain(self) -> bool:
        """Silence the devices, then wait until every station's buffer is empty."""
        assert self.monitor is not None
        for st in self.stations.values():
            for dev in st.devices.values():
                dev.set_faults(silent=True)
        t_quiet = time.monotonic()
        deadline = t_quiet + self.sc.settle_s
        # A heartbeat counts only if it was sent after the devices fell silent and a commit
        # interval has passed (nothing read before the silence is still in memory).
        settle = 0.2
        with (
            self._console.status("draining the stations' buffers")
            if self._console
            else (contextlib.nullcontext())
        ):
            while time.monotonic() < deadline:
                self._watch_processes()
                ok = True
                for sid in self.stations:
                    if sid != self.sc.hj212_station:
                        v = self.monitor.view(sid)
                        if (
                            v.status_real is None
                            or v.status_real < t_quiet + settle
                            or (v.buffer_depth or 0) > 0
                        ):
                            ok = False
                            break
                    hj = self.platform is not None or sid == self.sc.hj212_station
                    if hj and not hj212_drained(self._buffer(sid)):
                        ok = False
                        break
                if ok:
                    return True
                time.sleep(0.05)
        return False

    def _stop_processes(self) -> None:
        for st in self.stations.values():
            if st.process.running and st.process.proc is not None:
                st.process.expected_down = True
                st.process.proc.terminate()
        for st in self.stations.values():
            st.process.terminate(timeout=15)
        # Give the collector a moment to store the agents' last messages, then stop it.
        time.sleep(0.3)
        if self.collector is not None:
            self.collector.terminate(timeout=20)

    def _teardown(self) -> None:
        for st in self.stations.values():
            with contextlib.suppress(Exception):
                st.process.terminate(timeout=5)
        if self.collector is not None:
            with contextlib.suppress(Exception):
                self.collector.terminate(timeout=5)
        if self.monitor is not None:
            self.monitor.stop()
        if self.platform is not None:
            self.platform.stop(outage=False)
        if self.broker is not None:
            self.broker.stop()
        for st in self.stations.values():
            for b in st.buses:
                with contextlib.suppress(Exception):
                    b.sim.stop()
                with contextlib.suppress(Exception):
                    b.pair.close()

    # -- analysis -----------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[Any]]:
        """Column names and rows of a read-only query on the collector's store (``?``
        placeholders on both stores)."""
        if self.store_url.startswith("sqlite:"):
            path = urlsplit(self.store_url).path[1:]
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                cur = con.execute(sql, tuple(params))
                return [d[0] for d in cur.description], cur.fetchall()
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.store_url, connect_timeout=10) as conn:
            pcur = conn.execute(sql.replace("?", "%s"), tuple(params))
            return [d.name for d in pcur.description or ()], pcur.fetchall()

    def _stored_rows(self) -> list[StoredRow]:
        """Every stored reading of the rig's stations; stream 0 on a store without streams."""
        columns, _ = self._query("SELECT * FROM readings LIMIT 0")
        stream = "stream" if "stream" in columns else "0"
        _, rows = self._query(
            f"SELECT station, seq, ts_ms, code, value, flag, {stream} FROM readings"
        )
        wanted = set(self.stations)
        return [
            StoredRow(
                str(s), int(q), int(t), str(c), math.nan if v is None else float(v), str(f), int(k)
            )
            for s, q, t, c, v, f, k in rows
            if s in wanted
        ]

    def _centre_lost_with_buffer(self) -> int | None:
        """The collector's own count of readings lost with replaced buffers (None: a store
        that does not keep one)."""
        columns, _ = self._query("SELECT * FROM stations LIMIT 0")
        if "lost_with_buffer" not in columns:
            return None
        _, rows = self._query("SELECT sum(lost_with_buffer) FROM stations")
        return int(rows[0][0] or 0)

    def _dead_letters(self, station: str) -> dict[str, int]:
        """Dead letters of one station's topics by reason (reasons cut to 40 characters)."""
        _, rows = self._query(
            "SELECT reason FROM dead_letters WHERE topic LIKE ?", [f"%/{station}/%"]
        )
        return dict(sorted(Counter(str(r[0])[:40] for r in rows).items()))

    def _central(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop(ENV_VAR, None)
        return subprocess.run(
            [*sanduan_argv(), "central", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

    def _report(self, kind: str, config: Path, html: Path | None) -> dict[str, Any] | None:
        args = ["report", kind, "--month", self.sc.month, "--config", str(config), "--json"]
        if html is not None:
            args += ["--html", str(html)]
        res = self._central(*args)
        if res.returncode != 0:
            self.warnings.append(
                f"sanduan central report {kind} failed ({config.name}):"
                f" {(res.stderr or res.stdout).strip()[-600:]}"
            )
            return None
        try:
            doc: dict[str, Any] = json.loads(res.stdout)
        except json.JSONDecodeError:
            self.warnings.append(f"sanduan central report {kind}: output is not JSON")
            return None
        return doc

    def _truth_store(self, check: DeliveryCheck) -> Path | None:
        """Replay the truth (less the readings lost with replaced buffers: no system could
        have them; sonde readings at the times their stations stamped them) into its own
        SQLite store; its central.toml, or None on failure."""
        tdir = self.out / "truth"
        water = {s.id: WaterBody(s.water_body) for s in self.sc.stations}
        files = self.truth.write_batches(
            tdir / "batches",
            water,
            created_ms=int(self.sc.end * 1000),
            exclude=check.went_with_buffer,
            stamps=check.stamps,
        )
        self.truth.write_jsonl(tdir / "truth.jsonl")
        db = tdir / "truth.db"
        for p in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        cfg = tdir / "central.toml"
        cfg.write_text(dump_toml(self._central_doc(f"sqlite:///{db}", False)), encoding="utf-8")
        res = self._central("migrate", "--config", str(cfg))
        if res.returncode != 0:
            self.warnings.append(f"truth store: migrate failed: {res.stderr.strip()[-400:]}")
            return None
        for i in range(0, len(files), 200):
            chunk = [str(p) for p in files[i : i + 200]]
            res = self._central("replay", "--config", str(cfg), *chunk)
            if res.returncode != 0:
                self.warnings.append(f"truth store: replay failed: {res.stderr.strip()[-400:]}")
                return None
        return cfg

    def _fault_outcomes(self, rows: Sequence[StoredRow], check: DeliveryCheck) -> None:
        assert self.monitor is not None
        speed = self.sc.speed
        stored_keys = {(r.station, r.stream, r.seq) for r in rows}
        for rec in self.records:
            f = rec.fault
            o = rec.outcome
            if rec.skipped or rec.injected_at is None:
                continue
            t0 = rec.injected_at
            t1 = rec.cleared_at if rec.cleared_at is not None else t0
            if f.kind in DEVICE_KINDS:
                assert f.station is not None and f.device is not None
                o["requests_during"] = o.get("_requests1", 0) - o.get("_requests0", 0)
                o["replies_failed"] = o.get("_failed1", 0) - o.get("_failed0", 0)
                o["polls_completed"] = o.get("_polls1", 0) - o.get("_polls0", 0)
                # The agent's own error count for the device, from its heartbeats shortly
                # after the fault (errors are reported with a heartbeat's delay).
                before = int(o.get("_agent_errors0", 0))
                after = [
                    h[3].get(f.device, 0)
                    for h in self.monitor.history_between(t1, t1 + 0.5 * speed)
                    if h[1] == f.station
                ]
                if after:
                    o["agent_errors_counted"] = max(after) - before
                reads = [
                    r
                    for r in self.truth.readings()
                    if r.station == f.station and r.device == f.device and t0 <= r.read_at < t1
                ]
                flags: dict[str, int] = defaultdict(int)
                for r in reads:
                    flags[r.flag.value] += 1
                if flags:
                    o["readings_by_flag"] = dict(flags)
                first = self.truth.first_poll_after(f.station, f.device, t1)
                if first is not None:
                    rec.recovered_s = first - t1
            elif f.kind == "hostile-station":
                assert f.station is not None
                forged: Counter[str] = Counter(
                    a for k, a in self.hostiles[f.index].forged.items() if k in stored_keys
                )
                o["forged_stored"] = dict(sorted(forged.items()))
                # Counted where the answers go: the attacker's own client, subscribed before
                # it attacks (the monitor misses what comes while it reconnects).
                o["readings_nacked"] = self.hostiles[f.index].nacked
                try:
                    o["dead_letters"] = self._dead_letters(f.station)
                except Exception as e:
                    self.warnings.append(f"cannot read the dead letters: {e}")
            elif f.kind in ("agent", "clock", "gateway-replaced"):
                assert f.station is not None
                window = max(2.0, 0.05 * speed)
                stops = [t0, t1] if f.kind == "clock" and rec.cleared_at is not None else [t0]
                o["in_flight_at_kill"] = sum(
                    self.truth.count_read_between(f.station, t - window, t + 1e-6) for t in stops
                )
                restart = t0 if f.kind == "clock" else t1
                first = self.truth.first_poll_after(f.station, None, restart)
                if first is not None:
                    o["down_s"] = round(first - t0)
                    rec.recovered_s = first - restart
                o["readings_resent"] = self.monitor.resent_between(
                    t0, (first or restart) + 0.5 * speed, f.station
                )
                if f.kind == "gateway-replaced":
                    per = check.per_station.get(f.station, {})
                    o["lost_with_buffer"] = per.get("lost_with_buffer", 0)
                    o["streams_acked"] = len(self.monitor.view(f.station).streams)
                if f.kind == "clock":
                    o["offset_s"] = f.offset
                    o["stored_ts_shift_s"] = _ts_shift(self.truth, rows, f.station, t0, t1)
                    o["clock_offset_reported_s"] = self.monitor.view(f.station).clock_offset_s
            else:  # collector, broker
                before = int(o.get("backlog_before", 0))
                drained = self._drained_at(t1, before)
                end = drained if drained is not None else t1 + 30 * speed
                peak: dict[str, int] = {}
                for _, s, depth, _ in self.monitor.history_between(t0, end):
                    peak[s] = max(peak.get(s, 0), depth)
                o["backlog_peak"] = sum(peak.values())
                o["readings_resent"] = self.monitor.resent_between(t0, end)
                if drained is not None:
                    rec.recovered_s = drained - t1
            for k in [k for k in o if k.startswith("_")]:
                del o[k]

    def _drained_at(self, t: float, before: int) -> float | None:
        """First simulated time after ``t`` at which the stations' total backlog (latest
        heartbeat of each) is back to its level before the fault: the backlog drained."""
        assert self.monitor is not None
        threshold = max(before, 5 * len(self.stations)) * 1.5
        latest: dict[str, int] = {}
        for ts, s, depth, _ in self.monitor.history_between(t, math.inf):
            latest[s] = depth
            if len(latest) == len(self.stations) and sum(latest.values()) <= threshold:
                return ts
        return None

    def _analyse(self) -> RunSummary:
        rows: list[StoredRow] = []
        try:
            rows = self._stored_rows()
        except Exception as e:
            self.warnings.append(f"cannot read the collector's store: {e}")
        tolerance = max(60.0, 0.05 * self.sc.speed)
        truth = self.truth.readings()
        if self.sc.hj212_station is not None:
            truth = [
                as_sent_over_hj212(r) if r.station == self.sc.hj212_station else r for r in truth
            ]
        check = compare(
            truth,
            rows,
            ts_tolerance_s=tolerance,
            replaced={sid: st.replaced_at for sid, st in self.stations.items()},
            forged={k: a for h in self.hostiles.values() for k, a in h.forged.items()},
        )
        try:
            check.centre_lost_with_buffer = self._centre_lost_with_buffer()
        except Exception as e:
            self.warnings.append(f"cannot read the collector's station table: {e}")
        self._fault_outcomes(rows, check)
        central_cfg = self.out / "config" / "central.toml"
        html = self.out / "report.html" if self.opt.html else None

        def stored_reports() -> _Docs:
            return (
                self._report("sections", central_cfg, html),
                self._report("compensation", central_cfg, None),
            )

        def truth_reports() -> _Docs:
            truth_cfg = self._truth_store(check)
            if truth_cfg is None:
                return None, None
            return (
                self._report("sections", truth_cfg, None),
                self._report("compensation", truth_cfg, None),
            )

        # The two stores are independent: compute their reports side by side.
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="report") as ex:
            stored_f = ex.submit(stored_reports)
            truth_f = ex.submit(truth_reports)
            sections, ledger = stored_f.result()
            t_sections, t_ledger = truth_f.result()
        t_problems = time.monotonic()
        problems = self._bureau(central_cfg)
        self.phases["problems_s"] = time.monotonic() - t_problems  # part of the analysis
        if self.pg_schema is not None and not self.opt.keep_schema:
            self._drop_schema()
        in_flight = sum(int(r.outcome.get("in_flight_at_kill", 0)) for r in self.records)
        summary = RunSummary.build(
            scenario=self.sc,
            out_dir=self.out,
            broker=self.broker.url if self.broker else "",
            broker_kind=self.broker.kind if self.broker else "",
            store=_redact(self.store_url),
            check=check,
            faults=self.records,
            sections_doc=sections,
            ledger_doc=ledger,
            truth_sections_doc=t_sections,
            truth_ledger_doc=t_ledger,
            html=html if html is not None and html.exists() else None,
            warnings=self.warnings,
            resent=self.monitor.resent_total() if self.monitor else 0,
            in_flight_at_kill=in_flight,
            processes=self._process_counts(),
            polls={f"{s}/{d}": c.polls for (s, d), c in sorted(self.truth.counters.items())},
            median_poll_gap_s=_median_gap(self.truth),
            problems=problems,
        )
        if self.platform is not None:
            from zoneinfo import ZoneInfo

            buffers = {sid: self._buffer(sid) for sid in self.stations}
            summary.platform = platform_check(
                self.platform, buffers, ZoneInfo(self.sc.timezone), int(self.sc.end * 1000)
            )
        return summary

    def _buffer(self, station: str) -> Path:
        return self.out / "buffers" / f"{station}.db"

    def _bureau(self, config: Path) -> dict[str, Any]:
        """The scripted county bureau and towns: compute the month (which discovers the run's
        problems), assign every new problem to its town, and walk those whose rule has been
        quiet long enough through rectification and feedback to closure."""
        log: list[str] = []

        def central(*args: str) -> Any:
            res = self._central(*args, "--config", str(config))
            if res.returncode != 0:
                raise RuntimeError(f"central {' '.join(args[:2])}: {res.stderr.strip()[-400:]}")
            return json.loads(res.stdout) if "--json" in args else None

        until = dt.datetime.fromtimestamp(self.sc.end, dt.UTC).isoformat()
        try:
            done = central("compute", "--month", self.sc.month, "--until", until, "--json")
            checked = int(done["problems"]["checked_until_ms"])
            listed = central("problems", "list", "--json")["problems"]
            new = [p for p in listed if p["state"] == "discovered" and p["town"]]
            quiet = [
                p
                for p in new
                if checked - int(p["last_seen_ms"])
                >= float(p["details"]["rule"]["quiet_hours"]) * 3_600_000
            ]
            log += [f"{p['id']} found: {p['message']}" for p in listed]
            # one command per step for all the problems it concerns (each a process start)
            if new:
                ids = [str(p["id"]) for p in new]
                central("problems", "assign", *ids, "--actor", "county bureau", "--note", "交办")
            if quiet:
                ids = [str(p["id"]) for p in quiet]
                town = "town office (镇)"
                central("problems", "update", *ids, "--actor", town, "--note", "整改: 已排查处理")
                central("problems", "update", *ids, "--actor", town, "--evidence", "现场照片")
                central("problems", "close", *ids, "--actor", "county bureau", "--note", "销号")
                log += [f"{p['id']} assigned to {p['town']}, rectified and closed" for p in quiet]
            counts = central("problems", "list", "--json")["counts"]
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            self.warnings.append(f"scripted problem handling failed: {e}")
            return {"log": log}
        return {**counts, "log": log}

    def _process_counts(self) -> dict[str, dict[str, int]]:
        procs = [st.process for st in self.stations.values()]
        procs += [self.collector] if self.collector else []
        out = {p.name: {"starts": p.starts, "kills": p.kills, "crashes": p.crashes} for p in procs}
        b = self.broker
        out["broker"] = {"starts": b.starts if b else 0, "kills": b.kills if b else 0}
        return out

    def _drop_schema(self) -> None:
        import psycopg

        assert self.opt.store is not None and self.pg_schema is not None
        try:
            with psycopg.connect(self.opt.store, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
        except psycopg.Error as e:
            self.warnings.append(f"could not drop schema {self.pg_schema}: {e}")


_Docs = tuple[dict[str, Any] | None, dict[str, Any] | None]
"""A sections report and a compensation report (``--json`` documents), None where failed."""


def _median_gap(truth: TruthLog) -> float | None:
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in truth.readings():
        if not r.by_time:
            times[(r.station, r.device)].append(r.read_at)
    gaps: list[float] = []
    for ts in times.values():
        u = sorted(set(ts))
        gaps.extend(b - a for a, b in itertools.pairwise(u))
    return statistics.median(gaps) if gaps else None


def _ts_shift(
    truth: TruthLog, rows: Sequence[StoredRow], station: str, t0: float, t1: float
) -> float | None:
    """Median (stored timestamp - read time) of a station's sonde readings read in [t0, t1)."""
    stored: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        if r.station == station:
            stored[(r.code, value_key(r.value))].append(r.ts_ms)
    shifts = []
    for tr in truth.readings():
        if tr.station != station or tr.by_time or not t0 <= tr.read_at < t1:
            continue
        got = stored.get((tr.code, value_key(tr.value)))
        if got:
            shifts.append(min((t / 1000.0 - tr.ts for t in got), key=abs))
    return round(statistics.median(shifts), 1) if shifts else None


LOGGER_PW = "logger212"


def _dead_port() -> int:
    """A free local port (nothing listens on it until someone binds it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def run_scenario(scenario: Scenario, options: RigOptions) -> RunSummary:
    """Run ``scenario`` end to end and return (and write) its summary."""
    return Rig(scenario, options).run()

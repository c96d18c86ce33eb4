"""A hostile station against the good ones: stored readings/s of the good stations while one
station's credentials flood the broker with garbage and oversize payloads, as a ratio to the
same run without the flood.

    .venv/bin/python bench/hostile.py [--seconds 15] [--stations 6] [--json out.json]

The centre is real: a private Mosquitto started with the shipped configuration
(deploy/mosquitto: TLS, passwords, ACLs, client ids bound to users, size limits) on a free
port, and a ``sanduan central run`` process storing into SQLite. Three phases, each with a fresh
store and a fresh collector: baseline, flood, baseline again (the ratio is to the mean of the
two baselines, as the load of a shared machine drifts).

Good stations (in this process, one MQTT client each) send v1 batches of 500 readings with a
window of 4 unacknowledged batches, as an agent does, resending a batch not acknowledged within
10 s. A reading counts when the collector's ack for its batch arrives (the collector acks after
the commit); at the end of each phase the store is checked to hold every acknowledged reading.

The hostile station (a separate process, the credentials of station ``H-01``) publishes as fast
as the broker takes them (QoS 1, 20 in flight): undecodable garbage of 1 KiB to 256 KiB on its
batch, event and status topics, and oversize payloads (just over the broker's limit, and 5 to
30 MiB) that the broker refuses, reconnecting whenever the broker drops it.

Target: ratio >= 0.8. Also printed: the collector's peak RSS, the dead letters it stored and the
size of its database after each phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.brokers: the shipped broker configuration

GOOD_PREFIX = "G-"
HOSTILE = "H-01"
PER_BATCH = 500
WINDOW = 4
ACK_TIMEOUT_S = 10.0
CODES = ["w01001", "w01009", "w01003", "w21003", "w21011"]


def _client(port: int, ca: Path, user: str, password: str, client_id: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.username_pw_set(user, password)
    return c


# --- good stations -----------------------------------------------------------------------------


class GoodStation:
    """One well-behaved station: a window of batches, resend on ack timeout."""

    def __init__(self, station: str, port: int, ca: Path, password: str) -> None:
        from sanduan.shared import topics

        self.station = station
        self.client = _client(port, ca, station, password, station)
        self.cond = threading.Condition()
        self.inflight: dict[int, tuple[float, bytes, int]] = {}
        self.next_batch = 1
        self.next_seq = 1
        self.acked: list[tuple[float, int]] = []  # (monotonic time, readings)
        self.acked_batches: set[int] = set()
        self.resent = 0
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.topic = topics.batch_topic(station)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("localhost", port)
        self.thread = threading.Thread(target=self._run, name=station, daemon=True)

    def _on_connect(self, c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        from sanduan.shared import topics

        c.subscribe(topics.ack_topic(self.station), qos=1)
        self.connected.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        from sanduan.shared import wire

        ack = wire.decode_ack(msg.payload)
        now = time.monotonic()
        with self.cond:
            sent = self.inflight.pop(ack.batch_seq, None)
            if sent is not None and ack.batch_seq not in self.acked_batches:
                self.acked_batches.add(ack.batch_seq)
                self.acked.append((now, sent[2]))
            self.cond.notify()

    def _batch(self) -> tuple[int, bytes, int]:
        from sanduan.shared import wire

        b, s = self.next_batch, self.next_seq
        self.next_batch += 1
        self.next_seq += PER_BATCH
        now = int(time.time() * 1000)
        seq = range(s, s + PER_BATCH)
        batch = wire.Batch.from_columns(
            self.station,
            b,
            now,
            seq=seq,
            ts_ms=[now - 3_600_000 + (q // len(CODES)) * 1000 for q in seq],
            code=[CODES[q % len(CODES)] for q in seq],
            values=[1.0 + (q % 97) / 10 for q in seq],
        )
        return b, wire.encode(batch), PER_BATCH

    def _run(self) -> None:
        self.client.loop_start()
        self.connected.wait(30)
        while not self.stop.is_set():
            with self.cond:
                now = time.monotonic()
                for b, (t, payload, n) in list(self.inflight.items()):
                    if now - t > ACK_TIMEOUT_S:
                        self.inflight[b] = (now, payload, n)
                        self.client.publish(self.topic, payload, qos=1)
                        self.resent += 1
                if len(self.inflight) >= WINDOW:
                    self.cond.wait(0.5)
                    continue
            b, payload, n = self._batch()
            with self.cond:
                self.inflight[b] = (time.monotonic(), payload, n)
            self.client.publish(self.topic, payload, qos=1)
        self.client.disconnect()
        self.client.loop_stop()

    def acked_between(self, t0: float, t1: float) -> int:
        with self.cond:
            return sum(n for t, n in self.acked if t0 <= t < t1)

    def acked_total(self) -> int:
        with self.cond:
            return sum(n for _, n in self.acked)


# --- the hostile station (its own process) -----------------------------------------------------


def flood(port: int, ca: Path, password: str, limit: int, stats_path: Path) -> None:
    """Publish garbage and oversize payloads as station H-01 until SIGTERM.

    One thread drives the MQTT client by hand (``loop``), so a connection the broker drops is
    replaced at once (paho's own loop thread takes a second to stop).
    """
    from sanduan.shared import topics

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(8)
    garbage = [rng.randbytes(rng.choice([1024, 16_384, 65_536, 262_144])) for _ in range(32)]
    oversize = [rng.randbytes(limit + 1), rng.randbytes(5 << 20), rng.randbytes(30 << 20)]
    targets = [topics.batch_topic(HOSTILE)] * 6 + [
        topics.event_topic(HOSTILE),
        topics.status_topic(HOSTILE),
    ]
    counts = {"garbage": 0, "garbage_bytes": 0, "oversize": 0, "oversize_bytes": 0, "connects": 0}
    inflight: set[int] = set()
    state = {"up": False, "down": False}

    def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        state["up"] = not getattr(rc, "is_failure", False)

    def on_disconnect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        state["down"] = True

    def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        inflight.discard(mid)

    while not stop.is_set():
        inflight.clear()
        state.update(up=False, down=False)
        c = _client(port, ca, HOSTILE, password, f"flood-{counts['connects']}")
        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_publish = on_publish
        try:
            c.connect("localhost", port)
        except OSError:
            time.sleep(0.1)
            continue
        deadline = time.monotonic() + 10
        while not state["up"] and not state["down"] and time.monotonic() < deadline:
            c.loop(0.05)
        if state["up"]:
            counts["connects"] += 1
        while state["up"] and not state["down"] and not stop.is_set():
            while len(inflight) < 20:
                if rng.random() < 0.03:
                    payload, kind = rng.choice(oversize), "oversize"
                else:
                    payload, kind = rng.choice(garbage), "garbage"
                inflight.add(c.publish(rng.choice(targets), payload, qos=1).mid)
                counts[kind] += 1
                counts[f"{kind}_bytes"] += len(payload)
            c.loop(0.01)
        with contextlib.suppress(Exception):
            c.disconnect()
    stats_path.write_text(json.dumps(counts), encoding="utf-8")


# --- a phase -----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    readings: int
    seconds: float
    stored_rows: int
    resent_batches: int
    dead_letters: int
    db_mib: float
    collector_peak_rss_mib: float
    cpu_s: dict[str, float]
    flood: dict[str, int] | None = None

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


def _sanduan() -> list[str]:
    script = Path(sys.executable).with_name("sanduan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sanduan.cli"]


def _wait_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in path.read_text(encoding="utf-8", errors="replace"):
            return True
        time.sleep(0.1)
    return False


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (NaN if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_phase(
    name: str,
    work: Path,
    port: int,
    ca: Path,
    users: dict[str, str],
    stations: list[str],
    seconds: float,
    with_flood: bool,
    limit: int,
    broker_pid: int,
) -> Phase:
    d = work / name
    d.mkdir()
    db = d / "central.db"
    cfg = d / "central.toml"
    cfg.write_text(
        f'[central]\nstore = "sqlite:///{db}"\n\n[mqtt]\nbroker = "mqtts://localhost:{port}"\n'
        f'username = "central"\npassword = "{users["central"]}"\n'
        f'[mqtt.tls]\nca_file = "{ca}"\n',
        encoding="utf-8",
    )
    log = d / "central.log"
    with log.open("wb") as f:
        collector = subprocess.Popen(
            [*_sanduan(), "central", "run", "--config", str(cfg), "--migrate"],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    flooder: subprocess.Popen[bytes] | None = None
    goods: list[GoodStation] = []
    try:
        if not _wait_line(log, "subscribed to", collector, 60):
            raise RuntimeError(f"the collector did not subscribe; see {log}")
        goods = [GoodStation(s, port, ca, users[s]) for s in stations]
        stats = d / "flood.json"
        if with_flood:
            flooder = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--flood",
                    str(port),
                    str(ca),
                    users[HOSTILE],
                    str(limit),
                    str(stats),
                ]
            )
            time.sleep(1.0)  # the flood is under way before the good stations start
        for g in goods:
            g.thread.start()
        time.sleep(2.0)  # connected, windows full
        pids = {"collector": collector.pid, "broker": broker_pid, "bench": os.getpid()}
        if flooder is not None:
            pids["hostile"] = flooder.pid
        cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        t1 = time.monotonic()
        cpu = {k: round(_cpu_s(p) - cpu0[k], 1) for k, p in pids.items()}
        readings = sum(g.acked_between(t0, t1) for g in goods)
        for g in goods:
            g.stop.set()
        for g in goods:
            g.thread.join(10)
        flood_stats = None
        if flooder is not None:
            flooder.terminate()
            flooder.wait(30)
            flooder = None
            flood_stats = json.loads(stats.read_text(encoding="utf-8"))
        # Let the collector finish what it has; every acknowledged reading must be stored.
        time.sleep(1.0)
        peak = _peak_rss_mib(collector.pid)
        collector.terminate()
        collector.wait(60)
        con = sqlite3.connect(db)
        try:
            ph = ",".join("?" * len(stations))
            rows = con.execute(
                f"SELECT count(*) FROM readings WHERE station IN ({ph})", stations
            ).fetchone()[0]
            dead = con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        finally:
            con.close()
        acked = sum(g.acked_total() for g in goods)
        if rows < acked:
            raise AssertionError(f"{name}: {acked} readings acknowledged but {rows} stored")
        size = sum(p.stat().st_size for p in d.glob("central.db*"))
        return Phase(
            name,
            readings,
            t1 - t0,
            rows,
            sum(g.resent for g in goods),
            dead,
            size / 2**20,
            peak,
            cpu,
            flood_stats,
        )
    finally:
        if flooder is not None:
            flooder.kill()
            flooder.wait()
        if collector.poll() is None:
            collector.kill()
            collector.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--flood":
        a = sys.argv[2:7]
        flood(int(a[0]), Path(a[1]), a[2], int(a[3]), Path(a[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    ap.add_argument("--stations", type=int, default=6, help="good stations")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    from tests.brokers import TlsBroker, have_mosquitto_tls

    from sanduan.shared.config import IngestConfig

    if not have_mosquitto_tls():
        print("bench/hostile.py needs mosquitto, mosquitto_passwd and openssl; skipped")
        return 0
    limit = IngestConfig().max_message_bytes
    stations = [f"{GOOD_PREFIX}{i:02d}" for i in range(1, args.stations + 1)]
    users = {"central": "bench-central", HOSTILE: "bench-hostile"}
    users |= {s: f"bench-{s}" for s in stations}
    with tempfile.TemporaryDirectory(prefix="sanduan-hostile-") as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = TlsBroker.start(work / "broker", users)
        try:
            print(
                f"shipped Mosquitto config on port {broker.port}, collector on SQLite;"
                f" {len(stations)} good stations ({PER_BATCH} readings a batch, window {WINDOW}),"
                f" {args.seconds:g} s a phase"
            )
            phases = []
            # The baseline before and after the flood: on a shared machine the load drifts.
            for name, flooding in (("baseline", False), ("flood", True), ("baseline2", False)):
                ph = run_phase(
                    name, work, broker.port, broker.ca, users, stations, args.seconds,
                    flooding, limit, broker.proc.pid,
                )  # fmt: skip
                phases.append(ph)
                print(
                    f"{name:9s} good stations {ph.rate:>9,.0f} readings/s stored"
                    f"  (stored {ph.stored_rows:,}, resent batches {ph.resent_batches})"
                    f"  dead letters {ph.dead_letters:,}, db {ph.db_mib:,.1f} MiB,"
                    f" collector peak RSS {ph.collector_peak_rss_mib:,.0f} MiB"
                )
                print(
                    "          CPU s while measured: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in ph.cpu_s.items())
                )
                if ph.flood:
                    f = ph.flood
                    print(
                        f"          hostile station: {f['garbage']:,} garbage payloads"
                        f" ({f['garbage_bytes'] / 2**20:,.0f} MiB), {f['oversize']:,} oversize"
                        f" ({f['oversize_bytes'] / 2**20:,.0f} MiB), {f['connects']} connections"
                    )
        finally:
            broker.stop()
    ratio = phases[1].rate / ((phases[0].rate + phases[2].rate) / 2)
    verdict = "PASS" if ratio >= 0.8 else "MISS"
    print(f"ratio flood/mean baseline {ratio:.2f}  (target >= 0.8)  {verdict}")
    if args.json:
        doc = {"phases": [asdict(p) | {"rate": p.rate} for p in phases], "ratio": ratio}
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

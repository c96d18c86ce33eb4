"""A province on two collectors: 10,000 stations' wire batches through Mosquitto to two
``sanduan central run`` processes sharing the subscription, on PostgreSQL.

    .venv/bin/python bench/province.py [--stations 10000] [--duration 60] [--period 20]
        [--rounds 6] [--backlog-hours 24] [--sections 10000] [--pg URL] [--quick]

No serial lines and no edge agents: one publisher (a paho client in this process) sends, for
every simulated station, exactly the wire batches its agent would send (``sanduan/v1/<station>/
batch``, QoS 1), and a listener records the collectors' acks (sent after commit), so the lag is
end to end: publish to ack. The broker is a private Mosquitto on a free port (no persistence);
the collectors are real processes (``mqtt.group``: one shared subscription, MQTT 5), each with
``--workers`` ingest workers (``ingest.workers``, 4: concurrent commits share PostgreSQL's WAL
flushes), writing to a fresh PostgreSQL schema with the monthly
partitions the collector creates.

Phases:

0. **First contact**: every station sends one batch (a station's first batch takes the checked
   write path and creates its row); timed, not part of the window.
1. **Sustained**: every station publishes a batch every ``--period`` s (staggered evenly), each
   batch ``--rounds`` poll rounds of 8 parameters, for ``--duration`` s. Printed: offered and
   stored readings/s, publish-to-ack lag p50/p99/max over the window, collector RSS.
2. **Backlog**: every station comes back after a ``--backlog-hours`` outage at once, each with
   its hourly readings of the outage (8 parameters; one batch per station, as the agent sends up
   to 1,000 readings a batch). Printed: time from the first publish to the last ack, against
   the bare COPY bound: the same rows, the same batches, binary COPY into a fresh schema with
   the same partitions and indexes, one transaction per batch, on as many connections as the
   collectors have workers (so both sides share PostgreSQL's WAL flushes alike).
3. **Every reading once**: the readings table holds exactly the readings published, each
   (station, seq) once.
4. **Province-month assessment**: ``--sections`` sections (the county layout of
   ``bench/assessment.py``: two sections a town), six parameters at the national network's
   4-hourly cadence for 31 days, through aggregation, assessment and compensation (three rules).

``--quick``: 1,000 stations, 20 s, 1,000 sections (a smoke run of under a minute).
``--assessment-only``: phase 4 alone. ``--former``: phase 4 also settles the month through the
lookups compensation used before they were indexed (quadratic in the number of towns), checks
that the ledger is the same and prints the ratio of the two times.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from sanduan.central.store.postgres import PostgresStore
from sanduan.shared import topics
from sanduan.shared.wire import Ack, Batch, decode, encode

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
CODES = ["w01001", "w01009", "w01003", "w01014", "w21003", "w21011", "w01010", "w01019"]
HOUR_MS = 3_600_000
ENTRY = "from sanduan.cli import main; main()"


# --- plumbing ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"mosquitto did not open port {port}")


def pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    schema = f"province_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler(threading.Thread):
    """Peak resident memory of each process, sampled every 0.5 s."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_mib(p))


class Acks:
    """Subscribes to every station's ack topic; records when each (station, batch) was acked."""

    def __init__(self, port: int) -> None:
        self.at: dict[tuple[str, int], float] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="province-acks", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics.filter_for("ack"), qos=0)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        ack = decode(msg.payload)
        if isinstance(ack, Ack):
            with self.lock:
                self.at.setdefault((ack.station, ack.batch_seq), now)
                self.count = len(self.at)

    def wait_for(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count >= n:
                return True
            time.sleep(0.05)
        return self.count >= n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """One paho client publishing every station's batches (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="province-stations", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent: dict[tuple[str, int], float] = {}

    def publish(self, b: Batch, payload: bytes | None = None) -> None:
        self.sent[(b.station, b.batch_seq)] = time.monotonic()
        self.client.publish(topics.batch_topic(b.station), payload or encode(b), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Stations:
    """The simulated stations' seq counters and batch numbers (all they need to be honest)."""

    def __init__(self, n: int) -> None:
        self.ids = [f"P{i:05d}" for i in range(n)]
        self.seq = [1] * n
        self.bseq = [1] * n
        self.rng = np.random.default_rng(11)

    def batch(self, i: int, ts0_ms: int, step_ms: int, rounds: int) -> Batch:
        """``rounds`` poll rounds of the 8 parameters, ``step_ms`` apart, from ``ts0_ms``."""
        n = rounds * len(CODES)
        seq = range(self.seq[i], self.seq[i] + n)
        self.seq[i] += n
        b = self.bseq[i]
        self.bseq[i] += 1
        vals = self.rng.uniform(0.05, 9.0, n).tolist()
        return Batch.from_columns(
            self.ids[i],
            b,
            ts0_ms + (rounds - 1) * step_ms,
            seq=list(seq),
            ts_ms=[ts0_ms + (k // len(CODES)) * step_ms for k in range(n)],
            code=CODES * rounds,
            values=vals,
            flags=["N"] * n,
            grades=[2] * n,
        )


def start_broker(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\nmax_packet_size 4194304\n",
        "utf-8",
    )
    log = (work / "mosquitto.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return proc, port


def start_collectors(
    work: Path, url: str, port: int, n: int, workers: int
) -> list[subprocess.Popen[bytes]]:
    toml = work / "central.toml"
    toml.write_text(
        f'[central]\nstore = "{url}"\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\nprotocol = "5"\ngroup = "province"\n'
        f"[ingest]\nworkers = {workers}\n",
        "utf-8",
    )
    procs = []
    for i in range(n):
        log = (work / f"collector-{i}.log").open("wb")
        argv = [sys.executable, "-c", ENTRY, "central", "run", "-c", str(toml)]
        argv += ["--client-id", f"province-c{i}"]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    return procs


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# --- phases -----------------------------------------------------------------------------------


def sustained(
    st: Stations, pub: Publisher, acks: Acks, args: argparse.Namespace, now_ms: int
) -> dict[str, Any]:
    n = len(st.ids)
    step = 600_000  # 10-minute poll rounds inside a batch
    interval = args.period / n
    t0 = time.monotonic()
    k = 0
    sent_keys: list[tuple[str, int]] = []
    readings = 0
    while True:
        due = t0 + k * interval
        now = time.monotonic()
        if due >= t0 + args.duration:
            break
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        i = k % n
        b = st.batch(i, now_ms + (k // n) * args.rounds * step, step, args.rounds)
        pub.publish(b)
        sent_keys.append((b.station, b.batch_seq))
        readings += b.count
        k += 1
    window = time.monotonic() - t0
    ok = acks.wait_for(len(pub.sent), 120)
    lags = [acks.at[key] - pub.sent[key] for key in sent_keys if key in acks.at]
    last = max((acks.at[key] for key in sent_keys if key in acks.at), default=t0)
    return {
        "batches": len(sent_keys),
        "readings": readings,
        "window_s": window,
        "offered_rps": readings / window,
        "stored_rps": readings / (last - t0),
        "lag_p50_s": pct(lags, 50),
        "lag_p99_s": pct(lags, 99),
        "lag_max_s": max(lags, default=float("nan")),
        "all_acked": ok,
    }


def backlog_batches(st: Stations, hours: int, back_ms: int) -> Iterator[Batch]:
    for i in range(len(st.ids)):
        yield st.batch(i, back_ms, HOUR_MS, hours)


def backlog(
    st: Stations, pub: Publisher, acks: Acks, hours: int, now_ms: int
) -> tuple[dict[str, Any], list[Batch]]:
    batches = list(backlog_batches(st, hours, now_ms - hours * HOUR_MS))
    payloads = [encode(b) for b in batches]  # encoded beforehand: the stations' work, not ours
    before = len(pub.sent)
    t0 = time.monotonic()
    for b, p in zip(batches, payloads, strict=True):
        pub.publish(b, p)
    t_pub = time.monotonic() - t0
    ok = acks.wait_for(before + len(batches), 600)
    last = max(
        acks.at[(b.station, b.batch_seq)] for b in batches if (b.station, b.batch_seq) in acks.at
    )
    return {
        "batches": len(batches),
        "readings": sum(b.count for b in batches),
        "publish_s": t_pub,
        "drain_s": last - t0,
        "all_acked": ok,
    }, batches


def bare_copy(batches: list[Batch], base: str, now_ms: int, connections: int) -> float:
    """Seconds to COPY the batches' rows into a fresh schema with the same partitions: binary
    COPY, one transaction per batch (the collectors commit each batch before acking it), on
    as many connections as the collectors have ingest workers, so both sides get the same
    sharing of PostgreSQL's WAL flushes."""
    url, drop = pg_schema(base)
    try:
        stores = [PostgresStore(url) for _ in range(connections)]
        stores[0].migrate()
        stores[0].maintain(now_ms)

        def run(k: int) -> None:
            store = stores[k]
            for b in batches[k::connections]:
                with store._tx("bare copy") as cur:
                    store.copy_readings(cur, "readings", PostgresStore.copy_rows(b, now_ms))

        threads = [threading.Thread(target=run, args=(k,)) for k in range(connections)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        n = stores[0].count_readings()
        for s in stores:
            s.close()
        if n != sum(b.count for b in batches):
            sys.exit(f"bare COPY stored {n} readings of {sum(b.count for b in batches)}")
        return dt
    finally:
        drop()


def assessment(n_sections: int, *, former: bool = False) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location(
        "bench_assessment", Path(__file__).parent / "assessment.py"
    )
    assert spec is not None and spec.loader is not None
    ba = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ba)
    from sanduan.central.core.assessment import assess, means_by_section
    from sanduan.central.core.compensation import build_rules, settle
    from sanduan.central.core.validity import SeriesData, ValidityRules, aggregate, calendar

    county = ba.make_county(n_sections)
    start, end = ba.PERIOD.bounds_ms(county.timezone)
    step = 4 * HOUR_MS
    n_t = (end - start) // step
    rng = np.random.default_rng(3)
    keys = [(s.station, p) for s in county.sections.values() for p in ba.PARAMS]
    ts = np.tile(start + np.arange(n_t, dtype=np.int64) * step, len(keys))
    values = np.empty(len(keys) * n_t)
    for i, (_, p) in enumerate(keys):
        mu, sd = ba.PARAMS[p]
        values[i * n_t : (i + 1) * n_t] = np.abs(rng.normal(mu, sd, n_t))
    flags = np.full(len(values), "N", dtype="<U1")
    offsets = np.arange(len(keys) + 1, dtype=np.int64) * n_t
    series = SeriesData(tuple(keys), offsets, ts, values, flags)
    rules = build_rules(
        {
            "rule": [
                {"kind": "three-section", "reward_per_class": 100_000},
                {"kind": "class-change", "id": "cc"},
                {"kind": "exceedance", "id": "ex"},
            ]
        }
    )
    cal = calendar(ba.PERIOD, county.timezone)
    vr = ValidityRules(min_values_per_hour=1, min_hours_per_day=1)
    out: dict[str, float] = {"sections": len(county.sections), "values": len(values)}
    t = time.perf_counter()
    agg = aggregate(series, cal, vr)
    out["aggregate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    assess(county, agg)
    out["assess_s"] = time.perf_counter() - t
    t = time.perf_counter()
    means = means_by_section(county, agg, "month", 0)
    ledger = settle(county, rules, ba.PERIOD, means)
    out["compensate_s"] = time.perf_counter() - t
    if former:
        # The same settlement through the former lookups (scans of every boundary / town per
        # town, each section graded again by every rule), on a county with nothing memoised.
        again = ba.make_county(n_sections)
        with former_lookups():
            t = time.perf_counter()
            means = means_by_section(again, agg, "month", 0)
            old = settle(again, rules, ba.PERIOD, means)
            out["compensate_former_s"] = time.perf_counter() - t
        if [e.to_json() for e in old] != [e.to_json() for e in ledger]:
            sys.exit("compensation: the former and the indexed lookups settle differently")
    return out


@contextmanager
def former_lookups() -> Iterator[None]:
    """Swap in the lookups compensation used before they were indexed (for the same-run
    comparison of ``--former``): every boundary scanned for each town, every town for each
    section's owner, every section for each river, each section graded again at each use."""
    from sanduan.central.core.assessment import factor_classes
    from sanduan.central.core.compensation.base import SettlementContext
    from sanduan.central.core.county import Boundary, County

    def boundaries_of(county: County, town: str) -> tuple[Boundary, ...]:
        return tuple(b for b in county.boundaries() if b.town == town)

    def owner_of(county: County, section: str) -> str | None:
        s = county.sections[section]
        if s.owner is not None:
            return s.owner
        for t in county.towns.values():
            if t.outflow == section:
                return t.id
        for t in county.towns.values():
            if any(i.section == section for i in t.inflows):
                return t.id
        return None

    def assessed_sections_on(county: County, river: str) -> tuple[str, ...]:
        return tuple(s.id for s in county.assessed_sections if s.river == river)

    def classes(ctx: SettlementContext, section: str, factors: Any) -> dict[str, int]:
        s = ctx.county.sections[section]
        return factor_classes(ctx.means.get(section, {}), factors, s.water_body)

    saved = [
        (County, "boundaries_of", boundaries_of),
        (County, "owner_of", owner_of),
        (County, "assessed_sections_on", assessed_sections_on),
        (SettlementContext, "classes", classes),
    ]
    originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in saved]
    try:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


def report_assessment(n_sections: int, *, former: bool) -> None:
    a = assessment(n_sections, former=former)
    print(
        f"province-month: {a['sections']:,.0f} sections, {a['values']:,.0f} values"
        f" (6 parameters, 4-hourly, 31 days): aggregation {a['aggregate_s']:.1f} s,"
        f" assessment {a['assess_s']:.2f} s, compensation {a['compensate_s']:.2f} s"
    )
    if former:
        print(
            f"compensation through the former lookups: {a['compensate_former_s']:.2f} s;"
            f" indexed/former ratio {a['compensate_s'] / a['compensate_former_s']:.3f}"
            " (same ledger)"
        )


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stations", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=100.0, help="sustained window, s")
    ap.add_argument("--period", type=float, default=100.0, help="s between a station's batches")
    ap.add_argument("--rounds", type=int, default=6, help="poll rounds (x8 readings) a batch")
    ap.add_argument("--backlog-hours", type=int, default=24)
    ap.add_argument("--sections", type=int, default=10_000)
    ap.add_argument("--collectors", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4, help="ingest.workers of each collector")
    ap.add_argument("--pg", default=PG_BASE)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-assessment", action="store_true")
    ap.add_argument(
        "--former",
        action="store_true",
        help="also time compensation through the former (quadratic) lookups, same run",
    )
    ap.add_argument(
        "--assessment-only", action="store_true", help="only the province-month assessment"
    )
    args = ap.parse_args()
    if args.assessment_only:
        report_assessment(args.sections, former=args.former)
        return 0
    if args.quick:
        args.stations, args.duration, args.sections = 1000, 20.0, 1000
        args.period = 10.0
    if shutil.which("mosquitto") is None:
        sys.exit("bench/province.py needs mosquitto on PATH")

    now_ms = int(time.time() * 1000)
    work = Path(tempfile.mkdtemp(prefix="sanduan-province-"))
    url, drop = pg_schema(args.pg)
    store = PostgresStore(url)
    store.migrate()
    print(f"partitions: {', '.join(store.maintain(now_ms))}")
    broker, port = start_broker(work)
    procs = start_collectors(work, url, port, args.collectors, args.workers)
    sampler = RssSampler([p.pid for p in procs])
    sampler.start()
    acks = Acks(port)
    pub = Publisher(port)
    st = Stations(args.stations)
    try:
        end = time.monotonic() + 60
        logs = [work / f"collector-{i}.log" for i in range(args.collectors)]
        while not all("subscribed to" in f.read_text("utf-8", "replace") for f in logs):
            if time.monotonic() > end or any(p.poll() is not None for p in procs):
                sys.exit(f"the collectors did not subscribe; see the logs in {work}")
            time.sleep(0.1)
        # Then a probe batch from each of a few stations, through the whole path.
        probe = Stations(8)
        probe.ids = [f"PROBE{i}" for i in range(8)]
        for i in range(8):
            pub.publish(probe.batch(i, now_ms, 60_000, 1))
        if not acks.wait_for(8, 60) or any(p.poll() is not None for p in procs):
            sys.exit(f"the collectors did not ack the probes; see the logs in {work}")
        time.sleep(2)
        print(
            f"{args.stations:,} stations, {args.collectors} collectors (group 'province'),"
            f" PostgreSQL {args.pg.split('@')[-1]}, mosquitto on :{port}"
        )
        # First contact: one batch from every station (its first batch takes the checked
        # write path and creates its row), outside the measured window.
        t = time.monotonic()
        for i in range(args.stations):
            pub.publish(st.batch(i, now_ms - HOUR_MS, 600_000, 1))
        if not acks.wait_for(len(pub.sent), 600):
            sys.exit(f"first contact: not every station was acked; see the logs in {work}")
        first = args.stations * len(CODES)
        print(f"first contact: {args.stations:,} stations in {time.monotonic() - t:.1f} s")
        s = sustained(st, pub, acks, args, now_ms)
        print(
            f"sustained: a batch of {args.rounds * len(CODES)} readings per station every"
            f" {args.period:g} s for {s['window_s']:.0f} s: offered {s['offered_rps']:,.0f}"
            f" readings/s ({s['batches'] / s['window_s']:,.0f} batches/s), stored"
            f" {s['stored_rps']:,.0f} readings/s; publish-to-ack lag p50 {s['lag_p50_s']:.3f} s,"
            f" p99 {s['lag_p99_s']:.3f} s, max {s['lag_max_s']:.3f} s;"
            f" all acked: {s['all_acked']}"
        )
        rss_sustained = dict(sampler.peak)
        b, batches = backlog(st, pub, acks, args.backlog_hours, now_ms)
        print(
            f"backlog: {b['batches']:,} stations back after {args.backlog_hours} h,"
            f" {b['readings']:,} readings: published in {b['publish_s']:.1f} s, drained"
            f" (last ack) in {b['drain_s']:.1f} s = {b['readings'] / b['drain_s']:,.0f}"
            f" readings/s; all acked: {b['all_acked']}"
        )
        total = first + s["readings"] + b["readings"] + 8 * len(CODES)  # and the probes
        rows = store.query("SELECT COUNT(*), COUNT(DISTINCT (station, seq)) FROM readings")
        n_rows, n_distinct = int(rows[0][0]), int(rows[0][1])
        once = n_rows == n_distinct == total
        print(
            f"stored: {n_rows:,} readings, {n_distinct:,} distinct (station, seq),"
            f" {total:,} published: {'every reading once' if once else 'MISMATCH'}"
        )
        conns = args.collectors * args.workers
        t_bare = bare_copy(batches, args.pg, now_ms, conns)
        print(
            f"bare COPY of the same backlog rows ({conns} connections): {t_bare:.1f} s ="
            f" {b['readings'] / t_bare:,.0f} readings/s; drain/bare ratio"
            f" {t_bare / b['drain_s']:.2f} of the bound"
        )
        peak = sampler.peak
        print(
            "collector RSS peak MiB: "
            + ", ".join(f"{peak[p.pid]:.1f}" for p in procs)
            + " (sustained phase: "
            + ", ".join(f"{rss_sustained[p.pid]:.1f}" for p in procs)
            + ")"
        )
        status = 0 if once and s["all_acked"] and b["all_acked"] else 1
    finally:
        sampler.stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        acks.close()
        pub.close()
        broker.terminate()
        broker.wait(10)
        store.close()
        drop()
    if not args.skip_assessment:
        report_assessment(args.sections, former=args.former)
    shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

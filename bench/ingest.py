"""Ingest throughput: decoded batches into the store through ``store_batch``, against a bare bulk
insert of the same rows into the same table.

    .venv/bin/python bench/ingest.py [BATCHES] [--pg URL] [--no-pg]

For each backend: a fresh, migrated database; ``store_batch`` per batch (dedup, seq-state update,
one transaction per batch) and, in another fresh database, the bare insert per batch
(``executemany`` of a plain INSERT for SQLite, binary ``COPY`` for PostgreSQL, one transaction
per batch), batch by batch in alternating order so that the database's background work
(checkpoints, autovacuum) falls on both sides alike. Both store the same readings into the same
table with the same indexes (PostgreSQL: the monthly partitions the collector creates). The target
is a ratio of at least 0.5 and more than 100,000 readings/s into SQLite.

``--replaced``: the worst case of the check for samples a replacement gateway reads again. Every
station first sends one batch from an earlier stream (its gateway before replacement) whose last
sample is later than every reading of the run, stored on both sides before the clock starts; so
every batch of the run is of a stream whose station has a retired stream reaching past it, and
each of its readings is looked for under the station's other streams.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sanduan.central.store import open_store
from sanduan.central.store.postgres import PostgresStore
from sanduan.central.store.sqlite import SqliteStore
from sanduan.shared.wire import Batch, decode_batch, encode

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
CODES = ["w01001", "w01009", "w01003", "w21003", "w21011", "w21001", "w01014", "w01010"]
T0 = 1_767_225_600_000


def make_batches(n_batches: int, per_batch: int = 1000, stations: int = 20) -> list[Batch]:
    """Realistic batches: 8 parameters polled every minute, a few NaNs and flags, passed
    through encode/decode so they are exactly what ingest hands to the store."""
    rng = random.Random(7)
    seqs = [1] * stations
    out = []
    for b in range(n_batches):
        s = b % stations
        n = per_batch
        seq = list(range(seqs[s], seqs[s] + n))
        seqs[s] += n
        ts = [T0 + (q // len(CODES)) * 60_000 for q in seq]
        code = [CODES[q % len(CODES)] for q in seq]
        vals = [math.nan if rng.random() < 0.01 else rng.uniform(0.1, 9.0) for _ in seq]
        flags = ["D" if math.isnan(v) else "N" for v in vals]
        grades = [0 if math.isnan(v) else rng.randint(1, 6) for v in vals]
        batch = Batch.from_columns(
            f"bench-{s:03d}",
            b // stations + 1,
            ts[-1],
            seq=seq,
            ts_ms=ts,
            code=code,
            values=vals,
            flags=flags,
            grades=grades,
        )
        out.append(decode_batch(encode(batch)))
    return out


def old_streams(batches: list[Batch]) -> list[Batch]:
    """One batch per station from an earlier stream, its last sample after every batch's."""
    last = max(max(b.ts_ms) for b in batches)
    out = []
    for station in sorted({b.station for b in batches}):
        ts = [last + 60_000 * k for k in range(1, 9)]
        b = Batch.from_columns(
            station, 1, ts[-1], seq=list(range(1, 9)), ts_ms=ts, code=CODES,
            values=[1.0] * 8, stream=0x0DD, flags=["N"] * 8, grades=[1] * 8,
        )  # fmt: skip
        out.append(decode_batch(encode(b)))
    return out


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(
    batches: list[Batch],
    store: Callable[[int, Batch], object],
    bare: Callable[[int, Batch], object],
) -> tuple[float, float]:
    """Total seconds of each side, run batch by batch in alternating order, so that background
    work of the database (checkpoints, autovacuum) and of the machine falls on both sides alike
    rather than on whichever side runs second."""
    t_store = t_bare = 0.0
    for i, b in enumerate(batches):
        if i % 2:
            t_bare += timed(lambda: bare(i, b))  # noqa: B023
            t_store += timed(lambda: store(i, b))  # noqa: B023
        else:
            t_store += timed(lambda: store(i, b))  # noqa: B023
            t_bare += timed(lambda: bare(i, b))  # noqa: B023
    return t_store, t_bare


def bench_sqlite(batches: list[Batch], tmp: Path, before: list[Batch]) -> tuple[float, float]:
    store = open_store(f"sqlite:///{tmp / 'store.db'}", migrate=True)
    bare = SqliteStore(f"sqlite:///{tmp / 'bare.db'}", create=True)
    bare.migrate()
    conn = bare._conn  # the bare insert uses the same connection settings
    sql = (
        "INSERT INTO readings (station, seq, ts_ms, code, value, flag, grade, batch_seq,"
        " received_ms, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def bare_insert(i: int, b: Batch) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, SqliteStore.reading_rows(b, T0 + i))
        conn.execute("COMMIT")

    for b in before:
        store.store_batch(b, T0)
        bare_insert(0, b)
    try:
        return interleaved(batches, lambda i, b: store.store_batch(b, T0 + i), bare_insert)
    finally:
        store.close()
        bare.close()


def _pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def bench_pg(batches: list[Batch], base: str, before: list[Batch]) -> tuple[float, float]:
    url_s, drop_s = _pg_schema(base)
    url_b, drop_b = _pg_schema(base)
    try:
        store = PostgresStore(url_s)
        store.migrate()
        store.maintain(T0)  # the month's partitions, as the collector creates them
        bare = PostgresStore(url_b)
        bare.migrate()
        bare.maintain(T0)

        def bare_copy(i: int, b: Batch) -> None:
            with bare._tx("bare copy") as cur:
                bare.copy_readings(cur, "readings", PostgresStore.copy_rows(b, T0 + i))

        for b in before:
            store.store_batch(b, T0)
            bare_copy(0, b)
        store.write_paths.update(direct=0, staged=0)
        try:
            t = interleaved(batches, lambda i, b: store.store_batch(b, T0 + i), bare_copy)
            n_store = store.count_readings()
            n_bare = bare.count_readings()
            if not before and n_store != sum(b.count for b in batches):
                sys.exit(f"store_batch stored {n_store} readings of {len(batches)} batches")
            if n_store != n_bare:
                sys.exit(f"store_batch stored {n_store} readings, the bare COPY {n_bare}")
            print(f"postgresql write paths: {store.write_paths}")
            return t
        finally:
            store.close()
            bare.close()
    finally:
        drop_s()
        drop_b()


def report(name: str, n: int, t_store: float, t_bare: float) -> None:
    r_store, r_bare = n / t_store, n / t_bare
    print(
        f"{name:10s} store_batch {r_store:>10,.0f} readings/s   bare {r_bare:>10,.0f} readings/s"
        f"   ratio {r_store / r_bare:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("batches", type=int, nargs="?", default=300)
    ap.add_argument("--pg", default=PG_BASE, help="PostgreSQL URL (a scratch schema is used)")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument(
        "--replaced",
        action="store_true",
        help="every station's gateway replaced, every reading checked against the old stream",
    )
    args = ap.parse_args()
    batches = make_batches(args.batches)
    before = old_streams(batches) if args.replaced else []
    n = sum(b.count for b in batches)
    print(
        f"{len(batches)} batches, {n:,} readings, 1000 per batch, 20 stations"
        + (", each with a retired stream reaching past every reading" if before else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        report("sqlite", n, *bench_sqlite(batches, Path(tmp), before))
    if not args.no_pg:
        report("postgresql", n, *bench_pg(batches, args.pg, before))
    return 0


if __name__ == "__main__":
    sys.exit(main())

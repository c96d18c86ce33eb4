"""Readings committed per second through the outbox vs bare executemany into the same schema.

    .venv/bin/python bench/buffer.py [READINGS] [--rows-per-commit N]

Both sides write 1000-row transactions (the agent's ``commit_max_rows``) into a fresh WAL file
with the same schema and pragmas; the outbox also assigns seqs, grades every reading with the
numba kernels and maintains the hourly and daily aggregates. Also measured: commits per second
of single-row transactions with ``synchronous = FULL`` and ``NORMAL`` (the cost of durability
per commit). Target: outbox / bare >= 0.5.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from sanduan.edge.core.model import PolledValue
from sanduan.edge.io.outbox import _INSERT, _SCHEMA, Outbox
from sanduan.shared.model import Flag

CODES = ("w01001", "w01009", "w21003", "w21011", "w01010", "w01014", "w01003", "w01019")
LEVEL = (7.5, 7.0, 0.4, 0.08, 18.0, 400.0, 10.0, 3.0)
T0 = 1_767_225_600_000


def value(i: int) -> float:
    """A realistic station: each parameter near its usual level (class II-III), small noise."""
    return LEVEL[i % 8] * (1.0 + 0.05 * ((i // 8) % 7 - 3) / 3)


def readings(n: int) -> list[PolledValue]:
    return [
        PolledValue("dev", CODES[i % 8], T0 + (i // 8) * 1000, value(i), Flag.N) for i in range(n)
    ]


def bare(path: Path, n: int, per: int, sync: str) -> float:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.executescript(_SCHEMA)
    rows = [(i + 1, T0 + (i // 8) * 1000, CODES[i % 8], value(i), "N", 1) for i in range(n)]
    t = time.perf_counter()
    for k in range(0, n, per):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_INSERT, rows[k : k + per])
        db.execute("COMMIT")
    dt = time.perf_counter() - t
    db.close()
    return n / dt


def outbox(path: Path, n: int, per: int, sync: str) -> float:
    ob = Outbox(path, station="bench", synchronous=sync, max_bytes=1 << 40)  # type: ignore[arg-type]
    ob.commit(readings(8))  # compile / load the kernels outside the timing
    data = readings(n)
    chunks = [data[k : k + per] for k in range(0, n, per)]
    t = time.perf_counter()
    for c in chunks:
        ob.commit(c)
    dt = time.perf_counter() - t
    ob.close()
    return n / dt


def single_commits(path: Path, sync: str, seconds: float = 1.0) -> float:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.executescript(_SCHEMA)
    i = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        i += 1
        db.execute("BEGIN IMMEDIATE")
        db.execute(_INSERT, (i, T0, "w01001", 7.0, "N", 1))
        db.execute("COMMIT")
    dt = time.perf_counter() - t
    db.close()
    return i / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("readings", nargs="?", type=int, default=200_000)
    ap.add_argument("--rows-per-commit", type=int, default=1000)
    a = ap.parse_args()
    n, per = a.readings, a.rows_per_commit
    print(f"{n} readings, {per} per transaction, WAL")
    with tempfile.TemporaryDirectory() as d:
        for sync in ("FULL", "NORMAL"):
            b = bare(Path(d) / f"bare-{sync}.db", n, per, sync)
            o = outbox(Path(d) / f"outbox-{sync}.db", n, per, sync)
            print(
                f"synchronous={sync:6s}  bare executemany {b:>10,.0f} rows/s   "
                f"outbox {o:>10,.0f} rows/s   ratio {o / b:.2f}"
            )
        for sync in ("FULL", "NORMAL"):
            c = single_commits(Path(d) / f"single-{sync}.db", sync)
            print(f"synchronous={sync:6s}  one-row transactions: {c:>8,.0f} commits/s")


if __name__ == "__main__":
    main()

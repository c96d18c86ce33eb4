"""PostgreSQL: readings in monthly partitions, the direct COPY path and its fall-backs.

Against the real server (a fresh schema per test); SQLite is checked to be left as it was.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import psycopg
import pytest

from sanduan.central.store import open_store
from sanduan.central.store.migrations import LATEST, MIGRATIONS
from sanduan.central.store.postgres import (
    PostgresStore,
    month_of,
    month_start_ms,
    months_to_keep,
    partition_name,
)
from sanduan.shared.wire import Batch

JAN_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000


def batch(station: str, seqs: list[int], t0: int = JAN_2026, *, bseq: int = 1) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        t0,
        seq=seqs,
        ts_ms=[t0 + q * 60_000 for q in seqs],
        code=["w01001"] * len(seqs),
        values=[math.nan if q % 5 == 0 else float(q) for q in seqs],
        flags=["D" if q % 5 == 0 else "N" for q in seqs],
        grades=[0 if q % 5 == 0 else 1 for q in seqs],
    )


def pg(url: str) -> PostgresStore:
    s = open_store(url, migrate=True)
    assert isinstance(s, PostgresStore)
    return s


def rows_in(url: str, table: str) -> int:
    s = open_store(url)
    try:
        return int(s.query(f"SELECT COUNT(*) FROM {table}")[0][0])
    finally:
        s.close()


# --- month arithmetic (pure) -----------------------------------------------------------------


def test_month_bounds_roll_over_the_year() -> None:
    assert month_start_ms(2026, 1) == JAN_2026
    assert month_start_ms(2025, 13) == JAN_2026
    assert month_start_ms(2026, 2) - JAN_2026 == 31 * DAY
    assert month_of(JAN_2026 - 1) == (2025, 12)
    assert month_of(JAN_2026) == (2026, 1)
    assert months_to_keep(month_start_ms(2025, 11) + 5 * DAY) == [(2025, 11), (2025, 12), (2026, 1)]
    assert partition_name(2026, 3) == "readings_p202603"


# --- partitions ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_maintain_creates_this_month_and_two_ahead_once(pg_url_factory: Any) -> None:
    url = pg_url_factory()
    s = pg(url)
    assert s.partitions() == ["readings_default"]
    now = month_start_ms(2026, 12) + 3 * DAY
    assert s.maintain(now) == ["readings_p202612", "readings_p202701", "readings_p202702"]
    assert s.maintain(now) == []
    assert s.partitions() == [
        "readings_default",
        "readings_p202612",
        "readings_p202701",
        "readings_p202702",
    ]
    # Readings land in their month; queries over a range see them all.
    s.store_batch(batch("A", list(range(1, 101)), month_start_ms(2027, 1) - 50 * 60_000), now)
    assert rows_in(url, "readings_p202612") == 49
    assert rows_in(url, "readings_p202701") == 51
    assert rows_in(url, "readings_default") == 0
    assert s.count_readings(["A"]) == 100
    cols = s.readings(["A"], month_start_ms(2027, 1), month_start_ms(2027, 2))
    assert len(cols["seq"]) == 51
    s.close()


@pytest.mark.postgres
def test_rows_of_a_month_without_partition_are_kept_and_moved(pg_url_factory: Any) -> None:
    url = pg_url_factory()
    s = pg(url)
    s.maintain(JAN_2026)
    old = month_start_ms(2024, 6)  # a station's backlog from long ago: no partition for it
    s.store_batch(batch("B", list(range(1, 11)), old), JAN_2026)
    assert rows_in(url, "readings_default") == 10
    created = s.maintain(JAN_2026)
    assert created == ["readings_p202406"]
    assert rows_in(url, "readings_default") == 0
    assert rows_in(url, "readings_p202406") == 10
    # and the moved readings still count as stored: the same batch again is all duplicates
    r = s.store_batch(batch("B", list(range(1, 11)), old), JAN_2026)
    assert (r.new, r.duplicate) == (0, 10)
    s.close()


@pytest.mark.postgres
def test_collectors_maintaining_at_once_create_each_partition_once(pg_url_factory: Any) -> None:
    url = pg_url_factory()
    pg(url).close()
    stores = [pg(url) for _ in range(3)]
    created: list[str] = []
    lock = threading.Lock()

    def go(s: PostgresStore) -> None:
        out = s.maintain(JAN_2026)
        with lock:
            created.extend(out)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == ["readings_p202601", "readings_p202602", "readings_p202603"]
    for s in stores:
        s.close()


@pytest.mark.postgres
def test_migrating_a_filled_unpartitioned_database_keeps_every_reading(
    pg_url_factory: Any,
) -> None:
    url = pg_url_factory()
    # A database at schema version 2 (readings not partitioned) with readings in it.
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_ms BIGINT NOT NULL)"
        )
        for m in MIGRATIONS[:2]:
            for stmt in m.sql("postgresql"):
                c.execute(stmt)
            c.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (m.version, m.name))
        # what a sanduan of schema version 2 stored (this one writes columns of later ones)
        for b in (
            batch("C", list(range(1, 501))),
            batch("C", list(range(501, 601)), month_start_ms(2025, 12)),
        ):
            c.cursor().executemany(
                "INSERT INTO readings (station, seq, ts_ms, code, value, flag, grade,"
                " batch_seq, received_ms, stream) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s)",
                list(PostgresStore.copy_rows(b, JAN_2026)),
            )
        c.execute(
            "INSERT INTO stations (station, max_seq, contiguous_seq, stream)"
            " VALUES ('C', 600, 600, 0)"
        )
    v1 = PostgresStore(url)
    assert v1.schema_version() == 2
    assert v1.maintain(JAN_2026) == []  # not partitioned yet: nothing to do
    v1.close()

    s = PostgresStore(url)
    assert s.migrate() == [m.version for m in MIGRATIONS[2:]]
    assert s.schema_version() == LATEST
    assert s.count_readings(["C"]) == 600
    s.maintain(JAN_2026)
    assert "readings_p202512" in s.partitions()
    assert rows_in(url, "readings_default") == 0
    assert rows_in(url, "readings_p202512") == 100
    r = s.store_batch(batch("C", list(range(590, 611)), month_start_ms(2025, 12)), JAN_2026)
    assert (r.new, r.duplicate) == (10, 11)
    s.close()


def test_sqlite_has_the_same_version_and_no_partitions(tmp_path: Any) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'c.db'}", migrate=True)
    assert s.schema_version() == LATEST
    assert s.maintain(JAN_2026) == []
    s.store_batch(batch("S", [1, 2, 3]), JAN_2026)
    s.store_batch(batch("S", [2, 3, 4]), JAN_2026)
    assert s.count_readings(["S"]) == 4
    s.close()


# --- write paths ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_new_batches_copy_straight_in_and_overlaps_are_checked(pg_url_factory: Any) -> None:
    s = pg(pg_url_factory())
    s.maintain(JAN_2026)
    assert s.store_batch(batch("D", list(range(1, 101))), JAN_2026).new == 100  # first: direct
    assert s.store_batch(batch("D", list(range(101, 201))), JAN_2026).new == 100  # direct
    assert s.store_batch(batch("D", list(range(201, 301))), JAN_2026).new == 100  # direct
    r = s.store_batch(batch("D", list(range(250, 351))), JAN_2026)  # overlap: staged
    assert (r.new, r.duplicate) == (50, 51)
    assert s.store_batch(batch("D", list(range(1, 101))), JAN_2026).duplicate == 100  # again
    assert s.write_paths == {"direct": 3, "staged": 2, "retried": 0}
    assert s.count_readings(["D"]) == 350
    s.close()


@pytest.mark.postgres
def test_a_resent_seq_with_another_time_is_still_one_reading(pg_url_factory: Any) -> None:
    s = pg(pg_url_factory())
    s.maintain(JAN_2026)
    s.store_batch(batch("E", list(range(1, 11))), JAN_2026)
    # The same seqs with other timestamps (a station that rewrote its clock): not stored twice,
    # although the partitioned primary key holds ts_ms.
    r = s.store_batch(batch("E", list(range(1, 11)), JAN_2026 + 7 * DAY), JAN_2026)
    assert r.new == 0
    assert r.conflicts == ((1, 10),)  # other content: the originals are kept
    assert s.count_readings(["E"]) == 10
    s.close()


@pytest.mark.postgres
def test_seq_state_behind_the_table_falls_back_without_loss(pg_url_factory: Any) -> None:
    url = pg_url_factory()
    s = pg(url)
    s.maintain(JAN_2026)
    s.store_batch(batch("F", list(range(1, 11))), JAN_2026)
    # A reading above the station's max_seq already in the table (written behind the store's
    # back): the direct COPY hits the primary key and the batch goes the checked way.
    b = batch("F", list(range(11, 21)))
    s.query(
        "INSERT INTO readings (station, seq, ts_ms, code, value, flag, grade, batch_seq,"
        " received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("F", 15, b.ts_ms[4], "w01001", None, "D", 0, 0, JAN_2026),  # as the batch has it
    )
    r = s.store_batch(b, JAN_2026)
    assert (r.new, r.duplicate) == (9, 1)
    assert s.write_paths["retried"] == 1
    assert s.count_readings(["F"]) == 20
    assert r.state.max_seq == 20
    # and the direct path is used again afterwards
    s.store_batch(batch("F", list(range(21, 31))), JAN_2026)
    assert s.write_paths["direct"] == 2  # the first batch and this one
    s.close()


@pytest.mark.postgres
def test_other_streams_take_the_checked_path(pg_url_factory: Any) -> None:
    s = pg(pg_url_factory())
    s.maintain(JAN_2026)
    s.store_batch(batch("G", list(range(1, 11))), JAN_2026)  # stream 0, direct
    b1 = batch("G", [1, 2, 3])
    b1 = Batch.from_columns(
        "G",
        1,
        JAN_2026,
        seq=[1, 2, 3],
        ts_ms=[t + 3_600_000 for t in b1.ts_ms],  # samples of its own (not re-reads)
        code=["w01001"] * 3,
        values=[1.0] * 3,
        stream=1,
    )
    r = s.store_batch(b1, JAN_2026)  # a new buffer: seqs from 1 again, checked
    assert r.new == 3
    assert r.stream_change is not None
    late = batch("G", list(range(11, 14)))  # stream 0 after the change: checked too
    r = s.store_batch(late, JAN_2026)
    assert (r.new, r.late) == (3, True)
    assert s.write_paths == {"direct": 1, "staged": 2, "retried": 0}
    assert s.count_readings(["G"]) == 16
    s.close()

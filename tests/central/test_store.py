"""The store on SQLite and PostgreSQL: migrations, exactly-once readings, gaps, generic rows."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import numpy as np
import pytest

from sanduan.central.store import Store, open_store, redact_url
from sanduan.central.store.migrations import LATEST, MIGRATIONS, TABLES
from sanduan.shared.errors import StoreError
from sanduan.shared.wire import Batch, Event, Severity, Status

T0 = 1_767_225_600_000


def make_batch(
    station: str, seqs: list[int], *, bseq: int = 1, codes: tuple[str, ...] = ("w01001", "w21003")
) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        T0,
        seq=seqs,
        ts_ms=[T0 + q * 60_000 for q in seqs],
        code=[codes[q % len(codes)] for q in seqs],
        values=[math.nan if q % 7 == 0 else 7.0 + q / 1000 for q in seqs],
        flags=["D" if q % 7 == 0 else "N" for q in seqs],
        grades=[0 if q % 7 == 0 else 2 for q in seqs],
    )


# --- migrations --------------------------------------------------------------------------


def test_unmigrated_database_is_refused_with_the_fix(raw_store_url: str) -> None:
    with pytest.raises(StoreError, match="sanduan central migrate"):
        open_store(raw_store_url)


def test_migrations_are_idempotent(raw_store_url: str) -> None:
    s = open_store(raw_store_url, migrate=True)
    try:
        assert s.schema_version() == LATEST
        assert s.migrate() == []
        tables = {r[0] for r in s.query("SELECT version FROM schema_migrations")}
        assert tables == {m.version for m in MIGRATIONS}
    finally:
        s.close()
    s2 = open_store(raw_store_url, migrate=True)
    assert s2.schema_version() == LATEST
    s2.close()


def test_newer_schema_is_refused(store: Store, store_url: str) -> None:
    store.query(
        "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
        (LATEST + 1, "from the future", 0),
    )
    with pytest.raises(StoreError, match="newer than this sanduan"):
        open_store(store_url)


def test_concurrent_migrators_apply_each_migration_once(raw_store_url: str) -> None:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            open_store(raw_store_url, migrate=True).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = open_store(raw_store_url)
    assert s.query("SELECT COUNT(*) FROM schema_migrations")[0][0] == len(MIGRATIONS)
    s.close()


def test_every_table_has_the_documented_columns(store: Store) -> None:
    for table, cols in TABLES.items():
        rows = store.query(f"SELECT {', '.join(cols)} FROM {table} WHERE 1 = 0")
        assert rows == []


def test_bad_urls_and_missing_files(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://x/y")
    with pytest.raises(StoreError, match="no database file"):
        open_store(f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/x: cannot connect"):
        open_store("postgresql://u:secret@127.0.0.1:1/x")
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


# --- readings ---------------------------------------------------------------------------


def test_same_batch_twice_is_stored_once(store: Store) -> None:
    b = make_batch("st-a", list(range(1, 101)))
    r1 = store.store_batch(b, T0)
    r2 = store.store_batch(b, T0 + 1)
    assert (r1.new, r1.duplicate) == (100, 0)
    assert (r2.new, r2.duplicate) == (0, 100)
    assert store.count_readings(["st-a"]) == 100


def test_overlapping_batches_count_new_and_duplicate(store: Store) -> None:
    store.store_batch(make_batch("st-b", list(range(1, 51))), T0)
    r = store.store_batch(make_batch("st-b", list(range(41, 81)), bseq=2), T0)
    assert (r.new, r.duplicate) == (30, 10)
    r = store.store_batch(make_batch("st-c", list(range(41, 81))), T0)  # another station
    assert (r.new, r.duplicate) == (40, 0)
    assert store.count_readings(["st-b"]) == 80
    assert store.count_readings() == 120


def test_readings_round_trip_as_columns(store: Store) -> None:
    b = make_batch("st-d", [1, 2, 3, 7, 8, 14])
    store.store_batch(b, T0 + 5)
    store.store_batch(make_batch("st-e", [1, 2]), T0)
    cols = store.readings(["st-d"], T0, T0 + 3600_000)
    # Ordered by station, code, ts_ms.
    assert list(cols["code"]) == ["w01001", "w01001", "w01001", "w21003", "w21003", "w21003"]
    assert list(cols["seq"]) == [2, 8, 14, 1, 3, 7]
    assert cols["value"].dtype == np.float64
    nan = np.isnan(cols["value"])
    assert list(cols["seq"][nan]) == [14, 7]
    assert list(cols["flag"][nan]) == ["D", "D"]
    assert set(cols["station"]) == {"st-d"}
    assert cols["grade"].dtype == np.int16
    one = store.readings(None, T0 + 2 * 60_000, T0 + 8 * 60_000, codes=["w21003"])
    assert list(one["seq"]) == [3, 7]
    assert store.count_readings(None, T0 + 2 * 60_000, T0 + 8 * 60_000, ["w21003"]) == 2
    empty = store.readings([], 0, 1 << 62)
    assert len(empty["seq"]) == 0
    assert empty["value"].dtype == np.float64
    rows = store.query(
        "SELECT value, received_ms, batch_seq FROM readings WHERE station = ? AND seq = ?",
        ("st-d", 14),
    )
    assert rows == [(None, T0 + 5, 1)]


def test_gaps_are_tracked_with_the_readings(store: Store) -> None:
    store.store_batch(make_batch("st-g", [1, 2, 3, 5, 6, 10]), T0)
    (row,) = store.stations()
    assert (row.max_seq, row.contiguous_seq) == (10, 3)
    assert [(g.first, g.last) for g in row.gaps] == [(4, 4), (7, 9)]
    assert row.last_seen_ms == T0
    store.store_batch(make_batch("st-g", [4, 7, 8, 9], bseq=2), T0 + 10)
    (row,) = store.stations()
    assert (row.max_seq, row.contiguous_seq, row.gaps) == (10, 10, ())


def test_claim_resend_is_given_to_one_caller_per_interval(store: Store) -> None:
    store.store_batch(make_batch("st-r", [1, 5]), T0)
    kw = {"gap_timeout_ms": 1000, "interval_ms": 10_000, "give_up_ms": 100_000}
    assert store.claim_resend("st-r", T0 + 500, **kw).ranges == ()
    assert store.claim_resend("st-r", T0 + 1000, **kw).ranges == ((2, 4),)
    assert store.claim_resend("st-r", T0 + 1001, **kw).ranges == ()
    assert store.claim_resend("st-r", T0 + 11_000, **kw).ranges == ((2, 4),)
    claim = store.claim_resend("st-r", T0 + 100_000, **kw)
    assert claim.ranges == ()
    assert [(g.first, g.last) for g in claim.given_up] == [(2, 4)]
    (row,) = store.stations()
    assert (row.gaps, row.contiguous_seq) == ((), 5)


def test_status_and_last_will(store: Store) -> None:
    store.record_status(Status("st-s", T0, agent_version="1.2", buffer_depth=3), T0 + 5)
    (row,) = store.stations()
    assert (row.online, row.agent_version, row.last_seen_ms) == (True, "1.2", T0 + 5)
    assert json.loads(row.last_status or "{}")["buffer_depth"] == 3
    store.record_status(Status.last_will("st-s", T0 - 100), T0 + 9)
    (row,) = store.stations()
    assert (row.online, row.agent_version, row.last_seen_ms) == (False, "1.2", T0 + 9)


def test_events_are_stored_once(store: Store) -> None:
    e = Event("st-e", T0, 7, "exceedance", "NH3-N above class III", Severity.WARNING, "w21003")
    assert store.record_event(e) is True
    assert store.record_event(e) is False
    rows = store.query(
        "SELECT kind, code, severity, details FROM events WHERE station = ?", ["st-e"]
    )
    assert rows == [("exceedance", "w21003", "warning", "{}")]


def test_dead_letters_keep_the_raw_bytes(store: Store) -> None:
    i = store.dead_letter("sanduan/v1/x/batch", None, "not msgpack", b"\x00\xff\xc1", T0)
    rows = store.query("SELECT id, topic, reason, raw FROM dead_letters")
    assert len(rows) == 1
    assert rows[0][0] == i
    assert bytes(rows[0][3]) == b"\x00\xff\xc1"


# --- generic rows (analytics) -----------------------------------------------------------

AGG_COLS = ["station", "code", "period", "start_ms", "mean", "min", "max", "n", "n_valid", "valid"]


def test_replace_rows_replaces_only_the_key(store: Store) -> None:
    hour = [
        ("s1", "w01001", "hour", T0 + h * 3600_000, 7.0, 6.9, 7.1, 4, 4, True) for h in range(3)
    ]
    day = [("s1", "w01001", "day", T0, 7.0, 6.9, 7.1, 72, 70, True)]
    assert store.replace_rows("aggregates", {"period": "hour"}, AGG_COLS, hour) == 3
    assert store.replace_rows("aggregates", {"period": "day"}, AGG_COLS, day) == 1
    again = [("s1", "w01001", "hour", T0, math.nan, None, None, 0, 0, np.bool_(False))]
    assert (
        store.replace_rows("aggregates", {"period": "hour", "station": "s1"}, AGG_COLS, again) == 1
    )
    rows = store.query("SELECT period, mean, n, valid FROM aggregates ORDER BY period")
    assert [(p, m, n, bool(v)) for p, m, n, v in rows] == [
        ("day", 7.0, 72, True),
        ("hour", None, 0, False),
    ]


def test_insert_rows_runs_and_json(store: Store) -> None:
    run = store.start_run("assess", {"period": "month", "label": "2026-05"})
    store.insert_rows(
        "ledger",
        [
            "run_id",
            "rule",
            "period",
            "label",
            "payer",
            "payee",
            "amount_yuan",
            "status",
            "evidence",
        ],
        [(run, "r1", "month", "2026-05", "A", "B", np.float64(1.5e6), "settled", {"x": [1, 2]})],
    )
    store.finish_run(run, {"rows": 1})
    (led,) = store.query("SELECT run_id, amount_yuan, evidence FROM ledger")
    assert led[0] == run
    assert led[1] == 1.5e6
    assert json.loads(led[2]) == {"x": [1, 2]}
    (r,) = store.query("SELECT kind, params, result, finished_ms FROM runs WHERE run_id = ?", [run])
    assert r[0] == "assess"
    assert json.loads(r[1]) == {"label": "2026-05", "period": "month"}
    assert json.loads(r[2]) == {"rows": 1}
    assert r[3] is not None
    with pytest.raises(StoreError, match="no run"):
        store.finish_run(run + 1000, {})


def test_generic_writers_refuse_unknown_names(store: Store) -> None:
    with pytest.raises(StoreError, match="cannot be written"):
        store.insert_rows("readings", ["station"], [])
    with pytest.raises(StoreError, match="no column"):
        store.insert_rows("aggregates", ["station; DROP TABLE readings"], [])


def test_query_placeholders_and_percent(store: Store) -> None:
    store.store_batch(make_batch("pct-1", [1, 2]), T0)
    rows = store.query(
        "SELECT station FROM readings WHERE station LIKE 'pct%' AND seq = ?", [np.int64(2)]
    )
    assert rows == [("pct-1",)]


def test_errors_become_store_errors_naming_the_url(store: Store) -> None:
    with pytest.raises(StoreError) as exc:
        store.query("SELECT nope FROM readings")
    assert store.url.split("?")[0] in str(exc.value)


@pytest.mark.postgres
def test_postgres_writes_readings_with_copy(pg_url_factory: Any, monkeypatch: Any) -> None:
    from sanduan.central.store.postgres import PostgresStore

    url = pg_url_factory()
    s = open_store(url, migrate=True)
    assert isinstance(s, PostgresStore)
    statements: list[str] = []
    real = PostgresStore.copy_readings

    def spy(self: PostgresStore, cur: Any, table: str, rows: Any) -> None:
        statements.append(table)
        real(self, cur, table, rows)

    monkeypatch.setattr(PostgresStore, "copy_readings", spy)
    r = s.store_batch(make_batch("pg-copy", list(range(1, 1001))), T0)
    assert r.new == 1000
    assert statements == ["readings"]  # nothing of a new station stored: straight in
    r = s.store_batch(make_batch("pg-copy", list(range(990, 1011))), T0)
    assert (r.new, r.duplicate) == (10, 11)
    assert statements == ["readings", "sanduan_readings_in"]  # overlap: checked
    assert s.count_readings(["pg-copy"]) == 1010
    s.close()


@pytest.mark.postgres
def test_postgres_two_connections_racing_on_one_batch(pg_url_factory: Any) -> None:
    url = pg_url_factory()
    open_store(url, migrate=True).close()
    stores = [open_store(url) for _ in range(4)]
    b = make_batch("race", list(range(1, 2001)))
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def go(s: Store) -> None:
        r = s.store_batch(b, T0)
        with lock:
            results.append((r.new, r.duplicate))

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(n for n, _ in results) == 2000
    assert sorted(results)[-1] == (2000, 0)
    assert stores[0].count_readings(["race"]) == 2000
    for s in stores:
        s.close()


def test_store_reopens_after_close_of_another(store_url: str) -> None:
    a = open_store(store_url)
    b = open_store(store_url)
    a.store_batch(make_batch("two", [1, 2, 3]), T0)
    a.close()
    assert b.count_readings(["two"]) == 3
    b.close()

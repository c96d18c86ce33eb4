"""The SQLite buffer against real files: seqs, aggregates, acks, resends, the space policy and
crash safety."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sanduan.edge.core.model import PolledValue
from sanduan.edge.io.outbox import Outbox
from sanduan.shared.errors import StoreError
from sanduan.shared.model import Flag
from sanduan.shared.wire import Ack

JAN1_UTC = 1_767_225_600_000  # 2026-01-01T00:00Z
H = 3_600_000
M = 60_000


def pv(ts: int, value: float, code: str = "w01009", flag: Flag = Flag.N) -> PolledValue:
    return PolledValue("dev", code, ts, value, flag)


def series(
    n: int, start: int = JAN1_UTC, step: int = 1000, code: str = "w01009"
) -> list[PolledValue]:
    return [pv(start + i * step, 7.0 + (i % 10) / 10, code) for i in range(n)]


def open_ob(path: Path, **kw: object) -> Outbox:
    return Outbox(path, station="st-1", **kw)  # type: ignore[arg-type]


def test_seq_strictly_increasing_across_restarts_and_deletes(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with open_ob(db) as ob:
        r1 = ob.commit(series(10))
        assert (r1.first_seq, r1.last_seq) == (1, 10)
    with open_ob(db) as ob:
        r2 = ob.commit(series(5))
        assert (r2.first_seq, r2.last_seq) == (11, 15)
        ob.ack(Ack("st-1", 1, 1, 15, 0))
        assert ob.depth == 0 and ob.last_acked_seq == 15
    # Delete every row, the highest included: the counter, not max(seq), gives the next seq.
    con = sqlite3.connect(db)
    con.execute("DELETE FROM reading")
    con.commit()
    con.close()
    with open_ob(db) as ob:
        assert ob.commit(series(1)).first_seq == 16
        assert [r[0] for r in ob.readings()] == [16]


def test_values_flags_grades_round_trip(tmp_path: Path) -> None:
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit(
            [
                pv(JAN1_UTC, 0.4, "w21003"),
                pv(JAN1_UTC + 1, math.nan, "w21003", Flag.D),
                pv(JAN1_UTC + 2, 2.5, "w21003", Flag.T),
                pv(JAN1_UTC + 3, -1.0, "w21003", Flag.D),  # impossible: kept, not graded
                pv(JAN1_UTC + 4, 3.0, "x99999"),  # unknown code: kept, not graded
            ]
        )
        rows = ob.readings()
        assert [(r[3], r[4], r[5]) for r in rows] == [
            (0.4, "N", 2),
            (None, "D", 0),
            (2.5, "T", 6),
            (-1.0, "D", 0),
            (3.0, "N", 0),
        ]
        b = ob.form_batch(123)
        assert b is not None and math.isnan(b.values[1]) and b.grades == (2, 0, 6, 0, 0)


def test_aggregates_hand_computed_across_a_shanghai_local_day(tmp_path: Path) -> None:
    t = JAN1_UTC + 15 * H  # 23:00 local on 1 January
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit([pv(t + 30 * M, 8.0), pv(t + 45 * M, 6.0)])
        ob.commit(
            [
                pv(t + 50 * M, math.nan, flag=Flag.D),
                pv(t + 55 * M, 3.0, flag=Flag.M),  # counted, not valid
                pv(t + 60 * M, 5.0),  # 00:00 local on 2 January
                pv(t + 90 * M, 7.0, flag=Flag.S),
            ]
        )
        hours = {(a.start_ms, a.code): a for a in ob.aggregates("hour")}
        h15 = hours[(t, "w01009")]
        assert (h15.count, h15.valid, h15.vmin, h15.vmean, h15.vmax) == (4, 2, 6.0, 7.0, 8.0)
        h16 = hours[(t + H, "w01009")]
        assert (h16.count, h16.valid, h16.vmin, h16.vmean, h16.vmax) == (2, 2, 5.0, 6.0, 7.0)
        days = {a.start_ms: a for a in ob.aggregates("day", "w01009")}
        assert set(days) == {JAN1_UTC - 8 * H, JAN1_UTC + 16 * H}
        d1, d2 = days[JAN1_UTC - 8 * H], days[JAN1_UTC + 16 * H]
        assert (d1.count, d1.valid, d1.vmin, d1.vmean, d1.vmax) == (4, 2, 6.0, 7.0, 8.0)
        assert (d2.count, d2.valid, d2.vmean) == (2, 2, 6.0)


def test_ack_marks_batches_and_nothing_else(tmp_path: Path) -> None:
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit(series(30))
        b1 = ob.form_batch(1, limit=10)
        b2 = ob.form_batch(1, after=10, limit=10)
        assert b1 is not None and b2 is not None
        assert b2.batch_seq == b1.batch_seq + 1 and b2.seq[0] == 11
        assert ob.ack(Ack("st-1", b2.batch_seq, 11, 20, 0)) == 10
        # A partial ack: the centre holds 1..4 and 8..10 of the first batch.
        assert ob.ack(Ack("st-1", b1.batch_seq, 1, 10, 0, ((1, 4), (8, 10)))) == 7
        assert ob.depth == 13
        again = ob.form_batch(2, limit=100)
        assert again is not None and again.seq == (5, 6, 7, *range(21, 31))
        assert ob.last_acked_seq == 20


def test_resend_batches_keep_original_seqs_and_count_missing(tmp_path: Path) -> None:
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit(series(20))
        original = {r[0]: r[1:4] for r in ob.readings()}
        ob.ack(Ack("st-1", 1, 1, 20, 0))
        b = ob.form_batch(5, within=(5, 9), include_acked=True)
        assert b is not None and b.seq == (5, 6, 7, 8, 9)
        for seq, ts, code, value, _flag, _grade in b.rows():
            assert original[seq] == (ts, code, value)
        # 21..25 were never issued: not "missing" (the forwarder ignores them, with a warning).
        assert ob.note_resend_missing([(15, 25)]) == 0
        ob.db.execute("DELETE FROM reading WHERE seq BETWEEN 3 AND 6")
        assert ob.note_resend_missing([(1, 25)]) == 4
        assert ob.counters()["resend_missing"] == 4


def test_bseq_reserved_blocks_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with open_ob(db) as ob:
        ob.commit(series(3))
        first = [ob.next_batch_seq() for _ in range(3)]
    with open_ob(db) as ob:
        assert ob.next_batch_seq() > max(first)


def test_drop_policy_acked_first_then_oldest_unacked(tmp_path: Path) -> None:
    budget = 300_000
    db = tmp_path / "b.db"
    with open_ob(db, max_bytes=budget) as ob:
        # Fill with acknowledged data, then keep committing: acked rows are deleted first.
        total = 0
        for _ in range(10):
            r = ob.commit(series(500, start=JAN1_UTC + total * 1000))
            total += r.count
            ob.ack(Ack("st-1", 1, r.first_seq, r.last_seq, 0))
        assert ob.dropped == 0
        unacked_first = ob.next_seq
        while ob.stats().rows == total:  # until the budget is reached
            ob.commit(series(500, start=JAN1_UTC + total * 1000))
            total += 500
            assert total < 200_000
        assert ob.used_bytes() <= budget
        held = [r[0] for r in ob.readings()]
        # Everything unacknowledged is still there; only acknowledged rows went.
        assert set(range(unacked_first, ob.next_seq)) <= set(held)
        assert ob.dropped == 0 and min(held) > 1
        # No acknowledgements any more: once the acked rows are gone, the oldest raw go.
        while ob.dropped == 0:
            ob.commit(series(500, start=JAN1_UTC + total * 1000))
            total += 500
            assert total < 400_000
        ob.commit(series(500, start=JAN1_UTC + total * 1000))
        total += 500
        assert ob.used_bytes() <= budget
        st = ob.stats()
        assert st.dropped > 0 and st.acked_rows == 0
        held = [r[0] for r in ob.readings()]
        assert held == list(range(held[0], ob.next_seq))  # the newest are kept, in one run
        assert held[0] == st.dropped_through + 1
        assert st.depth == len(held)
        # Aggregates were kept for every reading ever committed.
        assert sum(a.count for a in ob.aggregates("day")) == total
        assert sum(a.count for a in ob.aggregates("hour")) == total
    with open_ob(db, max_bytes=budget) as ob:
        assert ob.dropped == st.dropped  # persisted
        log_rows = ob.db.execute("SELECT sum(n) FROM drop_log").fetchone()[0]
        assert log_rows == st.dropped


def test_alarm_events_stored_with_readings_and_streak_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with open_ob(db, alarm_consecutive=3) as ob:
        r = ob.commit([pv(JAN1_UTC + i, 1.2, "w21003") for i in range(2)])  # class IV, target III
        assert r.events == ()
    with open_ob(db, alarm_consecutive=3) as ob:
        r = ob.commit([pv(JAN1_UTC + 5, 1.3, "w21003"), pv(JAN1_UTC + 6, 1.4, "w21003")])
        assert [e.kind for e in r.events] == ["exceedance"]
        ev = r.events[0]
        assert ev.code == "w21003" and ev.details["grade"] == 4 and ev.time_ms == JAN1_UTC + 5
        assert [i for i, _ in ob.pending_events()] == [ev.event_id]
        ob.event_delivered(ev.event_id)
        assert ob.pending_events() == []
        r = ob.commit([pv(JAN1_UTC + 7, 0.3, "w21003")])
        assert [e.kind for e in r.events] == ["exceedance-cleared"]
        assert r.events[0].event_id == ev.event_id + 1


def test_buffer_belongs_to_one_station(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    open_ob(db).close()
    with pytest.raises(StoreError, match="belongs to station"):
        Outbox(db, station="other")


def test_open_existing_reads_station_and_budget(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with open_ob(db, max_bytes=2_000_000) as ob:
        ob.commit(series(100))
    with Outbox.open_existing(db) as ob:
        st = ob.stats()
        assert (ob.station, st.max_bytes, st.depth) == ("st-1", 2_000_000, 100)
    with pytest.raises(StoreError):
        Outbox.open_existing(tmp_path / "missing.db")


CHILD = textwrap.dedent(
    """
    import sys
    from sanduan.edge.core.model import PolledValue
    from sanduan.edge.io.outbox import Outbox
    ob = Outbox(sys.argv[1], station="st-1")
    i = 0
    while True:
        r = ob.commit([PolledValue("d", "w01009", 1767225600000 + i * 100 + k, 7.0, "N")
                       for k in range(100)])
        i += 1
        print(r.last_seq, flush=True)
    """
)


@pytest.mark.process
def test_sigkill_mid_commit_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        confirmed = 0
        deadline = time.monotonic() + 30
        while confirmed < (round_ + 1) * 3000 and time.monotonic() < deadline:
            confirmed = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [r[0] for r in con.execute("SELECT seq FROM reading ORDER BY seq")]
        next_seq = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        con.close()
        assert seqs[-1] >= confirmed  # every commit that returned is there
        assert seqs == list(range(1, len(seqs) + 1))  # no hole, no reuse
        assert next_seq == seqs[-1] + 1


def test_outbox_command_shows_the_buffer(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from sanduan.cli import app

    db = tmp_path / "b.db"
    with open_ob(db, max_bytes=5_000_000) as ob:
        ob.commit(series(3600, step=1000))  # one reading a second for an hour
        ob.ack(Ack("st-1", 1, 1, 600, 0))
    runner = CliRunner()
    res = runner.invoke(app, ["edge", "outbox", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert (r["station"], r["depth"], r["last_acked_seq"], r["dropped"]) == ("st-1", 3000, 600, 0)
    assert r["oldest_unacked_seq"] == 601 and r["oldest_unacked_age_s"] > 0
    assert r["readings_per_s"] is not None and abs(r["readings_per_s"] - 1.0) < 0.01
    per_day = r["bytes_per_reading"] * r["readings_per_s"] * 86_400
    assert abs(r["coverage_days"] - 5_000_000 / per_day) < 1e-9
    assert r["size_on_disk_bytes"] >= r["used_bytes"] > 0
    res = runner.invoke(app, ["edge", "outbox", "--db", str(db)])
    assert res.exit_code == 0 and "depth" in res.output and "3000" in res.output
    res = runner.invoke(app, ["edge", "outbox", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "no buffer" in res.output


def test_physically_impossible_values_are_flagged_d_not_graded_not_valid(tmp_path: Path) -> None:
    t = JAN1_UTC
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit(
            [
                pv(t, 7.2, "w01001"),  # pH 7.2: normal
                pv(t + 1000, 40.0, "w01001"),  # pH 40: impossible
                pv(t + 2000, 14.0, "w01001"),  # the physical maximum itself: possible
                pv(t + 3000, -0.1, "w21003", Flag.S),  # negative NH3-N, even hand-set
                pv(t + 4000, 300.0, "w21003", Flag.M),  # over 200 mg/L during maintenance
                pv(t + 5000, 60.0, "w01010", Flag.B),  # 60 °C with a link fault: stays B
                pv(t + 6000, math.nan, "w01001"),  # missing is not impossible
            ]
        )
        rows = [(r[2], r[4], r[5]) for r in ob.readings()]
        assert rows == [
            ("w01001", "N", 1),
            ("w01001", "D", 0),
            ("w01001", "N", 6),  # outside pH 6..9: class 劣V, but a possible value
            ("w21003", "D", 0),
            ("w21003", "D", 0),
            ("w01010", "B", 0),
            ("w01001", "N", 0),
        ]
        ph = ob.aggregates("hour", "w01001")[0]
        assert (ph.count, ph.valid, ph.vmin, ph.vmax) == (4, 2, 7.2, 14.0)
        nh3 = ob.aggregates("hour", "w21003")[0]
        assert (nh3.count, nh3.valid, nh3.vmin) == (2, 0, None)
        batch = ob.form_batch(1)
        assert batch is not None
        assert [str(f) for f in batch.flags] == ["N", "D", "N", "D", "D", "B", "N"]
        assert batch.grades == (1, 0, 6, 0, 0, 0, 0)


def test_impossible_values_never_feed_an_alarm(tmp_path: Path) -> None:
    # NH3-N 250 mg/L would be class 劣V; as an impossible value it is no exceedance at all.
    with open_ob(tmp_path / "b.db", alarm_consecutive=2) as ob:
        r = ob.commit([pv(JAN1_UTC + i * 1000, 250.0, "w21003") for i in range(5)])
        assert r.count == 5 and r.events == ()
        assert all(row[4] == "D" for row in ob.readings())


def test_a_repeated_result_is_not_stored_again_even_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    cycle = JAN1_UTC  # an analyzer's result time: the same for every read of one cycle
    result = [
        PolledValue("nh3n", "w21003", cycle, 0.42, Flag.N),
        PolledValue("tp", "w21011", cycle, 0.08, Flag.N),
    ]
    with open_ob(db) as ob:
        first = ob.commit(result)
        assert (first.first_seq, first.count) == (1, 2)
        # Read again in the same cycle (the poller's memory says nothing new, but an
        # agent restart forgets it): nothing is stored.
        assert ob.commit(list(result)).count == 0
        assert ob.repeats == 2
    with open_ob(db) as ob:  # the agent restarted
        assert ob.last_committed_ts("nh3n", "w21003") == cycle
        again = ob.commit(list(result))
        assert again.count == 0 and ob.repeats == 2
        # Another device with the same code and time is not a repeat, nor is the next cycle.
        nxt = ob.commit(
            [
                PolledValue("nh3n-2", "w21003", cycle, 0.40, Flag.N),
                PolledValue("nh3n", "w21003", cycle + 3_600_000, 0.45, Flag.N),
                PolledValue("nh3n", "w21003", cycle + 3_600_000, 0.45, Flag.N),  # twice in one
            ]
        )
        assert (nxt.first_seq, nxt.count) == (3, 2)
        assert [(r[0], r[1], r[2]) for r in ob.readings()] == [
            (1, cycle, "w21003"),
            (2, cycle, "w21011"),
            (3, cycle, "w21003"),
            (4, cycle + 3_600_000, "w21003"),
        ]
    with open_ob(db) as ob:
        repeat = [PolledValue("nh3n", "w21003", cycle + 3_600_000, 0.45)]
        assert ob.commit(repeat).count == 0
        assert ob.next_seq == 5

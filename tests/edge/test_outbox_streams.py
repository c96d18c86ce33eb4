"""The buffer as a stream: its id, rejected readings, persisted counters checked at start-up,
and salvage of a damaged file (real SQLite files, pages corrupted on disk)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sanduan.edge.core.model import PolledValue
from sanduan.edge.io.outbox import (
    SCHEMA_VERSION,
    CorruptBufferError,
    Outbox,
    salvage,
)
from sanduan.shared import wire
from sanduan.shared.wire import MAX_SEQ, Ack

T0 = 1_767_225_600_000
MARK = "zz-mark"


def series(n: int, start: int = 0, code: str = "w01009") -> list[PolledValue]:
    return [PolledValue("dev", code, T0 + (start + i) * 1000, 7.0 + i % 10 / 10) for i in range(n)]


def open_ob(path: Path) -> Outbox:
    return Outbox(path, station="st-1")


def test_a_new_deleted_or_empty_file_is_a_new_stream(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with open_ob(db) as ob:
        first = ob.stream
        ob.commit(series(5))
        batch = ob.form_batch(0)
    assert 1 <= first <= (1 << 63) - 1
    assert batch is not None and batch.stream == first
    decoded = wire.decode(wire.encode(batch))
    assert isinstance(decoded, wire.Batch) and decoded.stream == first  # wire v2
    with open_ob(db) as ob:
        assert ob.stream == first and ob.next_seq == 6  # reopened: same stream
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with open_ob(db) as ob:
        second = ob.stream
        assert second not in (0, first) and ob.next_seq == 1
    db.unlink()
    db.write_bytes(b"")  # a zero-length file (a re-flashed card, a truncated copy)
    with open_ob(db) as ob:
        assert ob.stream not in (0, first, second) and ob.next_seq == 1


def make_v1_buffer(db: Path) -> None:
    """A buffer as the first schema left it: no stream, no reject log."""
    with open_ob(db) as ob:
        ob.commit(series(5))
    con = sqlite3.connect(db)
    con.execute("DELETE FROM meta WHERE key IN ('stream', 'rejected')")
    con.execute("UPDATE meta SET value = 1 WHERE key = 'schema'")
    con.execute("DROP TABLE reject_log")
    con.commit()
    con.close()


def test_a_schema_1_buffer_is_upgraded_and_stays_on_stream_0(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    make_v1_buffer(db)
    with open_ob(db) as ob:
        assert ob.stream == 0 and ob.next_seq == 6
        assert ob.counters()["rejected"] == 0
        batch = ob.form_batch(0)
        assert batch is not None and batch.stream == 0
        assert wire.encode(batch)[:8].find(b"\xa1v\x01") >= 0  # still the v1 wire
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == (
        SCHEMA_VERSION
    )
    con.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("resend_missing", 9.223372036854776e18),  # what a forged resend left in the field
        ("next_seq", MAX_SEQ + 5),
        ("last_acked_seq", -1),
        ("stream", "x"),
        ("bseq_reserved", None),
    ],
)
def test_impossible_persisted_counters_are_refused_at_start_up(
    tmp_path: Path, key: str, value: object
) -> None:
    db = tmp_path / "b.db"
    with open_ob(db) as ob:
        ob.commit(series(3))
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    con.commit()
    con.close()
    with pytest.raises(CorruptBufferError) as e:
        open_ob(db)
    msg = str(e.value)
    assert f"meta value {key} = {value!r}" in msg and "--salvage" in msg and str(db) in msg


def test_rejected_readings_are_kept_never_sent_and_counted(tmp_path: Path) -> None:
    with open_ob(tmp_path / "b.db") as ob:
        ob.commit(series(10))
        assert ob.reject([(3, 5)], reason="conflict", detail="other content", batch_seq=1) == 3
        assert ob.reject([(4, 6), (50, 60)], reason="timestamp") == 1  # 4, 5 already; 50+ never
        assert ob.depth == 6 and ob.rejected_by_reason() == {"conflict": 3, "timestamp": 1}
        sent = []
        for kw in ({}, {"within": (1, 10)}, {"within": (1, 10), "include_acked": True}):
            b = ob.form_batch(0, **kw)
            assert b is not None
            sent.append(b.seq)
        assert all(s == (1, 2, 7, 8, 9, 10) for s in sent)
        ob.ack(Ack("st-1", 1, 1, 10, 0))
        assert ob.depth == 0
        rows = {r[0]: r[6] for r in ob.readings()}
        assert [s for s, acked in rows.items() if acked == 2] == [3, 4, 5, 6]  # still held
        assert ob.stats().rejected == {"conflict": 3, "timestamp": 1}


def corrupt_marked_page(db: Path) -> int:
    """Overwrite one reading-table leaf page (the one holding most of the marked readings) with
    garbage; returns its page number."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    counts = {
        p: data[p * page : (p + 1) * page].count(MARK.encode()) for p in range(len(data) // page)
    }
    target = max(counts, key=lambda p: counts[p])
    assert counts[target] >= 20
    data[target * page : (target + 1) * page] = b"\xa5" * page  # bit rot, a torn write
    db.write_bytes(bytes(data))
    return target


def damaged_buffer(tmp_path: Path) -> tuple[Path, dict[int, tuple[int, str, float]], int]:
    """A closed buffer of 3000 readings (seqs 1..500 acknowledged) with one damaged page among
    readings 1501..1800; returns (path, unacknowledged readings by seq, its stream)."""
    db = tmp_path / "b.db"
    with open_ob(db) as ob:
        ob.commit(series(1500))
        ob.commit(series(300, 1500, code=MARK))
        ob.commit(series(1200, 1800))
        ob.ack(Ack("st-1", 1, 1, 500, 0))
        stream = ob.stream
        unacked = {int(r[0]): (int(r[1]), str(r[2]), float(r[3])) for r in ob.readings(501)}
    corrupt_marked_page(db)
    return db, unacked, stream


def test_a_damaged_buffer_is_refused_in_one_clear_error(tmp_path: Path) -> None:
    db, _, _ = damaged_buffer(tmp_path)
    with pytest.raises(CorruptBufferError) as e:
        open_ob(db)
    msg = str(e.value)
    assert "is damaged" in msg and "--salvage" in msg and "\n" not in msg


def test_salvage_copies_every_readable_unacknowledged_reading(tmp_path: Path) -> None:
    db, unacked, old_stream = damaged_buffer(tmp_path)
    new = tmp_path / "new.db"
    r = salvage(db, new, station="st-1")
    assert r.old_stream == old_stream and r.new_stream not in (0, old_stream)
    assert r.unreadable > 0 and r.copied + r.invalid + r.unreadable >= 2500 - 300
    with open_ob(new) as ob:
        assert ob.stream == r.new_stream and ob.depth == r.copied
        rows = ob.readings()
    assert [row[0] for row in rows] == list(range(1, r.copied + 1))  # a new stream from seq 1
    copied = [(int(row[1]), str(row[2]), float(row[3])) for row in rows]
    originals = list(unacked.values())
    lost = [x for x in originals if x not in set(copied)]
    # Everything but the damaged page's rows, in order, unchanged; what was lost is marked.
    assert [x for x in originals if x in set(copied)] == copied
    assert 0 < len(lost) <= 300 and all(code == MARK for _, code, _ in lost)
    assert r.copied == len(originals) - len(lost)
    with pytest.raises(Exception, match="exists"):
        salvage(db, new, station="st-1")

"""Stream identity, conflicts and bounded dead letters in the store (both backends), and the
collector's per-message path for them (no broker)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import pytest

from sanduan.central.ingest import Processor
from sanduan.central.store import DEAD_LETTER_KEEP, Store
from sanduan.central.store.postgres import PostgresStore
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import IngestConfig
from sanduan.shared.errors import WireFormatError
from sanduan.shared.wire import (
    MAX_RANGES,
    MAX_SEQ,
    Ack,
    Batch,
    Nack,
    NackReason,
    decode,
    encode,
    new_stream_id,
    range_count,
)

T0 = 1_767_225_600_000
NOW_S = T0 / 1000 + 86_400


class FixedClock(SystemClock):
    """The centre's clock stopped a day after T0."""

    def time(self) -> float:
        return NOW_S


def batch(
    station: str,
    seqs: Sequence[int],
    *,
    stream: int = 0,
    bseq: int = 1,
    value: float = 7.1,
    ts: Sequence[int] | None = None,
) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        T0,
        seq=list(seqs),
        ts_ms=list(ts) if ts is not None else [T0 + q * 60_000 for q in seqs],
        code=["w01001"] * len(seqs),
        values=[value] * len(seqs),
        stream=stream,
    )


def later(seqs: Sequence[int]) -> list[int]:
    """Sample times of a new gateway's readings, after every earlier stream's (a reading with
    the sample time of one an earlier stream holds is a re-read, see below)."""
    return [T0 + 3_600_000 + q * 60_000 for q in seqs]


def events(store: Store, station: str) -> list[tuple[int, str, dict[str, object]]]:
    rows = store.query(
        "SELECT event_id, kind, details FROM events WHERE station = ? ORDER BY event_id DESC",
        [station],
    )
    return [(int(i), str(k), json.loads(d)) for i, k, d in rows]


# --- the store ------------------------------------------------------------------------------


def test_a_new_stream_retires_the_old_one_and_counts_what_was_lost(store: Store) -> None:
    old, new = new_stream_id(), new_stream_id()
    store.store_batch(batch("S1", [1, 2, 3, 7, 8], stream=old), T0)  # gap 4..6 open
    r = store.store_batch(batch("S1", [1, 2], stream=new, value=7.5, ts=later([1, 2])), T0 + 1)
    # The new buffer's seq 1..2 are new readings, not duplicates of the old stream's.
    assert (r.new, r.duplicate, r.conflicts) == (2, 0, ())
    assert r.stream_change is not None
    assert (r.stream_change.old_stream, r.stream_change.new_stream) == (old, new)
    assert r.stream_change.retired.last_acked_seq == 8
    assert r.stream_change.retired.lost == 3
    assert store.count_readings(["S1"]) == 7
    (row,) = store.stations()
    assert (row.stream, row.max_seq, row.contiguous_seq, row.gaps) == (new, 2, 2, ())
    assert row.lost_with_buffer == 3
    assert store.lost_with_buffer() == {"S1": 3}
    [(eid, kind, details)] = events(store, "S1")
    assert (eid, kind) == (-1, "stream-changed")
    assert details["old_stream"] == old
    assert details["last_acked_seq"] == 8
    assert details["lost_with_buffer"] == 3
    (retired,) = store.query(
        "SELECT stream, next_stream, max_seq, lost_gaps, lost_with_buffer FROM streams"
    )
    assert retired[:3] == (old, new, 8)
    assert json.loads(retired[3])[0][:2] == [4, 6]
    assert retired[4] == 3


def test_a_late_batch_of_a_retired_stream_is_stored_and_moves_nothing(store: Store) -> None:
    old, new = 11, 22
    store.store_batch(batch("S1", [1, 2], stream=old), T0)
    store.store_batch(batch("S1", [1], stream=new, ts=later([1])), T0 + 1)
    r = store.store_batch(batch("S1", [3, 4], stream=old, bseq=2), T0 + 2)
    assert (r.new, r.late, r.stream_change) == (2, True, None)
    (row,) = store.stations()
    assert (row.stream, row.max_seq) == (new, 1)
    assert store.count_readings(["S1"]) == 5
    assert [k for _, k, _ in events(store, "S1")] == ["stream-changed"]


def test_v1_batches_are_stream_0_beside_v2_streams(store: Store) -> None:
    store.store_batch(batch("S1", [1, 2]), T0)
    (row,) = store.stations()
    assert row.stream == 0
    r = store.store_batch(batch("S1", [1, 2], stream=5, ts=later([1, 2])), T0 + 1)
    assert r.new == 2
    assert store.count_readings(["S1"]) == 4


def test_a_seq_again_with_other_content_is_a_conflict_never_stored_over(store: Store) -> None:
    store.store_batch(batch("S1", [1, 2, 3], stream=9), T0)
    same = store.store_batch(batch("S1", [1, 2, 3], stream=9), T0 + 1)
    assert (same.new, same.duplicate, same.conflicts) == (0, 3, ())
    other = store.store_batch(batch("S1", [2, 3, 4], stream=9, value=8.0), T0 + 2)
    assert (other.new, other.duplicate, other.conflicts) == (1, 0, ((2, 3),))
    assert store.query("SELECT value FROM readings WHERE seq IN (2, 3)") == [(7.1,), (7.1,)]
    [(_, kind, details)] = events(store, "S1")
    assert kind == "conflict"
    assert (details["first_seq"], details["last_seq"], details["readings"]) == (2, 3, 2)


def test_missing_values_are_the_same_content(store: Store) -> None:
    store.store_batch(batch("S1", [1], value=math.nan), T0)
    r = store.store_batch(batch("S1", [1], value=math.nan), T0 + 1)
    assert (r.duplicate, r.conflicts) == (1, ())


def test_dead_letters_keep_the_head_the_size_and_the_digest(store: Store) -> None:
    raw = bytes(range(256)) * 400  # 100 KiB
    store.dead_letter("t", None, "undecodable", raw, T0, station="S1", detail="bad")
    (row,) = store.dead_letters()
    assert (row.reason, row.station, row.detail) == ("undecodable", "S1", "bad")
    assert (row.size_bytes, row.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert store.query("SELECT raw FROM dead_letters") == [(raw[:DEAD_LETTER_KEEP],)]
    assert store.dead_letters(station="S2") == []
    assert store.dead_letters(since_ms=T0 + 1) == []


# --- a sample read again by a replacement gateway -------------------------------------------

OLD, NEW = 0x1111, 0x2222
TP_AT = T0 + 30 * 60_000  # the sample time an analyzer reports with its result


def analyzer(
    seqs: Sequence[int], ts: Sequence[int], values: Sequence[float], *, stream: int, bseq: int = 1
) -> Batch:
    """TP results (w21011) with the sample times the analyzer reports."""
    return Batch.from_columns(
        "S1",
        bseq,
        T0,
        seq=list(seqs),
        ts_ms=list(ts),
        code=["w21011"] * len(seqs),
        values=list(values),
        stream=stream,
    )


def tp_rows(store: Store) -> list[tuple[int, int, float]]:
    rows = store.query("SELECT stream, ts_ms, value FROM readings WHERE code = 'w21011'")
    return sorted((int(s), int(t), float(v)) for s, t, v in rows)


def test_a_sample_a_new_gateway_reads_again_is_stored_once(store: Store) -> None:
    store.store_batch(analyzer([1, 2], [TP_AT - 3_600_000, TP_AT], [0.08, 0.11], stream=OLD), T0)
    # The new gateway reads the analyzer's held result again, then a new one.
    new = analyzer([1, 2], [TP_AT, TP_AT + 3_600_000], [0.11, 0.12], stream=NEW)
    r = store.store_batch(new, T0 + 1)
    assert (r.new, r.reread, r.duplicate, r.sample_conflicts, r.conflicts) == (1, 1, 0, (), ())
    assert r.stream_change is not None
    assert r.state.max_seq == 2  # held: the seq state moves over it
    assert tp_rows(store) == [
        (OLD, TP_AT - 3_600_000, 0.08),
        (OLD, TP_AT, 0.11),
        (NEW, TP_AT + 3_600_000, 0.12),
    ]
    (row,) = store.stations()
    assert row.reread == 1
    kinds = [(k, d) for _, k, d in events(store, "S1")]
    assert kinds[0][0] == "reread"
    assert (kinds[0][1]["readings"], kinds[0][1]["first_seq"]) == (1, 1)
    # The same batch delivered again: every reading a duplicate, nothing counted twice.
    again = store.store_batch(new, T0 + 2)
    assert (again.new, again.reread, again.duplicate) == (0, 0, 2)
    assert store.stations()[0].reread == 1
    assert len(tp_rows(store)) == 3


def test_a_later_batch_of_the_new_stream_is_checked_back_to_the_old_streams_last_sample(
    store: Store,
) -> None:
    store.store_batch(analyzer([1, 2], [TP_AT - 3_600_000, TP_AT], [0.08, 0.11], stream=OLD), T0)
    store.store_batch(analyzer([1], [TP_AT + 7_200_000], [0.2], stream=NEW), T0 + 1)
    # A second batch of the new stream carries the held result (an analyzer read late).
    r = store.store_batch(analyzer([2], [TP_AT], [0.11], stream=NEW, bseq=2), T0 + 2)
    assert (r.new, r.reread) == (0, 1)
    # Samples after the old stream's last one are not looked for elsewhere (PostgreSQL: the
    # batch is copied straight into readings).
    direct = getattr(store, "write_paths", {}).get("direct", 0)
    r = store.store_batch(analyzer([3], [TP_AT + 9_000_000], [0.3], stream=NEW, bseq=3), T0 + 3)
    assert (r.new, r.reread) == (1, 0)
    if isinstance(store, PostgresStore):
        assert store.write_paths["direct"] == direct + 1
    assert store.stations()[0].reread == 1
    assert store.query("SELECT last_ts_ms FROM streams WHERE stream = ?", [OLD]) == [(TP_AT,)]


def test_the_same_sample_with_another_value_keeps_the_first_and_is_recorded(store: Store) -> None:
    store.store_batch(analyzer([1], [TP_AT], [0.11], stream=OLD), T0)
    r = store.store_batch(analyzer([1, 2], [TP_AT, TP_AT + 60_000], [0.13, 0.2], stream=NEW), T0)
    assert (r.new, r.reread, r.sample_conflicts, r.conflicts, r.duplicate) == (
        1,
        0,
        ((1, 1),),
        (),
        0,
    )
    assert tp_rows(store) == [(OLD, TP_AT, 0.11), (NEW, TP_AT + 60_000, 0.2)]
    (_, kind, details) = events(store, "S1")[0]
    assert (kind, details["cross_stream"], details["first_seq"]) == ("conflict", True, 1)
    assert store.stations()[0].reread == 0


def test_a_late_batch_of_the_old_stream_is_not_stored_over_the_new_ones_sample(
    store: Store,
) -> None:
    store.store_batch(analyzer([1], [TP_AT - 3_600_000], [0.08], stream=OLD), T0)
    store.store_batch(analyzer([1], [TP_AT], [0.11], stream=NEW), T0 + 1)
    r = store.store_batch(analyzer([2], [TP_AT], [0.11], stream=OLD, bseq=2), T0 + 2)
    assert (r.late, r.new, r.reread) == (True, 0, 1)
    assert tp_rows(store) == [(OLD, TP_AT - 3_600_000, 0.08), (NEW, TP_AT, 0.11)]


def test_within_one_stream_the_same_sample_under_two_seqs_is_two_readings(store: Store) -> None:
    r = store.store_batch(analyzer([1, 2], [TP_AT, TP_AT], [0.11, 0.11], stream=OLD), T0)
    assert (r.new, r.reread) == (2, 0)
    store.store_batch(analyzer([1], [TP_AT + 60_000], [0.2], stream=NEW), T0 + 1)
    r = store.store_batch(analyzer([3, 4], [TP_AT, TP_AT], [0.11, 0.11], stream=OLD), T0 + 2)
    assert (r.late, r.new, r.reread) == (True, 2, 0)  # the old stream's own sample: stored


# --- the per-message path ---------------------------------------------------------------------


@pytest.fixture
def proc(store: Store) -> Processor:
    return Processor(store, ingest=IngestConfig(), clock=FixedClock())


def replies(out: object) -> list[object]:
    return [decode(p) for _, p in out.replies()]  # type: ignore[attr-defined]


def test_answers_go_out_in_the_version_the_station_speaks(proc: Processor) -> None:
    out = proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2])))
    assert out.ack is not None
    assert encode(out.ack)[:8] == encode(Ack("S1", 1, 1, 2, out.ack.time_ms))[:8]
    assert decode(encode(out.ack)) == Ack("S1", 1, 1, 2, out.ack.time_ms)  # v1, stream 0
    out = proc.handle("sanduan/v1/S2/batch", encode(batch("S2", [1, 2], stream=77)))
    assert out.ack is not None
    assert out.ack.stream == 77


def test_a_conflict_is_nacked_dead_lettered_and_not_acked(proc: Processor) -> None:
    proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2, 3], stream=9)))
    payload = encode(batch("S1", [1, 2, 3], stream=9, value=9.9, bseq=2))
    out = proc.handle("sanduan/v1/S1/batch", payload)
    assert out.ack is None
    (nack,) = out.nacks
    assert (nack.reason, nack.ranges, nack.stream, nack.batch_seq) == (
        NackReason.CONFLICT,
        ((1, 3),),
        9,
        2,
    )
    assert isinstance(replies(out)[0], Nack)
    (dl,) = proc.store.dead_letters()
    assert (dl.reason, dl.station, dl.sha256) == (
        "conflict",
        "S1",
        hashlib.sha256(payload).hexdigest(),
    )
    # Partly new: the new readings are stored and acked with exactly the held ranges.
    out = proc.handle(
        "sanduan/v1/S1/batch", encode(batch("S1", [3, 4, 5], stream=9, value=9.9, bseq=3))
    )
    assert out.ack is not None
    assert out.ack.ranges == ((4, 5),)
    assert out.nacks[0].ranges == ((3, 3),)
    # A byte-identical replay is an idempotent re-ack.
    out = proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2, 3], stream=9)))
    assert out.ack is not None
    assert (out.ack.ranges, out.nacks, out.dead) == ((), (), None)


def test_v1_conflicts_are_not_acked_and_have_no_nack(proc: Processor) -> None:
    proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2])))
    out = proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2], value=3.0)))
    assert (out.ack, out.nacks, out.dead) == (None, (), "conflict")


def test_implausible_timestamps_are_nacked_the_rest_stored(proc: Processor) -> None:
    ts = [0, T0, T0 + 60_000, 4_102_444_800_000]  # 1970, now-ish, now-ish, 2100
    out = proc.handle("sanduan/v1/S1/batch", encode(batch("S1", [1, 2, 3, 4], stream=3, ts=ts)))
    (nack,) = out.nacks
    assert (nack.reason, nack.ranges) == (NackReason.TIMESTAMP, ((1, 1), (4, 4)))
    assert out.ack is not None
    assert out.ack.ranges == ((2, 3),)
    assert proc.store.count_readings(["S1"]) == 2
    assert [d.reason for d in proc.store.dead_letters()] == ["timestamp"]
    # Margin and earliest date come from the config.
    p2 = Processor(
        proc.store,
        ingest=IngestConfig(future_margin_s=0, earliest_reading="2030-01-01"),
        clock=FixedClock(),
    )
    out = p2.handle("sanduan/v1/S2/batch", encode(batch("S2", [1], stream=3)))
    assert out.ack is None
    assert out.nacks[0].reason == NackReason.TIMESTAMP


def test_forged_seqs_never_make_the_centre_send_what_an_agent_cannot_decode(
    proc: Processor,
) -> None:
    # v1 has no MAX_SEQ in its decoder: the collector holds it to the bound.
    forged = batch("S1", [2**63 - 10], ts=[T0])
    with pytest.raises(WireFormatError):
        encode(batch("S1", [2**63 - 10], stream=1, ts=[T0]))
    out = proc.handle("sanduan/v1/S1/batch", encode(forged))
    assert (out.ack, out.dead) == (None, "invalid")
    assert proc.store.count_readings(["S1"]) == 0
    # A v2 seq at the very top opens a huge gap: the resend request is capped and decodes.
    proc.handle("sanduan/v1/S2/batch", encode(batch("S2", [1, 2], stream=4)))
    out = proc.handle(
        "sanduan/v1/S2/batch", encode(batch("S2", [MAX_SEQ], stream=4, bseq=2, ts=[T0]))
    )
    assert out.ack is not None
    claim = proc.store.claim_resend(
        "S2", T0 + 10**9, gap_timeout_ms=0, interval_ms=0, give_up_ms=10**12
    )
    assert 0 < range_count(claim.ranges) <= 50_000
    assert len(claim.ranges) <= MAX_RANGES


def test_a_batch_the_store_rejects_becomes_a_dead_letter_store(
    proc: Processor, store: Store, backend: str
) -> None:
    # The store itself refuses this station's readings (a trigger), whatever the backend.
    if backend == "sqlite":
        store.query(
            "CREATE TRIGGER poison BEFORE INSERT ON readings WHEN NEW.station = 'P'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned reading'); END"
        )
    else:
        store.query(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.station = 'P' THEN RAISE EXCEPTION 'poisoned reading'; END IF;"
            " RETURN NEW; END $$"
        )
        store.query(
            "CREATE TRIGGER poison BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    payload = encode(batch("P", [1, 2], stream=5))
    out = proc.handle("sanduan/v1/P/batch", payload)
    assert (out.ack, out.dead) == (None, "store")
    assert out.nacks[0].reason == NackReason.INVALID
    assert proc.counts["store_errors"] == 3
    (dl,) = store.dead_letters()
    assert dl.reason == "store"
    assert "poisoned reading" in (dl.detail or "")
    # The whole payload is kept, to be replayed once the store is fixed.
    assert store.query("SELECT raw FROM dead_letters") == [(payload,)]
    assert proc.handle("sanduan/v1/Q/batch", encode(batch("Q", [1]))).ack is not None


def test_the_dead_letter_budget_only_counts_past_its_limit(proc: Processor, store: Store) -> None:
    p = Processor(
        store,
        ingest=IngestConfig(dead_letters_per_hour=5, dead_letter_bytes_per_hour=10**6),
        clock=FixedClock(),
    )
    for _ in range(50):
        out = p.handle("sanduan/v1/S1/batch", b"\xc1garbage")
        assert out.dead == "undecodable"
    p.flush_over_budget()
    assert len(store.dead_letters()) == 5
    (row,) = store.stations()
    assert row.rejects_over_budget == 45
    # Another station has a budget of its own.
    assert p.handle("sanduan/v1/S2/batch", b"\xc1").recorded


def test_oversize_is_checked_before_decoding(proc: Processor, store: Store) -> None:
    big = b"\x80" * (2 * 1024 * 1024)
    out = proc.handle("sanduan/v1/S1/batch", big)
    assert out.dead == "oversize"
    (dl,) = store.dead_letters()
    assert (dl.size_bytes, dl.sha256) == (len(big), hashlib.sha256(big).hexdigest())
    assert store.query("SELECT length(raw) FROM dead_letters") == [(DEAD_LETTER_KEEP,)]


def test_a_reread_and_a_sample_conflict_are_acknowledged(proc: Processor, store: Store) -> None:
    proc.handle(
        "sanduan/v1/S1/batch", encode(analyzer([1, 2], [TP_AT, TP_AT + 60], [0.1, 0.2], stream=OLD))
    )
    payload = encode(
        analyzer([1, 2, 3], [TP_AT, TP_AT + 60, TP_AT + 120], [0.1, 0.25, 0.3], stream=NEW)
    )
    out = proc.handle("sanduan/v1/S1/batch", payload)
    assert out.ack is not None  # every reading held: the edge deletes them all
    assert (out.ack.ranges, out.ack.stream, out.nacks) == ((), NEW, ())
    assert out.dead == "conflict"
    (dl,) = store.dead_letters()
    assert (dl.reason, dl.sha256) == ("conflict", hashlib.sha256(payload).hexdigest())
    assert "seqs 2..2" in (dl.detail or "")
    c = proc.counts
    assert (c["readings_new"], c["readings_reread"], c["readings_sample_conflict"]) == (3, 1, 1)

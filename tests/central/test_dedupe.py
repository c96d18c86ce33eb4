"""Seq-state tracking (pure): gaps open, close, split, time out and are given up; samples
read again under another stream are sorted into re-reads and conflicts."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.central.core.dedupe import (
    MAX_GAPS,
    CrossStream,
    Gap,
    SeqState,
    advance,
    cross_stream,
    due_ranges,
    gaps_from_json,
    gaps_to_json,
    give_up,
    held_before,
    resend_due,
)
from sanduan.shared.wire import seq_ranges


def test_first_batch_sets_the_baseline() -> None:
    s = advance(SeqState(), [(1001, 1003)], 5)
    assert s == SeqState(max_seq=1003, contiguous_seq=1003, gaps=())


def test_gap_inside_a_batch_and_between_batches() -> None:
    s = advance(SeqState(), seq_ranges([1, 2, 3, 5, 6, 10]), 100)
    assert s.gaps == (Gap(4, 4, 100), Gap(7, 9, 100))
    assert s.contiguous_seq == 3
    s = advance(s, [(15, 20)], 200)
    assert s.gaps[-1] == Gap(11, 14, 200)
    assert s.max_seq == 20
    assert s.missing == 1 + 3 + 4


def test_late_readings_split_and_close_gaps() -> None:
    s = advance(SeqState(), [(1, 1), (20, 20)], 0)
    assert s.gaps == (Gap(2, 19, 0),)
    s = advance(s, [(5, 6), (10, 10)], 50)
    assert s.gaps == (Gap(2, 4, 0), Gap(7, 9, 0), Gap(11, 19, 0))
    s = advance(s, [(2, 4)], 60)
    assert s.contiguous_seq == 6
    s = advance(s, [(7, 9), (11, 19)], 70)
    assert s == SeqState(20, 20, ())


def test_duplicates_and_readings_below_the_baseline_change_nothing() -> None:
    s = advance(SeqState(), [(100, 200)], 0)
    assert advance(s, [(100, 200)], 1) == s
    assert advance(s, [(1, 50)], 1) == s


def test_resend_timing() -> None:
    s = advance(SeqState(), [(1, 1), (5, 5)], 1000)
    assert due_ranges(s, 1500, 1000) == ()
    assert due_ranges(s, 2000, 1000) == ((2, 4),)
    assert resend_due(s, None, 2000, 1000, 5000) == ((2, 4),)
    assert resend_due(s, 2000, 4000, 1000, 5000) == ()
    assert resend_due(s, 2000, 7000, 1000, 5000) == ((2, 4),)


def test_give_up_drops_old_gaps_only() -> None:
    s = advance(SeqState(), [(1, 1), (5, 5)], 0)
    s = advance(s, [(9, 9)], 10_000)
    kept, dropped = give_up(s, 20_000, 15_000)
    assert dropped == (Gap(2, 4, 0),)
    assert kept.gaps == (Gap(6, 8, 10_000),)
    assert kept.contiguous_seq == 5
    same, none = give_up(kept, 20_000, 15_000)
    assert same == kept
    assert none == ()


def test_gap_count_is_capped_without_losing_a_seq() -> None:
    seqs = list(range(1, 4 * MAX_GAPS, 2))  # every other seq missing
    s = advance(SeqState(), seq_ranges(seqs), 0)
    assert len(s.gaps) == MAX_GAPS
    missing = {q for g in s.gaps for q in range(g.first, g.last + 1)}
    assert missing >= set(range(1, seqs[-1])) - set(seqs)


def test_gaps_json_round_trip() -> None:
    gaps = (Gap(2, 4, 100), Gap(7, 7, 200))
    assert gaps_from_json(gaps_to_json(gaps)) == gaps
    assert gaps_from_json(None) == ()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 300), min_size=1, max_size=40).map(lambda x: sorted(set(x))),
        min_size=1,
        max_size=12,
    )
)
def test_state_matches_a_set_model(batches: list[list[int]]) -> None:
    """Whatever order batches arrive in, the gaps are exactly the seqs between the baseline
    and the highest seq that have not arrived."""
    s = SeqState()
    seen: set[int] = set()
    base = batches[0][0]
    for i, b in enumerate(batches):
        s = advance(s, seq_ranges(b), i)
        seen |= set(b)
    top = max(seen)
    expected = {q for q in range(base, top + 1) if q not in seen}
    got = {q for g in s.gaps for q in range(g.first, g.last + 1)}
    assert got == expected
    assert s.max_seq == top
    assert s.contiguous_seq == (min(expected) - 1 if expected else top)
    assert all(a.last < b.first for a, b in zip(s.gaps, s.gaps[1:], strict=False))


# --- streams, conflicts, request caps ---------------------------------------------------------


def test_retire_closes_every_open_gap_as_lost() -> None:
    from sanduan.central.core.dedupe import retire

    s = advance(SeqState(), [(1, 3), (7, 8), (12, 12)], 5)
    r = retire(s)
    assert (r.last_acked_seq, r.contiguous_seq, r.lost) == (12, 3, 6)
    assert retire(SeqState()).lost == 0


def test_conflicts_compare_content_nan_aware() -> None:
    from sanduan.central.core.dedupe import conflicts

    nan = float("nan")
    held = {
        1: (10, "w01001", 7.0, "N", 3),
        2: (20, "w01001", nan, "D", 0),
        4: (40, "a", 1.0, "N", 1),
    }
    sent = [
        (1, (10, "w01001", 7.0, "N", 3)),  # same
        (2, (20, "w01001", nan, "D", 0)),  # same (missing == missing)
        (3, (30, "w01001", 1.0, "N", 1)),  # not held: new, not a conflict
        (4, (40, "a", 1.0, "N", 2)),  # grade differs
        (5, (50, "a", 1.0, "N", 2)),
    ]
    assert conflicts(sent, held) == ((4, 4),)
    held[5] = (51, "a", 1.0, "N", 2)  # ts differs
    assert conflicts(sent, held) == ((4, 5),)


def test_cap_request_bounds_the_span_and_the_ranges() -> None:
    from sanduan.central.core.dedupe import (
        MAX_RANGES_PER_REQUEST,
        MAX_SEQS_PER_REQUEST,
        cap_request,
    )

    huge = [(2, 2**48 - 2)]
    assert cap_request(huge) == ((2, 1 + MAX_SEQS_PER_REQUEST),)
    many = [(i * 10, i * 10 + 1) for i in range(1000)]
    capped = cap_request(many)
    assert len(capped) == MAX_RANGES_PER_REQUEST
    assert cap_request([(1, 5), (10, 20)], max_seqs=8) == ((1, 5), (10, 12))


def test_dead_letter_budget_window() -> None:
    from sanduan.central.core.budget import HOUR_MS, Budget, spend

    b = Budget(count=2, bytes=100)
    w, ok1 = spend(None, b, 0, 10)
    w, ok2 = spend(w, b, 1, 10)
    w, ok3 = spend(w, b, 2, 10)
    assert (ok1, ok2, ok3, w.over) == (True, True, False, 1)
    w, ok = spend(w, b, HOUR_MS, 10)  # a new hour
    assert ok
    assert w.over == 0
    _, ok = spend(None, b, 0, 101)  # too many bytes
    assert not ok


# --- samples read again under another stream ---------------------------------------------------


def test_held_before_is_at_most_max_seq_and_in_no_gap() -> None:
    s = advance(SeqState(), seq_ranges([1, 2, 3, 7, 8]), 0)  # gap 4..6
    assert [q for q in range(1, 11) if held_before(s, q)] == [1, 2, 3, 7, 8]
    assert not held_before(SeqState(), 1)


def test_cross_stream_sorts_rereads_from_conflicts() -> None:
    sent = [
        (1, "w21003", 100, 0.42),  # held here: not looked at
        (2, "w21003", 200, 0.5),  # same value elsewhere: re-read
        (3, "w21011", 200, 0.07),  # same value among two held elsewhere: re-read
        (4, "w21001", 200, 1.5),  # another value elsewhere: conflict
        (5, "w01009", 200, math.nan),  # missing, missing elsewhere: re-read
        (6, "w01010", 200, math.nan),  # missing here, a value elsewhere: conflict
        (7, "w01001", 300, 7.1),  # nowhere: neither
    ]
    elsewhere = {
        ("w21003", 100): [9.9],
        ("w21003", 200): [0.5],
        ("w21011", 200): [0.06, 0.07],
        ("w21001", 200): [1.4],
        ("w01009", 200): [math.nan],
        ("w01010", 200): [20.1],
    }
    xs = cross_stream(sent, {1}, elsewhere)
    assert xs == CrossStream(reread=((2, 3), (5, 5)), conflicts=((4, 4), (6, 6)))
    assert cross_stream(sent, {1, 2, 3, 4, 5, 6, 7}, elsewhere) == CrossStream()


def test_cross_stream_compares_values_exactly() -> None:
    xs = cross_stream([(1, "w21003", 100, 0.1 + 0.2)], set(), {("w21003", 100): [0.3]})
    assert xs.conflicts == ((1, 1),)  # 0.30000000000000004 is not 0.3: not the same sample

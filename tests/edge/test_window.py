"""The pure send window and the checks on every number the centre sends (no broker, no disk)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sanduan.edge.core.window import (
    MAX_BACKOFF,
    MAX_RANGES,
    MAX_SEQ,
    U63_MAX,
    ClockWatch,
    Inflight,
    Issued,
    Request,
    SendWindow,
    check_ack,
    check_nack,
    check_resend,
    clip,
    clock_offset,
)

ISSUED = Issued("s1", 77, last_seq=1000, last_bseq=64)
NOW = 1_767_225_600.0


def test_an_ack_is_taken_only_within_what_the_stream_issued() -> None:
    assert check_ack("s1", 77, 3, 10, 20, (), ISSUED) == ([(10, 20)], None)
    assert check_ack("s1", 77, 3, 10, 20, ((10, 12), (15, 20)), ISSUED)[0] == [(10, 12), (15, 20)]
    # A v1 collector (stream 0) cannot tell streams apart: its acks count for this stream.
    assert check_ack("s1", 0, 3, 10, 20, (), ISSUED)[0] == [(10, 20)]
    for args, why in [
        (("s2", 77, 3, 10, 20, ()), "station"),
        (("s1", 78, 3, 10, 20, ()), "stream 78"),
        (("s1", 77, 65, 10, 20, ()), "never sent"),
        (("s1", 77, 0, 10, 20, ()), "never sent"),
        (("s1", 77, 3, 990, 1001, ()), "beyond the last issued 1000"),
        (("s1", 77, 3, 10, 20, ((10, U63_MAX),)), "beyond the last issued"),
        (("s1", 77, 3, 20, 10, ()), "not valid"),
        (("s1", 77, 3, 1, 999, tuple((i, i) for i in range(1, MAX_RANGES + 2))), "ranges"),
    ]:
        marks, got = check_ack(*args, ISSUED)
        assert marks == [] and got is not None and why in got, (args, got)


def test_a_resend_request_is_answered_for_what_exists_and_the_rest_ignored() -> None:
    # Finding: a forged range near 2**63 made the agent count 2**63 "missing" seqs and die.
    ranges, note = check_resend("s1", 77, ((10, 30), (1001, U63_MAX)), ISSUED)
    assert ranges == [(10, 30)]
    assert note is not None and f"{U63_MAX - 1000} of the seqs" in note
    assert check_resend("s1", 77, ((2000, 3000),), ISSUED) == (
        [],
        "1001 of the seqs asked for were never issued (last issued seq 1000)",
    )
    assert check_resend("s1", 77, ((5, 5),), ISSUED) == ([(5, 5)], None)
    assert check_resend("s1", 99, ((5, 5),), ISSUED)[0] == []
    many = tuple((i * 2, i * 2) for i in range(1, 400))
    ranges, note = check_resend("s1", 77, many, ISSUED)
    assert len(ranges) == MAX_RANGES and note is not None and "first 256" in note


def test_a_nack_is_cut_to_its_batch_and_to_issued_seqs() -> None:
    assert check_nack("s1", 77, 10, 20, ((12, 14),), ISSUED) == ([(12, 14)], None)
    assert check_nack("s1", 77, 10, 20, ((5, 25),), ISSUED) == ([(10, 20)], None)
    assert check_nack("s1", 77, 990, 2000, ((995, 2000),), ISSUED) == ([(995, 1000)], None)
    assert check_nack("s1", 77, 1001, 2000, ((1001, 2000),), ISSUED)[0] == []
    assert check_nack("s1", 5, 10, 20, ((12, 14),), ISSUED)[0] == []
    assert check_nack("s1", 77, 10, 20, (), ISSUED)[0] == []


@given(st.lists(st.tuples(st.integers(1, U63_MAX), st.integers(0, 1 << 40)), max_size=20))
def test_clip_counts_exactly_and_never_overflows(raw: list[tuple[int, int]]) -> None:
    ranges = [(a, min(U63_MAX, a + d)) for a, d in raw]
    kept, cut = clip(ranges, 1000)
    assert all(1 <= a <= b <= 1000 for a, b in kept)
    covered: set[int] = set()
    for a, b in ranges:
        covered.update(range(a, min(b, 1000) + 1))
    assert sum(b - a + 1 for a, b in kept) == len(covered)
    assert cut >= 0


def test_clock_offset_needs_a_plausible_centre_time() -> None:
    got = clock_offset(round((NOW + 45.2) * 1000), NOW + 0.4, NOW)
    assert got is not None
    assert math.isclose(got[0], -45.0, abs_tol=1e-6) and got[1] is not None
    assert math.isclose(got[1], 0.4, abs_tol=1e-6)
    assert clock_offset(0, NOW, None) is None  # no time
    assert clock_offset(U63_MAX, NOW, None) is None  # forged
    assert clock_offset(-5, NOW, None) is None
    # A station clock reset to 1970 is reported as it is, not hidden.
    got = clock_offset(round(NOW * 1000), 1000.0, None)
    assert got is not None and got[0] < -1.7e9
    assert clock_offset(round(NOW * 1000), NOW, math.nan) == (0.0, None)


def window() -> SendWindow:
    return SendWindow(
        ack_timeout_s=10, max_inflight=2, batch_max_readings=100, batch_max_age_s=5, head=0
    )


def test_new_readings_wait_for_a_full_batch_or_their_age() -> None:
    w = window()
    assert w.next_request(0.0) is None
    w.committed(10, 0.0)
    assert w.next_request(0.0) == Request("new", 1, MAX_SEQ)  # backlog at start: at once
    w.formed(Request("new", 1, MAX_SEQ), 10)
    assert w.cursor == 10 and not w.backlog
    w.committed(20, 1.0)
    assert w.next_request(2.0) is None and math.isclose(w.new_wait(2.0), 4.0)
    assert w.next_request(6.0) == Request("new", 11, MAX_SEQ)
    w.committed(200, 6.5)
    assert w.new_wait(6.5) == 0.0  # a full batch is waiting


def test_resends_first_then_retries_and_the_window_closes_when_full() -> None:
    w = window()
    w.committed(500, 0.0)
    w.sent(1, Inflight(1, 100, 0.0, "new"))
    w.sent(2, Inflight(101, 200, 1.0, "new"))
    assert w.full
    expired, nxt = w.expire(10.5)
    assert [b for b, _ in expired] == [1] and math.isclose(nxt, 0.5) and not w.full
    w.resend_asked([(40, 60), (50, 70)])
    assert w.next_request(11.0) == Request("resend", 40, 70)
    w.formed(Request("resend", 40, 70), 55)  # limited batch: the rest stays
    assert w.next_request(11.0) == Request("resend", 56, 70)
    w.formed(Request("resend", 56, 70), None)
    assert w.next_request(11.0) == Request("retry", 1, 100)
    # A partial ack sends the rest of the batch's span again.
    assert w.acked(2, 101, 200, partial=True) is not None
    assert w.retry == [(1, 200)]
    w.link_up()
    assert (w.inflight, w.retry, w.cursor, w.backlog) == ({}, [], 0, True)


def test_the_ack_timeout_doubles_with_each_expiry_and_an_ack_resets_it() -> None:
    """A centre slow to answer gets fewer resends, not more (no resend storm)."""
    w = window()  # ack timeout 10 s
    w.committed(500, 0.0)
    t = 0.0
    for backoff in (1, 2, 4, 8, 8):
        assert w.backoff == backoff and w.timeout_s == 10.0 * backoff
        w.sent(1, Inflight(1, 100, t, "retry"))
        assert w.expire(t + 10.0 * backoff - 0.01)[0] == []  # not yet
        t += 10.0 * backoff
        assert [b for b, _ in w.expire(t)[0]] == [1]
    assert w.backoff == MAX_BACKOFF
    w.sent(2, Inflight(1, 100, t, "retry"))
    assert w.acked(2, 1, 100, partial=False) is not None
    assert w.backoff == 1 and w.timeout_s == 10.0


def test_pending_ranges_are_bounded() -> None:
    w = window()
    for k in range(2):
        w.resend_asked([(i * 3 + 1, i * 3 + 1) for i in range(k, 6000, 2)])
    assert len(w.resend) == 4096 and w.resend[0] == (1, 1)


def test_one_clock_alarm_per_excursion() -> None:
    w = ClockWatch(limit_s=30.0)
    assert not w.alarm_due()  # nothing known yet
    assert w.sample(round((NOW - 45) * 1000), NOW, None) == 45.0
    assert w.alarm_due() and not w.alarm_due()  # once
    assert w.sample(U63_MAX, NOW, None) is None and w.offset_s == 45.0  # a forged time: ignored
    w.sample(round(NOW * 1000), NOW, None)
    assert not w.alarm_due()  # back within the limit
    w.sample(round((NOW + 40) * 1000), NOW, None)
    assert w.alarm_due() and w.alarms == 2

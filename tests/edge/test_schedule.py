"""Poll schedules: no drift, skipped slots, exponential backoff, degraded state and recovery."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.edge.core.schedule import DeviceState, Schedule, Transition, next_due


def test_due_times_stay_on_the_grid_when_polls_run_late() -> None:
    s = Schedule(period_s=10.0, anchor=100.0)
    assert s.is_due(100.0) and not s.is_due(99.99)
    s.success(100.7)  # the poll took 0.7 s
    assert s.next_due == 110.0
    s.success(113.0)  # started late at 110, finished at 113: still no drift
    assert s.next_due == 120.0
    assert s.missed == 0


def test_missed_slots_are_skipped_and_counted() -> None:
    s = Schedule(period_s=10.0, anchor=0.0)
    s.success(35.0)  # the bus was busy: slots 10, 20, 30 passed
    assert s.next_due == 40.0
    assert s.missed == 3
    s.success(50.0)  # the poll due at 40 ended exactly on the next slot: that slot is gone
    assert s.next_due == 60.0
    assert s.missed == 4


def test_backoff_doubles_and_is_capped() -> None:
    s = Schedule(period_s=10.0, anchor=0.0, retries=2, backoff_max_s=60.0, degraded_after=3)
    dues = []
    now = 0.0
    for _ in range(7):
        s.failure(now)
        dues.append(s.next_due)
        now = s.next_due
    assert [b - a for a, b in zip([0.0, *dues], dues, strict=False)] == [10, 20, 40, 60, 60, 60, 60]
    assert s.backoff_cap == 6


def test_backoff_cap_is_at_least_one_period() -> None:
    s = Schedule(period_s=600.0, anchor=0.0, backoff_max_s=300.0)
    for _ in range(4):
        s.failure(s.next_due)
    assert s.next_due == 4 * 600.0


def test_degraded_after_n_failures_then_recovery() -> None:
    s = Schedule(period_s=1.0, anchor=0.0, retries=2, degraded_after=3)
    assert s.state.value == "unknown"
    assert s.attempts == 3
    assert s.failure(0.1) == Transition(DeviceState.UNKNOWN, DeviceState.FAILING, 1)
    assert s.failure(1.1) is None
    assert s.state.value == "failing" and s.attempts == 3
    assert s.failure(3.1) == Transition(DeviceState.FAILING, DeviceState.DEGRADED, 3)
    assert s.attempts == 1  # a dead device gets one attempt per poll
    assert s.failure(7.1) is None
    assert s.success(15.1) == Transition(DeviceState.DEGRADED, DeviceState.OK, 0)
    assert (s.failures, s.attempts, s.next_due) == (0, 3, 16.0)


def test_next_due_picks_the_longest_overdue_device() -> None:
    a = Schedule(period_s=10.0, anchor=0.0)
    b = Schedule(period_s=5.0, anchor=0.0)
    assert next_due([a, b], 0.0) == (0, 0.0)  # tie: configuration order
    a.success(0.1)
    assert next_due([a, b], 0.2) == (1, 0.0)
    b.success(0.3)
    idx, wait = next_due([a, b], 0.3)
    assert idx is None and wait == pytest.approx(4.7)
    assert next_due([], 0.0) == (None, math.inf)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="period_s"):
        Schedule(period_s=0.0, anchor=0.0)
    with pytest.raises(ValueError, match="degraded_after"):
        Schedule(period_s=1.0, anchor=0.0, degraded_after=0)


@settings(max_examples=300, deadline=None)
@given(
    period=st.floats(0.05, 3600.0),
    anchor=st.floats(0.0, 1e6),
    outcomes=st.lists(st.tuples(st.booleans(), st.floats(0.0, 5.0)), min_size=1, max_size=40),
    degraded_after=st.integers(1, 6),
    backoff_max=st.floats(0.01, 10_000.0),
)
def test_schedule_properties(
    period: float,
    anchor: float,
    outcomes: list[tuple[bool, float]],
    degraded_after: int,
    backoff_max: float,
) -> None:
    s = Schedule(
        period_s=period,
        anchor=anchor,
        retries=2,
        backoff_max_s=backoff_max,
        degraded_after=degraded_after,
    )
    now = anchor
    run = 0
    for ok, late in outcomes:
        now = max(now, s.next_due) + late * period  # the poll ends ``late`` periods after due
        before = s.slot
        if ok:
            s.success(now)
            run = 0
        else:
            s.failure(now)
            run += 1
        # due times stay on the grid, in the future, and never go back
        assert s.next_due > now
        assert s.slot > before
        assert s.next_due == anchor + s.slot * period
        # the wait after a failure never exceeds the backoff (plus the slots it ran over)
        if not ok:
            cap = max(1, math.floor(backoff_max / period))
            assert s.slot - before <= min(2 ** (run - 1), cap) + math.floor(late) + 2
        expected = (
            DeviceState.OK
            if run == 0
            else DeviceState.DEGRADED
            if run >= degraded_after
            else DeviceState.FAILING
        )
        assert s.state is expected
        assert s.attempts == (1 if expected is DeviceState.DEGRADED else 3)


def test_due_now_moves_the_grid_to_now() -> None:
    s = Schedule(period_s=60.0, anchor=0.0)
    s.due_now(1000.5)
    assert s.next_due == 1000.5 and s.is_due(1000.5)
    s2 = Schedule(period_s=60.0, anchor=0.0, slot=3)
    s2.due_now(10.0)
    assert s2.next_due == 10.0

"""Per-device poll schedules on the monotonic clock: due times, backoff, degraded state.

Due times sit on a fixed grid ``anchor + k * period``: a poll that runs late does not push the
following ones back (no drift), and slots already missed when a poll finishes are skipped and
counted (:attr:`Schedule.missed`), never run back to back.

After the ``n``-th consecutive failed poll the next attempt waits ``min(2**(n-1), cap)`` periods,
``cap = max(1, floor(backoff_max_s / period))``: a failing device falls back exponentially but
stays on its grid, so it is back in step as soon as it answers. After ``degraded_after``
consecutive failures the device is degraded: it gets one attempt per poll instead of
``retries + 1`` (a dead device must not eat the bus time of the live ones). One successful poll
makes it ``ok`` again. The state changes are returned as :class:`Transition` values for the
caller to log.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DeviceState", "Schedule", "Transition", "next_due"]


class DeviceState(enum.StrEnum):
    UNKNOWN = "unknown"  # not polled yet
    OK = "ok"
    FAILING = "failing"  # failed polls, fewer than degraded_after in a row
    DEGRADED = "degraded"


@dataclass(frozen=True, slots=True)
class Transition:
    old: DeviceState
    new: DeviceState
    failures: int  # consecutive failed polls at the time of the change


@dataclass(slots=True)
class Schedule:
    """The poll schedule of one device. Times are seconds of the injected monotonic clock."""

    period_s: float
    anchor: float
    retries: int = 2
    backoff_max_s: float = 300.0
    degraded_after: int = 3
    slot: int = 0
    failures: int = 0
    state: DeviceState = DeviceState.UNKNOWN
    missed: int = 0

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"period_s must be positive, got {self.period_s}")
        if self.retries < 0 or self.degraded_after < 1 or not self.backoff_max_s > 0:
            raise ValueError("retries >= 0, degraded_after >= 1 and backoff_max_s > 0")

    @property
    def next_due(self) -> float:
        return self.anchor + self.slot * self.period_s

    def due_now(self, now: float) -> None:
        """Make the next poll due at ``now`` (the ``poll-now`` command); the period runs on
        from there."""
        self.anchor = now - self.slot * self.period_s

    def is_due(self, now: float) -> bool:
        return now >= self.next_due

    @property
    def attempts(self) -> int:
        """Attempts per request: ``retries + 1``, or 1 once degraded."""
        return 1 if self.state is DeviceState.DEGRADED else self.retries + 1

    @property
    def backoff_cap(self) -> int:
        return max(1, math.floor(self.backoff_max_s / self.period_s))

    @property
    def backoff_periods(self) -> int:
        """Periods until the next attempt after the current run of failures (1 when none)."""
        if self.failures == 0:
            return 1
        doubling: int = 1 << min(self.failures - 1, 62)
        return min(doubling, self.backoff_cap)

    def _advance(self, periods: int, now: float) -> None:
        self.slot += periods
        if self.next_due <= now:
            skip = math.floor((now - self.next_due) / self.period_s) + 1
            self.slot += skip
            self.missed += skip
            while self.next_due <= now:  # rounding at a slot boundary
                self.slot += 1
                self.missed += 1

    def _set(self, state: DeviceState) -> Transition | None:
        old = self.state
        self.state = state
        return None if old is state else Transition(old, state, self.failures)

    def success(self, now: float) -> Transition | None:
        """A poll that ended at ``now`` succeeded."""
        self.failures = 0
        self._advance(1, now)
        return self._set(DeviceState.OK)

    def failure(self, now: float) -> Transition | None:
        """A poll that ended at ``now`` failed (after its retries)."""
        self.failures += 1
        self._advance(self.backoff_periods, now)
        failing = self.failures >= self.degraded_after
        return self._set(DeviceState.DEGRADED if failing else DeviceState.FAILING)


def next_due(schedules: Sequence[Schedule], now: float) -> tuple[int | None, float]:
    """The index of the device to poll now (the one due longest), or None and the seconds
    until the earliest due time. Ties go to the first in the sequence."""
    if not schedules:
        return None, math.inf
    best = min(range(len(schedules)), key=lambda i: (schedules[i].next_due, i))
    due = schedules[best].next_due
    if due <= now:
        return best, 0.0
    return None, due - now

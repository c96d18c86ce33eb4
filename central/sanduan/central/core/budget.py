"""The per-station dead-letter budget (pure).

A station that sends garbage must not fill the centre's disk or drown its log: each station may
leave at most ``count`` dead letters and ``bytes`` of kept payload per hour. Past either, its
rejects are only counted (``stations.rejects_over_budget``), and the collector says so once per
hour and station. The hour is a fixed window starting at the first reject.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Budget:
    """Dead letters (``count``) and kept payload bytes (``bytes``) per station and hour."""

    count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Window:
    """What one station has spent in the hour starting at ``start_ms``; ``over``: rejects past
    the budget in it."""

    start_ms: int
    count: int = 0
    bytes: int = 0
    over: int = 0


def spend(window: Window | None, budget: Budget, now_ms: int, size: int) -> tuple[Window, bool]:
    """Charge one dead letter of ``size`` kept bytes; returns the new window and whether the
    dead letter may be recorded (``False``: only count it)."""
    if window is None or now_ms - window.start_ms >= HOUR_MS or now_ms < window.start_ms:
        window = Window(now_ms)
    if window.count + 1 > budget.count or window.bytes + size > budget.bytes:
        return Window(window.start_ms, window.count, window.bytes, window.over + 1), False
    return Window(window.start_ms, window.count + 1, window.bytes + size, window.over), True

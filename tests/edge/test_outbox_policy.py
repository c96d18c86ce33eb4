"""Pure buffer logic: local-time buckets, aggregates, space plans, alarm streaks, ranges, pacing."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

import numpy as np

from sanduan.edge.core.outbox_policy import (
    SpacePlan,
    StreakTracker,
    TokenBucket,
    aggregate,
    bucket_starts,
    coverage_days,
    intersect_ranges,
    normalise_ranges,
    plan_space,
    range_count,
)

SH = ZoneInfo("Asia/Shanghai")
JAN1_UTC = 1_767_225_600_000  # 2026-01-01T00:00Z = 08:00 in Shanghai
H = 3_600_000


def test_buckets_follow_shanghai_local_days() -> None:
    ts = np.array([JAN1_UTC + 15 * H + 1_800_000, JAN1_UTC + 16 * H - 1, JAN1_UTC + 16 * H])
    hour, day = bucket_starts(ts, SH)
    assert hour.tolist() == [JAN1_UTC + 15 * H, JAN1_UTC + 15 * H, JAN1_UTC + 16 * H]
    # Local midnight of 1 January is 2025-12-31T16:00Z; of 2 January 2026-01-01T16:00Z.
    assert day.tolist() == [JAN1_UTC - 8 * H, JAN1_UTC - 8 * H, JAN1_UTC + 16 * H]


def test_buckets_half_hour_zone_and_dst() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: local hours start at :30 UTC
    hour, day = bucket_starts(np.array([JAN1_UTC + 10 * 60_000]), kolkata)
    assert hour.tolist() == [JAN1_UTC - 30 * 60_000]
    assert day.tolist() == [JAN1_UTC - (5 * H + 30 * 60_000)]
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29 is 23 hours long in Berlin; both readings fall in it.
    d0 = 1_774_738_800_000  # 2026-03-28T23:00Z = 00:00 CET on 29 March
    _, day = bucket_starts(np.array([d0 + 1, d0 + 22 * H]), berlin)
    assert day.tolist() == [d0, d0]


def test_aggregate_counts_valid_values_only() -> None:
    starts = np.array([10, 10, 10, 20], dtype=np.int64)
    ids = np.array([0, 0, 1, 0], dtype=np.int64)
    values = np.array([1.0, math.nan, 5.0, 3.0])
    valid = np.array([True, True, False, True])
    rows = {(r.start_ms, r.code): r for r in aggregate(starts, ["a", "b"], ids, values, valid)}
    a10 = rows[(10, "a")]
    assert (a10.count, a10.valid, a10.vmin, a10.vmax, a10.vsum) == (2, 1, 1.0, 1.0, 1.0)
    b10 = rows[(10, "b")]
    assert (b10.count, b10.valid, b10.vmin, b10.vmax) == (1, 0, None, None)
    assert rows[(20, "a")].vsum == 3.0


def test_space_plan_acked_first_then_oldest_unacked() -> None:
    assert plan_space(900, 1000, rows=100, acked_rows=50) == SpacePlan()
    p = plan_space(1200, 1000, rows=100, acked_rows=50)  # 12 B/row, down to 900 B: 25 rows
    assert p == SpacePlan(acked=25, unacked=0)
    p = plan_space(1200, 1000, rows=100, acked_rows=10)
    assert p == SpacePlan(acked=10, unacked=15)
    assert plan_space(50_000, 1000, rows=10, acked_rows=0) == SpacePlan(acked=0, unacked=10)


def test_coverage_days() -> None:
    assert coverage_days(50.0, 1.0, 50 * 86_400) == 1.0
    assert coverage_days(50.0, 0.0, 10) is None


def test_streak_raises_once_and_clears() -> None:
    t = StreakTracker(target_class=3, threshold=3)
    codes = ["w21003"] * 7
    grades = [4, 5, 0, 4, 6, 4, 2]  # the 0 (not graded) neither extends nor ends the streak
    flags = ["N", "N", "N", "M", "N", "N", "N"]  # M does not count either
    changes = t.feed(codes, range(7), [1.2, 1.8, math.nan, 9.9, 2.5, 1.2, 0.4], flags, grades)
    assert [(c.raised, c.ts_ms, c.grade, c.streak) for c in changes] == [
        (True, 4, 6, 3),
        (False, 6, 2, 4),
    ]
    assert changes[0].values == (1.2, 1.8, 2.5)
    assert t.state == {}


def test_streaks_are_per_parameter() -> None:
    t = StreakTracker(target_class=2, threshold=2)
    out = t.feed(["a", "b", "a", "b"], [1, 2, 3, 4], [1.0] * 4, ["N"] * 4, [3, 3, 1, 3])
    assert [(c.code, c.raised) for c in out] == [("b", True)]


def test_ranges() -> None:
    assert normalise_ranges([(5, 6), (1, 2), (3, 4), (10, 12)]) == [(1, 6), (10, 12)]
    assert intersect_ranges([(1, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert range_count([(1, 10), (20, 20)]) == 11


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=2.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert b.wait_s(0.0) == 0.5
    assert b.take(0.5)

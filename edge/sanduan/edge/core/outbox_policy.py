"""Pure pieces of the store-and-forward buffer: time buckets and aggregates, the space policy,
alarm streaks, seq-range arithmetic and the send-rate limiter. No I/O here.

Aggregates are clock-aligned on the station's local time: an hour bucket starts at a local
``hh:00`` and a day bucket at local midnight; both are stored as the UTC ms of that instant.
Only *valid* readings (flag ``N`` or ``S`` with a value) count towards ``min``/``mean``/``max``;
``count`` counts every reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sanduan.shared.model import Flag

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

VALID_FLAGS: frozenset[str] = frozenset({Flag.N.value, Flag.S.value})
"""Flags whose values count towards aggregates (HJ 212: normal and manually set)."""

SeqRange = tuple[int, int]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# local-time buckets


def utc_offset_ms(ts_ms: int, tz: ZoneInfo) -> int:
    """The zone's UTC offset at the instant ``ts_ms``, in ms."""
    off = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz).utcoffset()
    return 0 if off is None else int(off / timedelta(milliseconds=1))


def _local_midnight_utc_ms(local_day_ms: int, tz: ZoneInfo) -> int:
    """UTC ms of local midnight of the local day that starts at ``local_day_ms`` (local ms)."""
    d = datetime(1970, 1, 1) + timedelta(milliseconds=local_day_ms)  # naive local time
    aware = d.replace(tzinfo=tz)
    return int(aware.timestamp() * 1000)


def bucket_starts(ts_ms: I64, tz: ZoneInfo) -> tuple[I64, I64]:
    """UTC start (ms) of the local hour and of the local day containing each time.

    Vectorised: the zone is consulted once per distinct UTC hour and per distinct local day,
    so a commit batch costs a handful of zoneinfo look-ups whatever its size.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    off = _per_bucket(ts // HOUR_MS, lambda h: utc_offset_ms(h * HOUR_MS, tz))
    local = ts + off
    hour_start = local - np.mod(local, HOUR_MS) - off
    local_day = local // DAY_MS
    day_utc = _per_bucket(local_day, lambda d: _local_midnight_utc_ms(d * DAY_MS, tz))
    return hour_start, day_utc


def _per_bucket(keys: I64, fn: Callable[[int], int]) -> I64:
    """``fn`` of each key, calling ``fn`` once per distinct key (keys are few and close)."""
    lo = int(keys.min())
    hi = int(keys.max())
    if hi - lo < 4096:
        table = np.array([fn(k) for k in range(lo, hi + 1)], dtype=np.int64)
        out: I64 = table[keys - lo]
        return out
    uniq, inv = np.unique(keys, return_inverse=True)
    vals = np.array([fn(int(k)) for k in uniq], dtype=np.int64)
    res: I64 = vals[inv.reshape(-1)]
    return res


@dataclass(frozen=True, slots=True)
class AggRow:
    """One (bucket, parameter) aggregate contribution; merged into stored rows by addition."""

    start_ms: int
    code: str
    count: int
    valid: int
    vmin: float | None
    vmax: float | None
    vsum: float


def aggregate(
    starts: I64, codes: Sequence[str], code_ids: I64, values: F64, valid: B1
) -> list[AggRow]:
    """Group readings by (bucket start, code id) and return one :class:`AggRow` per group.

    ``codes[i]`` is the name of code id ``i``; ``valid`` marks readings that count towards
    min/mean/max (NaN values never do).
    """
    n = starts.shape[0]
    if n == 0:
        return []
    ok = valid & ~np.isnan(values)
    width = max(len(codes), 1)
    key = starts * width + code_ids
    order = np.argsort(key, kind="stable")
    k = key[order]
    bounds = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    v = values[order]
    o = ok[order]
    vmin = np.minimum.reduceat(np.where(o, v, np.inf), bounds)
    vmax = np.maximum.reduceat(np.where(o, v, -np.inf), bounds)
    vsum = np.add.reduceat(np.where(o, v, 0.0), bounds)
    nvalid = np.add.reduceat(o.astype(np.int64), bounds)
    counts = np.diff(np.r_[bounds, n])
    out = []
    for j, b in enumerate(bounds):
        i = int(order[b])
        nv = int(nvalid[j])
        out.append(
            AggRow(
                start_ms=int(starts[i]),
                code=codes[int(code_ids[i])],
                count=int(counts[j]),
                valid=nv,
                vmin=float(vmin[j]) if nv else None,
                vmax=float(vmax[j]) if nv else None,
                vsum=float(vsum[j]),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# space policy


@dataclass(frozen=True, slots=True)
class SpacePlan:
    """What to delete to bring the buffer back under its budget.

    ``acked``: acknowledged readings to delete, oldest first. ``unacked``: unacknowledged raw
    readings to drop, oldest first; non-zero only when deleting every acknowledged reading is
    not enough. Aggregates are never deleted.
    """

    acked: int = 0
    unacked: int = 0

    @property
    def any(self) -> bool:
        return self.acked > 0 or self.unacked > 0


def plan_space(
    used_bytes: int,
    max_bytes: int,
    rows: int,
    acked_rows: int,
    *,
    low_water: float = 0.9,
    fixed_bytes: int = 0,
) -> SpacePlan:
    """How many rows to delete so that ``used_bytes`` falls to ``low_water * max_bytes``.

    ``fixed_bytes`` is what deleting readings cannot free (schema, aggregates, events); the cost
    of one reading is estimated as ``(used_bytes - fixed_bytes) / rows``. Nothing is planned
    while ``used_bytes <= max_bytes``: deleting in steps down to the low-water mark keeps the
    buffer from trimming a few rows on every commit.
    """
    if used_bytes <= max_bytes or rows <= 0:
        return SpacePlan()
    per_row = max(1.0, (used_bytes - fixed_bytes) / rows)
    excess = used_bytes - low_water * max_bytes
    need = min(rows, math.ceil(excess / per_row))
    if need <= acked_rows:
        return SpacePlan(acked=need)
    return SpacePlan(acked=acked_rows, unacked=need - acked_rows)


def coverage_days(bytes_per_reading: float, readings_per_s: float, max_bytes: int) -> float | None:
    """Days of readings ``max_bytes`` holds at the current rate; None when the rate is unknown."""
    if readings_per_s <= 0 or bytes_per_reading <= 0:
        return None
    return max_bytes / (bytes_per_reading * readings_per_s) / 86_400.0


# --------------------------------------------------------------------------------------------
# alarm streaks


@dataclass(slots=True)
class Streak:
    """State of one parameter: consecutive readings worse than target, and whether an alarm
    was raised for the current streak."""

    count: int = 0
    alarmed: bool = False
    values: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm to raise (``raised``) or to clear, for one parameter code."""

    code: str
    raised: bool
    ts_ms: int
    grade: int
    values: tuple[float, ...]
    streak: int


class StreakTracker:
    """Counts consecutive readings worse than the target class per parameter.

    A reading *counts* when it has a valid flag and a grade (1..6); graded-worse-than-target
    (grade > target) extends the streak, anything better ends it. Readings without a grade or
    with an invalid flag (maintenance, fault, calibration...) neither extend nor end a streak.
    The ``threshold``-th consecutive bad reading raises one alarm; the first good reading after
    an alarm clears it.
    """

    KEEP_VALUES = 16

    def __init__(self, target_class: int, threshold: int) -> None:
        self.target = target_class
        self.threshold = threshold
        self.state: dict[str, Streak] = {}

    def feed(
        self,
        codes: Sequence[str],
        ts_ms: Sequence[int],
        values: Sequence[float],
        flags: Sequence[str],
        grades: Sequence[int],
        *,
        valid: B1 | None = None,
    ) -> list[AlarmChange]:
        """Feed readings in seq order; returns the alarms raised and cleared, in that order.

        Vectorised first pass: when no reading is worse than the target and no streak is open
        (the normal case) this costs a few numpy operations whatever the batch size. ``valid``
        may pass the flag mask already computed by the caller.
        """
        n = len(codes)
        if n == 0:
            return []
        g = np.asarray(grades, dtype=np.int64)
        ok = np.fromiter((f in VALID_FLAGS for f in flags), np.bool_, n) if valid is None else valid
        counted = ok & (g > 0)
        bad = counted & (g > self.target)
        if not self.state and not bad.any():
            return []
        interesting = set(self.state)
        interesting.update(codes[i] for i in np.flatnonzero(bad).tolist())
        out: list[tuple[int, AlarmChange]] = []
        for i in np.flatnonzero(counted).tolist():
            code = codes[i]
            if code not in interesting:
                continue
            st = self.state.get(code)
            if bad[i]:
                if st is None:
                    st = self.state[code] = Streak()
                st.count += 1
                st.values.append(values[i])
                del st.values[: -self.KEEP_VALUES]
                if st.count >= self.threshold and not st.alarmed:
                    st.alarmed = True
                    ch = AlarmChange(code, True, ts_ms[i], int(g[i]), tuple(st.values), st.count)
                    out.append((i, ch))
            elif st is not None:
                if st.alarmed:
                    ch = AlarmChange(code, False, ts_ms[i], int(g[i]), (values[i],), st.count)
                    out.append((i, ch))
                del self.state[code]
        return [ch for _, ch in out]


# --------------------------------------------------------------------------------------------
# seq ranges


def normalise_ranges(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[SeqRange] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def range_count(ranges: Iterable[SeqRange]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def intersect_ranges(xs: Sequence[SeqRange], ys: Sequence[SeqRange]) -> list[SeqRange]:
    """Intersection of two normalised range lists."""
    out: list[SeqRange] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a = max(xs[i][0], ys[j][0])
        b = min(xs[i][1], ys[j][1])
        if a <= b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


# --------------------------------------------------------------------------------------------
# send pacing


@dataclass(slots=True)
class TokenBucket:
    """At most ``rate`` events per second on average, bursts of up to ``burst``.

    Times are seconds of a monotonic clock supplied by the caller.
    """

    rate: float
    burst: float
    tokens: float = 0.0
    last: float | None = None

    def _refill(self, now: float) -> None:
        if self.last is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

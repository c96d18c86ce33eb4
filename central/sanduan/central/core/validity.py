"""Local calendar periods and time means with data-validity rules.

Timestamps are UTC milliseconds; hours, days, months and years are local to the county's time
zone (a reading at 2026-05-31T16:30Z is June in Asia/Shanghai). Means are built bottom-up:

* hour: arithmetic mean of the hour's valid readings; valid when it rests on at least
  ``min_values_per_hour`` readings;
* day: mean of the day's valid hourly means; valid with ``min_hours_per_day`` valid hours
  (``min_values_per_day_4h`` for parameters measured every four hours);
* month: mean of the month's valid daily means (``month_basis = "daily-means"``, the default) or
  of the month's valid hourly values (``"values"``); valid with ``min_days_per_month`` valid days
  either way;
* year: mean of the year's valid monthly means; valid with ``min_months_per_year`` valid months.

A reading is valid when its value is a finite number inside the parameter's physical range and
its flag is not excluded (``M C D F B T`` by default). A valid value below the parameter's
detection limit counts as half the detection limit. Every mean carries ``n`` (sub-periods or
readings present), ``n_valid`` (those it rests on) and ``valid``; a mean below the detection
limit carries it (reported "DL+L", for example ``0.025L``).

Values and means are exact at the reporting precision (:mod:`sanduan.shared.precision`): each
reading is rounded to its parameter's decimals (GB/T 8170-2008, half to even), sums are taken
in integer units of the last decimal, and each mean is rounded once, half to even, to the same
decimals. A mean of 0.15 and 0.25 is 0.2, not 0.20000000000000004.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sanduan.shared.config import ValidityConfig
from sanduan.shared.errors import InputError, UnknownParameterError
from sanduan.shared.params import Parameter, all_parameters, by_code, resolve
from sanduan.shared.precision import describe, mean_scaled, round_to, to_units

HOUR_MS = 3_600_000
F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

DEFAULT_FOUR_HOURLY = frozenset({"CODMn", "NH3-N", "TP", "TN"})

PeriodKind = Literal["month", "year"]
MonthBasis = Literal["daily-means", "values"]
Level = Literal["hour", "day", "month", "year"]

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR_RE = re.compile(r"^(\d{4})$")

__all__ = [
    "Aggregates",
    "Calendar",
    "LevelMeans",
    "Mean",
    "Period",
    "SeriesData",
    "ValidityRules",
    "aggregate",
    "calendar",
    "group_readings",
]


# --- periods -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A settlement period: a local calendar month (``2026-05``) or year (``2026``)."""

    year: int
    month: int | None = None

    def __post_init__(self) -> None:
        if not 1900 <= self.year <= 9999:
            raise InputError(f"year {self.year} is out of range")
        if self.month is not None and not 1 <= self.month <= 12:
            raise InputError(f"month must be 1..12, got {self.month}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """``YYYY-MM`` for a month, ``YYYY`` for a year."""
        t = text.strip()
        m = _MONTH_RE.match(t)
        if m:
            return cls(int(m.group(1)), int(m.group(2)))
        y = _YEAR_RE.match(t)
        if y:
            return cls(int(y.group(1)))
        raise InputError(f"period {text!r}: expected YYYY-MM (a month) or YYYY (a year)")

    @property
    def kind(self) -> PeriodKind:
        return "year" if self.month is None else "month"

    @property
    def label(self) -> str:
        return f"{self.year:04d}" if self.month is None else f"{self.year:04d}-{self.month:02d}"

    def months(self) -> tuple[Period, ...]:
        """The months of the period (itself for a month)."""
        if self.month is not None:
            return (self,)
        return tuple(Period(self.year, m) for m in range(1, 13))

    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month or 1, 1)

    def end_day(self) -> dt.date:
        """The first day after the period."""
        if self.month is None:
            return dt.date(self.year + 1, 1, 1)
        if self.month == 12:
            return dt.date(self.year + 1, 1, 1)
        return dt.date(self.year, self.month + 1, 1)

    def bounds_ms(self, timezone: str) -> tuple[int, int]:
        """[start, end) of the period in UTC ms."""
        tz = ZoneInfo(timezone)
        return _local_midnight_ms(self.first_day(), tz), _local_midnight_ms(self.end_day(), tz)

    def __str__(self) -> str:
        return self.label


def _local_midnight_ms(day: dt.date, tz: ZoneInfo) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


@dataclass(frozen=True, slots=True, eq=False)
class Calendar:
    """Hour, day and month boundaries of a period in UTC ms.

    ``hours`` has H+1 boundaries (hour ``h`` is ``[hours[h], hours[h+1])``), likewise ``days``
    and ``months``. ``hour_day[h]`` is the day of hour ``h``; ``day_month[d]`` the month of day
    ``d``; ``day_labels`` and ``month_labels`` the local dates.
    """

    period: Period
    timezone: str
    hours: I8
    days: I8
    months: I8
    hour_day: I8
    day_month: I8
    day_labels: tuple[str, ...]
    month_labels: tuple[str, ...]

    @property
    def start_ms(self) -> int:
        return int(self.hours[0])

    @property
    def end_ms(self) -> int:
        return int(self.hours[-1])

    def hour_index(self, ts_ms: I8) -> I8:
        """Hour of each timestamp, -1 outside the period."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        idx = np.floor_divide(ts - self.start_ms, HOUR_MS)
        idx[(ts < self.start_ms) | (ts >= self.end_ms)] = -1
        return idx


def calendar(period: Period, timezone: str) -> Calendar:
    """The local calendar of ``period`` in ``timezone`` (an IANA name)."""
    tz = ZoneInfo(timezone)
    day = period.first_day()
    end = period.end_day()
    day_starts: list[int] = []
    day_labels: list[str] = []
    day_month: list[int] = []
    month_starts: list[int] = []
    month_labels: list[str] = []
    while day < end:
        if day.day == 1:
            month_starts.append(_local_midnight_ms(day, tz))
            month_labels.append(f"{day.year:04d}-{day.month:02d}")
        day_starts.append(_local_midnight_ms(day, tz))
        day_labels.append(day.isoformat())
        day_month.append(len(month_starts) - 1)
        day += dt.timedelta(days=1)
    end_ms = _local_midnight_ms(end, tz)
    day_starts.append(end_ms)
    month_starts.append(end_ms)
    hours = np.arange(day_starts[0], end_ms + 1, HOUR_MS, dtype=np.int64)
    if hours[-1] != end_ms:  # a zone whose offsets change by less than an hour
        hours = np.append(hours[hours < end_ms], end_ms)
    days = np.asarray(day_starts, dtype=np.int64)
    hour_day = np.searchsorted(days, hours[:-1], side="right").astype(np.int64) - 1
    return Calendar(
        period,
        timezone,
        hours,
        days,
        np.asarray(month_starts, dtype=np.int64),
        hour_day,
        np.asarray(day_month, dtype=np.int64),
        tuple(day_labels),
        tuple(month_labels),
    )


# --- validity rules ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidityRules:
    """Thresholds of :class:`~sanduan.shared.config.ValidityConfig` plus the county's monitoring
    facts: which parameters are measured every four hours and their detection limits."""

    min_values_per_hour: int = 1
    min_hours_per_day: int = 20
    min_values_per_day_4h: int = 3
    min_days_per_month: int = 20
    min_months_per_year: int = 9
    excluded_flags: frozenset[str] = frozenset({"M", "C", "D", "F", "B", "T"})
    four_hourly: frozenset[str] = DEFAULT_FOUR_HOURLY
    detection_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    month_basis: MonthBasis = "daily-means"

    @classmethod
    def build(
        cls,
        config: ValidityConfig | None = None,
        *,
        four_hourly: Iterable[str] | None = None,
        detection_limits: Mapping[str, float] | None = None,
    ) -> ValidityRules:
        c = config or ValidityConfig()
        # The registry's default detection limits, overridden by the county's.
        dls = {p.name: p.detection_limit for p in all_parameters() if p.detection_limit}
        dls.update({resolve(k).name: float(v) for k, v in (detection_limits or {}).items()})
        four = (
            DEFAULT_FOUR_HOURLY
            if four_hourly is None
            else frozenset(resolve(n).name for n in four_hourly)
        )
        return cls(
            c.min_values_per_hour,
            c.min_hours_per_day,
            c.min_values_per_day_4h,
            c.min_days_per_month,
            c.min_months_per_year,
            frozenset(c.excluded_flags),
            four,
            MappingProxyType(dls),
            c.month_basis,
        )

    def min_per_day(self, parameter: str) -> int:
        return (
            self.min_values_per_day_4h if parameter in self.four_hourly else self.min_hours_per_day
        )

    def describe(self) -> dict[str, Any]:
        return {
            "min_values_per_hour": self.min_values_per_hour,
            "min_hours_per_day": self.min_hours_per_day,
            "min_values_per_day_4h": self.min_values_per_day_4h,
            "min_days_per_month": self.min_days_per_month,
            "min_months_per_year": self.min_months_per_year,
            "excluded_flags": sorted(self.excluded_flags),
            "four_hourly": sorted(self.four_hourly),
            "detection_limits": dict(self.detection_limits),
            "month_basis": self.month_basis,
        }


# --- input: readings grouped into series ---------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SeriesData:
    """Readings in CSR form: series ``i`` (station ``keys[i][0]``, parameter ``keys[i][1]``)
    owns rows ``offsets[i]:offsets[i+1]`` of ``ts_ms``, ``values`` and ``excluded`` (flag in
    the excluded set)."""

    keys: tuple[tuple[str, str], ...]
    offsets: I8
    ts_ms: I8
    values: F8
    flags: npt.NDArray[Any]

    def __len__(self) -> int:
        return len(self.keys)


def _param_of_code(code: str, cache: dict[str, Parameter | None]) -> Parameter | None:
    if code not in cache:
        try:
            cache[code] = by_code(code)
        except UnknownParameterError:
            try:
                cache[code] = resolve(code)
            except UnknownParameterError:
                cache[code] = None
    return cache[code]


def _str_column(col: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    arr = np.asarray(col)
    if arr.dtype.kind != "U":
        arr = arr.astype(str)
    return arr.reshape(-1)


def group_readings(
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
    stations: Iterable[str] | None = None,
) -> SeriesData:
    """Group store columns (``station``, ``ts_ms``, ``code``, ``value``, ``flag``; other columns
    ignored) into series. Rows of unknown stations (when ``stations`` is given) and of codes the
    parameter registry does not know are dropped. A ``value`` of None is NaN; a ``flag`` of
    None is ``N``."""
    for col in ("station", "ts_ms", "code", "value"):
        if col not in columns:
            raise InputError(f"readings need a {col!r} column")
    station = _str_column(columns["station"])
    code = _str_column(columns["code"])
    n = len(station)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64).reshape(-1)
    raw_values = columns["value"]
    if isinstance(raw_values, np.ndarray) and raw_values.dtype != object:
        values = raw_values.astype(np.float64, copy=False).reshape(-1)
    else:
        values = np.asarray([np.nan if v is None else v for v in raw_values], dtype=np.float64)
    flag_col = columns.get("flag")
    flags: npt.NDArray[Any]
    if flag_col is None:
        flags = np.full(n, "N", dtype="<U1")
    elif isinstance(flag_col, np.ndarray) and flag_col.dtype.kind == "U":
        flags = flag_col.astype("<U1", copy=False)
    else:
        flags = np.asarray(["N" if f is None else str(f) for f in flag_col], dtype="<U1")
    if not (len(code) == n == len(ts) == len(values) == len(flags)):
        raise InputError("reading columns have different lengths")
    if n == 0:
        return SeriesData((), np.zeros(1, np.int64), ts, values, flags)
    # The store returns rows ordered by station, code, ts: check that, sort only if not.
    change = np.r_[True, (station[1:] != station[:-1]) | (code[1:] != code[:-1])]
    starts = np.flatnonzero(change)
    run_keys = list(zip(station[starts].tolist(), code[starts].tolist(), strict=True))
    in_order = bool(np.all((np.diff(ts) >= 0) | change[1:])) and len(set(run_keys)) == len(run_keys)
    if not in_order:
        _, st_id = np.unique(station, return_inverse=True)
        _, cd_id = np.unique(code, return_inverse=True)
        order = np.lexsort((ts, cd_id, st_id))
        station, code = station[order], code[order]
        ts, values, flags = ts[order], values[order], flags[order]
        change = np.r_[True, (station[1:] != station[:-1]) | (code[1:] != code[:-1])]
        starts = np.flatnonzero(change)
    bounds = np.r_[starts, n]
    wanted = None if stations is None else set(stations)
    cache: dict[str, Parameter | None] = {}
    keys: list[tuple[str, str]] = []
    pieces: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(bounds):
        st = str(station[a])
        p = _param_of_code(str(code[a]), cache)
        if p is None or (wanted is not None and st not in wanted):
            continue
        keys.append((st, p.name))
        pieces.append((int(a), int(b)))
    if len(pieces) == len(starts):
        offsets = np.asarray(bounds, dtype=np.int64)
        return SeriesData(tuple(keys), offsets, ts, values, flags)
    idx = (
        np.concatenate([np.arange(a, b) for a, b in pieces])
        if pieces
        else np.zeros(0, dtype=np.int64)
    )
    lens = np.asarray([b - a for a, b in pieces], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    return SeriesData(tuple(keys), offsets, ts[idx], values[idx], flags[idx])


# --- output: means per level ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mean:
    """One period mean: ``value`` None when nothing valid; ``n`` sub-periods (readings for an
    hour) present, ``n_valid`` those the mean rests on."""

    value: float | None
    n: int
    n_valid: int
    valid: bool
    min: float | None = None
    max: float | None = None
    below_dl: float | None = None
    """The detection limit, when the mean is below it (reported as ``f"{dl}L"``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "n": self.n,
            "n_valid": self.n_valid,
            "valid": self.valid,
        }
        if self.below_dl is not None:
            out["below_dl"] = self.below_dl
        return out

    def reported(self, decimals: int) -> str:
        """The mean as a report shows it: ``DL+L`` below the detection limit, else the value
        with ``decimals`` places; ``-`` when there is none."""
        if self.value is None:
            return "-"
        if self.below_dl is not None:
            return f"{describe(self.below_dl)}L"
        return f"{self.value:.{decimals}f}"


@dataclass(frozen=True, slots=True, eq=False)
class LevelMeans:
    """Means of every series at one level: arrays of shape (series, periods of the level)."""

    level: Level
    starts: I8
    mean: F8
    min: F8
    max: F8
    n: I8
    n_valid: I8
    valid: B1
    dl: F8 | None = None
    """Detection limit per series (0: none)."""

    def at(self, series: int, j: int) -> Mean:
        v = float(self.mean[series, j])
        lo = float(self.min[series, j])
        hi = float(self.max[series, j])
        dl = 0.0 if self.dl is None else float(self.dl[series])
        return Mean(
            None if np.isnan(v) else v,
            int(self.n[series, j]),
            int(self.n_valid[series, j]),
            bool(self.valid[series, j]),
            None if np.isnan(lo) else lo,
            None if np.isnan(hi) else hi,
            dl if dl > 0 and not np.isnan(v) and v < dl else None,
        )


@dataclass(frozen=True, slots=True, eq=False)
class Aggregates:
    """Hourly, daily, monthly (and for a year, annual) means of every series of a period."""

    calendar: Calendar
    keys: tuple[tuple[str, str], ...]
    hour: LevelMeans
    day: LevelMeans
    month: LevelMeans
    year: LevelMeans | None
    rules: ValidityRules

    def index(self) -> dict[tuple[str, str], int]:
        return {k: i for i, k in enumerate(self.keys)}

    def period_level(self) -> LevelMeans:
        """The level of the whole period: ``month`` for a month, ``year`` for a year."""
        return self.year if self.year is not None else self.month

    def levels(self) -> tuple[LevelMeans, ...]:
        out = (self.hour, self.day, self.month)
        return out if self.year is None else (*out, self.year)


def _group_mean(
    values: F8,
    valid: B1,
    bins: I8,
    nbins: int,
    present_bins: I8 | None = None,
    *,
    decimals: I8,
) -> tuple[F8, F8, F8, I8, I8]:
    """Mean, min, max, n (all present) and n_valid per bin over flat arrays. ``values`` are
    rounded to ``decimals[bin]`` places; means are exact, rounded once half to even."""
    n = np.bincount(bins if present_bins is None else present_bins, minlength=nbins).astype(
        np.int64
    )
    vb = bins[valid]
    vv = values[valid]
    n_valid = np.bincount(vb, minlength=nbins).astype(np.int64)
    total = np.bincount(vb, weights=to_units(vv, decimals[vb]), minlength=nbins)
    mean = mean_scaled(total, n_valid, decimals)
    lo = np.full(nbins, np.nan)
    hi = np.full(nbins, np.nan)
    if vb.size:
        if np.any(vb[1:] < vb[:-1]):
            o = np.argsort(vb, kind="stable")
            vb, vv = vb[o], vv[o]
        starts = np.flatnonzero(np.r_[True, vb[1:] != vb[:-1]])
        ids = vb[starts]
        lo[ids] = np.minimum.reduceat(vv, starts)
        hi[ids] = np.maximum.reduceat(vv, starts)
    return mean, lo, hi, n, n_valid


def _roll_up(
    lower: LevelMeans,
    *,
    parent: I8,
    nparent: int,
    level: Level,
    starts: I8,
    minimum: npt.ArrayLike,
    decimals: I8,
) -> LevelMeans:
    """Means of valid lower-level means, grouped by ``parent`` (lower index -> parent index);
    ``decimals`` per series."""
    s = lower.mean.shape[0]
    bins = (np.arange(s, dtype=np.int64)[:, None] * nparent + parent[None, :]).reshape(-1)
    present = (lower.n > 0).reshape(-1)
    ok = lower.valid.reshape(-1)
    mean, lo, hi, n, n_valid = _group_mean(
        np.nan_to_num(lower.mean.reshape(-1)),
        ok,
        bins,
        s * nparent,
        bins[present],
        decimals=np.repeat(decimals, nparent),
    )
    shape = (s, nparent)
    n2 = n.reshape(shape)
    nv2 = n_valid.reshape(shape)
    need = np.broadcast_to(np.asarray(minimum, dtype=np.int64).reshape(-1, 1), shape)
    return LevelMeans(
        level,
        starts,
        mean.reshape(shape),
        lo.reshape(shape),
        hi.reshape(shape),
        n2,
        nv2,
        nv2 >= need,
        lower.dl,
    )


def _month_of_values(hour: LevelMeans, cal: Calendar, month: LevelMeans, dec: I8) -> LevelMeans:
    """``month`` with its means replaced by means of the month's valid hourly values (validity,
    n and n_valid still counted in days)."""
    s = hour.mean.shape[0]
    nm = month.mean.shape[1]
    parent = cal.day_month[cal.hour_day]
    bins = (np.arange(s, dtype=np.int64)[:, None] * nm + parent[None, :]).reshape(-1)
    mean, lo, hi, _, _ = _group_mean(
        np.nan_to_num(hour.mean.reshape(-1)),
        hour.valid.reshape(-1),
        bins,
        s * nm,
        decimals=np.repeat(dec, nm),
    )
    shape = (s, nm)
    return LevelMeans(
        "month",
        month.starts,
        mean.reshape(shape),
        lo.reshape(shape),
        hi.reshape(shape),
        month.n,
        month.n_valid,
        month.valid,
        month.dl,
    )


def aggregate(series: SeriesData, cal: Calendar, rules: ValidityRules) -> Aggregates:
    """Hourly, daily, monthly and (for a year) annual means of every series over ``cal``."""
    s_count = len(series)
    nh = len(cal.hours) - 1
    lens = np.diff(series.offsets)
    sid = np.repeat(np.arange(s_count, dtype=np.int64), lens)
    hour = cal.hour_index(series.ts_ms)
    inside = hour >= 0
    values = series.values
    valid = inside & np.isfinite(values)
    if rules.excluded_flags:
        valid &= ~np.isin(series.flags, sorted(rules.excluded_flags))
    # Physical range and detection limit, per series.
    lo_phys = np.empty(s_count)
    hi_phys = np.empty(s_count)
    dl = np.zeros(s_count)
    dec = np.zeros(s_count, dtype=np.int64)
    for i, (_, pname) in enumerate(series.keys):
        p = resolve(pname)
        lo_phys[i], hi_phys[i] = p.physical_min, p.physical_max
        dl[i] = rules.detection_limits.get(p.name, 0.0)
        dec[i] = p.decimals
    if s_count:
        with np.errstate(invalid="ignore"):
            valid &= (values >= lo_phys[sid]) & (values <= hi_phys[sid])
        if np.any(dl > 0):
            dlv = dl[sid]
            below = valid & (values < dlv)
            if np.any(below):
                values = values.copy()
                values[below] = dlv[below] / 2.0
        values = round_to(values, dec[sid])
    bins = sid * nh + np.where(inside, hour, 0)
    hmean, hlo, hhi, hn, hnv = _group_mean(
        values, valid, bins, s_count * nh, bins[inside], decimals=np.repeat(dec, nh)
    )
    shape = (s_count, nh)
    hn2 = hn.reshape(shape)
    hnv2 = hnv.reshape(shape)
    hour_level = LevelMeans(
        "hour",
        cal.hours[:-1],
        hmean.reshape(shape),
        hlo.reshape(shape),
        hhi.reshape(shape),
        hn2,
        hnv2,
        hnv2 >= rules.min_values_per_hour,
        dl,
    )
    per_day = np.asarray([rules.min_per_day(p) for _, p in series.keys], dtype=np.int64)
    nd = len(cal.days) - 1
    day_level = _roll_up(
        hour_level,
        parent=cal.hour_day,
        nparent=nd,
        level="day",
        starts=cal.days[:-1],
        minimum=per_day,
        decimals=dec,
    )
    nm = len(cal.months) - 1
    month_level = _roll_up(
        day_level,
        parent=cal.day_month,
        nparent=nm,
        level="month",
        starts=cal.months[:-1],
        minimum=rules.min_days_per_month,
        decimals=dec,
    )
    if rules.month_basis == "values":
        month_level = _month_of_values(hour_level, cal, month_level, dec)
    year_level = None
    if cal.period.kind == "year":
        year_level = _roll_up(
            month_level,
            parent=np.zeros(nm, dtype=np.int64),
            nparent=1,
            level="year",
            starts=cal.months[:1],
            minimum=rules.min_months_per_year,
            decimals=dec,
        )
    return Aggregates(cal, series.keys, hour_level, day_level, month_level, year_level, rules)

"""What a station sends a platform over HJ 212-2017, without I/O (pure).

* **Flags**: sanduan's data flags are HJ 212's letters (N F M S D C T B), sent as they are; a
  value sanduan found impossible is already flagged D.
* **Real-time data (CN 2011)**: buffered readings in seq order, one packet per measurement time
  (a new packet also when a factor repeats); ``Rtd`` and ``Flag``, ``Flag`` only for a missing
  value.
* **Minute data (CN 2051)**: readings grouped by minute (``DataTime`` = the minute's start):
  ``Min``, ``Avg``, ``Max`` over the valid values (flag N or S), ``Flag`` N if there is one,
  else the flag of the minute's last reading. A minute is sent once a reading of a later minute
  is buffered, or when the minute is ``settle_ms`` old.
* **Hourly (2061) and daily (2031) data**: the buffer's aggregates (kept for ever), sent once
  the period has ended and ``settle_ms`` passed: ``Min``, ``Avg``, ``Max``, ``Flag`` N with a
  valid value, else ``Flag=D`` and no value (sanduan keeps counts, not flags, per period). A
  period whose aggregate gains a valid reading after it was sent (an analyzer's result read
  after the hour) is sent again with the same data time, only the factors that changed,
  within a window of recent periods.
* **Cursors**: each kind of data has a position per platform: the last seq sent (real-time and
  minute data, held in the buffer until every platform is past it) or the start of the last
  period sent (hourly and daily). A packet carries the position it completes; the position
  advances when the platform's 9014 arrives.
* **Clock**: the platform's set-time (1012) is kept as an offset to the system clock, applied to
  QNs and time answers; data keep their measurement times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sanduan.shared.hj212.codec import (
    CN_DAILY,
    CN_HOURLY,
    CN_MINUTE,
    CN_REALTIME,
    FactorData,
    Packet,
    data_packet,
    format_number,
    split,
)
from sanduan.shared.model import Flag

KIND_CN = {"realtime": CN_REALTIME, "minute": CN_MINUTE, "hourly": CN_HOURLY, "daily": CN_DAILY}
CN_KIND = {v: k for k, v in KIND_CN.items()}
RAW_KINDS = ("realtime", "minute")
"""Kinds sent from raw readings: their cursors hold readings in the buffer."""
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

Row = tuple[int, int, str, float | None, str]
"""A buffered reading: (seq, ts_ms, code, value or None, flag)."""

AggRowT = tuple[int, str, int, int, float | None, float | None, float]
"""An aggregate row: (start_ms, code, n, n_valid, vmin, vmax, vsum)."""

_VALID = frozenset({"N", "S"})


def hj212_flag(flag: str) -> str:
    """The HJ 212 flag of a sanduan flag (the same letter; ValueError for anything else)."""
    return Flag(flag).value


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A packet to send (its parts, if it had to be split: they share one QN and one 9014),
    the kind it belongs to and the cursor position its 9014 completes."""

    kind: str
    parts: tuple[Packet, ...]
    pos: int
    counts: tuple[tuple[str, int], ...] = ()
    """For a period: (code, valid readings aggregated) of what it carries, so that a period
    whose aggregate gains a valid reading later (a late analyzer result) is sent again."""

    @property
    def qn(self) -> str:
        return self.parts[0].qn


def local_time(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)


def local_ms(dt: datetime, tz: ZoneInfo) -> int:
    return int(dt.replace(tzinfo=tz).timestamp() * 1000)


QnFn = Callable[[], str]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the station is to one platform."""

    mn: str
    pw: str
    st: str


def _value_fields(name: str, value: float | None, flag: str) -> tuple[tuple[str, str], ...]:
    if value is None or math.isnan(value):
        return (("Flag", hj212_flag(flag)),)
    return ((name, format_number(value)), ("Flag", hj212_flag(flag)))


def _packets(
    ident: Identity, cn: str, t: datetime, factors: list[FactorData], qn: QnFn
) -> tuple[Packet, ...]:
    p = data_packet(
        cn=cn, qn=qn(), mn=ident.mn, pw=ident.pw, st=ident.st, data_time=t, factors=factors
    )
    return tuple(split(p))


def realtime(rows: Sequence[Row], ident: Identity, tz: ZoneInfo, qn: QnFn) -> list[Outgoing]:
    """Real-time packets for ``rows`` (seq order); each completes the seq of its last row."""
    out: list[Outgoing] = []
    group: list[Row] = []

    def flush() -> None:
        if not group:
            return
        factors = [FactorData(code, _value_fields("Rtd", v, f)) for _, _, code, v, f in group]
        parts = _packets(ident, CN_REALTIME, local_time(group[0][1], tz), factors, qn)
        out.append(Outgoing("realtime", parts, group[-1][0]))
        group.clear()

    for row in rows:
        if group and (row[1] != group[0][1] or any(r[2] == row[2] for r in group)):
            flush()
        group.append(row)
    flush()
    return out


def minute(
    rows: Sequence[Row],
    ident: Identity,
    tz: ZoneInfo,
    qn: QnFn,
    *,
    now_ms: int,
    settle_ms: int = MINUTE_MS,
) -> list[Outgoing]:
    """Minute packets for the complete minutes of ``rows`` (seq order). A minute is complete
    when a later row belongs to a later minute, or it ended ``settle_ms`` before ``now_ms``."""
    out: list[Outgoing] = []
    i = 0
    while i < len(rows):
        start = rows[i][1] - rows[i][1] % MINUTE_MS
        j = i
        while j < len(rows) and rows[j][1] - rows[j][1] % MINUTE_MS == start:
            j += 1
        if j == len(rows) and start + MINUTE_MS + settle_ms > now_ms:
            break  # the minute may still grow
        group = rows[i:j]
        by_code: dict[str, list[Row]] = {}
        for r in group:
            by_code.setdefault(r[2], []).append(r)
        factors = [FactorData(code, _stats_fields(rs)) for code, rs in by_code.items()]
        parts = _packets(ident, CN_MINUTE, local_time(start, tz), factors, qn)
        out.append(Outgoing("minute", parts, group[-1][0]))
        i = j
    return out


def _stats_fields(rows: Iterable[Row]) -> tuple[tuple[str, str], ...]:
    rs = list(rows)
    vals = [r[3] for r in rs if r[4] in _VALID and r[3] is not None and not math.isnan(r[3])]
    if not vals:
        return (("Flag", hj212_flag(rs[-1][4])),)
    return (
        ("Min", format_number(min(vals))),
        ("Avg", format_number(sum(vals) / len(vals))),
        ("Max", format_number(max(vals))),
        ("Flag", "N"),
    )


def _agg_fields(row: AggRowT) -> tuple[tuple[str, str], ...]:
    _, _, _n, n_valid, vmin, vmax, vsum = row
    if n_valid <= 0 or vmin is None or vmax is None:
        return (("Flag", "D"),)
    return (
        ("Min", format_number(vmin)),
        ("Avg", format_number(vsum / n_valid)),
        ("Max", format_number(vmax)),
        ("Flag", "N"),
    )


def periods(
    kind: str, rows: Sequence[AggRowT], ident: Identity, tz: ZoneInfo, qn: QnFn
) -> list[Outgoing]:
    """Hourly or daily packets, one data time each, from aggregate rows ordered by start."""
    cn = KIND_CN[kind]
    out: list[Outgoing] = []
    by_start: dict[int, list[AggRowT]] = {}
    for r in rows:
        by_start.setdefault(r[0], []).append(r)
    for start, rs in sorted(by_start.items()):
        factors = [FactorData(r[1], _agg_fields(r)) for r in rs]
        parts = _packets(ident, cn, local_time(start, tz), factors, qn)
        out.append(Outgoing(kind, parts, start, tuple((r[1], r[3]) for r in rs)))
    return out


def period_ms(kind: str) -> int:
    return HOUR_MS if kind == "hourly" else 24 * HOUR_MS


class QnClock:
    """QNs from the station's clock plus the platform's offset, strictly increasing."""

    def __init__(self, now_ms: Callable[[], int], tz: ZoneInfo) -> None:
        self._now = now_ms
        self.tz = tz
        self.offset_ms = 0
        self._last = 0

    def now_ms(self) -> int:
        """The station's time as the platform wants it (system clock + recorded offset)."""
        return self._now() + self.offset_ms

    def __call__(self) -> str:
        ms = max(self.now_ms(), self._last + 1)
        self._last = ms
        dt = local_time(ms, self.tz)
        return dt.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"

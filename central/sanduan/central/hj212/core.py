"""What the collector does with an HJ 212 logger's packets, without I/O (pure).

* **Readings.** A data upload becomes readings of the logger's station: the value is ``Rtd``
  for real-time data (CN 2011) and ``Avg`` for minute, hourly and daily data; the flag is the
  packet's data flag (the same letters as sanduan's flags); a factor without a value is stored
  as missing (NaN) with its flag. Factor codes the parameter registry does not know are left
  out and reported. The time is the packet's ``DataTime``, the station's local time.
* **Seqs.** A logger has no reading sequence numbers, so each reading gets a seq derived from
  what identifies it, ``-(data time in s * 100000 + the factor's number)`` (``w21003`` -> 21003):
  negative, so it never meets an MQTT station's seqs, and the same for the same (station,
  parameter, data time), so the store's (station, seq) key deduplicates resent data.
* **Gaps.** Hourly data is expected every hour: when an hourly upload comes more than an hour
  after the last one seen (or, the first time, after the last reading stored), the hours in
  between are asked for again with a history request (CN 2061, BeginTime/EndTime).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sanduan.shared.errors import Hj212Error, UnknownParameterError
from sanduan.shared.hj212.codec import (
    CN_DAILY,
    CN_HOURLY,
    CN_MINUTE,
    CN_REALTIME,
    DataUpload,
)
from sanduan.shared.model import Flag, Reading
from sanduan.shared.params import by_code
from sanduan.shared.wire import Batch

KIND_OF_CN = {CN_REALTIME: "realtime", CN_MINUTE: "minute", CN_HOURLY: "hourly", CN_DAILY: "daily"}
HOUR = timedelta(hours=1)
MIN_TIME_MS = 946_684_800_000
"""2000-01-01: data stamped earlier is not plausible (and would break the seq scheme)."""


def reading_seq(code: str, ts_ms: int) -> int:
    """The seq of a logger's reading of ``code`` at ``ts_ms`` (see the module docstring)."""
    return -((ts_ms // 1000) * 100_000 + int(code[1:]))


def local_ms(dt: datetime, tz: ZoneInfo) -> int:
    """Milliseconds since the epoch of a naive local time in ``tz``."""
    return int(dt.replace(tzinfo=tz).timestamp() * 1000)


def local_time(ms: int, tz: ZoneInfo) -> datetime:
    """The naive local time in ``tz`` of ``ms`` since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Mapped:
    """Readings of one upload, and the factor codes left out because the registry does not
    know them."""

    readings: tuple[Reading, ...]
    unknown: tuple[str, ...]


def _known(code: str) -> bool:
    try:
        by_code(code)
    except UnknownParameterError:
        return False
    return True


def map_upload(up: DataUpload, tz: ZoneInfo, now_ms: int, max_future_ms: int) -> Mapped:
    """Readings of a data upload; Hj212Error if its time is implausible."""
    ts = local_ms(up.data_time, tz)
    if ts < MIN_TIME_MS:
        raise Hj212Error(f"DataTime {up.data_time:%Y%m%d%H%M%S} is before 2000")
    if ts > now_ms + max_future_ms:
        raise Hj212Error(
            f"DataTime {up.data_time:%Y%m%d%H%M%S} is {(ts - now_ms) / 1000:.0f} s ahead of the"
            " collector's clock; check the logger's clock"
        )
    field_name = "Rtd" if up.cn == CN_REALTIME else "Avg"
    readings: list[Reading] = []
    unknown: list[str] = []
    for f in up.factors:
        if not _known(f.code):
            unknown.append(f.code)
            continue
        value = f.number(field_name)
        flag = Flag(f.flag)
        readings.append(Reading(reading_seq(f.code, ts), ts, f.code, value, flag))
    readings.sort(key=lambda r: r.seq)
    return Mapped(tuple(readings), tuple(unknown))


def to_batch(station: str, readings: Iterable[Reading], created_ms: int) -> Batch:
    """The readings as a batch (batch_seq 0: a logger has no batches)."""
    rs = list(readings)
    return Batch.from_columns(
        station,
        0,
        created_ms,
        seq=[r.seq for r in rs],
        ts_ms=[r.ts_ms for r in rs],
        code=[r.code for r in rs],
        values=[r.value for r in rs],
        flags=[r.flag for r in rs],
        grades=[r.grade for r in rs],
    )


@dataclass
class HourlyGaps:
    """The last hourly data time seen per station, and the ranges to ask for again."""

    max_back: timedelta
    last: dict[str, datetime] = field(default_factory=dict)

    def known(self, station: str) -> bool:
        return station in self.last

    def seed(self, station: str, last_stored: datetime | None) -> None:
        """The last time stored for ``station`` before this process saw it (``None``: none)."""
        if station not in self.last and last_stored is not None:
            hour = last_stored.replace(minute=0, second=0, microsecond=0)
            self.last[station] = hour

    def seen(self, station: str, t: datetime) -> tuple[datetime, datetime] | None:
        """Record hourly data at ``t``; returns ``(begin, end)`` of missing hours, if any."""
        prev = self.last.get(station)
        if prev is not None and t <= prev:
            return None  # history being filled in, or a repeat
        self.last[station] = t
        if prev is None:
            return None
        begin, end = prev + HOUR, t - HOUR
        begin = max(begin, t - self.max_back)
        if begin > end:
            return None
        return begin, end

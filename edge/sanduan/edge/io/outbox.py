"""The station's durable buffer: every reading, its sequence number, grade and aggregates, in
one SQLite file (WAL).

Guarantees (see docs/edge-buffer.md):

- A reading gets its seq in the same transaction that stores it. Seqs come from a counter in
  ``meta`` committed with the readings, so a seq is never reused: not after deletes, not after
  a crash or a restart.
- Nothing unacknowledged is deleted, except by the explicit space policy when the file is over
  ``max_bytes``: acknowledged readings go first (oldest first), unacknowledged raw readings
  only as a last resort (oldest first, logged, counted in ``meta.dropped``). Hourly and daily
  aggregates are never deleted.
- Grades, aggregates, alarm streak state and alarm events are written in the same transaction
  as the readings they come from.
- A value whose (device, code, measurement time) equals the last one committed for that
  (device, code) is a repeat (an analyzer's unchanged result read again, after a restart too)
  and is not stored again: the last time per (device, code) is committed with the readings.
- A value outside its parameter's physical range is stored flagged D and graded 0.

An :class:`Outbox` is not thread-safe: the agent uses it from one worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np

from sanduan.edge.core.model import PolledValue
from sanduan.edge.core.outbox_policy import (
    AggRow,
    SeqRange,
    SpacePlan,
    Streak,
    StreakTracker,
    aggregate,
    bucket_starts,
    coverage_days,
    intersect_ranges,
    normalise_ranges,
    plan_space,
    range_count,
)
from sanduan.edge.grader import Grader
from sanduan.shared import wire
from sanduan.shared.errors import StoreError
from sanduan.shared.model import Flag, WaterBody
from sanduan.shared.wire import Ack, Batch, Event

log = logging.getLogger("sanduan.edge.outbox")

SCHEMA_VERSION = 1
BSEQ_BLOCK = 64
"""Batch seqs are reserved in blocks so that forming a batch does not cost a commit."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reading (
    seq   INTEGER PRIMARY KEY,      -- from meta.next_seq, never reused
    ts    INTEGER NOT NULL,         -- measurement time, ms UTC
    code  TEXT    NOT NULL,         -- parameter code (HJ 212)
    value REAL,                     -- NULL = missing (NaN)
    flag  TEXT    NOT NULL,         -- HJ 212 data flag
    grade INTEGER NOT NULL,         -- GB 3838 class 0..6 at commit time
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS reading_unacked ON reading(seq) WHERE acked = 0;
CREATE TABLE IF NOT EXISTS agg_hour (
    start   INTEGER NOT NULL,       -- UTC ms of the local hour's start
    code    TEXT    NOT NULL,
    n       INTEGER NOT NULL,       -- readings
    n_valid INTEGER NOT NULL,       -- readings with flag N or S and a value
    vmin    REAL,
    vmax    REAL,
    vsum    REAL    NOT NULL,       -- sum of valid values: mean = vsum / n_valid
    PRIMARY KEY (start, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_day (
    start   INTEGER NOT NULL,       -- UTC ms of local midnight (station.timezone)
    code    TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    n_valid INTEGER NOT NULL,
    vmin    REAL,
    vmax    REAL,
    vsum    REAL    NOT NULL,
    PRIMARY KEY (start, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event (
    id      INTEGER PRIMARY KEY,    -- wire Event.event_id
    t       INTEGER NOT NULL,
    payload BLOB    NOT NULL        -- the encoded wire message, published until delivered
);
CREATE TABLE IF NOT EXISTS last_ts (
    device TEXT    NOT NULL,        -- the device a value came from
    code   TEXT    NOT NULL,
    ts     INTEGER NOT NULL,        -- measurement time of its last committed value
    PRIMARY KEY (device, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uplink_cursor (
    uplink  TEXT    NOT NULL,       -- an uplink besides the centre (an HJ 212 platform)
    kind    TEXT    NOT NULL,       -- realtime and minute hold readings; hourly, daily do not
    pos     INTEGER NOT NULL,       -- last seq (or period start, ms) the uplink has
    dropped INTEGER NOT NULL DEFAULT 0, -- readings deleted before this uplink had them
    PRIMARY KEY (uplink, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drop_log (
    at    INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL,
    n     INTEGER NOT NULL
);
"""

_META_DEFAULTS: dict[str, int] = {
    "schema": SCHEMA_VERSION,
    "next_seq": 1,
    "bseq_reserved": 0,
    "event_id": 0,
    "last_acked_seq": 0,
    "dropped": 0,
    "dropped_through": 0,
    "resend_missing": 0,
}

_UPSERT_LAST = (
    "INSERT INTO last_ts (device, code, ts) VALUES (?, ?, ?)"
    " ON CONFLICT (device, code) DO UPDATE SET ts = excluded.ts"
)
_INSERT = "INSERT INTO reading (seq, ts, code, value, flag, grade) VALUES (?, ?, ?, ?, ?, ?)"


def _agg_upsert(table: str) -> str:
    return (
        f"INSERT INTO {table} (start, code, n, n_valid, vmin, vmax, vsum)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (start, code) DO UPDATE SET"
        "  n = n + excluded.n,"
        "  n_valid = n_valid + excluded.n_valid,"
        "  vmin = CASE WHEN excluded.vmin IS NULL THEN vmin WHEN vmin IS NULL THEN excluded.vmin"
        "         ELSE min(vmin, excluded.vmin) END,"
        "  vmax = CASE WHEN excluded.vmax IS NULL THEN vmax WHEN vmax IS NULL THEN excluded.vmax"
        "         ELSE max(vmax, excluded.vmax) END,"
        "  vsum = vsum + excluded.vsum"
    )


_UPSERT_HOUR = _agg_upsert("agg_hour")
_UPSERT_DAY = _agg_upsert("agg_day")
_FLAG_TEXT: dict[str, str] = {f.value: f.value for f in Flag}
_FLAG_OF: dict[str, Flag] = {f.value: f for f in Flag}
I64Array = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one commit stored: seqs ``first_seq..last_seq`` (``count`` readings) and the alarm
    events it raised (already stored, to be published)."""

    first_seq: int
    last_seq: int
    count: int
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Aggregate:
    start_ms: int
    code: str
    count: int
    valid: int
    vmin: float | None
    vmean: float | None
    vmax: float | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    """Readings stored and not yet acknowledged."""
    rows: int
    acked_rows: int
    next_seq: int
    last_acked_seq: int | None
    oldest_unacked_seq: int | None
    oldest_unacked_ts_ms: int | None
    dropped: int
    dropped_through: int
    resend_missing: int
    used_bytes: int
    file_bytes: int
    max_bytes: int
    bytes_per_reading: float | None
    readings_per_s: float | None
    coverage_days: float | None
    pending_events: int
    extra: dict[str, Any] = field(default_factory=dict)

    def oldest_unacked_age_s(self, now_ms: int) -> float | None:
        if self.oldest_unacked_ts_ms is None:
            return None
        return max(0.0, (now_ms - self.oldest_unacked_ts_ms) / 1000.0)


class Outbox:
    """The SQLite buffer of one station. Open with :meth:`open` or the constructor; close it."""

    def __init__(
        self,
        path: Path | str,
        *,
        station: str,
        max_bytes: int = 512 * 1024 * 1024,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        timezone: str = "Asia/Shanghai",
        water_body: WaterBody = WaterBody.RIVER,
        target_class: int = 3,
        alarm_consecutive: int = 3,
        grader: Grader | None = None,
        cache_kib: int = 2048,
    ) -> None:
        self.path = Path(path)
        self.station = station
        self.max_bytes = max_bytes
        self.tz = ZoneInfo(timezone)
        self.grader = grader or Grader(water_body, target_class)
        self.streaks = StreakTracker(target_class, alarm_consecutive)
        try:
            self.db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA journal_size_limit=8388608")
            self.db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            self.db.execute("PRAGMA temp_store=MEMORY")
            self.db.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the buffer {self.path}: {e}") from None
        self._page_size = int(self._one("PRAGMA page_size"))
        self._codes: dict[str, int] = {}
        self._code_names: list[str] = []
        self._code_pidx: I64Array = np.empty(0, dtype=np.int64)
        self._bseq_next = self._meta("bseq_reserved") + 1
        self._bseq_reserved = self._meta("bseq_reserved")
        self._load_counts()
        self._load_streaks()
        self._last_ts: dict[tuple[str, str], int] = {
            (str(d), str(c)): int(t)
            for d, c, t in self.db.execute("SELECT device, code, ts FROM last_ts")
        }
        self.repeats = 0
        """Values not stored because they repeat the last committed (device, code, time)."""

    # -- setup -----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Any, *, path: Path | str | None = None) -> Outbox:
        """An outbox for a :class:`~sanduan.shared.config.StationConfig`."""
        return cls(
            cfg.buffer.path if path is None else path,
            station=cfg.station.id,
            max_bytes=cfg.buffer.max_bytes,
            synchronous=cfg.buffer.synchronous,
            timezone=cfg.station.timezone,
            water_body=cfg.station.water_body,
            target_class=cfg.station.target_class,
            alarm_consecutive=cfg.grading.alarm_consecutive,
            grader=Grader(cfg.station.water_body, cfg.station.target_class, cfg.grading.engine),
        )

    @classmethod
    def open_existing(cls, path: Path | str, *, max_bytes: int | None = None) -> Outbox:
        """Open a buffer file that must exist, taking its station id (and, unless given, its
        byte budget) from the file itself: for inspection."""
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"no buffer at {p}")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as e:
            raise StoreError(f"{p} is not a sanduan buffer: {e}") from None
        if "station" not in meta:
            raise StoreError(f"{p} is not a sanduan buffer (no station id)")
        budget = max_bytes if max_bytes is not None else int(meta.get("max_bytes", 512 << 20))
        return cls(p, station=str(meta["station"]), max_bytes=budget)

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _meta(self, key: str) -> int:
        return int(self._one("SELECT value FROM meta WHERE key = ?", (key,)))

    def _set_meta(self, key: str, value: int | str) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def _init_meta(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", _META_DEFAULTS.items()
            )
            self.db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('station', ?)", (self.station,)
            )
            self._check_identity()
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('max_bytes', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self.max_bytes,),
            )
            # Belt and braces: the counter is never behind the rows (it cannot be, as both are
            # written in one transaction, but a restored or hand-edited file might be).
            top = self._one("SELECT max(seq) FROM reading")
            if top is not None and int(top) >= self._meta("next_seq"):
                self._set_meta("next_seq", int(top) + 1)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _check_identity(self) -> None:
        stored = self._one("SELECT value FROM meta WHERE key = 'station'")
        if stored != self.station:
            raise StoreError(
                f"the buffer {self.path} belongs to station {stored!r}, not {self.station!r};"
                " give this station its own buffer.path"
            )
        schema = int(self._one("SELECT value FROM meta WHERE key = 'schema'"))
        if schema != SCHEMA_VERSION:
            raise StoreError(
                f"the buffer {self.path} has schema {schema}; this agent reads {SCHEMA_VERSION}"
            )

    def _load_counts(self) -> None:
        self._rows = int(self._one("SELECT count(*) FROM reading"))
        self._depth = int(self._one("SELECT count(*) FROM reading WHERE acked = 0"))
        self._next_seq = self._meta("next_seq")
        self._last_acked = self._meta("last_acked_seq")
        self._dropped = self._meta("dropped")

    def _load_streaks(self) -> None:
        raw = self._one("SELECT value FROM meta WHERE key = 'streaks'")
        self._streaks_json = raw if isinstance(raw, str) else "{}"
        for code, (count, alarmed, values) in json.loads(self._streaks_json).items():
            self.streaks.state[code] = Streak(int(count), bool(alarmed), [float(v) for v in values])

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error as e:
            log.warning("closing the buffer %s: %s", self.path, e)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- properties ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Readings stored and not yet acknowledged."""
        return self._depth

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_acked_seq(self) -> int | None:
        return self._last_acked or None

    @property
    def dropped(self) -> int:
        return self._dropped

    # -- commit ----------------------------------------------------------------------------

    def commit(self, values: Sequence[PolledValue]) -> CommitResult:
        """Store ``values`` in one transaction: seqs, grades, aggregates, alarm streaks and
        alarm events. Returns the seqs given and the events raised."""
        fresh, latest = self._fresh(values)
        if len(fresh) < len(values):
            self.repeats += len(values) - len(fresh)
            log.debug("%d repeated values not stored again", len(values) - len(fresh))
        if not fresh:
            return CommitResult(self._next_seq, self._next_seq - 1, 0)
        ts = [p.ts_ms for p in fresh]
        codes = [p.code for p in fresh]
        vals = [p.value for p in fresh]
        flags = [_FLAG_TEXT[p.flag] for p in fresh]
        return self._commit_columns(ts, codes, vals, flags, latest)

    def _fresh(
        self, values: Sequence[PolledValue]
    ) -> tuple[list[PolledValue], dict[tuple[str, str], int]]:
        """The values that do not repeat the last committed (device, code, ts), and the new last
        time per (device, code)."""
        known = self._last_ts
        latest: dict[tuple[str, str], int] = {}
        fresh: list[PolledValue] = []
        for p in values:
            key = (p.device, p.code)
            prev = latest.get(key)
            if prev is None:
                prev = known.get(key)
            if prev == p.ts_ms:
                continue
            latest[key] = p.ts_ms
            fresh.append(p)
        return fresh, latest

    def last_committed_ts(self, device: str, code: str) -> int | None:
        """Measurement time of the last value committed for (device, code)."""
        return self._last_ts.get((device, code))

    def commit_columns(
        self,
        ts_ms: Sequence[int],
        codes: Sequence[str],
        values: Sequence[float],
        flags: Sequence[str | Flag],
    ) -> CommitResult:
        """:meth:`commit` for readings given as columns."""
        return self._commit_columns(
            list(ts_ms), list(codes), [float(v) for v in values], [_FLAG_TEXT[f] for f in flags]
        )

    def _commit_columns(
        self,
        ts: list[int],
        codes: list[str],
        vals: list[float],
        flags: list[str],
        latest: dict[tuple[str, str], int] | None = None,
    ) -> CommitResult:
        n = len(ts)
        v_arr = np.asarray(vals, dtype=np.float64)
        cid, pidx = self._code_ids(codes)
        grades, impossible = self.grader.screen(v_arr, pidx)
        if impossible.any():
            # Not a measurement: stored and sent flagged D (a device fault), never graded and
            # never counted as valid (the centre dead-letters trusted out-of-range values).
            for i in np.flatnonzero(impossible).tolist():
                if flags[i] != "B":
                    flags[i] = "D"
        ts_arr = np.asarray(ts, dtype=np.int64)
        fb = np.frombuffer("".join(flags).encode("ascii"), dtype=np.uint8)
        valid = (fb == ord("N")) | (fb == ord("S"))
        first = self._next_seq
        last = first + n - 1
        saved = {k: (s.count, s.alarmed, list(s.values)) for k, s in self.streaks.state.items()}
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                _INSERT, zip(range(first, last + 1), ts, codes, vals, flags, grades, strict=True)
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (last + 1,))
            self._aggregate(ts_arr, cid, v_arr, valid)
            events = self._alarms(
                codes=codes, ts=ts, vals=vals, flags=flags, grades=grades, valid=valid
            )
            if latest:
                db.executemany(_UPSERT_LAST, ((d, c, t) for (d, c), t in latest.items()))
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.streaks.state = {k: Streak(c, a, v) for k, (c, a, v) in saved.items()}
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"cannot commit {n} readings to {self.path}: {e}") from None
            raise
        if latest:
            self._last_ts.update(latest)
        self._next_seq = last + 1
        self._rows += n
        self._depth += n
        self.check_space()
        return CommitResult(first, last, n, tuple(events))

    def _code_ids(self, codes: list[str]) -> tuple[I64Array, I64Array]:
        """Per reading: the buffer's own id of its code, and its registry index (-1 unknown)."""
        ids = self._codes
        for c in dict.fromkeys(codes):
            if c not in ids:
                ids[c] = len(self._code_names)
                self._code_names.append(c)
                self._code_pidx = np.append(self._code_pidx, self.grader.index_of(c))
        cid = np.fromiter(map(ids.__getitem__, codes), dtype=np.int64, count=len(codes))
        return cid, self._code_pidx[cid]

    def _aggregate(
        self, ts: I64Array, cid: I64Array, vals: np.ndarray[Any, np.dtype[np.float64]], valid: Any
    ) -> None:
        hour, day = bucket_starts(ts, self.tz)
        for sql, starts in ((_UPSERT_HOUR, hour), (_UPSERT_DAY, day)):
            rows = aggregate(starts, self._code_names, cid, vals, valid)
            self.db.executemany(sql, (_agg_tuple(r) for r in rows))

    def _alarms(
        self,
        *,
        codes: list[str],
        ts: list[int],
        vals: list[float],
        flags: list[str],
        grades: list[int],
        valid: Any,
    ) -> list[Event]:
        changes = self.streaks.feed(codes, ts, vals, flags, grades, valid=valid)
        state = {
            k: (s.count, s.alarmed, [x for x in s.values if not math.isnan(x)])
            for k, s in self.streaks.state.items()
        }
        text = json.dumps(state, sort_keys=True)
        if text != self._streaks_json:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('streaks', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (text,),
            )
            self._streaks_json = text
        if not changes:
            return []
        event_id = self._meta("event_id")
        events = []
        for ch in changes:
            event_id += 1
            ev = self.grader.alarm_event(self.station, event_id, ch)
            self.db.execute(
                "INSERT INTO event (id, t, payload) VALUES (?, ?, ?)",
                (ev.event_id, ev.time_ms, wire.encode(ev)),
            )
            events.append(ev)
        self._set_meta("event_id", event_id)
        return events

    # -- events ----------------------------------------------------------------------------

    def add_event(self, make: Any) -> Event:
        """Store an event built by ``make(event_id)`` and return it (for non-alarm events)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            event_id = self._meta("event_id") + 1
            ev: Event = make(event_id)
            self.db.execute(
                "INSERT INTO event (id, t, payload) VALUES (?, ?, ?)",
                (ev.event_id, ev.time_ms, wire.encode(ev)),
            )
            self._set_meta("event_id", event_id)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return ev

    def pending_events(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Stored events not yet delivered to the broker, oldest first: (id, encoded)."""
        rows = self.db.execute(
            "SELECT id, payload FROM event ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def event_delivered(self, event_id: int) -> None:
        self.db.execute("DELETE FROM event WHERE id = ?", (event_id,))

    # -- batches ---------------------------------------------------------------------------

    def next_batch_seq(self) -> int:
        """A new batch seq. Reserved in blocks of :data:`BSEQ_BLOCK` in ``meta``: after a crash
        the unused rest of a block is skipped, never reused."""
        if self._bseq_next > self._bseq_reserved:
            top = self._bseq_reserved + BSEQ_BLOCK
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'bseq_reserved'", (top,))
            self._bseq_reserved = top
        b = self._bseq_next
        self._bseq_next += 1
        return b

    def form_batch(
        self,
        created_ms: int,
        *,
        after: int = 0,
        within: SeqRange | None = None,
        limit: int = 1000,
        include_acked: bool = False,
    ) -> Batch | None:
        """Build the next batch from the buffer, oldest first, or None if there is nothing.

        Unacknowledged readings with ``seq > after`` (and inside ``within`` if given) by
        default; with ``include_acked`` every reading still held in ``within`` (the answer to a
        resend request). Readings keep the seq they were committed with.
        """
        lo = after + 1
        hi = (1 << 63) - 1
        if within is not None:
            lo = max(lo, within[0])
            hi = within[1]
        if include_acked:
            sql = (
                "SELECT seq, ts, code, value, flag, grade FROM reading"
                " WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?"
            )
        else:
            sql = (
                "SELECT seq, ts, code, value, flag, grade FROM reading INDEXED BY reading_unacked"
                " WHERE acked = 0 AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?"
            )
        rows = self.db.execute(sql, (lo, hi, limit)).fetchall()
        if not rows:
            return None
        seq, ts, code, value, flag, grade = zip(*rows, strict=True)
        return Batch.from_columns(
            self.station,
            self.next_batch_seq(),
            created_ms,
            seq=seq,
            ts_ms=ts,
            code=code,
            values=[math.nan if v is None else v for v in value],
            flags=[_FLAG_OF[f] for f in flag],
            grades=grade,
        )

    def unacked_after(self, after: int) -> tuple[int, int | None]:
        """(count, oldest ts) of unacknowledged readings with ``seq > after``, up to 1 batch
        worth of counting: used to decide whether a batch is due."""
        row = self.db.execute(
            "SELECT count(*), min(ts) FROM (SELECT ts FROM reading INDEXED BY reading_unacked"
            " WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT 100000)",
            (after,),
        ).fetchone()
        return int(row[0]), None if row[1] is None else int(row[1])

    # -- acknowledgements ------------------------------------------------------------------

    def ack(self, msg: Ack) -> int:
        """Mark the readings the centre now holds as acknowledged; returns how many changed.

        With ``msg.ranges`` empty that is every reading in ``first..last``: a batch holds every
        unacknowledged reading of its seq span (as formed by :meth:`form_batch`), so the span is
        exact. Otherwise exactly the listed ranges.
        """
        ranges = list(msg.ranges) or [(msg.first_seq, msg.last_seq)]
        ranges = intersect_ranges(normalise_ranges(ranges), [(1, self._next_seq - 1)])
        if not ranges:
            return 0
        changed = 0
        top = max(self._last_acked, ranges[-1][1])
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for a, b in ranges:
                cur = db.execute(
                    "UPDATE reading SET acked = 1 WHERE seq BETWEEN ? AND ? AND acked = 0", (a, b)
                )
                changed += cur.rowcount
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_acked_seq'", (top,))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot record an ack in {self.path}: {e}") from None
        self._depth -= changed
        self._last_acked = top
        return changed

    def held_in(self, ranges: Iterable[SeqRange]) -> int:
        """How many readings of ``ranges`` the buffer still holds (acknowledged or not)."""
        total = 0
        for a, b in ranges:
            total += int(
                self._one("SELECT count(*) FROM reading WHERE seq BETWEEN ? AND ?", (a, b))
            )
        return total

    def note_resend_missing(self, ranges: Sequence[SeqRange]) -> int:
        """Count the readings of a resend request the buffer no longer (or never) had."""
        wanted = normalise_ranges(ranges)
        missing = range_count(wanted) - self.held_in(wanted)
        if missing > 0:
            self.db.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'resend_missing'", (missing,)
            )
        return missing

    # -- space -----------------------------------------------------------------------------

    def used_bytes(self) -> int:
        pages = int(self._one("PRAGMA page_count"))
        free = int(self._one("PRAGMA freelist_count"))
        return (pages - free) * self._page_size

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def check_space(self, now_ms: int | None = None) -> SpacePlan:
        """Apply the space policy if the buffer is over ``max_bytes``; returns what was done."""
        used = self.used_bytes()
        if used <= self.max_bytes:
            return SpacePlan()
        acked_rows = self._rows - self._depth
        plan = plan_space(used, self.max_bytes, self._rows, acked_rows)
        done_acked = done_unacked = 0
        for _ in range(8):
            if not plan.any:
                break
            if plan.acked:
                done_acked += self._delete_acked(plan.acked)
            if plan.unacked:
                done_unacked += self._drop_unacked(plan.unacked, now_ms)
            used = self.used_bytes()
            plan = plan_space(
                used, self.max_bytes, self._rows, self._rows - self._depth, low_water=0.9
            )
            if used <= self.max_bytes:
                break
        if done_acked:
            log.info(
                "buffer over %d bytes: deleted %d acknowledged readings (oldest first)",
                self.max_bytes,
                done_acked,
            )
        return SpacePlan(done_acked, done_unacked)

    def _delete_acked(self, n: int) -> int:
        """Delete up to ``n`` acknowledged readings, oldest first: first those every other
        uplink (``uplink_cursor``, kinds that hold readings) has too; then, if that is not
        enough, the ones an uplink still lacks, counted as dropped for it."""
        db = self.db
        hold = self._one("SELECT min(pos) FROM uplink_cursor WHERE kind IN ('realtime', 'minute')")
        if hold is None:
            cur = db.execute(
                "DELETE FROM reading WHERE seq IN"
                " (SELECT seq FROM reading WHERE acked = 1 ORDER BY seq LIMIT ?)",
                (n,),
            )
            self._rows -= cur.rowcount
            return int(cur.rowcount)
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute(
                "DELETE FROM reading WHERE seq IN (SELECT seq FROM reading"
                " WHERE acked = 1 AND seq <= ? ORDER BY seq LIMIT ?)",
                (int(hold), n),
            ).rowcount
            if done < n:
                top = self._one(
                    "SELECT max(seq) FROM (SELECT seq FROM reading WHERE acked = 1"
                    " ORDER BY seq LIMIT ?)",
                    (n - done,),
                )
                if top is not None:
                    lagging = db.execute(
                        "SELECT uplink, kind, pos FROM uplink_cursor"
                        " WHERE kind IN ('realtime', 'minute') AND pos < ?",
                        (int(top),),
                    ).fetchall()
                    for uplink, kind, pos in lagging:
                        lost = int(
                            self._one(
                                "SELECT count(*) FROM reading WHERE acked = 1"
                                " AND seq > ? AND seq <= ?",
                                (pos, int(top)),
                            )
                        )
                        db.execute(
                            "UPDATE uplink_cursor SET pos = ?, dropped = dropped + ?"
                            " WHERE uplink = ? AND kind = ?",
                            (int(top), lost, uplink, kind),
                        )
                        log.warning(
                            "buffer full: uplink %s loses %d %s readings it had not been"
                            " sent (seq %d..%d)",
                            uplink,
                            lost,
                            kind,
                            pos + 1,
                            int(top),
                        )
                    done += db.execute(
                        "DELETE FROM reading WHERE acked = 1 AND seq <= ?", (int(top),)
                    ).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._rows -= done
        return int(done)

    def _drop_unacked(self, n: int, now_ms: int | None) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT count(*), min(seq), max(seq) FROM (SELECT seq FROM reading"
                " INDEXED BY reading_unacked WHERE acked = 0 ORDER BY seq LIMIT ?)",
                (n,),
            ).fetchone()
            count, first, last = int(row[0]), row[1], row[2]
            if count == 0:
                db.execute("COMMIT")
                return 0
            db.execute("DELETE FROM reading WHERE seq BETWEEN ? AND ?", (first, last))
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (count,))
            db.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'dropped_through'", (last,)
            )
            db.execute(
                "INSERT INTO drop_log (at, first, last, n) VALUES (?, ?, ?, ?)",
                (now_ms if now_ms is not None else 0, first, last, count),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._rows = int(self._one("SELECT count(*) FROM reading"))
        self._depth -= count
        self._dropped += count
        log.warning(
            "buffer full (%d bytes) with nothing acknowledged left to delete: DROPPED %d"
            " unacknowledged readings, seq %d..%d (oldest first; aggregates kept)",
            self.max_bytes,
            count,
            first,
            last,
        )
        return count

    def counters(self) -> dict[str, int]:
        """The persisted counters of ``meta`` (seqs, drops, resend misses)."""
        return {
            str(k): int(v)
            for k, v in self.db.execute(
                "SELECT key, value FROM meta WHERE key IN"
                " ('next_seq', 'last_acked_seq', 'dropped', 'dropped_through', 'resend_missing',"
                " 'event_id', 'bseq_reserved')"
            )
        }

    # -- inspection ------------------------------------------------------------------------

    def aggregates(
        self, period: Literal["hour", "day"], code: str | None = None
    ) -> list[Aggregate]:
        table = "agg_hour" if period == "hour" else "agg_day"
        sql = f"SELECT start, code, n, n_valid, vmin, vmax, vsum FROM {table}"
        args: tuple[Any, ...] = ()
        if code is not None:
            sql += " WHERE code = ?"
            args = (code,)
        sql += " ORDER BY start, code"
        return [
            Aggregate(int(s), c, int(n), int(nv), mn, (sm / nv) if nv else None, mx)
            for s, c, n, nv, mn, mx, sm in self.db.execute(sql, args)
        ]

    def readings(self, first: int = 1, last: int = (1 << 63) - 1) -> list[tuple[Any, ...]]:
        """Stored rows (seq, ts, code, value, flag, grade, acked) in ``first..last``."""
        return self.db.execute(
            "SELECT seq, ts, code, value, flag, grade, acked FROM reading"
            " WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first, last),
        ).fetchall()

    def oldest_unacked(self) -> tuple[int, int] | None:
        row = self.db.execute(
            "SELECT seq, ts FROM reading INDEXED BY reading_unacked WHERE acked = 0"
            " ORDER BY seq LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def readings_per_s(self) -> float | None:
        """Recent reading rate from the hourly aggregates (last 24 stored hours)."""
        rows = self.db.execute(
            "SELECT start, sum(n) FROM agg_hour GROUP BY start ORDER BY start DESC LIMIT 24"
        ).fetchall()
        if not rows:
            return None
        total = sum(int(n) for _, n in rows)
        span_ms = int(rows[0][0]) - int(rows[-1][0]) + 3_600_000
        if len(rows) == 1:
            first_ts = self._one("SELECT min(ts) FROM reading WHERE ts >= ?", (int(rows[0][0]),))
            last_ts = self._one("SELECT max(ts) FROM reading")
            if first_ts is None or last_ts is None or last_ts <= first_ts:
                return None
            span_ms = int(last_ts) - int(first_ts)
        return total / (span_ms / 1000.0)

    def stats(self) -> OutboxStats:
        used = self.used_bytes()
        oldest = self.oldest_unacked()
        per_reading = used / self._rows if self._rows else None
        rate = self.readings_per_s()
        cover = (
            coverage_days(per_reading, rate, self.max_bytes)
            if per_reading is not None and rate is not None
            else None
        )
        return OutboxStats(
            depth=self._depth,
            rows=self._rows,
            acked_rows=self._rows - self._depth,
            next_seq=self._next_seq,
            last_acked_seq=self.last_acked_seq,
            oldest_unacked_seq=None if oldest is None else oldest[0],
            oldest_unacked_ts_ms=None if oldest is None else oldest[1],
            dropped=self._dropped,
            dropped_through=self._meta("dropped_through"),
            resend_missing=self._meta("resend_missing"),
            used_bytes=used,
            file_bytes=self.file_bytes(),
            max_bytes=self.max_bytes,
            bytes_per_reading=per_reading,
            readings_per_s=rate,
            coverage_days=cover,
            pending_events=int(self._one("SELECT count(*) FROM event")),
        )


def _agg_tuple(r: AggRow) -> tuple[int, str, int, int, float | None, float | None, float]:
    return (r.start_ms, r.code, r.count, r.valid, r.vmin, r.vmax, r.vsum)

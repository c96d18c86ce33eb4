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
- The buffer is one stream: a random id (``meta.stream``) made when the file is created. A new,
  deleted or zero-length file is a new stream; seqs are never reused within a stream.
- Readings the centre rejects (a nack) stay in the file marked rejected with the reason
  (``reading.acked = 2``, ``reject_log``) and are never sent again.
- Every persisted counter is checked when the file is opened (:class:`CorruptBufferError` names
  the bad value); SQLite errors leave as :class:`BufferWriteError` (disk full or failing: the
  caller may retry) or :class:`CorruptBufferError` (the file is damaged: salvage it).

An :class:`Outbox` is not thread-safe: the agent uses it from one worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
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
from sanduan.edge.core.window import MAX_SEQ, U63_MAX, Issued, new_stream_id
from sanduan.edge.grader import Grader
from sanduan.shared import wire
from sanduan.shared.errors import StoreError
from sanduan.shared.model import Flag, WaterBody
from sanduan.shared.wire import Ack, Batch, Event

log = logging.getLogger("sanduan.edge.outbox")

SCHEMA_VERSION = 2
"""2: ``meta.stream``, rejected readings (``acked = 2``) and ``reject_log``. A version-1 file is
upgraded in place and keeps the legacy stream 0 (its seqs were sent on the v1 wire)."""
ACKED, REJECTED = 1, 2
"""Values of ``reading.acked`` besides 0 (unacknowledged)."""
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
    acked INTEGER NOT NULL DEFAULT 0 -- 0 unacknowledged, 1 acknowledged, 2 rejected by the centre
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
CREATE TABLE IF NOT EXISTS reject_log (
    at     INTEGER NOT NULL,        -- station clock, ms UTC
    bseq   INTEGER NOT NULL,        -- the batch the centre answered
    first  INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    n      INTEGER NOT NULL,        -- readings marked rejected in first..last
    reason TEXT    NOT NULL,        -- conflict | timestamp | invalid
    detail TEXT    NOT NULL
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
    "rejected": 0,
}

_META_BOUNDS: dict[str, tuple[int, int]] = {
    "schema": (1, 1 << 16),
    "stream": (0, U63_MAX),
    "next_seq": (1, MAX_SEQ + 1),
    "bseq_reserved": (0, U63_MAX),
    "event_id": (0, U63_MAX),
    "last_acked_seq": (0, MAX_SEQ),
    "dropped": (0, MAX_SEQ),
    "dropped_through": (0, MAX_SEQ),
    "resend_missing": (0, U63_MAX),
    "rejected": (0, MAX_SEQ),
    "max_bytes": (0, U63_MAX),
}
"""What every persisted counter may hold; anything else is damage, found at start-up."""

SQLITE_FULL, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_NOTADB = 13, 10, 11, 26


class BufferWriteError(StoreError):
    """The buffer cannot be written (disk full, I/O error); the file itself is intact."""


class CorruptBufferError(StoreError):
    """The buffer file is damaged (or not a buffer); ``sanduan edge outbox --salvage`` copies
    what is readable into a new one."""


def _salvage_hint(path: Path) -> str:
    return (
        f"; copy its readable unacknowledged readings to a new buffer with"
        f" `sanduan edge outbox --db {path} --salvage NEW_PATH` and point buffer.path at it"
    )


def store_error(path: Path, what: str, e: sqlite3.Error) -> StoreError:
    """The :class:`StoreError` for an SQLite error while doing ``what`` on the buffer ``path``."""
    code = getattr(e, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    text = str(e)
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB) or "malformed" in text:
        return CorruptBufferError(
            f"the buffer {path} is damaged ({text}) while {what}" + _salvage_hint(path)
        )
    if primary in (SQLITE_FULL, SQLITE_IOERR):
        return BufferWriteError(f"cannot write the buffer {path} while {what}: {text}")
    return StoreError(f"buffer {path}: {what}: {text}")


def check_buffer_place(path: Path) -> None:
    """StoreError naming the path and the fix if the buffer file cannot be made or written
    there: its directory is missing or not writable, or the path is a directory."""
    if str(path) == ":memory:":
        return
    parent = path.absolute().parent
    if path.is_dir():
        raise StoreError(f"buffer {path} is a directory: set buffer.path to a file in it")
    if not parent.is_dir():
        raise StoreError(
            f"buffer {path}: the directory {parent} does not exist: create it, writable by the"
            " agent's user (the systemd unit's StateDirectory= does), or set buffer.path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"buffer {path}: the directory {parent} is not writable by this user: change its"
            " owner or mode, or set buffer.path"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"buffer {path} is not readable and writable by this user: change its owner or mode"
        )


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
    stream: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    """Readings the centre rejected, by reason."""
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
        cache_kib: int = 512,
    ) -> None:
        self.path = Path(path)
        self.station = station
        self.max_bytes = max_bytes
        self.tz = ZoneInfo(timezone)
        self.grader = grader or Grader(water_body, target_class)
        self.streaks = StreakTracker(target_class, alarm_consecutive)
        check_buffer_place(self.path)
        try:
            self.db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA journal_size_limit=8388608")
            # 512 KiB: draining a 300k-reading backlog holds 1.5 MiB less than with 2 MiB, at
            # the same CPU (the OS page cache keeps the file's pages anyway).
            self.db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            self.db.execute("PRAGMA temp_store=MEMORY")
            fresh = self._one("SELECT count(*) FROM sqlite_master WHERE name = 'meta'") == 0
            self.db.executescript(_SCHEMA)
            self._init_meta(fresh)
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
        except sqlite3.Error as e:
            with contextlib.suppress(Exception):
                self.db.close()
            raise store_error(self.path, "opening it", e) from None
        except (ValueError, TypeError) as e:  # a damaged value in a row read at start-up
            with contextlib.suppress(Exception):
                self.db.close()
            raise CorruptBufferError(
                f"the buffer {self.path} holds a damaged value ({e})" + _salvage_hint(self.path)
            ) from None
        self.repeats = 0
        """Values not stored because they repeat the last committed (device, code, time)."""
        self.flag_counts: dict[str, int] = dict.fromkeys(_FLAG_TEXT, 0)
        """Readings committed by this process, by flag (as stored: after the D marks)."""

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
            grader=Grader(
                cfg.station.water_body,
                cfg.station.target_class,
                cfg.grading.engine,
                stuck_polls=cfg.grading.stuck_polls,
            ),
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
            err = store_error(p, "reading its meta", e)
            if isinstance(err, CorruptBufferError):
                raise err from None
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

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``), rolled back on any error;
        SQLite errors leave as :class:`StoreError` (see :func:`store_error`)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise store_error(self.path, what, e) from None
            raise

    def _init_meta(self, fresh: bool) -> None:
        with self._tx("setting it up") as db:
            if not fresh and self._one("SELECT count(*) FROM meta") == 0:
                # Tables but no counters (a crash while the file was being created): new unless
                # it holds readings.
                fresh = self._one("SELECT count(*) FROM reading") == 0
            if fresh:
                db.execute("INSERT INTO meta (key, value) VALUES ('stream', ?)", (new_stream_id(),))
            db.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", _META_DEFAULTS.items()
            )
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('station', ?)", (self.station,)
            )
            self._check_identity()
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('max_bytes', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                " WHERE value IS NOT excluded.value",  # no write when nothing changes
                (self.max_bytes,),
            )
            if self._one("SELECT value FROM meta WHERE key = 'schema'") == 1:
                # Upgrade: the file's readings went out on the v1 wire, so it stays stream 0.
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', 0)")
                self._set_meta("schema", SCHEMA_VERSION)
                log.info("buffer %s upgraded to schema %d (stream 0)", self.path, SCHEMA_VERSION)
            self._validate_meta()
            # Belt and braces: the counter is never behind the rows (it cannot be, as both are
            # written in one transaction, but a restored or hand-edited file might be).
            top = self._one("SELECT max(seq) FROM reading")
            if top is not None and int(top) >= self._meta("next_seq"):
                self._set_meta("next_seq", int(top) + 1)
        self._stream = self._meta("stream")

    def _validate_meta(self) -> None:
        """Every persisted counter is an integer within its bounds, and the rows agree with
        them; otherwise :class:`CorruptBufferError` naming the value and the fix."""
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())

        def bad(what: str) -> CorruptBufferError:
            return CorruptBufferError(
                f"the buffer {self.path} holds an impossible {what}: the file was damaged or"
                " edited" + _salvage_hint(self.path)
            )

        for key, (lo, hi) in _META_BOUNDS.items():
            v = meta.get(key)
            if type(v) is not int or not lo <= v <= hi:
                raise bad(f"meta value {key} = {v!r} (an integer in {lo}..{hi} expected)")
        if (
            meta["last_acked_seq"] >= meta["next_seq"]
            or meta["dropped_through"] >= meta["next_seq"]
        ):
            raise bad(
                f"meta: last_acked_seq {meta['last_acked_seq']} / dropped_through"
                f" {meta['dropped_through']} not below next_seq {meta['next_seq']}"
            )
        top = self._one("SELECT max(seq) FROM reading")
        low = self._one("SELECT min(seq) FROM reading")
        if top is not None and (type(top) is not int or not 1 <= low <= top <= MAX_SEQ):
            raise bad(f"reading seq range {low}..{top} (1..{MAX_SEQ} expected)")

    def _check_identity(self) -> None:
        stored = self._one("SELECT value FROM meta WHERE key = 'station'")
        if stored != self.station:
            raise StoreError(
                f"the buffer {self.path} belongs to station {stored!r}, not {self.station!r};"
                " give this station its own buffer.path"
            )
        schema = self._one("SELECT value FROM meta WHERE key = 'schema'")
        if schema not in (1, SCHEMA_VERSION):
            raise StoreError(
                f"the buffer {self.path} has schema {schema}; this agent reads {SCHEMA_VERSION}"
            )

    def _load_counts(self) -> None:
        # Full scans of the table and of the unacknowledged index: a damaged page shows now,
        # at start-up, not in the middle of a run.
        self._rows = int(self._one("SELECT count(*) FROM reading NOT INDEXED"))
        self._depth = int(
            self._one("SELECT count(*) FROM reading INDEXED BY reading_unacked WHERE acked = 0")
        )
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

    @property
    def stream(self) -> int:
        """This buffer's stream id (0: a buffer created before streams, sent on the v1 wire)."""
        return self._stream

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
        self.grader.stuck.mark(codes, vals, flags)  # a stuck sensor's repeats: D
        ts_arr = np.asarray(ts, dtype=np.int64)
        fb = np.frombuffer("".join(flags).encode("ascii"), dtype=np.uint8)
        valid = (fb == ord("N")) | (fb == ord("S"))
        first = self._next_seq
        last = first + n - 1
        if last > MAX_SEQ:
            raise StoreError(
                f"the buffer {self.path} has issued every seq of its stream (up to {MAX_SEQ});"
                " start a new buffer file"
            )
        saved = {k: (s.count, s.alarmed, list(s.values)) for k, s in self.streaks.state.items()}
        try:
            with self._tx(f"committing {n} readings") as db:
                db.executemany(
                    _INSERT,
                    zip(range(first, last + 1), ts, codes, vals, flags, grades, strict=True),
                )
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (last + 1,))
                self._aggregate(ts_arr, cid, v_arr, valid)
                events = self._alarms(
                    codes=codes, ts=ts, vals=vals, flags=flags, grades=grades, valid=valid
                )
                if latest:
                    db.executemany(_UPSERT_LAST, ((d, c, t) for (d, c), t in latest.items()))
        except BaseException:
            self.streaks.state = {k: Streak(c, a, v) for k, (c, a, v) in saved.items()}
            raise
        if latest:
            self._last_ts.update(latest)
        self._next_seq = last + 1
        self._rows += n
        self._depth += n
        per_byte = np.bincount(fb, minlength=128).tolist()
        for f in self.flag_counts:
            self.flag_counts[f] += per_byte[ord(f)]
        try:
            self.check_space()
        except (sqlite3.Error, StoreError) as e:
            # The readings are committed: a failed clean-up must not look like a failed commit.
            log.warning("buffer %s: applying the space budget failed: %s", self.path, e)
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
        with self._tx("storing an event") as db:
            event_id = self._meta("event_id") + 1
            ev: Event = make(event_id)
            db.execute(
                "INSERT INTO event (id, t, payload) VALUES (?, ?, ?)",
                (ev.event_id, ev.time_ms, wire.encode(ev)),
            )
            self._set_meta("event_id", event_id)
        return ev

    def pending_events(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Stored events not yet delivered to the broker, oldest first: (id, encoded)."""
        rows = self.db.execute(
            "SELECT id, payload FROM event ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def event_delivered(self, event_id: int) -> None:
        with self._tx("deleting a delivered event") as db:
            db.execute("DELETE FROM event WHERE id = ?", (event_id,))

    # -- batches ---------------------------------------------------------------------------

    def next_batch_seq(self) -> int:
        """A new batch seq. Reserved in blocks of :data:`BSEQ_BLOCK` in ``meta``: after a crash
        the unused rest of a block is skipped, never reused."""
        if self._bseq_next > self._bseq_reserved:
            top = self._bseq_reserved + BSEQ_BLOCK
            with self._tx("reserving batch seqs") as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'bseq_reserved'", (top,))
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
        if include_acked:  # but never a reading the centre rejected
            sql = (
                "SELECT seq, ts, code, value, flag, grade FROM reading"
                f" WHERE seq BETWEEN ? AND ? AND acked < {REJECTED} ORDER BY seq LIMIT ?"
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
            stream=self._stream,
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
        exact. Otherwise exactly the listed ranges. (The forwarder checks the ack first, see
        :func:`~sanduan.edge.core.window.check_ack`, and calls :meth:`ack_ranges`.)
        """
        return self.ack_ranges(list(msg.ranges) or [(msg.first_seq, msg.last_seq)])

    def ack_ranges(self, ranges: Sequence[SeqRange]) -> int:
        """Mark the unacknowledged readings of ``ranges`` acknowledged (seqs this buffer never
        issued are left out); returns how many changed."""
        wanted = intersect_ranges(normalise_ranges(ranges), [(1, self._next_seq - 1)])
        if not wanted:
            return 0
        changed = 0
        top = max(self._last_acked, wanted[-1][1])
        with self._tx("recording an ack") as db:
            for a, b in wanted:
                cur = db.execute(
                    f"UPDATE reading SET acked = {ACKED} WHERE seq BETWEEN ? AND ? AND acked = 0",
                    (a, b),
                )
                changed += cur.rowcount
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_acked_seq'", (top,))
        self._depth -= changed
        self._last_acked = top
        return changed

    def issued(self) -> Issued:
        """What this buffer has issued: the bounds every answer from the centre is checked
        against."""
        return Issued(self.station, self._stream, self._next_seq - 1, self._bseq_reserved)

    def _import_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Append salvaged rows (seq, ts, code, value, flag, grade, acked) under new seqs, as
        unacknowledged readings with their stored flags and grades; aggregates untouched."""
        first = self._next_seq
        last = first + len(rows) - 1
        with self._tx(f"importing {len(rows)} readings") as db:
            db.executemany(
                _INSERT,
                ((first + i, r[1], r[2], r[3], r[4], r[5]) for i, r in enumerate(rows)),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (last + 1,))
        self._next_seq = last + 1
        self._rows += len(rows)
        self._depth += len(rows)
        return len(rows)

    def _import_table(self, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Copy salvaged rows of an aggregate, ``last_ts`` or ``event`` table (same columns)."""
        if not rows:
            return 0
        marks = ", ".join("?" * len(rows[0]))
        with self._tx(f"importing {table}") as db:
            db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
            if table == "event":
                top = max(int(r[0]) for r in rows)
                db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'event_id'", (top,))
        if table == "last_ts":
            self._last_ts.update({(str(d), str(c)): int(t) for d, c, t in rows})
        return len(rows)

    def held_in(self, ranges: Iterable[SeqRange]) -> int:
        """How many readings of ``ranges`` the buffer still holds (acknowledged or not)."""
        total = 0
        for a, b in ranges:
            total += int(
                self._one("SELECT count(*) FROM reading WHERE seq BETWEEN ? AND ?", (a, b))
            )
        return total

    def note_resend_missing(self, ranges: Sequence[SeqRange]) -> int:
        """Count the readings of a resend request the buffer no longer holds. Only seqs this
        stream has issued count (the caller clips the request); the counter saturates."""
        wanted = intersect_ranges(normalise_ranges(ranges), [(1, self._next_seq - 1)])
        missing = range_count(wanted) - self.held_in(wanted)
        if missing > 0:
            with self._tx("counting missing readings") as db:
                db.execute(
                    "UPDATE meta SET value = min(value + ?, ?) WHERE key = 'resend_missing'",
                    (missing, U63_MAX - MAX_SEQ),
                )
        return missing

    def reject(
        self,
        ranges: Sequence[SeqRange],
        *,
        reason: str,
        detail: str = "",
        batch_seq: int = 0,
        now_ms: int = 0,
    ) -> int:
        """Mark the unacknowledged readings of ``ranges`` rejected by the centre (never sent
        again, kept in the file) and log them with ``reason``; returns how many changed."""
        wanted = intersect_ranges(normalise_ranges(ranges), [(1, self._next_seq - 1)])
        changed = 0
        with self._tx("recording a rejection") as db:
            for a, b in wanted:
                cur = db.execute(
                    f"UPDATE reading SET acked = {REJECTED}"
                    " WHERE seq BETWEEN ? AND ? AND acked = 0",
                    (a, b),
                )
                if cur.rowcount:
                    changed += cur.rowcount
                    db.execute(
                        "INSERT INTO reject_log (at, bseq, first, last, n, reason, detail)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (now_ms, batch_seq, a, b, cur.rowcount, reason, detail[:256]),
                    )
            if changed:
                db.execute(
                    "UPDATE meta SET value = min(value + ?, ?) WHERE key = 'rejected'",
                    (changed, MAX_SEQ),
                )
        self._depth -= changed
        return changed

    def rejected_by_reason(self) -> dict[str, int]:
        """Readings the centre rejected, by reason."""
        return {
            str(r): int(n)
            for r, n in self.db.execute(
                "SELECT reason, sum(n) FROM reject_log GROUP BY reason ORDER BY reason"
            )
        }

    def unacked_in(self, first: int, last: int) -> int:
        """Unacknowledged readings in ``first..last``."""
        return int(
            self._one(
                "SELECT count(*) FROM reading INDEXED BY reading_unacked"
                " WHERE acked = 0 AND seq BETWEEN ? AND ?",
                (first, last),
            )
        )

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
        hold = self._one("SELECT min(pos) FROM uplink_cursor WHERE kind IN ('realtime', 'minute')")
        with self._tx("deleting acknowledged readings") as db:
            if hold is None:
                done = db.execute(
                    "DELETE FROM reading WHERE seq IN"
                    f" (SELECT seq FROM reading WHERE acked = {ACKED} ORDER BY seq LIMIT ?)",
                    (n,),
                ).rowcount
            else:
                done = db.execute(
                    "DELETE FROM reading WHERE seq IN (SELECT seq FROM reading"
                    f" WHERE acked = {ACKED} AND seq <= ? ORDER BY seq LIMIT ?)",
                    (int(hold), n),
                ).rowcount
                if done < n:
                    done += self._drop_for_uplinks(db, n - done)
        self._rows -= done
        return int(done)

    def _drop_for_uplinks(self, db: sqlite3.Connection, n: int) -> int:
        """Delete the ``n`` oldest acknowledged readings although an uplink lacks some of them;
        each lagging cursor moves past them and counts what it lost."""
        top = db.execute(
            f"SELECT max(seq) FROM (SELECT seq FROM reading WHERE acked = {ACKED}"
            " ORDER BY seq LIMIT ?)",
            (n,),
        ).fetchone()[0]
        if top is None:
            return 0
        lagging = db.execute(
            "SELECT uplink, kind, pos FROM uplink_cursor"
            " WHERE kind IN ('realtime', 'minute') AND pos < ?",
            (int(top),),
        ).fetchall()
        for uplink, kind, pos in lagging:
            lost = int(
                db.execute(
                    f"SELECT count(*) FROM reading WHERE acked = {ACKED} AND seq > ? AND seq <= ?",
                    (pos, int(top)),
                ).fetchone()[0]
            )
            db.execute(
                "UPDATE uplink_cursor SET pos = ?, dropped = dropped + ?"
                " WHERE uplink = ? AND kind = ?",
                (int(top), lost, uplink, kind),
            )
            log.warning(
                "buffer full: uplink %s loses %d %s readings it had not been sent (seq %d..%d)",
                uplink,
                lost,
                kind,
                pos + 1,
                int(top),
            )
        return int(
            db.execute(
                f"DELETE FROM reading WHERE acked = {ACKED} AND seq <= ?", (int(top),)
            ).rowcount
        )

    def _drop_unacked(self, n: int, now_ms: int | None) -> int:
        with self._tx("dropping unacknowledged readings") as db:
            row = db.execute(
                "SELECT count(*), min(seq), max(seq) FROM (SELECT seq FROM reading"
                " INDEXED BY reading_unacked WHERE acked = 0 ORDER BY seq LIMIT ?)",
                (n,),
            ).fetchone()
            count, first, last = int(row[0]), row[1], row[2]
            if count == 0:
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
                " 'event_id', 'bseq_reserved', 'rejected', 'stream')"
            )
        }

    def quick_check(self) -> None:
        """Read every page (``PRAGMA quick_check``); :class:`CorruptBufferError` if one is
        damaged. Seconds on a large buffer: the agent runs it once, after starting."""
        try:
            got = str(self._one("PRAGMA quick_check(1)"))
        except sqlite3.Error as e:
            raise store_error(self.path, "checking it", e) from None
        if got != "ok":
            raise CorruptBufferError(
                f"the buffer {self.path} is damaged ({got})" + _salvage_hint(self.path)
            )

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
            stream=self._stream,
            rejected=self.rejected_by_reason(),
        )


def _agg_tuple(r: AggRow) -> tuple[int, str, int, int, float | None, float | None, float]:
    return (r.start_ms, r.code, r.count, r.valid, r.vmin, r.vmax, r.vsum)


# --------------------------------------------------------------------------------------------
# salvage


@dataclass(frozen=True, slots=True)
class SalvageResult:
    """What :func:`salvage` copied from a damaged buffer into a new one."""

    source: Path
    target: Path
    station: str
    old_stream: int | None
    new_stream: int
    copied: int
    """Unacknowledged readings copied (seqs ``1..copied`` of the new stream)."""
    old_first: int | None
    old_last: int | None
    unreadable: int
    """Seqs whose page could not be read."""
    invalid: int
    """Rows that were readable but held impossible values (skipped)."""
    acked: int
    rejected: int
    aggregates: int
    events: int


_ROW_FLAGS = frozenset(_FLAG_TEXT)


def _valid_row(row: tuple[Any, ...]) -> bool:
    seq, ts, code, value, flag, grade, acked = row
    return (
        type(seq) is int
        and type(ts) is int
        and 0 <= ts <= U63_MAX
        and isinstance(code, str)
        and wire.CODE_RE.fullmatch(code) is not None
        and (value is None or type(value) is float or type(value) is int)
        and flag in _ROW_FLAGS
        and type(grade) is int
        and 0 <= grade <= 6
        and acked in (0, ACKED, REJECTED)
    )


def _read_ranges(
    db: sqlite3.Connection, lo: int, hi: int, chunk: int, progress: Any
) -> Iterator[tuple[list[tuple[Any, ...]], int]]:
    """Rows of seqs ``lo..hi`` in order, chunk by chunk: (rows, seqs unreadable). A chunk that
    cannot be read is halved until the damaged seqs are isolated."""
    sql = (
        "SELECT seq, ts, code, value, flag, grade, acked FROM reading NOT INDEXED"
        " WHERE seq BETWEEN ? AND ? ORDER BY seq"
    )
    todo = [(a, min(a + chunk - 1, hi)) for a in range(lo, hi + 1, chunk)]
    todo.reverse()
    while todo:
        a, b = todo.pop()
        try:
            rows = db.execute(sql, (a, b)).fetchall()
        except sqlite3.DatabaseError:
            if a == b:
                yield [], 1
            else:
                mid = (a + b) // 2
                todo.extend([(mid + 1, b), (a, mid)])
            continue
        if progress is not None:
            progress(b - lo + 1, hi - lo + 1)
        yield rows, 0


def salvage(
    source: Path | str,
    target: Path | str,
    *,
    station: str | None = None,
    max_bytes: int | None = None,
    progress: Any = None,
) -> SalvageResult:
    """Copy every readable, committed, unacknowledged reading of the (damaged) buffer
    ``source`` into a new buffer ``target``: a new stream, seqs from 1 in the original order,
    values, flags and grades as stored. Readable aggregates, last result times and undelivered
    events are copied too. ``progress(done, total)`` is called as seqs are read."""
    src, dst = Path(source), Path(target)
    if not src.is_file():
        raise StoreError(f"no buffer at {src}")
    if dst.exists() and dst.stat().st_size > 0:
        raise StoreError(f"{dst} exists; give a new path for the salvaged buffer")
    if dst.resolve() == src.resolve():
        raise StoreError("the salvaged buffer needs a path of its own")
    try:
        old = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise CorruptBufferError(f"cannot open {src}: {e}") from None
    with contextlib.closing(old):
        meta: dict[str, Any] = {}
        with contextlib.suppress(sqlite3.DatabaseError):
            meta = dict(old.execute("SELECT key, value FROM meta").fetchall())
        st = station or meta.get("station")
        if not isinstance(st, str):
            raise CorruptBufferError(
                f"{src}: the station id is unreadable; give --config station.toml"
            )
        if station is not None and meta.get("station") not in (None, station):
            raise StoreError(f"{src} belongs to station {meta.get('station')!r}, not {station!r}")
        hi = meta.get("next_seq")
        hi = hi - 1 if type(hi) is int and 1 <= hi <= MAX_SEQ + 1 else None
        if hi is None:
            try:
                top = old.execute("SELECT max(seq) FROM reading").fetchone()[0]
            except sqlite3.DatabaseError:
                top = None
            if type(top) is not int or not 0 <= top <= MAX_SEQ:
                raise CorruptBufferError(
                    f"{src}: neither meta.next_seq nor the highest seq can be read"
                )
            hi = top
        budget = max_bytes if max_bytes is not None else meta.get("max_bytes", 512 << 20)
        old_stream = meta.get("stream") if type(meta.get("stream")) is int else None
        new = Outbox(dst, station=st, max_bytes=int(budget))
        try:
            copied = unreadable = invalid = acked = rejected = 0
            old_first: int | None = None
            old_last: int | None = None
            for rows, bad in _read_ranges(old, 1, hi, 4096, progress):
                unreadable += bad
                keep: list[tuple[Any, ...]] = []
                for row in rows:
                    if not _valid_row(row):
                        invalid += 1
                    elif row[6] == ACKED:
                        acked += 1
                    elif row[6] == REJECTED:
                        rejected += 1
                    else:
                        keep.append(row)
                if keep:
                    old_first = keep[0][0] if old_first is None else old_first
                    old_last = keep[-1][0]
                    copied += new._import_rows(keep)
            aggs = events = 0
            for table in ("agg_hour", "agg_day", "last_ts", "event"):
                try:
                    rows = old.execute(f"SELECT * FROM {table}").fetchall()
                except sqlite3.DatabaseError as e:
                    log.warning("salvage: table %s of %s is unreadable: %s", table, src, e)
                    continue
                n = new._import_table(table, rows)
                if table.startswith("agg"):
                    aggs += n
                elif table == "event":
                    events += n
            with new._tx("recording the salvage") as db:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('salvaged_from_stream', ?)",
                    (old_stream if old_stream is not None else -1,),
                )
            result = SalvageResult(
                src, dst, st, old_stream, new.stream, copied, old_first, old_last,
                unreadable, invalid, acked, rejected, aggs, events,
            )  # fmt: skip
        finally:
            new.close()
    return result

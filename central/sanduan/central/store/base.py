"""The store's contract and the SQL both backends share.

:class:`Store` is the protocol the rest of central programs against; :class:`SqlStore` holds the
logic common to SQLite and PostgreSQL (which differ only in connecting, transactions, bulk
writes and placeholders). Every method is synchronous and runs in its own transaction.

Thread safety: a store object may be called from any thread; calls are serialised by a lock,
so one store is one connection. Threads that want to write in parallel open a store each
(with SQLite they still take turns for the write lock).

Errors: every database error leaves as :class:`~sanduan.shared.errors.StoreError`, naming the
store URL (password hidden), the operation and, where there is one, the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar, Protocol, TypedDict
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from sanduan.central.core.dedupe import (
    CrossStream,
    Gap,
    ReadingContent,
    Retired,
    SampleKey,
    SeqState,
    advance,
    conflicts,
    cross_stream,
    gaps_from_json,
    gaps_to_json,
    give_up,
    held_before,
    resend_due,
    retire,
)
from sanduan.central.store.migrations import (
    LATEST,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    TABLES,
    WRITABLE,
    Dialect,
)
from sanduan.shared.errors import StoreError
from sanduan.shared.wire import (
    Batch,
    CommandResult,
    Event,
    SeqRange,
    Status,
    seq_ranges,
    to_json_obj,
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


DEAD_LETTER_KEEP = 4096
"""Payload bytes a dead letter keeps (its full size and SHA-256 are recorded too)."""


@dataclass(frozen=True, slots=True)
class StreamChange:
    """A station came back with a new stream: the old one was retired."""

    old_stream: int
    new_stream: int
    retired: Retired


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What :meth:`Store.store_batch` did: readings newly stored, readings already held with the
    same content (``duplicate``), seq ranges held with different content (``conflicts``: the
    originals kept, nothing stored over them), the station's seq state after the batch, and
    the stream change the batch caused, if any (``late``: the batch belongs to a stream
    retired before).

    Samples another stream of the station already holds (a replacement gateway reading its
    analyzers again) are not stored: ``reread`` counts those with the same value,
    ``sample_conflicts`` the seqs of those with another value (the first kept). Both are held
    for the station (acknowledged); a redelivered batch counts them as ``duplicate``."""

    new: int
    duplicate: int
    state: SeqState = field(default_factory=SeqState)
    conflicts: tuple[SeqRange, ...] = ()
    stream_change: StreamChange | None = None
    late: bool = False
    reread: int = 0
    sample_conflicts: tuple[SeqRange, ...] = ()

    @property
    def conflicting(self) -> int:
        return sum(b - a + 1 for a, b in self.conflicts)

    @property
    def sample_conflicting(self) -> int:
        return sum(b - a + 1 for a, b in self.sample_conflicts)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One dead letter, without its payload."""

    id: int
    station: str | None
    topic: str
    client: str | None
    reason: str
    detail: str | None
    size_bytes: int | None
    sha256: str | None
    received_ms: int


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One row of ``station_commands``: a command sent to a station and its result."""

    id: str
    station: str
    name: str
    args: str
    issued: int
    expires: int
    state: str
    result: bool | None = None
    message: str | None = None
    config_sha256: str | None = None
    answered_at: int | None = None


_COMMAND_COLS = (
    "id, station, name, args, issued, expires, state, result, message, config_sha256, answered_at"
)


@dataclass(frozen=True, slots=True)
class StationRow:
    """One row of ``stations``, with ``gaps`` parsed and ``last_status`` left as JSON text."""

    station: str
    online: bool | None
    last_seen_ms: int | None
    last_status: str | None
    agent_version: str | None
    max_seq: int | None
    contiguous_seq: int | None
    gaps: tuple[Gap, ...]
    last_resend_ms: int | None
    stream: int | None = None
    lost_with_buffer: int = 0
    rejects_over_budget: int = 0
    reread: int = 0
    """Readings of a replacement gateway not stored because an earlier stream of the station
    held the same sample."""

    @property
    def seq_state(self) -> SeqState:
        return SeqState(self.max_seq, self.contiguous_seq, self.gaps)


@dataclass(frozen=True, slots=True)
class ResendClaim:
    """Result of :meth:`Store.claim_resend`: ranges this caller should request now (empty if
    none are due or another collector just asked), and gaps given up as unrecoverable."""

    ranges: tuple[SeqRange, ...] = ()
    given_up: tuple[Gap, ...] = ()


class ReadingColumns(TypedDict):
    """Readings as numpy columns, ordered by station, code, ts_ms (then seq).

    ``value`` is float64 with NaN where the stored value is NULL (missing).
    """

    station: npt.NDArray[np.str_]
    seq: npt.NDArray[np.int64]
    ts_ms: npt.NDArray[np.int64]
    code: npt.NDArray[np.str_]
    value: npt.NDArray[np.float64]
    flag: npt.NDArray[np.str_]
    grade: npt.NDArray[np.int16]


class Store(Protocol):
    """The central collector's database. Open one with :func:`sanduan.central.store.open_store`."""

    url: str
    """The store URL with the password hidden."""

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``."""
        ...

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied (empty if up to date)."""
        ...

    def schema_version(self) -> int:
        """The highest applied migration (0 for an empty database)."""
        ...

    def check_schema(self) -> None:
        """Raise StoreError, saying what to do, unless the schema is the one this code knows."""
        ...

    def store_batch(self, batch: Batch, received_ms: int) -> StoreResult:
        """Store a batch's readings once per (station, stream, seq) and advance the station's
        seq state, in one transaction. When this returns, the batch is durably stored. A new
        stream retires the old one (a ``stream-changed`` station event); readings held with
        other content are left as they are (a ``conflict`` station event)."""
        ...

    def store_untracked(self, batches: Sequence[Batch], received_ms: int) -> int:
        """Store readings whose seqs are not a station's reading sequence (HJ 212 loggers: the
        seq is derived from the factor and the data time), once per (station, seq), all in one
        transaction, leaving the stations' seq state alone. Returns readings newly stored."""
        ...

    def readings(
        self,
        stations: Sequence[str] | None,
        start_ms: int,
        end_ms: int,
        codes: Sequence[str] | None = None,
    ) -> ReadingColumns:
        """Readings with ``start_ms <= ts_ms < end_ms`` (``None`` = all stations / codes)."""
        ...

    def count_readings(
        self,
        stations: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        codes: Sequence[str] | None = None,
    ) -> int: ...

    def replace_rows(
        self,
        table: str,
        key: Mapping[str, object],
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
    ) -> int:
        """Delete the rows of ``table`` matching every ``key`` column and insert ``rows``, in one
        transaction (a re-run of a computation replaces its earlier output). A key value that is
        a ``(low, high)`` tuple matches the half-open range ``low <= column < high``. Returns
        rows inserted."""
        ...

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None: ...

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement with ``?`` placeholders; returns its rows (empty if none)."""
        ...

    def start_run(
        self, kind: str, params: Mapping[str, object], started_ms: int | None = None
    ) -> int: ...

    def finish_run(
        self, run_id: int, result: Mapping[str, object], finished_ms: int | None = None
    ) -> None: ...

    def record_status(self, status: Status, received_ms: int) -> None: ...

    def record_event(self, event: Event) -> bool:
        """Store an event once per (station, event_id); True if it was new."""
        ...

    def dead_letter(
        self,
        topic: str,
        client: str | None,
        reason: str,
        raw: bytes,
        received_ms: int,
        *,
        station: str | None = None,
        detail: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> int:
        """Record a rejected message: ``reason`` is its category (``oversize``, ``conflict``,
        ...), ``detail`` the text. Keeps the first :data:`DEAD_LETTER_KEEP` bytes of ``raw``;
        ``size`` and ``sha256`` describe the whole payload (computed from ``raw`` if not
        given, for a caller that kept only the head)."""
        ...

    def dead_letters(
        self, station: str | None = None, since_ms: int | None = None
    ) -> list[DeadLetterRow]:
        """Dead letters, oldest first, optionally of one station and received since a time."""
        ...

    def count_over_budget(self, counts: Mapping[str, int]) -> None:
        """Add rejects that were only counted (the station's dead-letter budget was spent)."""
        ...

    def lost_with_buffer(self) -> dict[str, int]:
        """Readings each station lost with a buffer it replaced (the open gaps of its retired
        streams); stations that lost none are left out."""
        ...

    def stations(self) -> list[StationRow]: ...

    def record_command(self, row: CommandRow) -> None:
        """Record a command sent to a station (state ``sent``)."""
        ...

    def record_result(self, result: CommandResult, received_ms: int) -> bool:
        """Store a station's answer to a command; False if the command is another station's
        (left alone). An answer to a command this store does not know is kept too."""
        ...

    def commands(self, station: str | None = None, limit: int = 50) -> list[CommandRow]:
        """Recent commands, newest first, optionally of one station."""
        ...

    def command(self, command_id: str) -> CommandRow | None:
        """One command by its id (None when there is none)."""
        ...

    def last_commands(self) -> dict[str, CommandRow]:
        """The latest command of every station that has had one."""
        ...

    def claim_resend(
        self,
        station: str,
        now_ms: int,
        *,
        gap_timeout_ms: int,
        interval_ms: int,
        give_up_ms: int,
    ) -> ResendClaim:
        """Atomically decide whether ``station``'s gaps are due for a resend request and, if so,
        record the request time, so that collectors sharing the database do not both ask."""
        ...

    def maintain(self, now_ms: int) -> list[str]:
        """Periodic upkeep (PostgreSQL: create the monthly partitions of ``readings`` ahead);
        returns what it created. Nothing to do on SQLite."""
        ...

    def close(self) -> None: ...


def _adapt(v: object) -> object:
    """A Python value the drivers bind: JSON for containers, plain scalars for numpy ones,
    NULL for NaN."""
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _check_columns(table: str, names: Iterable[str]) -> None:
    if table not in WRITABLE:
        raise StoreError(
            f"table {table!r} cannot be written with replace_rows/insert_rows;"
            f" writable tables: {', '.join(sorted(WRITABLE))}"
        )
    known = TABLES[table]
    bad = [n for n in names if n not in known]
    if bad:
        raise StoreError(f"table {table} has no column(s) {bad}; columns: {', '.join(known)}")


def _json_dump(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)


_STATION_COLS = ", ".join(TABLES["stations"])
_HORIZON = len(TABLES["stations"])
"""Index, in a row of ``_station_row``, of the latest sample time of the station's retired
streams (None: none retired)."""
_UNTRACKED_CHUNK = 500
"""Rows per multi-row INSERT of :meth:`SqlStore.store_untracked`."""


def _samples(batch: Batch) -> list[SampleKey]:
    """``(code, ts_ms)`` of each reading of ``batch``."""
    return [(batch.codes[i], t) for i, t in zip(batch.code_idx, batch.ts_ms, strict=True)]


def _shown(ranges: Sequence[SeqRange]) -> str:
    return ", ".join(f"{a}..{b}" for a, b in ranges[:5]) + (", ..." if len(ranges) > 5 else "")


def _new_above(row: StationRow, stream: int) -> int | None:
    """A seq above which no reading of ``stream`` of the station is stored yet, from its seq
    state (None when the state does not say: another stream's)."""
    if row.max_seq is None and row.stream is None:
        return -1  # no batch of the station was ever stored
    if row.stream == stream and row.max_seq is not None:
        return row.max_seq
    return None


class SqlStore:
    """The SQL common to both backends, written with ``?`` placeholders."""

    dialect: ClassVar[Dialect]
    _for_update: ClassVar[str] = ""

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        self._lock = threading.RLock()

    # --- primitives the backends provide -----------------------------------------------

    @contextmanager
    def _tx(self, op: str, *, write: bool = True) -> Iterator[Any]:
        """A transaction (``write=False``: one that only reads, so SQLite need not take the
        write lock up front); yields a cursor to use with :meth:`_x`."""
        raise NotImplementedError
        yield None  # pragma: no cover

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        """Translate the driver's errors into StoreError for ``op``."""
        raise NotImplementedError
        yield  # pragma: no cover

    def _sql(self, sql: str) -> str:
        return sql

    def _x(self, cur: Any, sql: str, params: Sequence[object] = ()) -> Any:
        cur.execute(self._sql(sql), params)
        return cur

    def _insert_readings(
        self, cur: Any, batch: Batch, received_ms: int, new_above: int | None = None
    ) -> int:
        """Insert the batch's readings, skipping (station, stream, seq) already stored; returns
        new. ``new_above``: no reading of this station and stream with a higher seq is stored
        (None: not known)."""
        raise NotImplementedError

    def _bulk_insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> int:
        raise NotImplementedError

    def _has_migrations_table(self, cur: Any) -> bool:
        raise NotImplementedError

    def _migration_lock(self, cur: Any) -> None:
        """Serialise concurrent migrators (PostgreSQL); SQLite's write lock already does."""

    def _read_cursor(self) -> Any:
        raise NotImplementedError

    def maintain(self, now_ms: int) -> list[str]:
        """Periodic upkeep of the schema (PostgreSQL: monthly partitions of ``readings``);
        returns what it created. The collector runs it at start-up and hourly."""
        return []

    def close(self) -> None:
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------

    @staticmethod
    def reading_rows(batch: Batch, received_ms: int) -> Iterator[tuple[object, ...]]:
        """``readings`` rows of a batch, in column order (NaN values left as NaN)."""
        return zip(
            repeat(batch.station),
            batch.seq,
            batch.ts_ms,
            map(batch.codes.__getitem__, batch.code_idx),
            batch.values,
            "".join(batch.flags),
            batch.grades,
            repeat(batch.batch_seq),
            repeat(received_ms),
            repeat(batch.stream),
            strict=False,
        )

    def _fetchall(self, op: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._guard(op):
            cur = self._read_cursor()
            try:
                self._x(cur, sql, params)
                if cur.description is None:
                    return []
                return list(cur.fetchall())
            finally:
                cur.close()

    # --- schema -------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._lock, self._guard("read the schema version"):
            cur = self._read_cursor()
            try:
                if not self._has_migrations_table(cur):
                    return 0
                row = self._x(cur, "SELECT MAX(version) FROM schema_migrations").fetchone()
                return int(row[0] or 0)
            finally:
                cur.close()

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self._tx("create the migrations table") as cur:
            self._migration_lock(cur)
            self._x(cur, MIGRATIONS_TABLE)
        current = self.schema_version()
        if current > LATEST:
            raise self._too_new(current)
        for m in MIGRATIONS:
            if m.version <= current:
                continue
            with self._tx(f"apply migration {m.version} ({m.name})") as cur:
                self._migration_lock(cur)
                row = self._x(
                    cur, "SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,)
                ).fetchone()
                if row is not None:  # another process applied it meanwhile
                    continue
                for stmt in m.sql(self.dialect):
                    self._x(cur, stmt)
                self._x(
                    cur,
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                    (m.version, m.name, now_ms()),
                )
            applied.append(m.version)
        return applied

    def _too_new(self, version: int) -> StoreError:
        return StoreError(
            f"{self.url}: the database schema is version {version}, newer than this sanduan"
            f" knows ({LATEST}); upgrade sanduan before using this database"
        )

    def check_schema(self) -> None:
        """Raise StoreError unless the schema is exactly the version this code knows."""
        version = self.schema_version()
        if version == LATEST:
            return
        if version > LATEST:
            raise self._too_new(version)
        what = "has no sanduan schema" if version == 0 else f"is at schema version {version}"
        raise StoreError(
            f"{self.url}: the database {what} (this sanduan needs version {LATEST});"
            " run `sanduan central migrate --config <central.toml>` (or --store URL) first"
        )

    # --- ingest -------------------------------------------------------------------------

    def _station_row(self, cur: Any, station: str) -> tuple[Any, ...]:
        """Make sure the station's row exists and lock it for this transaction (one round trip
        for a known station: the insert is tried only when the row is not there)."""
        select = (
            f"SELECT {_STATION_COLS}, (SELECT MAX(s.last_ts_ms) FROM streams s"
            " WHERE s.station = stations.station)"
            f" FROM stations WHERE station = ?{self._for_update}"
        )
        row: tuple[Any, ...] | None = self._x(cur, select, (station,)).fetchone()
        if row is None:
            self._x(
                cur,
                "INSERT INTO stations (station) VALUES (?) ON CONFLICT (station) DO NOTHING",
                (station,),
            )
            row = self._x(cur, select, (station,)).fetchone()
        assert row is not None
        return row

    @staticmethod
    def _to_station(row: Sequence[Any]) -> StationRow:
        return StationRow(
            station=row[0],
            online=None if row[1] is None else bool(row[1]),
            last_seen_ms=row[2],
            last_status=row[3],
            agent_version=row[4],
            max_seq=row[5],
            contiguous_seq=row[6],
            gaps=gaps_from_json(row[7]),
            last_resend_ms=row[8],
            stream=row[9],
            lost_with_buffer=int(row[10] or 0),
            rejects_over_budget=int(row[11] or 0),
            reread=int(row[12] or 0),
        )

    def store_batch(self, batch: Batch, received_ms: int) -> StoreResult:
        ranges = seq_ranges(batch.seq)
        stream = batch.stream
        with self._tx(f"store batch {batch.batch_seq} of station {batch.station}") as cur:
            raw = self._station_row(cur, batch.station)
            row = self._to_station(raw)
            # Another stream of the station may hold some of these samples: the batch is of
            # another stream than the current one, or reaches back to a retired one's times.
            cross = (row.stream is not None and stream != row.stream) or (
                raw[_HORIZON] is not None and min(batch.ts_ms) <= raw[_HORIZON]
            )
            elsewhere: dict[SampleKey, list[float]] = {}
            stored = batch
            samples: list[SampleKey] = []
            if cross:
                upto = raw[_HORIZON] if stream == row.stream else None
                samples = _samples(batch)
                elsewhere = self._elsewhere(cur, batch, samples, stream, upto)
                if elsewhere:  # left out of the insert, sorted out below
                    stored = batch.subset([i for i, k in enumerate(samples) if k not in elsewhere])
            new = 0
            if stored.count:
                new = self._insert_readings(cur, stored, received_ms, _new_above(row, stream))
            bad: tuple[SeqRange, ...] = ()
            xs = CrossStream()
            if new < batch.count:
                bad, here = self._conflicts(cur, batch, stream)
                if bad:
                    self._conflict_event(cur, batch, stream, bad, received_ms)
                if elsewhere:
                    sent = (
                        (q, c, t, v)
                        for q, (c, t), v in zip(batch.seq, samples, batch.values, strict=True)
                    )
                    known = row.seq_state if row.stream == stream else SeqState()
                    xs = self._fresh(cross_stream(sent, here, elsewhere), known)
                    self._record_cross(cur, batch, stream, xs, received_ms)
            change: StreamChange | None = None
            late = False
            before = row.seq_state
            if row.stream is not None and stream != row.stream and row.max_seq is not None:
                late = self._retired(cur, batch.station, stream)
                if not late:
                    change = StreamChange(row.stream, stream, retire(before))
                    self._retire(cur, batch.station, change, received_ms)
                    before = SeqState()
            if late:
                after = before
                self._x(
                    cur,
                    "UPDATE stations SET last_seen_ms = ? WHERE station = ?",
                    (max(row.last_seen_ms or 0, received_ms), batch.station),
                )
                if new:
                    top = max(batch.ts_ms)
                    self._x(
                        cur,
                        "UPDATE streams SET last_ts_ms = ? WHERE station = ? AND stream = ?"
                        " AND (last_ts_ms IS NULL OR last_ts_ms < ?)",
                        (top, batch.station, stream, top),
                    )
            else:
                after = advance(before, ranges, received_ms)
                gaps = gaps_to_json(after.gaps) if after.gaps != row.gaps else None
                self._x(
                    cur,
                    "UPDATE stations SET max_seq = ?, contiguous_seq = ?, gaps = COALESCE(?, gaps),"
                    " last_seen_ms = ?, stream = ?,"
                    " last_resend_ms = CASE WHEN ? THEN NULL ELSE last_resend_ms END"
                    " WHERE station = ?",
                    (
                        after.max_seq,
                        after.contiguous_seq,
                        gaps,
                        max(row.last_seen_ms or 0, received_ms),
                        stream,
                        change is not None,
                        batch.station,
                    ),
                )
        n_bad = sum(b - a + 1 for a, b in bad)
        n_reread = sum(b - a + 1 for a, b in xs.reread)
        n_xbad = sum(b - a + 1 for a, b in xs.conflicts)
        return StoreResult(
            new=new,
            duplicate=batch.count - new - n_bad - n_reread - n_xbad,
            state=after,
            conflicts=bad,
            stream_change=change,
            late=late,
            reread=n_reread,
            sample_conflicts=xs.conflicts,
        )

    @staticmethod
    def _fresh(xs: CrossStream, known: SeqState) -> CrossStream:
        """``xs`` without the seqs ``known`` says were stored before (a redelivered batch: its
        re-reads were counted, its conflicts recorded, the first time)."""

        def keep(ranges: Sequence[SeqRange]) -> tuple[SeqRange, ...]:
            return seq_ranges(
                q for a, b in ranges for q in range(a, b + 1) if not held_before(known, q)
            )

        return CrossStream(keep(xs.reread), keep(xs.conflicts))

    def _elsewhere(
        self, cur: Any, batch: Batch, samples: list[SampleKey], stream: int, upto: int | None
    ) -> dict[SampleKey, list[float]]:
        """The samples of ``batch`` (``samples``, no later than ``upto``) that other streams of
        the station hold, with the values they hold: one range scan of
        ``readings_station_code_ts`` over the batch's codes and times (read in the transaction;
        the station row is locked)."""
        lo, hi = min(batch.ts_ms), max(batch.ts_ms)
        if upto is not None:
            hi = min(hi, upto)
        if lo > hi:
            return {}
        wanted = set(samples)
        codes = sorted({c for c, _ in wanted})
        rows = self._x(
            cur,
            "SELECT code, ts_ms, value FROM readings WHERE station = ?"
            f" AND code IN ({', '.join('?' * len(codes))}) AND ts_ms >= ? AND ts_ms <= ?"
            " AND stream <> ?",
            (batch.station, *codes, lo, hi, stream),
        ).fetchall()
        out: dict[SampleKey, list[float]] = {}
        for c, t, v in rows:
            key = (str(c), int(t))
            if key in wanted:
                out.setdefault(key, []).append(math.nan if v is None else float(v))
        return out

    def _record_cross(self, cur: Any, batch: Batch, stream: int, xs: CrossStream, at: int) -> None:
        """Count re-reads on the station, and raise a station event for each kind."""
        n = sum(b - a + 1 for a, b in xs.reread)
        if n:
            self._x(
                cur, "UPDATE stations SET reread = reread + ? WHERE station = ?", (n, batch.station)
            )
            self._event(
                cur,
                batch.station,
                at,
                "reread",
                f"{n} reading(s) of stream {stream} (seqs {_shown(xs.reread)}, batch"
                f" {batch.batch_seq}) are samples an earlier stream of the station holds with"
                " the same value (a replacement gateway read them again); not stored twice,"
                " acknowledged",
                {
                    "stream": stream,
                    "batch_seq": batch.batch_seq,
                    "readings": n,
                    "first_seq": xs.reread[0][0],
                    "last_seq": xs.reread[-1][1],
                },
                severity="info",
            )
        n = sum(b - a + 1 for a, b in xs.conflicts)
        if n:
            self._event(
                cur,
                batch.station,
                at,
                "conflict",
                f"{n} reading(s) of stream {stream} (seqs {_shown(xs.conflicts)}, batch"
                f" {batch.batch_seq}) are samples (parameter, sample time) another stream of"
                " the station holds with another value; the first stored is kept, the new"
                " value is a dead letter (acknowledged, so the station does not send it again)",
                {
                    "stream": stream,
                    "batch_seq": batch.batch_seq,
                    "readings": n,
                    "first_seq": xs.conflicts[0][0],
                    "last_seq": xs.conflicts[-1][1],
                    "cross_stream": True,
                },
            )

    def _conflicts(
        self, cur: Any, batch: Batch, stream: int
    ) -> tuple[tuple[SeqRange, ...], set[int]]:
        """Seq ranges of ``batch`` held with other content, and the seqs of the batch's range
        the stream holds (read back in the transaction)."""
        rows = self._x(
            cur,
            "SELECT seq, ts_ms, code, value, flag, grade FROM readings"
            " WHERE station = ? AND stream = ? AND seq >= ? AND seq <= ?",
            (batch.station, stream, batch.first_seq, batch.last_seq),
        ).fetchall()
        held: dict[int, ReadingContent] = {
            int(q): (int(t), str(c), math.nan if v is None else float(v), str(f), int(g))
            for q, t, c, v, f, g in rows
        }
        sent = (
            (q, (t, batch.codes[i], v, str(f), int(g)))
            for q, t, i, v, f, g in zip(
                batch.seq,
                batch.ts_ms,
                batch.code_idx,
                batch.values,
                batch.flags,
                batch.grades,
                strict=True,
            )
        )
        return conflicts(sent, held), set(held)

    def _event(  # noqa: PLR0917
        self,
        cur: Any,
        station: str,
        time_ms: int,
        kind: str,
        message: str,
        details: Mapping[str, object],
        *,
        severity: str = "critical",
    ) -> None:
        """A station event raised by the centre itself: negative event ids (-1, -2, ...), so
        they never collide with the station's own (positive) ids. The station row is locked."""
        (low,) = self._x(
            cur, "SELECT MIN(event_id) FROM events WHERE station = ? AND event_id < 0", (station,)
        ).fetchone()
        self._x(
            cur,
            "INSERT INTO events (station, event_id, time_ms, kind, code, severity, message,"
            " details) VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
            (station, int(low or 0) - 1, time_ms, kind, severity, message, _json_dump(details)),
        )

    def _conflict_event(
        self, cur: Any, batch: Batch, stream: int, bad: Sequence[SeqRange], at: int
    ) -> None:
        n = sum(b - a + 1 for a, b in bad)
        shown = ", ".join(f"{a}..{b}" for a, b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        self._event(
            cur,
            batch.station,
            at,
            "conflict",
            f"{n} reading(s) of stream {stream} arrived again with different content (seqs"
            f" {shown}, batch {batch.batch_seq}); the originals are kept, the new content is a"
            " dead letter",
            {
                "stream": stream,
                "batch_seq": batch.batch_seq,
                "readings": n,
                "first_seq": bad[0][0],
                "last_seq": bad[-1][1],
            },
        )

    def _retired(self, cur: Any, station: str, stream: int) -> bool:
        row = self._x(
            cur, "SELECT 1 FROM streams WHERE station = ? AND stream = ?", (station, stream)
        ).fetchone()
        return row is not None

    def _retire(self, cur: Any, station: str, change: StreamChange, at: int) -> None:
        r = change.retired
        (last_ts,) = self._x(
            cur,
            "SELECT MAX(ts_ms) FROM readings WHERE station = ? AND stream = ?",
            (station, change.old_stream),
        ).fetchone()
        self._x(
            cur,
            "INSERT INTO streams (station, stream, closed_ms, next_stream, max_seq,"
            " contiguous_seq, lost_gaps, lost_with_buffer, last_ts_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station, stream) DO NOTHING",
            (
                station,
                change.old_stream,
                at,
                change.new_stream,
                r.last_acked_seq,
                r.contiguous_seq,
                gaps_to_json(r.lost_gaps),
                r.lost,
                last_ts,
            ),
        )
        self._x(
            cur,
            "UPDATE stations SET lost_with_buffer = lost_with_buffer + ? WHERE station = ?",
            (r.lost, station),
        )
        gaps = " ".join(f"{g.first}..{g.last}" for g in r.lost_gaps[:10])
        if len(r.lost_gaps) > 10:
            gaps += " ..."
        self._event(
            cur,
            station,
            at,
            "stream-changed",
            f"the station sends a new stream {change.new_stream} (its buffer was made anew);"
            f" stream {change.old_stream} closed at last acknowledged seq {r.last_acked_seq},"
            f" {r.lost} reading(s) in {len(r.lost_gaps)} open gap(s) lost with the old buffer"
            + (f": {gaps}" if gaps else ""),
            {
                "old_stream": change.old_stream,
                "new_stream": change.new_stream,
                "last_acked_seq": r.last_acked_seq,
                "contiguous_seq": r.contiguous_seq,
                "open_gaps": len(r.lost_gaps),
                "lost_with_buffer": r.lost,
            },
        )

    def store_untracked(self, batches: Sequence[Batch], received_ms: int) -> int:
        rows: list[tuple[object, ...]] = [
            tuple(_adapt(v) for v in row)
            for b in batches
            for row in self.reading_rows(b, received_ms)
        ]
        if not rows:
            return 0
        cols = ", ".join(TABLES["readings"])
        new = 0
        with self._tx(f"store {len(rows)} readings of {len(batches)} logger packet(s)") as cur:
            for i in range(0, len(rows), _UNTRACKED_CHUNK):
                chunk = rows[i : i + _UNTRACKED_CHUNK]
                marks = ", ".join(["(" + ", ".join("?" * len(chunk[0])) + ")"] * len(chunk))
                self._x(
                    cur,
                    # No conflict target: the key differs by backend (PostgreSQL partitions
                    # add ts_ms to it); a logger reading's seq already fixes its time.
                    f"INSERT INTO readings ({cols}) VALUES {marks} ON CONFLICT DO NOTHING",
                    [v for row in chunk for v in row],
                )
                new += max(0, int(cur.rowcount))
            for station in sorted({b.station for b in batches}):
                self._station_row(cur, station)
                self._x(
                    cur,
                    "UPDATE stations SET last_seen_ms = ? WHERE station = ?"
                    " AND (last_seen_ms IS NULL OR last_seen_ms < ?)",
                    (received_ms, station, received_ms),
                )
        return new

    def record_status(self, status: Status, received_ms: int) -> None:
        doc = json.dumps(to_json_obj(status), separators=(",", ":"), sort_keys=True)
        with self._tx(f"record the status of station {status.station}") as cur:
            row = self._to_station(self._station_row(cur, status.station))
            self._x(
                cur,
                "UPDATE stations SET online = ?, last_status = ?, agent_version = ?,"
                " last_seen_ms = ? WHERE station = ?",
                (
                    status.online,
                    doc,
                    status.agent_version or row.agent_version,
                    max(row.last_seen_ms or 0, received_ms),
                    status.station,
                ),
            )

    def record_event(self, event: Event) -> bool:
        with self._tx(f"record event {event.event_id} of station {event.station}") as cur:
            self._x(
                cur,
                "INSERT INTO events (station, event_id, time_ms, kind, code, severity, message,"
                " details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (station, event_id) DO NOTHING",
                (
                    event.station,
                    event.event_id,
                    event.time_ms,
                    event.kind,
                    event.code,
                    str(event.severity),
                    event.message,
                    _json_dump(event.details),
                ),
            )
            return bool(cur.rowcount == 1)

    def dead_letter(
        self,
        topic: str,
        client: str | None,
        reason: str,
        raw: bytes,
        received_ms: int,
        *,
        station: str | None = None,
        detail: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> int:
        raw = bytes(raw)
        if sha256 is None:
            sha256 = hashlib.sha256(raw).hexdigest()
        with self._tx("record a dead letter") as cur:
            row = self._x(
                cur,
                "INSERT INTO dead_letters (received_ms, topic, client, reason, raw, station,"
                " detail, size_bytes, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    received_ms,
                    topic[:1024],
                    client,
                    reason[:64],
                    raw[:DEAD_LETTER_KEEP],
                    station,
                    None if detail is None else detail[:4096],
                    len(raw) if size is None else size,
                    sha256,
                ),
            ).fetchone()
            return int(row[0])

    def dead_letters(
        self, station: str | None = None, since_ms: int | None = None
    ) -> list[DeadLetterRow]:
        conds: list[str] = []
        params: list[object] = []
        if station is not None:
            conds.append("station = ?")
            params.append(station)
        if since_ms is not None:
            conds.append("received_ms >= ?")
            params.append(since_ms)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        rows = self._fetchall(
            "list dead letters",
            "SELECT id, station, topic, client, reason, detail, size_bytes, sha256, received_ms"
            f" FROM dead_letters{where} ORDER BY received_ms, id",
            params,
        )
        return [DeadLetterRow(*r) for r in rows]

    def count_over_budget(self, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        with self._tx("count rejects past the dead-letter budget") as cur:
            for station, n in sorted(counts.items()):
                self._station_row(cur, station)
                self._x(
                    cur,
                    "UPDATE stations SET rejects_over_budget = rejects_over_budget + ?"
                    " WHERE station = ?",
                    (n, station),
                )

    def lost_with_buffer(self) -> dict[str, int]:
        rows = self._fetchall(
            "count readings lost with replaced buffers",
            "SELECT station, lost_with_buffer FROM stations WHERE lost_with_buffer > 0"
            " ORDER BY station",
        )
        return {str(st): int(n) for st, n in rows}

    def stations(self) -> list[StationRow]:
        rows = self._fetchall(
            "list stations", f"SELECT {_STATION_COLS} FROM stations ORDER BY station"
        )
        return [self._to_station(r) for r in rows]

    def record_command(self, row: CommandRow) -> None:
        with self._tx(f"record command {row.id} for station {row.station}") as cur:
            self._x(
                cur,
                f"INSERT INTO station_commands ({_COMMAND_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.station,
                    row.name,
                    row.args,
                    row.issued,
                    row.expires,
                    row.state,
                    row.result,
                    row.message,
                    row.config_sha256,
                    row.answered_at,
                ),
            )

    def record_result(self, result: CommandResult, received_ms: int) -> bool:
        values = (result.state, result.ok, result.message, result.config_sha256, received_ms)
        with self._tx(f"record the result of command {result.command_id}") as cur:
            self._x(
                cur,
                "UPDATE station_commands SET state = ?, result = ?, message = ?,"
                " config_sha256 = ?, answered_at = ? WHERE id = ? AND station = ?",
                (*values, result.command_id, result.station),
            )
            if cur.rowcount == 1:
                return True
            self._x(
                cur,
                f"INSERT INTO station_commands ({_COMMAND_COLS})"
                " VALUES (?, ?, '-', '{}', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (result.command_id, result.station, result.time_ms, result.time_ms, *values),
            )
            return bool(cur.rowcount == 1)

    def _command_rows(self, sql: str, params: Sequence[object]) -> list[CommandRow]:
        rows = self._fetchall("list station commands", sql, params)
        return [
            CommandRow(
                id=str(r[0]),
                station=str(r[1]),
                name=str(r[2]),
                args=str(r[3]),
                issued=int(r[4]),
                expires=int(r[5]),
                state=str(r[6]),
                result=None if r[7] is None else bool(r[7]),
                message=r[8],
                config_sha256=r[9],
                answered_at=None if r[10] is None else int(r[10]),
            )
            for r in rows
        ]

    def command(self, command_id: str) -> CommandRow | None:
        rows = self._command_rows(
            f"SELECT {_COMMAND_COLS} FROM station_commands WHERE id = ?", [command_id]
        )
        return rows[0] if rows else None

    def commands(self, station: str | None = None, limit: int = 50) -> list[CommandRow]:
        where = " WHERE station = ?" if station is not None else ""
        params: list[object] = [station] if station is not None else []
        return self._command_rows(
            f"SELECT {_COMMAND_COLS} FROM station_commands{where}"
            " ORDER BY issued DESC, id DESC LIMIT ?",
            [*params, int(limit)],
        )

    def last_commands(self) -> dict[str, CommandRow]:
        rows = self._command_rows(
            f"SELECT {_COMMAND_COLS} FROM station_commands c WHERE issued = (SELECT MAX(issued)"
            " FROM station_commands d WHERE d.station = c.station) ORDER BY station, id",
            [],
        )
        return {r.station: r for r in rows}

    def claim_resend(
        self,
        station: str,
        now_ms: int,
        *,
        gap_timeout_ms: int,
        interval_ms: int,
        give_up_ms: int,
    ) -> ResendClaim:
        with self._tx(f"plan a resend request for station {station}") as cur:
            row = self._to_station(self._station_row(cur, station))
            state, dropped = give_up(row.seq_state, now_ms, give_up_ms)
            ranges = resend_due(state, row.last_resend_ms, now_ms, gap_timeout_ms, interval_ms)
            if ranges or dropped:
                self._x(
                    cur,
                    "UPDATE stations SET contiguous_seq = ?, gaps = ?, last_resend_ms = ?"
                    " WHERE station = ?",
                    (
                        state.contiguous_seq,
                        gaps_to_json(state.gaps),
                        now_ms if ranges else row.last_resend_ms,
                        station,
                    ),
                )
        return ResendClaim(ranges=ranges, given_up=dropped)

    # --- reading back -------------------------------------------------------------------

    @staticmethod
    def _where(
        stations: Sequence[str] | None,
        start_ms: int | None,
        end_ms: int | None,
        codes: Sequence[str] | None,
    ) -> tuple[str, list[object]]:
        parts: list[str] = []
        params: list[object] = []
        if stations is not None:
            parts.append(f"station IN ({', '.join('?' * len(stations))})" if stations else "0=1")
            params.extend(stations)
        if codes is not None:
            parts.append(f"code IN ({', '.join('?' * len(codes))})" if codes else "0=1")
            params.extend(codes)
        if start_ms is not None:
            parts.append("ts_ms >= ?")
            params.append(start_ms)
        if end_ms is not None:
            parts.append("ts_ms < ?")
            params.append(end_ms)
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def readings(
        self,
        stations: Sequence[str] | None,
        start_ms: int,
        end_ms: int,
        codes: Sequence[str] | None = None,
    ) -> ReadingColumns:
        where, params = self._where(stations, start_ms, end_ms, codes)
        rows = self._fetchall(
            "read readings",
            "SELECT station, seq, ts_ms, code, value, flag, grade FROM readings"
            f"{where} ORDER BY station, code, ts_ms, seq",
            params,
        )
        cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 7
        return ReadingColumns(
            station=np.array(cols[0], dtype=np.str_),
            seq=np.array(cols[1], dtype=np.int64),
            ts_ms=np.array(cols[2], dtype=np.int64),
            code=np.array(cols[3], dtype=np.str_),
            value=np.array(cols[4], dtype=np.float64),
            flag=np.array(cols[5], dtype=np.str_),
            grade=np.array(cols[6], dtype=np.int16),
        )

    def count_readings(
        self,
        stations: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        codes: Sequence[str] | None = None,
    ) -> int:
        where, params = self._where(stations, start_ms, end_ms, codes)
        rows = self._fetchall("count readings", f"SELECT COUNT(*) FROM readings{where}", params)
        return int(rows[0][0])

    # --- generic writers (analytics) ----------------------------------------------------

    def replace_rows(
        self,
        table: str,
        key: Mapping[str, object],
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
    ) -> int:
        _check_columns(table, [*key, *columns])
        conds: list[str] = []
        params: list[object] = []
        for k, v in key.items():
            if isinstance(v, tuple):
                low, high = v
                conds.append(f"{k} >= ? AND {k} < ?")
                params += [_adapt(low), _adapt(high)]
            else:
                conds.append(f"{k} = ?")
                params.append(_adapt(v))
        where = " AND ".join(conds) or "1=1"
        with self._tx(f"replace rows of {table}") as cur:
            self._x(cur, f"DELETE FROM {table} WHERE {where}", params)
            return self._bulk_insert(cur, table, columns, ([_adapt(v) for v in r] for r in rows))

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        _check_columns(table, columns)
        with self._tx(f"insert rows into {table}") as cur:
            self._bulk_insert(cur, table, columns, ([_adapt(v) for v in r] for r in rows))

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._tx("run a query", write=False) as cur:
            self._x(cur, sql, [_adapt(v) for v in params])
            if cur.description is None:
                return []
            return list(cur.fetchall())

    def start_run(
        self, kind: str, params: Mapping[str, object], started_ms: int | None = None
    ) -> int:
        with self._tx(f"start a {kind} run") as cur:
            row = self._x(
                cur,
                "INSERT INTO runs (kind, started_ms, params) VALUES (?, ?, ?) RETURNING run_id",
                (kind, now_ms() if started_ms is None else started_ms, _json_dump(params)),
            ).fetchone()
            return int(row[0])

    def finish_run(
        self, run_id: int, result: Mapping[str, object], finished_ms: int | None = None
    ) -> None:
        with self._tx(f"finish run {run_id}") as cur:
            self._x(
                cur,
                "UPDATE runs SET finished_ms = ?, result = ? WHERE run_id = ?",
                (now_ms() if finished_ms is None else finished_ms, _json_dump(result), run_id),
            )
            if cur.rowcount != 1:
                raise StoreError(f"{self.url}: there is no run {run_id} to finish")

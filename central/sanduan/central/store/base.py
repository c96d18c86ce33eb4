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
    Gap,
    SeqState,
    advance,
    gaps_from_json,
    gaps_to_json,
    give_up,
    resend_due,
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
from sanduan.shared.wire import Batch, Event, SeqRange, Status, seq_ranges, to_json_obj


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


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What :meth:`Store.store_batch` did: readings newly stored, readings already held, and the
    station's seq state after the batch."""

    new: int
    duplicate: int
    state: SeqState = field(default_factory=SeqState)


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
        """Store a batch's readings once per (station, seq) and advance the station's seq state,
        in one transaction. When this returns, the batch is durably stored."""
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
        self, topic: str, client: str | None, reason: str, raw: bytes, received_ms: int
    ) -> int: ...

    def stations(self) -> list[StationRow]: ...

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
_UNTRACKED_CHUNK = 500
"""Rows per multi-row INSERT of :meth:`SqlStore.store_untracked`."""


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

    def _insert_readings(self, cur: Any, batch: Batch, received_ms: int) -> int:
        """Insert the batch's readings, skipping (station, seq) already stored; returns new."""
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
        """Make sure the station's row exists and lock it for this transaction."""
        self._x(
            cur,
            "INSERT INTO stations (station) VALUES (?) ON CONFLICT (station) DO NOTHING",
            (station,),
        )
        row: tuple[Any, ...] = self._x(
            cur,
            f"SELECT {_STATION_COLS} FROM stations WHERE station = ?{self._for_update}",
            (station,),
        ).fetchone()
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
        )

    def store_batch(self, batch: Batch, received_ms: int) -> StoreResult:
        ranges = seq_ranges(batch.seq)
        with self._tx(f"store batch {batch.batch_seq} of station {batch.station}") as cur:
            row = self._to_station(self._station_row(cur, batch.station))
            new = self._insert_readings(cur, batch, received_ms)
            before = row.seq_state
            after = advance(before, ranges, received_ms)
            gaps = gaps_to_json(after.gaps) if after.gaps != before.gaps else None
            self._x(
                cur,
                "UPDATE stations SET max_seq = ?, contiguous_seq = ?, gaps = COALESCE(?, gaps),"
                " last_seen_ms = ? WHERE station = ?",
                (
                    after.max_seq,
                    after.contiguous_seq,
                    gaps,
                    max(row.last_seen_ms or 0, received_ms),
                    batch.station,
                ),
            )
        return StoreResult(new=new, duplicate=batch.count - new, state=after)

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
                    f"INSERT INTO readings ({cols}) VALUES {marks}"
                    " ON CONFLICT (station, seq) DO NOTHING",
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
        self, topic: str, client: str | None, reason: str, raw: bytes, received_ms: int
    ) -> int:
        with self._tx("record a dead letter") as cur:
            row = self._x(
                cur,
                "INSERT INTO dead_letters (received_ms, topic, client, reason, raw)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (received_ms, topic, client, reason[:4096], bytes(raw)),
            ).fetchone()
            return int(row[0])

    def stations(self) -> list[StationRow]:
        rows = self._fetchall(
            "list stations", f"SELECT {_STATION_COLS} FROM stations ORDER BY station"
        )
        return [self._to_station(r) for r in rows]

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

"""The PostgreSQL backend (psycopg 3).

Readings are written with binary ``COPY`` into a session-local temporary table and moved into
``readings`` with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which is what makes a batch
seen twice (or two overlapping batches, or two collectors racing on one batch) store each reading
once per (station, stream, seq). The station's row is locked (``SELECT ... FOR UPDATE``) first,
so batches of one station commit one after another while different stations proceed in parallel.

The URL is any libpq URL, ``postgresql://user:password@host:5432/db``; libpq options work too,
e.g. ``?options=-csearch_path%3Dsanduan`` to keep the tables in a schema of their own.
A lost connection is reopened on the next call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import repeat
from typing import Any, ClassVar

import psycopg

from sanduan.central.store.base import SqlStore
from sanduan.central.store.migrations import TABLES, Dialect
from sanduan.shared.errors import StoreError
from sanduan.shared.wire import Batch

_READING_COLS = ", ".join(TABLES["readings"])
_READING_TYPES = [
    "text",
    "int8",
    "int8",
    "text",
    "float8",
    "text",
    "int2",
    "int8",
    "int8",
    "int8",
]
_STAGE = "sanduan_readings_in"


@functools.lru_cache(maxsize=256)
def _translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (``%`` in the text is escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    dialect: ClassVar[Dialect] = "postgresql"
    _for_update: ClassVar[str] = " FOR UPDATE"

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        super().__init__(url)
        self._dsn = url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._staged = False
        with self._lock:
            self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        try:
            conn = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s
            )
        except psycopg.Error as e:
            raise StoreError(
                f"{self.url}: cannot connect: {str(e).strip()}; check that PostgreSQL is running"
                " there, that the database exists and that the user and password are right"
            ) from e
        self._conn = conn
        self._staged = False
        return conn

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            text = str(e).strip()
            fix = ""
            if isinstance(e, psycopg.errors.UndefinedTable):
                fix = "; run `sanduan central migrate`"
            elif isinstance(e, psycopg.OperationalError):
                fix = "; the connection failed and will be reopened on the next call"
            raise StoreError(f"{self.url}: cannot {op}: {text}{fix}") from e

    def _x(self, cur: Any, sql: str, params: Sequence[object] = ()) -> Any:
        if params:
            cur.execute(_translate(sql), params)
        else:
            cur.execute(sql)
        return cur

    @contextmanager
    def _tx(self, op: str, *, write: bool = True) -> Iterator[Any]:
        with self._lock, self._guard(op):
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except BaseException:
                # A stage table made in this transaction was rolled back with it.
                self._staged = False
                raise

    def _read_cursor(self) -> Any:
        return self._connection().cursor()

    def _has_migrations_table(self, cur: Any) -> bool:
        row = cur.execute("SELECT to_regclass('schema_migrations')").fetchone()
        return row is not None and row[0] is not None

    def _migration_lock(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")

    @staticmethod
    def copy_rows(batch: Batch, received_ms: int) -> Iterator[tuple[object, ...]]:
        """``readings`` rows of a batch with NaN as None (PostgreSQL stores NaN as a number)."""
        return zip(
            repeat(batch.station),
            batch.seq,
            batch.ts_ms,
            map(batch.codes.__getitem__, batch.code_idx),
            [None if math.isnan(v) else v for v in batch.values],
            "".join(batch.flags),
            batch.grades,
            repeat(batch.batch_seq),
            repeat(received_ms),
            repeat(batch.stream),
            strict=False,
        )

    def copy_readings(self, cur: Any, table: str, rows: Iterable[Sequence[object]]) -> None:
        """Binary COPY of ``readings`` rows into ``table`` (``readings`` or the stage)."""
        with cur.copy(f"COPY {table} ({_READING_COLS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_READING_TYPES)
            for row in rows:
                cp.write_row(row)

    def _insert_readings(self, cur: Any, batch: Batch, received_ms: int) -> int:
        if not self._staged:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE readings) ON COMMIT DELETE ROWS"
            )
            self._staged = True
        self.copy_readings(cur, _STAGE, self.copy_rows(batch, received_ms))
        cur.execute(
            f"INSERT INTO readings ({_READING_COLS}) SELECT {_READING_COLS} FROM {_STAGE}"
            " ON CONFLICT (station, stream, seq) DO NOTHING"
        )
        return int(cur.rowcount)

    def _bulk_insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> int:
        n = 0
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
                n += 1
        return n

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

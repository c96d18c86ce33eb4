"""The PostgreSQL backend (psycopg 3).

The station's row is locked (``SELECT ... FOR UPDATE``) first, so batches of one station
commit one after another while different stations proceed in parallel, and its seq state
(``max_seq``) says which readings cannot be stored yet. Two write paths:

- **Direct**: the batch is of the station's current stream and every seq of it is above the
  station's ``max_seq`` (the usual case, a backlog included), or no batch of the station was
  ever stored: binary ``COPY`` straight into ``readings``. Should the seq state ever
  disagree with the table (a reading with that seq already there), the primary key refuses the
  COPY and the batch is stored again through the staged path; nothing is lost or doubled.
- **Staged**: the batch may overlap what is stored (a resend, a duplicate delivery):
  binary ``COPY`` into a session-local temporary table, then
  ``INSERT ... SELECT`` of the rows whose (station, stream, seq) is not in ``readings`` yet
  (another stream's batch, a late one of a retired stream, always goes this way).

``readings`` is partitioned by month of ``ts_ms`` (UTC), one table ``readings_pYYYYMM`` per
month plus ``readings_default`` for months without one. :meth:`PostgresStore.maintain` (the
collector runs it at start-up and hourly) creates the current month and the next
:data:`MONTHS_AHEAD`, and moves any rows that landed in the default partition into their month.

The URL is any libpq URL, ``postgresql://user:password@host:5432/db``; libpq options work too,
e.g. ``?options=-csearch_path%3Dsanduan`` to keep the tables in a schema of their own.
A lost connection is reopened on the next call.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import repeat
from typing import Any, ClassVar

import psycopg

from sanduan.central.store.base import SqlStore, StoreResult
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
_STAGE_COLS = ", ".join(f"s.{c}" for c in TABLES["readings"])
MONTHS_AHEAD = 2
"""Monthly partitions created ahead of the current month by :meth:`PostgresStore.maintain`."""

log = logging.getLogger("sanduan.central.store")


def month_start_ms(year: int, month: int) -> int:
    """Unix ms of the first instant of a UTC month (``month`` may run past 12)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)


def month_of(ts_ms: int) -> tuple[int, int]:
    """(year, month) of a UTC Unix ms time."""
    d = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return d.year, d.month


def partition_name(year: int, month: int) -> str:
    return f"readings_p{year:04d}{month:02d}"


def months_to_keep(now_ms: int, ahead: int = MONTHS_AHEAD) -> list[tuple[int, int]]:
    """The months :meth:`PostgresStore.maintain` makes sure exist: this one and ``ahead`` more."""
    y, m = month_of(now_ms)
    out = []
    for k in range(ahead + 1):
        yy, mm = y + (m - 1 + k) // 12, (m - 1 + k) % 12 + 1
        out.append((yy, mm))
    return out


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
        self._stage_only = False  # set while a batch is retried after the direct path failed
        self.write_paths: dict[str, int] = {"direct": 0, "staged": 0, "retried": 0}
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

    def store_batch(self, batch: Batch, received_ms: int) -> StoreResult:
        try:
            return super().store_batch(batch, received_ms)
        except StoreError as e:
            if self._stage_only or not isinstance(e.__cause__, psycopg.errors.UniqueViolation):
                raise
        # The seq state said every seq was new but readings already held one: store the
        # batch again through the staged path, which skips what is there.
        log.warning(
            "%s: station %s batch %d: a reading above the station's max_seq was already"
            " stored; storing the batch through the duplicate-checking path",
            self.url,
            batch.station,
            batch.batch_seq,
        )
        self.write_paths["retried"] += 1
        self._stage_only = True
        try:
            return super().store_batch(batch, received_ms)
        finally:
            self._stage_only = False

    def _insert_readings(
        self, cur: Any, batch: Batch, received_ms: int, new_above: int | None = None
    ) -> int:
        rows = self.copy_rows(batch, received_ms)
        if new_above is not None and batch.seq[0] > new_above and not self._stage_only:
            # Nothing of this batch can be stored yet: no staging, no per-row conflict check.
            self.copy_readings(cur, "readings", rows)
            self.write_paths["direct"] += 1
            return batch.count
        if not self._staged:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE readings) ON COMMIT DELETE ROWS"
            )
            self._staged = True
        self.copy_readings(cur, _STAGE, rows)
        # (station, stream, seq) is the reading's identity; the partitioned primary key also
        # holds ts_ms, so the check is explicit. DISTINCT ON keeps one row per seq of the batch.
        cur.execute(
            f"INSERT INTO readings ({_READING_COLS})"
            f" SELECT DISTINCT ON (s.station, s.stream, s.seq) {_STAGE_COLS}"
            f" FROM {_STAGE} s WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE"
            " r.station = s.station AND r.stream = s.stream AND r.seq = s.seq)"
            " ON CONFLICT DO NOTHING"
        )
        self.write_paths["staged"] += 1
        return int(cur.rowcount)

    # --- partitions -----------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """The partitions of ``readings``, by name."""
        rows = self._fetchall(
            "list the partitions of readings",
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass('readings') ORDER BY c.relname",
        )
        return [str(r[0]) for r in rows]

    def maintain(self, now_ms: int) -> list[str]:
        """Create the monthly partitions of ``readings`` for this month and the next
        :data:`MONTHS_AHEAD`, and for every month with rows in the default partition (moving
        those rows into it). Returns the partitions created. Safe to run from several
        collectors at once (an advisory lock makes them take turns)."""
        if self._is_unpartitioned():
            return []
        wanted = set(months_to_keep(now_ms))
        wanted.update(self._default_months())
        created = []
        for year, month in sorted(wanted):
            if self._create_partition(year, month):
                created.append(partition_name(year, month))
        for name in created:
            log.info("%s: created partition %s of readings", self.url, name)
        return created

    def _is_unpartitioned(self) -> bool:
        rows = self._fetchall(
            "check how readings is partitioned",
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('readings')",
        )
        return not rows or rows[0][0] != "p"

    def _default_months(self) -> set[tuple[int, int]]:
        rows = self._fetchall(
            "list the months in readings_default",
            "SELECT DISTINCT (EXTRACT(YEAR FROM d)::int), (EXTRACT(MONTH FROM d)::int) FROM"
            " (SELECT to_timestamp(ts_ms / 1000.0) AT TIME ZONE 'UTC' AS d"
            " FROM readings_default) t",
        )
        return {(int(y), int(m)) for y, m in rows}

    def _create_partition(self, year: int, month: int) -> bool:
        name = partition_name(year, month)
        lo, hi = month_start_ms(year, month), month_start_ms(year, month + 1)
        with self._tx(f"create partition {name} of readings") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.parts'))")
            if cur.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
                return False
            # Created on its own, filled from the default partition, then attached: ATTACH
            # takes a lighter lock on readings than CREATE ... PARTITION OF, so ingest goes on.
            cur.execute(f"CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS)")
            cur.execute(
                f"WITH moved AS (DELETE FROM readings_default WHERE ts_ms >= {lo}"
                f" AND ts_ms < {hi} RETURNING {_READING_COLS})"
                f" INSERT INTO {name} ({_READING_COLS}) SELECT {_READING_COLS} FROM moved"
            )
            cur.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_range"
                f" CHECK (ts_ms >= {lo} AND ts_ms < {hi})"
            )
            cur.execute(
                f"ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            )
            cur.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
        return True

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

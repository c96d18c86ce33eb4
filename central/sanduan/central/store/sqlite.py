"""The SQLite backend: one file in WAL mode, the embedded default.

URLs follow the usual convention: ``sqlite:///relative/path.db`` (relative to the working
directory), ``sqlite:////absolute/path.db``, ``sqlite:///:memory:`` (tests). The query string may
set ``synchronous=NORMAL`` (faster, but a power cut can lose the last commits, which the
stations have already deleted after their acks); the default is ``FULL``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from sanduan.central.store.base import SqlStore
from sanduan.central.store.migrations import Dialect
from sanduan.shared.errors import StoreError
from sanduan.shared.wire import Batch

_INSERT_READINGS = (
    "INSERT INTO readings (station, seq, ts_ms, code, value, flag, grade, batch_seq, received_ms,"
    " stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station, stream, seq) DO NOTHING"
)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///`` URL (``:memory:`` for an in-memory database)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or len(parts.path) < 2:
        raise StoreError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/file.db or sqlite:////abs/file.db"
        )
    return parts.path[1:]


class SqliteStore(SqlStore):
    dialect: ClassVar[Dialect] = "sqlite"

    def __init__(self, url: str, *, create: bool = False, busy_timeout_s: float = 30.0) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        query = parse_qs(urlsplit(url).query)
        sync = query.get("synchronous", ["FULL"])[0].upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"{self.url}: synchronous must be FULL, NORMAL or EXTRA, not {sync}")
        memory = self.path == ":memory:"
        if not memory and not create and not Path(self.path).exists():
            raise StoreError(
                f"{self.url}: there is no database file {Path(self.path).resolve()};"
                " create it with `sanduan central migrate`"
            )
        mode = "rwc" if create else "rw"
        target = self.path if memory else f"{Path(self.path).absolute().as_uri()}?mode={mode}"
        with self._guard("open the database"):
            self._conn = sqlite3.connect(
                target,
                uri=not memory,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_s,
            )
            if not memory:
                self._set_wal(busy_timeout_s)
            self._conn.execute(f"PRAGMA synchronous={sync}")

    def _set_wal(self, timeout_s: float) -> None:
        """Switch to WAL. SQLite answers "locked" at once, without waiting on the busy timeout,
        while another connection is creating the same new file, so retry until the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            text = str(e)
            fix = ""
            if "locked" in text or "busy" in text:
                fix = "; another process holds the write lock for too long"
            elif "no such table" in text:
                fix = "; run `sanduan central migrate`"
            elif "readonly" in text or "unable to open" in text:
                fix = "; check that the file and its directory are writable"
            raise StoreError(f"{self.url}: cannot {op}: {text}{fix}") from e

    @contextmanager
    def _tx(self, op: str, *, write: bool = True) -> Iterator[Any]:
        with self._lock, self._guard(op):
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                with suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _read_cursor(self) -> Any:
        return self._conn.cursor()

    def _has_migrations_table(self, cur: Any) -> bool:
        row = cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        return row is not None

    def _insert_readings(
        self, cur: Any, batch: Batch, received_ms: int, new_above: int | None = None
    ) -> int:
        before = self._conn.total_changes
        cur.executemany(_INSERT_READINGS, self.reading_rows(batch, received_ms))
        return self._conn.total_changes - before

    def _bulk_insert(
        self, cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> int:
        before = self._conn.total_changes
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        return self._conn.total_changes - before

    def close(self) -> None:
        with self._lock, suppress(sqlite3.Error):
            self._conn.close()

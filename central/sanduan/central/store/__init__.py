"""The central collector's database: one schema, two backends chosen by URL.

``open_store("sqlite:///central.db")`` or ``open_store("postgresql://user@host/db")`` returns a
:class:`Store`. It refuses a database whose schema is missing, older or newer than this code
(run ``sanduan central migrate``), unless opened with ``migrate=True``, which applies pending
migrations first.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sanduan.central.store.base import (
    DEAD_LETTER_KEEP,
    CommandRow,
    DeadLetterRow,
    ReadingColumns,
    ResendClaim,
    StationRow,
    Store,
    StoreResult,
    StreamChange,
    redact_url,
)
from sanduan.shared.errors import StoreError

__all__ = [
    "DEAD_LETTER_KEEP",
    "CommandRow",
    "DeadLetterRow",
    "ReadingColumns",
    "ResendClaim",
    "StationRow",
    "Store",
    "StoreResult",
    "StreamChange",
    "open_store",
    "redact_url",
]


def open_store(url: str, *, migrate: bool = False) -> Store:
    """Open the store at ``url``; with ``migrate=True`` create or upgrade its schema first.

    Raises :class:`StoreError` if the database cannot be opened or its schema version is not
    the one this code was written for.
    """
    scheme = urlsplit(url).scheme
    store: Store
    if scheme == "sqlite":
        from sanduan.central.store.sqlite import SqliteStore

        store = SqliteStore(url, create=migrate)
    elif scheme in ("postgresql", "postgres"):
        from sanduan.central.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise StoreError(
            f"unknown store URL {redact_url(url)!r}: use sqlite:///path/to/file.db or"
            " postgresql://user@host:5432/database"
        )
    try:
        if migrate:
            store.migrate()
        store.check_schema()
    except BaseException:
        store.close()
        raise
    return store

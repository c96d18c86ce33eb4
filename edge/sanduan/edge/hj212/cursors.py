"""The HJ 212 platforms' cursors in the station buffer, as the agent reads and prunes them
whether or not a platform is configured (the link itself, :mod:`.uplink`, is imported only
when one is)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

__all__ = ["cursor_report", "prune_cursors"]


def prune_cursors(path: Path | str, keep: list[str]) -> int:
    """Forget cursors of uplinks no longer configured (they would hold readings for ever)."""
    with contextlib.closing(sqlite3.connect(str(path), timeout=30.0)) as db:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'uplink_cursor'"
        ).fetchone()
        if not exists:
            return 0
        marks = ", ".join("?" * len(keep)) or "''"
        cur = db.execute(f"DELETE FROM uplink_cursor WHERE uplink NOT IN ({marks})", keep)
        db.commit()
        return int(cur.rowcount)


def cursor_report(buffer_path: Path | str) -> list[tuple[str, str, int, int]]:
    """(uplink, kind, pos, dropped) of every HJ 212 cursor in a buffer file."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer_path}?mode=ro", uri=True)) as db:
        try:
            rows = db.execute(
                "SELECT uplink, kind, pos, dropped FROM uplink_cursor ORDER BY uplink, kind"
            ).fetchall()
        except sqlite3.Error:
            return []
    return [(str(u), str(k), int(p), int(d)) for u, k, p, d in rows]

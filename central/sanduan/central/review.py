"""Review marks in the store (the I/O shell of :mod:`sanduan.central.core.review`).

``review_marks`` is append-only: it is both the marks the assessment applies and the audit
trail (who, when, why, and the span's readings before and after the mark).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sanduan.central.core.review import Mark, ReasonCode, apply_marks, valid_count
from sanduan.central.store.base import now_ms
from sanduan.shared.errors import InputError

if TYPE_CHECKING:
    from sanduan.central.store import Store

_COLS = (
    "id, time_ms, reviewer, action, level, station, code, start_ms, end_ms, reason, note,"
    " before, after"
)


def _mark(r: tuple[Any, ...]) -> Mark:
    return Mark(
        int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], int(r[7]), int(r[8]), r[9], r[10]
    )


def load_marks(
    store: Store,
    *,
    station: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Mark]:
    """Marks overlapping [start_ms, end_ms) (of ``station``), in the order they were made."""
    return [m for m, _, _ in load_audit(store, station=station, start_ms=start_ms, end_ms=end_ms)]


def load_audit(
    store: Store,
    *,
    station: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[tuple[Mark, dict[str, Any], dict[str, Any]]]:
    """Marks with the before and after of their span."""
    conds: list[str] = []
    params: list[object] = []
    if station is not None:
        conds.append("station = ?")
        params.append(station)
    if start_ms is not None:
        conds.append("end_ms > ?")
        params.append(start_ms)
    if end_ms is not None:
        conds.append("start_ms < ?")
        params.append(end_ms)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    rows = store.query(f"SELECT {_COLS} FROM review_marks{where} ORDER BY time_ms, id", params)
    return [
        (_mark(r), json.loads(r[11]) if r[11] else {}, json.loads(r[12]) if r[12] else {})
        for r in rows
    ]


def add_mark(
    store: Store,
    mark: Mark,
    reasons: dict[str, ReasonCode],
    excluded_flags: Iterable[str],
    stations: Iterable[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record ``mark`` (its ``id`` and ``time_ms`` are assigned here) with the before and after
    of its span; returns (before, after)."""
    if not mark.reviewer.strip():
        raise InputError("a review mark needs the reviewer's name: give --reviewer NAME")
    if mark.reason not in reasons:
        raise InputError(f"unknown reason code {mark.reason!r}; reason codes: {', '.join(reasons)}")
    if stations is not None and mark.station not in set(stations):
        raise InputError(f"station {mark.station!r} is not in the county file")
    if mark.end_ms <= mark.start_ms:
        raise InputError("a review mark's span is empty")
    columns = store.readings([mark.station], mark.start_ms, mark.end_ms)
    earlier = load_marks(store, station=mark.station, start_ms=mark.start_ms, end_ms=mark.end_ms)
    if int(columns["ts_ms"].shape[0]) == 0:
        raise InputError(
            f"station {mark.station} has no readings in the span to review; check the time"
            " (local to the county's time zone) and the station id"
        )
    excluded = list(excluded_flags)
    before = valid_count(apply_marks(columns, earlier), excluded, mark)
    now = now_ms()
    stamped = Mark(
        0,
        now,
        mark.reviewer,
        mark.action,
        mark.level,
        mark.station,
        mark.parameter,
        mark.start_ms,
        mark.end_ms,
        mark.reason,
        mark.note,
    )
    after = valid_count(apply_marks(columns, [*earlier, stamped]), excluded, mark)
    store.insert_rows(
        "review_marks",
        (
            "time_ms",
            "reviewer",
            "action",
            "level",
            "station",
            "code",
            "start_ms",
            "end_ms",
            "reason",
            "note",
            "before",
            "after",
        ),
        [
            (
                now,
                mark.reviewer,
                mark.action,
                mark.level,
                mark.station,
                mark.parameter,
                mark.start_ms,
                mark.end_ms,
                mark.reason,
                mark.note,
                before,
                after,
            )
        ],
    )
    return before, after


def stored_ledger(store: Store, kind: str, label: str) -> list[dict[str, Any]]:
    """The ledger rows last computed for a period."""
    rows = store.query(
        "SELECT rule, payer, payee, amount_yuan, status, evidence, run_id FROM ledger"
        " WHERE period = ? AND label = ? ORDER BY id",
        [kind, label],
    )
    return [
        {
            "rule": r[0],
            "payer": r[1],
            "payee": r[2],
            "amount_yuan": r[3],
            "status": r[4],
            "evidence": json.loads(r[5]) if r[5] else {},
            "run_id": r[6],
        }
        for r in rows
    ]


def last_run_started(store: Store, kind: str, label: str) -> int | None:
    """When the latest analytics run of the period started (to list marks made since)."""
    best: int | None = None
    for started, params in store.query(
        "SELECT started_ms, params FROM runs WHERE kind = 'analytics'", []
    ):
        p = json.loads(params) if params else {}
        if p.get("period") == kind and p.get("label") == label and (best is None or started > best):
            best = int(started)
    return best

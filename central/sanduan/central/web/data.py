"""What the console shows, read from the central store: plain rows for the templates.

Every function takes a :class:`~sanduan.central.store.Store` and returns plain data; nothing here
writes. The console reads results that ``sanduan central`` computed and stored (assessments,
ledger, aggregates) and the collector's station table, so a page never recomputes a month.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sanduan.central.core.county import County

if TYPE_CHECKING:
    from sanduan.central.store import Store

__all__ = [
    "LedgerRow",
    "SectionRow",
    "StationRow",
    "flag_marks",
    "labels",
    "latest_label",
    "ledger_rows",
    "period_bounds",
    "rates",
    "section_rows",
    "series",
    "station_rows",
    "table_exists",
]


def _json(text: object) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def table_exists(store: Store, table: str) -> bool:
    """Whether the store has ``table`` (views of features a newer schema adds)."""
    if store.dialect == "sqlite":
        rows = store.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
    else:
        rows = store.query(
            "SELECT 1 FROM information_schema.tables WHERE table_name = ?"
            " AND table_schema = current_schema()",
            (table,),
        )
    return bool(rows)


def labels(store: Store, kind: str) -> list[str]:
    """Period labels (``YYYY-MM`` for months, ``YYYY`` for years) with stored assessments,
    newest first."""
    rows = store.query(
        "SELECT DISTINCT label FROM assessments WHERE period = ? ORDER BY label DESC", (kind,)
    )
    return [str(r[0]) for r in rows]


def latest_label(store: Store, kind: str = "month") -> str | None:
    rows = store.query("SELECT MAX(label) FROM assessments WHERE period = ?", (kind,))
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def period_bounds(label: str, tz: str) -> tuple[int, int]:
    """``[start, end)`` in ms UTC of a local calendar month ``YYYY-MM`` or year ``YYYY``."""
    zone = ZoneInfo(tz)
    if len(label) == 7:
        y, m = int(label[:4]), int(label[5:])
        start = datetime(y, m, 1, tzinfo=zone)
        end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=zone)
    else:
        y = int(label)
        start, end = datetime(y, 1, 1, tzinfo=zone), datetime(y + 1, 1, 1, tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class SectionRow:
    id: str
    name: str
    river: str
    town: str
    target: int
    assessed: bool
    grade: int | None
    meets: bool | None
    valid: bool
    main_pollutants: list[str] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)


def section_rows(store: Store, county: County, kind: str, label: str | None) -> list[SectionRow]:
    """Every section of the county with its stored assessment for the period (if any)."""
    stored: dict[str, tuple[Any, ...]] = {}
    if label is not None:
        for found in store.query(
            "SELECT section, grade, meets_target, valid, details FROM assessments"
            " WHERE period = ? AND label = ?",
            (kind, label),
        ):
            stored[str(found[0])] = found
    town_of: dict[str, str] = {}
    for town in county.towns.values():
        for sid in (town.outflow, *(i.section for i in town.inflows)):
            town_of.setdefault(sid, town.name or town.id)
    out: list[SectionRow] = []
    for sec in county.sections.values():
        row: tuple[Any, ...] | None = stored.get(sec.id)
        details = _json(row[4]) if row else {}
        valid = bool(row[3]) if row else False
        grade = int(row[1]) if row and row[1] is not None and valid else None
        meets = bool(row[2]) if row and row[2] is not None and valid else None
        mp = details.get("main_pollutants") or []
        river = county.rivers.get(sec.river)
        out.append(
            SectionRow(
                id=sec.id,
                name=sec.name or sec.id,
                river=(river.name or river.id) if river else sec.river,
                town=town_of.get(sec.id, ""),
                target=sec.target_class,
                assessed=sec.assessed,
                grade=grade,
                meets=meets,
                valid=valid,
                main_pollutants=[_pollutant(p) for p in mp],
                items={
                    k: v for k, v in (details.get("items") or {}).items() if isinstance(v, dict)
                },
            )
        )
    return out


def _pollutant(p: object) -> str:
    """``NH3-N (0.29×)``: a main pollutant with its exceedance multiple, as stored."""
    if not isinstance(p, dict):
        return str(p)
    name = str(p.get("item") or p.get("parameter") or p.get("name") or "?")
    mult = p.get("multiple", p.get("exceedance"))
    return f"{name} ({mult:.2f}×)" if isinstance(mult, int | float) else name


def rates(rows: Sequence[SectionRow]) -> tuple[int, float | None, float | None]:
    """``(n, 功能达标率, 优良率)`` over assessed sections with a valid class (rates in %)."""
    graded = [r for r in rows if r.assessed and r.grade is not None]
    if not graded:
        return 0, None, None
    n = len(graded)
    meets = sum(1 for r in graded if r.meets)
    good = sum(1 for r in graded if r.grade is not None and r.grade <= 3)
    return n, 100.0 * meets / n, 100.0 * good / n


@dataclass(frozen=True, slots=True)
class StationRow:
    id: str
    name: str
    section: str
    online: bool | None
    last_seen_ms: int | None
    buffer_depth: int | None
    oldest_unacked_s: float | None
    gaps: int
    clock_offset_s: float | None
    device_errors: int
    errors_by_device: dict[str, int]


def station_rows(store: Store, county: County) -> list[StationRow]:
    """Every station the county or the collector knows, with its last heartbeat's figures."""
    seen: dict[str, tuple[Any, ...]] = {}
    for found in store.query(
        "SELECT station, online, last_seen_ms, last_status, gaps FROM stations"
    ):
        seen[str(found[0])] = found
    ids = list(county.stations) + sorted(s for s in seen if s not in county.stations)
    out: list[StationRow] = []
    for sid in ids:
        row: tuple[Any, ...] | None = seen.get(sid)
        status = _json(row[3]) if row else {}
        gaps_obj: Any = []
        if row and isinstance(row[4], str):
            try:
                gaps_obj = json.loads(row[4])
            except ValueError:
                gaps_obj = []
        errs = {str(k): int(v) for k, v in (status.get("device_errors") or {}).items()}
        st = county.stations.get(sid)
        sec = county.section_of_station(sid)
        out.append(
            StationRow(
                id=sid,
                name=(st.name if st else "") or sid,
                section=sec.id if sec else "",
                online=None if row is None or row[1] is None else bool(row[1]),
                last_seen_ms=int(row[2]) if row and row[2] is not None else None,
                buffer_depth=status.get("buffer_depth"),
                oldest_unacked_s=status.get("oldest_unacked_age_s"),
                gaps=len(gaps_obj) if isinstance(gaps_obj, list | dict) else 0,
                clock_offset_s=status.get("clock_offset_s"),
                device_errors=sum(errs.values()),
                errors_by_device=errs,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class SeriesData:
    t_ms: list[int]
    mean: list[float]
    valid: list[bool]


def series(
    store: Store, station: str, code: str, *, level: str, start: int, end: int
) -> SeriesData:
    """Stored aggregate means of one parameter at one level (``hour``, ``day``, ``month``)."""
    rows = store.query(
        "SELECT start_ms, mean, valid FROM aggregates WHERE station = ? AND code = ?"
        " AND period = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
        (station, code, level, start, end),
    )
    return SeriesData(
        t_ms=[int(r[0]) for r in rows],
        mean=[math.nan if r[1] is None else float(r[1]) for r in rows],
        valid=[bool(r[2]) for r in rows],
    )


def flag_marks(
    store: Store, station: str, code: str, *, start: int, end: int, bucket_ms: int
) -> dict[int, str]:
    """Flags other than N of one parameter, by the start of their ``bucket_ms`` bucket
    (several in a bucket are joined, e.g. ``"MC"``)."""
    rows = store.query(
        "SELECT ts_ms, flag FROM readings WHERE station = ? AND code = ? AND ts_ms >= ?"
        " AND ts_ms < ? AND flag <> 'N'",
        (station, code, start, end),
    )
    out: dict[int, str] = {}
    for ts, flag in rows:
        b = start + (int(ts) - start) // bucket_ms * bucket_ms
        if flag not in out.get(b, ""):
            out[b] = out.get(b, "") + str(flag)
    return out


@dataclass(frozen=True, slots=True)
class LedgerRow:
    rule: str
    payer: str
    payee: str
    amount: float
    status: str
    formula: str
    classes: dict[str, Any]
    means: dict[str, Any]
    inputs: dict[str, Any]
    evidence: dict[str, Any]


def ledger_rows(store: Store, kind: str, label: str) -> list[LedgerRow]:
    rows = store.query(
        "SELECT rule, payer, payee, amount_yuan, status, evidence FROM ledger"
        " WHERE period = ? AND label = ? ORDER BY rule, id",
        (kind, label),
    )
    out: list[LedgerRow] = []
    for rule, payer, payee, amount, status, evidence in rows:
        ev = _json(evidence)
        out.append(
            LedgerRow(
                rule=str(rule),
                payer=str(payer or ""),
                payee=str(payee or ""),
                amount=float(amount or 0.0),
                status=str(status),
                formula=str(ev.get("formula", "")),
                classes=ev.get("classes") or {},
                means=ev.get("means") or {},
                inputs=ev.get("inputs") or {},
                evidence=ev,
            )
        )
    return out


def local_time(ms: int | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime(fmt)


def month_days(label: str) -> int:
    y, m = int(label[:4]), int(label[5:])
    nxt = datetime(y + (m == 12), m % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day

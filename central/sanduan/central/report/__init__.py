"""Reports of an analytics result: rich tables, JSON, CSV and a self-contained HTML page.

Importing this package stays light (no numpy): ``sanduan --help`` imports the report commands.

The documents are plain data built from :class:`~sanduan.central.analytics.AnalyticsResult`;
:mod:`.tables` renders them for the terminal and :mod:`.html` as HTML with embedded SVG charts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult

__all__ = [
    "LEDGER_COLUMNS",
    "SECTION_COLUMNS",
    "compensation_document",
    "ledger_rows",
    "net_by_party",
    "section_rows",
    "sections_document",
    "write_csv",
]

SECTION_COLUMNS = (
    "label",
    "section",
    "name",
    "water_body",
    "target_class",
    "valid",
    "class",
    "meets_target",
    "main_pollutants",
    "exceeding_target",
    "means",
    "missing",
)
LEDGER_COLUMNS = (
    "rule",
    "period",
    "label",
    "payer",
    "payee",
    "amount_yuan",
    "status",
    "component",
    "town",
)


_LABELS = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "劣V"}


def _label(g: int | None) -> str:
    return "" if g is None else _LABELS.get(g, "-")


def section_rows(result: AnalyticsResult) -> list[dict[str, Any]]:
    """One row per section and period (for a year also each month), for CSV."""
    return [
        {
            "label": r.period.label,
            "section": r.section,
            "name": r.name,
            "water_body": str(r.water_body),
            "target_class": _label(r.target_class),
            "valid": r.valid,
            "class": _label(r.grade),
            "meets_target": "" if r.meets_target is None else r.meets_target,
            "main_pollutants": " ".join(
                f"{n}({e:.2f})" if e is not None else n for n, e in r.main_pollutants
            ),
            "exceeding_target": " ".join(
                f"{n}({e:.2f})" if e is not None else n for n, e in r.exceeding_target
            ),
            "means": " ".join(
                f"{n}={it.reported()}" for n, it in r.items.items() if it.mean.value is not None
            ),
            "missing": " ".join(r.missing),
        }
        for r in result.assessment.all_results()
    ]


def ledger_rows(result: AnalyticsResult) -> list[dict[str, Any]]:
    return [
        {
            "rule": e.rule,
            "period": e.period,
            "label": e.label,
            "payer": e.payer,
            "payee": e.payee,
            "amount_yuan": e.amount_yuan,
            "status": e.status,
            "component": e.evidence.get("component", ""),
            "town": e.evidence.get("town", ""),
        }
        for e in result.ledger
    ]


def net_by_party(result: AnalyticsResult) -> dict[str, float]:
    """Received minus paid per party (towns and the county fund), in yuan."""
    net: dict[str, float] = dict.fromkeys(result.county.towns, 0.0)
    net.setdefault(result.county.fund, 0.0)
    for e in result.ledger:
        net[e.payer] = net.get(e.payer, 0.0) - e.amount_yuan
        net[e.payee] = net.get(e.payee, 0.0) + e.amount_yuan
    return {k: round(v, 2) for k, v in net.items()}


def _meta(result: AnalyticsResult) -> dict[str, Any]:
    return {
        "period": result.period.kind,
        "label": result.period.label,
        "county": result.county.name,
        "timezone": result.county.timezone,
        "run_id": result.run_id,
        "validity": result.validity.describe(),
    }


def sections_document(result: AnalyticsResult) -> dict[str, Any]:
    """The ``report sections --json`` document."""
    return {**_meta(result), **result.assessment.to_json()}


def compensation_document(result: AnalyticsResult) -> dict[str, Any]:
    """The ``report compensation --json`` document."""
    return {
        **_meta(result),
        "rules": result.rules.to_json(),
        "ledger": [e.to_json() for e in result.ledger],
        "net_yuan": net_by_party(result),
        "total_yuan": round(sum(e.amount_yuan for e in result.ledger), 2),
    }


def write_csv(path: Path | str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
            n += 1
    return n

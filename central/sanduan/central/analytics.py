"""From stored readings to aggregates, section assessments and the compensation ledger.

:func:`compute_from_readings` is the pure path (readings columns in, typed results out), used by
the HIL rig to compute a truth-log ledger; :func:`compute` reads the readings from a store, runs
the pure path and writes ``aggregates``, ``assessments``, ``ledger`` and a ``runs`` audit row.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sanduan.central.core.assessment import Assessment, assess, means_by_section
from sanduan.central.core.compensation import LedgerEntry, RuleSet, settle
from sanduan.central.core.county import County
from sanduan.central.core.review import REVIEW_FLAG, Mark, apply_marks
from sanduan.central.core.validity import (
    Aggregates,
    LevelMeans,
    Mean,
    Period,
    ValidityRules,
    aggregate,
    calendar,
    group_readings,
)
from sanduan.central.store.migrations import TABLES
from sanduan.shared.config import ValidityConfig
from sanduan.shared.params import resolve

if TYPE_CHECKING:
    from rich.progress import Progress

    from sanduan.central.store import Store

__all__ = [
    "AnalyticsResult",
    "compute",
    "compute_from_readings",
    "evaluate",
    "read_reviewed",
    "validity_rules",
]

RUN_KIND = "analytics"
ALL_LEVELS = ("hour", "day", "month", "year")
Step = Callable[[str], None]


@dataclass(frozen=True, slots=True, eq=False)
class AnalyticsResult:
    period: Period
    county: County
    rules: RuleSet
    validity: ValidityRules
    aggregates: Aggregates
    assessment: Assessment
    ledger: tuple[LedgerEntry, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    run_id: int | None = None
    readings: int = 0

    def summary(self) -> dict[str, Any]:
        """The ``result`` of the run's audit row."""
        paid = sum(e.amount_yuan for e in self.ledger if e.amount_yuan > 0)
        return {
            "period": self.period.kind,
            "label": self.period.label,
            "readings": self.readings,
            "series": len(self.aggregates.keys),
            "sections": len(self.assessment.sections),
            "county": self.assessment.county.to_json(),
            "ledger_rows": len(self.ledger),
            "ledger_total_yuan": round(paid, 2),
            "insufficient_data": sum(1 for e in self.ledger if e.status == "insufficient-data"),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def validity_rules(
    validity: ValidityConfig | ValidityRules | None, county: County
) -> ValidityRules:
    """Validity rules from the collector's config and the county's monitoring facts."""
    if isinstance(validity, ValidityRules):
        vr = validity
    else:
        vr = ValidityRules.build(
            validity,
            four_hourly=county.monitoring.four_hourly,
            detection_limits=county.monitoring.detection_limits,
        )
    if REVIEW_FLAG in vr.excluded_flags:
        return vr
    # Readings a reviewer marked invalid are never valid, whatever the configured flags.
    return dataclasses.replace(vr, excluded_flags=vr.excluded_flags | {REVIEW_FLAG})


@contextmanager
def _timed(timings: dict[str, float], name: str, step: Step | None) -> Iterator[None]:
    if step is not None:
        step(name)
    t0 = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def daily_means(county: County, agg: Aggregates) -> Callable[[str, str], list[tuple[str, Mean]]]:
    """(section, parameter) -> every daily mean of the period as (local date, mean)."""
    index = agg.index()

    def get(section: str, parameter: str) -> list[tuple[str, Mean]]:
        i = index.get((county.sections[section].station, parameter))
        labels = agg.calendar.day_labels
        if i is None:
            return [(d, Mean(None, 0, 0, False)) for d in labels]
        return [(d, agg.day.at(i, j)) for j, d in enumerate(labels)]

    return get


def compute_from_readings(
    columns: Mapping[str, Any],
    county: County,
    rules: RuleSet,
    validity: ValidityConfig | ValidityRules | None,
    period: Period | str,
    *,
    step: Step | None = None,
) -> AnalyticsResult:
    """Aggregate, assess and settle ``period`` from readings columns (``station``, ``ts_ms``,
    ``code``, ``value``, ``flag``; as :meth:`Store.readings` returns them). Pure: no I/O.

    ``step``, if given, is called with the name of each stage as it starts.
    """
    p = Period.parse(period) if isinstance(period, str) else period
    vr = validity_rules(validity, county)
    timings: dict[str, float] = {}
    with _timed(timings, "group", step):
        series = group_readings(columns, county.section_stations)
    cal = calendar(p, county.timezone)
    with _timed(timings, "aggregate", step):
        agg = aggregate(series, cal, vr)
    with _timed(timings, "assess", step):
        assessment = assess(county, agg, rules.assessment)
    with _timed(timings, "settle", step):
        level = "year" if p.kind == "year" else "month"
        j = 0 if p.kind == "year" else cal.month_labels.index(p.label)
        ledger = tuple(
            settle(
                county,
                rules,
                p,
                means_by_section(county, agg, level, j),
                daily_means(county, agg),
            )
        )
    return AnalyticsResult(
        p, county, rules, vr, agg, assessment, ledger, timings, readings=len(series.ts_ms)
    )


# --- writing to the store ------------------------------------------------------------------

AGG_COLUMNS = TABLES["aggregates"]
LEDGER_COLUMNS = TABLES["ledger"][1:]  # all but the generated id


def _level_rows(
    keys: Sequence[tuple[str, str]], lv: LevelMeans
) -> Iterator[tuple[int, list[tuple[object, ...]]]]:
    """(start_ms, rows) for each slot of a level, skipping series-slots without data."""
    codes = [resolve(p).code for _, p in keys]
    present = lv.n > 0
    for j in np.flatnonzero(present.any(axis=0)):
        rows: list[tuple[object, ...]] = []
        start = int(lv.starts[j])
        for i in map(int, np.flatnonzero(present[:, j])):
            m = float(lv.mean[i, j])
            rows.append(
                (
                    keys[i][0],
                    codes[i],
                    lv.level,
                    start,
                    None if np.isnan(m) else m,
                    None if np.isnan(lv.min[i, j]) else float(lv.min[i, j]),
                    None if np.isnan(lv.max[i, j]) else float(lv.max[i, j]),
                    int(lv.n[i, j]),
                    int(lv.n_valid[i, j]),
                    bool(lv.valid[i, j]),
                )
            )
        yield start, rows


def write_results(
    store: Store,
    result: AnalyticsResult,
    run_id: int,
    *,
    levels: Collection[str] = ALL_LEVELS,
    step: Step | None = None,
) -> dict[str, int]:
    """Replace the period's aggregates (of ``levels``), assessments and ledger rows in
    ``store``."""
    counts = {"aggregates": 0, "assessments": 0, "ledger": 0}
    agg = result.aggregates
    for lv in agg.levels():
        if lv.level not in levels:
            continue
        if step is not None:
            step(f"write {lv.level} aggregates")
        if len(lv.starts) == 0:
            continue
        # One transaction per level: the slots of the period are replaced together.
        span = (int(lv.starts[0]), int(lv.starts[-1]) + 1)
        level_rows = [row for _, rows in _level_rows(agg.keys, lv) for row in rows]
        counts["aggregates"] += store.replace_rows(
            "aggregates", {"period": lv.level, "start_ms": span}, AGG_COLUMNS, level_rows
        )
    if step is not None:
        step("write assessments")
    by_label: dict[tuple[str, str], list[tuple[object, ...]]] = {}
    for r in result.assessment.all_results():
        by_label.setdefault((r.period.kind, r.period.label), []).append(
            (
                run_id,
                r.section,
                r.period.kind,
                r.period.label,
                r.grade,
                r.meets_target,
                r.valid,
                r.details_json(),
            )
        )
    for (kind, label), rows in by_label.items():
        counts["assessments"] += store.replace_rows(
            "assessments",
            {"period": kind, "label": label},
            ("run_id", "section", "period", "label", "grade", "meets_target", "valid", "details"),
            rows,
        )
    if step is not None:
        step("write ledger")
    counts["ledger"] = store.replace_rows(
        "ledger",
        {"period": result.period.kind, "label": result.period.label},
        LEDGER_COLUMNS,
        [
            (
                run_id,
                e.rule,
                e.period,
                e.label,
                e.payer,
                e.payee,
                e.amount_yuan,
                e.status,
                dict(e.evidence),
            )
            for e in result.ledger
        ],
    )
    return counts


def read_reviewed(store: Store, county: County, period: Period) -> dict[str, Any]:
    """The period's readings at the county's section stations with the reviewers' marks
    applied (raw readings are not changed; see :mod:`sanduan.central.core.review`)."""
    from sanduan.central.review import load_marks

    start, end = period.bounds_ms(county.timezone)
    columns = store.readings(list(county.section_stations), start, end)
    marks: list[Mark] = load_marks(store, start_ms=start, end_ms=end)
    return apply_marks(columns, marks)


def evaluate(
    store: Store,
    county: County,
    rules: RuleSet,
    validity: ValidityConfig | ValidityRules | None,
    period: Period | str,
    *,
    step: Step | None = None,
) -> AnalyticsResult:
    """Compute ``period`` from the reviewed readings in ``store`` without writing anything."""
    p = Period.parse(period) if isinstance(period, str) else period
    t0 = time.perf_counter()
    columns = read_reviewed(store, county, p)
    read_s = time.perf_counter() - t0
    r = compute_from_readings(columns, county, rules, validity, p, step=step)
    return dataclasses.replace(r, timings={"read": read_s, **r.timings})


def compute(
    store: Store,
    county: County,
    rules: RuleSet,
    validity: ValidityConfig | ValidityRules | None,
    period: Period | str,
    *,
    progress: Progress | None = None,
    levels: Collection[str] = ALL_LEVELS,
    columns: Mapping[str, Any] | None = None,
) -> AnalyticsResult:
    """Compute ``period`` from the readings in ``store`` and write the results, with an audit
    row in ``runs`` (its ``result`` holds a summary, or the error that stopped the run).
    ``levels`` chooses which aggregates are stored (hourly rows are the bulk: 744 a series a
    month). ``columns``: the period's reviewed readings if already read
    (:func:`read_reviewed`)."""
    p = Period.parse(period) if isinstance(period, str) else period
    vr = validity_rules(validity, county)
    params = {
        "period": p.kind,
        "label": p.label,
        "county": county.source,
        "rules": rules.to_json(),
        "validity": vr.describe(),
    }
    run_id = store.start_run(RUN_KIND, params)
    task = None
    if progress is not None:
        task = progress.add_task(f"{p.label}: read readings", total=None)

    def step(name: str) -> None:
        if progress is not None and task is not None:
            progress.update(task, description=f"{p.label}: {name}")

    try:
        t0 = time.perf_counter()
        if columns is None:
            columns = read_reviewed(store, county, p)
        read_s = time.perf_counter() - t0
        result = compute_from_readings(columns, county, rules, vr, p, step=step)
        t0 = time.perf_counter()
        counts = write_results(store, result, run_id, levels=levels, step=step)
        timings = {"read": read_s, **result.timings, "write": time.perf_counter() - t0}
        out = AnalyticsResult(
            p,
            county,
            rules,
            vr,
            result.aggregates,
            result.assessment,
            result.ledger,
            timings,
            run_id,
            result.readings,
        )
        store.finish_run(run_id, {**out.summary(), "rows_written": counts})
    except BaseException as e:
        store.finish_run(run_id, {"error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        if progress is not None and task is not None:
            progress.update(task, description=f"{p.label}: done", total=1, completed=1)
    return out

"""Benchmark: a month of 1-minute data on N sections through aggregation, assessment and
compensation (the pure path of ``sanduan.central.analytics``).

    python bench/assessment.py [--sections 100] [--minutes 43200] [--group-sections 10]

Synthetic county: rivers of five towns each, every town with an inflow and an outflow section
(so N sections make N/2 towns on N/10 rivers). Six parameters a section (pH, DO, CODMn, NH3-N,
TP, temperature), one value a minute, 1 % of values flagged M (maintenance) and 0.5 % missing.
Values are generated directly as numpy series (:class:`SeriesData`); ``--group-sections``
sections are also pushed through :func:`group_readings` from store-like string columns, the
step that turns ``Store.readings`` output into series, to show its cost.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from sanduan.central.core.assessment import assess, means_by_section
from sanduan.central.core.compensation import build_rules, settle
from sanduan.central.core.county import County, build_county
from sanduan.central.core.validity import (
    Period,
    SeriesData,
    ValidityRules,
    aggregate,
    calendar,
    group_readings,
)
from sanduan.shared.params import resolve

PARAMS = {
    "pH": (7.4, 0.3),
    "DO": (6.5, 1.0),
    "CODMn": (4.5, 1.5),
    "NH3-N": (0.7, 0.3),
    "TP": (0.15, 0.06),
    "temperature": (22.0, 3.0),
}
PERIOD = Period(2026, 5)


def make_county(n_sections: int) -> County:
    towns_per_river = 5
    n_rivers = max(1, n_sections // (2 * towns_per_river))
    doc: dict[str, Any] = {"river": [], "section": [], "town": []}
    for r in range(n_rivers):
        doc["river"].append({"id": f"r{r}"})
        for t in range(towns_per_river):
            town = f"t{r}-{t}"
            for role in ("in", "out"):
                sid = f"{town}-{role}"
                doc["section"].append(
                    {"id": sid, "river": f"r{r}", "station": f"st-{sid}", "target_class": 3}
                )
            inflow: dict[str, str] = {"section": f"{town}-in"}
            if t > 0:
                inflow["upstream"] = f"t{r}-{t - 1}"
            doc["town"].append({"id": town, "outflow": f"{town}-out", "inflow": [inflow]})
    return build_county(doc, "bench-county")


def make_series(county: County, minutes: int, rng: np.random.Generator) -> SeriesData:
    start, _ = PERIOD.bounds_ms(county.timezone)
    ts1 = start + np.arange(minutes, dtype=np.int64) * 60_000
    keys = [(s.station, p) for s in county.sections.values() for p in PARAMS]
    n = len(keys) * minutes
    ts = np.tile(ts1, len(keys))
    values = np.empty(n)
    for i, (_, p) in enumerate(keys):
        mu, sd = PARAMS[p]
        values[i * minutes : (i + 1) * minutes] = np.abs(rng.normal(mu, sd, minutes))
    values[rng.random(n) < 0.005] = np.nan
    flags = np.full(n, "N", dtype="<U1")
    flags[rng.random(n) < 0.01] = "M"
    offsets = np.arange(len(keys) + 1, dtype=np.int64) * minutes
    return SeriesData(tuple(keys), offsets, ts, values, flags)


def timed(label: str, fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<34} {dt:8.3f} s")
    return dt, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, default=100)
    ap.add_argument("--minutes", type=int, default=31 * 24 * 60)
    ap.add_argument("--group-sections", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    county = make_county(args.sections)
    rules = build_rules(
        {
            "rule": [
                {"kind": "three-section", "reward_per_class": 100_000},
                {"kind": "class-change", "id": "cc"},
                {"kind": "exceedance", "id": "ex"},
            ]
        }
    )
    vr = ValidityRules()
    t0 = time.perf_counter()
    series = make_series(county, args.minutes, rng)
    print(
        f"{len(county.sections)} sections, {len(county.towns)} towns, "
        f"{len(series.keys)} series, {len(series.values):,} values "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )
    cal = calendar(PERIOD, county.timezone)
    # Warm-up: grading kernels compile or load from cache on first use.
    small = SeriesData(
        series.keys[:1],
        np.asarray([0, 10], dtype=np.int64),
        series.ts_ms[:10],
        series.values[:10],
        series.flags[:10],
    )
    assess(county, aggregate(small, cal, vr))

    t_agg, agg = timed("aggregation (hour/day/month)", lambda: aggregate(series, cal, vr))
    t_ass, a = timed("assessment (sections, rates)", lambda: assess(county, agg))
    means = means_by_section(county, agg, "month", 0)
    t_set, ledger = timed("compensation (3 rules)", lambda: settle(county, rules, PERIOD, means))
    print(
        f"  total {t_agg + t_ass + t_set:.3f} s; {len(series.values) / t_agg / 1e6:.1f} M values/s"
        f" aggregated; {len(ledger)} ledger rows; 功能达标率 "
        f"{a.county.compliance_rate:.2f}, 优良率 {a.county.good_rate:.2f}"
    )

    # Store-like string columns -> series, for a subset.
    k = min(args.group_sections, len(county.sections))
    n_series = k * len(PARAMS)
    stop = int(series.offsets[n_series])
    st = np.repeat(np.asarray([s for s, _ in series.keys[:n_series]]), args.minutes)
    code = np.repeat(np.asarray([resolve(p).code for _, p in series.keys[:n_series]]), args.minutes)
    cols = {
        "station": st,
        "ts_ms": series.ts_ms[:stop],
        "code": code,
        "value": series.values[:stop],
        "flag": series.flags[:stop],
    }
    t_grp, _ = timed(f"group_readings ({stop:,} values)", lambda: group_readings(cols))
    scale = len(series.values) / stop
    print(f"  group_readings scaled to all values: ~{t_grp * scale:.1f} s")


if __name__ == "__main__":
    main()

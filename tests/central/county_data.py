"""A month of hourly readings for the example county, with noise (no accidental stuck values),
as store columns, plus helpers to inject episodes. Shared by the problems, review and
scorecard tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sanduan.central.core.county import County, load_county
from sanduan.central.core.validity import HOUR_MS, Period
from sanduan.shared.params import resolve
from sanduan.shared.wire import Batch

ROOT = Path(__file__).resolve().parents[2]
COUNTY_FILE = ROOT / "deploy" / "county.example.toml"
RULES_FILE = ROOT / "deploy" / "rules.example.toml"
MAY = Period(2026, 5)
BASE = {"pH": 7.5, "DO": 6.5, "CODMn": 3.5, "NH3-N": 0.4, "TP": 0.12}
NOISE = {"pH": 0.05, "DO": 0.2, "CODMn": 0.2, "NH3-N": 0.03, "TP": 0.01}
LAKE_TP = (0.015, 0.002)  # the reservoir (a lake, target II) keeps its TP in class II


def county() -> County:
    return load_county(COUNTY_FILE)


def month_columns(c: County, period: Period = MAY, seed: int = 7) -> dict[str, Any]:
    """Hourly readings of every item at every section station, valid and noisy."""
    rng = np.random.default_rng(seed)
    start, end = period.bounds_ms(c.timezone)
    ts = np.arange(start, end, HOUR_MS, dtype=np.int64)
    st, t, code, val = [], [], [], []
    for s in c.sections.values():
        for name, base in BASE.items():
            mean, sd = (base, NOISE[name])
            if name == "TP" and s.water_body == "lake":
                mean, sd = LAKE_TP
            st.append(np.full(ts.size, s.station))
            t.append(ts)
            code.append(np.full(ts.size, resolve(name).code))
            val.append(np.round(mean + rng.normal(0, sd, ts.size), 4).clip(min=0.001))
    n = sum(a.size for a in t)
    return {
        "station": np.concatenate(st),
        "ts_ms": np.concatenate(t),
        "code": np.concatenate(code),
        "value": np.concatenate(val),
        "flag": np.full(n, "N", dtype="<U1"),
        "seq": np.arange(1, n + 1, dtype=np.int64),
    }


def where(
    cols: dict[str, Any], station: str, param: str | None, hours: tuple[int, int], period: Period
) -> Any:
    """Mask of the readings of ``station`` (``param`` or all) in hours [a, b) of the period."""
    start = period.bounds_ms("Asia/Shanghai")[0]
    a, b = hours
    m = (cols["station"] == station) & (cols["ts_ms"] >= start + a * HOUR_MS)
    m &= cols["ts_ms"] < start + b * HOUR_MS
    if param is not None:
        m &= cols["code"] == resolve(param).code
    return m


def drop(cols: dict[str, Any], mask: Any) -> dict[str, Any]:
    return {k: v[~mask] for k, v in cols.items()}


Edit = Callable[[dict[str, Any]], dict[str, Any]]


def batches(cols: dict[str, Any]) -> list[Batch]:
    """One batch per station (seq 1..n of the station's rows)."""
    out = []
    for k, st in enumerate(sorted(set(cols["station"].tolist()))):
        m = cols["station"] == st
        n = int(m.sum())
        out.append(
            Batch.from_columns(
                st,
                k + 1,
                0,
                seq=list(range(1, n + 1)),
                ts_ms=cols["ts_ms"][m].tolist(),
                code=cols["code"][m].tolist(),
                values=cols["value"][m].tolist(),
                flags=cols["flag"][m].tolist(),
            )
        )
    return out

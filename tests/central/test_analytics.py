"""Analytics end to end against a real SQLite store file, and the pure path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sanduan.central.analytics import compute, compute_from_readings
from sanduan.central.core.compensation import load_rules
from sanduan.central.core.county import County, load_county
from sanduan.central.core.validity import HOUR_MS, Period
from sanduan.central.store import Store, open_store
from sanduan.shared.errors import StoreError
from sanduan.shared.params import resolve
from sanduan.shared.wire import Batch

ROOT = Path(__file__).resolve().parents[2]
MAY = Period(2026, 5)
BASE = {"pH": 7.5, "DO": 6.5, "CODMn": 3.5, "NH3-N": 0.4, "TP": 0.15}  # all Class II..III
# Zonghan's outflow gets NH3-N 1.2 (IV); Hushan's inflow TP 0.35 (V).
WORSE = {"ST-ZH-OUT": {"NH3-N": 1.2}, "ST-HS-IN": {"TP": 0.35}}


@pytest.fixture(scope="module")
def county() -> County:
    return load_county(ROOT / "deploy" / "county.example.toml")


def _columns(county: County, *, silent: str | None = None) -> dict[str, list[object]]:
    start, end = MAY.bounds_ms(county.timezone)
    ts = np.arange(start, end, HOUR_MS).tolist()
    cols: dict[str, list[object]] = {k: [] for k in ("station", "ts_ms", "code", "value", "flag")}
    for sid, sec in county.sections.items():
        if sec.station == silent:
            continue
        for name, v in BASE.items():
            value = WORSE.get(sid, {}).get(name, v)
            cols["station"] += [sec.station] * len(ts)
            cols["ts_ms"] += ts
            cols["code"] += [resolve(name).code] * len(ts)
            cols["value"] += [value] * len(ts)
            cols["flag"] += ["N"] * len(ts)
    return cols


def _fill(store: Store, cols: dict[str, list[object]]) -> None:
    stations = list(dict.fromkeys(str(s) for s in cols["station"]))
    st = np.asarray(cols["station"], dtype=object)
    for k, station in enumerate(stations):
        idx = np.flatnonzero(st == station)
        batch = Batch.from_columns(
            station,
            k + 1,
            0,
            seq=list(range(1, len(idx) + 1)),
            ts_ms=[int(cols["ts_ms"][i]) for i in idx],  # type: ignore[call-overload]
            code=[str(cols["code"][i]) for i in idx],
            values=[float(cols["value"][i]) for i in idx],  # type: ignore[arg-type]
            flags=[str(cols["flag"][i]) for i in idx],
        )
        store.store_batch(batch, 0)


def test_pure_path_example_county(county: County) -> None:
    rules = load_rules(ROOT / "deploy" / "rules.example.toml")
    res = compute_from_readings(_columns(county), county, rules, None, "2026-05")
    a = res.assessment
    assert a.sections["ST-ZH-OUT"].grade == 4
    # RS-01 is a lake: TP 0.15 is Class V on the lake limits (0.1 < 0.15 <= 0.2)
    assert a.sections["RS-01"].grade == 5
    # 9 assessed, all valid; ST-ZH-OUT (IV vs III) and RS-01 (V vs II) miss their target
    assert (a.county.n_valid, a.county.n_meets, a.county.n_good) == (9, 7, 7)
    amounts = {(e.payer, e.payee, e.evidence.get("component")): e.amount_yuan for e in res.ledger}
    # zonghan: n = IV - III = 1 -> 300 000 to hushan
    assert amounts[("zonghan", "hushan", "town")] == 300_000.0
    # hushan: D III, inflow V: n = -2 -> reward 2 * 100 000 from the county fund
    assert amounts[("county-fund", "hushan", "town")] == 200_000.0
    # reach zonghan -> hushan: V - IV = 1 class, 300 000 split 50/50 to the fund
    assert amounts[("zonghan", "county-fund", "reach")] == 150_000.0
    assert amounts[("hushan", "county-fund", "reach")] == 150_000.0
    assert sum(e.amount_yuan for e in res.ledger) == 800_000.0


def test_compute_writes_store_and_audit(store: Store, county: County) -> None:
    """On a SQLite file and, when reachable, PostgreSQL (the ``store`` fixture)."""
    _fill(store, _columns(county, silent="CX-ST-05"))  # Hushan's inflow station is silent
    rules = load_rules(ROOT / "deploy" / "rules.example.toml")
    res = compute(store, county, rules, None, MAY)
    assert res.run_id is not None
    # hourly, daily and monthly means of 12 stations x 5 parameters
    counts = dict(
        store.query("SELECT period, COUNT(*) FROM aggregates GROUP BY period ORDER BY period")
    )
    assert counts == {"day": 12 * 5 * 31, "hour": 12 * 5 * 744, "month": 12 * 5}
    row = store.query(
        "SELECT mean, n, n_valid, valid FROM aggregates WHERE station = ? AND code = ?"
        " AND period = 'month'",
        ["CX-ST-04", resolve("NH3-N").code],
    )
    assert row[0][0] == pytest.approx(1.2)
    assert tuple(row[0][1:3]) == (31, 31)
    assessed = store.query(
        "SELECT section, grade, meets_target, valid, details FROM assessments"
        " WHERE period = 'month' AND label = '2026-05' ORDER BY section"
    )
    by = {r[0]: r for r in assessed}
    assert by["ST-ZH-OUT"][1] == 4
    assert by["ST-HS-IN"][1] is None and not by["ST-HS-IN"][3]
    assert json.loads(by["ST-HS-IN"][4])["missing"] == ["pH", "DO", "CODMn", "NH3-N", "TP"]
    ledger = store.query(
        "SELECT run_id, rule, payer, payee, amount_yuan, status, evidence FROM ledger ORDER BY id"
    )
    assert {r[0] for r in ledger} == {res.run_id}
    statuses = [(r[2], r[3], r[5]) for r in ledger if r[5] == "insufficient-data"]
    # hushan's town charge and the zonghan -> hushan reach both need ST-HS-IN; the
    # rows name the nominal payer of each (policy skip: 0 yuan)
    assert statuses == [
        ("hushan", "county-fund", "insufficient-data"),
        ("zonghan", "county-fund", "insufficient-data"),
    ]
    ev = json.loads(ledger[0][6])
    assert ev["rule"] == "three-section" and ev["label"] == "2026-05"
    run = store.query("SELECT kind, finished_ms, result FROM runs WHERE run_id = ?", [res.run_id])
    assert run[0][0] == "analytics" and run[0][1] is not None
    assert json.loads(run[0][2])["insufficient_data"] == 2
    # A re-run replaces its earlier output.
    again = compute(store, county, rules, None, MAY)
    assert store.query("SELECT COUNT(*) FROM ledger")[0][0] == len(again.ledger)
    assert store.query("SELECT COUNT(*) FROM aggregates WHERE period = 'month'")[0][0] == 60
    # The stored ledger equals the pure path's (what the HIL rig compares).
    pure = compute_from_readings(
        dict(store.readings(None, *MAY.bounds_ms(county.timezone))), county, rules, None, MAY
    )
    assert [e.to_json() for e in pure.ledger] == [e.to_json() for e in again.ledger]


def test_failed_run_is_recorded(
    tmp_path: Path, county: County, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}", migrate=True)

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("disk on fire")

    try:
        rules = load_rules(ROOT / "deploy" / "rules.example.toml")
        monkeypatch.setattr(store, "readings", broken)
        with pytest.raises(StoreError):
            compute(store, county, rules, None, MAY)
        (result,) = store.query("SELECT result FROM runs")[0]
        assert json.loads(result)["error"] == "StoreError: disk on fire"
    finally:
        store.close()

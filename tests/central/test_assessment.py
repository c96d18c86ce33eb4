"""Section assessment on monthly means, against hand-graded values."""

from __future__ import annotations

import numpy as np
import pytest

from sanduan.central.core.assessment import assess, assess_section
from sanduan.central.core.county import County, parse_county
from sanduan.central.core.validity import (
    HOUR_MS,
    Mean,
    Period,
    ValidityRules,
    aggregate,
    calendar,
    group_readings,
)
from sanduan.shared.params import resolve

COUNTY = """
[[river]]
id = "r"
[[section]]
id = "R"
river = "r"
station = "st-r"
target_class = 3
[[section]]
id = "L"
river = "r"
station = "st-l"
target_class = 3
water_body = "lake"
owner = "t"
[[section]]
id = "X"
river = "r"
station = "st-x"
target_class = 2
[[section]]
id = "N"
river = "r"
station = "st-n"
assessed = false
[[town]]
id = "t"
outflow = "R"
inflow = [{ section = "X" }]
"""

VALUES = {
    # pH I, DO 6.5 II, CODMn 3.5 II, NH3-N 1.2 IV, TP 0.15 III -> IV, misses III
    "st-r": {"pH": 7.5, "DO": 6.5, "CODMn": 3.5, "NH3-N": 1.2, "TP": 0.15},
    # TP 0.04 is Class III on the lake limits (0.025 < 0.04 <= 0.05), Class II for a river
    "st-l": {"pH": 7.5, "DO": 8.0, "CODMn": 3.5, "NH3-N": 0.4, "TP": 0.04},
    "st-x": {"pH": 7.5, "DO": 8.0, "CODMn": 3.5, "NH3-N": 0.4, "TP": 0.05},
}
MAY = Period(2026, 5)


@pytest.fixture(scope="module")
def county() -> County:
    return parse_county(COUNTY, "c.toml")


def _readings(county: County) -> dict[str, list[object]]:
    start, end = MAY.bounds_ms(county.timezone)
    cols: dict[str, list[object]] = {k: [] for k in ("station", "ts_ms", "code", "value", "flag")}
    for station, vals in VALUES.items():
        # st-x reports on 19 days only: 19 valid days < 20 -> invalid month
        stop = start + 19 * 24 * HOUR_MS if station == "st-x" else end
        ts = np.arange(start, stop, HOUR_MS).tolist()
        for name, v in vals.items():
            cols["station"] += [station] * len(ts)
            cols["ts_ms"] += ts
            cols["code"] += [resolve(name).code] * len(ts)
            cols["value"] += [v] * len(ts)
            cols["flag"] += ["N"] * len(ts)
    return cols


def test_monthly_assessment_hand_graded(county: County) -> None:
    agg = aggregate(
        group_readings(_readings(county)), calendar(MAY, "Asia/Shanghai"), ValidityRules()
    )
    a = assess(county, agg)
    r, lake, x = a.sections["R"], a.sections["L"], a.sections["X"]
    assert (r.valid, r.grade, r.meets_target, r.good) == (True, 4, False, False)
    assert r.main_pollutants[0][0] == "NH3-N"
    assert r.main_pollutants[0][1] == pytest.approx(0.2)  # (1.2 - 1.0) / 1.0
    assert r.items["NH3-N"].mean.n_valid == 31
    assert (lake.valid, lake.grade, lake.meets_target, lake.good) == (True, 3, True, True)
    assert lake.items["TP"].grade == 3
    assert lake.main_pollutants == ()
    assert (x.valid, x.grade, x.meets_target) == (False, None, None)
    assert x.missing == ("pH", "DO", "CODMn", "NH3-N", "TP")
    assert x.items["TP"].mean.n_valid == 19
    # 功能达标率 and 优良率 over the valid assessed sections R and L (X invalid, N not assessed)
    assert (a.county.n_sections, a.county.n_valid, a.county.n_meets, a.county.n_good) == (
        3,
        2,
        1,
        1,
    )
    assert a.county.compliance_rate == 0.5
    assert a.county.good_rate == 0.5
    (t,) = a.towns
    assert (t.outflow_class, t.outflow_meets, t.inflow_class, t.change) == (4, False, None, None)
    assert t.sections == ("R", "X", "L")
    assert (t.n_valid, t.n_meets) == (2, 1)
    doc = a.to_json()
    assert doc["sections"][0]["class_label"] == "IV"


def test_river_versus_lake_tp(county: County) -> None:
    means = {n: Mean(v, 31, 31, True) for n, v in VALUES["st-l"].items()}
    assert assess_section(county.sections["L"], means, MAY).grade == 3
    assert assess_section(county.sections["R"], means, MAY).grade == 2


def test_section_parameters_decide_validity(county: County) -> None:
    means = {n: Mean(v, 31, 31, True) for n, v in VALUES["st-r"].items()}
    means["TN"] = Mean(3.0, 31, 5, False)  # not assessed on TN: does not invalidate
    res = assess_section(county.sections["R"], means, MAY)
    assert res.valid
    assert res.items["TN"].grade == 0
    means["DO"] = Mean(6.5, 31, 12, False)
    res = assess_section(county.sections["R"], means, MAY)
    assert (res.valid, res.grade, res.missing) == (False, None, ("DO",))


def test_year_rates_on_annual_means_and_section_months(county: County) -> None:
    # Annual readings: one per day for every day of 2026 would be slow to build by hand; use
    # thresholds of one reading a day and one day a month.
    rules = ValidityRules(min_hours_per_day=1, min_values_per_day_4h=1, min_days_per_month=1)
    cols: dict[str, list[object]] = {k: [] for k in ("station", "ts_ms", "code", "value", "flag")}
    year = Period(2026)
    for month in range(1, 13):
        t0, _ = Period(2026, month).bounds_ms("Asia/Shanghai")
        for station, vals in VALUES.items():
            if station == "st-x" and month > 8:
                continue  # 8 valid months < 9: the year is invalid at X
            for name, v in vals.items():
                cols["station"].append(station)
                cols["ts_ms"].append(t0 + HOUR_MS)
                cols["code"].append(resolve(name).code)
                cols["value"].append(v)
                cols["flag"].append("N")
    agg = aggregate(group_readings(cols), calendar(year, "Asia/Shanghai"), rules)
    a = assess(county, agg)
    assert a.sections["R"].grade == 4
    assert a.sections["X"].valid is False
    assert (a.county.n_valid, a.county.n_meets) == (2, 1)
    # section-months: R 12 (none meets), L 12 (all meet), X 8 valid (class II target II, meets)
    assert a.section_months is not None
    sm = a.section_months
    assert (sm.n_sections, sm.n_valid, sm.n_meets, sm.n_good) == (36, 32, 20, 20)
    assert len(a.all_results()) == 4 + 12 * 4


def _section(target: int, params: tuple[str, ...]) -> object:
    from sanduan.central.core.county import Section
    from sanduan.shared.model import WaterBody

    return Section("S", "S", "r", "st", target, WaterBody.RIVER, True, params, None)


def _means(values: dict[str, float]) -> dict[str, Mean]:
    return {k: Mean(v, 30, 30, True) for k, v in values.items()}


def test_main_pollutants_per_the_evaluation_method() -> None:
    from sanduan.central.core.county import Section

    # A target-IV section in Class IV: CODMn 8.0 is Class IV, 0.33x over the Class III limit 6
    # and 0.2x under its target limit 10. Main pollutant CODMn (+0.33), nothing over target.
    params = ("pH", "DO", "CODMn", "NH3-N", "TP")
    s = _section(4, params)
    assert isinstance(s, Section)
    vals = {"pH": 7.2, "DO": 6.2, "CODMn": 8.0, "NH3-N": 0.4, "TP": 0.1}
    r = assess_section(s, _means(vals), MAY)
    assert r.grade == 4 and r.meets_target is True
    assert r.main_pollutants == (("CODMn", 0.33),)
    assert r.exceeding_target == ()
    assert r.items["CODMn"].exceedance == -0.2
    # Class III: no main pollutants, even with items over a Class II target.
    s2 = _section(2, params)
    assert isinstance(s2, Section)
    r2 = assess_section(s2, _means({**vals, "CODMn": 5.0}), MAY)
    assert r2.grade == 3 and r2.main_pollutants == ()
    assert r2.exceeding_target == (("CODMn", 0.25),)  # (5 - 4) / 4
    # Class V: at most three, by class then Class III multiple; DO (no multiple) by class.
    v5 = {"pH": 7.2, "DO": 2.5, "CODMn": 14.0, "NH3-N": 1.6, "TP": 0.35, "COD": 35.0}
    s3 = _section(3, (*params, "COD"))
    assert isinstance(s3, Section)
    r3 = assess_section(s3, _means(v5), MAY)
    # CODMn V (1.33x), DO V (none), NH3-N V (0.60x), TP V (0.75x), COD V (0.75x)
    assert r3.grade == 5
    # TP and COD tie at 0.75x: registry order (COD first).
    assert r3.main_pollutants == (("CODMn", 1.33), ("COD", 0.75), ("TP", 0.75))
    doc = r3.to_json()
    assert doc["main_pollutants"][0] == {
        "item": "CODMn",
        "class": 5,
        "multiple": 1.33,
        "against": "III",
    }
    assert all(m["multiple"] > 0 for m in doc["main_pollutants"])
    assert doc["exceeding_target"][0]["against"] == "target"
    assert [x["item"] for x in doc["exceeding_target"]] == ["CODMn", "COD", "TP", "NH3-N", "DO"]


def test_do_class_i_by_saturation() -> None:
    from sanduan.central.core.assessment import AssessmentOptions
    from sanduan.central.core.compensation import parse_rules
    from sanduan.central.core.county import Section
    from sanduan.shared.errors import ConfigError
    from sanduan.shared.grading import do_saturation_limit

    # 90 % of 468 / (31.6 + T): T = 25.0 -> 0.9 * 8.268551 = 7.441696 -> 7.44 mg/L;
    # T = 20.0 -> 0.9 * 9.069767 = 8.162791 -> 8.16 mg/L.
    assert do_saturation_limit(25.0) == 7.44
    assert do_saturation_limit(20.0) == 8.16
    assert do_saturation_limit(20.0, 100) == 9.07
    s = _section(3, ("DO",))
    assert isinstance(s, Section)
    sat = parse_rules('[assessment]\ndo_class_i = "saturation"\n').assessment
    assert sat == AssessmentOptions(do_class_i="saturation", do_saturation_percent=90.0)
    warm = _means({"DO": 7.45, "temperature": 25.0})
    assert assess_section(s, warm, MAY).items["DO"].grade == 2  # 7.45 < 7.5 mg/L
    assert assess_section(s, warm, MAY, sat).items["DO"].grade == 1  # >= 7.44
    cool = _means({"DO": 7.8, "temperature": 20.0})
    assert assess_section(s, cool, MAY).items["DO"].grade == 1
    r = assess_section(s, cool, MAY, sat)
    assert r.items["DO"].grade == 2 and r.grade == 2  # 7.8 < 8.16, >= 6
    # No valid temperature: the table's 7.5 mg/L.
    assert assess_section(s, _means({"DO": 7.45}), MAY, sat).items["DO"].grade == 2
    with pytest.raises(ConfigError, match=r"assessment\.do_saturation_percent"):
        parse_rules("[assessment]\ndo_saturation_percent = 120\n")

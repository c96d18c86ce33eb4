"""Values whose exact mean is a GB 3838 limit grade in that limit's class: on the edge path
(the binary float mean of the values, graded by the edge grader and ``grade_sample``) and at
the centre (hour and day means of the values as readings, graded as the assessment grades)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.central.core.validity import (
    HOUR_MS,
    Period,
    ValidityRules,
    aggregate,
    calendar,
    group_readings,
)
from sanduan.edge.grader import Grader
from sanduan.shared.config import ValidityConfig
from sanduan.shared.grading import grade_sample
from sanduan.shared.model import WaterBody
from sanduan.shared.params import all_parameters
from sanduan.shared.standards import Direction, gb3838

SH = "Asia/Shanghai"
MAY = Period(2026, 5)
CAL = calendar(MAY, SH)
T0 = int(dt.datetime(2026, 5, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)
# No detection limit: a limit below the usual detection limit (TP lake Class I) still counts.
RULES = ValidityRules.build(ValidityConfig(), detection_limits={})
RULES = ValidityRules(
    RULES.min_values_per_hour,
    RULES.min_hours_per_day,
    RULES.min_values_per_day_4h,
    RULES.min_days_per_month,
    RULES.min_months_per_year,
    RULES.excluded_flags,
    RULES.four_hourly,
)


def _limits() -> list[tuple[str, str, WaterBody, int, float]]:
    out = []
    std = gb3838()
    for p in all_parameters():
        item = std.item(p.name)
        if item is None or item.direction not in (Direction.UPPER, Direction.LOWER):
            continue
        for wb in WaterBody:
            row = item.limits_for(wb)
            for k, lim in enumerate(row):
                # Where classes share a limit the better class wins.
                expected = row.index(lim) + 1
                out.append((p.name, p.code, wb, expected, lim))
                del k
    return out


LIMITS = _limits()
GRADERS = {(wb, engine): Grader(wb, 3, engine) for wb in WaterBody for engine in ("numba", "numpy")}


@st.composite
def values_with_mean(draw: st.DrawFn, limit: float, decimals: int, top: float) -> list[float]:
    """2..23 values in [0, top] at ``decimals`` places whose exact mean is ``limit``: pairs
    target - d and target + d, shuffled, plus the target itself when the count is odd."""
    scale = 10**decimals
    target = round(limit * scale)
    spread = max(0, min(target, round(top * scale) - target))
    devs = draw(st.lists(st.integers(min_value=0, max_value=spread), min_size=1, max_size=11))
    units = [target + d for d in devs] + [target - d for d in devs]
    if draw(st.booleans()):
        units.append(target)
    units = draw(st.permutations(units))
    assert sum(units) == len(units) * target
    return [u / scale for u in units]


@pytest.mark.parametrize(("name", "code", "wb", "expected", "limit"), LIMITS)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_mean_equal_to_a_limit_grades_in_its_class(
    name: str, code: str, wb: WaterBody, expected: int, limit: float, data: st.DataObject
) -> None:
    p = next(x for x in all_parameters() if x.name == name)
    values = data.draw(values_with_mean(limit, p.decimals, p.physical_max))
    # Edge path: the binary float mean (0.15 and 0.25 give 0.20000000000000004).
    float_mean = float(np.mean(values))
    assert grade_sample({name: float_mean}, wb).items[name].grade == expected
    for engine in ("numba", "numpy"):
        g = GRADERS[(wb, engine)]
        assert g.grade(np.array([float_mean]), np.array([p.index]))[0] == expected
    # Centre: every value a reading in one hour, and one value per hour of a day.
    n = len(values)
    one_hour = [T0 + i * 1000 for i in range(n)]
    per_hour = [T0 + i * HOUR_MS for i in range(n)]
    for ts in (one_hour, per_hour):
        cols: dict[str, list[Any]] = {
            "station": ["S"] * n,
            "ts_ms": ts,
            "code": [code] * n,
            "value": values,
            "flag": ["N"] * n,
        }
        agg = aggregate(group_readings(cols), CAL, RULES)
        level = agg.hour if ts is one_hour else agg.day
        mean = level.at(0, 0).value
        assert mean == limit, (values, mean)
        assert grade_sample({name: mean}, wb).items[name].grade == expected


def test_issue_case_tp_daily_means_at_the_class_iii_limit() -> None:
    # TP daily means 0.15 and 0.25: the month mean is 0.2, the Class III limit, so Class III.
    days = [T0 + d * 24 * HOUR_MS + h * HOUR_MS for d in range(2) for h in range(24)]
    vals = [0.15] * 24 + [0.25] * 24
    cols: dict[str, list[Any]] = {
        "station": ["S"] * 48,
        "ts_ms": days,
        "code": ["w21011"] * 48,
        "value": vals,
    }
    rules = ValidityRules(min_days_per_month=2)
    assert float(np.mean(vals)) != 0.2  # binary floating point: 0.19999999999999996
    agg = aggregate(group_readings(cols), CAL, rules)
    assert [agg.day.at(0, d).value for d in range(2)] == [0.15, 0.25]
    month = agg.month.at(0, 0)
    assert month.valid and month.value == 0.2
    g = grade_sample({"TP": month.value}, WaterBody.RIVER, target_class=3)
    assert g.grade == 3 and g.meets_target is True
    assert math.isclose(g.items["TP"].exceedance or 0.0, 0.0)

"""Periods, time means and validity rules, against hand-computed values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pytest

from sanduan.central.core.validity import (
    HOUR_MS,
    Mean,
    Period,
    ValidityRules,
    aggregate,
    calendar,
    group_readings,
)
from sanduan.shared.config import ValidityConfig
from sanduan.shared.errors import InputError

SH = "Asia/Shanghai"
MAY = Period(2026, 5)


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def cols(rows: Sequence[tuple[str, int, str, float | None, str]]) -> dict[str, list[object]]:
    return {
        "station": [r[0] for r in rows],
        "ts_ms": [r[1] for r in rows],
        "code": [r[2] for r in rows],
        "value": [r[3] for r in rows],
        "flag": [r[4] for r in rows],
    }


def test_period_parse_and_bounds() -> None:
    assert Period.parse("2026-05") == MAY
    assert Period.parse("2026").kind == "year"
    assert MAY.label == "2026-05"
    # Local midnight of 1 May in Shanghai (UTC+8) is 30 April 16:00 UTC.
    assert MAY.bounds_ms(SH) == (ms("2026-04-30T16:00:00+00:00"), ms("2026-05-31T16:00:00+00:00"))
    assert len(Period(2026).months()) == 12
    for bad in ("2026-13", "26-05", "May 2026"):
        with pytest.raises(InputError):
            Period.parse(bad)


def test_local_month_boundary() -> None:
    late = ms("2026-05-31T16:30:00+00:00")  # 00:30 on 1 June in Shanghai
    may = calendar(MAY, SH)
    june = calendar(Period(2026, 6), SH)
    assert may.hour_index(np.array([late]))[0] == -1
    assert june.hour_index(np.array([late]))[0] == 0
    # The last May hour: 2026-05-31T15:30Z is 23:30 local on 31 May.
    assert may.hour_index(np.array([ms("2026-05-31T15:30:00+00:00")]))[0] == 31 * 24 - 1
    assert len(may.days) - 1 == 31
    assert may.hour_day[24] == 1


def test_calendar_with_daylight_saving() -> None:
    cal = calendar(Period(2026, 3), "Europe/Berlin")
    # 29 March 2026 has 23 hours in Berlin: March has 31 * 24 - 1 hours.
    assert len(cal.hours) - 1 == 743
    assert int(np.sum(cal.hour_day == 28)) == 23


def test_hour_mean_excludes_flags_and_counts() -> None:
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [
        ("S1", t, "w01019", 1.0, "N"),
        ("S1", t + 60_000, "w01019", 2.0, "N"),
        ("S1", t + 120_000, "w01019", 3.0, "N"),
        ("S1", t + 180_000, "w01019", 100.0, "M"),  # maintenance: excluded
        ("S1", t + 240_000, "w01019", None, "N"),  # missing value
    ]
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), ValidityRules())
    h = agg.hour.at(0, 0)
    # mean (1 + 2 + 3) / 3 = 2.0 from 3 of 5 readings
    assert (h.value, h.n, h.n_valid, h.valid, h.min, h.max) == (2.0, 5, 3, True, 1.0, 3.0)
    assert agg.keys == (("S1", "CODMn"),)


def _hourly(
    station: str, code: str, day: int, hours: range, value: float
) -> list[tuple[str, int, str, float | None, str]]:
    base = ms(f"2026-05-{day:02d}T00:30:00+08:00")
    return [(station, base + h * HOUR_MS, code, value, "N") for h in hours]


def test_day_validity_hourly_and_four_hourly() -> None:
    rows = (
        _hourly("S1", "w01009", 1, range(20), 6.0)  # DO: 20 hours -> valid day
        + _hourly("S1", "w01009", 2, range(19), 6.0)  # 19 hours -> invalid
        + _hourly("S1", "w21003", 1, range(0, 12, 4), 0.4)  # NH3-N: 3 four-hourly -> valid
        + _hourly("S1", "w21003", 2, range(0, 8, 4), 0.4)  # 2 -> invalid
    )
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), ValidityRules())
    idx = agg.index()
    do, nh = idx[("S1", "DO")], idx[("S1", "NH3-N")]
    assert [agg.day.at(do, d).valid for d in (0, 1)] == [True, False]
    assert [agg.day.at(do, d).n_valid for d in (0, 1)] == [20, 19]
    assert [agg.day.at(nh, d).valid for d in (0, 1)] == [True, False]
    assert agg.day.at(nh, 1).value == 0.4  # an invalid mean is still shown


def test_month_is_mean_of_valid_daily_means() -> None:
    rules = ValidityRules(min_days_per_month=2)
    rows = (
        _hourly("S1", "w01009", 1, range(24), 1.0)  # 24 values of 1.0
        + _hourly("S1", "w01009", 2, range(20), 3.0)  # 20 values of 3.0
        + _hourly("S1", "w01009", 3, range(10), 50.0)  # 10 hours: invalid day, left out
    )
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), rules)
    m = agg.month.at(0, 0)
    # (1.0 + 3.0) / 2 = 2.0; a mean of the 44 values would be 1.909
    assert (m.value, m.n, m.n_valid, m.valid) == (2.0, 3, 2, True)
    strict = aggregate(group_readings(cols(rows)), calendar(MAY, SH), ValidityRules())
    assert strict.month.at(0, 0).valid is False  # 2 valid days < 20


def test_half_detection_limit() -> None:
    rules = ValidityRules.build(ValidityConfig(), detection_limits={"NH3-N": 0.025})
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [("S1", t, "w21003", 0.01, "N"), ("S1", t + 1000, "w21003", 0.1, "N")]
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), rules)
    # 0.01 < DL 0.025 counts as 0.0125, reported to 3 decimals half to even: 0.012;
    # (0.012 + 0.100) / 2 = 0.056 exactly.
    assert agg.hour.at(0, 0).value == 0.056


def test_out_of_physical_range_is_invalid() -> None:
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [("S1", t, "w01001", 15.0, "N"), ("S1", t + 1000, "w01001", 7.0, "N")]
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), ValidityRules())
    assert (agg.hour.at(0, 0).value, agg.hour.at(0, 0).n_valid) == (7.0, 1)


def test_year_needs_valid_months() -> None:
    rules = ValidityRules(
        min_hours_per_day=1, min_values_per_day_4h=1, min_days_per_month=1, min_months_per_year=9
    )
    rows = []
    for month in range(1, 10):  # 9 months, one reading each, value = month
        t = ms(f"2026-{month:02d}-10T12:00:00+08:00")
        rows.append(("S1", t, "w01019", float(month), "N"))
    agg = aggregate(group_readings(cols(rows)), calendar(Period(2026), SH), rules)
    assert agg.year is not None
    y = agg.year.at(0, 0)
    # mean of 1..9 = 5.0, from 9 valid months
    assert (y.value, y.n_valid, y.valid) == (5.0, 9, True)
    eight = aggregate(group_readings(cols(rows[:8])), calendar(Period(2026), SH), rules)
    assert eight.year is not None and eight.year.at(0, 0).valid is False


def test_grouping_sorts_and_drops_unknown() -> None:
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [
        ("S2", t, "w01019", 4.0, "N"),
        ("S1", t, "w99999", 1.0, "N"),  # unknown code: dropped
        ("S1", t + 5, "w01019", 2.0, "N"),
        ("S1", t, "w01019", 1.0, "N"),
        ("S9", t, "w01019", 9.0, "N"),  # not a county station
    ]
    series = group_readings(cols(rows), stations=["S1", "S2"])
    assert series.keys == (("S1", "CODMn"), ("S2", "CODMn"))
    assert series.offsets.tolist() == [0, 2, 3]
    assert series.values.tolist() == [1.0, 2.0, 4.0]


def test_group_readings_needs_columns() -> None:
    with pytest.raises(InputError, match="'code'"):
        group_readings({"station": [], "ts_ms": [], "value": []})


def _tp_two_days() -> dict[str, list[object]]:
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [("S1", t + h * HOUR_MS, "w21011", 0.1, "N") for h in range(24)]
    rows += [("S1", t + (24 + h) * HOUR_MS, "w21011", 0.3, "N") for h in range(20)]
    return cols(rows)


def test_month_basis_daily_means_or_values() -> None:
    # Day 1: 24 hourly values 0.1; day 2: 20 hourly values 0.3. Mean of daily means:
    # (0.1 + 0.3) / 2 = 0.2. Mean of the valid values: (24 * 0.1 + 20 * 0.3) / 44 = 8.4 / 44
    # = 0.19090.. -> 0.191 (TP: three decimals).
    base = ValidityConfig(min_days_per_month=2)
    daily = aggregate(group_readings(_tp_two_days()), calendar(MAY, SH), ValidityRules.build(base))
    assert daily.month.at(0, 0).value == 0.2
    by_values = ValidityRules.build(ValidityConfig(min_days_per_month=2, month_basis="values"))
    assert by_values.describe()["month_basis"] == "values"
    agg = aggregate(group_readings(_tp_two_days()), calendar(MAY, SH), by_values)
    m = agg.month.at(0, 0)
    assert m.value == 0.191
    assert (m.n, m.n_valid, m.valid) == (2, 2, True)  # validity still counted in days


def test_means_below_the_detection_limit_are_reported_dl_l() -> None:
    t = ms("2026-05-01T00:00:00+08:00")
    rows = [("S1", t + h * HOUR_MS, "w21003", 0.01, "N") for h in range(24)]
    rules = ValidityRules.build(ValidityConfig(), detection_limits={"NH3-N": 0.025})
    agg = aggregate(group_readings(cols(rows)), calendar(MAY, SH), rules)
    day = agg.day.at(0, 0)
    # Each value counts as 0.025 / 2 = 0.0125 -> 0.012 (half to even); the mean 0.012 < 0.025.
    assert day.value == 0.012
    assert day.below_dl == 0.025
    assert day.reported(3) == "0.025L"
    assert Mean(0.00002, 1, 1, True, below_dl=0.00004).reported(5) == "0.00004L"
    assert Mean(0.123, 1, 1, True).reported(3) == "0.123"
    assert day.to_json()["below_dl"] == 0.025
    # The registry's default detection limit applies when the county sets none.
    assert ValidityRules.build(ValidityConfig()).detection_limits["NH3-N"] == 0.025

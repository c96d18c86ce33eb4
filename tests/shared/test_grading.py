from __future__ import annotations

import math

import numpy as np
import pytest

from sanduan.shared.errors import InputError, InvalidValueError, UnknownParameterError
from sanduan.shared.grading import (
    class_label,
    classify_array,
    classify_batch,
    grade_sample,
    kernel_tables,
)
from sanduan.shared.model import WaterBody
from sanduan.shared.params import resolve

RIVER = WaterBody.RIVER
LAKE = WaterBody.LAKE


def grade(name: str, value: float, water_body: WaterBody = RIVER) -> int:
    return grade_sample({name: value}, water_body).items[resolve(name).name].grade


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # Equal to a limit: in that class; shared limits: the better class.
        ("COD", 15.0, 1),
        ("COD", 16.0, 3),
        # Rounded to the reporting precision first (COD: integers; GB/T 8170 half to even).
        ("COD", 15.000001, 1),
        ("COD", 15.5, 3),
        ("COD", 14.5, 1),
        ("COD", 40.5, 5),
        ("COD", 20.0, 3),
        ("COD", 30.0, 4),
        ("COD", 40.0, 5),
        ("COD", 41.0, 6),
        ("COD", 0.0, 1),
        ("BOD5", 3.0, 1),
        ("BOD5", 3.5, 3),
        ("CODMn", 2.0, 1),
        ("CODMn", 2.1, 2),
        ("CODMn", 2.04, 1),
        ("CODMn", 15.0, 5),
        ("CODMn", 15.1, 6),
        ("NH3-N", 0.15, 1),
        ("NH3-N", 0.16, 2),
        ("NH3-N", 0.5, 2),
        ("NH3-N", 1.0, 3),
        ("NH3-N", 1.5, 4),
        ("NH3-N", 2.0, 5),
        ("NH3-N", 2.001, 6),
        ("NH3-N", 2.0004, 5),
        ("NH3-N", 2.0005, 5),
        ("NH3-N", 2.0015, 6),
        ("Cu", 0.01, 1),
        ("Cu", 0.02, 2),
        ("Cu", 1.0, 2),
        ("Cu", 1.01, 6),
        ("Zn", 1.5, 4),
        ("Hg", 0.00005, 1),
        ("Hg", 0.00006, 3),
        ("Hg", 0.001, 4),
        ("Cd", 0.002, 2),
        ("Cd", 0.006, 5),
        ("CN", 0.2, 3),
        ("LAS", 0.25, 4),
        ("fecal-coliform", 10000.0, 3),
        # DO: "at least" limits.
        ("DO", 7.5, 1),
        ("DO", 7.49, 2),
        ("DO", 6.0, 2),
        ("DO", 5.0, 3),
        ("DO", 3.0, 4),
        ("DO", 2.0, 5),
        ("DO", 1.99, 6),
        ("DO", 0.0, 6),
        ("DO", 14.0, 1),
        # pH: 6..9 inclusive, else inferior V.
        ("pH", 6.0, 1),
        ("pH", 9.0, 1),
        ("pH", 7.3, 1),
        ("pH", 5.99, 6),
        ("pH", 9.01, 6),
        ("pH", 0.0, 6),
        # No limits: not graded.
        ("temperature", 25.0, 0),
        ("temperature", -0.5, 0),
        ("conductivity", 450.0, 0),
        ("turbidity", 12.0, 0),
        ("chlorophyll", 3.0, 0),
        # Extremes.
        ("COD", 1e300, 6),
        ("COD", math.inf, 6),
        ("DO", math.inf, 1),
        # NaN: not graded.
        ("COD", math.nan, 0),
        ("DO", math.nan, 0),
        ("pH", math.nan, 0),
    ],
)
def test_item_class_at_boundaries(name: str, value: float, expected: int) -> None:
    assert grade(name, value) == expected


@pytest.mark.parametrize(
    ("value", "river", "lake"),
    [
        (0.01, 1, 1),
        (0.02, 1, 2),
        (0.025, 2, 2),
        (0.05, 2, 3),
        (0.1, 2, 4),
        (0.2, 3, 5),
        (0.3, 4, 6),
        (0.4, 5, 6),
        (0.41, 6, 6),
    ],
)
def test_tp_river_and_lake(value: float, river: int, lake: int) -> None:
    assert grade("TP", value, RIVER) == river
    assert grade("TP", value, LAKE) == lake


def test_tn_is_graded_but_not_evaluated() -> None:
    g = grade_sample({"TN": 1.2, "COD": 10.0})
    assert g.items["TN"].grade == 4
    assert not g.items["TN"].evaluated
    assert g.grade == 1
    assert g.main_pollutants == ()


def test_fecal_coliform_and_temperature_do_not_count() -> None:
    g = grade_sample({"fecal-coliform": 1e6, "temperature": 30.0, "DO": 8.0})
    assert g.items["fecal-coliform"].grade == 6
    assert g.grade == 1


def test_overall_is_worst_evaluated_item() -> None:
    g = grade_sample({"pH": 7.5, "DO": 5.5, "CODMn": 3.0, "NH3-N": 0.4, "TP": 0.12})
    assert [it.grade for it in g.items.values()] == [1, 3, 2, 2, 3]
    assert g.grade == 3


def test_nothing_graded_is_class_0() -> None:
    g = grade_sample({"temperature": 20.0, "COD": math.nan})
    assert g.grade == 0
    assert grade_sample({}).grade == 0
    assert grade_sample({"COD": math.nan}, target_class=3).meets_target is None


def test_meets_target() -> None:
    assert grade_sample({"COD": 20.0}, target_class=3).meets_target is True
    assert grade_sample({"COD": 21.0}, target_class=3).meets_target is False
    assert grade_sample({"COD": 15.0}, target_class=1).meets_target is True
    assert grade_sample({"DO": 1.0}, target_class=5).meets_target is False
    assert grade_sample({"COD": 20.0}).meets_target is None


def test_exceedance_against_class_iii_by_default() -> None:
    g = grade_sample({"COD": 30.0, "NH3-N": 0.5, "DO": 1.0, "pH": 10.0, "temperature": 20.0})
    assert g.exceedance_class == 3
    assert g.items["COD"].exceedance == pytest.approx(0.5)
    assert g.items["NH3-N"].exceedance == pytest.approx(-0.5)
    for name in ("DO", "pH", "temperature"):
        assert g.items[name].exceedance is None


def test_exceedance_against_target_class() -> None:
    g = grade_sample({"COD": 45.0, "TP": 0.2}, LAKE, target_class=4)
    assert g.exceedance_class == 4
    assert g.items["COD"].exceedance == pytest.approx(0.5)
    assert g.items["TP"].exceedance == pytest.approx(1.0)
    assert grade_sample({"COD": math.nan}).items["COD"].exceedance is None


def test_main_pollutants() -> None:
    g = grade_sample(
        {
            "COD": 35.0,  # V, +0.75
            "NH3-N": 1.9,  # V, +0.9
            "TP": 0.5,  # 劣V, +1.5
            "CODMn": 8.0,  # IV, +0.33
            "DO": 6.5,  # II
            "TN": 5.0,  # 劣V but not evaluated
        }
    )
    assert g.grade == 6
    assert g.main_pollutants == ("TP", "NH3-N", "COD")


def test_main_pollutants_only_worse_than_class_iii() -> None:
    g = grade_sample({"COD": 25.0, "NH3-N": 0.9, "TP": 0.15})
    assert g.grade == 4
    assert g.main_pollutants == ("COD",)


def test_main_pollutant_without_multiple_ranks_after_ties() -> None:
    g = grade_sample({"DO": 1.0, "COD": 50.0, "pH": 5.0})
    assert g.main_pollutants == ("COD", "pH", "DO")


def test_no_main_pollutants_up_to_class_iii() -> None:
    assert grade_sample({"COD": 20.0, "DO": 5.0}).main_pollutants == ()


def test_aliases_and_codes_in_samples() -> None:
    g = grade_sample({"w21003": 0.4, "codcr": 16.0, "Cr(VI)": 0.01})
    assert set(g.items) == {"NH3-N", "COD", "Cr6"}


@pytest.mark.parametrize(
    ("values", "error", "text"),
    [
        ({"COD": -1.0}, InvalidValueError, "COD"),
        ({"DO": -0.01}, InvalidValueError, "DO"),
        ({"pH": -1.0}, InvalidValueError, "pH"),
        ({"conductivity": -5.0}, InvalidValueError, "conductivity"),
        ({"COD": -math.inf}, InvalidValueError, "COD"),
        ({"foo": 1.0}, UnknownParameterError, "foo"),
        ({"COD": 1.0, "codcr": 2.0}, InputError, "twice"),
    ],
)
def test_invalid_input(values: dict[str, float], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        grade_sample(values)


def test_negative_error_names_parameter_and_value() -> None:
    with pytest.raises(InvalidValueError) as info:
        grade_sample({"nh3n": -0.2})
    assert info.value.parameter == "NH3-N"
    assert info.value.value == -0.2


def test_target_class_must_be_1_to_5() -> None:
    for bad in (0, 6):
        with pytest.raises(InputError, match="target class"):
            grade_sample({"COD": 1.0}, target_class=bad)


def test_class_labels() -> None:
    assert [class_label(c) for c in range(7)] == ["-", "I", "II", "III", "IV", "V", "劣V"]


def test_kernel_tables() -> None:
    river = kernel_tables(RIVER)
    lake = kernel_tables(LAKE)
    assert kernel_tables(RIVER) is river
    tp = resolve("TP").index
    assert river.limits[tp, 2] == 0.2
    assert lake.limits[tp, 2] == 0.05
    assert river.limits.shape == (27, 5)
    assert int(river.evaluated.sum()) == 21
    assert math.isnan(river.limits[resolve("temperature").index, 0])
    assert river.directions[resolve("pH").index] == 3
    assert not river.limits.flags.writeable


@pytest.mark.parametrize("parallel", [False, True])
def test_classify_array(parallel: bool) -> None:
    out = classify_array("DO", [7.5, 2.0, 1.99, math.nan], parallel=parallel)
    assert out.dtype == np.int8
    assert out.tolist() == [1, 5, 6, 0]
    with pytest.raises(InvalidValueError, match="DO"):
        classify_array("DO", [1.0, -1.0], parallel=parallel)
    assert classify_array("temperature", [-1.0, 20.0]).tolist() == [0, 0]


@pytest.mark.parametrize("parallel", [False, True])
def test_classify_batch(parallel: bool) -> None:
    idx = [resolve(n).index for n in ("COD", "DO", "TP", "pH", "temperature")]
    vals = [15.0, 2.0, 0.2, 9.01, -2.0]
    assert classify_batch(vals, idx, parallel=parallel).tolist() == [1, 5, 3, 6, 0]
    assert classify_batch(vals, idx, LAKE, parallel=parallel).tolist() == [1, 5, 5, 6, 0]
    with pytest.raises(InvalidValueError, match="TP"):
        classify_batch([1.0, -0.1], [0, resolve("TP").index], parallel=parallel)
    with pytest.raises(InputError, match="index 99"):
        classify_batch([1.0], [99], parallel=parallel)
    with pytest.raises(InputError, match="2 values but 1"):
        classify_batch([1.0, 2.0], [0], parallel=parallel)

"""Reporting precision and GB/T 8170-2008 rounding, against hand-worked values."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.shared.params import all_parameters
from sanduan.shared.precision import (
    decimal_of,
    exact_multiple,
    mean_scaled,
    quantize,
    round_indexed,
    round_to,
    round_value,
    to_units,
)
from sanduan.shared.standards import Direction, gb3838


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        # GB/T 8170-2008 3.3.1..3.3.4 examples: below 5 dropped, above 5 up, 5 then non-zero up,
        # exactly 5: to the even digit.
        (12.1498, 1, "12.1"),
        (10.5002, 0, "11"),
        (1.050, 1, "1.0"),
        (0.35, 1, "0.4"),
        (0.0125, 3, "0.012"),
        (0.0135, 3, "0.014"),
        (2.0005, 3, "2.000"),
        (2.0015, 3, "2.002"),
        (0.20000000000000004, 3, "0.200"),
        (-0.0365, 3, "-0.036"),  # 3.3.5: negative numbers by their absolute value
        (14.5, 0, "14"),
        (15.5, 0, "16"),
    ],
)
def test_gbt8170_examples(value: float, decimals: int, expected: str) -> None:
    assert quantize(value, decimals) == Decimal(expected)
    assert round_value(value, decimals) == float(expected)
    assert round_to(np.array([value]), decimals)[0] == float(expected)


def test_binary_noise_is_not_a_half() -> None:
    # 0.0125 is 0.01250000000000000069... in binary: rounding the binary expansion would go up.
    assert Decimal.from_float(0.0125) > Decimal("0.0125")
    assert round_value(0.0125, 3) == 0.012
    # 1.005 is 1.00499999999999989... in binary: the decimal 1.005 rounds to even 1.00.
    assert round_value(1.005, 2) == 1.0


def test_nan_and_huge_values_pass_through() -> None:
    assert math.isnan(round_value(math.nan, 2))
    assert round_value(math.inf, 2) == math.inf
    assert round_value(1e300, 2) == 1e300
    out = round_to(np.array([math.nan, 1e300, -math.inf]), 2)
    assert math.isnan(out[0]) and out[1] == 1e300 and out[2] == -math.inf


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=0, max_value=6),
)
def test_vectorised_rounding_equals_decimal_rounding(x: float, d: int) -> None:
    assert round_to(np.array([x]), d)[0] == float(quantize(x, d))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=5), st.integers(min_value=-(10**6), max_value=10**6))
def test_vectorised_rounding_at_exact_halves(d: int, units: int) -> None:
    x = float(Decimal(units * 10 + 5).scaleb(-(d + 1)))
    assert round_to(np.array([x]), d)[0] == float(quantize(x, d))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=30),
    st.integers(min_value=0, max_value=5),
)
def test_mean_scaled_is_the_exact_mean_rounded_half_even(units: list[int], d: int) -> None:
    values = [u / 10**d for u in units]
    total = float(to_units(np.array(values), d).sum())
    got = mean_scaled(np.array([total]), np.array([len(units)]), d)[0]
    exact = Decimal(sum(units)) / len(units)
    assert got == float(quantize(exact.scaleb(-d), d))


def test_exact_multiple() -> None:
    assert exact_multiple(0.3, 0.2) == Decimal("0.50")
    assert exact_multiple(1.5, 1.0) == Decimal("0.50")
    assert exact_multiple(0.24, 0.2) == Decimal("0.20")  # float: 0.19999999999999996
    assert exact_multiple(12.0, 6.0) == Decimal("1.00")
    assert exact_multiple(4.4, 6.0) == Decimal("-0.27")  # -0.2666..


def test_round_indexed_uses_each_parameters_decimals() -> None:
    params = all_parameters()
    idx = np.array([p.index for p in params] + [len(params)], dtype=np.int64)
    vals = np.full(idx.shape, 1.23456789)
    out = round_indexed(vals, idx)
    for p in params:
        assert out[p.index] == round(1.23456789, p.decimals) or out[p.index] == float(
            quantize(1.23456789, p.decimals)
        )
    assert out[-1] == 1.23456789  # an index outside the registry is left alone


def test_every_limit_is_representable_at_its_reporting_precision() -> None:
    std = gb3838()
    for p in all_parameters():
        item = std.item(p.name)
        if item is None or item.direction is Direction.NONE:
            continue
        rows = [item.limits] + ([item.lake_limits] if item.lake_limits else [])
        for row in rows:
            for lim in row:
                assert quantize(lim, p.decimals) == decimal_of(lim), (p.name, lim, p.decimals)
        if p.detection_limit is not None:
            # GB 11893 TP: 0.01 mg/L, the lake Class I limit itself.
            assert p.detection_limit <= min(min(r) for r in rows), p.name

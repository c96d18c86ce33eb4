"""Kernels against the plain-Python oracle on random inputs: both sets, the kernels compiled
ahead of time and numba's JIT ones (the parallel kernels exist in the JIT set only)."""

from __future__ import annotations

import math
import os

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sanduan.shared.errors import ConfigError
from sanduan.shared.grading import KernelTables, kernel_tables, kernels, loader, oracle
from sanduan.shared.model import WaterBody

# Applied to each test here (a loaded profile would apply to every test of the session).
KERNELS = settings(max_examples=300, deadline=None)

TABLES = [kernel_tables(WaterBody.RIVER), kernel_tables(WaterBody.LAKE)]
ALL_LIMITS = sorted(
    {float(x) for t in TABLES for x in t.limits.ravel() if not math.isnan(x)} | {0.0}
)
N_PARAMS = len(TABLES[0].names)


def kernel_set(kind: loader.Kind) -> loader.Kernels:
    """The kernels of ``kind``. A missing AOT build fails the test (the package build makes
    it), unless SANDUAN_KERNELS=jit says this machine grades with the JIT only."""
    try:
        return loader.load(kind)
    except ConfigError as exc:
        if os.environ.get(loader.ENV) == "jit":
            pytest.skip(f"SANDUAN_KERNELS=jit: {exc}")
        raise


KINDS = pytest.mark.parametrize("kind", loader.KINDS)

# Values worth hitting: every limit exactly, its neighbours, zero, extremes, NaN, inf.
special = st.sampled_from(
    [
        *ALL_LIMITS,
        *(math.nextafter(x, math.inf) for x in ALL_LIMITS),
        *(math.nextafter(x, -math.inf) for x in ALL_LIMITS if x > 0),
        0.0,
        -0.0,
        5e-324,
        1e300,
        math.inf,
        -math.inf,
        math.nan,
        -1.0,
        -1e-300,
    ]
)
value = st.one_of(special, st.floats(allow_nan=True, allow_infinity=True))
values = st.lists(value, max_size=60).map(lambda xs: np.asarray(xs, dtype=np.float64))


@st.composite
def limit_rows(draw: st.DrawFn) -> tuple[npt.NDArray[np.float64], int]:
    direction = draw(st.sampled_from([0, 1, 2, 3]))
    if direction == 0:
        return np.full(5, np.nan), 0
    if direction == 3:
        lo = draw(st.floats(0, 100))
        hi = draw(st.floats(lo, 1e6).filter(lambda h: h > lo))
        return np.array([lo, hi, np.nan, np.nan, np.nan]), 3
    xs = sorted(
        draw(
            st.lists(
                st.one_of(st.sampled_from(ALL_LIMITS[1:]), st.floats(1e-9, 1e9)),
                min_size=5,
                max_size=5,
            )
        )
    )
    if direction == 2:
        xs.reverse()
    return np.asarray(xs, dtype=np.float64), direction


def same_floats(a: npt.NDArray[np.float64], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a.tolist(), b, strict=True)
    )


@KINDS
@KERNELS
@given(values, limit_rows())
def test_classify(
    kind: loader.Kind, vs: npt.NDArray[np.float64], row: tuple[npt.NDArray[np.float64], int]
) -> None:
    limits, direction = row
    expected = oracle.classify(vs.tolist(), limits.tolist(), direction)
    assert kernel_set(kind).classify(vs, limits, direction).tolist() == expected


@KERNELS
@given(values, limit_rows())
def test_classify_parallel(
    vs: npt.NDArray[np.float64], row: tuple[npt.NDArray[np.float64], int]
) -> None:
    limits, direction = row
    expected = oracle.classify(vs.tolist(), limits.tolist(), direction)
    assert kernels.classify_parallel(vs, limits, direction).tolist() == expected


@KINDS
@KERNELS
@given(value, limit_rows())
def test_grade_value(kind: loader.Kind, v: float, row: tuple[npt.NDArray[np.float64], int]) -> None:
    limits, direction = row
    assert kernel_set(kind).grade_value(v, limits, direction) == oracle.grade_value(
        v, limits.tolist(), direction
    )


@KINDS
@KERNELS
@given(values, st.data(), st.sampled_from(TABLES))
def test_classify_indexed(
    kind: loader.Kind, vs: npt.NDArray[np.float64], data: st.DataObject, tables: KernelTables
) -> None:
    idx = np.asarray(
        data.draw(st.lists(st.integers(-2, N_PARAMS + 1), min_size=len(vs), max_size=len(vs))),
        dtype=np.int64,
    )
    args = (vs, idx, tables.limits, tables.directions)
    expected = oracle.classify_indexed(
        vs.tolist(), idx.tolist(), tables.limits.tolist(), tables.directions.tolist()
    )
    assert kernel_set(kind).classify_indexed(*args).tolist() == expected
    if kind == "jit":
        assert kernels.classify_indexed_parallel(*args).tolist() == expected


@KINDS
@KERNELS
@given(
    hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=30),
               elements=st.integers(-2, 6)),
    st.data(),
)  # fmt: skip
def test_overall_class(
    kind: loader.Kind, classes: npt.NDArray[np.int8], data: st.DataObject
) -> None:
    m = classes.shape[1]
    evaluated = np.asarray(data.draw(st.lists(st.booleans(), min_size=m, max_size=m)), dtype=bool)
    expected = oracle.overall_class(classes.tolist(), evaluated.tolist())
    assert kernel_set(kind).overall_class(classes, evaluated).tolist() == expected


@KINDS
@KERNELS
@given(values, limit_rows(), st.integers(0, 6))
def test_exceedance(
    kind: loader.Kind,
    vs: npt.NDArray[np.float64],
    row: tuple[npt.NDArray[np.float64], int],
    target: int,
) -> None:
    limits, direction = row
    got = kernel_set(kind).exceedance(vs, limits, direction, target)
    assert same_floats(got, oracle.exceedance(vs.tolist(), limits.tolist(), direction, target))


@KINDS
@KERNELS
@given(values, st.data(), st.integers(1, 5))
def test_exceedance_indexed(
    kind: loader.Kind, vs: npt.NDArray[np.float64], data: st.DataObject, target: int
) -> None:
    t = TABLES[0]
    idx = np.asarray(
        data.draw(st.lists(st.integers(-1, N_PARAMS), min_size=len(vs), max_size=len(vs))),
        dtype=np.int64,
    )
    got = kernel_set(kind).exceedance_indexed(vs, idx, t.limits, t.directions, target)
    expected = oracle.exceedance_indexed(
        vs.tolist(), idx.tolist(), t.limits.tolist(), t.directions.tolist(), target
    )
    assert same_floats(got, expected)


@KINDS
@KERNELS
@given(hnp.arrays(np.int8, st.integers(0, 50), elements=st.integers(0, 6)), st.integers(1, 5))
def test_meets_target(kind: loader.Kind, overall: npt.NDArray[np.int8], target: int) -> None:
    expected = oracle.meets_target(overall.tolist(), target)
    assert kernel_set(kind).meets_target(overall, target).tolist() == expected


@KINDS
@KERNELS
@given(value, limit_rows(), st.integers(0, 6))
def test_exceedance_value(
    kind: loader.Kind, v: float, row: tuple[npt.NDArray[np.float64], int], target: int
) -> None:
    limits, direction = row
    got = kernel_set(kind).exceedance_value(v, limits, direction, target)
    want = oracle.exceedance_value(v, limits.tolist(), direction, target)
    assert (math.isnan(got) and math.isnan(want)) or got == want

"""Numba kernels for GB 3838 grading.

Conventions shared by every kernel (and by :mod:`sanduan.shared.grading.oracle`):

- ``limits`` is a float64 row of 5: the Class I..V limits for UPPER and LOWER directions,
  ``[min, max, nan, nan, nan]`` for RANGE, all NaN for NONE. Direction codes are
  :class:`sanduan.shared.standards.Direction` (0 none, 1 upper, 2 lower, 3 range).
- Grades are int8: 1..5 Class I..V, 6 inferior V, 0 not graded (NaN value or no limits),
  -1 (:data:`INVALID`) a negative value of a graded item, -2 (:data:`BAD_INDEX`) a parameter
  index outside the table. Callers turn the negative sentinels into errors.
- A value equal to a limit is in that class; where classes share a limit the better class wins.

All kernels are compiled with ``cache=True``: see :mod:`sanduan.shared.grading.cache` for where
the cache goes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit, prange

F = TypeVar("F", bound=Callable[..., Any])

NONE = 0
UPPER = 1
LOWER = 2
RANGE = 3

NOT_GRADED = 0
INFERIOR_V = 6
INVALID = -1
BAD_INDEX = -2

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
Ix = npt.NDArray[np.integer[Any]]
B1 = npt.NDArray[np.bool_]


def _jit(fn: F) -> F:
    return cast(F, njit(cache=True, nogil=True)(fn))


def _pjit(fn: F) -> F:
    return cast(F, njit(cache=True, nogil=True, parallel=True)(fn))


@_jit
def grade_value(v: float, limits: F8, direction: int) -> int:
    """Grade of one value."""
    if math.isnan(v) or direction == NONE:
        return NOT_GRADED
    if v < 0.0:
        return INVALID
    if direction == UPPER:
        for k in range(5):
            if v <= limits[k]:
                return k + 1
        return INFERIOR_V
    if direction == LOWER:
        for k in range(5):
            if v >= limits[k]:
                return k + 1
        return INFERIOR_V
    if direction == RANGE:
        if limits[0] <= v <= limits[1]:
            return 1
        return INFERIOR_V
    return NOT_GRADED


@_jit
def _grade_counted(  # noqa: PLR0917 (scalars keep the loop vectorisable)
    v: float, l0: float, l1: float, l2: float, l3: float, l4: float, up: bool
) -> int:
    # For monotonic limits the class is 1 + the number of limits v is past. Written without
    # branches so that the loops below vectorise; same result as grade_value.
    if up:
        c = 1 + (v > l0) + (v > l1) + (v > l2) + (v > l3) + (v > l4)
    else:
        c = 1 + (v < l0) + (v < l1) + (v < l2) + (v < l3) + (v < l4)
    c = INVALID if v < 0.0 else c
    return NOT_GRADED if math.isnan(v) else c


@_jit
def classify(values: F8, limits: F8, direction: int) -> I8:
    """Grade of each value of one parameter."""
    n = values.shape[0]
    out = np.empty(n, dtype=np.int8)
    if direction in (UPPER, LOWER):
        up = direction == UPPER
        l0, l1, l2, l3, l4 = limits[0], limits[1], limits[2], limits[3], limits[4]
        for i in range(n):
            out[i] = _grade_counted(values[i], l0, l1, l2, l3, l4, up)
    else:
        for i in range(n):
            out[i] = grade_value(values[i], limits, direction)
    return out


@_pjit
def classify_parallel(values: F8, limits: F8, direction: int) -> I8:
    """:func:`classify` over all cores."""
    n = values.shape[0]
    out = np.empty(n, dtype=np.int8)
    if direction in (UPPER, LOWER):
        up = direction == UPPER
        l0, l1, l2, l3, l4 = limits[0], limits[1], limits[2], limits[3], limits[4]
        for i in prange(n):
            out[i] = _grade_counted(values[i], l0, l1, l2, l3, l4, up)
    else:
        for i in prange(n):
            out[i] = grade_value(values[i], limits, direction)
    return out


@_jit
def classify_indexed(values: F8, param_index: Ix, limits: F8, directions: Ix) -> I8:
    """Grade of each value of a long-format batch: ``values[i]`` is of parameter
    ``param_index[i]``, a row of ``limits`` (shape (P, 5)) and of ``directions`` (shape (P,))."""
    n = values.shape[0]
    p = directions.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        j = param_index[i]
        if j < 0 or j >= p:
            out[i] = BAD_INDEX
        else:
            d = directions[j]
            if d in (UPPER, LOWER):
                row = limits[j]
                out[i] = _grade_counted(
                    values[i], row[0], row[1], row[2], row[3], row[4], d == UPPER
                )
            else:
                out[i] = grade_value(values[i], limits[j], d)
    return out


@_pjit
def classify_indexed_parallel(values: F8, param_index: Ix, limits: F8, directions: Ix) -> I8:
    """:func:`classify_indexed` over all cores."""
    n = values.shape[0]
    p = directions.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in prange(n):
        j = param_index[i]
        if j < 0 or j >= p:
            out[i] = BAD_INDEX
        else:
            d = directions[j]
            if d in (UPPER, LOWER):
                row = limits[j]
                out[i] = _grade_counted(
                    values[i], row[0], row[1], row[2], row[3], row[4], d == UPPER
                )
            else:
                out[i] = grade_value(values[i], limits[j], d)
    return out


@_jit
def overall_class(classes: I8, evaluated: B1) -> I8:
    """Worst graded class of each sample (row) over the evaluated columns; 0 if none graded.
    Entries <= 0 (not graded, or a sentinel) are skipped."""
    n, m = classes.shape
    out = np.zeros(n, dtype=np.int8)
    for i in range(n):
        worst = 0
        for j in range(m):
            if evaluated[j]:
                c = classes[i, j]
                worst = max(worst, c)
        out[i] = worst
    return out


@_jit
def exceedance_value(v: float, limits: F8, direction: int, target_class: int) -> float:
    """(C - L) / L against the Class ``target_class`` limit. NaN unless the item has upper
    limits, the value is a non-negative number and ``target_class`` is 1..5. Negative results
    mean the value is under the limit."""
    if direction != UPPER or math.isnan(v) or v < 0.0 or target_class < 1 or target_class > 5:
        return math.nan
    lim: float = limits[target_class - 1]
    if not lim > 0.0:
        return math.nan
    return (v - lim) / lim


@_jit
def exceedance(values: F8, limits: F8, direction: int, target_class: int) -> F8:
    """:func:`exceedance_value` of each value of one parameter."""
    n = values.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = exceedance_value(values[i], limits, direction, target_class)
    return out


@_jit
def exceedance_indexed(
    values: F8, param_index: Ix, limits: F8, directions: Ix, target_class: int
) -> F8:
    """:func:`exceedance` for a long-format batch (NaN for an index outside the table)."""
    n = values.shape[0]
    p = directions.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        j = param_index[i]
        if j < 0 or j >= p:
            out[i] = math.nan
        else:
            out[i] = exceedance_value(values[i], limits[j], directions[j], target_class)
    return out


@_jit
def meets_target(overall: I8, target_class: int) -> B1:
    """True where the overall class is 1..target_class. Class 0 gives False: the caller decides
    whether that means "unknown"."""
    n = overall.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):
        c = overall[i]
        out[i] = 1 <= c <= target_class
    return out

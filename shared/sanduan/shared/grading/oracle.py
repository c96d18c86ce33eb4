"""Plain-Python reference implementations of the grading kernels, for tests.

Each function states the rule as literally as possible (the first class whose limit the value
meets), where the fast kernels count the limits a value is past. Same conventions as
:mod:`sanduan.shared.grading.kernels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sanduan.shared.model import INFERIOR_V, NOT_GRADED
from sanduan.shared.standards import Direction

NONE = Direction.NONE
UPPER = Direction.UPPER
LOWER = Direction.LOWER
RANGE = Direction.RANGE
INVALID = -1
BAD_INDEX = -2


def grade_value(v: float, limits: Sequence[float], direction: int) -> int:
    if math.isnan(v) or direction == NONE:
        return NOT_GRADED
    if v < 0:
        return INVALID
    if direction == UPPER:
        return next((c for c in range(1, 6) if v <= limits[c - 1]), INFERIOR_V)
    if direction == LOWER:
        return next((c for c in range(1, 6) if v >= limits[c - 1]), INFERIOR_V)
    if direction == RANGE:
        return 1 if limits[0] <= v <= limits[1] else INFERIOR_V
    return NOT_GRADED


def classify(values: Sequence[float], limits: Sequence[float], direction: int) -> list[int]:
    return [grade_value(v, limits, direction) for v in values]


def classify_indexed(
    values: Sequence[float],
    param_index: Sequence[int],
    limits: Sequence[Sequence[float]],
    directions: Sequence[int],
) -> list[int]:
    out = []
    for v, j in zip(values, param_index, strict=True):
        if 0 <= j < len(directions):
            out.append(grade_value(v, limits[j], directions[j]))
        else:
            out.append(BAD_INDEX)
    return out


def overall_class(classes: Sequence[Sequence[int]], evaluated: Sequence[bool]) -> list[int]:
    return [
        max((c for c, e in zip(row, evaluated, strict=True) if e and c > 0), default=0)
        for row in classes
    ]


def exceedance_value(v: float, limits: Sequence[float], direction: int, target_class: int) -> float:
    if direction != UPPER or math.isnan(v) or v < 0 or target_class not in range(1, 6):
        return math.nan
    lim = limits[target_class - 1]
    if not lim > 0:
        return math.nan
    return (v - lim) / lim


def exceedance(
    values: Sequence[float], limits: Sequence[float], direction: int, target_class: int
) -> list[float]:
    return [exceedance_value(v, limits, direction, target_class) for v in values]


def exceedance_indexed(
    values: Sequence[float],
    param_index: Sequence[int],
    limits: Sequence[Sequence[float]],
    directions: Sequence[int],
    target_class: int,
) -> list[float]:
    return [
        exceedance_value(v, limits[j], directions[j], target_class)
        if 0 <= j < len(directions)
        else math.nan
        for v, j in zip(values, param_index, strict=True)
    ]


def meets_target(overall: Sequence[int], target_class: int) -> list[bool]:
    return [c in range(1, target_class + 1) for c in overall]

"""GB 3838 grading: the high-level API over the numba kernels.

Class codes: 1..5 are Class I..V, 6 is inferior V (劣V), 0 is "not graded" (no value, NaN, or an
item without class limits). The kernels are loaded on first use (compiled ahead of time when
the package build could, numba's JIT otherwise: :mod:`sanduan.shared.grading.loader`), so
importing this package (or :mod:`sanduan.shared.grading.cache`) does not import numba.

Every value is rounded to its parameter's reporting precision (GB/T 8170-2008, half to even on
the decimal representation: :mod:`sanduan.shared.precision`) before the kernels see it, so a
value that equals a limit as a decimal is graded in that limit's class.

Exceedance multiples are (C - L) / L for items with upper limits, computed on decimals and
rounded to two places. :class:`ItemGrade` carries the multiple against the sample's
``exceedance_class`` limit (the target class when one is given, else Class III) and, separately,
the multiple against the Class III limit. A negative multiple means the value is under that
limit. Main pollutants (only for a sample worse than Class III; at most three, worst class
first, then largest Class III multiple) are ranked and reported on the Class III multiple.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from sanduan.shared.errors import InputError, InvalidValueError
from sanduan.shared.grading import loader
from sanduan.shared.model import INFERIOR_V, NOT_GRADED, WaterBody
from sanduan.shared.params import Parameter, all_parameters, resolve
from sanduan.shared.precision import exact_multiple, round_indexed, round_to, round_value
from sanduan.shared.standards import Direction, gb3838

REPORTING_CLASS = 3
_LABELS = {0: "-", 1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "劣V"}


def class_label(grade: int) -> str:
    """Roman numeral of a class: I..V, 劣V for 6, "-" for 0 (not graded)."""
    return _LABELS[grade]


@dataclass(frozen=True, slots=True)
class ItemGrade:
    value: float
    """The value as graded: rounded to the parameter's reporting precision."""
    grade: int
    evaluated: bool
    exceedance: float | None
    """Multiple against the sample's ``exceedance_class`` limit (target, else Class III)."""
    multiple_iii: float | None = None
    """Multiple against the Class III limit (main pollutants)."""


@dataclass(frozen=True, slots=True)
class SampleGrade:
    grade: int
    meets_target: bool | None
    items: Mapping[str, ItemGrade]
    main_pollutants: tuple[str, ...]
    water_body: WaterBody
    target_class: int | None
    exceedance_class: int

    def to_json(self) -> dict[str, Any]:
        """The ``sanduan grade --json`` document."""
        return {
            "class": self.grade,
            "meets_target": self.meets_target,
            "items": {
                name: {
                    "value": it.value,
                    "class": it.grade,
                    "evaluated": it.evaluated,
                    "exceedance": it.exceedance,
                    "multiple_iii": it.multiple_iii,
                }
                for name, it in self.items.items()
            },
            "main_pollutants": list(self.main_pollutants),
        }


@dataclass(frozen=True, slots=True, eq=False)
class KernelTables:
    """Per-parameter kernel inputs, row ``i`` for the parameter with ``index == i``.

    ``limits`` is float64 (P, 5), ``directions`` int64 (P,), ``evaluated`` and ``nonnegative``
    (the parameter cannot be negative) bool (P,); all read-only.
    """

    water_body: WaterBody
    names: tuple[str, ...]
    limits: npt.NDArray[np.float64]
    directions: npt.NDArray[np.int64]
    evaluated: npt.NDArray[np.bool_]
    nonnegative: npt.NDArray[np.bool_]


def kernel_tables(water_body: WaterBody = WaterBody.RIVER) -> KernelTables:
    """Kernel tables for a water body, built from the registry and GB 3838 once."""
    return _kernel_tables(WaterBody(water_body))


@functools.cache
def _kernel_tables(water_body: WaterBody) -> KernelTables:
    params = all_parameters()
    std = gb3838()
    limits = np.full((len(params), 5), np.nan, dtype=np.float64)
    directions = np.zeros(len(params), dtype=np.int64)
    evaluated = np.zeros(len(params), dtype=np.bool_)
    nonnegative = np.zeros(len(params), dtype=np.bool_)
    for p in params:
        item = std.item(p.name)
        evaluated[p.index] = p.evaluated
        nonnegative[p.index] = p.physical_min >= 0
        if item is None or item.direction is Direction.NONE:
            continue
        row = item.limits_for(water_body)
        limits[p.index, : len(row)] = row
        directions[p.index] = int(item.direction)
    for a in (limits, directions, evaluated, nonnegative):
        a.flags.writeable = False
    names = tuple(p.name for p in params)
    return KernelTables(water_body, names, limits, directions, evaluated, nonnegative)


def _jit() -> ModuleType:
    from sanduan.shared.grading import kernels as jit

    return jit


def _check_target(target_class: int | None) -> None:
    if target_class is not None and not 1 <= target_class <= 5:
        raise InputError(f"target class must be 1..5, got {target_class}")


def _negative(p: Parameter, value: float) -> InvalidValueError:
    return InvalidValueError(p.name, value, "negative value; a concentration cannot be below 0")


def grade_sample(
    values: Mapping[str, float],
    water_body: WaterBody = WaterBody.RIVER,
    target_class: int | None = None,
    *,
    do_class_i: float | None = None,
) -> SampleGrade:
    """Grade one sample: ``values`` maps parameter names (aliases and HJ 212 codes accepted) to
    values in the registry's units. ``do_class_i``, when given, is the DO Class I limit to use
    instead of 7.5 mg/L (GB 3838 allows 90 % saturation: :func:`do_saturation_limit`).

    Raises UnknownParameterError, InvalidValueError for a negative concentration, and
    InputError for a parameter given twice or a target class outside 1..5.
    """
    k = loader.kernels()
    _check_target(target_class)
    water_body = WaterBody(water_body)
    tables = kernel_tables(water_body)
    seen: dict[str, str] = {}
    params: list[Parameter] = []
    vals: list[float] = []
    for label, raw in values.items():
        p = resolve(label)
        if p.name in seen:
            raise InputError(f"parameter {p.name} given twice ({seen[p.name]!r} and {label!r})")
        seen[p.name] = label
        v = round_value(float(raw), p.decimals)
        if v < 0 and p.physical_min >= 0:
            raise _negative(p, float(raw))
        params.append(p)
        vals.append(v)

    arr = np.asarray(vals, dtype=np.float64)
    idx = np.asarray([p.index for p in params], dtype=np.int64)
    grades = k.classify_indexed(arr, idx, tables.limits, tables.directions)
    if do_class_i is not None:
        _regrade_do(grades, vals, params, tables, do_class_i)
    basis = target_class if target_class is not None else REPORTING_CLASS
    exc = _multiples(arr, idx, tables, basis)
    exc3 = exc if basis == REPORTING_CLASS else _multiples(arr, idx, tables, REPORTING_CLASS)
    row = np.zeros((1, len(tables.names)), dtype=np.int8)
    row[0, idx] = grades
    overall = int(k.overall_class(row, tables.evaluated)[0])

    meets: bool | None = None
    if target_class is not None and overall != NOT_GRADED:
        meets = bool(k.meets_target(np.array([overall], dtype=np.int8), target_class)[0])

    items: dict[str, ItemGrade] = {}
    for i, p in enumerate(params):
        e = float(exc[i])
        e3 = float(exc3[i])
        items[p.name] = ItemGrade(
            value=vals[i],
            grade=int(grades[i]),
            evaluated=p.evaluated,
            exceedance=None if math.isnan(e) else e,
            multiple_iii=None if math.isnan(e3) else e3,
        )

    main: tuple[str, ...] = ()
    if overall > REPORTING_CLASS:
        worse = [
            i for i, p in enumerate(params) if p.evaluated and int(grades[i]) > REPORTING_CLASS
        ]
        # Worst class first, then largest Class III multiple (none, as for DO and pH, last),
        # then registry order.
        worse.sort(
            key=lambda i: (
                -int(grades[i]),
                -float(exc3[i]) if not math.isnan(exc3[i]) else math.inf,
                params[i].index,
            )
        )
        main = tuple(params[i].name for i in worse[:3])

    return SampleGrade(
        grade=overall,
        meets_target=meets,
        items=MappingProxyType(items),
        main_pollutants=main,
        water_body=water_body,
        target_class=target_class,
        exceedance_class=basis,
    )


DO_SATURATION_NUMERATOR = 468.0
DO_SATURATION_OFFSET = 31.6


def do_saturation_limit(temperature: float, percent: float = 90.0) -> float:
    """DO Class I limit as ``percent`` of saturation at ``temperature`` (degC), mg/L:
    percent / 100 * 468 / (31.6 + T), the freshwater saturation formula of Chinese practice,
    computed on decimals and rounded to DO's reporting precision (GB/T 8170)."""
    from decimal import Decimal, localcontext

    from sanduan.shared.precision import decimal_of, quantize

    t = decimal_of(round_value(temperature, resolve("temperature").decimals))
    with localcontext() as ctx:
        ctx.prec = 40
        sat = Decimal("468") / (Decimal("31.6") + t)
        lim = decimal_of(percent) / 100 * sat
    return float(quantize(lim, resolve("DO").decimals))


def _regrade_do(
    grades: npt.NDArray[np.int8],
    vals: list[float],
    params: list[Parameter],
    tables: KernelTables,
    class_i: float,
) -> None:
    """Re-grade DO in place with ``class_i`` as its Class I limit (II..V unchanged)."""
    for i, p in enumerate(params):
        if p.name != "DO" or math.isnan(vals[i]) or vals[i] < 0:
            continue
        v = vals[i]
        if v >= class_i:
            grades[i] = 1
            continue
        row = tables.limits[p.index]
        grades[i] = next((c for c in range(2, 6) if v >= row[c - 1]), INFERIOR_V)


def _multiples(
    values: npt.NDArray[np.float64], idx: npt.NDArray[np.int64], tables: KernelTables, basis: int
) -> npt.NDArray[np.float64]:
    """Exact multiples (C - L) / L against the Class ``basis`` limit, rounded to two decimals
    (NaN where none applies: not an upper-limit item, NaN or negative value)."""
    out = np.full(values.shape, np.nan)
    for i, (v, j) in enumerate(zip(values.tolist(), idx.tolist(), strict=True)):
        if int(tables.directions[j]) != int(Direction.UPPER) or math.isnan(v) or v < 0:
            continue
        lim = float(tables.limits[j, basis - 1])
        if lim > 0:
            out[i] = float(exact_multiple(v, lim)) if math.isfinite(v) else math.inf
    return out


def classify_array(
    parameter: str,
    values: npt.ArrayLike,
    water_body: WaterBody = WaterBody.RIVER,
    *,
    parallel: bool = False,
) -> npt.NDArray[np.int8]:
    """Class of each value of one parameter (int8, codes 0..6). Raises InvalidValueError for a
    negative value of a parameter that cannot be negative. ``parallel`` runs numba's JIT kernel
    over all cores (numba is imported then)."""
    p = resolve(parameter)
    tables = kernel_tables(water_body)
    arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if p.physical_min >= 0:
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise _negative(p, float(arr[neg[0]]))
    arr = round_to(arr, p.decimals)
    fn = _jit().classify_parallel if parallel else loader.kernels().classify
    grades: npt.NDArray[np.int8] = fn(arr, tables.limits[p.index], int(tables.directions[p.index]))
    return grades


def classify_batch(
    values: npt.ArrayLike,
    param_index: npt.ArrayLike,
    water_body: WaterBody = WaterBody.RIVER,
    *,
    parallel: bool = False,
) -> npt.NDArray[np.int8]:
    """Class of each value of a long-format batch; ``param_index[i]`` is the
    :attr:`Parameter.index` of ``values[i]``. Raises InputError for an index outside the
    registry and InvalidValueError for a negative value of a parameter that cannot be
    negative. ``parallel`` runs numba's JIT kernel over all cores (numba is imported then)."""
    tables = kernel_tables(water_body)
    arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    idx = np.ascontiguousarray(param_index, dtype=np.int64).reshape(-1)
    if arr.shape != idx.shape:
        raise InputError(f"{arr.size} values but {idx.size} parameter indexes")
    p_count = len(tables.names)
    out_of_table = np.flatnonzero((idx < 0) | (idx >= p_count))
    if out_of_table.size:
        i = int(out_of_table[0])
        raise InputError(f"parameter index {int(idx[i])} at position {i} is not 0..{p_count - 1}")
    neg = np.flatnonzero((arr < 0) & tables.nonnegative[idx])
    if neg.size:
        i = int(neg[0])
        raise _negative(all_parameters()[int(idx[i])], float(arr[i]))
    arr = round_indexed(arr, idx)
    fn = _jit().classify_indexed_parallel if parallel else loader.kernels().classify_indexed
    grades: npt.NDArray[np.int8] = fn(arr, idx, tables.limits, tables.directions)
    return grades


__all__ = [
    "INFERIOR_V",
    "NOT_GRADED",
    "REPORTING_CLASS",
    "ItemGrade",
    "KernelTables",
    "SampleGrade",
    "class_label",
    "classify_array",
    "classify_batch",
    "do_saturation_limit",
    "grade_sample",
    "kernel_tables",
]

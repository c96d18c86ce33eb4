"""The grading kernels compiled ahead of time (:mod:`sanduan.shared.grading.build`), with the
same names, arguments and results as :mod:`sanduan.shared.grading.kernels`.

Importing this module loads the extension ``_aot`` and imports numpy, but neither numba nor
llvmlite. It raises ImportError when the extension is missing, cannot be loaded, or was built
from other sources than the ones installed (a stale build).

A compiled kernel takes exactly the types it was built for and does not check them (a wrong
dtype would be read as raw memory), so every function here converts its arguments first:
arrays to the kernel's dtype and to C order (no copy when they already are), with a TypeError
for the wrong number of dimensions, as the JIT kernels give.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sanduan.shared.grading import build

try:
    from sanduan.shared.grading import _aot as _ext  # type: ignore[attr-defined]
except ImportError as exc:
    raise ImportError(
        f"the ahead-of-time grading kernels are not built ({exc}); build them with "
        "`python -m sanduan.shared.grading.build` or reinstall sanduan (pip install -e .)"
    ) from exc

if int(_ext.source_digest()) != build.source_digest():
    raise ImportError(
        f"the ahead-of-time grading kernels ({_ext.__file__}) were built from other sources "
        "than the installed kernels.py; rebuild them with "
        "`python -m sanduan.shared.grading.build` or reinstall sanduan (pip install -e .)"
    )

PATH: str = str(_ext.__file__)

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B1 = npt.NDArray[np.bool_]


def _array(a: Any, dtype: type[np.generic], ndim: int, name: str) -> Any:
    arr = np.ascontiguousarray(a, dtype=dtype)
    if arr.ndim != ndim:
        raise TypeError(f"{name}: expected a {ndim}-d array, got {arr.ndim}-d")
    return arr


def grade_value(v: float, limits: F8, direction: int) -> int:
    """Grade of one value."""
    return int(_ext.grade_value(float(v), _array(limits, np.float64, 1, "limits"), int(direction)))


def classify(values: F8, limits: F8, direction: int) -> I8:
    """Grade of each value of one parameter."""
    out: I8 = _ext.classify(
        _array(values, np.float64, 1, "values"),
        _array(limits, np.float64, 1, "limits"),
        int(direction),
    )
    return out


def classify_indexed(values: F8, param_index: Any, limits: F8, directions: Any) -> I8:
    """Grade of each value of a long-format batch (see the JIT kernel)."""
    out: I8 = _ext.classify_indexed(
        _array(values, np.float64, 1, "values"),
        _array(param_index, np.int64, 1, "param_index"),
        _array(limits, np.float64, 2, "limits"),
        _array(directions, np.int64, 1, "directions"),
    )
    return out


def overall_class(classes: I8, evaluated: B1) -> I8:
    """Worst graded class of each sample (row) over the evaluated columns; 0 if none graded."""
    out: I8 = _ext.overall_class(
        _array(classes, np.int8, 2, "classes"), _array(evaluated, np.bool_, 1, "evaluated")
    )
    return out


def exceedance_value(v: float, limits: F8, direction: int, target_class: int) -> float:
    """(C - L) / L against the Class ``target_class`` limit (see the JIT kernel)."""
    return float(
        _ext.exceedance_value(
            float(v), _array(limits, np.float64, 1, "limits"), int(direction), int(target_class)
        )
    )


def exceedance(values: F8, limits: F8, direction: int, target_class: int) -> F8:
    """:func:`exceedance_value` of each value of one parameter."""
    out: F8 = _ext.exceedance(
        _array(values, np.float64, 1, "values"),
        _array(limits, np.float64, 1, "limits"),
        int(direction),
        int(target_class),
    )
    return out


def exceedance_indexed(
    values: F8, param_index: Any, limits: F8, directions: Any, target_class: int
) -> F8:
    """:func:`exceedance` for a long-format batch (NaN for an index outside the table)."""
    out: F8 = _ext.exceedance_indexed(
        _array(values, np.float64, 1, "values"),
        _array(param_index, np.int64, 1, "param_index"),
        _array(limits, np.float64, 2, "limits"),
        _array(directions, np.int64, 1, "directions"),
        int(target_class),
    )
    return out


def meets_target(overall: I8, target_class: int) -> B1:
    """True where the overall class is 1..target_class."""
    out: B1 = _ext.meets_target(_array(overall, np.int8, 1, "overall"), int(target_class))
    return out

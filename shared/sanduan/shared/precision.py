"""Reporting precision and the rounding rule of GB/T 8170-2008.

Every value sanduan compares with a GB 3838 limit is first rounded to its parameter's reporting
precision (``decimals`` in ``data/parameters.toml``) by GB/T 8170-2008 clause 3.3 ("四舍六入五成双":
a dropped part below 5 is dropped, above 5 rounds up, exactly 5 rounds to the even last digit),
applied once to the value's shortest decimal representation (``repr``), never to its binary
expansion and never in steps. Rounding a float this way and converting back gives the double
nearest to the rounded decimal; limits are read from decimal text too, so a rounded value and a
limit compare as the decimals they stand for: 0.2 from a mean of 0.15 and 0.25 equals the Class
III TP limit 0.2.

Means are exact: :func:`mean_scaled` sums values already rounded to ``d`` decimals as integers
(units of 10^-d) and rounds the quotient once, half to even. Multiples and indexes that
compensation rules compare with thresholds are computed in :class:`decimal.Decimal`.

Only numpy is needed (the edge's numpy engine runs without numba).
"""

from __future__ import annotations

import functools
import math
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from sanduan.shared.params import all_parameters, resolve

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]

MULTIPLE_DECIMALS = 2
"""Exceedance multiples are reported, and compared with tiers, to two decimals."""

_EXACT = 2.0**52  # beyond this a double has no fractional part to round
_HALF_TOL = 1e-6  # |frac - 0.5| below this: the binary product cannot decide, use Decimal
_POW10 = 10.0 ** np.arange(23)  # exact powers of ten; decimals are 0..8

__all__ = [
    "MULTIPLE_DECIMALS",
    "decimal_of",
    "decimals_of",
    "decimals_table",
    "describe",
    "exact_multiple",
    "mean_scaled",
    "quantize",
    "round_indexed",
    "round_to",
    "round_value",
    "to_units",
]


def decimal_of(x: float | int | str | Decimal) -> Decimal:
    """The decimal a number stands for: a float's shortest representation (``0.1`` is 0.1, not
    0.1000000000000000055511151231257827...)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


def quantize(x: float | int | str | Decimal, decimals: int) -> Decimal:
    """``x`` rounded to ``decimals`` places by GB/T 8170-2008 (half to even), as a Decimal."""
    dx = decimal_of(x)
    with localcontext() as ctx:
        ctx.prec = max(60, dx.adjusted() + decimals + 5)
        return dx.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)


def round_value(x: float, decimals: int) -> float:
    """``x`` rounded to ``decimals`` places by GB/T 8170-2008; NaN and infinities unchanged."""
    if math.isnan(x) or abs(x) * 10.0**decimals >= _EXACT:  # NaN, infinite, nothing to round
        return x
    return float(quantize(x, decimals))


def round_to(values: npt.ArrayLike, decimals: npt.ArrayLike) -> F8:
    """Each value rounded to its number of decimals (a scalar or one per value), half to even on
    the decimal representation. NaN stays NaN. Vectorised: only values whose scaled binary
    product lies within 1e-6 of a half are settled with Decimal."""
    v = np.asarray(values, dtype=np.float64)
    scale = _POW10[np.asarray(decimals, dtype=np.int64)]
    with np.errstate(invalid="ignore", over="ignore"):
        x = v * scale
        n = np.rint(x)
        near_half = np.abs(x - n) > 0.5 - _HALF_TOL  # False for NaN
        small = np.abs(x) < _EXACT  # False for NaN and infinities
        out = np.where(small, n / scale, v)
    tie = near_half & small
    if np.any(tie):
        d = np.broadcast_to(np.asarray(decimals, dtype=np.int64), v.shape)
        flat_v = v.reshape(-1)
        flat_d = d.reshape(-1)
        flat_o = out.reshape(-1)
        for i in np.flatnonzero(tie.reshape(-1)):
            flat_o[i] = float(quantize(float(flat_v[i]), int(flat_d[i])))
        out = flat_o.reshape(v.shape)
    res: F8 = np.asarray(out, dtype=np.float64)
    return res


def mean_scaled(total: npt.ArrayLike, count: npt.ArrayLike, decimals: npt.ArrayLike) -> F8:
    """Exact means rounded half to even: ``total`` is a sum of values already rounded to
    ``decimals`` places, each as an integer number of 10^-decimals units (so the float sum is
    an exact integer below 2^53), ``count`` how many; NaN where count is 0."""
    t = np.asarray(total, dtype=np.float64)
    c = np.asarray(count, dtype=np.int64)
    d = np.broadcast_to(np.asarray(decimals, dtype=np.int64), t.shape)
    ti = np.rint(np.nan_to_num(t)).astype(np.int64)
    cc = np.maximum(c, 1)
    q, r = np.divmod(ti, cc)  # floor division: 0 <= r < cc
    twice = 2 * r
    up = (twice > cc) | ((twice == cc) & (q % 2 == 1))
    units = q + up
    with np.errstate(invalid="ignore"):
        out = np.where(c > 0, units / _POW10[d], np.nan)
    res: F8 = np.asarray(out, dtype=np.float64)
    return res


def to_units(values: npt.ArrayLike, decimals: npt.ArrayLike) -> F8:
    """Values already rounded to ``decimals`` places as integer counts of 10^-decimals (exact
    integers held in float64, ready for ``np.bincount`` weights); NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        res: F8 = np.rint(v * _POW10[np.asarray(decimals, dtype=np.int64)])
    return res


def exact_multiple(value: float, limit: float, decimals: int = MULTIPLE_DECIMALS) -> Decimal:
    """Exceedance multiple (C - L) / L of a (rounded) value against a limit, computed on the
    decimals both stand for and rounded once to ``decimals`` places, half to even."""
    c = decimal_of(value)
    lim = decimal_of(limit)
    with localcontext() as ctx:
        ctx.prec = 40
        return quantize((c - lim) / lim, decimals)


@functools.cache
def decimals_table() -> I8:
    """Reporting decimals per registry index (read-only)."""
    params = all_parameters()
    out = np.asarray([p.decimals for p in params], dtype=np.int64)
    out.flags.writeable = False
    return out


def decimals_of(parameter: str) -> int:
    """Reporting decimals of a parameter (name, alias or HJ 212 code)."""
    return resolve(parameter).decimals


def round_indexed(values: npt.ArrayLike, param_index: npt.ArrayLike) -> F8:
    """Each value of a long-format batch rounded to its parameter's reporting precision; values
    with an index outside the registry are returned unchanged."""
    v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    idx = np.ascontiguousarray(param_index, dtype=np.int64).reshape(-1)
    table = decimals_table()
    known = (idx >= 0) & (idx < table.shape[0])
    if known.all():
        return round_to(v, table[idx])
    out = v.copy()
    out[known] = round_to(v[known], table[idx[known]])
    return out


def describe(x: Any) -> str:
    """A decimal for evidence and reports: plain notation, no exponent."""
    return format(decimal_of(x), "f")

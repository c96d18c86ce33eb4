"""Benchmark: classify N values of one parameter (COD, river) four ways.

    python bench/grading.py [--n 10000000] [--python-n 1000000]

numba kernel (JIT, and compiled ahead of time when built), numpy searchsorted (same semantics:
NaN -> 0, negative -> -1), a plain Python loop (timed on a subset and scaled to N, as printed)
and the parallel numba kernel. Targets:
numba/numpy >= 1.5, numba/python >= 15.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sanduan.shared.errors import ConfigError
from sanduan.shared.grading import kernel_tables, kernels, loader
from sanduan.shared.model import WaterBody
from sanduan.shared.params import resolve

F8 = npt.NDArray[np.float64]


def numpy_classify(values: F8, limits: F8) -> npt.NDArray[np.int8]:
    out = (np.searchsorted(limits, values, side="left") + 1).astype(np.int8)
    out[np.isnan(values)] = 0
    out[values < 0] = -1
    return out


def python_classify(values: list[float], limits: list[float]) -> list[int]:
    out = []
    for v in values:
        if v != v:
            out.append(0)
        elif v < 0:
            out.append(-1)
        else:
            c = 6
            for k, lim in enumerate(limits):
                if v <= lim:
                    c = k + 1
                    break
            out.append(c)
    return out


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=10_000_000, help="values to classify")
    ap.add_argument("--python-n", type=int, default=1_000_000, help="subset for the Python loop")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--seed", type=int, default=3838)
    args = ap.parse_args()

    tables = kernel_tables(WaterBody.RIVER)
    p = resolve("COD")
    limits = np.ascontiguousarray(tables.limits[p.index])
    direction = int(tables.directions[p.index])

    rng = np.random.default_rng(args.seed)
    values = rng.lognormal(mean=np.log(20.0), sigma=0.6, size=args.n)
    values[rng.random(args.n) < 0.01] = np.nan
    values[: min(args.n, 5)] = limits  # exact boundaries

    # Warm up the JIT (or load it from the cache) before timing.
    kernels.classify(values[:100], limits, direction)
    kernels.classify_parallel(values[:100], limits, direction)

    t_numba, out_numba = best_of(lambda: kernels.classify(values, limits, direction), args.repeat)
    t_numpy, out_numpy = best_of(lambda: numpy_classify(values, limits), args.repeat)
    t_par, out_par = best_of(
        lambda: kernels.classify_parallel(values, limits, direction), args.repeat
    )
    try:
        aot: Any = loader.load("aot")
    except ConfigError as exc:
        print(f"  (no AOT kernels: {exc})")
        aot = None
    t_aot, out_aot = (
        best_of(lambda: aot.classify(values, limits, direction), args.repeat)
        if aot is not None
        else (math.nan, out_numba)
    )
    sub_n = min(args.python_n, args.n)
    sub = values[:sub_n].tolist()
    lim_list = limits.tolist()
    t_py_sub, out_py = best_of(lambda: python_classify(sub, lim_list), 1)
    t_py = t_py_sub * args.n / sub_n

    if not (
        np.array_equal(out_numba, out_numpy)
        and np.array_equal(out_numba, out_par)
        and np.array_equal(out_numba, out_aot)
    ):
        raise SystemExit("results differ between numba (JIT, AOT, parallel) and numpy")
    if out_numba[:sub_n].tolist() != out_py:
        raise SystemExit("results differ between numba and the Python loop")

    n = args.n
    print(f"classify {n:,} COD values (river), best of {args.repeat}; cores: {os.cpu_count()}")
    rows = [
        ("numba", t_numba, ""),
        ("numba, compiled AOT", t_aot, "  (generic CPU of the platform, as in a wheel)"),
        ("numpy searchsorted", t_numpy, ""),
        (
            "python loop",
            t_py,
            f"  (timed on {sub_n:,} values: {t_py_sub:.3f} s, scaled x{n / sub_n:g})",
        ),
        ("numba parallel", t_par, ""),
    ]
    for name, t, note in rows:
        print(f"  {name:<20} {t:8.3f} s  {n / t / 1e6:9.1f} M values/s{note}")

    def check(label: str, ratio: float, target: float) -> None:
        verdict = "PASS" if ratio >= target else "MISS"
        print(f"  {label:<28} {ratio:8.2f}  (target >= {target:g})  {verdict}")

    print("ratios (speed-up):")
    check("numba / numpy", t_numpy / t_numba, 1.5)
    check("numba / python", t_py / t_numba, 15)
    print(f"  {'numba parallel / numba':<28} {t_numba / t_par:8.2f}")
    print(f"  {'numba AOT / numba JIT':<28} {t_numba / t_aot:8.2f}")


if __name__ == "__main__":
    main()

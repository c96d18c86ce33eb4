"""Which grading kernels a process runs: compiled ahead of time, or numba's JIT.

- ``aot``: :mod:`sanduan.shared.grading.aot`, the extension the package build compiles
  (:mod:`sanduan.shared.grading.build`). Loads in milliseconds with numpy alone: no numba, no
  LLVM in the process.
- ``jit``: :mod:`sanduan.shared.grading.kernels`, compiled by numba on first use (or loaded
  from its cache, :mod:`sanduan.shared.grading.cache`). The fallback where the package was
  installed without a C compiler; it also has the parallel kernels.

By default (:func:`kernels`) a process takes the AOT kernels when they are built and match the
installed sources, else the JIT ones, with a warning saying why. The environment variable
``SANDUAN_KERNELS`` (``aot``, ``jit`` or ``auto``) overrides the choice; ``aot`` then fails with
:class:`~sanduan.shared.errors.ConfigError` if they are not available. Both sets give the same
results (the same oracle and property tests run against each).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt

from sanduan.shared.errors import ConfigError

ENV = "SANDUAN_KERNELS"
Kind = Literal["aot", "jit"]
KINDS: tuple[Kind, ...] = ("aot", "jit")

log = logging.getLogger("sanduan.grading")

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B1 = npt.NDArray[np.bool_]


class Kernels(Protocol):
    """The kernels both sets provide (see :mod:`sanduan.shared.grading.kernels`)."""

    def grade_value(self, v: float, limits: F8, direction: int) -> int: ...
    def classify(self, values: F8, limits: F8, direction: int) -> I8: ...
    def classify_indexed(
        self, values: F8, param_index: npt.NDArray[np.int64], limits: F8, directions: Any
    ) -> I8: ...
    def overall_class(self, classes: I8, evaluated: B1) -> I8: ...
    def exceedance_value(
        self, v: float, limits: F8, direction: int, target_class: int
    ) -> float: ...
    def exceedance(self, values: F8, limits: F8, direction: int, target_class: int) -> F8: ...
    def exceedance_indexed(
        self,
        values: F8,
        param_index: npt.NDArray[np.int64],
        limits: F8,
        directions: Any,
        target_class: int,
    ) -> F8: ...
    def meets_target(self, overall: I8, target_class: int) -> B1: ...


def load(kind: Kind) -> Kernels:
    """The kernels of ``kind``. Raises ConfigError when the AOT kernels are not available."""
    if kind == "aot":
        try:
            return cast(Kernels, importlib.import_module("sanduan.shared.grading.aot"))
        except ImportError as exc:
            raise ConfigError(ENV, "aot", str(exc)) from None
    if kind == "jit":
        # By module name: the package's attribute ``kernels`` is not necessarily this module.
        return cast(Kernels, importlib.import_module("sanduan.shared.grading.kernels"))
    raise ConfigError(ENV, str(kind), "grading kernels are 'aot', 'jit' or 'auto'")


def requested() -> Kind | None:
    """The kind ``SANDUAN_KERNELS`` asks for; None for ``auto`` or unset."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in KINDS:
        raise ConfigError(ENV, value, "grading kernels are 'aot', 'jit' or 'auto'")
    return value


@functools.cache
def _default() -> tuple[Kind, Kernels]:
    want = requested()
    if want is not None:
        return want, load(want)
    try:
        return "aot", load("aot")
    except ConfigError as exc:
        log.warning("grading with numba's JIT kernels: %s", exc.reason)
        return "jit", load("jit")


def kernels() -> Kernels:
    """This process's kernels (chosen once, see the module docstring)."""
    return _default()[1]


def kind() -> Kind:
    """Which kernels :func:`kernels` gives."""
    return _default()[0]

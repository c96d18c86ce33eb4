"""Grading at the edge: GB 3838 class of every reading with the shared numba kernels, exceedance
against the station's target class, and exceedance alarms as wire events.

A value outside its parameter's physical range (``physical_min``..``physical_max`` of the
registry: a pH of 40, a negative concentration) is not a measurement: :meth:`Grader.screen`
marks it, it gets class 0 and the buffer stores and sends it flagged D (device fault).

With ``engine = "numba"`` the grader runs the shared kernel ``classify_indexed``, loaded when it
is created: the one compiled ahead of time when the package build could (numpy alone in the
process, no numba or LLVM), numba's JIT one otherwise (:mod:`sanduan.shared.grading.loader`).

The buffer grades each commit batch in one vectorised call (:meth:`Grader.grade`); the streak
logic lives in :class:`sanduan.edge.core.outbox_policy.StreakTracker` and is fed in the same
transaction, so a reading and the alarm it triggers are committed together.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sanduan.edge.core.outbox_policy import AlarmChange
from sanduan.shared.errors import UnknownParameterError
from sanduan.shared.grading import class_label, kernel_tables
from sanduan.shared.model import WaterBody
from sanduan.shared.params import all_parameters, by_code
from sanduan.shared.precision import decimals_table, exact_multiple, round_indexed, round_value
from sanduan.shared.stuck import StuckTracker
from sanduan.shared.wire import Event, Severity

EXCEEDANCE = "exceedance"
CLEARED = "exceedance-cleared"


Engine = Literal["numba", "numpy"]
log = logging.getLogger("sanduan.edge.grader")

_UPPER, _LOWER, _RANGE = 1, 2, 3


def classify_numpy(
    values: npt.NDArray[np.float64],
    idx: npt.NDArray[np.int64],
    limits: npt.NDArray[np.float64],
    directions: npt.NDArray[np.int64],
) -> npt.NDArray[np.int8]:
    """The ``classify_indexed`` kernel's results with numpy alone (no numba in the process),
    except that the kernel's negative sentinels come out as 0. Equality with the kernel is
    tested."""
    p = directions.shape[0]
    known = (idx >= 0) & (idx < p)
    j = np.where(known, idx, 0)
    d = np.where(known, directions[j], 0)
    lim = limits[j]
    v = values[:, None]
    with np.errstate(invalid="ignore"):
        c_up = 1 + (v > lim).sum(axis=1)
        c_lo = 1 + (v < lim).sum(axis=1)
        in_range = (values >= lim[:, 0]) & (values <= lim[:, 1])
    c_rg = np.where(in_range, 1, 6)
    out = np.select([d == _UPPER, d == _LOWER, d == _RANGE], [c_up, c_lo, c_rg], 0)
    out[np.isnan(values) | (values < 0)] = 0
    res: npt.NDArray[np.int8] = out.astype(np.int8)
    return res


def _load_kernel(tables: Any) -> Any:
    """The ``classify_indexed`` kernel, loaded now (for the JIT: compiled or read from its cache
    for the argument types :meth:`Grader.screen` passes), so that the first batch does not
    wait for it."""
    from sanduan.shared.grading import loader

    fn = loader.kernels().classify_indexed
    fn(np.zeros(1, np.float64), np.zeros(1, np.int64), tables.limits, tables.directions)
    return fn


@functools.cache
def _physical_bounds() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Physical min and max per registry index, plus a last unbounded row for unknown codes."""
    params = all_parameters()
    lo = np.full(len(params) + 1, -np.inf)
    hi = np.full(len(params) + 1, np.inf)
    for p in params:
        lo[p.index] = p.physical_min
        hi[p.index] = p.physical_max
    for a in (lo, hi):
        a.flags.writeable = False
    return lo, hi


class Grader:
    """Grades long-format batches (one code per reading) for one water body and target class.

    ``engine="numba"`` (the default) runs the shared numba kernel ``classify_indexed``.
    ``engine="numpy"`` gives the same classes with numpy alone, for gateways where the kernels
    could not be compiled ahead of time and the memory that numba's JIT adds to the process
    matters (see docs/edge-buffer.md).
    """

    def __init__(
        self,
        water_body: WaterBody = WaterBody.RIVER,
        target_class: int = 3,
        engine: Engine = "numba",
        stuck_polls: int = 0,
    ) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        self.engine = engine
        self.stuck = StuckTracker(stuck_polls)
        """Flags runs of identical readings D (see :mod:`sanduan.shared.stuck`)."""
        self.water_body = WaterBody(water_body)
        self.target_class = target_class
        self.tables = kernel_tables(self.water_body)
        self._kernel: Any = _load_kernel(self.tables) if engine == "numba" else None
        self._index: dict[str, int] = {}
        lo, hi = _physical_bounds()
        self._phys_lo = lo
        self._phys_hi = hi
        self.ready_ms = (time.perf_counter() - t0) * 1000
        """How long creating the grader took: its tables and, for numba, loading the kernel."""
        self.ready_cpu_ms = (time.process_time() - c0) * 1000
        """The process's CPU time over the same span."""

    def ready_message(self) -> str:
        """What the agent logs at start: how long grading took to be ready, and with what."""
        what = f"numba, {self.kernels} kernels" if self.engine == "numba" else self.engine
        return (
            f"grading ready in {self.ready_ms:.1f} ms, {self.ready_cpu_ms:.1f} ms of CPU ({what})"
        )

    @property
    def kernels(self) -> str:
        """Which kernels grade: "aot", "jit", or "numpy" for the numpy engine."""
        if self._kernel is None:
            return "numpy"
        from sanduan.shared.grading import loader

        return loader.kind()

    def index_of(self, code: str) -> int:
        """Registry index of a parameter code; -1 for a code the registry does not know."""
        i = self._index.get(code)
        if i is None:
            try:
                i = by_code(code).index
            except UnknownParameterError:
                i = -1
            self._index[code] = i
        return i

    def indexes(self, codes: Sequence[str]) -> npt.NDArray[np.int64]:
        get = self._index.get
        out = [get(c) for c in codes]
        if None in out:
            out = [self.index_of(c) for c in codes]
        return np.asarray(out, dtype=np.int64)

    def impossible(
        self, values: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """True for each value outside its parameter's physical range (NaN and unknown codes
        are not impossible)."""
        n = self._phys_lo.shape[0] - 1
        j = np.where((idx >= 0) & (idx < n), idx, n)
        with np.errstate(invalid="ignore"):
            bad: npt.NDArray[np.bool_] = (values < self._phys_lo[j]) | (values > self._phys_hi[j])
        return bad

    def screen(
        self, values: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]
    ) -> tuple[list[int], npt.NDArray[np.bool_]]:
        """(class 0..6 of each value, which values are physically impossible). Unknown codes and
        impossible values get 0, "not graded": they are kept, never raised."""
        if values.size == 0:
            return [], np.zeros(0, dtype=np.bool_)
        values = np.ascontiguousarray(values, dtype=np.float64)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        t = self.tables
        bad = self.impossible(values, idx)
        # Graded at the reporting precision (GB/T 8170), as the centre grades.
        values = round_indexed(values, idx)
        if self._kernel is None:
            g = classify_numpy(values, idx, t.limits, t.directions)
        else:
            g = np.maximum(self._kernel(values, idx, t.limits, t.directions), 0)
        if bad.any():
            g[bad] = 0
        graded: list[int] = g.tolist()
        return graded, bad

    def grade(self, values: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]) -> list[int]:
        """Class 0..6 of each value (see :meth:`screen`)."""
        return self.screen(values, idx)[0]

    def exceedance(self, code: str, value: float) -> float | None:
        """(C - L) / L against the target class limit; None where it does not apply."""
        i = self.index_of(code)
        if i < 0 or math.isnan(value):
            return None
        # The kernels' exceedance_value, in Python: one value per alarm is no reason to load a
        # second kernel (with the JIT, a compile or a cache load).
        limits = self.tables.limits[i]
        direction = int(self.tables.directions[i])
        lim = float(limits[self.target_class - 1])
        if direction != _UPPER or value < 0 or not lim > 0:
            return None
        if math.isinf(value):
            return math.inf
        return float(exact_multiple(round_value(value, int(decimals_table()[i])), lim))

    def alarm_event(self, station: str, event_id: int, change: AlarmChange) -> Event:
        """The wire event for an alarm being raised or cleared."""
        label = class_label(change.grade)
        target = class_label(self.target_class)
        last = change.values[-1] if change.values else math.nan
        details: dict[str, float | int | str | bool | None] = {
            "grade": change.grade,
            "target_class": self.target_class,
            "streak": change.streak,
            "value": None if math.isnan(last) else last,
            "exceedance": self.exceedance(change.code, last),
            "values": ",".join("nan" if math.isnan(v) else repr(v) for v in change.values),
        }
        if change.raised:
            msg = (
                f"{change.code} worse than class {target} for {change.streak} consecutive"
                f" readings (now class {label}, value {last!r})"
            )
            return Event(
                station=station,
                time_ms=change.ts_ms,
                event_id=event_id,
                kind=EXCEEDANCE,
                message=msg,
                severity=Severity.CRITICAL if change.grade >= 6 else Severity.WARNING,
                code=change.code,
                details=details,
            )
        msg = f"{change.code} back within class {target} (class {label}, value {last!r})"
        return Event(
            station=station,
            time_ms=change.ts_ms,
            event_id=event_id,
            kind=CLEARED,
            message=msg,
            severity=Severity.INFO,
            code=change.code,
            details=details,
        )

"""Grading at the edge: GB 3838 class of every reading with the shared numba kernels, exceedance
against the station's target class, and exceedance alarms as wire events.

The buffer grades each commit batch in one vectorised call (:meth:`Grader.grade`); the streak
logic lives in :class:`sanduan.edge.core.outbox_policy.StreakTracker` and is fed in the same
transaction, so a reading and the alarm it triggers are committed together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sanduan.edge.core.outbox_policy import AlarmChange
from sanduan.shared.errors import UnknownParameterError
from sanduan.shared.grading import class_label, kernel_tables
from sanduan.shared.model import WaterBody
from sanduan.shared.params import by_code
from sanduan.shared.wire import Event, Severity

EXCEEDANCE = "exceedance"
CLEARED = "exceedance-cleared"


Engine = Literal["numba", "numpy"]

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


class Grader:
    """Grades long-format batches (one code per reading) for one water body and target class.

    ``engine="numba"`` (the default) runs the shared numba kernels. ``engine="numpy"`` gives the
    same classes with numpy alone, for gateways where the ~100 MB that numba and LLVM add to the
    process matter (see docs/edge-buffer.md).
    """

    def __init__(
        self,
        water_body: WaterBody = WaterBody.RIVER,
        target_class: int = 3,
        engine: Engine = "numba",
    ) -> None:
        self.engine = engine
        self._k: Any = None
        if engine == "numba":
            from sanduan.shared.grading import kernels

            self._k = kernels
        self.water_body = WaterBody(water_body)
        self.target_class = target_class
        self.tables = kernel_tables(self.water_body)
        self._index: dict[str, int] = {}

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

    def grade(self, values: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]) -> list[int]:
        """Class 0..6 of each value. Unknown codes and impossible values (a negative
        concentration from a faulty sensor) get 0, "not graded": they are kept, never raised."""
        if values.size == 0:
            return []
        t = self.tables
        if self._k is None:
            out: list[int] = classify_numpy(values, idx, t.limits, t.directions).tolist()
            return out
        g = self._k.classify_indexed(values, idx, t.limits, t.directions)
        graded: list[int] = np.maximum(g, 0).tolist()
        return graded

    def exceedance(self, code: str, value: float) -> float | None:
        """(C - L) / L against the target class limit; None where it does not apply."""
        i = self.index_of(code)
        if i < 0 or math.isnan(value):
            return None
        limits = self.tables.limits[i]
        direction = int(self.tables.directions[i])
        if self._k is not None:
            e = float(self._k.exceedance_value(value, limits, direction, self.target_class))
            return None if math.isnan(e) else e
        lim = float(limits[self.target_class - 1])
        if direction != _UPPER or value < 0 or not lim > 0:
            return None
        return (value - lim) / lim

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

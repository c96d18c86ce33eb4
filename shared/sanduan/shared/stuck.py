"""Stuck values: a sensor that repeats the very same value poll after poll has stopped
measuring. Pure; shared by the edge agent (which flags such readings), the rig's truth log
(which expects the same flags) and the centre's discovery rule.

A reading is *stuck* when its value is finite and bit-for-bit equal to the previous reading of
the same item, and the run of identical readings it ends has reached ``polls`` readings. The
first ``polls - 1`` readings of the run were already sent as normal; from the ``polls``-th on
the readings are flagged ``D`` (HJ 212-2017 "instrument fault"): a letter every receiver of
the wire format knows, which every assessment excludes from means by default. A different
value, a NaN or a flagged (not N or S) reading ends the run. The tracker lives in memory: a
restarted agent starts counting again.
"""

from __future__ import annotations

import math
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field

STUCK_FLAG = "D"
"""The flag stuck readings get (valid on the wire; excluded from means by default)."""

__all__ = ["STUCK_FLAG", "StuckTracker"]


@dataclass
class StuckTracker:
    """Runs of identical values per item. ``polls`` 0 switches detection off."""

    polls: int
    runs: dict[str, tuple[float, int]] = field(default_factory=dict)

    def check(self, key: str, value: float, flag: str = "N") -> bool:
        """Feed one reading; True when it is stuck."""
        if self.polls <= 0:
            return False
        if not math.isfinite(value) or flag not in ("N", "S"):
            self.runs.pop(key, None)
            return False
        prev = self.runs.get(key)
        n = prev[1] + 1 if prev is not None and prev[0] == value else 1
        self.runs[key] = (value, n)
        return n >= self.polls

    def mark(
        self, keys: Sequence[str], values: Sequence[float], flags: MutableSequence[str]
    ) -> list[int]:
        """Feed readings in order and flag the stuck ones ``D`` in ``flags`` (in place);
        returns their indexes."""
        if self.polls <= 0:
            return []
        out: list[int] = []
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            if self.check(k, v, flags[i]):
                flags[i] = STUCK_FLAG
                out.append(i)
        return out

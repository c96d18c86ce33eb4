"""Plain data that flows through sanduan: readings, data flags, water bodies.

Stage names follow the data: Reading -> (graded) Reading -> Batch -> stored rows -> Assessment ->
LedgerEntry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Flag(enum.StrEnum):
    """HJ 212-2017 data flags carried by every reading."""

    N = "N"  # normal
    F = "F"  # analyzer stopped
    M = "M"  # maintenance
    S = "S"  # manually set
    D = "D"  # fault
    C = "C"  # calibration
    T = "T"  # over the instrument's range
    B = "B"  # communication fault with the logger

    @classmethod
    def parse(cls, text: str) -> Flag:
        try:
            return cls(text)
        except ValueError:
            from sanduan.shared.errors import InputError

            known = " ".join(f.value for f in cls)
            raise InputError(f"unknown data flag {text!r}; known flags: {known}") from None


# Flags excluded from time means by default (HJ 212: not a valid measurement).
EXCLUDED_FROM_MEANS: frozenset[Flag] = frozenset({Flag.M, Flag.C, Flag.D, Flag.F, Flag.B, Flag.T})


class WaterBody(enum.StrEnum):
    RIVER = "river"
    LAKE = "lake"


NOT_GRADED = 0
INFERIOR_V = 6


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one parameter at one station.

    ``seq`` is the station's strictly increasing reading sequence number, assigned when the
    reading is committed to the station's buffer. ``ts_ms`` is the measurement time in ms since
    the Unix epoch, UTC (an analyzer's own result time where it reports one). ``grade`` is the
    GB 3838 class 0..6 (0 = not graded).
    """

    seq: int
    ts_ms: int
    code: str
    value: float
    flag: Flag = Flag.N
    grade: int = NOT_GRADED

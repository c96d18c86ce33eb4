"""A station's latest heartbeat figures from ``stations.last_status`` (the status as JSON, see
:func:`sanduan.shared.wire.to_json_obj`), for ``sanduan central report stations``. Pure.

A station's MQTT last will (the broker publishes it when the connection is lost) is a status
without figures: its buffer depth would read 0 and its time is that of the connection. The
figures of a bare last will are therefore unknown (None), not zero, until the next heartbeat;
the status an agent sends when it stops cleanly carries its figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HeartbeatFigures:
    time_ms: int | None = None
    """When the station sent the status (its own clock)."""
    buffer_depth: int | None = None
    """Readings buffered and not yet acknowledged."""
    oldest_unacked_age_s: float | None = None
    """Age of the oldest of them (None: none waits, or unknown)."""
    clock_offset_s: float | None = None
    buffer_bytes: int | None = None
    """Size of the buffer files (from ``extra``, agents that send it)."""
    last_will: bool = False
    """The latest status is a bare last will: the figures are unknown."""


def _int(x: Any) -> int | None:
    return x if type(x) is int else None


def _float(x: Any) -> float | None:
    if type(x) in (int, float) and math.isfinite(x):
        return float(x)
    return None


def heartbeat_figures(last_status: str | None) -> HeartbeatFigures:
    """The figures of a stored status; unknown (None) for what is missing or malformed."""
    if not last_status:
        return HeartbeatFigures()
    try:
        doc = json.loads(last_status)
    except ValueError:
        return HeartbeatFigures()
    if not isinstance(doc, dict):
        return HeartbeatFigures()
    t = _int(doc.get("time_ms"))
    extra = doc.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    if doc.get("online") is False and not extra:
        return HeartbeatFigures(time_ms=t, last_will=True)
    return HeartbeatFigures(
        time_ms=t,
        buffer_depth=_int(doc.get("buffer_depth")),
        oldest_unacked_age_s=_float(doc.get("oldest_unacked_age_s")),
        clock_offset_s=_float(doc.get("clock_offset_s")),
        buffer_bytes=_int(extra.get("buffer_bytes")),
    )

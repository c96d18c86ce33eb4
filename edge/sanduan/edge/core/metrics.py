"""The agent's health figures: one :class:`EdgeSnapshot` in, Prometheus families, the
``/healthz`` answer and the heartbeat's ``extra`` entries out. Pure: the shell
(:mod:`sanduan.edge.io.metrics_http`) takes the snapshot from the running agent.

``/healthz`` is healthy when all three hold:

- the devices were polled within ``poll_stale_s`` (a poll that fails counts: the bus is worked;
  a failing device shows in ``sanduan_edge_device_errors_total``);
- the buffer takes writes;
- the link to the centre is up, or has been down for less than ``link_down_max_s`` (the buffer
  holds the readings meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sanduan.shared.metrics import Family, Health, counter, gauge, labelled
from sanduan.shared.wire import Scalar

P = "sanduan_edge_"


@dataclass(frozen=True, slots=True)
class EdgeSnapshot:
    """The agent's figures at one moment (counters since the agent started unless noted)."""

    station: str
    version: str
    uptime_s: float
    buffer_readings: int
    """Readings stored and not yet acknowledged by the centre."""
    buffer_file_bytes: int
    buffer_max_bytes: int
    oldest_unacked_age_s: float | None
    buffer_writable: bool
    committed: int
    not_stored: int
    dropped: int
    """Unacknowledged readings dropped for space (over the buffer's life)."""
    rejected: int
    """Readings the centre rejected (over the buffer's life)."""
    readings_by_flag: Mapping[str, int] = field(default_factory=dict)
    device_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Errors by (device, kind): timeout, crc, exception."""
    bus_utilisation: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Busy fraction by (bus, port)."""
    uplink_up: bool = False
    uplink_connects: int = 0
    uplink_disconnects: int = 0
    clock_offset_s: float | None = None
    batches_sent: int = 0
    batches_acked: int = 0
    batches_nacked: int = 0
    last_poll_age_s: float = 0.0
    """Seconds since the devices were last polled (since the start before the first poll)."""
    link_down_s: float | None = None
    """Seconds the link has been down (None: it is up)."""


def edge_families(s: EdgeSnapshot) -> list[Family]:
    """The agent's metrics (``sanduan_edge_*``), in a fixed order."""
    return [
        gauge(
            P + "info",
            "The agent: station id and version (always 1).",
            1,
            (("station", s.station), ("version", s.version)),
        ),
        gauge(P + "uptime_seconds", "Seconds since the agent started.", round(s.uptime_s, 3)),
        gauge(
            P + "buffer_readings",
            "Readings in the buffer not yet acknowledged by the centre.",
            s.buffer_readings,
        ),
        gauge(
            P + "buffer_file_bytes",
            "Size of the buffer files on disk (database, WAL, shared memory).",
            s.buffer_file_bytes,
        ),
        gauge(
            P + "buffer_max_bytes",
            "The buffer's space budget ([buffer] max_bytes).",
            s.buffer_max_bytes,
        ),
        gauge(
            P + "oldest_unacked_age_seconds",
            "Age of the oldest reading not yet acknowledged (0 when none waits).",
            round(s.oldest_unacked_age_s or 0.0, 3),
        ),
        gauge(
            P + "buffer_writable",
            "1 when the buffer takes writes, 0 when it cannot be written (a full disk).",
            int(s.buffer_writable),
        ),
        counter(
            P + "readings_committed_total",
            "Readings committed to the buffer since the agent started.",
            s.committed,
        ),
        labelled(
            P + "readings_total",
            "counter",
            "Readings committed since the agent started, by data flag as stored.",
            s.readings_by_flag,
            ("flag",),
        ),
        counter(
            P + "readings_not_stored_total",
            "Readings lost because the buffer could not be written.",
            s.not_stored,
        ),
        counter(
            P + "readings_dropped_total",
            "Unacknowledged readings dropped to keep the buffer within its budget"
            " (over the buffer's life).",
            s.dropped,
        ),
        counter(
            P + "readings_rejected_total",
            "Readings the centre rejected for good (over the buffer's life).",
            s.rejected,
        ),
        labelled(
            P + "device_errors_total",
            "counter",
            "Failed device requests by device and kind (timeout, crc, exception).",
            s.device_errors,
            ("device", "kind"),
        ),
        labelled(
            P + "bus_utilisation_ratio",
            "gauge",
            "Fraction of time each serial bus is busy since the agent started.",
            {k: round(v, 4) for k, v in s.bus_utilisation.items()},
            ("bus", "port"),
        ),
        gauge(P + "uplink_up", "1 when connected to the broker, else 0.", int(s.uplink_up)),
        counter(P + "uplink_connects_total", "Connections made to the broker.", s.uplink_connects),
        counter(
            P + "uplink_disconnects_total", "Connections to the broker lost.", s.uplink_disconnects
        ),
        gauge(
            P + "clock_offset_seconds",
            "Station clock minus the centre's clock, estimated from the acks (absent until"
            " the first ack).",
            None if s.clock_offset_s is None else round(s.clock_offset_s, 3),
        ),
        counter(P + "batches_sent_total", "Batches published to the centre.", s.batches_sent),
        counter(P + "batches_acked_total", "Acks received from the centre.", s.batches_acked),
        counter(P + "batches_nacked_total", "Nacks received from the centre.", s.batches_nacked),
        gauge(
            P + "last_poll_age_seconds",
            "Seconds since the devices were last polled.",
            round(s.last_poll_age_s, 3),
        ),
    ]


def edge_health(s: EdgeSnapshot, *, poll_stale_s: float, link_down_max_s: float) -> Health:
    """The ``/healthz`` answer (see the module docstring)."""
    reasons: list[str] = []
    if s.last_poll_age_s > poll_stale_s:
        reasons.append(f"no device polled for {s.last_poll_age_s:.0f} s (limit {poll_stale_s:g} s)")
    if not s.buffer_writable:
        reasons.append("the buffer cannot be written")
    if s.link_down_s is not None and s.link_down_s >= link_down_max_s:
        reasons.append(
            f"link to the centre down for {s.link_down_s:.0f} s (limit {link_down_max_s:g} s)"
        )
    detail: dict[str, object] = {
        "station": s.station,
        "uplink": "up" if s.uplink_up else "down",
        "buffer_readings": s.buffer_readings,
        "last_poll_age_s": round(s.last_poll_age_s, 1),
    }
    return Health(not reasons, tuple(reasons), detail)


def heartbeat_extra(s: EdgeSnapshot) -> dict[str, Scalar]:
    """What the heartbeat's ``extra`` adds to its typed fields, so the centre sees the same
    figures as ``/metrics``: buffer bytes, committed readings by flag, link and batch counters,
    device errors by kind (summed over devices; per device they are in ``dev_err``)."""
    out: dict[str, Scalar] = {
        "buffer_bytes": s.buffer_file_bytes,
        "readings_committed": s.committed,
        "uplink_connects": s.uplink_connects,
        "uplink_disconnects": s.uplink_disconnects,
        "batches_sent": s.batches_sent,
        "batches_acked": s.batches_acked,
    }
    for flag, n in sorted(s.readings_by_flag.items()):
        if n:
            out[f"readings_{flag}"] = n
    kinds: dict[str, int] = {}
    for (_, kind), n in s.device_errors.items():
        kinds[kind] = kinds.get(kind, 0) + n
    for kind, n in sorted(kinds.items()):
        out[f"dev_err_{kind}"[:64]] = n
    return out


def default_poll_stale_s(poll_periods: list[float]) -> float:
    """Three times the longest poll period, at least 60 s."""
    return max(60.0, 3.0 * max(poll_periods, default=0.0))

"""The collector's ``/metrics`` and ``/healthz`` over HTTP (``[metrics] listen``).

:func:`central_families` and :func:`central_health` are pure: a :class:`CentralSnapshot` in,
Prometheus families or the ``/healthz`` answer out. :class:`MetricsServer` takes the snapshot
from a running :class:`~sanduan.central.ingest.Collector` (its counters, per-worker lag
histograms, queues and link) and from the store, through a connection of its own, and serves
both pages from a small thread server (the collector is threads, not asyncio).

``/healthz`` is healthy when the collector is connected to the broker (and subscribed) and
the store answers a trivial query.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from sanduan.shared.config import split_listen
from sanduan.shared.errors import ConfigError, StoreError
from sanduan.shared.metrics import (
    CONTENT_TYPE,
    JSON_TYPE,
    Family,
    Health,
    HistogramSnapshot,
    counter,
    gauge,
    histogram_family,
    labelled,
    render,
    route,
)

if TYPE_CHECKING:
    from sanduan.central.ingest import Collector
    from sanduan.central.store import Store

log = logging.getLogger("sanduan.central.metrics")

P = "sanduan_central_"

LAG_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0)
"""Buckets of the end-to-end lag histogram: a live station's readings arrive within seconds
(``batch_max_age_s``), a backlog drained after an outage hours or days late."""


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """What the store says (None in :class:`CentralSnapshot` when it does not answer)."""

    stations: int
    online: int
    gaps: int
    missing_by_station: Mapping[str, int] = field(default_factory=dict)
    """Readings missing in open gaps, for each station that has some."""


@dataclass(frozen=True, slots=True)
class CentralSnapshot:
    counts: Mapping[str, int]
    """The collector's counters (:meth:`Collector.stats`)."""
    dead_letters: Mapping[str, int]
    """Dead letters by reason since the collector started (recorded or only counted)."""
    lag: HistogramSnapshot
    queue_depth: int
    broker_connected: bool
    store: StoreFigures | None
    store_error: str | None = None


def central_families(s: CentralSnapshot) -> list[Family]:
    """The collector's metrics (``sanduan_central_*``), in a fixed order."""
    c = s.counts
    out = [
        counter(
            P + "messages_received_total",
            "Messages taken from the broker (batches, statuses, events).",
            c.get("received", 0),
        ),
        counter(P + "batches_total", "Batches stored (acknowledged).", c.get("batches", 0)),
        counter(P + "readings_stored_total", "Readings newly stored.", c.get("readings_new", 0)),
        counter(
            P + "readings_duplicate_total",
            "Readings received again with the same content (acknowledged again).",
            c.get("readings_duplicate", 0),
        ),
        counter(
            P + "readings_conflict_total",
            "Readings received again with other content (the originals kept).",
            c.get("readings_conflict", 0),
        ),
        counter(P + "statuses_total", "Heartbeats recorded.", c.get("statuses", 0)),
        counter(P + "events_total", "Station events recorded.", c.get("events", 0)),
        labelled(
            P + "dead_letters_total",
            "counter",
            "Messages rejected as dead letters, by reason (past the budget: only counted).",
            s.dead_letters,
            ("reason",),
        ),
        counter(P + "store_errors_total", "Failed store operations.", c.get("store_errors", 0)),
        counter(P + "acks_total", "Acks published to stations.", c.get("acks", 0)),
        counter(P + "nacks_total", "Nacks published to stations.", c.get("nacks", 0)),
        counter(
            P + "resend_requests_total",
            "Resend requests published for gaps.",
            c.get("resend_requests", 0),
        ),
        histogram_family(
            P + "lag_seconds",
            "Reading time to commit at the centre, seconds, per reading of the batches that"
            " stored new readings (0 for a station clock ahead).",
            s.lag,
        ),
        gauge(
            P + "ingest_queue_depth",
            "Messages received and waiting for a worker.",
            s.queue_depth,
        ),
        gauge(
            P + "broker_up",
            "1 when connected and subscribed to the broker, else 0.",
            int(s.broker_connected),
        ),
        gauge(P + "store_up", "1 when the store answers, else 0.", int(s.store is not None)),
    ]
    st = s.store
    if st is not None:
        out += [
            gauge(P + "stations", "Stations known to the store.", st.stations),
            gauge(
                P + "stations_online",
                "Stations whose latest status says online.",
                st.online,
            ),
            gauge(P + "gaps_open", "Open sequence gaps, all stations.", st.gaps),
            gauge(
                P + "gap_readings_missing",
                "Readings missing in open gaps, all stations.",
                sum(st.missing_by_station.values()),
            ),
            labelled(
                P + "station_gap_readings_missing",
                "gauge",
                "Readings missing in open gaps, for each station that has some.",
                st.missing_by_station,
                ("station",),
            ),
        ]
    return out


def central_health(s: CentralSnapshot) -> Health:
    reasons: list[str] = []
    if not s.broker_connected:
        reasons.append("not connected to the broker")
    if s.store is None:
        reasons.append(f"the store does not answer: {s.store_error or 'unknown error'}")
    detail: dict[str, object] = {
        "broker": "up" if s.broker_connected else "down",
        "store": "up" if s.store is not None else "down",
        "queue": s.queue_depth,
    }
    return Health(not reasons, tuple(reasons), detail)


# --- the shell -----------------------------------------------------------------------------


class CollectorProbe:
    """A running collector's figures; one store connection of its own, opened when needed and
    opened again after a failure."""

    def __init__(self, collector: Collector, store_url: str) -> None:
        self.collector = collector
        self.store_url = store_url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def _store_figures(self) -> tuple[StoreFigures | None, str | None]:
        from sanduan.central.store import open_store

        with self._lock:
            try:
                if self._store is None:
                    self._store = open_store(self.store_url)
                rows = self._store.stations()
            except StoreError as e:
                self._drop()
                return None, str(e)
        missing = {r.station: sum(g.size for g in r.gaps) for r in rows if r.gaps}
        return (
            StoreFigures(
                stations=len(rows),
                online=sum(1 for r in rows if r.online),
                gaps=sum(len(r.gaps) for r in rows),
                missing_by_station=missing,
            ),
            None,
        )

    def snapshot(self) -> CentralSnapshot:
        from sanduan.shared.metrics import Histogram

        col = self.collector
        procs = list(col.processors)
        dead: Counter[str] = Counter()
        for p in procs:
            dead.update(dict(p.dead_reasons))  # copied in one step while a worker may add
        lags = [p.lag.snapshot() for p in procs]
        lag = Histogram.merge(lags) if lags else Histogram(LAG_BUCKETS_S).snapshot()
        figures, error = self._store_figures()
        return CentralSnapshot(
            counts=dict(col.stats()),
            dead_letters=dict(dead),
            lag=lag,
            queue_depth=col.queue_depth(),
            broker_connected=col.connected,
            store=figures,
            store_error=error,
        )

    def _drop(self) -> None:
        if self._store is not None:
            with contextlib.suppress(StoreError):
                self._store.close()
            self._store = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        head = self.command == "HEAD"
        page = route(self.command, self.path)
        if isinstance(page, tuple):
            status, body, ctype = page[0], page[1], "text/plain"
        else:
            snap = self.server.probe.snapshot()
            if page == "metrics":
                status, body, ctype = 200, render(central_families(snap)).encode(), CONTENT_TYPE
            else:
                h = central_health(snap)
                status, body, ctype = h.status, h.body(), JSON_TYPE
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    probe: CollectorProbe


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """``/metrics`` and ``/healthz`` of ``collector`` on ``listen``, from a thread."""

    def __init__(self, collector: Collector, listen: str, store_url: str) -> None:
        host, port = split_listen(listen)
        self.probe = CollectorProbe(collector, store_url)
        try:
            server = _Server6 if ":" in host else _Server
            self.httpd = server((host, port), _Handler)
        except OSError as e:
            raise ConfigError(
                "[metrics]", "listen", f"cannot listen on {listen}: {e.strerror or e}"
            ) from None
        self.httpd.probe = self.probe
        self.listen = listen
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics",
            daemon=True,
        )  # fmt: skip

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s/metrics and /healthz", self.listen)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
        self.probe.close()

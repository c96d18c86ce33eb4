"""The agent's ``/metrics`` and ``/healthz`` over HTTP (``[metrics] listen``), on its event loop.

:class:`AgentProbe` takes an :class:`~sanduan.edge.core.metrics.EdgeSnapshot` from the running
agent (buffer, forwarder, link, sources); the buffer's figures that need a query are read on
the buffer's own thread. It also samples, once a second, whether the devices are being polled
and whether the link is up, so ``/healthz`` knows for how long either has not been so.
:func:`serve_metrics` answers HTTP/1.0 and 1.1 ``GET``/``HEAD`` with ``asyncio.start_server``
(one request per connection; the agent does not need an HTTP library for two pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sanduan.edge.core.metrics import EdgeSnapshot, default_poll_stale_s, edge_families, edge_health
from sanduan.shared.config import StationMetricsConfig, split_listen
from sanduan.shared.errors import ConfigError, StoreError
from sanduan.shared.metrics import (
    CONTENT_TYPE,
    JSON_TYPE,
    Health,
    Since,
    http_response,
    render,
    route,
)

if TYPE_CHECKING:
    from sanduan.edge.app import Agent

log = logging.getLogger("sanduan.edge.metrics")

SAMPLE_S = 1.0
"""How often polling and the link are sampled for ``/healthz`` (real seconds)."""
DB_WAIT_S = 5.0
"""Longest wait for the buffer's thread (busy with a long check at start-up) in a scrape."""
REQUEST_MAX = 8192
REQUEST_TIMEOUT_S = 5.0


class AgentProbe:
    """The running agent's figures (see the module docstring)."""

    def __init__(self, agent: Agent, cfg: StationMetricsConfig) -> None:
        self.agent = agent
        self.cfg = cfg
        now = agent.clock.monotonic()
        self.started = now
        self.poll_stale_s = cfg.poll_stale_s or default_poll_stale_s(
            [d.poll_period_s for b in agent.config.bus for d in b.device]
        )
        self.link_down_max_s = cfg.link_down_max_s
        self._polls = Since(self.poll_count(), now)
        self._link = Since(False, now)
        self._oldest_age: float | None = None
        self._rejected = 0

    # -- sampling ------------------------------------------------------------------------

    def poll_count(self) -> int:
        """Device polls so far (failed ones too); what moves while the source works."""
        from sanduan.edge.app import BusSource, FakeSource

        a = self.agent
        src = a.source
        if isinstance(src, BusSource):
            return sum(d.polls for p in src.pollers for d in p.devices.values())
        if isinstance(src, FakeSource):
            return src.polls
        return a.committed + a.not_stored

    def link_up(self) -> bool:
        up = self.agent.uplink
        return up is not None and up.connected

    def sample(self) -> None:
        now = self.agent.clock.monotonic()
        self._polls.sample(self.poll_count(), now)
        self._link.sample(self.link_up(), now)

    async def sampler(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    # -- snapshots -----------------------------------------------------------------------

    def _devices(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
        from sanduan.edge.app import BusSource

        src = self.agent.source
        errors: dict[tuple[str, str], int] = {}
        util: dict[tuple[str, str], float] = {}
        if isinstance(src, BusSource):
            for p in src.pollers:
                for name, st in p.devices.items():
                    for kind, n in st.errors.items():
                        errors[name, kind] = int(n)
                util[p.name, p.stats.port] = float(p.utilisation())
            return errors, util
        dev, bus = src.device_stats()
        return {(d, "any"): int(n) for d, n in dev.items()}, {(b, ""): u for b, u in bus.items()}

    def snapshot_now(self) -> EdgeSnapshot:
        """The figures that need no buffer query; the oldest reading's age and the rejected
        count are those of the last :meth:`snapshot`."""
        a = self.agent
        now = a.clock.monotonic()
        ob, fwd, up = a.outbox, a.forwarder, a.uplink
        errors, util = self._devices()
        link_up = self.link_up()
        self._link.sample(link_up, now)
        self._polls.sample(self.poll_count(), now)
        counts = fwd.counts if fwd is not None else None
        offset = fwd.clock_offset_s if fwd is not None else None
        return EdgeSnapshot(
            station=a.config.station.id,
            version=a.version,
            uptime_s=now - self.started,
            buffer_readings=ob.depth if ob is not None else 0,
            buffer_file_bytes=ob.file_bytes() if ob is not None else 0,
            buffer_max_bytes=a.config.buffer.max_bytes,
            oldest_unacked_age_s=self._oldest_age,
            buffer_writable=a.write_error is None,
            committed=a.committed,
            not_stored=a.not_stored,
            dropped=ob.dropped if ob is not None else 0,
            rejected=self._rejected,
            readings_by_flag=dict(ob.flag_counts) if ob is not None else {},
            device_errors=errors,
            bus_utilisation=util,
            uplink_up=link_up,
            uplink_connects=up.connects if up is not None else 0,
            uplink_disconnects=up.disconnects if up is not None else 0,
            clock_offset_s=offset,
            batches_sent=counts["batches_sent"] if counts is not None else 0,
            batches_acked=counts["acks"] if counts is not None else 0,
            batches_nacked=counts["nacks"] if counts is not None else 0,
            last_poll_age_s=max(0.0, now - self._polls.since),
            link_down_s=None if link_up else max(0.0, now - self._link.since),
        )

    async def snapshot(self) -> EdgeSnapshot:
        """All the figures, the oldest unacknowledged reading read from the buffer."""
        a = self.agent
        db = a.db
        if db is not None:
            ob = db.outbox

            def read() -> tuple[tuple[int, int] | None, int]:
                return ob.oldest_unacked(), int(ob.counters().get("rejected", 0))

            try:
                async with asyncio.timeout(DB_WAIT_S):
                    oldest, self._rejected = await db.run(read)
            except (TimeoutError, StoreError) as e:
                log.debug("metrics: buffer figures not read (%s); last ones shown", e)
            else:
                now_ms = int(a.clock.time() * 1000)
                self._oldest_age = None if oldest is None else max(0.0, (now_ms - oldest[1]) / 1e3)
        return self.snapshot_now()

    async def metrics_text(self) -> str:
        return render(edge_families(await self.snapshot()))

    async def health(self) -> Health:
        return edge_health(
            await self.snapshot(),
            poll_stale_s=self.poll_stale_s,
            link_down_max_s=self.link_down_max_s,
        )


async def _answer(probe: AgentProbe, reader: asyncio.StreamReader) -> bytes:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return http_response(400, b"bad request\n", "text/plain")
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return http_response(400, b"bad request\n", "text/plain")
    method, target = parts[0], parts[1]
    page = route(method, target)
    head_only = method == "HEAD"
    if isinstance(page, tuple):
        return http_response(page[0], page[1], "text/plain", head=head_only)
    if page == "metrics":
        body = (await probe.metrics_text()).encode()
        return http_response(200, body, CONTENT_TYPE, head=head_only)
    h = await probe.health()
    return http_response(h.status, h.body(), JSON_TYPE, head=head_only)


async def serve_metrics(probe: AgentProbe, listen: str) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``listen`` until cancelled."""
    host, port = split_listen(listen)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await _answer(probe, reader))
            await writer.drain()
        except ConnectionError:
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=REQUEST_MAX)
    except OSError as e:
        raise ConfigError(
            "[metrics]", "listen", f"cannot listen on {listen}: {e.strerror or e}"
        ) from None
    log.info("metrics on http://%s/metrics and /healthz", listen)
    async with server:
        sampler = asyncio.create_task(probe.sampler(), name="metrics sampler")
        try:
            await server.serve_forever()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

"""Store and forward: batches out of the buffer, acknowledgements in.

A batch leaves the buffer only when the centre's :class:`~sanduan.shared.wire.Ack` for it
arrives (a PUBACK only says the broker has it). The forwarder sends, oldest first:

1. readings the centre asked for with a :class:`~sanduan.shared.wire.ResendRequest` (every
   reading still held in the ranges, acknowledged or not, with its original seq);
2. readings of batches not acknowledged within ``ack_timeout_s``;
3. new readings, once ``batch_max_readings`` are waiting or the oldest has waited
   ``batch_max_age_s``.

Every ack also carries the centre's clock at commit (``time_ms``): the forwarder estimates the
station clock's offset from it (:meth:`Forwarder.clock_sample`), reports it in every heartbeat
(``clock_offset_s``) and sends one "clock" event when it exceeds ``clock_offset_max_s``.

After every (re)connect all unacknowledged readings are sent again from the oldest. Sending is
paced: at most ``max_batches_per_s`` batches a second and ``max_inflight_batches`` awaiting an
ack, so a week's backlog drains steadily without swamping the link. Times are the injected
clock's (an accelerated rig runs the timeouts accelerated too).

The buffer is used from one worker thread (:class:`DbThread`); nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sanduan.edge.core.outbox_policy import SeqRange, TokenBucket, normalise_ranges
from sanduan.edge.io.outbox import CommitResult, Outbox
from sanduan.edge.io.uplink import Uplink
from sanduan.shared import topics, wire
from sanduan.shared.clock import Clock
from sanduan.shared.config import UplinkConfig
from sanduan.shared.errors import WireFormatError
from sanduan.shared.topics import Kind
from sanduan.shared.wire import Ack, Batch, ResendRequest, Status

log = logging.getLogger("sanduan.edge.forwarder")

T = TypeVar("T")


class DbThread:
    """Runs every buffer operation on one dedicated thread, awaitable from the loop."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sanduan-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ex, fn, *args)

    def close(self) -> None:
        self._ex.submit(self.outbox.close).result()
        self._ex.shutdown(wait=True)


@dataclass(slots=True)
class Inflight:
    first: int
    last: int
    sent_at: float  # clock.monotonic()
    kind: str  # new | retry | resend
    sent_wall: float = math.nan  # clock.time() at publish


StatsFn = Callable[[], tuple[dict[str, int], dict[str, float]]]
"""Returns (device error counts, bus utilisation) for the heartbeat."""


class Forwarder:
    """Moves batches from the buffer to the centre; see the module docstring."""

    def __init__(
        self,
        db: DbThread,
        cfg: UplinkConfig,
        station: str,
        *,
        clock: Clock,
        agent_version: str,
        device_stats: StatsFn | None = None,
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.station = station
        self.clock = clock
        self.agent_version = agent_version
        self.device_stats = device_stats
        self.uplink: Uplink | None = None
        self.batch_topic = topics.batch_topic(station)
        self.event_topic = topics.event_topic(station)
        self.status_topic = topics.status_topic(station)
        self.connected = False
        self.inflight: dict[int, Inflight] = {}
        self.retry: list[SeqRange] = []
        self.resend: list[SeqRange] = []
        self.cursor = 0
        self.head = db.outbox.next_seq - 1  # last committed seq
        self._commits: collections.deque[tuple[int, float]] = collections.deque(maxlen=100_000)
        self._backlog = True  # readings from before start: due at once
        self.bucket = TokenBucket(cfg.max_batches_per_s, max(1.0, cfg.max_batches_per_s))
        self.wake = asyncio.Event()
        self._event_mids: dict[int, int] = {}
        self._status_due = False
        self.batches_sent = 0
        self.acks = 0
        self.started = clock.monotonic()
        self.clock_offset_s: float | None = None
        """Latest estimate of (station clock - centre clock), seconds: positive when the station's
        clock is ahead (the sign of :attr:`Status.clock_offset_s`)."""
        self.clock_rtt_s: float | None = None
        self._clock_alarmed = False
        self.clock_events = 0

    # -- inputs ----------------------------------------------------------------------------

    def committed(self, result: CommitResult) -> None:
        """New readings are in the buffer (and their alarm events)."""
        if result.count:
            self.head = max(self.head, result.last_seq)
            self._commits.append((result.last_seq, self.clock.monotonic()))
            self.wake.set()
        for ev in result.events:
            self._publish_event(ev.event_id, wire.encode(ev))

    def link_up(self, session_present: bool) -> None:
        self.connected = True
        self.inflight.clear()
        self.retry.clear()
        self.cursor = 0
        self._backlog = True
        self._status_due = True
        self.wake.set()
        asyncio.get_running_loop().create_task(self._republish_events())

    def link_down(self, reason: str) -> None:
        self.connected = False
        self._event_mids.clear()
        self.wake.set()

    def message(self, kind: Kind, payload: bytes) -> None:
        try:
            msg = wire.decode(payload)
        except WireFormatError as e:
            log.warning("ignoring a bad %s message from the centre: %s", kind, e.reason)
            return
        if isinstance(msg, Ack) and msg.station == self.station:
            asyncio.get_running_loop().create_task(self._on_ack(msg))
        elif isinstance(msg, ResendRequest) and msg.station == self.station:
            asyncio.get_running_loop().create_task(self._on_resend(msg))

    def published(self, mid: int) -> None:
        event_id = self._event_mids.pop(mid, None)
        if event_id is not None:
            asyncio.get_running_loop().create_task(
                self.db.run(self.db.outbox.event_delivered, event_id)
            )

    def clock_sample(self, centre_ms: int, sent_wall: float | None = None) -> float | None:
        """Estimate the station clock's offset (station - centre, seconds) from an ack stamped
        ``centre_ms`` by the centre (its clock at commit), received now.

        With the station time of the publish (``sent_wall``) the centre's stamp is compared with
        the midpoint of publish and ack (NTP-style: the error is at most half the round trip);
        without it (an ack for a batch sent before a reconnect) with the time of receipt, which
        overstates a slow clock by the ack's transit time. Returns the offset, None for an ack
        without a time."""
        if centre_ms <= 0:
            return None
        now = self.clock.time()
        local = now
        rtt: float | None = None
        if sent_wall is not None and math.isfinite(sent_wall) and sent_wall <= now:
            rtt = now - sent_wall
            local = sent_wall + rtt / 2
        offset = local - centre_ms / 1000.0
        self.clock_offset_s = offset
        self.clock_rtt_s = rtt
        return offset

    async def _check_clock(self) -> None:
        """One "clock" event when the offset goes beyond the limit; again only after it came
        back within the limit. Nothing else is flagged: readings keep their times."""
        off = self.clock_offset_s
        if off is None:
            return
        limit = self.cfg.clock_offset_max_s
        if abs(off) <= limit:
            self._clock_alarmed = False
            return
        if self._clock_alarmed:
            return
        self._clock_alarmed = True
        self.clock_events += 1
        now_ms = int(self.clock.time() * 1000)
        rtt = self.clock_rtt_s
        msg = (
            f"station clock {'ahead of' if off > 0 else 'behind'} the centre by {abs(off):.1f} s"
            f" (limit {limit:g} s)"
        )
        log.warning("%s; check the time synchronisation", msg)

        def make(event_id: int) -> wire.Event:
            return wire.Event(
                station=self.station,
                time_ms=now_ms,
                event_id=event_id,
                kind="clock",
                message=msg,
                severity=wire.Severity.WARNING,
                details={
                    "clock_offset_s": round(off, 3),
                    "limit_s": limit,
                    "rtt_s": None if rtt is None else round(rtt, 3),
                },
            )

        ev = await self.db.run(self.db.outbox.add_event, make)
        self._publish_event(ev.event_id, wire.encode(ev))

    async def _on_ack(self, msg: Ack) -> None:
        sent = self.inflight.get(msg.batch_seq)
        self.clock_sample(msg.time_ms, sent.sent_wall if sent is not None else None)
        changed = await self.db.run(self.db.outbox.ack, msg)
        self.acks += 1
        sent = self.inflight.pop(msg.batch_seq, None)
        await self._check_clock()
        if msg.ranges:
            # The centre holds only part of the batch: the rest goes again.
            lo, hi = (sent.first, sent.last) if sent else (msg.first_seq, msg.last_seq)
            self.retry = normalise_ranges([*self.retry, (lo, hi)])
        log.debug(
            "ack for batch %d (%d..%d): %d readings acknowledged",
            msg.batch_seq,
            msg.first_seq,
            msg.last_seq,
            changed,
        )
        self.wake.set()

    async def _on_resend(self, msg: ResendRequest) -> None:
        missing = await self.db.run(self.db.outbox.note_resend_missing, msg.ranges)
        log.info(
            "centre asks for seq %s (%s); %d of them are no longer held",
            ",".join(f"{a}-{b}" for a, b in msg.ranges),
            msg.reason,
            missing,
        )
        self.resend = normalise_ranges([*self.resend, *msg.ranges])
        self._status_due = self._status_due or missing > 0
        self.wake.set()

    # -- events ----------------------------------------------------------------------------

    def _publish_event(self, event_id: int, payload: bytes) -> None:
        if self.uplink is None:
            return
        res = self.uplink.publish(self.event_topic, payload)
        if res is not None and res.queued:
            self._event_mids[res.mid] = event_id

    async def _republish_events(self) -> None:
        pending = await self.db.run(self.db.outbox.pending_events, 1000)
        for event_id, payload in pending:
            self._publish_event(event_id, payload)

    # -- status ----------------------------------------------------------------------------

    async def status(self, online: bool = True) -> Status:
        ob = self.db.outbox
        oldest = await self.db.run(ob.oldest_unacked)
        counters = await self.db.run(ob.counters)
        now_ms = int(self.clock.time() * 1000)
        dev_err, bus = self.device_stats() if self.device_stats else ({}, {})
        extra: dict[str, wire.Scalar] = {
            "resend_missing": counters["resend_missing"],
            "dropped_through": counters["dropped_through"],
            "inflight": len(self.inflight),
            "next_seq": ob.next_seq,
            "uptime_s": round(self.clock.monotonic() - self.started, 1),
        }
        if self.uplink is not None:
            extra["mqtt"] = self.uplink.protocol
        return Status(
            station=self.station,
            time_ms=now_ms,
            online=online,
            agent_version=self.agent_version,
            buffer_depth=ob.depth,
            oldest_unacked_age_s=None if oldest is None else max(0.0, (now_ms - oldest[1]) / 1e3),
            last_acked_seq=ob.last_acked_seq,
            dropped=ob.dropped,
            device_errors={k: int(v) for k, v in dev_err.items()},
            bus_utilisation={k: min(1.0, max(0.0, float(v))) for k, v in bus.items()},
            clock_offset_s=None if self.clock_offset_s is None else round(self.clock_offset_s, 3),
            extra=extra,
        )

    async def send_status(self) -> None:
        if self.uplink is None or not self.connected:
            return
        st = await self.status()
        self.uplink.publish(self.status_topic, wire.encode(st), retain=True)

    async def heartbeat(self) -> None:
        """Publish a status every ``heartbeat_s`` (and at once after a connect)."""
        while True:
            try:
                await self.send_status()
            except Exception:
                log.exception("heartbeat failed")
            await self.clock.sleep(self.cfg.heartbeat_s)

    # -- sending ---------------------------------------------------------------------------

    def _new_wait(self, now: float) -> float:
        """Seconds until new readings are due in a batch: 0 now, inf if there are none."""
        pending = self.head - self.cursor
        if pending <= 0:
            return math.inf
        if pending >= self.cfg.batch_max_readings or self._backlog:
            return 0.0
        while self._commits and self._commits[0][0] <= self.cursor:
            self._commits.popleft()
        if not self._commits:
            return 0.0
        return max(0.0, self.cfg.batch_max_age_s - (now - self._commits[0][1]))

    def _expire(self, now: float) -> float:
        """Move timed-out batches to the retry list; returns seconds to the next expiry."""
        timeout = self.cfg.ack_timeout_s
        nxt = math.inf
        for bseq, f in list(self.inflight.items()):
            age = now - f.sent_at
            if age >= timeout:
                del self.inflight[bseq]
                self.retry = normalise_ranges([*self.retry, (f.first, f.last)])
                log.info(
                    "batch %d (%d..%d) not acknowledged within %.0f s; will resend",
                    bseq,
                    f.first,
                    f.last,
                    timeout,
                )
            else:
                nxt = min(nxt, timeout - age)
        return nxt

    async def _next_batch(self, now: float) -> tuple[Batch, str] | None:
        ob = self.db.outbox
        limit = self.cfg.batch_max_readings
        created = int(self.clock.time() * 1000)
        while self.resend:
            a, b = self.resend[0]
            batch = await self.db.run(
                functools.partial(
                    ob.form_batch, created, within=(a, b), limit=limit, include_acked=True
                )
            )
            if batch is None or batch.last_seq >= b:
                self.resend.pop(0)
            else:
                self.resend[0] = (batch.last_seq + 1, b)
            if batch is not None:
                return batch, "resend"
        while self.retry:
            a, b = self.retry[0]
            batch = await self.db.run(
                functools.partial(ob.form_batch, created, within=(a, b), limit=limit)
            )
            if batch is None or batch.last_seq >= b:
                self.retry.pop(0)
            else:
                self.retry[0] = (batch.last_seq + 1, b)
            if batch is not None:
                return batch, "retry"
        if self._new_wait(now) <= 0.0:
            after = self.cursor
            batch = await self.db.run(
                functools.partial(ob.form_batch, created, after=after, limit=limit)
            )
            if batch is None:
                self.cursor = max(self.cursor, self.head)
                self._backlog = False
                return None
            self.cursor = batch.last_seq
            if self.cursor >= self.head:
                self._backlog = False
            return batch, "new"
        return None

    async def run(self) -> None:
        """Send batches for as long as the agent runs."""
        while True:
            self.wake.clear()
            if self._status_due and self.connected:
                self._status_due = False
                await self.send_status()
            if not self.connected or self.uplink is None:
                await self.wake.wait()
                continue
            now = self.clock.monotonic()
            next_expiry = self._expire(now)
            if len(self.inflight) >= self.cfg.max_inflight_batches:
                await self._wait(next_expiry)
                continue
            wait = self.bucket.wait_s(now)
            if wait > 0:
                await self._wait(wait)
                continue
            got = await self._next_batch(now)
            if got is None:
                await self._wait(min(next_expiry, self._new_wait(self.clock.monotonic())))
                continue
            batch, why = got
            if not self.connected:
                # The link fell while the batch was formed: it goes again after the reconnect.
                continue
            self.bucket.take(now)
            res = self.uplink.publish(self.batch_topic, wire.encode(batch))
            if res is None:
                continue
            self.inflight[batch.batch_seq] = Inflight(
                batch.first_seq, batch.last_seq, self.clock.monotonic(), why, self.clock.time()
            )
            self.batches_sent += 1
            if why != "new":
                log.debug(
                    "%s batch %d: %d..%d (%d readings)",
                    why,
                    batch.batch_seq,
                    batch.first_seq,
                    batch.last_seq,
                    batch.count,
                )

    async def _wait(self, clock_seconds: float) -> None:
        """Wait for a wake-up or ``clock_seconds`` of the injected clock, whichever is first."""
        if math.isinf(clock_seconds):
            await self.wake.wait()
            return
        real = max(0.001, self.clock.real_seconds(clock_seconds))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=real)

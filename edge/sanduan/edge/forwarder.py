"""Store and forward: batches out of the buffer, acknowledgements in.

A batch leaves the buffer only when the centre's :class:`~sanduan.shared.wire.Ack` for it
arrives (a PUBACK only says the broker has it). The forwarder sends, oldest first:

1. readings the centre asked for with a :class:`~sanduan.shared.wire.ResendRequest` (every
   reading still held in the ranges, acknowledged or not, with its original seq; never one the
   centre rejected);
2. readings of batches not acknowledged within ``ack_timeout_s``;
3. new readings, once ``batch_max_readings`` are waiting or the oldest has waited
   ``batch_max_age_s``.

What to send is decided by the pure :class:`~sanduan.edge.core.window.SendWindow`; every answer
from the centre is checked by :mod:`sanduan.edge.core.window` against the wire bounds and what
this buffer's stream has issued before it touches the buffer. A :class:`~sanduan.shared.wire.Nack`
marks readings rejected (kept, never sent again, one ERROR line, counted).

Every ack also carries the centre's clock at commit (``time_ms``): the forwarder estimates the
station clock's offset from it (:meth:`Forwarder.clock_sample`), reports it in every heartbeat
(``clock_offset_s``) and sends one "clock" event when it exceeds ``clock_offset_max_s``.

A :class:`~sanduan.shared.wire.Command` from the centre is handed to ``on_command`` (the
agent's :class:`~sanduan.edge.commands.CommandService`).

Messages from the link are queued (bounded) and handled one at a time by one task; the sender,
the message handler and the heartbeat run in one :class:`asyncio.TaskGroup` (:meth:`run`), so a
failure of any of them ends :meth:`run` with that error. A buffer that cannot be written (a full
disk) is not a failure here: the forwarder logs it (at most once a minute), waits and goes on
with what it has. A damaged buffer is: :class:`~sanduan.edge.io.outbox.CorruptBufferError`.

The buffer is used from one worker thread (:class:`DbThread`); nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sanduan.edge.core.outbox_policy import TokenBucket
from sanduan.edge.core.window import (
    ClockWatch,
    Inflight,
    SendWindow,
    check_ack,
    check_nack,
    check_resend,
)
from sanduan.edge.io.outbox import CommitResult, CorruptBufferError, Outbox, store_error
from sanduan.edge.io.uplink import Uplink
from sanduan.shared import topics, wire
from sanduan.shared.clock import Clock, wait_event
from sanduan.shared.config import UplinkConfig
from sanduan.shared.errors import StoreError, WireFormatError
from sanduan.shared.logs import RateLimitedLog
from sanduan.shared.topics import Kind
from sanduan.shared.wire import Ack, Batch, Command, Nack, ResendRequest, Status

__all__ = ["DbThread", "Forwarder", "Inflight", "RateLimitedLog"]

log = logging.getLogger("sanduan.edge.forwarder")

T = TypeVar("T")
INBOX_MAX = 10_000
"""Messages from the centre waiting to be handled; beyond it they are dropped and counted (the
centre asks again: acks are repeated on a resend, resend requests on the next gap check)."""
STORE_RETRY_S = 5.0
"""Wait after a buffer operation failed before the next try."""


class DbThread:
    """Runs every buffer operation on one dedicated thread, awaitable from the loop. SQLite
    errors leave as :class:`~sanduan.shared.errors.StoreError`."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sanduan-db")

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as e:
            what = getattr(fn, "__name__", "using it")
            raise store_error(self.outbox.path, what, e) from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ex, self._call, fn, *args)

    def close(self) -> None:
        self._ex.submit(self.outbox.close).result()
        self._ex.shutdown(wait=True)


StatsFn = Callable[[], tuple[dict[str, int], dict[str, float]]]
"""Returns (device error counts, bus utilisation) for the heartbeat."""
ExtraFn = Callable[[], dict[str, wire.Scalar]]
"""Returns more ``extra`` entries for the heartbeat (the agent's own counters)."""


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
        agent_stats: ExtraFn | None = None,
        on_command: Callable[[Command], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.on_command = on_command
        """Runs the centre's commands (:mod:`sanduan.edge.commands`); None: they are ignored."""
        self.cfg = cfg
        self.station = station
        self.stream = db.outbox.stream
        self.clock = clock
        self.agent_version = agent_version
        self.device_stats = device_stats
        self.agent_stats = agent_stats
        self.uplink: Uplink | None = None
        self.batch_topic = topics.batch_topic(station)
        self.event_topic = topics.event_topic(station)
        self.status_topic = topics.status_topic(station)
        self.connected = False
        self.window = SendWindow(
            cfg.ack_timeout_s,
            cfg.max_inflight_batches,
            cfg.batch_max_readings,
            cfg.batch_max_age_s,
            head=db.outbox.next_seq - 1,
        )
        self.bucket = TokenBucket(cfg.max_batches_per_s, max(1.0, cfg.max_batches_per_s))
        self.wake = asyncio.Event()
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(INBOX_MAX)
        self._event_mids: dict[int, int] = {}
        self._status_due = False
        self._republish_due = False
        self.counts: collections.Counter[str] = collections.Counter()
        """batches_sent, acks, nacks, rejected (readings), ignored (messages refused),
        inbox_dropped."""
        self.started = clock.monotonic()
        self.say = RateLimitedLog(log, 60.0, clock.monotonic)
        self.clock_watch = ClockWatch(cfg.clock_offset_max_s)

    @property
    def clock_offset_s(self) -> float | None:
        """Latest estimate of (station clock - centre clock), seconds: positive when the station's
        clock is ahead (the sign of :attr:`Status.clock_offset_s`)."""
        return self.clock_watch.offset_s

    @property
    def clock_rtt_s(self) -> float | None:
        return self.clock_watch.rtt_s

    @property
    def clock_events(self) -> int:
        return self.clock_watch.alarms

    @property
    def inflight(self) -> dict[int, Inflight]:
        return self.window.inflight

    @property
    def batches_sent(self) -> int:
        return self.counts["batches_sent"]

    # -- inputs (called on the loop by the agent and the link) -----------------------------

    def committed(self, result: CommitResult) -> None:
        """New readings are in the buffer (and their alarm events)."""
        if result.count:
            self.window.committed(result.last_seq, self.clock.monotonic())
            self.wake.set()
        for ev in result.events:
            self._publish_event(ev.event_id, wire.encode(ev))

    def link_up(self, session_present: bool) -> None:
        self.connected = True
        self.window.link_up()
        self._status_due = True
        self._republish_due = True
        self.wake.set()

    def link_down(self, reason: str) -> None:
        self.connected = False
        self._event_mids.clear()
        self.wake.set()

    def message(self, kind: Kind, payload: bytes) -> None:
        try:
            msg = wire.decode(payload)
        except WireFormatError as e:
            self.counts["ignored"] += 1
            self.say(logging.WARNING, "bad", "ignoring a bad %s message: %s", kind, e.reason)
            return
        self._enqueue("msg", msg)

    def published(self, mid: int) -> None:
        event_id = self._event_mids.pop(mid, None)
        if event_id is not None:
            self._enqueue("delivered", event_id)

    def _enqueue(self, what: str, item: Any) -> None:
        try:
            self.inbox.put_nowait((what, item))
        except asyncio.QueueFull:
            self.counts["inbox_dropped"] += 1
            self.say(
                logging.WARNING,
                "inbox",
                "%d messages from the centre waiting: one dropped",
                INBOX_MAX,
            )

    # -- the message handler ---------------------------------------------------------------

    async def serve_inbox(self) -> None:
        """Handle the centre's messages one at a time, for as long as the agent runs."""
        while True:
            what, item = await self.inbox.get()
            await self._handle(what, item)

    async def drain_inbox(self) -> int:
        """Handle the messages already queued (at shutdown: acks that arrived are recorded)."""
        n = 0
        while not self.inbox.empty():
            what, item = self.inbox.get_nowait()
            await self._handle(what, item, final=True)
            n += 1
        return n

    async def _handle(self, what: str, item: Any, final: bool = False) -> None:
        try:
            if what == "delivered":
                await self.db.run(self.db.outbox.event_delivered, item)
            elif isinstance(item, Ack):
                await self._on_ack(item)
            elif isinstance(item, ResendRequest):
                await self._on_resend(item)
            elif isinstance(item, Nack):
                await self._on_nack(item)
            elif isinstance(item, Command) and self.on_command is not None:
                await self.on_command(item)
            else:
                self.counts["ignored"] += 1
                self.say(
                    logging.WARNING,
                    "kind",
                    "ignoring a %s message on the station's topics",
                    type(item).__name__,
                )
        except CorruptBufferError:
            raise
        except StoreError as e:
            # The buffer cannot be written now (a full disk): the centre's message is lost
            # to this run; it answers again (an ack on the resend after the timeout).
            self.say(logging.ERROR, "store", "%s; going on with what the buffer has", e)
            if not final:
                await self.clock.sleep(STORE_RETRY_S)

    def _refuse(self, kind: str, why: str) -> None:
        self.counts["ignored"] += 1
        self.say(logging.WARNING, f"refuse-{kind}", "ignoring a %s from the centre: %s", kind, why)

    def clock_sample(self, centre_ms: int, sent_wall: float | None = None) -> float | None:
        """Estimate the station clock's offset (station - centre, seconds) from an ack stamped
        ``centre_ms`` by the centre (its clock at commit), received now.

        With the station time of the publish (``sent_wall``) the centre's stamp is compared with
        the midpoint of publish and ack (NTP-style: the error is at most half the round trip);
        without it (an ack for a batch sent before a reconnect) with the time of receipt, which
        overstates a slow clock by the ack's transit time. Returns the offset, None for an ack
        without a usable time (see :func:`~sanduan.edge.core.window.clock_offset`)."""
        return self.clock_watch.sample(centre_ms, self.clock.time(), sent_wall)

    async def _on_ack(self, msg: Ack) -> None:
        issued = self.db.outbox.issued()
        marks, why = check_ack(
            msg.station,
            msg.stream,
            msg.batch_seq,
            msg.first_seq,
            msg.last_seq,
            msg.ranges,
            issued,
        )
        if why is not None:
            self._refuse("ack", why)
            return
        sent = self.window.inflight.get(msg.batch_seq)
        self.clock_sample(msg.time_ms, sent.sent_wall if sent is not None else None)
        changed = await self.db.run(self.db.outbox.ack_ranges, marks)
        self.counts["acks"] += 1
        self.window.acked(msg.batch_seq, msg.first_seq, msg.last_seq, bool(msg.ranges))
        await self._check_clock()
        log.debug(
            "ack for batch %d (%d..%d): %d readings acknowledged",
            msg.batch_seq,
            msg.first_seq,
            msg.last_seq,
            changed,
        )
        self.wake.set()

    async def _on_nack(self, msg: Nack) -> None:
        issued = self.db.outbox.issued()
        ranges, why = check_nack(
            msg.station, msg.stream, msg.first_seq, msg.last_seq, msg.ranges, issued
        )
        if why is not None:
            self._refuse("nack", why)
            return
        ob = self.db.outbox
        changed = await self.db.run(
            functools.partial(
                ob.reject,
                ranges,
                reason=str(msg.reason),
                detail=msg.detail,
                batch_seq=msg.batch_seq,
                now_ms=int(self.clock.time() * 1000),
            )
        )
        self.counts["nacks"] += 1
        self.counts["rejected"] += changed
        log.error(
            "the centre rejected %d readings of batch %d (seq %s), reason %s: %s;"
            " they stay in the buffer marked rejected and are not sent again",
            changed,
            msg.batch_seq,
            ",".join(f"{a}-{b}" for a, b in ranges[:8]) + ("..." if len(ranges) > 8 else ""),
            msg.reason,
            msg.detail or "-",
        )
        sent = self.window.inflight.get(msg.batch_seq)
        if sent is not None and await self.db.run(ob.unacked_in, sent.first, sent.last) == 0:
            self.window.settled(msg.batch_seq)
        self._status_due = True
        self.wake.set()

    async def _on_resend(self, msg: ResendRequest) -> None:
        ranges, note = check_resend(msg.station, msg.stream, msg.ranges, self.db.outbox.issued())
        if note is not None:
            self._refuse("resend request", note)
        if not ranges:
            return
        missing = await self.db.run(self.db.outbox.note_resend_missing, ranges)
        log.info(
            "centre asks for seq %s (%s); %d of them are no longer held",
            ",".join(f"{a}-{b}" for a, b in ranges[:8]) + ("..." if len(ranges) > 8 else ""),
            msg.reason,
            missing,
        )
        self.window.resend_asked(ranges)
        self._status_due = self._status_due or missing > 0
        self.wake.set()

    async def _check_clock(self) -> None:
        """One "clock" event when the offset goes beyond the limit; again only after it came
        back within the limit. Nothing else is flagged: readings keep their times."""
        watch = self.clock_watch
        if not watch.alarm_due() or watch.offset_s is None:
            return
        off, limit = watch.offset_s, watch.limit_s
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
            "rejected": counters["rejected"],
            "inflight": len(self.window.inflight),
            "next_seq": ob.next_seq,
            "uptime_s": round(self.clock.monotonic() - self.started, 1),
        }
        if self.counts["ignored"]:
            extra["ignored_messages"] = self.counts["ignored"]
        if self.agent_stats is not None:
            extra.update(self.agent_stats())
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
            stream=self.stream,
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
            except CorruptBufferError:
                raise
            except (StoreError, WireFormatError) as e:
                self.say(logging.ERROR, "heartbeat", "heartbeat not sent: %s", e)
            await self.clock.sleep(self.cfg.heartbeat_s)

    # -- sending ---------------------------------------------------------------------------

    async def _next_batch(self, now: float) -> tuple[Batch, str] | None:
        ob = self.db.outbox
        limit = self.cfg.batch_max_readings
        created = int(self.clock.time() * 1000)
        while (req := self.window.next_request(now)) is not None:
            if req.why == "new":
                form = functools.partial(ob.form_batch, created, after=req.lo - 1, limit=limit)
            else:
                form = functools.partial(
                    ob.form_batch,
                    created,
                    within=(req.lo, req.hi),
                    limit=limit,
                    include_acked=req.why == "resend",
                )
            batch = await self.db.run(form)
            self.window.formed(req, None if batch is None else batch.last_seq)
            if batch is not None:
                return batch, req.why
            if req.why == "new":
                return None
        return None

    async def send_loop(self) -> None:
        """Send batches for as long as the agent runs."""
        win = self.window
        while True:
            self.wake.clear()
            if self._status_due and self.connected:
                self._status_due = False
                await self.send_status()
            if self._republish_due and self.connected:
                self._republish_due = False
                await self._republish_events()
            if not self.connected or self.uplink is None:
                await self.wake.wait()
                continue
            now = self.clock.monotonic()
            timeout = win.timeout_s
            expired, next_expiry = win.expire(now)
            for bseq, f in expired:
                log.info(
                    "batch %d (%d..%d) not acknowledged within %.0f s; will resend",
                    bseq,
                    f.first,
                    f.last,
                    timeout,
                )
            if win.full:
                await self._wait(next_expiry)
                continue
            wait = self.bucket.wait_s(now)
            if wait > 0:
                await self._wait(wait)
                continue
            got = await self._next_batch(now)
            if got is None:
                await self._wait(min(next_expiry, win.new_wait(self.clock.monotonic())))
                continue
            batch, why = got
            if not self.connected:
                # The link fell while the batch was formed: it goes again after the reconnect.
                continue
            self.bucket.take(now)
            res = self.uplink.publish(self.batch_topic, wire.encode(batch))
            if res is None:
                continue
            win.sent(
                batch.batch_seq,
                Inflight(
                    batch.first_seq,
                    batch.last_seq,
                    self.clock.monotonic(),
                    why,  # type: ignore[arg-type]
                    self.clock.time(),
                ),
            )
            self.counts["batches_sent"] += 1
            if why != "new":
                log.debug(
                    "%s batch %d: %d..%d (%d readings)",
                    why,
                    batch.batch_seq,
                    batch.first_seq,
                    batch.last_seq,
                    batch.count,
                )

    async def _sender(self) -> None:
        """:meth:`send_loop`, carrying on after a buffer that cannot be written (full disk)."""
        while True:
            try:
                await self.send_loop()
            except CorruptBufferError:
                raise
            except StoreError as e:
                self.say(logging.ERROR, "store", "%s; going on with what the buffer has", e)
                await self.clock.sleep(STORE_RETRY_S)

    async def run(self) -> None:
        """The sender, the message handler and the heartbeat until cancelled; the first of them
        that fails ends this with its error."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(), name="sender")
            tg.create_task(self.serve_inbox(), name="inbox")
            tg.create_task(self.heartbeat(), name="heartbeat")

    async def _wait(self, clock_seconds: float) -> None:
        """Wait for a wake-up or ``clock_seconds`` of the injected clock, whichever is first."""
        if math.isinf(clock_seconds):
            await self.wake.wait()
            return
        real = max(0.001, self.clock.real_seconds(clock_seconds))
        await wait_event(self.wake, real)

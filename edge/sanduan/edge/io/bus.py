"""The bus shell: one asyncio task owns one serial port and polls the Modbus RTU slaves on it.

Interface (what the agent calls)::

    from sanduan.edge.devices import load_station
    from sanduan.edge.io.bus import BusPoller, Sink

    config, plans = load_station("station.toml")          # ConfigError on a bad file
    pollers = [BusPoller(plan, clock, sink) for plan in plans]
    tasks = [asyncio.create_task(p.run(), name=f"bus {p.name}") for p in pollers]
    ...
    poller.snapshot()            # heartbeat: per-device stats, measured bus utilisation

- ``BusPoller(plan: BusPlan, clock: Clock, sink: Sink | None = None, *,
  reconnect_max_s: float = 30.0)``.
- ``Sink = Callable[[list[PolledValue]], Awaitable[None] | None]``: called (and awaited when it
  returns an awaitable) once per successful device poll that produced values; the list holds the
  values of that one device, all with the same ``ts_ms``. An exception raised by the sink is
  logged and the poller carries on.
- ``await poller.run() -> None``: poll every device on its schedule until cancelled; survives the
  port disappearing or refusing its settings (whatever pyserial raises, ``termios.error``
  included): the bus is marked failed (``stats.failed``, ``stats.last_port_error``, a WARNING per
  try) and the port reopened with backoff, 0.5 s doubling up to ``reconnect_max_s``, while the
  other buses poll on. Closes the port when cancelled.
- ``await poller.poll_once() -> list[PolledValue]``: open the port if needed, poll every device
  once in configuration order (ignoring due times and backoff), hand the values to the sink too,
  return them all. Raises :class:`~sanduan.shared.errors.DeviceError` when the port cannot be
  opened. ``await poller.close()`` closes the port.
- ``poller.devices: dict[str, DeviceStats]`` (by device name), ``poller.stats: BusStats``,
  ``poller.snapshot() -> dict[str, Any]`` (JSON-ready).

Behaviour:

- Scheduling uses the injected clock's monotonic time (:mod:`sanduan.edge.core.schedule`);
  reading times are ``clock.time()`` taken when the device's first request is answered. Line
  times (timeouts, ``pause_s``, the inter-frame silence, reconnect backoff) are real seconds:
  the wire does not run faster in an accelerated rig.
- Each device's planned requests run in order with ``pause_s`` between them; each request gets
  ``retries + 1`` attempts (1 once the device is degraded). Requests are framed and replies
  judged here, byte by byte as they arrive (:mod:`sanduan.edge.core.rtu`; pymodbus only owns the
  port): a reply of the polled slave that cannot be right (a bad CRC, a wrong byte count) or
  garbage fails the attempt the moment that is known; a frame that stops short fails when the
  configured ``timeout_s`` (plus the reply's wire time) has run out. A well-formed frame
  that does not answer the request (a late reply of another slave, or of this one to another
  request) is never taken as the answer: it is skipped and the wait goes on
  (``stats.foreign_frames``). After a bad reply the line must be silent for ``DRAIN_S`` (at
  least the inter-frame gap) and what arrived is dropped. A reply that comes after its timeout
  is the answer to the retry of that same request (taken before the retry is sent when it is
  already there, ``stats.late_replies``), never to any other request. Bytes found in the
  receive buffer before a request are dropped (``stats.stale_bytes``). Every request waits for
  the inter-frame silence after the last byte on the line.
- Reply timeouts: ``timeout_s``. With ``adaptive_timeout`` (off by default) the first attempt
  waits an adapted timeout
  (:class:`~sanduan.edge.core.timing.AdaptiveTimeout`: 3 x the p99 of the measured turnarounds
  plus the reply's wire time, within [max(``timeout_min_s``, 50 ms), ``timeout_s``], and
  ``timeout_s`` until 16 turnarounds were measured); a retry, and every attempt after a timeout
  until the device was measured again, waits the full ``timeout_s``. A reply already under way
  when the timeout runs out is left to finish. Exception replies 1-3
  (illegal function/address/value) are not retried: they are configuration errors. The first
  request that fails ends the device's poll, so a silent slave costs at most
  ``attempts * timeout_s`` of bus time per poll and then backs off exponentially.
- Errors are counted per device and per kind: ``timeout`` (no byte came back), ``crc`` (bytes
  came back but no valid reply: CRC error, wrong byte count, garbage, a short frame),
  ``exception`` (an exception reply; the code is kept in ``last_exception_code``). A failed poll
  emits nothing: no values are invented, the stats and the device state (``failing`` then
  ``degraded``) carry the outage to the heartbeat. Logs (logger ``sanduan.edge.bus``) name the
  bus, the device, its slave id and the register block, one line per failed poll; pymodbus's own
  logger is set to CRITICAL unless the operator gave it a level.
- Each read block is decoded by a :class:`~sanduan.edge.core.decode.BlockDecoder` built once
  per device (struct formats per block), not by re-deriving the layout on every read.
- Flags: each value gets the most severe flag of the status/quality registers that apply to it
  (D > F > M > C > T > N). A value the device reports as missing (a sentinel, NaN) is emitted as
  NaN flagged D when no register says worse: an invalid value must never count as normal.
- Analyzers (a profile with a ``result_time`` register): values carry the analyzer's result time
  and are emitted only when it differs from the last emitted one, so one cycle's result is
  emitted once. A result time more than 10 minutes ahead of the read time or more than 2 days
  behind it (an analyzer clock reset after power loss) is not trusted: the read time is used
  and a warning is logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from sanduan.edge.core import rtu
from sanduan.edge.core.decode import BlockDecoder
from sanduan.edge.core.model import PolledValue
from sanduan.edge.core.plan import BusPlan, DevicePlan
from sanduan.edge.core.schedule import DeviceState, Schedule, Transition, next_due
from sanduan.edge.core.timing import AdaptiveTimeout, Line
from sanduan.shared.clock import Clock, wait_event
from sanduan.shared.errors import DeviceError
from sanduan.shared.model import Flag
from sanduan.shared.registers import ReadBlock, RegisterSpec

__all__ = ["BusPoller", "BusStats", "DeviceStats", "Sink", "run_pollers", "worst_flag"]

log = logging.getLogger("sanduan.edge.bus")

Sink = Callable[[list[PolledValue]], Awaitable[None] | None]

RESULT_MAX_LEAD_S = 600.0
RESULT_MAX_AGE_S = 2 * 86_400.0
NOT_RETRIED_EXCEPTIONS = frozenset({1, 2, 3})  # illegal function / data address / data value
CONNECT_TIMEOUT_S = 2.0
TIMER_RESOLUTION_S = 0.001
"""The event loop's timer resolution: a silence's last part shorter than this is slept by the
thread (the loop would round it up to a whole millisecond)."""
TIMER_SLACK_NS = 1000
"""The timer slack asked of Linux for the thread that polls (``PR_SET_TIMERSLACK``): its sleeps
end within 1 us of their deadline instead of the default 50 us, a tenth of the silence between
frames at 115200 baud."""
PR_SET_TIMERSLACK = 29
READ_SIZE = 1024
"""Bytes taken from the port per read: more than any frame (256 bytes at most)."""
DRAIN_S = 0.02
"""After a bad reply the line must be silent this long (or the inter-frame gap, whichever is
longer) before the next request; what arrived meanwhile is discarded."""

# Most severe first: a device that is not measuring outranks an over-range value.
_SEVERITY = {f: i for i, f in enumerate((Flag.B, Flag.D, Flag.F, Flag.M, Flag.C, Flag.T, Flag.S))}


def worst_flag(a: Flag, b: Flag) -> Flag:
    """The more severe of two flags (N is the least severe)."""
    return min(a, b, key=lambda f: _SEVERITY.get(f, len(_SEVERITY)))


@dataclass
class DeviceStats:
    """What the heartbeat reports for one device."""

    device: str
    slave: int
    state: DeviceState = DeviceState.UNKNOWN
    polls: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    consecutive_failures: int = 0
    requests: int = 0  # transactions sent, retries included
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    last_error: str = ""
    last_exception_code: int | None = None
    last_success_ts: float | None = None  # wall clock (clock.time())
    values: int = 0  # values emitted
    unchanged: int = 0  # analyzer polls whose result was already emitted
    missed: int = 0  # schedule slots skipped because the bus was late

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "slave": self.slave,
            "state": self.state.value,
            "polls": self.polls,
            "polls_ok": self.polls_ok,
            "polls_failed": self.polls_failed,
            "consecutive_failures": self.consecutive_failures,
            "requests": self.requests,
            "errors": dict(self.errors),
            "last_error": self.last_error,
            "last_exception_code": self.last_exception_code,
            "last_success_ts": self.last_success_ts,
            "values": self.values,
            "unchanged": self.unchanged,
            "missed": self.missed,
        }


@dataclass
class BusStats:
    bus: str
    port: str
    connected: bool = False
    connects: int = 0  # times the port was opened
    disconnects: int = 0  # times it was closed or lost
    port_errors: int = 0  # failed opens and lost ports
    requests: int = 0
    failed: bool = False  # the port cannot be opened or configured now (retried with backoff)
    last_port_error: str = ""
    busy_s: float = 0.0  # real seconds spent in transactions (timeouts included)
    stale_bytes: int = 0  # bytes nobody asked for, discarded before a request or after a bad one
    foreign_frames: int = 0  # well-formed frames that did not answer the request (late replies)
    late_replies: int = 0  # replies after their timeout, taken by the retry of the same request
    started: float | None = None  # time.monotonic() of the first use
    elapsed_s: float = 0.0  # updated by snapshot() and utilisation()

    def utilisation(self, now: float) -> float:
        """Measured busy time / elapsed time since the poller started."""
        if self.started is None:
            return 0.0
        self.elapsed_s = now - self.started
        return self.busy_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str  # timeout | crc | exception
    detail: str
    code: int | None = None


class _PortLost(Exception):
    pass


@dataclass
class _Exchange:
    """The reply awaited for one request: the verdict arrives from the receive callback."""

    verdict: asyncio.Future[rtu.Verdict | None]
    """Set once: the reply's verdict, or None when the timeout ran out first."""
    expect: rtu.Expect
    first_rx: float | None = None
    expired: bool = False
    timer: asyncio.TimerHandle | None = None
    cap: asyncio.TimerHandle | None = None

    def settle(self, verdict: rtu.Verdict | None) -> None:
        if not self.verdict.done():
            self.verdict.set_result(verdict)

    def close(self) -> None:
        for t in (self.timer, self.cap):
            if t is not None:
                t.cancel()
        if not self.verdict.done():
            self.verdict.cancel()


@dataclass
class _Device:
    plan: DevicePlan
    schedule: Schedule
    stats: DeviceStats
    last_result_time: float | None = None
    untrusted_result_time: float | None = None
    # profile-derived, computed once: (value spec, the flag registers that apply to it)
    values: tuple[tuple[RegisterSpec, tuple[RegisterSpec, ...]], ...] = ()
    result_time: RegisterSpec | None = None
    decoders: tuple[BlockDecoder, ...] = ()
    timeout: AdaptiveTimeout | None = None
    """The first attempt's reply timeout, adapted to measured turnarounds (None: fixed)."""

    def __post_init__(self) -> None:
        cfg = self.plan.config
        if cfg.adaptive_timeout:
            self.timeout = AdaptiveTimeout(cfg.timeout_min_s, cfg.timeout_s)
        profile = self.plan.profile
        flag_regs = profile.flag_registers
        self.values = tuple(
            (spec, tuple(r for r in flag_regs if r.applies(spec.code or "")))
            for spec in profile.values
        )
        self.result_time = profile.result_time
        self.decoders = tuple(BlockDecoder(b) for b in self.plan.blocks)


class BusPoller:
    """Owns one serial port; polls the devices of one :class:`BusPlan` (see the module doc)."""

    def __init__(
        self,
        plan: BusPlan,
        clock: Clock,
        sink: Sink | None = None,
        *,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.sink = sink
        self.reconnect_max_s = reconnect_max_s
        bus = plan.config
        self.line = Line.of(bus)
        self.silence_s = self.line.gap_s if bus.silence_s is None else bus.silence_s
        self.stats = BusStats(bus.name, bus.port)
        anchor = clock.monotonic()
        self._devs: list[_Device] = []
        for dp in plan.devices:
            cfg = dp.config
            sched = Schedule(
                period_s=cfg.poll_period_s,
                anchor=anchor,
                retries=cfg.retries,
                backoff_max_s=cfg.backoff_max_s,
                degraded_after=cfg.degraded_after,
            )
            self._devs.append(_Device(dp, sched, DeviceStats(dp.name, dp.slave)))
        self.devices: dict[str, DeviceStats] = {d.plan.name: d.stats for d in self._devs}
        self._client: Any = None
        self._port: Any = None
        """The open serial port, when requests may be written to it directly (:meth:`_send`)."""
        self._rx = bytearray()
        self._exchange: _Exchange | None = None
        self._last_io = -math.inf
        self.drain_s = DRAIN_S
        self._kick = asyncio.Event()
        _quiet_pymodbus()

    @property
    def name(self) -> str:
        return self.plan.name

    # -- port ------------------------------------------------------------------------------

    def _connection(self, up: bool) -> None:
        if up:
            self.stats.connects += 1
        elif self.stats.connected:
            self.stats.disconnects += 1
        self.stats.connected = up

    @staticmethod
    def _loop_time() -> float:
        # Physical line time (busy time, inter-frame silence): real seconds, never scaled.
        return time.monotonic()

    def _mark_started(self) -> None:
        if self.stats.started is None:
            self.stats.started = self._loop_time()

    async def _connect(self) -> bool:
        bus = self.plan.config
        client = AsyncModbusSerialClient(
            bus.port,
            framer=FramerType.RTU,
            baudrate=bus.baudrate,
            bytesize=bus.bytesize,
            parity=bus.parity,
            stopbits=bus.stopbits,
            timeout=CONNECT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,  # this poller reopens the port itself
            trace_connect=self._connection,
        )
        client.set_max_no_responses(1 << 30)  # a silent slave is no reason to drop the port
        try:
            ok = bool(await client.connect())
            why = "" if ok else "the port cannot be opened or configured"
        except Exception as exc:  # OSError, ModbusException, termios.error, ...
            # pyserial raises termios.error (not an OSError) when the adapter refuses the
            # settings: whatever the port does, it fails this bus alone, never the agent.
            ok = False
            why = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}".removeprefix(
                "builtins."
            )
        if not ok:
            with contextlib.suppress(Exception):
                client.close()
            self.stats.failed = True
            self.stats.last_port_error = why
            return False
        self.stats.failed = False
        self.stats.last_port_error = ""
        # Requests are framed and replies judged here (sanduan.edge.core.rtu), byte by byte as
        # they arrive; pymodbus only owns the port.
        client.ctx.callback_data = self._on_bytes  # type: ignore[method-assign]
        self._port = self._read_directly(client)
        self._rx.clear()
        self._client = client
        log.info("bus %s: port %s open (%s)", bus.name, bus.port, self.line.name)
        return True

    def _read_directly(self, client: Any) -> Any:
        """Read the port here, one system call per wake-up, instead of through pyserial's read
        (a select, the read, another select) and pymodbus's receive buffer: the reply's last
        byte is stamped (the inter-frame silence starts there) as soon as the loop wakes.
        Registered under the transport's own read callback too, in case its set-up (scheduled
        by the connect) has not run yet. A poll-mode transport (Windows) keeps its own.

        Returns the port when requests may be written to it directly too (non-blocking
        writes), else None."""
        transport = client.ctx.transport
        port = getattr(transport, "sync_serial", None)
        if port is None or getattr(transport, "force_poll", True):
            return None
        fd = port.fileno()

        def read_ready() -> None:
            try:
                data = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                transport.close(exc=exc)
                return
            if not data:  # readable but empty: the device is gone (a USB adapter pulled)
                transport.close(exc=ConnectionError(f"serial port {port.port} returned no data"))
                return
            self._on_bytes(data)

        transport.intern_read_ready = read_ready
        asyncio.get_running_loop().add_reader(fd, read_ready)
        return port if port.write_timeout == 0 else None

    async def _connect_with_backoff(self) -> None:
        delay = 0.5
        while not await self._connect():
            self.stats.port_errors += 1
            log.warning(
                "bus %s: FAILED: cannot open serial port %s (%s); retrying in %.1f s",
                self.name,
                self.plan.config.port,
                self.stats.last_port_error,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._port = None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._connection(False)

    async def close(self) -> None:
        """Close the serial port (``run`` does it when cancelled)."""
        await self._drop_client()

    # -- one transaction ---------------------------------------------------------------------

    async def _quiet(self, quiet_s: float) -> None:
        """Wait until the line has been silent for ``quiet_s`` (bytes still arriving, e.g. the
        tail of a garbled reply or a late one, push the wait on).

        Plain sleeps, never a busy wait: on a loaded gateway the CPU a spinning poller takes is
        missed by everything else. The event loop's timers have a resolution of 1 ms (and wake
        up to 1 ms late), more than half the whole silence above 19200 baud (1.75 ms): the last
        part of a wait, under :data:`TIMER_RESOLUTION_S`, is a short blocking sleep of the
        thread (0.911 of the wire limit at 115200 baud in ``bench/bus.py``, 0.880 without), and
        the thread's timer slack is 1 us (:func:`precise_timers`)."""
        while True:
            wait = self._last_io + quiet_s - self._loop_time()
            if wait <= 0:
                return
            if wait > TIMER_RESOLUTION_S:
                await asyncio.sleep(wait - TIMER_RESOLUTION_S)
            else:
                time.sleep(wait)  # noqa: ASYNC251 (under 1 ms, below the loop's timer resolution)

    def _send(self, client: Any, frame: bytes) -> None:
        """Put a request on the line now: written straight to the port when nothing is queued
        before it. pymodbus's transport only queues a write and makes it on the event loop's
        next turn (one more wake-up and two more system calls between the silence and the
        request); what the port does not take at once goes that way."""
        port = self._port
        if port is not None and not client.ctx.transport.get_write_buffer_size():
            try:
                n = port.write(frame) or 0  # non-blocking (write_timeout 0): what it took
            except Exception:  # the transport's own write (below) reports it
                n = 0
            if n >= len(frame):
                return
            frame = frame[n:]
        client.ctx.send(frame)

    def _discard(self) -> None:
        """Drop whatever sits in the receive buffer (counted: nobody asked for it)."""
        if self._rx:
            self.stats.stale_bytes += len(self._rx)
            log.debug("bus %s: %d stale bytes discarded", self.name, len(self._rx))
            self._rx.clear()

    def _on_bytes(self, data: bytes, addr: object = None) -> int:
        """The transport's receive callback: ``data`` is what the transport holds (all of it is
        taken here, into ``self._rx``). Returns the bytes consumed."""
        now = self._loop_time()
        self._rx += data
        self._last_io = now
        ex = self._exchange
        if ex is not None and not ex.verdict.done():
            self._judge(ex, now)
        return len(data)

    def _judge(self, ex: _Exchange, now: float) -> None:
        while self._rx:
            if ex.first_rx is None:
                ex.first_rx = now
            verdict = rtu.judge(self._rx, ex.expect)
            if isinstance(verdict, rtu.NeedMore):
                return  # an unfinished frame: wait for the rest
            if isinstance(verdict, rtu.Foreign):
                # A late reply of another request: never the answer; skip it, wait on.
                del self._rx[: verdict.skip]
                self.stats.foreign_frames += 1
                ex.first_rx = None
                if ex.expired and not self._rx:
                    ex.settle(None)
                    return
                log.debug(
                    "bus %s: frame of slave %d FC%02d skipped (not the reply awaited)",
                    self.name,
                    verdict.slave,
                    verdict.function,
                )
                continue
            if isinstance(verdict, rtu.Registers | rtu.ExceptionReply):
                del self._rx[: verdict.skip]
            ex.settle(verdict)
            return

    async def _transact(
        self, dev: _Device, block: ReadBlock, attempts: int
    ) -> list[int] | _Failure:
        cfg = dev.plan.config
        failure = _Failure("timeout", "no reply")
        expect = rtu.Expect(dev.plan.slave, block.function, block.count)
        frame = rtu.read_request(dev.plan.slave, block.function, block.address, block.count)
        request_s = self.line.wire_s(len(frame))
        reply_s = self.line.wire_s(expect.length)
        for attempt in range(1, attempts + 1):
            client = self._client
            if client is None or not client.connected:
                raise _PortLost
            await self._quiet(self.silence_s)
            if failure.kind == "timeout" and attempt > 1:
                # The reply to the identical request that just timed out came in late, before
                # this retry went out: it is the answer (never a reply to any other request).
                late = rtu.judge(self._rx, expect)
                if isinstance(late, rtu.Registers):
                    del self._rx[: late.skip]
                    self.stats.late_replies += 1
                    return list(late.values)
            self._discard()
            timeout = cfg.timeout_s
            if attempt == 1 and dev.timeout is not None:
                timeout = dev.timeout.timeout_s(reply_s)
            loop = asyncio.get_running_loop()
            ex = _Exchange(loop.create_future(), expect)
            self._exchange = ex
            t0 = self._loop_time()
            try:
                self._send(client, frame)
                sent = t0 + request_s
                self._last_io = sent
                ex.timer = loop.call_later(timeout + request_s, self._expire, ex)
                # a frame under way may finish within the configured timeout and its wire time
                ex.cap = loop.call_later(cfg.timeout_s + request_s + reply_s, self._give_up, ex)
                verdict = await ex.verdict
            finally:
                self._exchange = None
                ex.close()
                self._account(dev, t0)
            if client is not self._client or not client.connected:
                self.stats.port_errors += 1
                log.warning("bus %s: serial port %s lost", self.name, self.stats.port)
                raise _PortLost
            measured = isinstance(verdict, rtu.Registers | rtu.ExceptionReply)
            if measured and ex.first_rx is not None and dev.timeout is not None:
                dev.timeout.add(ex.first_rx - sent)
            if isinstance(verdict, rtu.Registers):
                return list(verdict.values)
            if isinstance(verdict, rtu.ExceptionReply):
                code = verdict.code
                failure = _Failure("exception", f"exception reply {code}", code)
            elif isinstance(verdict, rtu.BadReply):
                failure = _Failure("crc", f"invalid reply ({verdict.reason})")
                # The rest of a bad frame may still be on its way: let the line fall silent
                # and drop it before the next request.
                await self._quiet(max(self.silence_s, self.drain_s))
                self._discard()
            else:
                # A late reply to this request is taken by its retry (before it is sent, or as
                # its answer); after the last attempt it is skipped by whatever request comes
                # next, or dropped as stale.
                failure = _Failure("timeout", f"no reply within {timeout:.3g} s")
                if dev.timeout is not None:
                    dev.timeout.reset()  # perhaps slower now: the full timeout until measured
            dev.stats.errors[failure.kind] += 1
            if failure.code is not None:
                dev.stats.last_exception_code = failure.code
            log.debug(
                "bus %s: device %s (slave %d) FC%02d %#06x+%d: attempt %d/%d: %s",
                self.name,
                dev.plan.name,
                dev.plan.slave,
                block.function,
                block.address,
                block.count,
                attempt,
                attempts,
                failure.detail,
            )
            if failure.code in NOT_RETRIED_EXCEPTIONS:
                break
        return failure

    def _expire(self, ex: _Exchange) -> None:
        """The reply timeout: a frame already under way is left to finish (``_give_up``)."""
        ex.expired = True
        if not self._rx:
            ex.settle(None)

    def _give_up(self, ex: _Exchange) -> None:
        """The configured timeout and the reply's wire time have run out: a frame still
        unfinished is a short one."""
        short = rtu.BadReply("short", "short frame", len(self._rx), ours=False)
        ex.settle(short if self._rx else None)

    def _account(self, dev: _Device, t0: float) -> None:
        now = self._loop_time()
        self.stats.busy_s += now - t0
        self.stats.requests += 1
        dev.stats.requests += 1

    # -- one device --------------------------------------------------------------------------

    async def _poll(self, dev: _Device) -> list[PolledValue]:
        """Poll one device, update its schedule and stats, emit and return its values."""
        stats, sched, plan = dev.stats, dev.schedule, dev.plan
        stats.polls += 1
        attempts = sched.attempts
        decoded: dict[str, float] = {}
        read_ts: float | None = None
        for i, (block, decoder) in enumerate(zip(plan.blocks, dev.decoders, strict=True)):
            if i and plan.config.pause_s:
                await asyncio.sleep(plan.config.pause_s)
            result = await self._transact(dev, block, attempts)
            if isinstance(result, _Failure):
                self._failed(dev, block, result, attempts)
                return []
            if read_ts is None:
                read_ts = self.clock.time()
            decoded.update(decoder.decode(result))
        assert read_ts is not None or not plan.blocks
        values = self._values(dev, decoded, self.clock.time() if read_ts is None else read_ts)
        stats.polls_ok += 1
        stats.consecutive_failures = 0
        stats.last_success_ts = read_ts
        self._transition(dev, sched.success(self.clock.monotonic()))
        stats.missed = sched.missed
        if values:
            stats.values += len(values)
            await self._emit(values)
        return values

    def _failed(self, dev: _Device, block: ReadBlock, failure: _Failure, attempts: int) -> None:
        stats, sched = dev.stats, dev.schedule
        stats.polls_failed += 1
        stats.consecutive_failures += 1
        where = (
            f"bus {self.name}: device {dev.plan.name} (slave {dev.plan.slave})"
            f" FC{block.function:02d} {block.address:#06x}+{block.count}"
        )
        stats.last_error = f"{where}: {failure.detail}"
        level = logging.INFO if sched.state is DeviceState.DEGRADED else logging.WARNING
        log.log(
            level,
            "%s: %s (%d attempt%s, %d failed poll%s in a row)",
            where,
            failure.detail,
            attempts,
            "" if attempts == 1 else "s",
            stats.consecutive_failures,
            "" if stats.consecutive_failures == 1 else "s",
        )
        self._transition(dev, sched.failure(self.clock.monotonic()))
        stats.missed = sched.missed

    def _transition(self, dev: _Device, change: Transition | None) -> None:
        dev.stats.state = dev.schedule.state
        if change is None:
            return
        sched = dev.schedule
        who = f"bus {self.name}: device {dev.plan.name} (slave {dev.plan.slave})"
        if change.new is DeviceState.DEGRADED:
            log.warning(
                "%s degraded after %d failed polls; probing once every %g s at most",
                who,
                change.failures,
                sched.backoff_cap * sched.period_s,
            )
        elif change.new is DeviceState.OK and change.old is not DeviceState.UNKNOWN:
            log.warning("%s recovered (was %s)", who, change.old.value)
        else:
            log.info("%s: %s -> %s", who, change.old.value, change.new.value)

    def _values(self, dev: _Device, decoded: dict[str, float], read_ts: float) -> list[PolledValue]:
        ts = read_ts
        rt_spec = dev.result_time
        if rt_spec is not None:
            rt = decoded[rt_spec.name]
            if math.isfinite(rt) and rt > 0:
                if rt == dev.last_result_time:
                    dev.stats.unchanged += 1
                    return []
                dev.last_result_time = rt
                if read_ts - RESULT_MAX_AGE_S <= rt <= read_ts + RESULT_MAX_LEAD_S:
                    ts = rt
                elif rt != dev.untrusted_result_time:
                    dev.untrusted_result_time = rt
                    log.warning(
                        "bus %s: device %s (slave %d): result time %.0f is %.0f s off the read"
                        " time; using the read time (check the analyzer's clock)",
                        self.name,
                        dev.plan.name,
                        dev.plan.slave,
                        rt,
                        rt - read_ts,
                    )
        ts_ms = round(ts * 1000)
        name = dev.plan.name
        out = []
        for spec, flag_regs in dev.values:
            value = decoded[spec.name]
            flag = _flag_of(flag_regs, decoded) if flag_regs else Flag.N
            if math.isnan(value):
                flag = worst_flag(flag, Flag.D)
            out.append(PolledValue(name, spec.code or "", ts_ms, value, flag))
        return out

    async def _emit(self, values: list[PolledValue]) -> None:
        if self.sink is None:
            return
        try:
            result = self.sink(values)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "bus %s: the sink failed on %d values of device %s",
                self.name,
                len(values),
                values[0].device,
            )

    # -- public ------------------------------------------------------------------------------

    async def poll_once(self) -> list[PolledValue]:
        """Poll every device once, in configuration order; see the module docstring."""
        self._mark_started()
        precise_timers()
        if self._client is None and not await self._connect():
            self.stats.port_errors += 1
            raise DeviceError(
                f"bus {self.name}: cannot open serial port {self.stats.port}"
                f" ({self.stats.last_port_error})"
            )
        out: list[PolledValue] = []
        for dev in self._devs:
            try:
                out.extend(await self._poll(dev))
            except _PortLost:
                await self._drop_client()
                raise DeviceError(
                    f"bus {self.name}: serial port {self.stats.port} lost while polling"
                    f" device {dev.plan.name}"
                ) from None
        return out

    async def run(self) -> None:
        """Poll on schedule until cancelled; see the module docstring."""
        self._mark_started()
        precise_timers()
        schedules = [d.schedule for d in self._devs]
        try:
            while True:
                if self._client is None:
                    await self._connect_with_backoff()
                idx, wait = next_due(schedules, self.clock.monotonic())
                if idx is None:
                    if math.isinf(wait):
                        await asyncio.Event().wait()  # no devices: nothing to do, ever
                    if await wait_event(self._kick, self.clock.real_seconds(wait)):
                        self._kick.clear()
                    continue
                try:
                    await self._poll(self._devs[idx])
                except _PortLost:
                    await self._drop_client()
        finally:
            await self._drop_client()

    def poll_now(self) -> None:
        """Make every device due now (the ``poll-now`` command) and wake the poller."""
        now = self.clock.monotonic()
        for d in self._devs:
            d.schedule.due_now(now)
        self._kick.set()

    def utilisation(self) -> float:
        """Measured bus utilisation: busy time / elapsed time (real seconds)."""
        return self.stats.utilisation(self._loop_time())

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready stats for the heartbeat."""
        return {
            "bus": self.name,
            "port": self.stats.port,
            "connected": self.stats.connected,
            "connects": self.stats.connects,
            "disconnects": self.stats.disconnects,
            "port_errors": self.stats.port_errors,
            "failed": self.stats.failed,
            "last_port_error": self.stats.last_port_error,
            "requests": self.stats.requests,
            "stale_bytes": self.stats.stale_bytes,
            "foreign_frames": self.stats.foreign_frames,
            "late_replies": self.stats.late_replies,
            "utilisation": round(self.utilisation(), 4),
            "devices": [d.stats.to_dict() for d in self._devs],
        }


def precise_timers() -> None:
    """Make this thread's timed sleeps (the event loop's waits, the short blocking sleep that
    ends a silence) end within :data:`TIMER_SLACK_NS` of their deadline: Linux lets a thread
    sleep up to 50 us longer than asked by default, which the silence before every request
    paid (about half a percent of the bus at 115200 baud). No spinning: it only asks the
    kernel for a more punctual wake-up. Elsewhere, and where the call fails, nothing changes."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


def _quiet_pymodbus() -> None:
    """pymodbus logs an ERROR of its own for what this module reports per device (a timeout,
    a bad frame): one line per device error is enough. An operator's own level is kept."""
    pm = logging.getLogger("pymodbus")
    if pm.level == logging.NOTSET:
        pm.setLevel(logging.CRITICAL)


def _flag_of(flag_regs: Sequence[RegisterSpec], decoded: dict[str, float]) -> Flag:
    """The most severe flag of the status/quality registers that apply to a value."""
    flag = Flag.N
    for reg in flag_regs:
        raw = decoded[reg.name]
        f = reg.default_flag if not math.isfinite(raw) else reg.flag_for(int(raw))
        flag = worst_flag(flag, f)
    return flag


async def run_pollers(pollers: Sequence[BusPoller]) -> None:
    """Run every bus's poller concurrently (one task each) until cancelled."""
    async with asyncio.TaskGroup() as tg:
        for p in pollers:
            tg.create_task(p.run(), name=f"bus {p.name}")

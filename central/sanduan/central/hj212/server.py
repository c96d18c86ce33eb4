"""The collector's HJ 212-2017 server: third-party data loggers connect over TCP and upload.

One asyncio loop (in a thread of the collector process) serves every connection; one writer
thread owns the store connection::

    connection: bytes -> Splitter -> packet -> auth, checks -> job --> writer thread:
                                          | bad: dead letter            Processor.handle_untracked
                                          v                             (one transaction for all
        acker, in order: await the job's commit, then send 9014          the jobs waiting)

* **Authentication**: a packet's MN must be a configured ``[[hj212.logger]]`` and its PW that
  logger's password; otherwise the packet is dead-lettered and not answered.
* **Acknowledgement**: a 9014 goes out only after the readings are committed, in the order the
  packets came; a store failure sends nothing (the logger resends). A split packet (PNUM/PNO) is
  answered once all its parts are stored. Dead-lettered packets are not answered.
* **History**: when hourly data shows missing hours (see :class:`~.core.HourlyGaps`) the logger
  is asked for them (CN 2061 with BeginTime/EndTime); the data it sends back is deduplicated.
* **Time**: a logger's time-calibration request (1013) is answered with a set-time (1012).
* **Bounds**: a connection holds at most one largest packet of unread bytes and
  ``max_pending`` packets awaiting their commit; it is closed after ``idle_timeout_s`` of
  silence or ``max_errors`` bad frames (the first ``max_dead_letters`` are dead-lettered, the
  rest only counted); at most ``max_connections`` connections are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sanduan.central.hj212.core import (
    KIND_OF_CN,
    HourlyGaps,
    local_ms,
    local_time,
    map_upload,
    to_batch,
)
from sanduan.central.ingest import Outcome, Processor, Untracked
from sanduan.central.store import Store, open_store
from sanduan.shared.clock import Clock, clock_from_env
from sanduan.shared.config import CentralConfig, Hj212ServerConfig, split_hostport
from sanduan.shared.errors import ConfigError, Hj212Error, StoreError
from sanduan.shared.hj212.codec import (
    CN_DATA_REPLY,
    CN_HEARTBEAT,
    CN_HOURLY,
    CN_NOTIFY_REPLY,
    CN_REQUEST_REPLY,
    CN_RESULT,
    CN_SET_TIME,
    CN_TIME_CALIBRATION,
    DATA_CNS,
    Packet,
    data_ack,
    encode,
    format_time,
    history_request,
    make_qn,
    parse_data,
)
from sanduan.shared.hj212.stream import Frame, Splitter

log = logging.getLogger("sanduan.central.hj212")

T = TypeVar("T")

READ_CHUNK = 4096
MAX_PENDING = 64
"""Packets of one connection waiting for their commit; the connection is not read meanwhile."""
MAX_DEAD_LETTERS = 20
"""Dead letters recorded per connection; further bad frames are only counted."""
MAX_JOBS_PER_COMMIT = 1000
MAX_PARTS_PENDING = 16
"""Split packets of one connection being put together at once."""


@dataclass(frozen=True, slots=True)
class Logger:
    mn: str
    password: str
    station: str


@dataclass(eq=False)
class _Job:
    item: Untracked
    future: asyncio.Future[Outcome]


@dataclass(eq=False)
class _Conn:
    peer: str
    writer: asyncio.StreamWriter
    splitter: Splitter = field(default_factory=Splitter)
    pending: asyncio.Queue[tuple[Packet, asyncio.Future[Outcome] | None] | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_PENDING)
    )
    parts: dict[str, set[int]] = field(default_factory=dict)
    errors: int = 0
    dead_letters: int = 0
    closing: bool = False


def load_loggers(cfg: Hj212ServerConfig) -> dict[str, Logger]:
    """MN -> logger, with passwords read (ConfigError if a password file is unusable)."""
    return {lg.mn: Logger(lg.mn, lg.resolved_password(), lg.station) for lg in cfg.logger}


class Hj212Server:
    """The HJ 212 server. ``start()`` runs it in a thread of its own; ``stop()`` ends it."""

    def __init__(
        self,
        cfg: CentralConfig,
        *,
        store_url: str | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        if cfg.hj212 is None:
            raise ConfigError("<collector config>", "hj212", "no [hj212] section")
        self.cfg = cfg
        self.hcfg: Hj212ServerConfig = cfg.hj212
        self.host, self.port = split_hostport(self.hcfg.listen)
        self.loggers = load_loggers(self.hcfg)
        self.tz = ZoneInfo(cfg.central.timezone)
        self.clock = clock or clock_from_env()
        self._store_url = store_url or cfg.central.store_url()
        self._own_store = store is None
        self._store = store
        self._proc: Processor | None = None
        self.counts: Counter[str] = Counter()
        self._conns: set[_Conn] = set()
        self._gaps = HourlyGaps(max_back=timedelta(seconds=self.hcfg.history_max_s))
        self._seeding: set[str] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hj212-store")
        self._jobs: asyncio.Queue[_Job | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._qn_lock = threading.Lock()
        self._last_qn = ""

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Open the store, listen, and serve in a background thread (raises if it cannot)."""
        self._thread = threading.Thread(target=self._run, name="hj212-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StoreError(f"HJ 212 server on {self.hcfg.listen} did not start in {timeout} s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, close every connection, finish the commits already queued."""
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)
        if self._thread is not None:
            self._thread.join(timeout)
        log.info("HJ 212 server stopped: %s", self.summary())

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter(self.counts)
        if self._proc is not None:
            total.update({f"store_{k}": v for k, v in self._proc.counts.items()})
        total["connections_open"] = len(self._conns)
        return total

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.stats().items()) if v)

    def _run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as e:  # reported to start() or logged
            if not self._ready.is_set():
                self._error = e
                self._ready.set()
            else:
                log.exception("HJ 212 server failed")

    async def serve(self) -> None:
        """Serve until :meth:`stop` (for use inside a running loop as well)."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._jobs = asyncio.Queue(10 * MAX_JOBS_PER_COMMIT)
        if self._store is None:
            self._store = await self._loop.run_in_executor(
                self._executor, open_store, self._store_url
            )
        self._proc = Processor(self._store, ingest=self.cfg.ingest, clock=self.clock)
        try:
            server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=READ_CHUNK, backlog=1024
            )
        except OSError as e:
            raise ConfigError(
                "<collector config>",
                "hj212.listen",
                f"cannot listen on {self.hcfg.listen}: {e.strerror or e}; is another process"
                " using the port?",
            ) from None
        self.port = server.sockets[0].getsockname()[1]
        writer = asyncio.create_task(self._writer())
        log.info(
            "HJ 212 server listening on %s:%d for %d logger(s)",
            self.host,
            self.port,
            len(self.loggers),
        )
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            for conn in list(self._conns):
                conn.closing = True
                conn.writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await server.wait_closed()
            await self._jobs.put(None)
            await writer
            if self._own_store and self._store is not None:
                await self._loop.run_in_executor(self._executor, self._store.close)
            self._executor.shutdown(wait=True)

    # --- the writer -----------------------------------------------------------------------

    async def _writer(self) -> None:
        assert self._jobs is not None and self._proc is not None and self._loop is not None
        proc, jobs, loop = self._proc, self._jobs, self._loop
        done = False
        while not done:
            job = await jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < MAX_JOBS_PER_COMMIT and not jobs.empty():
                nxt = jobs.get_nowait()
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            items = [j.item for j in batch]
            at = int(self.clock.time() * 1000)
            outcomes = await loop.run_in_executor(self._executor, proc.handle_untracked, items, at)
            self.counts["commits"] += 1
            for j, out in zip(batch, outcomes, strict=True):
                if not j.future.done():
                    j.future.set_result(out)

    async def _store_call(self, fn: Callable[..., T], *args: object) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    # --- connections ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if len(self._conns) >= self.hcfg.max_connections:
            self.counts["connections_refused"] += 1
            log.warning("refusing %s: %d connections open", peer, len(self._conns))
            writer.close()
            return
        conn = _Conn(peer, writer)
        self._conns.add(conn)
        self.counts["connections"] += 1
        acker = asyncio.create_task(self._acker(conn))
        try:
            await self._read_loop(conn, reader)
        except (ConnectionError, OSError) as e:
            log.info("%s: connection lost: %s", peer, e)
        finally:
            conn.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                conn.pending.put_nowait(None)
            if conn.pending.qsize() and not acker.done():
                # Let the acker finish what is queued (bounded by the commits in flight).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(30):
                        await asyncio.shield(acker)
            acker.cancel()
            with contextlib.suppress(BaseException):
                await acker
            self._conns.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_loop(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        idle = self.clock.real_seconds(self.hcfg.idle_timeout_s)
        while not conn.closing:
            try:
                async with asyncio.timeout(idle):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                self.counts["idle_closed"] += 1
                log.info("%s: silent for %g s, closing", conn.peer, self.hcfg.idle_timeout_s)
                return
            if not data:
                return
            self.counts["bytes"] += len(data)
            for frame in conn.splitter.feed(data):
                await self._frame(conn, frame)
                if conn.errors >= self.hcfg.max_errors:
                    self.counts["error_closed"] += 1
                    log.warning("%s: %d bad frames, closing", conn.peer, conn.errors)
                    return

    async def _bad(
        self, conn: _Conn, reason: str, detail: str, raw: bytes, station: str | None = None
    ) -> None:
        """Count a bad frame; dead-letter it (category ``reason``, text ``detail``) while the
        connection's allowance lasts."""
        conn.errors += 1
        self.counts["bad_frames"] += 1
        if conn.dead_letters >= MAX_DEAD_LETTERS:
            return
        conn.dead_letters += 1
        assert self._proc is not None
        proc = self._proc
        await self._store_call(
            lambda: proc.dead_letter(
                f"hj212:{conn.peer}", None, reason, raw, station=station, detail=detail
            )
        )

    async def _frame(self, conn: _Conn, frame: Frame) -> None:
        if frame.packet is None:
            detail = frame.error.reason if frame.error else "unreadable bytes"
            await self._bad(conn, "undecodable", detail, frame.raw)
            return
        p = frame.packet
        lg = self.loggers.get(p.mn)
        if lg is None:
            self.counts["unknown_mn"] += 1
            await self._bad(
                conn, "origin", f"MN {p.mn} is not a configured [[hj212.logger]]", frame.raw
            )
            return
        if p.pw != lg.password:
            self.counts["bad_password"] += 1
            await self._bad(
                conn, "origin", f"wrong password (PW) for MN {p.mn}", frame.raw, lg.station
            )
            return
        self.counts["packets"] += 1
        if p.cn in DATA_CNS:
            await self._data(conn, lg, p, frame.raw)
        elif p.cn == CN_HEARTBEAT:
            self.counts["heartbeats"] += 1
            log.debug("%s: heartbeat from MN %s", conn.peer, p.mn)
        elif p.cn in (CN_REQUEST_REPLY, CN_RESULT, CN_NOTIFY_REPLY, CN_DATA_REPLY):
            self.counts[f"replies_{p.cn}"] += 1
            log.info("%s: MN %s answered %s (QN %s)", conn.peer, p.mn, p.cn, p.qn)
        elif p.cn == CN_TIME_CALIBRATION:
            now = local_time(int(self.clock.time() * 1000), self.tz)
            cp = ((("SystemTime", format_time(now)),),)
            req = Packet(p.qn, p.st, CN_SET_TIME, p.pw, p.mn, flag=5, cp=cp)
            await self._send(conn, req)
            self.counts["time_set"] += 1
        else:
            self.counts["unhandled_cn"] += 1
            detail = f"CN {p.cn} is not handled by the collector"
            await self._bad(conn, "invalid", detail, frame.raw, lg.station)

    async def _data(self, conn: _Conn, lg: Logger, p: Packet, raw: bytes) -> None:
        now = int(self.clock.time() * 1000)
        try:
            up = parse_data(p)
            mapped = map_upload(up, self.tz, now, int(self.hcfg.max_future_s * 1000))
        except Hj212Error as e:
            self.counts["bad_data"] += 1
            detail = f"MN {p.mn} (station {lg.station}): {e.reason}"
            await self._bad(conn, "invalid", detail, raw, lg.station)
            return
        for code in mapped.unknown:
            key = f"unknown_code_{code}"
            if not self.counts[key]:
                log.warning("MN %s: factor %s is not in the parameter registry", p.mn, code)
            self.counts[key] += 1
        kind = KIND_OF_CN[p.cn]
        future: asyncio.Future[Outcome] | None = None
        if kind in self.hcfg.store and mapped.readings:
            assert self._loop is not None and self._jobs is not None
            future = self._loop.create_future()
            item = Untracked(to_batch(lg.station, mapped.readings, now), raw, f"hj212:{p.mn}")
            await self._jobs.put(_Job(item, future))
            self.counts["readings"] += len(mapped.readings)
        else:
            self.counts[f"not_stored_{kind}"] += 1
        await conn.pending.put((p, future))
        if p.cn == CN_HOURLY:
            await self._check_gap(conn, lg, p, up.data_time)

    async def _check_gap(self, conn: _Conn, lg: Logger, p: Packet, t: datetime) -> None:
        station = lg.station
        if not self._gaps.known(station) and station not in self._seeding:
            self._seeding.add(station)
            try:
                last: datetime | None = await self._store_call(
                    self._last_stored, station, local_ms(t, self.tz)
                )
            except StoreError as e:
                log.warning("station %s: cannot read its last reading: %s", station, e)
                last = None
            finally:
                self._seeding.discard(station)
            self._gaps.seed(station, last)
        gap = self._gaps.seen(station, t)
        if gap is None:
            return
        begin, end = gap
        req = history_request(
            cn=CN_HOURLY, qn=self._qn(), mn=p.mn, pw=p.pw, begin=begin, end=end, st=p.st
        )
        log.info(
            "station %s (MN %s): hourly data missing %s..%s, asking the logger",
            station,
            p.mn,
            format_time(begin),
            format_time(end),
        )
        self.counts["history_requests"] += 1
        await self._send(conn, req)

    def _last_stored(self, station: str, before_ms: int) -> datetime | None:
        assert self._store is not None
        rows = self._store.query(
            "SELECT MAX(ts_ms) FROM readings WHERE station = ? AND ts_ms < ?",
            (station, before_ms),
        )
        if not rows or rows[0][0] is None:
            return None
        return local_time(int(rows[0][0]), self.tz)

    def _qn(self) -> str:
        """A new QN (local time, unique within this process)."""
        with self._qn_lock:
            ms = int(self.clock.time() * 1000)
            qn = make_qn(local_time(ms, self.tz))
            if qn <= self._last_qn:
                qn = str(int(self._last_qn) + 1)
            self._last_qn = qn
            return qn

    async def _send(self, conn: _Conn, packet: Packet) -> None:
        if conn.closing:
            return
        conn.writer.write(encode(packet))
        try:
            async with asyncio.timeout(self.clock.real_seconds(30.0)):
                await conn.writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            conn.closing = True

    async def _acker(self, conn: _Conn) -> None:
        while True:
            item = await conn.pending.get()
            if item is None:
                return
            p, future = item
            if future is not None:
                out = await future
                if out.error is not None or out.dead is not None:
                    continue  # not stored: no answer (the logger resends; dead: never)
            if not p.reply_wanted:
                continue
            if p.is_part:
                assert p.pnum is not None and p.pno is not None
                got = conn.parts.setdefault(p.qn, set())
                got.add(p.pno)
                if len(got) < p.pnum:
                    while len(conn.parts) > MAX_PARTS_PENDING:
                        conn.parts.pop(next(iter(conn.parts)))
                    continue
                conn.parts.pop(p.qn, None)
            await self._send(conn, data_ack(p))
            self.counts["acks"] += 1

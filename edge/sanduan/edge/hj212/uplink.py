"""The northbound HJ 212-2017 link: a station agent reports to one or more platforms over TCP.

Each ``[[hj212]]`` platform gets a :class:`PlatformLink`, a set of asyncio tasks in the agent's
loop with a SQLite connection of its own to the station buffer (on a thread of its own):

* **Sending**: for every kind in the platform's ``data``, the packets after the platform's
  cursor (see :mod:`sanduan.edge.hj212.core`) are sent one at a time with Flag 5 and the
  platform's 9014 awaited; no answer in ``ack_timeout_s`` sends the same packet (same QN)
  again, ``retries`` times, then the connection is made again. The cursor advances only on the
  9014, in the same buffer file, so a restart resumes where the platform is.
* **Holding**: real-time and minute cursors keep their readings in the buffer: the buffer's
  space policy deletes acknowledged readings only once every such cursor is past them, and if
  it must delete earlier (the file is full) it counts what each platform lost
  (``uplink_cursor.dropped``). Hourly and daily data come from the aggregates, which the buffer
  never deletes: a platform down for a week gets the week when it comes back.
* **Commands from the platform** (MN and PW checked): time get (1011) and set (1012, kept as an
  offset, never stepping the system clock), history requests (2011/2051/2061/2031 with
  BeginTime/EndTime: 9011, the data with new QNs, 9012), and 9014 answers.
* **Reconnecting**: after a failure the wait doubles from 1 s up to ``reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sanduan.edge.hj212.core import (
    CN_KIND,
    RAW_KINDS,
    AggRowT,
    Identity,
    Outgoing,
    QnClock,
    Row,
    local_ms,
    local_time,
    minute,
    period_ms,
    periods,
    realtime,
)
from sanduan.shared.clock import Clock, clock_from_env
from sanduan.shared.config import Hj212PlatformConfig, split_hostport
from sanduan.shared.errors import Hj212Error, StoreError
from sanduan.shared.hj212.codec import (
    CN_DATA_REPLY,
    CN_GET_TIME,
    CN_REQUEST_REPLY,
    CN_RESULT,
    CN_SET_TIME,
    Packet,
    encode,
    flag_for,
    format_time,
    history_range,
    parse_time,
)
from sanduan.shared.hj212.stream import Splitter

log = logging.getLogger("sanduan.edge.hj212")

T = TypeVar("T")

ROWS_PER_READ = 500
SETTLE_MS = 60_000
"""How long after a period ends before it is sent (late readings of the period arrive)."""
POLL_S = 1.0
"""Real seconds between looks for new data when everything has been sent."""
CLOCK_KIND = "clock_offset"
LATE_PERIODS = 48
"""Periods (hours or days) behind the cursor checked for aggregates that grew after sending."""


class CursorStore:
    """The platform's cursors and the buffer's readings and aggregates, through a connection
    of its own. Every method runs on the caller's thread (the link runs them on one)."""

    def __init__(self, path: Path | str, uplink: str, kinds: list[str]) -> None:
        self.uplink = uplink
        try:
            self.db = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            # A cursor lost to a power cut only sends a few packets again.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS uplink_cursor (uplink TEXT NOT NULL, kind TEXT NOT"
                " NULL, pos INTEGER NOT NULL, dropped INTEGER NOT NULL DEFAULT 0, PRIMARY KEY"
                " (uplink, kind)) WITHOUT ROWID"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS uplink_sent (uplink TEXT NOT NULL, kind TEXT NOT"
                " NULL, start INTEGER NOT NULL, code TEXT NOT NULL, n INTEGER NOT NULL,"
                " PRIMARY KEY (uplink, kind, start, code)) WITHOUT ROWID"
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO uplink_cursor (uplink, kind, pos) VALUES (?, ?, 0)",
                [(uplink, k) for k in kinds],
            )
        except sqlite3.Error as e:
            raise StoreError(f"HJ 212 uplink {uplink}: cannot open the buffer {path}: {e}") from e

    def pos(self, kind: str) -> int:
        row = self.db.execute(
            "SELECT pos FROM uplink_cursor WHERE uplink = ? AND kind = ?", (self.uplink, kind)
        ).fetchone()
        return int(row[0]) if row else 0

    def cursors(self) -> dict[str, tuple[int, int]]:
        """kind -> (pos, dropped)."""
        return {
            str(k): (int(p), int(d))
            for k, p, d in self.db.execute(
                "SELECT kind, pos, dropped FROM uplink_cursor WHERE uplink = ?", (self.uplink,)
            )
        }

    def advance(self, kind: str, pos: int) -> None:
        self.db.execute(
            "UPDATE uplink_cursor SET pos = max(pos, ?) WHERE uplink = ? AND kind = ?",
            (pos, self.uplink, kind),
        )

    def set_value(self, kind: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO uplink_cursor (uplink, kind, pos) VALUES (?, ?, ?)"
            " ON CONFLICT (uplink, kind) DO UPDATE SET pos = excluded.pos",
            (self.uplink, kind, value),
        )

    def raw_after(self, seq: int, limit: int = ROWS_PER_READ) -> list[Row]:
        return [
            (int(q), int(t), str(c), v, str(f))
            for q, t, c, v, f in self.db.execute(
                "SELECT seq, ts, code, value, flag FROM reading WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
        ]

    def raw_between(self, t0: int, t1: int, limit: int = 100_000) -> list[Row]:
        return [
            (int(q), int(t), str(c), v, str(f))
            for q, t, c, v, f in self.db.execute(
                "SELECT seq, ts, code, value, flag FROM reading WHERE ts >= ? AND ts <= ?"
                " ORDER BY seq LIMIT ?",
                (t0, t1, limit),
            )
        ]

    def aggregates(self, kind: str, after: int, until: int, limit: int = 48) -> list[AggRowT]:
        """Aggregate rows of whole periods starting in ``(after, until]`` (at most ``limit``
        periods)."""
        table = "agg_hour" if kind == "hourly" else "agg_day"
        starts = [
            int(r[0])
            for r in self.db.execute(
                f"SELECT DISTINCT start FROM {table} WHERE start > ? AND start <= ?"
                " ORDER BY start LIMIT ?",
                (after, until, limit),
            )
        ]
        if not starts:
            return []
        return [
            (int(s), str(c), int(n), int(nv), mn, mx, float(sm))
            for s, c, n, nv, mn, mx, sm in self.db.execute(
                f"SELECT start, code, n, n_valid, vmin, vmax, vsum FROM {table}"
                " WHERE start >= ? AND start <= ? ORDER BY start, code",
                (starts[0], starts[-1]),
            )
        ]

    def grown(self, kind: str, since: int, until: int, limit: int = 500) -> list[AggRowT]:
        """Aggregate rows of periods in ``(since, until]`` that were not sent or were sent with
        fewer valid readings than they now hold (a late result): only those factors."""
        table = "agg_hour" if kind == "hourly" else "agg_day"
        return [
            (int(st), str(c), int(n), int(nv), mn, mx, float(sm))
            for st, c, n, nv, mn, mx, sm in self.db.execute(
                f"SELECT a.start, a.code, a.n, a.n_valid, a.vmin, a.vmax, a.vsum FROM {table} a"
                " LEFT JOIN uplink_sent s ON s.uplink = ? AND s.kind = ? AND s.start = a.start"
                " AND s.code = a.code WHERE a.start > ? AND a.start <= ?"
                " AND (s.n IS NULL OR s.n < a.n_valid) ORDER BY a.start, a.code LIMIT ?",
                (self.uplink, kind, since, until, limit),
            )
        ]

    def mark_sent(self, kind: str, start: int, counts: tuple[tuple[str, int], ...]) -> None:
        """Record what a period's packet carried; forget marks older than the late window."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO uplink_sent (uplink, kind, start, code, n) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (uplink, kind, start, code) DO UPDATE SET n = excluded.n",
                [(self.uplink, kind, start, c, n) for c, n in counts],
            )
            self.db.execute(
                "DELETE FROM uplink_sent WHERE uplink = ? AND kind = ? AND start < ?",
                (self.uplink, kind, start - late_window_ms(kind)),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()


def late_window_ms(kind: str) -> int:
    """How far back a period is sent again when its aggregate grows."""
    return LATE_PERIODS * period_ms(kind)


class _Reconnect(Exception):
    """The session must end (no answer, connection lost)."""


class PlatformLink:
    """One platform. ``await link.run()`` until cancelled."""

    def __init__(
        self,
        cfg: Hj212PlatformConfig,
        buffer_path: Path | str,
        *,
        timezone: str = "Asia/Shanghai",
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.host, self.port = split_hostport(cfg.address)
        self.clock = clock or clock_from_env()
        self.tz = ZoneInfo(timezone)
        self.ident = Identity(cfg.mn, cfg.resolved_password(), cfg.st)
        self.kinds = list(dict.fromkeys(cfg.data))
        self.buffer_path = Path(buffer_path)
        self.qn = QnClock(lambda: int(self.clock.time() * 1000), self.tz)
        self.counts: Counter[str] = Counter()
        self.connected = False
        self._ex = ThreadPoolExecutor(1, thread_name_prefix=f"hj212-{self.name}"[:30])
        self._store: CursorStore | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[str, asyncio.Future[Packet]] = {}
        self._send_lock = asyncio.Lock()
        self._unacked: Outgoing | None = None
        """The packet in flight when a session ended: sent first, with its QN, next time (a
        platform that had it but whose 9014 was lost sees the same QN again)."""

    # --- plumbing ---------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ex, fn, *args)

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    async def _write(self, packet: Packet) -> None:
        w = self._writer
        if w is None:
            raise _Reconnect("not connected")
        w.write(encode(packet))
        try:
            async with asyncio.timeout(30):
                await w.drain()
        except (TimeoutError, ConnectionError, OSError) as e:
            raise _Reconnect(f"cannot write: {e}") from e

    async def _send_acked(self, out: Outgoing) -> None:
        """Send (every part) and await the 9014 with the packet's QN, resending on timeout."""
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        qn = out.qn
        self._waiters[qn] = fut
        try:
            for attempt in range(self.cfg.retries + 1):
                async with self._send_lock:
                    for part in out.parts:
                        await self._write(part)
                self.counts["sent" if attempt == 0 else "resent"] += 1
                try:
                    async with asyncio.timeout(self.clock.real_seconds(self.cfg.ack_timeout_s)):
                        await asyncio.shield(fut)
                except TimeoutError:
                    log.info("platform %s: no 9014 for QN %s, sending again", self.name, qn)
                    continue
                self.counts["acked"] += 1
                return
            raise _Reconnect(f"no 9014 for QN {qn} after {self.cfg.retries + 1} sends")
        finally:
            self._waiters.pop(qn, None)

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, send, answer; reconnect with backoff; until cancelled."""
        self._store = await self._db(
            CursorStore, self.buffer_path, self.name, [*self.kinds, CLOCK_KIND]
        )
        offset = await self._db(self._store.pos, CLOCK_KIND)
        self.qn.offset_ms = offset
        delay = 1.0
        try:
            while True:
                try:
                    async with asyncio.timeout(30):
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                except (OSError, TimeoutError) as e:
                    self.counts["connect_failures"] += 1
                    log.info("platform %s (%s): cannot connect: %s", self.name, self.cfg.address, e)
                else:
                    acked = self.counts["acked"]
                    await self._session(reader, writer)
                    if self.counts["acked"] > acked:
                        delay = 1.0
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
        finally:
            if self._store is not None:
                await self._db(self._store.close)
            self._ex.shutdown(wait=False)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.connected = True
        self.counts["connections"] += 1
        log.info("platform %s: connected to %s", self.name, self.cfg.address)
        commands: asyncio.Queue[Packet] = asyncio.Queue(100)
        tasks = [
            asyncio.create_task(self._reader(reader, commands)),
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._commands(commands)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception() if not t.cancelled() else None
                if exc is not None and not isinstance(exc, _Reconnect):
                    log.error("platform %s: %r", self.name, exc)
                elif exc is not None:
                    log.info("platform %s: %s; connecting again", self.name, exc)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.connected = False
            self._writer = None
            for fut in self._waiters.values():
                if not fut.done():
                    fut.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reader(self, reader: asyncio.StreamReader, commands: asyncio.Queue[Packet]) -> None:
        splitter = Splitter()
        while True:
            data = await reader.read(4096)
            if not data:
                raise _Reconnect("the platform closed the connection")
            for frame in splitter.feed(data):
                p = frame.packet
                if p is None:
                    self.counts["bad_frames"] += 1
                    log.warning(
                        "platform %s: bad bytes skipped: %s",
                        self.name,
                        frame.error.reason if frame.error else "?",
                    )
                    continue
                if p.mn != self.ident.mn or p.pw != self.ident.pw:
                    self.counts["bad_credentials"] += 1
                    log.warning(
                        "platform %s: packet for MN %s with a wrong MN or PW", self.name, p.mn
                    )
                    continue
                if p.cn == CN_DATA_REPLY:
                    fut = self._waiters.get(p.qn)
                    if fut is not None and not fut.done():
                        fut.set_result(p)
                    continue
                if commands.full():
                    self.counts["commands_dropped"] += 1
                    continue
                commands.put_nowait(p)

    # --- sending data -----------------------------------------------------------------------

    async def _sender(self) -> None:
        assert self._store is not None
        if self._unacked is not None:
            await self._deliver(self._unacked)
        while True:
            sent = 0
            for kind in self.kinds:
                for out in await self._next(kind):
                    await self._deliver(out)
                    sent += 1
            if not sent:
                await asyncio.sleep(POLL_S)

    async def _deliver(self, out: Outgoing) -> None:
        """Send ``out`` until the platform acknowledges it, then move the cursor."""
        assert self._store is not None
        self._unacked = out
        await self._send_acked(out)
        if out.counts:
            await self._db(self._store.mark_sent, out.kind, out.pos, out.counts)
        await self._db(self._store.advance, out.kind, out.pos)
        self._unacked = None
        self.counts[f"sent_{out.kind}"] += 1

    async def _next(self, kind: str) -> list[Outgoing]:
        assert self._store is not None
        store = self._store
        pos = await self._db(store.pos, kind)
        now = self._now_ms()
        if kind in RAW_KINDS:
            rows = await self._db(store.raw_after, pos)
            if kind == "realtime":
                return realtime(rows, self.ident, self.tz, self.qn)
            return minute(rows, self.ident, self.tz, self.qn, now_ms=now)
        until = now - period_ms(kind) - SETTLE_MS
        late = await self._db(store.grown, kind, max(0, pos - late_window_ms(kind)), pos)
        if late:
            self.counts[f"resent_grown_{kind}"] += len({r[0] for r in late})
            return periods(kind, late, self.ident, self.tz, self.qn)
        aggs = await self._db(store.aggregates, kind, pos, until)
        return periods(kind, aggs, self.ident, self.tz, self.qn)

    # --- commands from the platform ----------------------------------------------------------

    async def _reply(self, req: Packet, cn: str, key: str, value: str) -> None:
        p = Packet(
            req.qn,
            "91",
            cn,
            self.ident.pw,
            self.ident.mn,
            flag_for(reply=False),
            (((key, value),),),
        )
        async with self._send_lock:
            await self._write(p)

    async def _commands(self, commands: asyncio.Queue[Packet]) -> None:
        while True:
            p = await commands.get()
            self.counts[f"command_{p.cn}"] += 1
            try:
                await self._command(p)
            except Hj212Error as e:
                log.warning("platform %s: bad %s request: %s", self.name, p.cn, e.reason)
                if p.reply_wanted:
                    await self._reply(p, CN_REQUEST_REPLY, "QnRtn", "2")

    async def _command(self, p: Packet) -> None:
        assert self._store is not None
        if p.cn == CN_GET_TIME:
            if p.reply_wanted:
                await self._reply(p, CN_REQUEST_REPLY, "QnRtn", "1")
            now = local_time(self.qn.now_ms(), self.tz)
            answer = Packet(
                p.qn,
                self.ident.st,
                CN_GET_TIME,
                self.ident.pw,
                self.ident.mn,
                flag_for(reply=False),
                ((("SystemTime", format_time(now)),),),
            )
            async with self._send_lock:
                await self._write(answer)
            await self._reply(p, CN_RESULT, "ExeRtn", "1")
        elif p.cn == CN_SET_TIME:
            text = p.get("SystemTime")
            if text is None:
                raise Hj212Error("set-time request without SystemTime")
            target = local_ms(parse_time(text, "SystemTime"), self.tz)
            if p.reply_wanted:
                await self._reply(p, CN_REQUEST_REPLY, "QnRtn", "1")
            offset = target - self._now_ms()
            self.qn.offset_ms = offset
            await self._db(self._store.set_value, CLOCK_KIND, offset)
            log.info(
                "platform %s: time set to %s: clock offset %+.3f s recorded (the system clock"
                " is left alone)",
                self.name,
                text,
                offset / 1000,
            )
            await self._reply(p, CN_RESULT, "ExeRtn", "1")
        elif p.cn in CN_KIND:
            begin, end = history_range(p)
            if p.reply_wanted:
                await self._reply(p, CN_REQUEST_REPLY, "QnRtn", "1")
            n = await self._history(CN_KIND[p.cn], local_ms(begin, self.tz), local_ms(end, self.tz))
            log.info(
                "platform %s: %d %s packet(s) sent for %s..%s",
                self.name,
                n,
                CN_KIND[p.cn],
                format_time(begin),
                format_time(end),
            )
            await self._reply(p, CN_RESULT, "ExeRtn", "1")
        else:
            self.counts["unhandled"] += 1
            log.info("platform %s: CN %s is not handled", self.name, p.cn)
            if p.reply_wanted:
                await self._reply(p, CN_REQUEST_REPLY, "QnRtn", "2")

    async def _history(self, kind: str, t0: int, t1: int) -> int:
        assert self._store is not None
        store = self._store
        if kind in RAW_KINDS:
            rows = await self._db(store.raw_between, t0, t1)
            if kind == "realtime":
                outs = realtime(rows, self.ident, self.tz, self.qn)
            else:
                outs = minute(rows, self.ident, self.tz, self.qn, now_ms=1 << 62, settle_ms=0)
        else:
            outs = []
            after = t0 - 1
            while True:
                aggs = await self._db(store.aggregates, kind, after, t1)
                if not aggs:
                    break
                outs += periods(kind, aggs, self.ident, self.tz, self.qn)
                after = aggs[-1][0]
        for out in outs:
            await self._send_acked(out)
            self.counts[f"history_{kind}"] += 1
        return len(outs)

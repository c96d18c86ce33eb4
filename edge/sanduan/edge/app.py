"""The station agent: reading source(s) -> commit buffer -> outbox (grades, aggregates, alarms)
-> forwarder -> MQTT.

The injection seam is :class:`ReadingSource`: anything that calls a sink with lists of
:class:`~sanduan.edge.core.model.PolledValue`. :class:`BusSource` runs the real
:class:`~sanduan.edge.io.bus.BusPoller` of every configured bus; :class:`FakeSource` produces
deterministic values on a schedule (tests, the HIL rig, ``sanduan edge run --fake-source``).
The clock is injected too (``SANDUAN_SIM_CLOCK`` for accelerated runs).

Polling never waits for the disk or the link: the sink only appends to an in-memory list;
a committer task writes it to the buffer every ``commit_interval_s`` or ``commit_max_rows``
on the buffer's own thread; the forwarder and the MQTT thread run on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sanduan.edge.core.metrics import heartbeat_extra
from sanduan.edge.core.model import PolledValue
from sanduan.edge.forwarder import DbThread, Forwarder, RateLimitedLog
from sanduan.edge.io.metrics_http import AgentProbe, serve_metrics
from sanduan.edge.io.outbox import CommitResult, CorruptBufferError, Outbox, salvage, store_error
from sanduan.edge.io.uplink import Uplink
from sanduan.shared import __version__
from sanduan.shared.clock import Clock, age_text, clock_from_env, wait_event
from sanduan.shared.config import StationConfig
from sanduan.shared.errors import SanduanError, StoreError
from sanduan.shared.model import Flag

log = logging.getLogger("sanduan.edge.agent")

Sink = Callable[[list[PolledValue]], None]


def agent_version() -> str:
    return f"sanduan-edge {__version__}"


class ReadingSource(Protocol):
    """Where readings come from. ``run`` calls ``sink`` until cancelled."""

    async def run(self, sink: Sink) -> None: ...

    def device_stats(self) -> tuple[dict[str, int], dict[str, float]]:
        """(error count per device, utilisation per bus) for the heartbeat."""
        ...


class BusSource:
    """The configured RS-485 buses, one :class:`BusPoller` each."""

    def __init__(self, config_path: Path | str, clock: Clock) -> None:
        from sanduan.edge.devices import load_station

        self.clock = clock
        _, self.plans = load_station(config_path)
        self.pollers: list[Any] = []

    def poll_now(self) -> None:
        """Poll every device at once (the ``poll-now`` command)."""
        for p in self.pollers:
            p.poll_now()

    async def run(self, sink: Sink) -> None:
        from sanduan.edge.io.bus import BusPoller, run_pollers

        self.pollers = [BusPoller(plan, self.clock, sink) for plan in self.plans]
        await run_pollers(self.pollers)

    def device_stats(self) -> tuple[dict[str, int], dict[str, float]]:
        errors: dict[str, int] = {}
        util: dict[str, float] = {}
        for p in self.pollers:
            for name, st in p.devices.items():
                errors[name] = int(sum(st.errors.values()))
            util[p.name] = float(p.utilisation())
        return errors, util


FAKE_CODES = ("w01001", "w01009", "w21003", "w21011", "w01010", "w01014")


def fake_value(code: str, ts_ms: int) -> float:
    """A deterministic value for ``code`` at ``ts_ms``: a slow wave around a typical level."""
    base = {"w01001": 7.5, "w01009": 7.0, "w21003": 0.8, "w21011": 0.15, "w01010": 18.0}
    level = base.get(code, 100.0)
    phase = (ts_ms // 1000) % 3600 / 3600.0 * 2 * math.pi
    return round(level * (1.0 + 0.4 * math.sin(phase + len(code))), 4)


@dataclass
class FakeSource:
    """Emits one value per code every ``period_s`` seconds of the injected clock. Each poll gets
    a later millisecond than the one before, also when a late loop runs polls back to back (the
    buffer would otherwise take a poll in the same millisecond for a repeat)."""

    clock: Clock
    period_s: float = 1.0
    codes: Sequence[str] = FAKE_CODES[:4]
    device: str = "fake"
    limit: int | None = None
    """Stop producing after this many polls (the source then idles)."""
    polls: int = 0
    last_ts_ms: int = 0
    kick: asyncio.Event = field(default_factory=asyncio.Event)

    def poll_now(self) -> None:
        """Poll at once (the ``poll-now`` command); the schedule goes on from there."""
        self.kick.set()

    async def run(self, sink: Sink) -> None:
        nxt = self.clock.monotonic()
        while True:
            if self.limit is not None and self.polls >= self.limit:
                await asyncio.Event().wait()
            ts = max(int(self.clock.time() * 1000), self.last_ts_ms + 1)
            self.last_ts_ms = ts
            if self.codes:
                sink(
                    [PolledValue(self.device, c, ts, fake_value(c, ts), Flag.N) for c in self.codes]
                )
            self.polls += 1
            nxt += self.period_s
            wait = max(0.0, nxt - self.clock.monotonic())
            if await wait_event(self.kick, self.clock.real_seconds(wait)):
                self.kick.clear()
                nxt = self.clock.monotonic()

    def device_stats(self) -> tuple[dict[str, int], dict[str, float]]:
        return {self.device: 0}, {}

    @classmethod
    def parse(cls, spec: str, clock: Clock) -> FakeSource:
        """``PERIOD_S[:N_CODES]``, e.g. ``1`` or ``0.1:6`` (``:0`` produces nothing)."""
        period, _, n = spec.partition(":")
        count = int(n) if n else 4
        return cls(clock, float(period), FAKE_CODES[: max(0, min(count, len(FAKE_CODES)))])


class AgentFailed(SanduanError):
    """The agent stopped because something failed (the process must exit non-zero)."""


class _StopRequested(Exception):
    """Raised inside the agent's task group when SIGTERM/SIGINT asks it to stop."""


NOT_STORED_LOG_S = 60.0
"""While the buffer cannot be written: one ERROR line per this many seconds."""


class Agent:
    """One station's agent. ``await agent.run(stop)`` until ``stop`` is set.

    The source, the committer and the forwarder run in one :class:`asyncio.TaskGroup`: when one
    of them fails the others are stopped, what is in memory is committed if it can be, and
    :meth:`run` raises :class:`AgentFailed` (or the buffer's
    :class:`~sanduan.edge.io.outbox.CorruptBufferError`) so the process exits non-zero.

    A buffer that cannot be written (a full or failing disk) is not a failure: the agent keeps
    forwarding what the buffer holds, stops taking new readings (each one not stored is counted
    in :attr:`not_stored` and the heartbeat; one ERROR a minute says so) and tries again every
    ``commit_interval_s``; it resumes by itself when the disk takes writes again.

    :meth:`request_reload` (``push-config``, SIGHUP; see :mod:`sanduan.edge.commands`) ends the
    task group as a stop does and runs it again on the new configuration, in the same process
    and with the same buffer file.
    """

    def __init__(
        self,
        config: StationConfig,
        *,
        source: ReadingSource,
        clock: Clock | None = None,
        db_path: Path | str | None = None,
        version: str | None = None,
        config_path: Path | str | None = None,
        source_factory: Callable[[StationConfig], ReadingSource] | None = None,
        overrides: Callable[[StationConfig], StationConfig] | None = None,
    ) -> None:
        from sanduan.edge.commands import CommandService

        self.config = config
        self.source = source
        self.source_factory = source_factory
        """Makes the reading source of a reloaded configuration (None: keep ``source``)."""
        self.overrides = overrides or (lambda c: c)
        """What the command line changes in a station file (``--mqtt-password-file``): applied
        to every file reloaded (SIGHUP, push-config), as it was at start-up."""
        self.clock = clock or clock_from_env()
        self.db_path = Path(db_path) if db_path is not None else config.buffer.path
        self.version = version or agent_version()
        self._pending: list[PolledValue] = []
        self._flush = asyncio.Event()
        self.committed = 0
        self.not_stored = 0
        """Readings not stored because the buffer could not be written."""
        self.write_error: str | None = None
        """Why the buffer cannot be written now (None: it can)."""
        self._write_error_since = 0.0
        self._not_stored_at_error = 0
        self.outbox: Outbox | None = None
        self.forwarder: Forwarder | None = None
        self.uplink: Uplink | None = None
        self.db: DbThread | None = None
        self.say = RateLimitedLog(log, NOT_STORED_LOG_S, time.monotonic)
        self.hj212_links: list[Any] = []
        self.probe: AgentProbe | None = None
        """The figures of ``/metrics``, ``/healthz`` and the heartbeat's extra entries."""
        self._reload = asyncio.Event()
        self._next_config: StationConfig | None = None
        self.reloads = 0
        self.commands = CommandService(self, None if config_path is None else Path(config_path))

    # -- reload (push-config, SIGHUP) ------------------------------------------------------

    @property
    def reload_pending(self) -> bool:
        return self._next_config is not None

    def request_reload(self, config: StationConfig) -> None:
        """Restart the agent's internals (buffer, forwarder, link, source) on ``config``."""
        self._next_config = config
        self._reload.set()

    def reload_from_file(self) -> None:
        """SIGHUP: reload the station file (an invalid one is refused with an ERROR)."""
        self.commands.reload_file()

    # -- the sink (called by the sources, never blocks) -----------------------------------

    def sink(self, values: list[PolledValue]) -> None:
        self._pending.extend(values)
        rows = self.config.buffer.commit_max_rows
        if len(self._pending) >= rows:
            self._flush.set()
        if self.write_error is not None and len(self._pending) > rows:
            # The buffer cannot be written: keep only the latest values for the next try.
            extra = len(self._pending) - rows
            del self._pending[:extra]
            self.not_stored += extra

    def stats(self) -> dict[str, Any]:
        """The agent's own counters for the heartbeat."""
        out: dict[str, Any] = {"not_stored": self.not_stored, **self.commands.extra()}
        if self.write_error is not None:
            out["buffer_write_error"] = self.write_error[:200]
        if self.probe is not None:
            out.update(heartbeat_extra(self.probe.snapshot_now()))
        return out

    async def _commit_pending(self) -> None:
        """Commit what is in memory. A buffer that cannot be written drops it (counted)."""
        assert self.db is not None and self.forwarder is not None
        rows = self.config.buffer.commit_max_rows
        while self._pending:
            chunk = self._pending[:rows]
            try:
                await self._commit_chunk(chunk)
            except CorruptBufferError:
                raise
            except StoreError as e:
                self._cannot_write(str(e))
                return
            if self.write_error is not None:
                log.warning(
                    "the buffer takes writes again after %.0f s; %d readings were not stored",
                    time.monotonic() - self._write_error_since,
                    self.not_stored - self._not_stored_at_error,
                )
                self.write_error = None

    async def _commit_chunk(self, chunk: list[PolledValue]) -> CommitResult:
        """Commit the first ``len(chunk)`` pending values and take them out of memory.

        The commit runs on the buffer's thread, which a cancellation (a stop, a reload) cannot
        interrupt: the commit is shielded and, when cancelled, awaited to its end and accounted
        for before the cancellation goes on, so what it stored is never stored a second time."""
        assert self.db is not None and self.forwarder is not None
        task = asyncio.ensure_future(self.db.run(self.db.outbox.commit, chunk))

        def done(result: CommitResult) -> CommitResult:
            assert self.forwarder is not None
            del self._pending[: len(chunk)]
            self.committed += result.count
            self.forwarder.committed(result)
            return result

        try:
            return done(await asyncio.shield(task))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                done(await task)
            raise

    def _cannot_write(self, why: str) -> None:
        if self.write_error is None:
            self._write_error_since = time.monotonic()
            self._not_stored_at_error = self.not_stored
        self.write_error = why
        self.not_stored += len(self._pending)
        self._pending.clear()
        self.say(
            logging.ERROR,
            "not-stored",
            "%s: NOT STORING new readings (%d not stored so far); forwarding what the buffer"
            " holds, trying again every %g s",
            why,
            self.not_stored,
            self.config.buffer.commit_interval_s,
        )

    async def _committer(self) -> None:
        interval = self.config.buffer.commit_interval_s
        while True:
            await wait_event(self._flush, max(0.001, self.clock.real_seconds(interval)))
            self._flush.clear()
            await self._commit_pending()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while True:
                await self._run_once(stop)
                new = self._next_config
                if stop.is_set() or new is None:
                    break
                self._reload.clear()
                self._next_config = None
                self.config = new
                if self.source_factory is not None:
                    self.source = self.source_factory(new)
                self.reloads += 1
                log.info("reloaded the configuration of station %s", new.station.id)
        finally:
            self.commands.close()
        if self.write_error is not None or self._pending:
            raise AgentFailed(
                f"stopped with the buffer not writable ({self.write_error});"
                f" {self.not_stored} readings were not stored"
            )

    async def _run_once(self, stop: asyncio.Event) -> None:
        cfg = self.config
        outbox = Outbox.from_config(cfg, path=self.db_path)
        self.outbox = outbox
        log.info("%s", outbox.grader.ready_message())
        self.db = db = DbThread(outbox)
        try:
            st = await db.run(outbox.stats)
        except StoreError:
            await asyncio.get_running_loop().run_in_executor(None, db.close)
            raise
        log.info(
            "buffer %s: stream %d, next seq %d, %d unacknowledged, last acknowledged %s,"
            " dropped %d, rejected %d",
            self.db_path,
            outbox.stream,
            st.next_seq,
            st.depth,
            st.last_acked_seq,
            st.dropped,
            sum(st.rejected.values()),
        )
        fwd = Forwarder(
            db,
            cfg.uplink,
            cfg.station.id,
            clock=self.clock,
            agent_version=self.version,
            device_stats=self.source.device_stats,
            agent_stats=self.stats,
            on_command=self.commands.on_command,
        )
        self.forwarder = fwd
        self.uplink = uplink = Uplink(
            cfg.uplink,
            cfg.station.id,
            fwd,
            clock=self.clock,
            agent_version=self.version,
            stream=outbox.stream,
        )
        fwd.uplink = uplink
        self.probe = AgentProbe(self, cfg.metrics)
        uplink.start()

        async def stopper() -> None:
            waits = [asyncio.create_task(e.wait()) for e in (stop, self._reload)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in waits:
                    t.cancel()
            raise _StopRequested

        failures: list[BaseException] = []
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.source.run(self.sink), name="source")
                tg.create_task(self._committer(), name="committer")
                tg.create_task(fwd.run(), name="forwarder")
                tg.create_task(stopper(), name="stop")
                tg.create_task(db.run(outbox.quick_check), name="buffer check")
                tg.create_task(self.commands.run(), name="commands")
                for link in self._hj212_links():
                    tg.create_task(link.run(), name=f"hj212-{link.name}")
                if cfg.metrics.listen is not None:
                    tg.create_task(serve_metrics(self.probe, cfg.metrics.listen), name="metrics")
        except BaseExceptionGroup as eg:
            failures = _failures(eg)
            for e in failures:
                if isinstance(e, SanduanError):
                    log.error("%s", e)  # noqa: TRY400 - the message says it all
                else:
                    log.error("agent task failed", exc_info=e)  # noqa: TRY400
        finally:
            await self._shutdown(fwd, uplink, db)
        if failures:
            first = failures[0]
            if isinstance(first, CorruptBufferError):
                raise first
            raise AgentFailed(f"the agent stopped on a failure: {first}") from first

    def _hj212_links(self) -> list[Any]:
        """One link per ``[[hj212]]`` platform; cursors of platforms no longer configured are
        forgotten so that they hold no readings."""
        from sanduan.edge.hj212.cursors import prune_cursors

        cfg = self.config
        gone = prune_cursors(self.db_path, [p.name for p in cfg.hj212])
        if gone:
            log.warning("forgot %d HJ 212 cursor(s) of platforms no longer configured", gone)
        self.hj212_links = []
        if cfg.hj212:  # the link's modules only where a platform is configured
            from sanduan.edge.hj212.uplink import PlatformLink

            self.hj212_links = [
                PlatformLink(p, self.db_path, timezone=cfg.station.timezone, clock=self.clock)
                for p in cfg.hj212
            ]
        return self.hj212_links

    async def _shutdown(self, fwd: Forwarder, uplink: Uplink, db: DbThread) -> None:
        log.info("stopping: flushing %d values to the buffer", len(self._pending))
        try:
            await self._commit_pending()
        except StoreError as e:
            self.write_error = str(e)
        if self.write_error is not None:
            log.error(
                "final flush failed; %d readings not stored this run: %s",
                self.not_stored,
                self.write_error,
            )
        loop = asyncio.get_running_loop()
        try:
            offline = await fwd.status(online=False)
            from sanduan.shared import wire

            await loop.run_in_executor(
                None, lambda: uplink.stop(offline_status=wire.encode(offline))
            )
        except Exception as e:
            log.warning("closing the link without an offline status: %s", e)
            await loop.run_in_executor(None, uplink.stop)
        try:  # acks that arrived until the link closed are recorded
            await fwd.drain_inbox()
        except StoreError as e:
            log.warning("answers from the centre not recorded at shutdown: %s", e)
        await loop.run_in_executor(None, db.close)
        log.info("stopped: %d readings committed this run", self.committed)


def _failures(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The real failures of a task group (not the stop request, not cancellations)."""
    out: list[BaseException] = []
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out.extend(_failures(e))
        elif not isinstance(e, (_StopRequested, asyncio.CancelledError)):
            out.append(e)
    return out


# --------------------------------------------------------------------------------------------
# logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC ISO), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One log line per failed poll, sanduan.edge.bus's: pymodbus would add an ERROR of its own
    # for every timeout and bad frame.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def run_agent(
    config: StationConfig,
    *,
    source: ReadingSource,
    clock: Clock | None = None,
    db_path: Path | str | None = None,
    config_path: Path | str | None = None,
    source_factory: Callable[[StationConfig], ReadingSource] | None = None,
    overrides: Callable[[StationConfig], StationConfig] | None = None,
) -> None:
    """Run the agent until SIGTERM or SIGINT, then shut down cleanly; SIGHUP reloads the
    station file ``config_path``."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent = Agent(
            config,
            source=source,
            clock=clock,
            db_path=db_path,
            config_path=config_path,
            source_factory=source_factory,
            overrides=overrides,
        )
        loop.add_signal_handler(signal.SIGHUP, agent.reload_from_file)
        await agent.run(stop)

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# ``sanduan edge outbox``


def outbox_report(
    config_path: Path | str | None, db_path: Path | str | None, clock: Clock | None = None
) -> dict[str, Any]:
    """The buffer's state as a JSON-ready dict (see ``sanduan edge outbox``)."""
    from sanduan.shared.config import load_station_config

    if config_path is not None:
        cfg = load_station_config(config_path)
        path = Path(db_path) if db_path is not None else cfg.buffer.path
        outbox = Outbox.open_existing(path, max_bytes=cfg.buffer.max_bytes)
    else:
        assert db_path is not None
        outbox = Outbox.open_existing(db_path)
    now_ms = int((clock or clock_from_env()).time() * 1000)
    with outbox:
        try:
            st = outbox.stats()
        except sqlite3.Error as e:
            raise store_error(outbox.path, "reading its state", e) from None
    return {
        "station": outbox.station,
        "path": str(outbox.path),
        "depth": st.depth,
        "oldest_unacked_seq": st.oldest_unacked_seq,
        "oldest_unacked_age_s": st.oldest_unacked_age_s(now_ms),
        "last_acked_seq": st.last_acked_seq,
        "next_seq": st.next_seq,
        "rows": st.rows,
        "acked_rows": st.acked_rows,
        "dropped": st.dropped,
        "dropped_through_seq": st.dropped_through,
        "resend_missing": st.resend_missing,
        "pending_events": st.pending_events,
        "stream": st.stream,
        "rejected": st.rejected,
        "used_bytes": st.used_bytes,
        "size_on_disk_bytes": st.file_bytes,
        "max_bytes": st.max_bytes,
        "bytes_per_reading": st.bytes_per_reading,
        "readings_per_s": st.readings_per_s,
        "coverage_days": st.coverage_days,
        "hj212": _hj212_cursors(outbox.path),
    }


def _hj212_cursors(path: Path) -> list[dict[str, Any]]:
    """The HJ 212 platforms' cursors in the buffer (see docs/hj212.md)."""
    from sanduan.edge.hj212.cursors import cursor_report

    return [
        {"platform": u, "kind": k, "pos": p, "dropped": d}
        for u, k, p, d in cursor_report(path)
        if k != "clock_offset"
    ]


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def print_outbox_report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"buffer of station {r['station']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")

    def opt(x: Any) -> str:
        return "-" if x is None else str(x)

    rate = r["readings_per_s"]
    cover = r["coverage_days"]
    rows = [
        ("file", r["path"]),
        ("stream", str(r["stream"])),
        ("depth (unacknowledged readings)", str(r["depth"])),
        (
            "oldest unacknowledged",
            f"{age_text(r['oldest_unacked_age_s'], 1)} (seq {opt(r['oldest_unacked_seq'])})",
        ),
        ("last acknowledged seq", opt(r["last_acked_seq"])),
        ("next seq", str(r["next_seq"])),
        ("readings held (acknowledged)", f"{r['rows']} ({r['acked_rows']})"),
        ("dropped unacknowledged", f"{r['dropped']} (through seq {r['dropped_through_seq']})"),
        ("asked for but not held", str(r["resend_missing"])),
        (
            "rejected by the centre",
            ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "0",
        ),
        ("events not yet delivered", str(r["pending_events"])),
        ("size on disk", _size(r["size_on_disk_bytes"])),
        ("used / budget", f"{_size(r['used_bytes'])} / {_size(r['max_bytes'])}"),
        (
            "bytes per reading",
            "-" if r["bytes_per_reading"] is None else f"{r['bytes_per_reading']:.1f}",
        ),
        ("rate", "-" if rate is None else f"{rate:.3g} readings/s"),
        ("coverage at this rate", "-" if cover is None else f"{cover:.1f} days"),
    ]
    for c in r.get("hj212", []):
        at = "seq" if c["kind"] in ("realtime", "minute") else "period start (ms)"
        rows.append(
            (
                f"HJ 212 {c['platform']} {c['kind']}",
                f"sent up to {at} {c['pos']}, dropped {c['dropped']}",
            )
        )
    for k, v in rows:
        table.add_row(k, v)
    Console(width=100).print(table)


# --------------------------------------------------------------------------------------------
# ``sanduan edge outbox --salvage``


def salvage_buffer(
    config_path: Path | str | None,
    db_path: Path | str | None,
    target: Path | str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Copy what is readable of a damaged buffer into a new one (see :func:`salvage`); the
    summary as a JSON-ready dict."""
    from sanduan.shared.config import load_station_config

    station = max_bytes = None
    if config_path is not None:
        cfg = load_station_config(config_path)
        path = Path(db_path) if db_path is not None else cfg.buffer.path
        station, max_bytes = cfg.station.id, cfg.buffer.max_bytes
    else:
        assert db_path is not None
        path = Path(db_path)
    r = salvage(path, target, station=station, max_bytes=max_bytes, progress=progress)
    return {
        "source": str(r.source),
        "target": str(r.target),
        "station": r.station,
        "old_stream": r.old_stream,
        "new_stream": r.new_stream,
        "copied": r.copied,
        "old_first_seq": r.old_first,
        "old_last_seq": r.old_last,
        "unreadable_seqs": r.unreadable,
        "invalid_rows": r.invalid,
        "acknowledged_left": r.acked,
        "rejected_left": r.rejected,
        "aggregates": r.aggregates,
        "events": r.events,
    }

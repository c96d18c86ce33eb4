"""Remote commands at the station: the I/O around :mod:`sanduan.edge.core.commands`.

One :class:`CommandService` lives as long as the agent process, across reloads. The forwarder
hands it every :class:`~sanduan.shared.wire.Command` of the station's ``cmd`` topic; it
decides with the pure core, runs the command, keeps the answer in the buffer file (table
``commands``, the last :data:`KEEP_IDS` ids, so a repeated id is answered again and never run
twice, also after a restart) and publishes it on the ``result`` topic (again after a
reconnect until it went out).

``push-config`` writes the new station file atomically (temporary file, fsync, rename; the
file it replaces kept as ``<name>.prev``), has the agent reload, and watches the trial
(:class:`~sanduan.edge.core.commands.ConfirmWatch`): without a committed reading and an
acknowledged batch within ``[commands] confirm_s`` it puts the previous file back and reloads
again. SIGHUP reloads the station file the same way (without the trial); a file that does not
validate is refused with an ERROR and the agent keeps the one in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sanduan.edge.core.commands import (
    ConfirmWatch,
    LogLevel,
    Outcome,
    PollNow,
    PushConfig,
    Resend,
    TimeSync,
    check_push,
    decide,
    sha256_hex,
)
from sanduan.edge.core.window import check_resend
from sanduan.shared import topics, wire
from sanduan.shared.config import StationConfig, load_station_config
from sanduan.shared.errors import ConfigError, StoreError
from sanduan.shared.wire import Command, CommandResult, ResendRequest

if TYPE_CHECKING:
    from sanduan.edge.app import Agent

log = logging.getLogger("sanduan.edge.commands")

KEEP_IDS = 1000
"""Command ids remembered in the buffer file (the oldest are forgotten)."""
TICK_S = 0.1
"""How often the service looks at the trial, the log-level timer and unsent answers."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _install(tmp: Path, path: Path) -> None:
    """Put the synced file ``tmp`` in ``path``'s place, the rename synced too."""
    tmp.replace(path)
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a power cut leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_synced(tmp, data)
    _install(tmp, path)


class CommandLog:
    """Command ids and their answers, in the buffer file (a connection of its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
                " received_ms INTEGER NOT NULL, result BLOB, sent INTEGER NOT NULL DEFAULT 0)"
            )
        except sqlite3.Error as e:
            raise StoreError(f"commands: cannot open the buffer {path}: {e}") from e

    def _do(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self.db.execute(sql, params).fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"commands: the buffer {self.path}: {e}") from e

    def known(self, command_id: str) -> Outcome | Literal["running"] | None:
        rows = self._do("SELECT result FROM commands WHERE id = ?", (command_id,))
        if not rows:
            return None
        if rows[0][0] is None:
            return "running"
        r = wire.decode_result(bytes(rows[0][0]))
        return Outcome(r.ok, r.state, r.message, r.config_sha256)

    def start(self, command_id: str, name: str, now_ms: int) -> None:
        self._do(
            "INSERT OR IGNORE INTO commands (id, name, received_ms) VALUES (?, ?, ?)",
            (command_id, name, now_ms),
        )
        self._do(
            "DELETE FROM commands WHERE id IN (SELECT id FROM commands ORDER BY received_ms"
            " DESC, rowid DESC LIMIT -1 OFFSET ?)",
            (KEEP_IDS,),
        )

    def answer(self, result: CommandResult, name: str) -> None:
        self._do(
            "INSERT INTO commands (id, name, received_ms, result, sent) VALUES (?, ?, ?, ?, 0)"
            " ON CONFLICT (id) DO UPDATE SET result = excluded.result, sent = 0",
            (result.command_id, name, result.time_ms, wire.encode(result)),
        )

    def unsent(self) -> list[tuple[str, bytes]]:
        rows = self._do("SELECT id, result FROM commands WHERE result IS NOT NULL AND sent = 0")
        return [(str(i), bytes(r)) for i, r in rows]

    def mark_sent(self, command_id: str) -> None:
        self._do("UPDATE commands SET sent = 1 WHERE id = ?", (command_id,))

    def running(self) -> list[tuple[str, str]]:
        rows = self._do("SELECT id, name FROM commands WHERE result IS NULL")
        return [(str(i), str(n)) for i, n in rows]

    def close(self) -> None:
        with self._lock:
            self.db.close()


class CommandService:
    """Runs the centre's commands for one agent; see the module docstring."""

    def __init__(self, agent: Agent, config_path: Path | None) -> None:
        self.agent = agent
        self.config_path = config_path
        self.station = agent.config.station.id
        self.result_topic = topics.result_topic(self.station)
        self.log: CommandLog | None = None
        self.trial: ConfirmWatch | None = None
        self._level_revert: tuple[float, int] | None = None
        self.config_sha256: str | None = self._file_sha()
        self._resumed = False

    # -- helpers ---------------------------------------------------------------------------

    def _file_sha(self) -> str | None:
        if self.config_path is None:
            return None
        try:
            return sha256_hex(self.config_path.read_bytes())
        except OSError:
            return None

    def _now_ms(self) -> int:
        return int(self.agent.clock.time() * 1000)

    def extra(self) -> dict[str, wire.Scalar]:
        """Heartbeat entries: the hash of the station file in force."""
        return {} if self.config_sha256 is None else {"config_sha256": self.config_sha256}

    def _open_log(self) -> CommandLog:
        if self.log is None:
            self.log = CommandLog(self.agent.db_path)
        return self.log

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    async def _answer(self, cmd_id: str, name: str, outcome: Outcome) -> None:
        result = outcome.result(self.station, cmd_id, self._now_ms())
        lg = self._open_log()
        await asyncio.to_thread(lg.answer, result, name)
        level = logging.INFO if outcome.ok else logging.WARNING
        log.log(level, "command %s (%s): %s: %s", cmd_id, name, outcome.state, outcome.message)
        await self._send_unsent()

    async def _send_unsent(self) -> None:
        uplink = self.agent.uplink
        if uplink is None or not uplink.connected or self.log is None:
            return
        lg = self.log
        for cmd_id, payload in await asyncio.to_thread(lg.unsent):
            res = uplink.publish(self.result_topic, payload)
            if res is not None and res.queued:
                await asyncio.to_thread(lg.mark_sent, cmd_id)

    # -- commands --------------------------------------------------------------------------

    async def on_command(self, cmd: Command) -> None:
        """A command from the centre (called by the forwarder's message handler)."""
        lg = self._open_log()
        known = await asyncio.to_thread(lg.known, cmd.command_id)
        got = decide(
            cmd,
            station=self.station,
            now_ms=self._now_ms(),
            enabled=self.agent.config.commands.enabled,
            known=known,
        )
        if got is None:
            log.info("command %s (%s) is still running", cmd.command_id, cmd.name)
            return
        if isinstance(got, Outcome):
            if known is not None:
                log.info("command %s (%s) repeated: answered again", cmd.command_id, cmd.name)
                again = got.result(self.station, cmd.command_id, self._now_ms())
                await asyncio.to_thread(lg.answer, again, cmd.name)
                await self._send_unsent()
                return
            await self._answer(cmd.command_id, cmd.name, got)
            return
        await asyncio.to_thread(lg.start, cmd.command_id, cmd.name, self._now_ms())
        log.info("command %s: %s %s", cmd.command_id, cmd.name, dict(cmd.args) or "")
        try:
            if isinstance(got, PushConfig):
                outcome = await self._push(cmd.command_id, got)
            else:
                outcome = await self._run(got)
        except (OSError, StoreError) as e:
            outcome = Outcome(False, "failed", f"{cmd.name}: {e}")
        if outcome is not None:
            await self._answer(cmd.command_id, cmd.name, outcome)

    async def _run(self, action: PollNow | TimeSync | Resend | LogLevel) -> Outcome:
        fwd = self.agent.forwarder
        if isinstance(action, PollNow):
            poll_now = getattr(self.agent.source, "poll_now", None)
            if poll_now is None:
                return Outcome(False, "failed", "poll-now: this reading source cannot poll now")
            poll_now()
            return Outcome(True, "done", "polling every device now")
        if isinstance(action, LogLevel):
            root = logging.getLogger()
            old = root.level
            root.setLevel(action.level)
            if action.for_s is None:
                self._level_revert = None
                return Outcome(True, "done", f"log level {action.level}")
            back = self._level_revert[1] if self._level_revert is not None else old
            self._level_revert = (time.monotonic() + action.for_s, back)
            name = logging.getLevelName(back)
            return Outcome(
                True, "done", f"log level {action.level} for {action.for_s:g} s, then {name}"
            )
        assert fwd is not None
        if isinstance(action, TimeSync):
            off = fwd.clock_sample(action.centre_ms)
            if off is None:
                return Outcome(False, "failed", "time-sync: the command carries no usable time")
            await fwd.send_status()
            side = "ahead of" if off > 0 else "behind"
            return Outcome(
                True,
                "done",
                f"station clock {side} the centre by {abs(off):.3f} s (measured on the command's"
                " arrival, at most its transit time too large; the system clock is not changed)",
            )
        ob = fwd.db.outbox
        ranges, note = check_resend(
            self.station, fwd.stream, ((action.first, action.last),), ob.issued()
        )
        if not ranges:
            return Outcome(False, "refused", f"resend: {note or 'nothing to resend'}")
        req = ResendRequest(self.station, tuple(ranges), self._now_ms(), "command", fwd.stream)
        try:
            fwd.inbox.put_nowait(("msg", req))
        except asyncio.QueueFull:
            return Outcome(False, "failed", "resend: the agent's inbox is full; ask again later")
        shown = ",".join(f"{a}-{b}" for a, b in ranges)
        return Outcome(True, "done", f"resending seq {shown}" + (f" ({note})" if note else ""))

    # -- push-config and reload ------------------------------------------------------------

    def _validate(self, path: Path, shown: str) -> StationConfig | str:
        try:
            new = self.agent.overrides(load_station_config(path))
        except ConfigError as e:
            return str(e).replace(str(path), shown)
        why = check_push(self.agent.config, new)
        return why if why is not None else new

    async def _push(self, cmd_id: str, action: PushConfig) -> Outcome | None:
        path = self.config_path
        if path is None:
            return Outcome(False, "refused", "push-config: the agent runs without a station file")
        if self.trial is not None or self.agent.reload_pending:
            return Outcome(False, "refused", "push-config: another change is being confirmed")
        data = action.text.encode("utf-8")
        tmp = path.with_name(f".{path.name}.{cmd_id}.new")

        def stage() -> StationConfig | str:
            _write_synced(tmp, data)
            return self._validate(tmp, f"{path} (pushed)")

        try:
            got = await asyncio.to_thread(stage)
            if isinstance(got, str):
                return Outcome(False, "rejected", got, self.config_sha256)

            def swap() -> None:
                write_atomic(path.with_name(path.name + ".prev"), path.read_bytes())
                _install(tmp, path)

            await asyncio.to_thread(swap)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        old_confirm = self.agent.config.commands.confirm_s
        self.trial = ConfirmWatch(cmd_id, time.monotonic(), old_confirm, self.agent.committed, 0)
        self.config_sha256 = sha256_hex(data)
        log.warning(
            "station file %s replaced (command %s); reloading, must forward within %g s or it"
            " goes back to %s.prev",
            path,
            cmd_id,
            old_confirm,
            path.name,
        )
        self.agent.request_reload(got)
        return None

    def reload_file(self) -> bool:
        """SIGHUP: reload the station file; keep the one in force if it does not validate."""
        path = self.config_path
        if path is None:
            log.error("reload: the agent runs without a station file; nothing to reload")
            return False
        got = self._validate(path, str(path))
        if isinstance(got, str):
            log.error("reload refused, keeping the configuration in force: %s", got)
            return False
        self.config_sha256 = self._file_sha()
        log.info("reloading %s", path)
        self.agent.request_reload(got)
        return True

    async def _judge_trial(self) -> None:
        trial = self.trial
        fwd = self.agent.forwarder
        if trial is None or fwd is None or self.agent.reload_pending:
            return
        verdict = trial.check(time.monotonic(), self.agent.committed, fwd.counts["acks"])
        if verdict is None:
            return
        self.trial = None
        if verdict == "confirmed":
            await self._answer(
                trial.command_id,
                "push-config",
                Outcome(True, "applied", "station file applied and confirmed", self.config_sha256),
            )
            return
        why = trial.why()
        assert self.config_path is not None
        path = self.config_path
        prev = path.with_name(path.name + ".prev")
        log.error("the pushed station file failed its trial (%s); going back to %s", why, prev)

        def restore() -> StationConfig | str:
            data = prev.read_bytes()
            write_atomic(path.with_name(path.name + ".rejected"), path.read_bytes())
            write_atomic(path, data)
            return self._validate(path, str(path))

        try:
            got = await asyncio.to_thread(restore)
        except OSError as e:
            got = f"cannot restore {prev}: {e}"
        self.config_sha256 = self._file_sha()
        if isinstance(got, str):
            log.error("rollback failed, staying on the pushed file: %s", got)
            outcome = Outcome(False, "failed", f"{why}; rollback failed: {got}", self.config_sha256)
            await self._answer(trial.command_id, "push-config", outcome)
            return
        outcome = Outcome(
            False, "rolled-back", f"rolled back to the previous file: {why}", self.config_sha256
        )
        # The answer is stored before the reload (which ends this task); it goes out once the
        # agent is connected again.
        await self._answer(trial.command_id, "push-config", outcome)
        self.agent.request_reload(got)

    async def run(self) -> None:
        """The trial, the log-level timer and unsent answers, until cancelled (one run per
        reload of the agent's internals)."""
        self._open_log()
        await self._resume()
        was_up = False
        while True:
            await self._judge_trial()
            if self._level_revert is not None and time.monotonic() >= self._level_revert[0]:
                level = self._level_revert[1]
                self._level_revert = None
                logging.getLogger().setLevel(level)
                log.warning("log level back to %s", logging.getLevelName(level))
            up = self.agent.uplink is not None and self.agent.uplink.connected
            if up and not was_up:
                await self._send_unsent()
            was_up = up
            await asyncio.sleep(TICK_S)

    async def _resume(self) -> None:
        """After a restart: a push still on trial when the agent stopped gets a new trial."""
        if self._resumed or self.log is None:
            return
        self._resumed = True
        lg = self.log
        for cmd_id, name in await asyncio.to_thread(lg.running):
            if name == "push-config" and self.config_path is not None:
                confirm = self.agent.config.commands.confirm_s
                fwd = self.agent.forwarder
                acked = fwd.counts["acks"] if fwd is not None else 0
                self.trial = ConfirmWatch(
                    cmd_id, time.monotonic(), confirm, self.agent.committed, acked
                )
                log.warning("push-config %s was on trial at the last stop: on trial again", cmd_id)
            else:
                await self._answer(cmd_id, name, Outcome(False, "failed", "the agent stopped"))

"""Remote commands at the station, decided without I/O (see docs/commands.md).

:func:`decide` turns a :class:`~sanduan.shared.wire.Command` into what the agent must do: run
an :data:`Action`, answer at once with an :class:`Outcome` (a refusal, or the answer already
given to the same id), or nothing (the same id is still running). :class:`ConfirmWatch` is the
rollback decision of ``push-config`` as a state machine over injected time and counters: the
new station file stays only if the agent commits a reading and has a batch acknowledged
within ``confirm_s``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from sanduan.shared.config import StationConfig
from sanduan.shared.wire import Command, CommandResult

__all__ = [
    "COMMANDS",
    "LOG_LEVELS",
    "MAX_LOG_LEVEL_S",
    "Action",
    "ConfirmWatch",
    "LogLevel",
    "Outcome",
    "PollNow",
    "PushConfig",
    "Resend",
    "TimeSync",
    "Verdict",
    "check_push",
    "decide",
    "sha256_hex",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_LOG_LEVEL_S = 7 * 86_400.0
"""Longest ``log-level --for``: a forgotten DEBUG level ends within a week."""


@dataclass(frozen=True, slots=True)
class PollNow:
    """Poll every device now."""


@dataclass(frozen=True, slots=True)
class TimeSync:
    """Measure the clock offset now from the command's issue time (never steps the clock)."""

    centre_ms: int


@dataclass(frozen=True, slots=True)
class Resend:
    """Send readings ``first..last`` of the buffer again."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class LogLevel:
    """Set the log level; back to the previous one after ``for_s`` seconds (None: keep it)."""

    level: str
    for_s: float | None


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Replace the station file with ``text``, reload, and roll back unless confirmed."""

    text: str


Action = PollNow | TimeSync | Resend | LogLevel | PushConfig

_ARGS: dict[str, frozenset[str]] = {
    "poll-now": frozenset(),
    "time-sync": frozenset(),
    "resend": frozenset({"first", "last"}),
    "log-level": frozenset({"level", "for_s"}),
    "push-config": frozenset(),
}
"""Each command and the arguments it takes."""

COMMANDS = tuple(_ARGS)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command came to (the station's :class:`CommandResult`, without the envelope)."""

    ok: bool
    state: str
    message: str
    config_sha256: str | None = None

    def result(self, station: str, command_id: str, time_ms: int) -> CommandResult:
        return CommandResult(
            station=station,
            command_id=command_id,
            time_ms=time_ms,
            ok=self.ok,
            state=self.state,
            message=self.message[:4096],
            config_sha256=self.config_sha256,
        )


def _refused(why: str) -> Outcome:
    return Outcome(False, "refused", why)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _int_arg(cmd: Command, key: str) -> int | None:
    x = cmd.args.get(key)
    return x if type(x) is int else None


def _action(cmd: Command) -> Action | Outcome:
    """The command's action with its arguments checked, or the refusal saying what is wrong."""
    name, args = cmd.name, cmd.args
    if name not in _ARGS:
        return _refused(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    unknown = sorted(set(args) - _ARGS[name])
    if unknown:
        return _refused(f"{name}: unknown argument(s) {', '.join(unknown)}")
    if cmd.body and name != "push-config":
        return _refused(f"{name}: takes no body")
    if name == "poll-now":
        return PollNow()
    if name == "time-sync":
        return TimeSync(cmd.issued_ms)
    if name == "resend":
        first, last = _int_arg(cmd, "first"), _int_arg(cmd, "last")
        if first is None or last is None or not 1 <= first <= last:
            return _refused("resend: needs integers first and last with 1 <= first <= last")
        return Resend(first, last)
    if name == "log-level":
        level = args.get("level")
        if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
            return _refused(f"log-level: level must be one of {', '.join(LOG_LEVELS)}")
        for_s = args.get("for_s")
        if for_s is not None:
            if type(for_s) not in (int, float) or isinstance(for_s, bool):
                return _refused("log-level: for_s must be a number of seconds")
            if not (math.isfinite(float(for_s)) and 0 < float(for_s) <= MAX_LOG_LEVEL_S):
                return _refused(f"log-level: for_s must be in 0..{MAX_LOG_LEVEL_S:g} seconds")
            return LogLevel(level.upper(), float(for_s))
        return LogLevel(level.upper(), None)
    if not cmd.body.strip():
        return Outcome(False, "rejected", "push-config: the station file is empty")
    return PushConfig(cmd.body)


def decide(
    cmd: Command,
    *,
    station: str,
    now_ms: int,
    enabled: bool,
    known: Outcome | Literal["running"] | None,
) -> Action | Outcome | None:
    """What to do with ``cmd`` received at ``now_ms`` (station clock).

    ``known`` is what the station holds for this command id: the answer it gave (given again,
    the command is not run twice), ``"running"`` (nothing to do now: the answer comes when it
    is done), or None for a new id. A new command is refused when it is for another station,
    commands are disabled, it has expired, or its name or arguments are wrong.
    """
    if known == "running":
        return None
    if known is not None:
        return known
    if cmd.station != station:
        return _refused(f"the command is for station {cmd.station}, this is {station}")
    if not enabled:
        return _refused("remote commands are disabled here ([commands] enabled = false)")
    if now_ms > cmd.expires_ms:
        late = (now_ms - cmd.expires_ms) / 1000
        return Outcome(False, "expired", f"{cmd.name} arrived {late:.1f} s after it expired")
    return _action(cmd)


def check_push(old: StationConfig, new: StationConfig) -> str | None:
    """Why ``new`` cannot replace ``old`` by a reload (None: it can)."""
    if new.station.id != old.station.id:
        return (
            f"the pushed file is for station {new.station.id!r}, this agent is"
            f" {old.station.id!r}; a station id changes only with a new installation"
        )
    if new.buffer.path != old.buffer.path:
        return (
            f"the pushed file moves the buffer ({old.buffer.path} -> {new.buffer.path}); that"
            " takes a restart of the agent, not a reload"
        )
    return None


Verdict = Literal["confirmed", "rollback"]


@dataclass(slots=True)
class ConfirmWatch:
    """The trial of a pushed station file.

    Started at ``start`` (monotonic seconds) with the agent's counters of committed readings
    and acknowledged batches at that moment; :meth:`check` says ``"confirmed"`` once both
    counters have moved, ``"rollback"`` once ``confirm_s`` has passed without that, and None
    while the trial goes on. Each verdict is given once.
    """

    command_id: str
    start: float
    confirm_s: float
    committed0: int
    acked0: int
    committed_seen: bool = False
    acked_seen: bool = False
    done: bool = False

    def check(self, now: float, committed: int, acked: int) -> Verdict | None:
        if self.done:
            return None
        self.committed_seen = self.committed_seen or committed > self.committed0
        self.acked_seen = self.acked_seen or acked > self.acked0
        if self.committed_seen and self.acked_seen:
            self.done = True
            return "confirmed"
        if now - self.start >= self.confirm_s:
            self.done = True
            return "rollback"
        return None

    def why(self) -> str:
        """What was missing when the trial failed."""
        missing = []
        if not self.committed_seen:
            missing.append("no reading committed")
        if not self.acked_seen:
            missing.append("no batch acknowledged by the centre")
        what = " and ".join(missing) or "not confirmed"
        return f"{what} within {self.confirm_s:g} s of the reload"

"""The pure core of remote commands: decisions, idempotency, expiry, the rollback trial."""

from __future__ import annotations

import pytest

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
)
from sanduan.shared import wire
from sanduan.shared.config import StationConfig, parse_model
from sanduan.shared.wire import Command

T0 = 1_767_225_600_000


def cmd(
    name: str, args: dict[str, wire.Scalar] | None = None, body: str = "", **kw: object
) -> Command:
    fields: dict[str, object] = {
        "station": "S1",
        "command_id": "c-1",
        "name": name,
        "issued_ms": T0,
        "expires_ms": T0 + 60_000,
        "args": args or {},
        "body": body,
    }
    fields.update(kw)
    c = Command(**fields)  # type: ignore[arg-type]
    wire.encode(c)  # every command here is valid on the wire
    return c


def run(c: Command, now_ms: int = T0 + 1000, known: object = None, enabled: bool = True) -> object:
    return decide(c, station="S1", now_ms=now_ms, enabled=enabled, known=known)  # type: ignore[arg-type]


def test_each_command_becomes_its_action() -> None:
    assert run(cmd("poll-now")) == PollNow()
    assert run(cmd("time-sync")) == TimeSync(T0)
    assert run(cmd("resend", {"first": 5, "last": 9})) == Resend(5, 9)
    assert run(cmd("log-level", {"level": "debug", "for_s": 600})) == LogLevel("DEBUG", 600.0)
    assert run(cmd("log-level", {"level": "WARNING"})) == LogLevel("WARNING", None)
    assert run(cmd("push-config", body="[station]\nid = 'S1'\n")) == PushConfig(
        "[station]\nid = 'S1'\n"
    )


@pytest.mark.parametrize(
    ("c", "state", "text"),
    [
        (cmd("reboot"), "refused", "unknown command 'reboot'"),
        (cmd("resend", {"first": 9, "last": 5}), "refused", "1 <= first <= last"),
        (cmd("resend", {"first": 1}), "refused", "needs integers first and last"),
        (cmd("resend", {"first": 1, "last": 2, "x": 1}), "refused", "unknown argument(s) x"),
        (cmd("log-level", {"level": "TRACE"}), "refused", "level must be one of"),
        (cmd("log-level", {"level": "INFO", "for_s": -1}), "refused", "for_s must be in"),
        (cmd("log-level", {"level": "INFO", "for_s": "10m"}), "refused", "number of seconds"),
        (cmd("poll-now", body="x"), "refused", "takes no body"),
        (cmd("push-config", body="  \n"), "rejected", "empty"),
        (cmd("poll-now", station="S2"), "refused", "for station S2, this is S1"),
    ],
)
def test_bad_commands_are_refused_saying_why(c: Command, state: str, text: str) -> None:
    got = run(c)
    assert isinstance(got, Outcome)
    assert (got.ok, got.state) == (False, state)
    assert text in got.message


def test_expired_command_is_refused_and_on_time_is_run() -> None:
    c = cmd("poll-now")
    assert run(c, now_ms=c.expires_ms) == PollNow()
    got = run(c, now_ms=c.expires_ms + 2500)
    assert isinstance(got, Outcome) and got.state == "expired" and "2.5 s after" in got.message


def test_disabled_commands_are_refused() -> None:
    got = run(cmd("poll-now"), enabled=False)
    assert isinstance(got, Outcome) and got.state == "refused" and "disabled" in got.message


def test_a_repeated_id_is_answered_again_not_run() -> None:
    answer = Outcome(True, "applied", "ok", "a" * 64)
    # Even long after expiry and with commands now disabled: the answer stands.
    assert run(cmd("push-config", body="x"), now_ms=T0 + 10**9, known=answer) is answer
    assert run(cmd("poll-now"), known="running") is None


def test_outcome_becomes_a_valid_result() -> None:
    r = Outcome(False, "rolled-back", "why", "b" * 64).result("S1", "c-1", T0)
    assert wire.decode_result(wire.encode(r)) == r


def _cfg(station: str = "S1", path: str = "b.db") -> StationConfig:
    return parse_model(
        StationConfig, {"station": {"id": station}, "buffer": {"path": path}}, "<test>"
    )


def test_check_push_keeps_identity_and_buffer() -> None:
    assert check_push(_cfg(), _cfg()) is None
    why = check_push(_cfg(), _cfg("S2"))
    assert why is not None and "'S2'" in why
    why = check_push(_cfg(), _cfg(path="other.db"))
    assert why is not None and "restart" in why


def test_trial_confirms_only_with_a_reading_and_an_ack() -> None:
    w = ConfirmWatch("c-1", start=100.0, confirm_s=10.0, committed0=50, acked0=0)
    assert w.check(101.0, committed=50, acked=0) is None
    assert w.check(102.0, committed=60, acked=0) is None  # polling, not forwarding
    assert w.check(103.0, committed=60, acked=1) == "confirmed"
    assert w.check(200.0, committed=60, acked=1) is None  # given once


def test_trial_rolls_back_at_the_deadline_naming_what_was_missing() -> None:
    w = ConfirmWatch("c-1", start=100.0, confirm_s=10.0, committed0=50, acked0=3)
    assert w.check(105.0, committed=70, acked=3) is None
    assert w.check(109.999, committed=80, acked=3) is None
    assert w.check(110.0, committed=90, acked=3) == "rollback"
    assert w.why() == "no batch acknowledged by the centre within 10 s of the reload"
    quiet = ConfirmWatch("c-2", start=0.0, confirm_s=5.0, committed0=0, acked0=0)
    assert quiet.check(6.0, 0, 0) == "rollback"
    assert quiet.why().startswith("no reading committed and no batch acknowledged")


def test_trial_remembers_progress_seen_before_the_deadline() -> None:
    w = ConfirmWatch("c-1", start=0.0, confirm_s=10.0, committed0=0, acked0=0)
    assert w.check(1.0, committed=1, acked=0) is None
    # counters never go back, but a check with the deadline passed still sees both seen
    assert w.check(10.0, committed=1, acked=1) == "confirmed"

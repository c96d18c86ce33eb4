"""Remote commands on a running agent and a real broker: poll-now, log-level, resend,
time-sync, idempotency, expiry, push-config (applied, rejected, rolled back), SIGHUP."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.brokers import shared_port
from tests.edge.acker import Acker
from tests.edge.agent_harness import AgentThread, fake, wait_until
from tests.edge.conftest import free_port

from sanduan.shared import wire
from sanduan.shared.config import StationConfig, load_station_config
from sanduan.shared.wire import Command, CommandResult

pytestmark = pytest.mark.mosquitto


def station_toml(
    station: str, db: Path, port: int, *, heartbeat_s: float = 1.0, confirm_s: float = 30.0
) -> str:
    return f"""
[station]
id = "{station}"

[buffer]
path = "{db}"
commit_interval_s = 0.1
synchronous = "NORMAL"

[uplink]
broker = "mqtt://127.0.0.1:{port}"
batch_max_age_s = 0.2
heartbeat_s = {heartbeat_s}
ack_timeout_s = 5
max_batches_per_s = 200
reconnect_max_s = 1

[commands]
confirm_s = {confirm_s}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Station:
    """An agent with a station file, a stand-in centre, and a way to send commands."""

    def __init__(self, path: Path, station: str, period_s: float) -> None:
        self.path = path
        self.station = station
        self.source = fake(period_s)
        self.agent = AgentThread(load_station_config(path), self.source, config_path=path)
        self.acker = Acker(port=shared_port(), station=station)
        self.n = 0

    def command(
        self, name: str, args: dict[str, wire.Scalar] | None = None, body: str = "", **kw: object
    ) -> Command:
        self.n += 1
        now = int(time.time() * 1000)
        fields: dict[str, object] = {
            "station": self.station,
            "command_id": f"c-{self.n}",
            "name": name,
            "issued_ms": now,
            "expires_ms": now + 60_000,
            "args": args or {},
            "body": body,
        }
        fields.update(kw)
        cmd = Command(**fields)  # type: ignore[arg-type]
        self.acker.send(cmd)
        return cmd

    def results(self, command_id: str) -> list[CommandResult]:
        with self.acker.lock:
            return [r for r in self.acker.results if r.command_id == command_id]

    def answer(self, cmd: Command, timeout: float = 10.0) -> CommandResult:
        assert self.acker.wait_for(lambda a: bool(self.results(cmd.command_id)), timeout), (
            f"no answer to {cmd.name}"
        )
        return self.results(cmd.command_id)[0]


@pytest.fixture
def station(tmp_path: Path, station_id: str, mosquitto: int) -> Iterator[Station]:
    cfg = tmp_path / "station.toml"
    cfg.write_text(station_toml(station_id, tmp_path / "buffer.db", mosquitto), encoding="utf-8")
    st = Station(cfg, station_id, period_s=30.0)
    st.acker.start()
    st.agent.start()
    try:
        assert st.acker.wait_for(lambda a: a.acks_sent >= 1), "the agent does not forward"
        yield st
    finally:
        st.agent.stop()
        st.acker.stop()


def test_poll_now_log_level_resend_time_sync_and_repeats(
    station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls = station.source.polls
    r = station.answer(station.command("poll-now"))
    assert (r.ok, r.state) == (True, "done")
    assert wait_until(lambda: station.source.polls == polls + 1, 5)

    root = logging.getLogger()
    before = root.level
    levels: list[int] = []  # every level the root logger was set to (it reverts after 0.5 s)
    set_level = root.setLevel

    def recording(level: int | str) -> None:
        set_level(level)
        levels.append(root.level)

    monkeypatch.setattr(root, "setLevel", recording)
    r = station.answer(station.command("log-level", {"level": "debug", "for_s": 0.5}))
    assert r.ok and "DEBUG for 0.5 s" in r.message
    assert levels[:1] == [logging.DEBUG]
    assert wait_until(lambda: root.level == before, 5)

    seqs = sorted(s for _, s in station.acker.received)
    first, last = seqs[0], seqs[-1]
    before_deliveries = dict(station.acker.deliveries)
    r = station.answer(station.command("resend", {"first": first, "last": last}))
    assert r.ok and f"{first}-{last}" in r.message
    assert station.acker.wait_for(
        lambda a: all(
            a.deliveries[(station.station, s)] > before_deliveries[(station.station, s)]
            for s in seqs
        ),
        10,
    )

    r = station.answer(station.command("time-sync"))
    assert r.ok and "station clock" in r.message and "not changed" in r.message

    # The same id again: answered again with the same outcome, not run again.
    polls = station.source.polls
    again = station.command("poll-now", command_id="c-1")
    assert wait_until(lambda: len(station.results(again.command_id)) == 2, 5)
    first_answer, second_answer = station.results("c-1")
    assert (second_answer.state, second_answer.message) == ("done", first_answer.message)
    time.sleep(0.3)
    assert station.source.polls == polls

    now = int(time.time() * 1000)
    r = station.answer(station.command("poll-now", issued_ms=now - 60_000, expires_ms=now - 5000))
    assert (r.ok, r.state) == (False, "expired")
    r = station.answer(station.command("reboot"))
    assert r.state == "refused" and "unknown command" in r.message


def test_push_config_applied_then_an_invalid_one_rejected(station: Station, tmp_path: Path) -> None:
    old = station.path.read_text(encoding="utf-8")
    new = station_toml(station.station, tmp_path / "buffer.db", shared_port(), heartbeat_s=0.5)
    r = station.answer(station.command("push-config", body=new), 15)
    assert (r.ok, r.state, r.config_sha256) == (True, "applied", sha(new)), r.message
    assert station.path.read_text(encoding="utf-8") == new
    assert station.path.with_name("station.toml.prev").read_text(encoding="utf-8") == old
    agent = station.agent.agent
    assert agent is not None and agent.reloads == 1
    assert agent.config.uplink.heartbeat_s == 0.5
    assert station.acker.wait_for(
        lambda a: a.statuses[-1].extra.get("config_sha256") == sha(new), 5
    )

    bad = new.replace("heartbeat_s = 0.5", "heartbeat_s = -1")
    r = station.answer(station.command("push-config", body=bad))
    assert (r.ok, r.state, r.config_sha256) == (False, "rejected", sha(new))
    assert "uplink.heartbeat_s" in r.message and "(pushed)" in r.message
    assert station.path.read_text(encoding="utf-8") == new  # untouched
    assert agent.reloads == 1
    other = new.replace(f'id = "{station.station}"', 'id = "somewhere-else"')
    r = station.answer(station.command("push-config", body=other))
    assert r.state == "rejected" and "somewhere-else" in r.message


def test_push_config_with_a_wrong_broker_rolls_back_by_itself(
    tmp_path: Path, station_id: str, mosquitto: int
) -> None:
    cfg = tmp_path / "station.toml"
    old = station_toml(station_id, tmp_path / "buffer.db", mosquitto, confirm_s=1.5)
    cfg.write_text(old, encoding="utf-8")
    st = Station(cfg, station_id, period_s=0.1)
    st.acker.start()
    st.agent.start()
    try:
        assert st.acker.wait_for(lambda a: a.acks_sent >= 1)
        wrong = station_toml(station_id, tmp_path / "buffer.db", free_port(), confirm_s=1.5)
        cmd = st.command("push-config", body=wrong)
        r = st.answer(cmd, 15)
        assert (r.ok, r.state, r.config_sha256) == (False, "rolled-back", sha(old)), r.message
        assert "no batch acknowledged" in r.message and "1.5 s" in r.message
        assert cfg.read_text(encoding="utf-8") == old
        assert cfg.with_name("station.toml.rejected").read_text(encoding="utf-8") == wrong
        agent = st.agent.agent
        assert agent is not None and agent.reloads == 2
        acks = st.acker.acks_sent
        assert st.acker.wait_for(lambda a: a.acks_sent > acks, 10), "not forwarding again"
    finally:
        st.agent.stop()
        st.acker.stop()


@pytest.mark.process
def test_sighup_reloads_and_refuses_an_invalid_file(
    tmp_path: Path, station_id: str, mosquitto: int
) -> None:
    from tests.edge.test_agent import SANDUAN

    cfg = tmp_path / "station.toml"
    cfg.write_text(station_toml(station_id, tmp_path / "buffer.db", mosquitto), encoding="utf-8")
    log = tmp_path / "agent.log"
    with Acker(port=mosquitto, station=station_id) as acker, log.open("ab") as fh:
        proc = subprocess.Popen(
            [SANDUAN, "edge", "run", "--config", str(cfg), "--fake-source", "0.2:2"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
        try:
            assert acker.wait_for(lambda a: a.acks_sent >= 1, 30), log.read_text()
            cfg.write_text(cfg.read_text().replace("heartbeat_s = 1.0", "heartbet_s = 1"))
            os.kill(proc.pid, signal.SIGHUP)
            assert wait_until(lambda: "reload refused" in log.read_text(), 10)
            text = log.read_text()
            assert str(cfg) in text and "uplink.heartbet_s" in text
            acks = acker.acks_sent
            assert acker.wait_for(lambda a: a.acks_sent > acks, 10), "stopped forwarding"

            good = station_toml(station_id, tmp_path / "buffer.db", mosquitto, heartbeat_s=0.3)
            cfg.write_text(good)
            os.kill(proc.pid, signal.SIGHUP)
            assert wait_until(lambda: "reloaded the configuration" in log.read_text(), 10)
            assert acker.wait_for(
                lambda a: a.statuses[-1].extra.get("config_sha256") == sha(good), 10
            )
            acks = acker.acks_sent
            assert acker.wait_for(lambda a: a.acks_sent > acks, 10)
        finally:
            proc.terminate()
            proc.wait(20)
    assert proc.returncode == 0, log.read_text()


def test_a_push_on_trial_at_a_stop_is_tried_again_after_the_restart(
    tmp_path: Path, station_id: str, mosquitto: int
) -> None:
    from sanduan.edge.commands import CommandLog

    cfg = tmp_path / "station.toml"
    text = station_toml(station_id, tmp_path / "buffer.db", mosquitto, confirm_s=5)
    cfg.write_text(text, encoding="utf-8")
    log = CommandLog(tmp_path / "buffer.db")  # as left by a power cut during the trial
    log.start("c-before", "push-config", int(time.time() * 1000))
    log.start("c-other", "poll-now", int(time.time() * 1000))
    log.close()
    st = Station(cfg, station_id, period_s=0.1)
    st.acker.start()
    st.agent.start()
    try:
        assert st.acker.wait_for(lambda a: len(a.results) >= 2, 10)
        got = {r.command_id: r for r in st.acker.results}
        assert (got["c-before"].state, got["c-before"].config_sha256) == ("applied", sha(text))
        assert got["c-other"].state == "failed" and "stopped" in got["c-other"].message
    finally:
        st.agent.stop()
        st.acker.stop()


def test_a_reloaded_file_keeps_the_command_line_overrides(tmp_path: Path) -> None:
    """``run --mqtt-password-file`` (the systemd credential) holds for every reloaded file too:
    a SIGHUP or a push must not fall back to the file's own ``password_file``."""
    from sanduan.edge.app import Agent
    from sanduan.shared.clock import SystemClock

    path = tmp_path / "station.toml"
    path.write_text(station_toml("t-overrides", tmp_path / "b.db", 1883), encoding="utf-8")
    secret = tmp_path / "credential"

    def overrides(cfg: StationConfig) -> StationConfig:
        login = {"password_file": secret, "password": None}
        return cfg.replace(uplink=cfg.uplink.replace(**login))

    cfg = overrides(load_station_config(path))
    agent = Agent(cfg, source=fake(1.0), clock=SystemClock(), config_path=path, overrides=overrides)
    got = agent.commands._validate(path, str(path))
    assert not isinstance(got, str), got
    assert got.uplink.password_file == secret
    assert load_station_config(path).uplink.password_file is None

"""The agent fails loudly: a failed task stops the agent, what is in memory is committed, and
the process ends non-zero (systemd restarts it); never exit 0 on failure."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.edge.agent_harness import fake, station_config
from tests.edge.conftest import free_port
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.edge.app import Agent, AgentFailed, FakeSource, Sink
from sanduan.edge.core.model import PolledValue
from sanduan.edge.io.outbox import Outbox
from sanduan.shared.model import Flag


def test_a_failed_task_stops_the_agent_with_an_error(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    cfg = station_config("t-fail", db, free_port())  # no broker there: nothing is sent

    class Source(FakeSource):
        async def run(self, sink: Sink) -> None:
            for i in range(5):
                ts = 1_767_225_600_000 + i * 1000
                sink([PolledValue("fake", c, ts, 1.0, Flag.N) for c in self.codes])
                await asyncio.sleep(0.05)
            raise RuntimeError("the poller broke")

    src = fake(0.01)
    source = Source(src.clock, src.period_s, src.codes)
    agent = Agent(cfg, source=source, clock=src.clock)

    async def go() -> None:
        await agent.run(asyncio.Event())

    with pytest.raises(AgentFailed, match="the poller broke"):
        asyncio.run(go())
    with Outbox(db, station="t-fail") as ob:  # what was polled before is committed
        assert ob.next_seq - 1 == agent.committed == 5 * 4


def test_a_commit_in_flight_when_the_agent_stops_is_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task fails while the buffer's thread is committing: the commit cannot be interrupted,
    so the shutdown must not commit the same values again (they would go out twice, with new
    seqs the centre cannot recognise as repeats)."""
    db = tmp_path / "b.db"
    cfg = station_config("t-inflight", db, free_port())
    started = threading.Event()
    original = Outbox.commit

    def slow_commit(self: Outbox, values: list[PolledValue]) -> Any:
        started.set()
        time.sleep(0.3)
        return original(self, values)

    monkeypatch.setattr(Outbox, "commit", slow_commit)

    class Source(FakeSource):
        async def run(self, sink: Sink) -> None:
            sink([PolledValue("fake", c, 1_767_225_600_000, 1.0, Flag.N) for c in self.codes])
            while not started.is_set():  # noqa: ASYNC110 (set by the buffer's thread)
                await asyncio.sleep(0.01)
            raise RuntimeError("the poller broke")

    src = fake(0.01)
    agent = Agent(cfg, source=Source(src.clock, src.period_s, src.codes), clock=src.clock)
    with pytest.raises(AgentFailed, match="the poller broke"):
        asyncio.run(agent.run(asyncio.Event()))
    with Outbox(db, station="t-inflight") as ob:
        assert ob.next_seq - 1 == agent.committed == len(src.codes)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``edge run`` points the root logger at the runner's stream: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_the_run_command_exits_1_on_a_failed_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: FakeSource, sink: Sink) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("the poller broke")

    monkeypatch.setattr(FakeSource, "run", broken)
    cfg = tmp_path / "station.toml"
    cfg.write_text(
        f'[station]\nid = "t-fail"\n[buffer]\npath = "{tmp_path / "b.db"}"\n'
        f'[uplink]\nbroker = "mqtt://127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["edge", "run", "--config", str(cfg), "--fake-source", "1", "--log-format", "text"]
    )
    assert result.exit_code == 1, result.output
    assert "sanduan edge run: the agent stopped on a failure: the poller broke" in result.output

"""An unreachable broker is said at WARNING with the reason, and not once per attempt."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tests.brokers import free_port

from sanduan.edge.io.uplink import Uplink
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import UplinkConfig
from sanduan.shared.logs import RateLimitedLog
from sanduan.shared.topics import Kind


class _Handler:
    def link_up(self, session_present: bool) -> None:
        raise AssertionError("connected to a closed port")

    def link_down(self, reason: str) -> None:
        pass

    def message(self, kind: Kind, payload: bytes) -> None:
        pass

    def published(self, mid: int) -> None:
        pass


def test_connection_refused_is_a_rate_limited_warning(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    cfg = UplinkConfig(broker=f"mqtt://127.0.0.1:{port}", protocol="3.1.1", reconnect_max_s=1)

    async def main() -> Uplink:
        link = Uplink(cfg, "S1", _Handler(), clock=SystemClock(), agent_version="t")
        link.start()
        try:
            for _ in range(200):  # paho's thread counts the attempts; 10 s at most
                if link.connect_failures >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            link.stop(timeout_s=1.0)
        return link

    with caplog.at_level(logging.WARNING, logger="sanduan.edge.uplink"):
        link = asyncio.run(main())
    said = [r for r in caplog.records if "cannot reach the broker" in r.getMessage()]
    assert link.connect_failures >= 2
    assert len(said) == 1  # the second failure, within a minute, is only counted
    assert said[0].levelno == logging.WARNING
    assert f"127.0.0.1:{port}: connection refused" in said[0].getMessage()


def test_rate_limited_log_counts_and_resets(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    say = RateLimitedLog(logging.getLogger("t.rate"), 60.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.rate"):
        assert say(logging.WARNING, "k", "down %s", "x")
        now[0] = 30.0
        assert not say(logging.WARNING, "k", "down %s", "x")
        assert not say(logging.WARNING, "k", "down %s", "x")
        now[0] = 61.0
        assert say(logging.WARNING, "k", "down %s", "x")
        say.reset("k")
        now[0] = 62.0
        assert say(logging.WARNING, "k", "down %s", "y")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["down x", "down x (2 more since the last report)", "down y"]

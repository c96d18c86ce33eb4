"""End to end under faults: the collector SIGKILLed and restarted several times, and the broker
SIGKILLed and restarted, while the agent keeps polling and sending."""

from __future__ import annotations

import time
from functools import partial

import pytest
from tests.e2e.conftest import E2ERig
from tests.e2e.harness import (
    Agent,
    assert_delivered_once,
    central_rows,
    station_record,
    wait_until,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]


def station_state(store_url: str, station: str) -> tuple[int | None, int | None, int]:
    """(max seq, contiguous seq, open gaps) of a station in the store."""
    row = station_record(store_url, station)
    return row.max_seq, row.contiguous_seq, len(row.gaps)


def stored(store_url: str, agent: Agent) -> int:
    return len(central_rows(store_url, [agent.station]))


def more_stored(store_url: str, agent: Agent, than: int) -> bool:
    return stored(store_url, agent) > than


def test_collector_killed_repeatedly_loses_nothing_stores_nothing_twice(
    store_url: str, rig: E2ERig
) -> None:
    agent = rig.agent()
    collector = rig.collector(store_url).start()
    agent.start()
    assert wait_until(lambda: stored(store_url, agent) > 0, 60), agent.log.read_text()[-2000:]

    backlog = []
    for up_s in (0.8, 1.4, 1.0):
        time.sleep(up_s)
        collector.kill()
        before = stored(store_url, agent)
        time.sleep(0.8)  # the agent polls and sends on; nobody stores or acknowledges
        backlog.append(agent.depth() or 0)
        assert stored(store_url, agent) == before
        collector.start()
        # The restarted collector (same client id: same broker session) catches up.
        assert wait_until(partial(more_stored, store_url, agent, before), 60), collector.log
    time.sleep(1.0)
    assert agent.proc is not None
    assert agent.proc.alive(), agent.proc.tail()
    # Each outage left readings unacknowledged in the agent's buffer.
    assert min(backlog) > 0, backlog

    agent.drain_and_stop()  # every reading acknowledged: depth 0
    collector.stop()
    n = assert_delivered_once(store_url, [agent])
    assert n >= 120, n
    assert station_state(store_url, agent.station) == (n, n, 0)


def test_broker_killed_and_restarted_loses_nothing(rig: E2ERig) -> None:
    broker = rig.private_broker()
    store_url = f"sqlite:///{rig.tmp / 'central.db'}"
    agent = rig.agent(broker_port=broker.port)
    collector = rig.collector(store_url, broker_port=broker.port).start()
    agent.start()
    assert wait_until(lambda: stored(store_url, agent) > 0, 60), agent.log.read_text()[-2000:]
    time.sleep(1.5)

    # No persistence: the broker forgets the collector's session and every queued message.
    broker.kill()
    before = stored(store_url, agent)
    time.sleep(1.5)
    assert (agent.depth() or 0) > 0
    broker.start()  # same port
    assert wait_until(lambda: stored(store_url, agent) > before, 60), collector.log.read_text()
    time.sleep(1.5)

    agent.drain_and_stop()
    collector.stop()
    n = assert_delivered_once(store_url, [agent])
    assert n >= 100, n
    assert station_state(store_url, agent.station) == (n, n, 0)

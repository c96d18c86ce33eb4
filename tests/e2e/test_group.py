"""Two collectors sharing one subscription (``mqtt.group``) in front of one PostgreSQL database,
fed by three real agents polling simulated devices.

The broker is a Mosquitto of the test's own: a collector serves every station on its broker,
so on the shared broker its counters would include other tests' traffic, and this test checks
the split of the readings between the two collectors exactly.
"""

from __future__ import annotations

import time

import pytest
from tests.e2e.conftest import E2ERig
from tests.e2e.harness import assert_delivered_once, central_rows, wait_until

from sanduan.central.store import open_store

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.process]


def test_two_collectors_of_a_group_store_every_reading_once(pg_url: str, rig: E2ERig) -> None:
    broker = rig.private_broker()
    group = f"g{rig.uid}"
    collectors = [
        rig.collector(pg_url, name, broker_port=broker.port, group=group) for name in ("c1", "c2")
    ]
    # Both start at once, each migrating the empty database (safe from several processes).
    for c in collectors:
        c.start(wait_subscribed=False)
    for c in collectors:
        assert c.proc is not None
        c.proc.wait_for_line("subscribed to", 60)
    agents = [rig.agent(i, broker_port=broker.port).start() for i in range(3)]
    stations = [a.station for a in agents]
    assert wait_until(lambda: {r[0] for r in central_rows(pg_url, stations)} == set(stations), 60)
    time.sleep(5)

    for a in agents:
        a.sim.silence()
    for a in agents:
        a.drain_and_stop()
    counts = [c.stop() for c in collectors]

    n = assert_delivered_once(pg_url, agents)
    assert n >= 3 * 80, n
    # Each collector stored a share, and the shares add up: no reading stored by both.
    new = [c.get("readings_new", 0) for c in counts]
    assert min(new) > 0, counts
    assert min(c.get("batches", 0) for c in counts) > 0, counts
    assert sum(new) == n, counts
    assert sum(c.get("dead_letters", 0) for c in counts) == 0, counts
    s = open_store(pg_url)
    try:
        state = {r.station: (r.max_seq, r.contiguous_seq, r.gaps) for r in s.stations()}
    finally:
        s.close()
    for a in agents:
        committed = a.buffer()[2] - 1
        assert state[a.station] == (committed, committed, ())

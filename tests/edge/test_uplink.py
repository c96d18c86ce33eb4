"""The uplink and forwarder against the real Mosquitto on 127.0.0.1:1883, with a test acker."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.edge.acker import Acker
from tests.edge.agent_harness import AgentThread, fake, station_config, wait_until
from tests.edge.conftest import PrivateBroker

pytestmark = pytest.mark.mosquitto


def db_rows(db: Path) -> dict[int, tuple[int, str, float | None, int]]:
    con = sqlite3.connect(db)
    try:
        return {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in con.execute("SELECT seq, ts, code, value, acked FROM reading")
        }
    finally:
        con.close()


def test_every_committed_reading_is_acked_and_delivered_once(
    mosquitto: int, station_id: str, tmp_path: Path
) -> None:
    db = tmp_path / "b.db"
    polls = 300
    with Acker(port=mosquitto, station=station_id) as acker:
        at = AgentThread(station_config(station_id, db, mosquitto), fake(0.005, limit=polls))
        at.start()
        n = polls * 4
        assert wait_until(lambda: at.agent is not None and at.agent.committed == n)
        assert acker.wait_for(lambda a: len(a.received) == n)
        assert wait_until(
            lambda: (
                at.agent is not None and at.agent.outbox is not None and at.agent.outbox.depth == 0
            )
        )
        at.stop()
        assert acker.seqs(station_id) == set(range(1, n + 1))
        assert set(acker.deliveries.values()) == {1}
        assert acker.conflicts == []
        # The heartbeat reports the buffer; the last status says offline.
        assert acker.wait_for(lambda a: any(not s.online for s in a.statuses))
        online = [s for s in acker.statuses if s.online]
        assert online and online[0].agent_version.startswith("sanduan-edge")
        last = acker.statuses[-1]
        assert (last.online, last.buffer_depth, last.last_acked_seq) == (False, 0, n)
    rows = db_rows(db)
    assert len(rows) == n and all(r[3] == 1 for r in rows.values())


def test_batches_stay_in_the_buffer_without_the_centre_ack(
    private_broker: PrivateBroker, station_id: str, tmp_path: Path
) -> None:
    # A private broker: on the shared one another test's collector may ack every station.
    db = tmp_path / "b.db"
    polls = 50
    n = polls * 4
    port = private_broker.port
    with Acker(port=port, station=station_id, acking=False) as acker:
        cfg = station_config(station_id, db, port, ack_timeout_s=0.5)
        at = AgentThread(cfg, fake(0.005, limit=polls)).start()
        assert acker.wait_for(lambda a: len(a.received) == n)  # the broker PUBACKed them all
        # No ack: after ack_timeout_s the same readings come again, with the same seqs.
        assert acker.wait_for(lambda a: min(a.deliveries.values()) >= 2, timeout=10)
        assert at.agent is not None and at.agent.outbox is not None
        assert at.agent.outbox.depth == n
        at.stop()
        assert acker.conflicts == []
    rows = db_rows(db)
    assert len(rows) == n and not any(r[3] for r in rows.values())


def test_resend_request_answered_with_original_seqs(
    mosquitto: int, station_id: str, tmp_path: Path
) -> None:
    db = tmp_path / "b.db"
    polls = 100
    n = polls * 4
    with Acker(port=mosquitto, station=station_id) as acker:
        at = AgentThread(station_config(station_id, db, mosquitto), fake(0.005, limit=polls))
        at.start()
        assert acker.wait_for(lambda a: len(a.received) == n)
        assert wait_until(
            lambda: (
                at.agent is not None and at.agent.outbox is not None and at.agent.outbox.depth == 0
            )
        )
        before = len(acker.batches)
        (stream,) = acker.streams
        assert at.agent is not None and at.agent.outbox is not None
        assert stream == at.agent.outbox.stream != 0
        # n+1..n+5 were never issued: answered for what exists, the rest ignored (and said so).
        acker.resend(station_id, [(10, 30), (n + 1, n + 5)], "gap", stream=stream)
        assert acker.wait_for(
            lambda a: any(s.extra.get("ignored_messages") == 1 for s in a.statuses)
        )
        assert all(s.extra.get("resend_missing") == 0 for s in acker.statuses)
        assert acker.wait_for(lambda a: sum(b.count for b in a.batches[before:]) >= 21)
        resent = acker.batches[before:]
        seqs = sorted(s for b in resent for s in b.seq)
        assert seqs == list(range(10, 31))
        at.stop()
        # Same seq, same reading: the acker checks every duplicate against the first delivery.
        assert acker.conflicts == []
        assert max(acker.deliveries[(station_id, s)] for s in range(10, 31)) == 2

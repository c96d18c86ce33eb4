"""The whole agent: SIGKILL and restart of a real ``sanduan edge run``, and a broker outage."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.edge.acker import Acker
from tests.edge.agent_harness import AgentThread, fake, station_config, wait_until
from tests.edge.conftest import PrivateBroker, free_port

SANDUAN = str(Path(sys.executable).with_name("sanduan"))


def write_config(path: Path, station: str, db: Path, port: int) -> None:
    path.write_text(
        f"""
[station]
id = "{station}"

[buffer]
path = "{db}"
commit_interval_s = 0.1

[uplink]
broker = "mqtt://127.0.0.1:{port}"
batch_max_age_s = 0.2
heartbeat_s = 1
ack_timeout_s = 3
max_batches_per_s = 200
reconnect_max_s = 1
""",
        encoding="utf-8",
    )


def start_agent(config: Path, fake_spec: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [SANDUAN, "edge", "run", "--config", str(config), "--fake-source", fake_spec],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def stored(db: Path) -> tuple[dict[int, tuple[int, str, float | None]], set[int], int]:
    """(rows by seq, unacknowledged seqs, next seq) of a buffer file."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {}
        unacked = set()
        for seq, ts, code, value, acked in con.execute(
            "SELECT seq, ts, code, value, acked FROM reading"
        ):
            rows[seq] = (ts, code, value)
            if not acked:
                unacked.add(seq)
        nxt = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        return rows, unacked, int(nxt)
    finally:
        con.close()


@pytest.mark.mosquitto
@pytest.mark.process
def test_sigkill_and_restart_loses_nothing_and_keeps_seqs(
    mosquitto: int, station_id: str, tmp_path: Path
) -> None:
    db = tmp_path / "buffer.db"
    cfg = tmp_path / "station.toml"
    log = tmp_path / "agent.log"
    write_config(cfg, station_id, db, mosquitto)
    with Acker(port=mosquitto, station=station_id) as acker:
        for round_ in range(2):
            proc = start_agent(cfg, "0.01:4", log)
            target = (round_ + 1) * 400

            def enough(a: Acker, t: int = target) -> bool:
                return len(a.seqs(station_id)) >= t

            assert acker.wait_for(enough, 60), log.read_text()[-2000:]
            time.sleep(0.13)  # land somewhere between commits, mid-batch
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # A last run that produces nothing new drains the backlog and stops cleanly.
        proc = start_agent(cfg, "1:0", log)
        _, _, nxt = stored(db)
        assert acker.wait_for(lambda a: a.seqs(station_id) >= set(range(1, nxt)), 60), (
            log.read_text()[-2000:]
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    rows, unacked, nxt = stored(db)
    assert nxt > 800
    # Every committed reading reached the centre; the buffer holds every seq ever assigned.
    assert acker.seqs(station_id) == set(range(1, nxt)) == set(rows)
    assert not unacked
    # A seq always stands for the same reading, however often it was sent.
    assert acker.conflicts == []
    for seq, (ts, code, value) in rows.items():
        got = acker.received[(station_id, seq)]
        assert (got[0], got[1], got[2]) == (ts, code, value)


@pytest.mark.mosquitto
@pytest.mark.process
def test_broker_outage_polling_goes_on_and_backlog_drains(
    private_broker: PrivateBroker, station_id: str, tmp_path: Path
) -> None:
    db = tmp_path / "b.db"
    port = private_broker.port
    acker = Acker(port=port, station=station_id).start()
    at = AgentThread(station_config(station_id, db, port), fake(0.01)).start()
    try:
        assert acker.wait_for(lambda a: len(a.received) >= 200)
        private_broker.kill()
        assert at.agent is not None
        at_outage = at.agent.committed
        time.sleep(3)
        during = at.agent.committed
        assert during - at_outage > 600  # 4 readings every 10 ms went on being stored
        assert at.agent.outbox is not None and at.agent.outbox.depth > 600
        private_broker.start()  # same port
        assert wait_until(
            lambda: (
                at.agent is not None and at.agent.uplink is not None and at.agent.uplink.connected
            ),
            15,
        )
        # The backlog drains: every reading stored during the outage arrives.
        assert acker.wait_for(lambda a: a.seqs(station_id) >= set(range(1, during + 1)), 40)
    finally:
        at.stop()
        acker.stop()
    assert acker.conflicts == []


def test_an_analyzer_result_read_again_after_a_restart_is_not_stored_twice(
    tmp_path: Path,
) -> None:
    from dataclasses import dataclass

    from sanduan.edge.app import Sink
    from sanduan.edge.core.model import PolledValue
    from sanduan.shared.clock import SystemClock
    from sanduan.shared.model import Flag

    cycle_ms = 1_767_225_600_000

    @dataclass
    class Analyzer:
        """Reads the same result (same result time) again and again, like a bus poller whose
        memory of the last result time was lost in a restart."""

        clock: SystemClock
        reads: int = 0

        async def run(self, sink: Sink) -> None:
            while True:
                sink([PolledValue("nh3n", "w21003", cycle_ms, 0.42, Flag.N)])
                self.reads += 1
                await asyncio.sleep(0.02)

        def device_stats(self) -> tuple[dict[str, int], dict[str, float]]:
            return {"nh3n": 0}, {}

    db = tmp_path / "b.db"
    cfg = station_config("st-restart", db, free_port())  # no broker: only the buffer matters

    def run_once() -> int:
        source = Analyzer(SystemClock())
        at = AgentThread(cfg, source).start()  # type: ignore[arg-type]
        assert wait_until(lambda: source.reads >= 10)
        agent = at.agent
        assert agent is not None
        assert wait_until(lambda: agent.outbox is not None and agent.outbox.repeats >= 5)
        at.stop()
        return agent.committed

    assert run_once() == 1
    assert run_once() == 0  # restarted: the same result is a repeat
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT seq, ts, code FROM reading").fetchall()
    finally:
        con.close()
    assert rows == [(1, cycle_ms, "w21003")]


def test_fake_source_polls_get_distinct_times_even_on_a_stalled_clock() -> None:
    from dataclasses import dataclass

    from sanduan.edge.app import FakeSource
    from sanduan.edge.core.model import PolledValue

    @dataclass
    class Stalled:
        speed: float = 1.0

        def time(self) -> float:
            return 1_767_225_600.0

        def monotonic(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None:
            await asyncio.sleep(0)

        def real_seconds(self, seconds: float) -> float:
            return seconds

    got: list[list[PolledValue]] = []
    source = FakeSource(Stalled(), 0.001, ("w01001", "w01009"), limit=5)

    async def go() -> None:
        task = asyncio.create_task(source.run(got.append))
        while source.polls < 5:  # noqa: ASYNC110 (the source has no completion event)
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(go())
    times = [poll[0].ts_ms for poll in got]
    assert times == [1_767_225_600_000 + i for i in range(5)]
    assert all(len({v.ts_ms for v in poll}) == 1 for poll in got)

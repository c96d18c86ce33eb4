"""A collector killed with SIGKILL in the middle of a burst, then restarted (both stores): every
committed batch is acknowledged, none is stored twice, none is lost -- without any resend from
the stations, only from the broker's session."""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.brokers import PrivateBroker

from sanduan.central.store import Store
from sanduan.shared import topics
from sanduan.shared.wire import Ack, Batch, encode

from .conftest import CollectorProc, Station, wait_until, write_config

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

T0 = 1_767_225_600_000
PER_BATCH = 5


def batch(station: str, k: int, stream: int) -> Batch:
    seqs = list(range(1 + k * PER_BATCH, 1 + (k + 1) * PER_BATCH))
    return Batch.from_columns(
        station,
        k + 1,
        T0,
        seq=seqs,
        ts_ms=[T0 + q * 60_000 for q in seqs],
        code=["w01001"] * PER_BATCH,
        values=[7.0 + (q % 10) / 10 for q in seqs],
        stream=stream,
    )


@pytest.mark.slow
def test_sigkill_mid_burst_then_restart_acks_every_committed_batch(
    backend: str,
    store_url: str,
    store: Store,
    broker: PrivateBroker,
    tmp_path: Path,
    uid: str,
    station: Callable[[list[str]], Station],
    collector_proc: Callable[..., CollectorProc],
) -> None:
    stations = [f"k{i}-{uid}" for i in range(4)]
    # 3,000 batches: enough for the old collector to lose acks on SQLite; PostgreSQL commits
    # slower on a shared machine, so its burst is shorter (the kill still lands mid-burst).
    per_station = 750 if backend == "sqlite" else 400
    total = len(stations) * per_station
    cfg = write_config(tmp_path / "central.toml", store_url, broker.port)
    cid = f"col-{uid}"
    peer = station(stations)
    a = collector_proc(cfg, cid)
    a.wait_for("subscribed to")
    infos = []
    for k in range(per_station):
        for i, st in enumerate(stations):
            b = batch(st, k, stream=0 if i % 2 else 1000 + i)  # v1 and v2 stations
            infos.append(peer.publish(topics.batch_topic(st), encode(b), wait=False))
    for info in infos:
        info.wait_for_publish(30)
    # Mid-burst: a third of the readings committed, then SIGKILL.
    assert wait_until(lambda: store.count_readings(stations) >= total * PER_BATCH // 3, 60), (
        "".join(a.log)
    )
    a.p.send_signal(signal.SIGKILL)
    a.p.wait(5)
    committed_at_kill = store.count_readings(stations)
    assert committed_at_kill < total * PER_BATCH, "the burst was over before the kill"

    b2 = collector_proc(cfg, cid)
    acked: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 90
    while len(acked) < total and time.monotonic() < deadline:
        try:
            m = peer.get(max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if isinstance(m, Ack):
            acked.add((m.station, m.batch_seq))
    missing = {(st, k + 1) for st in stations for k in range(per_station)} - acked
    assert not missing, f"{len(missing)} batch(es) never acknowledged, e.g. {sorted(missing)[:5]}"
    # 0 lost, 0 stored twice (the count equals the number of distinct readings sent).
    assert store.count_readings(stations) == total * PER_BATCH
    dup = store.query(
        "SELECT COUNT(*) FROM (SELECT station, stream, seq FROM readings"
        " GROUP BY station, stream, seq HAVING COUNT(*) > 1) d"
    )
    assert dup == [(0,)]
    assert b2.terminate() == 0

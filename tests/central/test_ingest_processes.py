"""Collectors as real processes: killed between commit and ack, and two sharing a subscription."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sanduan.central.store import Store, open_store
from sanduan.shared import topics
from sanduan.shared.wire import Ack, Batch, encode

from .conftest import MqttPeer

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

T0 = 1_767_225_600_000
ENTRY = "from sanduan.cli import main; main()"


def batch(station: str, first: int, n: int, bseq: int) -> Batch:
    seqs = list(range(first, first + n))
    return Batch.from_columns(
        station,
        bseq,
        T0,
        seq=seqs,
        ts_ms=[T0 + q * 60_000 for q in seqs],
        code=["w01001"] * n,
        values=[7.0] * n,
    )


class Proc:
    """``sanduan central run`` in a child process, its log lines collected."""

    def __init__(self, config: Path, client_id: str, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                ENTRY,
                "central",
                "run",
                "-c",
                str(config),
                "--client-id",
                client_id,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no log line matching {pattern!r}; log:\n{''.join(self.log)}"
                ) from None
            if re.search(pattern, line):
                return line

    def terminate(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(10)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def write_config(
    path: Path, store_url: str, group: str | None = None, port: int | None = None
) -> Path:
    group_line = f'group = "{group}"\n' if group else ""
    broker_line = f'broker = "mqtt://127.0.0.1:{port}"\n' if port else ""
    path.write_text(
        f'[central]\nstore = "{store_url}"\n\n'
        f"[mqtt]\nsession_expiry_s = 30\n{group_line}{broker_line}\n"
        "[ingest]\ngap_timeout_s = 60\n",
        encoding="utf-8",
    )
    return path


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_killed_between_commit_and_ack_then_restarted(
    store_url: str,
    store: Store,
    tmp_path: Path,
    uid: str,
    procs: list[Proc],
    mqtt_peer: Callable[..., MqttPeer],
    broker_port: int,
) -> None:
    st_id = f"st-{uid}"
    cid = f"col-{uid}"
    cfg = write_config(tmp_path / "central.toml", store_url, port=broker_port)
    peer = mqtt_peer([st_id])
    a = Proc(cfg, cid, {"SANDUAN_CENTRAL_FAULT": "sleep-after-commit:30"})
    procs.append(a)
    a.wait_for("subscribed to")
    b = batch(st_id, 1, 200, bseq=1)
    peer.publish(topics.batch_topic(st_id), encode(b))
    # Stored (committed) but not acknowledged: now kill it.
    assert wait_until(lambda: store.count_readings([st_id]) == 200), "".join(a.log)
    a.p.send_signal(signal.SIGKILL)
    a.p.wait(5)
    with pytest.raises(queue.Empty):
        peer.get(0.3)

    # The restarted collector gets the unacknowledged message again from its session.
    b2 = Proc(cfg, cid)
    procs.append(b2)
    b2.wait_for("subscribed to")  # a loaded machine may take seconds to start a process
    try:
        ack = peer.get(10)
    except queue.Empty:
        raise AssertionError("no ack after the restart; log:\n" + "".join(b2.log)) from None
    assert isinstance(ack, Ack)
    assert (ack.batch_seq, ack.first_seq, ack.last_seq) == (1, 1, 200)
    # And the station's own resend is acknowledged too, still stored once.
    peer.publish(topics.batch_topic(st_id), encode(b))
    ack = peer.get(5)
    assert isinstance(ack, Ack)
    assert ack.batch_seq == 1
    assert store.count_readings([st_id]) == 200
    assert b2.terminate() == 0
    assert any("stopped" in line for line in b2.log)


@pytest.mark.postgres
def test_two_collectors_share_one_subscription(
    pg_url_factory: Callable[[], str],
    tmp_path: Path,
    uid: str,
    procs: list[Proc],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    broker_port: int,
) -> None:
    url = pg_url_factory()
    open_store(url, migrate=True).close()
    cfg = write_config(tmp_path / "central.toml", url, group=f"g{uid[-20:]}", port=broker_port)
    stations = [f"s{i}-{uid}" for i in range(4)]
    peer = mqtt_peer(stations)
    one = Proc(cfg, f"c1-{uid}")
    two = Proc(cfg, f"c2-{uid}")
    procs += [one, two]
    one.wait_for("subscribed to")
    two.wait_for("subscribed to")
    per_station = 15
    for k in range(per_station):
        for st_id in stations:
            peer.publish(topics.batch_topic(st_id), encode(batch(st_id, 1 + k * 100, 100, k + 1)))
    # Some batches twice, as a station that missed its ack would send them.
    for st_id in stations:
        peer.publish(topics.batch_topic(st_id), encode(batch(st_id, 1, 100, 1)))
    expected = per_station * len(stations) + len(stations)
    got: list[Ack] = []
    deadline = time.monotonic() + 20
    while len(got) < expected and time.monotonic() < deadline:
        m = peer.get(max(0.01, deadline - time.monotonic()))
        if isinstance(m, Ack):
            got.append(m)
    assert len(got) == expected
    assert one.terminate() == 0
    assert two.terminate() == 0
    shares = []
    for p in (one, two):
        line = next(line for line in p.log if "stopped:" in line)
        shares.append(int(re.search(r"batches=(\d+)", line).group(1)))  # type: ignore[union-attr]
    assert sum(shares) == expected
    assert min(shares) > 0, f"one collector got nothing: {shares}"
    s = open_store(url)
    try:
        assert s.count_readings(stations) == per_station * 100 * len(stations)
        rows = [r for r in s.stations() if r.station in stations]
        assert len(rows) == len(stations)
        for row in rows:
            assert (row.max_seq, row.contiguous_seq, row.gaps) == (per_station * 100,) * 2 + ((),)
    finally:
        s.close()

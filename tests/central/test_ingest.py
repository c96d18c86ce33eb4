"""The collector against the real Mosquitto: acks after commit, duplicates, dead letters, gaps."""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanduan.central.ingest import Collector, Processor, replay_files
from sanduan.central.store import StationRow, Store, open_store
from sanduan.shared import topics
from sanduan.shared.config import CentralConfig, parse_model
from sanduan.shared.wire import Ack, Batch, Event, ResendRequest, Status, encode

from .conftest import MqttPeer

pytestmark = pytest.mark.mosquitto

T0 = 1_767_225_600_000


def batch(station: str, seqs: list[int], bseq: int = 1, value: float = 7.1) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        T0,
        seq=seqs,
        ts_ms=[T0 + q * 60_000 for q in seqs],
        code=["w01001" if q % 2 else "w21003" for q in seqs],
        values=[value if q % 2 else 0.5 for q in seqs],
    )


def config(uid: str, port: int, **ingest: Any) -> CentralConfig:
    data: dict[str, Any] = {
        "mqtt": {
            "client_id": f"col-{uid}",
            "session_expiry_s": 30,
            "broker": f"mqtt://127.0.0.1:{port}",
        },
        "ingest": {"gap_timeout_s": 0.3, "resend_interval_s": 0.5, **ingest},
    }
    return parse_model(CentralConfig, data, "<test>")


@pytest.fixture
def collector(store_url: str, uid: str, broker_port: int) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def make(**ingest: Any) -> Collector:
        c = Collector(config(uid, broker_port, **ingest), store_url=store_url)
        c.start()
        assert c.wait_connected(5), "collector did not connect to the broker"
        started.append(c)
        return c

    yield make
    for c in started:
        c.stop()


def acks(peer: MqttPeer, n: int, timeout: float = 5.0) -> list[Ack]:
    out: list[Ack] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = peer.get(max(0.01, deadline - time.monotonic()))
        if isinstance(m, Ack):
            out.append(m)
    return out


def no_message(peer: MqttPeer, wait: float = 0.5) -> bool:
    try:
        peer.get(wait)
    except queue.Empty:
        return True
    return False


def test_batch_is_acked_after_commit_and_duplicates_are_acked_again(
    collector: Callable[..., Collector],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    store: Store,
    uid: str,
) -> None:
    st_id = f"st-{uid}"
    collector()
    peer = mqtt_peer([st_id])
    seen_at_ack: list[tuple[int, int]] = []

    def on_ack(m: object) -> None:
        # Read the database the moment the ack arrives: the batch must already be there.
        assert isinstance(m, Ack)
        (n,) = store.query(
            "SELECT COUNT(*) FROM readings WHERE station = ? AND seq BETWEEN ? AND ?",
            (m.station, m.first_seq, m.last_seq),
        )[0]
        seen_at_ack.append((m.batch_seq, n))

    peer.on_ack = on_ack
    b = batch(st_id, list(range(1, 101)), bseq=1)
    peer.publish(topics.batch_topic(st_id), encode(b))
    (ack,) = acks(peer, 1)
    assert (ack.station, ack.batch_seq, ack.first_seq, ack.last_seq) == (st_id, 1, 1, 100)
    assert ack.ranges == ()
    assert seen_at_ack == [(1, 100)]
    # The same batch again (a station that missed the ack) and an overlapping one.
    peer.publish(topics.batch_topic(st_id), encode(b))
    peer.publish(topics.batch_topic(st_id), encode(batch(st_id, list(range(51, 151)), bseq=2)))
    a2, a3 = acks(peer, 2)
    assert (a2.batch_seq, a3.batch_seq) == (1, 2)
    assert store.count_readings([st_id]) == 150
    assert seen_at_ack == [(1, 100), (1, 100), (2, 100)]


def test_status_event_and_last_will(
    collector: Callable[..., Collector],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    store: Store,
    uid: str,
) -> None:
    st_id = f"st-{uid}"
    c = collector()
    peer = mqtt_peer([st_id])
    peer.publish(topics.status_topic(st_id), encode(Status(st_id, T0, agent_version="0.9")))
    ev = Event(st_id, T0, 3, "device-fault", "NH3-N analyser fault", code="w21003")
    peer.publish(topics.event_topic(st_id), encode(ev))
    peer.publish(topics.event_topic(st_id), encode(ev))
    peer.publish(topics.status_topic(st_id), encode(Status.last_will(st_id, T0 - 5)))

    def ours() -> list[StationRow]:
        return [r for r in store.stations() if r.station == st_id]

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (ours() and ours()[0].online is False):
        time.sleep(0.05)
    (row,) = ours()
    assert (row.online, row.agent_version) == (False, "0.9")
    assert c.stats()["events"] >= 2
    assert store.query("SELECT COUNT(*) FROM events WHERE station = ?", [st_id]) == [(1,)]


def test_bad_messages_are_dead_lettered_never_acked_and_the_collector_carries_on(
    collector: Callable[..., Collector],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    store: Store,
    uid: str,
) -> None:
    st_id = f"st-{uid}"
    other = f"xx-{uid}"
    c = collector(max_message_bytes=4096)
    peer = mqtt_peer([st_id, other])
    good = encode(batch(st_id, [1, 2, 3]))
    bad = {
        "garbage": (topics.batch_topic(st_id), b"\xc1\x00garbage"),
        "truncated": (topics.batch_topic(st_id), good[:-3]),
        "station mismatch": (topics.batch_topic(other), good),
        "out of range": (topics.batch_topic(st_id), encode(batch(st_id, [7, 9], value=40.0))),
        "wrong kind": (topics.batch_topic(st_id), encode(Status(st_id, T0))),
        "ack upstream": (topics.event_topic(st_id), encode(Ack(st_id, 1, 1, 1, T0))),
        "too big": (topics.batch_topic(st_id), b"\x80" * 5000),
    }
    for t, payload in bad.values():
        peer.publish(t, payload)
    peer.publish(topics.batch_topic(st_id), good)
    (ack,) = acks(peer, 1)
    assert ack.station == st_id
    assert no_message(peer, 0.3)
    rows = store.query("SELECT reason, detail FROM dead_letters ORDER BY id")
    assert len(rows) == len(bad), rows
    assert [r[0] for r in rows] == [
        "undecodable",
        "undecodable",
        "origin",
        "invalid",
        "invalid",
        "invalid",
        "oversize",
    ]
    text = "\n".join(r[1] for r in rows)
    needles = ("not msgpack", "truncated", "does not match the topic", "physical range", "above")
    for needle in needles:
        assert needle in text
    raws = {bytes(r[0]) for r in store.query("SELECT raw FROM dead_letters")}
    assert b"\xc1\x00garbage" in raws
    # The oversize payload is kept only up to 4 KiB, with its full size and digest.
    (big,) = store.query(
        "SELECT length(raw), size_bytes, sha256 FROM dead_letters WHERE reason = 'oversize'"
    )
    assert big == (4096, 5000, hashlib.sha256(b"\x80" * 5000).hexdigest())
    assert store.count_readings([st_id]) == 3
    assert store.count_readings([other]) == 0
    assert c.stats()["dead_letters"] == len(bad)


def test_gap_triggers_resend_requests_until_filled(
    collector: Callable[..., Collector],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    store: Store,
    uid: str,
) -> None:
    st_id = f"st-{uid}"
    collector()
    peer = mqtt_peer([st_id])
    peer.publish(topics.batch_topic(st_id), encode(batch(st_id, [1, 2, 3, 8, 9], bseq=1)))
    requests: list[ResendRequest] = []
    deadline = time.monotonic() + 5
    while len(requests) < 2 and time.monotonic() < deadline:
        m = peer.get(deadline - time.monotonic())
        if isinstance(m, ResendRequest):
            requests.append(m)
    assert [r.ranges for r in requests] == [((4, 7),), ((4, 7),)]
    peer.publish(topics.batch_topic(st_id), encode(batch(st_id, [4, 5, 6, 7], bseq=2)))
    while True:  # the fill is committed when its ack comes
        m = peer.get(5)
        if isinstance(m, Ack) and m.batch_seq == 2:
            break
    time.sleep(0.3)  # a request sent just before the commit may still be on its way
    while not peer.received.empty():
        peer.received.get()
    assert no_message(peer, 1.0), "resend requests continued after the gap was filled"
    (row,) = [r for r in store.stations() if r.station == st_id]
    assert (row.contiguous_seq, row.gaps) == (9, ())


def test_replay_files(store_url: str, tmp_path: Path, uid: str) -> None:
    st_id = f"st-{uid}"
    files = []
    for i, payload in enumerate(
        [encode(batch(st_id, [1, 2])), encode(batch(st_id, [1, 2])), b"nonsense"]
    ):
        f = tmp_path / f"m{i}.bin"
        f.write_bytes(payload)
        files.append(f)
    s = open_store(store_url)
    counts = replay_files(s, [*files, tmp_path / "missing.bin"], max_message_bytes=1 << 20)
    assert counts["batches"] == 2
    assert counts["readings_new"] == 2
    assert counts["readings_duplicate"] == 2
    assert counts["dead_letters"] == 1
    assert counts["unreadable"] == 1
    assert s.query("SELECT topic FROM dead_letters") == [(f"replay:{files[2]}",)]
    s.close()


# --- robustness of the per-message path (no broker needed) -------------------------------


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[Processor]:
    s = open_store(f"sqlite:///{tmp_path / 'p.db'}", migrate=True)
    yield Processor(s, max_message_bytes=1 << 16)
    s.close()


GOOD = encode(batch("fuzz", [1, 2, 3, 4]))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400))
def test_random_bytes_never_escape(processor: Processor, data: bytes) -> None:
    out = processor.handle(topics.batch_topic("fuzz"), data)
    assert out.ack is None
    assert out.dead


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255), st.booleans())
def test_mutated_valid_batches_are_stored_or_dead_lettered(
    processor: Processor, pos: int, byte: int, cut: bool
) -> None:
    data = GOOD[:pos] if cut else GOOD[:pos] + bytes([byte]) + GOOD[pos + 1 :]
    out = processor.handle(topics.batch_topic("fuzz"), data)
    # A valid batch of station "fuzz" (acked), a dead letter, or a batch partly acked: some of
    # its readings refused for good (a changed value is a conflict with the readings stored by
    # an earlier example, a changed stamp may be implausible); never an exception.
    assert out.ack is not None or out.dead is not None
    if out.ack is not None:
        assert out.ack.station == "fuzz"
        if out.dead is not None:
            assert out.dead in {"conflict", "timestamp"}
            assert out.ack.ranges != ()


def test_nan_values_pass_and_unknown_codes_have_no_range(processor: Processor) -> None:
    b = Batch.from_columns(
        "fuzz",
        1,
        T0,
        seq=[1, 2],
        ts_ms=[T0, T0],
        code=["w01001", "x-custom"],
        values=[math.nan, 1e9],
    )
    assert processor.handle(topics.batch_topic("fuzz"), encode(b)).ack is not None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_dead_collector_thread_ends_the_run_with_a_failure(
    store_url: str, uid: str, broker_port: int
) -> None:
    """A collector whose thread dies must not keep running and storing nothing."""
    from sanduan.shared.errors import SanduanError

    c = Collector(config(uid, broker_port), store_url=store_url)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            c.run(stop)
        except SanduanError as e:
            failures.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert c.wait_connected(10)

    def boom() -> None:
        raise RuntimeError("injected")

    c._spawn("boom", boom)
    t.join(15)
    assert not t.is_alive(), "the collector kept running after a thread died"
    assert failures and "thread boom failed: RuntimeError: injected" in str(failures[0])
    stop.set()


def test_a_collector_started_with_an_open_gap_asks_and_keeps_storing(
    collector: Callable[..., Collector],
    mqtt_peer: Callable[[list[str]], MqttPeer],
    store: Store,
    uid: str,
) -> None:
    """Worker 0's first gap check publishes a resend request: the MQTT client must exist by
    then (a collector restarted with a gap open once lost its only worker and stored nothing)."""
    st_id = f"st-{uid}"
    store.store_batch(batch(st_id, [1, 2, 3, 10, 11]), int(time.time() * 1000) - 10_000)  # 4..9
    peer = mqtt_peer([st_id])
    c = collector()
    deadline = time.monotonic() + 10
    while True:
        m = peer.get(max(0.01, deadline - time.monotonic()))
        if isinstance(m, ResendRequest):
            assert m.ranges == ((4, 9),)
            break
    peer.publish(topics.batch_topic(st_id), encode(batch(st_id, list(range(4, 10)), bseq=2)))
    (ack,) = acks(peer, 1, timeout=10)
    assert (ack.batch_seq, ack.first_seq, ack.last_seq) == (2, 4, 9)
    assert store.count_readings([st_id]) == 11
    assert c.failure is None

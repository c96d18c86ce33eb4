"""One station's credentials used as a broken or hostile station would, against a collector
running as a real process on a broker of the test's own (both stores where the store matters):
a replaced buffer, conflicting content, forged seqs, implausible stamps, poison batches,
oversize payloads and floods. Nothing silent, nothing else stalled, memory bounded."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgpack
import pytest
from tests.brokers import PrivateBroker

from sanduan.central.store import DEAD_LETTER_KEEP, Store
from sanduan.shared import topics
from sanduan.shared.wire import (
    Ack,
    Batch,
    Nack,
    NackReason,
    ResendRequest,
    encode,
    new_stream_id,
)

from .conftest import CollectorProc, Station, wait_until, write_config

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

T0 = int(time.time() * 1000) - 86_400_000


def batch(
    station: str,
    seqs: Sequence[int],
    *,
    stream: int = 0,
    bseq: int = 1,
    value: float = 7.1,
    ts: Sequence[int] | None = None,
) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        T0,
        seq=list(seqs),
        ts_ms=list(ts) if ts is not None else [T0 + q * 1000 for q in seqs],
        code=["w01001"] * len(seqs),
        values=[value] * len(seqs),
        stream=stream,
    )


M = TypeVar("M", Ack, Nack)


def next_of(peer: Station, cls: type[M], timeout: float = 10.0) -> M:
    """The next message of type ``cls`` the station gets (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        m = peer.get(max(0.01, deadline - time.monotonic()))
        if isinstance(m, cls):
            return m


def test_replaced_buffer_conflicts_forged_seqs_and_stamps_over_the_wire(
    store_url: str,
    store: Store,
    broker: PrivateBroker,
    tmp_path: Path,
    uid: str,
    station: Callable[[list[str]], Station],
    collector_proc: Callable[..., CollectorProc],
) -> None:
    st, forger = f"s-{uid}", f"f-{uid}"
    cfg = write_config(tmp_path / "c.toml", store_url, broker.port)
    col = collector_proc(cfg, f"col-{uid}")
    col.wait_for("subscribed to")
    peer = station([st, forger])
    old = new_stream_id()
    first = batch(st, range(1, 11), stream=old)
    peer.publish(topics.batch_topic(st), encode(first))
    ack = next_of(peer, Ack)
    assert isinstance(ack, Ack)
    assert (ack.stream, ack.batch_seq, ack.ranges) == (old, 1, ())
    peer.publish(topics.batch_topic(st), encode(batch(st, range(21, 31), stream=old, bseq=2)))
    next_of(peer, Ack)  # 11..20 are now a gap

    # Same seqs, other content: a nack, no ack, the original kept.
    peer.publish(
        topics.batch_topic(st), encode(batch(st, range(1, 6), stream=old, bseq=3, value=9.0))
    )
    nack = next_of(peer, Nack)
    assert isinstance(nack, Nack)
    assert (nack.reason, nack.ranges, nack.batch_seq) == (NackReason.CONFLICT, ((1, 5),), 3)
    assert not [m for m in peer.drain(0.3) if isinstance(m, Ack)]
    # A byte-identical replay is acknowledged again.
    peer.publish(topics.batch_topic(st), encode(first))
    assert next_of(peer, Ack).batch_seq == 1

    # The gateway's buffer is replaced: a new stream from seq 1 (new samples: later times), all
    # stored, the gap counted.
    new = new_stream_id()
    later = [T0 + 100_000 + q * 1000 for q in range(1, 11)]
    peer.publish(
        topics.batch_topic(st), encode(batch(st, range(1, 11), stream=new, value=7.3, ts=later))
    )
    ack = next_of(peer, Ack)
    assert isinstance(ack, Ack)
    assert (ack.stream, ack.ranges) == (new, ())
    assert store.count_readings([st]) == 30
    assert store.lost_with_buffer() == {st: 10}
    kinds = [r[0] for r in store.query("SELECT kind FROM events WHERE station = ?", [st])]
    assert sorted(kinds) == ["conflict", "stream-changed"]

    # Stamped in 2100 and in 1970: nacked "timestamp", nothing stored.
    stamps = [4_102_444_800_000, 1000]
    peer.publish(topics.batch_topic(st), encode(batch(st, [11, 12], stream=new, bseq=2, ts=stamps)))
    nack = next_of(peer, Nack)
    assert isinstance(nack, Nack)
    assert (nack.reason, nack.ranges) == (NackReason.TIMESTAMP, ((11, 12),))

    # A v1 batch with a seq near 2**63: a dead letter, and no resend request at all.
    peer.publish(topics.batch_topic(forger), encode(batch(forger, [2**63 - 10], ts=[T0])))
    time.sleep(1.0)
    assert not [m for m in peer.drain(0.5) if isinstance(m, ResendRequest | Ack)]
    reasons = sorted(d.reason for d in store.dead_letters())
    assert reasons == ["conflict", "invalid", "timestamp"]
    assert col.p.poll() is None, "".join(col.log)


def test_a_poison_batch_does_not_hold_up_other_stations(
    store_url: str,
    store: Store,
    backend: str,
    broker: PrivateBroker,
    tmp_path: Path,
    uid: str,
    station: Callable[[list[str]], Station],
    collector_proc: Callable[..., CollectorProc],
) -> None:
    poison, good = f"p-{uid}", f"g-{uid}"
    # The store refuses the poison station's readings, as PostgreSQL refused a NUL in a text.
    if backend == "sqlite":
        store.query(
            f"CREATE TRIGGER poison BEFORE INSERT ON readings WHEN NEW.station = '{poison}'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned reading'); END"
        )
    else:
        store.query(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.station = '{poison}' THEN RAISE EXCEPTION 'poisoned reading'; END IF;"
            " RETURN NEW; END $$"
        )
        store.query(
            "CREATE TRIGGER poison BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    cfg = write_config(tmp_path / "c.toml", store_url, broker.port)
    col = collector_proc(cfg, f"col-{uid}")
    col.wait_for("subscribed to")
    peer = station([poison, good])
    for k in range(5):  # the poison station keeps sending (v1: no nack stops it)
        peer.publish(topics.batch_topic(poison), encode(batch(poison, [1, 2], bseq=k + 1)))
    t0 = time.monotonic()
    peer.publish(topics.batch_topic(good), encode(batch(good, [1, 2, 3])))
    while True:
        m = next_of(peer, Ack, timeout=30)
        if m.station == good:
            break
    delay = time.monotonic() - t0
    print(f"\nthe good station's batch was acknowledged {delay:.2f} s after it was sent")
    assert delay < 5.0
    assert store.count_readings([good]) == 3
    assert wait_until(lambda: len(store.dead_letters(station=poison)) == 5)
    dls = store.dead_letters(station=poison)
    assert {d.reason for d in dls} == {"store"}
    assert all("poisoned reading" in (d.detail or "") for d in dls)
    assert store.count_readings([poison]) == 0


def huge_batch(station: str, n: int) -> bytes:
    """A v1 batch of ``n`` readings, packed by hand (``encode`` refuses more than 10,000)."""
    packed: bytes = msgpack.packb(
        {
            "v": 1, "k": "batch", "station": station, "bseq": 1, "first": 1, "last": n,
            "created": T0, "n": n, "seq": [1] * n, "ts": [1000] * n, "codes": ["w01001"],
            "ci": [0] * n, "val": [7.0] * n, "flag": "N" * n, "grade": [1] * n,
        }
    )  # fmt: skip
    return packed


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_oversize_payloads_and_floods_keep_memory_and_disk_bounded(
    store_url: str,
    store: Store,
    broker: PrivateBroker,
    tmp_path: Path,
    uid: str,
    station: Callable[[list[str]], Station],
    collector_proc: Callable[..., CollectorProc],
) -> None:
    bad, good = f"x-{uid}", f"g-{uid}"
    cfg = write_config(tmp_path / "c.toml", store_url, broker.port)
    col = collector_proc(cfg, f"col-{uid}")
    col.wait_for("subscribed to")
    base_rss, _ = col.rss_kib()
    peer = station([bad, good])
    peak = 0
    sent = 0
    sent_bytes = 0

    def send(payload: bytes) -> None:
        nonlocal peak, sent, sent_bytes
        peer.publish(topics.batch_topic(bad), payload)
        sent += 1
        sent_bytes += len(payload)
        peak = max(peak, col.rss_kib()[0])

    garbage = os.urandom(30 * 1024 * 1024)
    for _ in range(3):
        send(garbage)  # 30 MB garbage
    million = huge_batch(bad, 1_000_000)
    for _ in range(2):
        send(million)  # a 1e6-reading batch
    for i in range(300):  # 900 kB of garbage, under the size limit: decoded and refused
        send(os.urandom(16) + bytes(900 * 1024 - 16) if i % 30 == 0 else os.urandom(512))
    peer.publish(topics.batch_topic(good), encode(batch(good, [1, 2, 3])))
    while True:
        m = next_of(peer, Ack, timeout=60)
        if m.station == good:
            break
    _, hwm = col.rss_kib()
    peak = max(peak, hwm)
    print(
        f"\ncollector RSS: {base_rss / 1024:.0f} MiB idle, peak {peak / 1024:.0f} MiB while"
        f" {sent} hostile messages ({sent_bytes / 2**20:.0f} MiB) were refused"
    )
    assert peak < base_rss + 200 * 1024, f"peak RSS {peak} KiB, idle {base_rss} KiB"
    dls = store.dead_letters(station=bad)
    assert len(dls) <= 100  # the default budget per station and hour
    assert [d.reason for d in dls[:5]] == ["oversize"] * 5
    assert {d.size_bytes for d in dls[:3]} == {len(garbage)}
    (kept,) = store.query("SELECT MAX(length(raw)) FROM dead_letters")
    assert kept[0] <= DEAD_LETTER_KEEP
    assert col.terminate() == 0
    (row,) = [r for r in store.stations() if r.station == bad]
    assert row.rejects_over_budget == sent - len(dls)
    assert store.count_readings([good]) == 3

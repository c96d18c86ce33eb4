"""The collector's ``/metrics`` and ``/healthz`` over HTTP, following what it ingests."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.brokers import PrivateBroker, free_port
from tests.metrics_http import get, raw, scrape

from sanduan.central.ingest import Collector
from sanduan.central.metrics import CentralSnapshot, StoreFigures, central_families, central_health
from sanduan.shared import topics
from sanduan.shared.config import CentralConfig, parse_model
from sanduan.shared.metrics import Histogram, render
from sanduan.shared.wire import Ack, Batch, Status, encode

from .conftest import MqttPeer


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_families_and_health_of_a_snapshot() -> None:
    h = Histogram([1.0, 10.0])
    h.observe_many([0.5, 3.0])
    snap = CentralSnapshot(
        counts={"readings_new": 7, "batches": 2},
        dead_letters={"undecodable": 1, "oversize": 2},
        lag=h.snapshot(),
        queue_depth=3,
        broker_connected=True,
        store=StoreFigures(stations=4, online=3, gaps=2, missing_by_station={"S2": 5, "S1": 1}),
    )
    text = render(central_families(snap))
    assert "sanduan_central_readings_stored_total 7\n" in text
    assert (
        'sanduan_central_dead_letters_total{reason="oversize"} 2\n'
        'sanduan_central_dead_letters_total{reason="undecodable"} 1\n'
    ) in text
    assert 'sanduan_central_lag_seconds_bucket{le="10"} 2\n' in text
    assert (
        'sanduan_central_station_gap_readings_missing{station="S1"} 1\n'
        'sanduan_central_station_gap_readings_missing{station="S2"} 5\n'
    ) in text
    assert "sanduan_central_gap_readings_missing 6\n" in text
    assert "sanduan_central_stations_online 3\n" in text
    assert central_health(snap).ok
    down = CentralSnapshot(
        counts={},
        dead_letters={},
        lag=h.snapshot(),
        queue_depth=0,
        broker_connected=False,
        store=None,
        store_error="connection refused",
    )
    text = render(central_families(down))
    assert "sanduan_central_store_up 0\n" in text
    assert "sanduan_central_stations_online" not in text
    assert central_health(down).reasons == (
        "not connected to the broker",
        "the store does not answer: connection refused",
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    d = tmp_path / "broker"
    d.mkdir()
    b = PrivateBroker(d).start()
    yield b
    b.kill()


def batch(station: str, seqs: list[int], bseq: int, now_ms: int) -> Batch:
    return Batch.from_columns(
        station,
        bseq,
        now_ms,
        seq=seqs,
        ts_ms=[now_ms - 3000 + q for q in seqs],  # 3 s old
        code=["w01001"] * len(seqs),
        values=[7.1] * len(seqs),
    )


@pytest.mark.mosquitto
def test_collector_metrics_follow_ingest_and_the_broker(
    store_url: str, uid: str, broker: PrivateBroker
) -> None:
    mport = free_port()
    cfg = parse_model(
        CentralConfig,
        {
            "mqtt": {"client_id": f"col-{uid}", "broker": f"mqtt://127.0.0.1:{broker.port}"},
            "ingest": {"gap_timeout_s": 60},
            "metrics": {"listen": f"127.0.0.1:{mport}"},
        },
        "<test>",
    )
    col = Collector(cfg, store_url=store_url)
    col.start()
    peer: MqttPeer | None = None
    try:
        assert col.wait_connected(5)
        m = scrape(mport)
        assert (m["sanduan_central_broker_up"], m["sanduan_central_store_up"]) == (1, 1)
        assert m["sanduan_central_readings_stored_total"] == 0
        assert m["sanduan_central_stations"] == 0
        status, ctype, body = get(mport, "/healthz")
        assert (status, ctype, json.loads(body)["status"]) == (200, "application/json", "ok")
        # Hostile clients: garbage gets a 400, an oversized header a 431, and a silent
        # connection holds up no scrape.
        silent = socket.create_connection(("127.0.0.1", mport))
        try:
            # not even an HTTP version: the standard library answers HTTP/0.9 style, a bare page
            assert b"400 - Bad request" in raw(mport, b"\x00\xff garbage\r\n\r\n")
            oversized = raw(mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
            assert oversized.startswith(b"HTTP/1.1 431"), oversized[:80]
            assert scrape(mport)["sanduan_central_broker_up"] == 1
        finally:
            silent.close()

        st = f"st-{uid}"
        peer = MqttPeer(f"peer-{uid}", [st], broker.port)
        now = int(time.time() * 1000)
        peer.publish(topics.status_topic(st), encode(Status(station=st, time_ms=now)))
        peer.publish(topics.batch_topic(st), encode(batch(st, list(range(1, 51)), 1, now)))
        peer.publish(topics.batch_topic(st), encode(batch(st, list(range(61, 101)), 2, now)))
        peer.publish(topics.batch_topic(st), b"\x00 not a message")
        acks = 0
        deadline = time.monotonic() + 5
        while acks < 2 and time.monotonic() < deadline:
            acks += isinstance(peer.get(max(0.01, deadline - time.monotonic())), Ack)
        assert acks == 2
        assert wait_until(
            lambda: (
                scrape(mport).get('sanduan_central_dead_letters_total{reason="undecodable"}') == 1
            )
        )
        m = scrape(mport)
        assert m["sanduan_central_readings_stored_total"] == 90
        assert m["sanduan_central_batches_total"] == 2
        assert m["sanduan_central_statuses_total"] == 1
        assert m["sanduan_central_lag_seconds_count"] == 90
        assert m['sanduan_central_lag_seconds_bucket{le="2"}'] == 0
        assert m['sanduan_central_lag_seconds_bucket{le="60"}'] == 90
        assert m["sanduan_central_stations"] == 1
        assert m["sanduan_central_stations_online"] == 1
        assert m["sanduan_central_gaps_open"] == 1
        assert m[f'sanduan_central_station_gap_readings_missing{{station="{st}"}}'] == 10
        assert m["sanduan_central_ingest_queue_depth"] == 0

        broker.kill()
        assert wait_until(lambda: scrape(mport)["sanduan_central_broker_up"] == 0)
        status, _, body = get(mport, "/healthz")
        assert status == 503
        assert json.loads(body)["reasons"] == ["not connected to the broker"]
    finally:
        if peer is not None:
            peer.close()
        col.stop(timeout=5)


def test_run_refuses_a_bad_or_busy_metrics_address(tmp_path: Path) -> None:
    import signal
    import socket

    from typer.testing import CliRunner

    from sanduan.central.store import open_store
    from sanduan.cli import app

    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url, migrate=True).close()
    cfg = tmp_path / "central.toml"
    cfg.write_text(f'[central]\nstore = "{url}"\n', encoding="utf-8")
    r = runner.invoke(app, ["central", "run", "-c", str(cfg), "--metrics-listen", "9472"])
    assert r.exit_code == 2
    assert "--metrics-listen: listen: listen must be host:port" in r.stderr
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = runner.invoke(
                app, ["central", "run", "-c", str(cfg), "--metrics-listen", f"127.0.0.1:{port}"]
            )
    finally:  # ``run`` installs its own handlers
        for sig, h in handlers.items():
            signal.signal(sig, h)
    assert r.exit_code == 2
    assert f"[metrics]: listen: cannot listen on 127.0.0.1:{port}" in r.stderr

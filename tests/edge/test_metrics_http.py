"""The running agent's ``/metrics`` and ``/healthz`` over HTTP, and the heartbeat's extra."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from tests.edge.acker import Acker
from tests.edge.agent_harness import AgentThread, fake, station_config, wait_until
from tests.edge.conftest import PrivateBroker, free_port
from tests.metrics_http import get, raw, scrape

from sanduan.shared.config import StationMetricsConfig


def try_scrape(port: int) -> dict[str, float]:
    """The samples, or nothing while the server is not listening yet."""
    try:
        return scrape(port)
    except ConnectionRefusedError:
        return {}


@pytest.mark.mosquitto
def test_metrics_and_health_follow_the_agent(
    private_broker: PrivateBroker, station_id: str, tmp_path: Path
) -> None:
    mport = free_port()
    cfg = station_config(station_id, tmp_path / "b.db", private_broker.port)
    metrics = StationMetricsConfig(listen=f"127.0.0.1:{mport}", link_down_max_s=1.0)
    cfg = cfg.replace(metrics=metrics)
    acker = Acker(port=private_broker.port, station=station_id).start()
    at = AgentThread(cfg, fake(0.01)).start()
    try:
        assert wait_until(
            lambda: try_scrape(mport).get("sanduan_edge_batches_acked_total", 0) > 0, 15
        )
        first = scrape(mport)
        assert first["sanduan_edge_uplink_up"] == 1
        assert first["sanduan_edge_uplink_connects_total"] == 1
        assert first["sanduan_edge_buffer_writable"] == 1
        assert first["sanduan_edge_buffer_file_bytes"] > 0
        assert first['sanduan_edge_readings_total{flag="N"}'] > 0
        assert "sanduan_edge_clock_offset_seconds" in first
        assert first['sanduan_edge_device_errors_total{device="fake",kind="any"}'] == 0
        status, ctype, body = get(mport, "/healthz")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body)["status"] == "ok"
        assert wait_until(
            lambda: (
                scrape(mport)["sanduan_edge_readings_committed_total"]
                > first["sanduan_edge_readings_committed_total"]
            ),
            5,
        )
        assert get(mport, "/nothing")[0] == 404
        assert get(mport, "/metrics", "POST")[0] == 405
        # Hostile clients: garbage, an endless header and a silent connection get a 400 or
        # nothing, and never hold up a scrape.
        silent = socket.create_connection(("127.0.0.1", mport))
        try:
            assert raw(mport, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
            assert raw(mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000).startswith(
                b"HTTP/1.1 400"
            )
            assert scrape(mport)["sanduan_edge_uplink_up"] == 1
        finally:
            silent.close()
        # The heartbeat carries the same figures in its extra entries.
        assert acker.wait_for(lambda a: any("readings_N" in s.extra for s in a.statuses), 10)
        extra = next(s.extra for s in acker.statuses if "readings_N" in s.extra)
        assert {"buffer_bytes", "readings_committed", "uplink_connects", "batches_sent"} <= set(
            extra
        )
        assert isinstance(extra["readings_N"], int) and extra["readings_N"] > 0

        private_broker.kill()
        assert wait_until(lambda: scrape(mport)["sanduan_edge_uplink_up"] == 0, 10)
        after = scrape(mport)
        assert after["sanduan_edge_uplink_disconnects_total"] == 1
        # Polling goes on while the link is down; after link_down_max_s the agent is unhealthy.
        assert wait_until(lambda: get(mport, "/healthz")[0] == 503, 10)
        status, _, body = get(mport, "/healthz")
        assert status == 503, body
        doc = json.loads(body)
        assert doc["status"] == "unhealthy"
        assert any("link to the centre down" in r for r in doc["reasons"])
        assert doc["uplink"] == "down"
        assert (
            scrape(mport)["sanduan_edge_readings_committed_total"]
            > (after["sanduan_edge_readings_committed_total"])
        )
    finally:
        at.stop()
        acker.stop()

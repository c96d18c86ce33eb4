"""The agent's figures as Prometheus text, ``/healthz`` and heartbeat entries (pure core)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sanduan.edge.core.metrics import (
    EdgeSnapshot,
    default_poll_stale_s,
    edge_families,
    edge_health,
    heartbeat_extra,
)
from sanduan.shared import wire
from sanduan.shared.metrics import render

SNAP = EdgeSnapshot(
    station="CX-01",
    version="sanduan-edge 0.1.0",
    uptime_s=12.5,
    buffer_readings=40,
    buffer_file_bytes=1_048_576,
    buffer_max_bytes=536_870_912,
    oldest_unacked_age_s=3.25,
    buffer_writable=True,
    committed=1000,
    not_stored=0,
    dropped=0,
    rejected=2,
    readings_by_flag={"N": 990, "D": 10, "M": 0},
    device_errors={("sonde", "timeout"): 3, ("sonde", "crc"): 1, ("nh3n", "timeout"): 2},
    bus_utilisation={("rs485-1", "/dev/ttyUSB0"): 0.123456},
    uplink_up=True,
    uplink_connects=2,
    uplink_disconnects=1,
    clock_offset_s=-0.5,
    batches_sent=12,
    batches_acked=11,
    batches_nacked=1,
    last_poll_age_s=0.4,
    link_down_s=None,
)


def _samples(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = value
    return out


def test_every_figure_is_exposed_under_its_name() -> None:
    s = _samples(render(edge_families(SNAP)))
    assert s['sanduan_edge_info{station="CX-01",version="sanduan-edge 0.1.0"}'] == "1"
    assert s["sanduan_edge_buffer_readings"] == "40"
    assert s["sanduan_edge_buffer_file_bytes"] == "1048576"
    assert s["sanduan_edge_oldest_unacked_age_seconds"] == "3.25"
    assert s["sanduan_edge_buffer_writable"] == "1"
    assert s["sanduan_edge_readings_committed_total"] == "1000"
    assert s['sanduan_edge_readings_total{flag="D"}'] == "10"
    assert s['sanduan_edge_readings_total{flag="M"}'] == "0"
    assert s["sanduan_edge_readings_not_stored_total"] == "0"
    assert s["sanduan_edge_readings_rejected_total"] == "2"
    assert s['sanduan_edge_device_errors_total{device="sonde",kind="crc"}'] == "1"
    assert s['sanduan_edge_device_errors_total{device="nh3n",kind="timeout"}'] == "2"
    assert s['sanduan_edge_bus_utilisation_ratio{bus="rs485-1",port="/dev/ttyUSB0"}'] == "0.1235"
    assert s["sanduan_edge_uplink_up"] == "1"
    assert s["sanduan_edge_uplink_connects_total"] == "2"
    assert s["sanduan_edge_uplink_disconnects_total"] == "1"
    assert s["sanduan_edge_clock_offset_seconds"] == "-0.5"
    assert s["sanduan_edge_batches_sent_total"] == "12"
    assert s["sanduan_edge_batches_acked_total"] == "11"
    assert s["sanduan_edge_batches_nacked_total"] == "1"


def test_unknown_clock_offset_is_absent_and_no_waiting_reading_is_age_zero() -> None:
    snap = dataclasses.replace(SNAP, clock_offset_s=None, oldest_unacked_age_s=None)
    text = render(edge_families(snap))
    assert "# TYPE sanduan_edge_clock_offset_seconds gauge" in text
    assert "\nsanduan_edge_clock_offset_seconds " not in text
    assert _samples(text)["sanduan_edge_oldest_unacked_age_seconds"] == "0"


def test_health_reasons() -> None:
    bounds = {"poll_stale_s": 60.0, "link_down_max_s": 600.0}
    assert edge_health(SNAP, **bounds).ok
    down_briefly = dataclasses.replace(SNAP, uplink_up=False, link_down_s=599.0)
    assert edge_health(down_briefly, **bounds).ok
    down = {"uplink_up": False, "link_down_s": 600.0}
    cases = {
        "no device polled for 61 s (limit 60 s)": {"last_poll_age_s": 61.0},
        "the buffer cannot be written": {"buffer_writable": False},
        "link to the centre down for 600 s (limit 600 s)": down,
    }
    for reason, change in cases.items():
        h = edge_health(dataclasses.replace(SNAP, **change), **bounds)  # type: ignore[arg-type]
        assert (h.ok, h.status, h.reasons) == (False, 503, (reason,))
    everything = dataclasses.replace(
        SNAP, last_poll_age_s=100.0, buffer_writable=False, uplink_up=False, link_down_s=1e4
    )
    assert len(edge_health(everything, **bounds).reasons) == 3


def test_heartbeat_extra_adds_what_the_typed_fields_lack_and_stays_on_the_wire() -> None:
    extra = heartbeat_extra(SNAP)
    assert extra == {
        "buffer_bytes": 1_048_576,
        "readings_committed": 1000,
        "uplink_connects": 2,
        "uplink_disconnects": 1,
        "batches_sent": 12,
        "batches_acked": 11,
        "readings_D": 10,
        "readings_N": 990,
        "dev_err_crc": 1,
        "dev_err_timeout": 5,
    }
    st = wire.Status(station="CX-01", time_ms=1_767_225_600_000, extra=extra)
    back = wire.decode(wire.encode(st))
    assert isinstance(back, wire.Status)
    assert back.extra == extra


def test_default_poll_bound() -> None:
    assert default_poll_stale_s([]) == 60.0
    assert default_poll_stale_s([10.0, 60.0]) == 180.0
    assert default_poll_stale_s([300.0, 60.0]) == 900.0


def test_probe_reads_the_bus_pollers_of_a_configured_station() -> None:
    """The figures of real :class:`BusPoller` objects (not polling: no serial port needed)."""
    from sanduan.edge.app import Agent, BusSource
    from sanduan.edge.io.bus import BusPoller
    from sanduan.edge.io.metrics_http import AgentProbe
    from sanduan.shared.clock import SystemClock
    from sanduan.shared.config import load_station_config

    example = Path(__file__).resolve().parents[2] / "deploy" / "station.example.toml"
    cfg = load_station_config(example)
    clock = SystemClock()
    src = BusSource(example, clock)
    agent = Agent(cfg, source=src, clock=clock, db_path=":memory:")
    probe = AgentProbe(agent, cfg.metrics)
    assert probe.poll_stale_s == 900.0  # 3 x the longest poll period (300 s)
    src.pollers = [BusPoller(plan, clock) for plan in src.plans]
    sonde = src.pollers[0].devices["sonde"]
    sonde.errors["timeout"] += 3
    sonde.errors["crc"] += 1
    sonde.polls += 4
    snap = probe.snapshot_now()
    assert snap.device_errors == {("sonde", "timeout"): 3, ("sonde", "crc"): 1}
    assert set(snap.bus_utilisation) == {("rs485-1", "/dev/ttyUSB0"), ("rs485-2", "/dev/ttyUSB1")}
    assert probe.poll_count() == 4
    assert (snap.uplink_up, snap.link_down_s is not None, snap.buffer_writable) == (
        False,
        True,
        True,
    )
    assert heartbeat_extra(snap)["dev_err_timeout"] == 3


def test_buffer_counts_readings_by_flag_as_stored(tmp_path: Path) -> None:
    from sanduan.edge.core.model import PolledValue
    from sanduan.edge.io.outbox import Outbox
    from sanduan.shared.model import Flag

    t0 = 1_767_225_600_000
    with Outbox(tmp_path / "b.db", station="S", synchronous="NORMAL") as ob:
        assert set(ob.flag_counts.values()) == {0}
        ob.commit(
            [
                PolledValue("dev", "w21003", t0, -1.0, Flag.N),  # impossible: stored as D
                PolledValue("dev", "w01001", t0, 7.0, Flag.N),
                PolledValue("dev", "w01009", t0, 8.0, Flag.C),
            ]
        )
        ob.commit([PolledValue("dev", "w01001", t0 + 1000, 7.1, Flag.N)])
        ob.commit([PolledValue("dev", "w01001", t0 + 1000, 7.1, Flag.N)])  # a repeat: not stored
        assert {k: v for k, v in ob.flag_counts.items() if v} == {"N": 2, "D": 1, "C": 1}

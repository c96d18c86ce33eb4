"""Bus timing against hand-computed figures (domain reference, section 6)."""

from __future__ import annotations

import pytest

from sanduan.edge.core.plan import plan_bus
from sanduan.edge.core.timing import (
    TIMEOUT_FLOOR_S,
    UTILISATION_WARN,
    AdaptiveTimeout,
    Line,
    bus_timing,
    device_timing,
    response_bytes,
)
from sanduan.shared.config import BusConfig, DeviceConfig
from sanduan.shared.registers import load_profile


@pytest.mark.parametrize(
    ("bytesize", "parity", "stopbits", "bits"),
    [
        (8, "N", 1, 10),
        (8, "E", 1, 11),
        (8, "O", 1, 11),
        (8, "N", 2, 11),
        (7, "E", 1, 10),
        (7, "N", 1, 9),
        (8, "E", 2, 12),
    ],
)
def test_bits_per_character(bytesize: int, parity: str, stopbits: int, bits: int) -> None:
    assert Line(9600, bytesize, parity, stopbits).bits_per_char == bits


def test_ten_registers_at_9600_8e1() -> None:
    line = Line(9600, 8, "E", 1)
    assert response_bytes(10) == 25
    assert line.wire_s(8 + 25) == pytest.approx(33 * 11 / 9600)  # 37.8 ms
    assert line.wire_s(33) * 1000 == pytest.approx(37.8125)
    assert line.gap_s * 1000 == pytest.approx(4.0104, abs=1e-4)  # 3.5 * 11 / 9600
    assert line.transaction_s(10, turnaround_s=0) == pytest.approx(0.0378125 + 2 * 0.00401042)
    assert line.transaction_s(10, turnaround_s=0.010) == pytest.approx(0.0558333, abs=1e-6)


def test_gap_is_fixed_above_19200_baud() -> None:
    assert Line(19200, 8, "N", 1).gap_s == pytest.approx(3.5 * 10 / 19200)  # 1.82 ms
    assert Line(38400, 8, "N", 1).gap_s == pytest.approx(0.00175)
    assert Line(115200, 8, "E", 1).gap_s == pytest.approx(0.00175)


def _bus(*devices: DeviceConfig, baudrate: int = 9600, parity: str = "E") -> BusConfig:
    return BusConfig(
        name="b",
        port="/dev/null",
        baudrate=baudrate,
        parity=parity,  # type: ignore[arg-type]
        device=list(devices),
    )


def test_device_poll_time_adds_pause_between_requests() -> None:
    dev = DeviceConfig(
        name="tp",
        slave=3,
        profile="tp-analyzer",
        pause_s=0.05,
        turnaround_s=0.02,
        poll_period_s=60,
        timeout_s=0.5,
        retries=2,
    )
    plan = plan_bus(_bus(dev), {"tp": load_profile("tp-analyzer")})
    t = device_timing(plan.devices[0], Line(9600, 8, "E", 1))
    # FC03 0x0000+1 (8 + 7 bytes) and FC04 0x0010+4 (8 + 13 bytes), 11 bits a byte
    wire = (8 + 7 + 8 + 13) * 11 / 9600
    expected = wire + 4 * 3.5 * 11 / 9600 + 2 * 0.02 + 0.05
    assert (t.requests, t.request_bytes, t.response_bytes) == (2, 16, 20)
    assert t.poll_s == pytest.approx(expected)
    assert t.utilisation == pytest.approx(expected / 60)
    assert t.silent_s == pytest.approx(3 * (8 * 11 / 9600 + 0.5))


def test_utilisation_sums_devices_and_warns_with_numbers() -> None:
    sondes = [
        DeviceConfig(
            name=f"s{i}",
            slave=i,
            profile="sonde-multi",
            poll_period_s=0.1,
            turnaround_s=0.0,
            timeout_s=0.05,
            retries=0,
        )
        for i in (1, 2)
    ]
    plan = plan_bus(_bus(*sondes), {d.name: load_profile("sonde-multi") for d in sondes})
    timing = bus_timing(plan)
    one = (8 + 33) * 11 / 9600 + 2 * 3.5 * 11 / 9600  # 14 registers at 8E1, no turnaround
    assert timing.round_s == pytest.approx(2 * one)
    assert timing.utilisation == pytest.approx(2 * one / 0.1)  # 2 x 55.0 ms / 100 ms
    assert timing.utilisation > UTILISATION_WARN
    assert not timing.fits
    assert (
        "utilisation 1.10 exceeds 0.80 (110.0 ms of bus time per round at 9600 8E1)"
        in timing.warnings[0]
    )
    relaxed = plan_bus(
        _bus(*(d.replace(poll_period_s=10.0) for d in sondes)),
        {d.name: load_profile("sonde-multi") for d in sondes},
    )
    assert bus_timing(relaxed).fits
    assert bus_timing(relaxed).utilisation == pytest.approx(2 * one / 10)


def test_factory_serial_settings_that_differ_are_a_note_not_a_warning() -> None:
    dev = DeviceConfig(name="ldo", slave=247, profile="do-ldo")  # ships 19200 8N1
    plan = plan_bus(_bus(dev, baudrate=9600, parity="N"), {"ldo": load_profile("do-ldo")})
    timing = bus_timing(plan)
    assert timing.fits
    assert len(timing.notes) == 1
    assert "19200 8N1" in timing.notes[0]


def test_adaptive_timeout_waits_in_full_until_measured() -> None:
    t = AdaptiveTimeout(low_s=0.01, high_s=1.0)
    assert t.low_s == TIMEOUT_FLOOR_S  # never below the scheduler-jitter floor
    for _ in range(AdaptiveTimeout.MIN_SAMPLES - 1):
        t.add(0.004)
        assert t.timeout_s(0.003) == 1.0
    t.add(0.004)
    assert t.timeout_s(0.003) == TIMEOUT_FLOOR_S  # 3 x 4 ms + 3 ms + 20 ms = 35 ms < 50 ms


def test_adaptive_timeout_follows_p99_within_bounds() -> None:
    t = AdaptiveTimeout(low_s=0.1, high_s=0.5)
    for i in range(100):
        t.add(0.05 if i % 50 else 0.2)  # two slow outliers in the last 64
    assert t.p99_s == pytest.approx(0.2)
    assert t.timeout_s(0.01) == 0.5  # 3 x 0.2 + ... is above the configured timeout
    t.reset()
    assert t.samples == 0
    assert t.timeout_s(0.01) == 0.5
    for _ in range(64):
        t.add(0.03)
    assert t.timeout_s(0.01) == pytest.approx(3 * 0.03 + 0.01 + AdaptiveTimeout.MARGIN_S)
    t.add(-1.0)  # a clock glitch counts as zero
    assert t.p99_s == pytest.approx(0.03)


def test_adaptive_timeout_bounds_are_configured_ones() -> None:
    t = AdaptiveTimeout(low_s=2.0, high_s=1.0)
    assert t.low_s == 1.0  # the configured timeout is the upper bound of everything
    for _ in range(20):
        t.add(0.001)
    assert t.timeout_s(0.0) == 1.0

"""Bad replies end the wait at once; reply timeouts adapt to the measured turnaround.

Real pty pairs through the rig's Python relay emulating a 115200-baud line, the rig's simulated
slaves injecting the faults, the real bus poller.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sanduan.edge.devices import load_station, plan_station
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig
from sanduan.shared.errors import ConfigError
from sanduan.shared.registers import load_profile

VALUES = {"w01001": 7.42, "w01009": 8.1, "w01010": 18.2, "w01014": 412.5, "w01003": 12.3}
BAUD = 115_200
TIMEOUT = 2.0  # long, so that waiting it out could not pass for failing fast


def config(port: str, **device: Any) -> StationConfig:
    dev = {"timeout_s": TIMEOUT, "retries": 1, "poll_period_s": 60.0, **device}
    return StationConfig.model_validate(
        {
            "station": {"id": "t"},
            "bus": [
                {
                    "name": "b",
                    "port": port,
                    "baudrate": BAUD,
                    "device": [
                        {"name": "sonde", "slave": 1, "profile": "sonde-multi", **dev},
                        {"name": "do", "slave": 5, "profile": "do-optical", **dev},
                    ],
                }
            ],
        }
    )


class Line:
    def __init__(self, port: str, sonde: SimulatedDevice, do: SimulatedDevice) -> None:
        self.port, self.sonde, self.do = port, sonde, do

    def poller(self, **device: Any) -> BusPoller:
        return BusPoller(plan_station(config(self.port, **device), "s.toml")[0], SystemClock())


@pytest.fixture
def line() -> Iterator[Line]:
    with VirtualSerialPair("python", baud=BAUD, bits_per_char=10) as (dev_port, port):
        sonde = SimulatedDevice(load_profile("sonde-multi"), 1, VALUES, turnaround_s=0.003)
        do = SimulatedDevice(load_profile("do-optical"), 5, VALUES, turnaround_s=0.003)
        with SimulatedBus(dev_port, [sonde, do], baudrate=BAUD):
            yield Line(port, sonde, do)


def rounds(poller: BusPoller, n: int) -> list[tuple[float, int]]:
    """Seconds and values of ``n`` poll rounds."""

    async def go() -> list[tuple[float, int]]:
        out = []
        try:
            for _ in range(n):
                t = time.monotonic()
                values = await poller.poll_once()
                out.append((time.monotonic() - t, len(values)))
        finally:
            await poller.close()
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("fault", ["crc_corrupt", "garbage"])
@pytest.mark.serial
def test_a_bad_reply_fails_the_attempt_at_once(line: Line, fault: str) -> None:
    line.sonde.set_faults(**{fault: True})
    poller = line.poller()
    ((seconds, n),) = rounds(poller, 1)
    sonde = poller.devices["sonde"]
    assert sonde.requests == 2  # both attempts made
    assert sonde.errors["crc"] == 2
    assert sonde.polls_failed == 1
    assert poller.devices["do"].polls_ok == 1
    assert n == 2  # the other device's values (dissolved oxygen, temperature)
    # Two bad replies and a good poll take milliseconds of line time; waiting out even one
    # timeout would take TIMEOUT seconds.
    assert seconds < TIMEOUT / 2


@pytest.mark.serial
def test_the_next_device_is_not_disturbed_by_a_garbled_reply(line: Line) -> None:
    line.sonde.set_faults(garbage=True)
    poller = line.poller(retries=0)
    results = rounds(poller, 5)
    assert all(n == 2 for _, n in results)
    assert poller.devices["do"].errors == {}
    assert poller.devices["sonde"].errors["crc"] == 5


@pytest.mark.serial
def test_timeout_adapts_to_turnaround_and_widens_again(line: Line) -> None:
    poller = line.poller(retries=0, timeout_min_s=0.05)
    rounds(poller, 5)  # turnarounds of a few ms measured
    line.sonde.set_faults(silent=True)
    ((seconds, _),) = rounds(poller, 1)
    assert poller.devices["sonde"].errors["timeout"] == 1
    m = re.search(r"no reply within ([0-9.]+) s", poller.devices["sonde"].last_error)
    assert m is not None
    assert 0.05 <= float(m.group(1)) < TIMEOUT / 4  # adapted, not the configured 2 s
    assert seconds < TIMEOUT / 2
    # after a timeout under the adapted value, the next poll waits the full timeout
    line.sonde.set_faults(silent=False, delay_s=0.3)
    results = rounds(poller, 1)
    assert results[0][1] == 8
    assert poller.devices["sonde"].polls_ok == 6


@pytest.mark.serial
def test_fixed_timeout_when_adaptation_is_off(line: Line) -> None:
    poller = line.poller(retries=0, adaptive_timeout=False, timeout_s=0.4)
    rounds(poller, 5)
    line.sonde.set_faults(silent=True)
    rounds(poller, 1)
    assert "no reply within 0.4 s" in poller.devices["sonde"].last_error


def test_timeout_bounds_are_validated(tmp_path: Any) -> None:
    toml = tmp_path / "station.toml"
    toml.write_text(
        '[station]\nid = "t"\n[[bus]]\nname = "b"\nport = "/dev/null"\n'
        '[[bus.device]]\nname = "sonde"\nslave = 1\nprofile = "sonde-multi"\n'
        "timeout_s = 1\ntimeout_min_s = 2\n",
        "utf-8",
    )
    with pytest.raises(ConfigError, match=r"timeout_min_s \(2\) is above timeout_s \(1\)"):
        load_station(toml)
    # without timeout_min_s, a timeout below its default is fine (the bound follows it)
    cfg = config("/dev/null", timeout_s=0.02)
    assert cfg.bus[0].device[0].timeout_min_s == 0.05

"""A failed poll is logged once, by sanduan (pymodbus's own ERROR per timeout is silenced).

Real pty pairs through the rig's Python relay emulating a 115200-baud line, the rig's simulated
slaves injecting the faults, the real bus poller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sanduan.edge.devices import plan_station
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig
from sanduan.shared.registers import load_profile

pytestmark = [pytest.mark.serial]

VALUES = {"w01001": 7.42, "w01009": 8.1, "w01010": 18.2, "w01014": 412.5, "w01003": 12.3}
BAUD = 115_200
TIMEOUT = 1.0  # long, so that waiting it out could not pass for failing fast


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
        sonde = SimulatedDevice(
            load_profile("sonde-multi"), 1, VALUES, turnaround_s=0.003, seed=20230701
        )
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


def test_one_log_line_per_failed_poll(line: Line, caplog: pytest.LogCaptureFixture) -> None:
    line.sonde.set_faults(silent=True)
    pm = logging.getLogger("pymodbus")
    old = pm.level
    pm.setLevel(logging.NOTSET)  # as a fresh process has it
    try:
        with caplog.at_level(logging.DEBUG, logger="sanduan"):
            poller = line.poller(retries=0, timeout_s=0.1)
            rounds(poller, 2)
        level = pm.level
    finally:
        pm.setLevel(old)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in errors] == ["sanduan.edge.bus"] * 2, [r.getMessage() for r in errors]
    assert all("sonde (slave 1)" in r.getMessage() for r in errors)
    assert level == logging.CRITICAL


def test_the_agents_logging_keeps_pymodbus_quiet() -> None:
    """The agent's own log set-up (``sanduan edge run``) leaves one line per failed poll too:
    pymodbus's ERROR per timeout stays out of the agent's log at every level."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from sanduan.edge.app import configure_logging\n"
        "for level in ('INFO', 'DEBUG'):\n"
        "    configure_logging(level)\n"
        "    assert not logging.getLogger('pymodbus').isEnabledFor(logging.ERROR), level\n"
        "    assert logging.getLogger('sanduan.edge.bus').isEnabledFor(logging.WARNING), level\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr

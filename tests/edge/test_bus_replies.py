"""Bad replies end the wait at once, late replies of other requests are never taken as the
answer, reply timeouts adapt to the measured turnaround and widen again after a timeout, and a
failed poll is logged once.

Real pty pairs through the rig's Python relay emulating a 115200-baud line, the rig's simulated
slaves injecting the faults, the real bus poller.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sanduan.edge.devices import plan_station
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig, parse_model
from sanduan.shared.registers import load_profile

pytestmark = [pytest.mark.serial]

VALUES = {"w01001": 7.42, "w01009": 8.1, "w01010": 18.2, "w01014": 412.5, "w01003": 12.3}
BAUD = 115_200
TIMEOUT = 1.0  # long, so that waiting it out could not pass for failing fast


def config(port: str, **device: Any) -> StationConfig:
    dev = {"timeout_s": TIMEOUT, "retries": 1, "poll_period_s": 60.0, **device}
    return parse_model(
        StationConfig,
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
        },
        "<test>",
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


@pytest.mark.parametrize("fault", ["crc_corrupt", "garbage"])
def test_a_bad_reply_fails_the_attempt_at_once(line: Line, fault: str) -> None:
    line.sonde.set_faults(**{fault: True})
    poller = line.poller()
    ((seconds, n),) = rounds(poller, 1)
    sonde = poller.devices["sonde"]
    assert sonde.requests == 2  # both attempts made
    assert sonde.errors == {"crc": 2}
    assert sonde.polls_failed == 1
    assert poller.devices["do"].polls_ok == 1
    assert poller.devices["do"].errors == {}
    assert n == 2  # the other device's values (dissolved oxygen, temperature)
    # Two bad replies and a good poll take milliseconds of line time; waiting out even one
    # timeout would take TIMEOUT seconds.
    assert seconds < TIMEOUT / 2


def test_a_late_reply_is_never_the_next_answer(line: Line) -> None:
    """The sonde answers 100 ms after its timeout, while the (slower) other device is being
    polled: its late reply is skipped, and every reply of the other device is taken."""
    line.sonde.set_faults(delay_s=0.5)
    line.do.set_faults(delay_s=0.15)
    poller = line.poller(timeout_s=0.4, retries=0)
    results = rounds(poller, 3)
    do = poller.devices["do"]
    assert do.errors == {}
    assert do.polls_ok == 3
    assert poller.stats.foreign_frames >= 1
    sonde = poller.devices["sonde"]
    assert sonde.errors["timeout"] >= 1
    # the sonde's values only when a whole reply to its (identical) request came in
    assert all(n in {2, 2 + 6} for _, n in results)


def test_timeout_adapts_to_turnaround_and_widens_again(line: Line) -> None:
    poller = line.poller(retries=0, adaptive_timeout=True, timeout_min_s=0.05)
    rounds(poller, 17)  # turnarounds of a few ms measured
    line.sonde.set_faults(silent=True)
    ((seconds, _),) = rounds(poller, 1)
    assert poller.devices["sonde"].errors["timeout"] == 1
    m = re.search(r"no reply within ([0-9.]+) s", poller.devices["sonde"].last_error)
    assert m is not None
    assert 0.05 <= float(m.group(1)) < TIMEOUT / 4  # adapted, not the configured 1 s
    assert seconds < TIMEOUT / 2
    # after a timeout, the next poll waits the full timeout: a slower reply is taken
    line.sonde.set_faults(silent=False, delay_s=0.3)
    results = rounds(poller, 1)
    assert results[0][1] == 8
    assert poller.devices["sonde"].polls_ok == 18


def test_fixed_timeout_when_adaptation_is_off(line: Line) -> None:
    poller = line.poller(retries=0, adaptive_timeout=False, timeout_s=0.3)
    rounds(poller, 17)
    line.sonde.set_faults(silent=True)
    rounds(poller, 1)
    assert "no reply within 0.3 s" in poller.devices["sonde"].last_error


def test_one_log_line_per_failed_poll(line: Line, caplog: pytest.LogCaptureFixture) -> None:
    line.sonde.set_faults(silent=True)
    pm = logging.getLogger("pymodbus")
    old = pm.level
    pm.setLevel(logging.NOTSET)  # as a fresh process has it
    try:
        with caplog.at_level(logging.DEBUG, logger="sanduan"):
            poller = line.poller(retries=0, timeout_s=0.1)
            rounds(poller, 2)
        assert pm.level == logging.CRITICAL
    finally:
        pm.setLevel(old)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in errors] == ["sanduan.edge.bus"] * 2, [r.getMessage() for r in errors]
    assert all("sonde (slave 1)" in r.getMessage() for r in errors)


def test_a_late_reply_is_the_answer_to_the_retry_of_the_same_request(line: Line) -> None:
    """The sonde answers 100 ms after its timeout: the retry of the same request takes that
    reply as its answer."""
    line.sonde.set_faults(delay_s=0.5)
    line.do.set_faults(delay_s=0.15)
    poller = line.poller(timeout_s=0.4, retries=1)
    ((_, n),) = rounds(poller, 1)
    assert n == 6 + 2
    sonde, do = poller.devices["sonde"], poller.devices["do"]
    assert (sonde.polls_ok, sonde.requests, sonde.errors) == (1, 2, {"timeout": 1})
    assert (do.polls_ok, do.errors) == (1, {})


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

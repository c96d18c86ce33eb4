"""A serial port that cannot be opened or configured fails its own bus, never the agent: real
pymodbus and pyserial on virtual serial pairs; the adapter's refusal is pyserial's own
``termios.error`` from ``tcsetattr`` (not an ``OSError``), raised for that one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.edge.core.model import PolledValue
from sanduan.edge.devices import plan_station
from sanduan.edge.io.bus import BusPoller, run_pollers
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig, parse_model
from sanduan.shared.registers import load_profile

pytestmark = [pytest.mark.serial]

VALUES = {"w01001": 7.42, "w01009": 8.137, "w01010": 18.25, "w01014": 412.5, "w01003": 12.3}


@pytest.fixture
def two_ports(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(a port whose adapter refuses every setting, a port with a sonde on slave 1)."""
    with VirtualSerialPair() as (_, refusing), VirtualSerialPair() as (dev_port, good):
        bad = os.path.realpath(refusing)
        real = termios.tcsetattr

        def tcsetattr(fd: int, when: int, attrs: Any) -> None:
            if os.path.realpath(f"/proc/self/fd/{fd}") == bad:
                raise termios.error(22, "Invalid argument")
            real(fd, when, attrs)

        monkeypatch.setattr(termios, "tcsetattr", tcsetattr)
        sonde = SimulatedDevice(load_profile("sonde-multi"), 1, VALUES)
        with SimulatedBus(dev_port, [sonde]):
            yield refusing, good


def station(bad: str, good: str) -> dict[str, object]:
    dev = {"profile": "sonde-multi", "timeout_s": 0.15, "retries": 0, "poll_period_s": 0.2}
    return {
        "station": {"id": "t"},
        "bus": [
            {"name": "refused", "port": bad, "device": [{"name": "s1", "slave": 1, **dev}]},
            {"name": "good", "port": good, "device": [{"name": "s2", "slave": 1, **dev}]},
        ],
    }


def test_a_port_refusing_its_settings_fails_its_bus_only(two_ports: tuple[str, str]) -> None:
    bad, good = two_ports
    plans = plan_station(parse_model(StationConfig, station(bad, good), "<test>"), "station.toml")
    got: list[PolledValue] = []
    pollers = [BusPoller(p, SystemClock(), got.extend, reconnect_max_s=0.5) for p in plans]

    async def go() -> None:
        task = asyncio.create_task(run_pollers(pollers))
        await asyncio.sleep(2.5)
        assert not task.done(), task.exception()  # nothing stopped the pollers
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())
    refused, ok = pollers
    assert refused.stats.failed and refused.stats.port_errors >= 3  # retried with backoff
    assert "termios.error" in refused.stats.last_port_error
    assert refused.snapshot()["failed"] is True
    assert not ok.stats.failed and ok.devices["s2"].polls_ok >= 5  # the other bus polled on
    assert {v.device for v in got} == {"s2"}


def test_poll_once_prints_one_line_for_the_refused_port(
    two_ports: tuple[str, str], tmp_path: Path
) -> None:
    bad, good = two_ports
    cfg = tmp_path / "station.toml"
    lines = ['[station]\nid = "t"\n']
    for name, port in (("refused", bad), ("good", good)):
        lines.append(
            f'[[bus]]\nname = "{name}"\nport = "{port}"\n'
            '  [[bus.device]]\n  name = "s-' + name + '"\n  slave = 1\n'
            '  profile = "sonde-multi"\n  timeout_s = 0.15\n  retries = 0\n'
        )
    cfg.write_text("\n".join(lines), encoding="utf-8")
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["edge", "poll", "--config", str(cfg), "--once"])
    assert time.monotonic() - t0 < 20
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    about = [ln for ln in result.output.splitlines() if "refused" in ln and "serial port" in ln]
    assert len(about) == 1, result.output
    assert f"bus refused: cannot open serial port {bad}" in about[0]
    assert "termios.error" in about[0]
    assert "7.42" in result.output  # the good bus was read

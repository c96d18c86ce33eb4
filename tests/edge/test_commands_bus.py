"""``poll-now`` on the real bus source: simulated slaves on a virtual serial pair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sanduan.edge.app import BusSource
from sanduan.edge.core.model import PolledValue
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.registers import load_profile

pytestmark = [pytest.mark.serial]


def test_poll_now_polls_every_device_at_once(tmp_path: Path) -> None:
    values = {"w01001": 7.42, "w01009": 8.137, "w01010": 18.25, "w01014": 412.5}
    with VirtualSerialPair() as (dev_port, client_port):
        sonde = SimulatedDevice(load_profile("sonde-multi"), 1, values)
        with SimulatedBus(dev_port, [sonde]) as bus:
            cfg = tmp_path / "station.toml"
            cfg.write_text(
                f'[station]\nid = "t"\n\n[[bus]]\nname = "b1"\nport = "{client_port}"\n'
                'baudrate = 115200\n\n[[bus.device]]\nname = "sonde"\nslave = 1\n'
                'profile = "sonde-multi"\npoll_period_s = 3600\ntimeout_s = 0.2\n',
                encoding="utf-8",
            )
            source = BusSource(cfg, SystemClock())
            rounds: list[list[PolledValue]] = []
            polled = asyncio.Event()

            def sink(values: list[PolledValue]) -> None:
                rounds.append(values)
                polled.set()

            async def polled_again() -> None:
                await polled.wait()
                polled.clear()
                await asyncio.sleep(0.3)
                assert len(rounds) == 1  # the next poll is an hour away
                source.poll_now()
                await polled.wait()

            async def main() -> None:
                task = asyncio.create_task(source.run(sink))
                try:
                    async with asyncio.timeout(20):
                        return await polled_again()
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

            asyncio.run(main())  # within the 20 s bound: the next scheduled poll is an hour away
            assert {v.code for v in rounds[1]} == {v.code for v in rounds[0]}
            assert sum(bus.stats.requests.values()) >= 2
            # the poller was woken, not restarted: its port was opened once
            (poller,) = source.pollers
            assert poller.stats.connects == 1

"""Polling overhead of the agent's bus layer, and what read planning saves.

Run: ``.venv/bin/python bench/polling.py [SECONDS]`` (default 3 s per measurement).

1. Ten-register reads per second over one virtual serial pair (socat when installed) against a
   simulated slave: a bare pymodbus ``AsyncModbusSerialClient`` loop, then the agent's
   :class:`~sanduan.edge.io.bus.BusPoller` (``poll_once`` on a device whose plan is one
   10-register read: decoding, flags, PolledValue creation and stats included). The agent runs
   with ``silence_s = 0`` like the bare loop; with the RTU inter-frame silence on (the default,
   1.75 ms at 115200 baud) it is printed too, but on a pty that silence is pure waiting.
2. Requests per poll of the builtin profiles: the planner at max_gap 0 and 10 against one
   request per register, and the bus time per poll that makes at 9600 8N1.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import msgspec
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from sanduan.edge.core.plan import BusPlan, plan_blocks, plan_device
from sanduan.edge.core.timing import Line
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import BusConfig, DeviceConfig
from sanduan.shared.registers import builtin_profiles, load_profile, profile_from_mapping

VALUES = {"w01009": 8.1, "w01003": 12.3, "w01014": 412.5, "w01001": 7.4, "w01010": 18.2}
SLAVE = 1


def ten_register_profile() -> Any:
    sonde = load_profile("sonde-multi")
    regs = [msgspec.to_builtins(s) for s in sonde.registers if s.address < 0x260B]
    return profile_from_mapping({"name": "sonde-10", "registers": regs}, "bench")


async def bare(port: str, seconds: float) -> float:
    client = AsyncModbusSerialClient(
        port, framer=FramerType.RTU, baudrate=115200, timeout=1, retries=0
    )
    await client.connect()
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            rr = await client.read_holding_registers(0x2601, count=10, device_id=SLAVE)
            assert not rr.isError()
            n += 1
    finally:
        client.close()
    return n / (time.perf_counter() - t0)


async def agent(port: str, seconds: float, silence_s: float | None) -> float:
    profile = ten_register_profile()
    dev = DeviceConfig(name="sonde", slave=SLAVE, profile="sonde-10", timeout_s=1.0)
    bus = BusConfig(name="bench", port=port, baudrate=115200, silence_s=silence_s, device=[dev])
    dp = plan_device(dev, profile, bus.max_gap)
    assert dp.requests == 1 and dp.registers_read == 10
    poller = BusPoller(BusPlan(bus, (dp,)), SystemClock())
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            values = await poller.poll_once()
            assert len(values) == 5
            n += 1
    finally:
        await poller.close()
    return n / (time.perf_counter() - t0)


def throughput(seconds: float) -> None:
    with VirtualSerialPair() as (dev_port, client_port):
        device = SimulatedDevice(ten_register_profile(), SLAVE, VALUES)
        with SimulatedBus(dev_port, [device]):
            asyncio.run(bare(client_port, 0.3))  # warm up
            b = asyncio.run(bare(client_port, seconds))
            a = asyncio.run(agent(client_port, seconds, silence_s=0.0))
            g = asyncio.run(agent(client_port, seconds, silence_s=None))
    print(f"ten-register reads/s over a pty pair ({seconds:g} s each):")
    print(f"  bare AsyncModbusSerialClient loop   {b:8.0f}/s")
    print(f"  agent BusPoller.poll_once           {a:8.0f}/s   ratio {a / b:.2f}")
    print(f"  agent, RTU inter-frame silence on   {g:8.0f}/s   ratio {g / b:.2f}")


def planning() -> None:
    line = Line(9600, 8, "N", 1)
    print("requests per poll (ms of bus time at 9600 8N1, 10 ms turnaround):")
    print(f"  {'profile':16} {'per register':>16} {'gap 0':>16} {'gap 10':>16}")
    totals = [0, 0, 0]
    for name, profile in builtin_profiles().items():
        naive_ms = sum(line.transaction_s(s.width) for s in profile.registers) * 1000
        cells = [f"{len(profile.registers)} ({naive_ms:.0f} ms)"]
        totals[0] += len(profile.registers)
        for i, gap in enumerate((0, 10), start=1):
            blocks = plan_blocks(profile.registers, max_gap=gap)
            ms = sum(line.transaction_s(b.count) for b in blocks) * 1000
            cells.append(f"{len(blocks)} ({ms:.0f} ms)")
            totals[i] += len(blocks)
        print(f"  {name:16} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}")
    print(f"  {'total':16} {totals[0]:>16} {totals[1]:>16} {totals[2]:>16}")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    throughput(seconds)
    print()
    planning()


if __name__ == "__main__":
    main()

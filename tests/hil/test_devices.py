"""Simulated slaves read by a real pymodbus 3.16 RTU client over a virtual serial pair."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import serial
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, ModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair, socat_available
from sanduan.hil.rtu import with_crc
from sanduan.shared.model import Flag
from sanduan.shared.registers import (
    DeviceProfile,
    RegType,
    Role,
    builtin_profiles,
    decode_registers,
    load_profile,
)

pytestmark = [pytest.mark.serial]

TIMEOUT = 0.2
BACKENDS = [
    pytest.param(
        "socat", marks=pytest.mark.skipif(not socat_available(), reason="socat not installed")
    ),
    "python",
]

# plausible surface-water values per parameter code
VALUES = {
    "w01001": 7.42,
    "w01009": 8.137,
    "w01010": 18.25,
    "w01014": 412.5,
    "w01003": 12.3,
    "w01016": 3.4,
    "w21003": 0.482,
    "w21011": 0.0873,
    "w01019": 4.37,
}
RESULT_TIME = 1_718_000_000


@pytest.fixture(params=BACKENDS)
def ports(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with VirtualSerialPair(request.param) as pair:
        yield pair


@pytest.fixture
def socat_ports() -> Iterator[tuple[str, str]]:
    with VirtualSerialPair() as pair:
        yield pair


def _client(port: str) -> Iterator[ModbusSerialClient]:
    client = ModbusSerialClient(
        port, framer=FramerType.RTU, baudrate=115200, timeout=TIMEOUT, retries=0
    )
    assert client.connect()
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _read(
    client: ModbusSerialClient, function: int, address: int, count: int, slave: int
) -> list[int]:
    if function == 3:
        rr = client.read_holding_registers(address, count=count, device_id=slave)
    else:
        rr = client.read_input_registers(address, count=count, device_id=slave)
    assert not rr.isError(), rr
    return list(rr.registers)


def _read_profile(
    client: ModbusSerialClient, profile: DeviceProfile, slave: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    for block in profile.read_plan():
        out.update(block.decode(_read(client, block.function, block.address, block.count, slave)))
    return out


@dataclass
class Rig:
    bus: SimulatedBus
    sonde: SimulatedDevice
    nh3n: SimulatedDevice
    client: ModbusSerialClient


@pytest.fixture
def rig(socat_ports: tuple[str, str]) -> Iterator[Rig]:
    dev_port, client_port = socat_ports
    sonde = SimulatedDevice(load_profile("sonde-multi"), slave=1, values=VALUES)
    nh3n = SimulatedDevice(
        load_profile("nh3n-analyzer"), slave=2, values=VALUES, result_time=RESULT_TIME
    )
    with SimulatedBus(dev_port, [sonde, nh3n]) as bus:
        for client in _client(client_port):
            yield Rig(bus, sonde, nh3n, client)


def _sonde_ph(client: ModbusSerialClient, slave: int = 1) -> float:
    spec = load_profile("sonde-multi").register("w01001")
    return decode_registers(_read(client, 3, spec.address, 2, slave), spec)


# -- every builtin profile over both pair backends --------------------------------------------


def test_every_builtin_profile_reads_back(ports: tuple[str, str]) -> None:
    dev_port, client_port = ports
    profiles = list(builtin_profiles().values())
    devices = [
        SimulatedDevice(p, slave=i + 1, values=VALUES, result_time=RESULT_TIME)
        for i, p in enumerate(profiles)
    ]
    devices[-1].set_status(Flag.C)
    with SimulatedBus(dev_port, devices) as bus:
        for client in _client(client_port):
            for device in devices:
                got = _read_profile(client, device.profile, device.slave)
                for spec in device.profile.registers:
                    value = got[spec.name]
                    if spec.role is Role.VALUE:
                        assert spec.code is not None
                        want = VALUES[spec.code]
                        tol = spec.scale if spec.type is not RegType.FLOAT32 else want * 1e-6
                        assert value == pytest.approx(want, abs=tol), spec.name
                    elif spec.role is Role.RESULT_TIME:
                        assert value == RESULT_TIME
                    else:
                        want_flag = Flag.C if device is devices[-1] else Flag.N
                        if spec.role is Role.QUALITY:
                            want_flag = Flag.N
                        assert spec.flag_for(int(value)) is want_flag, spec.name
    n_reads = sum(len(d.profile.read_plan()) for d in devices)
    assert bus.stats.replies == n_reads
    assert sum(d.requests for d in devices) == n_reads
    assert bus.stats.crc_errors == 0


def test_async_client_reads_a_sonde(ports: tuple[str, str]) -> None:
    dev_port, client_port = ports
    profile = load_profile("sonde-multi")
    sonde = SimulatedDevice(profile, slave=7, values=VALUES)

    async def read() -> list[int]:
        client = AsyncModbusSerialClient(
            client_port, framer=FramerType.RTU, baudrate=115200, timeout=TIMEOUT, retries=0
        )
        await client.connect()
        try:
            rr = await client.read_holding_registers(0x2601, count=10, device_id=7)
            assert not rr.isError()
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0x2601, count=10, device_id=8)
            return list(rr.registers)
        finally:
            client.close()

    with SimulatedBus(dev_port, [sonde]):
        regs = asyncio.run(read())
    block = profile.read_plan()[0]
    decoded = block.decode(regs)
    assert decoded["ph"] == pytest.approx(VALUES["w01001"], rel=1e-6)
    assert decoded["temperature"] == pytest.approx(VALUES["w01010"], rel=1e-6)


# -- bus behaviour and faults -------------------------------------------------------------------


def test_absent_slave_is_silent(rig: Rig) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ModbusIOException):
        rig.client.read_holding_registers(0x2601, count=10, device_id=9)
    assert time.perf_counter() - t0 >= TIMEOUT * 0.9
    assert rig.bus.stats.absent == 1
    assert rig.bus.stats.requests[9] == 1
    assert _sonde_ph(rig.client) == pytest.approx(7.42)


def test_silent_slave_times_out_while_the_other_answers(rig: Rig) -> None:
    rig.sonde.set_faults(silent=True)
    with pytest.raises(ModbusIOException):
        _sonde_ph(rig.client)
    regs = _read(rig.client, 3, 0, 2, slave=2)
    assert decode_registers(regs, rig.nh3n.profile.register("nh3n")) == pytest.approx(0.482)
    rig.sonde.clear_faults()
    assert _sonde_ph(rig.client) == pytest.approx(7.42)
    assert rig.sonde.requests == 2


def test_exception_fault(rig: Rig) -> None:
    rig.nh3n.set_faults(exception=4)
    rr = rig.client.read_holding_registers(0, count=6, device_id=2)
    assert rr.isError()
    assert rr.exception_code == 4
    assert _sonde_ph(rig.client) == pytest.approx(7.42)


def test_unmapped_address_gives_exception_2(rig: Rig) -> None:
    rr = rig.client.read_holding_registers(0x3000, count=2, device_id=1)
    assert rr.isError()
    assert rr.exception_code == 2
    rr = rig.client.read_input_registers(0x2601, count=2, device_id=1)  # sonde has no FC04 map
    assert rr.exception_code == 2


@pytest.mark.parametrize("fault", ["crc_corrupt", "garbage"])
def test_corrupt_reply_is_a_client_error(rig: Rig, fault: str) -> None:
    rig.sonde.set_faults(**{fault: True})
    with pytest.raises(ModbusIOException):
        _sonde_ph(rig.client)
    rig.sonde.clear_faults()
    assert _sonde_ph(rig.client) == pytest.approx(7.42)


def test_slow_device(rig: Rig) -> None:
    rig.sonde.set_faults(delay_s=0.05)
    assert _sonde_ph(rig.client) == pytest.approx(7.42)  # slow but within the timeout
    rig.sonde.set_faults(delay_s=TIMEOUT + 0.1)
    with pytest.raises(ModbusIOException):
        _sonde_ph(rig.client)
    # the other slave still answers on time; its reply is not delayed by the slow one
    t0 = time.perf_counter()
    assert _read(rig.client, 3, 0, 2, slave=2)
    assert time.perf_counter() - t0 < TIMEOUT
    rig.sonde.clear_faults()
    time.sleep(0.15)  # let the late reply arrive; the client drops it before its next request
    assert _sonde_ph(rig.client) == pytest.approx(7.42)


def test_stuck_and_nan_values(rig: Rig) -> None:
    rig.sonde.set_faults(stuck=True)
    rig.sonde.set("w01001", 6.5)
    assert _sonde_ph(rig.client) == pytest.approx(7.42)
    rig.sonde.set_faults(stuck=False)
    assert _sonde_ph(rig.client) == pytest.approx(6.5)
    rig.sonde.set_faults(nan={"w01001"})
    assert math.isnan(_sonde_ph(rig.client))
    got = _read_profile(rig.client, rig.sonde.profile, 1)
    assert got["do"] == pytest.approx(8.137, rel=1e-6)
    rig.sonde.set_faults(nan=True)
    got = _read_profile(rig.client, rig.sonde.profile, 1)
    assert all(math.isnan(v) for v in got.values())


def test_analyzer_status_and_result_cycle(rig: Rig) -> None:
    profile = rig.nh3n.profile
    block = profile.read_plan()[0]
    rig.nh3n.set_status(Flag.M)
    got = block.decode(_read(rig.client, 3, block.address, block.count, 2))
    assert profile.register("status").flag_for(int(got["status"])) is Flag.M
    assert got["result_time"] == RESULT_TIME
    rig.nh3n.new_result({"w21003": 0.61}, at=RESULT_TIME + 3600)
    got = block.decode(_read(rig.client, 3, block.address, block.count, 2))
    assert got["nh3n"] == pytest.approx(0.61, rel=1e-6)
    assert got["result_time"] == RESULT_TIME + 3600


def test_cycle_with_value_function() -> None:
    now = [10_000.0]
    device = SimulatedDevice(
        load_profile("codmn-analyzer"),
        values=lambda t: {"w01019": t / 1000},
        cycle_s=1800,
        clock=lambda: now[0],
    )
    profile = device.profile
    block = profile.read_plan()[0]

    def read() -> dict[str, float]:
        regs = device.read(3, block.address, block.count)
        assert isinstance(regs, list)
        return block.decode(regs)

    first = read()
    assert first["result_time"] == 9000  # start of the 30-min cycle
    assert first["codmn"] == pytest.approx(9.0)
    now[0] += 600  # same cycle: same result
    assert read() == first
    now[0] += 1800  # next cycle
    assert read()["result_time"] == 10_800


def test_bad_crc_request_is_ignored_and_bus_resyncs(socat_ports: tuple[str, str]) -> None:
    dev_port, client_port = socat_ports
    sonde = SimulatedDevice(load_profile("do-ldo"), slave=5, values=VALUES)
    with (
        SimulatedBus(dev_port, [sonde]) as bus,
        serial.Serial(client_port, baudrate=115200, timeout=TIMEOUT) as line,
    ):
        bad = bytearray(with_crc(struct.pack(">BBHH", 5, 3, 0, 2)))
        bad[-2] ^= 0x01
        line.write(bytes(bad))
        assert line.read(9) == b""
        unknown_fc = with_crc(bytes((5, 0x41, 0)))
        line.write(unknown_fc)
        assert line.read(5) == with_crc(bytes((5, 0xC1, 1)))  # illegal function
        line.write(b"\x00\x5a" + with_crc(struct.pack(">BBHH", 5, 3, 0, 2)))
        reply = line.read(9)
    assert reply[:3] == bytes((5, 3, 4))
    spec = sonde.profile.register("w01009")
    assert decode_registers(list(struct.unpack(">H", reply[3:5])), spec) == pytest.approx(8.137)
    assert bus.stats.crc_errors > 0
    assert sonde.requests == 2


def test_request_log_counts_per_slave(rig: Rig) -> None:
    for _ in range(3):
        _sonde_ph(rig.client)
    _read(rig.client, 3, 0, 6, slave=2)
    assert rig.bus.stats.requests == {1: 3, 2: 1}
    assert [entry[1:] for entry in rig.bus.log][-1] == (2, 3, 0, 6)
    rig.bus.reset_stats()
    assert rig.bus.stats.requests == {}
    assert rig.sonde.requests == 0


def test_duplicate_slave_ids_rejected() -> None:
    p = load_profile("sonde-multi")
    with pytest.raises(ValueError, match="slave id 1"):
        SimulatedBus("/dev/null", [SimulatedDevice(p), SimulatedDevice(p)])

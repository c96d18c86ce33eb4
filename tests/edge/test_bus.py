"""The bus poller against simulated slaves on a virtual serial pair (real pymodbus, real pty)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sanduan.edge.core.model import PolledValue
from sanduan.edge.core.schedule import DeviceState
from sanduan.edge.devices import plan_station
from sanduan.edge.io.bus import BusPoller, worst_flag
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig, parse_model
from sanduan.shared.errors import DeviceError
from sanduan.shared.model import Flag
from sanduan.shared.registers import load_profile

pytestmark = [pytest.mark.serial]

VALUES = {
    "w01001": 7.42,
    "w01009": 8.137,
    "w01010": 18.25,
    "w01014": 412.5,
    "w01003": 12.3,
    "w01016": 3.4,
    "w21003": 0.482,
    "w21011": 0.0873,
}
TIMEOUT = 0.12
SONDE, NH3N, TP = 1, 2, 3


def station(port: str, period: float = 60.0, **device: Any) -> StationConfig:
    common = {
        "timeout_s": TIMEOUT,
        "retries": 1,
        "degraded_after": 2,
        "poll_period_s": period,
        "backoff_max_s": 4 * period,
        **device,
    }
    return parse_model(
        StationConfig,
        {
            "station": {"id": "t"},
            "bus": [
                {
                    "name": "b1",
                    "port": port,
                    "baudrate": 115200,
                    "device": [
                        {"name": "sonde", "slave": SONDE, "profile": "sonde-multi", **common},
                        {"name": "nh3n", "slave": NH3N, "profile": "nh3n-analyzer", **common},
                        {"name": "tp", "slave": TP, "profile": "tp-analyzer", **common},
                    ],
                }
            ],
        },
        "<test>",
    )


@dataclass
class Rig:
    bus: SimulatedBus
    sonde: SimulatedDevice
    nh3n: SimulatedDevice
    tp: SimulatedDevice
    port: str
    result_time: float

    def poller(self, sink: Any = None, period: float = 60.0, **device: Any) -> BusPoller:
        plan = plan_station(station(self.port, period, **device), "station.toml")[0]
        return BusPoller(plan, SystemClock(), sink)


@pytest.fixture
def rig() -> Iterator[Rig]:
    rt = float(int(time.time()) - 600)
    with VirtualSerialPair() as (dev_port, client_port):
        sonde = SimulatedDevice(load_profile("sonde-multi"), SONDE, VALUES)
        nh3n = SimulatedDevice(load_profile("nh3n-analyzer"), NH3N, VALUES, result_time=rt)
        tp = SimulatedDevice(load_profile("tp-analyzer"), TP, VALUES, result_time=rt + 60)
        with SimulatedBus(dev_port, [sonde, nh3n, tp]) as bus:
            yield Rig(bus, sonde, nh3n, tp, client_port, rt)


def by_device(values: list[PolledValue]) -> dict[str, dict[str, PolledValue]]:
    out: dict[str, dict[str, PolledValue]] = {}
    for v in values:
        out.setdefault(v.device, {})[v.code] = v
    return out


def poll_rounds(poller: BusPoller, n: int = 1) -> list[list[PolledValue]]:
    async def go() -> list[list[PolledValue]]:
        try:
            return [await poller.poll_once() for _ in range(n)]
        finally:
            await poller.close()

    return asyncio.run(go())


def test_values_decoded_with_one_request_per_planned_block(rig: Rig) -> None:
    poller = rig.poller()
    t0 = time.time()
    (values,) = poll_rounds(poller)
    got = by_device(values)
    assert set(got) == {"sonde", "nh3n", "tp"}
    for device, codes in got.items():
        for code, v in codes.items():
            assert v.value == pytest.approx(VALUES[code], rel=1e-6, abs=1e-4), (device, code)
            assert v.flag is Flag.N
    sonde_ts = {v.ts_ms for v in got["sonde"].values()}
    assert len(sonde_ts) == 1 and t0 * 1000 - 1 <= sonde_ts.pop() <= time.time() * 1000 + 1
    assert got["nh3n"]["w21003"].ts_ms == rig.result_time * 1000  # the analyzer's own time
    assert got["tp"]["w21011"].ts_ms == (rig.result_time + 60) * 1000
    plan = poller.plan
    assert rig.bus.stats.requests == {d.slave: d.requests for d in plan.devices}
    assert sum(rig.bus.stats.requests.values()) == plan.requests == 4
    assert all(s.state is DeviceState.OK for s in poller.devices.values())


def test_analyzer_result_is_emitted_once_per_cycle(rig: Rig) -> None:
    poller = rig.poller()

    async def go() -> list[list[PolledValue]]:
        rounds = [await poller.poll_once(), await poller.poll_once()]
        rig.nh3n.new_result({"w21003": 0.61}, at=rig.result_time + 300)
        rounds.append(await poller.poll_once())
        await poller.close()
        return rounds

    first, second, third = (by_device(r) for r in asyncio.run(go()))
    assert set(first) == {"sonde", "nh3n", "tp"}
    assert set(second) == {"sonde"}  # same result times: analyzers not emitted again
    assert set(third) == {"sonde", "nh3n"}
    new = third["nh3n"]["w21003"]
    assert new.value == pytest.approx(0.61, rel=1e-6)
    assert new.ts_ms == (rig.result_time + 300) * 1000
    assert poller.devices["nh3n"].unchanged == 1
    assert poller.devices["tp"].unchanged == 2
    assert poller.devices["nh3n"].polls_ok == 3


def test_status_and_quality_registers_give_flags(rig: Rig) -> None:
    rig.nh3n.set_status(Flag.C)
    rig.tp.set_status(Flag.M)
    (values,) = poll_rounds(rig.poller())
    got = by_device(values)
    assert got["nh3n"]["w21003"].flag is Flag.C
    assert got["tp"]["w21011"].flag is Flag.M
    assert got["sonde"]["w01001"].flag is Flag.N

    rig.nh3n.set_status(Flag.N)
    rig.nh3n.set("range_check", 1)  # over the measuring range
    (values,) = poll_rounds(rig.poller())
    assert by_device(values)["nh3n"]["w21003"].flag is Flag.T
    rig.nh3n.set_status(Flag.C)  # calibrating and over range: calibration wins
    (values,) = poll_rounds(rig.poller())
    assert by_device(values)["nh3n"]["w21003"].flag is Flag.C


def test_analyzer_clock_reset_is_not_trusted(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    reset = 946_684_800.0  # 2000-01-01: the analyzer lost its clock in a power cut
    rig.nh3n.new_result({"w21003": 0.55}, at=reset)
    t0 = time.time()
    (values,) = poll_rounds(rig.poller())
    v = by_device(values)["nh3n"]["w21003"]
    assert v.value == pytest.approx(0.55, rel=1e-6)
    assert v.ts_ms >= t0 * 1000 - 1  # the read time instead
    assert "device nh3n (slave 2): result time 946684800" in caplog.text


def test_missing_value_is_nan_flagged_d(rig: Rig) -> None:
    rig.sonde.set_faults(nan={"w01001"})
    (values,) = poll_rounds(rig.poller())
    sonde = by_device(values)["sonde"]
    assert math.isnan(sonde["w01001"].value) and sonde["w01001"].flag is Flag.D
    assert sonde["w01009"].flag is Flag.N


def test_flag_severity() -> None:
    assert worst_flag(Flag.N, Flag.T) is Flag.T
    assert worst_flag(Flag.C, Flag.T) is Flag.C
    assert worst_flag(Flag.D, Flag.M) is Flag.D
    assert worst_flag(Flag.N, Flag.N) is Flag.N


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ({"silent": True}, "timeout"),
        ({"crc_corrupt": True}, "crc"),
        ({"garbage": True}, "crc"),
        ({"exception": 4}, "exception"),
    ],
)
def test_a_faulty_slave_is_counted_and_the_others_are_unaffected(
    rig: Rig, fault: dict[str, Any], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig.sonde.set_faults(**fault)
    poller = rig.poller()
    caplog.set_level(logging.WARNING, logger="sanduan.edge.bus")
    t0 = time.perf_counter()
    (values,) = poll_rounds(poller)
    elapsed = time.perf_counter() - t0
    got = by_device(values)
    assert set(got) == {"nh3n", "tp"}  # nothing invented for the failed device
    assert got["nh3n"]["w21003"].value == pytest.approx(0.482, rel=1e-6)
    stats = poller.devices["sonde"]
    assert stats.errors[kind] == 2  # retries = 1: two attempts, both failed
    assert sum(stats.errors.values()) == 2
    assert (stats.polls_failed, stats.state) == (1, DeviceState.FAILING)
    if kind == "exception":
        assert stats.last_exception_code == 4
    assert all(not poller.devices[d].errors for d in ("nh3n", "tp"))
    assert elapsed < 2 * TIMEOUT + 1.0  # the fault costs at most its own timeout budget
    message = "bus b1: device sonde (slave 1) FC03 0x2601+14"
    assert any(message in r.getMessage() for r in caplog.records)
    assert rig.bus.stats.requests[NH3N] == 1 and rig.bus.stats.requests[TP] == 2


def test_exception_illegal_address_is_not_retried(rig: Rig) -> None:
    rig.sonde.set_faults(exception=2)
    poller = rig.poller()
    poll_rounds(poller)
    assert poller.devices["sonde"].errors == {"exception": 1}
    assert rig.bus.stats.requests[SONDE] == 1


def test_degraded_after_failures_and_recovery(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sanduan.edge.bus")
    rig.sonde.set_faults(silent=True)
    poller = rig.poller()

    async def go() -> None:
        states = []
        for _ in range(2):
            await poller.poll_once()
            states.append(poller.devices["sonde"].state)
        assert states == [DeviceState.FAILING, DeviceState.DEGRADED]
        before = rig.bus.stats.requests[SONDE]
        await poller.poll_once()
        assert rig.bus.stats.requests[SONDE] - before == 1  # degraded: one attempt
        rig.sonde.clear_faults()
        values = await poller.poll_once()
        assert {v.device for v in values} == {"sonde"}
        await poller.close()

    asyncio.run(go())
    stats = poller.devices["sonde"]
    assert stats.state is DeviceState.OK
    assert (stats.polls, stats.polls_ok, stats.polls_failed) == (4, 1, 3)
    assert stats.last_success_ts is not None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "bus b1: device sonde (slave 1) degraded after 2 failed polls" in text
    assert "bus b1: device sonde (slave 1) recovered (was degraded)" in text


def test_run_keeps_the_poll_rate_of_healthy_slaves_next_to_a_silent_one(rig: Rig) -> None:
    # Load-proof: the run lasts until the healthy slaves have had `slots` polls (a loaded
    # machine only makes it longer), and the silent slave's polls are checked against its
    # backoff schedule over the window that actually elapsed.
    rig.sonde.set_faults(silent=True)
    received: list[list[PolledValue]] = []

    async def sink(values: list[PolledValue]) -> None:
        received.append(values)

    period = 0.3
    slots = 9
    poller = rig.poller(sink, period=period)
    nh3n = poller.devices["nh3n"]
    tp = poller.devices["tp"]
    sonde = poller.devices["sonde"]
    window: list[float] = []

    async def go() -> None:
        t0 = time.monotonic()
        task = asyncio.create_task(poller.run())
        deadline = t0 + 20 * slots * period
        while min(nh3n.polls_ok, tp.polls_ok) < slots and time.monotonic() < deadline:  # noqa: ASYNC110 (polls the poller's counters)
            await asyncio.sleep(0.01)
        window.append((time.monotonic() - t0) / period)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    rig.nh3n.set_values(lambda t: {"w21003": 0.5})  # a sonde-like analyzer: new result each read
    rig.nh3n.unset("result_time")
    asyncio.run(go())
    elapsed = window[0]  # in periods
    assert nh3n.polls_ok >= slots and tp.polls_ok >= slots, (nh3n.polls, tp.polls, elapsed)
    assert nh3n.polls_failed == tp.polls_failed == 0
    # Two requests per poll (the cancel may have stopped the last poll between them).
    assert 2 * tp.polls_ok <= rig.bus.stats.requests[TP] <= 2 * tp.polls
    # Every slot of the healthy slaves is polled or counted as missed (a late bus), never lost.
    for dev in (nh3n, tp):
        assert dev.polls + dev.missed >= int(elapsed) - 1, (dev.polls, dev.missed, elapsed)
    assert sonde.state is DeviceState.DEGRADED
    # Backoff 1, 2, 4 periods after failures 1, 2, 3, then every 4 (backoff_max_s): the silent
    # slave is polled at 0, 1, 3, 7, 11, ... periods, whatever the load.
    due = [0, 1, 3, *range(7, 1000, 4)]
    expected = sum(1 for t in due if t <= elapsed)
    assert expected - 1 <= sonde.polls <= expected, (sonde.polls, elapsed)
    assert sonde.polls >= 3
    # Its timeouts cost bus time only on those polls: the healthy slaves get the rest.
    assert min(nh3n.polls, tp.polls) >= 2 * sonde.polls
    assert poller.stats.connected is False  # closed on cancel
    assert 0 < poller.utilisation() < 1
    snap = poller.snapshot()
    assert snap["devices"][0]["device"] == "sonde" and snap["devices"][0]["state"] == "degraded"
    assert snap["devices"][0]["errors"]["timeout"] >= 3


def test_sink_errors_are_logged_and_polling_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def sink(values: list[PolledValue]) -> None:
        calls.append(len(values))
        raise RuntimeError("buffer full")

    poll_rounds(rig.poller(sink), n=2)
    assert calls == [6, 1, 1, 6]
    assert "the sink failed on 6 values of device sonde" in caplog.text


def test_missing_port_is_a_device_error(tmp_path: Path) -> None:
    plan = plan_station(station(str(tmp_path / "ttyNONE")), "station.toml")[0]
    poller = BusPoller(plan, SystemClock())
    with pytest.raises(DeviceError, match="bus b1: cannot open serial port"):
        asyncio.run(poller.poll_once())


def test_port_that_appears_late_and_is_replaced_is_reopened(tmp_path: Path) -> None:
    link = tmp_path / "ttyRS485"
    received: list[PolledValue] = []
    plan = plan_station(station(str(link), period=0.1), "station.toml")[0]
    poller = BusPoller(plan, SystemClock(), received.extend, reconnect_max_s=0.2)

    def serve(pair: VirtualSerialPair) -> tuple[SimulatedBus, SimulatedDevice]:
        dev_port, client_port = pair.open()
        link.unlink(missing_ok=True)
        link.symlink_to(client_port)
        sonde = SimulatedDevice(load_profile("sonde-multi"), SONDE, VALUES)
        return SimulatedBus(dev_port, [sonde]).start(), sonde

    async def wait_for(cond: Any, limit: float = 5.0) -> None:
        deadline = time.monotonic() + limit
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def go() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.3)  # the port does not exist yet
        assert poller.stats.port_errors >= 1 and not received
        pair1 = VirtualSerialPair()
        bus1, _ = serve(pair1)
        await wait_for(lambda: any(v.device == "sonde" for v in received))
        assert poller.stats.connects == 1
        bus1.stop()
        pair1.close()  # the adapter is unplugged
        n = len(received)
        await asyncio.sleep(0.3)
        pair2 = VirtualSerialPair()
        bus2, _ = serve(pair2)  # ... and plugged in again
        try:
            await wait_for(lambda: len(received) > n and poller.stats.connects >= 2)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            bus2.stop()
            pair2.close()

    asyncio.run(go())
    assert poller.stats.port_errors >= 1
    assert poller.devices["sonde"].values > 0

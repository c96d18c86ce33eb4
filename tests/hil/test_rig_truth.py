"""The truth log: what a Modbus master actually read, poll by poll, and the delivery check."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from sanduan.hil.devices import SimulatedBus
from sanduan.hil.ports import VirtualSerialPair
from sanduan.hil.truth import (
    RecordingDevice,
    StoredRow,
    TruthLog,
    TruthReading,
    compare,
    expected_flag,
    planned_blocks,
    value_key,
)
from sanduan.shared import wire
from sanduan.shared.model import Flag
from sanduan.shared.registers import DeviceProfile, ReadBlock, load_profile

NOW = 1_688_200_000.0
RT = 1_688_198_400.0  # the analyzer's current result time


@dataclass
class Line:
    log: TruthLog
    sonde: RecordingDevice
    tp: RecordingDevice
    client: ModbusSerialClient
    clock: list[float]


@pytest.fixture
def line() -> Iterator[Line]:
    clock = [NOW]
    log = TruthLog()
    sonde_p = load_profile("sonde-multi")
    tp_p = load_profile("tp-analyzer")
    sonde = RecordingDevice(
        sonde_p,
        station="S1",
        device="sonde",
        log=log,
        blocks=planned_blocks(sonde_p),
        timeout_s=0.5,
        slave=1,
        values=lambda t: {"w01009": 7.0 + (t - NOW) / 1000, "w01001": 7.4},
        clock=lambda: clock[0],
    )
    tp = RecordingDevice(
        tp_p,
        station="S1",
        device="tp",
        log=log,
        blocks=planned_blocks(tp_p),
        timeout_s=0.5,
        slave=3,
        values=lambda t: {"w21011": 0.1234, "result_time": RT, "status": 0},
        clock=lambda: clock[0],
    )
    with VirtualSerialPair() as (dev_port, client_port), SimulatedBus(dev_port, [sonde, tp]):
        client = ModbusSerialClient(
            client_port, framer=FramerType.RTU, baudrate=115200, timeout=0.3, retries=0
        )
        assert client.connect()
        try:
            yield Line(log, sonde, tp, client, clock)
        finally:
            client.close()  # type: ignore[no-untyped-call]


def _read(client: ModbusSerialClient, block: ReadBlock, slave: int) -> bool:
    try:
        if block.function == 3:
            rr = client.read_holding_registers(block.address, count=block.count, device_id=slave)
        else:
            rr = client.read_input_registers(block.address, count=block.count, device_id=slave)
    except ModbusException:
        return False
    return not rr.isError()


def _poll(line: Line, device: RecordingDevice) -> bool:
    return all(_read(line.client, b, device.slave) for b in device.blocks)


@pytest.mark.serial
def test_sonde_polls_are_readings_with_the_values_on_the_wire(line: Line) -> None:
    assert _poll(line, line.sonde)
    line.clock[0] = NOW + 3600
    assert _poll(line, line.sonde)
    rs = line.log.readings()
    assert len(rs) == 2 * len(line.sonde.profile.values)
    do = [r for r in rs if r.code == "w01009"]
    assert [r.ts for r in do] == [NOW, NOW + 3600]
    # float32 on the wire: the truth holds the float32 value the master decoded
    assert do[1].value == pytest.approx(10.6, abs=1e-5) and do[1].value != 10.6
    assert all(not r.by_time for r in rs)
    missing = [r for r in rs if r.code == "w01003"]  # turbidity: no value given
    assert all(math.isnan(r.value) and r.flag is Flag.D for r in missing)
    assert {r.flag for r in rs if r.code == "w01001"} == {Flag.N}


@pytest.mark.serial
def test_an_analyzer_cycle_is_one_reading_however_often_it_is_read(line: Line) -> None:
    for i in range(3):
        line.clock[0] = NOW + 600 * i
        assert _poll(line, line.tp)
    (r,) = line.log.readings()
    assert (r.code, r.ts, r.by_time, r.read_at) == ("w21011", RT, True, NOW)
    assert r.value == pytest.approx(0.1234, abs=1e-12)  # int32 x 0.0001 on the wire
    assert line.log.counters[("S1", "tp")].polls == 3


@pytest.mark.serial
def test_a_poll_counts_only_when_every_block_got_through(line: Line) -> None:
    first, second = line.tp.blocks
    assert _read(line.client, second, 3)  # a lone second block is not a poll
    assert _read(line.client, first, 3)  # status read, then the value block fails
    line.tp.set_faults(crc_corrupt=True)
    assert not _read(line.client, second, 3)
    assert len(line.log) == 0
    line.tp.clear_faults()
    assert _read(line.client, second, 3)  # the master's retry completes the poll
    assert len(line.log) == 1
    c = line.log.counters[("S1", "tp")]
    assert (c.requests, c.delivered, c.failed, c.polls) == (4, 3, 1, 1)


@pytest.mark.serial
def test_a_reply_after_the_agent_was_stopped_is_no_reading(line: Line) -> None:
    """The rig stops an agent between polls, but the agent may have sent one more request just
    before: the device's answer reaches nobody, so it is not a reading (counted apart)."""
    line.sonde.agent_stopped = True
    assert _poll(line, line.sonde)  # the device answers (the test's master is not the agent)
    assert len(line.log) == 0
    assert line.log.counters[("S1", "sonde")].after_stop == 1
    line.sonde.agent_stopped = False
    assert _poll(line, line.sonde)
    assert len(line.log) == len(line.sonde.profile.values)


@pytest.mark.parametrize(
    "faults",
    [
        {"silent": True},
        {"crc_corrupt": True},
        {"garbage": True},
        {"exception": 4},
        {"delay_s": 0.45},  # beyond 0.85 of the 0.5 s timeout: not delivered
    ],
)
@pytest.mark.serial
def test_faulted_replies_are_not_readings(line: Line, faults: dict[str, object]) -> None:
    line.sonde.set_faults(**faults)
    _poll(line, line.sonde)
    assert len(line.log) == 0
    assert line.log.counters[("S1", "sonde")].failed == 1


def test_flags_follow_the_status_register() -> None:
    p = load_profile("nh3n-analyzer")
    spec = p.register("w21003")
    # decoded registers by register name, as a poll produces them
    assert expected_flag(p, spec, {"nh3n": 0.5, "status": 2, "range_check": 0}) is Flag.C
    assert expected_flag(p, spec, {"nh3n": 0.5, "status": 3, "range_check": 1}) is Flag.M
    assert expected_flag(p, spec, {"nh3n": 0.5, "status": 0, "range_check": 1}) is Flag.T
    assert expected_flag(p, spec, {"nh3n": math.nan, "status": 0, "range_check": 0}) is Flag.D
    assert expected_flag(p, spec, {"nh3n": 0.5, "status": 99, "range_check": 0}) is Flag.D
    assert expected_flag(p, spec, {"nh3n": 0.5, "status": 1, "range_check": 0}) is Flag.N


def test_truth_as_wire_batches(tmp_path: Path) -> None:
    log = TruthLog()
    p: DeviceProfile = load_profile("sonde-multi")
    for i in range(1500 // len(p.values) + 1):
        log.record_poll("S1", "sonde", p, NOW + 3600 * i, {s.name: 7.6 for s in p.values})
    files = log.write_batches(tmp_path)
    batches = [wire.decode_batch(f.read_bytes()) for f in files]
    assert [b.count for b in batches] == [1000, len(log) - 1000]
    seqs = [s for b in batches for s in b.seq]
    assert seqs == list(range(1, len(log) + 1))
    do = {
        g for b in batches for c, g in zip(b.code_column(), b.grades, strict=True) if c == "w01009"
    }
    assert do == {1}  # DO 7.6 mg/L is class I, graded as the agent grades
    assert log.write_jsonl(tmp_path / "t.jsonl") == len(log)


def _tr(code: str, ts: float, value: float, by_time: bool = False) -> TruthReading:
    return TruthReading("S1", "dev", code, ts, ts, value, Flag.N, by_time)


def _row(seq: int, code: str, ts: float, value: float) -> StoredRow:
    return StoredRow("S1", seq, round(ts * 1000), code, value, "N")


def test_compare_exact() -> None:
    truth = [_tr("w01009", NOW, 7.25), _tr("w21011", RT, 0.1, True), _tr("w01001", NOW, math.nan)]
    rows = [
        _row(1, "w01009", NOW + 20, 7.25),
        _row(2, "w21011", RT, 0.1),
        _row(3, "w01001", NOW + 20, math.nan),
    ]
    c = compare(truth, rows)
    assert (c.generated, c.stored, c.lost, c.duplicates, c.unexpected, c.retimed) == (
        3,
        3,
        0,
        0,
        0,
        0,
    )
    assert c.ts_error_max_s == pytest.approx(20)
    assert c.per_station == {"S1": {"generated": 3, "stored": 3}}


def test_compare_lost_duplicates_unexpected_retimed() -> None:
    truth = [
        _tr("w01009", NOW, 7.25),
        _tr("w01009", NOW + 3600, 7.5),  # lost
        _tr("w21011", RT, 0.1, True),  # stored twice (an analyzer cycle re-emitted)
        _tr("w21003", RT, 0.4, True),  # stored under another timestamp: retimed
    ]
    rows = [
        _row(1, "w01009", NOW, 7.25),
        _row(2, "w21011", RT, 0.1),
        _row(3, "w21011", RT, 0.1),
        _row(4, "w21003", NOW, 0.4),
        _row(5, "w01010", NOW, 20.0),  # nobody read that
        _row(5, "w01010", NOW, 20.0),  # and the same (station, seq) twice
    ]
    c = compare(truth, rows)
    assert c.lost == 1 and c.lost_examples[0]["ts"] == NOW + 3600
    assert c.retimed == 1
    assert c.unexpected == 2
    assert c.seq_duplicates == 1
    assert c.duplicates == 1 + 1  # the re-emitted cycle and the repeated (station, seq)
    assert c.duplicate_examples[0]["seq"] == 3
    assert c.per_station["S1"]["lost"] == 1


def test_value_key_is_exact() -> None:
    assert value_key(0.1) != value_key(0.1 + 1e-17 * 0 + 2**-56)
    assert value_key(math.nan) == value_key(float("nan"))
    assert value_key(-0.0) != value_key(0.0)


def test_compare_per_stream_lost_with_buffer_and_forged_rows() -> None:
    """A gateway replaced at NOW + 2 h: its old buffer's unsent reading is lost with it, the new
    buffer numbers from seq 1 again on a new stream; a hostile client's forged row is counted
    apart; a reading missing after the replacement is a real loss."""
    truth = [
        _tr("w01009", NOW, 7.25),
        _tr("w01009", NOW + 3600, 7.5),  # in the deleted buffer, never sent
        _tr("w01009", NOW + 3 * 3600, 7.75),  # the new buffer's seq 1
        _tr("w01009", NOW + 4 * 3600, 8.0),  # lost after the replacement: a real loss
    ]
    old, new = 11, 22
    rows = [
        StoredRow("S1", 1, round(NOW * 1000), "w01009", 7.25, "N", old),
        StoredRow("S1", 1, round((NOW + 3 * 3600) * 1000), "w01009", 7.75, "N", new),
        StoredRow("S1", wire.MAX_SEQ, round(NOW * 1000), "w01010", 21.5, "N", new),  # forged
    ]
    forged = {("S1", new, wire.MAX_SEQ): "huge_seq", ("S1", new, wire.MAX_SEQ - 1): "ts_1970"}
    c = compare(truth, rows, replaced={"S1": [NOW + 2 * 3600]}, forged=forged)
    assert (c.stored, c.lost, c.lost_with_buffer, c.unexpected, c.duplicates) == (2, 1, 1, 0, 0)
    assert c.lost_examples[0]["ts"] == NOW + 4 * 3600
    assert [w.ts for w in c.went_with_buffer] == [NOW + 3600]
    assert c.forged_stored == {"huge_seq": 1}
    assert c.per_stream == {
        f"S1/{old:x}": {"stored": 1, "seq_duplicates": 0, "matched": 1},
        f"S1/{new:x}": {"stored": 1, "seq_duplicates": 0, "matched": 1},
    }
    assert c.per_station["S1"]["lost_with_buffer"] == 1
    assert "went_with_buffer" not in c.to_json()
    # Without the replacement, the same rows are two real losses; one seq on one stream twice
    # is a duplicate, the same seq on two streams is not.
    c2 = compare(truth, [*rows[:2], rows[1]])
    assert (c2.lost, c2.lost_with_buffer, c2.seq_duplicates) == (2, 0, 1)


def test_truth_batches_leave_out_readings_lost_with_a_buffer(tmp_path: Path) -> None:
    log = TruthLog()
    rs = [_tr("w01009", NOW + i, 7.0 + i) for i in range(3)]
    log._sonde.extend(rs)  # as three sonde polls would
    files = log.write_batches(tmp_path, exclude=[rs[1]])
    batches = [wire.decode_batch(p.read_bytes()) for p in files]
    assert [v for b in batches for v in b.values] == [7.0, 9.0]


def test_a_sample_read_again_by_a_replacement_gateway_is_counted_apart() -> None:
    """An analyzer result the old gateway sent, read again by the gateway that replaced it (its
    new buffer cannot know what the old one sent): stored under both streams, counted as a
    re-read with the new buffer, not as a duplicate; without a replacement it is a duplicate."""
    truth = [_tr("w21003", NOW, 0.42)]
    old, new = 11, 22
    rows = [
        StoredRow("S1", 5, round(NOW * 1000), "w21003", 0.42, "N", old),
        StoredRow("S1", 1, round(NOW * 1000), "w21003", 0.42, "N", new),
    ]
    c = compare(truth, rows, replaced={"S1": [NOW + 60]})
    assert (c.lost, c.duplicates, c.reread_with_new_buffer) == (0, 0, 1)
    assert c.per_station["S1"]["reread_with_new_buffer"] == 1
    assert c.per_stream[f"S1/{new:x}"]["reread_with_new_buffer"] == 1
    plain = compare(truth, rows)
    assert (plain.duplicates, plain.reread_with_new_buffer) == (1, 0)


def test_the_truth_store_takes_the_stations_stamps(tmp_path: Path) -> None:
    """A sonde reading the device served at 10:59:50 and the station stamped 11:00:30 is an
    11:00 reading at the centre: the truth replayed for the section and ledger checks carries
    the station's stamp (a retimed reading's too), an analyzer's matched reading its result time,
    a lost reading the device's time."""
    sonde = _tr("w01009", NOW - 10, 7.25)
    analyzer = _tr("w21011", RT, 0.1, True)
    retimed = _tr("w21003", RT, 0.3, True)
    lost = _tr("w01003", NOW + 1200, 21.5)
    rows = [
        _row(1, "w01009", NOW + 30, 7.25),
        _row(2, "w21011", RT, 0.1),
        _row(3, "w21003", RT + 60, 0.3),  # not its result time: matched by value, retimed
    ]
    c = compare([sonde, analyzer, retimed, lost], rows)
    assert (c.lost, c.retimed) == (1, 1)
    assert c.stamps == {sonde: round((NOW + 30) * 1000), retimed: round((RT + 60) * 1000)}
    assert "stamps" not in c.to_json()
    log = TruthLog()
    log._sonde.extend([sonde, lost])
    files = log.write_batches(tmp_path, stamps=c.stamps)
    (batch,) = [wire.decode_batch(p.read_bytes()) for p in files]
    assert dict(zip(batch.code_column(), batch.ts_ms, strict=True)) == {
        "w01009": round((NOW + 30) * 1000),
        "w01003": round((NOW + 1200) * 1000),
    }

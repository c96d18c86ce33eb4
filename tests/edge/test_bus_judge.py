"""The RTU reply judge (sanduan.edge.core.rtu) against frames built by pymodbus's own encoder:
complete replies, every prefix, corrupted replies, late replies of other requests, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from sanduan.edge.core import rtu

FRAMER = FramerRTU(DecodePDU(False))

slaves = st.integers(1, 247)
functions = st.sampled_from([3, 4])
registers = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125)


def reply(slave: int, function: int, regs: list[int]) -> bytes:
    cls = ReadHoldingRegistersResponse if function == 3 else ReadInputRegistersResponse
    return bytes(FRAMER.buildFrame(cls(dev_id=slave, registers=regs)))


def exception(slave: int, function: int, code: int) -> bytes:
    return bytes(FRAMER.buildFrame(ExceptionResponse(function, code, device_id=slave)))


@given(slaves, functions, st.integers(0, 0xFFFF), st.integers(1, 125))
def test_request_is_pymodbus_frame(slave: int, function: int, address: int, count: int) -> None:
    cls = ReadHoldingRegistersRequest if function == 3 else ReadInputRegistersRequest
    want = FRAMER.buildFrame(cls(address=address, count=count, dev_id=slave))
    assert rtu.read_request(slave, function, address, count) == want


@given(slaves, functions, registers)
def test_reply_complete_and_every_prefix(slave: int, function: int, regs: list[int]) -> None:
    frame = reply(slave, function, regs)
    expect = rtu.Expect(slave, function, len(regs))
    assert len(frame) == expect.length
    for n in range(len(frame)):
        assert rtu.judge(frame[:n], expect) is rtu.NEED_MORE
    assert rtu.judge(frame, expect) == rtu.Registers(tuple(regs), len(frame))
    # bytes after the frame (the next frame's start) do not change the verdict
    assert rtu.judge(frame + b"\x01", expect) == rtu.Registers(tuple(regs), len(frame))


@given(slaves, functions, st.integers(1, 11))
def test_exception_reply(slave: int, function: int, code: int) -> None:
    frame = exception(slave, function, code)
    expect = rtu.Expect(slave, function, 10)
    for n in range(len(frame)):
        assert rtu.judge(frame[:n], expect) is rtu.NEED_MORE
    assert rtu.judge(frame, expect) == rtu.ExceptionReply(code)


@given(slaves, functions, registers, st.data())
def test_corrupted_reply_is_never_taken(
    slave: int, function: int, regs: list[int], data: st.DataObject
) -> None:
    frame = bytearray(reply(slave, function, regs))
    i = data.draw(st.integers(0, len(frame) - 1), label="byte")
    frame[i] ^= data.draw(st.integers(1, 255), label="xor")
    verdict = rtu.judge(frame, rtu.Expect(slave, function, len(regs)))
    assert not isinstance(verdict, rtu.Registers | rtu.ExceptionReply), verdict
    if i >= 3:  # header intact: known bad at the frame's last byte, the whole frame spanned
        assert verdict == rtu.BadReply("crc", "reply with a bad CRC", len(frame), ours=True)


@given(slaves, slaves, functions, registers, registers)
def test_late_reply_of_another_request_is_skipped(
    slave: int, other: int, function: int, regs: list[int], other_regs: list[int]
) -> None:
    """A good frame of another slave, or of this slave with another register count, is never
    the answer: the judge says how much to skip, and the real reply after it is taken."""
    late = reply(other, function, other_regs)
    expect = rtu.Expect(slave, function, len(regs))
    verdict = rtu.judge(late, expect)
    if other == slave and len(other_regs) == len(regs):
        assert verdict == rtu.Registers(tuple(other_regs), len(late))  # same question, answer
        return
    assert verdict == rtu.Foreign(other, function, len(late))
    rest = late[verdict.skip :] + reply(slave, function, regs)
    assert rtu.judge(rest, expect) == rtu.Registers(tuple(regs), len(rest))


@given(slaves, registers)
def test_reply_to_other_function_is_foreign(slave: int, regs: list[int]) -> None:
    late = reply(slave, 4, regs)
    assert rtu.judge(late, rtu.Expect(slave, 3, len(regs))) == rtu.Foreign(slave, 4, len(late))
    late_exc = exception(slave, 4, 2)
    assert rtu.judge(late_exc, rtu.Expect(slave, 3, 1)) == rtu.Foreign(slave, 0x84, 5)


@given(st.binary(max_size=300), slaves, functions, st.integers(1, 125))
def test_arbitrary_bytes_taken_only_as_a_valid_frame(
    buf: bytes, slave: int, function: int, count: int
) -> None:
    verdict = rtu.judge(buf, rtu.Expect(slave, function, count))
    if isinstance(verdict, rtu.Registers):
        assert buf[: verdict.skip] == reply(slave, function, list(verdict.values))
    elif isinstance(verdict, rtu.Foreign | rtu.BadReply):
        assert 0 < verdict.skip <= len(buf)


@pytest.mark.parametrize(
    ("buf", "kind"),
    [
        (b"\x01\x07", "garbage"),  # no read function: known bad at the second byte
        (b"\x01\x83\x02\x00\x00", "crc"),  # exception reply with a bad CRC
        (b"\x09\x03\x02\x00\x01\x00\x00", "garbage"),  # another slave, bad CRC
        (b"\x01\x03\x03", "garbage"),  # an odd byte count: no register reply
        (b"\x01\x01", "garbage"),  # a coil read: this master never sends one
    ],
)
def test_bad_frames(buf: bytes, kind: str) -> None:
    verdict = rtu.judge(buf, rtu.Expect(1, 3, 1))
    assert isinstance(verdict, rtu.BadReply)
    assert verdict.kind == kind
    assert verdict.ours is (kind == "crc")


def test_wrong_byte_count_with_bad_crc() -> None:
    frame = bytearray(reply(1, 3, [1, 2]))
    frame[-1] ^= 0xFF
    verdict = rtu.judge(frame, rtu.Expect(1, 3, 3))
    assert isinstance(verdict, rtu.BadReply)
    assert verdict.kind == "count"
    assert verdict.skip == len(frame)

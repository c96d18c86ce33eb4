"""The RTU reply judge and the turnaround estimator (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanduan.edge.core import rtu
from sanduan.hil.rtu import crc16 as rig_crc16
from sanduan.hil.rtu import with_crc


def reply(slave: int, fc: int, regs: list[int]) -> bytes:
    return with_crc(bytes([slave, fc, 2 * len(regs)]) + struct.pack(f">{len(regs)}H", *regs))


def feed(frame: bytes, slave: int = 1, fc: int = 3, count: int = 2) -> list[rtu.Verdict | None]:
    """The verdict after each byte, as the bus sees the reply arrive."""
    return [rtu.judge(frame[: i + 1], slave, fc, count) for i in range(len(frame))]


def test_request_frame_matches_the_rig() -> None:
    frame = rtu.read_request(7, 4, 0x2601, 14)
    assert frame[:6] == bytes([7, 4, 0x26, 0x01, 0, 14])
    assert struct.unpack("<H", frame[6:])[0] == rig_crc16(frame[:6])


@given(st.binary(max_size=64))
def test_crc_matches_the_rig(data: bytes) -> None:
    assert rtu.crc16(data) == rig_crc16(data)


def test_good_reply_is_decided_at_its_last_byte() -> None:
    verdicts = feed(reply(1, 3, [0x1234, 0xABCD]))
    assert verdicts[:-1] == [None] * 8
    assert verdicts[-1] == rtu.Registers((0x1234, 0xABCD))


def test_bad_crc_is_known_at_the_last_byte_not_later() -> None:
    frame = bytearray(reply(1, 3, [1, 2]))
    frame[-1] ^= 0xA5
    verdicts = feed(bytes(frame))
    assert verdicts[:-1] == [None] * 8
    assert verdicts[-1] == rtu.BadReply("bad CRC")


def test_exception_reply() -> None:
    frame = with_crc(bytes([1, 0x83, 2]))
    assert feed(frame)[-1] == rtu.ExceptionReply(2)
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    assert isinstance(feed(bad)[-1], rtu.BadReply)


@pytest.mark.parametrize(
    ("frame", "at", "reason"),
    [
        (bytes([9, 3, 4]), 0, "reply from slave 9, expected 1"),
        (bytes([1, 4, 4]), 1, "reply with function 4, expected 3"),
        (bytes([1, 3, 6]), 2, "reply announces 6 bytes, expected 4"),
    ],
)
def test_garbage_is_known_bad_at_the_first_wrong_byte(frame: bytes, at: int, reason: str) -> None:
    verdicts = feed(frame)
    assert verdicts[:at] == [None] * at
    assert verdicts[at] == rtu.BadReply(reason)


@given(st.binary(min_size=1, max_size=40))
def test_any_bytes_get_a_verdict_or_wait_for_more(data: bytes) -> None:
    v = rtu.judge(data, 1, 3, 2)
    if v is None:
        assert len(data) < rtu.reply_length(2)
    elif isinstance(v, rtu.Registers):
        assert data[: rtu.reply_length(2)] == reply(1, 3, list(v.values))


def test_turnaround_timeout_within_bounds() -> None:
    t = rtu.Turnaround()
    assert t.timeout_s(0.003, 0.05, 1.0) == 1.0  # nothing measured: the full timeout
    for s in (0.004, 0.005, 0.006, 0.005):
        t.add(s)
    assert t.worst_s == 0.006
    assert t.timeout_s(0.003, 0.05, 1.0) == 0.05  # 3 * 6 ms + 3 ms + 20 ms, below the floor
    t.add(0.2)
    assert t.timeout_s(0.003, 0.05, 1.0) == pytest.approx(0.623)
    t.add(0.5)
    assert t.timeout_s(0.003, 0.05, 1.0) == 1.0  # never above the configured timeout
    for _ in range(rtu.Turnaround.WINDOW):
        t.add(0.001)
    assert t.worst_s == 0.001  # old samples leave the window
    t.reset()
    assert t.timeout_s(0.003, 0.05, 1.0) == 1.0

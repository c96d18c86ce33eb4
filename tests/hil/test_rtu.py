from __future__ import annotations

import struct

from sanduan.hil.rtu import (
    RequestHunter,
    crc16,
    exception_reply,
    read_reply,
    with_crc,
)


def test_crc16_modbus_vector() -> None:
    # the classic "read 10 holding registers from slave 1" frame: 01 03 00 00 00 0A C5 CD
    assert with_crc(bytes.fromhex("01030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value


def test_hunter_finds_frames_after_garbage_and_drops_bad_crc() -> None:
    good = with_crc(struct.pack(">BBHH", 2, 4, 0x10, 4))
    bad = bytearray(with_crc(struct.pack(">BBHH", 1, 3, 0, 10)))
    bad[-1] ^= 0xFF
    hunter = RequestHunter()
    # bytes arriving in pieces: a corrupted request, line noise, then a good request
    reqs = hunter.feed(bytes(bad) + b"\x00\xff")
    reqs += hunter.feed(good[:3])
    reqs += hunter.feed(good[3:])
    assert [(r.slave, r.function, r.address, r.count) for r in reqs] == [(2, 4, 0x10, 4)]
    assert hunter.crc_errors > 0
    assert hunter.silence() == []


def test_hunter_takes_unknown_function_at_silence() -> None:
    frame = with_crc(bytes((7, 0x2B, 0x0E, 0x01, 0x00)))  # read device identification
    hunter = RequestHunter()
    assert hunter.feed(frame) == []
    (req,) = hunter.silence()
    assert (req.slave, req.function, req.pdu) == (7, 0x2B, b"\x2b\x0e\x01\x00")


def test_hunter_fc16_length_from_byte_count() -> None:
    frame = with_crc(struct.pack(">BBHHB2H", 1, 16, 0, 2, 4, 1, 2))
    (req,) = RequestHunter().feed(frame)
    assert req.function == 16


def test_replies() -> None:
    assert read_reply(1, 3, [0x3F80, 0]) == with_crc(bytes.fromhex("0103043F800000"))
    assert exception_reply(1, 4, 2) == with_crc(bytes.fromhex("018402"))

"""CRC-16 with the reflected polynomial 0xA001, the check of Modbus RTU frames and (with its own
initial value) of HJ 212-2017 packets. Pure."""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["TABLE", "crc16", "crc_ok", "with_crc"]


def _table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


TABLE: Final = _table()
"""Eight shift-and-xor rounds of polynomial 0xA001 for each byte value."""


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` with its Modbus CRC appended, low byte first."""
    return body + struct.pack("<H", crc16(body))


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """True when the frame's last two bytes are the Modbus CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == frame[-2] | (frame[-1] << 8)

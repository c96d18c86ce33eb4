"""Modbus RTU framing for the simulated slaves: CRC-16/Modbus, request hunting, replies.

Standard library only. A slave on a multi-drop bus sees every master request and must find frame
boundaries itself; :class:`RequestHunter` does that from the function code's known request length
and the CRC, sliding one byte at a time past anything that does not check out (a corrupted or
foreign frame), and treats whatever is left after a silence as one frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sanduan.shared.crc import crc16, crc_ok, with_crc

__all__ = [
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_DATA_VALUE",
    "ILLEGAL_FUNCTION",
    "SLAVE_DEVICE_FAILURE",
    "Request",
    "RequestHunter",
    "crc16",
    "crc_ok",
    "exception_reply",
    "read_reply",
    "with_crc",
]

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SLAVE_DEVICE_FAILURE = 4


@dataclass(frozen=True, slots=True)
class Request:
    """A request frame with a good CRC. ``address``/``count`` are set for FC01-04."""

    slave: int
    function: int
    pdu: bytes  # function code + data, without slave id and CRC
    address: int = 0
    count: int = 0


_FIXED_8 = frozenset({1, 2, 3, 4, 5, 6})  # request length 8 bytes
_WITH_BYTECOUNT = frozenset({15, 16})  # slave fc addr(2) qty(2) n(1) data(n) crc(2)


def _expected_length(buf: bytearray) -> int | None:
    """Request length implied by the function code, or None when it cannot be known yet."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in _FIXED_8:
        return 8
    if fc in _WITH_BYTECOUNT:
        return 9 + buf[6] if len(buf) >= 7 else None
    return None


def _resync(buf: bytearray) -> int | None:
    """Offset of the first complete, CRC-valid request of known length after buf[0]."""
    for i in range(1, len(buf) - 7):
        n = _expected_length(buf[i : i + 7])
        if n is not None and i + n <= len(buf) and crc_ok(buf[i : i + n]):
            return i
    return None


def _parse(frame: bytes) -> Request:
    slave, fc = frame[0], frame[1]
    pdu = frame[1:-2]
    if fc in _FIXED_8:
        address, count = struct.unpack(">HH", frame[2:6])
        return Request(slave, fc, pdu, address, count)
    return Request(slave, fc, pdu)


class RequestHunter:
    """Accumulates bytes from the line and yields request frames that pass the CRC check."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.crc_errors = 0  # bytes or frames dropped because no CRC matched

    def feed(self, data: bytes) -> list[Request]:
        """Add received bytes; return the complete, CRC-valid requests found so far."""
        self.buf += data
        out: list[Request] = []
        buf = self.buf
        while True:
            n = _expected_length(buf)
            if n is None:
                # Unknown function code: a frame of unknown length, or line noise. Resync on
                # a later well-formed request if there is one; otherwise wait for silence.
                skip = _resync(buf)
                if skip is None:
                    break
                del buf[:skip]
                self.crc_errors += skip
                continue
            if len(buf) < n:
                break
            if crc_ok(buf[:n]):
                out.append(_parse(bytes(buf[:n])))
                del buf[:n]
            else:
                del buf[0]
                self.crc_errors += 1
        return out

    def silence(self) -> list[Request]:
        """The line went quiet: what is buffered is one frame (or garbage to drop)."""
        buf = self.buf
        if not buf:
            return []
        out: list[Request] = []
        if len(buf) >= 4 and crc_ok(buf):
            out.append(_parse(bytes(buf)))
        else:
            self.crc_errors += 1
        buf.clear()
        return out


def exception_reply(slave: int, function: int, code: int) -> bytes:
    return with_crc(bytes((slave, (function | 0x80) & 0xFF, code & 0xFF)))


def read_reply(slave: int, function: int, registers: list[int]) -> bytes:
    """Reply to FC03/FC04 with ``registers`` (16-bit words, big endian on the wire)."""
    data = struct.pack(f">{len(registers)}H", *registers)
    return with_crc(bytes((slave, function, len(data))) + data)

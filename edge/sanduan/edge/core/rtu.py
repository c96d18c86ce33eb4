"""Modbus RTU read transactions as bytes: the request frame, and a verdict on the reply so far.

Pure. The bus shell feeds :func:`judge` every byte received since the request went out and acts
on the verdict as soon as there is one, so a reply that cannot be right (a bad CRC, bytes from
another slave, garbage) ends the wait at once instead of running into the timeout:

- ``None``: not enough bytes yet to decide;
- :class:`Registers`: a complete reply with a good CRC and the requested register count;
- :class:`ExceptionReply`: a complete exception reply with a good CRC;
- :class:`BadReply`: the bytes cannot be (the start of) the reply, with the reason.

The reply's length is known from its third byte (the byte count), so a corrupted reply is known
bad the moment its last byte arrives, and a reply whose first two bytes do not name the polled
slave and function is known bad at its second byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "BadReply",
    "ExceptionReply",
    "Registers",
    "Turnaround",
    "Verdict",
    "crc16",
    "judge",
    "read_request",
    "reply_length",
]


def _table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_CRC_TABLE = _table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def read_request(slave: int, function: int, address: int, count: int) -> bytes:
    """The 8-byte FC03/FC04 request frame."""
    body = struct.pack(">BBHH", slave, function, address, count)
    return body + struct.pack("<H", crc16(body))


def reply_length(count: int) -> int:
    """Bytes of a normal reply carrying ``count`` registers."""
    return 5 + 2 * count


@dataclass(frozen=True, slots=True)
class Registers:
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    code: int


@dataclass(frozen=True, slots=True)
class BadReply:
    reason: str


Verdict = Registers | ExceptionReply | BadReply


def _crc_ok(frame: bytes | bytearray) -> bool:
    return crc16(frame[:-2]) == frame[-2] | (frame[-1] << 8)


def judge(buf: bytes | bytearray, slave: int, function: int, count: int) -> Verdict | None:
    """The verdict on ``buf``, the bytes received since the request (see the module doc)."""
    n = len(buf)
    if n == 0:
        return None
    if buf[0] != slave:
        return BadReply(f"reply from slave {buf[0]}, expected {slave}")
    if n < 2:
        return None
    fc = buf[1]
    if fc == function | 0x80:
        if n < 5:
            return None
        frame = buf[:5]
        if not _crc_ok(frame):
            return BadReply("exception reply with a bad CRC")
        return ExceptionReply(frame[2])
    if fc != function:
        return BadReply(f"reply with function {fc}, expected {function}")
    if n < 3:
        return None
    if buf[2] != 2 * count:
        return BadReply(f"reply announces {buf[2]} bytes, expected {2 * count}")
    size = reply_length(count)
    if n < size:
        return None
    frame = buf[:size]
    if not _crc_ok(frame):
        return BadReply("bad CRC")
    return Registers(struct.unpack(f">{count}H", frame[3 : 3 + 2 * count]))


class Turnaround:
    """A device's recent turnarounds (end of request to first reply byte, seconds) and the
    reply timeout they justify.

    The timeout is ``SAFETY * worst of the last WINDOW turnarounds + the reply's wire time +
    MARGIN_S``, kept within ``[low, high]``; ``high`` until ``MIN_SAMPLES`` have been seen.
    """

    WINDOW = 32
    MIN_SAMPLES = 4
    SAFETY = 3.0
    MARGIN_S = 0.02

    def __init__(self) -> None:
        self._samples: list[float] = []

    def add(self, seconds: float) -> None:
        self._samples.append(max(0.0, seconds))
        if len(self._samples) > self.WINDOW:
            del self._samples[0]

    def reset(self) -> None:
        self._samples.clear()

    @property
    def worst_s(self) -> float | None:
        return max(self._samples) if len(self._samples) >= self.MIN_SAMPLES else None

    def timeout_s(self, reply_wire_s: float, low: float, high: float) -> float:
        worst = self.worst_s
        if worst is None:
            return high
        return min(high, max(low, self.SAFETY * worst + reply_wire_s + self.MARGIN_S))

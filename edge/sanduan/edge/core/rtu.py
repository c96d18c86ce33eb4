"""Modbus RTU read transactions as bytes: the request frame, and a verdict on the reply so far.

Pure. A bus shell that frames its own requests feeds :func:`judge` the bytes received since
its request went out and acts on the verdict as soon as there is one, so a reply that cannot be
right ends the wait at once instead of running into the timeout (the bus poller,
:mod:`sanduan.edge.io.bus`, does this; pymodbus only owns its serial port). A verdict is one
of:

- :data:`NEED_MORE`: not enough bytes yet to decide;
- :class:`Registers`: the expected reply, complete, with a good CRC;
- :class:`ExceptionReply`: an exception reply of the polled slave to the polled function;
- :class:`Foreign`: a complete, well-formed frame (good CRC) that is *not* the answer to this
  request: a late reply of another slave, or of this slave to another request. It is never taken
  as the answer; the shell skips ``skip`` bytes and goes on waiting;
- :class:`BadReply`: the bytes cannot be (the start of) a well-formed frame: a bad CRC, a byte
  count that does not fit, garbage. ``skip`` is how many bytes it spans (the shell drains the line
  anyway); ``ours`` tells whether it names the polled slave and function.

A frame's length is known from its first three bytes (slave, function, byte count for a read
reply; 5 bytes for an exception reply), so a corrupted reply is known bad the moment its last
byte arrives, and garbage at its second byte (no register read function) or third (a byte
count no register reply carries).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sanduan.shared.crc import crc16, crc_ok, with_crc

__all__ = [
    "NEED_MORE",
    "READ_FUNCTIONS",
    "BadReply",
    "ExceptionReply",
    "Expect",
    "Foreign",
    "NeedMore",
    "Registers",
    "Verdict",
    "crc16",
    "judge",
    "read_request",
    "reply_length",
]

READ_FUNCTIONS: Final = frozenset({3, 4})
"""The register reads this master sends: a reply to one carries an even byte count (at most 250)
in its third byte. Nothing else can be on the line but garbage."""
MAX_BYTE_COUNT: Final = 250
EXCEPTION_LENGTH: Final = 5


def read_request(slave: int, function: int, address: int, count: int) -> bytes:
    """The 8-byte FC03/FC04 request frame."""
    return with_crc(struct.pack(">BBHH", slave, function, address, count))


def reply_length(count: int) -> int:
    """Bytes of a normal FC03/FC04 reply carrying ``count`` registers."""
    return 5 + 2 * count


@dataclass(frozen=True, slots=True)
class Expect:
    """The reply a read request calls for."""

    slave: int
    function: int
    count: int

    @property
    def length(self) -> int:
        return reply_length(self.count)


@dataclass(frozen=True, slots=True)
class NeedMore:
    pass


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True, slots=True)
class Registers:
    values: tuple[int, ...]
    skip: int


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    code: int
    skip: int = EXCEPTION_LENGTH


@dataclass(frozen=True, slots=True)
class Foreign:
    """A well-formed frame that does not answer this request (never taken as the answer)."""

    slave: int
    function: int
    skip: int


@dataclass(frozen=True, slots=True)
class BadReply:
    kind: str
    """``crc`` (a frame of the polled slave with a bad CRC), ``count`` (the polled slave's reply
    announces another byte count and is not a valid frame) or ``garbage``."""
    reason: str
    skip: int
    ours: bool


Verdict = NeedMore | Registers | ExceptionReply | Foreign | BadReply


def _frame_length(buf: bytes | bytearray) -> int | None:
    """The length of the frame starting at ``buf[0]`` (None: not known yet); -1 when its second
    byte is no read or read-exception function (garbage)."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return EXCEPTION_LENGTH if fc & 0x7F in READ_FUNCTIONS else -1
    if fc not in READ_FUNCTIONS:
        return -1
    if len(buf) < 3:
        return None
    count = buf[2]
    return 5 + count if count % 2 == 0 and 0 < count <= MAX_BYTE_COUNT else -1


def judge(buf: bytes | bytearray, expect: Expect) -> Verdict:
    """The verdict on ``buf``, the bytes received since the request (see the module doc)."""
    n = len(buf)
    if n == 0:
        return NEED_MORE
    slave, function = buf[0], buf[1] if n > 1 else None
    ours = slave == expect.slave and function in (None, expect.function, expect.function | 0x80)
    size = _frame_length(buf)
    if size is None:
        return NEED_MORE
    if size < 0:
        assert function is not None
        return BadReply(
            "garbage", f"no reply frame (slave {slave}, function {function})", n, ours=False
        )
    assert function is not None
    if n < size:
        # A reply of the polled slave announcing another byte count: its CRC will tell whether
        # it is a late reply to another request or a corrupted one; wait for it all.
        return NEED_MORE
    frame = buf[:size]
    if not crc_ok(frame):
        if ours and function == expect.function and frame[2] != 2 * expect.count:
            return BadReply(
                "count",
                f"reply announces {frame[2]} bytes, expected {2 * expect.count}, bad CRC",
                size,
                ours=True,
            )
        if ours:
            what = "exception reply" if function & 0x80 else "reply"
            return BadReply("crc", f"{what} with a bad CRC", size, ours=True)
        return BadReply(
            "garbage", f"bad frame (slave {slave}, function {function}, bad CRC)", size, ours=False
        )
    if ours and function == expect.function | 0x80:
        return ExceptionReply(frame[2])
    if ours and function == expect.function and frame[2] == 2 * expect.count:
        return Registers(struct.unpack(f">{expect.count}H", frame[3 : size - 2]), size)
    return Foreign(slave, function, size)

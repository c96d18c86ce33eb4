"""Packets out of a TCP byte stream (pure).

:class:`Splitter` is fed the bytes as they arrive and returns :class:`Frame` s: a decoded packet,
or the bytes it had to skip with the reason. It resynchronises on the next ``##`` after garbage,
a bad length field or a packet whose CR LF is not where its length says (as soon as a CR LF
shows up early: a data segment has none); its buffer never holds
more than one largest packet (plus one ``#``), whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanduan.shared.errors import Hj212Error
from sanduan.shared.hj212.codec import HEAD, MAX_DATA, OVERHEAD, TAIL, Packet, decode


@dataclass(frozen=True, slots=True)
class Frame:
    """One thing found in the stream: ``packet`` with its ``raw`` bytes, or ``error`` with the
    bytes skipped because of it."""

    raw: bytes
    packet: Packet | None = None
    error: Hj212Error | None = None


class Splitter:
    """Split a byte stream into HJ 212 packets; bounded memory, garbage counted and skipped."""

    def __init__(self, max_data: int = MAX_DATA) -> None:
        self.max_data = max_data
        self.max_buffer = max_data + OVERHEAD
        self._buf = bytearray()
        self.packets = 0
        self.errors = 0
        self.skipped_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a packet."""
        return len(self._buf)

    def _skip(self, n: int, reason: str, out: list[Frame]) -> None:
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        self.errors += 1
        self.skipped_bytes += n
        out.append(Frame(raw, error=Hj212Error(reason)))

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next bytes of the stream; returns every frame they complete."""
        out: list[Frame] = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(HEAD)
            if start < 0:
                # Keep a trailing '#': it may be the first half of the next '##'.
                keep = 1 if buf[-1:] == b"#" else 0
                if len(buf) > keep:
                    self._skip(len(buf) - keep, "bytes outside a packet (no '##')", out)
                break
            if start > 0:
                self._skip(start, "bytes before '##' skipped", out)
                continue
            if len(buf) < 6:
                break
            digits = bytes(buf[2:6])
            if not digits.isdigit() or int(digits) > self.max_data:
                self._skip(
                    self._next_head(),
                    f"length field {digits!r} is not 4 digits up to {self.max_data}",
                    out,
                )
                continue
            total = int(digits) + OVERHEAD
            # A data segment is printable ASCII: a CR LF before the end the length gives means
            # the length is wrong. Resync now rather than wait for bytes that belong to the
            # next packets.
            if buf.find(TAIL, 6, min(len(buf), total - 1)) >= 0:
                self._skip(
                    self._next_head(),
                    f"CR LF before the end that length {digits.decode()} gives",
                    out,
                )
                continue
            if len(buf) < total:
                break
            if buf[total - 2 : total] != TAIL:
                self._skip(
                    self._next_head(),
                    f"no CR LF where length {digits.decode()} puts the end of the packet",
                    out,
                )
                continue
            raw = bytes(buf[:total])
            del buf[:total]
            try:
                packet = decode(raw, max_data=self.max_data)
            except Hj212Error as e:
                self.errors += 1
                out.append(Frame(raw, error=e))
            else:
                self.packets += 1
                out.append(Frame(raw, packet=packet))
        return out

    def _next_head(self) -> int:
        """Bytes up to the next '##' after the one at the start (all, if there is none)."""
        nxt = self._buf.find(HEAD, 1)
        if nxt < 0:
            return len(self._buf) - (1 if self._buf[-1:] == b"#" else 0)
        return nxt


def split_bytes(data: bytes, max_data: int = MAX_DATA) -> tuple[list[Frame], int]:
    """Every frame in ``data`` (a file or a capture) and the bytes left incomplete at its end."""
    s = Splitter(max_data)
    frames = s.feed(data)
    if s.buffered:
        rest = bytes(s._buf)
        frames.append(Frame(rest, error=Hj212Error(f"{len(rest)} bytes of an incomplete packet")))
    return frames, s.buffered

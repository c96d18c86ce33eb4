"""What the station may believe of the centre's answers: pure checks, no I/O.

Every number that comes from the network is checked here against the wire bounds and against
what this station's stream has actually issued (:class:`Issued`) before anything acts on it or
persists it. Each check returns what to do (possibly nothing) and, when something was refused,
one line saying why; the caller logs that line once.

- An ack is taken only for this station and stream, for a batch seq this buffer has issued and
  for reading seqs inside ``1..last issued``; anything else is ignored whole (an ack marks
  readings deleted-when-space-is-needed, so a wrong one could lose data).
- A resend request is answered for the seqs this stream has issued; the part beyond them is
  ignored (one warning). At most :data:`MAX_RANGES` ranges are taken from one request.
- A nack is taken only for this station and stream and for issued seqs.
- A clock sample is taken only when the centre's time is a plausible date and the offset it
  gives fits the wire's bounds (:data:`MAX_CLOCK_OFFSET_S`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SeqRange = tuple[int, int]

U63_MAX = (1 << 63) - 1
MAX_SEQ = (1 << 48) - 1
"""Highest reading seq of a stream (the wire's bound)."""
MAX_RANGES = 256
"""Ranges taken from any one message (the wire's bound)."""
MIN_CENTRE_MS = 946_684_800_000
"""2000-01-01T00:00Z: an ack stamped earlier carries no usable clock."""
MAX_CENTRE_MS = 4_102_444_800_000
"""2100-01-01T00:00Z."""
MAX_CLOCK_OFFSET_S = 200 * 365 * 86_400.0
"""Bound on a reported offset (a station clock reset to 1970 is still reported, as it is)."""


def new_stream_id() -> int:
    """A random stream id in 1..2^63-1 (made once, when a buffer is created)."""
    return secrets.randbelow(U63_MAX) + 1


@dataclass(frozen=True, slots=True)
class Issued:
    """What this buffer has issued so far: its stream, its last reading seq, its last batch seq
    (reserved; some may be unused)."""

    station: str
    stream: int
    last_seq: int
    last_bseq: int


def _ranges_ok(ranges: Iterable[SeqRange]) -> bool:
    return all(isinstance(a, int) and isinstance(b, int) and 1 <= a <= b for a, b in ranges)


def clip(ranges: Sequence[SeqRange], last_seq: int) -> tuple[list[SeqRange], int]:
    """``ranges`` (sorted, merged) cut to ``1..last_seq``, and how many seqs were cut off.

    The count is a Python int: a range up to 2^63 is counted, never overflows."""
    kept: list[SeqRange] = []
    cut = 0
    for a, b in normalise(ranges):
        lo, hi = max(a, 1), min(b, last_seq)
        if lo <= hi:
            kept.append((lo, hi))
            cut += (b - a + 1) - (hi - lo + 1)
        else:
            cut += b - a + 1
    return kept, cut


def normalise(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[SeqRange] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _who(station: str, stream: int, issued: Issued) -> str | None:
    if station != issued.station:
        return f"it is for station {station!r}"
    if stream != issued.stream:
        return f"it is for stream {stream}, this buffer is stream {issued.stream}"
    return None


def check_ack(  # noqa: PLR0917 - the fields of an Ack
    station: str,
    stream: int,
    batch_seq: int,
    first_seq: int,
    last_seq: int,
    ranges: Sequence[SeqRange],
    issued: Issued,
) -> tuple[list[SeqRange], str | None]:
    """The reading ranges an ack marks, or ``([], why it is ignored)``."""
    why = _who(station, stream, issued)
    if why is not None:
        return [], why
    if not 1 <= batch_seq <= issued.last_bseq:
        return [], f"batch {batch_seq} was never sent (last batch seq {issued.last_bseq})"
    marks = list(ranges) or [(first_seq, last_seq)]
    if len(marks) > MAX_RANGES:
        return [], f"{len(marks)} ranges (at most {MAX_RANGES})"
    if not _ranges_ok(marks) or first_seq < 1 or first_seq > last_seq:
        return [], f"seqs {first_seq}..{last_seq} {list(marks)[:4]} are not valid ranges"
    top = max(b for _, b in marks)
    if max(top, last_seq) > issued.last_seq:
        return [], (
            f"it acknowledges seq {max(top, last_seq)}, beyond the last issued {issued.last_seq}"
        )
    return normalise(marks), None


def check_resend(
    station: str, stream: int, ranges: Sequence[SeqRange], issued: Issued
) -> tuple[list[SeqRange], str | None]:
    """The ranges of a resend request to answer, and a warning line for what is ignored."""
    why = _who(station, stream, issued)
    if why is not None:
        return [], why
    asked = list(ranges)
    note = None
    if len(asked) > MAX_RANGES:
        note = f"{len(asked)} ranges asked, the first {MAX_RANGES} taken"
        asked = asked[:MAX_RANGES]
    if not _ranges_ok(asked):
        return [], "ranges are not valid (each a..b with 1 <= a <= b)"
    kept, cut = clip(asked, issued.last_seq)
    if cut:
        extra = f"{cut} of the seqs asked for were never issued (last issued seq {issued.last_seq})"
        note = extra if note is None else f"{note}; {extra}"
    return kept, note


def check_nack(  # noqa: PLR0917 - the fields of a Nack
    station: str,
    stream: int,
    first_seq: int,
    last_seq: int,
    ranges: Sequence[SeqRange],
    issued: Issued,
) -> tuple[list[SeqRange], str | None]:
    """The reading ranges a nack rejects, or ``([], why it is ignored)``."""
    why = _who(station, stream, issued)
    if why is not None:
        return [], why
    if not ranges or len(ranges) > MAX_RANGES or not _ranges_ok(ranges):
        return [], "its ranges are empty, too many or not valid"
    kept, _ = clip(ranges, min(last_seq, issued.last_seq))
    kept = [(max(a, first_seq), b) for a, b in kept if b >= first_seq]
    if not kept:
        return [], f"none of its seqs were issued in batch {first_seq}..{last_seq}"
    return kept, None


def clock_offset(
    centre_ms: int, now_s: float, sent_wall: float | None
) -> tuple[float, float | None] | None:
    """(station minus centre in seconds, round trip or None) from an ack stamped ``centre_ms``
    received at ``now_s`` (station clock); None when the stamp is no usable clock."""
    if not MIN_CENTRE_MS <= centre_ms <= MAX_CENTRE_MS:
        return None
    local = now_s
    rtt: float | None = None
    if sent_wall is not None and math.isfinite(sent_wall) and sent_wall <= now_s:
        rtt = now_s - sent_wall
        local = sent_wall + rtt / 2
    offset = local - centre_ms / 1000.0
    if abs(offset) > MAX_CLOCK_OFFSET_S:
        return None
    return offset, rtt

"""The station's send window and what it may believe of the centre's answers: pure, no I/O.

:class:`SendWindow` is the forwarder's state (batches in flight, seqs to send again, the cursor
of new readings): events in (``committed``, ``link_up``, ``acked``, ``resend``, ``expire``),
one request out (:meth:`SendWindow.next_request`: which readings the next batch takes). The
asyncio shell (:mod:`sanduan.edge.forwarder`) forms the batch from the buffer, publishes it and
reports back; nothing here touches the buffer, the clock or the network.

Every number that comes from the network is checked here against the wire bounds and against
what this station's stream has actually issued (:class:`Issued`) before anything acts on it or
persists it. Each check returns what to do (possibly nothing) and, when something was refused,
one line saying why; the caller logs that line once.

- Stream 0 in an answer is a collector that speaks only wire v1: it cannot tell streams apart,
  so its answers are taken for the current stream (the seq checks below still apply). Any other
  stream but this buffer's own is refused.
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

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sanduan.shared.wire import MAX_RANGES, MAX_SEQ, U63_MAX, new_stream_id

__all__ = [
    "MAX_RANGES",
    "MAX_SEQ",
    "U63_MAX",
    "ClockWatch",
    "Inflight",
    "Issued",
    "Request",
    "SendWindow",
    "check_ack",
    "check_nack",
    "check_resend",
    "clip",
    "clock_offset",
    "new_stream_id",
    "normalise",
]

SeqRange = tuple[int, int]

MIN_CENTRE_MS = 946_684_800_000
"""2000-01-01T00:00Z: an ack stamped earlier carries no usable clock."""
MAX_CENTRE_MS = 4_102_444_800_000
"""2100-01-01T00:00Z."""
MAX_CLOCK_OFFSET_S = 200 * 365 * 86_400.0
"""Bound on a reported offset (a station clock reset to 1970 is still reported, as it is)."""


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
    if stream not in (issued.stream, 0):
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


# --------------------------------------------------------------------------------------------
# the send window

Why = Literal["resend", "retry", "new"]
MAX_PENDING_RANGES = 4096
"""Ranges kept waiting to be sent again; beyond it the oldest wait for the next reconnect
(after which everything unacknowledged is sent again anyway)."""


@dataclass(slots=True)
class Inflight:
    """A batch published and not yet acknowledged."""

    first: int
    last: int
    sent_at: float  # monotonic seconds
    why: Why
    sent_wall: float = math.nan  # station clock at publish, seconds


@dataclass(frozen=True, slots=True)
class Request:
    """Which readings the next batch takes: ``why`` "new" is every unacknowledged reading after
    ``lo - 1``; "retry" the unacknowledged ones in ``lo..hi``; "resend" every one still held in
    ``lo..hi`` (acknowledged or not, never a rejected one)."""

    why: Why
    lo: int
    hi: int


MAX_BACKOFF = 8
"""At most this many times ``ack_timeout_s`` between resends of an unanswered batch."""


@dataclass(slots=True)
class SendWindow:
    """See the module docstring. Times are the caller's monotonic seconds."""

    ack_timeout_s: float
    max_inflight: int
    batch_max_readings: int
    batch_max_age_s: float
    head: int = 0
    """Last committed seq."""
    cursor: int = 0
    """New readings up to here have been put in a batch since the last connect."""
    backlog: bool = True
    """Readings from before the start or the connect: due at once."""
    inflight: dict[int, Inflight] = field(default_factory=dict)
    retry: list[SeqRange] = field(default_factory=list)
    resend: list[SeqRange] = field(default_factory=list)
    commits: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=100_000)
    )
    backoff: int = 1
    """The ack timeout's multiplier: doubled by every expiry (up to :data:`MAX_BACKOFF`), back
    to 1 by an ack. A centre that is slow to answer (a collector restarting under a backlog)
    gets fewer resends instead of more: each resend it cannot yet answer adds to its backlog."""

    @property
    def timeout_s(self) -> float:
        """The ack timeout in force: ``ack_timeout_s`` times :attr:`backoff`."""
        return self.ack_timeout_s * self.backoff

    # -- events ----------------------------------------------------------------------------

    def committed(self, last_seq: int, now: float) -> None:
        self.head = max(self.head, last_seq)
        self.commits.append((last_seq, now))

    def link_up(self) -> None:
        """After every (re)connect everything unacknowledged goes again, oldest first."""
        self.inflight.clear()
        self.retry.clear()
        self.cursor = 0
        self.backlog = True

    def acked(self, batch_seq: int, first: int, last: int, partial: bool) -> Inflight | None:
        """An ack for ``batch_seq``; with ``partial`` the centre holds only part of the batch
        and the rest of its span goes again."""
        sent = self.inflight.pop(batch_seq, None)
        if sent is not None:
            self.backoff = 1
        if partial:
            lo, hi = (sent.first, sent.last) if sent else (first, last)
            self.retry = _capped([*self.retry, (lo, hi)])
        return sent

    def settled(self, batch_seq: int) -> None:
        """Nothing of ``batch_seq`` waits for an ack any more (all of it rejected)."""
        self.inflight.pop(batch_seq, None)

    def resend_asked(self, ranges: Sequence[SeqRange]) -> None:
        self.resend = _capped([*self.resend, *ranges])

    def expire(self, now: float) -> tuple[list[tuple[int, Inflight]], float]:
        """Batches not acknowledged within :attr:`timeout_s` go to the retry list (and the
        timeout doubles); returns them and the seconds to the next expiry."""
        out: list[tuple[int, Inflight]] = []
        nxt = math.inf
        timeout = self.timeout_s
        for bseq, f in list(self.inflight.items()):
            age = now - f.sent_at
            if age >= timeout:
                del self.inflight[bseq]
                self.retry = _capped([*self.retry, (f.first, f.last)])
                out.append((bseq, f))
            else:
                nxt = min(nxt, timeout - age)
        if out:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        return out, nxt

    # -- what to send ----------------------------------------------------------------------

    @property
    def full(self) -> bool:
        return len(self.inflight) >= self.max_inflight

    def new_wait(self, now: float) -> float:
        """Seconds until new readings are due in a batch: 0 now, inf if there are none."""
        pending = self.head - self.cursor
        if pending <= 0:
            return math.inf
        if pending >= self.batch_max_readings or self.backlog:
            return 0.0
        while self.commits and self.commits[0][0] <= self.cursor:
            self.commits.popleft()
        if not self.commits:
            return 0.0
        return max(0.0, self.batch_max_age_s - (now - self.commits[0][1]))

    def next_request(self, now: float) -> Request | None:
        """The next batch to form (resends first, then retries, then new readings when due)."""
        if self.resend:
            return Request("resend", *self.resend[0])
        if self.retry:
            return Request("retry", *self.retry[0])
        if self.new_wait(now) <= 0.0:
            return Request("new", self.cursor + 1, MAX_SEQ)
        return None

    def formed(self, req: Request, last_seq: int | None) -> None:
        """The batch for ``req`` was formed up to ``last_seq`` (None: nothing was there)."""
        if req.why == "new":
            if last_seq is None:
                self.cursor = max(self.cursor, self.head)
                self.backlog = False
                return
            self.cursor = last_seq
            if self.cursor >= self.head:
                self.backlog = False
            return
        pending = self.resend if req.why == "resend" else self.retry
        if not pending or pending[0] != (req.lo, req.hi):
            return
        if last_seq is None or last_seq >= req.hi:
            pending.pop(0)
        else:
            pending[0] = (last_seq + 1, req.hi)

    def sent(self, batch_seq: int, flight: Inflight) -> None:
        self.inflight[batch_seq] = flight


def _capped(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    out = normalise(ranges)
    return out[:MAX_PENDING_RANGES]


@dataclass(slots=True)
class ClockWatch:
    """The station clock's offset from the centre's, estimated from acks (see
    :func:`clock_offset`), and one alarm per excursion beyond ``limit_s``."""

    limit_s: float
    offset_s: float | None = None
    """Latest estimate of station minus centre, seconds (positive: the station is ahead)."""
    rtt_s: float | None = None
    alarmed: bool = False
    alarms: int = 0

    def sample(self, centre_ms: int, now_s: float, sent_wall: float | None) -> float | None:
        """Take an ack's clock; returns the offset, None when it carries no usable time."""
        got = clock_offset(centre_ms, now_s, sent_wall)
        if got is None:
            return None
        self.offset_s, self.rtt_s = got
        return got[0]

    def alarm_due(self) -> bool:
        """True once when the offset goes beyond the limit; again only after it came back."""
        off = self.offset_s
        if off is None:
            return False
        if abs(off) <= self.limit_s:
            self.alarmed = False
            return False
        if self.alarmed:
            return False
        self.alarmed = True
        self.alarms += 1
        return True

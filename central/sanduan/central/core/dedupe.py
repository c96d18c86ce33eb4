"""Per-stream reading sequence tracking: what the centre holds, what is missing, what to ask for.

Pure: plain data in, plain data out. Seqs are unique within (station, stream): a stream is one
station buffer, with a random id made when the buffer was created (v1 agents are stream 0). The
store keeps one :class:`SeqState` for each station's current stream (columns ``stream``,
``max_seq``, ``contiguous_seq`` and ``gaps`` of the ``stations`` table) and advances it in the
same transaction that stores a batch, so the state always agrees with the stored readings.

Rules:

* The first batch seen from a station sets the baseline: nothing below its first seq is
  expected (the station may have been running long before this centre's database existed).
* A seq above ``max_seq + 1`` opens a gap ``[max_seq + 1, seq - 1]`` stamped with the time it was
  first seen. Gaps inside one batch (seqs not contiguous) are gaps too.
* Readings that arrive later close (or split) the gaps they fall in.
* ``contiguous_seq`` is the highest seq with no open gap at or below it.
* A gap older than the gap timeout is due for a resend request; the request is repeated every
  resend interval while the gap stays open, and a gap older than the give-up age is dropped
  (the station no longer holds those readings, or never assigned those seqs).
* A batch from a stream the centre has not seen from that station means the station's buffer was
  made anew (new SD card, re-flash, deleted file): the old stream is retired with
  :func:`retire`, its open gaps closed as *lost with the old buffer* (counted, never silent),
  and tracking starts afresh on the new stream. Late batches of a retired stream are stored
  (their seqs are still unique) but do not move any seq state.
* A (station, stream, seq) that arrives again is a duplicate if its content is the same
  (an idempotent replay, acknowledged again) and a *conflict* if not (:func:`conflicts`): the
  original is kept, and the new content is neither stored nor acknowledged.
* A resend request asks for at most :data:`MAX_SEQS_PER_REQUEST` seqs (:func:`cap_request`).
* A *sample* is what an instrument measured: (station, parameter code, sample time, value). A
  gateway put in place of another starts a new stream and reads again the results its analyzers
  still hold, which the old gateway may have sent already. A reading of a stream whose (station,
  code, ts_ms) the centre already holds under ANOTHER stream of the station is not stored again
  (:func:`cross_stream`): with the same value (compared exactly as stored: the float the agent
  decoded from the instrument's registers, NaN equal to NaN) it is a *re-read*, acknowledged and
  counted; with another value it is a *cross-stream conflict*: the first stored is kept, the
  new one is acknowledged too (the station must not send it forever), recorded as a station
  event and a dead letter. Flag and grade are not compared (the first stored wins). Within
  one stream nothing changes: the same sample under two seqs of one stream is two readings.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SeqRange = tuple[int, int]

MAX_GAPS = 1000
"""Open gaps kept per station; beyond this the highest gaps are merged into one (which can only
ask for readings the centre already holds, never forget one)."""

MAX_RANGES_PER_REQUEST = 256
"""Ranges in one resend request (keeps the message small; the wire's ``MAX_RANGES``)."""

MAX_SEQS_PER_REQUEST = 50_000
"""Seqs one resend request covers at most (five full batches): a forged seq far ahead opens a
huge gap, and the centre must never ask for a span an agent cannot hold or count. The rest of a
gap is asked for in later requests, once the first part has arrived."""

SampleKey = tuple[str, int]
"""A sample's identity within a station: ``(code, ts_ms)``."""

ReadingContent = tuple[int, str, float, str, int]
"""What a reading says, for conflict checks: ``(ts_ms, code, value, flag, grade)``; a missing
value is NaN (stored NULL)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing seqs ``first..last`` (inclusive), first noticed at ``since_ms``."""

    first: int
    last: int
    since_ms: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class SeqState:
    """What the centre knows about one station's reading seqs. ``None`` before any batch."""

    max_seq: int | None = None
    contiguous_seq: int | None = None
    gaps: tuple[Gap, ...] = ()

    @property
    def missing(self) -> int:
        """Readings the centre is waiting for."""
        return sum(g.size for g in self.gaps)


def _subtract(gap: Gap, ranges: Sequence[SeqRange], starts: Sequence[int]) -> list[Gap]:
    """``gap`` minus the ascending, non-overlapping ``ranges`` (``starts`` = their firsts)."""
    # The first range that could overlap: the last one starting at or before gap.first.
    i = max(0, bisect.bisect_right(starts, gap.first) - 1)
    out: list[Gap] = []
    lo = gap.first
    while i < len(ranges) and lo <= gap.last:
        a, b = ranges[i]
        if a > gap.last:
            break
        if b >= lo:
            if a > lo:
                out.append(Gap(lo, a - 1, gap.since_ms))
            lo = b + 1
        i += 1
    if lo <= gap.last:
        out.append(Gap(lo, gap.last, gap.since_ms))
    return out


def _cap(gaps: list[Gap]) -> list[Gap]:
    if len(gaps) <= MAX_GAPS:
        return gaps
    tail = gaps[MAX_GAPS - 1 :]
    merged = Gap(tail[0].first, tail[-1].last, min(g.since_ms for g in tail))
    return [*gaps[: MAX_GAPS - 1], merged]


def advance(state: SeqState, ranges: Sequence[SeqRange], now_ms: int) -> SeqState:
    """The state after readings with seqs in ``ranges`` (ascending, non-overlapping) are stored.

    Duplicates are harmless: ranges the centre already holds change nothing.
    """
    if not ranges:
        return state
    if state.max_seq is None:
        top = ranges[0][0] - 1
        gaps: list[Gap] = []
    else:
        top = state.max_seq
        starts = [a for a, _ in ranges]
        gaps = [piece for g in state.gaps for piece in _subtract(g, ranges, starts)]
    for a, b in ranges:
        if b <= top:
            continue
        if a > top + 1:
            gaps.append(Gap(top + 1, a - 1, now_ms))
        top = b
    gaps = _cap(gaps)
    contiguous = gaps[0].first - 1 if gaps else top
    return SeqState(max_seq=top, contiguous_seq=contiguous, gaps=tuple(gaps))


def cap_request(
    ranges: Iterable[SeqRange],
    max_seqs: int = MAX_SEQS_PER_REQUEST,
    max_ranges: int = MAX_RANGES_PER_REQUEST,
) -> tuple[SeqRange, ...]:
    """The first ``max_ranges`` of ascending ``ranges``, cut so they cover at most ``max_seqs``
    seqs in all (the last range kept is shortened)."""
    out: list[SeqRange] = []
    left = max_seqs
    for a, b in ranges:
        if left <= 0 or len(out) >= max_ranges:
            break
        end = min(b, a + left - 1)
        out.append((a, end))
        left -= end - a + 1
    return tuple(out)


def due_ranges(state: SeqState, now_ms: int, gap_timeout_ms: int) -> tuple[SeqRange, ...]:
    """Ranges of gaps open at least ``gap_timeout_ms`` (at most one request's worth)."""
    due = [(g.first, g.last) for g in state.gaps if now_ms - g.since_ms >= gap_timeout_ms]
    return cap_request(due)


def resend_due(
    state: SeqState,
    last_resend_ms: int | None,
    now_ms: int,
    gap_timeout_ms: int,
    resend_interval_ms: int,
) -> tuple[SeqRange, ...]:
    """Ranges to request now: gaps past the timeout, if the last request is an interval old."""
    if last_resend_ms is not None and now_ms - last_resend_ms < resend_interval_ms:
        return ()
    return due_ranges(state, now_ms, gap_timeout_ms)


def give_up(state: SeqState, now_ms: int, max_age_ms: int) -> tuple[SeqState, tuple[Gap, ...]]:
    """Drop gaps older than ``max_age_ms``; returns the new state and the dropped gaps."""
    keep = tuple(g for g in state.gaps if now_ms - g.since_ms < max_age_ms)
    if len(keep) == len(state.gaps):
        return state, ()
    dropped = tuple(g for g in state.gaps if now_ms - g.since_ms >= max_age_ms)
    top = state.max_seq
    contiguous = keep[0].first - 1 if keep else top
    return SeqState(max_seq=top, contiguous_seq=contiguous, gaps=keep), dropped


def gaps_to_json(gaps: Sequence[Gap]) -> str:
    """``[[first, last, since_ms], ...]``: the ``stations.gaps`` column."""
    return json.dumps([[g.first, g.last, g.since_ms] for g in gaps], separators=(",", ":"))


def gaps_from_json(text: str | None) -> tuple[Gap, ...]:
    if not text:
        return ()
    return tuple(Gap(int(a), int(b), int(t)) for a, b, t in json.loads(text))


@dataclass(frozen=True, slots=True)
class Retired:
    """A stream given up because its station came back with a new one: the last seq the centre
    acknowledged, the highest seq with nothing missing below it, and the gaps lost with it."""

    last_acked_seq: int | None
    contiguous_seq: int | None
    lost_gaps: tuple[Gap, ...]

    @property
    def lost(self) -> int:
        return sum(g.size for g in self.lost_gaps)


def retire(state: SeqState) -> Retired:
    """Close a stream: every gap still open is lost with the old buffer."""
    return Retired(state.max_seq, state.contiguous_seq, state.gaps)


def _same(a: ReadingContent, b: ReadingContent) -> bool:
    if a[0] != b[0] or a[1] != b[1] or a[3] != b[3] or a[4] != b[4]:
        return False
    va, vb = a[2], b[2]
    return va == vb or (math.isnan(va) and math.isnan(vb))


def conflicts(
    sent: Iterable[tuple[int, ReadingContent]], held: Mapping[int, ReadingContent]
) -> tuple[SeqRange, ...]:
    """Seq ranges of the readings ``sent`` (``(seq, content)``, ascending seqs) whose seq the
    centre already ``held`` with different content. Seqs not held are not conflicts."""
    bad: list[SeqRange] = []
    for q, content in sent:
        old = held.get(q)
        if old is None or _same(content, old):
            continue
        if bad and bad[-1][1] == q - 1:
            bad[-1] = (bad[-1][0], q)
        else:
            bad.append((q, q))
    return tuple(bad)


def held_before(state: SeqState, seq: int) -> bool:
    """Whether ``seq`` was stored before, by ``state`` (the stream's seq state before the
    batch): at most ``max_seq`` and in no open gap. Tells a redelivered batch (its re-reads and
    cross-stream conflicts were counted the first time) from a first delivery."""
    if state.max_seq is None or seq > state.max_seq:
        return False
    i = bisect.bisect_right([g.first for g in state.gaps], seq) - 1
    return not (i >= 0 and state.gaps[i].last >= seq)


@dataclass(frozen=True, slots=True)
class CrossStream:
    """Readings of a batch not stored because another stream of the station holds their
    sample: ``reread`` with the same value, ``conflicts`` with another value."""

    reread: tuple[SeqRange, ...] = ()
    conflicts: tuple[SeqRange, ...] = ()


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _append(out: list[SeqRange], q: int) -> None:
    if out and out[-1][1] == q - 1:
        out[-1] = (out[-1][0], q)
    else:
        out.append((q, q))


def cross_stream(
    sent: Iterable[tuple[int, str, int, float]],
    held_here: Iterable[int],
    elsewhere: Mapping[SampleKey, Sequence[float]],
) -> CrossStream:
    """Sort out the readings ``sent`` (``(seq, code, ts_ms, value)``, ascending seqs) whose
    seq the stream does not hold (``held_here``: its seqs held after the insert): a sample held
    under another stream of the station (``elsewhere``: ``(code, ts_ms)`` -> the values held
    there) with one of those values is a re-read, with none of them a cross-stream conflict.
    Readings neither here nor elsewhere are in neither list."""
    here = set(held_here)
    reread: list[SeqRange] = []
    bad: list[SeqRange] = []
    for q, code, ts, value in sent:
        if q in here:
            continue
        values = elsewhere.get((code, ts))
        if values is None:
            continue
        if any(_same_value(value, v) for v in values):
            _append(reread, q)
        else:
            _append(bad, q)
    return CrossStream(tuple(reread), tuple(bad))

"""The truth log: every reading the simulated devices handed to an edge agent, and the delivery
check against what the collector stored.

What counts as a reading the agent READ
---------------------------------------
The agents poll when their own schedulers say so; the rig does not choose the moments. So the
truth is taken on the device side of the line, from what each simulated device actually sent:

* A device's poll is its planned read blocks in order (FC03 blocks, then FC04, by address;
  the same plan the agent makes). :class:`RecordingDevice` watches the requests it answers;
  a poll counts only when every block of it got a clean reply (no silence, CRC error, garbage
  or exception, and a delay within the agent's timeout), because the agent discards a poll when
  any block fails.
* The values of a completed poll are decoded from the very words that went on the wire, with
  the same shared codecs the agent uses, so a value in the truth log is bit-for-bit the value
  the agent decoded. Flags follow the agent's documented rule: the most severe flag of the
  status/quality registers that apply, and D for a missing (NaN) value.
* Sondes: every completed poll is one reading per parameter, stamped with the simulated time of
  the first reply (the agent stamps its own clock's time of that reply).
* Analyzers: one reading per parameter per *cycle*, stamped with the analyzer's result time
  (the agent emits a cycle once; reading the same cycle again is not a new reading).

The delivery check (:func:`compare`) matches stored rows to truth readings exactly: an
analyzer reading by (station, code, result time), a sonde reading by (station, code, the
value's bits), as multisets. ``lost`` = truth readings with no stored row, ``duplicates`` =
stored rows beyond one per truth reading plus rows beyond one per (station, seq),
``unexpected`` = stored rows that match no truth reading at all. Sonde timestamps are then
compared pairwise in time order (the agent's clock against the device's).

A reading read by a device but never committed by the agent because the agent was killed
right after the read is still a loss by this definition. The rig therefore stops agents between
polls (see :meth:`sanduan.hil.rig.Rig._between_polls`) and reports how many truth readings fell
in the short window before each stop (``in_flight_at_kill``, expected 0). An agent may still
send a request between that quiet moment and its stop; the device's answer then reaches nobody.
The rig marks the station's devices as it stops the agent (:attr:`RecordingDevice.agent_stopped`)
and such answers are counted apart (``after_stop``), not as readings.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from sanduan.hil.devices import SimulatedDevice
from sanduan.hil.rtu import Request
from sanduan.shared import wire
from sanduan.shared.config import GradingConfig
from sanduan.shared.model import NOT_GRADED, Flag, WaterBody
from sanduan.shared.registers import (
    DeviceProfile,
    ReadBlock,
    RegisterSpec,
    Role,
    decode_raw,
    decode_registers,
    plan_reads,
)
from sanduan.shared.stuck import STUCK_FLAG, StuckTracker

__all__ = [
    "DeliveryCheck",
    "RecordingDevice",
    "StoredRow",
    "TruthLog",
    "TruthReading",
    "compare",
    "expected_flag",
    "planned_blocks",
    "value_key",
    "worst_flag",
]

RESULT_MAX_LEAD_S = 600.0
RESULT_MAX_AGE_S = 2 * 86_400.0
TIMEOUT_MARGIN = 0.85
"""A reply delayed beyond this share of the agent's timeout is not counted as delivered."""

_SEVERITY = {f: i for i, f in enumerate((Flag.B, Flag.D, Flag.F, Flag.M, Flag.C, Flag.T, Flag.S))}


def worst_flag(a: Flag, b: Flag) -> Flag:
    """The more severe of two flags (B > D > F > M > C > T > S > N), as the agent ranks them."""
    return min(a, b, key=lambda f: _SEVERITY.get(f, len(_SEVERITY)))


def planned_blocks(
    profile: DeviceProfile, max_gap: int = 10, max_count: int = 125
) -> list[ReadBlock]:
    """The read blocks of one poll of ``profile``, in the order the agent sends them."""
    return plan_reads(profile.registers, max_count=max_count, max_gap=max_gap)


def expected_flag(profile: DeviceProfile, spec: RegisterSpec, decoded: Mapping[str, float]) -> Flag:
    """The flag the agent puts on value register ``spec`` given a poll's decoded registers."""
    flag = Flag.N
    for reg in profile.registers:
        if reg.role not in (Role.STATUS, Role.QUALITY) or not reg.applies(spec.code or ""):
            continue
        raw = decoded.get(reg.name, math.nan)
        f = reg.default_flag if not math.isfinite(raw) else reg.flag_for(int(raw))
        flag = worst_flag(flag, f)
    if math.isnan(decoded.get(spec.name, math.nan)):
        flag = worst_flag(flag, Flag.D)
    return flag


def value_key(v: float) -> str:
    """An exact, hashable form of a float (all NaNs alike)."""
    if math.isnan(v):
        return "nan"
    return struct.pack(">d", v).hex()


@dataclass(frozen=True, slots=True)
class TruthReading:
    """One reading an agent read from a simulated device.

    ``ts`` is the analyzer's result time or the sonde read time (simulated Unix seconds);
    ``read_at`` the simulated time of the poll's first reply; ``by_time`` True when the reading
    is identified by its timestamp (an analyzer cycle), False when by its value (a sonde).
    """

    station: str
    device: str
    code: str
    ts: float
    read_at: float
    value: float
    flag: Flag
    by_time: bool

    @property
    def ts_ms(self) -> int:
        return round(self.ts * 1000)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["flag"] = self.flag.value
        d["value"] = None if math.isnan(self.value) else self.value
        return d


@dataclass
class DeviceCounters:
    """What one simulated device saw, for the fault report."""

    requests: int = 0
    delivered: int = 0
    failed: int = 0
    polls: int = 0
    unplanned: int = 0
    after_stop: int = 0
    """Replies sent after the rig stopped the station's agent (to a request it sent before)."""
    last_request_at: float | None = None
    last_poll_at: float | None = None


class TruthLog:
    """Thread-safe collection of truth readings from every recording device."""

    def __init__(self, stuck_polls: int | None = None) -> None:
        self._lock = threading.Lock()
        polls = GradingConfig().stuck_polls if stuck_polls is None else stuck_polls
        self.stuck = StuckTracker(polls)
        """The agent's stuck-value rule (``grading.stuck_polls``), applied to expected flags."""
        self._sonde: list[TruthReading] = []
        self._cycles: dict[tuple[str, str, str, float], TruthReading] = {}
        self._polls: list[tuple[str, str, float]] = []  # (station, device, t) of each poll
        self.counters: dict[tuple[str, str], DeviceCounters] = defaultdict(DeviceCounters)

    def record_poll(  # noqa: PLR0917 (one poll's facts, in the order they are known)
        self,
        station: str,
        device: str,
        profile: DeviceProfile,
        read_at: float,
        decoded: Mapping[str, float],
        last_at: float | None = None,
    ) -> list[TruthReading]:
        """A completed poll; returns the truth readings it adds (none for an old cycle).

        ``read_at`` is the simulated time of the poll's first reply, ``last_at`` of its last:
        an analyzer's result time is judged against the reply that carried it (in an
        accelerated run a stall of a tenth of a second between two blocks is simulated
        minutes, long enough for a new cycle to appear).
        """
        rt_spec = profile.result_time
        ts = read_at
        by_time = False
        if rt_spec is not None:
            rt = decoded.get(rt_spec.name, math.nan)
            at = read_at if last_at is None else last_at
            if math.isfinite(rt) and rt > 0:
                by_time = at - RESULT_MAX_AGE_S <= rt <= at + RESULT_MAX_LEAD_S
                if by_time:
                    ts = rt
        out: list[TruthReading] = []
        with self._lock:
            self._polls.append((station, device, read_at))
            c = self.counters[(station, device)]
            c.polls += 1
            c.last_poll_at = read_at
            for spec in profile.values:
                code = spec.code or ""
                r = TruthReading(
                    station,
                    device,
                    code,
                    ts,
                    read_at,
                    decoded.get(spec.name, math.nan),
                    expected_flag(profile, spec, decoded),
                    by_time,
                )
                if by_time and (station, device, code, ts) in self._cycles:
                    continue
                if self.stuck.check(f"{station}/{code}", r.value, r.flag.value):
                    r = replace(r, flag=Flag(STUCK_FLAG))  # the agent flags a stuck sensor
                if by_time:
                    self._cycles[(station, device, code, ts)] = r
                else:
                    self._sonde.append(r)
                out.append(r)
        return out

    def readings(self) -> list[TruthReading]:
        """Every truth reading, by station, time and code."""
        with self._lock:
            rs = [*self._sonde, *self._cycles.values()]
        rs.sort(key=lambda r: (r.station, r.ts, r.code, r.read_at))
        return rs

    def __len__(self) -> int:
        with self._lock:
            return len(self._sonde) + len(self._cycles)

    def first_poll_after(self, station: str, device: str | None, t: float) -> float | None:
        """Simulated time of the first completed poll at ``station`` (of ``device``) after t."""
        with self._lock:
            times = [
                pt for s, d, pt in self._polls if s == station and pt >= t and device in (None, d)
            ]
        return min(times) if times else None

    def count_read_between(self, station: str, t0: float, t1: float) -> int:
        """Truth readings of ``station`` first read in ``[t0, t1)``."""
        with self._lock:
            rs = [*self._sonde, *self._cycles.values()]
        return sum(1 for r in rs if r.station == station and t0 <= r.read_at < t1)

    def write_jsonl(self, path: Path) -> int:
        rs = self.readings()
        with path.open("w", encoding="utf-8") as fh:
            for r in rs:
                fh.write(json.dumps(r.to_json(), separators=(",", ":")) + "\n")
        return len(rs)

    def write_batches(
        self,
        out_dir: Path,
        water_bodies: Mapping[str, WaterBody] | None = None,
        created_ms: int = 0,
        batch_size: int = 1000,
        *,
        exclude: Collection[TruthReading] = (),
        stamps: Mapping[TruthReading, int] | None = None,
    ) -> list[Path]:
        """Encode the truth as wire batches (one file per batch) for ``sanduan central replay``.

        Each station's readings get seqs 1..n in time order; values are graded like the agent
        grades them. ``exclude``: readings to leave out (those lost with a deleted buffer).
        ``stamps``: a reading's time as the station stamped it (:attr:`DeliveryCheck.stamps`),
        instead of the device's.
        """
        stamps = stamps or {}
        out_dir.mkdir(parents=True, exist_ok=True)
        skip = set(exclude)
        by_station: dict[str, list[TruthReading]] = defaultdict(list)
        for r in self.readings():
            if r not in skip:
                by_station[r.station].append(r)
        paths: list[Path] = []
        for station, rs in sorted(by_station.items()):
            wb = (water_bodies or {}).get(station, WaterBody.RIVER)
            grades = _grades([r.code for r in rs], [r.value for r in rs], wb)
            for b, i in enumerate(range(0, len(rs), batch_size), start=1):
                chunk = rs[i : i + batch_size]
                batch = wire.Batch.from_columns(
                    station,
                    b,
                    created_ms,
                    seq=list(range(i + 1, i + 1 + len(chunk))),
                    ts_ms=[stamps.get(r, r.ts_ms) for r in chunk],
                    code=[r.code for r in chunk],
                    values=[r.value for r in chunk],
                    flags=[r.flag for r in chunk],
                    grades=grades[i : i + len(chunk)],
                )
                p = out_dir / f"{station}-{b:05d}.msgpack"
                p.write_bytes(wire.encode(batch))
                paths.append(p)
        return paths


def _grades(codes: Sequence[str], values: Sequence[float], water_body: WaterBody) -> list[int]:
    """GB 3838 class of each value (0 where it cannot be graded), as the agent grades."""
    from sanduan.shared.errors import SanduanError
    from sanduan.shared.grading import classify_batch
    from sanduan.shared.params import by_code

    idx = []
    for c in codes:
        try:
            idx.append(by_code(c).index)
        except SanduanError:
            idx.append(-1)
    arr = np.asarray(values, dtype=np.float64)
    ix = np.asarray(idx, dtype=np.int64)
    ok = (ix >= 0) & np.isfinite(arr)
    out = np.zeros(arr.shape, dtype=np.int64)
    if ok.any():
        try:
            out[ok] = classify_batch(arr[ok], ix[ok], water_body).astype(np.int64)
        except SanduanError:
            for i in np.flatnonzero(ok):
                try:
                    out[i] = int(classify_batch(arr[i : i + 1], ix[i : i + 1], water_body)[0])
                except SanduanError:
                    out[i] = NOT_GRADED
    return [int(g) for g in out]


class RecordingDevice(SimulatedDevice):
    """A simulated device that reports every poll the agent completed to a :class:`TruthLog`.

    ``timeout_s`` is the agent's reply timeout for this device (a reply later than that is
    not delivered); ``blocks`` the agent's read plan for it.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        station: str,
        device: str,
        log: TruthLog,
        blocks: Sequence[ReadBlock],
        timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(profile, name=f"{station}/{device}", **kwargs)
        self.station = station
        self.device = device
        self.log = log
        self.blocks = list(blocks)
        self.timeout_s = timeout_s
        self._index = {(b.function, b.address, b.count): i for i, b in enumerate(self.blocks)}
        self._acc: dict[int, list[int]] = {}
        self._acc_t: float = 0.0
        self.last_io_real = -math.inf
        """``time.monotonic()`` of the last request this device answered (or ignored)."""
        self.on_poll: Callable[[RecordingDevice, float], None] | None = None
        self.agent_stopped = False
        """Set by the rig just before it stops the station's agent and cleared before it starts
        it again: a reply sent meanwhile reaches no agent, so it is no reading."""

    def handle(self, req: Request) -> tuple[float, bytes | None]:
        t = self.clock()
        f = self.faults
        delay, reply = super().handle(req)
        counters = self.log.counters[(self.station, self.device)]
        counters.requests += 1
        counters.last_request_at = t
        self.last_io_real = time.monotonic()
        delivered = (
            reply is not None
            and not f.garbage
            and not f.crc_corrupt
            and f.exception is None
            and len(reply) >= 5
            and reply[1] == req.function
            and delay < self.timeout_s * TIMEOUT_MARGIN
        )
        if not delivered:
            counters.failed += 1
            return delay, reply
        if self.agent_stopped:
            counters.after_stop += 1
            self._acc = {}
            return delay, reply
        counters.delivered += 1
        i = self._index.get((req.function, req.address, req.count))
        if i is None:
            counters.unplanned += 1
            return delay, reply
        assert reply is not None
        n = reply[2] // 2
        words = list(struct.unpack(f">{n}H", reply[3 : 3 + 2 * n]))
        if i == 0:
            self._acc = {0: words}
            self._acc_t = t
        elif i - 1 in self._acc:
            self._acc[i] = words
        else:
            return delay, reply
        if i == len(self.blocks) - 1:
            decoded: dict[str, float] = {}
            for j, block in enumerate(self.blocks):
                decoded.update(_decode_block(block, self._acc[j]))
            self._acc = {}
            self.log.record_poll(
                self.station, self.device, self.profile, self._acc_t, decoded, last_at=t
            )
            if self.on_poll is not None:
                self.on_poll(self, self._acc_t)
        return delay, reply


def _decode_block(block: ReadBlock, words: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec in block.registers:
        i = spec.address - block.address
        regs = words[i : i + spec.width]
        if spec.role is Role.VALUE:
            out[spec.name] = decode_registers(regs, spec)
        else:
            raw = decode_raw(regs, spec)
            out[spec.name] = float(raw)
    return out


# --- the delivery check ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredRow:
    station: str
    seq: int
    ts_ms: int
    code: str
    value: float
    flag: str
    stream: int = 0
    """The station buffer the seq belongs to (0: the legacy v1 stream, or a store without
    streams)."""


@dataclass
class DeliveryCheck:
    """Truth log against the collector's store (see the module docstring)."""

    generated: int
    stored: int
    lost: int
    lost_with_buffer: int
    duplicates: int
    unexpected: int
    retimed: int
    seq_duplicates: int
    value_mismatches: int
    flag_mismatches: int
    ts_error_max_s: float
    ts_error_median_s: float
    ts_beyond_tolerance: int
    per_station: dict[str, dict[str, int]] = field(default_factory=dict)
    per_stream: dict[str, dict[str, int]] = field(default_factory=dict)
    """``station/stream`` -> readings stored, truth readings matched, seq duplicates."""
    forged_stored: dict[str, int] = field(default_factory=dict)
    """Rows a hostile client forged that the centre stored, by attack (not in ``stored``)."""
    centre_lost_with_buffer: int | None = None
    reread_with_new_buffer: int = 0
    """Rows a replacement gateway stored again: the same sample (station, item, time, value)
    already stored under the station's earlier stream. The new buffer cannot know what the old
    one sent, but the centre recognises the sample across a station's streams and stores it
    once, so the rig expects 0 (counted apart from ``duplicates``, to say what went wrong)."""
    """The centre's own count of readings lost with replaced buffers (None: not kept)."""
    lost_examples: list[dict[str, Any]] = field(default_factory=list)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    unexpected_examples: list[dict[str, Any]] = field(default_factory=list)
    went_with_buffer: list[TruthReading] = field(default_factory=list, repr=False)
    """The readings counted in ``lost_with_buffer`` (not in the JSON)."""
    stamps: dict[TruthReading, int] = field(default_factory=dict, repr=False)
    """Sonde truth readings -> the ``ts_ms`` the station stamped on the row that stored each (not
    in the JSON). The truth store is built with these: the section and ledger checks then compare
    the centre's results with what the true values imply at the station's own stamps, which are
    checked on their own (``ts_error_*``, ``ts_beyond_tolerance``). A reading polled close to an
    hour's end, stamped a little later by the station than by the device, falls in the next hour
    at the centre."""

    def to_json(self) -> dict[str, Any]:
        skip = ("went_with_buffer", "stamps")
        return {
            f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip
        }


def compare(
    truth: Iterable[TruthReading],
    rows: Iterable[StoredRow],
    *,
    ts_tolerance_s: float = 60.0,
    examples: int = 5,
    replaced: Mapping[str, Sequence[float]] | None = None,
    forged: Mapping[tuple[str, int, int], str] | None = None,
) -> DeliveryCheck:
    """Match stored rows to truth readings (exactly; see the module docstring).

    First pass: analyzer readings by (station, code, result time), sonde readings by
    (station, code, value bits), as multisets. Second pass: what is left on both sides is
    matched by (station, code, value bits) alone; such a pair is one reading stored with a
    different timestamp (``retimed``), neither lost nor unexpected.

    ``replaced``: per station, the simulated times its buffer was deleted (a replaced gateway).
    A reading not stored that was read before such a time went with the buffer:
    ``lost_with_buffer``, not ``lost``. ``forged``: (station, stream, seq) -> attack of the
    readings a hostile client sent; stored rows with those keys are counted in
    ``forged_stored`` and left out of everything else.
    """
    truth_list = list(truth)
    forged = forged or {}
    forged_stored: Counter[str] = Counter()
    row_list = []
    for row in rows:
        attack = forged.get((row.station, row.stream, row.seq))
        if attack is None:
            row_list.append(row)
        else:
            forged_stored[attack] += 1
    tkeys: dict[tuple[str, str, int], list[TruthReading]] = defaultdict(list)
    vkeys: dict[tuple[str, str, str], list[TruthReading]] = defaultdict(list)
    for r in truth_list:
        if r.by_time:
            tkeys[(r.station, r.code, r.ts_ms)].append(r)
        else:
            vkeys[(r.station, r.code, value_key(r.value))].append(r)
    stored_t: dict[tuple[str, str, int], list[StoredRow]] = defaultdict(list)
    stored_v: dict[tuple[str, str, str], list[StoredRow]] = defaultdict(list)
    unexpected: list[StoredRow] = []
    for row in row_list:
        kt = (row.station, row.code, row.ts_ms)
        if kt in tkeys:
            stored_t[kt].append(row)
            continue
        kv = (row.station, row.code, value_key(row.value))
        if kv in vkeys:
            stored_v[kv].append(row)
        else:
            unexpected.append(row)
    value_mm = flag_mm = 0
    per_station: dict[str, Counter[str]] = defaultdict(Counter)
    ts_errors: list[float] = []
    beyond = 0
    missing: list[TruthReading] = []
    matched: Counter[tuple[str, int]] = Counter()
    stamps: dict[TruthReading, int] = {}
    extra: list[tuple[tuple[Any, ...], StoredRow]] = []  # (key, row) beyond the truth's count

    def account(
        key: tuple[Any, ...], want: list[TruthReading], got: list[StoredRow], by_time: bool
    ) -> None:
        nonlocal value_mm, flag_mm, beyond
        station = str(key[0])
        per_station[station]["generated"] += len(want)
        per_station[station]["stored"] += len(got)
        ws = sorted(want, key=lambda r: r.ts)
        gs = sorted(got, key=lambda r: r.ts_ms)
        for w, g in zip(ws, gs, strict=False):
            matched[(g.station, g.stream)] += 1
            if by_time and value_key(w.value) != value_key(g.value):
                value_mm += 1
            if w.flag.value != g.flag:
                flag_mm += 1
            if not by_time:
                stamps[w] = g.ts_ms
                err = abs(g.ts_ms / 1000.0 - w.ts)
                ts_errors.append(err)
                if err > ts_tolerance_s:
                    beyond += 1
        missing.extend(ws[len(gs) :])
        extra.extend((key, g) for g in gs[len(ws) :])

    for kt, want in tkeys.items():
        account(kt, want, stored_t.get(kt, []), True)
    for kv, want in vkeys.items():
        account(kv, want, stored_v.get(kv, []), False)
    for row in unexpected:
        per_station[row.station]["stored"] += 1

    # Second pass: a leftover truth reading and a leftover row with the same value.
    spare: dict[tuple[str, str, str], list[StoredRow]] = defaultdict(list)
    origin: dict[int, str] = {}
    for _, row in extra:
        spare[(row.station, row.code, value_key(row.value))].append(row)
        origin[id(row)] = "duplicate"
    for row in unexpected:
        spare[(row.station, row.code, value_key(row.value))].append(row)
        origin[id(row)] = "unexpected"
    lost_list: list[TruthReading] = []
    with_buffer: list[TruthReading] = []
    last_replaced = {s: max(ts) for s, ts in (replaced or {}).items() if ts}
    retimed = 0
    for w in missing:
        pool = spare.get((w.station, w.code, value_key(w.value)))
        if pool:
            stamps[w] = pool.pop(0).ts_ms
            retimed += 1
            per_station[w.station]["retimed"] += 1
        elif w.read_at < last_replaced.get(w.station, -math.inf):
            with_buffer.append(w)
            per_station[w.station]["lost_with_buffer"] += 1
        else:
            lost_list.append(w)
            per_station[w.station]["lost"] += 1
    left = [row for pool in spare.values() for row in pool]
    dup_rows = [row for row in left if origin[id(row)] == "duplicate"]
    seen_sample: dict[tuple[str, str, int, str], set[int]] = defaultdict(set)
    for stored in row_list:
        sample = (stored.station, stored.code, stored.ts_ms, value_key(stored.value))
        seen_sample[sample].add(stored.stream)
    reread = [
        row
        for row in dup_rows
        if row.station in last_replaced
        and len(seen_sample[(row.station, row.code, row.ts_ms, value_key(row.value))]) > 1
    ]
    reread_ids = {id(row) for row in reread}
    dup_rows = [row for row in dup_rows if id(row) not in reread_ids]
    for row in reread:
        per_station[row.station]["reread_with_new_buffer"] += 1
    unexp_rows = [row for row in left if origin[id(row)] == "unexpected"]
    for row in dup_rows:
        per_station[row.station]["duplicates"] += 1
    for row in unexp_rows:
        per_station[row.station]["unexpected"] += 1
    lost = len(lost_list)
    dup = len(dup_rows)
    lost_ex = [w.to_json() for w in lost_list[:examples]]
    dup_ex = [_row_json(row) for row in dup_rows[:examples]]
    seq_count = Counter((r.station, r.stream, r.seq) for r in row_list)
    seq_dups = sum(n - 1 for n in seq_count.values() if n > 1)
    per_stream: dict[str, Counter[str]] = defaultdict(Counter)
    for (station, stream, _), n in seq_count.items():
        c = per_stream[f"{station}/{stream:x}"]
        c["stored"] += n
        c["seq_duplicates"] += n - 1
        c["matched"] = matched[(station, stream)]
    for row in reread:
        per_stream[f"{row.station}/{row.stream:x}"]["reread_with_new_buffer"] += 1
    ts_arr = np.asarray(ts_errors) if ts_errors else np.zeros(1)
    return DeliveryCheck(
        generated=len(truth_list),
        stored=len(row_list),
        lost=lost,
        lost_with_buffer=len(with_buffer),
        reread_with_new_buffer=len(reread),
        duplicates=dup + seq_dups,
        unexpected=len(unexp_rows),
        retimed=retimed,
        seq_duplicates=seq_dups,
        value_mismatches=value_mm,
        flag_mismatches=flag_mm,
        ts_error_max_s=float(ts_arr.max()),
        ts_error_median_s=float(np.median(ts_arr)),
        ts_beyond_tolerance=beyond,
        per_station={k: dict(v) for k, v in sorted(per_station.items())},
        per_stream={k: dict(v) for k, v in sorted(per_stream.items())},
        forged_stored=dict(sorted(forged_stored.items())),
        lost_examples=lost_ex,
        duplicate_examples=dup_ex,
        unexpected_examples=[_row_json(r) for r in unexp_rows[:examples]],
        went_with_buffer=with_buffer,
        stamps=stamps,
    )


def _row_json(r: StoredRow) -> dict[str, Any]:
    return {
        "station": r.station,
        "stream": r.stream,
        "seq": r.seq,
        "ts_ms": r.ts_ms,
        "code": r.code,
        "value": None if math.isnan(r.value) else r.value,
        "flag": r.flag,
    }

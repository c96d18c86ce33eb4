"""Wire format v1 and v2: the messages between station agents and the central collector.

One implementation for both sides. Every message is a single msgpack map carrying the format
version ``"v"`` (1 or 2) and a kind tag ``"k"``; docs/wire-format.md specifies every field. v2 adds
the station buffer's ``stream`` id to batches, acks, resend requests and status, and the
:class:`Nack`; a message whose ``stream`` is 0 is the legacy v1 stream and encodes as v1, byte for
byte as before, so a collector keeps serving v1 agents. :func:`encode` validates a message
before packing it (nothing invalid is ever sent) and is deterministic (same message, same bytes);
:func:`decode` validates everything and raises :class:`WireFormatError` -- and only that -- for any
input it does not accept.

Kinds (the tag is also the MQTT topic suffix, see :mod:`sanduan.shared.topics`):

* :class:`Batch` (station -> centre): readings in columns.
* :class:`Ack` (centre -> station): a batch is committed.
* :class:`ResendRequest` (centre -> station): send these reading seq ranges again.
* :class:`Status` (station -> centre): heartbeat; with ``online=False`` also the MQTT last will.
* :class:`Event` (station -> centre): an alarm or notable occurrence.
* :class:`Nack` (centre -> station, v2 only): readings the centre rejects and will never store.
* :class:`Command` (centre -> station, v2 only): a remote command (docs/commands.md).
* :class:`CommandResult` (station -> centre, v2 only): the answer to a command.
"""

from __future__ import annotations

import enum
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import accumulate, pairwise
from typing import Any, ClassVar, NoReturn, TypeVar, cast

import msgpack

from sanduan.shared.errors import WireFormatError
from sanduan.shared.model import NOT_GRADED, Flag, Reading
from sanduan.shared.topics import STATION_RE, Kind

__all__ = [
    "DEFAULT_MAX",
    "MAX_BATCH_READINGS",
    "MAX_CONFIG_BYTES",
    "MAX_RANGES",
    "MAX_SEQ",
    "VERSION",
    "VERSION_2",
    "Ack",
    "Batch",
    "Command",
    "CommandResult",
    "Event",
    "Kind",
    "Message",
    "Nack",
    "NackReason",
    "ResendRequest",
    "Scalar",
    "SeqRange",
    "Severity",
    "Status",
    "decode",
    "decode_ack",
    "decode_batch",
    "decode_command",
    "decode_event",
    "decode_nack",
    "decode_resend",
    "decode_result",
    "decode_status",
    "encode",
    "from_json_obj",
    "new_stream_id",
    "range_count",
    "seq_ranges",
    "to_json_obj",
]

VERSION = 1
"""The format version of legacy-stream messages (``stream == 0``)."""
VERSION_2 = 2
"""The format version of messages that carry a stream id, and of :class:`Nack`."""

DEFAULT_MAX = 1 << 20
"""Default largest message :func:`decode` accepts, in bytes (a 1000-reading batch is ~20 kB)."""

MAX_GRADE = 6
U63_MAX = (1 << 63) - 1
"""Largest sequence number, time or counter (fits a signed 64-bit column)."""
I64_MIN = -(1 << 63)

MAX_SEQ = (1 << 48) - 1
"""Largest reading seq in v2 (a station making 1,000 readings a second needs 8,900 years).

The collector holds v1 batches to the same bound, so a forged seq near 2**63 can never make it
ask for a range whose size does not fit the wire."""
MAX_RANGES = 256
"""Most ranges in any ranges field (acks, resend requests, nacks), both versions."""
MAX_BATCH_READINGS = 10_000
"""Most readings in one batch, both versions (a 1,000-reading batch is about 15 kB)."""

NAME_MAX = 64  # keys of device_errors / bus_utilisation / extra / details
TEXT_MAX = 4096  # message texts and string scalars
SHORT_MAX = 256  # agent version, resend reason
DICT_MAX = 256  # entries in any dict field

MAX_CONFIG_BYTES = 256 * 1024
"""Largest :attr:`Command.body` (a station file pushed with ``push-config``), UTF-8 bytes."""

CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
COMMAND_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
EVENT_KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Characters no text field may hold: NUL and the C0 controls but tab and newline, and DEL."""

SeqRange = tuple[int, int]
"""An inclusive range of reading sequence numbers ``(first, last)``."""

Scalar = str | int | float | bool | None
"""Values allowed in ``Status.extra`` and ``Event.details``."""

_INF = math.inf
_NINF = -math.inf
_FLAG_OF: dict[str, Flag] = {f.value: f for f in Flag}
_FLAG_CHARS = frozenset(_FLAG_OF)
_KNOWN_FLAGS = "".join(_FLAG_OF)


class Severity(enum.StrEnum):
    """How urgent an :class:`Event` is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_SEVERITY_OF: dict[str, Severity] = {s.value: s for s in Severity}


# --------------------------------------------------------------------------------------------
# message classes


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings of one station, in columns.

    The code column is dictionary-encoded: ``codes`` lists the distinct parameter codes of the
    batch and ``code_idx[i]`` indexes it for reading ``i``. All per-reading columns (``seq``,
    ``ts_ms``, ``code_idx``, ``values``, ``flags``, ``grades``) have the same length, at least 1.
    ``seq`` is strictly increasing but need not be contiguous. ``values`` are float64; NaN means
    missing (decoded NaNs are always the one :data:`math.nan` object, so equal batches compare
    equal). The header fields ``first_seq``, ``last_seq`` and ``count`` are derived from ``seq``.
    ``stream`` is the id of the station buffer the seqs belong to (0: the legacy v1 stream).
    Build one with :meth:`from_readings` or :meth:`from_columns`.
    """

    KIND: ClassVar[Kind] = Kind.BATCH

    station: str
    batch_seq: int
    created_ms: int
    seq: tuple[int, ...]
    ts_ms: tuple[int, ...]
    codes: tuple[str, ...]
    code_idx: tuple[int, ...]
    values: tuple[float, ...]
    flags: tuple[Flag, ...]
    grades: tuple[int, ...]
    stream: int = 0

    @property
    def first_seq(self) -> int:
        return self.seq[0]

    @property
    def last_seq(self) -> int:
        return self.seq[-1]

    @property
    def count(self) -> int:
        return len(self.seq)

    def __len__(self) -> int:
        return len(self.seq)

    def code_column(self) -> tuple[str, ...]:
        """The parameter code of every reading (the dictionary expanded)."""
        return tuple(map(self.codes.__getitem__, self.code_idx))

    def rows(self) -> list[tuple[int, int, str, float, Flag, int]]:
        """``(seq, ts_ms, code, value, flag, grade)`` per reading, e.g. for ``executemany``."""
        return list(
            zip(
                self.seq,
                self.ts_ms,
                map(self.codes.__getitem__, self.code_idx),
                self.values,
                self.flags,
                self.grades,
                strict=True,
            )
        )

    def to_readings(self) -> list[Reading]:
        return [Reading(*row) for row in self.rows()]

    def subset(self, keep: Sequence[int]) -> Batch:
        """The readings at indices ``keep`` (same header, same code table)."""
        return replace(
            self,
            seq=tuple(self.seq[i] for i in keep),
            ts_ms=tuple(self.ts_ms[i] for i in keep),
            code_idx=tuple(self.code_idx[i] for i in keep),
            values=tuple(self.values[i] for i in keep),
            flags=tuple(self.flags[i] for i in keep),
            grades=tuple(self.grades[i] for i in keep),
        )

    @classmethod
    def from_columns(
        cls,
        station: str,
        batch_seq: int,
        created_ms: int,
        *,
        seq: Sequence[int],
        ts_ms: Sequence[int],
        code: Sequence[str],
        values: Sequence[float],
        flags: Sequence[Flag | str] | None = None,
        grades: Sequence[int] | None = None,
        stream: int = 0,
    ) -> Batch:
        """Build a batch from plain per-reading columns (``code`` is one code per reading).

        ``flags`` default to N and ``grades`` to 0. Nothing is validated here; :func:`encode`
        validates.
        """
        index: dict[str, int] = {}
        code_idx = tuple(index.setdefault(c, len(index)) for c in code)
        n = len(seq)
        return cls(
            station=station,
            batch_seq=batch_seq,
            created_ms=created_ms,
            seq=tuple(seq),
            ts_ms=tuple(ts_ms),
            codes=tuple(index),
            code_idx=code_idx,
            values=tuple(math.nan if math.isnan(v) else float(v) for v in values),
            flags=(Flag.N,) * n
            if flags is None
            else tuple(cast(Flag, _FLAG_OF.get(f, f)) for f in flags),
            grades=(NOT_GRADED,) * n if grades is None else tuple(grades),
            stream=stream,
        )

    @classmethod
    def from_readings(
        cls,
        station: str,
        batch_seq: int,
        created_ms: int,
        readings: Iterable[Reading],
        stream: int = 0,
    ) -> Batch:
        """Build a batch from readings already in seq order."""
        rs = list(readings)
        return cls.from_columns(
            station,
            batch_seq,
            created_ms,
            seq=[r.seq for r in rs],
            ts_ms=[r.ts_ms for r in rs],
            code=[r.code for r in rs],
            values=[r.value for r in rs],
            flags=[r.flag for r in rs],
            grades=[r.grade for r in rs],
            stream=stream,
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """The centre has committed batch ``batch_seq`` (readings ``first_seq..last_seq``).

    ``ranges``, if not empty, lists exactly which reading seq ranges inside
    ``first_seq..last_seq`` the centre now holds (ascending, not overlapping); empty means every
    reading of the batch as sent.
    """

    KIND: ClassVar[Kind] = Kind.ACK

    station: str
    batch_seq: int
    first_seq: int
    last_seq: int
    time_ms: int
    ranges: tuple[SeqRange, ...] = ()
    stream: int = 0


@dataclass(frozen=True, slots=True)
class ResendRequest:
    """The centre asks a station to send these inclusive reading seq ranges again."""

    KIND: ClassVar[Kind] = Kind.RESEND

    station: str
    ranges: tuple[SeqRange, ...]
    time_ms: int
    reason: str = "gap"
    stream: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """Station heartbeat. ``online=False`` is the MQTT last will (see :meth:`last_will`).

    ``oldest_unacked_age_s`` is None when nothing is waiting for an ack; ``last_acked_seq`` is
    None before the first ack; ``clock_offset_s`` (station clock minus reference, seconds) is None
    when unknown. ``bus_utilisation`` values are fractions 0..1.
    """

    KIND: ClassVar[Kind] = Kind.STATUS

    station: str
    time_ms: int
    online: bool = True
    agent_version: str = ""
    buffer_depth: int = 0
    oldest_unacked_age_s: float | None = None
    last_acked_seq: int | None = None
    dropped: int = 0
    device_errors: dict[str, int] = field(default_factory=dict)
    bus_utilisation: dict[str, float] = field(default_factory=dict)
    clock_offset_s: float | None = None
    extra: dict[str, Scalar] = field(default_factory=dict)
    stream: int = 0

    @classmethod
    def last_will(
        cls, station: str, time_ms: int, agent_version: str = "", stream: int = 0
    ) -> Status:
        """The status a station registers as its last will when it connects."""
        return cls(
            station=station,
            time_ms=time_ms,
            online=False,
            agent_version=agent_version,
            stream=stream,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm or notable occurrence at a station.

    ``event_id`` increases per station. ``kind`` is a short lower-case tag such as
    ``"exceedance"``, ``"device-fault"`` or ``"clock"``; ``code`` is the parameter code concerned,
    if any.
    """

    KIND: ClassVar[Kind] = Kind.EVENT

    station: str
    time_ms: int
    event_id: int
    kind: str
    message: str
    severity: Severity = Severity.WARNING
    code: str | None = None
    details: dict[str, Scalar] = field(default_factory=dict)


class NackReason(enum.StrEnum):
    """Why the centre rejects readings for good (the ``reason`` of a :class:`Nack`)."""

    CONFLICT = "conflict"
    """The centre holds other content for the same (station, stream, seq)."""
    TIMESTAMP = "timestamp"
    """The readings are stamped implausibly far ahead of the centre's clock, or too early."""
    INVALID = "invalid"
    """The readings break a rule of the collector (for example a seq above ``MAX_SEQ``)."""


_NACK_REASON_OF: dict[str, NackReason] = {r.value: r for r in NackReason}


@dataclass(frozen=True, slots=True)
class Nack:
    """The centre rejects these readings of batch ``batch_seq`` and will never store them as sent.

    v2 only. ``ranges`` (not empty, inside ``first_seq..last_seq``) are the rejected seqs of
    ``stream``; ``detail`` is human text for the station's log. The agent stops sending them,
    keeps them marked rejected with the reason, and says so once. An :class:`Ack` for the same
    batch may come too, for the readings that were stored.
    """

    KIND: ClassVar[Kind] = Kind.NACK

    station: str
    stream: int
    batch_seq: int
    first_seq: int
    last_seq: int
    reason: NackReason
    ranges: tuple[SeqRange, ...]
    time_ms: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A remote command for one station (v2 only; see docs/commands.md).

    ``command_id`` names the command for its whole life: a station answers a repeated id with
    the answer it gave, without running the command again. ``name`` is a short lower-case tag
    (``poll-now``, ``push-config``, ...); the wire checks its form, the station whether it
    knows it. ``args`` holds small scalar arguments; ``body`` the one large text a command may
    carry (the station file of ``push-config``, at most :data:`MAX_CONFIG_BYTES`). A station
    refuses a command received after ``expires_ms`` (its own clock).
    """

    KIND: ClassVar[Kind] = Kind.CMD

    station: str
    command_id: str
    name: str
    issued_ms: int
    expires_ms: int
    args: dict[str, Scalar] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A station's answer to :class:`Command` ``command_id`` (v2 only).

    ``state`` is a short lower-case tag of the outcome (``done``, ``applied``, ``rejected``,
    ``rolled-back``, ``refused``, ``expired``, ``failed``); ``ok`` is True when the command did
    what was asked. ``config_sha256`` is the SHA-256 (hex) of the station file in force after
    the command, for ``push-config`` (None for other commands).
    """

    KIND: ClassVar[Kind] = Kind.RESULT

    station: str
    command_id: str
    time_ms: int
    ok: bool
    state: str
    message: str = ""
    config_sha256: str | None = None


Message = Batch | Ack | ResendRequest | Status | Event | Nack | Command | CommandResult


def new_stream_id() -> int:
    """A random stream id in 1..2**63-1, made when a station buffer is created."""
    while True:
        sid = secrets.randbits(63)
        if sid:
            return sid


def range_count(ranges: Iterable[SeqRange]) -> int:
    """How many seqs the inclusive ``ranges`` cover (an exact Python int, never overflows)."""
    return sum(b - a + 1 for a, b in ranges)


def seq_ranges(seqs: Iterable[int]) -> tuple[SeqRange, ...]:
    """Collapse ascending seq numbers into inclusive ranges: ``[1,2,3,7]`` -> ``((1,3),(7,7))``."""
    out: list[SeqRange] = []
    start = prev = None
    for s in seqs:
        if prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None and prev is not None:
            out.append((start, prev))
        start = prev = s
    if start is not None and prev is not None:
        out.append((start, prev))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# validation helpers (shared by encode and decode)


def _fail(kind: str, reason: str) -> NoReturn:
    raise WireFormatError(f"{kind}: {reason}")


_TYPE_NAMES = {
    tuple: "array",
    list: "array",
    dict: "map",
    bytes: "bin",
    str: "string",
    type(None): "nil",
    bool: "bool",
    int: "int",
    float: "float",
}


def _tn(x: object) -> str:
    """msgpack's name for the type of a decoded value."""
    return _TYPE_NAMES.get(type(x), type(x).__name__)


def _keys(d: dict[str, Any], expected: frozenset[str], kind: str) -> None:
    if d.keys() != expected:
        missing = sorted(expected - d.keys())
        unknown = sorted(d.keys() - expected, key=repr)
        parts = []
        if missing:
            parts.append("missing field(s) " + ", ".join(map(repr, missing)))
        if unknown:
            parts.append("unknown field(s) " + ", ".join(map(repr, unknown)))
        _fail(kind, "; ".join(parts))


def _int(d: dict[str, Any], key: str, kind: str, lo: int = 0, hi: int = U63_MAX) -> int:
    x = d[key]
    if type(x) is not int:
        _fail(kind, f"field {key!r} must be an int, got {_tn(x)}")
    if not lo <= x <= hi:
        _fail(kind, f"field {key!r} = {x} is out of range {lo}..{hi}")
    return x


def _opt_int(d: dict[str, Any], key: str, kind: str) -> int | None:
    return None if d[key] is None else _int(d, key, kind)


def _float(d: dict[str, Any], key: str, kind: str, lo: float = _NINF, hi: float = _INF) -> float:
    x = d[key]
    if type(x) is not float:
        _fail(kind, f"field {key!r} must be a float, got {_tn(x)}")
    if not (math.isfinite(x) and lo <= x <= hi):
        _fail(kind, f"field {key!r} = {x!r} is not a finite number in {lo}..{hi}")
    return x


def _opt_float(d: dict[str, Any], key: str, kind: str, lo: float = _NINF) -> float | None:
    return None if d[key] is None else _float(d, key, kind, lo)


def _text(x: str, where: str, kind: str) -> None:
    """No NUL or other control character (tab and newline are allowed) in any text field."""
    m = _CONTROL_RE.search(x)
    if m is not None:
        _fail(kind, f"{where} holds the control character {m.group()!r} at index {m.start()}")


def _str(d: dict[str, Any], key: str, kind: str, max_len: int, min_len: int = 0) -> str:
    x = d[key]
    if type(x) is not str:
        _fail(kind, f"field {key!r} must be a string, got {_tn(x)}")
    if not min_len <= len(x) <= max_len:
        _fail(kind, f"field {key!r} must be {min_len}..{max_len} characters, got {len(x)}")
    _text(x, f"field {key!r}", kind)
    return x


def _station(d: dict[str, Any], kind: str) -> str:
    x = d["station"]
    if type(x) is not str:
        _fail(kind, f"field 'station' must be a string, got {_tn(x)}")
    if STATION_RE.fullmatch(x) is None:
        _fail(kind, f"invalid station id {x[:80]!r}: must match [A-Za-z0-9_.-]{{1,64}}")
    return x


def _tuple(d: dict[str, Any], key: str, kind: str) -> tuple[Any, ...]:
    x = d[key]
    if type(x) is not tuple:
        _fail(kind, f"field {key!r} must be an array, got {_tn(x)}")
    return x


def _all_of(col: tuple[Any, ...], typ: type, key: str, kind: str) -> None:
    if col and set(map(type, col)) != {typ}:
        i = next(i for i, x in enumerate(col) if type(x) is not typ)
        _fail(kind, f"column {key!r}[{i}] must be {typ.__name__}, got {_tn(col[i])}")


def _seq_bounds(v: int) -> tuple[int, int]:
    """The seq bounds of format version ``v``: v1 keeps its documented 0..2**63-1."""
    return (0, U63_MAX) if v == VERSION else (1, MAX_SEQ)


def _ranges(d: dict[str, Any], key: str, kind: str, v: int) -> tuple[SeqRange, ...]:
    rs = _tuple(d, key, kind)
    if len(rs) > MAX_RANGES:
        _fail(kind, f"field {key!r} has {len(rs)} ranges, above the maximum {MAX_RANGES}")
    lo, hi = _seq_bounds(v)
    prev = -1
    for i, r in enumerate(rs):
        if not (type(r) is tuple and len(r) == 2 and type(r[0]) is int and type(r[1]) is int):
            _fail(kind, f"{key}[{i}] must be a [first, last] pair of ints")
        a, b = r
        if not lo <= a <= b <= hi:
            _fail(
                kind,
                f"{key}[{i}] = [{a}, {b}] is not a valid range"
                f" (need {lo} <= first <= last <= {hi})",
            )
        if a <= prev:
            _fail(kind, f"{key}[{i}] = [{a}, {b}] overlaps or is out of order")
        prev = b
    return rs


def _names(d: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
    x = d[key]
    if type(x) is not dict:
        _fail(kind, f"field {key!r} must be a map, got {_tn(x)}")
    if len(x) > DICT_MAX:
        _fail(kind, f"field {key!r} has {len(x)} entries, above the maximum {DICT_MAX}")
    for k in x:
        if type(k) is not str or not 1 <= len(k) <= NAME_MAX:
            _fail(kind, f"field {key!r}: keys must be strings of 1..{NAME_MAX} characters")
        _text(k, f"a key of field {key!r}", kind)
    return x


def _scalars(d: dict[str, Any], key: str, kind: str) -> dict[str, Scalar]:
    x = _names(d, key, kind)
    for k, v in x.items():
        t = type(v)
        if v is None or t is bool:
            continue
        if t is int:
            if not I64_MIN <= v <= U63_MAX:
                _fail(kind, f"{key}[{k!r}] = {v} does not fit in 64 bits")
        elif t is float:
            if not math.isfinite(v):
                _fail(kind, f"{key}[{k!r}] must be finite, got {v!r}")
        elif t is str:
            if len(v) > TEXT_MAX:
                _fail(kind, f"{key}[{k!r}] is longer than {TEXT_MAX} characters")
            _text(v, f"{key}[{k!r}]", kind)
        else:
            _fail(kind, f"{key}[{k!r}] must be a string, number, bool or nil, got {_tn(v)}")
    return x


# --------------------------------------------------------------------------------------------
# per-kind wire mapping

_BATCH_KEYS = frozenset(
    ("v", "k", "station", "bseq", "first", "last", "created", "n", "seq", "ts", "codes", "ci")
).union(("val", "flag", "grade"))
_ACK_KEYS = frozenset(("v", "k", "station", "bseq", "first", "last", "t", "ranges"))
_RESEND_KEYS = frozenset(("v", "k", "station", "ranges", "reason", "t"))
_STATUS_KEYS = frozenset(
    ("v", "k", "station", "t", "online", "agent", "buffer", "oldest_age", "last_ack")
).union(("dropped", "dev_err", "bus_util", "clock_offset", "extra"))
_EVENT_KEYS = frozenset(
    ("v", "k", "station", "t", "id", "kind", "code", "msg", "severity", "details")
)
_NACK_KEYS = frozenset(
    ("v", "k", "station", "stream", "bseq", "first", "last", "reason", "ranges", "t", "detail")
)
_CMD_KEYS = frozenset(("v", "k", "station", "id", "name", "issued", "expires", "args", "body"))
_RESULT_KEYS = frozenset(("v", "k", "station", "id", "t", "ok", "state", "msg", "sha256"))
_STREAM_KEY = frozenset(("stream",))


def _version_keys(keys: frozenset[str], v: int) -> frozenset[str]:
    """The keys of a v1 kind in version ``v``: v2 adds ``stream``."""
    return keys if v == VERSION else keys | _STREAM_KEY


def _head(kind: Kind, station: str, stream: int) -> dict[str, Any]:
    """The first keys of a message: v1 for the legacy stream 0, else v2 with the stream id."""
    if stream:
        return {"v": VERSION_2, "k": kind.value, "station": station, "stream": stream}
    return {"v": VERSION, "k": kind.value, "station": station}


def _stream(d: dict[str, Any], kind: str, v: int) -> int:
    return 0 if v == VERSION else _int(d, "stream", kind, lo=1)


def _deltas(col: Sequence[int]) -> list[int]:
    """First value, then successive differences."""
    if not col:
        return []
    out = [col[0]]
    out += [b - a for a, b in pairwise(col)]
    return out


def _batch_to_wire(m: Batch) -> dict[str, Any]:
    vals: Sequence[float] = m.values
    if set(map(type, vals)) != {float}:
        vals = [float(v) for v in vals]
    if not all(map(float.__eq__, vals, vals)):  # canonical NaN bytes
        vals = [math.nan if math.isnan(v) else v for v in vals]
    return _head(Kind.BATCH, m.station, m.stream) | {
        "bseq": m.batch_seq,
        "first": m.seq[0] if m.seq else 0,
        "last": m.seq[-1] if m.seq else 0,
        "created": m.created_ms,
        "n": len(m.seq),
        "seq": tuple(_deltas(m.seq)),
        "ts": tuple(_deltas(m.ts_ms)),
        "codes": tuple(m.codes),
        "ci": tuple(m.code_idx),
        "val": tuple(vals),
        "flag": "".join(m.flags),
        "grade": bytes(m.grades),
    }


def _batch_from_wire(d: dict[str, Any], v: int) -> Batch:
    kn = "batch"
    _keys(d, _version_keys(_BATCH_KEYS, v), kn)
    station = _station(d, kn)
    stream = _stream(d, kn, v)
    bseq = _int(d, "bseq", kn)
    lo, hi = _seq_bounds(v)
    first = _int(d, "first", kn, lo, hi)
    last = _int(d, "last", kn, lo, hi)
    created = _int(d, "created", kn)
    n = _int(d, "n", kn, hi=MAX_BATCH_READINGS)
    if n == 0:
        _fail(kn, "batch has no readings (n = 0)")
    seq_d = _tuple(d, "seq", kn)
    ts_d = _tuple(d, "ts", kn)
    codes = _tuple(d, "codes", kn)
    ci = _tuple(d, "ci", kn)
    vals = _tuple(d, "val", kn)
    fl = d["flag"]
    if type(fl) is not str:
        _fail(kn, f"field 'flag' must be a string of flag letters, got {_tn(fl)}")
    gr = d["grade"]
    if type(gr) is not bytes:
        _fail(kn, f"field 'grade' must be binary (one byte per reading), got {_tn(gr)}")
    for key, col in (("seq", seq_d), ("ts", ts_d), ("ci", ci), ("val", vals), ("flag", fl)):
        if len(col) != n:
            _fail(kn, f"column {key!r} has {len(col)} entries but the header count n = {n}")
    if len(gr) != n:
        _fail(kn, f"column 'grade' has {len(gr)} entries but the header count n = {n}")

    # seq: first value, then deltas >= 1
    _all_of(seq_d, int, "seq", kn)
    if seq_d[0] != first:
        _fail(kn, f"header first = {first} but the seq column starts at {seq_d[0]}")
    if n > 1 and min(seq_d[1:]) < 1:
        i = next(i for i in range(1, n) if seq_d[i] < 1)
        _fail(kn, f"seq is not strictly increasing at index {i}")
    seq = tuple(accumulate(seq_d))
    if seq[-1] != last:
        _fail(kn, f"header last = {last} but the seq column ends at {seq[-1]}")

    # ts: first value, then signed deltas
    _all_of(ts_d, int, "ts", kn)
    ts = tuple(accumulate(ts_d))
    if min(ts) < 0 or max(ts) > U63_MAX:
        _fail(kn, "column 'ts' has a time outside 0..2**63-1 ms")

    # code dictionary
    for i, c in enumerate(codes):
        if type(c) is not str or CODE_RE.fullmatch(c) is None:
            _fail(kn, f"codes[{i}] = {c!r} is not a parameter code ([A-Za-z0-9_-]{{1,32}})")
    if len(set(codes)) != len(codes):
        _fail(kn, "the code dictionary has duplicate entries")
    _all_of(ci, int, "ci", kn)
    if min(ci) < 0 or max(ci) >= len(codes):
        _fail(kn, f"column 'ci' indexes outside the code dictionary (0..{len(codes) - 1})")
    if len(set(ci)) != len(codes):
        _fail(kn, "the code dictionary has entries no reading uses")

    # values: float64, NaN = missing, no infinities
    _all_of(vals, float, "val", kn)
    if _INF in vals or _NINF in vals:
        _fail(kn, "column 'val' holds an infinity (use NaN for missing)")
    if not all(map(float.__eq__, vals, vals)):
        vals = tuple(math.nan if math.isnan(v) else v for v in vals)

    if not _FLAG_CHARS.issuperset(fl):
        i = next(i for i, c in enumerate(fl) if c not in _FLAG_CHARS)
        _fail(kn, f"unknown flag {fl[i]!r} at index {i}; known flags: {_KNOWN_FLAGS}")
    if max(gr) > MAX_GRADE:
        i = next(i for i, g in enumerate(gr) if g > MAX_GRADE)
        _fail(kn, f"grade {gr[i]} at index {i} is out of range 0..{MAX_GRADE}")

    return Batch(
        station=station,
        batch_seq=bseq,
        created_ms=created,
        seq=seq,
        ts_ms=ts,
        codes=codes,
        code_idx=ci,
        values=vals,
        flags=tuple(map(_FLAG_OF.__getitem__, fl)),
        grades=tuple(gr),
        stream=stream,
    )


def _ack_to_wire(m: Ack) -> dict[str, Any]:
    return _head(Kind.ACK, m.station, m.stream) | {
        "bseq": m.batch_seq,
        "first": m.first_seq,
        "last": m.last_seq,
        "t": m.time_ms,
        "ranges": tuple((a, b) for a, b in m.ranges),
    }


def _first_last(d: dict[str, Any], kn: str, v: int) -> tuple[int, int]:
    lo, hi = _seq_bounds(v)
    first = _int(d, "first", kn, lo, hi)
    last = _int(d, "last", kn, lo, hi)
    if first > last:
        _fail(kn, f"first = {first} is after last = {last}")
    return first, last


def _ack_from_wire(d: dict[str, Any], v: int) -> Ack:
    kn = "ack"
    _keys(d, _version_keys(_ACK_KEYS, v), kn)
    station = _station(d, kn)
    first, last = _first_last(d, kn, v)
    ranges = _ranges(d, "ranges", kn, v)
    if ranges and not (first <= ranges[0][0] and ranges[-1][1] <= last):
        _fail(kn, f"ranges fall outside first..last = {first}..{last}")
    return Ack(
        station=station,
        batch_seq=_int(d, "bseq", kn),
        first_seq=first,
        last_seq=last,
        time_ms=_int(d, "t", kn),
        ranges=ranges,
        stream=_stream(d, kn, v),
    )


def _resend_to_wire(m: ResendRequest) -> dict[str, Any]:
    return _head(Kind.RESEND, m.station, m.stream) | {
        "ranges": tuple((a, b) for a, b in m.ranges),
        "reason": m.reason,
        "t": m.time_ms,
    }


def _resend_from_wire(d: dict[str, Any], v: int) -> ResendRequest:
    kn = "resend"
    _keys(d, _version_keys(_RESEND_KEYS, v), kn)
    station = _station(d, kn)
    ranges = _ranges(d, "ranges", kn, v)
    if not ranges:
        _fail(kn, "no ranges requested")
    return ResendRequest(
        station=station,
        ranges=ranges,
        time_ms=_int(d, "t", kn),
        reason=_str(d, "reason", kn, SHORT_MAX),
        stream=_stream(d, kn, v),
    )


def _opt_to_float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _status_to_wire(m: Status) -> dict[str, Any]:
    return _head(Kind.STATUS, m.station, m.stream) | {
        "t": m.time_ms,
        "online": m.online,
        "agent": m.agent_version,
        "buffer": m.buffer_depth,
        "oldest_age": _opt_to_float(m.oldest_unacked_age_s),
        "last_ack": m.last_acked_seq,
        "dropped": m.dropped,
        "dev_err": dict(sorted(m.device_errors.items())),
        "bus_util": {k: float(v) for k, v in sorted(m.bus_utilisation.items())},
        "clock_offset": _opt_to_float(m.clock_offset_s),
        "extra": dict(sorted(m.extra.items())),
    }


def _status_from_wire(d: dict[str, Any], v: int) -> Status:
    kn = "status"
    _keys(d, _version_keys(_STATUS_KEYS, v), kn)
    station = _station(d, kn)
    online = d["online"]
    if type(online) is not bool:
        _fail(kn, f"field 'online' must be a bool, got {_tn(online)}")
    dev_err = _names(d, "dev_err", kn)
    for k, n in dev_err.items():
        if type(n) is not int or not 0 <= n <= U63_MAX:
            _fail(kn, f"dev_err[{k!r}] must be a non-negative int, got {n!r}")
    bus = _names(d, "bus_util", kn)
    for k, u in bus.items():
        if type(u) is not float or not 0.0 <= u <= 1.0:
            _fail(kn, f"bus_util[{k!r}] must be a float in 0..1, got {u!r}")
    return Status(
        station=station,
        time_ms=_int(d, "t", kn),
        online=online,
        agent_version=_str(d, "agent", kn, SHORT_MAX),
        buffer_depth=_int(d, "buffer", kn),
        oldest_unacked_age_s=_opt_float(d, "oldest_age", kn, 0.0),
        last_acked_seq=_opt_int(d, "last_ack", kn),
        dropped=_int(d, "dropped", kn),
        device_errors=dev_err,
        bus_utilisation=bus,
        clock_offset_s=_opt_float(d, "clock_offset", kn),
        extra=_scalars(d, "extra", kn),
        stream=_stream(d, kn, v),
    )


def _event_to_wire(m: Event) -> dict[str, Any]:
    return {
        "v": VERSION,
        "k": Kind.EVENT.value,
        "station": m.station,
        "t": m.time_ms,
        "id": m.event_id,
        "kind": m.kind,
        "code": m.code,
        "msg": m.message,
        "severity": str(m.severity),
        "details": dict(sorted(m.details.items())),
    }


def _event_from_wire(d: dict[str, Any], v: int) -> Event:
    kn = "event"
    if v != VERSION:
        _fail(kn, f"an event is a v{VERSION} message, got v{v}")
    _keys(d, _EVENT_KEYS, kn)
    station = _station(d, kn)
    kind = d["kind"]
    if type(kind) is not str or EVENT_KIND_RE.fullmatch(kind) is None:
        _fail(kn, f"field 'kind' = {kind!r} must match [a-z][a-z0-9-]{{0,31}}")
    code = d["code"]
    if code is not None and (type(code) is not str or CODE_RE.fullmatch(code) is None):
        _fail(kn, f"field 'code' = {code!r} is not a parameter code or nil")
    sev = d["severity"]
    severity = _SEVERITY_OF.get(sev) if type(sev) is str else None
    if severity is None:
        known = ", ".join(s.value for s in Severity)
        _fail(kn, f"unknown severity {sev!r}; known: {known}")
    return Event(
        station=station,
        time_ms=_int(d, "t", kn),
        event_id=_int(d, "id", kn),
        kind=kind,
        message=_str(d, "msg", kn, TEXT_MAX),
        severity=severity,
        code=code,
        details=_scalars(d, "details", kn),
    )


def _nack_to_wire(m: Nack) -> dict[str, Any]:
    return {
        "v": VERSION_2,
        "k": Kind.NACK.value,
        "station": m.station,
        "stream": m.stream,
        "bseq": m.batch_seq,
        "first": m.first_seq,
        "last": m.last_seq,
        "reason": str(m.reason),
        "ranges": tuple((a, b) for a, b in m.ranges),
        "t": m.time_ms,
        "detail": m.detail,
    }


def _nack_from_wire(d: dict[str, Any], v: int) -> Nack:
    kn = "nack"
    _v2_only(kn, v)
    _keys(d, _NACK_KEYS, kn)
    station = _station(d, kn)
    first, last = _first_last(d, kn, v)
    ranges = _ranges(d, "ranges", kn, v)
    if not ranges:
        _fail(kn, "no ranges rejected")
    if not (first <= ranges[0][0] and ranges[-1][1] <= last):
        _fail(kn, f"ranges fall outside first..last = {first}..{last}")
    r = d["reason"]
    reason = _NACK_REASON_OF.get(r) if type(r) is str else None
    if reason is None:
        known = ", ".join(x.value for x in NackReason)
        _fail(kn, f"unknown nack reason {r!r}; known: {known}")
    return Nack(
        station=station,
        stream=_stream(d, kn, v),
        batch_seq=_int(d, "bseq", kn),
        first_seq=first,
        last_seq=last,
        reason=reason,
        ranges=ranges,
        time_ms=_int(d, "t", kn),
        detail=_str(d, "detail", kn, SHORT_MAX),
    )


def _command_id(d: dict[str, Any], kind: str) -> str:
    x = d["id"]
    if type(x) is not str or COMMAND_ID_RE.fullmatch(x) is None:
        shown = x[:80] if type(x) is str else x
        _fail(kind, f"field 'id' = {shown!r} must match [A-Za-z0-9_.:-]{{1,64}}")
    return x


def _v2_only(kind: str, v: int) -> None:
    if v != VERSION_2:
        _fail(kind, f"a {kind} is a v{VERSION_2} message, got v{v}")


def _cmd_to_wire(m: Command) -> dict[str, Any]:
    return {
        "v": VERSION_2,
        "k": Kind.CMD.value,
        "station": m.station,
        "id": m.command_id,
        "name": m.name,
        "issued": m.issued_ms,
        "expires": m.expires_ms,
        "args": dict(sorted(m.args.items())),
        "body": m.body,
    }


def _cmd_from_wire(d: dict[str, Any], v: int) -> Command:
    kn = "cmd"
    _v2_only(kn, v)
    _keys(d, _CMD_KEYS, kn)
    station = _station(d, kn)
    name = d["name"]
    if type(name) is not str or EVENT_KIND_RE.fullmatch(name) is None:
        shown = name[:80] if type(name) is str else name
        _fail(kn, f"field 'name' = {shown!r} must match [a-z][a-z0-9-]{{0,31}}")
    issued = _int(d, "issued", kn)
    expires = _int(d, "expires", kn)
    if expires <= issued:
        _fail(kn, f"expires = {expires} is not after issued = {issued}")
    body = d["body"]
    if type(body) is not str:
        _fail(kn, f"field 'body' must be a string, got {_tn(body)}")
    size = len(body) if body.isascii() else len(body.encode("utf-8"))
    if size > MAX_CONFIG_BYTES:
        _fail(kn, f"field 'body' is {size} bytes, above the maximum of {MAX_CONFIG_BYTES}")
    _text(body, "field 'body'", kn)
    return Command(
        station=station,
        command_id=_command_id(d, kn),
        name=name,
        issued_ms=issued,
        expires_ms=expires,
        args=_scalars(d, "args", kn),
        body=body,
    )


def _result_to_wire(m: CommandResult) -> dict[str, Any]:
    return {
        "v": VERSION_2,
        "k": Kind.RESULT.value,
        "station": m.station,
        "id": m.command_id,
        "t": m.time_ms,
        "ok": m.ok,
        "state": m.state,
        "msg": m.message,
        "sha256": m.config_sha256,
    }


def _result_from_wire(d: dict[str, Any], v: int) -> CommandResult:
    kn = "result"
    _v2_only(kn, v)
    _keys(d, _RESULT_KEYS, kn)
    station = _station(d, kn)
    ok = d["ok"]
    if type(ok) is not bool:
        _fail(kn, f"field 'ok' must be a bool, got {_tn(ok)}")
    state = d["state"]
    if type(state) is not str or EVENT_KIND_RE.fullmatch(state) is None:
        shown = state[:80] if type(state) is str else state
        _fail(kn, f"field 'state' = {shown!r} must match [a-z][a-z0-9-]{{0,31}}")
    sha = d["sha256"]
    if sha is not None and (type(sha) is not str or SHA256_RE.fullmatch(sha) is None):
        _fail(kn, "field 'sha256' must be 64 lower-case hex digits or nil")
    return CommandResult(
        station=station,
        command_id=_command_id(d, kn),
        time_ms=_int(d, "t", kn),
        ok=ok,
        state=state,
        message=_str(d, "msg", kn, TEXT_MAX),
        config_sha256=sha,
    )


_FROM_WIRE: dict[str, Callable[[dict[str, Any], int], Message]] = {
    Kind.BATCH.value: _batch_from_wire,
    Kind.ACK.value: _ack_from_wire,
    Kind.RESEND.value: _resend_from_wire,
    Kind.STATUS.value: _status_from_wire,
    Kind.EVENT.value: _event_from_wire,
    Kind.NACK.value: _nack_from_wire,
    Kind.CMD.value: _cmd_from_wire,
    Kind.RESULT.value: _result_from_wire,
}

_TO_WIRE: dict[type, Callable[[Any], dict[str, Any]]] = {
    Batch: _batch_to_wire,
    Ack: _ack_to_wire,
    ResendRequest: _resend_to_wire,
    Status: _status_to_wire,
    Event: _event_to_wire,
    Nack: _nack_to_wire,
    Command: _cmd_to_wire,
    CommandResult: _result_to_wire,
}


# --------------------------------------------------------------------------------------------
# encode / decode


def encode(msg: Message) -> bytes:
    """Validate ``msg`` and pack it. Deterministic: equal messages give equal bytes.

    Raises :class:`WireFormatError` if the message would not pass :func:`decode`.
    """
    to_wire = _TO_WIRE.get(type(msg))
    if to_wire is None:
        raise WireFormatError(f"cannot encode a {_tn(msg)}: not a wire message")
    try:
        wire = to_wire(msg)
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise WireFormatError(f"{msg.KIND.value}: cannot encode: {e}") from None
    # Validate with exactly the code decode uses. Tuples stand in for arrays as after unpacking.
    _FROM_WIRE[msg.KIND.value](wire, wire["v"])
    try:
        out: bytes = msgpack.packb(wire, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise WireFormatError(f"{msg.KIND.value}: cannot encode: {e}") from None
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: object) -> None:
        self.key = key


def _pairs(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[Any] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def _unpack(data: bytes, max_size: int) -> object:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"message must be bytes, got {_tn(data)}")
    size = len(data)
    if size > max_size:
        raise WireFormatError(f"message is {size} bytes, above the maximum of {max_size}")
    if size == 0:
        raise WireFormatError("empty message")
    unpacker = msgpack.Unpacker(
        raw=False,
        use_list=False,
        strict_map_key=True,
        object_pairs_hook=_pairs,
        max_buffer_size=size,
    )
    try:
        unpacker.feed(data)
        obj = unpacker.unpack()
    except msgpack.OutOfData:
        raise WireFormatError("truncated message: the msgpack data ends early") from None
    except _DuplicateKey as e:
        raise WireFormatError(f"a map repeats the key {e.key!r}") from None
    except UnicodeDecodeError:
        raise WireFormatError("not msgpack: a string is not valid UTF-8") from None
    except ValueError as e:
        text = str(e)
        if "exceeds max_" in text:
            raise WireFormatError(f"truncated message: {text}") from None
        raise WireFormatError(f"not msgpack: {text or type(e).__name__}") from None
    except msgpack.FormatError:
        raise WireFormatError("not msgpack: invalid type byte") from None
    except Exception as e:  # the unpacker's other errors (StackError, ...)
        raise WireFormatError(f"not msgpack: {type(e).__name__} {e}".rstrip()) from None
    if unpacker.tell() != size:
        if type(obj) is not dict:
            raise WireFormatError(
                f"not a wire message: starts with a msgpack {_tn(obj)}, not a map"
            )
        raise WireFormatError(f"{size - unpacker.tell()} trailing byte(s) after the message")
    return obj


def decode(data: bytes, *, max_size: int = DEFAULT_MAX) -> Message:
    """Unpack and validate one message of any kind.

    Raises :class:`WireFormatError` (and nothing else) for anything that is not exactly one valid
    v1 or v2 message of at most ``max_size`` bytes.
    """
    obj = _unpack(data, max_size)
    if type(obj) is not dict:
        raise WireFormatError(f"message must be a map, got {_tn(obj)}")
    v = obj.get("v")
    if type(v) is not int or v not in (VERSION, VERSION_2):
        raise WireFormatError(
            f"unknown format version {v!r} (this decoder reads v{VERSION} and v{VERSION_2})"
        )
    k = obj.get("k")
    from_wire = _FROM_WIRE.get(k) if type(k) is str else None
    if from_wire is None:
        known = ", ".join(_FROM_WIRE)
        raise WireFormatError(f"unknown message kind {k!r}; known: {known}")
    return from_wire(obj, v)


M = TypeVar("M", Batch, Ack, ResendRequest, Status, Event, Nack, Command, CommandResult)


def _decode_as(cls: type[M], data: bytes, max_size: int) -> M:
    msg = decode(data, max_size=max_size)
    if not isinstance(msg, cls):
        raise WireFormatError(f"expected a {cls.KIND.value} message, got {msg.KIND.value}")
    return msg


def decode_batch(data: bytes, *, max_size: int = DEFAULT_MAX) -> Batch:
    return _decode_as(Batch, data, max_size)


def decode_ack(data: bytes, *, max_size: int = DEFAULT_MAX) -> Ack:
    return _decode_as(Ack, data, max_size)


def decode_resend(data: bytes, *, max_size: int = DEFAULT_MAX) -> ResendRequest:
    return _decode_as(ResendRequest, data, max_size)


def decode_status(data: bytes, *, max_size: int = DEFAULT_MAX) -> Status:
    return _decode_as(Status, data, max_size)


def decode_event(data: bytes, *, max_size: int = DEFAULT_MAX) -> Event:
    return _decode_as(Event, data, max_size)


def decode_nack(data: bytes, *, max_size: int = DEFAULT_MAX) -> Nack:
    return _decode_as(Nack, data, max_size)


def decode_command(data: bytes, *, max_size: int = DEFAULT_MAX) -> Command:
    return _decode_as(Command, data, max_size)


def decode_result(data: bytes, *, max_size: int = DEFAULT_MAX) -> CommandResult:
    return _decode_as(CommandResult, data, max_size)


# --------------------------------------------------------------------------------------------
# JSON form (golden vectors, ``sanduan wire decode --json``)

_CLASSES: dict[str, type[Message]] = {
    Kind.BATCH.value: Batch,
    Kind.ACK.value: Ack,
    Kind.RESEND.value: ResendRequest,
    Kind.STATUS.value: Status,
    Kind.EVENT.value: Event,
    Kind.NACK.value: Nack,
    Kind.CMD.value: Command,
    Kind.RESULT.value: CommandResult,
}


def to_json_obj(msg: Message) -> dict[str, Any]:
    """A JSON-ready dict of ``msg``: ``"k"`` (the kind tag) plus the dataclass fields by name.

    Tuples become lists, NaN values become null, flags and severity their letters/words. A batch
    also gets the derived ``first_seq``, ``last_seq`` and ``count`` (ignored by
    :func:`from_json_obj`). A ``stream`` of 0 (the legacy v1 stream) is left out, so v1 messages
    keep their v1 JSON form.
    """
    out: dict[str, Any] = {"k": msg.KIND.value}
    if isinstance(msg, Batch):
        out |= {"first_seq": msg.first_seq, "last_seq": msg.last_seq, "count": msg.count}
    for f in fields(msg):
        x = getattr(msg, f.name)
        if f.name == "stream" and x == 0 and not isinstance(msg, Nack):
            continue
        if f.name == "values":
            x = [None if math.isnan(v) else v for v in x]
        elif f.name == "flags":
            x = [str(c) for c in x]
        elif f.name == "ranges":
            x = [list(r) for r in x]
        elif isinstance(x, enum.Enum):
            x = x.value
        elif isinstance(x, tuple):
            x = list(x)
        elif isinstance(x, dict):
            x = dict(x)
        out[f.name] = x
    return out


def from_json_obj(obj: Mapping[str, Any]) -> Message:
    """The inverse of :func:`to_json_obj`; the result is validated only when encoded."""
    try:
        cls = _CLASSES[obj["k"]]
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                continue
            x = obj[f.name]
            if f.name == "values":
                x = tuple(math.nan if v is None else float(v) for v in x)
            elif f.name == "flags":
                x = tuple(Flag(c) for c in x)
            elif f.name == "ranges":
                x = tuple((int(a), int(b)) for a, b in x)
            elif f.name == "severity":
                x = Severity(x)
            elif f.name == "reason" and cls is Nack:
                x = NackReason(x)
            elif isinstance(x, list):
                x = tuple(x)
            kw[f.name] = x
        return cls(**kw)
    except (KeyError, TypeError, ValueError) as e:
        raise WireFormatError(f"bad JSON message: {type(e).__name__} {e}") from None

"""HJ 212-2017 packets: bytes in, typed packets out, and back (pure).

A packet on the wire (the standard's CRC test vector)::

    ##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;
    Flag=5;CP=&&RtdInterval=30&&1C80\\r\\n

``##``, the data segment's length as 4 decimal digits (0101), the data segment (``QN=`` up to the
closing ``&&``), its CRC as 4 hex digits (1C80), CR LF.

* The data segment is ``QN;ST;CN;PW;MN;Flag[;PNUM;PNO];CP=&&...&&``. The header fields may come
  in any order (each exactly once); ``CP`` is last. :func:`encode` writes the order above.
* The CRC covers the data segment only (see :func:`crc16`; it is not CRC-16/Modbus).
* ``CP`` holds records separated by ``;``, each a list of ``key=value`` fields separated by
  ``,``: ``DataTime=20260101080000;w01001-Rtd=7.2,w01001-Flag=N;...``. :class:`Packet` keeps CP
  as that list of records, so any CP round-trips; :func:`parse_data` and :func:`data_packet` give
  the typed view of data uploads (CN 2011, 2051, 2061, 2031).
* A packet whose data segment would exceed :data:`MAX_DATA` is split (:func:`split`) into parts
  carrying ``PNUM`` (number of parts) and ``PNO`` (this part, from 1), with Flag bit 1 set. Every
  part repeats a leading ``DataTime`` record, so each part is a valid data upload on its own;
  :func:`join` puts the parts back together.

Every field is validated on decode and on encode; every problem raises
:class:`~sanduan.shared.errors.Hj212Error` naming the field. Text is ASCII.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sanduan.shared import crc as _crc
from sanduan.shared.errors import Hj212Error

MAX_DATA = 1024
"""Largest data segment HJ 212-2017 allows (the length field runs 0000..1024)."""

HEAD = b"##"
TAIL = b"\r\n"
OVERHEAD = len(HEAD) + 4 + 4 + len(TAIL)
"""Bytes of a packet outside its data segment."""

# Command numbers (CN).
CN_REALTIME = "2011"
CN_MINUTE = "2051"
CN_HOURLY = "2061"
CN_DAILY = "2031"
CN_STATUS = "2021"
CN_GET_TIME = "1011"
CN_SET_TIME = "1012"
CN_TIME_CALIBRATION = "1013"
CN_REQUEST_REPLY = "9011"
CN_RESULT = "9012"
CN_NOTIFY_REPLY = "9013"
CN_DATA_REPLY = "9014"
CN_HEARTBEAT = "9015"
"""Not in HJ 212-2017 (9015..9999 are reserved) but sent by some loggers; accepted and logged."""

DATA_CNS = (CN_REALTIME, CN_MINUTE, CN_HOURLY, CN_DAILY)

ST_SURFACE_WATER = "21"
ST_SYSTEM = "91"
"""System interaction: the ST of replies (9011, 9012, 9013, 9014)."""

FLAG_REPLY = 0x01
"""Flag bit 0: the sender wants a reply."""
FLAG_SPLIT = 0x02
"""Flag bit 1: the packet is one part of a split CP (PNUM and PNO present)."""
VERSION_2017 = 1
"""Flag bits 2..7: the protocol version; 1 is HJ 212-2017."""

DATA_FLAGS = frozenset("NFMSDCTB")
"""Data flags (``xxxxxx-Flag``): N normal, F stopped, M maintenance, S manually set, D fault,
C calibration, T over the instrument range, B communication fault with the logger."""

NUMBER_FIELDS = frozenset({"Rtd", "Avg", "Min", "Max", "Cou", "ZsRtd", "ZsAvg", "ZsMin", "ZsMax"})

Field = tuple[str, str]
Record = tuple[Field, ...]

_HEADER_KEYS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_QN = re.compile(r"\d{17}")
_ST = re.compile(r"\d{2}")
_CN = re.compile(r"\d{4}")
_PW = re.compile(r"[!-~]{1,32}")
_MN = re.compile(r"[A-Za-z0-9_-]{1,24}")
_SMALL = re.compile(r"\d{1,4}")
_FLAG = re.compile(r"\d{1,3}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_VALUE = re.compile(r"[!-~ ]{0,64}")
_NUMBER = re.compile(r"-?\d{1,14}(\.\d{1,6})?")
_TIME = re.compile(r"\d{14}")
_FORBIDDEN = set(";,=&")


def crc16(data: bytes) -> int:
    """The HJ 212-2017 CRC of a data segment (``%04X`` on the wire)::

    crc = 0xFFFF; for each byte: crc = (crc >> 8) ^ byte, then 8 times shift right
    by one, xor 0xA001 when the bit shifted out is 1.
    """
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


_TABLE = _crc.TABLE


def crc16_fast(data: bytes) -> int:
    """:func:`crc16` with a table. After ``crc = (crc >> 8) ^ b`` the value fits a byte, and
    eight shift-and-xor rounds of a byte are the table entry, so each byte is ``crc =
    T[(crc >> 8) ^ b]`` (same result)."""
    crc = 0xFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc >> 8) ^ b]
    return crc


# --- times --------------------------------------------------------------------------------


def format_time(dt: datetime) -> str:
    """``YYYYMMDDhhmmss`` (the station's local time, as HJ 212 writes it)."""
    return dt.strftime("%Y%m%d%H%M%S")


def parse_time(text: str, what: str = "time") -> datetime:
    """A ``YYYYMMDDhhmmss`` field as a naive local datetime."""
    if not _TIME.fullmatch(text):
        raise Hj212Error(f"{what} {text!r} is not YYYYMMDDhhmmss")
    try:  # local time on the wire; datetime() checks the ranges (faster than strptime)
        return datetime(
            int(text[:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
        )
    except ValueError:
        raise Hj212Error(f"{what} {text!r} is not a valid date and time") from None


def make_qn(dt: datetime) -> str:
    """A request number: ``YYYYMMDDhhmmsszzz`` from a local time (ms from its microseconds)."""
    return dt.strftime("%Y%m%d%H%M%S") + f"{dt.microsecond // 1000:03d}"


def qn_time(qn: str) -> datetime:
    """The local time a QN names."""
    if not _QN.fullmatch(qn):
        raise Hj212Error(f"QN {qn!r} is not 17 digits YYYYMMDDhhmmsszzz")
    dt = parse_time(qn[:14], "QN")
    return dt.replace(microsecond=int(qn[14:]) * 1000)


# --- packets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    """One HJ 212-2017 packet. ``cp`` is the list of CP records, each a tuple of
    ``(key, value)`` fields. ``pnum``/``pno`` are set only on a part of a split packet."""

    qn: str
    st: str
    cn: str
    pw: str
    mn: str
    flag: int = VERSION_2017 << 2
    cp: tuple[Record, ...] = ()
    pnum: int | None = None
    pno: int | None = None

    @property
    def reply_wanted(self) -> bool:
        return bool(self.flag & FLAG_REPLY)

    @property
    def is_part(self) -> bool:
        return bool(self.flag & FLAG_SPLIT)

    @property
    def version(self) -> int:
        return self.flag >> 2

    def get(self, key: str) -> str | None:
        """The value of the first CP field named ``key`` (``None`` if absent)."""
        for record in self.cp:
            for k, v in record:
                if k == key:
                    return v
        return None

    def fields(self) -> list[Field]:
        """Every CP field, in order."""
        return [f for record in self.cp for f in record]


def flag_for(*, reply: bool) -> int:
    """The Flag of an HJ 212-2017 packet (version 1), with bit 0 set if ``reply``."""
    return (VERSION_2017 << 2) | (FLAG_REPLY if reply else 0)


def _check_text(what: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(value) or (what == "PW" and _FORBIDDEN & set(value)):
        raise Hj212Error(f"{what} {value!r} must be {rule}")


def _check_header(p: Packet) -> None:
    qn_time(p.qn)
    _check_text("ST", p.st, _ST, "2 digits (21 for surface water)")
    _check_text("CN", p.cn, _CN, "4 digits")
    _check_text("PW", p.pw, _PW, "1-32 printable ASCII characters without ; , = &")
    _check_text("MN", p.mn, _MN, "1-24 letters, digits, '_' or '-'")
    if not 0 <= p.flag <= 255:
        raise Hj212Error(f"Flag {p.flag} must be 0..255")
    if p.version != VERSION_2017:
        raise Hj212Error(
            f"Flag {p.flag} gives protocol version {p.version}; only HJ 212-2017 (version 1,"
            " Flag 4..7) is spoken"
        )
    if p.is_part:
        if p.pnum is None or p.pno is None:
            raise Hj212Error(f"Flag {p.flag} marks a split packet but PNUM or PNO is missing")
        if not 1 <= p.pnum <= 9999 or not 1 <= p.pno <= p.pnum:
            raise Hj212Error(f"PNO {p.pno} of PNUM {p.pnum}: need 1 <= PNO <= PNUM <= 9999")
    elif p.pnum is not None or p.pno is not None:
        raise Hj212Error(f"PNUM/PNO given but Flag {p.flag} does not have the split bit (2)")


def _check_cp(cp: Sequence[Record]) -> None:
    for i, record in enumerate(cp):
        if not record:
            raise Hj212Error(f"CP record {i + 1} is empty")
        for k, v in record:
            if not _KEY.fullmatch(k):
                raise Hj212Error(
                    f"CP record {i + 1}: key {k!r} must be 1-32 letters, digits, '_' or '-'"
                )
            if not _VALUE.fullmatch(v) or _FORBIDDEN & set(v):
                raise Hj212Error(
                    f"CP record {i + 1}: value {v!r} of {k} must be at most 64 printable ASCII"
                    " characters without ; , = &"
                )


def _segment(p: Packet) -> str:
    head = f"QN={p.qn};ST={p.st};CN={p.cn};PW={p.pw};MN={p.mn};Flag={p.flag};"
    if p.pnum is not None:
        head += f"PNUM={p.pnum};PNO={p.pno};"
    cp = ";".join(",".join(f"{k}={v}" for k, v in record) for record in p.cp)
    return f"{head}CP=&&{cp}&&"


def encode(packet: Packet) -> bytes:
    """The packet's bytes, after validating every field. A data segment over
    :data:`MAX_DATA` raises (use :func:`split`)."""
    _check_header(packet)
    _check_cp(packet.cp)
    data = _segment(packet).encode("ascii")
    if len(data) > MAX_DATA:
        raise Hj212Error(
            f"data segment is {len(data)} characters, above the HJ 212 maximum of {MAX_DATA};"
            " split the packet (PNUM/PNO)"
        )
    return b"%s%04d%s%04X%s" % (HEAD, len(data), data, crc16_fast(data), TAIL)


def encode_many(packet: Packet) -> list[bytes]:
    """The packet's bytes, split into parts first if it is too long."""
    return [encode(p) for p in split(packet)]


def _parse_cp(text: str) -> tuple[Record, ...]:
    if not text:
        return ()
    records: list[Record] = []
    for i, rtext in enumerate(text.split(";")):
        fields: list[Field] = []
        for ftext in rtext.split(","):
            key, eq, value = ftext.partition("=")
            if not eq:
                raise Hj212Error(f"CP record {i + 1}: field {ftext!r} is not key=value")
            fields.append((key, value))
        records.append(tuple(fields))
    cp = tuple(records)
    _check_cp(cp)
    return cp


def _int_field(key: str, text: str, pattern: re.Pattern[str]) -> int:
    if not pattern.fullmatch(text):
        raise Hj212Error(f"{key} {text!r} is not a number")
    return int(text)


def decode_segment(data: str) -> Packet:
    """Parse a data segment (without length, CRC or CR LF) into a validated packet."""
    cp_at = data.find("CP=&&")
    if cp_at < 0:
        raise Hj212Error("no CP=&&...&& in the data segment")
    if len(data) < cp_at + 7 or not data.endswith("&&"):
        raise Hj212Error("CP does not end with && at the end of the data segment")
    head, cp_text = data[:cp_at], data[cp_at + 5 : -2]
    if head and not head.endswith(";"):
        raise Hj212Error("the field before CP does not end with ';'")
    found: dict[str, str] = {}
    for item in head[:-1].split(";") if head else []:
        key, eq, value = item.partition("=")
        if not eq:
            raise Hj212Error(f"header field {item!r} is not key=value")
        if key not in _HEADER_KEYS:
            raise Hj212Error(f"unknown header field {key!r}; known: {', '.join(_HEADER_KEYS)}")
        if key in found:
            raise Hj212Error(f"header field {key} appears twice")
        found[key] = value
    missing = [k for k in _HEADER_KEYS[:6] if k not in found]
    if missing:
        raise Hj212Error(f"header field(s) {', '.join(missing)} missing")
    packet = Packet(
        qn=found["QN"],
        st=found["ST"],
        cn=found["CN"],
        pw=found["PW"],
        mn=found["MN"],
        flag=_int_field("Flag", found["Flag"], _FLAG),
        cp=_parse_cp(cp_text),
        pnum=_int_field("PNUM", found["PNUM"], _SMALL) if "PNUM" in found else None,
        pno=_int_field("PNO", found["PNO"], _SMALL) if "PNO" in found else None,
    )
    _check_header(packet)
    return packet


def decode(raw: bytes, *, max_data: int = MAX_DATA) -> Packet:
    """One packet from exactly its bytes (``##`` to CR LF); every field validated."""
    if len(raw) < OVERHEAD:
        raise Hj212Error(f"{len(raw)} bytes is too short for a packet (at least {OVERHEAD})")
    if raw[:2] != HEAD:
        raise Hj212Error(f"packet starts with {raw[:2]!r}, not '##'")
    digits = raw[2:6]
    if not digits.isdigit():
        raise Hj212Error(f"length field {digits!r} is not 4 decimal digits")
    n = int(digits)
    if n > max_data:
        raise Hj212Error(f"length {n} is above the maximum of {max_data}")
    if len(raw) != n + OVERHEAD:
        raise Hj212Error(
            f"length field says {n} characters of data, so {n + OVERHEAD} bytes, but the"
            f" packet has {len(raw)}"
        )
    if raw[-2:] != TAIL:
        raise Hj212Error("packet does not end with CR LF")
    data = raw[6 : 6 + n]
    crc_text = raw[6 + n : 10 + n]
    try:
        got = int(crc_text, 16) if re.fullmatch(rb"[0-9A-Fa-f]{4}", crc_text) else None
    except ValueError:  # pragma: no cover - the pattern already checked
        got = None
    if got is None:
        raise Hj212Error(f"CRC field {crc_text!r} is not 4 hex digits")
    want = crc16_fast(data)
    if got != want:
        raise Hj212Error(f"CRC {got:04X} does not match the data segment's {want:04X}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise Hj212Error(f"non-ASCII byte {data[e.start]:#04x} at data offset {e.start}") from None
    return decode_segment(text)


# --- split packets -------------------------------------------------------------------------


def _is_time_record(record: Record) -> bool:
    return len(record) == 1 and record[0][0] == "DataTime"


def split(packet: Packet, max_data: int = MAX_DATA) -> list[Packet]:
    """``[packet]`` if it fits, else its parts (PNUM/PNO, Flag bit 1). A leading ``DataTime``
    record is repeated in every part."""
    _check_header(packet)
    _check_cp(packet.cp)
    if len(_segment(packet)) <= max_data:
        return [packet]
    head: tuple[Record, ...] = packet.cp[:1] if packet.cp and _is_time_record(packet.cp[0]) else ()
    body = packet.cp[len(head) :]
    shell = replace(packet, flag=packet.flag | FLAG_SPLIT, pnum=9999, pno=9999, cp=head)
    base = len(_segment(shell))
    pieces: list[list[Record]] = []
    size = base
    for record in body:
        rlen = sum(len(k) + len(v) + 2 for k, v in record)  # fields, '=' and ',' or ';'
        if base + rlen > max_data:
            raise Hj212Error(
                f"a CP record of {rlen} characters cannot fit a packet of {max_data} characters"
            )
        if not pieces or size + rlen > max_data:
            pieces.append([])
            size = base
        pieces[-1].append(record)
        size += rlen
    total = len(pieces)
    if total > 9999:
        raise Hj212Error(f"CP needs {total} parts, above the maximum of 9999")
    return [
        replace(packet, flag=packet.flag | FLAG_SPLIT, pnum=total, pno=i + 1, cp=(*head, *piece))
        for i, piece in enumerate(pieces)
    ]


def join(parts: Iterable[Packet]) -> Packet:
    """The packet whose :func:`split` gave ``parts`` (any order, every part once)."""
    got = sorted(parts, key=lambda p: p.pno or 0)
    if not got:
        raise Hj212Error("no parts to join")
    first = got[0]
    if not all(p.is_part for p in got):
        raise Hj212Error("a packet to join is not a part of a split packet")
    for p in got:
        if (p.qn, p.st, p.cn, p.pw, p.mn, p.pnum) != (
            first.qn,
            first.st,
            first.cn,
            first.pw,
            first.mn,
            first.pnum,
        ):
            raise Hj212Error(f"part {p.pno} does not belong with part {first.pno} (QN {first.qn})")
    numbers = [p.pno for p in got]
    if numbers != list(range(1, (first.pnum or 0) + 1)):
        raise Hj212Error(f"parts {numbers} of QN {first.qn} are not 1..{first.pnum}, each once")
    head = first.cp[:1] if first.cp and _is_time_record(first.cp[0]) else ()
    cp: list[Record] = list(head)
    for p in got:
        cp.extend(p.cp[len(head) :] if head and p.cp[:1] == head else p.cp)
    return replace(first, flag=first.flag & ~FLAG_SPLIT, pnum=None, pno=None, cp=tuple(cp))


# --- data uploads (2011, 2051, 2061, 2031) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class FactorData:
    """The fields of one factor (pollutant) in a data upload: ``code`` like ``w21003`` and
    ``fields`` like ``(("Avg", "0.41"), ("Flag", "N"))``."""

    code: str
    fields: tuple[Field, ...]

    def get(self, name: str) -> str | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None

    def number(self, name: str) -> float:
        """A numeric field as float; NaN when absent."""
        text = self.get(name)
        return math.nan if text is None else float(text)

    @property
    def flag(self) -> str:
        """The data flag (N when the logger sends none)."""
        return self.get("Flag") or "N"


@dataclass(frozen=True, slots=True)
class DataUpload:
    """A data upload: ``data_time`` (naive, the station's local time) and its factors."""

    cn: str
    data_time: datetime
    factors: tuple[FactorData, ...]


_FACTOR = re.compile(r"[a-z]\d{5}")


def _check_factor_field(code: str, name: str, value: str) -> None:
    if name in NUMBER_FIELDS:
        if not _NUMBER.fullmatch(value):
            raise Hj212Error(
                f"{code}-{name}={value!r} is not a decimal number (at most 14 digits and 6"
                " decimals)"
            )
    elif name == "Flag":
        if value not in DATA_FLAGS:
            raise Hj212Error(
                f"{code}-Flag={value!r} is not a data flag ({' '.join(sorted(DATA_FLAGS))})"
            )
    elif name == "SampleTime":
        parse_time(value, f"{code}-SampleTime")


def parse_data(packet: Packet) -> DataUpload:
    """The typed view of a data upload; every factor field validated."""
    if packet.cn not in DATA_CNS:
        raise Hj212Error(f"CN {packet.cn} is not a data upload ({', '.join(DATA_CNS)})")
    data_time: datetime | None = None
    by_code: dict[str, list[Field]] = {}
    for key, value in packet.fields():
        if key == "DataTime":
            if data_time is not None:
                raise Hj212Error("DataTime appears twice in CP")
            data_time = parse_time(value, "DataTime")
            continue
        code, dash, name = key.partition("-")
        if not dash or not _FACTOR.fullmatch(code) or not name:
            raise Hj212Error(f"CP field {key!r} is not <factor code>-<field> like w01001-Rtd")
        _check_factor_field(code, name, value)
        fields = by_code.setdefault(code, [])
        if any(k == name for k, _ in fields):
            raise Hj212Error(f"{key} appears twice in CP")
        fields.append((name, value))
    if data_time is None:
        raise Hj212Error(f"CN {packet.cn} data has no DataTime")
    factors = tuple(FactorData(c, tuple(f)) for c, f in by_code.items())
    return DataUpload(packet.cn, data_time, factors)


def format_number(value: float) -> str:
    """A value as HJ 212 writes it: plain decimal, at most 6 decimals."""
    if not math.isfinite(value):
        raise Hj212Error(f"value {value!r} cannot be sent (not a finite number)")
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if not _NUMBER.fullmatch(text):
        raise Hj212Error(f"value {value!r} has more than 14 integer digits")
    return text


def data_packet(
    *,
    cn: str,
    qn: str,
    mn: str,
    pw: str,
    data_time: datetime,
    factors: Iterable[FactorData],
    st: str = ST_SURFACE_WATER,
    reply: bool = True,
) -> Packet:
    """A data upload (one record per factor after the ``DataTime`` record); validated."""
    if cn not in DATA_CNS:
        raise Hj212Error(f"CN {cn} is not a data upload ({', '.join(DATA_CNS)})")
    cp: list[Record] = [(("DataTime", format_time(data_time)),)]
    for f in factors:
        if not _FACTOR.fullmatch(f.code):
            raise Hj212Error(f"factor code {f.code!r} is not like w01001")
        for name, value in f.fields:
            _check_factor_field(f.code, name, value)
        cp.append(tuple((f"{f.code}-{name}", value) for name, value in f.fields))
    packet = Packet(qn=qn, st=st, cn=cn, pw=pw, mn=mn, flag=flag_for(reply=reply), cp=tuple(cp))
    _check_header(packet)
    _check_cp(packet.cp)
    return packet


def reply_packet(request: Packet, cn: str, cp: tuple[Record, ...] = ()) -> Packet:
    """A reply to ``request`` (same QN, PW and MN; ST 91; no reply wanted)."""
    return Packet(
        qn=request.qn,
        st=ST_SYSTEM,
        cn=cn,
        pw=request.pw,
        mn=request.mn,
        flag=flag_for(reply=False),
        cp=cp,
    )


def data_ack(request: Packet) -> Packet:
    """The 9014 data reply to ``request``."""
    return reply_packet(request, CN_DATA_REPLY)


def history_request(
    *,
    cn: str,
    qn: str,
    mn: str,
    pw: str,
    begin: datetime,
    end: datetime,
    st: str = ST_SURFACE_WATER,
) -> Packet:
    """A platform's request for a time range of data (CN 2051/2061/2031, Flag 5)."""
    if cn not in (CN_MINUTE, CN_HOURLY, CN_DAILY, CN_REALTIME):
        raise Hj212Error(f"CN {cn} cannot be requested as history")
    if end < begin:
        raise Hj212Error(f"EndTime {format_time(end)} is before BeginTime {format_time(begin)}")
    cp = ((("BeginTime", format_time(begin)),), (("EndTime", format_time(end)),))
    return Packet(qn=qn, st=st, cn=cn, pw=pw, mn=mn, flag=flag_for(reply=True), cp=cp)


def history_range(packet: Packet) -> tuple[datetime, datetime]:
    """``(BeginTime, EndTime)`` of a history request."""
    b, e = packet.get("BeginTime"), packet.get("EndTime")
    if b is None or e is None:
        raise Hj212Error(f"CN {packet.cn} request has no BeginTime/EndTime")
    begin, end = parse_time(b, "BeginTime"), parse_time(e, "EndTime")
    if end < begin:
        raise Hj212Error(f"EndTime {e} is before BeginTime {b}")
    return begin, end

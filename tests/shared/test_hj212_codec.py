"""HJ 212-2017 codec: golden packets (with the standard's CRC test vector), validation of every
field, split packets, hypothesis round trips and mutations (decode or raise Hj212Error)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.shared.errors import Hj212Error, WireFormatError
from sanduan.shared.hj212.codec import (
    FLAG_SPLIT,
    MAX_DATA,
    FactorData,
    Packet,
    crc16,
    crc16_fast,
    data_ack,
    data_packet,
    decode,
    encode,
    format_number,
    history_range,
    join,
    parse_data,
    split,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hj212"

# The test vector of the standard (domain reference, section 3): CRC 1C80.
VECTOR = (
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    b"CP=&&RtdInterval=30&&1C80\r\n"
)


def _reference_crc(data: bytes) -> int:
    """The CRC exactly as the standard writes it, independent of the codec."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def test_crc_test_vector() -> None:
    data = VECTOR[6:-6]
    assert len(data) == 101
    assert crc16(data) == 0x1C80
    assert crc16_fast(data) == 0x1C80
    assert _reference_crc(data) == 0x1C80


@given(st.binary(max_size=300))
def test_table_crc_equals_bitwise_crc(data: bytes) -> None:
    assert crc16_fast(data) == _reference_crc(data)


def test_vector_decodes_and_encodes_back() -> None:
    p = decode(VECTOR)
    assert (p.qn, p.st, p.cn, p.pw, p.mn, p.flag) == (
        "20160801085857223",
        "32",
        "1062",
        "100000",
        "010000A8900016F000169DC0",
        5,
    )
    assert p.reply_wanted
    assert p.version == 1
    assert p.cp == ((("RtdInterval", "30"),),)
    assert encode(p) == VECTOR


def _golden() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.hj212"))


def test_golden_set_is_there() -> None:
    names = _golden()
    assert {"realtime", "hourly", "ack", "history", "split-1", "split-2"} <= set(names)
    assert len([n for n in names if n.startswith("bad-")]) >= 12


@pytest.mark.parametrize("name", [n for n in _golden() if not n.startswith("bad-")])
def test_golden_packet(name: str) -> None:
    raw = (GOLDEN / f"{name}.hj212").read_bytes()
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    p = decode(raw)
    from sanduan.shared.hj212.cli import packet_json

    assert packet_json(p) == expected
    assert encode(p) == raw
    # The CRC on the wire is the standard's CRC of the data segment.
    assert raw[-6:-2].decode() == f"{_reference_crc(raw[6:-6]):04X}"


@pytest.mark.parametrize("name", [n for n in _golden() if n.startswith("bad-")])
def test_bad_golden_packet_is_rejected_with_reason(name: str) -> None:
    raw = (GOLDEN / f"{name}.hj212").read_bytes()
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))["error"]
    with pytest.raises(Hj212Error) as info:
        p = decode(raw)
        parse_data(p)  # data packets are also checked field by field
    assert expected in info.value.reason


def test_error_is_in_the_tree() -> None:
    with pytest.raises(WireFormatError) as info:
        decode(b"##0000")
    assert str(info.value).startswith("HJ 212: ")


def test_realtime_typed_view() -> None:
    up = parse_data(decode((GOLDEN / "realtime.hj212").read_bytes()))
    assert up.cn == "2011"
    assert up.data_time == datetime(2026, 3, 1, 8)
    assert [f.code for f in up.factors] == ["w01001", "w01009", "w21003"]
    assert up.factors[0].number("Rtd") == 7.21
    assert up.factors[2].flag == "M"


def test_history_request_range() -> None:
    p = decode((GOLDEN / "history.hj212").read_bytes())
    assert history_range(p) == (datetime(2026, 3, 1), datetime(2026, 3, 1, 23))


def _base(**kw: object) -> Packet:
    fields: dict[str, object] = {
        "qn": "20260301080000000",
        "st": "21",
        "cn": "2011",
        "pw": "123456",
        "mn": "33010200000001",
        "flag": 5,
        "cp": ((("DataTime", "20260301080000"),), (("w01001-Rtd", "7.2"),)),
    }
    fields.update(kw)
    return Packet(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"qn": "2026030108000000"}, "QN"),
        ({"qn": "20261301080000000"}, "not a valid date"),
        ({"st": "2"}, "ST"),
        ({"cn": "20111"}, "CN"),
        ({"pw": ""}, "PW"),
        ({"pw": "12;34"}, "PW"),
        ({"mn": "x" * 25}, "MN"),
        ({"mn": "a b"}, "MN"),
        ({"flag": 1}, "version 0"),
        ({"flag": 256}, "0..255"),
        ({"flag": 7}, "PNUM or PNO is missing"),
        ({"pnum": 2, "pno": 1}, "split bit"),
        ({"flag": 7, "pnum": 2, "pno": 3}, "PNO 3 of PNUM 2"),
        ({"cp": ((),)}, "empty"),
        ({"cp": ((("w01001-Rtd", "7;2"),),)}, "value"),
        ({"cp": ((("", "7"),),)}, "key"),
        ({"cp": tuple(((f"k{i}", "x" * 60),) for i in range(20))}, "split the packet"),
    ],
)
def test_encode_validates_every_field(change: dict[str, object], reason: str) -> None:
    with pytest.raises(Hj212Error) as info:
        encode(_base(**change))
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("cp", "reason"),
    [
        ((), "no DataTime"),
        ((("DataTime", "2026030108"),), "YYYYMMDDhhmmss"),
        ((("DataTime", "20260301080000"), ("w01001Rtd", "1")), "factor code"),
        ((("DataTime", "20260301080000"), ("w01001-Rtd", "abc")), "decimal number"),
        ((("DataTime", "20260301080000"), ("w01001-Rtd", "1e5")), "decimal number"),
        ((("DataTime", "20260301080000"), ("w01001-Rtd", "nan")), "decimal number"),
        ((("DataTime", "20260301080000"), ("w01001-Flag", "X")), "data flag"),
        ((("DataTime", "20260301080000"), ("w01001-Rtd", "1"), ("w01001-Rtd", "2")), "twice"),
        ((("DataTime", "20260301080000"), ("DataTime", "20260301080000")), "twice"),
    ],
)
def test_data_fields_are_validated(cp: tuple[tuple[str, str], ...], reason: str) -> None:
    p = _base(cp=(cp,) if cp else ())
    with pytest.raises(Hj212Error) as info:
        parse_data(decode(encode(p)))
    assert reason in info.value.reason


def test_format_number() -> None:
    assert format_number(7.2) == "7.2"
    assert format_number(0.0001234) == "0.000123"
    assert format_number(-0.0) == "0"
    assert format_number(100.0) == "100"
    with pytest.raises(Hj212Error):
        format_number(float("nan"))
    with pytest.raises(Hj212Error):
        format_number(1e20)


def _big_upload(n: int) -> Packet:
    codes = [f"w{i:05d}" for i in range(1, n + 1)]
    factors = [FactorData(c, (("Avg", "12.345678"), ("Flag", "N"))) for c in codes]
    return data_packet(
        cn="2061",
        qn="20260301090000000",
        mn="33010200000001",
        pw="123456",
        data_time=datetime(2026, 3, 1, 8),
        factors=factors,
    )


def test_long_cp_is_split_and_joined() -> None:
    big = _big_upload(60)
    with pytest.raises(Hj212Error):
        encode(big)
    parts = split(big)
    assert len(parts) > 1
    assert [p.pno for p in parts] == list(range(1, len(parts) + 1))
    for p in parts:
        raw = encode(p)
        assert len(raw) <= MAX_DATA + 12
        assert p.flag & FLAG_SPLIT
        assert p.pnum == len(parts)
        # every part stands alone as a data upload with the same DataTime
        assert parse_data(decode(raw)).data_time == datetime(2026, 3, 1, 8)
    assert join(reversed(parts)) == big
    codes = [f.code for p in parts for f in parse_data(p).factors]
    assert codes == [f.code for f in parse_data(big).factors]


def test_golden_split_parts_join() -> None:
    parts = [decode((GOLDEN / f"split-{i}.hj212").read_bytes()) for i in (1, 2)]
    whole = join(parts)
    assert whole.pnum is None
    assert len(parse_data(whole).factors) == 2


def test_join_rejects_incomplete_or_mixed_parts() -> None:
    parts = split(_big_upload(60))
    with pytest.raises(Hj212Error, match=r"not 1\.\."):
        join(parts[1:])
    with pytest.raises(Hj212Error, match="does not belong"):
        join([parts[0], replace(parts[1], qn="20260301090000001")])
    with pytest.raises(Hj212Error):
        join([])


def test_ack_is_a_9014_reply() -> None:
    req = decode((GOLDEN / "hourly.hj212").read_bytes())
    ack = data_ack(req)
    assert (ack.cn, ack.qn, ack.st, ack.flag, ack.cp) == ("9014", req.qn, "91", 4, ())
    assert encode(ack) == (GOLDEN / "ack.hj212").read_bytes()


# --- properties ----------------------------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=1, max_size=6)
_number = st.builds(
    lambda a, b: f"{a}.{b}" if b else a,
    _digits,
    st.text(alphabet="0123456789", max_size=6),
)
_factor = st.builds(
    FactorData,
    st.from_regex(r"w[0-9]{5}", fullmatch=True),
    st.tuples(
        st.tuples(st.just("Avg"), _number),
        st.tuples(st.just("Flag"), st.sampled_from("NFMSDCTB")),
    ),
)
_time = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@st.composite
def _uploads(draw: st.DrawFn) -> Packet:
    factors = draw(st.lists(_factor, max_size=40, unique_by=lambda f: f.code))
    t = draw(_time).replace(microsecond=0)
    return data_packet(
        cn=draw(st.sampled_from(["2011", "2051", "2061", "2031"])),
        qn=draw(_time).strftime("%Y%m%d%H%M%S") + draw(st.from_regex(r"[0-9]{3}", fullmatch=True)),
        mn=draw(st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)),
        pw=draw(st.from_regex(r"[A-Za-z0-9]{1,9}", fullmatch=True)),
        data_time=t,
        factors=factors,
        reply=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(_uploads())
def test_round_trip(p: Packet) -> None:
    parts = split(p)
    decoded = [decode(encode(part)) for part in parts]
    assert decoded == parts
    whole = decoded[0] if len(decoded) == 1 else join(decoded)
    assert whole == p
    assert parse_data(whole) == parse_data(p)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100))
def test_random_bytes_decode_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(Hj212Error):
        decode(data)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["realtime", "hourly", "ack", "history"]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
    st.booleans(),
)
def test_mutated_packets_decode_or_raise_our_error(
    name: str, edits: list[tuple[int, int]], fix_crc: bool
) -> None:
    raw = bytearray((GOLDEN / f"{name}.hj212").read_bytes())
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    if fix_crc and raw[6:-6]:
        # Recompute the CRC so that mutations reach the field checks.
        raw[-6:-2] = f"{_reference_crc(bytes(raw[6:-6])):04X}".encode()
    try:
        p = decode(bytes(raw))
    except Hj212Error:
        return
    # Whatever decodes encodes back to a valid packet (the decoder let nothing odd through).
    assert decode(encode(p)) == p
    if p.cn in ("2011", "2051", "2061", "2031"):
        with contextlib.suppress(Hj212Error):
            parse_data(p)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_data_segment_with_good_frame_decodes_or_raises(segment: bytes) -> None:
    raw = b"##%04d%s%04X\r\n" % (len(segment), segment, _reference_crc(segment))
    with contextlib.suppress(Hj212Error):
        decode(raw)

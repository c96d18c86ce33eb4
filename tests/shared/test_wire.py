"""Wire format v1 and v2: round trips, validation, robustness, helpers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanduan.shared.errors import WireFormatError
from sanduan.shared.model import Flag, Reading
from sanduan.shared.wire import (
    CODE_RE,
    DEFAULT_MAX,
    EVENT_KIND_RE,
    MAX_BATCH_READINGS,
    MAX_RANGES,
    MAX_SEQ,
    Ack,
    Batch,
    Event,
    Message,
    Nack,
    NackReason,
    ResendRequest,
    Severity,
    Status,
    decode,
    decode_ack,
    decode_batch,
    decode_event,
    decode_nack,
    decode_resend,
    decode_status,
    encode,
    from_json_obj,
    new_stream_id,
    range_count,
    seq_ranges,
    to_json_obj,
)

T0 = 1_767_225_600_000
U63 = (1 << 63) - 1

# ---------------------------------------------------------------------------- strategies

stations = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
codes_st = st.from_regex(CODE_RE, fullmatch=True)
times = st.integers(0, U63)
u63 = st.integers(0, U63)
# Text fields hold no control characters but tab and newline (NUL breaks stores downstream).
_chars = st.characters(codec="utf-8", exclude_categories=["Cc"], include_characters="\t\n")
texts = st.text(_chars, max_size=40)
names = st.text(_chars, min_size=1, max_size=64)
streams = st.just(0) | st.integers(1, U63)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), U63), finite, texts)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    n = draw(st.integers(1, 40))
    stream = draw(streams)
    start = draw(st.integers(1, 1 << 47) if stream else st.integers(0, 1 << 62))
    deltas = draw(st.lists(st.integers(1, 1 << 40), min_size=n - 1, max_size=n - 1))
    seq = [start]
    for d in deltas:
        seq.append(seq[-1] + d)
    pool = draw(st.lists(codes_st, min_size=1, max_size=8, unique=True))
    return Batch.from_columns(
        draw(stations),
        draw(u63),
        draw(times),
        seq=seq,
        ts_ms=draw(st.lists(times, min_size=n, max_size=n)),
        code=draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
        values=draw(st.lists(st.floats(allow_infinity=False), min_size=n, max_size=n)),
        flags=draw(st.lists(st.sampled_from(list(Flag)), min_size=n, max_size=n)),
        grades=draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)),
        stream=stream,
    )


@st.composite
def range_lists(
    draw: st.DrawFn, min_size: int = 0, lo: int = 0, hi: int = 1 << 50
) -> tuple[tuple[int, int], ...]:
    points = sorted(draw(st.sets(st.integers(lo, hi), min_size=2 * min_size, max_size=20)))
    if len(points) % 2:
        points = points[:-1]
    return tuple((points[i], points[i + 1]) for i in range(0, len(points), 2))


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    stream = draw(streams)
    lo, hi = (1, MAX_SEQ) if stream else (0, U63)
    ranges = draw(range_lists(lo=lo, hi=min(hi, 1 << 50)))
    if ranges:
        first = draw(st.integers(lo, ranges[0][0]))
        last = draw(st.integers(ranges[-1][1], hi))
    else:
        first = draw(st.integers(lo, hi))
        last = draw(st.integers(first, hi))
    return Ack(draw(stations), draw(u63), first, last, draw(times), ranges, stream)


@st.composite
def resends_st(draw: st.DrawFn) -> ResendRequest:
    stream = draw(streams)
    ranges = draw(range_lists(min_size=1, lo=1 if stream else 0, hi=MAX_SEQ))
    return ResendRequest(draw(stations), ranges, draw(times), draw(texts), stream)


resends = resends_st()


@st.composite
def nacks(draw: st.DrawFn) -> Nack:
    ranges = draw(range_lists(min_size=1, lo=1, hi=MAX_SEQ))
    return Nack(
        station=draw(stations),
        stream=draw(st.integers(1, U63)),
        batch_seq=draw(u63),
        first_seq=draw(st.integers(1, ranges[0][0])),
        last_seq=draw(st.integers(ranges[-1][1], MAX_SEQ)),
        reason=draw(st.sampled_from(list(NackReason))),
        ranges=ranges,
        time_ms=draw(times),
        detail=draw(texts),
    )


statuses = st.builds(
    Status,
    station=stations,
    time_ms=times,
    online=st.booleans(),
    agent_version=texts,
    buffer_depth=u63,
    oldest_unacked_age_s=st.none() | st.floats(0, 1e9),
    last_acked_seq=st.none() | u63,
    dropped=u63,
    device_errors=st.dictionaries(names, u63, max_size=5),
    bus_utilisation=st.dictionaries(names, st.floats(0, 1), max_size=5),
    clock_offset_s=st.none() | finite,
    extra=st.dictionaries(names, scalars, max_size=5),
    stream=streams,
)

events = st.builds(
    Event,
    station=stations,
    time_ms=times,
    event_id=u63,
    kind=st.from_regex(EVENT_KIND_RE, fullmatch=True),
    message=texts,
    severity=st.sampled_from(list(Severity)),
    code=st.none() | codes_st,
    details=st.dictionaries(names, scalars, max_size=5),
)

messages: st.SearchStrategy[Message] = st.one_of(
    batches(), acks(), resends, statuses, events, nacks()
)


def example_batch() -> Batch:
    readings = [
        Reading(1001, T0, "w01001", 7.6, Flag.N, 1),
        Reading(1002, T0, "w21003", math.nan, Flag.D, 0),
        Reading(1005, T0 + 60_000, "w01001", 7.5, Flag.M, 2),
    ]
    return Batch.from_readings("st-1", 9, T0 + 61_000, readings)


def wire_of(msg: Message) -> dict[str, Any]:
    obj: dict[str, Any] = msgpack.unpackb(encode(msg), raw=False)
    return obj


def pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def reason_of(data: bytes, **kw: Any) -> str:
    with pytest.raises(WireFormatError) as info:
        decode(data, **kw)
    return info.value.reason


def mutate(message: Message, /, **changes: Any) -> bytes:
    obj = wire_of(message)
    obj.update(changes)
    return pack(obj)


# ---------------------------------------------------------------------------- round trips


@given(batches())
def test_batch_round_trip(batch: Batch) -> None:
    data = encode(batch)
    back = decode_batch(data)
    assert back == batch
    assert encode(back) == data


@given(acks())
def test_ack_round_trip(ack: Ack) -> None:
    assert decode_ack(encode(ack)) == ack


@given(resends)
def test_resend_round_trip(req: ResendRequest) -> None:
    assert decode_resend(encode(req)) == req


@given(statuses)
def test_status_round_trip(status: Status) -> None:
    assert decode_status(encode(status)) == status


@given(events)
def test_event_round_trip(event: Event) -> None:
    assert decode_event(encode(event)) == event


@given(nacks())
def test_nack_round_trip(nack: Nack) -> None:
    assert decode_nack(encode(nack)) == nack


@given(messages)
def test_json_form_round_trip(msg: Message) -> None:
    assert encode(from_json_obj(to_json_obj(msg))) == encode(msg)


def test_encoding_is_deterministic_regardless_of_dict_order() -> None:
    a = Status("st-1", T0, device_errors={"b": 1, "a": 2}, extra={"y": 1, "x": "s"})
    b = Status("st-1", T0, device_errors={"a": 2, "b": 1}, extra={"x": "s", "y": 1})
    assert encode(a) == encode(b)


def test_nan_is_canonical_on_the_wire_and_after_decode() -> None:
    odd_nan = -math.nan  # sign bit set, still NaN
    batch = Batch.from_columns("st-1", 1, T0, seq=[1], ts_ms=[T0], code=["w01001"], values=[0.0])
    batch = dataclasses.replace(batch, values=(odd_nan,))
    data = encode(batch)
    assert b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00" in data
    assert decode_batch(data).values[0] is math.nan  # noqa: PLW0177 (identity is the point)


def test_readings_round_trip_through_a_batch() -> None:
    readings = [
        Reading(5, T0, "w01001", 7.0, Flag.N, 1),
        Reading(9, T0 + 1, "w21003", 0.5, Flag.T, 6),
        Reading(10, T0 + 2, "w01001", 7.1, Flag.C, 0),
    ]
    batch = decode_batch(encode(Batch.from_readings("st-1", 3, T0, readings)))
    assert batch.to_readings() == readings
    assert batch.codes == ("w01001", "w21003")
    assert batch.code_idx == (0, 1, 0)
    assert batch.code_column() == ("w01001", "w21003", "w01001")
    assert (batch.first_seq, batch.last_seq, batch.count, len(batch)) == (5, 10, 3, 3)
    assert batch.rows()[1] == (9, T0 + 1, "w21003", 0.5, Flag.T, 6)


def test_from_columns_defaults_flags_and_grades() -> None:
    batch = Batch.from_columns(
        "st-1", 1, T0, seq=[1, 2], ts_ms=[T0, T0], code=["a", "b"], values=[1, 2]
    )
    assert batch.flags == (Flag.N, Flag.N)
    assert batch.grades == (0, 0)
    assert batch.values == (1.0, 2.0)
    assert all(type(v) is float for v in batch.values)
    assert decode_batch(encode(batch)) == batch


def test_status_last_will() -> None:
    will = Status.last_will("st-1", T0, "1.2.3")
    back = decode_status(encode(will))
    assert back.online is False
    assert back.agent_version == "1.2.3"


def test_seq_ranges() -> None:
    assert seq_ranges([]) == ()
    assert seq_ranges([4]) == ((4, 4),)
    assert seq_ranges([1, 2, 3, 7, 8, 10]) == ((1, 3), (7, 8), (10, 10))


def test_typed_decoders_reject_other_kinds() -> None:
    data = encode(Ack("st-1", 1, 1, 2, T0))
    with pytest.raises(WireFormatError, match="expected a batch message, got ack"):
        decode_batch(data)
    assert isinstance(decode(data), Ack)


# ---------------------------------------------------------------------------- decode errors


def test_size_limit_is_checked_before_unpacking() -> None:
    data = encode(example_batch())
    assert "above the maximum" in reason_of(data, max_size=len(data) - 1)
    assert isinstance(decode(data, max_size=len(data)), Batch)
    assert "above the maximum" in reason_of(b"\x00" * (DEFAULT_MAX + 1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (b"\xc1", "not msgpack"),
        (b"\xa2\xff\xfe", "not valid UTF-8"),
        (b"\x81\x01\x02", "not msgpack"),
        (b"\x93\x01", "truncated"),
        (b"\xdd\xff\xff\xff\xff", "truncated"),
        (pack({"v": 1, "k": "batch"}) + b"\x90", "trailing byte"),
        (pack(7), "must be a map"),
        (pack({"k": "batch"}), "unknown format version None"),
        (pack({"v": True, "k": "batch"}), "unknown format version True"),
        (pack({"v": 1}), "unknown message kind None"),
        (pack({"v": 1, "k": 3}), "unknown message kind 3"),
    ],
)
def test_framing_errors(data: bytes, reason: str) -> None:
    assert reason in reason_of(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(WireFormatError, match="must be bytes"):
        decode("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"station": ""}, "invalid station id"),
        ({"station": "a+b"}, "invalid station id"),
        ({"station": "a#"}, "invalid station id"),
        ({"station": "x" * 65}, "invalid station id"),
        ({"station": 5}, "'station' must be a string, got int"),
        ({"bseq": -1}, "out of range"),
        ({"bseq": 1.0}, "'bseq' must be an int, got float"),
        ({"created": None}, "'created' must be an int, got nil"),
        ({"seq": "abc"}, "'seq' must be an array, got string"),
        ({"seq": [1001, 1, 2.0]}, "column 'seq'[2] must be int, got float"),
        ({"seq": [1001, 1, 0]}, "not strictly increasing at index 2"),
        ({"seq": [1001, -3, 7]}, "not strictly increasing at index 1"),
        ({"first": 1000}, "header first = 1000"),
        ({"last": 1004}, "header last = 1004"),
        ({"n": 4}, "header count n = 4"),
        ({"ts": [T0, 0]}, "'ts' has 2 entries"),
        ({"ts": [T0, -T0 - 1, 0]}, "outside 0..2**63-1"),
        ({"ts": [T0, "x", 0]}, "column 'ts'[1] must be int"),
        ({"codes": ["w01001", "w01001"]}, "duplicate"),
        ({"codes": ["w01001", "bad code"]}, "not a parameter code"),
        ({"codes": ["w01001", "w21003", "w99999"]}, "no reading uses"),
        ({"ci": [0, 1, 2]}, "outside the code dictionary"),
        ({"ci": [0, 1, -1]}, "outside the code dictionary"),
        ({"val": [1.0, 2.0, 3]}, "column 'val'[2] must be float, got int"),
        ({"val": [1.0, -math.inf, 3.0]}, "infinity"),
        ({"val": [1.0, 2.0]}, "'val' has 2 entries"),
        ({"flag": "NN"}, "'flag' has 2 entries"),
        ({"flag": "NnN"}, "unknown flag 'n' at index 1"),
        ({"flag": ["N", "N", "N"]}, "'flag' must be a string"),
        ({"grade": [0, 0, 0]}, "'grade' must be binary"),
        ({"grade": b"\x00\x00"}, "'grade' has 2 entries"),
        ({"grade": b"\x00\x09\x00"}, "grade 9 at index 1 is out of range 0..6"),
        ({"v": 3}, "unknown format version 3"),
        ({"extra": 1}, "unknown field(s) 'extra'"),
    ],
)
def test_batch_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(mutate(example_batch(), **changes))


def test_missing_field() -> None:
    obj = wire_of(example_batch())
    del obj["flag"]
    assert "missing field(s) 'flag'" in reason_of(pack(obj))


def test_bytes_keys_are_rejected() -> None:
    obj: dict[Any, Any] = wire_of(example_batch())
    obj[b"raw"] = 1
    assert "unknown field(s) b'raw'" in reason_of(pack(obj))


ACK = Ack("st-1", 4, 10, 20, T0, ((10, 12), (15, 20)))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"first": 21}, "is after last"),
        ({"ranges": [[12, 10]]}, "not a valid range"),
        ({"ranges": [[10, 12], [12, 20]]}, "overlaps"),
        ({"ranges": [[15, 20], [10, 12]]}, "overlaps or is out of order"),
        ({"ranges": [[10, 12, 13]]}, "pair of ints"),
        ({"ranges": [[10, "12"]]}, "pair of ints"),
        ({"ranges": [[9, 12]]}, "outside first..last"),
        ({"ranges": [[10, 21]]}, "outside first..last"),
        ({"ranges": {}}, "'ranges' must be an array"),
        ({"t": -5}, "out of range"),
    ],
)
def test_ack_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(mutate(ACK, **changes))


RESEND = ResendRequest("st-1", ((3, 5),), T0, "gap")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ranges": []}, "no ranges"),
        ({"ranges": [[-1, 5]]}, "not a valid range"),
        ({"reason": 3}, "'reason' must be a string"),
        ({"reason": "x" * 257}, "'reason' must be 0..256 characters"),
    ],
)
def test_resend_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(mutate(RESEND, **changes))


STATUS = Status("st-1", T0, device_errors={"sonde": 1}, bus_utilisation={"bus1": 0.5})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"online": None}, "'online' must be a bool"),
        ({"buffer": -1}, "out of range"),
        ({"oldest_age": -1.0}, "'oldest_age'"),
        ({"oldest_age": 5}, "'oldest_age' must be a float"),
        ({"clock_offset": math.nan}, "not a finite number"),
        ({"last_ack": "7"}, "'last_ack' must be an int"),
        ({"dev_err": {"sonde": -1}}, "dev_err['sonde'] must be a non-negative int"),
        ({"dev_err": {"": 1}}, "keys must be strings of 1..64"),
        ({"dev_err": [1]}, "'dev_err' must be a map"),
        ({"bus_util": {"bus1": 1.01}}, "must be a float in 0..1"),
        ({"bus_util": {"bus1": math.nan}}, "must be a float in 0..1"),
        ({"bus_util": {"bus1": 1}}, "must be a float in 0..1"),
        ({"extra": {"x": [1]}}, "must be a string, number, bool or nil"),
        ({"extra": {"x": math.inf}}, "must be finite"),
        ({"extra": {"x": 1 << 63}}, "does not fit"),
        ({"extra": {"x": "y" * 4097}}, "longer than"),
        ({"extra": {str(i): i for i in range(257)}}, "above the maximum 256"),
        ({"agent": None}, "'agent' must be a string"),
    ],
)
def test_status_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(mutate(STATUS, **changes))


EVENT = Event("st-1", T0, 3, "exceedance", "NH3-N high", Severity.CRITICAL, "w21003")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"kind": "Exceedance"}, "'kind'"),
        ({"kind": ""}, "'kind'"),
        ({"code": "w 1"}, "not a parameter code"),
        ({"severity": "fatal"}, "unknown severity 'fatal'"),
        ({"severity": [1]}, "unknown severity"),
        ({"id": -1}, "out of range"),
        ({"msg": None}, "'msg' must be a string"),
        ({"details": {"a": {"b": 1}}}, "must be a string, number, bool or nil"),
    ],
)
def test_event_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(mutate(EVENT, **changes))


def test_duplicate_keys_are_rejected() -> None:
    packer = msgpack.Packer(use_bin_type=True)
    obj = wire_of(ACK)
    data = packer.pack_map_header(len(obj) + 1)
    for k, v in obj.items():
        data += packer.pack(k) + packer.pack(v)
    data += packer.pack("bseq") + packer.pack(99)
    assert "repeats the key 'bseq'" in reason_of(data)


# ---------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    "msg",
    [
        dataclasses.replace(example_batch(), seq=(3, 2, 1)),
        dataclasses.replace(example_batch(), station="a/b"),
        dataclasses.replace(example_batch(), seq=()),
        dataclasses.replace(example_batch(), flags=("N", "Q", "N")),  # type: ignore[arg-type]
        dataclasses.replace(example_batch(), grades=(0, 7, 0)),
        dataclasses.replace(example_batch(), grades=(0, 300, 0)),
        dataclasses.replace(example_batch(), seq=("a", "b", "c")),  # type: ignore[arg-type]
        dataclasses.replace(example_batch(), values=("x", 1.0, 2.0)),  # type: ignore[arg-type]
        Ack("st-1", 1, 5, 4, T0),
        ResendRequest("st-1", (), T0),
        ResendRequest("st-1", ((1, 2, 3),), T0),  # type: ignore[arg-type]
        Status("st-1", T0, bus_utilisation={"b": 2.0}),
        Status("st-1", T0, extra={1: 2}),  # type: ignore[dict-item]
        Event("st-1", T0, 1, "BAD KIND", "m"),
    ],
)
def test_encode_refuses_invalid_messages(msg: Message) -> None:
    with pytest.raises(WireFormatError):
        encode(msg)


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(WireFormatError, match="not a wire message"):
        encode(Reading(1, T0, "w01001", 1.0))  # type: ignore[arg-type]


def test_from_json_obj_reports_bad_input() -> None:
    with pytest.raises(WireFormatError, match="bad JSON message"):
        from_json_obj({"k": "nope"})


# ---------------------------------------------------------------------------- robustness

wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _decode_or_wire_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except WireFormatError as e:
        assert e.reason
    else:
        assert encode(msg)  # anything decode accepts, encode accepts too


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    _decode_or_wire_error(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_bytes_decode_or_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    buf = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and buf:
            del buf[i]
        elif op == "cut":
            del buf[i:]
    _decode_or_wire_error(bytes(buf))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_fields_decode_or_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    obj: dict[str, Any] = wire_of(msg)
    key = data.draw(st.sampled_from(sorted(obj)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        obj[key] = data.draw(wire_values)
    elif action == "delete":
        del obj[key]
    else:
        obj[data.draw(st.text(max_size=8))] = data.draw(wire_values)
    _decode_or_wire_error(pack(obj))


def test_deep_nesting_is_a_wire_error() -> None:
    data = b"\x91" * 100_000 + b"\x00"
    assert "not msgpack" in reason_of(data)


# ---------------------------------------------------------------------------- v2: streams, nacks


def test_stream_zero_encodes_as_v1_and_a_stream_as_v2() -> None:
    v1 = example_batch()
    assert wire_of(v1)["v"] == 1
    assert "stream" not in wire_of(v1)
    v2 = dataclasses.replace(v1, stream=12345)
    w = wire_of(v2)
    assert (w["v"], w["stream"]) == (2, 12345)
    assert list(w)[:4] == ["v", "k", "station", "stream"]
    assert decode_batch(encode(v2)) == v2
    assert "stream" not in to_json_obj(v1)
    assert to_json_obj(v2)["stream"] == 12345


def test_v2_needs_a_stream_and_v1_has_none() -> None:
    w = wire_of(dataclasses.replace(example_batch(), stream=7))
    w["stream"] = 0
    assert "field 'stream' = 0 is out of range 1.." in reason_of(pack(w))
    del w["stream"]
    assert "missing field(s) 'stream'" in reason_of(pack(w))
    w1 = wire_of(example_batch()) | {"stream": 7}
    assert "unknown field(s) 'stream'" in reason_of(pack(w1))


def test_v2_seqs_are_bounded_by_max_seq() -> None:
    big = Batch.from_columns(
        "st-1", 1, T0, seq=[MAX_SEQ + 1], ts_ms=[T0], code=["w01001"], values=[1.0], stream=9
    )
    with pytest.raises(WireFormatError, match="out of range 1"):
        encode(big)
    ok = dataclasses.replace(big, seq=(MAX_SEQ,))
    assert decode_batch(encode(ok)).last_seq == MAX_SEQ
    # v1 keeps its documented bounds (the collector applies MAX_SEQ to v1 at ingest)
    v1 = dataclasses.replace(big, seq=(U63,), stream=0)
    assert decode_batch(encode(v1)).last_seq == U63
    with pytest.raises(WireFormatError, match="not a valid range"):
        encode(ResendRequest("st-1", ((1, MAX_SEQ + 1),), T0, stream=9))
    with pytest.raises(WireFormatError, match="not a valid range"):
        encode(ResendRequest("st-1", ((0, 5),), T0, stream=9))


def test_counts_are_capped_in_both_versions() -> None:
    many = tuple((2 * i + 1, 2 * i + 1) for i in range(MAX_RANGES + 1))
    for stream in (0, 5):
        with pytest.raises(WireFormatError, match=f"above the maximum {MAX_RANGES}"):
            encode(ResendRequest("st-1", many, T0, stream=stream))
        assert decode_resend(encode(ResendRequest("st-1", many[:-1], T0, stream=stream)))
    n = MAX_BATCH_READINGS + 1
    huge = Batch.from_columns(
        "st-1", 1, T0, seq=range(1, n + 1), ts_ms=[T0] * n, code=["w01001"] * n, values=[1.0] * n
    )
    with pytest.raises(WireFormatError, match=f"out of range 0..{MAX_BATCH_READINGS}"):
        encode(huge)


@pytest.mark.parametrize("bad", ["a\x00b", "\x1b[31m", "x\ry", "\x7f"])
def test_text_fields_refuse_control_characters(bad: str) -> None:
    for msg in (
        Event("st-1", T0, 1, "note", bad),
        Status("st-1", T0, agent_version=bad),
        Status("st-1", T0, extra={"k": bad}),
        Status("st-1", T0, extra={bad: 1}),
        ResendRequest("st-1", ((1, 2),), T0, reason=bad),
    ):
        with pytest.raises(WireFormatError, match="control character"):
            encode(msg)
    # tab and newline are text
    assert decode_event(encode(Event("st-1", T0, 1, "note", "a\tb\nc"))).message == "a\tb\nc"


def test_nack_is_v2_only_and_event_is_v1_only() -> None:
    nack = Nack("st-1", 77, 3, 10, 20, NackReason.CONFLICT, ((12, 14),), T0, "differs")
    w = wire_of(nack)
    assert (w["v"], w["k"], w["reason"]) == (2, "nack", "conflict")
    w["v"] = 1
    assert "a nack is a v2 message" in reason_of(pack(w))
    e = wire_of(Event("st-1", T0, 1, "note", "m")) | {"v": 2}
    assert "an event is a v1 message" in reason_of(pack(e))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ranges": []}, "no ranges rejected"),
        ({"ranges": [[5, 6]]}, "ranges fall outside first..last"),
        ({"reason": "because"}, "unknown nack reason 'because'"),
        ({"stream": 0}, "out of range 1.."),
        ({"detail": "x" * 257}, "'detail' must be 0..256 characters"),
    ],
)
def test_nack_errors(changes: dict[str, Any], reason: str) -> None:
    nack = Nack("st-1", 77, 3, 10, 20, NackReason.TIMESTAMP, ((12, 14),), T0)
    assert reason in reason_of(mutate(nack, **changes))


def test_stream_ids_and_range_counts() -> None:
    ids = {new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(1 <= i <= U63 for i in ids)
    assert range_count(()) == 0
    assert range_count(((1, 1), (5, 9))) == 6
    assert range_count(((1, MAX_SEQ),)) == MAX_SEQ

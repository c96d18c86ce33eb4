from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanduan.shared.config import parse_model
from sanduan.shared.errors import ConfigError
from sanduan.shared.model import Flag
from sanduan.shared.registers import (
    ByteOrder,
    DeviceProfile,
    RegisterSpec,
    RegType,
    Role,
    builtin_profiles,
    decode_registers,
    encode_value,
    load_profile,
    plan_reads,
    profile_from_mapping,
)


def spec(
    rtype: RegType | str = RegType.FLOAT32,
    order: ByteOrder | str = ByteOrder.ABCD,
    **kw: Any,
) -> RegisterSpec:
    data: dict[str, Any] = {
        "name": "x",
        "code": "w01001",
        "address": 0,
        "type": rtype,
        "order": order,
    }
    data.update(kw)
    return parse_model(RegisterSpec, data, "<test>")


# (type, order, value, registers as read from the wire)
GOLDEN: list[tuple[str, str, float, list[int]]] = [
    ("float32", "ABCD", 1.0, [0x3F80, 0x0000]),
    ("float32", "CDAB", 1.0, [0x0000, 0x3F80]),
    ("float32", "BADC", 1.0, [0x803F, 0x0000]),
    ("float32", "DCBA", 1.0, [0x0000, 0x803F]),
    ("float32", "ABCD", -2.5, [0xC020, 0x0000]),
    ("float32", "DCBA", 123.456, [0x79E9, 0xF642]),  # 0x42F6E979
    ("int32", "ABCD", -2, [0xFFFF, 0xFFFE]),
    ("int32", "CDAB", 0x12345678, [0x5678, 0x1234]),
    ("int32", "BADC", 0x12345678, [0x3412, 0x7856]),
    ("int32", "DCBA", 0x12345678, [0x7856, 0x3412]),
    ("uint32", "ABCD", 0xDEADBEEF, [0xDEAD, 0xBEEF]),
    ("uint32", "CDAB", 0xDEADBEEF, [0xBEEF, 0xDEAD]),
    ("uint32", "BADC", 0xDEADBEEF, [0xADDE, 0xEFBE]),
    ("uint32", "DCBA", 0xDEADBEEF, [0xEFBE, 0xADDE]),
    ("int16", "ABCD", -2, [0xFFFE]),
    ("int16", "CDAB", 0x1234, [0x1234]),
    ("int16", "BADC", 0x1234, [0x3412]),
    ("int16", "DCBA", -2, [0xFEFF]),
    ("uint16", "ABCD", 0xABCD, [0xABCD]),
    ("uint16", "CDAB", 0xABCD, [0xABCD]),
    ("uint16", "BADC", 0xABCD, [0xCDAB]),
    ("uint16", "DCBA", 0xABCD, [0xCDAB]),
]


@pytest.mark.parametrize(("rtype", "order", "value", "regs"), GOLDEN)
def test_golden_decode_and_encode(rtype: str, order: str, value: float, regs: list[int]) -> None:
    s = spec(rtype, order)
    assert s.width == len(regs)
    decoded = decode_registers(regs, s)
    if rtype == "float32":
        assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert decoded == value
    assert encode_value(value, s) == regs


def test_width_per_type() -> None:
    assert {t: spec(t).width for t in RegType} == {
        RegType.INT16: 1,
        RegType.UINT16: 1,
        RegType.INT32: 2,
        RegType.UINT32: 2,
        RegType.FLOAT32: 2,
    }


def test_scale_and_offset() -> None:
    s = spec("uint16", scale=0.001)
    assert decode_registers([8123], s) == pytest.approx(8.123)
    assert encode_value(8.123, s) == [8123]
    t = spec("int16", scale=0.1, offset=-40.0)
    assert decode_registers([0x0190], t) == pytest.approx(0.0)  # 400 * 0.1 - 40
    assert encode_value(0.0, t) == [400]


def test_sentinels_decode_to_nan() -> None:
    f = spec("float32", "DCBA", sentinels=[0x7FC00000, 0xFFFFFFFF, -9999.0])
    assert math.isnan(decode_registers([0xFFFF, 0xFFFF], f))
    assert math.isnan(decode_registers([0x0000, 0xC07F], f))  # 0x7FC00000 in DCBA
    assert math.isnan(decode_registers(encode_value(-9999.0, f), f))
    assert encode_value(math.nan, f) == [0x0000, 0xC07F]
    i = spec("int16", sentinels=[-9999], scale=0.01)
    assert math.isnan(decode_registers([(-9999) & 0xFFFF], i))
    assert decode_registers([(-9998) & 0xFFFF], i) == pytest.approx(-99.98)
    assert encode_value(math.nan, i) == [(-9999) & 0xFFFF]
    # a float32 NaN that is not a listed sentinel is still NaN
    assert math.isnan(decode_registers([0x7FC0, 0x0001], spec("float32")))


def test_encode_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(70000, spec("uint16"))
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(-1, spec("uint32"))
    with pytest.raises(ValueError, match="no encoding"):
        encode_value(math.nan, spec("int16"))
    with pytest.raises(ValueError, match="float32"):
        encode_value(1e300, spec("float32"))


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_registers([1], spec("float32"))


@given(
    rtype=st.sampled_from(list(RegType)),
    order=st.sampled_from(list(ByteOrder)),
    words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_roundtrip_registers(rtype: RegType, order: ByteOrder, words: list[int]) -> None:
    """encode(decode(regs)) == regs for every non-NaN bit pattern, every type and order."""
    s = spec(rtype, order)
    regs = words[: s.width]
    value = decode_registers(regs, s)
    if math.isnan(value):
        return
    assert encode_value(value, s) == regs


@given(
    rtype=st.sampled_from([RegType.INT16, RegType.UINT16, RegType.INT32, RegType.UINT32]),
    order=st.sampled_from(list(ByteOrder)),
    raw=st.integers(-(2**31), 2**32 - 1),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.0001, 2.0]),
    offset=st.sampled_from([0.0, -40.0, 273.15]),
)
def test_roundtrip_scaled_values(
    rtype: RegType, order: ByteOrder, raw: int, scale: float, offset: float
) -> None:
    s = spec(rtype, order, scale=scale, offset=offset)
    bits = 16 * s.width
    signed = rtype in (RegType.INT16, RegType.INT32)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    raw = min(max(raw, lo), hi)
    value = raw * scale + offset
    regs = encode_value(value, s)
    assert len(regs) == s.width
    assert decode_registers(regs, s) == pytest.approx(value, rel=1e-12, abs=1e-9)


@given(
    order=st.sampled_from(list(ByteOrder)),
    value=st.floats(width=32, allow_nan=False, allow_infinity=True),
)
def test_roundtrip_float32_values(order: ByteOrder, value: float) -> None:
    s = spec(RegType.FLOAT32, order)
    assert decode_registers(encode_value(value, s), s) == value


def test_float32_matches_struct() -> None:
    s = spec("float32", "ABCD")
    hi, lo = struct.unpack(">HH", struct.pack(">f", 7.25))
    assert encode_value(7.25, s) == [hi, lo]


# -- profiles ---------------------------------------------------------------------------------


def test_builtin_profiles() -> None:
    profiles = builtin_profiles()
    assert {"sonde-multi", "nh3n-analyzer", "tp-analyzer", "codmn-analyzer"} <= set(profiles)
    sonde = profiles["sonde-multi"]
    assert set(sonde.codes) >= {"w01001", "w01009", "w01010", "w01014", "w01003"}
    assert all(s.order is ByteOrder.DCBA and s.function == 3 for s in sonde.values)
    for name in ("nh3n-analyzer", "tp-analyzer", "codmn-analyzer"):
        p = profiles[name]
        assert p.result_time is not None, name
        assert any(s.role is Role.STATUS for s in p.registers), name
    # the builtin set exercises every type and every byte order
    specs = [s for p in profiles.values() for s in p.registers]
    assert {s.type for s in specs} == set(RegType)
    assert {s.order for s in specs} == set(ByteOrder)
    assert {s.function for s in specs} == {3, 4}
    assert any(s.type in (RegType.INT16, RegType.UINT16) and s.scale != 1 for s in specs)


def test_specs_and_profiles_are_hashable() -> None:
    p = load_profile("nh3n-analyzer")
    index = {s: s.name for s in p.registers}
    assert index[p.register("status")] == "status"
    assert hash(p) == hash(p.replace())


def test_tp_status_flags() -> None:
    status = load_profile("tp-analyzer").register("status")
    assert [status.flag_for(r) for r in range(5)] == [Flag.N, Flag.N, Flag.C, Flag.M, Flag.D]
    assert status.flag_for(99) is Flag.D
    assert status.applies("w21011")


def test_load_profile_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\nslave = 5\n[serial]\nbaudrate = 19200\nparity = "E"\n'
        '[[registers]]\nname = "ph"\ncode = "w01001"\naddress = 0x10\ntype = "int16"\n'
        "scale = 0.01\n",
        encoding="utf-8",
    )
    p = load_profile(path)
    assert (p.name, p.slave, p.serial.baudrate, p.serial.parity) == ("mine", 5, 19200, "E")
    assert p.serial.bits_per_char == 11
    assert p.register("w01001").address == 0x10


def test_unknown_builtin_profile() -> None:
    with pytest.raises(ConfigError) as e:
        load_profile("no-such-device")
    assert e.value.key == "no-such-device"
    assert "sonde-multi" in e.value.reason


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    assert e.value.file == str(path)
    assert "TOML" in e.value.reason


def _inline(**reg: Any) -> dict[str, Any]:
    base = {"name": "ph", "code": "w01001", "address": 0, "type": "float32"}
    base.update(reg)
    return {"name": "inline", "registers": [base]}


@pytest.mark.parametrize(
    ("reg", "key", "reason"),
    [
        ({"type": "float64"}, "registers[0].type", "float32"),
        ({"order": "ABDC"}, "registers[0].order", "ABCD"),
        ({"function": 6}, "registers[0].function", "3"),
        ({"code": "pH"}, "registers[0].code", "HJ 212"),
        ({"code": None}, "registers[0]", "needs a parameter code"),
        ({"scale": 0}, "registers[0].scale", "non-zero"),
        ({"sentinels": [70000], "type": "int16"}, "registers[0]", "does not fit"),
        ({"role": "status", "code": None, "type": "uint16"}, "registers[0]", "flags"),
        ({"bogus": 1}, "registers[0].bogus", "unknown key"),
        (
            {"role": "status", "code": None, "type": "uint16", "flags": {"x": "N"}},
            "registers[0].flags",
            "a key must be an integer, not a string",
        ),
        (
            {"role": "status", "code": None, "type": "uint16", "flags": {"0": "Q"}},
            "registers[0].flags",
            "a value must be one of 'N',",
        ),
    ],
)
def test_inline_map_errors(reg: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        profile_from_mapping(_inline(**reg), "station.toml", "devices[1]")
    assert e.value.file == "station.toml"
    assert e.value.key == f"devices[1].{key}"
    assert reason in e.value.reason


def test_profile_level_errors() -> None:
    regs = [
        {"name": "a", "code": "w01001", "address": 0},
        {"name": "b", "code": "w01009", "address": 1},
    ]
    with pytest.raises(ConfigError, match="overlap"):
        profile_from_mapping({"name": "p", "registers": regs}, "s.toml")
    with pytest.raises(ConfigError, match="slave"):
        profile_from_mapping({"name": "p", "slave": 300, "registers": regs[:1]}, "s.toml")
    with pytest.raises(ConfigError, match="mapped twice"):
        profile_from_mapping(
            {"name": "p", "registers": [regs[0], {**regs[1], "code": "w01001", "address": 2}]},
            "s.toml",
        )


def test_inline_map_with_status() -> None:
    p = profile_from_mapping(
        {
            "name": "inline",
            "registers": [
                {"name": "tp", "code": "w21011", "address": 0, "type": "uint16", "scale": 0.001},
                {
                    "name": "st",
                    "role": "status",
                    "address": 1,
                    "type": "uint16",
                    "flags": {"0": "N", "2": "C"},
                },
            ],
        },
        "station.toml",
    )
    assert isinstance(p, DeviceProfile)
    assert p.register("st").flags == {0: Flag.N, 2: Flag.C}
    assert p.register("st").flag_for(7) is Flag.D


def test_read_plan() -> None:
    sonde = load_profile("sonde-multi")
    assert [(b.function, b.address, b.count) for b in sonde.read_plan()] == [
        (3, 0x2601, 10),
        (3, 0x260D, 2),
    ]
    assert [(b.address, b.count) for b in sonde.read_plan(max_gap=2)] == [(0x2601, 14)]
    tp = load_profile("tp-analyzer")
    plan = tp.read_plan()
    assert [(b.function, b.address, b.count) for b in plan] == [(3, 0, 1), (4, 0x10, 4)]
    regs = encode_value(0.0123, tp.register("tp")) + encode_value(
        1_700_000_000, tp.register("result_time")
    )
    decoded = plan[1].decode(regs)
    assert decoded["tp"] == pytest.approx(0.0123)
    assert decoded["result_time"] == 1_700_000_000
    small = plan_reads(sonde.registers, max_count=4)
    assert all(b.count <= 4 for b in small)
    assert sum(len(b.registers) for b in small) == len(sonde.registers)

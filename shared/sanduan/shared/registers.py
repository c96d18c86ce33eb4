"""Modbus register maps as data: register specs, device profiles, and the pure codecs.

Both sides of the serial line use this module: the edge agent decodes what a device answers
(:func:`decode_registers`), the hardware-in-the-loop rig encodes what a simulated device serves
(:func:`encode_value`). A device profile is a TOML file; the builtin ones live in
``sanduan/shared/data/profiles``. A station configuration may also carry a register map inline
and pass it to :func:`profile_from_mapping`.

Byte and word order name the four bytes of a 32-bit value ``A B C D`` (most significant first)
in the order they travel on the wire, two bytes per register:

====== ========================= =================================
order  32-bit registers           16-bit register
====== ========================= =================================
ABCD   ``[AB, CD]`` (big endian)  ``AB``
CDAB   ``[CD, AB]`` (word swap)   ``AB``
BADC   ``[BA, DC]`` (byte swap)   ``BA``
DCBA   ``[DC, BA]`` (little)      ``BA``
====== ========================= =================================

A decoded value is ``raw * scale + offset``. Sentinels are compared with the raw bit pattern,
after the byte/word order has been undone: a non-negative integer is a bit pattern
(``0xFFFFFFFF``, ``0x7FC00000``), a negative integer or any float is a raw *value* of the
register's type (``-9999`` for an int16, ``-9999.0`` for a float32). A sentinel decodes to NaN,
and so does a float32 NaN.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta, field

from sanduan.shared import DATA
from sanduan.shared.config import FieldError, Section, parse_model
from sanduan.shared.errors import ConfigError
from sanduan.shared.model import Flag

__all__ = [
    "ByteOrder",
    "DeviceProfile",
    "ReadBlock",
    "RegType",
    "RegisterSpec",
    "Role",
    "SerialDefaults",
    "builtin_profiles",
    "decode_registers",
    "encode_value",
    "load_profile",
    "plan_reads",
    "profile_from_mapping",
]

MAX_READ_COUNT = 125  # Modbus limit for FC03/FC04
_CODE_RE = re.compile(r"^[a-z]\d{5}$")


class RegType(enum.StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"


class ByteOrder(enum.StrEnum):
    """Byte and word order of a register value on the wire (see the module docstring)."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class Role(enum.StrEnum):
    VALUE = "value"  # a measured value of parameter ``code``
    STATUS = "status"  # device state; raw -> data flag for all (or ``applies_to``) values
    QUALITY = "quality"  # per-value quality code; raw -> data flag
    RESULT_TIME = "result_time"  # the analyzer's own result time, Unix seconds after scaling


_WIDTH = {
    RegType.INT16: 1,
    RegType.UINT16: 1,
    RegType.INT32: 2,
    RegType.UINT32: 2,
    RegType.FLOAT32: 2,
}
_BYTE_SWAPPED = frozenset({ByteOrder.BADC, ByteOrder.DCBA})
_INT_TYPES = frozenset({RegType.INT16, RegType.UINT16, RegType.INT32, RegType.UINT32})


def _swap16(word: int) -> int:
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def _int_range(rtype: RegType) -> tuple[int, int]:
    bits = 16 * _WIDTH[rtype]
    if rtype in (RegType.INT16, RegType.INT32):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _float_bits(value: float) -> int:
    bits: int = struct.unpack(">I", struct.pack(">f", value))[0]
    return bits


class RegisterSpec(Section, frozen=True, kw_only=True, dict=True):
    """One register (or register pair) of a device.

    ``flags`` maps a raw status/quality value to the HJ 212 flag it puts on the device's values
    (all of them, or only the codes in ``applies_to``); a raw value not in ``flags`` gives
    ``default_flag``.
    """

    name: Annotated[str, Meta(min_length=1)]
    code: str | None = None
    address: Annotated[int, Meta(ge=0, le=0xFFFF)]
    function: Literal[3, 4] = 3
    type: RegType = RegType.FLOAT32
    order: ByteOrder = ByteOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    sentinels: tuple[int | float, ...] = ()
    role: Role = Role.VALUE
    flags: dict[int, Flag] = field(default_factory=dict)
    default_flag: Flag = Flag.D
    applies_to: tuple[str, ...] | None = None
    unit: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.code is not None and not _CODE_RE.match(self.code):
            raise FieldError("code", f"not an HJ 212 factor code (like w01001): {self.code!r}")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise FieldError("scale", "scale must be finite and non-zero")
        if self.address + self.width > 0x10000:
            raise ValueError(f"address {self.address:#x} + width {self.width} exceeds 0xFFFF")
        if self.role is Role.VALUE and self.code is None:
            raise ValueError("a value register needs a parameter code")
        if self.role is not Role.VALUE and self.code is not None:
            raise ValueError(f"a {self.role.value} register has no parameter code")
        if self.role in (Role.STATUS, Role.QUALITY):
            if self.type not in _INT_TYPES:
                raise ValueError(f"a {self.role.value} register must have an integer type")
            if not self.flags:
                raise ValueError(f"a {self.role.value} register needs a flags mapping")
        elif self.flags:
            raise ValueError("flags only apply to status and quality registers")
        if self.applies_to is not None and self.role not in (Role.STATUS, Role.QUALITY):
            raise ValueError("applies_to only applies to status and quality registers")
        if self.role is Role.RESULT_TIME and self.type not in (RegType.UINT32, RegType.INT32):
            raise ValueError("a result_time register must be uint32 or int32 (Unix seconds)")
        for s in self.sentinels:
            self._sentinel_bits(s)  # raises ValueError when it does not fit

    def __hash__(self) -> int:  # ``flags`` is a dict; hash on what identifies the register
        return hash((self.name, self.code, self.address, self.function, self.type, self.order))

    @property
    def width(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return _WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.width

    def _sentinel_bits(self, s: int | float) -> int:
        bits = 16 * self.width
        if self.type is RegType.FLOAT32:
            if isinstance(s, int) and s >= 0:
                if s >= 1 << 32:
                    raise ValueError(f"sentinel {s:#x} does not fit 32 bits")
                return s
            return _float_bits(float(s))
        if isinstance(s, float):
            if not s.is_integer():
                raise ValueError(f"sentinel {s} of an integer register must be an integer")
            s = int(s)
        lo, _ = _int_range(self.type)
        if s < lo or s >= 1 << bits:
            raise ValueError(f"sentinel {s} does not fit {self.type.value}")
        return s & ((1 << bits) - 1)

    @functools.cached_property
    def sentinel_bits(self) -> frozenset[int]:
        """Raw bit patterns (byte/word order undone) that decode to NaN."""
        return frozenset(self._sentinel_bits(s) for s in self.sentinels)

    def flag_for(self, raw: int) -> Flag:
        """The data flag a status/quality raw value stands for."""
        return self.flags.get(raw, self.default_flag)

    def applies(self, code: str) -> bool:
        """Whether this status/quality register's flag applies to parameter ``code``."""
        return self.applies_to is None or code in self.applies_to


def _bits_from_regs(regs: Sequence[int], spec: RegisterSpec) -> int:
    order = spec.order
    if spec.width == 1:
        if len(regs) != 1:
            raise ValueError(f"{spec.name}: {spec.type.value} needs 1 register, got {len(regs)}")
        w = regs[0] & 0xFFFF
        return _swap16(w) if order in _BYTE_SWAPPED else w
    if len(regs) != 2:
        raise ValueError(f"{spec.name}: {spec.type.value} needs 2 registers, got {len(regs)}")
    r0, r1 = regs[0] & 0xFFFF, regs[1] & 0xFFFF
    if order is ByteOrder.ABCD:
        return (r0 << 16) | r1
    if order is ByteOrder.CDAB:
        return (r1 << 16) | r0
    if order is ByteOrder.BADC:
        return (_swap16(r0) << 16) | _swap16(r1)
    return (_swap16(r1) << 16) | _swap16(r0)  # DCBA


def _regs_from_bits(bits: int, spec: RegisterSpec) -> list[int]:
    order = spec.order
    if spec.width == 1:
        return [_swap16(bits) if order in _BYTE_SWAPPED else bits]
    hi, lo = (bits >> 16) & 0xFFFF, bits & 0xFFFF
    if order is ByteOrder.ABCD:
        return [hi, lo]
    if order is ByteOrder.CDAB:
        return [lo, hi]
    if order is ByteOrder.BADC:
        return [_swap16(hi), _swap16(lo)]
    return [_swap16(lo), _swap16(hi)]  # DCBA


def decode_raw(regs: Sequence[int], spec: RegisterSpec) -> float | int:
    """The raw value of the register's type (no sentinel check, no scale/offset)."""
    bits = _bits_from_regs(regs, spec)
    rtype = spec.type
    if rtype is RegType.FLOAT32:
        raw: float = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
        return raw
    if rtype is RegType.INT16 and bits & 0x8000:
        return bits - 0x10000
    if rtype is RegType.INT32 and bits & 0x80000000:
        return bits - 0x100000000
    return bits


def decode_registers(regs: Sequence[int], spec: RegisterSpec) -> float:
    """Decode ``spec.width`` registers (as read, in wire order) to a value; sentinels give NaN."""
    bits = _bits_from_regs(regs, spec)
    if bits in spec.sentinel_bits:
        return math.nan
    rtype = spec.type
    raw: float | int
    if rtype is RegType.FLOAT32:
        raw = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
    elif rtype is RegType.INT16 and bits & 0x8000:
        raw = bits - 0x10000
    elif rtype is RegType.INT32 and bits & 0x80000000:
        raw = bits - 0x100000000
    else:
        raw = bits
    if spec.scale == 1.0 and spec.offset == 0.0:
        return float(raw)
    return raw * spec.scale + spec.offset


def encode_value(value: float, spec: RegisterSpec) -> list[int]:
    """Encode ``value`` as the device would put it in its registers (the inverse of decoding).

    NaN encodes as the first sentinel (a float32 without sentinels: the quiet NaN 0x7FC00000).
    Raises ValueError when the value does not fit the register type, or is NaN for an integer
    register without a sentinel.
    """
    if math.isnan(value):
        if spec.sentinels:
            bits = spec._sentinel_bits(spec.sentinels[0])
        elif spec.type is RegType.FLOAT32:
            bits = 0x7FC00000
        else:
            raise ValueError(f"{spec.name}: NaN has no encoding (no sentinel) in {spec.type.value}")
        return _regs_from_bits(bits, spec)
    raw = (value - spec.offset) / spec.scale
    if spec.type is RegType.FLOAT32:
        try:
            bits = _float_bits(raw)
        except OverflowError:
            raise ValueError(f"{spec.name}: {value} does not fit float32") from None
    else:
        if not math.isfinite(raw):
            raise ValueError(f"{spec.name}: {value} does not fit {spec.type.value}")
        iv = round(raw)
        lo, hi = _int_range(spec.type)
        if not lo <= iv <= hi:
            raise ValueError(f"{spec.name}: {value} (raw {iv}) does not fit {spec.type.value}")
        bits = iv & ((1 << (16 * spec.width)) - 1)
    return _regs_from_bits(bits, spec)


def encode_nan(spec: RegisterSpec) -> list[int]:
    """What a device puts in a register that has no valid value: a sentinel, NaN or all ones."""
    try:
        return encode_value(math.nan, spec)
    except ValueError:
        return [0xFFFF] * spec.width


class SerialDefaults(Section, frozen=True, kw_only=True):
    """A device's factory serial settings."""

    baudrate: Annotated[int, Meta(gt=0)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        """Bits a character takes on the line: start + data + parity + stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One FC03/FC04 request that covers one or more registers of a profile."""

    function: int
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]

    def decode(self, regs: Sequence[int]) -> dict[str, float]:
        """Decode the block's registers (as returned by the read) to ``{register name: value}``."""
        if len(regs) != self.count:
            raise ValueError(f"block {self.address:#x}+{self.count}: got {len(regs)} registers")
        out: dict[str, float] = {}
        for spec in self.registers:
            i = spec.address - self.address
            out[spec.name] = decode_registers(regs[i : i + spec.width], spec)
        return out


def plan_reads(
    registers: Sequence[RegisterSpec], max_count: int = MAX_READ_COUNT, max_gap: int = 0
) -> list[ReadBlock]:
    """Group registers into as few reads as possible, per function code.

    Registers join a block when the hole between them is at most ``max_gap`` registers (a device
    may refuse to read unmapped addresses, so the default reads no holes) and the block stays
    within ``max_count`` registers.
    """
    blocks: list[ReadBlock] = []
    for fc in (3, 4):
        specs = sorted((s for s in registers if s.function == fc), key=lambda s: s.address)
        cur: list[RegisterSpec] = []
        start = end = 0
        for s in specs:
            if cur and s.address - end <= max_gap and s.end - start <= max_count:
                cur.append(s)
                end = max(end, s.end)
                continue
            if cur:
                blocks.append(ReadBlock(fc, start, end - start, tuple(cur)))
            cur, start, end = [s], s.address, s.end
        if cur:
            blocks.append(ReadBlock(fc, start, end - start, tuple(cur)))
    return blocks


class DeviceProfile(Section, frozen=True, kw_only=True):
    """A device model: its serial defaults, default slave id, poll period and register map."""

    name: Annotated[str, Meta(min_length=1)]
    description: str = ""
    serial: SerialDefaults = field(default_factory=SerialDefaults)
    slave: Annotated[int, Meta(ge=1, le=247)] = 1
    poll_period_s: Annotated[float, Meta(gt=0)] = 10.0
    registers: Annotated[tuple[RegisterSpec, ...], Meta(min_length=1)]

    def __post_init__(self) -> None:
        names: set[str] = set()
        codes: set[str] = set()
        used: dict[tuple[int, int], str] = {}
        for spec in self.registers:
            if spec.name in names:
                raise ValueError(f"duplicate register name {spec.name!r}")
            names.add(spec.name)
            if spec.code is not None:
                if spec.code in codes:
                    raise ValueError(f"parameter {spec.code} is mapped twice")
                codes.add(spec.code)
            for a in range(spec.address, spec.end):
                other = used.setdefault((spec.function, a), spec.name)
                if other != spec.name:
                    raise ValueError(
                        f"registers {other!r} and {spec.name!r} overlap at FC{spec.function:02d} "
                        f"address {a:#06x}"
                    )
        if sum(1 for s in self.registers if s.role is Role.RESULT_TIME) > 1:
            raise ValueError("at most one result_time register")
        for spec in self.registers:
            for code in spec.applies_to or ():
                if code not in codes:
                    raise ValueError(f"{spec.name}: applies_to names unmapped parameter {code}")

    def __hash__(self) -> int:
        return hash((self.name, self.slave, self.registers))

    @property
    def values(self) -> tuple[RegisterSpec, ...]:
        """The value registers (one per parameter code)."""
        return tuple(s for s in self.registers if s.role is Role.VALUE)

    @property
    def flag_registers(self) -> tuple[RegisterSpec, ...]:
        """The status and quality registers."""
        return tuple(s for s in self.registers if s.role in (Role.STATUS, Role.QUALITY))

    @property
    def result_time(self) -> RegisterSpec | None:
        return next((s for s in self.registers if s.role is Role.RESULT_TIME), None)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(s.code for s in self.values if s.code is not None)

    def register(self, name_or_code: str) -> RegisterSpec:
        """The register with this name, or the value register of this parameter code."""
        for s in self.registers:
            if name_or_code in (s.name, s.code):
                return s
        raise KeyError(f"profile {self.name}: no register {name_or_code!r}")

    def read_plan(self, max_count: int = MAX_READ_COUNT, max_gap: int = 0) -> list[ReadBlock]:
        """The reads that cover every register of the profile (see :func:`plan_reads`)."""
        return plan_reads(self.registers, max_count=max_count, max_gap=max_gap)


def profile_from_mapping(data: Mapping[str, Any], source: str, key: str = "") -> DeviceProfile:
    """Build a profile from a parsed mapping (a TOML file, or a station config's inline map).

    ``source`` names the file and ``key`` the place inside it, for the ConfigError raised when
    the mapping is invalid.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(source, key, "a device profile must be a table")
    return parse_model(DeviceProfile, dict(data), source, key)


def _load_file(path: Path) -> DeviceProfile:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    return profile_from_mapping(data, str(path))


def _profiles_dir() -> Path:
    return DATA / "profiles"


@functools.cache
def builtin_profiles() -> dict[str, DeviceProfile]:
    """The profiles shipped with sanduan, by name."""
    out: dict[str, DeviceProfile] = {}
    for entry in sorted(_profiles_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        source = f"profiles/{entry.name}"
        try:
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"invalid TOML: {exc}") from None
        profile = profile_from_mapping(data, source)
        if profile.name != entry.name.removesuffix(".toml"):
            raise ConfigError(source, "name", f"{profile.name!r} differs from the file name")
        out[profile.name] = profile
    return out


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A builtin profile by name (``"sonde-multi"``) or a profile TOML file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        return _load_file(Path(name_or_path))
    profiles = builtin_profiles()
    try:
        return profiles[text]
    except KeyError:
        known = ", ".join(sorted(profiles))
        raise ConfigError("builtin profiles", text, f"unknown profile; known: {known}") from None

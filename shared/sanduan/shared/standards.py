"""GB 3838-2002 Table 1 as data: typed, validated limits for Class I..V.

The table lives in ``sanduan/shared/data/gb3838.toml``; :func:`gb3838` loads it once.
:func:`parse_standard` validates any text in the same format and raises
:class:`~sanduan.shared.errors.ConfigError` naming the file, the key and the reason.
"""

from __future__ import annotations

import enum
import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sanduan.shared import DATA
from sanduan.shared.errors import ConfigError
from sanduan.shared.model import WaterBody

N_CLASSES = 5
GB3838_FILE = "sanduan/shared/data/gb3838.toml"


class Direction(enum.IntEnum):
    """How an item's limits are read; the integer is the code the grading kernels use."""

    NONE = 0  # no class limits
    UPPER = 1  # value <= limit
    LOWER = 2  # value >= limit (DO)
    RANGE = 3  # min <= value <= max (pH)


@dataclass(frozen=True, slots=True)
class ItemStandard:
    """One item of the table.

    ``limits`` holds the five Class I..V limits for UPPER and LOWER items, ``(min, max)`` for
    RANGE items and nothing for NONE items. ``lake_limits``, when set, replaces ``limits`` for
    lakes and reservoirs.
    """

    name: str
    direction: Direction
    limits: tuple[float, ...]
    lake_limits: tuple[float, ...] | None = None
    unit: str = "mg/L"
    note: str = ""

    def limits_for(self, water_body: WaterBody) -> tuple[float, ...]:
        if water_body == WaterBody.LAKE and self.lake_limits is not None:
            return self.lake_limits
        return self.limits

    def limit(self, grade: int, water_body: WaterBody = WaterBody.RIVER) -> float | None:
        """The Class ``grade`` (1..5) limit, or None for RANGE and NONE items."""
        if self.direction not in (Direction.UPPER, Direction.LOWER):
            return None
        if not 1 <= grade <= N_CLASSES:
            raise ValueError(f"class must be 1..5, got {grade}")
        return self.limits_for(water_body)[grade - 1]


@dataclass(frozen=True, slots=True)
class Standard:
    name: str
    table: str
    items: Mapping[str, ItemStandard]

    def item(self, name: str) -> ItemStandard | None:
        return self.items.get(name)


def _limits(file: str, key: str, raw: object, direction: Direction) -> tuple[float, ...]:
    if not isinstance(raw, list) or len(raw) != N_CLASSES:
        raise ConfigError(file, key, f"expected a list of {N_CLASSES} limits (Class I..V)")
    values: list[float] = []
    for i, x in enumerate(raw):
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ConfigError(file, f"{key}[{i}]", f"limit must be a number, got {x!r}")
        v = float(x)
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(file, f"{key}[{i}]", f"limit must be finite and > 0, got {x!r}")
        values.append(v)
    for i in range(1, N_CLASSES):
        if direction is Direction.UPPER and values[i] < values[i - 1]:
            raise ConfigError(
                file,
                key,
                f"upper limits must not decrease from Class I to V "
                f"(Class {i + 1} {values[i]} < Class {i} {values[i - 1]})",
            )
        if direction is Direction.LOWER and values[i] > values[i - 1]:
            raise ConfigError(
                file,
                key,
                f"lower limits must not increase from Class I to V "
                f"(Class {i + 1} {values[i]} > Class {i} {values[i - 1]})",
            )
    return tuple(values)


def _range(file: str, key: str, raw: object) -> tuple[float, ...]:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
    ):
        raise ConfigError(file, key, "expected [min, max]")
    lo, hi = float(raw[0]), float(raw[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(file, key, f"expected finite min < max, got [{lo}, {hi}]")
    return (lo, hi)


def _item(file: str, name: str, raw: object) -> ItemStandard:
    key = f"items.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(file, key, "expected a table")
    known = {"direction", "limits", "lake_limits", "range", "unit", "note"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(file, f"{key}.{extra[0]}", "unknown key")
    try:
        direction = Direction[str(raw.get("direction", "")).upper()]
    except KeyError:
        raise ConfigError(
            file, f"{key}.direction", "expected one of upper, lower, range, none"
        ) from None
    unit = raw.get("unit", "mg/L")
    note = raw.get("note", "")
    if not isinstance(unit, str) or not isinstance(note, str):
        raise ConfigError(file, key, "unit and note must be strings")
    lake: tuple[float, ...] | None = None
    if direction in (Direction.UPPER, Direction.LOWER):
        if "range" in raw:
            raise ConfigError(file, f"{key}.range", f"not allowed for a {direction.name} item")
        limits = _limits(file, f"{key}.limits", raw.get("limits"), direction)
        if "lake_limits" in raw:
            lake = _limits(file, f"{key}.lake_limits", raw["lake_limits"], direction)
    elif direction is Direction.RANGE:
        for k in ("limits", "lake_limits"):
            if k in raw:
                raise ConfigError(file, f"{key}.{k}", "not allowed for a range item")
        limits = _range(file, f"{key}.range", raw.get("range"))
    else:
        for k in ("limits", "lake_limits", "range"):
            if k in raw:
                raise ConfigError(file, f"{key}.{k}", "not allowed for an item without limits")
        limits = ()
    return ItemStandard(name, direction, limits, lake, unit, note)


def parse_standard(text: str, file: str = "<string>") -> Standard:
    """Parse and validate a standards table in the gb3838.toml format."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML: {e}") from None
    head = doc.get("standard", {})
    if not isinstance(head, dict) or not isinstance(head.get("name"), str):
        raise ConfigError(file, "standard.name", "missing")
    items_raw = doc.get("items")
    if not isinstance(items_raw, dict) or not items_raw:
        raise ConfigError(file, "items", "missing or empty")
    items = {name: _item(file, name, raw) for name, raw in items_raw.items()}
    return Standard(head["name"], str(head.get("table", "")), MappingProxyType(items))


@functools.cache
def gb3838() -> Standard:
    """GB 3838-2002 Table 1, loaded from the package data once."""
    text = (DATA / "gb3838.toml").read_text("utf-8")
    return parse_standard(text, GB3838_FILE)

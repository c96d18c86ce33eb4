from __future__ import annotations

import pytest

from sanduan.shared.errors import ConfigError
from sanduan.shared.model import WaterBody
from sanduan.shared.params import all_parameters
from sanduan.shared.standards import Direction, gb3838, parse_standard

TABLE_1 = {
    "temperature", "pH", "DO", "CODMn", "COD", "BOD5", "NH3-N", "TP", "TN", "Cu", "Zn", "F",
    "Se", "As", "Hg", "Cd", "Cr6", "Pb", "CN", "phenol", "petroleum", "LAS", "S2-",
    "fecal-coliform",
}  # fmt: skip


def test_table_1_has_all_24_basic_items() -> None:
    std = gb3838()
    assert std.name == "GB 3838-2002"
    assert set(std.items) == TABLE_1
    assert len(std.items) == 24


def test_every_item_is_a_registered_parameter() -> None:
    names = {p.name for p in all_parameters()}
    assert set(gb3838().items) <= names


def test_directions() -> None:
    items = gb3838().items
    assert items["DO"].direction is Direction.LOWER
    assert items["pH"].direction is Direction.RANGE
    assert items["pH"].limits == (6.0, 9.0)
    assert items["temperature"].direction is Direction.NONE
    assert items["temperature"].limits == ()
    upper = [n for n, it in items.items() if it.direction is Direction.UPPER]
    assert len(upper) == 21


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("DO", (7.5, 6.0, 5.0, 3.0, 2.0)),
        ("COD", (15.0, 15.0, 20.0, 30.0, 40.0)),
        ("NH3-N", (0.15, 0.5, 1.0, 1.5, 2.0)),
        ("Hg", (0.00005, 0.00005, 0.0001, 0.001, 0.001)),
        ("fecal-coliform", (200.0, 2000.0, 10000.0, 20000.0, 40000.0)),
    ],
)
def test_spot_limits(name: str, limits: tuple[float, ...]) -> None:
    assert gb3838().items[name].limits == limits


def test_tp_has_separate_river_and_lake_limits() -> None:
    tp = gb3838().items["TP"]
    assert tp.limits_for(WaterBody.RIVER) == (0.02, 0.1, 0.2, 0.3, 0.4)
    assert tp.limits_for(WaterBody.LAKE) == (0.01, 0.025, 0.05, 0.1, 0.2)
    assert tp.limit(3, WaterBody.RIVER) == 0.2
    assert tp.limit(3, WaterBody.LAKE) == 0.05
    # Items without lake limits use the same limits for both.
    cod = gb3838().items["COD"]
    assert cod.limits_for(WaterBody.LAKE) == cod.limits_for(WaterBody.RIVER)


def test_limit_is_none_without_class_limits() -> None:
    assert gb3838().items["pH"].limit(3) is None
    assert gb3838().items["temperature"].limit(3) is None
    with pytest.raises(ValueError, match=r"1\.\.5"):
        gb3838().items["COD"].limit(6)


def _doc(item: str) -> str:
    return f'[standard]\nname = "X"\n[items.X]\n{item}\n'


@pytest.mark.parametrize(
    ("item", "key", "reason"),
    [
        ('direction = "upper"\nlimits = [1, 2, 3, 4]', "items.X.limits", "5 limits"),
        ('direction = "upper"\nlimits = [1, 2, 3, 5, 4]', "items.X.limits", "must not decrease"),
        ('direction = "lower"\nlimits = [1, 2, 3, 4, 5]', "items.X.limits", "must not increase"),
        ('direction = "upper"\nlimits = [1, 2, 0, 4, 5]', "items.X.limits[2]", "> 0"),
        ('direction = "upper"\nlimits = [1, 2, "3", 4, 5]', "items.X.limits[2]", "number"),
        ('direction = "upper"\nlimits = [1, 2, 3, 4, inf]', "items.X.limits[4]", "finite"),
        (
            'direction = "upper"\nlimits = [1, 2, 3, 4, 5]\nlake_limits = [1, 1, 1, 1, 0.5]',
            "items.X.lake_limits",
            "must not decrease",
        ),
        ('direction = "range"\nrange = [9, 6]', "items.X.range", "min < max"),
        ('direction = "range"\nlimits = [1, 2, 3, 4, 5]', "items.X.limits", "not allowed"),
        ('direction = "sideways"', "items.X.direction", "expected one of"),
        ('direction = "none"\nlimits = [1, 2, 3, 4, 5]', "items.X.limits", "not allowed"),
        ('direction = "upper"\nlimits = [1, 2, 3, 4, 5]\ncolour = 1', "items.X.colour", "unknown"),
    ],
)
def test_loader_rejects_bad_tables(item: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_standard(_doc(item), "bad.toml")
    assert info.value.file == "bad.toml"
    assert info.value.key == key
    assert reason in info.value.reason


def test_loader_rejects_invalid_toml_and_missing_sections() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_standard("items = [", "bad.toml")
    with pytest.raises(ConfigError) as info:
        parse_standard('[standard]\nname = "X"\n', "bad.toml")
    assert info.value.key == "items"

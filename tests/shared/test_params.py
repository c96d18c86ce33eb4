from __future__ import annotations

import math

import pytest

from sanduan.shared.errors import ConfigError, UnknownParameterError
from sanduan.shared.params import all_parameters, by_code, normalize, parse_registry, resolve

CANONICAL = [
    "pH", "DO", "CODMn", "COD", "BOD5", "NH3-N", "TP", "TN", "Cu", "Zn", "F", "Se", "As", "Hg",
    "Cd", "Cr6", "Pb", "CN", "phenol", "petroleum", "LAS", "S2-", "fecal-coliform", "temperature",
    "conductivity", "turbidity", "chlorophyll",
]  # fmt: skip

CODES = {
    "w01001": "pH", "w01009": "DO", "w01010": "temperature", "w01014": "conductivity",
    "w01003": "turbidity", "w01019": "CODMn", "w01018": "COD", "w01017": "BOD5",
    "w21003": "NH3-N", "w21011": "TP", "w21001": "TN", "w01016": "chlorophyll",
    "w22001": "petroleum", "w23002": "phenol", "w21016": "CN", "w20111": "Hg", "w20115": "Cd",
    "w20117": "Cr6", "w20120": "Pb", "w20122": "Cu", "w20123": "Zn", "w21017": "F",
    "w20128": "Se", "w20141": "As", "w19002": "LAS", "w21019": "S2-", "w02003": "fecal-coliform",
}  # fmt: skip


def test_canonical_names_and_stable_indexes() -> None:
    params = all_parameters()
    assert [p.name for p in params] == CANONICAL
    assert [p.index for p in params] == list(range(len(CANONICAL)))


def test_factor_codes() -> None:
    assert {p.code: p.name for p in all_parameters()} == CODES
    for code, name in CODES.items():
        assert by_code(code).name == name
        assert resolve(code).name == name
    assert by_code("W21003").name == "NH3-N"


def test_21_evaluated_items() -> None:
    evaluated = {p.name for p in all_parameters() if p.evaluated}
    assert len(evaluated) == 21
    table_1 = set(CANONICAL) - {"conductivity", "turbidity", "chlorophyll"}
    assert evaluated == table_1 - {"temperature", "TN", "fecal-coliform"}


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("nh3n", "NH3-N"),
        ("NH3N", "NH3-N"),
        ("nh3-n", "NH3-N"),
        ("NH3_N", "NH3-N"),
        ("w21003", "NH3-N"),
        ("ammonia nitrogen", "NH3-N"),
        ("氨氮", "NH3-N"),
        ("do", "DO"),
        ("Dissolved Oxygen", "DO"),
        ("PH", "pH"),
        ("codmn", "CODMn"),
        ("CODcr", "COD"),
        ("Cr(VI)", "Cr6"),
        ("cr6+", "Cr6"),
        ("s2-", "S2-"),
        ("sulfide", "S2-"),
        ("fecal coliform", "fecal-coliform"),
        ("FecalColiform", "fecal-coliform"),
        ("water temperature", "temperature"),
        ("volatile phenol", "phenol"),
        (" tp ", "TP"),
    ],
)
def test_resolve_aliases(name: str, canonical: str) -> None:
    assert resolve(name).name == canonical


def test_normalize() -> None:
    assert normalize("NH3-N") == normalize("nh3n") == "nh3n"
    assert normalize("Cr(VI)") == "crvi"


def test_unknown_parameter_has_close_match_hint() -> None:
    with pytest.raises(UnknownParameterError) as info:
        resolve("nh3")
    assert info.value.name == "nh3"
    assert "NH3-N" in str(info.value)
    with pytest.raises(UnknownParameterError, match="did you mean 'phenol'"):
        resolve("phenl")


def test_unknown_parameter_without_close_match_lists_known() -> None:
    with pytest.raises(UnknownParameterError, match="known parameters: pH DO"):
        resolve("zzzzzz")
    with pytest.raises(UnknownParameterError):
        by_code("w99999")


def test_physical_range() -> None:
    ph = resolve("pH")
    assert ph.in_physical_range(7.0)
    assert not ph.in_physical_range(14.5)
    assert not ph.in_physical_range(math.nan)
    assert resolve("temperature").in_physical_range(-1.0)
    assert not resolve("DO").in_physical_range(-0.1)
    for p in all_parameters():
        assert p.physical_min < p.physical_max


def _entry(name: str, code: str, extra: str = "") -> str:
    return (
        f'[[parameter]]\nname = "{name}"\ncode = "{code}"\nevaluated = true\n'
        f"physical = [0, 1]\ndecimals = 2\n{extra}\n"
    )


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (_entry("A", "x1"), "parameter[0] (A).code", "HJ 212 code"),
        (_entry("A", "w00001") + _entry("B", "w00001"), "parameter[1].code", "also A"),
        (
            _entry("A", "w00001", 'aliases = ["b"]') + _entry("B", "w00002"),
            "parameter[1] (B)",
            "ambiguous",
        ),
        (
            '[[parameter]]\nname = "A"\ncode = "w00001"\nevaluated = true\nphysical = [1, 0]\n',
            "parameter[0] (A).physical",
            "min < max",
        ),
        (
            '[[parameter]]\nname = "A"\ncode = "w00001"\nevaluated = "yes"\nphysical = [0, 1]\n',
            "parameter[0] (A).evaluated",
            "true or false",
        ),
        (_entry("A", "w00001", "colour = 1"), "parameter[0].colour", "unknown key"),
        ("", "parameter", "one or more"),
    ],
)
def test_registry_loader_rejects_bad_files(text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_registry(text, "params.toml")
    assert info.value.file == "params.toml"
    assert info.value.key == key
    assert reason in info.value.reason

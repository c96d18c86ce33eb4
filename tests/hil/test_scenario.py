"""Scenario files: the bundled ones load; every mistake is a ConfigError naming file, key and
reason; durations; the TOML writer the rig uses for the files it hands out."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sanduan.hil.scenario import (
    COUNTY_KEYS,
    build_scenario,
    bundled_scenarios,
    dump_toml,
    load_scenario,
    parse_duration,
)
from sanduan.shared.errors import ConfigError


def _minimal() -> dict[str, Any]:
    return {
        "scenario": {
            "name": "t",
            "start": "2023-07-01T00:00:00+08:00",
            "days": 2,
            "speed": 1000,
        },
        "county": {"name": "c", "timezone": "Asia/Shanghai"},
        "river": [{"id": "r"}],
        "station": [{"id": "S1"}, {"id": "S2"}],
        "section": [
            {"id": "A", "river": "r", "station": "S1"},
            {"id": "B", "river": "r", "station": "S2"},
        ],
        "town": [
            {"id": "up", "outflow": "A"},
            {"id": "dn", "outflow": "B", "inflow": [{"section": "B", "upstream": "up"}]},
        ],
        "rig": {
            "kit": [
                {
                    "name": "standard",
                    "bus": [
                        {
                            "name": "b1",
                            "device": [
                                {"name": "sonde", "profile": "sonde-multi", "slave": 1},
                                {
                                    "name": "nh3n",
                                    "profile": "nh3n-analyzer",
                                    "slave": 2,
                                    "cycle": "4h",
                                },
                            ],
                        }
                    ],
                }
            ]
        },
    }


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    p = tmp_path / "scenario.toml"
    p.write_text(dump_toml(doc), encoding="utf-8")
    return p


def test_bundled_scenarios_load() -> None:
    names = bundled_scenarios()
    assert {"county", "chaos", "smoke"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.stations
        assert sc.end > sc.start


def test_county_scenario_is_the_seed_county() -> None:
    sc = load_scenario("county")
    county = sc.county_doc
    assert len(county["river"]) >= 2
    assert len(county["town"]) == 6
    sections = county["section"]
    assert len([s for s in sections if s.get("assessed", True)]) == 9
    assert all(1 <= s["target_class"] <= 5 for s in sections)
    upstream = [i for t in county["town"] for i in t.get("inflow", []) if i.get("upstream")]
    assert len(upstream) >= 3  # three-section boundaries between towns
    assert sc.days >= 28
    assert sc.month == "2023-07"
    assert sc.real_duration_s < 120
    # One town degrades the water downstream for part of the month.
    (pollution,) = sc.pollution
    assert pollution.stations == {"CX-ZH-02": 1.0, "CX-KD-01": 0.7, "CX-KD-02": 0.4}
    assert 0 < pollution.duration_s < sc.days * 86_400
    for st in sc.stations:
        sonde = next(d for d in st.devices if d.name == "sonde")
        assert sonde.poll_period_s == 3600 and sonde.analyzer is None
        for d in st.devices:
            if d.analyzer is not None:
                assert d.analyzer.cycle_s == 4 * 3600


def test_minimal_scenario_resolves(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, _minimal()))
    assert [s.id for s in sc.stations] == ["S1", "S2"]
    nh3n = sc.stations[0].devices[1]
    assert nh3n.analyzer is not None and nh3n.analyzer.cycle_s == 14_400
    assert sc.start == 1_688_140_800
    assert set(sc.county_doc) <= set(COUNTY_KEYS)
    assert sc.with_days(0.5).end == sc.start + 43_200


Mutator = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutator:
    def mutate(doc: dict[str, Any]) -> None:
        cur: Any = doc
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur[int(p)] if p.isdigit() else cur[p]
        last = parts[-1]
        if last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value

    return mutate


def _dev(i: int) -> str:
    return f"rig.kit.0.bus.0.device.{i}"


CASES: list[tuple[str, Mutator, str, str]] = [
    ("typo", _set("scenario.sped", 3), "scenario.sped", "unknown key"),
    ("no offset", _set("scenario.start", "2023-07-01T00:00:00"), "scenario.start", "UTC offset"),
    ("bad speed", _set("scenario.speed", 0), "scenario.speed", "greater than 0"),
    (
        "bad duration",
        _set("event", [{"kind": "rain", "start": "2x", "duration": "1h"}]),
        "event[0].start",
        "bad duration",
    ),
    (
        "rain station",
        _set("event", [{"kind": "rain", "start": 0, "duration": "1h", "stations": ["S9"]}]),
        "event[0].stations",
        "unknown station 'S9'",
    ),
    (
        "pollution town",
        _set("event", [{"kind": "pollution", "start": 0, "duration": "1h", "town": "x"}]),
        "event[0].town",
        "unknown town 'x'",
    ),
    ("profile", _set(f"{_dev(0)}.profile", "nope"), "rig.kit[0].bus[0].device[0].profile", "nope"),
    (
        "analyzer without cycle",
        _set(f"{_dev(1)}.cycle", None),
        "rig.kit[0].bus[0].device[1].cycle",
        "is an analyzer",
    ),
    (
        "sonde with cycle",
        _set(f"{_dev(0)}.cycle", "4h"),
        "rig.kit[0].bus[0].device[0].cycle",
        "only analyzers have cycles",
    ),
    (
        "measure too long",
        _set(f"{_dev(1)}.measure", "5h"),
        "rig.kit[0].bus[0].device[1].measure",
        "shorter than cycle",
    ),
    ("slave clash", _set(f"{_dev(1)}.slave", 1), "rig.kit[0].bus[0].device[1].slave", "slave id 1"),
    ("kit", _set("rig.kit.0.name", "micro"), "rig.kit", "no kit named 'standard'"),
    (
        "section station",
        _set("section.1.station", "S7"),
        "section[1].station",
        "unknown station 'S7'",
    ),
    ("signals", _set("signals", {"base": {"NH4": 1.0}}), "signals.base.NH4", "unknown parameter"),
    (
        "fault device",
        _set(
            "fault", [{"kind": "crc", "at": "1h", "duration": "1h", "station": "S1", "device": "x"}]
        ),
        "fault[0].device",
        "has no device 'x'",
    ),
    (
        "fault kind",
        _set("fault", [{"kind": "meteor", "at": "1h"}]),
        "fault[0].kind",
        "Input should be",
    ),
    ("chaos", _set("chaos", {"kills": 0}), "chaos.kills", "greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("mutate", "key", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mistakes_name_file_key_and_reason(
    tmp_path: Path, mutate: Mutator, key: str, reason: str
) -> None:
    doc = copy.deepcopy(_minimal())
    mutate(doc)
    doc = _drop_none(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(path) in str(err.value) and key in str(err.value)


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or bundled scenario"):
        load_scenario(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario\nname = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_scenario(bad)
    assert err.value.file == str(bad)


def test_build_scenario_reports_the_given_source() -> None:
    doc = _minimal()
    del doc["rig"]
    with pytest.raises(ConfigError) as err:
        build_scenario(doc, "inline.toml")
    assert (err.value.file, err.value.key) == ("inline.toml", "rig")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("4h", 14_400.0),
        ("1d6h", 108_000.0),
        ("0.5h", 1800.0),
        ("-2h", -7200.0),
        ("+40m", 2400.0),
        (3600, 3600.0),
        (1.5, 1.5),
        ("1d 2h 3m 4s", 93_784.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "4x", "4h3", "1d-2h", True, None, math.inf])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_dump_toml_round_trips_the_county() -> None:
    sc = load_scenario("county")
    doc = dict(sc.county_doc)
    assert tomllib.loads(dump_toml(doc)) == doc


def test_dump_toml_values() -> None:
    doc = {
        "a": {"s": 'q"uote\\ and\nnewline', "f": 0.1, "i": -3, "b": True, "l": [1, 2]},
        "odd key": {"x.y": 1},
        "arr": [{"k": 1}, {"k": 2, "sub": {"z": "w"}}],
        "skip": None,
    }
    back = tomllib.loads(dump_toml(doc))
    assert back == {k: v for k, v in doc.items() if v is not None}


def test_profile_file_relative_to_the_scenario(tmp_path: Path) -> None:
    from importlib import resources

    src = resources.files("sanduan.shared") / "data" / "profiles" / "sonde-multi.toml"
    text = src.read_text(encoding="utf-8").replace('name = "sonde-multi"', 'name = "my-sonde"')
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "my-sonde.toml").write_text(text, encoding="utf-8")
    doc = _minimal()
    doc["rig"]["kit"][0]["bus"][0]["device"][0]["profile"] = "profiles/my-sonde.toml"
    sc = load_scenario(_write(tmp_path, doc))
    dev = sc.stations[0].devices[0]
    assert dev.profile.name == "my-sonde"
    assert dev.profile_ref == str((tmp_path / "profiles" / "my-sonde.toml").resolve())

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sanduan.central.core.county import build_county, load_county
from sanduan.shared.errors import ConfigError
from sanduan.shared.model import WaterBody

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "county.example.toml"


def test_example_county_loads() -> None:
    c = load_county(EXAMPLE)
    assert len(c.rivers) == 2
    assert len(c.towns) == 6
    assert len(c.assessed_sections) == 9
    assert c.sections["RS-01"].water_body is WaterBody.LAKE
    assert c.downstream_party("xiaolin") == "zonghan"
    assert c.downstream_party("hushan") == "county-fund"
    first = c.boundaries()[0]
    assert (first.upstream_outflow, first.inflow, first.downstream) == (
        "ST-XL-OUT",
        "ST-ZH-IN",
        "ST-ZH-OUT",
    )
    assert c.owner_of("ST-ZH-IN") == "zonghan"
    assert c.owner_of("RS-01") == "xiaolin"
    assert c.monitoring.detection_limits["NH3-N"] == 0.025
    assert c.section_of_station("CX-ST-04") is c.sections["ST-ZH-OUT"]
    assert c.stations["CX-MW-01"].kind == "micro"


def test_package_example_matches_deploy() -> None:
    data = ROOT / "central" / "sanduan" / "central" / "data"
    for name in ("county.example.toml", "rules.example.toml"):
        assert (data / name).read_text("utf-8") == (ROOT / "deploy" / name).read_text("utf-8")


def test_towns_upstream_first() -> None:
    doc = tomllib.loads(EXAMPLE.read_text("utf-8"))
    doc["town"].reverse()
    order = [t.id for t in build_county(doc, "c.toml").towns_upstream_first()]
    for up, down in (("xiaolin", "zonghan"), ("zonghan", "hushan"), ("kandun", "guanhai")):
        assert order.index(up) < order.index(down)


def _doc() -> dict[str, Any]:
    return copy.deepcopy(tomllib.loads(EXAMPLE.read_text("utf-8")))


def _set(path: str, value: object) -> dict[str, Any]:
    doc = _doc()
    node: Any = doc
    parts = path.split("/")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return doc


def _cycle() -> dict[str, Any]:
    doc = _doc()
    # xiaolin now receives hushan's water: xiaolin -> zonghan -> hushan -> xiaolin
    doc["town"][0]["inflow"] = [{"section": "ST-IN", "upstream": "hushan"}]
    return doc


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        (_set("section/1/station", "CX-NOPE"), "section[1] (ST-XL-OUT).station", "unknown station"),
        (_set("section/1/river", "nile"), "section[1] (ST-XL-OUT).river", "unknown river"),
        (_set("section/1/station", "CX-ST-01"), "section[1] (ST-XL-OUT).station", "already serves"),
        (_set("section/1/id", "ST-IN"), "section[1].id", "duplicate id"),
        (_set("town/1/id", "santang"), "town[1].id", "duplicate id 'santang' (also a river)"),
        (_set("town/1/outflow", "NOPE"), "town[1] (zonghan).outflow", "unknown section"),
        (_set("town/1/outflow", None), "town[1] (zonghan).outflow", "needs an outflow"),
        (
            _set("town/1/inflow", [{"section": "ST-ZH-IN", "upstream": "atlantis"}]),
            "town[1] (zonghan).inflow[0].upstream",
            "unknown town",
        ),
        (
            _set("town/1/inflow", [{"section": "ST-ZH-IN", "upstream": "zonghan"}]),
            "town[1] (zonghan).inflow[0].upstream",
            "its own upstream",
        ),
        (
            _set("town/4/inflow", [{"section": "DH-KD-IN", "upstream": "xiaolin"}]),
            "town[4] (kandun).inflow[0].upstream",
            "one receiving town",
        ),
        (_cycle(), "town", "cycle: "),
        (_set("town/1/outflow", "ST-XL-OUT"), "town[1] (zonghan).outflow", "already town"),
        (
            _set("town/1/inflow", [{"section": "ST-HS-IN"}]),
            "town[2] (hushan).inflow[0].section",
            "already an inflow",
        ),
        (_set("section/0/target_class", 6), "section[0].target_class", "less than or equal"),
        (_set("county/timezone", "Mars/Base"), "county.timezone", "unknown time zone"),
        (
            _set("assessment/parameters", ["pH", "XYZ"]),
            "assessment.parameters[1]",
            "unknown parameter",
        ),
        (_set("section/0/owner", "atlantis"), "section[0] (ST-IN).owner", "unknown town"),
        (_set("county/fund", "hushan"), "county.fund", "also a town"),
        (_set("section/0/colour", "blue"), "section[0].colour", "unknown key"),
    ],
)
def test_county_errors_name_file_key_and_reason(doc: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_county(doc, "county.toml")
    assert exc.value.file == "county.toml"
    assert exc.value.key == key
    assert reason in exc.value.reason


def test_cycle_message_names_the_towns() -> None:
    with pytest.raises(ConfigError) as exc:
        build_county(_cycle(), "county.toml")
    cycle = exc.value.reason.split("cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["hushan", "xiaolin", "zonghan"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_county(tmp_path / "none.toml")

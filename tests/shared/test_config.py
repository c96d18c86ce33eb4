from __future__ import annotations

from pathlib import Path

import pytest

from sanduan.shared.config import (
    StationConfig,
    load_central_config,
    load_station_config,
    parse_model,
)
from sanduan.shared.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_station_config_loads() -> None:
    cfg = load_station_config(DEPLOY / "station.example.toml")
    assert cfg.station.id == "CX-GT-01"
    assert [b.name for b in cfg.bus] == ["rs485-1", "rs485-2"]
    assert cfg.bus[0].device[1].profile == "nh3n-analyzer"
    assert cfg.uplink.use_tls and cfg.uplink.port == 8883


def test_example_central_config_loads_and_resolves_paths() -> None:
    cfg = load_central_config(DEPLOY / "central.example.toml")
    assert cfg.mqtt.group == "collectors"
    assert cfg.central.county == DEPLOY / "county.example.toml"


def _station(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {"station": {"id": "S1"}}
    base.update(extra)
    return base


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"station": {"id": "a/b"}}, "station.id", "must be 1-64 characters"),
        ({}, "station", "required key is missing"),
        ({"station": {"id": "S", "colour": 1}}, "station.colour", "unknown key"),
        (
            {"station": {"id": "S", "timezone": "Mars/Base"}},
            "station.timezone",
            "unknown time zone",
        ),
        ({"station": {"id": "S", "target_class": 6}}, "station.target_class", "less than or equal"),
        (
            _station(uplink={"broker": "http://x"}),
            "uplink.broker",
            "mqtt://host:1883",
        ),
        (
            _station(bus=[{"name": "b", "port": "/dev/x", "device": [{"name": "d", "slave": 1}]}]),
            "bus[0].device[0]",
            "exactly one of 'profile'",
        ),
        (
            _station(
                bus=[
                    {"name": "a", "port": "/dev/x"},
                    {"name": "b", "port": "/dev/x"},
                ]
            ),
            "",
            "same serial port",
        ),
        (
            _station(
                bus=[
                    {
                        "name": "a",
                        "port": "/dev/x",
                        "device": [
                            {"name": "d1", "slave": 1, "profile": "p"},
                            {"name": "d2", "slave": 1, "profile": "p"},
                        ],
                    }
                ]
            ),
            "bus[0]",
            "share slave id 1",
        ),
    ],
)
def test_bad_station_config_names_file_key_reason(
    data: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(StationConfig, data, "station.toml")
    err = info.value
    assert err.file == "station.toml"
    assert err.key == key
    assert reason in err.reason
    assert str(err).startswith("station.toml")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_station_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[station\nid=1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_station_config(bad)
    assert info.value.file == str(bad)

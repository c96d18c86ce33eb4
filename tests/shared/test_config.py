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


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (
            _station(uplink={"keepalive_s": "soon"}),
            "uplink.keepalive_s",
            "must be an integer, not a string",
        ),
        (_station(bus={"name": "b"}), "bus", "must be a list, not a table"),
        (
            _station(bus=[{"name": "b", "port": "/dev/x", "parity": "X"}]),
            "bus[0].parity",
            "must be one of 'N', 'E', 'O', not 'X'",
        ),
        (
            _station(bus=[{"name": "b", "port": "/dev/x", "stopbits": 3}]),
            "bus[0].stopbits",
            "must be one of 1, 2, not 3",
        ),
        (
            {"station": {"id": "S", "water_body": "sea"}},
            "station.water_body",
            "must be one of 'river', 'lake', not 'sea'",
        ),
        (
            _station(grading={"stuck_polls": -1}),
            "grading.stuck_polls",
            "greater than or equal to 0",
        ),
        (
            _station(
                hj212=[{"mn": "M1", "password": "p", "name": "a", "address": "h:1", "st": "2"}]
            ),
            "hj212[0].st",
            "must match the pattern",
        ),
        (
            _station(hj212=[{"mn": "M 1", "password": "p", "name": "a", "address": "h:1"}]),
            "hj212[0].mn",
            "must be 1-24 letters",
        ),
        (
            _station(hj212=[{"mn": "M1", "name": "a", "address": "h:1"}]),
            "hj212[0]",
            "exactly one of 'password' or 'password_file'",
        ),
        (
            _station(bus=[{"name": "b", "port": "/dev/x", "device": [{"name": "d", "slave": 0}]}]),
            "bus[0].device[0].slave",
            "greater than or equal to 1",
        ),
    ],
)
def test_msgspec_errors_in_plain_words(data: dict[str, object], key: str, reason: str) -> None:
    """The configuration is validated with msgspec; its messages are put in plain words with
    the key they are about (a field's own check names the field)."""
    with pytest.raises(ConfigError) as info:
        parse_model(StationConfig, data, "station.toml")
    assert (info.value.key, info.value.file) == (key, "station.toml")
    assert reason in info.value.reason


def test_strings_from_the_environment_become_numbers_and_paths() -> None:
    """``${ENV}`` substitution yields strings: a number or a path given that way is taken."""
    cfg = parse_model(
        StationConfig,
        _station(
            uplink={"keepalive_s": "45", "tls": {"ca_file": "ca.pem"}}, buffer={"path": "b.db"}
        ),
        "station.toml",
    )
    assert cfg.uplink.keepalive_s == 45
    assert cfg.uplink.tls is not None and cfg.uplink.tls.ca_file == Path("ca.pem")
    assert cfg.buffer.path == Path("b.db")


def test_replace_gives_a_changed_copy() -> None:
    cfg = parse_model(StationConfig, _station(), "station.toml")
    other = cfg.replace(uplink=cfg.uplink.replace(username="u"))
    assert other.uplink.username == "u" and cfg.uplink.username is None
    assert other.station == cfg.station


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_station_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[station\nid=1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_station_config(bad)
    assert info.value.file == str(bad)

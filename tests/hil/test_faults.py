"""The fault timeline: parsing, validation, seeded chaos, and how device faults are applied."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest

from sanduan.hil.devices import Faults
from sanduan.hil.faults import (
    DEVICE_KINDS,
    PROCESS_KINDS,
    Fault,
    FaultRecord,
    build_timeline,
    device_fault_changes,
)
from sanduan.hil.scenario import build_scenario, dump_toml, load_scenario
from sanduan.shared.errors import ConfigError

START = 1_688_140_800.0


def _doc(faults: list[dict[str, Any]], chaos: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "scenario": {"name": "f", "start": "2023-07-01T00:00:00+08:00", "days": 3, "speed": 100},
        "river": [{"id": "r"}],
        "station": [{"id": "S1"}, {"id": "S2"}],
        "section": [
            {"id": "A", "river": "r", "station": "S1"},
            {"id": "B", "river": "r", "station": "S2"},
        ],
        "town": [{"id": "t", "outflow": "A"}, {"id": "u", "outflow": "B"}],
        "rig": {
            "kit": [
                {
                    "name": "standard",
                    "bus": [
                        {
                            "name": "b1",
                            "device": [
                                {"name": "sonde", "profile": "sonde-multi", "slave": 1},
                                {"name": "tp", "profile": "tp-analyzer", "slave": 3, "cycle": "4h"},
                            ],
                        }
                    ],
                }
            ]
        },
        "fault": faults,
    }
    if chaos is not None:
        doc["chaos"] = chaos
    return doc


def _timeline(faults: list[dict[str, Any]], chaos: dict[str, Any] | None = None) -> list[Fault]:
    return build_timeline(build_scenario(_doc(faults, chaos), "faults.toml"))


def test_timeline_in_time_order_with_absolute_times() -> None:
    tl = _timeline(
        [
            {"kind": "collector", "at": "2d", "duration": "30m"},
            {"kind": "crc", "at": "1d6h", "duration": "2h", "station": "S1", "device": "sonde"},
            {"kind": "agent", "at": "12h", "station": "S2"},
            {"kind": "clock", "at": "1d", "station": "S2", "offset": "-90m"},
            {
                "kind": "slow",
                "at": "3h",
                "duration": "1h",
                "station": "S2",
                "device": "tp",
                "delay_s": 0.3,
            },
        ]
    )
    assert [f.kind for f in tl] == ["slow", "agent", "clock", "crc", "collector"]
    assert [f.at - START for f in tl] == [10_800, 43_200, 86_400, 108_000, 172_800]
    crc = tl[3]
    assert (crc.station, crc.device, crc.duration, crc.end - crc.at) == ("S1", "sonde", 7200, 7200)
    assert tl[2].offset == -5400
    assert tl[0].delay_s == 0.3
    assert [f.target for f in tl] == ["S2/tp", "S2", "S2", "S1/sonde", "collector"]
    assert all(f.origin == "fault" for f in tl)


def test_bundled_timelines() -> None:
    county = build_timeline(load_scenario("county"))
    kinds = {f.kind for f in county}
    assert {"crc", "silence", "nan", "reboot", "collector", "agent", "broker"} <= kinds
    chaos = build_timeline(load_scenario("chaos"))
    assert sum(f.origin == "chaos" for f in chaos) == 10
    assert {"clock", "gateway-replaced", "hostile-station"} <= {f.kind for f in chaos}


def test_station_attack_faults() -> None:
    tl = _timeline(
        [
            {"kind": "gateway-replaced", "at": "2h", "duration": "20m", "station": "S1"},
            {"kind": "hostile-station", "at": "3h", "duration": "1h", "station": "S2",
             "interval_s": 0.25},
        ]
    )  # fmt: skip
    assert [(f.kind, f.target, f.duration) for f in tl] == [
        ("gateway-replaced", "S1", 1200.0),
        ("hostile-station", "S2", 3600.0),
    ]
    assert tl[1].interval_s == 0.25
    assert "buffer lost" in tl[0].describe() and "S2" in tl[1].describe()


@pytest.mark.parametrize(
    ("fault", "key", "reason"),
    [
        (
            {"kind": "crc", "at": "1h", "duration": "1h", "device": "sonde"},
            "fault[0].station",
            "needs a station",
        ),
        (
            {"kind": "crc", "at": "1h", "duration": "1h", "station": "S1"},
            "fault[0].device",
            "needs a device",
        ),
        (
            {"kind": "crc", "at": "1h", "station": "S1", "device": "sonde"},
            "fault[0].duration",
            "needs a duration",
        ),
        (
            {"kind": "nan", "at": "1h", "duration": "1h", "station": "S9", "device": "sonde"},
            "fault[0].station",
            "unknown station 'S9'",
        ),
        (
            {
                "kind": "nan",
                "at": "1h",
                "duration": "1h",
                "station": "S1",
                "device": "sonde",
                "codes": ["TP"],
            },
            "fault[0].codes[0]",
            "does not measure TP",
        ),
        (
            {
                "kind": "nan",
                "at": "1h",
                "duration": "1h",
                "station": "S1",
                "device": "sonde",
                "codes": ["nonsense"],
            },
            "fault[0].codes[0]",
            "unknown parameter",
        ),
        (
            {"kind": "agent", "at": "1h", "station": "S1", "device": "sonde"},
            "fault[0].device",
            "has no device",
        ),
        ({"kind": "clock", "at": "1h", "station": "S1"}, "fault[0].offset", "non-zero offset"),
        ({"kind": "gateway-replaced", "at": "1h"}, "fault[0].station", "needs a station"),
        (
            {"kind": "hostile-station", "at": "1h", "station": "S1"},
            "fault[0].duration",
            "needs a duration",
        ),
        (
            {
                "kind": "hostile-station",
                "at": "1h",
                "duration": "1h",
                "station": "S1",
                "interval_s": 0,
            },
            "fault[0].interval_s",
            "greater than 0",
        ),
        ({"kind": "broker", "at": "-1h"}, "fault[0].at", "before the start"),
        ({"kind": "broker", "at": "1h", "duration": "-5m"}, "fault[0].duration", "negative"),
        ({"kind": "broker", "at": "soon"}, "fault[0].at", "bad duration"),
        (
            {
                "kind": "slow",
                "at": "1h",
                "duration": "1h",
                "station": "S1",
                "device": "sonde",
                "delay_s": 0,
            },
            "fault[0].delay_s",
            "greater than 0",
        ),
        ({"kind": "broker", "at": "1h", "colour": "red"}, "fault[0].colour", "unknown key"),
    ],
)
def test_fault_mistakes(fault: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _timeline([fault])
    assert err.value.file == "faults.toml"
    assert err.value.key == key
    assert reason in err.value.reason


def test_bad_fault_fails_when_the_file_is_loaded(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(dump_toml(_doc([{"kind": "crc", "at": "1h"}])), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_scenario(p)
    assert (err.value.file, err.value.key) == (str(p), "fault[0].station")


def test_chaos_is_seeded_bounded_and_spaced() -> None:
    chaos = {
        "seed": 5,
        "kills": 8,
        "start": "6h",
        "end": "-6h",
        "min_gap": "3h",
        "down_min": "10m",
        "down_max": "1h",
    }
    a = _timeline([], chaos)
    b = _timeline([], copy.deepcopy(chaos))
    assert a == b
    c = _timeline([], {**chaos, "seed": 6})
    assert [f.at for f in a] != [f.at for f in c]
    assert len(a) == 8
    assert all(START + 6 * 3600 <= f.at <= START + 3 * 86400 - 6 * 3600 for f in a)
    assert all(y.at - x.at >= 3 * 3600 - 1 for x, y in itertools.pairwise(a))
    assert all(600 <= f.duration <= 3600 for f in a)
    assert {f.kind for f in a} <= {"agent", "collector", "broker"}
    assert all((f.station is not None) == (f.kind == "agent") for f in a)
    assert all(f.origin == "chaos" for f in a)


def test_chaos_targets_and_mistakes() -> None:
    only = _timeline([], {"kills": 4, "targets": ["collector"]})
    assert {f.kind for f in only} == {"collector"}
    with pytest.raises(ConfigError) as err:
        _timeline([], {"kills": 2, "targets": ["moon"]})
    assert err.value.key.startswith("chaos.targets")
    with pytest.raises(ConfigError) as err:
        _timeline([], {"kills": 2, "down_min": "2h", "down_max": "1h"})
    assert err.value.key == "chaos.down_max"


def test_device_fault_changes_apply_to_a_device() -> None:
    for kind in DEVICE_KINDS:
        f = Fault(0, kind, START, 60.0, "S1", "sonde", delay_s=0.2, code=6, codes=("w01009",))
        assert Faults(**device_fault_changes(f)).any, kind
    assert device_fault_changes(Fault(0, "exception", START, 1, code=6)) == {"exception": 6}
    assert device_fault_changes(Fault(0, "nan", START, 1, codes=("w01009",))) == {
        "nan": frozenset({"w01009"})
    }
    assert device_fault_changes(Fault(0, "nan", START, 1)) == {"nan": True}
    assert device_fault_changes(Fault(0, "reboot", START, 1)) == {"silent": True}
    for kind in PROCESS_KINDS:
        with pytest.raises(ValueError, match="not a device fault"):
            device_fault_changes(Fault(0, kind, START, 1))


def test_fault_record_json() -> None:
    f = Fault(3, "broker", START + 60, 600.0)
    rec = FaultRecord(f, injected_at=START + 61, cleared_at=START + 661, recovered_s=12.5)
    rec.outcome["backlog_peak"] = 40
    j = rec.to_json()
    assert j["kind"] == "broker" and j["target"] == "broker"
    assert j["outcome"] == {"backlog_peak": 40}
    assert j["recovered_s"] == 12.5
    assert "broker killed" in j["description"]
    skipped = FaultRecord(f, skipped="external broker").to_json()
    assert skipped["skipped"] == "external broker"

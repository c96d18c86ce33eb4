"""The rig with HJ 212: one station's logger speaks HJ 212 to the collector instead of MQTT,
and a provincial platform takes hourly data from every agent; both in the delivery check, with
a platform outage and an agent SIGKILL among the faults."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sanduan.hil.rig import sanduan_argv
from sanduan.hil.scenario import bundled_scenarios, load_scenario
from sanduan.shared.errors import ConfigError


def _scenario(tmp_path: Path) -> Path:
    text = bundled_scenarios()["smoke"].read_text(encoding="utf-8")
    rig = '[rig]\nserial = "auto"\n'
    assert rig in text
    text = text.replace(rig, rig + 'hj212_station = "S-DN"\nplatform = true\n')
    # slower than the smoke run, so that agents starting on a busy machine miss little of it
    assert "speed = 14400" in text
    text = text.replace("speed = 14400", "speed = 4800")
    text += '\n[[fault]]\nkind = "platform"\nat = "5h"\nduration = "6h"\n'
    text += '\n[[fault]]\nkind = "agent"\nat = "13h"\nduration = "1h"\nstation = "S-UP"\n'
    path = tmp_path / "smoke-hj212.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(scenario: Path, tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    summary = tmp_path / "summary-out.json"
    res = subprocess.run(
        [
            *sanduan_argv(),
            "hil",
            "run",
            str(scenario),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--summary-json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    doc = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    return res.returncode, doc, res.stdout + res.stderr


def test_scenario_keys_are_validated(tmp_path: Path) -> None:
    path = _scenario(tmp_path)
    sc = load_scenario(path)
    assert (sc.hj212_station, sc.platform) == ("S-DN", True)
    bad = path.read_text(encoding="utf-8").replace('hj212_station = "S-DN"', 'hj212_station = "X"')
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown station 'X'"):
        load_scenario(path)
    no_platform = _scenario(tmp_path).read_text(encoding="utf-8").replace("platform = true\n", "")
    path.write_text(no_platform, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rig\.platform = true"):
        load_scenario(path)


@pytest.mark.county
@pytest.mark.slow
def test_smoke_with_an_hj212_logger_and_a_platform_outage(tmp_path: Path) -> None:
    code, s, text = _run(_scenario(tmp_path), tmp_path)
    assert code == 0, text[-3000:]
    # the centre: every reading, the HJ 212 station's included
    assert (s["lost"], s["duplicates"], s["unexpected"]) == (0, 0, 0)
    per = s["delivery"]["per_station"]
    assert per["S-DN"]["generated"] >= 10  # (a very busy machine polls less)
    assert per["S-UP"]["generated"] >= 10
    assert per["S-DN"]["stored"] == per["S-DN"]["generated"]
    with sqlite3.connect(tmp_path / "out" / "central.db") as db:
        seqs = dict(db.execute("SELECT station, max(seq) FROM readings GROUP BY station"))
    assert seqs["S-DN"] < 0  # came in over HJ 212 (seqs derived from factor and data time)
    assert seqs["S-UP"] > 0  # came in over MQTT
    # the platform: every hour of every station, once, through a 6-hour outage
    pf = s["platform"]
    assert pf["outages"] == 1
    assert pf["expected"] >= 10
    assert (pf["lost"], pf["duplicates"], pf["value_mismatches"]) == (0, 0, 0)
    assert set(pf["per_station"]) == {"S-UP", "S-DN"}
    kinds = {f["kind"]: f for f in s["faults"]}
    assert "skipped" not in kinds["platform"]
    assert s["ok"] is True

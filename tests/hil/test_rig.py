"""The rig end to end on the smoke scenario: broker, collector and agents as processes, the
delivery check from the truth log against the collector's store, the ledgers compared."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sanduan.hil.rig import sanduan_argv

pytestmark = [pytest.mark.process, pytest.mark.mosquitto]

REQUIRED = ("generated", "stored", "lost", "duplicates", "faults", "sections", "ledger")


def run_hil(args: list[str], tmp_path: Path, timeout: float) -> tuple[int, dict[str, Any], str]:
    summary = tmp_path / "summary-out.json"
    res = subprocess.run(
        [
            *sanduan_argv(),
            "hil",
            "run",
            *args,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--summary-json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    doc = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    return res.returncode, doc, res.stdout + res.stderr


def test_sanduan_command_runs() -> None:
    out = subprocess.run([*sanduan_argv(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sanduan ")


@pytest.mark.county
def test_smoke_scenario_end_to_end(tmp_path: Path) -> None:
    code, s, text = run_hil(["smoke"], tmp_path, timeout=180)
    assert code == 0, text[-3000:]
    for key in REQUIRED:
        assert key in s
    assert s["generated"] > 300  # two stations, a day of hourly sondes and 4-hourly analyzers
    assert s["stored"] == s["generated"]
    assert (s["lost"], s["duplicates"], s["unexpected"]) == (0, 0, 0)
    assert s["ledger_matches_truth"] is True
    assert s["sections_match_truth"] is True
    assert {x["section"] for x in s["sections"]} == {"UP", "DN"}
    assert s["faults"] == []
    # the files the rig handed to the processes are valid for them
    out = tmp_path / "out"
    for f in (out / "config").glob("station-*.toml"):
        doc = tomllib.loads(f.read_text(encoding="utf-8"))
        assert doc["uplink"]["client_id"].startswith(doc["station"]["id"])
    assert (out / "run.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (out / "summary.json").exists()
    truth = (out / "truth" / "truth.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(truth) == s["generated"]


def test_bad_scenario_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 'x'\n", encoding="utf-8")
    code, _, text = run_hil([str(bad)], tmp_path, timeout=60)
    assert code == 2
    assert f"{bad}: scenario.start: required key is missing" in text


@pytest.mark.county
@pytest.mark.slow
def test_smoke_on_a_private_mosquitto_with_a_broker_kill(tmp_path: Path) -> None:
    import shutil

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    scenario = tmp_path / "smoke-kill.toml"
    from sanduan.hil.scenario import bundled_scenarios

    text = bundled_scenarios()["smoke"].read_text(encoding="utf-8")
    text += '\n[[fault]]\nkind = "broker"\nat = "8h"\nduration = "1h"\n'
    text += '\n[[fault]]\nkind = "collector"\nat = "14h"\nduration = "1h"\n'
    scenario.write_text(text, encoding="utf-8")
    code, s, out = run_hil([str(scenario), "--broker", "mosquitto"], tmp_path, timeout=180)
    assert code == 0, out[-3000:]
    assert s["broker"]["kind"] == "mosquitto"
    assert (s["lost"], s["duplicates"]) == (0, 0)
    kinds = {f["kind"]: f for f in s["faults"]}
    assert kinds["broker"]["injected_at"] is not None and "skipped" not in kinds["broker"]
    assert kinds["broker"]["outcome"]["backlog_peak"] >= 0

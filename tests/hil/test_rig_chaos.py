"""Chaos in CI, bounded: four stations for two simulated days while agents, the collector and
the broker are SIGKILLed at seeded random moments, a gateway clock jumps, a gateway is replaced
(its buffer lost) and a client with one station's credentials attacks. Nothing may be lost or
stored twice, apart from what the lost buffer held unacknowledged, counted apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sanduan.hil.rig import sanduan_argv

pytestmark = [pytest.mark.process, pytest.mark.mosquitto]


def _run(args: list[str], tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    summary = tmp_path / "chaos.json"
    res = subprocess.run(
        [
            *sanduan_argv(),
            "hil",
            "run",
            "chaos",
            *args,
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


@pytest.mark.county
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.xdist_group("serial")  # readings counted in wall time: not beside the month demo
def test_chaos_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    code, s, text = _run([], tmp_path)
    assert s, text[-3000:]
    injected = [f for f in s["faults"] if f.get("injected_at") is not None]
    kinds = {f["kind"] for f in injected}
    assert {"agent", "collector", "broker", "gateway-replaced", "hostile-station"} <= kinds, kinds
    assert sum(1 for f in injected if f["origin"] == "chaos") >= 8
    procs = s["processes"]
    assert procs["central"]["kills"] >= 1
    assert procs["broker"]["kills"] >= 1
    assert sum(p.get("kills", 0) for n, p in procs.items() if n.startswith("edge-")) >= 1
    d = s["delivery"]
    assert s["generated"] > 1000
    assert s["lost"] == 0, d["lost_examples"]
    assert s["duplicates"] == 0, d["duplicate_examples"]
    assert s["unexpected"] == 0, d["unexpected_examples"]
    # The replaced gateway: a second stream, stored and matched to what its devices read.
    (replaced,) = [f for f in injected if f["kind"] == "gateway-replaced"]
    station = replaced["target"]
    streams = {k: v for k, v in d["per_stream"].items() if k.startswith(f"{station}/")}
    assert len(streams) >= 2, d["per_stream"]
    # every stored row is a truth reading: a sample the new gateway read again is stored once
    assert d["reread_with_new_buffer"] == 0, streams
    assert all(v["matched"] == v["stored"] > 0 for v in streams.values()), streams
    assert replaced["outcome"]["buffer_bytes_deleted"] > 0
    # The hostile station: every round of attacks sent; of its forged readings only the valid
    # one on a far seq may be stored, never one stamped 1970 or 2100.
    (hostile,) = [f for f in injected if f["kind"] == "hostile-station"]
    o = hostile["outcome"]
    assert o["attacks_sent"]["stolen_id"] >= 1, o
    assert set(o["forged_stored"]) <= {"huge_seq"}, o
    assert set(d["forged_stored"]) <= {"huge_seq"}, d["forged_stored"]
    assert {"undecodable", "oversize", "timestamp"} <= set(o["dead_letters"]), o
    if o["attacks_sent"].get("conflict"):
        assert "conflict" in o["dead_letters"], o
    assert o["readings_nacked"] > 0, o  # conflicts and timestamps are answered
    assert not [w for w in s["warnings"] if "exited on its own" in w], s["warnings"]
    assert code == 0, text[-3000:]

"""``sanduan central report stations`` shows the latest heartbeat's figures."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sanduan.central.core.heartbeat import HeartbeatFigures, heartbeat_figures
from sanduan.central.store import open_store
from sanduan.cli import app
from sanduan.shared.wire import Status

runner = CliRunner(env={"COLUMNS": "240"})
T0 = 1_767_225_600_000


def test_figures_of_a_stored_status() -> None:
    full = json.dumps(
        {
            "k": "status",
            "station": "S1",
            "time_ms": T0,
            "online": True,
            "buffer_depth": 1200,
            "oldest_unacked_age_s": 95.5,
            "clock_offset_s": -2.25,
            "extra": {"buffer_bytes": 4096},
        }
    )
    assert heartbeat_figures(full) == HeartbeatFigures(T0, 1200, 95.5, -2.25, 4096)
    will = json.dumps({"station": "S1", "time_ms": T0, "online": False, "buffer_depth": 0})
    assert heartbeat_figures(will) == HeartbeatFigures(time_ms=T0, last_will=True)
    clean_stop = json.dumps({"online": False, "buffer_depth": 7, "extra": {"uptime_s": 3.0}})
    assert heartbeat_figures(clean_stop).buffer_depth == 7
    for bad in (None, "", "not json", "[1]", '{"buffer_depth": "many", "clock_offset_s": true}'):
        assert heartbeat_figures(bad).buffer_depth is None
        assert heartbeat_figures(bad).clock_offset_s is None


def test_report_stations_shows_buffer_age_offset_and_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = open_store(url, migrate=True)
    try:
        store.record_status(
            Status(
                "st-a",
                T0,
                agent_version="sanduan-edge 0.1.0",
                buffer_depth=1500,
                oldest_unacked_age_s=420.0,
                clock_offset_s=1.25,
                extra={"buffer_bytes": 65536},
            ),
            T0,
        )
        store.record_status(Status.last_will("st-b", T0, "sanduan-edge 0.0.9"), T0)
    finally:
        store.close()
    r = runner.invoke(app, ["central", "report", "stations", "--store", url, "--json"])
    assert r.exit_code == 0, r.output
    a, b = json.loads(r.stdout)
    assert (a["station"], a["agent_version"], a["heartbeat_ms"]) == (
        "st-a",
        "sanduan-edge 0.1.0",
        T0,
    )
    assert (a["buffer_depth"], a["oldest_unacked_age_s"], a["clock_offset_s"]) == (
        1500,
        420.0,
        1.25,
    )
    assert a["buffer_bytes"] == 65536
    assert (b["online"], b["buffer_depth"], b["agent_version"]) == (
        False,
        None,
        "sanduan-edge 0.0.9",
    )
    r = runner.invoke(app, ["central", "report", "stations", "--store", url])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if "st-a" in ln)
    for text in ("1500", "7 min", "+1.2 s", "sanduan-edge 0.1.0"):
        assert text in line, (text, line)

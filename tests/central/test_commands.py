"""Remote commands at the centre: the station_commands table on both backends, results through
ingest, and ``sanduan central station ID ...`` end to end with a real agent and collector."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sanduan.central.commands import command_row, new_command, parse_duration
from sanduan.central.ingest import Processor
from sanduan.central.store import CommandRow, Store, open_store
from sanduan.cli import app
from sanduan.shared import topics, wire
from sanduan.shared.errors import WireFormatError
from sanduan.shared.wire import CommandResult

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T0 = 1_767_225_600_000
runner = CliRunner(env={"COLUMNS": "220"})


def result(station: str, cid: str, state: str = "done", ok: bool = True) -> CommandResult:
    return CommandResult(station, cid, T0 + 5000, ok, state, f"{state}!", "a" * 64)


def test_parse_duration() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("10m") == 600.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("2d") == 172_800.0
    for bad in ("", "0", "-5m", "10 minutes", "m"):
        with pytest.raises(ValueError, match="must look like"):
            parse_duration(bad)


def test_new_command_is_valid_and_unique() -> None:
    a = new_command("S1", "push-config", now_ms=T0, body="[station]\r\nid = 'S1'\r\n", ttl_s=60)
    b = new_command("S1", "push-config", now_ms=T0, body="x")
    assert a.command_id != b.command_id
    assert a.body == "[station]\nid = 'S1'\n" and a.expires_ms == T0 + 60_000
    row = command_row(a)
    assert row.state == "sent" and json.loads(row.args)["body_bytes"] == len(a.body)
    with pytest.raises(WireFormatError, match="name"):
        new_command("S1", "Bad Name", now_ms=T0)


def test_commands_table_records_results(store: Store) -> None:
    for i, st in enumerate(("S1", "S1", "S2")):
        cmd = new_command(st, "poll-now", now_ms=T0 + i * 1000)
        store.record_command(command_row(cmd))
    rows = store.commands("S1")
    assert [r.issued for r in rows] == [T0 + 1000, T0]  # newest first
    assert all(r.state == "sent" and r.answered_at is None for r in rows)
    newest = rows[0]
    assert store.record_result(result("S1", newest.id, "done"), T0 + 6000)
    # Another station cannot answer S1's command.
    assert not store.record_result(result("S2", rows[1].id, "failed", False), T0 + 6000)
    got = {r.id: r for r in store.commands("S1")}
    assert got[newest.id].state == "done" and got[newest.id].result is True
    assert got[newest.id].answered_at == T0 + 6000 and got[newest.id].config_sha256 == "a" * 64
    assert got[rows[1].id].state == "sent"
    # An answer to a command the centre does not know is kept.
    assert store.record_result(result("S2", "c-unknown", "refused", False), T0 + 7000)
    unknown = [r for r in store.commands("S2") if r.id == "c-unknown"]
    assert unknown and unknown[0].name == "-" and unknown[0].result is False
    last = store.last_commands()
    assert set(last) == {"S1", "S2"} and last["S1"].id == newest.id
    assert isinstance(last["S1"], CommandRow)


def test_ingest_stores_results_and_refuses_forged_ones(store: Store) -> None:
    proc = Processor(store)
    cmd = new_command("S1", "time-sync", now_ms=T0)
    store.record_command(command_row(cmd))
    out = proc.handle(topics.result_topic("S1"), wire.encode(result("S1", cmd.command_id)))
    assert out.kind == "result" and out.dead is None
    assert store.commands("S1")[0].state == "done"
    forged = proc.handle(topics.result_topic("S2"), wire.encode(result("S1", cmd.command_id)))
    assert forged.dead is not None
    assert [d.reason for d in store.dead_letters()] == ["origin"]


# --- end to end ----------------------------------------------------------------------------


def _central_toml(tmp_path: Path, url: str, port: int) -> Path:
    p = tmp_path / "central.toml"
    p.write_text(
        f'[central]\nstore = "{url}"\n\n[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\n'
        'client_id = "collector-e2e"\n',
        encoding="utf-8",
    )
    return p


@pytest.mark.mosquitto
def test_cli_push_config_then_commands_and_report(tmp_path: Path, broker_port: int) -> None:
    from tests.edge.agent_harness import AgentThread, fake, wait_until
    from tests.edge.test_commands_agent import station_toml

    from sanduan.central.ingest import Collector
    from sanduan.shared.config import load_central_config, load_station_config

    url = f"sqlite:///{tmp_path / 'central.db'}"
    open_store(url, migrate=True).close()
    central = _central_toml(tmp_path, url, broker_port)
    station_file = tmp_path / "station.toml"
    station_file.write_text(station_toml("S-e2e", tmp_path / "buffer.db", broker_port), "utf-8")
    collector = Collector(load_central_config(central), store_url=url)
    collector.start()
    agent = AgentThread(load_station_config(station_file), fake(0.2), config_path=station_file)
    try:
        assert collector.wait_connected(10)
        agent.start()
        assert wait_until(lambda: collector.stats().get("batches", 0) > 0, 15)
        new = station_toml("S-e2e", tmp_path / "buffer.db", broker_port, heartbeat_s=0.5)
        pushed = tmp_path / "new.toml"
        pushed.write_text(new, encoding="utf-8")
        sha = hashlib.sha256(new.encode()).hexdigest()
        argv = ["central", "station", "S-e2e", "push-config", str(pushed), "-c", str(central)]
        r = runner.invoke(app, [*argv, "--wait", "--timeout", "20"])
        assert r.exit_code == 0, r.output
        assert "sent to station S-e2e" in r.output and "applied: " in r.output
        assert sha[:12] in r.output

        r = runner.invoke(app, ["central", "station", "S-e2e", "poll-now", "-c", str(central)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(
            app, ["central", "station", "S-e2e", "commands", "-c", str(central), "--json"]
        )
        rows = json.loads(r.output)
        assert [x["name"] for x in rows] == ["poll-now", "push-config"]
        assert rows[1]["state"] == "applied" and rows[1]["config_sha256"] == sha
        r = runner.invoke(app, ["central", "station", "S-e2e", "commands", "-c", str(central)])
        assert r.exit_code == 0 and "applied" in r.output and sha[:12] in r.output

        def report() -> dict[str, Any]:
            out = runner.invoke(
                app, ["central", "report", "stations", "-c", str(central), "--json"]
            )
            rec: dict[str, Any] = {x["station"]: x for x in json.loads(out.output)}["S-e2e"]
            return rec

        assert wait_until(lambda: report()["config"] == sha[:12], 10)
        assert wait_until(lambda: (report()["last_command"] or {}).get("state") == "done", 10)
        text = runner.invoke(app, ["central", "report", "stations", "-c", str(central)]).output
        assert sha[:12] in text and "poll-now done" in text

        r = runner.invoke(
            app, ["central", "station", "S-e2e", "log-level", "LOUD", "-c", str(central), "--wait"]
        )
        assert r.exit_code == 1 and "refused: log-level: level must be one of" in r.output
    finally:
        agent.stop()
        collector.stop()

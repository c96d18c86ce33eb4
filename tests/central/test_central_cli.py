"""``sanduan central``: check-config, migrate, replay, report stations, run's refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from sanduan.central.cli import report_app
from sanduan.central.store.migrations import LATEST
from sanduan.cli import app
from sanduan.shared.wire import Batch, Status, encode

runner = CliRunner(env={"COLUMNS": "200"})
T0 = 1_767_225_600_000
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _config(tmp_path: Path, store: str, county: bool = True) -> Path:
    if county:
        example = DEPLOY / "county.example.toml"
        (tmp_path / "county.toml").write_text(example.read_text(encoding="utf-8"), "utf-8")
    cfg = tmp_path / "central.toml"
    lines = ["[central]", f'store = "{store}"']
    if county:
        lines.append('county = "county.toml"')
    lines += ['rules = "rules.toml"', "", "[mqtt]", 'group = "collectors"']
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def test_check_config_reports_settings_and_missing_files(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "postgresql://u:secret@db.example/sanduan")
    r = runner.invoke(app, ["central", "check-config", str(cfg)])
    assert r.exit_code == 1
    assert "postgresql://u:***@db.example/sanduan" in r.stdout
    assert "secret" not in r.stdout
    assert "collectors" in r.stdout
    assert "rules.toml does not exist" in r.stdout
    (tmp_path / "rules.toml").write_text(
        (DEPLOY / "rules.example.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    r = runner.invoke(app, ["central", "check-config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "valid" in r.stdout


def test_check_config_names_a_bad_key(tmp_path: Path) -> None:
    cfg = tmp_path / "central.toml"
    cfg.write_text('[central]\nstore = "mysql://x"\n', encoding="utf-8")
    r = runner.invoke(app, ["central", "check-config", str(cfg)])
    assert r.exit_code == 2
    assert "central.store" in r.stderr


def test_migrate_replay_and_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = _config(tmp_path, url)
    # Not migrated yet: store commands refuse with the fix.
    r = runner.invoke(app, ["central", "report", "stations", "-c", str(cfg)])
    assert r.exit_code == 2
    assert "sanduan central migrate" in r.stderr
    r = runner.invoke(app, ["central", "migrate", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert f"schema version {LATEST}" in r.stdout
    assert runner.invoke(app, ["central", "migrate", "--store", url]).exit_code == 0

    b = Batch.from_columns(
        "st-cli", 4, T0, seq=[1, 2, 5], ts_ms=[T0] * 3, code=["w01001"] * 3, values=[7.0] * 3
    )
    files = [tmp_path / "b.bin", tmp_path / "s.bin"]
    files[0].write_bytes(encode(b))
    files[1].write_bytes(encode(Status("st-cli", T0, agent_version="1.0")))
    r = runner.invoke(app, ["central", "replay", *map(str, files), "--store", url])
    assert r.exit_code == 0, r.output
    assert "batches=1" in r.stdout
    assert "statuses=1" in r.stdout
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00")
    r = runner.invoke(app, ["central", "replay", str(bad), "-c", str(cfg)])
    assert r.exit_code == 1
    assert "dead_letters=1" in r.stdout

    out_csv = tmp_path / "st.csv"
    r = runner.invoke(
        app, ["central", "report", "stations", "--store", url, "--json", "--csv", str(out_csv)]
    )
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(r.stdout)
    assert rec["station"] == "st-cli"
    assert rec["online"] is True
    assert (rec["max_seq"], rec["contiguous_seq"], rec["gaps"]) == (5, 2, [[3, 4]])
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert rows[0]["gaps"] == "3-4"
    r = runner.invoke(app, ["central", "report", "stations", "--store", url])
    assert r.exit_code == 0
    assert "st-cli" in r.stdout
    assert "1 (2 missing)" in r.stdout


def test_run_refuses_an_unmigrated_store(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")
    r = runner.invoke(app, ["central", "run", "-c", str(cfg)])
    assert r.exit_code == 2
    assert "rules.toml: file not found" in r.stderr  # the topology is checked at start-up
    (tmp_path / "rules.toml").write_text(
        (DEPLOY / "rules.example.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    r = runner.invoke(app, ["central", "run", "-c", str(cfg)])
    assert r.exit_code == 1  # not a configuration error: systemd tries again until migrated
    assert "sanduan central migrate" in r.stderr


def test_report_is_a_group_others_can_extend() -> None:
    names = {c.name for c in report_app.registered_commands}
    assert "stations" in names
    r = runner.invoke(app, ["central", "report", "--help"])
    assert r.exit_code == 0
    assert "stations" in r.stdout


def test_report_dead_letters(tmp_path: Path) -> None:
    import hashlib

    from sanduan.central.store import open_store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    s = open_store(url, migrate=True)
    s.store_batch(
        Batch.from_columns("S1", 1, T0, seq=[1], ts_ms=[T0], code=["w01001"], values=[7.0]), T0
    )
    s.dead_letter("sanduan/v1/S1/batch", None, "oversize", b"\x80" * 9000, T0, station="S1")
    s.dead_letter("sanduan/v1/S2/batch", None, "conflict", b"abc", T0 + 3_600_000, station="S2")
    s.close()
    r = runner.invoke(app, ["central", "report", "dead-letters", "--store", url, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows == [
        {
            "station": "S1",
            "topic": "sanduan/v1/S1/batch",
            "reason": "oversize",
            "bytes": 9000,
            "sha256": hashlib.sha256(b"\x80" * 9000).hexdigest(),
            "received": "2026-01-01T00:00:00.000+00:00",
        },
        {
            "station": "S2",
            "topic": "sanduan/v1/S2/batch",
            "reason": "conflict",
            "bytes": 3,
            "sha256": hashlib.sha256(b"abc").hexdigest(),
            "received": "2026-01-01T01:00:00.000+00:00",
        },
    ]
    args = ["central", "report", "dead-letters", "--store", url, "--json"]
    r = runner.invoke(app, [*args, "--station", "S2"])
    assert [d["station"] for d in json.loads(r.stdout)] == ["S2"]
    r = runner.invoke(app, [*args, "--since", "2026-01-01T00:30"])
    assert [d["reason"] for d in json.loads(r.stdout)] == ["conflict"]
    r = runner.invoke(app, ["central", "report", "dead-letters", "--store", url])
    assert r.exit_code == 0
    assert "oversize" in r.stdout
    assert "conflict" in r.stdout
    r = runner.invoke(app, [*args, "--since", "yesterday"])
    assert r.exit_code == 2
    assert "ISO 8601" in r.stderr
    r = runner.invoke(app, ["central", "report", "dead-letters", "--json"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["central", "report", "stations", "--store", url, "--json"])
    (rec,) = json.loads(r.stdout)
    assert (rec["stream"], rec["lost_with_buffer"], rec["rejects_over_budget"]) == (0, 0, 0)

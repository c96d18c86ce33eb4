"""``sanduan edge check-config`` checks what ``run`` needs; ``run`` says what is missing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from tests.brokers import free_port, port_open, shared_port
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.edge.io.outbox import Outbox
from sanduan.shared.errors import StoreError

runner = CliRunner()

STATION = """
[station]
id = "pre-1"

[buffer]
path = "{buffer}"

[uplink]
broker = "{broker}"
username = "pre-1"
password_file = "{password_file}"

[[bus]]
name = "rs485-1"
port = "{port}"

  [[bus.device]]
  name = "sonde"
  slave = 1
  profile = "sonde-multi"
"""


def _write(tmp_path: Path, **kw: str) -> Path:
    values = {
        "buffer": str(tmp_path / "state" / "buffer.db"),
        "broker": f"mqtt://127.0.0.1:{shared_port()}",
        "password_file": "${CREDENTIALS_DIRECTORY}/mqtt",
        "port": str(tmp_path / "ttyUSB0"),
    }
    values.update(kw)
    path = tmp_path / "station.toml"
    path.write_text(STATION.format(**values), encoding="utf-8")
    return path


def _lines(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "warning", "error"):
            out[rest.strip().split(":", 1)[0]] = line
    return out


def test_missing_password_file_buffer_dir_and_port_each_named(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    creds = tmp_path / "creds"
    creds.mkdir()
    r = runner.invoke(
        app, ["edge", "check-config", str(cfg)], env={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert r.exit_code == 2, r.output
    lines = _lines(r.output)
    assert lines["buffer.path"].startswith("error")
    assert str(tmp_path / "state") in lines["buffer.path"] and "fix:" in lines["buffer.path"]
    assert lines["uplink.password_file"].startswith("error")
    assert str(creds / "mqtt") in lines["uplink.password_file"]
    assert lines["bus[0].port"].startswith("error") and "ttyUSB0" in lines["bus[0].port"]
    assert "3 errors, 0 warnings" in r.output
    assert "buffer.path, uplink.password_file, bus[0].port" in r.output  # stderr summary
    assert "timing rs485-1" in r.output  # the plan is still shown
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    r = runner.invoke(app, ["edge", "check-config", "--no-ports", str(cfg)], env=env)
    assert r.exit_code == 2
    assert "bus[0].port" not in r.output and "2 errors, 0 warnings" in r.output


def test_all_present_is_exit_0(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        cfg = _write(tmp_path, port=os.ttyname(slave), password_file="mqtt.pass")
        (tmp_path / "state").mkdir()
        (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
        r = runner.invoke(app, ["edge", "check-config", str(cfg)])
    finally:
        os.close(master)
        os.close(slave)
    assert r.exit_code == 0, r.output
    assert all(line.startswith("ok") for line in _lines(r.output).values())
    assert "0 errors, 0 warnings" in r.output


def test_unset_variable_is_a_config_error(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    r = runner.invoke(app, ["edge", "check-config", str(cfg)], env={"CREDENTIALS_DIRECTORY": None})
    assert r.exit_code == 2
    assert "uplink.password_file: environment variable CREDENTIALS_DIRECTORY is not set" in (
        r.output
    )


@pytest.mark.mosquitto
def test_online_against_the_broker_and_a_closed_port(tmp_path: Path) -> None:
    if not port_open(shared_port()):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{shared_port()}")
    (tmp_path / "state").mkdir()
    (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
    cfg = _write(tmp_path, password_file="mqtt.pass")
    r = runner.invoke(app, ["edge", "check-config", "--online", str(cfg)])
    assert _lines(r.output)["uplink.broker"].startswith("ok"), r.output
    closed = free_port()
    cfg = _write(tmp_path, password_file="mqtt.pass", broker=f"mqtt://127.0.0.1:{closed}")
    r = runner.invoke(app, ["edge", "check-config", "--online", str(cfg)])
    assert r.exit_code == 2
    line = _lines(r.output)["uplink.broker"]
    assert line.startswith("error") and "connection refused" in line


def test_buffer_directory_missing_is_a_store_error_naming_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Outbox(tmp_path / "nope" / "b.db", station="S1")
    assert f"the directory {tmp_path / 'nope'} does not exist" in str(info.value)
    assert "buffer.path" in str(info.value)
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(StoreError, match="does not exist"):
        Outbox(tmp_path / "file" / "b.db", station="S1")


def test_run_refuses_a_missing_buffer_directory_with_exit_2(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level  # ``run`` sets up logging for the process
    cfg = tmp_path / "station.toml"
    cfg.write_text(
        f'[station]\nid = "pre-2"\n[buffer]\npath = "{tmp_path / "nope" / "b.db"}"\n',
        encoding="utf-8",
    )
    try:
        r = runner.invoke(
            app, ["edge", "run", "-c", str(cfg), "--fake-source", "1", "--log-format", "text"]
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert r.exit_code == 2
    assert f"the directory {tmp_path / 'nope'} does not exist" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)

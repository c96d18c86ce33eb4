"""``sanduan central check-config`` checks what ``run`` needs, and with --online the broker and
the database; the store password comes from a file, the store URL may use ``${ENV}``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.brokers import free_port, port_open, shared_port
from typer.testing import CliRunner

from sanduan.central.store import open_store
from sanduan.central.store.migrations import LATEST
from sanduan.central.store.postgres import PostgresStore
from sanduan.cli import app
from sanduan.shared.config import load_central_config, parse_model

runner = CliRunner(env={"COLUMNS": "200"})


def _lines(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "warning", "error"):
            out[rest.strip().split(":", 1)[0]] = line
    return out


def _config(tmp_path: Path, store: str, broker: str | None = None) -> Path:
    broker = broker or f"mqtt://127.0.0.1:{shared_port()}"
    cfg = tmp_path / "central.toml"
    cfg.write_text(
        f'[central]\nstore = "{store}"\n\n[mqtt]\nbroker = "{broker}"\nusername = "central"\n'
        'password_file = "mqtt.pass"\n\n[hj212]\nlisten = "0.0.0.0:9212"\n',
        encoding="utf-8",
    )
    return cfg


def test_missing_files_and_directories_each_named(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"sqlite:///{tmp_path / 'nodir' / 'c.db'}")
    r = runner.invoke(app, ["central", "check-config", str(cfg)])
    assert r.exit_code == 1, r.output
    lines = _lines(r.output)
    assert lines["mqtt.password_file"].startswith("error")
    assert str(tmp_path / "mqtt.pass") in lines["mqtt.password_file"]
    store = [ln for ln in r.output.splitlines() if ln.startswith("error   central.store")]
    assert store and str(tmp_path / "nodir") in store[0] and "fix:" in store[0]
    assert lines["hj212.listen"] == "ok      hj212.listen: 0.0.0.0 port 9212"
    assert "mqtt.password_file" in r.stderr


def test_online_sqlite_reports_the_schema_and_a_closed_broker(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = _config(tmp_path, url, broker=f"mqtt://127.0.0.1:{free_port()}")
    r = runner.invoke(app, ["central", "check-config", str(cfg)])
    assert r.exit_code == 0, r.output  # offline: a file still to create is a warning
    assert "migrate" in _lines(r.output)["central.store"]
    r = runner.invoke(app, ["central", "check-config", "--online", str(cfg)])
    assert r.exit_code == 1
    online = [ln for ln in r.output.splitlines() if ln.startswith("error   central.store")]
    assert online and "sanduan central migrate" in online[0]
    assert "connection refused" in _lines(r.output)["mqtt.broker"]
    open_store(url, migrate=True).close()
    r = runner.invoke(app, ["central", "check-config", "--online", str(cfg)])
    assert f"answers, schema version {LATEST}" in r.output


@pytest.mark.mosquitto
def test_online_broker_ok(tmp_path: Path) -> None:
    if not port_open(shared_port()):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{shared_port()}")
    (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url, migrate=True).close()
    r = runner.invoke(app, ["central", "check-config", "--online", str(_config(tmp_path, url))])
    assert r.exit_code == 0, r.output
    assert "accepted the connection as central" in _lines(r.output)["mqtt.broker"]


@pytest.mark.postgres
def test_env_store_url_and_password_file_reach_postgresql(
    tmp_path: Path, pg_url_factory: Callable[[], str]
) -> None:
    url = pg_url_factory()  # postgresql://postgres@127.0.0.1:5432/test?options=...
    assert "postgres@127.0.0.1:5432/" in url
    templated = url.replace("postgres@127.0.0.1:5432/", "${PGUSER}@${PGADDR:-nowhere}/")
    password = "s3cr:t/p@ss%"
    (tmp_path / "pg.pass").write_text(password + "\n", encoding="utf-8")
    (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
    cfg_file = tmp_path / "central.toml"
    cfg_file.write_text(
        f'[central]\nstore = "{templated}"\nstore_password_file = "pg.pass"\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    env = {"PGUSER": "postgres", "PGADDR": "127.0.0.1:5432"}
    cfg = load_central_config(cfg_file, env)
    store = open_store(cfg.central.store_url(), migrate=True)
    try:
        assert isinstance(store, PostgresStore)
        conn = store._connection()
        assert conn.info.password == password  # the file's password reached libpq
        assert conn.info.user == "postgres"
        assert password not in store.url
    finally:
        store.close()
    r = runner.invoke(app, ["central", "check-config", "--online", str(cfg_file)], env=env)
    line = [ln for ln in r.output.splitlines() if "answers, schema version" in ln]
    assert line and line[0].startswith("ok      central.store:"), r.output
    assert f"schema version {LATEST}" in line[0]
    assert _lines(r.output)["central.store_password_file"].startswith("ok")
    assert "s3cr" not in r.output


def test_the_units_login_overrides_are_checked(tmp_path: Path) -> None:
    """``run --mqtt-user central-2 --mqtt-password-file ...`` in the systemd unit: check-config
    takes the same options and checks that file instead of the config's."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url, migrate=True).close()
    cfg = _config(tmp_path, url)  # its mqtt.password_file mqtt.pass does not exist
    (tmp_path / "central-2.password").write_text("pw\n", encoding="utf-8")
    args = ["central", "check-config", str(cfg), "--mqtt-user", "central-2"]
    r = runner.invoke(app, [*args, "--mqtt-password-file", str(tmp_path / "central-2.password")])
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "central-2.password") in _lines(r.output)["mqtt.password_file"]
    r = runner.invoke(app, [*args, "--mqtt-password-file", str(tmp_path / "central-3.password")])
    assert r.exit_code == 1
    assert "central-3.password does not exist" in _lines(r.output)["mqtt.password_file"]


def test_a_store_in_a_missing_directory_names_it(tmp_path: Path) -> None:
    from sanduan.shared.errors import StoreError

    with pytest.raises(StoreError) as info:
        open_store(f"sqlite:///{tmp_path / 'nodir' / 'c.db'}", migrate=True)
    assert f"the directory {tmp_path / 'nodir'} does not exist" in str(info.value)


def test_collector_says_an_unreachable_broker_at_warning_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import time

    from sanduan.central.ingest import Collector
    from sanduan.shared.config import CentralConfig

    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url, migrate=True).close()
    cfg = parse_model(
        CentralConfig,
        {"mqtt": {"broker": f"mqtt://127.0.0.1:{free_port()}", "protocol": "3.1.1"}},
        "<test>",
    )
    c = Collector(cfg, store_url=url)
    with caplog.at_level(logging.WARNING, logger="sanduan.central.ingest"):
        c.start()
        try:
            deadline = time.monotonic() + 10
            while c.connect_failures < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            c.stop(timeout=2)
    said = [r for r in caplog.records if "cannot reach the broker" in r.getMessage()]
    assert c.connect_failures >= 2
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "connection refused" in said[0].getMessage()

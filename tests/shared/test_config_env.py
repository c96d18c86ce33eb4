"""``${ENV}`` substitution in configuration files, secret files and paths relative to the file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sanduan.shared.config import (
    MqttConfig,
    expand_env,
    load_central_config,
    load_station_config,
    read_secret,
    substitute_env,
    with_password,
)
from sanduan.shared.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "db.example"),
        ("mqtts://${HOST}:8883", "mqtts://db.example:8883"),
        ("${HOST}/${PORT}", "db.example/5432"),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("${UNSET:-}", ""),
        ("${HOST:-other}", "db.example"),
        ("${UNSET:-a:b/c}", "a:b/c"),
        ("$${HOST}", "${HOST}"),
        ("cost $5 and $HOST", "cost $5 and $HOST"),
        ("no reference", "no reference"),
    ],
)
def test_expand_env(text: str, expected: str) -> None:
    env = {"HOST": "db.example", "PORT": "5432", "EMPTY": ""}
    assert expand_env(text, env, "f.toml", "k") == expected


def test_unset_variable_names_file_key_variable_and_fix() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env("postgresql://u@${PGHOST}/db", {}, "central.toml", "central.store")
    e = info.value
    assert e.file == "central.toml"
    assert e.key == "central.store"
    assert "PGHOST is not set" in e.reason
    assert "Environment=" in e.reason and "${PGHOST:-value}" in e.reason


def test_malformed_reference_is_an_error() -> None:
    for text in ("${", "${1A}", "x ${HOST", "${A-b}"):
        with pytest.raises(ConfigError, match=r"\$\$\{ for a literal"):
            expand_env(text, {"HOST": "h", "A": "a"}, "f.toml", "k")


def test_substitute_walks_tables_and_arrays_and_keeps_other_values() -> None:
    data = {
        "a": {"b": ["x-${V}", 3, {"c": "${V}"}], "n": 1.5, "t": True},
        "${V}": "key kept",
    }
    out = substitute_env(data, {"V": "v"}, "f.toml")
    assert out == {"a": {"b": ["x-v", 3, {"c": "v"}], "n": 1.5, "t": True}, "${V}": "key kept"}
    with pytest.raises(ConfigError) as info:
        substitute_env({"bus": [{"port": "ok"}, {"port": "${TTY}"}]}, {}, "f.toml")
    assert info.value.key == "bus[1].port"


def test_station_file_uses_env_and_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text("pw-from-credential\n", encoding="utf-8")
    (tmp_path / "ca.crt").write_text("x", encoding="utf-8")
    cfg_file = tmp_path / "station.toml"
    cfg_file.write_text(
        '[station]\nid = "${STATION_ID}"\n'
        '[buffer]\npath = "${STATE_DIRECTORY:-/var/lib/sanduan}/buffer.db"\n'
        '[uplink]\nbroker = "mqtts://${BROKER_HOST}:8883"\nusername = "${STATION_ID}"\n'
        'password_file = "${CREDENTIALS_DIRECTORY}/mqtt"\n'
        '[uplink.tls]\nca_file = "ca.crt"\n',
        encoding="utf-8",
    )
    env = {"STATION_ID": "S7", "BROKER_HOST": "mq.example", "CREDENTIALS_DIRECTORY": str(creds)}
    cfg = load_station_config(cfg_file, env)
    assert cfg.station.id == "S7"
    assert cfg.buffer.path == Path("/var/lib/sanduan/buffer.db")
    assert cfg.uplink.host == "mq.example"
    assert cfg.uplink.password_file == creds / "mqtt"
    assert cfg.uplink.resolved_password() == "pw-from-credential"
    assert cfg.uplink.tls is not None and cfg.uplink.tls.ca_file == tmp_path / "ca.crt"
    with pytest.raises(ConfigError) as info:
        load_station_config(cfg_file, {"STATION_ID": "S7"})
    assert info.value.key == "uplink.broker" and "BROKER_HOST" in info.value.reason


def test_read_secret_strips_one_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "s"
    for written, read in (("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), (" pw \n\n", " pw \n")):
        f.write_text(written, encoding="utf-8", newline="")
        assert read_secret(f, "password_file") == read
    f.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(f, "password_file")
    with pytest.raises(ConfigError) as info:
        read_secret(tmp_path / "missing", "uplink.password_file")
    assert info.value.file == str(tmp_path / "missing")
    assert "uplink.password_file" in info.value.reason and "create it" in info.value.reason


def test_missing_mqtt_password_file_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    m = MqttConfig(username="u", password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="No such file"):
        m.resolved_password()


def _central(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "central.toml"
    f.write_text(body, encoding="utf-8")
    return f


def test_store_password_file_goes_into_the_url_at_connect_time(tmp_path: Path) -> None:
    (tmp_path / "pg.pass").write_text("p@ss:w/rd%\n", encoding="utf-8")
    cfg = load_central_config(
        _central(
            tmp_path,
            '[central]\nstore = "postgresql://sanduan@${PGHOST}:5432/sanduan"\n'
            'store_password_file = "pg.pass"\n',
        ),
        {"PGHOST": "db.example"},
    )
    assert cfg.central.store == "postgresql://sanduan@db.example:5432/sanduan"  # no password
    assert cfg.central.store_password_file == tmp_path / "pg.pass"
    url = cfg.central.store_url()
    parts = urlsplit(url)
    assert parts.hostname == "db.example" and parts.port == 5432 and parts.path == "/sanduan"
    assert parts.username == "sanduan"
    assert parts.password == "p%40ss%3Aw%2Frd%25"  # percent-encoded for libpq
    (tmp_path / "pg.pass").unlink()
    with pytest.raises(ConfigError, match="store_password_file"):
        cfg.central.store_url()


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        ("sqlite:///c.db", "not SQLite"),
        ("postgresql://u:pw@h/db", "keep only one"),
    ],
)
def test_store_password_file_refused_where_it_makes_no_sense(
    tmp_path: Path, store: str, reason: str
) -> None:
    body = f'[central]\nstore = "{store}"\nstore_password_file = "/run/pg"\n'
    with pytest.raises(ConfigError, match=reason):
        load_central_config(_central(tmp_path, body), {})


def test_with_password_keeps_an_encoded_user() -> None:
    assert with_password("postgresql://a%40b@h/db", "x") == "postgresql://a%40b:x@h/db"
    assert with_password("postgresql://h/db?x=1", "p w") == "postgresql://:p%20w@h/db?x=1"


def test_tls_files_that_cannot_load_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sanduan.shared.config import TlsConfig, configure_tls

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    m = MqttConfig(broker="mqtts://h:8883", tls=TlsConfig(ca_file=tmp_path / "ca.pem"))
    with pytest.raises(ConfigError) as info:
        configure_tls(client, m, "uplink")
    assert info.value.key == "uplink.tls.ca_file" and info.value.file == str(tmp_path / "ca.pem")
    (tmp_path / "ca.pem").write_text("garbage\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        configure_tls(mqtt.Client(CallbackAPIVersion.VERSION2), m, "mqtt")
    assert info.value.key == "mqtt.tls" and "cannot load" in info.value.reason

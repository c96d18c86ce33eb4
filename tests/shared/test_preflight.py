"""The checks of ``check-config``: files, directories, serial ports, the broker (probes injected,
and the real ones against real ports and brokers)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sanduan.shared import preflight
from sanduan.shared.config import BusConfig, MqttConfig, StationConfig, TlsConfig, parse_model
from sanduan.shared.preflight import Check, ProbeFailed, Probes

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.brokers import (  # noqa: E402
    TlsBroker,
    free_port,
    have_mosquitto_tls,
    port_open,
    shared_port,
)

IS_ROOT = os.geteuid() == 0


def _by_what(checks: list[Check]) -> dict[str, Check]:
    return {c.what: c for c in checks}


def test_check_line_says_status_what_detail_and_fix() -> None:
    c = preflight.error("bus[0].port", "cannot open /dev/ttyUSB0", "plug it in")
    assert c.line() == "error   bus[0].port: cannot open /dev/ttyUSB0; fix: plug it in"
    assert preflight.ok("a", "fine").line() == "ok      a: fine"
    checks = [c, preflight.warning("b", "meh"), preflight.ok("a", "x")]
    assert preflight.summary(checks) == "1 error, 1 warning"
    assert preflight.summary(checks, 2) == "1 error, 3 warnings"


def test_check_file(tmp_path: Path) -> None:
    f = tmp_path / "ca.crt"
    missing = preflight.check_file("uplink.tls.ca_file", f)
    assert missing.status == "error" and "does not exist" in missing.detail
    assert "uplink.tls.ca_file" in missing.fix
    assert preflight.check_file("k", tmp_path).status == "error"  # a directory
    f.write_text("x", encoding="utf-8")
    assert preflight.check_file("k", f).status == "ok"


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("pw", encoding="utf-8")
    f.chmod(0)
    c = preflight.check_secret_file("uplink.password_file", f)
    assert c.status == "error" and "Permission denied" in c.detail


def test_check_secret_file_wants_a_secret(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("\n", encoding="utf-8")
    c = preflight.check_secret_file("mqtt.password_file", f)
    assert c.status == "error" and "empty" in c.detail
    f.write_text("hunter2\n", encoding="utf-8")
    c = preflight.check_secret_file("mqtt.password_file", f)
    assert c.status == "ok" and "hunter2" not in c.line()


def test_writable_dir(tmp_path: Path) -> None:
    assert preflight.check_writable_dir("d", tmp_path, "fix").status == "ok"
    missing = preflight.check_writable_dir("d", tmp_path / "nope", "mkdir it")
    assert missing.status == "error" and "does not exist" in missing.detail
    assert missing.fix == "mkdir it"
    regular = tmp_path / "file"
    regular.write_text("", encoding="utf-8")
    assert preflight.check_writable_dir("d", regular, "fix").status == "error"
    assert list(tmp_path.iterdir()) == [regular]  # the probe file is gone


def test_buffer_under_a_regular_file_cannot_be_made(tmp_path: Path) -> None:
    """A directory that cannot be created, even by root: its parent is a regular file."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    c = preflight.check_database_file("buffer.path", tmp_path / "file" / "sub" / "b.db", "fix")
    assert c.status == "error"
    assert str(tmp_path / "file" / "sub") in c.detail


@pytest.mark.skipif(IS_ROOT, reason="root writes into any directory")
def test_read_only_directory_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        c = preflight.check_database_file("buffer.path", d / "b.db", "fix")
    finally:
        d.chmod(0o700)
    assert c.status == "error" and "cannot create a file" in c.detail


def test_database_file_exists_or_will_be_created(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    assert "will be created" in preflight.check_database_file("k", db, "fix").detail
    db.write_bytes(b"")
    assert "exists" in preflight.check_database_file("k", db, "fix").detail
    assert preflight.check_database_file("k", tmp_path, "fix").status == "error"


def _station(tmp_path: Path, **extra: object) -> StationConfig:
    data: dict[str, object] = {
        "station": {"id": "S1"},
        "buffer": {"path": str(tmp_path / "buf" / "b.db")},
        "bus": [
            {"name": "a", "port": "/dev/ttyA", "device": []},
            {"name": "b", "port": "/dev/ttyB", "device": []},
        ],
    }
    data.update(extra)
    return parse_model(StationConfig, data, "station.toml")


def _serial(bus: BusConfig) -> str:
    if bus.port == "/dev/ttyB":
        raise ProbeFailed(f"could not open port {bus.port}", "plug it in")
    return f"{bus.port} opened"


def test_station_checks_report_every_problem(tmp_path: Path) -> None:
    uplink = {"username": "S1", "password_file": str(tmp_path / "mqtt.pass")}
    cfg = _station(tmp_path, uplink=uplink)
    checks = preflight.station_checks(cfg, Probes(serial=_serial))
    by = _by_what(checks)
    assert by["buffer.path"].status == "error"
    assert str(tmp_path / "buf") in by["buffer.path"].detail
    assert by["uplink.password_file"].status == "error"
    assert by["bus[0].port"].status == "ok"
    assert by["bus[1].port"].status == "error" and "/dev/ttyB" in by["bus[1].port"].detail
    assert "uplink.broker" not in by  # only with online

    (tmp_path / "buf").mkdir()
    (tmp_path / "mqtt.pass").write_text("pw\n", encoding="utf-8")
    seen: list[tuple[str, float]] = []

    def mqtt(m: MqttConfig, timeout_s: float) -> str:
        seen.append((m.resolved_password() or "", timeout_s))
        raise ProbeFailed("127.0.0.1:1883: the broker refused: Not authorized", "check it")

    probes = Probes(serial=lambda b: "opened", mqtt=mqtt, timeout_s=1.5)
    by = _by_what(preflight.station_checks(cfg, probes, online=True))
    assert all(by[k].status == "ok" for k in ("buffer.path", "uplink.password_file"))
    assert by["uplink.broker"].status == "error" and "Not authorized" in by["uplink.broker"].detail
    assert seen == [("pw", 1.5)]


def test_embedded_broker_is_not_probed(tmp_path: Path) -> None:
    (tmp_path / "buf").mkdir()
    cfg = _station(tmp_path, uplink={"broker": "embedded"}, bus=[])

    def never(m: MqttConfig, timeout_s: float) -> str:
        raise AssertionError("probed")

    by = _by_what(preflight.station_checks(cfg, Probes(mqtt=never), online=True))
    assert by["uplink.broker"].status == "ok"


def test_tls_files_and_hj212_passwords(tmp_path: Path) -> None:
    (tmp_path / "buf").mkdir()
    (tmp_path / "hj.pw").write_text("bad;pw\n", encoding="utf-8")
    cfg = _station(
        tmp_path,
        bus=[],
        uplink={"tls": {"ca_file": str(tmp_path / "ca.crt"), "cert_file": str(tmp_path / "c")}},
        hj212=[
            {"name": "p", "address": "h:1", "mn": "MN1", "password_file": str(tmp_path / "hj.pw")}
        ],
    )
    by = _by_what(preflight.station_checks(cfg, Probes()))
    assert by["uplink.tls.ca_file"].status == "error"
    assert by["uplink.tls"].status == "error"  # a cert without its key
    assert by["hj212[0].password_file"].status == "error"
    assert "; , = &" in by["hj212[0].password_file"].detail


# --- the real probes ------------------------------------------------------------------------


def test_open_serial_on_a_pty_and_on_a_missing_port(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        bus = BusConfig(name="a", port=name, baudrate=19200)
        assert preflight.open_serial(bus) == f"{name} opened at 19200 8N1"
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(ProbeFailed) as info:
        preflight.open_serial(BusConfig(name="a", port=str(tmp_path / "ttyUSB9")))
    assert "ttyUSB9" in info.value.reason and "dialout" in info.value.fix


@pytest.mark.mosquitto
def test_mqtt_probe_against_the_local_broker_and_a_closed_port() -> None:
    port = shared_port()
    if not port_open(port):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{port}")
    ok = preflight.mqtt_connect(MqttConfig(broker=f"mqtt://127.0.0.1:{port}"), 3.0)
    assert "accepted" in ok
    closed = free_port()  # a port nothing listens on
    with pytest.raises(ProbeFailed, match="connection refused"):
        preflight.mqtt_connect(MqttConfig(broker=f"mqtt://127.0.0.1:{closed}"), 3.0)


@pytest.mark.mosquitto
def test_mqtt_probe_tells_bad_credentials_from_tls_failures(tmp_path: Path) -> None:
    if not have_mosquitto_tls():
        pytest.skip("needs mosquitto, mosquitto_passwd and openssl")
    broker = TlsBroker.start(tmp_path, {"S1": "s1-pw", "central": "c-pw"})
    try:
        url = f"mqtts://127.0.0.1:{broker.port}"
        good = tmp_path / "good"
        good.write_text("s1-pw\n", encoding="utf-8")
        tls = TlsConfig(ca_file=broker.ca)
        m = MqttConfig(broker=url, username="S1", password_file=good, tls=tls)
        assert "accepted the connection as S1" in preflight.mqtt_connect(m, 5.0)
        assert preflight.tls_load_check("uplink.tls", m).status == "ok"
        _probe_keeps_the_services_session(broker, m)

        bad = m.replace(password_file=None, password="wrong")
        with pytest.raises(ProbeFailed) as info:
            preflight.mqtt_connect(bad, 5.0)
        assert "refused" in info.value.reason and "password" in info.value.fix

        # The server's own certificate is no CA: it cannot vouch for itself.
        wrong_ca = m.replace(tls=TlsConfig(ca_file=tmp_path / "server.crt"))
        with pytest.raises(ProbeFailed) as info:
            preflight.mqtt_connect(wrong_ca, 5.0)
        assert info.value.reason.split(": ", 1)[1].startswith("TLS failure")
    finally:
        broker.stop()


def test_mqtt_probe_times_out_on_a_silent_port() -> None:
    with socket.socket() as server:  # accepts the TCP connection, never answers CONNECT
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with pytest.raises(ProbeFailed, match=r"no answer to CONNECT within 0\.5 s"):
            preflight.mqtt_connect(MqttConfig(broker=f"mqtt://127.0.0.1:{port}"), 0.5)


def test_tls_files_that_are_not_pem_are_an_error_offline(tmp_path: Path) -> None:
    (tmp_path / "buf").mkdir()
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    cfg = _station(tmp_path, bus=[], uplink={"tls": {"ca_file": str(tmp_path / "ca.pem")}})
    by = _by_what(preflight.station_checks(cfg, Probes()))
    assert by["uplink.tls.ca_file"].status == "ok"  # readable ...
    assert by["uplink.tls"].status == "error"  # ... but no certificate
    assert "PEM" in by["uplink.tls"].fix


def _client(broker: TlsBroker, user: str, pw: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=user, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.username_pw_set(user, pw)
    c.tls_set(ca_certs=str(broker.ca))
    return c


def _probe_keeps_the_services_session(broker: TlsBroker, m: MqttConfig) -> None:
    """The shipped broker binds client ids to user names: the probe gets the station's own
    session. What the broker queued for the station must still reach the station afterwards."""
    import threading

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from sanduan.shared.topics import ack_topic

    def props() -> Properties:
        p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        p.SessionExpiryInterval = 600
        return p

    got: list[bytes] = []
    present: list[bool] = []
    ready = threading.Event()
    station = _client(broker, "S1", "s1-pw")

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        present.append(bool(flags.session_present))
        c.subscribe(ack_topic("S1"), qos=1)

    station.on_connect = on_connect
    station.on_subscribe = lambda *a: ready.set()
    station.on_message = lambda c, u, msg: got.append(msg.payload)
    station.connect("127.0.0.1", broker.port, clean_start=False, properties=props())
    station.loop_start()
    assert ready.wait(5)
    station.disconnect()
    station.loop_stop()

    centre = _client(broker, "central", "c-pw")
    centre.connect("127.0.0.1", broker.port)
    centre.loop_start()
    centre.publish(ack_topic("S1"), b"queued while offline", qos=1).wait_for_publish(5)
    centre.disconnect()
    centre.loop_stop()

    assert "accepted" in preflight.mqtt_connect(m, 5.0)  # takes S1's session for a moment

    station = _client(broker, "S1", "s1-pw")
    station.on_connect = lambda c, u, flags, rc, p: present.append(bool(flags.session_present))
    station.on_message = lambda c, u, msg: got.append(msg.payload)
    station.connect("127.0.0.1", broker.port, clean_start=False, properties=props())
    station.loop_start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    station.disconnect()
    station.loop_stop()
    assert present == [False, True]
    assert got == [b"queued while offline"]

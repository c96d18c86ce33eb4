"""The shipped Mosquitto configuration: TLS, per-station credentials and ACLs, on a real broker."""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"

pytestmark = pytest.mark.skipif(
    not (
        shutil.which("mosquitto") and shutil.which("openssl") and shutil.which("mosquitto_passwd")
    ),
    reason="needs mosquitto, mosquitto_passwd and openssl",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    d = tmp_path_factory.mktemp("broker")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sanduan-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
        cwd=d,
    )
    passwd = d / "sanduan.passwd"
    for i, (user, pw) in enumerate([("central", "c-pw"), ("S1", "s1-pw"), ("S2", "s2-pw")]):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *flags, "-b", str(passwd), user, pw], check=True)
    passwd.chmod(0o600)
    acl = d / "sanduan.acl"
    shutil.copy(DEPLOY / "sanduan.acl", acl)
    acl.chmod(0o600)
    port = _free_port()
    conf = (DEPLOY / "sanduan.conf").read_text(encoding="utf-8")
    replacements = {
        r"^password_file .*$": f"password_file {passwd}",
        r"^acl_file .*$": f"acl_file {acl}",
        r"^listener 8883$": f"listener {port} 127.0.0.1",
        r"^certfile .*$": f"certfile {d / 'server.crt'}",
        r"^keyfile .*$": f"keyfile {d / 'server.key'}",
        r"^cafile .*$": f"cafile {d / 'ca.crt'}",
        r"^persistence true$": "persistence false",
        r"^persistence_location .*$": "",
    }
    for pattern, repl in replacements.items():
        conf, n = re.subn(pattern, repl, conf, flags=re.MULTILINE)
        assert n == 1, f"shipped config lost the line {pattern}"
    # Run as the test's own user: as root, mosquitto would switch to "mosquitto" and could not
    # read the files in the test's temporary folder.
    conf = f"user {getpass.getuser()}\n" + conf
    cfg = d / "test.conf"
    cfg.write_text(conf, encoding="utf-8")
    proc = subprocess.Popen(["mosquitto", "-c", str(cfg)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"test broker did not start: {err.decode(errors='replace')[-2000:]}")
    yield port, d / "ca.crt"
    proc.terminate()
    proc.wait(5)


def _client(port: int, ca: Path, user: str | None, pw: str | None, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{name}", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if user is not None:
        c.username_pw_set(user, pw)
    return c


def _connect(c: mqtt.Client, port: int) -> int:
    result: list[int] = []
    done = threading.Event()

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        result.append(int(getattr(rc, "value", rc)))  # type: ignore[call-overload]
        done.set()

    c.on_connect = on_connect
    c.connect("localhost", port)
    c.loop_start()
    done.wait(5)
    return result[0] if result else -1


def test_anonymous_and_wrong_password_are_refused(broker: tuple[int, Path]) -> None:
    port, ca = broker
    for name, user, pw in [("anon", None, None), ("bad", "S1", "wrong")]:
        c = _client(port, ca, user, pw, name)
        rc = _connect(c, port)
        c.loop_stop()
        c.disconnect()
        assert rc != 0, f"{name} connection was accepted"


def test_plain_tcp_is_refused(broker: tuple[int, Path]) -> None:
    port, _ = broker
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acl-plain", protocol=mqtt.MQTTv5)
    c.username_pw_set("S1", "s1-pw")
    with pytest.raises(OSError):
        c.connect("localhost", port)
        for _ in range(20):
            c.loop(0.1)
        if not c.is_connected():
            raise ConnectionError("not connected")


def test_station_can_only_publish_its_own_topics(broker: tuple[int, Path]) -> None:
    port, ca = broker
    got: list[str] = []
    central = _client(port, ca, "central", "c-pw", "central")
    central.on_message = lambda c, u, m: got.append(m.topic)
    assert _connect(central, port) == 0
    central.subscribe("sanduan/v1/+/batch", qos=1)
    s1 = _client(port, ca, "S1", "s1-pw", "s1")
    assert _connect(s1, port) == 0
    time.sleep(0.3)
    s1.publish("sanduan/v1/S2/batch", b"forged", qos=1).wait_for_publish(5)
    s1.publish("sanduan/v1/S1/batch", b"own", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while "sanduan/v1/S1/batch" not in got and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for c in (central, s1):
        c.loop_stop()
        c.disconnect()
    assert got == ["sanduan/v1/S1/batch"]


def test_station_receives_only_its_own_acks(broker: tuple[int, Path]) -> None:
    port, ca = broker
    got: list[str] = []
    s1 = _client(port, ca, "S1", "s1-pw", "s1-sub")
    s1.on_message = lambda c, u, m: got.append(m.topic)
    assert _connect(s1, port) == 0
    s1.subscribe("sanduan/v1/+/ack", qos=1)
    central = _client(port, ca, "central", "c-pw", "central-pub")
    assert _connect(central, port) == 0
    time.sleep(0.3)
    central.publish("sanduan/v1/S2/ack", b"x", qos=1).wait_for_publish(5)
    central.publish("sanduan/v1/S1/ack", b"y", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for c in (central, s1):
        c.loop_stop()
        c.disconnect()
    assert got == ["sanduan/v1/S1/ack"]

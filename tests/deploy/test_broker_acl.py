"""The shipped Mosquitto configuration: TLS, per-station credentials and ACLs, on a real broker."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.brokers import TlsBroker, have_mosquitto_tls

pytestmark = [
    pytest.mark.skipif(
        not have_mosquitto_tls(), reason="needs mosquitto, mosquitto_passwd and openssl"
    ),
    pytest.mark.mosquitto,
]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    b = TlsBroker.start(
        tmp_path_factory.mktemp("broker"), {"central": "c-pw", "S1": "s1-pw", "S2": "s2-pw"}
    )
    yield b.port, b.ca
    b.stop()


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

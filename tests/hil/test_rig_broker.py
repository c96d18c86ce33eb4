"""The rig's brokers: the embedded amqtt process keeps offline queues for named sessions and
survives a SIGKILL and restart on the same port; broker specs parse."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sanduan.hil.broker import BrokerHandle, free_port, wait_port


def _client(port: int, client_id: str, user: str | None) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    if user is not None:
        c.username_pw_set(user, "any")
    return c


def _connect(c: mqtt.Client, port: int) -> bool:
    ok = threading.Event()
    c.on_connect = lambda *a: ok.set() if not a[3].is_failure else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    return ok.wait(3)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerHandle]:
    b = BrokerHandle.create(None, tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.mark.mosquitto
def test_offline_queue_of_a_named_session(broker: BrokerHandle) -> None:
    got: list[bytes] = []
    sub = _client(broker.port, "collector", "central")
    assert _connect(sub, broker.port)
    sub.subscribe("sanduan/v1/+/batch", qos=1)
    time.sleep(0.2)
    sub.disconnect()
    sub.loop_stop()
    pub = _client(broker.port, "station", "S1")
    assert _connect(pub, broker.port)
    for i in range(5):
        pub.publish("sanduan/v1/S1/batch", str(i).encode(), qos=1).wait_for_publish(2)
    pub.disconnect()
    pub.loop_stop()
    sub = _client(broker.port, "collector", "central")
    sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
    assert _connect(sub, broker.port)
    deadline = time.monotonic() + 3
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.disconnect()
    sub.loop_stop()
    assert got == [b"0", b"1", b"2", b"3", b"4"]


@pytest.mark.mosquitto
def test_anonymous_clients_are_refused(broker: BrokerHandle) -> None:
    anon = _client(broker.port, "anon", None)
    assert not _connect(anon, broker.port)
    anon.loop_stop()


@pytest.mark.mosquitto
def test_kill_and_restart_on_the_same_port(broker: BrokerHandle) -> None:
    pid = broker.proc.pid if broker.proc else None
    assert broker.killable and broker.running
    assert broker.kill()
    assert not broker.running
    assert not wait_port("127.0.0.1", broker.port, timeout=0.3)
    broker.start()
    assert broker.running and broker.proc is not None and broker.proc.pid != pid
    assert (broker.starts, broker.kills) == (2, 1)
    c = _client(broker.port, "after", "u")
    assert _connect(c, broker.port)
    c.disconnect()
    c.loop_stop()


def test_broker_specs(tmp_path: Path) -> None:
    ext = BrokerHandle.create("mqtt://10.1.2.3:1884", tmp_path)
    assert (ext.kind, ext.host, ext.port, ext.killable) == ("external", "10.1.2.3", 1884, False)
    assert not ext.kill()
    assert BrokerHandle.create("mqtt://broker.example.org", tmp_path).port == 1883
    assert BrokerHandle.create("embedded", tmp_path).kind == "embedded"
    with pytest.raises(ValueError, match="--broker"):
        BrokerHandle.create("http://x", tmp_path)
    port = free_port()
    assert not wait_port("127.0.0.1", port, timeout=0.1)
    with pytest.raises(ConnectionError, match="no MQTT broker"):
        BrokerHandle.create(f"mqtt://127.0.0.1:{port}", tmp_path).start(timeout=0.2)

"""Fixtures for the central collector's tests: stores on both backends, the real broker.

* ``store``: a migrated store, parametrized over a SQLite file in ``tmp_path`` and PostgreSQL
  (a fresh schema per test, dropped afterwards). PostgreSQL cases are skipped when the server
  is not reachable.
* ``store_url``: the URL of such a store, already migrated (for collectors in other threads or
  processes).
* ``uid``: a short id unique to the test, for station ids, client ids and groups.
* ``broker_port``: the port of a Mosquitto of the test's own (no other test's collector can see
  or acknowledge its batches).
* ``mqtt_peer``: a plain paho client on that broker that publishes and records what the
  collector sends.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from tests.brokers import shared_port

from sanduan.central.store import Store, open_store
from sanduan.shared import topics
from sanduan.shared.wire import Message, decode

PG_BASE = os.environ.get("SANDUAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BROKER = ("127.0.0.1", shared_port())


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


PG_UP = _reachable("127.0.0.1", 5432)
BROKER_UP = _reachable(*BROKER)

needs_broker = pytest.mark.skipif(not BROKER_UP, reason="no MQTT broker on 127.0.0.1:1883")


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-20:]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_url_factory() -> Iterator[Callable[[], str]]:
    """Makes PostgreSQL URLs, each pointing at a fresh schema (dropped after the test)."""
    if not PG_UP:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    schemas: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_BASE, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return f"{PG_BASE}?options=-csearch_path%3D{schema}"

    yield make
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        for schema in schemas:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _url(backend: str, tmp_path: Any, pg: Callable[[], str]) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    return pg()


BACKENDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def raw_store_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    """An empty (unmigrated) database of the parametrized backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_url_factory")
    return factory()


@pytest.fixture
def store_url(raw_store_url: str) -> str:
    open_store(raw_store_url, migrate=True).close()
    return raw_store_url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


class MqttPeer:
    """A station's side of the link, reduced to what tests need: publish raw bytes, and collect
    the acks, nacks and resend requests the collector sends to the stations in ``stations``."""

    def __init__(self, client_id: str, stations: list[str], port: int = BROKER[1]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: queue.Queue[tuple[str, Message]] = queue.Queue()
        self.on_ack: Callable[[Message], None] | None = None
        self._subscribed: queue.Queue[bool] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._stations = stations
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.put(True)
        self._client.on_message = self._on_message
        self._client.connect(BROKER[0], port, keepalive=30)
        self._client.loop_start()
        self._subscribed.get(timeout=5)

    def _on_connect(self, client: Any, *args: Any) -> None:
        subs = []
        for st in self._stations:
            subs += [(topics.ack_topic(st), 1), (topics.resend_topic(st), 1)]
            subs += [(topics.nack_topic(st), 1)]
        client.subscribe(subs)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        m = decode(msg.payload)
        if self.on_ack is not None:
            self.on_ack(m)
        self.received.put((msg.topic, m))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def get(self, timeout: float = 5.0) -> Message:
        return self.received.get(timeout=timeout)[1]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def broker_port(tmp_path: Any) -> Iterator[int]:
    import shutil
    import sys
    from pathlib import Path

    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # so that ``tests.brokers`` imports
        sys.path.insert(0, root)
    from tests.brokers import PrivateBroker

    d = tmp_path / "broker"
    d.mkdir()
    b = PrivateBroker(d).start()
    yield b.port
    b.kill()


@pytest.fixture
def mqtt_peer(uid: str, broker_port: int) -> Iterator[Callable[..., MqttPeer]]:
    """Makes peers on the test's own broker: ``mqtt_peer(stations)``."""
    peers: list[MqttPeer] = []

    def make(stations: list[str], port: int = broker_port) -> MqttPeer:
        p = MqttPeer(f"peer-{uid}-{len(peers)}", stations, port)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()

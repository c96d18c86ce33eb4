"""The shipped Mosquitto configuration on a real broker: TLS, per-station and per-collector
credentials, client ids bound to user names, topic ACLs and message size limits.

Every test runs the files in deploy/mosquitto as shipped (only paths, port and persistence are
changed, see tests/brokers.py).
"""

from __future__ import annotations

import re
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.brokers import DEPLOY, TlsBroker, have_mosquitto_tls

from sanduan.hil.rig import sanduan_argv
from sanduan.shared import topics, wire
from sanduan.shared.config import CentralConfig, IngestConfig, load_central_config
from sanduan.shared.topics import Kind

pytestmark = [
    pytest.mark.skipif(
        not have_mosquitto_tls(), reason="needs mosquitto, mosquitto_passwd and openssl"
    ),
    pytest.mark.mosquitto,
]

EXAMPLE_STATION = "CX-GT-01"
OPS = "ops"
"""The shipped operators' user: sends commands, reads their results."""


def _collector_users() -> list[str]:
    """The collector users of the shipped ACL (its ``user`` blocks)."""
    acl = (DEPLOY / "sanduan.acl").read_text(encoding="utf-8")
    return [u for u in re.findall(r"^user (\S+)$", acl, flags=re.MULTILINE) if u != OPS]


def _conf_value(name: str) -> int:
    conf = (DEPLOY / "sanduan.conf").read_text(encoding="utf-8")
    m = re.search(rf"^{name} (\d+)$", conf, flags=re.MULTILINE)
    assert m is not None, f"sanduan.conf has no {name}"
    return int(m.group(1))


USERS = {
    **{u: f"{u}-pw" for u in _collector_users()},
    OPS: "ops-pw",
    "viewer": "viewer-pw",
    "S1": "s1-pw",
    "S2": "s2-pw",
    EXAMPLE_STATION: "ex-pw",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    b = TlsBroker.start(tmp_path_factory.mktemp("broker"), USERS)
    yield b
    b.stop()


class Client:
    """A paho client that records what happens to it."""

    def __init__(
        self, broker: TlsBroker, user: str | None, client_id: str, *, v5: bool = True
    ) -> None:
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        c.tls_set(ca_certs=str(broker.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if user is not None:
            c.username_pw_set(user, USERS.get(user, "wrong"))
        c.reconnect_delay_set(5, 10)  # no quick reconnects: a disconnect stays visible
        self.c = c
        self.port = broker.port
        self.messages: list[tuple[str, bytes]] = []
        self.connects: list[int] = []
        self.disconnects = 0
        self.pubacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish

    def _on_connect(self, c: object, u: object, f: object, rc: object, p: object = None) -> None:
        self.connects.append(int(getattr(rc, "value", 0)))
        self._connected.set()

    def _on_disconnect(self, c: object, u: object, f: object, rc: object, p: object) -> None:
        self.disconnects += 1

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload)))

    def _on_publish(self, c: object, u: object, mid: int, rc: object, p: object) -> None:
        self.pubacks[mid] = int(getattr(rc, "value", 0))

    def connect(self) -> int:
        """Connect and wait for the CONNACK; its reason code (0: accepted), -1 if none."""
        self.c.connect("localhost", self.port)
        self.c.loop_start()
        self._connected.wait(5)
        return self.connects[0] if self.connects else -1

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(f, 1) for f in filters])
        assert done.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> int:
        return self.c.publish(topic, payload, qos=1).mid

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def clients(broker: TlsBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(user: str | None, client_id: str, *, v5: bool = True) -> Client:
        c = Client(broker, user, client_id, v5=v5)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _marker(client: Client, own_topic: str, payload: bytes = b"marker") -> None:
    """Publish to a topic the client may write and wait for its PUBACK: after it, anything
    published before it has been routed (or refused) by the broker."""
    mid = client.publish(own_topic, payload)
    assert _until(lambda: mid in client.pubacks), f"no PUBACK for {own_topic}"


# --- authentication ------------------------------------------------------------------------


def test_anonymous_and_wrong_password_are_refused(clients: Callable[..., Client]) -> None:
    assert clients(None, "acl-anon").connect() != 0
    assert clients("nobody", "acl-nobody").connect() != 0
    bad = clients("S1", "acl-bad")
    bad.c.username_pw_set("S1", "wrong")
    assert bad.connect() != 0


def test_plain_tcp_is_refused(broker: TlsBroker) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acl-plain", protocol=mqtt.MQTTv5)
    c.username_pw_set("S1", "s1-pw")
    with pytest.raises(OSError):
        c.connect("localhost", broker.port)
        for _ in range(20):
            c.loop(0.1)
        if not c.is_connected():
            raise ConnectionError("not connected")


# --- identity --------------------------------------------------------------------------------


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_station_cannot_take_a_collectors_client_id(
    clients: Callable[..., Client], v5: bool
) -> None:
    user = _collector_users()[0]
    collector = clients(user, "sanduan-central-host-1")
    assert collector.connect() == 0
    collector.subscribe(topics.filter_for(Kind.BATCH))
    # Both the id the collector sent and the id the broker gave it (its user name).
    for i, stolen in enumerate(["sanduan-central-host-1", user]):
        thief = clients("S1", stolen, v5=v5)
        assert thief.connect() == 0
        _marker(thief, topics.batch_topic("S1"), f"from-thief-{i}".encode())
    time.sleep(1.0)
    assert collector.disconnects == 0, "the collector was disconnected"
    assert collector.c.is_connected()
    assert _until(lambda: len(collector.messages) == 2)
    assert sorted(p for _, p in collector.messages) == [b"from-thief-0", b"from-thief-1"]


def test_two_connections_with_one_station_login_replace_each_other_not_others(
    clients: Callable[..., Client],
) -> None:
    s2 = clients("S2", "S2")
    assert s2.connect() == 0
    first = clients("S1", "one")
    assert first.connect() == 0
    second = clients("S1", "two")
    assert second.connect() == 0
    assert _until(lambda: first.disconnects == 1)  # same user, so same client id
    time.sleep(0.5)
    assert s2.disconnects == 0 and second.disconnects == 0


# --- topics ----------------------------------------------------------------------------------


def test_station_can_only_publish_its_own_uplink_topics(clients: Callable[..., Client]) -> None:
    everything = clients(_collector_users()[0], "acl-watch-all")
    assert everything.connect() == 0
    everything.subscribe(*(topics.filter_for(k) for k in Kind))
    s2 = clients("S2", "acl-s2")
    assert s2.connect() == 0
    s2.subscribe(topics.station_filter("S2"))
    s1 = clients("S1", "acl-s1")
    assert s1.connect() == 0
    time.sleep(0.3)
    for kind in Kind:
        s1.publish(topics.topic("S2", kind), b"forged")  # as station S2
        if kind in topics.DOWNLINK:
            s1.publish(topics.topic("S1", kind), b"forged")  # a centre message to itself
            s1.publish(topics.topic("S2", kind), b"forged")
    for kind in sorted(topics.UPLINK):
        _marker(s1, topics.topic("S1", kind), b"own")
    assert _until(lambda: len(everything.messages) == len(topics.UPLINK))
    time.sleep(0.5)
    assert sorted(everything.topics()) == sorted(topics.topic("S1", k) for k in topics.UPLINK)
    assert s2.messages == []


def test_station_reads_only_its_own_downlink_topics(clients: Callable[..., Client]) -> None:
    s1 = clients("S1", "acl-s1-sub")
    assert s1.connect() == 0
    s1.subscribe("sanduan/v1/#", topics.station_filter("S2"), "#")
    central = clients(_collector_users()[0], "acl-central-pub")
    assert central.connect() == 0
    s2 = clients("S2", "acl-s2-pub")
    assert s2.connect() == 0
    time.sleep(0.3)
    for kind in sorted(topics.UPLINK):
        _marker(s2, topics.topic("S2", kind), b"s2-uplink")
    for kind in sorted(topics.DOWNLINK):
        _marker(central, topics.topic("S2", kind), b"for-s2")
    for kind in sorted(topics.DOWNLINK):
        _marker(central, topics.topic("S1", kind), b"for-s1")
    assert _until(lambda: len(s1.messages) >= len(topics.DOWNLINK))
    time.sleep(0.5)
    # Each message at most once per matching subscription; only S1's own downlink kinds.
    assert set(s1.topics()) == {topics.topic("S1", k) for k in topics.DOWNLINK}
    assert all(p == b"for-s1" for _, p in s1.messages)


def test_only_collectors_and_ops_command_a_station(clients: Callable[..., Client]) -> None:
    """A station reads only its own commands; another station, a user without ACL entries and
    a station commanding itself cannot publish one; the collector and ops users can. Results
    go only from a station's own login to the collector and ops."""
    s1 = clients("S1", "acl-cmd-s1")
    assert s1.connect() == 0
    s1.subscribe(topics.filter_for(Kind.CMD), topics.filter_for(Kind.RESULT))
    s2 = clients("S2", "acl-cmd-s2")
    assert s2.connect() == 0
    viewer = clients("viewer", "acl-cmd-viewer")
    assert viewer.connect() == 0
    ops = clients(OPS, "acl-cmd-ops")
    assert ops.connect() == 0
    ops.subscribe(topics.filter_for(Kind.RESULT))
    central = clients(_collector_users()[0], "acl-cmd-central")
    assert central.connect() == 0
    time.sleep(0.3)
    s2.publish(topics.cmd_topic("S1"), b"from-s2")  # another station
    viewer.publish(topics.cmd_topic("S1"), b"from-viewer")  # a user with no ACL entry
    s1.publish(topics.cmd_topic("S1"), b"from-s1")  # a station to itself
    s2.publish(topics.result_topic("S1"), b"forged-result")  # a result in S1's name
    _marker(s2, topics.batch_topic("S2"))
    _marker(viewer, topics.batch_topic("S1"))  # refused too, but its PUBACK comes
    _marker(ops, topics.cmd_topic("S1"), b"from-ops")
    _marker(central, topics.cmd_topic("S1"), b"from-central")
    _marker(central, topics.cmd_topic("S2"), b"for-s2")
    _marker(s1, topics.result_topic("S1"), b"s1-result")
    assert _until(lambda: len(s1.messages) >= 2 and len(ops.messages) >= 1)
    time.sleep(0.5)
    assert sorted(s1.messages) == [
        (topics.cmd_topic("S1"), b"from-central"),
        (topics.cmd_topic("S1"), b"from-ops"),
    ]
    assert ops.messages == [(topics.result_topic("S1"), b"s1-result")]


# --- sizes -----------------------------------------------------------------------------------


def test_size_limit_matches_the_collectors_default() -> None:
    limit = _conf_value("message_size_limit")
    assert limit == IngestConfig().max_message_bytes
    example = load_central_config(DEPLOY.parent / "central.example.toml")
    assert limit == example.ingest.max_message_bytes
    assert limit < _conf_value("max_packet_size") <= limit + 4096


def test_oversize_publish_is_refused_and_harms_no_one_else(
    clients: Callable[..., Client],
) -> None:
    limit = _conf_value("message_size_limit")
    collector = clients(_collector_users()[0], "acl-size-central")
    assert collector.connect() == 0
    collector.subscribe(topics.filter_for(Kind.BATCH))
    s2 = clients("S2", "acl-size-s2")
    assert s2.connect() == 0
    # Just over the payload limit: dropped, the sender told so (PUBACK 0x95 packet too large).
    s1 = clients("S1", "acl-size-s1")
    assert s1.connect() == 0
    mid = s1.publish(topics.batch_topic("S1"), b"x" * (limit + 1))
    assert _until(lambda: mid in s1.pubacks or s1.disconnects > 0, 10)
    assert s1.pubacks.get(mid, 0x95) == 0x95
    # Far over it (the packet limit too): the sender is disconnected without it being read.
    s1b = clients("S1", "acl-size-s1b", v5=False)
    assert s1b.connect() == 0
    s1b.publish(topics.batch_topic("S1"), b"y" * (8 * limit))
    assert _until(lambda: s1b.disconnects > 0, 10)
    # At the limit: delivered. Others carry on.
    _marker(s2, topics.batch_topic("S2"), b"z" * limit)
    _marker(s2, topics.batch_topic("S2"), b"small")
    assert _until(lambda: len(collector.messages) == 2, 10)
    time.sleep(0.5)
    assert [len(p) for _, p in collector.messages] == [limit, 5]
    assert collector.disconnects == 0 and s2.disconnects == 0


# --- the shipped example still works -------------------------------------------------------


def test_every_shipped_collector_and_the_example_station_work(
    broker: TlsBroker, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    """Every collector user of the shipped ACL, each a real :class:`Collector` with the example
    central.toml's settings (its subscription group), at the same time; the example station's
    login publishes batches, each is stored once and its ack reaches the station."""
    from sanduan.central.ingest import Collector
    from sanduan.central.store import open_store

    example = load_central_config(DEPLOY.parent / "central.example.toml")
    url = f"sqlite:///{tmp_path / 'central.db'}"
    open_store(url, migrate=True).close()
    collectors = []
    for user in _collector_users():
        mqtt_cfg = example.mqtt.replace(
            broker=f"mqtts://localhost:{broker.port}",
            username=user,
            password=USERS[user],
            password_file=None,
            client_id=f"collector-{user}",
            tls=example.mqtt.tls.replace(ca_file=broker.ca) if example.mqtt.tls else None,
        )
        cfg = CentralConfig(central=example.central, mqtt=mqtt_cfg, ingest=example.ingest)
        c = Collector(cfg, store_url=url)
        c.start()
        collectors.append(c)
    try:
        for c in collectors:
            assert c.wait_connected(10), f"{c.cfg.mqtt.username} did not subscribe"
        st = clients(EXAMPLE_STATION, "sanduan-edge-example")
        assert st.connect() == 0
        st.subscribe(topics.ack_topic(EXAMPLE_STATION))
        n = 6 * len(collectors)
        now = int(time.time() * 1000)
        for b in range(1, n + 1):
            batch = wire.Batch.from_columns(
                EXAMPLE_STATION, b, now, seq=[b], ts_ms=[now - 60_000], code=["w01001"],
                values=[7.0 + b / 100],
            )  # fmt: skip
            st.publish(topics.batch_topic(EXAMPLE_STATION), wire.encode(batch))
        assert _until(lambda: len(st.messages) == n, 20), f"{len(st.messages)} of {n} acks"
        acked = sorted(wire.decode_ack(p).batch_seq for _, p in st.messages)
        assert acked == list(range(1, n + 1))
        shares = [c.stats().get("batches", 0) for c in collectors]
        assert sum(shares) == n and min(shares) > 0, shares  # the group split the batches
        assert all(c.stats().get("dead_letters", 0) == 0 for c in collectors)
    finally:
        for c in collectors:
            c.stop()


def test_systemd_instance_logs_in_as_its_own_user(broker: TlsBroker, tmp_path: Path) -> None:
    """``sanduan central run --mqtt-user central-N --mqtt-password-file ...`` as the systemd unit
    runs it: the example config's login replaced by the instance's."""
    unit = (DEPLOY.parent / "systemd" / "sanduan-central@.service").read_text(encoding="utf-8")
    assert "--mqtt-user central-%i --mqtt-password-file %d/mqtt-password" in unit
    assert "LoadCredential=mqtt-password:/etc/sanduan/central-%i.password" in unit
    user = "central-2"
    assert user in _collector_users()
    pw = tmp_path / f"{user}.password"
    pw.write_text(USERS[user] + "\n", encoding="utf-8")
    text = (DEPLOY.parent / "central.example.toml").read_text(encoding="utf-8")
    db = tmp_path / "central.db"
    text = text.replace('"sqlite:////var/lib/sanduan/central.db"', f'"sqlite:///{db}"')
    text = text.replace("mqtts://127.0.0.1:8883", f"mqtts://localhost:{broker.port}")
    text = text.replace('"/etc/sanduan/ca.pem"', f'"{broker.ca}"')
    text = re.sub(r"^(county|rules) = .*$", "", text, flags=re.MULTILINE)
    cfg = tmp_path / "central.toml"
    cfg.write_text(text, encoding="utf-8")
    argv = [*sanduan_argv(), "central", "run", "--config", str(cfg), "--migrate"]
    argv += ["--mqtt-user", user, "--mqtt-password-file", str(pw)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "subscribed to" in line:
                break
        assert any("subscribed to" in x for x in lines), "".join(lines)
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0, "".join(lines)

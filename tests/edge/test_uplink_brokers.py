"""The uplink against other brokers than the shared Mosquitto: the shipped TLS + password + ACL
configuration, the embedded amqtt broker (MQTT 3.1.1 only: protocol "auto" falls back), and the
last will published when the agent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from tests.brokers import AmqttBroker, TlsBroker, have_mosquitto_tls
from tests.edge.acker import Acker
from tests.edge.agent_harness import AgentThread, fake, station_config, wait_until
from tests.edge.conftest import PrivateBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

STATION = "S-tls-1"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    if not have_mosquitto_tls():
        pytest.skip("needs mosquitto, mosquitto_passwd and openssl")
    broker = TlsBroker.start(
        tmp_path_factory.mktemp("tls"), {"central": "c-pw", STATION: "st-pw", "other": "o-pw"}
    )
    yield broker
    broker.stop()


def run_until_all_acked(at: AgentThread, acker: Acker, station: str, n: int) -> None:
    at.start()
    assert wait_until(lambda: at.agent is not None and at.agent.committed == n, timeout=30)
    sent = at.agent.forwarder.batches_sent if at.agent and at.agent.forwarder else 0
    assert acker.wait_for(lambda a: len(a.seqs(station)) == n, timeout=30), (
        f"{len(acker.seqs(station))} of {n} readings received, {sent} batches sent"
    )
    assert wait_until(
        lambda: at.agent is not None and at.agent.outbox is not None and at.agent.outbox.depth == 0,
        timeout=30,
    )


def test_tls_with_password_and_acl_every_reading_acked(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    polls = 100
    n = polls * 4
    cfg = station_config(
        STATION,
        tmp_path / "b.db",
        tls_broker.port,
        broker=f"mqtts://localhost:{tls_broker.port}",
        username=STATION,
        password="st-pw",
        tls={"ca_file": str(tls_broker.ca)},
    )
    with Acker(
        "localhost",
        tls_broker.port,
        station=STATION,
        username="central",
        password="c-pw",
        ca_file=str(tls_broker.ca),
    ) as acker:
        at = AgentThread(cfg, fake(0.005, limit=polls))
        run_until_all_acked(at, acker, STATION, n)
        assert at.agent is not None and at.agent.uplink is not None
        assert at.agent.uplink.protocol == "5"
        at.stop()
        assert acker.seqs(STATION) == set(range(1, n + 1))
        assert acker.conflicts == []
        assert any(s.online for s in acker.statuses)
        assert acker.wait_for(lambda a: any(not s.online for s in a.statuses))


def test_tls_wrong_password_never_connects(tls_broker: TlsBroker, tmp_path: Path) -> None:
    cfg = station_config(
        STATION,
        tmp_path / "b.db",
        broker=f"mqtts://localhost:{tls_broker.port}",
        username=STATION,
        password="wrong",
        tls={"ca_file": str(tls_broker.ca)},
    )
    at = AgentThread(cfg, fake(0.01, limit=20)).start()
    assert wait_until(lambda: at.agent is not None and at.agent.committed == 80)
    time.sleep(1.0)
    assert at.agent is not None and at.agent.uplink is not None
    assert not at.agent.uplink.ever_connected
    assert at.agent.outbox is not None and at.agent.outbox.depth == 80  # all kept
    at.stop()


def test_auto_falls_back_to_mqtt_311_on_the_embedded_broker(
    station_id: str, tmp_path: Path
) -> None:
    pytest.importorskip("amqtt")
    broker = AmqttBroker.start()
    try:
        polls = 50
        n = polls * 4
        # amqtt refuses anonymous sessions and MQTT 5; the station sends a user name.
        cfg = station_config(station_id, tmp_path / "b.db", broker.port, username=station_id)
        assert cfg.uplink.protocol == "auto"
        with Acker(
            port=broker.port,
            station=station_id,
            username="central",
            protocol=MQTTProtocolVersion.MQTTv311,
        ) as acker:
            at = AgentThread(cfg, fake(0.005, limit=polls))
            run_until_all_acked(at, acker, station_id, n)
            assert at.agent is not None and at.agent.uplink is not None
            assert at.agent.uplink.protocol == "3.1.1"
            assert at.agent.uplink.connects >= 1
            at.stop()
            assert acker.seqs(station_id) == set(range(1, n + 1))
            assert acker.conflicts == []
            assert any(s.extra.get("mqtt") == "3.1.1" for s in acker.statuses)
    finally:
        broker.stop()


def test_last_will_published_when_the_agent_is_killed(
    private_broker: PrivateBroker, station_id: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "station.toml"
    cfg.write_text(
        f"""
[station]
id = "{station_id}"

[buffer]
path = "{tmp_path / "b.db"}"
commit_interval_s = 0.1

[uplink]
broker = "mqtt://127.0.0.1:{private_broker.port}"
heartbeat_s = 0.5
batch_max_age_s = 0.2

[grading]
engine = "numpy"
""",
        encoding="utf-8",
    )
    sanduan = str(Path(sys.executable).with_name("sanduan"))
    with Acker(port=private_broker.port, station=station_id) as acker:
        proc = subprocess.Popen(
            [sanduan, "edge", "run", "--config", str(cfg), "--fake-source", "0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ok = acker.wait_for(
                lambda a: any(s.online for s in a.statuses) and len(a.received) > 0, timeout=30
            )
            if not ok and proc.poll() is not None and proc.stderr is not None:
                pytest.fail(proc.stderr.read().decode(errors="replace")[-2000:])
            assert ok
            with acker.lock:
                seen = len(acker.statuses)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # No clean shutdown ran: the broker publishes the will.
        assert acker.wait_for(lambda a: any(not s.online for s in a.statuses[seen:]), timeout=15)
        with acker.lock:
            will = next(s for s in acker.statuses[seen:] if not s.online)
        assert will.station == station_id
        assert proc.returncode == -signal.SIGKILL

"""deploy/mosquitto dropped into a stock Debian Mosquitto, started the way Debian starts it.

Debian's ``/etc/mosquitto/mosquitto.conf`` sets pid_file, persistence, persistence_location,
log_dest and ``include_dir /etc/mosquitto/conf.d``. The test copies that file into a temporary
root, moves only its absolute paths into that root, drops the shipped ``sanduan.conf`` into the
root's ``conf.d`` (its absolute paths moved the same way, its ``listener 8883`` line moved to a
free port on 127.0.0.1), the shipped ACL, a password file made with ``mosquitto_passwd`` and
test certificates where the snippet's header says, and runs ``mosquitto -c mosquitto.conf``.

The stock file: ``/etc/mosquitto/mosquitto.conf`` when it is the one Debian ships (its MD5 is the
package's conffile sum), otherwise ``tests/deploy/data/debian-mosquitto.conf``: the file
``/etc/mosquitto/mosquitto.conf`` of Debian 12's ``mosquitto_2.0.11-1.2+deb12u2_amd64.deb``,
unchanged (MD5 9cdb6b0ea869818b4e3dc5ee610d1fb4, the sum ``dpkg-query -W -f='${Conffiles}'
mosquitto`` lists for it).
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.brokers import DEPLOY, free_port, have_mosquitto_tls, make_certificates, wait_port

from sanduan.shared import topics

pytestmark = [
    pytest.mark.skipif(
        not have_mosquitto_tls(), reason="needs mosquitto, mosquitto_passwd and openssl"
    ),
]

STOCK_MD5 = "9cdb6b0ea869818b4e3dc5ee610d1fb4"
CHECKED_IN = Path(__file__).parent / "data" / "debian-mosquitto.conf"
SYSTEM = Path("/etc/mosquitto/mosquitto.conf")
USERS = {"central-1": "c1-pw", "S1": "s1-pw", "S2": "s2-pw"}
GROUP = "collectors"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def stock_conf() -> Path:
    """Debian's stock mosquitto.conf: the system's when unmodified, else the checked-in copy."""
    if SYSTEM.is_file() and _md5(SYSTEM) == STOCK_MD5:
        return SYSTEM
    return CHECKED_IN


def directives(text: str) -> list[str]:
    """The option names of a Mosquitto configuration file, in order."""
    lines = (line.strip() for line in text.splitlines())
    return [line.split()[0] for line in lines if line and not line.startswith("#")]


def reroot(text: str, root: Path) -> str:
    """Every absolute path in an option's value moved under ``root``; nothing else changed."""
    path = re.compile(r"(?<=\s)(/(?:etc|var|run)/\S*)")
    return "".join(
        line if line.lstrip().startswith("#") else path.sub(lambda m: f"{root}{m.group(1)}", line)
        for line in text.splitlines(keepends=True)
    )


def test_checked_in_stock_file_is_debians() -> None:
    assert _md5(CHECKED_IN) == STOCK_MD5
    assert "include_dir /etc/mosquitto/conf.d" in CHECKED_IN.read_text(encoding="utf-8")


def test_snippet_repeats_nothing_the_stock_file_sets() -> None:
    stock = set(directives(stock_conf().read_text(encoding="utf-8")))
    assert {"persistence", "persistence_location", "log_dest", "include_dir"} <= stock
    snippet = directives((DEPLOY / "sanduan.conf").read_text(encoding="utf-8"))
    assert not stock & set(snippet), sorted(stock & set(snippet))
    assert len(snippet) == len(set(snippet)), "an option appears twice in sanduan.conf"


@dataclass
class DebianBroker:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "mosquitto"

    @property
    def log(self) -> Path:
        return self.root / "var" / "log" / "mosquitto" / "mosquitto.log"


def _install(root: Path, port: int) -> Path:
    """The centre's /etc/mosquitto under ``root``, laid out as sanduan.conf's header says."""
    etc = root / "etc" / "mosquitto"
    for d in ("conf.d", "certs", "ca_certificates"):
        (etc / d).mkdir(parents=True)
    for d in ("var/lib/mosquitto", "var/log/mosquitto", "run/mosquitto"):
        (root / d).mkdir(parents=True)
    conf = etc / "mosquitto.conf"
    conf.write_text(reroot(stock_conf().read_text(encoding="utf-8"), root), encoding="utf-8")
    snippet, n = re.subn(
        r"^listener 8883$",
        f"listener {port} 127.0.0.1",
        reroot((DEPLOY / "sanduan.conf").read_text(encoding="utf-8"), root),
        flags=re.MULTILINE,
    )
    assert n == 1, "sanduan.conf has no 'listener 8883' line"
    (etc / "conf.d" / "sanduan.conf").write_text(snippet, encoding="utf-8")
    if os.geteuid() == 0:
        # Started as root, the broker would run as "mosquitto", which cannot enter pytest's
        # private temporary folder. Only this test's addition; the shipped files are unchanged.
        (etc / "conf.d" / "zz-test-user.conf").write_text(
            f"user {getpass.getuser()}\n", encoding="utf-8"
        )
    shutil.copy(DEPLOY / "sanduan.acl", etc / "sanduan.acl")
    passwd = etc / "sanduan.passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, pw], check=True)
    make_certificates(etc / "certs")
    (etc / "certs" / "ca.crt").rename(etc / "ca_certificates" / "ca.crt")
    for f in (passwd, etc / "sanduan.acl", etc / "certs" / "server.key"):
        f.chmod(0o600)
    return conf


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianBroker]:
    root = tmp_path_factory.mktemp("debian")
    port = free_port()
    conf = _install(root, port)
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    b = DebianBroker(root, port, proc)
    if not wait_port(port, proc):
        proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
        log = b.log.read_text(errors="replace") if b.log.exists() else ""
        pytest.fail(f"mosquitto did not start:\n{out}\n{log}")
    yield b
    proc.terminate()
    proc.wait(10)


class Client:
    def __init__(self, broker: DebianBroker, user: str) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
        c.tls_set(
            ca_certs=str(broker.etc / "ca_certificates" / "ca.crt"),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        c.username_pw_set(user, USERS[user])
        self.c = c
        self.messages: list[str] = []
        self.got = threading.Condition()
        self.connected = threading.Event()
        self.rc = -1
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect("localhost", broker.port)
        c.loop_start()
        assert self.connected.wait(5), f"{user}: no CONNACK"
        assert self.rc == 0, f"{user}: refused ({self.rc})"

    def _on_connect(self, c: object, u: object, f: object, rc: object, p: object) -> None:
        self.rc = int(getattr(rc, "value", -2))
        self.connected.set()

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        with self.got:
            self.messages.append(m.topic)
            self.got.notify_all()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5), "no SUBACK"

    def publish(self, topic: str) -> None:
        self.c.publish(topic, b"x", qos=1).wait_for_publish(5)

    def wait_for(self, topic: str) -> list[str]:
        """Everything received up to and including ``topic`` (which must arrive)."""
        with self.got:
            assert self.got.wait_for(lambda: topic in self.messages, 5), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.mosquitto
@pytest.mark.process
def test_stock_debian_broker_with_the_snippet(broker: DebianBroker) -> None:
    assert broker.proc.poll() is None
    log = broker.log.read_text(encoding="utf-8", errors="replace")
    # A configuration error is logged before "running"; what comes after is about clients (the
    # readiness probe's plain TCP connection to the TLS listener logs an OpenSSL error).
    lines = log.splitlines()
    running = next(
        (i for i, line in enumerate(lines) if "mosquitto version" in line and "running" in line),
        len(lines),
    )
    startup = "\n".join(lines[: running + 1])
    assert "Duplicate" not in log and "Error" not in startup, log
    assert f"Opening ipv4 listen socket on port {broker.port}" in log, log

    collector = Client(broker, "central-1")
    s1 = Client(broker, "S1")
    try:
        collector.subscribe(f"$share/{GROUP}/{topics.filter_for(topics.Kind.BATCH)}")
        s1.subscribe(topics.ack_topic("S1"))
        s1.subscribe(topics.ack_topic("S2"))  # granted, but the ACL delivers nothing from it

        # S1 publishes as S2 (dropped by the ACL), then its own batch: only its own arrives.
        s1.publish(topics.batch_topic("S2"))
        s1.publish(topics.batch_topic("S1"))
        assert collector.wait_for(topics.batch_topic("S1")) == [topics.batch_topic("S1")]

        # The collector acknowledges S2, then S1: S1 reads only its own ack.
        collector.publish(topics.ack_topic("S2"))
        collector.publish(topics.ack_topic("S1"))
        assert s1.wait_for(topics.ack_topic("S1")) == [topics.ack_topic("S1")]
    finally:
        s1.close()
        collector.close()

    broker.proc.terminate()
    assert broker.proc.wait(10) == 0
    # Debian's persistence settings, not the snippet's, put the database where they say.
    assert (broker.root / "var" / "lib" / "mosquitto" / "mosquitto.db").is_file()

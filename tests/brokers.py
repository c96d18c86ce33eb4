"""Brokers for tests: the shipped Mosquitto configuration (TLS, passwords, ACLs) on a free port,
and the embedded amqtt broker (MQTT 3.1.1 only) in a subprocess.

    broker = TlsBroker.start(tmp_dir, {"central": "c-pw", "S1": "s1-pw"})
    ... broker.port, broker.ca ...
    broker.stop()
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"


def have_mosquitto_tls() -> bool:
    return bool(
        shutil.which("mosquitto") and shutil.which("openssl") and shutil.which("mosquitto_passwd")
    )


SHARED_PORT_ENV = "SANDUAN_TEST_BROKER_PORT"


def shared_port() -> int:
    """The port of "the local Mosquitto": the worker's own under pytest-xdist (started by
    tests/conftest.py), else 1883."""
    return int(os.environ.get(SHARED_PORT_ENV, "1883"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class PrivateBroker:
    """A Mosquitto of the test's own on a free port (no other test's traffic reaches it), which
    the test may kill and start again on the same port. No persistence: a killed broker forgets
    every session and queued message."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateBroker:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_port(self.port, self.proc):
            self.kill()
            raise RuntimeError(f"private mosquitto did not start ({self.conf})")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    """A test CA (``ca.crt``) and a server certificate for localhost / 127.0.0.1 in ``d``."""
    subj_ca = ("-subj", "/CN=sanduan-test-ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *subj_ca,
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt",
             cwd=d)  # fmt: skip


def shipped_config(d: Path, port: int, passwd: Path, acl: Path) -> str:
    """deploy/mosquitto/sanduan.conf alone with the test's files, port and user. Without Debian's
    mosquitto.conf around it persistence stays off (Mosquitto's default)."""
    conf = (DEPLOY / "sanduan.conf").read_text(encoding="utf-8")
    replacements = {
        r"^password_file .*$": f"password_file {passwd}",
        r"^acl_file .*$": f"acl_file {acl}",
        r"^listener 8883$": f"listener {port} 127.0.0.1",
        r"^certfile .*$": f"certfile {d / 'server.crt'}",
        r"^keyfile .*$": f"keyfile {d / 'server.key'}",
        r"^cafile .*$": f"cafile {d / 'ca.crt'}",
    }
    for pattern, repl in replacements.items():
        conf, n = re.subn(pattern, repl, conf, flags=re.MULTILINE)
        if n != 1:
            raise AssertionError(f"shipped config lost the line {pattern}")
    # Run as the test's own user: as root, mosquitto would switch to "mosquitto" and could not
    # read the files in the test's temporary folder.
    return f"user {getpass.getuser()}\n" + conf


@dataclass
class TlsBroker:
    """Mosquitto with the shipped TLS + password + ACL configuration on a free port."""

    port: int
    ca: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, d: Path, users: dict[str, str]) -> TlsBroker:
        make_certificates(d)
        passwd = d / "sanduan.passwd"
        for i, (user, pw) in enumerate(users.items()):
            flags = ["-c"] if i == 0 else []
            subprocess.run(["mosquitto_passwd", *flags, "-b", str(passwd), user, pw], check=True)
        passwd.chmod(0o600)
        acl = d / "sanduan.acl"
        shutil.copy(DEPLOY / "sanduan.acl", acl)
        acl.chmod(0o600)
        port = free_port()
        cfg = d / "test.conf"
        cfg.write_text(shipped_config(d, port, passwd, acl), encoding="utf-8")
        proc = subprocess.Popen(["mosquitto", "-c", str(cfg)], stderr=subprocess.PIPE)
        if not wait_port(port, proc):
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"test broker did not start: {err.decode(errors='replace')[-2000:]}")
        return cls(port, d / "ca.crt", proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_AMQTT = textwrap.dedent(
    """
    import asyncio, logging, signal, sys
    from amqtt.broker import Broker

    logging.basicConfig(level=logging.ERROR)
    port = int(sys.argv[1])
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}",
                                  "max_connections": 0}},
        "timeout_disconnect_delay": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
        },
    }

    async def main():
        broker = Broker(config)
        await broker.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await asyncio.wait_for(broker.shutdown(), 5)

    asyncio.run(main())
    """
)


@dataclass
class AmqttBroker:
    """The embedded broker (amqtt, MQTT 3.1.1 only, user names required) in a subprocess."""

    port: int
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls) -> AmqttBroker:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", _AMQTT, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_port(port, proc, timeout=20):
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"amqtt did not start: {err.decode(errors='replace')[-2000:]}")
        return cls(port, proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

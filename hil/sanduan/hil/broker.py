"""MQTT brokers for the rig: the embedded amqtt broker as a process, Mosquitto, or an external one.

``python -m sanduan.hil.broker --port N`` runs amqtt (pure Python, MQTT 3.1.1) on 127.0.0.1:N and
prints ``ready <port>`` once it listens. Anonymous connections are refused: amqtt keeps offline
messages only for non-anonymous sessions, so every client must send a user name (any password
is accepted). That is what lets a collector that was killed find its queued batches when it
comes back, as it would on Mosquitto.

The rig drives a broker through :class:`BrokerHandle`: the embedded broker and a private
Mosquitto (``mosquitto`` on PATH, started on a free port with ``max_queued_messages 0`` so no
queued message is dropped) can be killed with SIGKILL and restarted on the same port; an
external broker given by URL is only used, never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["BrokerHandle", "BrokerKind", "amqtt_config", "free_port", "main", "wait_port"]

BrokerKind = Literal["embedded", "mosquitto", "external"]

READY = "ready"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def amqtt_config(host: str, port: int) -> dict[str, Any]:
    """amqtt broker configuration: one TCP listener, user names required, no $SYS chatter."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "timeout_disconnect_delay": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
        },
    }


async def _serve(host: str, port: int) -> None:
    import asyncio
    import logging

    from amqtt.broker import Broker

    logging.basicConfig(level=logging.WARNING)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    broker = Broker(amqtt_config(host, port))
    await broker.start()
    print(f"{READY} {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.shutdown(), timeout=5)


def main(argv: list[str] | None = None) -> None:
    """Run the embedded broker until SIGTERM/SIGINT."""
    import asyncio

    parser = argparse.ArgumentParser(
        prog="python -m sanduan.hil.broker",
        description="Embedded MQTT 3.1.1 broker (amqtt) for the hardware-in-the-loop rig.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


MOSQUITTO_CONF = """\
listener {port} {host}
allow_anonymous true
max_queued_messages 0
max_inflight_messages 100
persistence false
log_dest stderr
log_type error
log_type warning
"""


@dataclass
class BrokerHandle:
    """A broker the rig uses; ``kind`` says whether the rig may kill it.

    ``start()`` launches it (embedded/mosquitto), ``kill()`` sends SIGKILL, ``restart()`` starts
    it again on the same port. For an external broker those do nothing and ``killable`` is False.
    """

    kind: BrokerKind
    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, spec: str | None, workdir: Path) -> BrokerHandle:
        """``None``/"embedded": amqtt process; "mosquitto": a private Mosquitto; else a URL."""
        if spec in (None, "", "embedded"):
            return cls("embedded", "127.0.0.1", free_port(), workdir)
        if spec == "mosquitto":
            if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
                raise FileNotFoundError("mosquitto is not installed; use the embedded broker")
            return cls("mosquitto", "127.0.0.1", free_port(), workdir)
        parts = urlsplit(spec)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(
                f"--broker must be 'embedded', 'mosquitto' or mqtt://host:port, not {spec!r}"
            )
        return cls("external", parts.hostname, parts.port or 1883, workdir)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def killable(self) -> bool:
        return self.kind != "external"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self) -> list[str]:
        if self.kind == "embedded":
            return [sys.executable, "-m", "sanduan.hil.broker", "--port", str(self.port)]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(host=self.host, port=self.port), encoding="utf-8")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [exe, "-c", str(conf)]

    def start(self, timeout: float = 15.0) -> None:
        if self.kind == "external":
            if not wait_port(self.host, self.port, timeout):
                raise ConnectionError(f"no MQTT broker answers on {self.url}")
            return
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"broker-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        if not wait_port(self.host, self.port, timeout):
            self.kill()
            raise ConnectionError(
                f"{self.kind} broker did not listen on {self.url} within {timeout:g} s"
                f" (see {self.workdir})"
            )

    def kill(self) -> bool:
        """SIGKILL the broker process; False when there is nothing the rig may kill."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        return True

    def restart(self) -> None:
        self.kill()
        # The port is free as soon as the process is gone (SO_REUSEADDR on both brokers).
        self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()

"""Fixtures of the hostile-input tests at the centre: stores on both backends (from the central
tests), a private Mosquitto per test (no other test's traffic, any payload size), collectors as
real processes, and a station's side of the link.

* ``broker``: a :class:`~tests.brokers.PrivateBroker` of the test's own.
* ``station``: makes :class:`Station` peers on that broker.
* ``collector_proc``: starts ``sanduan central run`` child processes (killed at the end).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.brokers`` and ``tests.central`` import
    sys.path.insert(0, str(ROOT))

from tests.brokers import PrivateBroker  # noqa: E402
from tests.central import conftest as _central  # noqa: E402

from sanduan.shared import topics  # noqa: E402
from sanduan.shared.wire import Message, decode  # noqa: E402

ENTRY = "from sanduan.cli import main; main()"

# The central tests' fixtures: stores on both backends, unique ids.
backend = _central.backend
pg_url_factory = _central.pg_url_factory
raw_store_url = _central.raw_store_url
store_url = _central.store_url
store = _central.store
uid = _central.uid


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    import shutil

    if not shutil.which("mosquitto"):
        pytest.skip("mosquitto is not installed")
    d = tmp_path / "broker"
    d.mkdir()
    b = PrivateBroker(d).start()
    yield b
    b.kill()


class Station:
    """A station's side of the link on the test's broker: publish raw bytes, collect the acks,
    nacks and resend requests sent to ``stations``."""

    def __init__(self, port: int, client_id: str, stations: list[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: queue.Queue[Message] = queue.Queue()
        self._subscribed: queue.Queue[bool] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.max_inflight_messages_set(1000)
        self._stations = stations
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.put(True)
        self._client.on_message = lambda c, u, m: self.received.put(decode(bytes(m.payload)))
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()
        self._subscribed.get(timeout=5)

    def _on_connect(self, client: Any, *args: Any) -> None:
        client.subscribe(
            [(topics.topic(st, k), 1) for st in self._stations for k in topics.DOWNLINK]
        )

    def publish(self, topic: str, payload: bytes, *, wait: bool = True) -> Any:
        info = self._client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(30)
        return info

    def get(self, timeout: float = 5.0) -> Message:
        return self.received.get(timeout=timeout)

    def drain(self, wait: float) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self.received.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                return out

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def station(broker: PrivateBroker, uid: str) -> Iterator[Callable[[list[str]], Station]]:
    made: list[Station] = []

    def make(stations: list[str]) -> Station:
        s = Station(broker.port, f"st-{uid}-{len(made)}", stations)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def write_config(path: Path, store_url: str, port: int, ingest: str = "") -> Path:
    path.write_text(
        f'[central]\nstore = "{store_url}"\n\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\nsession_expiry_s = 300\n\n'
        f"[ingest]\ngap_timeout_s = 600\n{ingest}",
        encoding="utf-8",
    )
    return path


class CollectorProc:
    """``sanduan central run`` in a child process, its log lines collected."""

    def __init__(self, config: Path, client_id: str, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.p = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "central", "run", "-c", str(config),
             "--client-id", client_id],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no log line matching {pattern!r}; log:\n{''.join(self.log)}"
                ) from None
            if re.search(pattern, line):
                return line

    def rss_kib(self) -> tuple[int, int]:
        """(current, peak) resident set size in KiB, from /proc."""
        text = Path(f"/proc/{self.p.pid}/status").read_text(encoding="ascii")
        fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
        return int(fields["VmRSS"]), int(fields["VmHWM"])

    def terminate(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(20)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


@pytest.fixture
def collector_proc() -> Iterator[Callable[..., CollectorProc]]:
    started: list[CollectorProc] = []

    def make(config: Path, client_id: str, env: dict[str, str] | None = None) -> CollectorProc:
        c = CollectorProc(config, client_id, env)
        started.append(c)
        return c

    yield make
    for c in started:
        c.kill()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False

"""A small stand-in for the central collector, for the edge tests.

Subscribes to ``sanduan/v1/+/batch`` (or one station's batches), decodes every batch, records
which (station, seq) it received and checks that a seq always carries the same reading; then
publishes an :class:`~sanduan.shared.wire.Ack` (unless ``acking`` is off). It can also send
resend requests.

    with Acker(port=shared_port(), station="t-abc") as acker:
        ...
        acker.wait_for(lambda a: len(a.received) >= 100)
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from tests.brokers import shared_port

from sanduan.shared import topics, wire
from sanduan.shared.wire import Ack, Batch, ResendRequest

Key = tuple[str, int]
Row = tuple[int, str, float | None, str, int]


class Acker:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        station: str = "+",
        acking: bool = True,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        answer: Callable[[Batch], list[wire.Message]] | None = None,
    ) -> None:
        self.host = host
        self.port = shared_port() if port is None else port
        self.station = station
        self.acking = acking
        self.answer = answer
        """Replaces the plain ack: the messages to send for a batch (acks, nacks)."""
        self.received: dict[Key, Row] = {}
        self.deliveries: dict[Key, int] = {}
        self.conflicts: list[str] = []
        self.batches: list[Batch] = []
        self.statuses: list[wire.Status] = []
        self.events: list[wire.Event] = []
        self.results: list[wire.CommandResult] = []
        self.acks_sent = 0
        self.streams: set[int] = set()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"acker-{uuid.uuid4().hex[:10]}",
            protocol=protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        st = self.station
        client.subscribe(
            [
                (topics.filter_for(topics.Kind.BATCH, st), 1),
                (topics.filter_for(topics.Kind.STATUS, st), 1),
                (topics.filter_for(topics.Kind.EVENT, st), 1),
                (topics.filter_for(topics.Kind.RESULT, st), 1),
            ]
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        m = wire.decode(bytes(msg.payload))
        with self.cond:
            if isinstance(m, Batch):
                self._record(m)
            elif isinstance(m, wire.Status):
                self.statuses.append(m)
            elif isinstance(m, wire.Event):
                self.events.append(m)
            elif isinstance(m, wire.CommandResult):
                self.results.append(m)
            self.cond.notify_all()
        if isinstance(m, Batch) and self.answer is not None:
            for out in self.answer(m):
                self.send(out)
        elif isinstance(m, Batch) and self.acking:
            ack = Ack(
                m.station,
                m.batch_seq,
                m.first_seq,
                m.last_seq,
                int(time.time() * 1000),
                stream=m.stream,
            )
            client.publish(topics.ack_topic(m.station), wire.encode(ack), qos=1)
            with self.lock:
                self.acks_sent += 1

    def _record(self, b: Batch) -> None:
        self.batches.append(b)
        self.streams.add(b.stream)
        for seq, ts, code, value, flag, grade in b.rows():
            key = (b.station, seq)
            row: Row = (ts, code, None if math.isnan(value) else value, str(flag), grade)
            old = self.received.get(key)
            if old is None:
                self.received[key] = row
            elif old != row:
                self.conflicts.append(f"{key}: first {old}, now {row}")
            self.deliveries[key] = self.deliveries.get(key, 0) + 1

    def resend(
        self, station: str, ranges: list[tuple[int, int]], reason: str = "gap", stream: int = 0
    ) -> None:
        msg = ResendRequest(station, tuple(ranges), int(time.time() * 1000), reason, stream=stream)
        self.client.publish(topics.resend_topic(station), wire.encode(msg), qos=1)

    def send(self, msg: wire.Message) -> None:
        """Publish any downlink message (ack, resend, nack, cmd) to its station."""
        topic = topics.topic(msg.station, msg.KIND)
        self.client.publish(topic, wire.encode(msg), qos=1)

    def seqs(self, station: str) -> set[int]:
        with self.lock:
            return {s for (st, s) in self.received if st == station}

    def wait_for(self, pred: Callable[[Acker], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def start(self) -> Acker:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("acker: no SUBACK from the broker")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Acker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

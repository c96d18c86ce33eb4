"""The collector: MQTT in, database, acknowledgements and resend requests out.

Flow of one message::

    paho network thread --on_message--> queue (per worker, chosen by station) --> worker thread:
        decode + check --bad--> dead_letters (never acknowledged)
        store_batch (one transaction) --commit--> publish Ack (QoS 1) --> MQTT PUBACK

* The paho network thread only enqueues, so it never waits for the database.
* An :class:`~sanduan.shared.wire.Ack` is published only after the transaction commits. A batch
  seen before stores nothing new and is acknowledged again. If the store fails, nothing is
  acknowledged and the station sends the batch again after its ack timeout.
* MQTT-level acknowledgement is manual: the broker's copy of a message is released (PUBACK) only
  after the message has been handled. A collector killed between commit and ack gets the same
  message again from its persistent session when it reconnects, finds it stored, and acks it.
* Every input is caught: a message that cannot be decoded or fails a check (see
  :mod:`sanduan.central.core.ingest_check`) goes to ``dead_letters`` with the reason and the raw
  bytes, and the collector carries on.
* Worker 0 also looks for gaps in the stations' seq numbers: a gap open longer than
  ``gap_timeout_s`` gets a :class:`~sanduan.shared.wire.ResendRequest`, repeated every
  ``resend_interval_s`` while it stays open; the claim is made in the database, so collectors
  sharing a database do not both ask.
* With ``mqtt.group`` set, batches and events are received through a shared subscription
  (``$share/<group>/sanduan/v1/+/batch``) so several collectors split the load; statuses are
  subscribed to by every collector (they are retained, and retained messages are not delivered
  through shared subscriptions).

Authenticated publisher: Mosquitto does not tell a subscriber who published a message, so the
collector can only check that a message's station matches its topic. Bind topics to users at
the broker (``pattern write sanduan/v1/%u/#`` in the ACL file, one MQTT user per station) to
make the topic trustworthy.

Fault injection for tests: ``SANDUAN_CENTRAL_FAULT=exit-after-commit`` ends the process right
after a batch is committed and before it is acknowledged; ``sleep-after-commit:SECONDS`` waits
there instead.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanduan.central.core.ingest_check import check_batch, check_origin, check_values
from sanduan.central.store import Store, StoreResult, open_store
from sanduan.shared import topics
from sanduan.shared.clock import Clock, clock_from_env
from sanduan.shared.config import CentralConfig
from sanduan.shared.errors import StoreError, WireFormatError
from sanduan.shared.topics import Kind
from sanduan.shared.wire import Ack, Batch, Event, ResendRequest, Status, decode, encode

log = logging.getLogger("sanduan.central.ingest")

FAULT_ENV = "SANDUAN_CENTRAL_FAULT"


def _after_commit_fault() -> Callable[[], None] | None:
    spec = os.environ.get(FAULT_ENV, "")
    if spec == "exit-after-commit":

        def _exit() -> None:
            log.warning("%s: exiting after commit, before the ack", FAULT_ENV)
            logging.shutdown()
            os._exit(70)

        return _exit
    if spec.startswith("sleep-after-commit:"):
        seconds = float(spec.split(":", 1)[1])
        return lambda: time.sleep(seconds)
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one message did. ``ack`` is set for a stored batch (to be published);
    ``dead`` holds the dead-letter reason; ``error`` a store failure (nothing acknowledged)."""

    kind: str
    ack: Ack | None = None
    result: StoreResult | None = None
    dead: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Untracked:
    """Readings without a station's seq numbers (from an HJ 212 logger), with the raw message
    they came in (the dead letter if they fail a check) and where it came from."""

    batch: Batch
    raw: bytes
    source: str
    client: str | None = None


class Processor:
    """Decode, check and store one message; shared by the MQTT collector and ``replay``."""

    def __init__(
        self,
        store: Store,
        *,
        max_message_bytes: int,
        clock: Clock | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.max_bytes = max_message_bytes
        self.clock = clock or clock_from_env()
        self.after_commit = after_commit
        self.counts: Counter[str] = Counter()

    def now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _dead(self, source: str, client: str | None, reason: str, raw: bytes, at: int) -> Outcome:
        self.counts["dead_letters"] += 1
        log.warning("dead letter from %s: %s", source, reason)
        try:
            self.store.dead_letter(source, client, reason, raw, at)
        except StoreError as e:
            log.error("could not record a dead letter: %s", e)  # noqa: TRY400
        return Outcome("dead", dead=reason)

    def dead_letter(
        self, source: str, client: str | None, reason: str, raw: bytes, at: int | None = None
    ) -> Outcome:
        """Record ``raw`` as a dead letter with ``reason`` (never raises)."""
        return self._dead(source, client, reason, raw, self.now_ms() if at is None else at)

    def handle_untracked(
        self, items: Sequence[Untracked], received_ms: int | None = None
    ) -> list[Outcome]:
        """Check and store readings that carry no station seqs (see :class:`Untracked`), the
        ones that pass in one transaction; one outcome per item. Never raises."""
        at = self.now_ms() if received_ms is None else received_ms
        outcomes: list[Outcome | None] = []
        keep: list[Batch] = []
        try:
            for item in items:
                self.counts["received"] += 1
                problem = check_values(item.batch)
                if problem:
                    outcomes.append(self._dead(item.source, item.client, problem, item.raw, at))
                else:
                    outcomes.append(None)
                    keep.append(item.batch)
            try:
                new = self.store.store_untracked(keep, at)
            except StoreError as e:
                self.counts["store_errors"] += 1
                log.error("%d logger packet(s) not stored: %s", len(keep), e)  # noqa: TRY400
                return [o or Outcome("readings", error=str(e)) for o in outcomes]
        except Exception as e:  # a bug must not stop the collector: keep the evidence
            log.exception("internal error storing logger readings")
            reason = f"internal error: {type(e).__name__}: {e}"
            return [self._dead(i.source, i.client, reason, i.raw, at) for i in items]
        total = sum(b.count for b in keep)
        self.counts["readings_new"] += new
        self.counts["readings_duplicate"] += total - new
        result = StoreResult(new=new, duplicate=total - new)
        return [o or Outcome("readings", result=result) for o in outcomes]

    def handle(
        self,
        topic: str | None,
        payload: bytes,
        *,
        received_ms: int | None = None,
        retained: bool = False,
        client: str | None = None,
        user: str | None = None,
        source: str | None = None,
    ) -> Outcome:
        """Handle one message that arrived on ``topic`` (``None``: no topic, e.g. a replayed
        file, named by ``source``). Never raises."""
        at = self.now_ms() if received_ms is None else received_ms
        src = source or topic or "?"
        self.counts["received"] += 1
        try:
            return self._handle(topic, bytes(payload), at, retained, client, user, src)
        except Exception as e:  # a bug must not stop the collector: keep the evidence
            log.exception("internal error handling a message from %s", src)
            return self._dead(src, client, f"internal error: {type(e).__name__}: {e}", payload, at)

    def _handle(  # noqa: PLR0917
        self,
        topic: str | None,
        payload: bytes,
        at: int,
        retained: bool,
        client: str | None,
        user: str | None,
        src: str,
    ) -> Outcome:
        topic_station: str | None = None
        topic_kind: Kind | None = None
        if topic is not None:
            try:
                topic_station, topic_kind = topics.parse(topic)
            except WireFormatError as e:
                return self._dead(src, client, e.reason, payload, at)
        try:
            msg = decode(payload, max_size=self.max_bytes)
        except WireFormatError as e:
            return self._dead(src, client, e.reason, payload, at)
        if topic_kind is not None and topic_kind != msg.KIND:
            reason = f"a {msg.KIND.value} message on a {topic_kind.value} topic"
            return self._dead(src, client, reason, payload, at)
        if isinstance(msg, Batch):
            problem = check_batch(msg, topic_station, user)
            if problem:
                return self._dead(src, client, problem, payload, at)
            try:
                result = self.store.store_batch(msg, at)
            except StoreError as e:
                self.counts["store_errors"] += 1
                log.error("batch %s/%d not stored: %s", msg.station, msg.batch_seq, e)  # noqa: TRY400
                return Outcome("batch", error=str(e))
            if self.after_commit is not None:
                self.after_commit()
            self.counts["batches"] += 1
            self.counts["readings_new"] += result.new
            self.counts["readings_duplicate"] += result.duplicate
            ack = Ack(msg.station, msg.batch_seq, msg.first_seq, msg.last_seq, self.now_ms())
            return Outcome("batch", ack=ack, result=result)
        if isinstance(msg, Status | Event):
            problem = check_origin(msg.station, topic_station, user)
            if problem:
                return self._dead(src, client, problem, payload, at)
            try:
                if isinstance(msg, Status):
                    # A retained status may be old: it proves the station was seen when it was
                    # sent, not now.
                    seen = min(at, msg.time_ms) if retained else at
                    self.store.record_status(msg, seen)
                    self.counts["statuses"] += 1
                    return Outcome("status")
                self.store.record_event(msg)
                self.counts["events"] += 1
                return Outcome("event")
            except StoreError as e:
                self.counts["store_errors"] += 1
                log.error("%s from %s not stored: %s", msg.KIND.value, msg.station, e)  # noqa: TRY400
                return Outcome(msg.KIND.value, error=str(e))
        reason = f"a {msg.KIND.value} message is sent by the centre, not to it"
        return self._dead(src, client, reason, payload, at)


def replay_files(
    store: Store, paths: Iterable[Path], *, max_message_bytes: int, clock: Clock | None = None
) -> Counter[str]:
    """Ingest wire-message files straight into the store, with the same checks as the
    collector (no topic: the station is not cross-checked); bad files become dead letters."""
    proc = Processor(store, max_message_bytes=max_message_bytes, clock=clock)
    for path in paths:
        src = f"replay:{path}"
        try:
            data = path.read_bytes()
        except OSError as e:
            log.error("cannot read %s: %s", path, e)  # noqa: TRY400
            proc.counts["unreadable"] += 1
            continue
        if len(data) > max_message_bytes:
            reason = f"message is {len(data)} bytes, above the maximum of {max_message_bytes}"
            proc._dead(src, None, reason, data[:max_message_bytes], proc.now_ms())
            continue
        proc.handle(None, data, source=src)
    return proc.counts


# --------------------------------------------------------------------------------------------
# the MQTT collector


@dataclass(frozen=True, slots=True)
class _Item:
    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    received_ms: int


_STOP = object()


def default_client_id(group: str | None) -> str:
    base = f"sanduan-central-{socket.gethostname()}"[:60]
    if group:
        # Several collectors of a group may run on one host; each needs its own session.
        log.warning(
            "mqtt.client_id is not set: using a per-process id, so the broker's session does"
            " not survive a restart; set mqtt.client_id (or --client-id) per collector"
        )
        return f"{base}-{os.getpid()}"
    return base


class Collector:
    """The ingest daemon. ``start()``, then ``stop()`` (or ``run(stop_event)``)."""

    def __init__(
        self,
        cfg: CentralConfig,
        *,
        store_url: str | None = None,
        client_id: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.store_url = store_url or cfg.central.store
        self.clock = clock or clock_from_env()
        self.client_id = client_id or cfg.mqtt.client_id or default_client_id(cfg.mqtt.group)
        self.workers = cfg.ingest.workers
        self._queues: list[queue.Queue[object]] = [queue.Queue() for _ in range(self.workers)]
        self._threads: list[threading.Thread] = []
        self._processors: list[Processor] = []
        self._stores: list[Store] = []
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._client: Any = None
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._v5 = cfg.mqtt.protocol != "3.1.1"
        self._after_commit = _after_commit_fault()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store(s), start the workers and connect (retrying in the background)."""
        for _ in range(self.workers):
            self._stores.append(open_store(self.store_url))
        for i, store in enumerate(self._stores):
            proc = Processor(
                store,
                max_message_bytes=self.cfg.ingest.max_message_bytes,
                clock=self.clock,
                after_commit=self._after_commit,
            )
            self._processors.append(proc)
            t = threading.Thread(target=self._work, args=(i, proc), name=f"ingest-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        self._client = self._make_client()
        m = self.cfg.mqtt
        kwargs: dict[str, Any] = {}
        if self._v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = m.session_expiry_s
            props.ReceiveMaximum = min(65535, self.cfg.ingest.max_pending)
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(m.host, m.port, m.keepalive_s, **kwargs)
        self._client.loop_start()
        log.info(
            "collector %s: store %s, broker %s, group %s",
            self.client_id,
            self._stores[0].url,
            m.broker,
            m.group or "-",
        )

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the messages already received (and ack them), then disconnect. Messages that
        arrive meanwhile are left unacknowledged with the broker, which delivers them again."""
        self._stopping.set()
        for q in self._queues:
            q.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        for store in self._stores:
            store.close()
        log.info("collector %s stopped: %s", self.client_id, self.summary())

    def run(self, stop: threading.Event) -> None:
        """Start, serve until ``stop`` is set, stop."""
        self.start()
        try:
            while not stop.wait(60.0):
                log.info("collector %s: %s", self.client_id, self.summary())
        finally:
            self.stop()

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for p in self._processors:
            total.update(p.counts)
        with self._counts_lock:
            total.update(self.counts)
        return total

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.stats().items()))

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[key] += n

    # --- MQTT -------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        m = self.cfg.mqtt
        if self._v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                clean_session=False,
                protocol=mqtt.MQTTv311,
                manual_ack=True,
            )
        if m.username:
            client.username_pw_set(m.username, m.resolved_password())
        if m.use_tls:
            tls = m.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                keyfile=str(tls.key_file) if tls and tls.key_file else None,
            )
            if tls is not None and tls.insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _filters(self) -> list[str]:
        group = self.cfg.mqtt.group
        out = []
        for kind in (Kind.BATCH, Kind.EVENT, Kind.STATUS):
            f = topics.filter_for(kind)
            out.append(topics.shared_sub(group, f) if group and kind != Kind.STATUS else f)
        return out

    def _on_connect(
        self, client: Any, userdata: object, flags: object, reason: Any, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.cfg.mqtt.broker, reason)
            return
        if self._v5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._filters()])
        else:
            client.subscribe([(f, 1) for f in self._filters()])
        log.info("connected to %s as %s", self.cfg.mqtt.broker, self.client_id)

    def _on_subscribe(
        self, client: Any, userdata: object, mid: int, reasons: list[Any], props: object
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("broker %s refused a subscription: %s", self.cfg.mqtt.broker, failed)
            return
        log.info("subscribed to %s", ", ".join(self._filters()))
        self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: object, flags: object, reason: Any, props: object
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from %s (%s); reconnecting", self.cfg.mqtt.broker, reason)

    def _on_message(self, client: Any, userdata: object, msg: Any) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it for the next session
        item = _Item(
            msg.topic,
            msg.payload,
            bool(msg.retain),
            msg.mid,
            msg.qos,
            int(self.clock.time() * 1000),
        )
        # One station always goes to the same worker, so its batches stay in order.
        parts = msg.topic.split("/")
        key = parts[2] if len(parts) > 2 else msg.topic
        self._queues[zlib.crc32(key.encode()) % self.workers].put(item)

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != 0:
            self._count("publish_errors")
            log.warning("publish to %s failed (rc %s); the station will resend", topic, info.rc)

    # --- workers ----------------------------------------------------------------------------

    def _work(self, index: int, proc: Processor) -> None:
        q = self._queues[index]
        ing = self.cfg.ingest
        tick = self.clock.real_seconds(min(ing.gap_timeout_s, ing.resend_interval_s) / 4)
        tick = max(0.05, min(tick, 5.0))
        next_check = time.monotonic() + tick
        while True:
            try:
                item = q.get(timeout=tick)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if isinstance(item, _Item):
                self._handle(proc, item)
            if index == 0 and time.monotonic() >= next_check:
                next_check = time.monotonic() + tick
                self._check_gaps(proc)

    def _handle(self, proc: Processor, item: _Item) -> None:
        out = proc.handle(
            item.topic, item.payload, received_ms=item.received_ms, retained=item.retained
        )
        if out.ack is not None:
            self._publish(topics.ack_topic(out.ack.station), encode(out.ack))
            self._count("acks")
        elif out.error is not None:
            # The database failed: no ack. Give it a moment rather than spin.
            time.sleep(0.5)
        if item.qos > 0:
            self._client.ack(item.mid, item.qos)

    def _check_gaps(self, proc: Processor) -> None:
        ing = self.cfg.ingest
        now = proc.now_ms()
        timeout_ms = int(ing.gap_timeout_s * 1000)
        interval_ms = int(ing.resend_interval_s * 1000)
        give_up_ms = int(ing.gap_give_up_s * 1000)
        try:
            rows = proc.store.stations()
            for row in rows:
                if not any(now - g.since_ms >= min(timeout_ms, give_up_ms) for g in row.gaps):
                    continue
                claim = proc.store.claim_resend(
                    row.station,
                    now,
                    gap_timeout_ms=timeout_ms,
                    interval_ms=interval_ms,
                    give_up_ms=give_up_ms,
                )
                for g in claim.given_up:
                    log.warning(
                        "station %s: giving up on seqs %d..%d (missing since %d)",
                        row.station,
                        g.first,
                        g.last,
                        g.since_ms,
                    )
                if claim.ranges:
                    req = ResendRequest(row.station, claim.ranges, now, "gap")
                    self._publish(topics.resend_topic(row.station), encode(req))
                    self._count("resend_requests")
                    log.info("station %s: asked to resend %s", row.station, claim.ranges)
        except StoreError as e:
            log.error("gap check failed: %s", e)  # noqa: TRY400

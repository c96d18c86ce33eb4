"""The MQTT link to the centre (paho-mqtt 2.x), bridged to the agent's asyncio loop.

paho runs its network loop in its own thread (``loop_start``); every callback is handed to the
asyncio loop with ``call_soon_threadsafe``, so the agent's code never runs in paho's thread and
polling never waits for the network. The link reconnects by itself after any outage, however
long (``reconnect_delay_set`` doubles the wait from 1 s up to ``reconnect_max_s``; paho's
threaded loop retries for ever, the first connection included).

- Protocol: MQTT 5 with ``clean_start=False`` and a session expiry; MQTT 3.1.1 with
  ``clean_session=False``. ``protocol = "auto"`` tries MQTT 5 and falls back to 3.1.1 when the
  broker refuses it (a CONNACK saying "unsupported protocol version", the broker closing the
  connection before any CONNACK, as some 3.1.1-only brokers do, or no CONNACK at all within
  ``CONNACK_TIMEOUT_S`` of the TCP connection: amqtt misreads an MQTT 5 CONNECT and waits for
  bytes that never come).
- QoS 1 for everything. The retained ``status`` topic carries the last will
  (:meth:`Status.last_will`: ``online = false``); the agent publishes an online status on
  connect.
- ``embedded`` (the in-process broker of the single-machine demo) means 127.0.0.1:1883 with
  MQTT 3.1.1 and a user name (the station id by default): that broker keeps offline messages
  only for named sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sanduan.shared import topics, wire
from sanduan.shared.clock import Clock
from sanduan.shared.config import UplinkConfig, configure_tls
from sanduan.shared.errors import LinkError, WireFormatError
from sanduan.shared.logs import RateLimitedLog, describe_connect_error
from sanduan.shared.topics import Kind

log = logging.getLogger("sanduan.edge.uplink")

CONNECT_FAIL_LOG_S = 60.0
"""A broker that stays unreachable is reported at most once per this many seconds."""

QOS = 1
_V5_UNSUPPORTED = (1, 132)  # 3.1.1 "unacceptable protocol version", 5 "unsupported protocol"
_FALLBACK_AFTER = 2  # connections closed before any CONNACK before auto falls back to 3.1.1
CONNACK_TIMEOUT_S = 5.0
"""With ``protocol = "auto"``: a broker that accepted the TCP connection but has not answered
an MQTT 5 CONNECT within this time is taken for a 3.1.1-only broker."""


def _stop_network_thread(client: mqtt.Client, timeout_s: float) -> None:
    """``loop_stop`` with a bound: paho joins its network thread without a timeout, and that
    thread can stay in a reconnect or wait on QoS 1 messages the broker never acknowledged.
    The thread is a daemon, so one left behind does not keep the process alive."""
    stopper = threading.Thread(target=client.loop_stop, name="sanduan-mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s + 3.0)
    if stopper.is_alive():
        log.warning("the MQTT network thread did not stop within %.0f s; leaving it", timeout_s + 3)


class LinkHandler(Protocol):
    """What the link reports; every method is called on the asyncio loop."""

    def link_up(self, session_present: bool) -> None: ...

    def link_down(self, reason: str) -> None: ...

    def message(self, kind: Kind, payload: bytes) -> None: ...

    def published(self, mid: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Published:
    """Outcome of a publish: ``mid`` to match the PUBACK, ``queued`` False if paho refused it."""

    mid: int
    queued: bool


class Uplink:
    """One station's MQTT client; see the module docstring."""

    def __init__(
        self,
        cfg: UplinkConfig,
        station: str,
        handler: LinkHandler,
        *,
        clock: Clock,
        agent_version: str,
        stream: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.cfg = cfg
        self.stream = stream
        self.station = station
        self.handler = handler
        self.clock = clock
        self.agent_version = agent_version
        self.loop = loop or asyncio.get_running_loop()
        self.embedded = cfg.broker == "embedded"
        self.host = "127.0.0.1" if self.embedded else cfg.host
        self.port = 1883 if self.embedded else cfg.port
        self.client_id = cfg.client_id or f"sanduan-edge-{station}"
        self.username = cfg.username or (station if self.embedded else None)
        if self.embedded or cfg.protocol == "3.1.1":
            self.protocol = "3.1.1"
        else:
            self.protocol = "5"
        self.auto = cfg.protocol == "auto" and not self.embedded
        self.connected = False
        self.ever_connected = False
        self.connects = 0
        self.connect_failures = 0
        self._say = RateLimitedLog(log, CONNECT_FAIL_LOG_S, clock.monotonic)
        self.disconnects = 0
        self._early_closes = 0
        self._sockets = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._client: mqtt.Client | None = None
        self.ack_topic = topics.ack_topic(station)
        self.resend_topic = topics.resend_topic(station)
        self.nack_topic = topics.nack_topic(station)
        self.cmd_topic = topics.cmd_topic(station)
        self.status_topic = topics.status_topic(station)

    # -- lifecycle -------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.cfg.resolved_password())
        if self.cfg.use_tls and not self.embedded:
            configure_tls(client, self.cfg, "uplink")
        will = wire.encode(
            wire.Status.last_will(
                self.station, self._now_ms(), self.agent_version, stream=self.stream
            )
        )
        client.will_set(self.status_topic, will, qos=QOS, retain=True)
        client.reconnect_delay_set(1, self.cfg.reconnect_max_s)
        client.max_inflight_messages_set(max(20, self.cfg.max_inflight_batches + 20))
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_socket_open = self._on_socket_open
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def start(self) -> None:
        """Connect in the background (never raises for an unreachable broker: it retries)."""
        with self._lock:
            self._stopping = False
            self._client = client = self._make_client()
        kw: dict[str, Any] = {"keepalive": self.cfg.keepalive_s}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            kw |= {"clean_start": False, "properties": props}
        log.info(
            "connecting to %s:%d as %s (MQTT %s%s)",
            self.host,
            self.port,
            self.client_id,
            self.protocol,
            ", auto" if self.auto else "",
        )
        try:
            client.connect_async(self.host, self.port, **kw)
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot start the MQTT client for {self.host}:{self.port}: {e}") from e
        client.loop_start()

    def stop(self, *, offline_status: bytes | None = None, timeout_s: float = 2.0) -> None:
        """Publish ``offline_status`` (retained) if connected, disconnect, stop the thread."""
        with self._lock:
            self._stopping = True
            client = self._client
        if client is None:
            return
        if offline_status is not None and self.connected:
            info = client.publish(self.status_topic, offline_status, qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as e:
                log.debug("offline status not confirmed: %s", e)
        client.disconnect()
        _stop_network_thread(client, timeout_s)
        self.connected = False

    def _restart_as_311(self) -> None:
        with self._lock:
            if self._stopping or self.protocol == "3.1.1":
                return
            old = self._client
        log.warning("broker %s:%d refuses MQTT 5; falling back to MQTT 3.1.1", self.host, self.port)
        if old is not None:
            old.disconnect()
            _stop_network_thread(old, CONNACK_TIMEOUT_S)
        self.protocol = "3.1.1"
        self.start()

    # -- paho callbacks (paho's thread) ----------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the loop is closed, the agent is shutting down.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            value = int(reason_code.value)
            if (
                self.auto
                and not self.ever_connected
                and self.protocol == "5"
                and (value in _V5_UNSUPPORTED)
            ):
                self._post(self._restart_as_311)
                return
            log.error("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        self.connected = True
        self.ever_connected = True
        self.connects += 1
        self._say.reset("connect")
        self._early_closes = 0
        client.subscribe(
            [(t, QOS) for t in (self.ack_topic, self.resend_topic, self.nack_topic, self.cmd_topic)]
        )
        log.info(
            "connected to %s:%d (MQTT %s, session present: %s)",
            self.host,
            self.port,
            self.protocol,
            flags.session_present,
        )
        self._post(self.handler.link_up, bool(flags.session_present))

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if client is not self._client or not self.auto or self.ever_connected:
            return
        if self.protocol != "5":
            return
        self._sockets += 1
        self._post(self._arm_connack_timer, self._sockets)

    def _arm_connack_timer(self, token: int) -> None:
        self.loop.call_later(CONNACK_TIMEOUT_S, self._connack_overdue, token)

    def _connack_overdue(self, token: int) -> None:
        if token != self._sockets or self.ever_connected or self.protocol != "5":
            return
        log.warning(
            "broker %s:%d did not answer an MQTT 5 CONNECT within %g s",
            self.host,
            self.port,
            CONNACK_TIMEOUT_S,
        )
        self._restart_as_311()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        # paho calls this inside its ``except OSError`` around the connection attempt.
        self.connect_failures += 1
        reason = describe_connect_error(sys.exc_info()[1])
        self._say(
            logging.WARNING,
            "connect",
            "cannot reach the broker %s:%d: %s; retrying (readings stay in the buffer)",
            self.host,
            self.port,
            reason,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        was = self.connected
        self.connected = False
        if not was:
            if self.auto and not self.ever_connected and self.protocol == "5":
                self._early_closes += 1
                if self._early_closes >= _FALLBACK_AFTER:
                    self._post(self._restart_as_311)
            return
        self.disconnects += 1
        reason = str(reason_code)
        if not self._stopping:
            log.warning("link to %s:%d lost (%s); reconnecting", self.host, self.port, reason)
        self._post(self.handler.link_down, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            station, kind = topics.parse(msg.topic)
        except WireFormatError as e:
            log.warning("ignoring a message on %r: %s", msg.topic, e.reason)
            return
        if station != self.station:
            return
        self._post(self.handler.message, kind, bytes(msg.payload))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._post(self.handler.published, mid)

    # -- publishing (any thread) -----------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Published | None:
        """Publish at QoS 1; None when not connected (the caller keeps the data and retries)."""
        client = self._client
        if client is None or not self.connected:
            return None
        info = client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning(
                "publish to %s refused by the client: %s", topic, mqtt.error_string(info.rc)
            )
            return Published(info.mid, queued=False)
        return Published(info.mid, queued=info.rc == mqtt.MQTT_ERR_SUCCESS)

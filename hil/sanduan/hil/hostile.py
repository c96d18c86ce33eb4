"""A hostile station: a client holding one station's MQTT credentials that attacks the centre.

The ``hostile-station`` fault runs one :class:`HostileStation` for its duration. It logs in as
the station (user name = station id) and, every ``interval_s`` real seconds, sends one round of
the attacks a compromised or broken gateway could send:

``oversize``   a payload one byte over the collector's maximum message size (first round)
``garbage``    random bytes on the station's batch, event and status topics
``seq_2^63``   a batch whose seq is near 2**63 (beyond the wire's bounds: must be refused, never
               turned into a resend request)
``huge_seq``   a valid batch on the station's current stream with a seq near ``MAX_SEQ`` (within
               the bounds: the centre may store it; the agent must survive the resend request
               for the gap it opens)
``conflict``   readings the centre has already acknowledged (same station, stream and seq) sent
               again with different content
``ts_1970``,   readings stamped 1970-01-01 and 2100-01-01
``ts_2100``
``stolen_id``  once, at the start of the fault: a connection with the collector's client id,
               then one with another agent's, each held for a moment (a broker that binds
               client ids to user names turns them into the station's own id)

Every forged batch on a seq of its own is remembered in ``forged``: (station, stream, seq) ->
attack, so the delivery check can tell forged rows the centre stored from real ones. Only attacks
that cannot take a real reading's place are sent: conflicts only for seqs already acknowledged,
forged seqs far above anything the agent will issue.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sanduan.shared import topics, wire
from sanduan.shared.errors import WireFormatError

__all__ = ["ATTACKS", "HostileStation", "StationState", "attack_round"]

ATTACKS = (
    "oversize",
    "garbage",
    "seq_2^63",
    "huge_seq",
    "conflict",
    "ts_1970",
    "ts_2100",
    "stolen_id",
)

FORGED_CODE = "w01010"
"""Forged readings carry water temperature, which no assessment uses, so a forged reading the
centre stores (a valid one on a far seq) does not move a section class or the ledger."""

TS_2100_MS = 4_102_444_800_000


@dataclass(frozen=True, slots=True)
class StationState:
    """What the attacker knows of the station it impersonates (from the broker's traffic)."""

    stream: int = 0
    acked: tuple[int, ...] = ()
    """Some seqs the centre has acknowledged on that stream."""


@dataclass
class _Sent:
    topic: str
    payload: bytes
    attack: str
    forged: dict[tuple[int, int], str] = field(default_factory=dict)
    """(stream, seq) -> attack for each reading of a forged batch."""


def _batch(
    station: str, stream: int, bseq: int, seqs: Sequence[int], *, ts_ms: int, value: float
) -> bytes:
    b = wire.Batch.from_columns(
        station,
        bseq,
        ts_ms,
        seq=list(seqs),
        ts_ms=[ts_ms] * len(seqs),
        code=[FORGED_CODE] * len(seqs),
        values=[value] * len(seqs),
        stream=stream,
    )
    return wire.encode(b)


def _beyond_bounds(station: str, stream: int, bseq: int, now_ms: int) -> bytes:
    """A batch whose seq is near 2**63: msgpack that only a decoder without bounds accepts."""
    import msgpack

    d = msgpack.unpackb(_batch(station, stream, bseq, [1], ts_ms=now_ms, value=21.5), raw=False)
    huge = (1 << 63) - 2
    d["first"] = d["last"] = huge
    d["seq"] = [huge]
    out: bytes = msgpack.packb(d, use_bin_type=True)
    return out


def attack_round(
    station: str,
    state: StationState,
    *,
    now_ms: int,
    round_no: int,
    max_message_bytes: int,
    rng: random.Random,
) -> list[_Sent]:
    """The messages of round ``round_no`` (pure: no I/O). Forged seqs count down from
    ``MAX_SEQ`` by round so that no two rounds reuse one."""
    s = state.stream
    bt = topics.batch_topic(station)
    base = wire.MAX_SEQ - 10 * round_no
    bseq = wire.MAX_SEQ - round_no
    out = [
        _Sent(bt, rng.randbytes(1024), "garbage"),
        _Sent(topics.event_topic(station), rng.randbytes(256), "garbage"),
        _Sent(topics.status_topic(station), rng.randbytes(256), "garbage"),
        _Sent(bt, _beyond_bounds(station, s, bseq, now_ms), "seq_2^63"),
    ]
    sent = _batch(station, s, bseq, [base], ts_ms=now_ms, value=21.5 + round_no / 100)
    out.append(_Sent(bt, sent, "huge_seq", {(s, base): "huge_seq"}))
    for attack, ts, seq in (("ts_1970", 0, base - 1), ("ts_2100", TS_2100_MS, base - 2)):
        payload = _batch(station, s, bseq, [seq], ts_ms=ts, value=20.0)
        out.append(_Sent(bt, payload, attack, {(s, seq): attack}))
    if state.acked:
        seqs = sorted(rng.sample(state.acked, min(3, len(state.acked))))
        # A plausible temperature: refused for the conflict, not for its value.
        payload = _batch(station, s, bseq, seqs, ts_ms=now_ms, value=44.0 - round_no / 1000)
        # Not in ``forged``: these keys are real readings'; a conflict the centre stored would
        # show in the delivery check as a real reading lost and an unexpected row.
        out.append(_Sent(bt, payload, "conflict"))
    if round_no == 0:
        # Once, and last: a broker that reads large messages slowly (amqtt) would hold up the
        # rest of the round behind it.
        out.append(_Sent(bt, rng.randbytes(max_message_bytes + 1), "oversize"))
    return out


class HostileStation:
    """Runs :func:`attack_round` every ``interval_s`` in a thread, as ``station``'s login.

    ``state`` is asked before each round for what the attacker knows of the station (the
    rig's monitor); ``now_ms`` gives the simulated time the forged readings are stamped with;
    ``ready`` says when the centre is up to be attacked (waited for up to ``ready_timeout_s``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        station: str,
        *,
        state: Callable[[], StationState],
        now_ms: Callable[[], int],
        steal_ids: Sequence[str],
        max_message_bytes: int,
        protocol: str = "3.1.1",
        interval_s: float = 0.5,
        seed: int = 1,
        ready: Callable[[], bool] = lambda: True,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.station = station
        self.state = state
        self.now_ms = now_ms
        self.steal_ids = list(steal_ids)
        self.max_message_bytes = max_message_bytes
        self.protocol = protocol
        self.interval_s = interval_s
        self.ready = ready
        self.ready_timeout_s = ready_timeout_s
        self.rng = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self.forged: dict[tuple[str, int, int], str] = {}
        self.errors: list[str] = []
        self.unconfirmed = 0
        """Publishes the broker had not acknowledged when the client stopped waiting."""
        self.nacks = 0
        """Nacks the centre sent back for the forged batches (received by this client)."""
        self.nacked = 0
        """Readings refused in those nacks."""
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hostile-{station}", daemon=True)

    def _client(self, client_id: str, *, keep_session: bool = False) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        kw: dict[str, Any] = {"client_id": client_id, "manual_ack": keep_session}
        if self.protocol == "5":
            kw["protocol"] = mqtt.MQTTv5
        else:
            kw |= {"protocol": mqtt.MQTTv311, "clean_session": not keep_session}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, **kw)
        c.username_pw_set(self.station, "hostile")
        return c

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """Counts the centre's answers to the forged batches (the real agent's are not ours)."""
        try:
            m = wire.decode(msg.payload)
        except WireFormatError:
            return
        if isinstance(m, wire.Nack) and is_forged_batch(m.batch_seq):
            self.nacks += 1
            self.nacked += wire.range_count(m.ranges)

    def _answers_in(self, wait_s: float) -> None:
        """Give the centre's answers to the last round a moment to come back: every batch
        stamped implausibly is answered with a nack."""
        expected = self.sent["ts_1970"] + self.sent["ts_2100"]
        deadline = time.monotonic() + wait_s
        while self.nacks < expected and time.monotonic() < deadline:
            time.sleep(0.02)

    def start(self) -> HostileStation:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _steal(self) -> None:
        """Connect with each of ``steal_ids`` for a moment. The session is taken over, not
        cleared, and nothing it receives is acknowledged, so the broker hands the victim its
        session back when it reconnects: the attack costs a disconnection, not its queue. The
        client is driven by hand (no loop thread to stop)."""
        for cid in self.steal_ids:
            c = self._client(cid, keep_session=True)
            kw: dict[str, Any] = {}
            if self.protocol == "5":
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 86_400  # the session outlives this connection
                kw = {"clean_start": False, "properties": props}
            try:
                c.connect(self.host, self.port, keepalive=10, **kw)
                until = time.monotonic() + 0.3
                while time.monotonic() < until:
                    c.loop(0.05)
                self.sent["stolen_id"] += 1
                c.disconnect()
                c.loop(0.05)
            except OSError as e:
                self.errors.append(f"stolen id {cid}: {e}")

    def _run(self) -> None:
        # Attack a centre that is there to see it: wait (a while) until ``ready`` says so.
        deadline = time.monotonic() + self.ready_timeout_s
        while not self.ready() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        c = self._client(f"hostile-{self.station}-{self.rng.getrandbits(32):08x}")
        try:
            c.connect(self.host, self.port, keepalive=10)
        except OSError as e:
            self.errors.append(f"connect: {e}")
            return
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.loop_start()
        try:
            # The centre's answers come back on the station's nack topic: subscribed (and
            # granted) before the first attack, so that none is missed.
            c.subscribe(topics.nack_topic(self.station), qos=1)
            if not self._subscribed.wait(10):
                self.errors.append("nack topic: no subscription granted within 10 s")
            # First: a broker that loses a session's queue when another client takes the session
            # over (amqtt does; Mosquitto does not) then loses only what was queued before the
            # rounds, which the stations resend; the rounds themselves wait in the session.
            self._steal()
            pending: list[Any] = []
            n = 0
            while True:  # at least one round, however short the fault
                for m in attack_round(
                    self.station,
                    self.state(),
                    now_ms=self.now_ms(),
                    round_no=n,
                    max_message_bytes=self.max_message_bytes,
                    rng=self.rng,
                ):
                    pending.append(c.publish(m.topic, m.payload, qos=1))
                    self.sent[m.attack] += 1
                    for (stream, seq), attack in m.forged.items():
                        self.forged[(self.station, stream, seq)] = attack
                n += 1
                if self._stop.wait(self.interval_s):
                    break
            # Everything sent reaches the broker before the disconnection.
            deadline = time.monotonic() + 30
            for info in pending:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            self.unconfirmed = sum(1 for info in pending if not info.is_published())
            self._answers_in(5.0)
        finally:
            c.disconnect()
            c.loop_stop()


FORGED_BATCH_SEQ_MIN = wire.MAX_SEQ - 1_000_000
"""Forged batches carry batch seqs from ``MAX_SEQ`` down, far above any agent's."""


def is_forged_batch(batch_seq: int) -> bool:
    """True for the batch seq of a batch :func:`attack_round` made (and of its ack)."""
    return batch_seq >= FORGED_BATCH_SEQ_MIN

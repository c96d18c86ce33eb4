"""The collector: MQTT in, database, acknowledgements, nacks and resend requests out.

Flow of one message::

    paho network thread --on_message--> (oversize: keep the head, size and SHA-256 only)
        --> queue (per worker, chosen by station) --> worker thread: Processor.handle
            decode + check --bad--> dead_letters (reason oversize, undecodable, invalid, ...)
            store_batch (one transaction) --commit--> replies: Ack and/or Nack (QoS 1)
        --> acker thread: once the broker has every reply (their PUBACKs), the MQTT PUBACK
            of the incoming message

* The paho network thread only enqueues, so it never waits for the database.
* Acknowledge after commit, end to end: an :class:`~sanduan.shared.wire.Ack` is published only
  after the transaction commits, and the incoming message's MQTT handshake is completed only
  once the broker holds that ack (paho's manual acknowledgement). A collector killed anywhere
  before that gets the message again from its persistent session, finds it stored, and acks it.
  paho's in-flight limit is raised so replies are not held back in the client's memory.
* A batch seen before stores nothing new and is acknowledged again; a reading seen before with
  other content is a conflict: kept as it was, dead-lettered, a station event, and a
  :class:`~sanduan.shared.wire.Nack` to a v2 station (readings stamped implausibly are nacked
  ``timestamp`` the same way). Answers go out in the version the station speaks (stream 0: v1).
* A sample another stream of the station holds (a replacement gateway reading its analyzers
  again) is not stored twice and is acknowledged: counted ``readings_reread``, or with another
  value ``readings_sample_conflict`` and a dead letter ``conflict`` (docs/central-store.md).
* If the store fails, the batch is tried ``store_attempts`` times; if the store is healthy
  (it answers a trivial query) the batch is poison: a dead letter ``store`` with the store's
  error and the whole payload, so it never holds up the stations behind it. If the store is
  down, nothing is acknowledged and the station sends the batch again after its ack timeout.
* Every input is caught: a message that cannot be decoded or fails a check (see
  :mod:`sanduan.central.core.ingest_check`) becomes a dead letter with a reason category, the
  first :data:`~sanduan.central.store.DEAD_LETTER_KEEP` bytes, the full size and the SHA-256,
  within the station's dead-letter budget (:mod:`sanduan.central.core.budget`); the
  collector carries on.
* Worker 0 also looks for gaps in the stations' current streams: a gap open longer than
  ``gap_timeout_s`` gets a :class:`~sanduan.shared.wire.ResendRequest` (at most
  :data:`~sanduan.central.core.dedupe.MAX_SEQS_PER_REQUEST` seqs), repeated every
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

import dataclasses
import hashlib
import logging
import os
import queue
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sanduan.central.core.budget import Budget, Window, spend
from sanduan.central.core.ingest_check import (
    check_origin,
    check_seqs,
    check_values,
    implausible_times,
)
from sanduan.central.metrics import LAG_BUCKETS_S, MetricsServer
from sanduan.central.store import DEAD_LETTER_KEEP, Store, StoreResult, open_store
from sanduan.shared import topics
from sanduan.shared.clock import Clock, clock_from_env
from sanduan.shared.config import CentralConfig, IngestConfig, configure_tls
from sanduan.shared.errors import SanduanError, StoreError, WireFormatError
from sanduan.shared.logs import RateLimitedLog, describe_connect_error
from sanduan.shared.metrics import Histogram
from sanduan.shared.topics import Kind
from sanduan.shared.wire import (
    MAX_RANGES,
    SHORT_MAX,
    Ack,
    Batch,
    CommandResult,
    Event,
    Nack,
    NackReason,
    ResendRequest,
    SeqRange,
    Status,
    decode,
    encode,
    seq_ranges,
)

log = logging.getLogger("sanduan.central.ingest")

FAULT_ENV = "SANDUAN_CENTRAL_FAULT"
MAINTAIN_INTERVAL_S = 3600.0
"""How often the collector runs the store's upkeep (partitions ahead on PostgreSQL)."""
CONNECT_FAIL_LOG_S = 60.0
"""A broker that stays unreachable is reported at most once per this many seconds."""

T = TypeVar("T")


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


def date_ms(day: str) -> int:
    """``YYYY-MM-DD`` (UTC midnight) in ms since the epoch."""
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one message did. ``ack`` (readings held) and ``nacks`` (readings rejected
    for good) are to be published; ``dead`` is the category of the dead letter the message left
    (``recorded`` False: only counted, the station's budget was spent); ``error`` a store
    failure (nothing acknowledged, the station will send again)."""

    kind: str
    ack: Ack | None = None
    nacks: tuple[Nack, ...] = ()
    result: StoreResult | None = None
    dead: str | None = None
    recorded: bool = True
    error: str | None = None

    def replies(self) -> list[tuple[str, bytes]]:
        """``(topic, payload)`` of every answer to send to the station."""
        out = [(topics.nack_topic(n.station), encode(n)) for n in self.nacks]
        if self.ack is not None:
            out.append((topics.ack_topic(self.ack.station), encode(self.ack)))
        return out


def _shown(ranges: Sequence[SeqRange]) -> str:
    text = ", ".join(f"{a}..{b}" for a, b in ranges[:4])
    return text + (", ..." if len(ranges) > 4 else "")


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
        ingest: IngestConfig | None = None,
        max_message_bytes: int | None = None,
        clock: Clock | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.cfg = ingest or IngestConfig()
        self.max_bytes = max_message_bytes or self.cfg.max_message_bytes
        self.clock = clock or clock_from_env()
        self.after_commit = after_commit
        self.counts: Counter[str] = Counter()
        self.budget = Budget(self.cfg.dead_letters_per_hour, self.cfg.dead_letter_bytes_per_hour)
        self._windows: dict[str, Window] = {}
        self.over_budget: Counter[str] = Counter()
        """Rejects only counted, per station, not yet written to the store."""
        self.dead_reasons: Counter[str] = Counter()
        """Dead letters by reason (recorded or only counted), for ``/metrics``."""
        self.lag = Histogram(LAG_BUCKETS_S)
        """Seconds from reading time to commit, per reading of batches storing new ones."""
        self._earliest_ms = date_ms(self.cfg.earliest_reading)
        self._ahead_ms = int(self.cfg.future_margin_s * 1000)

    def now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    # --- dead letters -----------------------------------------------------------------

    def _dead(
        self,
        source: str,
        client: str | None,
        reason: str,
        raw: bytes,
        at: int,
        *,
        station: str | None = None,
        detail: str = "",
        size: int | None = None,
        sha256: str | None = None,
        keep_all: bool = False,
        kind: str = "dead",
    ) -> Outcome:
        self.counts["dead_letters"] += 1
        self.dead_reasons[reason] += 1
        keep = len(raw) if keep_all else min(len(raw), DEAD_LETTER_KEEP)
        key = station or "?"
        window, allowed = spend(self._windows.get(key), self.budget, at, keep)
        self._windows[key] = window
        if not allowed:
            self.over_budget[key] += 1
            self.counts["rejects_over_budget"] += 1
            if window.over == 1:
                log.warning(
                    "station %s: dead-letter budget spent (%d letters, %d bytes an hour); its"
                    " rejects are only counted until the hour is over",
                    key,
                    self.budget.count,
                    self.budget.bytes,
                )
            return Outcome(kind, dead=reason, recorded=False)
        log.warning("dead letter from %s: %s: %s", source, reason, detail[:300])
        try:
            self.store.dead_letter(
                source,
                client,
                reason,
                raw[:keep],
                at,
                station=station,
                detail=detail,
                size=len(raw) if size is None else size,
                sha256=sha256 or hashlib.sha256(raw).hexdigest(),
            )
        except StoreError as e:
            log.error("could not record a dead letter: %s", e)  # noqa: TRY400
        return Outcome(kind, dead=reason)

    def take_over_budget(self) -> dict[str, int]:
        """The over-budget counts since the last call (to add to the store)."""
        out = dict(self.over_budget)
        self.over_budget.clear()
        return out

    def flush_over_budget(self) -> None:
        counts = self.take_over_budget()
        try:
            self.store.count_over_budget(counts)
        except StoreError as e:
            log.error("could not count rejects past the dead-letter budget: %s", e)  # noqa: TRY400
            self.over_budget.update(counts)

    # --- the store, with retries -------------------------------------------------------

    def _try_store(self, fn: Callable[[], T]) -> tuple[T | None, str | None, bool]:
        """``fn()`` up to ``store_attempts`` times; returns (result, error, poison): poison is
        True when the store keeps rejecting this one write while it answers other queries."""
        error = ""
        for attempt in range(self.cfg.store_attempts):
            try:
                return fn(), None, False
            except StoreError as e:
                self.counts["store_errors"] += 1
                error = str(e)
            if attempt + 1 < self.cfg.store_attempts:
                time.sleep(0.05 * 2**attempt)
        try:
            self.store.query("SELECT 1")
        except StoreError:
            return None, error, False
        return None, error, True

    # --- messages ----------------------------------------------------------------------

    def dead_letter(
        self,
        source: str,
        client: str | None,
        reason: str,
        raw: bytes,
        at: int | None = None,
        *,
        station: str | None = None,
        detail: str = "",
    ) -> Outcome:
        """Record ``raw`` as a dead letter: ``reason`` is its category, ``detail`` the text
        (never raises; within the station's dead-letter budget)."""
        at = self.now_ms() if at is None else at
        return self._dead(source, client, reason, raw, at, station=station, detail=detail)

    def _dead_untracked(self, item: Untracked, reason: str, detail: str, at: int) -> Outcome:
        station = item.batch.station
        return self._dead(
            item.source, item.client, reason, item.raw, at, station=station, detail=detail
        )

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
                    outcomes.append(self._dead_untracked(item, "invalid", problem, at))
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
            detail = f"internal error: {type(e).__name__}: {e}"
            return [self._dead_untracked(i, "internal", detail, at) for i in items]
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
        size: int | None = None,
        sha256: str | None = None,
    ) -> Outcome:
        """Handle one message that arrived on ``topic`` (``None``: no topic, e.g. a replayed
        file, named by ``source``). ``size`` and ``sha256`` describe the whole payload when
        ``payload`` is only its head (an oversize message cut short on arrival). Never raises."""
        at = self.now_ms() if received_ms is None else received_ms
        src = source or topic or "?"
        self.counts["received"] += 1
        full = len(payload) if size is None else size
        station: str | None = None
        if topic is not None:
            try:
                station = topics.parse(topic)[0]
            except WireFormatError:
                station = None
        if full > self.max_bytes:
            detail = f"message is {full} bytes, above the maximum of {self.max_bytes}"
            return self._dead(
                src, client, "oversize", payload, at, station=station, detail=detail,
                size=full, sha256=sha256,
            )  # fmt: skip
        try:
            return self._handle(topic, bytes(payload), at, retained, client, user, src)
        except Exception as e:  # a bug must not stop the collector: keep the evidence
            log.exception("internal error handling a message from %s", src)
            detail = f"internal error: {type(e).__name__}: {e}"
            return self._dead(
                src, client, "internal", payload, at, station=station, detail=detail,
                keep_all=True,
            )  # fmt: skip

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
                return self._dead(src, client, "invalid", payload, at, detail=e.reason)
        try:
            msg = decode(payload, max_size=self.max_bytes)
        except WireFormatError as e:
            return self._dead(
                src, client, "undecodable", payload, at, station=topic_station, detail=e.reason
            )
        if topic_kind is not None and topic_kind != msg.KIND:
            detail = f"a {msg.KIND.value} message on a {topic_kind.value} topic"
            return self._dead(
                src, client, "invalid", payload, at, station=topic_station, detail=detail
            )
        if isinstance(msg, Batch):
            return self._batch(msg, payload, at, topic_station, client, user, src)
        if isinstance(msg, Status | Event | CommandResult):
            problem = check_origin(msg.station, topic_station, user)
            if problem:
                return self._dead(
                    src, client, "origin", payload, at, station=topic_station, detail=problem
                )
            kind = msg.KIND.value
            if isinstance(msg, CommandResult):
                result = msg
                _, error, poison = self._try_store(lambda: self.store.record_result(result, at))
            elif isinstance(msg, Status):
                # A retained status may be old: it proves the station was seen when it was
                # sent, not now.
                seen = min(at, msg.time_ms) if retained else at
                status = msg
                _, error, poison = self._try_store(lambda: self.store.record_status(status, seen))
            else:
                event = msg
                _, error, poison = self._try_store(lambda: self.store.record_event(event))
            if error is not None:
                log.error("%s from %s not stored: %s", kind, msg.station, error)
                if poison:
                    return self._dead(
                        src, client, "store", payload, at, station=msg.station, detail=error,
                        keep_all=True, kind=kind,
                    )  # fmt: skip
                return Outcome(kind, error=error)
            self.counts[{"status": "statuses", "event": "events"}.get(kind, "results")] += 1
            return Outcome(kind)
        detail = f"a {msg.KIND.value} message is sent by the centre, not to it"
        return self._dead(src, client, "invalid", payload, at, station=topic_station, detail=detail)

    def _nack(self, b: Batch, reason: NackReason, ranges: Sequence[SeqRange], detail: str) -> Nack:
        return Nack(
            station=b.station,
            stream=b.stream,
            batch_seq=b.batch_seq,
            first_seq=b.first_seq,
            last_seq=b.last_seq,
            reason=reason,
            ranges=tuple(ranges[:MAX_RANGES]),
            time_ms=self.now_ms(),
            detail=detail[:SHORT_MAX],
        )

    def _reject(  # noqa: PLR0917
        self,
        b: Batch,
        payload: bytes,
        at: int,
        client: str | None,
        src: str,
        reason: NackReason,
        ranges: Sequence[SeqRange],
        detail: str,
        dead: str | None = None,
    ) -> tuple[Outcome, Nack | None]:
        """Dead-letter (part of) a batch (category ``dead``, default the nack reason; ``store``
        keeps the whole payload, to be replayed once the store is fixed); the nack for a v2
        station (v1 has no nack)."""
        out = self._dead(
            src, client, dead or reason.value, payload, at, station=b.station, detail=detail,
            keep_all=dead == "store", kind="batch",
        )  # fmt: skip
        if b.stream == 0 or not ranges:
            return out, None
        self.counts[f"nacks_{reason.value}"] += 1
        return out, self._nack(b, reason, ranges, detail)

    def _batch(  # noqa: PLR0917
        self,
        msg: Batch,
        payload: bytes,
        at: int,
        topic_station: str | None,
        client: str | None,
        user: str | None,
        src: str,
    ) -> Outcome:
        problem = check_origin(msg.station, topic_station, user)
        if problem:
            return self._dead(
                src, client, "origin", payload, at, station=topic_station, detail=problem
            )
        problem = check_seqs(msg) or check_values(msg)
        whole = ((msg.first_seq, msg.last_seq),)
        if problem:
            out, nack = self._reject(
                msg, payload, at, client, src, NackReason.INVALID, whole, problem
            )
            return dataclasses.replace(out, nacks=(nack,) if nack else ())
        nacks: list[Nack] = []
        dead: str | None = None
        batch = msg
        bad = implausible_times(msg, self.now_ms(), self._ahead_ms, self._earliest_ms)
        if bad:
            bad_ranges = seq_ranges(msg.seq[i] for i in bad)
            i = bad[0]
            detail = (
                f"{len(bad)} reading(s) of batch {msg.batch_seq} stamped implausibly, e.g. seq"
                f" {msg.seq[i]} at {msg.ts_ms[i]} ms (more than {self.cfg.future_margin_s:g} s"
                f" ahead of the centre's clock, or before {self.cfg.earliest_reading}):"
                f" seqs {_shown(bad_ranges)}"
            )
            _, nack = self._reject(
                msg, payload, at, client, src, NackReason.TIMESTAMP, bad_ranges, detail
            )
            dead = "timestamp"
            nacks += [nack] if nack else []
            bad_set = set(bad)
            keep = [i for i in range(msg.count) if i not in bad_set]
            if not keep:
                return Outcome("batch", nacks=tuple(nacks), dead=dead)
            batch = msg.subset(keep)
        stored = batch
        result, error, poison = self._try_store(lambda: self.store.store_batch(stored, at))
        if result is None:
            log.error("batch %s/%d not stored: %s", msg.station, msg.batch_seq, error)
            if not poison:
                return Outcome("batch", error=error)
            detail = f"the store rejects batch {msg.batch_seq}: {error}"
            _, nack = self._reject(
                msg, payload, at, client, src, NackReason.INVALID, whole, detail, dead="store"
            )
            return Outcome("batch", nacks=(nack,) if nack else (), dead="store", error=error)
        if result.new:
            ts = np.asarray(stored.ts_ms, dtype=np.int64)
            self.lag.observe_many(np.maximum(self.now_ms() - ts, 0) / 1000.0)
        if self.after_commit is not None:
            self.after_commit()
        self.counts["batches"] += 1
        self.counts["readings_new"] += result.new
        self.counts["readings_duplicate"] += result.duplicate
        if result.stream_change is not None:
            ch = result.stream_change
            log.warning(
                "station %s: new stream %d; stream %d closed at seq %s, %d reading(s) lost with"
                " the old buffer",
                msg.station,
                ch.new_stream,
                ch.old_stream,
                ch.retired.last_acked_seq,
                ch.retired.lost,
            )
        held = batch.seq
        self.counts["readings_reread"] += result.reread
        if result.sample_conflicts:
            # Held (the first value kept) and acknowledged: a dead letter, no nack.
            self.counts["readings_sample_conflict"] += result.sample_conflicting
            self._dead(
                src, client, "conflict", payload, at, station=msg.station, kind="batch",
                detail=f"{result.sample_conflicting} reading(s) of batch {msg.batch_seq} (stream"
                f" {msg.stream}) are samples another stream of the station holds with another"
                f" value: seqs {_shown(result.sample_conflicts)}; the first stored is kept",
            )  # fmt: skip
            dead = "conflict"
        if result.conflicts:
            self.counts["readings_conflict"] += result.conflicting
            detail = (
                f"{result.conflicting} reading(s) of batch {msg.batch_seq} (stream {msg.stream})"
                f" are held with other content: seqs {_shown(result.conflicts)}; the originals"
                " are kept"
            )
            _, nack = self._reject(
                msg, payload, at, client, src, NackReason.CONFLICT, result.conflicts, detail
            )
            dead = "conflict"
            nacks += [nack] if nack else []
            bad_seqs = {q for a, b in result.conflicts for q in range(a, b + 1)}
            held = tuple(q for q in batch.seq if q not in bad_seqs)
        ack: Ack | None = None
        if held:
            ranges = () if held == msg.seq else seq_ranges(held)[:MAX_RANGES]
            ack = Ack(
                msg.station,
                msg.batch_seq,
                msg.first_seq,
                msg.last_seq,
                self.now_ms(),
                ranges,
                stream=msg.stream,
            )
        return Outcome("batch", ack=ack, nacks=tuple(nacks), result=result, dead=dead)


def replay_files(
    store: Store,
    paths: Iterable[Path],
    *,
    max_message_bytes: int | None = None,
    ingest: IngestConfig | None = None,
    clock: Clock | None = None,
) -> Counter[str]:
    """Ingest wire-message files straight into the store, with the same checks as the
    collector (no topic: the station is not cross-checked); bad files become dead letters."""
    proc = Processor(store, ingest=ingest, max_message_bytes=max_message_bytes, clock=clock)
    for path in paths:
        src = f"replay:{path}"
        try:
            size = path.stat().st_size
            if size > proc.max_bytes:
                with path.open("rb") as fh:
                    head = fh.read(DEAD_LETTER_KEEP)
                    fh.seek(0)
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                proc.handle(None, head, source=src, size=size, sha256=digest)
                continue
            data = path.read_bytes()
        except OSError as e:
            log.error("cannot read %s: %s", path, e)  # noqa: TRY400
            proc.counts["unreadable"] += 1
            continue
        proc.handle(None, data, source=src)
    proc.flush_over_budget()
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
    session: int
    size: int | None = None
    sha256: str | None = None


@dataclass(slots=True)
class _Pending:
    """An incoming message whose MQTT handshake waits for the broker to hold its replies."""

    infos: list[Any]
    mid: int
    qos: int
    session: int


_STOP = object()

MAX_INFLIGHT = 1000
"""paho's limit on our own QoS 1 publishes in flight (its default of 20 would hold acks back)."""


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
        self.store_url = store_url or cfg.central.store_url()
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
        self._session = 0
        """Counts connections: a message's mid is only valid in the connection it came in."""
        self._pending: queue.Queue[_Pending | None] = queue.Queue()
        self._published = threading.Event()
        self._died = threading.Event()
        self.failure: str | None = None
        """Why a collector thread died (the process must then end with a failure)."""
        self.metrics: MetricsServer | None = None
        self.connect_failures = 0
        self._say = RateLimitedLog(log, CONNECT_FAIL_LOG_S, time.monotonic)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store(s), start the workers and connect (retrying in the background)."""
        if self.cfg.metrics.listen is not None:  # first: a port in use stops nothing started
            self.metrics = MetricsServer(self, self.cfg.metrics.listen, self.store_url)
        for _ in range(self.workers):
            self._stores.append(open_store(self.store_url))
        self._maintain()
        # The client exists before any worker runs: worker 0's first gap check publishes.
        self._client = self._make_client()
        for i, store in enumerate(self._stores):
            proc = Processor(
                store, ingest=self.cfg.ingest, clock=self.clock, after_commit=self._after_commit
            )
            self._processors.append(proc)
            self._spawn(f"ingest-{i}", self._work, i, proc)
        self._spawn("ingest-acker", self._acker)
        if self.metrics is not None:
            self.metrics.start()
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

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except BaseException as e:
                log.critical("collector thread %s failed: %s: %s", name, type(e).__name__, e)
                self.failure = f"thread {name} failed: {type(e).__name__}: {e}"
                self._died.set()
                raise

        t = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the messages already received (and ack them), then disconnect. Messages that
        arrive meanwhile are left unacknowledged with the broker, which delivers them again."""
        self._stopping.set()
        for q in self._queues:
            q.put(_STOP)
        acker = [t for t in self._threads if t.name == "ingest-acker"]
        for t in self._threads:
            if t not in acker:
                t.join(timeout)
        self._pending.put(None)
        for t in acker:
            t.join(timeout)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        for proc in self._processors:
            proc.flush_over_budget()
        if self.metrics is not None:
            self.metrics.close()
        for store in self._stores:
            store.close()
        log.info("collector %s stopped: %s", self.client_id, self.summary())

    def run(self, stop: threading.Event) -> None:
        """Start, serve until ``stop`` is set, stop."""
        self.start()
        try:
            last = time.monotonic()
            while not stop.wait(1.0):
                if self._died.is_set():
                    raise SanduanError(f"collector {self.client_id}: {self.failure}")
                if time.monotonic() - last >= 60.0:
                    last = time.monotonic()
                    log.info("collector %s: %s", self.client_id, self.summary())
        finally:
            self.stop()

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for p in self._processors:
            total.update(dict(p.counts))  # a copy in one step: a worker may add a key meanwhile
        with self._counts_lock:
            total.update(self.counts)
        return total

    @property
    def processors(self) -> list[Processor]:
        return self._processors

    @property
    def connected(self) -> bool:
        """Connected to the broker and subscribed."""
        return self._connected.is_set()

    def queue_depth(self) -> int:
        """Messages received and not yet taken by a worker."""
        return sum(q.qsize() for q in self._queues)

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
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # no limit: a reply is never dropped for lack of room
        if m.username:
            client.username_pw_set(m.username, m.resolved_password())
        if m.use_tls:
            configure_tls(client, m, "mqtt")
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = lambda *_: self._published.set()
        return client

    def _filters(self) -> list[str]:
        group = self.cfg.mqtt.group
        out = []
        for kind in (Kind.BATCH, Kind.EVENT, Kind.STATUS, Kind.RESULT):
            f = topics.filter_for(kind)
            out.append(topics.shared_sub(group, f) if group and kind != Kind.STATUS else f)
        return out

    def _on_connect(
        self, client: Any, userdata: object, flags: object, reason: Any, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.cfg.mqtt.broker, reason)
            return
        self._session += 1
        self._say.reset("connect")
        if self._v5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._filters()])
        else:
            client.subscribe([(f, 1) for f in self._filters()])
        log.info("connected to %s as %s", self.cfg.mqtt.broker, self.client_id)

    def _on_connect_fail(self, client: Any, userdata: object) -> None:
        # paho calls this inside its ``except OSError`` around the connection attempt.
        self.connect_failures += 1
        self._say(
            logging.WARNING,
            "connect",
            "cannot reach the broker %s: %s; retrying",
            self.cfg.mqtt.broker,
            describe_connect_error(sys.exc_info()[1]),
        )

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
        self._session += 1  # mids of the old connection must not be acknowledged on the new
        if not self._stopping.is_set():
            log.warning("disconnected from %s (%s); reconnecting", self.cfg.mqtt.broker, reason)

    def _on_message(self, client: Any, userdata: object, msg: Any) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it for the next session
        payload: bytes = msg.payload
        size = digest = None
        if len(payload) > self.cfg.ingest.max_message_bytes:
            # Keep only what a dead letter keeps, so a flood of huge payloads cannot pile up.
            size, digest = len(payload), hashlib.sha256(payload).hexdigest()
            payload = bytes(payload[:DEAD_LETTER_KEEP])
        item = _Item(
            msg.topic,
            payload,
            bool(msg.retain),
            msg.mid,
            msg.qos,
            int(self.clock.time() * 1000),
            self._session,
            size,
            digest,
        )
        # One station always goes to the same worker, so its batches stay in order.
        parts = msg.topic.split("/")
        key = parts[2] if len(parts) > 2 else msg.topic
        self._queues[zlib.crc32(key.encode()) % self.workers].put(item)

    def _publish(self, topic: str, payload: bytes) -> Any:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != 0:
            self._count("publish_errors")
            log.warning("publish to %s failed (rc %s); the station will resend", topic, info.rc)
        return info

    # --- workers ----------------------------------------------------------------------------

    def _work(self, index: int, proc: Processor) -> None:
        q = self._queues[index]
        ing = self.cfg.ingest
        tick = self.clock.real_seconds(min(ing.gap_timeout_s, ing.resend_interval_s) / 4)
        tick = max(0.05, min(tick, 5.0))
        next_check = time.monotonic() + tick
        next_upkeep = time.monotonic() + MAINTAIN_INTERVAL_S
        while True:
            try:
                item = q.get(timeout=tick)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if isinstance(item, _Item):
                self._handle(proc, item)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + tick
                proc.flush_over_budget()
                if index == 0:
                    self._check_gaps(proc)
            if index == 0 and time.monotonic() >= next_upkeep:
                next_upkeep = time.monotonic() + MAINTAIN_INTERVAL_S
                try:
                    self._maintain()
                except StoreError as e:
                    log.error("store upkeep failed (retried in an hour): %s", e)  # noqa: TRY400

    def _handle(self, proc: Processor, item: _Item) -> None:
        out = proc.handle(
            item.topic,
            item.payload,
            received_ms=item.received_ms,
            retained=item.retained,
            size=item.size,
            sha256=item.sha256,
        )
        infos = [self._publish(topic, payload) for topic, payload in out.replies()]
        self._count("acks", out.ack is not None)
        self._count("nacks", len(out.nacks))
        if out.error is not None and out.dead is None:
            # The database failed: no ack. Give it a moment rather than spin.
            time.sleep(0.5)
        if item.qos > 0:
            self._pending.put(_Pending(infos, item.mid, item.qos, item.session))

    def _acker(self) -> None:
        """Complete each incoming message's MQTT handshake once the broker has its replies, in
        the order the messages were handled. A message of an earlier connection is left alone:
        the broker delivers it again."""
        waiting: list[_Pending] = []
        deadline: float | None = None  # set once stopping: a last moment for the broker
        while True:
            try:
                while deadline is None:
                    p = self._pending.get(block=not waiting)
                    if p is None:
                        deadline = time.monotonic() + 2.0
                        break
                    waiting.append(p)
                    if self._pending.empty():
                        break
            except queue.Empty:
                pass
            still: list[_Pending] = []
            for p in waiting:
                if p.session != self._session:
                    self._count("acks_left_to_redelivery")
                elif all(i.rc != 0 or i.is_published() for i in p.infos):
                    self._client.ack(p.mid, p.qos)
                else:
                    still.append(p)
            waiting = still
            if deadline is not None and (not waiting or time.monotonic() > deadline):
                return
            if waiting:
                self._published.wait(0.05)
                self._published.clear()

    def _maintain(self) -> None:
        """Store upkeep: on PostgreSQL, the monthly partitions of readings ahead of time."""
        created = self._stores[0].maintain(int(self.clock.time() * 1000))
        if created:
            log.info("collector %s: created %s", self.client_id, ", ".join(created))

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
                    req = ResendRequest(row.station, claim.ranges, now, "gap", row.stream or 0)
                    self._publish(topics.resend_topic(row.station), encode(req))
                    self._count("resend_requests")
                    log.info("station %s: asked to resend %s", row.station, claim.ranges)
        except StoreError as e:
            log.error("gap check failed: %s", e)  # noqa: TRY400

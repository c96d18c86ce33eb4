"""MQTT topics of wire format v1.

Every message travels on ``sanduan/v1/<station>/<kind>``; the kind suffix is the same tag as the
message's ``"k"`` field (see docs/wire-format.md)::

    sanduan/v1/<station>/batch    station -> centre   readings
    sanduan/v1/<station>/status   station -> centre   heartbeat, retained; also the last will
    sanduan/v1/<station>/event    station -> centre   alarms
    sanduan/v1/<station>/ack      centre -> station   batch committed
    sanduan/v1/<station>/resend   centre -> station   please send these seq ranges again
    sanduan/v1/<station>/nack     centre -> station   readings rejected for good (wire v2)
    sanduan/v1/<station>/cmd      centre -> station   a remote command (wire v2)
    sanduan/v1/<station>/result   station -> centre   the answer to a command (wire v2)

The topic level ``v1`` names the topic namespace; the payload carries its own format version.

This module has no third-party imports so that it is cheap to import anywhere.
"""

from __future__ import annotations

import enum
import re

from sanduan.shared.errors import WireFormatError

PREFIX = "sanduan/v1"

STATION_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Station ids: also a topic level, so no ``/``, ``+``, ``#`` and never empty."""

_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Kind(enum.StrEnum):
    """Message kinds; the value is both the wire ``"k"`` tag and the topic suffix."""

    BATCH = "batch"
    ACK = "ack"
    RESEND = "resend"
    STATUS = "status"
    EVENT = "event"
    NACK = "nack"
    CMD = "cmd"
    RESULT = "result"


UPLINK: frozenset[Kind] = frozenset({Kind.BATCH, Kind.STATUS, Kind.EVENT, Kind.RESULT})
"""Kinds a station publishes (the centre subscribes to these)."""

DOWNLINK: frozenset[Kind] = frozenset({Kind.ACK, Kind.RESEND, Kind.NACK, Kind.CMD})
"""Kinds the centre publishes (a station subscribes to these for its own id)."""


def is_station_id(text: object) -> bool:
    """True if ``text`` is a valid station id."""
    return isinstance(text, str) and STATION_RE.fullmatch(text) is not None


def check_station(station: object) -> str:
    """Return ``station`` if valid, else raise :class:`WireFormatError`."""
    if not isinstance(station, str):
        raise WireFormatError(f"station id must be a string, got {type(station).__name__}")
    if STATION_RE.fullmatch(station) is None:
        raise WireFormatError(f"invalid station id {station!r}: must match [A-Za-z0-9_.-]{{1,64}}")
    return station


def _kind(kind: str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        known = ", ".join(k.value for k in Kind)
        raise WireFormatError(f"unknown message kind {kind!r}; known: {known}") from None


def topic(station: str, kind: Kind | str) -> str:
    """The topic a ``kind`` message for ``station`` is published on."""
    return f"{PREFIX}/{check_station(station)}/{_kind(kind).value}"


def batch_topic(station: str) -> str:
    return topic(station, Kind.BATCH)


def ack_topic(station: str) -> str:
    return topic(station, Kind.ACK)


def resend_topic(station: str) -> str:
    return topic(station, Kind.RESEND)


def nack_topic(station: str) -> str:
    return topic(station, Kind.NACK)


def cmd_topic(station: str) -> str:
    return topic(station, Kind.CMD)


def result_topic(station: str) -> str:
    return topic(station, Kind.RESULT)


def status_topic(station: str) -> str:
    return topic(station, Kind.STATUS)


def event_topic(station: str) -> str:
    return topic(station, Kind.EVENT)


def parse(topic_name: str) -> tuple[str, Kind]:
    """Split a concrete topic into ``(station, kind)``.

    Raises :class:`WireFormatError` for anything that is not exactly
    ``sanduan/v1/<station>/<kind>`` (wrong prefix or version, wildcards, bad station, unknown
    kind, extra or missing levels).
    """
    if not isinstance(topic_name, str):
        raise WireFormatError(f"topic must be a string, got {type(topic_name).__name__}")
    parts = topic_name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise WireFormatError(f"malformed topic {topic_name!r}: expected {PREFIX}/<station>/<kind>")
    station = check_station(parts[2])
    return station, _kind(parts[3])


def filter_for(kind: Kind | str, station: str = "+") -> str:
    """A subscription filter for one kind: every station (``+``) by default.

    ``filter_for(Kind.BATCH)`` -> ``sanduan/v1/+/batch``.
    """
    if station != "+":
        check_station(station)
    return f"{PREFIX}/{station}/{_kind(kind).value}"


def station_filter(station: str) -> str:
    """Every topic of one station: ``sanduan/v1/<station>/#``."""
    return f"{PREFIX}/{check_station(station)}/#"


ALL = f"{PREFIX}/#"
"""Every sanduan v1 topic."""


def shared_sub(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: ``$share/<group>/<filter>``.

    Collectors in the same ``group`` split the messages of ``topic_filter`` between them.
    """
    if not isinstance(group, str) or _GROUP_RE.fullmatch(group) is None:
        raise WireFormatError(
            f"invalid shared subscription group {group!r}: must match [A-Za-z0-9_.-]{{1,64}}"
        )
    if not topic_filter or topic_filter.startswith(("$", "/")):
        raise WireFormatError(f"invalid topic filter {topic_filter!r}")
    return f"$share/{group}/{topic_filter}"

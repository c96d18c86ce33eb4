"""MQTT topic builders and parsers."""

from __future__ import annotations

import pytest

from sanduan.shared import topics
from sanduan.shared.errors import WireFormatError
from sanduan.shared.topics import Kind


def test_builders() -> None:
    assert topics.batch_topic("st-1") == "sanduan/v1/st-1/batch"
    assert topics.ack_topic("st-1") == "sanduan/v1/st-1/ack"
    assert topics.resend_topic("st-1") == "sanduan/v1/st-1/resend"
    assert topics.status_topic("st-1") == "sanduan/v1/st-1/status"
    assert topics.event_topic("st-1") == "sanduan/v1/st-1/event"
    assert topics.topic("a.b_C-9", "event") == "sanduan/v1/a.b_C-9/event"


@pytest.mark.parametrize("kind", list(Kind))
def test_parse_inverts_topic(kind: Kind) -> None:
    assert topics.parse(topics.topic("JS_taihu.07", kind)) == ("JS_taihu.07", kind)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("sanduan/v1/st-1", "malformed topic"),
        ("sanduan/v1/st-1/batch/x", "malformed topic"),
        ("sanduan/v2/st-1/batch", "malformed topic"),
        ("other/v1/st-1/batch", "malformed topic"),
        ("/sanduan/v1/st-1/batch", "malformed topic"),
        ("sanduan/v1/+/batch", "invalid station id"),
        ("sanduan/v1//batch", "invalid station id"),
        ("sanduan/v1/st-1/#", "unknown message kind"),
        ("sanduan/v1/st-1/readings", "unknown message kind"),
        ("", "malformed topic"),
    ],
)
def test_parse_rejects_malformed(topic: str, reason: str) -> None:
    with pytest.raises(WireFormatError, match=reason):
        topics.parse(topic)


@pytest.mark.parametrize("station", ["", "a/b", "a+b", "a#", "x" * 65, "sp ace", "é"])
def test_builders_reject_bad_station(station: str) -> None:
    with pytest.raises(WireFormatError, match="invalid station id"):
        topics.batch_topic(station)
    assert not topics.is_station_id(station)


def test_filters_and_shared_subscriptions() -> None:
    assert topics.filter_for(Kind.BATCH) == "sanduan/v1/+/batch"
    assert topics.filter_for("ack", "st-1") == "sanduan/v1/st-1/ack"
    assert topics.station_filter("st-1") == "sanduan/v1/st-1/#"
    assert topics.ALL == "sanduan/v1/#"
    assert (
        topics.shared_sub("collectors", topics.filter_for(Kind.BATCH))
        == "$share/collectors/sanduan/v1/+/batch"
    )
    assert set(Kind) == topics.UPLINK | topics.DOWNLINK
    assert not topics.UPLINK & topics.DOWNLINK


@pytest.mark.parametrize(
    ("group", "flt"),
    [("", "sanduan/v1/+/batch"), ("a/b", "x"), ("g+", "x"), ("g", ""), ("g", "$SYS/#")],
)
def test_shared_sub_rejects_bad_input(group: str, flt: str) -> None:
    with pytest.raises(WireFormatError):
        topics.shared_sub(group, flt)


def test_filter_for_rejects_bad_kind_and_station() -> None:
    with pytest.raises(WireFormatError, match="unknown message kind"):
        topics.filter_for("batches")
    with pytest.raises(WireFormatError, match="invalid station id"):
        topics.filter_for(Kind.ACK, "a/b")

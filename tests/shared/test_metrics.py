"""The Prometheus text formatter, histograms and the health answer (sanduan.shared.metrics)."""

from __future__ import annotations

import json
import math
import threading

import pytest

from sanduan.shared.metrics import (
    Family,
    Health,
    Histogram,
    Sample,
    Since,
    counter,
    escape_help,
    escape_label,
    format_value,
    gauge,
    histogram_family,
    http_response,
    labelled,
    render,
    route,
)

GOLDEN = """\
# HELP demo_up 1 when up.
# TYPE demo_up gauge
demo_up 1
# HELP demo_errors_total Errors by device and kind.
# TYPE demo_errors_total counter
demo_errors_total{device="a",kind="crc"} 2
demo_errors_total{device="a",kind="timeout"} 5
demo_errors_total{device="b",kind="timeout"} 0
# HELP demo_offset_seconds Clock offset.
# TYPE demo_offset_seconds gauge
# HELP demo_lag_seconds Lag.
# TYPE demo_lag_seconds histogram
demo_lag_seconds_bucket{le="1"} 1
demo_lag_seconds_bucket{le="2.5"} 3
demo_lag_seconds_bucket{le="+Inf"} 4
demo_lag_seconds_sum 13.5
demo_lag_seconds_count 4
"""


def test_golden_text() -> None:
    h = Histogram([1, 2.5])
    h.observe_many([0.5, 2.5, 2.0, 8.5])
    text = render(
        [
            gauge("demo_up", "1 when up.", 1),
            labelled(
                "demo_errors_total",
                "counter",
                "Errors by device and kind.",
                {("b", "timeout"): 0, ("a", "timeout"): 5, ("a", "crc"): 2},
                ("device", "kind"),
            ),
            gauge("demo_offset_seconds", "Clock offset.", None),
            histogram_family("demo_lag_seconds", "Lag.", h.snapshot()),
        ]
    )
    assert text == GOLDEN


def test_families_and_samples_keep_their_order() -> None:
    fam = Family(
        "z_first",
        "gauge",
        "h",
        (Sample(2, (("b", "2"), ("a", "1"))), Sample(1, (("b", "1"), ("a", "2")))),
    )
    text = render([fam, counter("a_second_total", "h", 3)])
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ['z_first{b="2",a="1"} 2', 'z_first{b="1",a="2"} 1', "a_second_total 3"]


def test_label_values_and_help_are_escaped() -> None:
    assert escape_label('C:\\dev "x"\nnext') == 'C:\\\\dev \\"x\\"\\nnext'
    assert escape_help('back\\slash "quote"\nline') == 'back\\\\slash "quote"\\nline'
    text = render([gauge("m", 'a\\b\n"c"', 1, (("device", 'so"nde\\1\n'),))])
    assert text.splitlines() == [
        '# HELP m a\\\\b\\n"c"',
        "# TYPE m gauge",
        'm{device="so\\"nde\\\\1\\n"} 1',
    ]


def test_values() -> None:
    assert format_value(3) == "3"
    assert format_value(True) == "1"
    assert format_value(2.0) == "2"
    assert format_value(0.25) == "0.25"
    assert format_value(-1.5e-7) == "-1.5e-07"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(1e20) == "1e+20"


def test_bad_names_and_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid"):
        gauge("bad-name", "h", 1)
    with pytest.raises(ValueError, match="label name"):
        gauge("ok", "h", 1, (("bad-label", "x"),))
    with pytest.raises(ValueError, match="label name"):
        gauge("ok", "h", 1, (("__reserved", "x"),))
    with pytest.raises(ValueError, match="suffix"):
        Family("ok", "gauge", "h", (Sample(1, (), "_bucket"),))
    with pytest.raises(ValueError, match="given twice"):
        render([gauge("m", "h", 1), gauge("m", "h", 2)])
    with pytest.raises(ValueError, match="does not match"):
        labelled("m", "gauge", "h", {("a", "b"): 1}, ("one",))
    assert render([]) == ""


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    h = Histogram([1.0, 5.0, 10.0])
    h.observe_many([1.0, 0.0, 5.0, 5.000001, 11.0, math.nan])
    s = h.snapshot()
    assert s.cumulative == (2, 3, 4, 5)
    assert s.count == 5
    assert s.sum == pytest.approx(22.000001)
    merged = Histogram.merge([s, s])
    assert merged.cumulative == (4, 6, 8, 10)
    assert merged.count == 10
    with pytest.raises(ValueError, match="different bounds"):
        Histogram.merge([s, Histogram([1.0]).snapshot()])
    with pytest.raises(ValueError, match="increase"):
        Histogram([2.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        Histogram([1.0, math.inf])


def test_histogram_observed_from_threads_counts_every_value() -> None:
    h = Histogram([0.5])

    def work() -> None:
        for _ in range(200):
            h.observe_many([0.1, 0.9])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = h.snapshot()
    assert s.cumulative == (800, 1600)
    assert s.sum == pytest.approx(800.0)


def test_health_body_and_status() -> None:
    ok = Health(True, (), {"station": "S1"})
    assert ok.status == 200
    assert json.loads(ok.body()) == {"status": "ok", "station": "S1"}
    bad = Health(False, ("the buffer cannot be written",))
    assert bad.status == 503
    assert json.loads(bad.body()) == {
        "status": "unhealthy",
        "reasons": ["the buffer cannot be written"],
    }


def test_since_moves_only_on_change() -> None:
    s = Since(0, 10.0)
    s.sample(0, 20.0)
    assert s.since == 10.0
    s.sample(1, 30.0)
    assert (s.value, s.since) == (1, 30.0)


def test_routes_and_responses() -> None:
    assert route("GET", "/metrics") == "metrics"
    assert route("HEAD", "/healthz?verbose=1") == "healthz"
    assert route("POST", "/metrics") == (405, b"only GET and HEAD\n")
    not_found = route("GET", "/")
    assert isinstance(not_found, tuple) and not_found[0] == 404
    full = http_response(503, b'{"status":"unhealthy"}\n', "application/json")
    head, body = full.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Length: 23" in head
    assert body == b'{"status":"unhealthy"}\n'
    assert http_response(200, b"abc", "text/plain", head=True).endswith(b"\r\n\r\n")


def test_metrics_config_is_off_by_default_and_listen_is_checked() -> None:
    from sanduan.shared.config import CentralConfig, StationConfig, parse_model
    from sanduan.shared.errors import ConfigError

    station = {"station": {"id": "S1"}}
    assert parse_model(StationConfig, station, "s.toml").metrics.listen is None
    assert parse_model(CentralConfig, {}, "c.toml").metrics.listen is None
    cfg = parse_model(
        StationConfig, {**station, "metrics": {"listen": "[::1]:9471", "poll_stale_s": 30}}, "s"
    )
    assert (cfg.metrics.listen, cfg.metrics.poll_stale_s) == ("[::1]:9471", 30)
    with pytest.raises(ConfigError, match=r"s.toml: metrics.listen: listen must be host:port"):
        parse_model(StationConfig, {**station, "metrics": {"listen": "9471"}}, "s.toml")
    with pytest.raises(ConfigError, match=r"metrics.listen: listen must be host:port"):
        parse_model(CentralConfig, {"metrics": {"listen": "localhost:99999"}}, "c.toml")
    with pytest.raises(ConfigError, match=r"metrics.poll_stale_s"):
        parse_model(CentralConfig, {"metrics": {"poll_stale_s": 10}}, "c.toml")

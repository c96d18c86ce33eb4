"""Health metrics in the Prometheus text exposition format (version 0.0.4), pure.

The agent (``sanduan edge run``) and the collector (``sanduan central run``) serve ``GET
/metrics`` and ``GET /healthz`` when ``[metrics] listen`` is set (see docs/deploy.md,
"Monitoring"). This module holds what both need and that does no I/O:

- :class:`Family` / :class:`Sample`: one metric family and its samples; :func:`render` writes
  families as text: ``# HELP`` and ``# TYPE`` lines, then the samples, families and samples in
  the order given, label values escaped (backslash, double quote, line feed), help text escaped
  (backslash, line feed). :func:`labelled` builds the samples of a mapping in sorted order, so
  the text is the same for the same values.
- :class:`Histogram`: cumulative buckets, sum and count, safe to observe from one thread while
  another renders it.
- :class:`Health`: the answer of ``/healthz`` (200 with a short JSON document when healthy, 503
  with the reasons when not), and :func:`http_response` for a shell without an HTTP library.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of ``/metrics``."""
JSON_TYPE = "application/json"

MetricType = Literal["counter", "gauge", "histogram", "untyped"]

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SUFFIXES = frozenset(("", "_bucket", "_sum", "_count"))

Labels = tuple[tuple[str, str], ...]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One line: the family's name plus ``suffix`` (``_bucket``, ``_sum``, ``_count`` of a
    histogram), the labels in the order given, the value."""

    value: float
    labels: Labels = ()
    suffix: str = ""


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: its name (with ``_total`` for a counter), type, help and samples."""

    name: str
    type: MetricType
    help: str
    samples: tuple[Sample, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"metric name {self.name!r} is not a valid Prometheus name")
        for s in self.samples:
            if s.suffix not in _SUFFIXES or (s.suffix and self.type != "histogram"):
                raise ValueError(f"metric {self.name}: suffix {s.suffix!r} not allowed here")
            for k, _ in s.labels:
                if not LABEL_RE.match(k) or k.startswith("__"):
                    raise ValueError(f"metric {self.name}: label name {k!r} is not valid")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(v: float) -> str:
    """A sample value: integers without a decimal point, ``NaN``, ``+Inf``, ``-Inf``."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


def render(families: Iterable[Family]) -> str:
    """The families as Prometheus text (format 0.0.4), ending with a line feed."""
    out: list[str] = []
    seen: set[str] = set()
    for f in families:
        if f.name in seen:
            raise ValueError(f"metric {f.name} is given twice")
        seen.add(f.name)
        out.append(f"# HELP {f.name} {escape_help(f.help)}")
        out.append(f"# TYPE {f.name} {f.type}")
        out.extend(
            f"{f.name}{s.suffix}{_labels(s.labels)} {format_value(s.value)}" for s in f.samples
        )
    return "\n".join(out) + "\n" if out else ""


def gauge(name: str, help: str, value: float | None, labels: Labels = ()) -> Family:
    """A family of one sample (none when ``value`` is None: unknown)."""
    samples = () if value is None else (Sample(value, labels),)
    return Family(name, "gauge", help, samples)


def counter(name: str, help: str, value: float, labels: Labels = ()) -> Family:
    return Family(name, "counter", help, (Sample(value, labels),))


def labelled(
    name: str,
    type: MetricType,
    help: str,
    values: Mapping[Any, float],
    label_names: Sequence[str],
) -> Family:
    """A family with one sample per key of ``values`` (a tuple of label values, or one string
    for one label), sorted by the label values."""
    samples: list[Sample] = []
    for key in sorted(values):
        vals = (key,) if isinstance(key, str) else key
        if len(vals) != len(label_names):
            raise ValueError(f"metric {name}: {vals!r} does not match labels {label_names!r}")
        samples.append(Sample(values[key], tuple(zip(label_names, vals, strict=True))))
    return Family(name, type, help, tuple(samples))


# --- histograms ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    """Upper bounds of the finite buckets, ascending (``+Inf`` is implied)."""
    cumulative: tuple[int, ...]
    """Observations <= each bound, then the total (the ``+Inf`` bucket)."""
    sum: float
    count: int


class Histogram:
    """Cumulative buckets of observations (Prometheus histogram); thread-safe."""

    def __init__(self, bounds: Sequence[float]) -> None:
        b = tuple(float(x) for x in bounds)
        if not b or any(not math.isfinite(x) for x in b):
            raise ValueError("histogram bounds must be finite and at least one")
        if any(x >= y for x, y in itertools.pairwise(b)):
            raise ValueError("histogram bounds must increase")
        self.bounds = b
        self._bounds = np.asarray(b, dtype=np.float64)
        self._counts = [0] * (len(b) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def observe_many(self, values: Iterable[float] | FloatArray) -> None:
        """Observe every value (NaN ignored); vectorised: a 1000-value batch costs tens of
        microseconds."""
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float64)
        arr = arr[~np.isnan(arr)]
        if not arr.size:
            return
        counts = np.bincount(
            np.searchsorted(self._bounds, arr, side="left"), minlength=len(self._counts)
        ).tolist()
        total = float(arr.sum())
        with self._lock:
            for i, c in enumerate(counts):
                self._counts[i] += c
            self._sum += total

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cum: list[int] = []
        run = 0
        for c in counts:
            run += c
            cum.append(run)
        return HistogramSnapshot(self.bounds, tuple(cum), total, run)

    @staticmethod
    def merge(snaps: Sequence[HistogramSnapshot]) -> HistogramSnapshot:
        """The sum of snapshots with the same bounds (one histogram per worker thread)."""
        if not snaps:
            raise ValueError("nothing to merge")
        bounds = snaps[0].bounds
        if any(s.bounds != bounds for s in snaps):
            raise ValueError("histograms with different bounds cannot be merged")
        cum = tuple(sum(col) for col in zip(*(s.cumulative for s in snaps), strict=True))
        return HistogramSnapshot(bounds, cum, sum(s.sum for s in snaps), cum[-1])


def histogram_family(
    name: str,
    help: str,
    snap: HistogramSnapshot,
    labels: Labels = (),
) -> Family:
    samples = [
        Sample(c, (*labels, ("le", format_value(b))), "_bucket")
        for b, c in zip(snap.bounds, snap.cumulative, strict=False)
    ]
    samples.append(Sample(snap.count, (*labels, ("le", "+Inf")), "_bucket"))
    samples.append(Sample(snap.sum, labels, "_sum"))
    samples.append(Sample(snap.count, labels, "_count"))
    return Family(name, "histogram", help, tuple(samples))


# --- health ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """What ``/healthz`` answers: healthy or not, why not, and a few figures."""

    ok: bool
    reasons: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return 200 if self.ok else 503

    def body(self) -> bytes:
        doc: dict[str, Any] = {"status": "ok" if self.ok else "unhealthy"}
        if self.reasons:
            doc["reasons"] = list(self.reasons)
        doc.update(self.detail)
        return (json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n").encode()


@dataclass
class Since:
    """When a sampled condition last changed (``since`` on the caller's clock)."""

    value: object
    since: float

    def sample(self, value: object, now: float) -> None:
        if value != self.value:
            self.value = value
            self.since = now


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {503: "Service Unavailable"}


def http_response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return out if head else out + body


Route = Literal["metrics", "healthz"]


def route(method: str, target: str) -> Route | tuple[int, bytes]:
    """Which page a request asks for, or the error status and text to answer with."""
    path = target.split("?", 1)[0]
    if path not in ("/metrics", "/healthz"):
        return 404, b"not found: try /metrics or /healthz\n"
    if method not in ("GET", "HEAD"):
        return 405, b"only GET and HEAD\n"
    return "metrics" if path == "/metrics" else "healthz"

"""Checks a decoded message must pass before the centre stores it (pure).

The wire decoder has already checked the format. These checks are about trust and plausibility:

* the station in the message header is the station of the topic it arrived on;
* where the broker tells the collector who published (it is the authenticated MQTT user),
  that user is the station. Mosquitto 2.0 does not pass the publisher's identity to
  subscribers (an MQTT 5 user property is set by the publisher and proves nothing), so with
  Mosquitto the binding is enforced at the broker with an ACL (``pattern write
  sanduan/v1/%u/#``) and this check sees ``user=None``;
* every value is inside the physical range of its parameter (``parameters.toml``: a pH of 40
  or a negative concentration is a broken device or a forged message, not a measurement).
  NaN (missing) passes; codes the registry does not know have no range and pass. A value the
  station itself flags as not a valid measurement (any flag but N and S: the edge agent flags an
  impossible value D) passes too: it is stored as evidence and excluded from every mean, and a
  batch the centre would never acknowledge cannot block the station's buffer.

* every seq is within the wire's bounds (``1..MAX_SEQ``; v1 batches are held to it too, so a
  forged seq near 2**63 can never make the centre ask for a range that does not fit the wire);
* readings are stamped plausibly: not more than a margin ahead of the centre's clock, and not
  before an earliest date (:func:`implausible_times` finds the ones that are not; they are
  rejected one by one, the rest of the batch is stored).

Each check returns a reason string (for the dead-letter table) or ``None``.
"""

from __future__ import annotations

import math
from functools import cache

from sanduan.shared.errors import UnknownParameterError
from sanduan.shared.model import Flag
from sanduan.shared.params import Parameter, by_code
from sanduan.shared.wire import MAX_SEQ, Batch

_TRUSTED = frozenset({Flag.N, Flag.S})


@cache
def _param(code: str) -> Parameter | None:
    try:
        return by_code(code)
    except UnknownParameterError:
        return None


def check_origin(station: str, topic_station: str | None, user: str | None = None) -> str | None:
    """The header's station must match the topic's and, when known, the publishing user."""
    if topic_station is not None and station != topic_station:
        return f"station {station!r} in the message does not match the topic's {topic_station!r}"
    if user is not None and station != user:
        return f"station {station!r} was published by MQTT user {user!r}"
    return None


def check_values(batch: Batch) -> str | None:
    """Every value of the batch inside its parameter's physical range (NaN allowed)."""
    params = [_param(code) for code in batch.codes]
    lo = [-math.inf if p is None else p.physical_min for p in params]
    hi = [math.inf if p is None else p.physical_max for p in params]
    rows = zip(batch.code_idx, batch.values, batch.flags, strict=True)
    for i, (idx, v, flag) in enumerate(rows):
        if not (lo[idx] <= v <= hi[idx]) and not math.isnan(v) and flag in _TRUSTED:
            p = params[idx]
            assert p is not None
            return (
                f"value {v!r} of {p.code} ({p.name}) at seq {batch.seq[i]} is outside the"
                f" physical range {p.physical_min:g}..{p.physical_max:g}"
            )
    return None


def check_seqs(batch: Batch) -> str | None:
    """Seqs within ``1..MAX_SEQ`` (the decoder checks v2 batches; this holds v1 to it too)."""
    if batch.first_seq < 1 or batch.last_seq > MAX_SEQ:
        return (
            f"seqs {batch.first_seq}..{batch.last_seq} of batch {batch.batch_seq} are outside"
            f" 1..{MAX_SEQ}"
        )
    return None


def check_batch(batch: Batch, topic_station: str | None, user: str | None = None) -> str | None:
    """Origin, seq and value checks for a batch; the first failure's reason, or ``None``."""
    return (
        check_origin(batch.station, topic_station, user) or check_seqs(batch) or check_values(batch)
    )


def implausible_times(batch: Batch, now_ms: int, ahead_ms: int, earliest_ms: int) -> list[int]:
    """Indices of the readings stamped after ``now_ms + ahead_ms`` or before ``earliest_ms``."""
    latest = now_ms + ahead_ms
    return [i for i, t in enumerate(batch.ts_ms) if t > latest or t < earliest_ms]

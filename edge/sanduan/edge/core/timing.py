"""Bus time: how long one poll of each device keeps an RS-485 line busy, and whether it fits.

A read transaction ("read N holding/input registers") costs, on a line of ``b`` bits per
character at ``baud``:

- the request, 8 bytes (slave, function, address, count, CRC);
- an inter-frame gap of 3.5 character times (fixed 1.75 ms above 19200 baud);
- the device's turnaround (``DeviceConfig.turnaround_s``, default 10 ms);
- the response, ``5 + 2 * N`` bytes (slave, function, byte count, data, CRC);
- another inter-frame gap.

A character is 1 start bit + data bits + a parity bit (unless parity N) + stop bits: 11 bits for
8E1 and 8N2, 10 for 8N1. Ten registers at 9600 8E1: ``33 * 11 / 9600`` = 37.8 ms on the wire plus
two gaps of 4.0 ms, 45.8 ms plus the turnaround.

A poll of a device is its planned transactions with ``pause_s`` between consecutive ones. The
bus utilisation is the sum over devices of (poll time / poll period); above
:data:`UTILISATION_WARN` the polls do not reliably fit and every retry or slow reply makes the
schedule slip. A silent device costs ``attempts * (request + timeout)`` per poll until it backs
off (one attempt once it is degraded).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from sanduan.edge.core.plan import BusPlan, DevicePlan
from sanduan.shared.config import BusConfig

__all__ = [
    "DEFAULT_TURNAROUND_S",
    "REQUEST_BYTES",
    "TIMEOUT_FLOOR_S",
    "UTILISATION_WARN",
    "AdaptiveTimeout",
    "BusTiming",
    "DeviceTiming",
    "Line",
    "bus_timing",
    "device_timing",
    "format_bus_timing",
    "response_bytes",
]

REQUEST_BYTES = 8
DEFAULT_TURNAROUND_S = 0.010
UTILISATION_WARN = 0.8
FAST_BAUD = 19200  # above this rate the inter-frame gap is a fixed 1.75 ms
FAST_GAP_S = 0.00175
TIMEOUT_FLOOR_S = 0.05
"""No adapted reply timeout is shorter: room for a loaded gateway's scheduler jitter."""


def response_bytes(count: int) -> int:
    """Bytes of a normal FC03/FC04 response carrying ``count`` registers."""
    return 5 + 2 * count


@dataclass(frozen=True, slots=True)
class Line:
    """Serial settings of a bus and the character and gap times they imply."""

    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @classmethod
    def of(cls, bus: BusConfig) -> Line:
        return cls(bus.baudrate, bus.bytesize, bus.parity, bus.stopbits)

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baudrate

    @property
    def gap_s(self) -> float:
        """The RTU inter-frame silence: 3.5 characters, or 1.75 ms above 19200 baud."""
        return FAST_GAP_S if self.baudrate > FAST_BAUD else 3.5 * self.char_s

    def wire_s(self, nbytes: int) -> float:
        return nbytes * self.char_s

    def transaction_s(self, count: int, turnaround_s: float = DEFAULT_TURNAROUND_S) -> float:
        """One read of ``count`` registers: both frames, two gaps and the turnaround."""
        wire = self.wire_s(REQUEST_BYTES + response_bytes(count))
        return wire + 2 * self.gap_s + turnaround_s

    @property
    def name(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class DeviceTiming:
    device: str
    requests: int
    request_bytes: int
    response_bytes: int
    poll_s: float
    """Bus time of one successful poll."""
    period_s: float
    silent_s: float
    """Bus time of one poll of a silent device (every attempt of the first request times out)."""

    @property
    def utilisation(self) -> float:
        return self.poll_s / self.period_s


@dataclass(frozen=True, slots=True)
class BusTiming:
    bus: str
    line: Line
    devices: tuple[DeviceTiming, ...]
    warnings: tuple[str, ...]
    """The polls do not fit the bus."""
    notes: tuple[str, ...] = ()
    """Worth a look, not a problem by itself (a device's factory serial settings differ)."""

    @property
    def utilisation(self) -> float:
        return sum(d.utilisation for d in self.devices)

    @property
    def requests(self) -> int:
        return sum(d.requests for d in self.devices)

    @property
    def round_s(self) -> float:
        """Bus time to poll every device once."""
        return sum(d.poll_s for d in self.devices)

    @property
    def fits(self) -> bool:
        return not self.warnings


def device_timing(plan: DevicePlan, line: Line) -> DeviceTiming:
    cfg = plan.config
    poll = sum(line.transaction_s(b.count, cfg.turnaround_s) for b in plan.blocks)
    poll += cfg.pause_s * max(0, plan.requests - 1)
    attempts = cfg.retries + 1
    silent = attempts * (line.wire_s(REQUEST_BYTES) + cfg.timeout_s) if plan.blocks else 0.0
    return DeviceTiming(
        device=plan.name,
        requests=plan.requests,
        request_bytes=REQUEST_BYTES * plan.requests,
        response_bytes=sum(response_bytes(b.count) for b in plan.blocks),
        poll_s=poll,
        period_s=cfg.poll_period_s,
        silent_s=silent,
    )


def bus_timing(plan: BusPlan, threshold: float = UTILISATION_WARN) -> BusTiming:
    """Timing of every device of a bus, with warnings when the polls do not fit."""
    line = Line.of(plan.config)
    devices = tuple(device_timing(d, line) for d in plan.devices)
    warnings: list[str] = []
    notes: list[str] = []
    total = sum(d.utilisation for d in devices)
    if total > threshold:
        warnings.append(
            f"bus {plan.name}: utilisation {total:.2f} exceeds {threshold:.2f}"
            f" ({sum(d.poll_s for d in devices) * 1000:.1f} ms of bus time per round at"
            f" {line.name}); lengthen poll periods, raise the baud rate or split the bus"
        )
    for d, dp in zip(devices, plan.devices, strict=True):
        if d.poll_s > d.period_s:
            warnings.append(
                f"bus {plan.name}: device {d.device}: one poll takes {d.poll_s * 1000:.1f} ms,"
                f" longer than its poll period {d.period_s:g} s"
            )
        if d.silent_s > d.period_s:
            warnings.append(
                f"bus {plan.name}: device {d.device}: when silent it holds the bus"
                f" {d.silent_s:.2f} s per poll ({dp.config.retries + 1} attempts x"
                f" {dp.config.timeout_s:g} s), longer than its poll period {d.period_s:g} s"
            )
        defaults = dp.profile.serial
        if dp.config.profile is not None and (
            defaults.baudrate,
            defaults.bytesize,
            defaults.parity,
            defaults.stopbits,
        ) != (line.baudrate, line.bytesize, line.parity, line.stopbits):
            notes.append(
                f"bus {plan.name}: device {d.device}: profile {dp.profile.name} ships with"
                f" {defaults.baudrate} {defaults.bytesize}{defaults.parity}{defaults.stopbits},"
                f" the bus runs {line.name}; make sure the device was reconfigured"
            )
    return BusTiming(plan.name, line, devices, tuple(warnings), tuple(notes))


def format_bus_timing(timing: BusTiming) -> list[str]:
    """Timing as stable text lines (fixed decimals)."""
    line = timing.line
    out = [
        f"timing {timing.bus}: {line.name}, {line.bits_per_char} bits/char,"
        f" char {line.char_s * 1000:.3f} ms, gap {line.gap_s * 1000:.3f} ms"
    ]
    out.extend(
        f"  {d.device}: {d.requests} req, {d.request_bytes}+{d.response_bytes} bytes,"
        f" {d.poll_s * 1000:.1f} ms/poll every {d.period_s:g} s = {d.utilisation:.4f};"
        f" silent {d.silent_s * 1000:.0f} ms/poll"
        for d in timing.devices
    )
    out.append(
        f"  total: {timing.requests} req, {timing.round_s * 1000:.1f} ms/round,"
        f" utilisation {timing.utilisation:.4f}"
    )
    out.extend(f"  warning: {w}" for w in timing.warnings)
    out.extend(f"  note: {n}" for n in timing.notes)
    return out


class AdaptiveTimeout:
    """A device's measured turnarounds (end of request to first reply byte, seconds) and the
    reply timeout they justify.

    ``timeout = clamp(SAFETY * p99 + reply wire time + MARGIN_S, low, high)`` where ``high`` is
    the configured ``timeout_s`` and ``low = max(timeout_min_s, TIMEOUT_FLOOR_S)``; never below
    ``SAFETY * p99`` either. Until ``MIN_SAMPLES`` turnarounds have been measured the timeout is
    ``high``; :meth:`reset` (called on every timeout) goes back there, so a device that became
    slower is waited for in full until it has been measured again.
    """

    WINDOW = 64
    MIN_SAMPLES = 16
    SAFETY = 3.0
    MARGIN_S = 0.02

    def __init__(self, low_s: float, high_s: float) -> None:
        self.high_s = high_s
        self.low_s = min(high_s, max(low_s, TIMEOUT_FLOOR_S))
        self._samples: collections.deque[float] = collections.deque(maxlen=self.WINDOW)

    def add(self, turnaround_s: float) -> None:
        self._samples.append(max(0.0, turnaround_s))

    def reset(self) -> None:
        self._samples.clear()

    @property
    def samples(self) -> int:
        return len(self._samples)

    @property
    def p99_s(self) -> float | None:
        n = len(self._samples)
        if n < self.MIN_SAMPLES:
            return None
        ordered = sorted(self._samples)
        return ordered[min(n - 1, math.ceil(0.99 * n) - 1)]

    def timeout_s(self, reply_wire_s: float) -> float:
        p99 = self.p99_s
        if p99 is None:
            return self.high_s
        wanted = self.SAFETY * p99 + reply_wire_s + self.MARGIN_S
        return min(self.high_s, max(self.low_s, wanted))

"""The fault timeline: what goes wrong, when (simulated time), and to whom.

A scenario lists faults as ``[[fault]]`` tables and may ask for seeded random process kills in
``[chaos]``. :func:`build_timeline` validates both against the scenario's stations and devices
and returns the faults in time order with absolute simulated times; the rig injects them and
records, per fault, what the system did about it (:class:`FaultRecord`).

Kinds::

    device faults (station + device, for ``duration``):
      crc         replies with a corrupted CRC
      silence     no reply at all
      garbage     random bytes instead of replies
      slow        replies ``delay_s`` real seconds late (beyond the agent's timeout: lost)
      exception   Modbus exception ``code`` (default 4, slave device failure) to every request
      stuck       the registers freeze at their values when the fault starts
      nan         the value registers (all, or ``codes``) serve the device's NaN sentinel
      reboot      the device goes silent for ``duration`` and comes back
    process faults:
      agent       SIGKILL the station's edge agent; restart it after ``duration``
      collector   SIGKILL the collector; restart it after ``duration``
      broker      SIGKILL the broker (or SIGTERM with ``signal = "TERM"``); restart after
                  ``duration`` (only brokers the rig started itself)
      clock       restart the station's agent with its clock off by ``offset``; with a
                  ``duration``, restart it again with the right time afterwards
      gateway-replaced
                  SIGKILL the station's agent, delete its buffer (a new SD card, a re-flashed
                  gateway) and start it again after ``duration`` with an empty buffer: a new
                  stream. What the old buffer held unacknowledged is lost with it
                  (``lost_with_buffer`` in the delivery check, never ``lost``)
    attacks:
      hostile-station
                  for ``duration``, a client with the station's credentials sends garbage,
                  oversize payloads, forged seqs, conflicting content and readings stamped
                  1970 and 2100 every ``interval_s`` real seconds, and takes the collector's
                  and another agent's client ids once first (see :mod:`sanduan.hil.hostile`)

``[chaos]`` expands into ``kills`` process faults at seeded random times between ``start`` and
``end`` (offsets; a negative ``end`` counts back from the end of the period), at least
``min_gap`` apart, on random ``targets``, each down for a random time in
``[down_min, down_max]``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from sanduan.shared.errors import ConfigError
from sanduan.shared.tables import Strict, parse_table

if TYPE_CHECKING:
    from sanduan.hil.scenario import Scenario

__all__ = [
    "DEVICE_KINDS",
    "PROCESS_KINDS",
    "STATION_KINDS",
    "ChaosSpec",
    "Fault",
    "FaultRecord",
    "FaultSpec",
    "build_timeline",
    "device_fault_changes",
]

DeviceKind = Literal["crc", "silence", "garbage", "slow", "exception", "stuck", "nan", "reboot"]
ProcessKind = Literal["agent", "collector", "broker", "clock", "gateway-replaced"]

DEVICE_KINDS: frozenset[str] = frozenset(
    {"crc", "silence", "garbage", "slow", "exception", "stuck", "nan", "reboot"}
)
PROCESS_KINDS: frozenset[str] = frozenset(
    {"agent", "collector", "broker", "clock", "gateway-replaced"}
)
STATION_KINDS: frozenset[str] = frozenset({"agent", "clock", "gateway-replaced", "hostile-station"})
"""Faults of one station that are not device faults."""


def _duration(v: object) -> float:
    from sanduan.hil.scenario import parse_duration

    return parse_duration(v)


Duration = Annotated[float, BeforeValidator(_duration)]


class FaultSpec(Strict):
    """One ``[[fault]]`` table."""

    kind: Literal[
        "crc",
        "silence",
        "garbage",
        "slow",
        "exception",
        "stuck",
        "nan",
        "reboot",
        "agent",
        "collector",
        "broker",
        "clock",
        "gateway-replaced",
        "hostile-station",
        "platform",
    ]
    at: Duration
    """Offset from the scenario start (simulated)."""
    duration: Duration = 0.0
    station: str | None = None
    device: str | None = None
    delay_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    code: Annotated[int, Field(ge=1, le=255)] = 4
    codes: list[str] | None = None
    offset: Duration = 0.0
    signal: Literal["KILL", "TERM"] = "KILL"
    interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    """hostile-station: real seconds between rounds of attacks."""
    note: str = ""


def _all_targets() -> list[Literal["agent", "collector", "broker"]]:
    return ["agent", "collector", "broker"]


class ChaosSpec(Strict):
    """The ``[chaos]`` table."""

    seed: int = 1
    kills: Annotated[int, Field(ge=1, le=1000)]
    targets: list[Literal["agent", "collector", "broker"]] = Field(
        default_factory=_all_targets, min_length=1
    )
    start: Duration = 6 * 3600.0
    end: Duration = -6 * 3600.0
    down_min: Duration = 600.0
    down_max: Duration = 3 * 3600.0
    min_gap: Duration = 3600.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault with absolute simulated times (Unix seconds)."""

    index: int
    kind: str
    at: float
    duration: float
    station: str | None = None
    device: str | None = None
    delay_s: float = 1.0
    code: int = 4
    codes: tuple[str, ...] | None = None
    offset: float = 0.0
    signal: str = "KILL"
    interval_s: float = 0.5
    origin: str = "fault"
    """"fault" for a [[fault]] table, "chaos" for a generated kill."""

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def target(self) -> str:
        if self.kind in DEVICE_KINDS:
            return f"{self.station}/{self.device}"
        if self.kind in STATION_KINDS:
            return str(self.station)
        return self.kind

    def describe(self) -> str:
        what = {
            "crc": "CRC-corrupted replies",
            "silence": "silent device",
            "garbage": "garbage bytes instead of replies",
            "slow": f"replies {self.delay_s:g} s late",
            "exception": f"Modbus exception {self.code}",
            "stuck": "stuck values",
            "nan": "NaN values",
            "reboot": "device reboot",
            "agent": f"edge agent SIGKILL{'ed' if self.signal == 'KILL' else ''}",
            "collector": "collector SIGKILLed",
            "broker": f"broker {'killed' if self.signal == 'KILL' else 'stopped'}",
            "clock": f"gateway clock jump {self.offset:+g} s",
            "gateway-replaced": "gateway replaced, buffer lost",
            "hostile-station": "hostile client with the station's login",
            "platform": "provincial platform (HJ 212) down",
        }[self.kind]
        return f"{what} ({self.target})"


@dataclass
class FaultRecord:
    """What happened when a fault was injected, for the run summary.

    ``outcome`` holds the measured figures (errors counted, readings resent, backlog, ...);
    ``recovered_s`` the simulated seconds from the end of the fault until the system was back
    to normal by the measure that fits the kind (first good read, first ack, backlog drained).
    """

    fault: Fault
    injected_at: float | None = None
    cleared_at: float | None = None
    skipped: str = ""
    outcome: dict[str, Any] = field(default_factory=dict)
    recovered_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        f = self.fault
        out: dict[str, Any] = {
            "kind": f.kind,
            "target": f.target,
            "origin": f.origin,
            "at": f.at,
            "duration_s": f.duration,
            "description": f.describe(),
            "injected_at": self.injected_at,
            "cleared_at": self.cleared_at,
            "outcome": dict(self.outcome),
            "recovered_s": self.recovered_s,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def device_fault_changes(fault: Fault) -> dict[str, Any]:
    """Keyword changes for :meth:`SimulatedDevice.set_faults` that start a device fault."""
    k = fault.kind
    if k == "crc":
        return {"crc_corrupt": True}
    if k in ("silence", "reboot"):
        return {"silent": True}
    if k == "garbage":
        return {"garbage": True}
    if k == "slow":
        return {"delay_s": fault.delay_s}
    if k == "exception":
        return {"exception": fault.code}
    if k == "stuck":
        return {"stuck": True}
    if k == "nan":
        return {"nan": frozenset(fault.codes) if fault.codes else True}
    raise ValueError(f"{k} is not a device fault")


def _expand_chaos(spec: ChaosSpec, sc: Scenario, first_index: int) -> list[Fault]:
    rng = random.Random(spec.seed)
    lo = sc.start + spec.start
    hi = (sc.end + spec.end) if spec.end <= 0 else sc.start + spec.end
    if hi <= lo:
        return []
    times: list[float] = []
    for _ in range(spec.kills * 50):
        if len(times) == spec.kills:
            break
        t = rng.uniform(lo, hi)
        if all(abs(t - x) >= spec.min_gap for x in times):
            times.append(t)
    times.sort()
    stations = [s.id for s in sc.stations]
    out: list[Fault] = []
    for i, t in enumerate(times):
        target = rng.choice(spec.targets)
        down = rng.uniform(spec.down_min, max(spec.down_min, spec.down_max))
        station = rng.choice(stations) if target == "agent" else None
        out.append(
            Fault(
                index=first_index + i,
                kind=target,
                at=round(t),
                duration=round(down),
                station=station,
                origin="chaos",
            )
        )
    return out


def build_timeline(sc: Scenario) -> list[Fault]:
    """Validate the scenario's faults and chaos; all faults in time order."""
    file = sc.source
    faults: list[Fault] = []
    devices = {s.id: {d.name: d for d in s.devices} for s in sc.stations}
    for i, raw in enumerate(sc.fault_specs):
        key = f"fault[{i}]"
        try:
            spec = parse_table(FaultSpec, dict(raw), file)
        except ConfigError as e:
            raise ConfigError(file, f"{key}.{e.key}" if e.key else key, e.reason) from None
        if spec.at < 0:
            raise ConfigError(file, f"{key}.at", "must not be before the start")
        if spec.duration < 0:
            raise ConfigError(file, f"{key}.duration", "must not be negative")
        if spec.kind in DEVICE_KINDS or spec.kind in STATION_KINDS:
            if spec.station is None:
                raise ConfigError(file, f"{key}.station", f"a {spec.kind} fault needs a station")
            if spec.station not in devices:
                raise ConfigError(file, f"{key}.station", f"unknown station {spec.station!r}")
        if spec.kind in DEVICE_KINDS:
            assert spec.station is not None
            if spec.device is None:
                raise ConfigError(file, f"{key}.device", f"a {spec.kind} fault needs a device")
            if spec.device not in devices[spec.station]:
                known = ", ".join(devices[spec.station])
                raise ConfigError(
                    file,
                    f"{key}.device",
                    f"station {spec.station} has no device {spec.device!r} (it has: {known})",
                )
            if spec.duration <= 0:
                raise ConfigError(file, f"{key}.duration", f"a {spec.kind} fault needs a duration")
            if spec.codes:
                have = set(devices[spec.station][spec.device].codes)
                from sanduan.shared.params import resolve

                for j, c in enumerate(spec.codes):
                    try:
                        code = resolve(c).code
                    except Exception as e:  # UnknownParameterError
                        raise ConfigError(file, f"{key}.codes[{j}]", str(e)) from None
                    if code not in have:
                        raise ConfigError(
                            file, f"{key}.codes[{j}]", f"device {spec.device} does not measure {c}"
                        )
        elif spec.device is not None:
            raise ConfigError(file, f"{key}.device", f"a {spec.kind} fault has no device")
        if spec.kind == "hostile-station" and spec.duration <= 0:
            raise ConfigError(file, f"{key}.duration", "a hostile-station fault needs a duration")
        if spec.kind == "platform":
            if not sc.platform:
                raise ConfigError(file, f"{key}.kind", "a platform fault needs rig.platform = true")
            if spec.duration <= 0:
                raise ConfigError(file, f"{key}.duration", "a platform fault needs a duration")
        if spec.kind == "clock" and spec.offset == 0:
            raise ConfigError(file, f"{key}.offset", "a clock fault needs a non-zero offset")
        codes = None
        if spec.codes:
            from sanduan.shared.params import resolve

            codes = tuple(resolve(c).code for c in spec.codes)
        faults.append(
            Fault(
                index=i,
                kind=spec.kind,
                at=sc.start + spec.at,
                duration=spec.duration,
                station=spec.station,
                device=spec.device,
                delay_s=spec.delay_s,
                code=spec.code,
                codes=codes,
                offset=spec.offset,
                signal=spec.signal,
                interval_s=spec.interval_s,
            )
        )
    if sc.chaos_spec is not None:
        chaos = _chaos_spec(file, sc.chaos_spec)
        faults.extend(_expand_chaos(chaos, sc, len(faults)))
    faults.sort(key=lambda f: (f.at, f.index))
    return faults


def _chaos_spec(file: str, raw: Mapping[str, Any]) -> ChaosSpec:
    try:
        spec = parse_table(ChaosSpec, dict(raw), file)
    except ConfigError as e:
        raise ConfigError(file, f"chaos.{e.key}" if e.key else "chaos", e.reason) from None
    if spec.down_max < spec.down_min:
        raise ConfigError(file, "chaos.down_max", "must be at least down_min")
    return spec

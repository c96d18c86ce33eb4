"""Scenario files: a county, its stations' devices, a period, events and faults, as TOML.

A scenario file is a county file (the collector's format: ``[county]``, ``[assessment]``,
``[monitoring]``, ``[[river]]``, ``[[station]]``, ``[[section]]``, ``[[town]]``; see
``deploy/county.example.toml``) plus the rig's own tables::

    [scenario]          name, seed, start (local offset date-time), days, speed
    [rig]               serial backend, line emulation, overrides for station/central configs
    [[rig.kit]]         a station's equipment: buses and their devices (by station kind)
    [signals]           base water quality, per station overrides
    [[event]]           rain storms and pollution events (simulated offsets from start)
    [[fault]]           device, process, broker and clock faults (see :mod:`sanduan.hil.faults`)
    [chaos]             seeded random SIGKILLs

The rig copies the county tables verbatim into the collector's ``county.toml``. Loading
validates everything once; every mistake is a :class:`ConfigError` naming the file, the key
(dotted, with list indices: ``rig.kit[0].bus[1].device[0].cycle``) and the reason.

Durations are simulated time: a number of seconds or a string such as ``"90s"``, ``"15m"``,
``"4h"``, ``"1d6h"`` (``"-2h"`` where a sign makes sense, e.g. a clock offset).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, field_validator

from sanduan.hil.signals import (
    DAY,
    AnalyzerCycle,
    PollutionEvent,
    RainEvent,
    StationSignals,
    Window,
)
from sanduan.shared.config import STATION_ID_RE, read_toml
from sanduan.shared.errors import ConfigError, UnknownParameterError
from sanduan.shared.params import resolve
from sanduan.shared.registers import DeviceProfile, Role, builtin_profiles, load_profile
from sanduan.shared.tables import Strict, parse_table

__all__ = [
    "COUNTY_KEYS",
    "BusPlan",
    "DevicePlan",
    "Scenario",
    "StationPlan",
    "bundled_scenarios",
    "dump_toml",
    "find_scenario",
    "load_scenario",
    "parse_duration",
]

COUNTY_KEYS = ("county", "assessment", "monitoring", "river", "station", "section", "town")
"""Top-level tables of a scenario that form the collector's county file."""

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(d|h|m|s)")
_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"1d6h"``, ``"-2h"``, ``"90s"``, ``"0.5h"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")  # noqa: TRY004 (pydantic)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"duration must be finite, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 (pydantic reports ValueError as a validation error)
            f"expected a duration like '4h' or a number of seconds, got {value!r}"
        )
    text = value.strip().lower().replace(" ", "")
    sign = 1.0
    if text.startswith(("-", "+")):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(
            f"bad duration {value!r}: use seconds or d/h/m/s parts like '1d6h', '15m', '90s'"
        )
    return sign * total


Duration = Annotated[float, BeforeValidator(parse_duration)]


# --- file models ---------------------------------------------------------------------------


class ScenarioSection(Strict):
    name: str = Field(min_length=1)
    title: str = ""
    seed: int = 1
    start: datetime
    """Start of the simulated period: a TOML offset date-time (``2023-07-01T00:00:00+08:00``)."""
    days: Annotated[float, Field(gt=0, le=366)]
    speed: Annotated[float, Field(gt=0, le=1_000_000)]
    """Simulated seconds per real second."""
    settle_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    """Real seconds to wait after the period for the last readings to be stored."""

    @field_validator("start", mode="before")
    @classmethod
    def _aware(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"not an ISO date-time: {v!r}") from None
        if isinstance(v, date) and not isinstance(v, datetime):
            raise ValueError(  # noqa: TRY004 (pydantic reports ValueError as a validation error)
                "give a date-time with a UTC offset, like 2023-07-01T00:00:00+08:00"
            )
        if isinstance(v, datetime) and v.tzinfo is None:
            raise ValueError(
                "start needs a UTC offset (2023-07-01T00:00:00+08:00): local time is ambiguous"
            )
        return v


class DeviceSpec(Strict):
    name: str = Field(min_length=1)
    profile: str
    slave: Annotated[int | None, Field(ge=1, le=247)] = None
    poll_period_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    """Simulated seconds between polls (the agent's schedule)."""
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5
    """Real seconds the agent waits for a reply (the serial line is not accelerated)."""
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    turnaround_s: Annotated[float, Field(ge=0, le=5)] = 0.005
    """Real seconds the simulated device takes to answer."""
    cycle: Duration | None = None
    """Analyzers: one result per cycle (simulated)."""
    measure: Duration = 2400.0
    """Analyzers: a cycle's result is readable this long after the cycle starts."""
    calibration_every: Annotated[int, Field(ge=0)] = 0
    """Analyzers: every N-th cycle is a calibration (0: none)."""
    maintenance_every: Duration | None = None
    maintenance_duration: Duration = 6 * 3600.0

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if v not in builtin_profiles() and Path(v).suffix != ".toml":
            known = ", ".join(sorted(builtin_profiles()))
            raise ValueError(f"unknown device profile {v!r}; built-in profiles: {known}")
        return v


class BusSpec(Strict):
    name: str = Field(min_length=1)
    baudrate: Annotated[int, Field(ge=300, le=921_600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    emulate: bool | None = None
    """Emulate the line's byte times on the virtual bus (None: ``rig.emulate_baud``)."""
    device: list[DeviceSpec] = Field(min_length=1)


class KitSpec(Strict):
    name: str = Field(min_length=1)
    bus: list[BusSpec] = Field(min_length=1)


class RigSpec(Strict):
    serial: Literal["auto", "socat", "python"] = "auto"
    emulate_baud: bool = False
    kit: list[KitSpec] = Field(min_length=1)
    station_kit: dict[str, str] = Field(default_factory=dict)
    """Station id -> kit name; a station without an entry gets the kit named like its kind."""
    station_config: dict[str, Any] = Field(default_factory=dict)
    """Merged into every station.toml the rig writes (e.g. ``uplink.batch_max_readings``)."""
    central_config: dict[str, Any] = Field(default_factory=dict)
    """Merged into the collector's central.toml."""
    rules: dict[str, Any] | None = None
    """A compensation rules document (the collector's rules.toml format); None: its defaults."""
    hj212_station: str | None = None
    """A station whose data logger speaks HJ 212-2017 to the collector instead of MQTT."""
    platform: bool = False
    """A simulated provincial platform that every edge agent reports to over HJ 212-2017."""


class StationSignalSpec(Strict):
    base: dict[str, float] = Field(default_factory=dict)


class SignalsSpec(Strict):
    base: dict[str, float] = Field(default_factory=dict)
    """Base values by parameter name or code, for every station."""
    cleaning_every: Duration = 14 * DAY
    station: dict[str, StationSignalSpec] = Field(default_factory=dict)


class EventSpec(Strict):
    kind: Literal["rain", "pollution"]
    start: Duration
    duration: Duration
    intensity: Annotated[float, Field(ge=0)] = 1.0
    town: str | None = None
    """Pollution: the town it happens in; its outflow and the water downstream are hit."""
    stations: list[str] | dict[str, float] | None = None
    """Stations hit (rain default: all), or station -> factor (pollution default: from town)."""


class _ScenarioFile(Strict):
    scenario: ScenarioSection
    rig: RigSpec
    signals: SignalsSpec = Field(default_factory=SignalsSpec)
    event: list[EventSpec] = Field(default_factory=list)
    fault: list[dict[str, Any]] = Field(default_factory=list)
    chaos: dict[str, Any] | None = None
    # The county file, validated for shape here and in full by the collector.
    county: dict[str, Any] = Field(default_factory=dict)
    assessment: dict[str, Any] = Field(default_factory=dict)
    monitoring: dict[str, Any] = Field(default_factory=dict)
    river: list[dict[str, Any]] = Field(default_factory=list)
    station: list[dict[str, Any]] = Field(default_factory=list)
    section: list[dict[str, Any]] = Field(default_factory=list)
    town: list[dict[str, Any]] = Field(default_factory=list)


# --- resolved scenario ---------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePlan:
    """One simulated device of a station and how the agent polls it."""

    name: str
    profile: DeviceProfile
    profile_ref: str
    """The profile as the scenario names it: a built-in name or a .toml path."""
    slave: int
    poll_period_s: float
    timeout_s: float
    retries: int
    turnaround_s: float
    analyzer: AnalyzerCycle | None

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(s.code for s in self.profile.values if s.code is not None)

    @property
    def has_result_time(self) -> bool:
        return self.profile.result_time is not None


@dataclass(frozen=True)
class BusPlan:
    name: str
    baudrate: int
    parity: str
    stopbits: int
    emulate: bool
    devices: tuple[DevicePlan, ...]

    @property
    def bits_per_char(self) -> int:
        return 1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits


@dataclass(frozen=True)
class StationPlan:
    id: str
    name: str
    section: str | None
    target_class: int
    water_body: str
    buses: tuple[BusPlan, ...]
    signals: StationSignals

    @property
    def devices(self) -> tuple[DevicePlan, ...]:
        return tuple(d for b in self.buses for d in b.devices)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario with absolute simulated times (Unix seconds)."""

    name: str
    title: str
    source: str
    seed: int
    start: float
    days: float
    speed: float
    timezone: str
    settle_s: float
    serial_backend: Literal["auto", "socat", "python"]
    stations: tuple[StationPlan, ...]
    rain: tuple[RainEvent, ...]
    pollution: tuple[PollutionEvent, ...]
    event_specs: tuple[EventSpec, ...]
    fault_specs: tuple[dict[str, Any], ...]
    chaos_spec: Mapping[str, Any] | None
    county_doc: Mapping[str, Any]
    station_config: Mapping[str, Any]
    central_config: Mapping[str, Any]
    rules_doc: Mapping[str, Any] | None
    towns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hj212_station: str | None = None
    platform: bool = False

    @property
    def end(self) -> float:
        return self.start + self.days * DAY

    @property
    def real_duration_s(self) -> float:
        return self.days * DAY / self.speed

    @property
    def month(self) -> str:
        """The local calendar month the period starts in, ``YYYY-MM``."""
        local = datetime.fromtimestamp(self.start, ZoneInfo(self.timezone))
        return f"{local.year:04d}-{local.month:02d}"

    def station(self, sid: str) -> StationPlan:
        for s in self.stations:
            if s.id == sid:
                return s
        raise KeyError(sid)

    def with_days(self, days: float) -> Scenario:
        """The same scenario cut (or stretched) to ``days``; later faults and events drop out."""
        import dataclasses

        return dataclasses.replace(self, days=days)


def _code(file: str, key: str, name: str) -> str:
    try:
        return resolve(name).code
    except UnknownParameterError as e:
        raise ConfigError(file, key, str(e)) from None


def _profile(file: str, key: str, spec: DeviceSpec) -> DeviceProfile:
    name: str | Path = spec.profile
    if spec.profile.endswith(".toml") and not Path(spec.profile).is_absolute():
        name = Path(file).parent / spec.profile  # relative to the scenario file
    try:
        return load_profile(name)
    except ConfigError as e:
        raise ConfigError(file, f"{key}.profile", e.reason) from None


def _device_plan(
    file: str, key: str, spec: DeviceSpec, *, start: float, end: float, seed: int, station: str
) -> DevicePlan:
    profile = _profile(file, key, spec)
    analyzer: AnalyzerCycle | None = None
    if spec.cycle is not None:
        if profile.result_time is None:
            raise ConfigError(
                file,
                f"{key}.cycle",
                f"profile {profile.name} has no result_time register; only analyzers have cycles",
            )
        if spec.cycle <= 0:
            raise ConfigError(file, f"{key}.cycle", "must be positive")
        if not 0 <= spec.measure < spec.cycle:
            raise ConfigError(file, f"{key}.measure", "must be at least 0 and shorter than cycle")
        if spec.calibration_every and not any(
            s.role is Role.STATUS and 2 in s.flags for s in profile.registers
        ):
            pass  # the status value for "calibrating" is looked up by flag at run time
        windows: list[Window] = []
        if spec.maintenance_every:
            every = spec.maintenance_every
            # A seeded phase so stations are not all serviced at once.
            from sanduan.hil.signals import stable_hash

            phase = (stable_hash(seed, station, spec.name, "maint") % 1000) / 1000 * every
            t = start + phase
            while t < end:
                windows.append(Window(t, t + spec.maintenance_duration))
                t += every
        offset = 0
        if spec.calibration_every:
            from sanduan.hil.signals import stable_hash

            offset = stable_hash(seed, station, spec.name, "cal") % spec.calibration_every
        analyzer = AnalyzerCycle(
            cycle_s=spec.cycle,
            measure_s=spec.measure,
            phase_s=0.0,
            calibration_every=spec.calibration_every,
            calibration_offset=offset,
            maintenance=tuple(windows),
        )
    elif profile.result_time is not None:
        raise ConfigError(
            file, f"{key}.cycle", f"profile {profile.name} is an analyzer: give its cycle"
        )
    ref = spec.profile
    if ref.endswith(".toml") and not Path(ref).is_absolute():
        ref = str((Path(file).parent / ref).resolve())
    return DevicePlan(
        name=spec.name,
        profile=profile,
        profile_ref=ref,
        slave=profile.slave if spec.slave is None else spec.slave,
        poll_period_s=spec.poll_period_s,
        timeout_s=spec.timeout_s,
        retries=spec.retries,
        turnaround_s=spec.turnaround_s,
        analyzer=analyzer,
    )


def _str_list(file: str, key: str, raw: object) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ConfigError(file, key, "must be an array of tables")
    return raw


def _topology(
    file: str, doc: _ScenarioFile
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(stations by id, sections by id, towns by id) of the county part, shape-checked."""
    stations: dict[str, dict[str, Any]] = {}
    for i, st in enumerate(_str_list(file, "station", doc.station)):
        sid = st.get("id")
        if not isinstance(sid, str) or not STATION_ID_RE.match(sid):
            raise ConfigError(file, f"station[{i}].id", f"bad station id {sid!r}")
        if sid in stations:
            raise ConfigError(file, f"station[{i}].id", f"duplicate station id {sid!r}")
        stations[sid] = st
    sections: dict[str, dict[str, Any]] = {}
    for i, sec in enumerate(_str_list(file, "section", doc.section)):
        sid = sec.get("id")
        sst = sec.get("station")
        if not isinstance(sid, str) or not sid:
            raise ConfigError(file, f"section[{i}].id", "must be a non-empty string")
        if not isinstance(sst, str):
            raise ConfigError(file, f"section[{i}].station", "required key is missing")
        if sst not in stations:
            raise ConfigError(
                file, f"section[{i}].station", f"unknown station {sst!r} (not in [[station]])"
            )
        sections[sid] = sec
    if not sections:
        raise ConfigError(file, "section", "a scenario's county needs at least one [[section]]")
    towns: dict[str, dict[str, Any]] = {}
    for i, town in enumerate(_str_list(file, "town", doc.town)):
        tid = town.get("id")
        if not isinstance(tid, str) or not tid:
            raise ConfigError(file, f"town[{i}].id", "must be a non-empty string")
        out = town.get("outflow")
        if out is not None and out not in sections:
            raise ConfigError(file, f"town[{i}].outflow", f"unknown section {out!r}")
        for j, inf in enumerate(town.get("inflow", [])):
            if not isinstance(inf, dict) or inf.get("section") not in sections:
                raise ConfigError(
                    file, f"town[{i}].inflow[{j}].section", "must name a [[section]] id"
                )
        towns[tid] = town
    return stations, sections, towns


def _pollution_stations(
    towns: Mapping[str, Mapping[str, Any]], sections: Mapping[str, Mapping[str, Any]], town: str
) -> dict[str, float]:
    """Stations hit by a discharge in ``town``: its outflow fully, the receiving town's inflow
    at 0.7 and that town's outflow at 0.4 (dilution and decay downstream)."""
    out: dict[str, float] = {}
    t = towns[town]
    if t.get("outflow") in sections:
        out[str(sections[t["outflow"]]["station"])] = 1.0
    for other in towns.values():
        for inf in other.get("inflow", []):
            if inf.get("upstream") == town:
                out.setdefault(str(sections[inf["section"]]["station"]), 0.7)
                if other.get("outflow") in sections:
                    out.setdefault(str(sections[other["outflow"]]["station"]), 0.4)
    return out


def build_scenario(data: dict[str, Any], file: str = "<scenario>") -> Scenario:
    """Validate a parsed scenario document (see :func:`load_scenario`)."""
    doc = parse_table(_ScenarioFile, data, file)
    sc = doc.scenario
    tz = str(doc.county.get("timezone", "Asia/Shanghai"))
    try:
        ZoneInfo(tz)
    except (KeyError, ValueError):
        raise ConfigError(file, "county.timezone", f"unknown time zone {tz!r}") from None
    start = sc.start.timestamp()
    end = start + sc.days * DAY
    stations, sections, towns = _topology(file, doc)

    kits = {}
    for i, kit in enumerate(doc.rig.kit):
        if kit.name in kits:
            raise ConfigError(file, f"rig.kit[{i}].name", f"duplicate kit {kit.name!r}")
        kits[kit.name] = (i, kit)
    for sid, kname in doc.rig.station_kit.items():
        if sid not in stations:
            raise ConfigError(file, f"rig.station_kit.{sid}", f"unknown station {sid!r}")
        if kname not in kits:
            raise ConfigError(file, f"rig.station_kit.{sid}", f"unknown kit {kname!r}")

    def base_codes(key: str, raw: Mapping[str, float]) -> dict[str, float]:
        return {_code(file, f"{key}.{k}", k): float(v) for k, v in raw.items()}

    default_base = base_codes("signals.base", doc.signals.base)
    for sid in doc.signals.station:
        if sid not in stations:
            raise ConfigError(file, f"signals.station.{sid}", f"unknown station {sid!r}")

    rain: list[RainEvent] = []
    pollution: list[PollutionEvent] = []
    for i, ev in enumerate(doc.event):
        key = f"event[{i}]"
        if ev.duration <= 0:
            raise ConfigError(file, f"{key}.duration", "must be positive")
        if ev.kind == "rain":
            names = None
            if ev.stations is not None:
                names = frozenset(ev.stations)
                for s in names:
                    if s not in stations:
                        raise ConfigError(file, f"{key}.stations", f"unknown station {s!r}")
            rain.append(RainEvent(start + ev.start, ev.duration, ev.intensity, names))
            continue
        if ev.stations is None:
            if ev.town is None:
                raise ConfigError(file, f"{key}.town", "a pollution event needs town or stations")
            if ev.town not in towns:
                raise ConfigError(file, f"{key}.town", f"unknown town {ev.town!r}")
            hit = _pollution_stations(towns, sections, ev.town)
        elif isinstance(ev.stations, dict):
            hit = {str(k): float(v) for k, v in ev.stations.items()}
        else:
            hit = dict.fromkeys(ev.stations, 1.0)
        for s in hit:
            if s not in stations:
                raise ConfigError(file, f"{key}.stations", f"unknown station {s!r}")
        pollution.append(PollutionEvent(start + ev.start, ev.duration, hit, ev.intensity))

    by_station_section = {str(sec["station"]): sid for sid, sec in sections.items()}
    plans: list[StationPlan] = []
    offset_h = (sc.start.utcoffset() or timedelta()).total_seconds() / 3600.0
    for sid, st in stations.items():
        kname = doc.rig.station_kit.get(sid, str(st.get("kind", "standard")))
        if kname not in kits:
            raise ConfigError(
                file,
                "rig.kit",
                f"station {sid!r} (kind {st.get('kind', 'standard')!r}) has no kit named"
                f" {kname!r}; add one or map it in rig.station_kit",
            )
        ki, kit = kits[kname]
        buses: list[BusPlan] = []
        slaves: set[str] = set()
        for bi, bus in enumerate(kit.bus):
            devs: list[DevicePlan] = []
            used: dict[int, str] = {}
            for di, dev in enumerate(bus.device):
                key = f"rig.kit[{ki}].bus[{bi}].device[{di}]"
                plan = _device_plan(file, key, dev, start=start, end=end, seed=sc.seed, station=sid)
                if plan.slave in used:
                    raise ConfigError(
                        file,
                        f"{key}.slave",
                        f"slave id {plan.slave} is already {used[plan.slave]!r} on this bus",
                    )
                if plan.name in slaves:
                    raise ConfigError(file, f"{key}.name", f"device name {plan.name!r} is reused")
                used[plan.slave] = plan.name
                slaves.add(plan.name)
                devs.append(plan)
            emulate = doc.rig.emulate_baud if bus.emulate is None else bus.emulate
            buses.append(
                BusPlan(bus.name, bus.baudrate, bus.parity, bus.stopbits, emulate, tuple(devs))
            )
        sec_id = by_station_section.get(sid)
        sec = sections.get(sec_id or "", {})
        base = dict(default_base)
        if sid in doc.signals.station:
            base |= base_codes(f"signals.station.{sid}.base", doc.signals.station[sid].base)
        signals = StationSignals(
            station=sid,
            seed=sc.seed,
            base=base,
            rain=tuple(rain),
            pollution=tuple(pollution),
            tz_offset_h=offset_h,
            cleaning_every_s=doc.signals.cleaning_every,
        )
        plans.append(
            StationPlan(
                id=sid,
                name=str(st.get("name", sid)),
                section=sec_id,
                target_class=int(sec.get("target_class", 3)),
                water_body=str(sec.get("water_body", "river")),
                buses=tuple(buses),
                signals=signals,
            )
        )

    county_doc = {k: getattr(doc, k) for k in COUNTY_KEYS if getattr(doc, k) not in ({}, [], None)}
    scenario = Scenario(
        name=sc.name,
        title=sc.title or sc.name,
        source=file,
        seed=sc.seed,
        start=start,
        days=sc.days,
        speed=sc.speed,
        timezone=tz,
        settle_s=sc.settle_s,
        serial_backend=doc.rig.serial,
        stations=tuple(plans),
        rain=tuple(rain),
        pollution=tuple(pollution),
        event_specs=tuple(doc.event),
        fault_specs=tuple(doc.fault),
        chaos_spec=doc.chaos,
        county_doc=county_doc,
        station_config=doc.rig.station_config,
        central_config=doc.rig.central_config,
        rules_doc=doc.rig.rules,
        towns=towns,
        hj212_station=doc.rig.hj212_station,
        platform=doc.rig.platform,
    )
    if doc.rig.hj212_station is not None and doc.rig.hj212_station not in {p.id for p in plans}:
        raise ConfigError(file, "rig.hj212_station", f"unknown station {doc.rig.hj212_station!r}")
    # Validate the fault timeline now, so a bad [[fault]] fails at load time too.
    from sanduan.hil.faults import build_timeline

    build_timeline(scenario)
    return scenario


def load_scenario(path: Path | str) -> Scenario:
    """Load and validate a scenario file (a path, or the name of a bundled scenario)."""
    p = find_scenario(path)
    return build_scenario(read_toml(p), str(p))


def bundled_scenarios() -> dict[str, Path]:
    """Scenarios shipped with sanduan, by name."""
    root = resources.files("sanduan.hil") / "scenarios"
    out: dict[str, Path] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name.removesuffix(".toml")] = Path(str(entry))
    return dict(sorted(out.items()))


def find_scenario(name: Path | str) -> Path:
    """A scenario path: an existing file, or a bundled scenario's name (``county``)."""
    p = Path(name)
    if p.exists():
        return p
    bundled = bundled_scenarios()
    if str(name) in bundled:
        return bundled[str(name)]
    known = ", ".join(bundled) or "none"
    raise ConfigError(str(name), "", f"no such file or bundled scenario (bundled: {known})")


# --- a small TOML writer (for the files the rig hands to the agents and the collector) ------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, Path):
        return _string(str(v))
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date | time):
        return v.isoformat()
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if hasattr(v, "value"):  # enums
        return _value(v.value)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _emit(lines: list[str], prefix: str, table: Mapping[str, Any]) -> None:
    scalars = [
        (k, v) for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)
    ]
    for k, v in scalars:
        if v is None:
            continue
        lines.append(f"{_key(str(k))} = {_value(v)}")
    for k, v in table.items():
        name = f"{prefix}.{_key(str(k))}" if prefix else _key(str(k))
        if isinstance(v, Mapping):
            lines.append("")
            lines.append(f"[{name}]")
            _emit(lines, name, v)
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{name}]]")
                _emit(lines, name, item)


def dump_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for a document of tables, arrays, strings, numbers, booleans and dates.

    ``None`` values are left out (TOML has no null).
    """
    lines: list[str] = []
    _emit(lines, "", doc)
    return "\n".join(lines).lstrip("\n") + "\n"


def local_midnight(ts: float, tz: str) -> float:
    """The start of the local day containing ``ts``."""
    z = ZoneInfo(tz)
    d = datetime.fromtimestamp(ts, z).date()
    return datetime.combine(d, time(0), z).timestamp()


def iso(ts: float, tz: str | None = None) -> str:
    """An ISO date-time for a Unix time, local to ``tz`` (UTC if None), to the second."""
    z = ZoneInfo(tz) if tz else UTC
    return datetime.fromtimestamp(ts, z).isoformat(timespec="seconds")

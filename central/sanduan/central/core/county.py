"""The county as data: rivers, monitored sections, towns and the three-section boundaries.

A county file (TOML, see ``deploy/county.example.toml``) is validated once, at start-up, into
the frozen :class:`County`. Every mistake is a :class:`~sanduan.shared.errors.ConfigError`
naming the file, the key and the reason.

The topology of the three-section model: every town has one outflow (downstream) section ``D``
and zero or more inflow sections ``I``. An inflow may name the upstream town whose water it
receives; that town's outflow section is then the boundary's third section ``U`` (上游出水).
Water that leaves a town whose outflow no other town receives leaves the county: money for it
goes to (or comes from) the county fund.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import Field, field_validator

from sanduan.shared.config import check_station_id, read_toml
from sanduan.shared.errors import ConfigError, UnknownParameterError
from sanduan.shared.model import WaterBody
from sanduan.shared.params import resolve
from sanduan.shared.tables import Strict, parse_table

DEFAULT_ASSESSED_PARAMETERS = ("pH", "DO", "CODMn", "NH3-N", "TP")
DEFAULT_FOUR_HOURLY = ("CODMn", "NH3-N", "TP", "TN")
DEFAULT_FUND = "county-fund"

__all__ = [
    "DEFAULT_ASSESSED_PARAMETERS",
    "DEFAULT_FOUR_HOURLY",
    "Boundary",
    "County",
    "Inflow",
    "Monitoring",
    "River",
    "Section",
    "Station",
    "Town",
    "build_county",
    "load_county",
    "parse_county",
]


# --- raw file models (shape and ranges only) -----------------------------------------------


class _RawCounty(Strict):
    name: str = ""
    timezone: str = "Asia/Shanghai"
    fund: str = DEFAULT_FUND
    fund_name: str = "county water fund"


class _RawAssessment(Strict):
    parameters: list[str] = Field(default_factory=lambda: list(DEFAULT_ASSESSED_PARAMETERS))


class _RawMonitoring(Strict):
    four_hourly: list[str] = Field(default_factory=lambda: list(DEFAULT_FOUR_HOURLY))
    detection_limits: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class _RawRiver(Strict):
    id: str
    name: str = ""


class _RawStation(Strict):
    id: str
    name: str = ""
    kind: str = "standard"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_station_id(v)


class _RawSection(Strict):
    id: str
    name: str = ""
    river: str
    station: str
    target_class: Annotated[int, Field(ge=1, le=5)] = 3
    water_body: WaterBody = WaterBody.RIVER
    assessed: bool = True
    owner: str | None = None
    parameters: list[str] | None = None

    @field_validator("station")
    @classmethod
    def _station(cls, v: str) -> str:
        return check_station_id(v)


class _RawInflow(Strict):
    section: str
    upstream: str | None = None


class _RawTown(Strict):
    id: str
    name: str = ""
    outflow: str | None = None
    inflow: list[_RawInflow] = Field(default_factory=list)


class _RawFile(Strict):
    county: _RawCounty = Field(default_factory=_RawCounty)
    assessment: _RawAssessment = Field(default_factory=_RawAssessment)
    monitoring: _RawMonitoring = Field(default_factory=_RawMonitoring)
    river: list[_RawRiver] = Field(default_factory=list)
    station: list[_RawStation] = Field(default_factory=list)
    section: list[_RawSection] = Field(default_factory=list)
    town: list[_RawTown] = Field(default_factory=list)


# --- the validated county ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class River:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class Section:
    """A monitored section. ``parameters`` are the items its class is assessed on; ``owner`` is
    the town answerable for its station reporting (for the insufficient-data policy)."""

    id: str
    name: str
    river: str
    station: str
    target_class: int
    water_body: WaterBody
    assessed: bool
    parameters: tuple[str, ...]
    owner: str | None


@dataclass(frozen=True, slots=True)
class Inflow:
    section: str
    upstream: str | None


@dataclass(frozen=True, slots=True)
class Town:
    id: str
    name: str
    outflow: str
    inflows: tuple[Inflow, ...]
    downstream: str | None
    """The town receiving this town's water, None when it leaves the county."""


@dataclass(frozen=True, slots=True)
class Boundary:
    """The three sections of one town boundary: the upstream town's outflow ``upstream_outflow``
    (U), this town's ``inflow`` (I) and this town's ``downstream`` section (D)."""

    town: str
    upstream_town: str
    upstream_outflow: str
    inflow: str
    downstream: str


@dataclass(frozen=True, slots=True)
class Monitoring:
    four_hourly: frozenset[str]
    detection_limits: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class County:
    name: str
    timezone: str
    fund: str
    fund_name: str
    rivers: Mapping[str, River]
    stations: Mapping[str, Station]
    sections: Mapping[str, Section]
    towns: Mapping[str, Town]
    monitoring: Monitoring
    source: str = "<county>"
    _by_station: Mapping[str, str] = field(default_factory=dict, repr=False)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Lookups derived from the topology on first use (boundaries by town, section owners,
    assessed sections by river), so that settling every town is linear in the county's size."""

    @property
    def section_stations(self) -> tuple[str, ...]:
        """The stations that serve sections, in section order."""
        return tuple(s.station for s in self.sections.values())

    @property
    def assessed_sections(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections.values() if s.assessed)

    def section_of_station(self, station: str) -> Section | None:
        sid = self._by_station.get(station)
        return None if sid is None else self.sections[sid]

    def downstream_party(self, town: str) -> str:
        """The town receiving ``town``'s water, or the county fund."""
        d = self.towns[town].downstream
        return self.fund if d is None else d

    def boundaries(self) -> tuple[Boundary, ...]:
        """Every boundary, town by town in file order."""
        found: tuple[Boundary, ...] | None = self._memo.get("boundaries")
        if found is None:
            out: list[Boundary] = []
            for t in self.towns.values():
                for inf in t.inflows:
                    if inf.upstream is not None:
                        up = self.towns[inf.upstream]
                        out.append(Boundary(t.id, up.id, up.outflow, inf.section, t.outflow))
            found = self._memo["boundaries"] = tuple(out)
        return found

    def boundaries_of(self, town: str) -> tuple[Boundary, ...]:
        """The boundaries of ``town`` (its inflows from upstream towns), in file order: the
        boundaries whose ``town`` is ``town``, without scanning every boundary."""
        by_town: dict[str, tuple[Boundary, ...]] | None = self._memo.get("boundaries_of")
        if by_town is None:
            grouped: dict[str, list[Boundary]] = {}
            for b in self.boundaries():
                grouped.setdefault(b.town, []).append(b)
            by_town = self._memo["boundaries_of"] = {k: tuple(v) for k, v in grouped.items()}
        return by_town.get(town, ())

    def assessed_sections_on(self, river: str) -> tuple[str, ...]:
        """The ids of the assessed sections on ``river``, in file order."""
        by_river: dict[str, tuple[str, ...]] | None = self._memo.get("assessed_on")
        if by_river is None:
            grouped: dict[str, list[str]] = {}
            for s in self.assessed_sections:
                grouped.setdefault(s.river, []).append(s.id)
            by_river = self._memo["assessed_on"] = {k: tuple(v) for k, v in grouped.items()}
        return by_river.get(river, ())

    def towns_upstream_first(self) -> tuple[Town, ...]:
        """Towns ordered so that every town comes after the towns upstream of it."""
        order: list[Town] = []
        done: set[str] = set()

        def visit(tid: str) -> None:
            if tid in done:
                return
            for inf in self.towns[tid].inflows:
                if inf.upstream is not None:
                    visit(inf.upstream)
            done.add(tid)
            order.append(self.towns[tid])

        for tid in self.towns:
            visit(tid)
        return tuple(order)

    def owner_of(self, section: str) -> str | None:
        """The town answerable for a section's station: the configured owner, else the town whose
        outflow it is, else the town whose inflow it is."""
        s = self.sections[section]
        if s.owner is not None:
            return s.owner
        found: tuple[dict[str, str], dict[str, str]] | None = self._memo.get("owners")
        if found is None:
            # The first town (in file order) whose outflow / one of whose inflows it is.
            outflow_of: dict[str, str] = {}
            inflow_of: dict[str, str] = {}
            for t in self.towns.values():
                outflow_of.setdefault(t.outflow, t.id)
                for i in t.inflows:
                    inflow_of.setdefault(i.section, t.id)
            found = self._memo["owners"] = (outflow_of, inflow_of)
        outflow_of, inflow_of = found
        return outflow_of.get(section, inflow_of.get(section))


def _param_names(file: str, key: str, names: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for i, n in enumerate(names):
        try:
            p = resolve(n)
        except UnknownParameterError as e:
            raise ConfigError(file, f"{key}[{i}]", str(e)) from None
        if p.name in out:
            raise ConfigError(file, f"{key}[{i}]", f"{p.name} is listed twice")
        out.append(p.name)
    return tuple(out)


def _unique(file: str, kind: str, ids: list[str], taken: dict[str, str]) -> None:
    for i, x in enumerate(ids):
        if not x:
            raise ConfigError(file, f"{kind}[{i}].id", "must not be empty")
        if x in taken:
            raise ConfigError(file, f"{kind}[{i}].id", f"duplicate id {x!r} (also a {taken[x]})")
        taken[x] = kind


def build_county(data: dict[str, Any], file: str = "<county>") -> County:
    """Validate a parsed county document (see :func:`load_county`)."""
    raw = parse_table(_RawFile, data, file)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(raw.county.timezone)
    except (KeyError, ValueError):
        raise ConfigError(
            file, "county.timezone", f"unknown time zone {raw.county.timezone!r}"
        ) from None

    taken: dict[str, str] = {}
    _unique(file, "river", [r.id for r in raw.river], taken)
    station_ids: dict[str, str] = {}
    _unique(file, "station", [s.id for s in raw.station], station_ids)
    _unique(file, "section", [s.id for s in raw.section], taken)
    _unique(file, "town", [t.id for t in raw.town], taken)
    if raw.county.fund in taken:
        raise ConfigError(
            file, "county.fund", f"{raw.county.fund!r} is also a {taken[raw.county.fund]} id"
        )
    if not raw.section:
        raise ConfigError(file, "section", "a county needs at least one [[section]]")

    default_params = _param_names(file, "assessment.parameters", raw.assessment.parameters)
    if not default_params:
        raise ConfigError(file, "assessment.parameters", "must name at least one parameter")
    four = frozenset(_param_names(file, "monitoring.four_hourly", raw.monitoring.four_hourly))
    dls: dict[str, float] = {}
    for name, dl in raw.monitoring.detection_limits.items():
        (pname,) = _param_names(file, f"monitoring.detection_limits.{name}", [name])
        dls[pname] = float(dl)

    rivers = {r.id: River(r.id, r.name or r.id) for r in raw.river}
    all_stations = {s.id: Station(s.id, s.name or s.id, s.kind) for s in raw.station}
    town_ids = {t.id for t in raw.town}
    sections: dict[str, Section] = {}
    stations: dict[str, str] = {}
    for i, s in enumerate(raw.section):
        key = f"section[{i}] ({s.id})"
        if s.river not in rivers:
            raise ConfigError(file, f"{key}.river", f"unknown river {s.river!r}")
        if raw.station and s.station not in station_ids:
            raise ConfigError(
                file, f"{key}.station", f"unknown station {s.station!r} (not in [[station]])"
            )
        if s.station in stations:
            raise ConfigError(
                file,
                f"{key}.station",
                f"station {s.station!r} already serves section {stations[s.station]!r}",
            )
        if s.owner is not None and s.owner not in town_ids:
            raise ConfigError(file, f"{key}.owner", f"unknown town {s.owner!r}")
        stations[s.station] = s.id
        params = (
            default_params
            if s.parameters is None
            else _param_names(file, f"{key}.parameters", s.parameters)
        )
        if not params:
            raise ConfigError(file, f"{key}.parameters", "must name at least one parameter")
        sections[s.id] = Section(
            s.id,
            s.name or s.id,
            s.river,
            s.station,
            s.target_class,
            WaterBody(s.water_body),
            s.assessed,
            params,
            s.owner,
        )

    if not raw.town:
        raise ConfigError(file, "town", "a county needs at least one [[town]]")
    receivers: dict[str, str] = {}
    inflow_of: dict[str, str] = {}
    outflow_of: dict[str, str] = {}
    for i, t in enumerate(raw.town):
        key = f"town[{i}] ({t.id})"
        if t.outflow is None:
            raise ConfigError(
                file, f"{key}.outflow", "every town needs an outflow (downstream) section"
            )
        if t.outflow not in sections:
            raise ConfigError(file, f"{key}.outflow", f"unknown section {t.outflow!r}")
        if t.outflow in outflow_of:
            raise ConfigError(
                file, f"{key}.outflow", f"{t.outflow!r} is already town {outflow_of[t.outflow]!r}'s"
            )
        outflow_of[t.outflow] = t.id
        for j, inf in enumerate(t.inflow):
            ikey = f"{key}.inflow[{j}]"
            if inf.section not in sections:
                raise ConfigError(file, f"{ikey}.section", f"unknown section {inf.section!r}")
            if inf.section in inflow_of:
                raise ConfigError(
                    file,
                    f"{ikey}.section",
                    f"{inf.section!r} is already an inflow of town {inflow_of[inf.section]!r}",
                )
            inflow_of[inf.section] = t.id
            if inf.upstream is None:
                continue
            if inf.upstream not in town_ids:
                raise ConfigError(file, f"{ikey}.upstream", f"unknown town {inf.upstream!r}")
            if inf.upstream == t.id:
                raise ConfigError(file, f"{ikey}.upstream", "a town cannot be its own upstream")
            if inf.upstream in receivers and receivers[inf.upstream] != t.id:
                raise ConfigError(
                    file,
                    f"{ikey}.upstream",
                    f"town {inf.upstream!r} already flows into {receivers[inf.upstream]!r}; "
                    "a town's outflow has one receiving town",
                )
            receivers[inf.upstream] = t.id
    for sec, tid in inflow_of.items():
        if sec in outflow_of:
            raise ConfigError(
                file,
                "town",
                f"section {sec!r} is both town {outflow_of[sec]!r}'s outflow and town {tid!r}'s "
                "inflow; the three-section model needs separate sections",
            )

    # Cycles: follow each town's receiver chain.
    for start in town_ids:
        seen = [start]
        cur = receivers.get(start)
        while cur is not None:
            if cur in seen:
                cycle = " -> ".join([*seen[seen.index(cur) :], cur])
                raise ConfigError(file, "town", f"upstream relations form a cycle: {cycle}")
            seen.append(cur)
            cur = receivers.get(cur)

    for st in stations:
        all_stations.setdefault(st, Station(st, st, "standard"))
    towns = {
        t.id: Town(
            t.id,
            t.name or t.id,
            t.outflow or "",
            tuple(Inflow(x.section, x.upstream) for x in t.inflow),
            receivers.get(t.id),
        )
        for t in raw.town
    }
    return County(
        name=raw.county.name,
        timezone=raw.county.timezone,
        fund=raw.county.fund,
        fund_name=raw.county.fund_name,
        rivers=MappingProxyType(rivers),
        stations=MappingProxyType(all_stations),
        sections=MappingProxyType(sections),
        towns=MappingProxyType(towns),
        monitoring=Monitoring(four, MappingProxyType(dls)),
        source=file,
        _by_station=MappingProxyType(stations),
    )


def parse_county(text: str, file: str = "<county>") -> County:
    """Parse and validate county TOML text."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML: {e}") from None
    return build_county(data, file)


def load_county(path: Path | str) -> County:
    """Load and validate a county file."""
    return build_county(read_toml(path), str(path))

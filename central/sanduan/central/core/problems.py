"""Problems (问题): discovery rules, the lifecycle from 发现 to 销号, overdue, and hot spots.

Pure: rules come from a data file (:func:`load_problem_rules`), findings from aggregates and
readings columns (:func:`detect`), and a problem's state from its events (:func:`fold`). The
I/O shell is :mod:`sanduan.central.problems`.

The lifecycle::

    discovered (发现) --assign--> assigned (交办) --rectify--> rectifying (整改)
        --feedback--> reported (反馈) --close--> closed (销号)
    closed/reported --reopen--> assigned (重新交办)

``rectify`` (a note) and ``feedback`` (evidence) may repeat; ``close`` needs the rule to have
stayed quiet at the subject for the rule's ``quiet_hours`` of data time. A problem not closed
by its deadline is *overdue*.
"""

from __future__ import annotations

import itertools
import statistics
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sanduan.central.core.county import County
from sanduan.central.core.validity import HOUR_MS, Aggregates, LevelMeans
from sanduan.shared.errors import ConfigError, InputError
from sanduan.shared.grading import classify_array
from sanduan.shared.params import resolve

__all__ = [
    "ACTIONS",
    "STATES",
    "Finding",
    "Problem",
    "ProblemEvent",
    "ProblemRule",
    "ProblemRules",
    "detect",
    "fold",
    "hot_spots",
    "load_problem_rules",
    "next_state",
    "reconcile",
]

DAY_MS = 24 * HOUR_MS

Kind = Literal["exceedance", "outflow-worse", "offline", "capture", "flags", "stuck", "jump"]
State = Literal["discovered", "assigned", "rectifying", "reported", "closed"]
Action = Literal["discover", "seen", "assign", "rectify", "feedback", "close", "reopen"]

STATES: tuple[State, ...] = ("discovered", "assigned", "rectifying", "reported", "closed")
ACTIONS: tuple[Action, ...] = (
    "discover",
    "seen",
    "assign",
    "rectify",
    "feedback",
    "close",
    "reopen",
)

STATE_NAMES_ZH: Mapping[str, str] = {
    "discovered": "发现",
    "assigned": "交办",
    "rectifying": "整改",
    "reported": "反馈",
    "closed": "销号",
}
KIND_NAMES_ZH: Mapping[str, str] = {
    "exceedance": "持续超标",
    "outflow-worse": "出境劣于入境",
    "offline": "站点离线",
    "capture": "数据捕获率低",
    "flags": "仪器故障/运维标记",
    "stuck": "数值恒定(疑似卡死)",
    "jump": "数值突变",
}


# --- rules ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RawRule(_Strict):
    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Kind
    level: Literal["hour", "day"] = "hour"
    consecutive: Annotated[int, Field(ge=1)] = 1
    hours: Annotated[float, Field(gt=0)] | None = None
    min_capture: Annotated[float, Field(gt=0, le=1)] | None = None
    flags: list[Annotated[str, Field(min_length=1, max_length=1)]] | None = None
    polls: Annotated[int, Field(ge=2)] | None = None
    ratio: Annotated[float, Field(gt=0)] | None = None
    min_step: dict[str, Annotated[float, Field(gt=0)]] | None = None
    deadline_days: Annotated[float, Field(gt=0)] = 7.0
    quiet_hours: Annotated[float, Field(ge=0)] = 72.0

    @model_validator(mode="after")
    def _needs(self) -> _RawRule:
        need = {
            "offline": ("hours",),
            "capture": ("min_capture",),
            "flags": ("flags", "hours"),
            "stuck": ("polls",),
            "jump": ("ratio", "min_step"),
        }.get(self.kind, ())
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.kind!r} rule needs {', '.join(missing)}")
        return self


class _RawFile(_Strict):
    rule: list[_RawRule] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProblemRule:
    """One discovery rule (see data/problems.toml for the meaning of each threshold)."""

    id: str
    kind: Kind
    level: Literal["hour", "day"] = "hour"
    consecutive: int = 1
    hours: float = 0.0
    min_capture: float = 0.0
    flags: frozenset[str] = frozenset()
    polls: int = 0
    ratio: float = 0.0
    min_step: Mapping[str, float] = field(default_factory=dict)
    deadline_days: float = 7.0
    quiet_hours: float = 72.0

    @property
    def deadline_ms(self) -> int:
        return round(self.deadline_days * DAY_MS)

    @property
    def quiet_ms(self) -> int:
        return round(self.quiet_hours * HOUR_MS)

    def thresholds(self) -> dict[str, Any]:
        """The rule's thresholds, for a problem's evidence."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("exceedance", "outflow-worse"):
            out |= {"level": self.level, "consecutive": self.consecutive}
        if self.kind in ("offline", "flags"):
            out["hours"] = self.hours
        if self.kind == "capture":
            out["min_capture"] = self.min_capture
        if self.kind == "flags":
            out["flags"] = "".join(sorted(self.flags))
        if self.kind == "stuck":
            out["polls"] = self.polls
        if self.kind == "jump":
            out |= {"ratio": self.ratio, "min_step": dict(self.min_step)}
        return out | {"deadline_days": self.deadline_days, "quiet_hours": self.quiet_hours}


@dataclass(frozen=True, slots=True)
class ProblemRules:
    rules: tuple[ProblemRule, ...]
    source: str = "<builtin>"

    def get(self, rule_id: str) -> ProblemRule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        known = ", ".join(r.id for r in self.rules)
        raise InputError(f"no problem rule {rule_id!r} in {self.source}; rules: {known}")


def parse_problem_rules(text: str, source: str = "<problems>") -> ProblemRules:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "", f"not valid TOML: {e}") from None
    try:
        raw = _RawFile.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(source, key, err["msg"]) from None
    ids = [r.id for r in raw.rule]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(source, "rule.id", f"duplicate rule id(s) {dup}: give each rule its own")
    rules: list[ProblemRule] = []
    for i, r in enumerate(raw.rule):
        steps: dict[str, float] = {}
        for name, v in (r.min_step or {}).items():
            try:
                steps[resolve(name).name] = v
            except InputError as e:
                raise ConfigError(source, f"rule[{i}].min_step.{name}", str(e)) from None
        rules.append(
            ProblemRule(
                r.id,
                r.kind,
                r.level,
                r.consecutive,
                r.hours or 0.0,
                r.min_capture or 0.0,
                frozenset(r.flags or ()),
                r.polls or 0,
                r.ratio or 0.0,
                steps,
                r.deadline_days,
                r.quiet_hours,
            )
        )
    return ProblemRules(tuple(rules), source)


def load_problem_rules(path: Path | str | None = None) -> ProblemRules:
    """Rules from ``path``, or the built-in data/problems.toml."""
    if path is None:
        from importlib import resources

        text = resources.files("sanduan.central").joinpath("data/problems.toml").read_text("utf-8")
        return parse_problem_rules(text, "<builtin problems.toml>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read the problem rules: {e.strerror}") from None
    return parse_problem_rules(text, str(p))


# --- findings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One episode a rule found: the subject misbehaved from ``first_ms`` to ``last_ms``."""

    rule: str
    kind: Kind
    subject: str
    first_ms: int
    last_ms: int
    message: str
    station: str | None = None
    section: str | None = None
    town: str | None = None
    river: str | None = None
    code: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if mask.size == 0:
        return []
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class _Place:
    station: str
    section: str | None
    town: str | None
    river: str | None


def _places(county: County) -> dict[str, _Place]:
    out: dict[str, _Place] = {}
    for sid, s in county.sections.items():
        out[s.station] = _Place(s.station, sid, county.owner_of(sid), s.river)
    return out


def _level(agg: Aggregates, level: str) -> LevelMeans:
    return agg.hour if level == "hour" else agg.day


def _exceedance(rule: ProblemRule, county: County, agg: Aggregates) -> list[Finding]:
    lv = _level(agg, rule.level)
    idx = agg.index()
    out: list[Finding] = []
    for sid, sec in county.sections.items():
        for param in sec.parameters:
            i = idx.get((sec.station, param))
            if i is None:
                continue
            mean = np.where(lv.valid[i], lv.mean[i], np.nan)
            grades = classify_array(param, np.nan_to_num(mean, nan=0.0).clip(min=0), sec.water_body)
            grades = np.where(np.isnan(mean), 0, grades)
            bad = (grades > sec.target_class) & lv.valid[i]
            for a, b in _runs(bad):
                if b - a < rule.consecutive:
                    continue
                worst = int(grades[a:b].max())
                peak = float(np.nanmax(mean[a:b]) if param != "DO" else np.nanmin(mean[a:b]))
                unit = "h" if rule.level == "hour" else "d"
                out.append(
                    Finding(
                        rule.id,
                        rule.kind,
                        f"{sid}/{param}",
                        int(lv.starts[a]),
                        int(lv.starts[b - 1]),
                        f"{sec.name}: {param} worse than class {sec.target_class} for"
                        f" {b - a}{unit} (worst class {worst}, {'min' if param == 'DO' else 'max'}"
                        f" {rule.level} mean {peak:.3g})",
                        sec.station,
                        sid,
                        county.owner_of(sid),
                        sec.river,
                        param,
                        {
                            "target_class": sec.target_class,
                            "worst_class": worst,
                            "length": b - a,
                            "level": rule.level,
                            "peak_mean": peak,
                        },
                    )
                )
    return out


def _worst_class(
    county: County, agg: Aggregates, lv: LevelMeans, section: str
) -> npt.NDArray[np.int64]:
    """Daily (or hourly) single-factor class of a section: 0 where any item is not valid."""
    sec = county.sections[section]
    idx = agg.index()
    n = lv.starts.shape[0]
    worst = np.zeros(n, dtype=np.int64)
    ok = np.ones(n, dtype=np.bool_)
    for param in sec.parameters:
        i = idx.get((sec.station, param))
        if i is None:
            return np.zeros(n, dtype=np.int64)
        ok &= lv.valid[i]
        mean = np.where(lv.valid[i], lv.mean[i], 0.0).clip(min=0)
        worst = np.maximum(worst, classify_array(param, mean, sec.water_body).astype(np.int64))
    return np.where(ok, worst, 0)


def _outflow_worse(rule: ProblemRule, county: County, agg: Aggregates) -> list[Finding]:
    lv = _level(agg, rule.level)
    out: list[Finding] = []
    for t in county.towns.values():
        if not t.inflows:
            continue
        outc = _worst_class(county, agg, lv, t.outflow)
        inc = np.zeros_like(outc)
        ok = outc > 0
        for inf in t.inflows:
            c = _worst_class(county, agg, lv, inf.section)
            ok &= c > 0
            inc = np.maximum(inc, c)
        bad = ok & (outc > inc)
        for a, b in _runs(bad):
            if b - a < rule.consecutive:
                continue
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    f"town:{t.id}",
                    int(lv.starts[a]),
                    int(lv.starts[b - 1]),
                    f"{t.name}: outflow worse than inflow for {b - a} {rule.level}s"
                    f" (class {int(inc[a:b].max())} in, {int(outc[a:b].max())} out)",
                    county.sections[t.outflow].station,
                    t.outflow,
                    t.id,
                    county.sections[t.outflow].river,
                    None,
                    {
                        "inflow_classes": inc[a:b].tolist(),
                        "outflow_classes": outc[a:b].tolist(),
                        "length": b - a,
                    },
                )
            )
    return out


def _capture(
    rule: ProblemRule, county: County, agg: Aggregates, window: tuple[int, int]
) -> list[Finding]:
    """Days ending inside ``window`` whose share of valid hours (of the day's expected values)
    is below the limit."""
    lv = agg.day
    idx = agg.index()
    per_day = np.diff(agg.calendar.days)  # ms in each local day
    hours = per_day / HOUR_MS
    out: list[Finding] = []
    places = _places(county)
    for station, place in places.items():
        sec = county.sections[place.section] if place.section else None
        params = sec.parameters if sec else ()
        shares: list[npt.NDArray[np.float64]] = []
        for param in params:
            i = idx.get((station, param))
            expected = hours / 4 if param in agg.rules.four_hourly else hours
            if i is None:
                shares.append(np.zeros(lv.starts.shape[0]))
                continue
            hv = agg.hour.valid[i].astype(np.int64)
            got = np.bincount(agg.calendar.hour_day, weights=hv, minlength=lv.starts.shape[0])
            shares.append(np.minimum(got / expected, 1.0))
        if not shares:
            continue
        share = np.min(np.vstack(shares), axis=0)
        low = (share < rule.min_capture) & (agg.calendar.days[1:] <= window[1])
        low &= agg.calendar.days[:-1] >= window[0]
        for a, b in _runs(low):
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    station,
                    int(lv.starts[a]),
                    int(lv.starts[b - 1]),
                    f"{station}: data capture below {rule.min_capture:.0%} on {b - a} day(s)"
                    f" (lowest {float(share[a:b].min()):.0%})",
                    station,
                    place.section,
                    place.town,
                    place.river,
                    None,
                    {
                        "days": list(agg.calendar.day_labels[a:b]),
                        "capture": [round(float(x), 3) for x in share[a:b]],
                    },
                )
            )
    return out


Columns = Mapping[str, Any]


def _series(columns: Columns) -> Iterable[tuple[str, str, npt.NDArray[Any]]]:
    """(station, code, row indexes sorted by time) of each station and code."""
    station = np.asarray(columns["station"]).astype(str)
    code = np.asarray(columns["code"]).astype(str)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    if station.size == 0:
        return
    order = np.lexsort((ts, code, station))
    s, c = station[order], code[order]
    change = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (c[1:] != c[:-1])])
    for a, b in itertools.pairwise([*change.tolist(), len(order)]):
        yield str(s[a]), str(c[a]), order[a:b]


def _param_name(code: str) -> str:
    try:
        return resolve(code).name
    except InputError:
        return code


def _offline(
    rule: ProblemRule, county: County, columns: Columns, window: tuple[int, int]
) -> list[Finding]:
    start, end = window
    limit = round(rule.hours * HOUR_MS)
    station = np.asarray(columns["station"]).astype(str)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    out: list[Finding] = []
    for st, place in _places(county).items():
        times = np.unique(ts[station == st])
        edges = np.r_[start, times, end]
        gaps = np.diff(edges)
        for k in np.flatnonzero(gaps > limit).tolist():
            a, b = int(edges[k]), int(edges[k + 1])
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    st,
                    a,
                    b,
                    f"{st}: no data for {(b - a) / HOUR_MS:.1f} h",
                    st,
                    place.section,
                    place.town,
                    place.river,
                    None,
                    {"silent_from_ms": a, "silent_until_ms": b, "hours": (b - a) / HOUR_MS},
                )
            )
    return out


def _flags(rule: ProblemRule, county: County, columns: Columns) -> list[Finding]:
    places = _places(county)
    flags = np.asarray(columns["flag"]).astype(str)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    limit = round(rule.hours * HOUR_MS)
    wanted = sorted(rule.flags)
    out: list[Finding] = []
    for st, code, rows in _series(columns):
        place = places.get(st)
        if place is None:
            continue
        f = flags[rows]
        t = ts[rows]
        # a reading stands for one sampling interval (an hour, four for an analyzer)
        step = int(np.median(np.diff(t))) if len(t) > 1 else 0
        for a, b in _runs(np.isin(f, wanted)):
            until = int(t[b - 1]) + step
            if until - int(t[a]) < limit:
                continue
            letters, n = np.unique(f[a:b], return_counts=True)
            counts = {str(k): int(v) for k, v in zip(letters, n, strict=True)}
            param = _param_name(code)
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    f"{st}/{param}",
                    int(t[a]),
                    int(t[b - 1]),
                    f"{st}: {param} flagged {'/'.join(sorted(counts))} for"
                    f" {(until - int(t[a])) / HOUR_MS:.1f} h ({b - a} readings)",
                    st,
                    place.section,
                    place.town,
                    place.river,
                    param,
                    {"flags": counts, "readings": b - a},
                )
            )
    return out


def _stuck(rule: ProblemRule, county: County, columns: Columns) -> list[Finding]:
    places = _places(county)
    values = np.asarray(columns["value"], dtype=np.float64)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    out: list[Finding] = []
    for st, code, rows in _series(columns):
        place = places.get(st)
        if place is None:
            continue
        v = values[rows]
        same = np.r_[False, (v[1:] == v[:-1]) & np.isfinite(v[1:])]
        # a run of k equal "same" steps is k+1 identical readings
        for a, b in _runs(same):
            n = b - a + 1
            if n < rule.polls:
                continue
            param = _param_name(code)
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    f"{st}/{param}",
                    int(ts[rows[a - 1]]),
                    int(ts[rows[b - 1]]),
                    f"{st}: {param} stuck at {float(v[a]):g} for {n} readings",
                    st,
                    place.section,
                    place.town,
                    place.river,
                    param,
                    {"value": float(v[a]), "readings": n},
                )
            )
    return out


def _jump(rule: ProblemRule, county: County, agg: Aggregates) -> list[Finding]:
    places = _places(county)
    lv = agg.hour
    out: list[Finding] = []
    for i, (st, param) in enumerate(agg.keys):
        step = rule.min_step.get(param)
        place = places.get(st)
        if step is None or place is None:
            continue
        ok = np.flatnonzero(lv.valid[i])
        if ok.size < 2:
            continue
        m = lv.mean[i, ok]
        prev, cur = m[:-1], m[1:]
        delta = np.abs(cur - prev)
        hit = (delta >= step) & (delta > rule.ratio * np.abs(prev))
        for k in np.flatnonzero(hit).tolist():
            j = int(ok[k + 1])
            out.append(
                Finding(
                    rule.id,
                    rule.kind,
                    f"{st}/{param}",
                    int(lv.starts[j]),
                    int(lv.starts[j]),
                    f"{st}: {param} jumped from {float(prev[k]):.3g} to {float(cur[k]):.3g}"
                    " between hourly means",
                    st,
                    place.section,
                    place.town,
                    place.river,
                    param,
                    {"from": float(prev[k]), "to": float(cur[k])},
                )
            )
    return out


def detect(
    rules: ProblemRules,
    county: County,
    agg: Aggregates,
    columns: Columns,
    window: tuple[int, int] | None = None,
) -> list[Finding]:
    """Every episode each rule finds in a period's aggregates and readings columns
    (``station``, ``ts_ms``, ``code``, ``value``, ``flag``). ``window`` is the [start, end) in
    UTC ms the data covers (default: the aggregates' calendar); silence is judged within it."""
    win = window or (agg.calendar.start_ms, agg.calendar.end_ms)
    out: list[Finding] = []
    for r in rules.rules:
        if r.kind == "exceedance":
            out += _exceedance(r, county, agg)
        elif r.kind == "outflow-worse":
            out += _outflow_worse(r, county, agg)
        elif r.kind == "capture":
            out += _capture(r, county, agg, win)
        elif r.kind == "offline":
            out += _offline(r, county, columns, win)
        elif r.kind == "flags":
            out += _flags(r, county, columns)
        elif r.kind == "stuck":
            out += _stuck(r, county, columns)
        else:
            out += _jump(r, county, agg)
    out.sort(key=lambda f: (f.first_ms, f.rule, f.subject))
    return out


# --- lifecycle -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProblemEvent:
    problem_id: int
    time_ms: int
    action: Action
    actor: str
    note: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ms": self.time_ms,
            "action": self.action,
            "actor": self.actor,
            "note": self.note,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem's facts of discovery and its state folded from its events."""

    id: int
    rule: str
    kind: str
    subject: str
    station: str | None
    section: str | None
    town: str | None
    river: str | None
    code: str | None
    opened_ms: int
    first_ms: int
    message: str
    details: Mapping[str, Any]
    state: State = "discovered"
    assignee: str | None = None
    deadline_ms: int | None = None
    last_seen_ms: int = 0
    closed_ms: int | None = None
    events: tuple[ProblemEvent, ...] = ()
    reopened: int = 0

    @property
    def is_open(self) -> bool:
        return self.state != "closed"

    def overdue(self, now_ms: int) -> bool:
        """Not closed by its deadline (closed late counts as overdue too)."""
        if self.deadline_ms is None:
            return False
        end = self.closed_ms if self.closed_ms is not None else now_ms
        return end > self.deadline_ms

    def closed_on_time(self) -> bool | None:
        if self.closed_ms is None or self.deadline_ms is None:
            return None
        return self.closed_ms <= self.deadline_ms

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "subject": self.subject,
            "station": self.station,
            "section": self.section,
            "town": self.town,
            "river": self.river,
            "code": self.code,
            "state": self.state,
            "state_zh": STATE_NAMES_ZH[self.state],
            "assignee": self.assignee,
            "opened_ms": self.opened_ms,
            "first_ms": self.first_ms,
            "last_seen_ms": self.last_seen_ms,
            "deadline_ms": self.deadline_ms,
            "closed_ms": self.closed_ms,
            "overdue": self.overdue(now_ms),
            "reopened": self.reopened,
            "message": self.message,
            "details": dict(self.details),
            "events": [e.to_json() for e in self.events],
        }


_ALLOWED: Mapping[str, frozenset[State]] = {
    "assign": frozenset({"discovered", "assigned"}),
    "rectify": frozenset({"assigned", "rectifying", "reported"}),
    "feedback": frozenset({"assigned", "rectifying", "reported"}),
    "close": frozenset({"reported"}),
    "reopen": frozenset({"reported", "closed"}),
    "seen": frozenset(STATES),
    "discover": frozenset(),
}
_TARGET: Mapping[str, State] = {
    "assign": "assigned",
    "rectify": "rectifying",
    "feedback": "reported",
    "close": "closed",
    "reopen": "assigned",
}


def next_state(state: State, action: Action) -> State:
    """The state after ``action`` in ``state``; InputError naming what is allowed if not."""
    if action == "seen":
        return state
    if state not in _ALLOWED[action]:
        names = ("assign", "rectify", "feedback", "close", "reopen")
        can = [a for a in names if state in _ALLOWED[a]]
        raise InputError(
            f"a problem in state {state} ({STATE_NAMES_ZH[state]}) cannot be {action}ed;"
            f" allowed now: {', '.join(can) or 'nothing'}"
        )
    return _TARGET[action]


def fold(base: Problem, events: Sequence[ProblemEvent]) -> Problem:
    """The problem after its events, in order (the ``discover`` event included or not)."""
    state: State = "discovered"
    assignee = base.assignee
    deadline = base.deadline_ms
    last_seen = base.last_seen_ms or base.first_ms
    closed: int | None = None
    reopened = 0
    for e in events:
        if e.action == "discover":
            last_seen = max(last_seen, int(e.details.get("last_ms", last_seen)))
            continue
        if e.action == "seen":
            last_seen = max(last_seen, int(e.details.get("last_ms", last_seen)))
            continue
        state = next_state(state, e.action)
        if e.action in ("assign", "reopen"):
            assignee = str(e.details.get("to", assignee)) if e.details.get("to") else assignee
            if "deadline_ms" in e.details:
                deadline = int(e.details["deadline_ms"])
            closed = None
            reopened += e.action == "reopen"
        elif e.action == "close":
            closed = e.time_ms
    return Problem(
        base.id,
        base.rule,
        base.kind,
        base.subject,
        base.station,
        base.section,
        base.town,
        base.river,
        base.code,
        base.opened_ms,
        base.first_ms,
        base.message,
        base.details,
        state,
        assignee,
        deadline,
        last_seen,
        closed,
        tuple(events),
        reopened,
    )


def quiet_enough(problem: Problem, rule: ProblemRule, checked_until_ms: int | None) -> str | None:
    """Why ``problem`` may not be closed yet, or None if its rule has been quiet long enough
    (data time: from its last finding to the end of the data last checked)."""
    if checked_until_ms is None:
        return "no discovery run has checked the data yet: run `sanduan central compute`"
    quiet = checked_until_ms - problem.last_seen_ms
    if quiet < rule.quiet_ms:
        return (
            f"rule {rule.id} found this problem {quiet / HOUR_MS:.1f} h of data ago; it must stay"
            f" quiet for {rule.quiet_hours:g} h before the problem is closed"
        )
    return None


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a discovery run changes: findings that open new problems and ``seen`` updates
    (problem id, last_ms) for open problems found again."""

    new: tuple[Finding, ...]
    seen: tuple[tuple[int, int], ...]


def reconcile(known: Iterable[Problem], findings: Iterable[Finding]) -> Reconciled:
    """At most one open problem per (rule, subject): findings of a subject with an open problem
    extend it (if later); findings no later than what a problem of the subject already covered
    (a re-run over the same data) are ignored; the others open one problem per (rule,
    subject), spanning all its findings."""
    problems = list(known)
    by_key = {(p.rule, p.subject): p for p in problems if p.is_open}
    covered: dict[tuple[str, str], int] = {}
    for q in problems:
        k = (q.rule, q.subject)
        covered[k] = max(covered.get(k, 0), q.last_seen_ms)
    merged: dict[tuple[str, str], Finding] = {}
    seen: dict[int, int] = {}
    for f in findings:
        key = (f.rule, f.subject)
        if key not in by_key and f.last_ms <= covered.get(key, -1):
            continue
        op = by_key.get(key)
        if op is not None:
            if f.last_ms > max(op.last_seen_ms, seen.get(op.id, 0)):
                seen[op.id] = f.last_ms
            continue
        prev = merged.get(key)
        if prev is None:
            merged[key] = f
        else:
            ev = dict(prev.evidence)
            ev["episodes"] = int(ev.get("episodes", 1)) + 1
            merged[key] = Finding(
                prev.rule,
                prev.kind,
                prev.subject,
                min(prev.first_ms, f.first_ms),
                max(prev.last_ms, f.last_ms),
                prev.message,
                prev.station,
                prev.section,
                prev.town,
                prev.river,
                prev.code,
                ev,
            )
    return Reconciled(tuple(merged.values()), tuple(sorted(seen.items())))


# --- hot spots -----------------------------------------------------------------------------


def _month(ms: int, timezone: str) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(timezone)).strftime("%Y-%m")


def hot_spots(
    problems: Iterable[Problem], timezone: str = "Asia/Shanghai"
) -> dict[str, list[dict[str, Any]]]:
    """Counts and median time to close (hours, of closed problems) by town, kind, river and
    month (of discovery), largest counts first."""
    ps = list(problems)
    out: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, Callable[[Problem], str]] = {
        "town": lambda p: p.town or "-",
        "kind": lambda p: p.kind,
        "river": lambda p: p.river or "-",
        "month": lambda p: _month(p.first_ms, timezone),
    }
    for name, fn in keys.items():
        groups: dict[str, list[Problem]] = {}
        for p in ps:
            groups.setdefault(fn(p), []).append(p)
        rows: list[dict[str, Any]] = []
        for k, g in groups.items():
            hours = [(p.closed_ms - p.opened_ms) / HOUR_MS for p in g if p.closed_ms is not None]
            rows.append(
                {
                    name: k,
                    "count": len(g),
                    "open": sum(1 for p in g if p.is_open),
                    "closed": len(hours),
                    "median_hours_to_close": round(statistics.median(hours), 1) if hours else None,
                }
            )
        rows.sort(key=lambda r: (-int(r["count"]), str(r[name])))
        out[name] = rows
    return out


def counts(problems: Iterable[Problem], now_ms: int) -> dict[str, int]:
    """``opened``, ``closed`` (now), ``open`` and ``overdue`` (open or closed late) counts."""
    ps = list(problems)
    return {
        "opened": len(ps),
        "closed": sum(1 for p in ps if not p.is_open),
        "open": sum(1 for p in ps if p.is_open),
        "overdue": sum(1 for p in ps if p.overdue(now_ms)),
    }

"""Section assessment: class, target compliance and main pollutants per month and year.

A section's period class is the single-factor class (GB 3838, the worst evaluated item) of its
period means, graded with :func:`sanduan.shared.grading.grade_sample` against the section's
water body (lakes use the lake TP limits) and target class. A section-period is *valid* only
when every parameter the section is assessed on has a valid period mean; an invalid
section-period is not graded and is counted in no rate.

Main pollutants follow the evaluation method (环办[2011]22号): named only for a section worse than
Class III, at most three evaluated items worse than Class III, the worst class first and then the
largest multiple, each with its exceedance multiple against the Class III limit. Target
compliance is separate: every evaluated item worse than the section's target class, with its
multiple against the target-class limit (``exceeding_target``).

County figures: 功能达标率 (compliance rate) = valid assessed sections meeting their target /
valid assessed sections; 优良率 (good rate) = valid assessed sections in Class I..III / valid
assessed sections. For a year both are given on the annual means and on the section-months.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field

from sanduan.central.core.county import County, Section
from sanduan.central.core.validity import Aggregates, Mean, Period
from sanduan.shared.grading import REPORTING_CLASS, class_label, do_saturation_limit, grade_sample
from sanduan.shared.model import NOT_GRADED, WaterBody
from sanduan.shared.params import resolve
from sanduan.shared.tables import Strict

__all__ = [
    "Assessment",
    "AssessmentOptions",
    "CountyFigures",
    "ItemResult",
    "SectionAssessment",
    "TownScore",
    "assess",
    "assess_section",
    "factor_classes",
    "means_by_section",
]


class AssessmentOptions(Strict):
    """``[assessment]`` of a rules file: choices GB 3838 leaves to the operator."""

    do_class_i: Literal["concentration", "saturation"] = "concentration"
    """DO Class I: 7.5 mg/L, or ``do_saturation_percent`` of saturation at the period's mean
    water temperature (GB 3838-2002 Table 1: "饱和率 90 % (或 7.5)")."""
    do_saturation_percent: Annotated[float, Field(gt=0, le=100)] = 90.0

    def do_class_i_limit(self, means: Mapping[str, Mean]) -> float | None:
        """The DO Class I limit for a section's means; None: the table's 7.5 mg/L (also when
        saturation is chosen but there is no valid temperature mean)."""
        if self.do_class_i != "saturation":
            return None
        t = means.get("temperature")
        if t is None or not t.valid or t.value is None:
            return None
        return do_saturation_limit(t.value, self.do_saturation_percent)


DEFAULT_OPTIONS = AssessmentOptions()

SectionMeans = Mapping[str, Mapping[str, Mean]]
"""Period means: section id -> parameter name -> mean."""


@dataclass(frozen=True, slots=True)
class ItemResult:
    mean: Mean
    grade: int
    evaluated: bool
    exceedance: float | None
    """(C - L) / L against the section's target-class limit; None for pH, DO and items
    without limits or without a valid mean."""
    multiple_iii: float | None = None
    """(C - L) / L against the Class III limit (main pollutants)."""
    parameter: str = ""

    def reported(self) -> str:
        """The mean as reports show it (``DL+L`` below the detection limit)."""
        if not self.parameter:
            return "-" if self.mean.value is None else repr(self.mean.value)
        return self.mean.reported(resolve(self.parameter).decimals)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.mean.to_json(),
            "reported": self.reported(),
            "class": self.grade,
            "evaluated": self.evaluated,
            "exceedance": self.exceedance,
            "multiple_iii": self.multiple_iii,
        }


@dataclass(frozen=True, slots=True)
class SectionAssessment:
    section: str
    name: str
    period: Period
    water_body: WaterBody
    target_class: int
    valid: bool
    grade: int | None
    meets_target: bool | None
    main_pollutants: tuple[tuple[str, float | None], ...]
    """(item, multiple against the Class III limit): only when the class is worse than III."""
    items: Mapping[str, ItemResult]
    missing: tuple[str, ...]
    """Parameters the section is assessed on that lack a valid period mean."""
    exceeding_target: tuple[tuple[str, float | None], ...] = ()
    """(item, multiple against the target-class limit) of every evaluated item worse than
    the target class, worst class first."""

    @property
    def good(self) -> bool | None:
        return None if self.grade is None else self.grade <= REPORTING_CLASS

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "period": self.period.kind,
            "label": self.period.label,
            "water_body": str(self.water_body),
            "target_class": self.target_class,
            "valid": self.valid,
            "class": self.grade,
            "class_label": None if self.grade is None else class_label(self.grade),
            "meets_target": self.meets_target,
            "main_pollutants": [
                {"item": n, "class": self.items[n].grade, "multiple": e, "against": "III"}
                for n, e in self.main_pollutants
            ],
            "exceeding_target": [
                {"item": n, "class": self.items[n].grade, "multiple": e, "against": "target"}
                for n, e in self.exceeding_target
            ],
            "missing": list(self.missing),
            "items": {k: v.to_json() for k, v in self.items.items()},
        }

    def details_json(self) -> dict[str, Any]:
        """The ``details`` column of the assessments table."""
        d = self.to_json()
        for k in ("section", "period", "label", "class", "meets_target", "valid"):
            d.pop(k)
        return d


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


@dataclass(frozen=True, slots=True)
class CountyFigures:
    """功能达标率 and 优良率 over ``n_valid`` valid section-periods of ``n_sections``."""

    label: str
    n_sections: int
    n_valid: int
    n_meets: int
    n_good: int

    @property
    def compliance_rate(self) -> float | None:
        return _rate(self.n_meets, self.n_valid)

    @property
    def good_rate(self) -> float | None:
        return _rate(self.n_good, self.n_valid)

    @classmethod
    def of(cls, label: str, results: Iterable[SectionAssessment]) -> CountyFigures:
        rs = list(results)
        valid = [r for r in rs if r.valid]
        return cls(
            label,
            len(rs),
            len(valid),
            sum(1 for r in valid if r.meets_target),
            sum(1 for r in valid if r.good),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "sections": self.n_sections,
            "valid": self.n_valid,
            "meets_target": self.n_meets,
            "good": self.n_good,
            "compliance_rate": self.compliance_rate,
            "good_rate": self.good_rate,
        }


@dataclass(frozen=True, slots=True)
class TownScore:
    """A town's scorecard for a period: its outflow and inflows, the class change across the
    town and how its sections fared."""

    town: str
    name: str
    outflow: str
    outflow_class: int | None
    outflow_meets: bool | None
    inflow_class: int | None
    """Worst class among the town's inflow sections (None: no inflow, or one is invalid)."""
    change: int | None
    """outflow_class - inflow_class: positive means the water got worse across the town."""
    sections: tuple[str, ...]
    n_valid: int
    n_meets: int

    def to_json(self) -> dict[str, Any]:
        return {
            "town": self.town,
            "name": self.name,
            "outflow": self.outflow,
            "outflow_class": self.outflow_class,
            "outflow_meets_target": self.outflow_meets,
            "inflow_class": self.inflow_class,
            "change": self.change,
            "sections": list(self.sections),
            "valid": self.n_valid,
            "meets_target": self.n_meets,
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """Assessment of every section of the county for one period; for a year also the months."""

    period: Period
    sections: Mapping[str, SectionAssessment]
    county: CountyFigures
    towns: tuple[TownScore, ...]
    months: Mapping[str, Mapping[str, SectionAssessment]]
    section_months: CountyFigures | None
    """For a year: the rates over all assessed section-months of the year."""

    def all_results(self) -> list[SectionAssessment]:
        """Every result to store: the period's, then (for a year) each month's."""
        out = list(self.sections.values())
        if self.period.kind == "year":
            for m in self.months.values():
                out.extend(m.values())
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period.kind,
            "label": self.period.label,
            "sections": [s.to_json() for s in self.sections.values()],
            "county": self.county.to_json(),
            "section_months": None
            if self.section_months is None
            else self.section_months.to_json(),
            "towns": [t.to_json() for t in self.towns],
            "months": {
                label: {sid: s.to_json() for sid, s in secs.items()}
                for label, secs in self.months.items()
            }
            if self.period.kind == "year"
            else {},
        }


def factor_classes(
    means: Mapping[str, Mean], factors: Sequence[str], water_body: WaterBody
) -> dict[str, int]:
    """The GB 3838 class of each factor's mean (0 when the mean is missing or not valid)."""
    values = {
        f: m.value
        for f in factors
        if (m := means.get(f)) is not None and m.valid and m.value is not None
    }
    out = dict.fromkeys(factors, NOT_GRADED)
    if values:
        g = grade_sample(values, water_body)
        for f in values:
            out[f] = g.items[f].grade
    return out


def assess_section(
    section: Section,
    means: Mapping[str, Mean],
    period: Period,
    options: AssessmentOptions = DEFAULT_OPTIONS,
) -> SectionAssessment:
    """Assess one section on its period means (parameter name -> mean)."""
    missing = tuple(p for p in section.parameters if (m := means.get(p)) is None or not m.valid)
    usable = {name: m.value for name, m in means.items() if m.valid and m.value is not None}
    items: dict[str, ItemResult] = {}
    grade: int | None = None
    meets: bool | None = None
    main: tuple[tuple[str, float | None], ...] = ()
    over: tuple[tuple[str, float | None], ...] = ()
    if usable:
        do_i = options.do_class_i_limit(means)
        g = grade_sample(usable, section.water_body, section.target_class, do_class_i=do_i)
        for name, it in g.items.items():
            items[name] = ItemResult(
                means[name], it.grade, it.evaluated, it.exceedance, it.multiple_iii, name
            )
        if not missing and g.grade != NOT_GRADED:
            grade = g.grade
            meets = g.meets_target
            main = tuple((n, g.items[n].multiple_iii) for n in g.main_pollutants)
            over = _exceeding(g.items, section.target_class)
    for name, m in means.items():
        if name not in items:
            items[name] = ItemResult(m, NOT_GRADED, False, None, None, name)
    return SectionAssessment(
        section.id,
        section.name,
        period,
        section.water_body,
        section.target_class,
        grade is not None,
        grade,
        meets,
        main,
        MappingProxyType(items),
        missing,
        over,
    )


def _exceeding(items: Mapping[str, Any], target: int) -> tuple[tuple[str, float | None], ...]:
    """Evaluated items worse than ``target``: worst class first, then largest multiple against
    the target limit (none, as for DO and pH, last), then registry order."""
    worse = [n for n, it in items.items() if it.evaluated and it.grade > target]
    worse.sort(
        key=lambda n: (
            -items[n].grade,
            -items[n].exceedance if items[n].exceedance is not None else float("inf"),
            resolve(n).index,
        )
    )
    return tuple((n, items[n].exceedance) for n in worse)


def means_by_section(
    county: County, agg: Aggregates, level: str, j: int
) -> dict[str, dict[str, Mean]]:
    """Section id -> parameter -> mean, read from column ``j`` of level ``level`` of ``agg``."""
    lv = {"hour": agg.hour, "day": agg.day, "month": agg.month, "year": agg.year}[level]
    if lv is None:
        raise ValueError(f"aggregates have no {level} level")
    by_station: dict[str, dict[str, Mean]] = {}
    for i, (station, param) in enumerate(agg.keys):
        by_station.setdefault(station, {})[param] = lv.at(i, j)
    return {sid: by_station.get(s.station, {}) for sid, s in county.sections.items()}


def _town_scores(county: County, results: Mapping[str, SectionAssessment]) -> tuple[TownScore, ...]:
    out: list[TownScore] = []
    for t in county.towns.values():
        d = results[t.outflow]
        inflow_grades = [results[i.section].grade for i in t.inflows]
        inflow_class = (
            max(g for g in inflow_grades if g is not None)
            if inflow_grades and all(g is not None for g in inflow_grades)
            else None
        )
        change = None if d.grade is None or inflow_class is None else d.grade - inflow_class
        owned = [t.outflow, *(i.section for i in t.inflows)]
        owned += [s for s in county.sections if county.sections[s].owner == t.id and s not in owned]
        rs = [results[s] for s in owned]
        out.append(
            TownScore(
                t.id,
                t.name,
                t.outflow,
                d.grade,
                d.meets_target,
                inflow_class,
                change,
                tuple(owned),
                sum(1 for r in rs if r.valid),
                sum(1 for r in rs if r.meets_target),
            )
        )
    return tuple(out)


def assess(
    county: County, agg: Aggregates, options: AssessmentOptions = DEFAULT_OPTIONS
) -> Assessment:
    """Assess every section of ``county`` over the period of ``agg``."""
    period = agg.calendar.period
    months: dict[str, dict[str, SectionAssessment]] = {}
    for j, label in enumerate(agg.calendar.month_labels):
        mp = Period.parse(label)
        means = means_by_section(county, agg, "month", j)
        months[label] = {
            sid: assess_section(s, means[sid], mp, options) for sid, s in county.sections.items()
        }
    if period.kind == "month":
        results = months[period.label]
        section_months = None
    else:
        means = means_by_section(county, agg, "year", 0)
        results = {
            sid: assess_section(s, means[sid], period, options)
            for sid, s in county.sections.items()
        }
        assessed_ids = {s.id for s in county.assessed_sections}
        section_months = CountyFigures.of(
            period.label,
            (r for m in months.values() for sid, r in m.items() if sid in assessed_ids),
        )
    figures = CountyFigures.of(period.label, (results[s.id] for s in county.assessed_sections))
    return Assessment(
        period,
        MappingProxyType(results),
        figures,
        _town_scores(county, results),
        MappingProxyType({k: MappingProxyType(v) for k, v in months.items()}),
        section_months,
    )

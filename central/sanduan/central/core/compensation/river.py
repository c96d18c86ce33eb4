"""The river rule: several sections on one river graded as one, by the evaluation method
(环办[2011]22号): see docs/compensation.md.

For each configured river with k sections (default: the river's assessed sections):

* k < ``proportion_from`` (5): each factor's period means are averaged over the sections (on
  decimals, rounded once to the factor's reporting precision) and the averages graded by the
  single-factor method; the river's class c gives its quality: I-II excellent, III good,
  IV light, V moderate, inferior V heavy pollution.
* k >= ``proportion_from``: each section is graded on its own, and the shares decide: I-III
  share >= 90 % excellent, >= 75 % good; below that inferior-V share < 20 % light, < 40 %
  moderate, else heavy pollution.

The river's ``payer`` pays ``amounts[quality]`` (0 when not listed) to the county fund.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from sanduan.central.core.compensation.base import (
    LedgerEntry,
    RuleParams,
    SettlementContext,
    Yuan,
    canonical_factors,
)
from sanduan.central.core.county import County
from sanduan.shared.errors import ConfigError
from sanduan.shared.grading import grade_sample
from sanduan.shared.params import resolve
from sanduan.shared.precision import mean_scaled, to_units
from sanduan.shared.tables import Strict

KIND = "river"
Quality = Literal["excellent", "good", "light", "moderate", "heavy"]
BY_CLASS: dict[int, Quality] = {
    1: "excellent",
    2: "excellent",
    3: "good",
    4: "light",
    5: "moderate",
    6: "heavy",
}


class River(Strict):
    river: str
    payer: str
    sections: list[str] | None = None
    """Default: the river's assessed sections, in county order."""


class Params(RuleParams):
    kind: Literal["river"] = "river"
    rivers: list[River]
    factors: list[str] = Field(default_factory=lambda: ["CODMn", "NH3-N", "TP"])
    amounts: dict[Quality, Yuan] = Field(default_factory=dict)
    proportion_from: Annotated[int, Field(ge=2)] = 5

    @field_validator("factors")
    @classmethod
    def _factors(cls, v: list[str]) -> list[str]:
        return canonical_factors(v)

    def sections_of(self, county: County, r: River) -> list[str]:
        if r.sections is not None:
            return list(r.sections)
        return list(county.assessed_sections_on(r.river))

    def check(self, county: County, file: str, key: str) -> None:
        super().check(county, file, key)
        for i, r in enumerate(self.rivers):
            k = f"{key}.rivers[{i}]"
            if r.river not in county.rivers:
                raise ConfigError(file, f"{k}.river", f"unknown river {r.river!r}")
            if r.payer not in county.towns:
                raise ConfigError(file, f"{k}.payer", f"unknown town {r.payer!r}")
            for j, s in enumerate(r.sections or []):
                if s not in county.sections:
                    raise ConfigError(file, f"{k}.sections[{j}]", f"unknown section {s!r}")
            if not self.sections_of(county, r):
                raise ConfigError(file, k, f"river {r.river!r} has no assessed section")


def average(values: list[float], parameter: str) -> float:
    """Exact mean of section means at the parameter's reporting precision, rounded once."""
    d = resolve(parameter).decimals
    total = float(to_units(np.asarray(values), d).sum())
    return float(mean_scaled(np.array([total]), np.array([len(values)]), d)[0])


def proportion_quality(classes: list[int]) -> tuple[Quality, Fraction, Fraction]:
    """(quality, I-III share, inferior-V share) of section classes."""
    n = len(classes)
    good = Fraction(sum(1 for c in classes if c <= 3), n)
    worst = Fraction(sum(1 for c in classes if c == 6), n)
    if good >= Fraction(9, 10):
        q: Quality = "excellent"
    elif good >= Fraction(3, 4):
        q = "good"
    elif worst < Fraction(1, 5):
        q = "light"
    elif worst < Fraction(2, 5):
        q = "moderate"
    else:
        q = "heavy"
    return q, good, worst


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    county = ctx.county
    for r in p.rivers:
        sections = p.sections_of(county, r)
        ev: dict[str, Any] = {
            "river": r.river,
            "sections": sections,
            "factors": list(p.factors),
            "means": ctx.means_evidence(sections, p.factors),
        }
        bad = ctx.invalid(sections, p.factors)
        if bad:
            out.extend(ctx.insufficient(p, r.payer, county.fund, bad, ev))
            continue
        if len(sections) < p.proportion_from:
            avg = {
                f: average([ctx.mean(s, f).value or 0.0 for s in sections], f) for f in p.factors
            }
            g = grade_sample(avg, county.sections[sections[0]].water_body)
            quality = BY_CLASS[g.grade]
            ev.update(
                method="average",
                formula="grade the means of each factor over the sections",
                inputs={
                    "averages": avg,
                    "classes": {f: g.items[f].grade for f in p.factors},
                    "class": g.grade,
                },
            )
        else:
            classes = {s: ctx.section_class(s, p.factors)[0] for s in sections}
            quality, good, worst = proportion_quality(list(classes.values()))
            ev.update(
                method="proportion",
                formula="I-III share >= 90 % excellent, >= 75 % good; else by inferior-V share",
                inputs={
                    "classes": classes,
                    "share_I_III": float(good),
                    "share_inferior_V": float(worst),
                },
            )
        amount = p.amounts.get(quality, 0.0)
        ev["result"] = {"quality": quality, "amount_yuan": amount}
        out.append(ctx.entry(p, r.payer, county.fund, amount, ev))
    return out

"""The exceedance rule (Hefei): see docs/compensation.md.

Per town, at its downstream section D, per factor f with period mean C and target-class limit L
(D's water body): m = (C - L) / L; when m > 0 the town pays
min(cap_per_factor, ceil(m / step) * penalty_per_step), "per started 0.5x" with step 0.5.
When no factor exceeds, the town is rewarded reward_per_class * (target - c(D)) for each class
c(D) (the single-factor class over the factors) is better than the target. Penalties go to,
and rewards come from, ``counterparty``: the county fund (default) or the downstream party.

C is the period mean at its reporting precision; m is computed on decimals and rounded to two
places (GB/T 8170) before the steps are counted, so m = 0.50 is one step, never two.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sanduan.central.core.compensation.base import (
    FactorRule,
    LedgerEntry,
    SettlementContext,
    Yuan,
)
from sanduan.shared.precision import decimal_of, exact_multiple
from sanduan.shared.standards import Direction, gb3838

KIND = "exceedance"


class Params(FactorRule):
    kind: Literal["exceedance"] = "exceedance"
    penalty_per_step: Yuan = 500_000.0
    step: Annotated[float, Field(gt=0)] = 0.5
    cap_per_factor: Yuan = 3_000_000.0
    reward_per_class: Yuan = 500_000.0
    counterparty: Literal["fund", "downstream"] = "fund"

    @field_validator("factors")
    @classmethod
    def _upper_only(cls, v: list[str]) -> list[str]:
        for f in v:
            item = gb3838().item(f)
            if item is None or item.direction is not Direction.UPPER:
                raise ValueError(f"{f} has no upper limit; exceedance needs upper-limit factors")
        return v


def steps(m: float | Decimal, step: float) -> int:
    """Started steps of exceedance multiple ``m`` (0 when m <= 0), counted on decimals: 0.50
    with step 0.5 is one step."""
    dm = decimal_of(m)
    if dm <= 0:
        return 0
    return int((dm / decimal_of(step)).to_integral_value(rounding=ROUND_CEILING))


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    county = ctx.county
    std = gb3838()
    for town in p.selected_towns(county):
        d = county.towns[town].outflow
        sec = county.sections[d]
        other = county.fund if p.counterparty == "fund" else county.downstream_party(town)
        ev: dict[str, Any] = {
            "town": town,
            "sections": {"downstream": d},
            "factors": list(p.factors),
            "means": ctx.means_evidence([d], p.factors),
        }
        bad = ctx.invalid([d], p.factors)
        if bad:
            out.extend(ctx.insufficient(p, town, other, bad, ev))
            continue
        per: dict[str, Any] = {}
        penalty = 0.0
        for f in p.factors:
            c = ctx.mean(d, f).value
            item = std.item(f)
            assert c is not None and item is not None
            limit = item.limit(sec.target_class, sec.water_body)
            assert limit is not None
            dm = exact_multiple(c, limit)
            k = steps(dm, p.step)
            amount = min(p.cap_per_factor, k * p.penalty_per_step)
            per[f] = {"C": c, "L": limit, "m": float(dm), "steps": k, "amount_yuan": amount}
            penalty += amount
        c_d, classes = ctx.section_class(d, p.factors)
        better = max(0, sec.target_class - c_d) if penalty == 0 else 0
        reward = better * p.reward_per_class
        ev.update(
            formula="per factor min(cap, ceil(m/step) * penalty); reward per class better",
            inputs={
                "target_class": sec.target_class,
                "water_body": str(sec.water_body),
                "factors": per,
                "c_D": c_d,
                "classes": classes,
            },
        )
        if penalty > 0:
            ev["result"] = {"penalty_yuan": penalty, "amount_yuan": penalty}
            out.append(ctx.entry(p, town, other, penalty, ev))
        else:
            ev["result"] = {"classes_better": better, "amount_yuan": reward}
            out.append(ctx.entry(p, other, town, reward, ev))
    return out

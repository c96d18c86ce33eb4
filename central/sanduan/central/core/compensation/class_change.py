"""The class-change rule (inflow -> outflow, after Beijing 2015): see docs/compensation.md.

n = c(D) - c(I), c the single-factor class over the rule's factors of the period means at the
town's downstream section D and its (worst) inflow section I.

The town pays for the classes its outflow lost or missed its target by: with m = c(D) - target
(m > 0: D misses), charged = max(n, m) classes (never the same class twice).

* charged > 0: the town pays its downstream party charged * price_per_class.
* charged < 0: the downstream party pays the town |charged| * reward_per_class.

``protection`` decides when a town whose outflow misses its target is spared for water that
arrived bad:

* ``per-factor`` (default, as published by Shiyan and Baoding): no penalty for the miss when
  no compensation factor is in a worse class at D than at the (worst) inflow; then charged = n.
* ``section-class``: the target plays no part (charged = n), whatever happened to the factors.
* ``none``: always charged = max(n, m).

A town without an inflow section has n = 0 and no factor to compare: only ``section-class``
spares it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from sanduan.central.core.compensation.base import (
    FactorRule,
    LedgerEntry,
    SettlementContext,
    Yuan,
)

KIND = "class-change"


class Params(FactorRule):
    kind: Literal["class-change"] = "class-change"
    price_per_class: Yuan = 300_000.0
    reward_per_class: Yuan = 0.0
    protection: Literal["per-factor", "section-class", "none"] = "per-factor"

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "protect_upstream" in data:
            raise ValueError(
                "protect_upstream was replaced by protection = "
                '"per-factor" (published), "section-class" (was true) or "none" (was false)'
            )
        return data


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    county = ctx.county
    for town in p.selected_towns(county):
        t = county.towns[town]
        down = county.downstream_party(town)
        inflows = [i.section for i in t.inflows]
        sections = [t.outflow, *inflows]
        ev: dict[str, Any] = {
            "town": town,
            "sections": {"downstream": t.outflow, "inflows": inflows},
            "factors": list(p.factors),
            "means": ctx.means_evidence(sections, p.factors),
        }
        bad = ctx.invalid(sections, p.factors)
        if bad:
            out.extend(ctx.insufficient(p, town, down, bad, ev))
            continue
        c_d, per_d = ctx.section_class(t.outflow, p.factors)
        classes: dict[str, Any] = {t.outflow: {"class": c_d, "factors": per_d}}
        c_i = None
        per_i: dict[str, int] = {}
        for s in inflows:
            c, per = ctx.section_class(s, p.factors)
            classes[s] = {"class": c, "factors": per}
            c_i = c if c_i is None else max(c_i, c)
            for f, k in per.items():
                per_i[f] = max(per_i.get(f, 0), k)
        n = 0 if c_i is None else c_d - c_i
        target = county.sections[t.outflow].target_class
        miss = max(0, c_d - target)
        worse = [f for f in p.factors if c_i is not None and per_d[f] > per_i[f]]
        if p.protection == "section-class":
            protected = True
        elif p.protection == "per-factor":
            protected = c_i is not None and not worse
        else:
            protected = False
        charged = n if protected or miss == 0 else max(n, miss)
        ev.update(
            classes=classes,
            formula="n = c(D) - c(I); charged = max(n, c(D) - target) unless protected",
            inputs={
                "c_D": c_d,
                "c_I": c_i,
                "n": n,
                "target_class": target,
                "miss": miss,
                "protection": p.protection,
                "factors_worse_than_inflow": worse,
                "protected": protected,
            },
        )
        if charged >= 0:
            amount = charged * p.price_per_class
            ev["result"] = {"classes": charged, "price_per_class": p.price_per_class}
            ev["result"]["amount_yuan"] = amount
            out.append(ctx.entry(p, town, down, amount, ev))
        else:
            amount = -charged * p.reward_per_class
            ev["result"] = {
                "classes": charged,
                "reward_per_class": p.reward_per_class,
                "amount_yuan": amount,
            }
            out.append(ctx.entry(p, down, town, amount, ev))
    return out

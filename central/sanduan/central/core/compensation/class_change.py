"""The class-change rule (inflow -> outflow, after Beijing 2015): see docs/compensation.md.

n = c(D) - c(I), c the single-factor class over the rule's factors of the period means at the
town's downstream section D and its (worst) inflow section I.

* n > 0: the town pays its downstream party n * price_per_class.
* n < 0: the downstream party pays the town |n| * reward_per_class.
* protect_upstream = false: a town whose D misses its target by m classes pays for
  max(n, m) classes (never the same class twice), and gets no reward that period.
  protect_upstream = true (default): the target plays no part.

A town without an inflow section has n = 0.
"""

from __future__ import annotations

from typing import Any, Literal

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
    protect_upstream: bool = True


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
        for s in inflows:
            c, per = ctx.section_class(s, p.factors)
            classes[s] = {"class": c, "factors": per}
            c_i = c if c_i is None else max(c_i, c)
        n = 0 if c_i is None else c_d - c_i
        target = county.sections[t.outflow].target_class
        miss = max(0, c_d - target)
        charged = n
        if not p.protect_upstream and miss > 0:
            charged = max(n, miss)
        ev.update(
            classes=classes,
            formula="n = c(D) - c(I)"
            + ("" if p.protect_upstream else "; charged = max(n, c(D) - target) if D misses"),
            inputs={
                "c_D": c_d,
                "c_I": c_i,
                "n": n,
                "target_class": target,
                "miss": miss,
                "protect_upstream": p.protect_upstream,
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

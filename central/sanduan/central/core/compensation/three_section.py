"""The three-section rule (三断面, the default): see docs/compensation.md.

For town T with downstream (outflow) section D, inflow sections I_1..I_k and, for an inflow fed
by upstream town U_j, that town's outflow section O_j; c(X) is the single-factor class over the
rule's factors of the period means at X:

* town charge: n = c(D) - max_j c(I_j) (no inflow: n = c(D) - target(D)).
  n > 0: T pays its downstream party (the next town, or the county fund) n * price_per_class.
  n < 0: the downstream party pays T |n| * reward_per_class (none when that is 0).
* boundary reach U_j -> T: r = c(I_j) - c(O_j). r > 0: r * reach_price_per_class is paid to
  ``reach_payee``, ``share_upstream`` of it by U_j and the rest by T. r <= 0: nothing.

A town is never charged for water that arrived already bad: its own charge starts from the worst
inflow class, and the reach charge only counts classes lost between two sections.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from sanduan.central.core.compensation.base import (
    FactorRule,
    LedgerEntry,
    SettlementContext,
    Yuan,
)

KIND = "three-section"


class Params(FactorRule):
    kind: Literal["three-section"] = "three-section"
    price_per_class: Yuan = 300_000.0
    reward_per_class: Yuan = 0.0
    share_upstream: Annotated[float, Field(ge=0, le=1)] = 0.5
    reach_price_per_class: Yuan | None = None
    """Price of a class lost in a boundary reach (default: price_per_class)."""
    reach_payee: Literal["fund", "downstream"] = "fund"
    """Who receives reach charges: the county fund, or the town's downstream party."""


def _town(p: Params, ctx: SettlementContext, town: str) -> list[LedgerEntry]:
    county = ctx.county
    t = county.towns[town]
    down = county.downstream_party(town)
    inflows = [i.section for i in t.inflows]
    sections = [t.outflow, *inflows]
    ev: dict[str, Any] = {
        "component": "town",
        "town": town,
        "sections": {"downstream": t.outflow, "inflows": inflows},
        "factors": list(p.factors),
        "means": ctx.means_evidence(sections, p.factors),
    }
    bad = ctx.invalid(sections, p.factors)
    if bad:
        return ctx.insufficient(p, town, down, bad, ev)
    c_d, per_d = ctx.section_class(t.outflow, p.factors)
    classes: dict[str, Any] = {t.outflow: {"class": c_d, "factors": per_d}}
    if inflows:
        c_in = 0
        for s in inflows:
            c, per = ctx.section_class(s, p.factors)
            classes[s] = {"class": c, "factors": per}
            c_in = max(c_in, c)
        ref = {"worst_inflow_class": c_in}
        n = c_d - c_in
        formula = "n = c(D) - max c(I)"
    else:
        target = county.sections[t.outflow].target_class
        ref = {"target_class": target}
        n = c_d - target
        formula = "n = c(D) - target(D) (no inflow section)"
    ev.update(classes=classes, inputs={**ref, "c_D": c_d, "n": n}, formula=formula)
    if n >= 0:
        amount = n * p.price_per_class
        ev["result"] = {"n": n, "price_per_class": p.price_per_class, "amount_yuan": amount}
        return [ctx.entry(p, town, down, amount, ev)]
    amount = -n * p.reward_per_class
    ev["result"] = {"n": n, "reward_per_class": p.reward_per_class, "amount_yuan": amount}
    return [ctx.entry(p, down, town, amount, ev)]


def _reach(p: Params, ctx: SettlementContext, town: str) -> list[LedgerEntry]:
    county = ctx.county
    out: list[LedgerEntry] = []
    price = p.price_per_class if p.reach_price_per_class is None else p.reach_price_per_class
    payee = county.fund if p.reach_payee == "fund" else county.downstream_party(town)
    for b in county.boundaries_of(town):
        sections = [b.upstream_outflow, b.inflow]
        ev: dict[str, Any] = {
            "component": "reach",
            "town": town,
            "upstream_town": b.upstream_town,
            "sections": {"upstream_outflow": b.upstream_outflow, "inflow": b.inflow},
            "factors": list(p.factors),
            "means": ctx.means_evidence(sections, p.factors),
        }
        bad = ctx.invalid(sections, p.factors)
        if bad:
            out.extend(ctx.insufficient(p, b.upstream_town, payee, bad, ev))
            continue
        c_u, per_u = ctx.section_class(b.upstream_outflow, p.factors)
        c_i, per_i = ctx.section_class(b.inflow, p.factors)
        r = c_i - c_u
        total = max(0, r) * price
        shares = {b.upstream_town: p.share_upstream, town: 1.0 - p.share_upstream}
        ev.update(
            classes={
                b.upstream_outflow: {"class": c_u, "factors": per_u},
                b.inflow: {"class": c_i, "factors": per_i},
            },
            formula="r = c(I) - c(U); amount = max(0, r) * price * share",
            inputs={"c_U": c_u, "c_I": c_i, "r": r, "price_per_class": price},
        )
        for payer, share in shares.items():
            if share == 0 and total > 0:
                continue
            amount = total * share
            e = dict(ev, result={"share": share, "total_yuan": total, "amount_yuan": amount})
            out.append(ctx.entry(p, payer, payee, amount, e))
            if total == 0:
                break  # one no-payment row for the reach
    return out


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    for town in p.selected_towns(ctx.county):
        out.extend(_town(p, ctx, town))
        out.extend(_reach(p, ctx, town))
    return out

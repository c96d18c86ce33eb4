"""The daily fine for a run of exceeding days (Hefei): see docs/compensation.md.

Per town, at its downstream section D, per factor f: a day exceeds when its valid daily mean
(at its reporting precision) is above the target-class limit of D. Every day of a run of at
least ``min_consecutive_days`` consecutive exceeding days is fined ``fine_per_day``; a day
without a valid daily mean ends a run. The town pays the fines to ``counterparty`` (the county
fund by default). The period's days are those of the settled month or year; a run is not
carried over from the previous period.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sanduan.central.core.compensation.base import (
    FactorRule,
    LedgerEntry,
    PeriodName,
    SettlementContext,
    Yuan,
)
from sanduan.central.core.validity import Mean
from sanduan.shared.precision import decimal_of
from sanduan.shared.standards import Direction, gb3838

KIND = "daily-fine"


class Params(FactorRule):
    kind: Literal["daily-fine"] = "daily-fine"
    periods: list[PeriodName] = Field(default_factory=lambda: list[PeriodName](("month",)))
    min_consecutive_days: Annotated[int, Field(ge=1, le=31)] = 5
    fine_per_day: Yuan
    counterparty: Literal["fund", "downstream"] = "fund"

    @field_validator("factors")
    @classmethod
    def _upper_only(cls, v: list[str]) -> list[str]:
        for f in v:
            item = gb3838().item(f)
            if item is None or item.direction is not Direction.UPPER:
                raise ValueError(f"{f} has no upper limit; a daily fine needs upper-limit factors")
        return v


def runs(days: list[tuple[str, Mean]], limit: float, at_least: int) -> list[list[str]]:
    """Runs of at least ``at_least`` consecutive days whose valid mean exceeds ``limit``."""
    out: list[list[str]] = []
    cur: list[str] = []
    lim = decimal_of(limit)
    for label, m in [*days, ("", Mean(None, 0, 0, False))]:
        if m.valid and m.value is not None and decimal_of(m.value) > lim:
            cur.append(label)
            continue
        if len(cur) >= at_least:
            out.append(cur)
        cur = []
    return out


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    county = ctx.county
    std = gb3838()
    for town in p.selected_towns(county):
        d = county.towns[town].outflow
        sec = county.sections[d]
        other = county.fund if p.counterparty == "fund" else county.downstream_party(town)
        ev: dict[str, Any] = {"town": town, "sections": {"downstream": d}, "factors": p.factors}
        if ctx.daily is None:
            out.extend(ctx.insufficient(p, town, other, {d: list(p.factors)}, ev))
            continue
        per: dict[str, Any] = {}
        total_days = 0
        for f in p.factors:
            item = std.item(f)
            assert item is not None
            limit = item.limit(sec.target_class, sec.water_body)
            assert limit is not None
            days = list(ctx.daily(d, f))
            found = runs(days, limit, p.min_consecutive_days)
            fined = sum(len(r) for r in found)
            total_days += fined
            per[f] = {
                "L": limit,
                "exceeding_days": [
                    lbl
                    for lbl, m in days
                    if m.valid and m.value is not None and decimal_of(m.value) > decimal_of(limit)
                ],
                "runs": [{"from": r[0], "to": r[-1], "days": len(r)} for r in found],
                "fined_days": fined,
                "amount_yuan": fined * p.fine_per_day,
            }
        amount = total_days * p.fine_per_day
        ev.update(
            formula="fine_per_day * days in runs of >= min_consecutive_days exceeding days",
            inputs={
                "target_class": sec.target_class,
                "min_consecutive_days": p.min_consecutive_days,
                "fine_per_day": p.fine_per_day,
                "factors": per,
            },
            result={"fined_days": total_days, "amount_yuan": amount},
        )
        out.append(ctx.entry(p, town, other, amount, ev))
    return out

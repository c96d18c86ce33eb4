"""The tiered rule (Zhoukou): see docs/compensation.md.

Per town, at its downstream section D, per factor f with period mean C (at its reporting
precision) and target-class limit L: m = (C - L) / L on decimals, rounded to two places. When m
falls in a tier (lower, upper] the town pays base * (1 + m) for that factor; default tiers
100 000 / 250 000 / 500 000 / 1 000 000 / 2 000 000 yuan for (0.1, 0.5], (0.5, 1], (1, 1.5],
(1.5, 2] and above 2. m at or below the first tier's lower bound costs nothing. The town pays
the sum to ``counterparty`` (the county fund by default).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sanduan.central.core.compensation.base import (
    FactorRule,
    LedgerEntry,
    SettlementContext,
    Yuan,
)
from sanduan.shared.precision import decimal_of, exact_multiple
from sanduan.shared.standards import Direction, gb3838
from sanduan.shared.tables import Strict

KIND = "tiered"


class Tier(Strict):
    above: Annotated[float, Field(ge=0)]
    """The tier applies to multiples m with above < m <= the next tier's ``above``."""
    base_yuan: Yuan


def _default_tiers() -> list[Tier]:
    return [
        Tier(above=a, base_yuan=b)
        for a, b in ((0.1, 100_000.0), (0.5, 250_000.0), (1.0, 500_000.0), (1.5, 1_000_000.0),
                     (2.0, 2_000_000.0))
    ]  # fmt: skip


class Params(FactorRule):
    kind: Literal["tiered"] = "tiered"
    tiers: list[Tier] = Field(default_factory=_default_tiers)
    counterparty: Literal["fund", "downstream"] = "fund"

    @field_validator("factors")
    @classmethod
    def _upper_only(cls, v: list[str]) -> list[str]:
        for f in v:
            item = gb3838().item(f)
            if item is None or item.direction is not Direction.UPPER:
                raise ValueError(f"{f} has no upper limit; tiers need upper-limit factors")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        bounds = [t.above for t in self.tiers]
        if not bounds or any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
            raise ValueError("tiers must be given with strictly increasing 'above'")
        return self


def tier_of(m: Decimal, tiers: list[Tier]) -> Tier | None:
    """The tier whose interval (above, next above] holds m, or None."""
    found = None
    for t in tiers:
        if m > decimal_of(t.above):
            found = t
    return found


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
        total = Decimal(0)
        for f in p.factors:
            c = ctx.mean(d, f).value
            item = std.item(f)
            assert c is not None and item is not None
            limit = item.limit(sec.target_class, sec.water_body)
            assert limit is not None
            m = exact_multiple(c, limit)
            t = tier_of(m, p.tiers)
            amount = Decimal(0) if t is None else decimal_of(t.base_yuan) * (1 + m)
            per[f] = {
                "C": c,
                "L": limit,
                "m": float(m),
                "tier_above": None if t is None else t.above,
                "base_yuan": None if t is None else t.base_yuan,
                "amount_yuan": float(amount),
            }
            total += amount
        ev.update(
            formula="per factor base(tier of m) * (1 + m), m = (C - L) / L",
            inputs={"target_class": sec.target_class, "factors": per},
            result={"amount_yuan": float(total)},
        )
        out.append(ctx.entry(p, town, other, float(total), ev))
    return out

"""The linear rule (Heze): see docs/compensation.md.

Per town, at its downstream section D: amount = sum_f (L_f - C_f) * price_f over the rule's
terms, C_f the period mean at D (at its reporting precision) and L_f the term's reference
concentration (Heze: COD 30 and NH3-N 1.5 mg/L, the Class IV limits, at 20 000 and 300 000
yuan per mg/L). Computed on decimals. amount > 0: ``counterparty`` (the county fund by default)
pays the town; amount < 0: the town pays ``counterparty`` |amount|.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sanduan.central.core.compensation.base import (
    LedgerEntry,
    RuleParams,
    SettlementContext,
    Yuan,
    canonical_factors,
)
from sanduan.shared.precision import decimal_of
from sanduan.shared.tables import Strict

KIND = "linear"


class Term(Strict):
    reference: Annotated[float, Field(gt=0)]
    """L_f, mg/L: the concentration at which the term is 0."""
    price_per_unit: Yuan
    """Yuan per mg/L below (reward) or above (charge) the reference."""


class Params(RuleParams):
    kind: Literal["linear"] = "linear"
    terms: dict[str, Term] = Field(
        default_factory=lambda: {
            "COD": Term(reference=30.0, price_per_unit=20_000.0),
            "NH3-N": Term(reference=1.5, price_per_unit=300_000.0),
        }
    )
    counterparty: Literal["fund", "downstream"] = "fund"

    @field_validator("terms")
    @classmethod
    def _canonical(cls, v: dict[str, Term]) -> dict[str, Term]:
        return dict(zip(canonical_factors(list(v)), v.values(), strict=True))

    @property
    def factors(self) -> list[str]:
        return list(self.terms)


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    county = ctx.county
    for town in p.selected_towns(county):
        d = county.towns[town].outflow
        other = county.fund if p.counterparty == "fund" else county.downstream_party(town)
        ev: dict[str, Any] = {
            "town": town,
            "sections": {"downstream": d},
            "factors": p.factors,
            "means": ctx.means_evidence([d], p.factors),
        }
        bad = ctx.invalid([d], p.factors)
        if bad:
            out.extend(ctx.insufficient(p, town, other, bad, ev))
            continue
        terms: dict[str, Any] = {}
        total = Decimal(0)
        for f, t in p.terms.items():
            c = ctx.mean(d, f).value
            assert c is not None
            term = (decimal_of(t.reference) - decimal_of(c)) * decimal_of(t.price_per_unit)
            terms[f] = {"L": t.reference, "C": c, "price": t.price_per_unit, "yuan": float(term)}
            total += term
        amount = float(total)
        ev.update(
            formula="sum((L_f - C_f) * price_f); > 0 reward, < 0 charge",
            inputs={"terms": terms},
            result={"sum_yuan": amount, "amount_yuan": abs(amount)},
        )
        if amount >= 0:
            out.append(ctx.entry(p, other, town, amount, ev))
        else:
            out.append(ctx.entry(p, town, other, -amount, ev))
    return out

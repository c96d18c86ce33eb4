"""The P-index rule (Xin'an River): see docs/compensation.md.

At a boundary section X between an upstream and a downstream party,
P = K0 * sum_i(K_i * C_i / C0_i) over the configured factors, C_i the period mean at X and C0_i
the baseline (per section, else per rule). P <= 1: the downstream party pays the upstream party
``amount_yuan``; P > 1: the upstream party pays the downstream party ``penalty_yuan`` (default
``amount_yuan``).

Default pairs: every town boundary (section: the town's inflow, upstream: the upstream town,
downstream: the town) and, with ``include_county_outflow``, the outflow of every town whose water
leaves the county (downstream: the county fund).

P is computed on decimals (the means at their reporting precision, the weights, baselines and
K0 as written) and rounded once to ``p_decimals`` places (GB/T 8170, half to even) before it is
compared with 1: ratios 0.8, 0.9, 1.4, 0.9 with weights 0.25 and K0 = 1 give P = 1 exactly.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sanduan.central.core.compensation.base import (
    LedgerEntry,
    PeriodName,
    RuleParams,
    SettlementContext,
    Yuan,
    canonical_factors,
)
from sanduan.central.core.county import County
from sanduan.shared.errors import ConfigError
from sanduan.shared.precision import decimal_of, quantize
from sanduan.shared.tables import Strict

KIND = "p-index"
Positive = Annotated[float, Field(gt=0)]


class Pair(Strict):
    section: str
    upstream: str
    downstream: str


class Params(RuleParams):
    kind: Literal["p-index"] = "p-index"
    periods: list[PeriodName] = Field(default_factory=lambda: list[PeriodName](("year",)))
    k0: Positive = 0.85
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"CODMn": 0.25, "NH3-N": 0.25, "TP": 0.25, "TN": 0.25}
    )
    baseline: dict[str, Positive] = Field(default_factory=dict)
    section_baseline: dict[str, dict[str, Positive]] = Field(default_factory=dict)
    amount_yuan: Yuan = 0.0
    penalty_yuan: Yuan | None = None
    pairs: list[Pair] | None = None
    include_county_outflow: bool = False
    p_decimals: Annotated[int, Field(ge=0, le=8)] = 3
    """P is rounded to this many decimals (half to even) before it is compared with 1."""

    @field_validator("weights", "baseline")
    @classmethod
    def _canonical(cls, v: dict[str, float]) -> dict[str, float]:
        names = canonical_factors(list(v)) if v else []
        return dict(zip(names, v.values(), strict=True))

    @field_validator("section_baseline")
    @classmethod
    def _canonical_sections(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {
            s: dict(zip(canonical_factors(list(b)), b.values(), strict=True)) for s, b in v.items()
        }

    @property
    def factors(self) -> list[str]:
        return list(self.weights)

    def resolved_pairs(self, county: County) -> list[Pair]:
        if self.pairs is not None:
            return list(self.pairs)
        out = [
            Pair(section=b.inflow, upstream=b.upstream_town, downstream=b.town)
            for b in county.boundaries()
        ]
        if self.include_county_outflow:
            out += [
                Pair(section=t.outflow, upstream=t.id, downstream=county.fund)
                for t in county.towns.values()
                if t.downstream is None
            ]
        if self.towns is not None:
            keep = set(self.towns)
            out = [x for x in out if x.upstream in keep or x.downstream in keep]
        return out

    def baseline_of(self, section: str, factor: str) -> float | None:
        return self.section_baseline.get(section, {}).get(factor, self.baseline.get(factor))

    def check(self, county: County, file: str, key: str) -> None:
        super().check(county, file, key)
        parties = {*county.towns, county.fund}
        for i, pr in enumerate(self.pairs or []):
            if pr.section not in county.sections:
                raise ConfigError(
                    file, f"{key}.pairs[{i}].section", f"unknown section {pr.section!r}"
                )
            for role in ("upstream", "downstream"):
                if getattr(pr, role) not in parties:
                    raise ConfigError(
                        file, f"{key}.pairs[{i}].{role}", f"unknown town {getattr(pr, role)!r}"
                    )
        for s in self.section_baseline:
            if s not in county.sections:
                raise ConfigError(file, f"{key}.section_baseline.{s}", f"unknown section {s!r}")
        if not self.weights:
            raise ConfigError(file, f"{key}.weights", "at least one factor is needed")
        for pr in self.resolved_pairs(county):
            for f in self.factors:
                if self.baseline_of(pr.section, f) is None:
                    raise ConfigError(
                        file,
                        f"{key}.baseline",
                        f"no baseline for {f} at section {pr.section!r}",
                    )


def settle(p: Params, ctx: SettlementContext) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    penalty = p.amount_yuan if p.penalty_yuan is None else p.penalty_yuan
    for pr in p.resolved_pairs(ctx.county):
        ev: dict[str, Any] = {
            "sections": {"boundary": pr.section},
            "upstream": pr.upstream,
            "downstream": pr.downstream,
            "factors": p.factors,
            "means": ctx.means_evidence([pr.section], p.factors),
        }
        bad = ctx.invalid([pr.section], p.factors)
        if bad:
            out.extend(ctx.insufficient(p, pr.downstream, pr.upstream, bad, ev))
            continue
        terms: dict[str, Any] = {}
        with localcontext() as dctx:
            dctx.prec = 40
            total = Decimal(0)
            for f in p.factors:
                c = ctx.mean(pr.section, f).value
                c0 = p.baseline_of(pr.section, f)
                assert c is not None and c0 is not None
                term = decimal_of(p.weights[f]) * decimal_of(c) / decimal_of(c0)
                terms[f] = {"K": p.weights[f], "C": c, "C0": c0, "K*C/C0": float(term)}
                total += term
            exact = decimal_of(p.k0) * total
        pidx = float(quantize(exact, p.p_decimals))
        ev.update(
            formula="P = K0 * sum(K_i * C_i / C0_i)",
            inputs={"K0": p.k0, "terms": terms, "P_decimals": p.p_decimals},
        )
        if pidx <= 1.0:
            ev["result"] = {"P": pidx, "direction": "downstream pays upstream"}
            ev["result"]["amount_yuan"] = p.amount_yuan
            out.append(ctx.entry(p, pr.downstream, pr.upstream, p.amount_yuan, ev))
        else:
            ev["result"] = {"P": pidx, "direction": "upstream pays downstream"}
            ev["result"]["amount_yuan"] = penalty
            out.append(ctx.entry(p, pr.upstream, pr.downstream, penalty, ev))
    return out

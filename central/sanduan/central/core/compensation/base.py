"""What every compensation rule shares: parameters, the settlement context, ledger entries with
their evidence, and the insufficient-data policy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sanduan.central.core.assessment import factor_classes
from sanduan.central.core.county import County
from sanduan.central.core.validity import Mean, Period
from sanduan.shared.errors import ConfigError, UnknownParameterError
from sanduan.shared.params import resolve
from sanduan.shared.tables import Strict

Status = Literal["settled", "insufficient-data", "no-payment"]
PeriodName = Literal["month", "year"]
Policy = Literal["skip", "charge-reporter"]
Yuan = Annotated[float, Field(ge=0)]

__all__ = [
    "LedgerEntry",
    "Policy",
    "RuleParams",
    "SettlementContext",
    "SettlementPolicy",
    "Status",
]


def canonical_factors(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        try:
            p = resolve(n).name
        except UnknownParameterError as e:
            raise ValueError(str(e)) from None
        if p in out:
            raise ValueError(f"factor {p} is listed twice")
        out.append(p)
    if not out:
        raise ValueError("at least one factor is needed")
    return out


class SettlementPolicy(Strict):
    """``[settlement]`` of a rules file. ``insufficient_data``: ``skip`` records the period as
    not settled; ``charge-reporter`` makes the town answerable for each station without valid
    data pay ``insufficient_data_amount_yuan`` to the county fund."""

    insufficient_data: Policy = "skip"
    insufficient_data_amount_yuan: Yuan = 0.0


class RuleParams(Strict):
    """Keys every ``[[rule]]`` has; each rule kind adds its own."""

    kind: str
    id: str = ""
    periods: list[PeriodName] = Field(default_factory=lambda: list[PeriodName](("month", "year")))
    towns: list[str] | None = None
    """Only these towns (default: all)."""
    insufficient_data: Policy | None = None
    insufficient_data_amount_yuan: Yuan | None = None

    @property
    def rule_id(self) -> str:
        return self.id or self.kind

    def check(self, county: County, file: str, key: str) -> None:
        """Cross-check references against the county; raise ConfigError."""
        for i, t in enumerate(self.towns or []):
            if t not in county.towns:
                raise ConfigError(file, f"{key}.towns[{i}]", f"unknown town {t!r}")

    def selected_towns(self, county: County) -> list[str]:
        wanted = None if self.towns is None else set(self.towns)
        return [t.id for t in county.towns_upstream_first() if wanted is None or t.id in wanted]


class FactorRule(RuleParams):
    factors: list[str] = Field(default_factory=lambda: ["CODMn", "NH3-N", "TP"])

    @field_validator("factors")
    @classmethod
    def _factors(cls, v: list[str]) -> list[str]:
        return canonical_factors(v)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row: ``payer`` pays ``payee`` ``amount_yuan`` (never negative) for ``rule`` in
    a period. ``evidence`` holds everything needed to recompute the amount by hand."""

    rule: str
    period: str
    label: str
    payer: str
    payee: str
    amount_yuan: float
    status: Status
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "period": self.period,
            "label": self.label,
            "payer": self.payer,
            "payee": self.payee,
            "amount_yuan": self.amount_yuan,
            "status": self.status,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class SettlementContext:
    """Everything a rule sees: the county, the period and each section's period means."""

    county: County
    period: Period
    means: Mapping[str, Mapping[str, Mean]]
    policy: SettlementPolicy
    charged: set[tuple[str, str]] = field(default_factory=set)
    """(rule id, section) already charged under the charge-reporter policy this period."""
    daily: Callable[[str, str], Sequence[tuple[str, Mean]]] | None = None
    """(section, factor) -> the period's daily means as (local date, mean), in order; None when
    the caller has no daily means (rules that need them then record insufficient data)."""

    def mean(self, section: str, factor: str) -> Mean:
        return self.means.get(section, {}).get(factor) or Mean(None, 0, 0, False)

    _classes: dict[tuple[str, tuple[str, ...]], dict[str, int]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Factor classes already graded, by (section, factors): every rule and component of a
    period grades a section's means once."""

    def classes(self, section: str, factors: Sequence[str]) -> dict[str, int]:
        key = (section, tuple(factors))
        per = self._classes.get(key)
        if per is None:
            s = self.county.sections[section]
            per = factor_classes(self.means.get(section, {}), factors, s.water_body)
            self._classes[key] = per
        return dict(per)

    def section_class(self, section: str, factors: Sequence[str]) -> tuple[int, dict[str, int]]:
        """Single-factor class over ``factors`` (the worst), with each factor's class."""
        per = self.classes(section, factors)
        return max(per.values()), per

    def means_evidence(self, sections: Iterable[str], factors: Sequence[str]) -> dict[str, Any]:
        return {s: {f: self.mean(s, f).to_json() for f in factors} for s in dict.fromkeys(sections)}

    def invalid(self, sections: Iterable[str], factors: Sequence[str]) -> dict[str, list[str]]:
        """Section -> factors without a valid period mean."""
        out: dict[str, list[str]] = {}
        for s in dict.fromkeys(sections):
            bad = [f for f in factors if not self.mean(s, f).valid]
            if bad:
                out[s] = bad
        return out

    def entry(
        self,
        rule: RuleParams,
        payer: str,
        payee: str,
        amount: float,
        evidence: dict[str, Any],
    ) -> LedgerEntry:
        amount = round(amount, 2)
        status: Status = "settled" if amount > 0 else "no-payment"
        ev = {"rule": rule.rule_id, "kind": rule.kind, "period": self.period.kind}
        ev.update({"label": self.period.label, **evidence})
        return LedgerEntry(
            rule.rule_id, self.period.kind, self.period.label, payer, payee, amount, status, ev
        )

    def insufficient(
        self,
        rule: RuleParams,
        payer: str,
        payee: str,
        bad: Mapping[str, list[str]],
        evidence: dict[str, Any],
    ) -> list[LedgerEntry]:
        """Rows for a component whose sections lack valid data, per the policy."""
        policy = rule.insufficient_data or self.policy.insufficient_data
        amount = (
            rule.insufficient_data_amount_yuan
            if rule.insufficient_data_amount_yuan is not None
            else self.policy.insufficient_data_amount_yuan
        )
        base = {
            "rule": rule.rule_id,
            "kind": rule.kind,
            "period": self.period.kind,
            "label": self.period.label,
            **evidence,
            "invalid": {k: list(v) for k, v in bad.items()},
            "policy": policy,
        }
        nominal = LedgerEntry(
            rule.rule_id,
            self.period.kind,
            self.period.label,
            payer,
            payee,
            0.0,
            "insufficient-data",
            base,
        )
        if policy == "skip" or amount <= 0:
            return [nominal]
        out: list[LedgerEntry] = []
        todo: dict[str, list[str]] = {}
        for section in bad:
            owner = self.county.owner_of(section)
            if owner is None or (rule.rule_id, section) in self.charged:
                continue
            self.charged.add((rule.rule_id, section))
            todo.setdefault(owner, []).append(section)
        for owner, sections in todo.items():
            out.append(
                LedgerEntry(
                    rule.rule_id,
                    self.period.kind,
                    self.period.label,
                    owner,
                    self.county.fund,
                    round(amount * len(sections), 2),
                    "insufficient-data",
                    {
                        **base,
                        "charged_for": sections,
                        "amount_per_station_yuan": amount,
                        "amount_yuan": round(amount * len(sections), 2),
                    },
                )
            )
        return out or [nominal]

"""Compensation rules as data.

A rules file (TOML, see ``deploy/rules.example.toml``) has a ``[settlement]`` table (the
insufficient-data policy) and one ``[[rule]]`` per rule, chosen by ``kind`` from
:data:`~sanduan.central.core.compensation.registry.RULES` and parameterised by its keys. A file
without rules uses the three-section rule with its defaults. :func:`settle` runs every rule that
applies to a period and returns ledger entries, each with its evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanduan.central.core.assessment import DEFAULT_OPTIONS, AssessmentOptions
from sanduan.central.core.compensation.base import (
    LedgerEntry,
    RuleParams,
    SettlementContext,
    SettlementPolicy,
)
from sanduan.central.core.compensation.registry import DEFAULT_KIND, RULES
from sanduan.central.core.county import County
from sanduan.central.core.validity import Mean, Period
from sanduan.shared.config import read_toml
from sanduan.shared.errors import ConfigError
from sanduan.shared.tables import parse_table

__all__ = [
    "RULES",
    "LedgerEntry",
    "RuleParams",
    "RuleSet",
    "SettlementContext",
    "SettlementPolicy",
    "build_rules",
    "load_rules",
    "parse_rules",
    "settle",
]


@dataclass(frozen=True, slots=True)
class RuleSet:
    policy: SettlementPolicy
    rules: tuple[RuleParams, ...]
    source: str = "<rules>"
    assessment: AssessmentOptions = DEFAULT_OPTIONS
    """``[assessment]``: grading choices (DO Class I by saturation)."""

    def check(self, county: County) -> None:
        """Cross-check the rules against a county (unknown towns, sections, baselines)."""
        for i, r in enumerate(self.rules):
            r.check(county, self.source, f"rule[{i}] ({r.rule_id})")

    def to_json(self) -> dict[str, Any]:
        return {
            "settlement": self.policy.model_dump(),
            "assessment": self.assessment.model_dump(),
            "rules": [r.model_dump(mode="json") for r in self.rules],
        }


def build_rules(data: Mapping[str, Any], file: str = "<rules>") -> RuleSet:
    extra = sorted(set(data) - {"settlement", "assessment", "rule"})
    if extra:
        raise ConfigError(
            file, extra[0], "unknown key (expected [settlement], [assessment] and [[rule]])"
        )
    try:
        assessment = parse_table(AssessmentOptions, dict(data.get("assessment", {})), file)
    except ConfigError as e:
        raise ConfigError(
            file, f"assessment.{e.key}" if e.key else "assessment", e.reason
        ) from None
    try:
        policy = parse_table(SettlementPolicy, dict(data.get("settlement", {})), file)
    except ConfigError as e:
        raise ConfigError(
            file, f"settlement.{e.key}" if e.key else "settlement", e.reason
        ) from None
    raw_rules = data.get("rule", [{"kind": DEFAULT_KIND}])
    if not isinstance(raw_rules, list):
        raise ConfigError(file, "rule", "expected [[rule]] tables")
    rules: list[RuleParams] = []
    ids: set[str] = set()
    for i, raw in enumerate(raw_rules):
        key = f"rule[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, key, "expected a table")
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in RULES:
            known = ", ".join(sorted(RULES))
            raise ConfigError(file, f"{key}.kind", f"unknown rule kind {kind!r}; known: {known}")
        try:
            params = parse_table(RULES[kind].params, raw, file)
        except ConfigError as e:
            raise ConfigError(file, f"{key}.{e.key}" if e.key else key, e.reason) from None
        if params.rule_id in ids:
            raise ConfigError(file, f"{key}.id", f"duplicate rule id {params.rule_id!r}")
        ids.add(params.rule_id)
        rules.append(params)
    return RuleSet(policy, tuple(rules), file, assessment)


def parse_rules(text: str, file: str = "<rules>") -> RuleSet:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML: {e}") from None
    return build_rules(data, file)


def load_rules(path: Path | str) -> RuleSet:
    return build_rules(read_toml(path), str(path))


def settle(
    county: County,
    rules: RuleSet,
    period: Period,
    means: Mapping[str, Mapping[str, Mean]],
    daily: Callable[[str, str], Sequence[tuple[str, Mean]]] | None = None,
) -> list[LedgerEntry]:
    """Ledger entries of every rule that settles ``period``'s kind, on the period means
    (section id -> parameter -> mean) and, for rules on daily means, ``daily``."""
    ctx = SettlementContext(county, period, means, rules.policy, daily=daily)
    out: list[LedgerEntry] = []
    for r in rules.rules:
        if period.kind in r.periods:
            out.extend(RULES[r.kind].settle(r, ctx))
    return out

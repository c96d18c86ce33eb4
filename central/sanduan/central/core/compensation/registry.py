"""Rule kinds by name: each maps to its parameter model and its settle function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sanduan.central.core.compensation import (
    class_change,
    daily_fine,
    exceedance,
    linear,
    p_index,
    river,
    three_section,
    tiered,
)
from sanduan.central.core.compensation.base import LedgerEntry, RuleParams, SettlementContext


@dataclass(frozen=True, slots=True)
class RuleKind:
    kind: str
    params: type[RuleParams]
    settle: Callable[[Any, SettlementContext], list[LedgerEntry]]
    doc: str


def _kind(module: Any) -> RuleKind:
    return RuleKind(module.KIND, module.Params, module.settle, (module.__doc__ or "").strip())


RULES: Mapping[str, RuleKind] = MappingProxyType(
    {
        k.kind: k
        for k in map(
            _kind,
            (three_section, class_change, exceedance, p_index, daily_fine, linear, tiered, river),
        )
    }
)
DEFAULT_KIND = three_section.KIND

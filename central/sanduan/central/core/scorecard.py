"""The town scorecard (生态报表): scoring rules as data, monthly and annual, ranked. Pure.

Each item of data/scorecard.toml scores a town between 0 and its weight from a share in 0..1,
and keeps the figures the share came from as its evidence.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sanduan.central.core.assessment import Assessment
from sanduan.central.core.county import County
from sanduan.central.core.problems import Problem
from sanduan.central.core.review import Mark
from sanduan.central.core.validity import Aggregates
from sanduan.shared.errors import ConfigError

__all__ = ["ScoreItem", "ScoreRules", "TownCard", "load_score_rules", "score_towns"]

ItemKind = Literal["compliance", "class-change", "problems", "capture", "review"]


class _RawItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[str, Field(min_length=1)]
    kind: ItemKind
    weight: Annotated[float, Field(gt=0)]
    name_zh: str = ""
    name_en: str = ""
    same: Annotated[float, Field(ge=0, le=1)] = 0.8
    per_class_worse: Annotated[float, Field(ge=0, le=1)] = 0.5
    per_mark: Annotated[float, Field(ge=0, le=1)] = 0.1


class _RawFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    item: list[_RawItem] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class ScoreItem:
    id: str
    kind: ItemKind
    weight: float
    name_zh: str
    name_en: str
    same: float = 0.8
    per_class_worse: float = 0.5
    per_mark: float = 0.1

    def name(self, lang: str) -> str:
        return (self.name_zh if lang == "zh" else self.name_en) or self.id


@dataclass(frozen=True, slots=True)
class ScoreRules:
    items: tuple[ScoreItem, ...]
    source: str = "<builtin>"

    @property
    def full_marks(self) -> float:
        return sum(i.weight for i in self.items)


def parse_score_rules(text: str, source: str) -> ScoreRules:
    try:
        raw = _RawFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "", f"not valid TOML: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(source, ".".join(map(str, err["loc"])), err["msg"]) from None
    ids = [i.id for i in raw.item]
    if len(set(ids)) != len(ids):
        raise ConfigError(source, "item.id", "item ids must be unique")
    return ScoreRules(
        tuple(
            ScoreItem(
                i.id, i.kind, i.weight, i.name_zh, i.name_en, i.same, i.per_class_worse, i.per_mark
            )
            for i in raw.item
        ),
        source,
    )


def load_score_rules(path: Path | str | None = None) -> ScoreRules:
    """Scoring rules from ``path`` or the built-in data/scorecard.toml."""
    if path is None:
        from importlib import resources

        f = resources.files("sanduan.central").joinpath("data/scorecard.toml")
        return parse_score_rules(f.read_text("utf-8"), "<builtin scorecard.toml>")
    p = Path(path)
    try:
        return parse_score_rules(p.read_text(encoding="utf-8"), str(p))
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read the scoring rules: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class ItemScore:
    item: str
    score: float
    weight: float
    share: float
    evidence: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "score": round(self.score, 2),
            "weight": self.weight,
            "share": round(self.share, 4),
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class TownCard:
    town: str
    name: str
    total: float
    rank: int
    items: tuple[ItemScore, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "town": self.town,
            "name": self.name,
            "total": round(self.total, 2),
            "rank": self.rank,
            "items": [i.to_json() for i in self.items],
        }


def _town_stations(county: County, town: str) -> list[str]:
    return [s.station for sid, s in county.sections.items() if county.owner_of(sid) == town]


def _capture(county: County, agg: Aggregates, town: str) -> tuple[float, dict[str, Any]]:
    idx = agg.index()
    days = agg.day.starts.shape[0]
    per: dict[str, float] = {}
    for sid, s in county.sections.items():
        if county.owner_of(sid) != town:
            continue
        for p in s.parameters:
            i = idx.get((s.station, p))
            per[f"{sid}/{p}"] = 0.0 if i is None else float(np.mean(agg.day.valid[i]))
    if not per or days == 0:
        return 1.0, {"note": "no sections"}
    share = float(np.mean(list(per.values())))
    lowest = min(per, key=lambda k: per[k])
    return share, {"valid_day_share": round(share, 4), "lowest": {lowest: round(per[lowest], 4)}}


def score_towns(  # noqa: PLR0917 (the period's inputs, in one order everywhere)
    rules: ScoreRules,
    county: County,
    assessment: Assessment,
    aggregates: Aggregates,
    problems: Iterable[Problem],
    marks: Iterable[Mark],
    window: tuple[int, int],
) -> list[TownCard]:
    """Score every town over the period of ``assessment`` (``window`` its [start, end) in UTC
    ms, for problems due and review marks made in it); ranked, best first."""
    start, end = window
    probs = list(problems)
    mks = [m for m in marks if m.action == "invalidate" and m.start_ms < end and m.end_ms > start]
    cards: list[tuple[str, str, float, list[ItemScore]]] = []
    for ts in assessment.towns:
        items: list[ItemScore] = []
        for it in rules.items:
            share: float
            ev: dict[str, Any]
            if it.kind == "compliance":
                share = ts.n_meets / ts.n_valid if ts.n_valid else 0.0
                ev = {"valid_sections": ts.n_valid, "meeting_target": ts.n_meets}
                if not ts.n_valid:
                    ev["note"] = "no valid section in the period"
            elif it.kind == "class-change":
                change = ts.change
                basis = "inflow"
                if change is None and not county.towns[ts.town].inflows:
                    target = county.sections[ts.outflow].target_class
                    change = None if ts.outflow_class is None else ts.outflow_class - target
                    basis = "target"
                if change is None:
                    share = 0.0
                elif change < 0:
                    share = 1.0
                elif change == 0:
                    share = it.same
                else:
                    share = max(0.0, it.same - it.per_class_worse * change)
                ev = {
                    "outflow_class": ts.outflow_class,
                    "inflow_class": ts.inflow_class,
                    "change": change,
                    "compared_with": basis,
                }
            elif it.kind == "problems":
                due = [
                    p
                    for p in probs
                    if p.town == ts.town
                    and p.deadline_ms is not None
                    and start <= p.deadline_ms < end
                ]
                on_time = [p for p in due if p.closed_on_time()]
                share = len(on_time) / len(due) if due else 1.0
                ev = {
                    "due": len(due),
                    "closed_on_time": len(on_time),
                    "late_or_open": sorted(p.id for p in due if not p.closed_on_time()),
                }
            elif it.kind == "capture":
                share, ev = _capture(county, aggregates, ts.town)
            else:
                stations = set(_town_stations(county, ts.town))
                n = sum(1 for m in mks if m.station in stations)
                share = max(0.0, 1.0 - it.per_mark * n)
                ev = {"invalidations": n}
            items.append(ItemScore(it.id, it.weight * share, it.weight, share, ev))
        cards.append((ts.town, ts.name, sum(i.score for i in items), items))
    cards.sort(key=lambda c: (-round(c[2], 6), c[0]))
    out: list[TownCard] = []
    for k, (town, name, total, items) in enumerate(cards):
        rank = k + 1
        if out and round(out[-1].total, 6) == round(total, 6):
            rank = out[-1].rank
        out.append(TownCard(town, name, total, rank, tuple(items)))
    return out


def cards_json(cards: Sequence[TownCard], rules: ScoreRules) -> dict[str, Any]:
    return {
        "full_marks": rules.full_marks,
        "items": [
            {"id": i.id, "kind": i.kind, "weight": i.weight, "zh": i.name_zh, "en": i.name_en}
            for i in rules.items
        ],
        "towns": [c.to_json() for c in cards],
    }

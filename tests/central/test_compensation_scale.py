"""Settling a county is linear in its size: the county's indexed lookups (boundaries by town,
section owners, assessed sections by river) and the per-period class cache give exactly what the
former scans gave, on random topologies."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanduan.central.core.compensation import build_rules, settle
from sanduan.central.core.compensation.base import SettlementContext
from sanduan.central.core.county import Boundary, County, build_county
from sanduan.central.core.validity import Mean, Period

MAY = Period(2026, 5)
FACTORS = ("CODMn", "NH3-N", "TP", "TN")
RULES: dict[str, Any] = {
    "settlement": {"insufficient_data": "charge-reporter", "insufficient_data_amount_yuan": 1000},
    "rule": [
        {"kind": "three-section", "reward_per_class": 100, "reach_payee": "downstream"},
        {"kind": "three-section", "id": "ts-fund", "share_upstream": 0.3},
        {"kind": "class-change", "id": "cc"},
        {"kind": "exceedance", "id": "ex"},
        {"kind": "p-index", "id": "pi", "periods": ["month"], "amount_yuan": 10,
         "baseline": {"CODMn": 4, "NH3-N": 0.5, "TP": 0.1, "TN": 1.0},
         "include_county_outflow": True},
        {"kind": "river", "id": "rv", "rivers": [{"river": "r0", "payer": "t0"}]},
    ],
}  # fmt: skip


def random_county(seed: int) -> County:
    """Towns with 0-3 inflows (some receiving an earlier town's water), sections on a few
    rivers, some with an explicit owner, some not assessed."""
    rng = random.Random(seed)
    n_towns = rng.randint(1, 12)
    rivers = [f"r{i}" for i in range(rng.randint(1, 3))]
    doc: dict[str, Any] = {"river": [{"id": r} for r in rivers], "section": [], "town": []}
    inflow_pool = [f"in{i}" for i in range(rng.randint(1, 2 * n_towns))]
    towns = [f"t{i}" for i in range(n_towns)]

    def section(sid: str) -> dict[str, Any]:
        s: dict[str, Any] = {"id": sid, "river": rng.choice(rivers), "station": f"st-{sid}"}
        s["target_class"] = rng.randint(2, 4)
        if rng.random() < 0.15:
            s["owner"] = rng.choice(towns)
        if rng.random() < 0.1:
            s["assessed"] = False
        return s

    used: set[str] = set()
    received: set[str] = set()  # a town's water reaches one town at most
    for i, t in enumerate(towns):
        inflows = []
        for _ in range(min(rng.randint(0, 3), len(inflow_pool))):
            sec = inflow_pool.pop(rng.randrange(len(inflow_pool)))
            inf: dict[str, str] = {"section": sec}
            free = [u for u in towns[:i] if u not in received]
            if free and rng.random() < 0.6:
                inf["upstream"] = rng.choice(free)
                received.add(inf["upstream"])
            inflows.append(inf)
            used.add(sec)
        doc["town"].append({"id": t, "outflow": f"out{i}", "inflow": inflows})
    for sid in [*(f"out{i}" for i in range(n_towns)), *sorted(used)]:
        doc["section"].append(section(sid))
    return build_county(doc, f"random-{seed}")


def random_means(county: County, seed: int) -> dict[str, dict[str, Mean]]:
    rng = random.Random(seed)
    out: dict[str, dict[str, Mean]] = {}
    for sid in county.sections:
        out[sid] = {}
        for f in FACTORS:
            ok = rng.random() > 0.08
            value = round(rng.uniform(0.01, 1.2) * {"CODMn": 12, "TN": 2.5}.get(f, 1.0), 3)
            out[sid][f] = Mean(value, 31, 31 if ok else 10, ok)
    return out


# --- the former implementations, as they were ---------------------------------------------


def old_boundaries_of(county: County, town: str) -> tuple[Boundary, ...]:
    return tuple(b for b in county.boundaries() if b.town == town)


def old_owner_of(county: County, section: str) -> str | None:
    s = county.sections[section]
    if s.owner is not None:
        return s.owner
    for t in county.towns.values():
        if t.outflow == section:
            return t.id
    for t in county.towns.values():
        if any(i.section == section for i in t.inflows):
            return t.id
    return None


def old_classes(ctx: SettlementContext, section: str, factors: Any) -> dict[str, int]:
    from sanduan.central.core.assessment import factor_classes

    s = ctx.county.sections[section]
    return factor_classes(ctx.means.get(section, {}), factors, s.water_body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_indexed_lookups_match_the_scans(seed: int) -> None:
    county = random_county(seed)
    for t in county.towns:
        assert county.boundaries_of(t) == old_boundaries_of(county, t)
    assert county.boundaries_of("no-such-town") == ()
    for sid in county.sections:
        assert county.owner_of(sid) == old_owner_of(county, sid)
    for r in county.rivers:
        old = [s.id for s in county.assessed_sections if s.river == r]
        assert list(county.assessed_sections_on(r)) == old


@pytest.mark.parametrize("seed", range(12))
def test_settlement_matches_the_former_implementation(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    county = random_county(seed)
    means = random_means(county, seed)
    rules = build_rules(RULES)
    new = [e.to_json() for e in settle(county, rules, MAY, means)]
    assert new  # every rule settles a month
    fresh = random_county(seed)  # nothing memoised yet
    monkeypatch.setattr(County, "boundaries_of", old_boundaries_of)
    monkeypatch.setattr(County, "owner_of", old_owner_of)
    monkeypatch.setattr(SettlementContext, "classes", old_classes)
    old = [e.to_json() for e in settle(fresh, rules, MAY, means)]
    assert new == old

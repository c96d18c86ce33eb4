"""Compensation rules against hand-computed cases (the numbers are worked out in the comments
and in docs/compensation.md, not by calling the code)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from sanduan.central.core.compensation import (
    LedgerEntry,
    RuleSet,
    build_rules,
    load_rules,
    parse_rules,
    settle,
)
from sanduan.central.core.compensation.exceedance import steps
from sanduan.central.core.county import County, load_county, parse_county
from sanduan.central.core.validity import Mean, Period
from sanduan.shared.errors import ConfigError
from sanduan.shared.precision import exact_multiple

ROOT = Path(__file__).resolve().parents[2]

CHAIN = """
[county]
name = "chain"
fund = "fund"

[[river]]
id = "r"

[[section]]
id = "U_IN"
river = "r"
station = "s1"
[[section]]
id = "U_OUT"
river = "r"
station = "s2"
[[section]]
id = "M_IN"
river = "r"
station = "s3"
[[section]]
id = "M_OUT"
river = "r"
station = "s4"
[[section]]
id = "L_IN"
river = "r"
station = "s5"
[[section]]
id = "L_OUT"
river = "r"
station = "s6"
[[section]]
id = "LAKE"
river = "r"
station = "s7"
water_body = "lake"

[[town]]
id = "up"
outflow = "U_OUT"
inflow = [{ section = "U_IN" }]
[[town]]
id = "mid"
outflow = "M_OUT"
inflow = [{ section = "M_IN", upstream = "up" }]
[[town]]
id = "low"
outflow = "L_OUT"
inflow = [{ section = "L_IN", upstream = "mid" }]
"""

# CODMn, NH3-N, TP, TN monthly means (mg/L); classes in the comments (river limits:
# CODMn 2/4/6/10/15, NH3-N 0.15/0.5/1.0/1.5/2.0, TP 0.02/0.1/0.2/0.3/0.4).
MEANS = {
    "U_IN": (3.0, 0.4, 0.08, 1.0),  # II II II -> II
    "U_OUT": (5.0, 0.9, 0.25, 1.5),  # III III IV -> IV
    "M_IN": (5.0, 1.8, 0.15, 2.0),  # III V III -> V
    "M_OUT": (8.0, 1.2, 0.18, 2.0),  # IV IV III -> IV
    "L_IN": (7.0, 0.6, 0.12, 1.6),  # IV III III -> IV
    "L_OUT": (12.0, 0.6, 0.30, 2.2),  # V III IV -> V
}
MAY = Period(2026, 5)


def _means(
    table: Mapping[str, tuple[float, ...]], invalid: set[tuple[str, str]] | None = None
) -> dict[str, dict[str, Mean]]:
    out: dict[str, dict[str, Mean]] = {}
    for sec, vals in table.items():
        out[sec] = {}
        for name, v in zip(("CODMn", "NH3-N", "TP", "TN"), vals, strict=True):
            ok = (sec, name) not in (invalid or set())
            out[sec][name] = Mean(v, 31, 31 if ok else 12, ok)
    return out


@pytest.fixture(scope="module")
def chain() -> County:
    return parse_county(CHAIN, "chain.toml")


def _rows(entries: list[LedgerEntry]) -> list[tuple[str, str, float, str]]:
    return [(e.payer, e.payee, e.amount_yuan, e.status) for e in entries]


def test_three_section_hand_computed(chain: County) -> None:
    rules = parse_rules(
        """
[[rule]]
kind = "three-section"
price_per_class = 300000
reward_per_class = 100000
share_upstream = 0.5
"""
    )
    ledger = settle(chain, rules, MAY, _means(MEANS))
    assert _rows(ledger) == [
        # up: n = IV - II = 2 -> 2 * 300 000 to mid; up has no upstream town, no reach row
        ("up", "mid", 600_000.0, "settled"),
        # mid: n = IV - V = -1 -> low rewards mid 1 * 100 000
        ("low", "mid", 100_000.0, "settled"),
        # reach up -> mid: r = c(M_IN) - c(U_OUT) = V - IV = 1 -> 300 000 split 50/50
        ("up", "fund", 150_000.0, "settled"),
        ("mid", "fund", 150_000.0, "settled"),
        # low: n = V - IV = 1 -> 300 000 to the fund (water leaves the county)
        ("low", "fund", 300_000.0, "settled"),
        # reach mid -> low: r = IV - IV = 0
        ("mid", "fund", 0.0, "no-payment"),
    ]
    town_up = ledger[0].evidence
    assert town_up["inputs"] == {"worst_inflow_class": 2, "c_D": 4, "n": 2}
    assert town_up["means"]["U_OUT"]["TP"] == {"value": 0.25, "n": 31, "n_valid": 31, "valid": True}
    assert town_up["classes"]["U_OUT"]["factors"] == {"CODMn": 3, "NH3-N": 3, "TP": 4}
    assert ledger[2].evidence["inputs"]["r"] == 1


def test_three_section_reach_share_and_payee(chain: County) -> None:
    rules = parse_rules(
        """
[[rule]]
kind = "three-section"
price_per_class = 200000
share_upstream = 1.0
reach_payee = "downstream"
towns = ["mid"]
"""
    )
    ledger = settle(chain, rules, MAY, _means(MEANS))
    # mid: n = -1 with no reward -> 0 from low; reach: 1 class * 200 000, all paid by up to
    # mid's downstream party (low).
    assert _rows(ledger) == [("low", "mid", 0.0, "no-payment"), ("up", "low", 200_000.0, "settled")]


def test_class_change_protection_options(chain: County) -> None:
    text = """
[[rule]]
kind = "class-change"
price_per_class = 300000
reward_per_class = 100000
protection = "{flag}"
"""
    protected = settle(chain, parse_rules(text.format(flag="section-class")), MAY, _means(MEANS))
    assert _rows(protected) == [
        ("up", "mid", 600_000.0, "settled"),  # n = IV - II = 2
        ("low", "mid", 100_000.0, "settled"),  # n = IV - V = -1: reward
        ("low", "fund", 300_000.0, "settled"),  # n = V - IV = 1
    ]
    strict = settle(chain, parse_rules(text.format(flag="none")), MAY, _means(MEANS))
    # Targets are III: up misses by 1 (IV), mid by 1 (IV), low by 2 (V).
    assert _rows(strict) == [
        ("up", "mid", 600_000.0, "settled"),  # max(n=2, miss=1) = 2
        ("mid", "low", 300_000.0, "settled"),  # max(n=-1, miss=1) = 1, no reward
        ("low", "fund", 600_000.0, "settled"),  # max(n=1, miss=2) = 2
    ]
    # Per factor (the default): every town has a factor worse than at its inflow
    # (up: all three; mid: CODMn III -> IV; low: CODMn IV -> V, TP III -> IV): as strict.
    default_rules = parse_rules(text.replace('protection = "{flag}"', ""))
    default = settle(chain, default_rules, MAY, _means(MEANS))
    assert _rows(default) == _rows(strict)
    assert default[1].evidence["inputs"]["factors_worse_than_inflow"] == ["CODMn"]


ONE_TOWN = """
[[river]]
id = "r"
[[section]]
id = "IN"
river = "r"
station = "a"
[[section]]
id = "OUT"
river = "r"
station = "b"
[[town]]
id = "t"
outflow = "OUT"
inflow = [{ section = "IN" }]
"""


def test_class_change_per_factor_protection_as_published() -> None:
    county = parse_county(ONE_TOWN, "one.toml")
    rule = '[[rule]]\nkind = "class-change"\nprice_per_class = 300000\nprotection = "{p}"\n'
    # CODMn and TP go from Class II at the inflow to Class IV at the outflow; NH3-N is V at
    # both, so both sections are V (n = 0) and the outflow misses its Class III target by 2.
    got_worse = {"IN": (3.0, 1.8, 0.08, 1.0), "OUT": (8.0, 1.8, 0.25, 1.0)}
    per_factor = settle(county, parse_rules(rule.format(p="per-factor")), MAY, _means(got_worse))
    assert _rows(per_factor) == [("t", "county-fund", 600_000.0, "settled")]  # 2 missed
    assert per_factor[0].evidence["inputs"]["factors_worse_than_inflow"] == ["CODMn", "TP"]
    section = settle(county, parse_rules(rule.format(p="section-class")), MAY, _means(got_worse))
    assert _rows(section) == [("t", "county-fund", 0.0, "no-payment")]
    # No factor worse than at the inflow (IV V IV in, IV V IV out): the miss is not the town's.
    same = {"IN": (8.0, 1.8, 0.25, 1.0), "OUT": (7.0, 1.6, 0.22, 1.0)}
    spared = settle(county, parse_rules(rule.format(p="per-factor")), MAY, _means(same))
    assert _rows(spared) == [("t", "county-fund", 0.0, "no-payment")]
    assert spared[0].evidence["inputs"]["protected"] is True
    with pytest.raises(ConfigError, match="protection"):
        parse_rules('[[rule]]\nkind = "class-change"\nprotect_upstream = true\n')


def test_exceedance_hand_computed(chain: County) -> None:
    rules = parse_rules('[[rule]]\nkind = "exceedance"\nperiods = ["month"]\n')
    ledger = settle(chain, rules, MAY, _means(MEANS))
    assert _rows(ledger) == [
        # U_OUT: TP m = (0.25 - 0.2) / 0.2 = 0.25 -> 1 step = 500 000
        ("up", "fund", 500_000.0, "settled"),
        # M_OUT: CODMn m = 2/6 = 0.33 -> 1 step; NH3-N m = 0.2 -> 1 step: 1 000 000
        ("mid", "fund", 1_000_000.0, "settled"),
        # L_OUT: CODMn m = 1.0 -> 2 steps (1 000 000); TP m = 0.5 -> 1 step (500 000)
        ("low", "fund", 1_500_000.0, "settled"),
    ]
    low = ledger[2].evidence["inputs"]["factors"]
    assert low["CODMn"]["steps"] == 2
    assert low["TP"]["steps"] == 1
    assert low["NH3-N"]["amount_yuan"] == 0


def test_exceedance_cap_reward_and_lake(chain: County) -> None:
    rules = parse_rules('[[rule]]\nkind = "exceedance"\n')
    means = _means(
        {
            # CODMn 40: m = 34/6 = 5.67 -> 12 steps = 6 000 000, capped at 3 000 000
            "U_OUT": (40.0, 0.4, 0.1, 1.0),
            # II II II with target III: 1 class better -> 500 000 reward from the fund
            "M_OUT": (3.0, 0.4, 0.08, 1.0),
            "L_OUT": (3.0, 0.4, 0.08, 1.0),
        }
    )
    ledger = settle(chain, rules, Period(2026), means)
    assert _rows(ledger) == [
        ("up", "fund", 3_000_000.0, "settled"),
        ("fund", "mid", 500_000.0, "settled"),
        ("fund", "low", 500_000.0, "settled"),
    ]
    assert ledger[0].period == "year"
    assert ledger[0].label == "2026"


def test_exceedance_on_a_lake_uses_lake_tp_limits() -> None:
    text = CHAIN.replace('outflow = "L_OUT"', 'outflow = "LAKE"')
    county = parse_county(text, "lake.toml")
    rules = parse_rules('[[rule]]\nkind = "exceedance"\nfactors = ["TP"]\ntowns = ["low"]\n')
    # Lake Class III TP limit 0.05: m = (0.08 - 0.05) / 0.05 = 0.6 -> 2 started steps
    # (a river's 0.2 limit would not be exceeded at all).
    ledger = settle(county, rules, MAY, _means({"LAKE": (3.0, 0.4, 0.08, 1.0)}))
    assert _rows(ledger) == [("low", "fund", 1_000_000.0, "settled")]
    assert ledger[0].evidence["inputs"]["factors"]["TP"]["L"] == 0.05


def test_exceedance_steps_per_started_half() -> None:
    assert [steps(m, 0.5) for m in (-1.0, 0.0, 0.01, 0.5, 0.51, 1.0, 1.01)] == [0, 0, 1, 1, 2, 2, 3]
    # (0.3 - 0.2) / 0.2 is 0.49999999999999994 in floating point; the multiple is computed on
    # decimals (0.50): one step. (0.35 - 0.2) / 0.2 = 0.75: two.
    assert steps(exact_multiple(0.3, 0.2), 0.5) == 1
    assert steps(exact_multiple(0.35, 0.2), 0.5) == 2
    # Multiples are rounded to two decimals first: 0.5004 is 0.50, one step.
    assert steps(exact_multiple(0.30008, 0.2), 0.5) == 1


P_RULE = """
[[rule]]
kind = "p-index"
periods = ["month"]
k0 = 0.85
baseline = { CODMn = 4.0, "NH3-N" = 0.8, TP = 0.2, TN = 2.0 }
amount_yuan = 1000000
penalty_yuan = 2000000
"""


def test_p_index_hand_computed(chain: County) -> None:
    rules = parse_rules(P_RULE)
    rules.check(chain)
    ledger = settle(chain, rules, MAY, _means(MEANS))
    # M_IN: 0.25*5/4 + 0.25*1.8/0.8 + 0.25*0.15/0.2 + 0.25*2/2 = 0.3125 + 0.5625 + 0.1875 + 0.25
    #       = 1.3125; P = 0.85 * 1.3125 = 1.115625 > 1: upstream (up) pays mid the penalty
    # L_IN: 0.25*7/4 + 0.25*0.6/0.8 + 0.25*0.12/0.2 + 0.25*1.6/2 = 0.4375 + 0.1875 + 0.15 + 0.2
    #       = 0.975; P = 0.82875 <= 1: downstream (low) pays mid the amount
    assert _rows(ledger) == [
        ("up", "mid", 2_000_000.0, "settled"),
        ("low", "mid", 1_000_000.0, "settled"),
    ]
    # P is rounded to three decimals (half to even) before the comparison with 1.
    assert ledger[0].evidence["result"]["P"] == 1.116
    assert ledger[1].evidence["result"]["P"] == 0.829


def test_p_index_pairs_and_section_baseline(chain: County) -> None:
    rules = parse_rules(
        P_RULE
        + """
weights = { TP = 1.0 }
include_county_outflow = true
[rule.section_baseline.L_OUT]
TP = 0.4
"""
    )
    ledger = settle(chain, rules, MAY, _means(MEANS))
    # TP only, K = 1: M_IN 0.85*0.15/0.2 = 0.6375, L_IN 0.85*0.12/0.2 = 0.51,
    # county outlet L_OUT 0.85*0.30/0.4 = 0.6375: all <= 1, downstream pays upstream
    assert _rows(ledger) == [
        ("mid", "up", 1_000_000.0, "settled"),
        ("low", "mid", 1_000_000.0, "settled"),
        ("fund", "low", 1_000_000.0, "settled"),
    ]


def test_insufficient_data_skip(chain: County) -> None:
    rules = parse_rules('[[rule]]\nkind = "three-section"\ntowns = ["low"]\n')
    ledger = settle(chain, rules, MAY, _means(MEANS, invalid={("L_IN", "TP")}))
    assert _rows(ledger) == [
        ("low", "fund", 0.0, "insufficient-data"),
        ("mid", "fund", 0.0, "insufficient-data"),
    ]
    assert ledger[0].evidence["invalid"] == {"L_IN": ["TP"]}
    assert ledger[0].evidence["policy"] == "skip"
    assert ledger[0].evidence["means"]["L_IN"]["TP"]["valid"] is False


def test_insufficient_data_charges_the_reporter_once(chain: County) -> None:
    rules = parse_rules(
        """
[settlement]
insufficient_data = "charge-reporter"
insufficient_data_amount_yuan = 50000
[[rule]]
kind = "three-section"
towns = ["low"]
"""
    )
    ledger = settle(chain, rules, MAY, _means(MEANS, invalid={("L_IN", "TP"), ("M_OUT", "NH3-N")}))
    # Town component needs L_OUT, L_IN: L_IN is low's inflow -> low pays 50 000.
    # Reach needs M_OUT (mid's outflow -> mid pays 50 000) and L_IN (already charged).
    assert _rows(ledger) == [
        ("low", "fund", 50_000.0, "insufficient-data"),
        ("mid", "fund", 50_000.0, "insufficient-data"),
    ]
    assert ledger[1].evidence["charged_for"] == ["M_OUT"]


def test_rule_periods_select_settlements(chain: County) -> None:
    rules = parse_rules('[[rule]]\nkind = "class-change"\nperiods = ["year"]\n')
    assert settle(chain, rules, MAY, _means(MEANS)) == []
    assert len(settle(chain, rules, Period(2026), _means(MEANS))) == 3


def test_empty_rules_file_is_three_section() -> None:
    rules = parse_rules("")
    assert [r.kind for r in rules.rules] == ["three-section"]


def test_example_rules_load_and_match_the_county() -> None:
    rules = load_rules(ROOT / "deploy" / "rules.example.toml")
    rules.check(load_county(ROOT / "deploy" / "county.example.toml"))
    assert rules.policy.insufficient_data == "skip"
    assert rules.rules[0].kind == "three-section"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"rule": [{"kind": "nope"}]}, "rule[0].kind", "unknown rule kind"),
        ({"rule": [{"kind": "three-section", "price": 1}]}, "rule[0].price", "unknown key"),
        (
            {"rule": [{"kind": "three-section", "share_upstream": 2}]},
            "rule[0].share_upstream",
            "less than or equal to 1",
        ),
        ({"rule": [{"kind": "exceedance", "factors": ["DO"]}]}, "rule[0].factors", "upper limit"),
        ({"rule": [{"kind": "class-change", "factors": ["XYZ"]}]}, "rule[0].factors", "unknown"),
        (
            {"rule": [{"kind": "class-change"}, {"kind": "class-change"}]},
            "rule[1].id",
            "duplicate rule id",
        ),
        ({"settlement": {"insufficient_data": "pay"}}, "settlement.insufficient_data", "skip"),
        ({"rules": []}, "rules", "unknown key"),
    ],
)
def test_rules_file_errors(data: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_rules(data, "rules.toml")
    assert exc.value.file == "rules.toml"
    assert exc.value.key == key
    assert reason in exc.value.reason


@pytest.mark.parametrize(
    ("rule", "key", "reason"),
    [
        (
            {"kind": "three-section", "towns": ["nowhere"]},
            "rule[0] (three-section).towns[0]",
            "unknown town",
        ),
        (
            {"kind": "p-index", "baseline": {"CODMn": 4}},
            "rule[0] (p-index).baseline",
            "no baseline for NH3-N",
        ),
        (
            {
                "kind": "p-index",
                "weights": {"TP": 1},
                "baseline": {"TP": 0.2},
                "pairs": [{"section": "X", "upstream": "up", "downstream": "mid"}],
            },
            "rule[0] (p-index).pairs[0].section",
            "unknown section",
        ),
    ],
)
def test_rules_checked_against_county(
    chain: County, rule: dict[str, object], key: str, reason: str
) -> None:
    rules: RuleSet = build_rules({"rule": [rule]}, "rules.toml")
    with pytest.raises(ConfigError) as exc:
        rules.check(chain)
    assert exc.value.key == key
    assert reason in exc.value.reason


def test_p_index_exactly_one_is_downstream_pays() -> None:
    county = parse_county(ONE_TOWN, "one.toml")
    rules = parse_rules(
        """
[[rule]]
kind = "p-index"
periods = ["month"]
k0 = 1.0
weights = { CODMn = 0.25, "NH3-N" = 0.25, TP = 0.25, TN = 0.25 }
baseline = { CODMn = 4.0, "NH3-N" = 0.5, TP = 0.18, TN = 2.5 }
amount_yuan = 1000000
pairs = [{ section = "IN", upstream = "t", downstream = "county-fund" }]
"""
    )
    # Ratios 3.2/4 = 0.8, 0.45/0.5 = 0.9, 0.252/0.18 = 1.4, 2.25/2.5 = 0.9; in binary floating
    # point the terms 0.25 * C / C0 add up to 1.0000000000000002. On decimals P = 1: not > 1,
    # so the downstream party pays the upstream party.
    c = {"CODMn": 3.2, "NH3-N": 0.45, "TP": 0.252, "TN": 2.25}
    base = {"CODMn": 4.0, "NH3-N": 0.5, "TP": 0.18, "TN": 2.5}
    total = 0.0
    for f, cf in c.items():
        total += 0.25 * cf / base[f]
    assert total == 1.0000000000000002
    means = _means({"IN": (3.2, 0.45, 0.252, 2.25), "OUT": (3.2, 0.45, 0.252, 2.25)})
    (e,) = settle(county, rules, MAY, means)
    assert e.evidence["result"]["P"] == 1.0
    assert (e.payer, e.payee, e.amount_yuan) == ("county-fund", "t", 1_000_000.0)


def _daily(table: dict[tuple[str, str], list[float | None]]) -> object:
    def get(section: str, factor: str) -> list[tuple[str, Mean]]:
        vals = table.get((section, factor), [])
        return [
            (
                f"2026-05-{i + 1:02d}",
                Mean(v, 24, 24, True) if v is not None else Mean(None, 0, 0, False),
            )
            for i, v in enumerate(vals)
        ]

    return get


def test_daily_fine_for_runs_of_exceeding_days() -> None:
    county = parse_county(ONE_TOWN, "one.toml")
    rules = parse_rules(
        '[[rule]]\nkind = "daily-fine"\nfactors = ["TP", "CODMn"]\nfine_per_day = 50000\n'
    )
    # TP (target III, limit 0.2): days 1-5 exceed (a run of 5: fined), day 6 is 0.2 (equal: not
    # exceeding), days 7-10 exceed (a run of 4: not fined). CODMn (limit 6): 7.0 on days 1-3,
    # day 4 has no valid mean (ends the run), 7.0 on days 5-10 (a run of 6: fined).
    # 5 + 6 = 11 days * 50 000 = 550 000 to the county fund.
    daily = _daily(
        {
            ("OUT", "TP"): [0.21, 0.25, 0.22, 0.30, 0.24, 0.2, 0.21, 0.22, 0.23, 0.24, 0.1],
            ("OUT", "CODMn"): [7.0, 7.0, 7.0, None, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 3.0],
        }
    )
    (e,) = settle(county, rules, MAY, {}, daily)  # type: ignore[arg-type]
    assert (e.payer, e.payee, e.amount_yuan, e.status) == ("t", "county-fund", 550_000.0, "settled")
    tp = e.evidence["inputs"]["factors"]["TP"]
    assert tp["runs"] == [{"from": "2026-05-01", "to": "2026-05-05", "days": 5}]
    assert e.evidence["inputs"]["factors"]["CODMn"]["fined_days"] == 6
    # Without daily means the rule cannot settle.
    (none,) = settle(county, rules, MAY, {})
    assert none.status == "insufficient-data"
    with pytest.raises(ConfigError, match="fine_per_day"):
        parse_rules('[[rule]]\nkind = "daily-fine"\n')


def _cod_nh3(cod: float, nh3: float) -> dict[str, dict[str, Mean]]:
    return {"OUT": {"COD": Mean(cod, 3, 3, True), "NH3-N": Mean(nh3, 3, 3, True)}}


def test_linear_heze() -> None:
    county = parse_county(ONE_TOWN, "one.toml")
    rules = parse_rules('[[rule]]\nkind = "linear"\n')
    # (30 - 25) * 20 000 + (1.5 - 1.8) * 300 000 = 100 000 - 90 000 = 10 000: fund pays town.
    (a,) = settle(county, rules, MAY, _cod_nh3(25.0, 1.8))
    assert (a.payer, a.payee, a.amount_yuan) == ("county-fund", "t", 10_000.0)
    # (30 - 33) * 20 000 + (1.5 - 1.65) * 300 000 = -60 000 - 45 000 = -105 000: town pays.
    (b,) = settle(county, rules, MAY, _cod_nh3(33.0, 1.65))
    assert (b.payer, b.payee, b.amount_yuan) == ("t", "county-fund", 105_000.0)
    assert b.evidence["inputs"]["terms"]["NH3-N"]["yuan"] == -45_000.0


def test_tiered_zhoukou() -> None:
    county = parse_county(ONE_TOWN, "one.toml")
    rules = parse_rules('[[rule]]\nkind = "tiered"\n')
    means = {
        "OUT": {
            "CODMn": Mean(7.2, 31, 31, True),  # m = (7.2 - 6) / 6 = 0.20: 100 000 * 1.20
            "NH3-N": Mean(1.1, 31, 31, True),  # m = 0.10 exactly: not above 0.1 -> 0
            "TP": Mean(0.52, 31, 31, True),  # m = 1.60: (1.5, 2] -> 1 000 000 * 2.60
        }
    }
    assert (1.1 - 1.0) / 1.0 > 0.1  # in binary floating point it would start a tier
    (e,) = settle(county, rules, MAY, means)
    assert (e.payer, e.payee, e.amount_yuan) == ("t", "county-fund", 2_720_000.0)
    f = e.evidence["inputs"]["factors"]
    assert f["CODMn"]["amount_yuan"] == 120_000.0
    assert f["TP"]["tier_above"] == 1.5
    assert f["NH3-N"]["tier_above"] is None and f["NH3-N"]["amount_yuan"] == 0.0
    with pytest.raises(ConfigError, match="increasing"):
        parse_rules(
            '[[rule]]\nkind = "tiered"\ntiers = [{above = 0.5, base_yuan = 1}, '
            "{above = 0.1, base_yuan = 2}]\n"
        )


RIVERS = (
    """
[[river]]
id = "short"
[[river]]
id = "long"
"""
    + "".join(
        f'[[section]]\nid = "{s}"\nriver = "{r}"\nstation = "st-{s}"\n'
        for r, ids in (("short", "ABC"), ("long", "PQRST"))
        for s in ids
    )
    + """
[[town]]
id = "t"
outflow = "C"
"""
)


def test_river_average_and_proportion() -> None:
    county = parse_county(RIVERS, "rivers.toml")
    rules = parse_rules(
        """
[[rule]]
kind = "river"
amounts = { light = 200000, moderate = 300000, heavy = 500000 }
rivers = [{ river = "short", payer = "t" }, { river = "long", payer = "t" }]
"""
    )
    rules.check(county)
    means = _means(
        {
            # Three sections: averages CODMn (5 + 6 + 7) / 3 = 6.0, NH3-N (0.8 + 1.0 + 1.2) / 3
            # = 1.0, TP (0.15 + 0.25 + 0.2) / 3 = 0.2: all at the Class III limits -> III, good.
            # (In binary floating point the TP mean is 0.20000000000000004, Class IV.)
            "A": (5.0, 0.8, 0.15, 1.0),
            "B": (6.0, 1.0, 0.25, 1.0),
            "C": (7.0, 1.2, 0.2, 1.0),
            # Five sections: II, III, III, IV, inferior V. I-III share 3/5 = 60 % < 75 %;
            # inferior-V share 1/5 = 20 %, not below 20 % but below 40 %: moderate.
            "P": (3.0, 0.4, 0.05, 1.0),
            "Q": (5.0, 0.9, 0.15, 1.0),
            "R": (6.0, 1.0, 0.2, 1.0),
            "S": (8.0, 1.2, 0.25, 1.0),
            "T": (5.0, 2.5, 0.15, 1.0),
        }
    )
    assert (0.15 + 0.25 + 0.2) / 3 > 0.2
    short, long_ = settle(county, rules, MAY, means)
    assert short.evidence["method"] == "average"
    assert short.evidence["inputs"]["averages"] == {"CODMn": 6.0, "NH3-N": 1.0, "TP": 0.2}
    assert short.evidence["result"]["quality"] == "good"
    assert (short.payer, short.amount_yuan, short.status) == ("t", 0.0, "no-payment")
    assert long_.evidence["method"] == "proportion"
    assert long_.evidence["inputs"]["classes"] == {"P": 2, "Q": 3, "R": 3, "S": 4, "T": 6}
    assert long_.evidence["result"]["quality"] == "moderate"
    assert (long_.payer, long_.payee, long_.amount_yuan) == ("t", "county-fund", 300_000.0)


def test_every_commented_example_rule_parses() -> None:
    text = (ROOT / "deploy" / "rules.example.toml").read_text(encoding="utf-8")
    head, variants = text.split("# Other variants", 1)
    body = "\n".join(line[2:] if line.startswith("# ") else "" for line in variants.splitlines())
    rules = parse_rules(head + body, "rules.example.toml")
    kinds = [r.kind for r in rules.rules]
    assert set(kinds) == set(RULES_KINDS)
    assert (ROOT / "central/sanduan/central/data/rules.example.toml").read_text(
        encoding="utf-8"
    ) == text


RULES_KINDS = (
    "three-section",
    "class-change",
    "exceedance",
    "p-index",
    "daily-fine",
    "linear",
    "tiered",
    "river",
)

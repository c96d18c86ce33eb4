"""Problem discovery rules (one test per rule, each at and below its threshold), the lifecycle,
one open problem per (rule, subject), hot spots, and the rules file's malformed inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.central import county_data as cd

from sanduan.central.analytics import compute_from_readings
from sanduan.central.core.compensation import build_rules
from sanduan.central.core.county import County
from sanduan.central.core.problems import (
    Finding,
    Problem,
    ProblemEvent,
    ProblemRules,
    counts,
    detect,
    fold,
    hot_spots,
    load_problem_rules,
    next_state,
    parse_problem_rules,
    quiet_enough,
    reconcile,
)
from sanduan.central.core.validity import HOUR_MS
from sanduan.shared.errors import ConfigError, InputError

RULES = load_problem_rules()


@pytest.fixture(scope="module")
def county() -> County:
    return cd.county()


@pytest.fixture(scope="module")
def base(county: County) -> dict[str, Any]:
    return cd.month_columns(county)


def _find(county: County, cols: dict[str, Any], rule: str) -> list[Finding]:
    res = compute_from_readings(cols, county, build_rules({}), None, cd.MAY)
    only = ProblemRules(tuple(r for r in RULES.rules if r.id == rule))
    return detect(only, county, res.aggregates, cols)


def _copy(cols: dict[str, Any]) -> dict[str, Any]:
    return {k: v.copy() for k, v in cols.items()}


def test_clean_month_finds_nothing(county: County, base: dict[str, Any]) -> None:
    res = compute_from_readings(base, county, build_rules({}), None, cd.MAY)
    assert detect(RULES, county, res.aggregates, base) == []


@pytest.mark.parametrize(("hours", "found"), [(8, 1), (5, 0)])
def test_sustained_hourly_exceedance(
    county: County, base: dict[str, Any], hours: int, found: int
) -> None:
    cols = _copy(base)
    cols["value"][cd.where(cols, "CX-ST-04", "NH3-N", (100, 100 + hours), cd.MAY)] = 1.6
    fs = _find(county, cols, "exceedance-hours")
    assert len(fs) == found
    if found:
        f = fs[0]
        assert f.subject == "ST-ZH-OUT/NH3-N"
        assert (f.town, f.river, f.section) == ("zonghan", "santang", "ST-ZH-OUT")
        assert f.evidence["length"] == hours
        assert f.evidence["worst_class"] == 5  # 1.5 < 1.6 <= 2.0
        assert (f.last_ms - f.first_ms) // HOUR_MS == hours - 1


@pytest.mark.parametrize(("days", "found"), [(3, 1), (2, 0)])
def test_sustained_daily_exceedance(
    county: County, base: dict[str, Any], days: int, found: int
) -> None:
    cols = _copy(base)
    cols["value"][cd.where(cols, "CX-DH-04", "TP", (48, 48 + 24 * days), cd.MAY)] = 0.45
    fs = _find(county, cols, "exceedance-days")
    assert [f.subject for f in fs] == ["DH-KD-OUT/TP"] * found


@pytest.mark.parametrize(("days", "found"), [(4, 1), (2, 0)])
def test_outflow_worse_than_inflow(
    county: County, base: dict[str, Any], days: int, found: int
) -> None:
    cols = _copy(base)
    # Zonghan's outflow class IV on NH3-N while its inflow stays class II
    cols["value"][cd.where(cols, "CX-ST-04", "NH3-N", (24, 24 + 24 * days), cd.MAY)] = 1.2
    fs = _find(county, cols, "outflow-worse")
    assert [f.subject for f in fs] == ["town:zonghan"] * found
    if found:
        assert fs[0].evidence["length"] == days
        assert set(fs[0].evidence["outflow_classes"]) == {4}


@pytest.mark.parametrize(("hours", "found"), [(10, 1), (5, 0)])
def test_station_offline(county: County, base: dict[str, Any], hours: int, found: int) -> None:
    cols = cd.drop(base, cd.where(base, "CX-DH-02", None, (200, 200 + hours), cd.MAY))
    fs = _find(county, cols, "station-offline")
    assert [f.subject for f in fs] == ["CX-DH-02"] * found
    if found:
        assert fs[0].evidence["hours"] == pytest.approx(hours + 1)  # last reading to next


def test_offline_until_the_end_of_the_window(county: County, base: dict[str, Any]) -> None:
    cols = cd.drop(base, cd.where(base, "CX-DH-02", None, (700, 744), cd.MAY))
    res = compute_from_readings(cols, county, build_rules({}), None, cd.MAY)
    only = ProblemRules(tuple(r for r in RULES.rules if r.id == "station-offline"))
    start, _ = cd.MAY.bounds_ms(county.timezone)
    assert [f.subject for f in detect(only, county, res.aggregates, cols)] == ["CX-DH-02"]
    # the data end at hour 703: the station is silent only 4 h before it
    short = (start, start + 704 * HOUR_MS)
    assert detect(only, county, res.aggregates, cols, short) == []


@pytest.mark.parametrize(("missing", "found"), [(8, 1), (4, 0)])
def test_daily_capture(county: County, base: dict[str, Any], missing: int, found: int) -> None:
    cols = cd.drop(base, cd.where(base, "CX-ST-02", "DO", (24 * 10, 24 * 10 + missing), cd.MAY))
    fs = _find(county, cols, "data-capture")
    assert [f.subject for f in fs] == ["CX-ST-02"] * found
    if found:
        assert fs[0].evidence["days"] == ["2026-05-11"]
        assert fs[0].evidence["capture"] == [pytest.approx((24 - missing) / 24, abs=1e-3)]


@pytest.mark.parametrize(("hours", "found"), [(10, 1), (6, 0)])
def test_analyzer_flags(county: County, base: dict[str, Any], hours: int, found: int) -> None:
    cols = _copy(base)
    cols["flag"][cd.where(cols, "CX-RS-01", "TP", (300, 300 + hours), cd.MAY)] = "M"
    fs = _find(county, cols, "analyzer-flags")
    assert [f.subject for f in fs] == ["CX-RS-01/TP"] * found
    if found:
        assert fs[0].evidence["flags"] == {"M": hours}
        assert fs[0].town == "xiaolin"  # the reservoir's owner


@pytest.mark.parametrize(("n", "found"), [(5, 1), (3, 0)])
def test_stuck_values(county: County, base: dict[str, Any], n: int, found: int) -> None:
    cols = _copy(base)
    cols["value"][cd.where(cols, "CX-ST-06", "pH", (50, 50 + n), cd.MAY)] = 7.77
    fs = _find(county, cols, "stuck-values")
    assert [f.subject for f in fs] == ["CX-ST-06/pH"] * found
    if found:
        assert fs[0].evidence == {"value": 7.77, "readings": n}


@pytest.mark.parametrize(("to", "found"), [(1.6, 1), (0.7, 0)])
def test_sudden_jump(county: County, base: dict[str, Any], to: float, found: int) -> None:
    cols = _copy(base)
    cols["value"][cd.where(cols, "CX-DH-03", "NH3-N", (400, 401), cd.MAY)] = to
    fs = _find(county, cols, "sudden-jump")
    # the jump up (the fall back to 0.4 is less than the previous value: no jump)
    assert [f.subject for f in fs] == ["CX-DH-03/NH3-N"] * found
    if found:
        assert fs[0].evidence["to"] == pytest.approx(to)


def _problem(pid: int = 1, rule: str = "exceedance-hours", subject: str = "S/NH3-N") -> Problem:
    return Problem(
        pid,
        rule,
        "exceedance",
        subject,
        "st",
        "S",
        "zonghan",
        "r",
        "NH3-N",
        1_000,
        500,
        "m",
        {},
        last_seen_ms=900,
    )


def _ev(action: str, t: int, **details: Any) -> ProblemEvent:
    return ProblemEvent(1, t, action, "bureau", "", details)  # type: ignore[arg-type]


def test_lifecycle_fold_and_overdue() -> None:
    p = fold(
        _problem(),
        [
            _ev("discover", 1_000, last_ms=900),
            _ev("assign", 2_000, to="zonghan", deadline_ms=10_000),
            _ev("rectify", 3_000),
            _ev("seen", 3_500, last_ms=3_400),
            _ev("feedback", 4_000, evidence="photo"),
        ],
    )
    assert (p.state, p.assignee, p.deadline_ms, p.last_seen_ms) == (
        "reported",
        "zonghan",
        10_000,
        3_400,
    )
    assert not p.overdue(9_999) and p.overdue(10_001)
    closed = fold(_problem(), [*p.events, _ev("close", 9_000)])
    assert closed.state == "closed" and closed.closed_on_time() is True
    assert not closed.overdue(50_000)
    again = fold(_problem(), [*closed.events, _ev("reopen", 11_000, deadline_ms=20_000)])
    assert (again.state, again.reopened, again.closed_ms) == ("assigned", 1, None)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("discovered", "close"),
        ("discovered", "feedback"),
        ("closed", "assign"),
        ("assigned", "close"),
    ],
)
def test_transitions_refused_name_what_is_allowed(state: Any, action: Any) -> None:
    with pytest.raises(InputError, match="allowed now"):
        next_state(state, action)


def test_close_waits_for_the_rule_to_stay_quiet() -> None:
    rule = RULES.get("exceedance-hours")  # quiet_hours = 72
    p = _problem()
    assert quiet_enough(p, rule, None) is not None
    assert "72 h" in (quiet_enough(p, rule, 900 + 71 * HOUR_MS) or "")
    assert quiet_enough(p, rule, 900 + 72 * HOUR_MS) is None


def test_one_open_problem_per_rule_and_subject() -> None:
    f1 = Finding("exceedance-hours", "exceedance", "S/NH3-N", 100, 200, "a")
    f2 = Finding("exceedance-hours", "exceedance", "S/NH3-N", 5_000, 6_000, "b")
    f3 = Finding("exceedance-days", "exceedance", "S/NH3-N", 100, 200, "c")
    r = reconcile([], [f1, f2, f3])
    assert [(f.rule, f.first_ms, f.last_ms) for f in r.new] == [
        ("exceedance-hours", 100, 6_000),
        ("exceedance-days", 100, 200),
    ]
    assert r.new[0].evidence["episodes"] == 2
    open_p = _problem()  # open, last seen 900
    r2 = reconcile([open_p], [f1, f2])
    assert r2.new == () and r2.seen == ((1, 6_000),)
    closed = fold(
        _problem(), [_ev("assign", 1, deadline_ms=5), _ev("feedback", 2), _ev("close", 3)]
    )
    # a closed problem: the same episode again (a re-run) opens nothing, a later one reopens
    assert reconcile([closed], [f1]).new == ()
    assert [f.first_ms for f in reconcile([closed], [f1, f2]).new] == [5_000]


def test_hot_spots_and_counts() -> None:
    a = fold(
        _problem(1),
        [
            _ev("assign", 0, deadline_ms=HOUR_MS),
            _ev("feedback", 1),
            _ev("close", 1_000 + 10 * HOUR_MS),
        ],
    )
    b = fold(_problem(2), [_ev("assign", 0, deadline_ms=HOUR_MS)])
    spots = hot_spots([a, b])
    assert spots["town"] == [
        {"town": "zonghan", "count": 2, "open": 1, "closed": 1, "median_hours_to_close": 10.0}
    ]
    assert spots["month"][0]["month"] == "1970-01"
    assert counts([a, b], 2 * HOUR_MS) == {"opened": 2, "closed": 1, "open": 1, "overdue": 2}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[rule]]\nid='x'\nkind='offline'\n", "needs hours"),
        ("[[rule]]\nid='x'\nkind='nonsense'\n", "kind"),
        (
            "[[rule]]\nid='x'\nkind='stuck'\npolls=4\n[[rule]]\nid='x'\nkind='stuck'\npolls=5\n",
            "duplicate",
        ),
        ("[[rule]]\nid='x'\nkind='jump'\nratio=1\nmin_step={NOPE=1}\n", "NOPE"),
        ("[[rule]\n", "TOML"),
        ("[[rule]]\nid='x'\nkind='stuck'\npolls=1\n", "polls"),
    ],
)
def test_malformed_rules_files(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_problem_rules(text, "p.toml")


def test_builtin_rules_cover_every_kind() -> None:
    kinds = {r.kind for r in RULES.rules}
    assert kinds == {"exceedance", "outflow-worse", "offline", "capture", "flags", "stuck", "jump"}
    assert all(r.deadline_days > 0 for r in RULES.rules)
    assert np.all([r.quiet_hours >= 0 for r in RULES.rules])


@pytest.mark.parametrize(("flagged", "found"), [(1, 0), (2, 1)])
def test_flags_count_an_analyzer_reading_as_its_cycle(
    county: County, base: dict[str, Any], flagged: int, found: int
) -> None:
    # TP measured every four hours: one calibration result is 4 h, two in a row 8 h
    tp = cd.where(base, "CX-DH-05", "TP", (0, 744), cd.MAY)
    start = cd.MAY.bounds_ms(county.timezone)[0]
    off_cycle = tp & (((base["ts_ms"] - start) // HOUR_MS) % 4 != 0)
    cols = cd.drop(base, off_cycle)
    cols["flag"][cd.where(cols, "CX-DH-05", "TP", (100, 100 + 4 * flagged), cd.MAY)] = "C"
    fs = _find(county, cols, "analyzer-flags")
    assert [f.subject for f in fs] == ["CX-DH-05/TP"] * found

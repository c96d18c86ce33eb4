"""Data review: marks over raw readings (order, levels, items), spans in local time, the audit's
before/after, what a recompute changed, the reason codes file, and the scorecard's scoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.central import county_data as cd

from sanduan.central.analytics import compute_from_readings, validity_rules
from sanduan.central.core.compensation import build_rules
from sanduan.central.core.problems import Problem, ProblemEvent, fold
from sanduan.central.core.review import (
    REVIEW_FLAG,
    Mark,
    apply_marks,
    ledger_changes,
    load_reasons,
    mark_span,
    parse_reasons,
    valid_count,
)
from sanduan.central.core.scorecard import load_score_rules, parse_score_rules, score_towns
from sanduan.central.core.validity import HOUR_MS
from sanduan.shared.errors import ConfigError, InputError

TZ = "Asia/Shanghai"


def _cols() -> dict[str, Any]:
    t0 = 1_777_564_800_000  # 2026-05-01T00:00+08:00
    return {
        "station": np.array(["A"] * 4 + ["B"] * 2),
        "ts_ms": np.array([t0, t0 + HOUR_MS, t0, t0 + HOUR_MS, t0, t0 + HOUR_MS]),
        "code": np.array(["w01001", "w01001", "w21003", "w21003", "w01001", "w01001"]),
        "value": np.array([7.1, 7.2, 0.3, 0.4, 7.0, np.nan]),
        "flag": np.array(["N", "N", "N", "D", "N", "D"]),
    }


def _mark(action: str, level: str, station: str, param: str | None, at: str, k: int) -> Mark:
    a, b = mark_span(level, at, TZ)  # type: ignore[arg-type]
    return Mark(k, k, "Li", action, level, station, param, a, b, "abnormal-value")  # type: ignore[arg-type]


def test_marks_apply_in_order_and_never_touch_the_input() -> None:
    cols = _cols()
    raw = cols["flag"].copy()
    day = _mark("invalidate", "day", "A", None, "2026-05-01", 1)
    out = apply_marks(cols, [day])
    assert "".join(out["flag"]) == "RRRRND"
    assert np.array_equal(cols["flag"], raw)  # raw readings unchanged
    restore_hour = _mark("restore", "hour", "A", "pH", "2026-05-01T01:30", 2)
    assert "".join(apply_marks(cols, [restore_hour, day])["flag"]) == "RNRRND"
    validate = _mark("validate", "reading", "A", "NH3-N", "2026-05-01T01:00", 3)
    assert "".join(apply_marks(cols, [validate])["flag"]) == "NNNNND"  # the D accepted
    assert "".join(apply_marks(cols, [day, validate])["flag"]) == "RRRNND"
    assert apply_marks(cols, [])["flag"] is cols["flag"]


def test_spans_are_local_reading_hour_and_day() -> None:
    t0 = 1_777_564_800_000
    assert mark_span("day", "2026-05-01", TZ) == (t0, t0 + 24 * HOUR_MS)
    assert mark_span("hour", "2026-05-01T01:59", TZ) == (t0 + HOUR_MS, t0 + 2 * HOUR_MS)
    assert mark_span("reading", "2026-04-30T16:00:00+00:00", TZ) == (t0, t0 + 1)
    with pytest.raises(InputError, match="ISO date"):
        mark_span("day", "yesterday", TZ)


def test_audit_counts_valid_readings() -> None:
    cols = _cols()
    m = _mark("invalidate", "day", "A", "NH3-N", "2026-05-01", 1)
    assert valid_count(cols, ["D"], m) == {"readings": 2, "valid": 1}
    assert valid_count(apply_marks(cols, [m]), ["D"], m) == {"readings": 2, "valid": 0}


def test_review_flag_is_always_excluded() -> None:
    county = cd.county()
    vr = validity_rules(None, county)
    assert REVIEW_FLAG in vr.excluded_flags


def test_ledger_changes_name_rows_and_inputs() -> None:
    ev = {"component": "town", "town": "z", "classes": {"S": {"class": 3}}, "means": {"S": 1}}
    row = {"rule": "r", "payer": "z", "payee": "h", "amount_yuan": 0.0, "status": "no-payment"}
    worse = {**row, "amount_yuan": 300000.0, "status": "settled"}
    ev2 = {**ev, "classes": {"S": {"class": 4}}}
    same = ledger_changes([{**row, "evidence": ev}], [{**row, "evidence": dict(ev)}])
    assert same == []
    ch = ledger_changes([{**row, "evidence": ev}], [{**worse, "evidence": ev2}])
    assert len(ch) == 1 and ch[0]["change"] == "changed"
    assert ch[0]["before"]["inputs"]["classes"] == {"S": {"class": 3}}
    assert ch[0]["after"]["amount_yuan"] == 300000.0
    gone = ledger_changes([{**row, "evidence": ev}], [])
    assert gone[0]["change"] == "removed" and gone[0]["after"] is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[reason]]\ncode='a'\nzh='x'\n", "code, zh and en"),
        ("[[reason]]\ncode='a'\nzh='x'\nen='y'\n[[reason]]\ncode='a'\nzh='x'\nen='y'\n",
         "duplicate"),
        ("reason = 3\n", "reason"),
        ("[[reason]\n", "TOML"),
    ],
)  # fmt: skip
def test_malformed_reason_files(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_reasons(text, "r.toml")


def test_builtin_reasons() -> None:
    r = load_reasons()
    assert {"abnormal-value", "checked-valid", "wrong-mark"} <= set(r)
    assert r["stuck-sensor"].zh == "数值恒定"


# --- scorecard ----------------------------------------------------------------------------


def test_scorecard_scores_and_ranks_with_evidence() -> None:
    county = cd.county()
    cols = cd.month_columns(county)
    # Zonghan's outflow class IV all month: worse than its inflow, and not meeting target III
    cols["value"][cd.where(cols, "CX-ST-04", "NH3-N", (0, 744), cd.MAY)] = 1.2
    res = compute_from_readings(cols, county, build_rules({}), None, cd.MAY)
    window = cd.MAY.bounds_ms(county.timezone)
    late = fold(
        Problem(1, "r", "exceedance", "s", "CX-ST-04", "ST-ZH-OUT", "zonghan", "santang",
                "NH3-N", 0, 0, "m", {}),
        [ProblemEvent(1, window[0], "assign", "b", "", {"to": "zonghan",
                                                       "deadline_ms": window[0] + HOUR_MS})],
    )  # fmt: skip
    a, b = mark_span("day", "2026-05-03", TZ)
    marks = [Mark(1, 1, "Li", "invalidate", "day", "CX-DH-02", None, a, b, "abnormal-value")]
    rules = load_score_rules()
    cards = score_towns(rules, county, res.assessment, res.aggregates, [late], marks, window)
    by = {c.town: c for c in cards}
    assert cards[-1].town == "zonghan"
    z = {i.item: i for i in by["zonghan"].items}
    assert z["class-change"].evidence["change"] == 1  # III in (TP), IV out
    assert z["class-change"].score == pytest.approx(25 * (0.8 - 0.5))
    assert z["compliance"].evidence == {"valid_sections": 2, "meeting_target": 1}
    assert z["problems-on-time"].evidence["late_or_open"] == [1]
    assert z["problems-on-time"].score == 0.0
    xinpu = {i.item: i for i in by["xinpu"].items}
    assert xinpu["review-corrections"].evidence == {"invalidations": 1}
    assert xinpu["review-corrections"].score == pytest.approx(9.0)
    assert by["xiaolin"].total == pytest.approx(rules.full_marks * 1.0 - 25 * 0.2)
    assert [c.rank for c in cards] == sorted(c.rank for c in cards)


def test_malformed_score_rules() -> None:
    with pytest.raises(ConfigError):
        parse_score_rules("[[item]]\nid='a'\nkind='nope'\nweight=1\n", "s.toml")
    with pytest.raises(ConfigError, match="unique"):
        parse_score_rules(
            "[[item]]\nid='a'\nkind='review'\nweight=1\n[[item]]\nid='a'\nkind='review'\nweight=1\n",
            "s.toml",
        )

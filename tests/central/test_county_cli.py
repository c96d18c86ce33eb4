"""The county's daily work end to end on both stores: ``report`` writes nothing, ``compute``
stores results and opens problems, a problem goes 发现 -> 交办 -> 整改 -> 反馈 -> 销号, a
reviewer invalidates and restores data with an audit trail, a recompute shows which ledger rows
changed, and the scorecard ranks the towns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.central import county_data as cd
from typer.testing import CliRunner

from sanduan.central.store import open_store
from sanduan.cli import app

runner = CliRunner()


def _run(url: str, *args: str, code: int = 0) -> Any:
    r = runner.invoke(app, ["central", *args, "--store", url, "--county", str(cd.COUNTY_FILE)])
    assert r.exit_code == code, r.output
    return json.loads(r.stdout) if code == 0 and "--json" in args else r


def _count(url: str, table: str) -> int:
    s = open_store(url)
    try:
        return int(s.query(f"SELECT COUNT(*) FROM {table}")[0][0])
    finally:
        s.close()


@pytest.fixture
def filled(store_url: str) -> str:
    return _fill(store_url)


def _fill(store_url: str) -> str:
    county = cd.county()
    cols = cd.month_columns(county)
    # a pollution episode at Zonghan's outflow: NH3-N class V for 10 hours
    cols["value"][cd.where(cols, "CX-ST-04", "NH3-N", (100, 110), cd.MAY)] = 1.8
    s = open_store(store_url)
    try:
        for b in cd.batches(cols):
            s.store_batch(b, 0)
    finally:
        s.close()
    return store_url


def test_daily_work(filled: str) -> None:
    url = filled
    month = ("--month", "2026-05")
    rules = ("--rules", str(cd.RULES_FILE))
    # report reads: nothing written
    doc = _run(url, "report", "compensation", *month, *rules, "--json")
    assert doc["ledger"] and doc["run_id"] is None
    assert _count(url, "ledger") == 0 and _count(url, "runs") == 0
    # compute stores and discovers
    c1 = _run(url, "compute", *month, *rules, "--json")
    assert c1["ledger_rows"] == _count(url, "ledger") > 0
    assert c1["ledger_changes"] == []
    assert c1["problems"]["opened"] >= 1
    listed = _run(url, "problems", "list", "--json")
    probs = {(p["rule"], p["subject"]): p for p in listed["problems"]}
    p = probs[("exceedance-hours", "ST-ZH-OUT/NH3-N")]
    assert (p["state"], p["town"], p["river"]) == ("discovered", "zonghan", "santang")
    assert p["details"]["rule"]["consecutive"] == 6
    pid = str(p["id"])
    # a second compute over the same data opens nothing new
    assert _run(url, "compute", *month, *rules, "--json")["problems"]["opened"] == 0
    # the lifecycle, with refusals that say what is allowed
    r = _run(url, "problems", "close", pid, "--actor", "bureau", code=2)
    assert "allowed now: assign" in r.stderr
    a = _run(
        url, "problems", "assign", pid, "--actor", "bureau", "--note", "check the outfall", "--json"
    )
    assert (a["state"], a["assignee"]) == ("assigned", "zonghan")
    assert a["deadline_ms"] - a["events"][-1]["time_ms"] == 7 * 86_400_000
    r = _run(url, "problems", "update", pid, "--actor", "zonghan", code=2)
    assert "--note" in r.stderr
    u = _run(
        url, "problems", "update", pid, "--actor", "zonghan", "--note", "outfall sealed", "--json"
    )
    assert u["state"] == "rectifying"
    u = _run(
        url, "problems", "update", pid, "--actor", "zonghan", "--evidence", "photo 12.jpg", "--json"
    )
    assert u["state"] == "reported"
    closed = _run(url, "problems", "close", pid, "--actor", "bureau", "--json")
    assert closed["state"] == "closed" and closed["overdue"] is False
    assert [e["action"] for e in closed["events"]] == [
        "discover",
        "assign",
        "rectify",
        "feedback",
        "close",
    ]
    assert all(e["actor"] and e["time_ms"] for e in closed["events"])
    re = _run(url, "problems", "reopen", pid, "--actor", "bureau", "--note", "again", "--json")
    assert (re["state"], re["reopened"]) == ("assigned", 1)
    # several problems in one command (the reopened one is re-assigned, the jump assigned)
    jump = probs[("sudden-jump", "CX-ST-04/NH3-N")]
    both = _run(url, "problems", "assign", str(jump["id"]), pid, "--actor", "bureau", "--json")
    assert [(d["id"], d["state"]) for d in both] == [
        (jump["id"], "assigned"),
        (int(pid), "assigned"),
    ]
    only = _run(url, "problems", "list", "--kind", "jump", "--town", "zonghan", "--json")
    assert [p["id"] for p in only["problems"]] == [jump["id"]]
    assert only["counts"]["opened"] == len(listed["problems"])  # counts are of all problems
    spots = _run(url, "problems", "hotspots", "--json")
    assert {"town", "kind", "river", "month"} <= set(spots)
    # review: invalidate the two days of the episode, with an audit trail
    for day in ("2026-05-05", "2026-05-06"):
        m = _run(
            url,
            "review",
            "mark",
            "--station",
            "CX-ST-04",
            "--param",
            "NH3-N",
            "--day",
            day,
            "--reason",
            "abnormal-value",
            "--reviewer",
            "Li",
            "--json",
        )
        assert m["before"] == {"readings": 24, "valid": 24}
        assert m["after"] == {"readings": 24, "valid": 0}
    r = _run(
        url,
        "review",
        "mark",
        "--station",
        "CX-ST-04",
        "--day",
        "2026-05-05",
        "--reason",
        "no-such",
        "--reviewer",
        "Li",
        code=2,
    )
    assert "reason codes" in r.stderr
    r = _run(
        url,
        "review",
        "mark",
        "--station",
        "CX-ST-04",
        "--day",
        "2026-05-05",
        "--reason",
        "abnormal-value",
        "--reviewer",
        " ",
        code=2,
    )
    assert "reviewer" in r.stderr
    c2 = _run(url, "compute", *month, *rules, "--json")
    assert len(c2["review_marks_since_last_run"]) == 2
    changed = [ch for ch in c2["ledger_changes"] if ch["change"] == "changed"]
    assert changed, c2["ledger_changes"]
    zh = [ch for ch in changed if "ST-ZH-OUT" in json.dumps(ch["before"]["inputs"])]
    assert zh
    before = zh[0]["before"]["inputs"]["means"]["ST-ZH-OUT"]["NH3-N"]
    after = zh[0]["after"]["inputs"]["means"]["ST-ZH-OUT"]["NH3-N"]
    assert after["value"] < before["value"]  # the episode no longer counts
    # raw readings untouched
    s = open_store(url)
    try:
        assert s.count_readings(["CX-ST-04"]) == 744 * 5
    finally:
        s.close()
    rs = _run(
        url,
        "review",
        "restore",
        "--station",
        "CX-ST-04",
        "--param",
        "NH3-N",
        "--day",
        "2026-05-05",
        "--reason",
        "wrong-mark",
        "--reviewer",
        "Wang",
        "--json",
    )
    assert rs["after"]["valid"] == 24
    audit = _run(url, "review", "list", "--json")
    assert [(x["reviewer"], x["action"]) for x in audit] == [
        ("Li", "invalidate"),
        ("Li", "invalidate"),
        ("Wang", "restore"),
    ]
    # the scorecard reads, ranks, and shows its evidence
    runs = _count(url, "runs")
    sc = _run(url, "scorecard", *month, *rules, "--json")
    assert _count(url, "runs") == runs
    towns = sc["towns"]
    assert [t["rank"] for t in towns] == sorted(t["rank"] for t in towns)
    assert len(towns) == 6 and sc["full_marks"] == 100
    zonghan = next(t for t in towns if t["town"] == "zonghan")
    review = next(i for i in zonghan["items"] if i["item"] == "review-corrections")
    assert review["evidence"] == {"invalidations": 2}
    assert review["score"] == pytest.approx(8.0)


def test_annual_scorecard(tmp_path: Path) -> None:  # the store's kind does not matter here
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url, migrate=True).close()
    doc = _run(_fill(url), "scorecard", "--year", "2026", "--rules", str(cd.RULES_FILE), "--json")
    assert doc["period"] == "year" and doc["label"] == "2026"
    assert len(doc["towns"]) == 6
    # one month of data: no valid year anywhere, and capture is a twelfth at best
    for town in doc["towns"]:
        items = {i["item"]: i for i in town["items"]}
        assert items["compliance"]["evidence"]["valid_sections"] == 0
        assert items["capture"]["share"] <= 31 / 365 + 1e-9


def test_problem_commands_refuse_bad_input(filled: str) -> None:
    r = _run(filled, "problems", "show", "99", code=2)
    assert "no problem 99" in r.stderr
    r = _run(filled, "problems", "list", "--state", "weird", code=2)
    assert "--state" in r.stderr
    r = _run(
        filled,
        "review",
        "mark",
        "--station",
        "CX-ST-04",
        "--reason",
        "abnormal-value",
        "--reviewer",
        "Li",
        code=2,
    )
    assert "exactly one of --reading" in r.stderr
    r = _run(
        filled,
        "review",
        "mark",
        "--station",
        "CX-ST-04",
        "--day",
        "May 5",
        "--reason",
        "abnormal-value",
        "--reviewer",
        "Li",
        code=2,
    )
    assert "ISO date" in r.stderr
    r = _run(
        filled,
        "review",
        "mark",
        "--station",
        "NOPE",
        "--day",
        "2026-05-05",
        "--reason",
        "abnormal-value",
        "--reviewer",
        "Li",
        code=2,
    )
    assert "not in the county" in r.stderr

"""Report outputs: JSON keys, CSV rows, HTML with charts, and the CLI commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanduan.central.core.county import County, load_county
from sanduan.central.core.validity import HOUR_MS, Period
from sanduan.central.store import open_store
from sanduan.cli import app
from sanduan.shared.params import resolve
from sanduan.shared.wire import Batch

ROOT = Path(__file__).resolve().parents[2]
COUNTY = ROOT / "deploy" / "county.example.toml"
RULES = ROOT / "deploy" / "rules.example.toml"


@pytest.fixture(scope="module")
def county() -> County:
    return load_county(COUNTY)


MAY = Period(2026, 5)
BASE = {"pH": 7.5, "DO": 6.5, "CODMn": 3.5, "NH3-N": 0.4, "TP": 0.15}
WORSE = {"ST-ZH-OUT": {"NH3-N": 1.2}, "ST-HS-IN": {"TP": 0.35}}
SILENT = "CX-ST-05"  # Hushan's inflow station reports nothing


def _batches(county: County) -> list[Batch]:
    start, end = MAY.bounds_ms(county.timezone)
    ts = list(range(start, end, HOUR_MS))
    out = []
    for k, (sid, sec) in enumerate(county.sections.items()):
        if sec.station == SILENT:
            continue
        names = list(BASE)
        values = [WORSE.get(sid, {}).get(n, BASE[n]) for n in names]
        out.append(
            Batch.from_columns(
                sec.station,
                k + 1,
                0,
                seq=list(range(1, len(ts) * len(names) + 1)),
                ts_ms=[t for t in ts for _ in names],
                code=[resolve(n).code for _ in ts for n in names],
                values=[v for _ in ts for v in values],
            )
        )
    return out


@pytest.fixture(scope="module")
def report_store(tmp_path_factory: pytest.TempPathFactory, county: County) -> str:
    path = tmp_path_factory.mktemp("store") / "central.db"
    url = f"sqlite:///{path}"
    store = open_store(url, migrate=True)
    try:
        for batch in _batches(county):
            store.store_batch(batch, 0)
    finally:
        store.close()
    return url


def _args(report_store: str, *extra: str) -> list[str]:
    return ["--store", report_store, "--county", str(COUNTY), "--rules", str(RULES), *extra]


def test_sections_json_csv_html(report_store: str, tmp_path: Path) -> None:
    out_csv, out_html = tmp_path / "s.csv", tmp_path / "s.html"
    r = CliRunner().invoke(
        app,
        [
            "central",
            "report",
            "sections",
            "--month",
            "2026-05",
            "--json",
            "--csv",
            str(out_csv),
            "--html",
            str(out_html),
            *_args(report_store),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"period", "label", "county", "sections", "towns", "validity", "run_id"} <= set(doc)
    assert doc["label"] == "2026-05"
    # 9 assessed sections, ST-HS-IN (not assessed) silent: all 9 valid, 7 meet their target
    assert doc["county"]["valid"] == 9
    assert doc["county"]["compliance_rate"] == pytest.approx(7 / 9)
    by = {s["section"]: s for s in doc["sections"]}
    assert by["ST-HS-IN"]["valid"] is False
    assert by["ST-ZH-OUT"]["class_label"] == "IV"
    assert by["ST-ZH-OUT"]["main_pollutants"][0]["item"] == "NH3-N"
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(rows) == 13
    assert {row["section"]: row["class"] for row in rows}["RS-01"] == "V"
    page = out_html.read_text("utf-8")
    # one chart per section; the silent ST-HS-IN says it has no data (not "invalid")
    assert page.count("<svg") == 13
    assert "Hushan inflow: 本期无数据" in page
    assert '<html lang="zh-CN">' in page and "功能达标率" in page
    # the section's name, the item and its unit in every chart title
    assert "Zonghan outflow NH3-N (mg/L)" in page
    assert page.count("(mg/L)</text>") >= 12 * 3
    assert "变差 1 个类别" in page  # Zonghan: the water got worse across the town, in words
    assert "问题清单" in page and "乡镇生态报表" in page
    # English on request (the terminal tables here: an HTML page is drawn once per test)
    r = CliRunner().invoke(
        app,
        ["central", "report", "sections", "--month", "2026-05", "--lang", "en",
         *_args(report_store)],
        env={"COLUMNS": "240"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "no data in this period" in r.stdout and "worse by 1 class(es)" in r.stdout
    r = CliRunner().invoke(
        app,
        ["central", "report", "sections", "--month", "2026-05", "--lang", "fr",
         *_args(report_store)],
    )  # fmt: skip
    assert r.exit_code == 2 and "--lang" in r.stderr


def test_compensation_json_csv_html(report_store: str, tmp_path: Path) -> None:
    out_csv, out_html = tmp_path / "c.csv", tmp_path / "c.html"
    r = CliRunner().invoke(
        app,
        [
            "central",
            "report",
            "compensation",
            "--month",
            "2026-05",
            "--json",
            "--csv",
            str(out_csv),
            "--html",
            str(out_html),
            *_args(report_store),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"ledger", "net_yuan", "total_yuan", "rules"} <= set(doc)
    # zonghan pays hushan 300 000 (one class lost); hushan's rows need its silent inflow
    paid = [(e["payer"], e["payee"], e["amount_yuan"]) for e in doc["ledger"] if e["amount_yuan"]]
    assert paid == [("zonghan", "hushan", 300_000.0)]
    assert doc["net_yuan"]["hushan"] == 300_000.0
    assert doc["ledger"][0]["evidence"]["means"]
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(rows) == len(doc["ledger"])
    assert rows[0].keys() >= {"payer", "payee", "amount_yuan", "status"}
    page = out_html.read_text("utf-8")
    assert "<svg" in page and "净收支（万元）" in page
    en = tmp_path / "en.html"
    r = CliRunner().invoke(
        app,
        ["central", "report", "compensation", "--month", "2026-05", "--html", str(en),
         "--lang", "en", *_args(report_store)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    en_page = en.read_text("utf-8")
    assert "Town scorecard" in en_page and "net (10 000 yuan)" in en_page
    assert "not enough data, not settled" in en_page
    # each ledger row shows the classes and means that produced it
    assert "依据（类别与均值，mg/L）" in page
    assert "Zonghan outflow: <span>IV类</span>" in page
    assert "NH3-N 1.2" in page
    assert "已结算" in page


def test_tables_print(report_store: str) -> None:
    wide = {"COLUMNS": "240"}  # Chinese columns are wide: no wrapping in the check
    r = CliRunner().invoke(
        app,
        ["central", "report", "compensation", "--month", "2026-05", *_args(report_store)],
        env=wide,
    )
    assert r.exit_code == 0, r.output
    assert "补偿台账, 2026-05" in r.stdout
    assert "300,000" in r.stdout
    assert "数据不足" in r.stdout  # Hushan's rows: its silent inflow
    assert "变差 1 个类别" in r.stdout  # no "+1" to decode
    r = CliRunner().invoke(
        app,
        ["central", "report", "compensation", "--month", "2026-05", "--lang", "en",
         *_args(report_store)],
        env=wide,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Compensation ledger, 2026-05" in r.stdout
    assert "not enough valid data" in r.stdout
    assert "Town scorecard" in r.stdout


def test_year_report(report_store: str) -> None:
    r = CliRunner().invoke(
        app, ["central", "report", "sections", "--year", "2026", "--json", *_args(report_store)]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # one month of data: the year is invalid everywhere (9 valid months needed)
    assert doc["county"]["valid"] == 0
    assert doc["section_months"]["valid"] == 9
    assert set(doc["months"]) == {f"2026-{m:02d}" for m in range(1, 13)}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--month", "2026-05", "--year", "2026"], "exactly one of"),
        (["--month", "2026"], "is not a month"),
        (["--month", "2026-13"], "month must be 1..12"),
        (["--year", "26"], "expected YYYY-MM (a month) or YYYY"),
    ],
)
def test_usage_errors(report_store: str, extra: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["central", "report", "sections", *extra, *_args(report_store)])
    assert r.exit_code == 2
    assert message in r.stderr


def test_bad_county_file_is_reported(report_store: str, tmp_path: Path) -> None:
    bad = tmp_path / "county.toml"
    bad.write_text('[[section]]\nid = "A"\nriver = "x"\nstation = "s"\n', encoding="utf-8")
    r = CliRunner().invoke(
        app,
        [
            "central",
            "report",
            "sections",
            "--month",
            "2026-05",
            "--store",
            report_store,
            "--county",
            str(bad),
        ],
    )
    assert r.exit_code == 2
    assert "unknown river 'x'" in r.stderr


def test_why_names_the_reason_of_every_rule_kind() -> None:
    from sanduan.central.core.compensation import LedgerEntry
    from sanduan.central.report.tables import why

    def row(evidence: dict[str, object]) -> LedgerEntry:
        return LedgerEntry("r", "month", "2026-05", "a", "b", 1.0, "settled", evidence)

    river = row({"result": {"quality": "moderate"}, "river": "x", "method": "proportion"})
    assert why(river, "en") == "river x: moderate (proportion)"
    assert why(river) == "河流 x：moderate（proportion）"
    assert why(row({"result": {"fined_days": 11}}), "en").startswith("11 day(s)")
    assert why(row({"result": {"fined_days": 11}})) == "日均值连续超标 11 天"
    assert why(row({"result": {"sum_yuan": -105000.0}}), "en") == "sum (L - C) * price = -105,000"
    tiered: dict[str, object] = {
        "inputs": {"factors": {"TP": {"amount_yuan": 2.6e6}, "CODMn": {"amount_yuan": 0}}}
    }
    assert why(row(tiered), "en") == "over target: TP"
    assert why(row(tiered)) == "超标：TP"

"""Rich tables for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from sanduan.central.core.compensation import LedgerEntry
from sanduan.central.report import net_by_party
from sanduan.shared.grading import class_label

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult
    from sanduan.central.core.assessment import SectionAssessment


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _yes(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "[red]no[/red]")


def _multiples(pairs: tuple[tuple[str, float | None], ...]) -> str:
    return ", ".join(f"{n} {e:.2f}x" if e is not None else n for n, e in pairs)


def main_pollutants(r: SectionAssessment) -> str:
    """Main pollutants with their Class III multiples (empty for Class I..III)."""
    return _multiples(r.main_pollutants)


def over_target(r: SectionAssessment) -> str:
    """Items worse than the target class, with their multiples against the target limit."""
    return _multiples(r.exceeding_target)


def sections_table(result: AnalyticsResult) -> Table:
    t = Table(title=f"Sections, {result.period.label}")
    cols = ("section", "name", "water", "target", "class", "meets", "main pollutants")
    for col in (*cols, "over target", "data"):
        t.add_column(col)
    for r in result.assessment.sections.values():
        t.add_row(
            r.section,
            r.name,
            str(r.water_body),
            class_label(r.target_class),
            "-" if r.grade is None else class_label(r.grade),
            _yes(r.meets_target),
            main_pollutants(r),
            over_target(r),
            "valid" if r.valid else f"[yellow]invalid: {' '.join(r.missing)}[/yellow]",
        )
    return t


def county_table(result: AnalyticsResult) -> Table:
    a = result.assessment
    t = Table(title=f"County figures, {result.period.label}")
    for col in ("basis", "sections", "valid", "meets target", "功能达标率", "I-III", "优良率"):
        t.add_column(col)
    rows = [("period means", a.county)]
    if a.section_months is not None:
        rows.append(("section-months", a.section_months))
    for basis, f in rows:
        t.add_row(
            basis,
            str(f.n_sections),
            str(f.n_valid),
            str(f.n_meets),
            _pct(f.compliance_rate),
            str(f.n_good),
            _pct(f.good_rate),
        )
    return t


def towns_table(result: AnalyticsResult) -> Table:
    net = net_by_party(result)
    t = Table(title=f"Town scorecard, {result.period.label}")
    for col in ("town", "outflow", "class", "ok", "inflow", "change", "valid", "meet"):
        t.add_column(col)
    t.add_column("net yuan", justify="right", no_wrap=True)
    for s in result.assessment.towns:
        t.add_row(
            s.name,
            s.outflow,
            "-" if s.outflow_class is None else class_label(s.outflow_class),
            _yes(s.outflow_meets),
            "-" if s.inflow_class is None else class_label(s.inflow_class),
            "-" if s.change is None else f"{s.change:+d}",
            f"{s.n_valid}/{len(s.sections)}",
            str(s.n_meets),
            f"{net.get(s.town, 0.0):,.0f}",
        )
    return t


def _cls(x: object) -> str:
    return class_label(x) if isinstance(x, int) and 0 < x <= 6 else "-"


def why(e: LedgerEntry) -> str:
    """A short reason for a ledger row, from its evidence."""
    ev = e.evidence
    inp = ev.get("inputs", {})
    if e.status == "insufficient-data":
        return "no valid data: " + " ".join(ev.get("invalid", {}))
    if "n" in inp and "c_D" in inp:
        ref = inp.get("worst_inflow_class", inp.get("c_I", inp.get("target_class")))
        return f"D {_cls(inp['c_D'])} vs I {_cls(ref)}: {inp['n']:+d}"
    if "r" in inp:
        share = ev.get("result", {}).get("share")
        return f"I {_cls(inp['c_I'])} vs U {_cls(inp['c_U'])}: {inp['r']:+d}, share {share}"
    if "P" in ev.get("result", {}):
        return f"P = {ev['result']['P']:.3f}"
    if "factors" in inp:
        over = [f for f, d in inp["factors"].items() if d.get("steps")]
        return ("over: " + " ".join(over)) if over else "none over target"
    return ""


def ledger_table(result: AnalyticsResult) -> Table:
    rules = ", ".join(r.rule_id for r in result.rules.rules)
    t = Table(title=f"Compensation ledger, {result.period.label} ({rules})")
    t.add_column("payer")
    t.add_column("payee")
    t.add_column("yuan", justify="right", no_wrap=True)
    t.add_column("status")
    t.add_column("part")
    t.add_column("why")
    for e in result.ledger:
        status = e.status if e.status != "insufficient-data" else "[yellow]no data[/yellow]"
        part = str(e.evidence.get("component", "")) or e.rule
        t.add_row(e.payer, e.payee, f"{e.amount_yuan:,.0f}", status, part, why(e))
    return t

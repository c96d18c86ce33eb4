"""Rich tables for the terminal, in Chinese (default) or English."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from sanduan.central.core.compensation import LedgerEntry
from sanduan.central.report import net_by_party
from sanduan.central.report.i18n import Lang, change_text, class_name, t

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult
    from sanduan.central.core.assessment import SectionAssessment


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _yes(x: bool | None, lang: Lang) -> str:
    return "-" if x is None else (t("yes", lang) if x else f"[red]{t('no', lang)}[/red]")


def _multiples(pairs: tuple[tuple[str, float | None], ...]) -> str:
    return ", ".join(f"{n} {e:.2f}x" if e is not None else n for n, e in pairs)


def main_pollutants(r: SectionAssessment) -> str:
    """Main pollutants with their Class III multiples (empty for Class I..III)."""
    return _multiples(r.main_pollutants)


def over_target(r: SectionAssessment) -> str:
    """Items worse than the target class, with their multiples against the target limit."""
    return _multiples(r.exceeding_target)


def _cls_markup(grade: int | None, lang: Lang) -> str:
    name = class_name(grade, lang)
    return f"[bold red]{name}[/]" if grade == 6 else name


def _data(r: Any, lang: Lang) -> str:
    if r.valid:
        return t("valid", lang)
    if not any(it.mean.n > 0 for it in r.items.values()):
        return f"[dim]{t('no_data', lang)}[/dim]"
    return f"[yellow]{t('insufficient', lang, items=' '.join(r.missing))}[/yellow]"


def sections_table(result: AnalyticsResult, lang: Lang = "zh") -> Table:
    tb = Table(title=f"{t('sections', lang)}, {result.period.label}")
    cols = ("section", "name", "water_body", "target", "class", "meets", "main_pollutants")
    for col in (*cols, "over_target", "data"):
        tb.add_column(t(col, lang))
    for r in result.assessment.sections.values():
        tb.add_row(
            r.section,
            r.name,
            t(str(r.water_body), lang),
            class_name(r.target_class, lang),
            _cls_markup(r.grade, lang) if r.valid else "-",
            _yes(r.meets_target, lang),
            main_pollutants(r),
            over_target(r),
            _data(r, lang),
        )
    return tb


def county_table(result: AnalyticsResult, lang: Lang = "zh") -> Table:
    a = result.assessment
    tb = Table(title=f"{t('county', lang)}, {result.period.label}")
    for col in ("basis", "n_sections", "valid_sections", "meets_target", "compliance_rate"):
        tb.add_column(t(col, lang))
    tb.add_column("I-III")
    tb.add_column(t("good_rate", lang))
    rows = [(t("period_means", lang), a.county)]
    if a.section_months is not None:
        rows.append((t("section_months", lang), a.section_months))
    for basis, f in rows:
        tb.add_row(
            basis,
            str(f.n_sections),
            str(f.n_valid),
            str(f.n_meets),
            _pct(f.compliance_rate),
            str(f.n_good),
            _pct(f.good_rate),
        )
    return tb


def towns_table(result: AnalyticsResult, lang: Lang = "zh") -> Table:
    net = net_by_party(result)
    title = "乡镇出入境水质" if lang == "zh" else "Town scorecard"
    tb = Table(title=f"{title}, {result.period.label}")
    for col in ("town", "outflow", "outflow_class", "meets", "inflow_class", "change"):
        tb.add_column(t(col, lang))
    tb.add_column(t("valid_sections", lang))
    tb.add_column(t("meets_target", lang))
    tb.add_column(t("net_axis", lang).replace("万元", "元").replace("10 000 yuan", "yuan"),
                  justify="right", no_wrap=True)  # fmt: skip
    for s in result.assessment.towns:
        tb.add_row(
            s.name,
            s.outflow,
            _cls_markup(s.outflow_class, lang),
            _yes(s.outflow_meets, lang),
            class_name(s.inflow_class, lang),
            change_text(s.change, lang),
            f"{s.n_valid}/{len(s.sections)}",
            str(s.n_meets),
            f"{net.get(s.town, 0.0):,.0f}",
        )
    return tb


def _cls(x: object, lang: Lang) -> str:
    return class_name(x, lang) if isinstance(x, int) and 0 < x <= 6 else "-"


_WHY: dict[str, dict[Lang, str]] = {
    "town": {
        "zh": "出境 {d}，入境（最差）{i}：{change}",
        "en": "outflow {d}, worst inflow {i}: {change}",
    },
    "target": {"zh": "出境 {d}，目标 {i}：{change}", "en": "outflow {d}, target {i}: {change}"},
    "reach": {
        "zh": "入境 {i}，上游出境 {u}：{change}，分摊 {share}",
        "en": "inflow {i}, upstream outflow {u}: {change}, share {share}",
    },
    "insufficient": {"zh": "数据不足：{s}", "en": "not enough valid data: {s}"},
    "over": {"zh": "超标：{f}", "en": "over target: {f}"},
    "none_over": {"zh": "无超标", "en": "none over target"},
    "river": {"zh": "河流 {r}：{q}（{m}）", "en": "river {r}: {q} ({m})"},
    "fined": {
        "zh": "日均值连续超标 {n} 天",
        "en": "{n} day(s) in runs of exceeding daily means",
    },
    "linear": {"zh": "合计 (L - C) × 单价 = {s}", "en": "sum (L - C) * price = {s}"},
}


def why(e: LedgerEntry, lang: Lang = "zh") -> str:
    """A short reason for a ledger row, from its evidence, in words."""
    ev = e.evidence
    inp = ev.get("inputs", {})
    w = {k: v[lang] for k, v in _WHY.items()}
    if e.status == "insufficient-data":
        return w["insufficient"].format(s=" ".join(ev.get("invalid", {})))
    if "n" in inp and "c_D" in inp:
        if "worst_inflow_class" in inp or "c_I" in inp:
            ref = inp.get("worst_inflow_class", inp.get("c_I"))
            key = "town"
        else:
            ref, key = inp.get("target_class"), "target"
        return w[key].format(
            d=_cls(inp["c_D"], lang), i=_cls(ref, lang), change=change_text(inp["n"], lang)
        )
    if "r" in inp:
        share = ev.get("result", {}).get("share")
        return w["reach"].format(
            i=_cls(inp["c_I"], lang),
            u=_cls(inp["c_U"], lang),
            change=change_text(inp["r"], lang),
            share="-" if share is None else f"{100 * share:.0f}%",
        )
    res = ev.get("result", {})
    if "P" in res:
        return f"P = {res['P']:.3f}"
    if "quality" in res:
        return w["river"].format(r=ev.get("river", ""), q=res["quality"], m=ev.get("method", ""))
    if "fined_days" in res:
        return w["fined"].format(n=res["fined_days"])
    if "sum_yuan" in res:
        return w["linear"].format(s=f"{res['sum_yuan']:,.0f}")
    if "factors" in inp:
        over = [f for f, d in inp["factors"].items() if d.get("steps") or d.get("amount_yuan")]
        return w["over"].format(f=" ".join(over)) if over else w["none_over"]
    return ""


def ledger_table(result: AnalyticsResult, lang: Lang = "zh") -> Table:
    rules = ", ".join(r.rule_id for r in result.rules.rules)
    title = t("ledger", lang) if lang == "zh" else "Compensation ledger"
    tb = Table(title=f"{title}, {result.period.label} ({rules})")
    tb.add_column(t("payer", lang))
    tb.add_column(t("payee", lang))
    tb.add_column(t("amount", lang), justify="right", no_wrap=True)
    tb.add_column(t("status", lang))
    tb.add_column(t("component", lang))
    tb.add_column(t("basis_row", lang).split("（")[0].split(" (")[0])
    for e in result.ledger:
        status = t(e.status, lang)
        if e.status == "insufficient-data":
            status = f"[yellow]{status}[/yellow]"
        part = str(e.evidence.get("component", "")) or e.rule
        tb.add_row(e.payer, e.payee, f"{e.amount_yuan:,.0f}", status, part, why(e, lang))
    return tb

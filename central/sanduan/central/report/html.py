"""A self-contained HTML report rendered from a Jinja2 template (templates/report.html.j2),
with charts drawn by matplotlib (Agg) as inline SVG.

:func:`view` builds the page's data (plain dicts, in the page's language); :func:`render_html`
renders it. The template and the view are what a web console reuses. Chinese is the default
language; every chart has its section's name in the title and the unit on its axis, 劣V is
marked, and an empty period says "no data in this period".
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from sanduan.central.report import net_by_party
from sanduan.central.report.i18n import Lang, change_text, class_name, kind_name, t, unit_of
from sanduan.shared.grading import class_label
from sanduan.shared.standards import Direction, gb3838

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult
    from sanduan.central.core.assessment import SectionAssessment

CHART_PARAMETERS = ("DO", "CODMn", "NH3-N", "TP")
TEMPLATES = Path(__file__).parent / "templates"


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with warnings.catch_warnings():
        # Layout measures CJK text with a Latin font; the browser draws it (svg.fonttype none).
        warnings.filterwarnings(
            "ignore", message="Glyph .* missing from font", category=UserWarning
        )
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure_setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    # Text stays text in the SVG: the browser draws Chinese names with its own fonts.
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _has_data(r: SectionAssessment) -> bool:
    return any(it.mean.n > 0 for it in r.items.values())


def section_charts(result: AnalyticsResult, lang: Lang = "zh") -> list[dict[str, str]]:
    """Caption and SVG per section: its daily (month report) or monthly (year report) means of
    DO, CODMn, NH3-N and TP against the class II..V limits for its water body. Each chart's
    title names the section, the item and its unit; a section without data says so."""
    plt = _figure_setup()
    agg = result.aggregates
    level = agg.day if result.period.kind == "month" else agg.month
    x = np.arange(level.mean.shape[1]) + 1
    idx = agg.index()
    std = gb3838()
    unit_word = t("day" if result.period.kind == "month" else "month", lang)
    out: list[dict[str, str]] = []
    for sec in result.county.sections.values():
        params = [p for p in CHART_PARAMETERS if (sec.station, p) in idx]
        name = sec.name or sec.id
        if not params:
            fig, ax = plt.subplots(figsize=(4, 1.2))
            ax.axis("off")
            ax.text(0.5, 0.5, f"{name}: {t('no_data', lang)}", ha="center", va="center")
            out.append({"caption": f"{name} ({sec.id}): {t('no_data', lang)}", "svg": _svg(fig)})
            continue
        fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 2.8), squeeze=False)
        for ax, p in zip(axes[0], params, strict=True):
            i = idx[(sec.station, p)]
            y = level.mean[i]
            ok = level.valid[i]
            ax.plot(x, np.where(ok, y, np.nan), "o-", ms=3, color="#1f5f9f")
            ax.plot(x, np.where(ok, np.nan, y), "x", ms=4, color="#a60")
            item = std.item(p)
            if item is not None and item.direction in (Direction.UPPER, Direction.LOWER):
                for g in range(2, 6):
                    lim = item.limit(g, sec.water_body)
                    style = "-" if g == sec.target_class else ":"
                    ax.axhline(lim, ls=style, lw=0.8, color="#888")
                    ax.annotate(class_label(g), (x[-1], lim), fontsize=6, color="#666")
            unit = unit_of(p)
            ax.set_title(f"{name} {p}" + (f" ({unit})" if unit else ""), fontsize=8)
            ax.set_ylabel(f"{p} {unit}".strip(), fontsize=7)
            ax.set_xlabel(unit_word, fontsize=7)
            ax.tick_params(labelsize=7)
        caption = t(
            "chart_caption",
            lang,
            name=name,
            id=sec.id,
            item="、".join(params) if lang == "zh" else ", ".join(params),
            unit=unit_word,
            target=class_label(sec.target_class),
        )
        out.append({"caption": caption, "svg": _svg(fig)})
    return out


def ledger_chart(result: AnalyticsResult, lang: Lang = "zh") -> str:
    plt = _figure_setup()
    net = net_by_party(result)
    names = [_party(result, n) for n in net]
    vals = [v / 10_000 for v in net.values()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names)), 2.8))
    ax.bar(names, vals, color=["#2a7f3f" if v >= 0 else "#b03030" for v in vals])
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_ylabel(t("net_axis", lang))
    ax.set_title(t("net", lang), fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _svg(fig)


def _party(result: AnalyticsResult, pid: str | None) -> str:
    if pid is None:
        return "-"
    town = result.county.towns.get(pid)
    if town is not None:
        return town.name or pid
    if pid == result.county.fund:
        return result.county.fund_name or pid
    return pid


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _section_row(r: SectionAssessment, lang: Lang) -> dict[str, Any]:
    if r.valid:
        state = "valid"
    elif not _has_data(r):
        state = "empty"
    else:
        state = "insufficient"
    sep = "、" if lang == "zh" else ", "
    main = sep.join(f"{n}({e:.2f})" if e is not None else n for n, e in r.main_pollutants)
    over = sep.join(f"{n}({e:.2f})" if e is not None else n for n, e in r.exceeding_target)
    return {
        "id": r.section,
        "name": r.name,
        "water_body": t(str(r.water_body), lang),
        "target": class_name(r.target_class, lang),
        "class_name": class_name(r.grade, lang) if r.valid else "-",
        "inferior": r.grade == 6,
        "meets": r.meets_target,
        "main": main,
        "over": over,
        "data_state": state,
        "missing": " ".join(r.missing),
    }


def _basis(result: AnalyticsResult, ev: Mapping[str, Any], lang: Lang) -> list[dict[str, Any]]:
    """The classes and means behind a ledger row, per section, from its evidence."""
    classes = ev.get("classes") or {}
    means = ev.get("means") or {}
    out = []
    for sid in dict.fromkeys([*classes, *means]):
        c = classes.get(sid, {})
        grade = c.get("class") if isinstance(c, Mapping) else None
        m = means.get(sid, {})
        parts = []
        for f, v in m.items():
            val = v.get("value") if isinstance(v, Mapping) else v
            ok = v.get("valid", True) if isinstance(v, Mapping) else True
            if val is None:
                parts.append(f"{f} -")
            else:
                parts.append(f"{f} {val:.3g}" + ("" if ok else "*"))
        sec = result.county.sections.get(sid)
        out.append(
            {
                "section": sec.name if sec is not None and sec.name else sid,
                "class_name": class_name(grade, lang) if isinstance(grade, int) else "-",
                "inferior": grade == 6,
                "means": ", ".join(parts),
            }
        )
    return out


def _local(ms: int | None, tz: str) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def problems_view(
    result: AnalyticsResult,
    problems: Sequence[Mapping[str, Any]],
    counts: Mapping[str, int],
    hot_spots: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    lang: Lang,
) -> dict[str, Any]:
    """The problems part of the page from ``problems list --json`` style documents."""
    tz = result.county.timezone
    rows = [
        {
            "id": p["id"],
            "state": t(str(p["state"]), lang),
            "overdue": bool(p.get("overdue")),
            "kind": kind_name(str(p["kind"]), lang),
            "subject": p["subject"],
            "assignee": _party(result, p.get("assignee") or p.get("town")),
            "found": _local(p.get("first_ms"), tz),
            "deadline": _local(p.get("deadline_ms"), tz),
            "message": p.get("message", ""),
        }
        for p in problems
    ]
    spots = [
        {
            "name": _party(result, h["town"]),
            "count": h["count"],
            "median": "-" if h["median_hours_to_close"] is None else h["median_hours_to_close"],
        }
        for h in (hot_spots or {}).get("town", [])
    ]
    full = {"opened": 0, "closed": 0, "open": 0, "overdue": 0, **counts}
    return {"counts": full, "rows": rows, "hot_spots": spots}


def scorecard_view(doc: Mapping[str, Any], lang: Lang) -> dict[str, Any]:
    """The scorecard part of the page from a ``scorecard --json`` document."""
    items = [(i["zh"] if lang == "zh" else i["en"]) or i["id"] for i in doc["items"]]
    towns = []
    for tw in doc["towns"]:
        ev = "; ".join(
            f"{i['item']}: "
            + ", ".join(f"{k}={v}" for k, v in i["evidence"].items() if k != "note")
            for i in tw["items"]
        )
        towns.append(
            {
                "rank": tw["rank"],
                "name": tw["name"],
                "total": f"{tw['total']:.1f}",
                "scores": [f"{i['score']:.1f}" for i in tw["items"]],
                "evidence": ev,
            }
        )
    return {"full_marks": f"{doc['full_marks']:g}", "columns": items, "towns": towns}


def view(
    result: AnalyticsResult,
    kind: str,
    lang: Lang = "zh",
    *,
    problems: Mapping[str, Any] | None = None,
    scorecard: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, in ``lang``."""
    a = result.assessment
    vr = result.validity
    period_word = t(result.period.kind, lang)
    what = t("sections_title" if kind == "sections" else "compensation_title", lang)
    county = result.county.name or t("county", lang)
    title = (
        f"{county} {result.period.label} {what}"
        if lang == "zh"
        else f"{county}: {what}, {result.period.label} ({period_word})"
    )
    doc: dict[str, Any] = {
        "lang": lang,
        "kind": kind,
        "title": title,
        "validity": t(
            "validity",
            lang,
            h=vr.min_values_per_hour,
            d=vr.min_hours_per_day,
            d4=vr.min_values_per_day_4h,
            m=vr.min_days_per_month,
            y=vr.min_months_per_year,
            flags=" ".join(sorted(vr.excluded_flags)),
        ),
        "problems": problems,
        "scorecard": scorecard,
    }
    if kind == "sections":
        f = a.county
        rates = [(t("period_means", lang), f)]
        if a.section_months is not None:
            rates.append((t("section_months", lang), a.section_months))
        doc["rates"] = [
            {
                "basis": b,
                "valid": x.n_valid,
                "meets": x.n_meets,
                "compliance": _pct(x.compliance_rate),
                "good": _pct(x.good_rate),
            }
            for b, x in rates
        ]
        doc["sections"] = [_section_row(r, lang) for r in a.sections.values()]
        params = list(dict.fromkeys(n for r in a.sections.values() for n in r.items))
        doc["means"] = {
            "items": [f"{p} ({u})" if (u := unit_of(p)) else p for p in params],
            "rows": [
                {
                    "name": r.name or r.section,
                    "values": [r.items[p].reported() if p in r.items else "-" for p in params],
                }
                for r in a.sections.values()
            ],
        }
        doc["towns"] = [
            {
                "name": tw.name,
                "outflow": result.county.sections[tw.outflow].name or tw.outflow,
                "outflow_class": class_name(tw.outflow_class, lang),
                "outflow_inferior": tw.outflow_class == 6,
                "inflow_class": class_name(tw.inflow_class, lang),
                "change": change_text(tw.change, lang),
                "worse": tw.change is not None and tw.change > 0,
            }
            for tw in a.towns
        ]
        doc["charts"] = section_charts(result, lang)
    else:
        doc["ledger"] = [
            {
                "rule": e.rule,
                "component": e.evidence.get("component", ""),
                "payer": _party(result, e.payer),
                "payee": _party(result, e.payee),
                "amount": f"{e.amount_yuan:,.2f}",
                "status_key": e.status,
                "status": t(e.status, lang),
                "basis": _basis(result, e.evidence, lang),
                "formula": e.evidence.get("formula", ""),
            }
            for e in result.ledger
        ]
        doc["net_chart"] = ledger_chart(result, lang)
    return doc


def environment() -> Any:
    """The Jinja2 environment of the report templates (autoescaping on)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_html(
    result: AnalyticsResult,
    kind: str,
    lang: Lang = "zh",
    *,
    problems: Mapping[str, Any] | None = None,
    scorecard: Mapping[str, Any] | None = None,
) -> str:
    """The HTML page of ``report sections`` (kind ``sections``) or ``report compensation``,
    with the problems and the town scorecard when given."""
    doc = view(result, kind, lang, problems=problems, scorecard=scorecard)
    tmpl = environment().get_template("report.html.j2")

    def label(key: str, **kw: object) -> str:
        return t(key, lang, **kw)

    return str(tmpl.render(**doc, t=label))

"""A self-contained HTML report: tables plus charts rendered by matplotlib (Agg) as inline SVG."""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from sanduan.central.report import net_by_party
from sanduan.shared.grading import class_label
from sanduan.shared.standards import Direction, gb3838

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult

CHART_PARAMETERS = ("DO", "CODMn", "NH3-N", "TP")
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#eee}.bad{color:#b00}.warn{color:#a60}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure_setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def section_charts(result: AnalyticsResult) -> list[tuple[str, str]]:
    """(caption, svg) per section: its daily (month report) or monthly (year report) means of
    DO, CODMn, NH3-N and TP against the Class II..V limits for its water body."""
    plt = _figure_setup()
    agg = result.aggregates
    level = agg.day if result.period.kind == "month" else agg.month
    x = np.arange(level.mean.shape[1]) + 1
    idx = agg.index()
    std = gb3838()
    out: list[tuple[str, str]] = []
    for sec in result.county.sections.values():
        params = [p for p in CHART_PARAMETERS if (sec.station, p) in idx]
        if not params:
            continue
        fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 2.6), squeeze=False)
        for ax, p in zip(axes[0], params, strict=True):
            i = idx[(sec.station, p)]
            y = level.mean[i]
            ok = level.valid[i]
            ax.plot(x, np.where(ok, y, np.nan), "o-", ms=3, color="#1f5f9f", label="valid")
            ax.plot(x, np.where(ok, np.nan, y), "x", ms=4, color="#a60", label="invalid")
            item = std.item(p)
            if item is not None and item.direction in (Direction.UPPER, Direction.LOWER):
                for g in range(2, 6):
                    lim = item.limit(g, sec.water_body)
                    style = "-" if g == sec.target_class else ":"
                    ax.axhline(lim, ls=style, lw=0.8, color="#888")
                    ax.annotate(class_label(g), (x[-1], lim), fontsize=6, color="#666")
            ax.set_title(p, fontsize=9)
            ax.tick_params(labelsize=7)
        axes[0][0].legend(fontsize=6)
        unit = "day" if result.period.kind == "month" else "month"
        caption = (
            f"{sec.id} {sec.name}: {unit}ly means against the Class II..V limits "
            f"({sec.water_body}; solid line = target Class {class_label(sec.target_class)})"
        )
        out.append((caption, _svg(fig)))
    return out


def ledger_chart(result: AnalyticsResult) -> str:
    plt = _figure_setup()
    net = net_by_party(result)
    names = list(net)
    vals = [net[n] / 10_000 for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names)), 2.8))
    ax.bar(names, vals, color=["#2a7f3f" if v >= 0 else "#b03030" for v in vals])
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_ylabel("net, 10 000 yuan")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _svg(fig)


def render_html(result: AnalyticsResult, kind: str) -> str:
    """The HTML page of ``report sections`` (kind ``sections``) or ``report compensation``."""
    a = result.assessment
    title = f"{result.county.name or 'County'}: {kind}, {result.period.label}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>")
    vr = result.validity
    parts.append(
        "<p>Validity: hour &ge; "
        f"{vr.min_values_per_hour} value(s), day &ge; {vr.min_hours_per_day} hours "
        f"({vr.min_values_per_day_4h} for four-hourly parameters), month &ge; "
        f"{vr.min_days_per_month} days, year &ge; {vr.min_months_per_year} months; flags "
        f"{_e(' '.join(sorted(vr.excluded_flags)))} excluded.</p>"
    )
    if kind == "sections":
        f = a.county
        rates = [["period means", f.n_valid, f.n_meets, _pct(f.compliance_rate), _pct(f.good_rate)]]
        if a.section_months is not None:
            s = a.section_months
            rates.append(
                ["section-months", s.n_valid, s.n_meets, _pct(s.compliance_rate), _pct(s.good_rate)]
            )
        parts.append("<h2>County</h2>")
        parts.append(_table(["basis", "valid", "meets target", "功能达标率", "优良率"], rates))
        rows = []
        for r in a.sections.values():
            cls = "-" if r.grade is None else class_label(r.grade)
            meets = (
                "-"
                if r.meets_target is None
                else ("yes" if r.meets_target else "<b class='bad'>no</b>")
            )
            data = (
                "valid"
                if r.valid
                else f"<span class='warn'>invalid: {_e(' '.join(r.missing))}</span>"
            )
            main = ", ".join(
                f"{_e(n)} {e:.2f}x" if e is not None else _e(n) for n, e in r.main_pollutants
            )
            over = ", ".join(
                f"{_e(n)} {e:.2f}x" if e is not None else _e(n) for n, e in r.exceeding_target
            )
            rows.append(
                [
                    _e(r.section),
                    _e(r.name),
                    _e(r.water_body),
                    class_label(r.target_class),
                    cls,
                    meets,
                    main,
                    over,
                    data,
                ]
            )
        parts.append("<h2>Sections</h2>")
        parts.append(
            "<p>Main pollutants: sections worse than Class III, multiple against the Class III "
            "limit. Over target: items worse than the target class, multiple against the "
            "target limit.</p>"
        )
        head = ["section", "name", "water", "target", "class", "meets", "main pollutants"]
        parts.append(_table([*head, "over target", "data"], rows))
        params = list(dict.fromkeys(n for r in a.sections.values() for n in r.items))
        parts.append("<h2>Period means</h2>")
        parts.append("<p>Below the detection limit a mean is shown as the limit with L.</p>")
        parts.append(
            _table(
                ["section", *(_e(p) for p in params)],
                [
                    [
                        _e(r.section),
                        *(_e(r.items[p].reported()) if p in r.items else "-" for p in params),
                    ]
                    for r in a.sections.values()
                ],
            )
        )
        parts.append("<h2>Towns</h2>")
        parts.append(
            _table(
                ["town", "outflow", "class", "inflow class", "change"],
                [
                    [
                        _e(t.name),
                        _e(t.outflow),
                        "-" if t.outflow_class is None else class_label(t.outflow_class),
                        "-" if t.inflow_class is None else class_label(t.inflow_class),
                        "-" if t.change is None else f"{t.change:+d}",
                    ]
                    for t in a.towns
                ],
            )
        )
        parts.append("<h2>Means against class limits</h2>")
        for caption, svg in section_charts(result):
            parts.append(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")
    else:
        rows = []
        for e in result.ledger:
            status = (
                e.status
                if e.status != "insufficient-data"
                else f"<span class='warn'>{e.status}</span>"
            )
            rows.append(
                [
                    _e(e.rule),
                    _e(e.evidence.get("component", "")),
                    _e(e.payer),
                    _e(e.payee),
                    f"{e.amount_yuan:,.2f}",
                    status,
                    _e(e.evidence.get("formula", "")),
                ]
            )
        parts.append("<h2>Ledger</h2>")
        parts.append(
            _table(["rule", "component", "payer", "payee", "yuan", "status", "formula"], rows)
        )
        parts.append("<h2>Net by party</h2>")
        parts.append(
            f"<figure>{ledger_chart(result)}<figcaption>received minus paid</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"

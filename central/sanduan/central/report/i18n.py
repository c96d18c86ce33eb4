"""Report language: Chinese (default) and English labels, class names and plain-language
phrases for what a figure means. Used by the HTML templates and the terminal tables."""

from __future__ import annotations

from typing import Literal

from sanduan.shared.errors import InputError
from sanduan.shared.params import resolve

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")

_CLASS = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "劣V"}

TEXT: dict[str, dict[Lang, str]] = {
    "sections_title": {"zh": "断面水质评价", "en": "Section water quality"},
    "compensation_title": {"zh": "生态补偿核算", "en": "Ecological compensation"},
    "month": {"zh": "月", "en": "month"},
    "year": {"zh": "年", "en": "year"},
    "validity": {
        "zh": "数据有效性：小时值至少 {h} 个有效数据；日均值至少 {d} 个有效小时值（四小时一次的"
        "项目至少 {d4} 个）；月均值至少 {m} 个有效日；年均值至少 {y} 个有效月；标记为 {flags} "
        "的数据不参与统计（R 为人工审核判为无效）。",
        "en": "Data validity: an hour needs {h} valid value(s); a day {d} valid hours ({d4} for"
        " four-hourly items); a month {m} valid days; a year {y} valid months; readings flagged"
        " {flags} are excluded (R: judged invalid by a reviewer).",
    },
    "county": {"zh": "全县", "en": "County"},
    "basis": {"zh": "统计口径", "en": "basis"},
    "period_means": {"zh": "期间均值", "en": "period means"},
    "section_months": {"zh": "断面·月", "en": "section-months"},
    "valid_sections": {"zh": "有效断面", "en": "valid sections"},
    "meets_target": {"zh": "达标", "en": "meeting target"},
    "compliance_rate": {"zh": "功能达标率", "en": "compliance rate (功能达标率)"},
    "good_rate": {"zh": "优良率（I～III类）", "en": "good rate, class I-III (优良率)"},
    "sections": {"zh": "断面", "en": "Sections"},
    "n_sections": {"zh": "断面数", "en": "sections"},
    "section": {"zh": "断面", "en": "section"},
    "name": {"zh": "名称", "en": "name"},
    "water_body": {"zh": "水体", "en": "water body"},
    "river": {"zh": "河流", "en": "river"},
    "lake": {"zh": "湖库", "en": "lake"},
    "target": {"zh": "目标类别", "en": "target class"},
    "class": {"zh": "水质类别", "en": "class"},
    "meets": {"zh": "是否达标", "en": "meets target"},
    "yes": {"zh": "达标", "en": "yes"},
    "no": {"zh": "不达标", "en": "no"},
    "main_pollutants": {"zh": "主要污染物（超III类倍数）", "en": "main pollutants (x class III)"},
    "over_target": {"zh": "超目标项目（超标倍数）", "en": "over target (x target limit)"},
    "data": {"zh": "数据", "en": "data"},
    "pollutants_note": {
        "zh": "主要污染物：劣于 III 类的断面超过 III 类限值最多的项目及其超标倍数；超目标项目：劣于"
        "目标类别的项目及其超过目标限值的倍数。",
        "en": "Main pollutants: for sections worse than class III, the items most over the class"
        " III limit, with the multiple. Over target: items worse than the target class, with the"
        " multiple of the target limit.",
    },
    "period_means_title": {"zh": "期间均值", "en": "Period means"},
    "dl_note": {
        "zh": "低于检出限的均值以检出限加 L 表示。",
        "en": "A mean below the detection limit is shown as the limit followed by L.",
    },
    "valid": {"zh": "有效", "en": "valid"},
    "no_data": {"zh": "本期无数据", "en": "no data in this period"},
    "insufficient": {"zh": "数据不足：{items}", "en": "not enough valid data: {items}"},
    "towns": {"zh": "乡镇", "en": "Towns"},
    "town": {"zh": "乡镇", "en": "town"},
    "outflow": {"zh": "出境断面", "en": "outflow section"},
    "outflow_class": {"zh": "出境类别", "en": "outflow class"},
    "inflow_class": {"zh": "入境类别（最差）", "en": "inflow class (worst)"},
    "change": {"zh": "出入境变化", "en": "across the town"},
    "worse": {"zh": "变差 {n} 个类别", "en": "worse by {n} class(es)"},
    "better": {"zh": "改善 {n} 个类别", "en": "better by {n} class(es)"},
    "same": {"zh": "持平", "en": "unchanged"},
    "charts": {"zh": "监测均值与类别限值", "en": "Means against the class limits"},
    "chart_caption": {
        "zh": "{name}（{id}）：{item} {unit}均值，虚线为 II～V 类限值，实线为目标 {target} 类"
        "限值；× 为无效时段",
        "en": "{name} ({id}): {unit}ly means of {item}; dotted lines are the class II-V limits,"
        " the solid line the target class {target}; x marks invalid periods",
    },
    "day": {"zh": "日", "en": "day"},
    "ledger": {"zh": "补偿台账", "en": "Ledger"},
    "rule": {"zh": "规则", "en": "rule"},
    "component": {"zh": "核算项", "en": "component"},
    "payer": {"zh": "付款方", "en": "payer"},
    "payee": {"zh": "收款方", "en": "payee"},
    "amount": {"zh": "金额（元）", "en": "amount (yuan)"},
    "status": {"zh": "状态", "en": "status"},
    "basis_row": {"zh": "依据（类别与均值，mg/L）", "en": "basis (classes and means, mg/L)"},
    "settled": {"zh": "已结算", "en": "settled"},
    "no-payment": {"zh": "无需支付", "en": "no payment"},
    "insufficient-data": {"zh": "数据不足，未结算", "en": "not enough data, not settled"},
    "net": {"zh": "各方净收支", "en": "Net by party"},
    "net_caption": {"zh": "收入减支出（万元）", "en": "received minus paid (10 000 yuan)"},
    "net_axis": {"zh": "净收支（万元）", "en": "net (10 000 yuan)"},
    "problems": {"zh": "问题清单", "en": "Problems"},
    "problem_counts": {
        "zh": "发现 {opened} 个，已销号 {closed} 个，未销号 {open} 个，超期 {overdue} 个",
        "en": "{opened} found, {closed} closed, {open} open, {overdue} overdue",
    },
    "id": {"zh": "编号", "en": "id"},
    "state": {"zh": "状态", "en": "state"},
    "kind": {"zh": "类型", "en": "kind"},
    "subject": {"zh": "对象", "en": "subject"},
    "assignee": {"zh": "责任乡镇", "en": "responsible town"},
    "found": {"zh": "发现时间", "en": "found"},
    "deadline": {"zh": "整改期限", "en": "deadline"},
    "overdue": {"zh": "超期", "en": "overdue"},
    "description": {"zh": "描述", "en": "description"},
    "hot_spots": {"zh": "问题多发", "en": "Hot spots"},
    "count": {"zh": "数量", "en": "count"},
    "median_close": {"zh": "销号用时中位数（小时）", "en": "median hours to close"},
    "scorecard": {"zh": "乡镇生态报表（考核得分）", "en": "Town scorecard"},
    "rank": {"zh": "排名", "en": "rank"},
    "total": {"zh": "总分", "en": "total"},
    "full_marks": {"zh": "满分 {n} 分", "en": "full marks {n}"},
    "evidence": {"zh": "得分依据", "en": "evidence"},
    "none": {"zh": "无", "en": "none"},
    "discovered": {"zh": "发现", "en": "discovered"},
    "assigned": {"zh": "交办", "en": "assigned"},
    "rectifying": {"zh": "整改中", "en": "rectifying"},
    "reported": {"zh": "已反馈", "en": "reported done"},
    "closed": {"zh": "销号", "en": "closed"},
}

KINDS: dict[str, dict[Lang, str]] = {
    "exceedance": {"zh": "持续超标", "en": "sustained exceedance"},
    "outflow-worse": {"zh": "出境劣于入境", "en": "outflow worse than inflow"},
    "offline": {"zh": "站点离线", "en": "station offline"},
    "capture": {"zh": "数据捕获率低", "en": "low data capture"},
    "flags": {"zh": "仪器故障/运维", "en": "analyzer fault or maintenance"},
    "stuck": {"zh": "数值恒定", "en": "stuck values"},
    "jump": {"zh": "数值突变", "en": "sudden jump"},
}


def t(key: str, lang: Lang, **kw: object) -> str:
    """The label ``key`` in ``lang``, formatted with ``kw``."""
    entry = TEXT.get(key)
    if entry is None:
        return key
    text = entry[lang]
    return text.format(**kw) if kw else text


def class_name(grade: int | None, lang: Lang) -> str:
    """``III类`` / ``class III``; 劣V in both languages; ``-`` when not graded."""
    if grade is None or grade not in _CLASS:
        return "-"
    label = _CLASS[grade]
    if lang == "zh":
        return f"{label}类"
    return label if grade == 6 else f"class {label}"


def kind_name(kind: str, lang: Lang) -> str:
    return KINDS.get(kind, {}).get(lang, kind)


def change_text(change: int | None, lang: Lang) -> str:
    """Plain words for the class change across a town (positive: the water got worse)."""
    if change is None:
        return "-"
    if change > 0:
        return t("worse", lang, n=change)
    if change < 0:
        return t("better", lang, n=-change)
    return t("same", lang)


def unit_of(parameter: str) -> str:
    """The parameter's unit for axis labels (``mg/L``; pH has none)."""
    try:
        u = resolve(parameter).unit
    except InputError:
        return ""
    return "" if u in ("", "1", "dimensionless", "-") else u


def check_lang(lang: str) -> Lang:
    if lang not in LANGS:
        raise InputError(f"--lang {lang!r}: use zh (Chinese, the default) or en (English)")
    return "zh" if lang == "zh" else "en"

"""Server-drawn SVG for the console: the county schematic and a section's time series.

Pure functions: plain data in, SVG text out (every text escaped), so the layout is unit-tested
without a browser and the pages need no JavaScript charting library.

The schematic lays the county out by itself from its topology: one horizontal lane per river,
sections placed left to right in flow order (an inflow before its town's outflow, an upstream
town's outflow before the inflow that receives it), arrows along each river in the direction of
flow, and towns as labelled spans under the sections they hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from sanduan.central.core.county import County

__all__ = [
    "CLASS_COLOURS",
    "Layout",
    "Series",
    "class_colour",
    "county_layout",
    "county_svg",
    "series_svg",
]

CLASS_COLOURS: Mapping[int, str] = {
    1: "#3a8bd1",  # I   blue
    2: "#4aa3df",  # II  light blue
    3: "#3cae5c",  # III green
    4: "#e0b020",  # IV  yellow
    5: "#e07b20",  # V   orange
    6: "#c0392b",  # 劣V red
}
NO_DATA = "#b0b0b0"


def class_colour(grade: int | None) -> str:
    """The conventional colour of a water-quality class (grey for none)."""
    return CLASS_COLOURS.get(grade or 0, NO_DATA)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each section sits: ``pos[section] = (column, lane)``; lanes are rivers in order."""

    pos: Mapping[str, tuple[int, int]]
    lanes: tuple[str, ...]
    columns: int


def county_layout(county: County) -> Layout:
    """Columns by flow depth (longest chain of upstream sections), lanes by river."""
    edges: dict[str, set[str]] = {s: set() for s in county.sections}
    for town in county.towns.values():
        for inflow in town.inflows:
            edges[inflow.section].add(town.outflow)
            if inflow.upstream is not None:
                up = county.towns[inflow.upstream].outflow
                edges[up].add(inflow.section)
    depth: dict[str, int] = {}

    def visit(sid: str, seen: frozenset[str]) -> int:
        if sid in depth:
            return depth[sid]
        preds = [p for p, nxt in edges.items() if sid in nxt and p not in seen]
        d = 1 + max((visit(p, seen | {sid}) for p in preds), default=-1)
        depth[sid] = d
        return d

    for sid in county.sections:
        visit(sid, frozenset())
    lanes = tuple(county.rivers) or ("",)
    lane_of = {r: i for i, r in enumerate(lanes)}
    # Sections of one river at the same depth are spread over successive columns.
    taken: set[tuple[int, int]] = set()
    pos: dict[str, tuple[int, int]] = {}
    for sid in sorted(county.sections, key=lambda s: (depth[s], s)):
        lane = lane_of.get(county.sections[sid].river, 0)
        col = depth[sid]
        while (col, lane) in taken:
            col += 1
        taken.add((col, lane))
        pos[sid] = (col, lane)
    columns = 1 + max((c for c, _ in pos.values()), default=0)
    return Layout(pos=pos, lanes=lanes, columns=columns)


_COL_W = 150
_LANE_H = 120
_LEFT = 130
_TOP = 40


def _xy(col: int, lane: int) -> tuple[float, float]:
    return _LEFT + col * _COL_W + _COL_W / 2, _TOP + lane * _LANE_H + 40


def county_svg(
    county: County,
    grades: Mapping[str, int | None],
    meets: Mapping[str, bool | None],
    *,
    link: str = "section/{id}",
    labels: Mapping[str, str] | None = None,
    class_names: Mapping[int, str] | None = None,
) -> str:
    """The county schematic: each section a disc coloured by its class, ringed red when it
    misses its target, linked to its page (``link`` with ``{id}``).

    ``labels`` translates the few words drawn (``flow``, ``target``, ``no-data``);
    ``class_names`` the class numbers (1..6 -> "I".."劣V").
    """
    words = {"flow": "flow", "target": "target", "no-data": "no data"} | dict(labels or {})
    names = dict(class_names or {})
    layout = county_layout(county)
    width = _LEFT + layout.columns * _COL_W + 20
    height = _TOP + len(layout.lanes) * _LANE_H + 20
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="county-map">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0L10,5L0,10z' fill='#5b7fa6'/>"
        "</marker></defs>",
    ]
    for lane, rid in enumerate(layout.lanes):
        y = _TOP + lane * _LANE_H + 40
        river = county.rivers.get(rid)
        name = (river.name or river.id) if river is not None else ""
        out.append(
            f'<text x="8" y="{y + 5}" class="river-name" font-size="14" fill="#234">'
            f"{escape(name)}</text>"
        )
        cols = sorted(c for s, (c, ln) in layout.pos.items() if ln == lane)
        if cols:
            x0, _ = _xy(cols[0], lane)
            x1, _ = _xy(cols[-1], lane)
            out.append(
                f'<line x1="{x0 - 60}" y1="{y}" x2="{x1 + 60}" y2="{y}" stroke="#9cc3e6" '
                f'stroke-width="10" stroke-linecap="round"/>'
            )
            out.append(
                f'<line x1="{x1 + 20}" y1="{y}" x2="{x1 + 62}" y2="{y}" stroke="#5b7fa6" '
                f'stroke-width="2" marker-end="url(#arrow)"><title>{escape(words["flow"])}'
                "</title></line>"
            )
    # towns: a bracket under the sections each town holds
    for town in county.towns.values():
        members = [town.outflow, *(i.section for i in town.inflows)]
        pts = [layout.pos[m] for m in members if m in layout.pos]
        if not pts:
            continue
        lane = max(ln for _, ln in pts)
        xs = [_xy(c, ln)[0] for c, ln in pts]
        y = _TOP + lane * _LANE_H + 86
        out.append(
            f'<path d="M{min(xs) - 30},{y - 6}V{y}H{max(xs) + 30}V{y - 6}" fill="none" '
            f'stroke="#889" stroke-width="1.2"/>'
            f'<text x="{(min(xs) + max(xs)) / 2}" y="{y + 16}" text-anchor="middle" '
            f'font-size="13" fill="#445" class="town-name">{escape(town.name or town.id)}</text>'
        )
    # flow arrows between sections the water passes in turn (town topology)
    for town in county.towns.values():
        for inflow in town.inflows:
            pairs = [(inflow.section, town.outflow)]
            if inflow.upstream is not None:
                pairs.append((county.towns[inflow.upstream].outflow, inflow.section))
            for a, b in pairs:
                if a not in layout.pos or b not in layout.pos:
                    continue
                (xa, ya), (xb, yb) = _xy(*layout.pos[a]), _xy(*layout.pos[b])
                dx, dy = xb - xa, yb - ya
                dist = math.hypot(dx, dy) or 1.0
                ux, uy = dx / dist, dy / dist
                out.append(
                    f'<line x1="{xa + ux * 24:.1f}" y1="{ya + uy * 24:.1f}" '
                    f'x2="{xb - ux * 26:.1f}" y2="{yb - uy * 26:.1f}" stroke="#5b7fa6" '
                    f'stroke-width="1.6" marker-end="url(#arrow)"/>'
                )
    for sid, (col, lane) in layout.pos.items():
        sec = county.sections[sid]
        x, yc = _xy(col, lane)
        g = grades.get(sid)
        miss = meets.get(sid) is False
        cname = names.get(g, str(g)) if g else words["no-data"]
        tname = names.get(sec.target_class, str(sec.target_class))
        title = f"{sec.name or sid}: {cname} ({words['target']} {tname})"
        href = escape(link.format(id=sid), quote=True)
        ring = ' stroke="#c0392b" stroke-width="4"' if miss else ' stroke="#fff" stroke-width="2"'
        out.append(
            f'<a href="{href}" class="section-link" data-section="{escape(sid, quote=True)}">'
            f"<title>{escape(title)}</title>"
            f'<circle cx="{x}" cy="{yc}" r="20" fill="{class_colour(g)}"{ring}/>'
            f'<text x="{x}" y="{yc + 5}" text-anchor="middle" font-size="13" fill="#fff" '
            f'font-weight="bold">{escape(names.get(g, str(g)) if g else "–")}</text>'
            f'<text x="{x}" y="{yc - 28}" text-anchor="middle" font-size="12" fill="#223">'
            f"{escape(sec.name or sid)}</text></a>"
        )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: ``t_ms`` and ``values`` (NaN = gap), with per-point ``marks``
    (a flag letter drawn over points that are not normal, or "" for none)."""

    label: str
    t_ms: Sequence[int]
    values: Sequence[float]
    marks: Sequence[str] = ()
    colour: str = "#1f5f9f"


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def series_svg(
    title: str,
    unit: str,
    series: Sequence[Series],
    limits: Sequence[tuple[str, float]] = (),
    target: tuple[str, float] | None = None,
    *,
    t_range: tuple[int, int] | None = None,
    tick_label: str = "%d",
    width: int = 720,
    height: int = 240,
    no_data: str = "no data in this period",
) -> str:
    """A line chart of ``series`` with horizontal class ``limits`` (label, value) and the
    ``target`` limit drawn bold; the unit on the y axis and ``title`` above."""
    import time as _time

    left, right, top, bottom = 56, 70, 28, 30
    pw, ph = width - left - right, height - top - bottom
    finite = [v for s in series for v in s.values if math.isfinite(v)]
    ts = [t for s in series for t in s.t_ms]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="series-chart">',
        f'<text x="{left}" y="16" font-size="14" font-weight="bold" fill="#223">'
        f"{escape(title)}</text>",
    ]
    if not finite or not ts:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#777" '
            f'font-size="14" class="no-data">{escape(no_data)}</text></svg>'
        )
        return "".join(out)
    lim_vals = [v for _, v in limits] + ([target[1]] if target else [])
    vmax = _nice_max(max([*finite, *[v for v in lim_vals if v <= 2 * max(finite)]]))
    t0, t1 = t_range if t_range else (min(ts), max(ts))
    span = max(t1 - t0, 1)

    def px(t: float) -> float:
        return float(left + (t - t0) / span * pw)

    def py(v: float) -> float:
        return float(top + ph - min(max(v, 0.0), vmax) / vmax * ph)

    out.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfcfe" stroke="#ccd"/>'
    )
    for i in range(5):
        v = vmax * i / 4
        y = py(v)
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#556">{v:g}</text>'
        )
    out.append(
        f'<text x="12" y="{top + ph / 2}" font-size="11" fill="#556" '
        f'transform="rotate(-90 12 {top + ph / 2})" text-anchor="middle" class="unit">'
        f"{escape(unit)}</text>"
    )
    for k in range(6):
        t = t0 + span * k // 5
        label = _time.strftime(tick_label, _time.gmtime(t / 1000))
        out.append(
            f'<text x="{px(t):.1f}" y="{height - 10}" text-anchor="middle" font-size="11" '
            f'fill="#556">{escape(label)}</text>'
        )
    for name, v in limits:
        if v > vmax:
            continue
        y = py(v)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#a9b" '
            f'stroke-dasharray="4 3"/><text x="{left + pw + 4}" y="{y + 4:.1f}" font-size="11" '
            f'fill="#667">{escape(name)}</text>'
        )
    if target is not None and target[1] <= vmax:
        y = py(target[1])
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-width="2" class="target"/><text x="{left + 4}" y="{y - 4:.1f}" '
            f'font-size="11" fill="#c0392b">{escape(target[0])}</text>'
        )
    for s in series:
        path: list[str] = []
        pen_up = True
        for t, v in zip(s.t_ms, s.values, strict=True):
            if not math.isfinite(v):
                pen_up = True
                continue
            path.append(f"{'M' if pen_up else 'L'}{px(t):.1f},{py(v):.1f}")
            pen_up = False
        if path:
            out.append(
                f'<path d="{"".join(path)}" fill="none" stroke="{s.colour}" stroke-width="1.6">'
                f"<title>{escape(s.label)}</title></path>"
            )
        for t, v, m in zip(s.t_ms, s.values, s.marks or [""] * len(s.t_ms), strict=True):
            if m:  # a flagged point without a valid value is marked on the axis
                y = py(v) - 5 if math.isfinite(v) else top + ph - 4
                out.append(
                    f'<text x="{px(t):.1f}" y="{y:.1f}" text-anchor="middle" '
                    f'font-size="10" fill="#a60" class="flag">{escape(m)}</text>'
                )
    out.append("</svg>")
    return "".join(out)

"""The run summary: delivery check, faults and what the system did, sections and ledger.

:class:`RunSummary` is plain data: :meth:`RunSummary.to_json` is the ``--summary-json``
document (top-level keys ``generated``, ``stored``, ``lost``, ``duplicates``, ``faults``,
``sections``, ``ledger`` and more), :meth:`RunSummary.print` the rich text the CLI ends with,
and :func:`render_html` a self-contained HTML page of the run (next to the collector's own
HTML report of the month).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sanduan.hil.faults import FaultRecord
    from sanduan.hil.scenario import Scenario
    from sanduan.hil.truth import DeliveryCheck

__all__ = ["RunSummary", "compare_ledgers", "compare_sections", "render_html"]

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "劣V"}


def _roman(c: Any) -> str:
    return ROMAN.get(c, "-") if isinstance(c, int) else "-"


def _ledger_key(e: Mapping[str, Any]) -> tuple[Any, ...]:
    amount = e.get("amount_yuan")
    yuan = None if amount is None else round(float(amount), 2)
    parties = (str(e.get("payer")), str(e.get("payee")))
    if not yuan:  # a row with no money in it has no direction worth comparing
        parties = (min(parties), max(parties))
    return (e.get("rule"), e.get("period"), e.get("label"), *parties, yuan, e.get("status"))


def compare_ledgers(
    stored: Mapping[str, Any] | None, truth: Mapping[str, Any] | None
) -> tuple[bool | None, list[str]]:
    """(equal?, differences) of two ``report compensation --json`` documents, entry by entry
    on rule, period, label, payer, payee, amount (to the fen) and status."""
    if stored is None or truth is None:
        return None, ["a ledger is missing"]
    a = sorted(map(_ledger_key, stored.get("ledger", [])), key=repr)
    b = sorted(map(_ledger_key, truth.get("ledger", [])), key=repr)
    if a == b:
        return True, []
    only_a = [x for x in a if x not in b]
    only_b = [x for x in b if x not in a]
    diffs = [f"store only: {x}" for x in only_a] + [f"truth only: {x}" for x in only_b]
    return False, diffs[:20]


def compare_sections(
    stored: Mapping[str, Any] | None, truth: Mapping[str, Any] | None
) -> tuple[bool | None, list[str]]:
    """(equal?, differences) of section classes and validity of two ``report sections`` docs."""
    if stored is None or truth is None:
        return None, ["a sections report is missing"]

    def key(doc: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
        return {
            s["section"]: (s.get("valid"), s.get("class"), s.get("meets_target"))
            for s in doc.get("sections", [])
        }

    a, b = key(stored), key(truth)
    diffs = [
        f"{k}: store {a.get(k)} truth {b.get(k)}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return not diffs, diffs


@dataclass
class RunSummary:
    """Everything a run produced that a person or a test wants to check."""

    scenario: str
    title: str
    month: str
    start: str
    end: str
    days: float
    speed: float
    timezone: str
    broker: str
    broker_kind: str
    store: str
    out_dir: str
    delivery: dict[str, Any]
    faults: list[dict[str, Any]]
    sections_doc: dict[str, Any] | None
    ledger_doc: dict[str, Any] | None
    truth_ledger_doc: dict[str, Any] | None
    truth_sections_doc: dict[str, Any] | None
    ledger_matches_truth: bool | None
    ledger_differences: list[str]
    sections_match_truth: bool | None
    section_differences: list[str]
    html_report: str | None
    collector_html: str | None
    warnings: list[str]
    resent: int
    in_flight_at_kill: int
    processes: dict[str, dict[str, int]]
    polls: dict[str, int]
    median_poll_gap_s: float | None
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    problems: dict[str, Any] = field(default_factory=dict)
    """What the scripted bureau and towns did with the problems the run produced."""
    platform: dict[str, Any] | None = None
    """The HJ 212 platform's delivery check (see :mod:`sanduan.hil.hj212`), if there is one."""

    @classmethod
    def build(
        cls,
        *,
        scenario: Scenario,
        out_dir: Path,
        broker: str,
        broker_kind: str,
        store: str,
        check: DeliveryCheck,
        faults: Sequence[FaultRecord],
        sections_doc: dict[str, Any] | None,
        ledger_doc: dict[str, Any] | None,
        truth_sections_doc: dict[str, Any] | None,
        truth_ledger_doc: dict[str, Any] | None,
        html: Path | None,
        warnings: list[str],
        resent: int,
        in_flight_at_kill: int,
        processes: dict[str, dict[str, int]],
        polls: dict[str, int],
        median_poll_gap_s: float | None,
        problems: dict[str, Any] | None = None,
    ) -> RunSummary:
        from sanduan.hil.scenario import iso

        lm, ldiff = compare_ledgers(ledger_doc, truth_ledger_doc)
        sm, sdiff = compare_sections(sections_doc, truth_sections_doc)
        return cls(
            scenario=scenario.name,
            title=scenario.title,
            month=scenario.month,
            start=iso(scenario.start, scenario.timezone),
            end=iso(scenario.end, scenario.timezone),
            days=scenario.days,
            speed=scenario.speed,
            timezone=scenario.timezone,
            broker=broker,
            broker_kind=broker_kind,
            store=store,
            out_dir=str(out_dir),
            delivery=check.to_json(),
            faults=[r.to_json() for r in faults],
            sections_doc=sections_doc,
            ledger_doc=ledger_doc,
            truth_ledger_doc=truth_ledger_doc,
            truth_sections_doc=truth_sections_doc,
            ledger_matches_truth=lm,
            ledger_differences=ldiff,
            sections_match_truth=sm,
            section_differences=sdiff,
            html_report=str(out_dir / "run.html"),
            collector_html=None if html is None else str(html),
            warnings=list(warnings),
            resent=resent,
            in_flight_at_kill=in_flight_at_kill,
            processes=processes,
            polls=polls,
            median_poll_gap_s=median_poll_gap_s,
            problems=dict(problems or {}),
        )

    # -- derived figures -----------------------------------------------------------------------

    @property
    def generated(self) -> int:
        return int(self.delivery["generated"])

    @property
    def stored(self) -> int:
        return int(self.delivery["stored"])

    @property
    def lost(self) -> int:
        return int(self.delivery["lost"])

    @property
    def duplicates(self) -> int:
        return int(self.delivery["duplicates"])

    @property
    def reread_stored(self) -> int:
        """Samples a replacement gateway read again that the centre stored a second time."""
        return int(self.delivery.get("reread_with_new_buffer", 0))

    @property
    def sections(self) -> list[dict[str, Any]]:
        if self.sections_doc is None:
            return []
        return list(self.sections_doc.get("sections", []))

    @property
    def county_figures(self) -> dict[str, Any]:
        if self.sections_doc is None:
            return {}
        return dict(self.sections_doc.get("county", {}))

    @property
    def ledger(self) -> list[dict[str, Any]]:
        if self.ledger_doc is None:
            return []
        return list(self.ledger_doc.get("ledger", []))

    @property
    def ok(self) -> bool:
        """No reading lost or duplicated (at the centre and at the platform, if there is one),
        no sample a replacement gateway read again stored twice, and the ledger equals the
        truth's."""
        # HJ 212 has no delivery id that survives an agent's restart: an hour whose 9014
        # arrived just before a SIGKILL, and whose cursor was not yet written, goes again under
        # a new QN. A platform keeps an hour by (MN, CN, DataTime, code), so the repeat with the
        # same value changes nothing there: duplicates are shown, lost hours and other values
        # fail the run.
        platform_ok = self.platform is None or (
            self.platform["lost"] == 0 and self.platform["value_mismatches"] == 0
        )
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.reread_stored == 0
            and self.ledger_matches_truth is True
            and platform_ok
        )

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "scenario": self.scenario,
            "title": self.title,
            "month": self.month,
            "period": {"start": self.start, "end": self.end, "days": self.days},
            "speed": self.speed,
            "broker": {"kind": self.broker_kind, "url": self.broker},
            "store": self.store,
            "out_dir": self.out_dir,
            "wall_s": round(self.wall_s, 2),
            "phases_s": {k: round(v, 2) for k, v in self.phases.items()},
            "generated": d["generated"],
            "stored": d["stored"],
            "lost": d["lost"],
            "lost_with_buffer": d.get("lost_with_buffer", 0),
            "duplicates": d["duplicates"],
            "unexpected": d["unexpected"],
            "resent": self.resent,
            "in_flight_at_kill": self.in_flight_at_kill,
            "delivery": d,
            "faults": self.faults,
            "sections": self.sections,
            "county": self.county_figures,
            "ledger": self.ledger,
            "net_yuan": (self.ledger_doc or {}).get("net_yuan", {}),
            "ledger_matches_truth": self.ledger_matches_truth,
            "ledger_differences": self.ledger_differences,
            "truth_ledger": []
            if self.truth_ledger_doc is None
            else self.truth_ledger_doc.get("ledger", []),
            "sections_match_truth": self.sections_match_truth,
            "section_differences": self.section_differences,
            "html_report": self.html_report,
            "collector_html": self.collector_html,
            "processes": self.processes,
            "polls": self.polls,
            "median_sonde_poll_gap_s": self.median_poll_gap_s,
            "problems": {k: self.problems.get(k, 0) for k in ("opened", "closed", "overdue")},
            "problem_log": self.problems.get("log", []),
            "warnings": self.warnings,
            "platform": self.platform,
            "ok": self.ok,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(self.to_json(), ensure_ascii=False, indent=2, default=str) + "\n",
            encoding="utf-8",
        )
        if path.name == "summary.json":
            (path.parent / "run.html").write_text(render_html(self), encoding="utf-8")

    # -- text ---------------------------------------------------------------------------------

    def print(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.table import Table

        c: Console = console or Console()
        c.rule(f"[bold]{self.title}[/] - {self.month}")
        sec = Table(title=f"Sections, {self.month}", show_lines=False)
        for col in ("section", "name", "target", "class", "meets", "valid", "main pollutants"):
            sec.add_column(col)
        for s in self.sections:
            meets = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[s.get("meets_target")]
            main = ", ".join(
                f"{m['item']}" + (f" ({m['exceedance']:.2f})" if m.get("exceedance") else "")
                for m in s.get("main_pollutants", [])
            )
            sec.add_row(
                s["section"],
                s.get("name", ""),
                _roman(s.get("target_class")),
                _roman(s.get("class")),
                meets,
                "yes" if s.get("valid") else "[yellow]no[/]",
                main or "-",
            )
        c.print(sec)
        cf = self.county_figures
        if cf:
            c.print(
                f"功能达标率 (meets target) {_pct(cf.get('compliance_rate'))}"
                f" ({cf.get('meets_target')}/{cf.get('valid')} valid of {cf.get('sections')}),"
                f" 优良率 (class I-III) {_pct(cf.get('good_rate'))}"
                f" ({cf.get('good')}/{cf.get('valid')})"
            )
        led = Table(title="Compensation ledger")
        for col in ("rule", "label", "payer", "payee", "amount (yuan)", "status"):
            led.add_column(col, justify="right" if col.startswith("amount") else "left")
        for e in self.ledger:
            amount = e.get("amount_yuan")
            led.add_row(
                str(e.get("rule")),
                str(e.get("label")),
                str(e.get("payer")),
                str(e.get("payee")),
                "-" if amount is None else f"{amount:,.0f}",
                str(e.get("status")),
            )
        if not self.ledger:
            led.add_row("-", "-", "-", "-", "-", "no entries")
        c.print(led)
        match = {True: "[green]equal[/]", False: "[red]DIFFERENT[/]", None: "[yellow]n/a[/]"}
        c.print(f"ledger vs the truth log's ledger: {match[self.ledger_matches_truth]}")
        for diff in self.ledger_differences[:5]:
            c.print(f"  {diff}")
        flt = Table(title="Faults and what the system did")
        for col in ("at (sim)", "fault", "outcome", "recovered"):
            flt.add_column(col)
        for f in self.faults:
            at: str = _sim_time(f.get("injected_at") or f.get("at"), self.timezone)
            if f.get("skipped"):
                flt.add_row(at, f["description"], f"[yellow]skipped: {f['skipped']}[/]", "-")
                continue
            outcome = ", ".join(_outcome(k, v) for k, v in f["outcome"].items())
            rec = f.get("recovered_s")
            flt.add_row(at, f["description"], outcome or "-", "-" if rec is None else _dur(rec))
        c.print(flt)
        dl = self.delivery
        twice = self.reread_stored
        colour = "green" if self.lost == 0 and self.duplicates == 0 and twice == 0 else "red"
        c.print(
            f"[bold]delivery[/]: generated {dl['generated']}, stored {dl['stored']},"
            f" [{colour}]lost {dl['lost']}, duplicates {dl['duplicates']}"
            + (f", re-read samples stored twice {twice}" if twice else "")
            + "[/],"
            f" unexpected {dl['unexpected']}; readings resent {self.resent};"
            f" sonde timestamps within {dl['ts_error_max_s']:.1f} s of the read"
        )
        if dl.get("lost_with_buffer") or dl.get("centre_lost_with_buffer"):
            c.print(
                f"  lost with replaced gateway buffers (unacknowledged when deleted):"
                f" {dl['lost_with_buffer']} by the truth log,"
                f" {dl.get('centre_lost_with_buffer', 'n/a')} counted by the centre"
            )
        if dl.get("forged_stored"):
            forged = ", ".join(f"{k} {v}" for k, v in dl["forged_stored"].items())
            c.print(f"  forged readings a hostile client got stored (not counted above): {forged}")
        if self.platform is not None:
            pf = self.platform
            pcol = "green" if pf["lost"] == 0 and pf["duplicates"] == 0 else "red"
            c.print(
                f"[bold]platform (HJ 212, hourly)[/]: expected {pf['expected']}, received"
                f" {pf['received']}, [{pcol}]lost {pf['lost']}, duplicates {pf['duplicates']}[/],"
                f" value mismatches {pf['value_mismatches']}; hours corrected after a late"
                f" reading {pf.get('corrections', 0)}; outages {pf['outages']}"
            )
        if self.in_flight_at_kill:
            c.print(
                f"  {self.in_flight_at_kill} reading(s) were read just before an agent SIGKILL"
                " (counted as lost if the agent had not committed them)"
            )
        if self.problems:
            p = self.problems
            c.print(
                f"[bold]problems[/] (问题): opened {p.get('opened', 0)},"
                f" closed {p.get('closed', 0)}, overdue {p.get('overdue', 0)}"
            )
            for line in p.get("log", [])[:8]:
                c.print(f"  {line}")
        for w in self.warnings:
            c.print(f"[yellow]warning[/]: {w}")
        c.print(f"run report: {self.html_report}")
        if self.collector_html:
            c.print(f"collector's HTML report of {self.month}: {self.collector_html}")
        c.print(
            f"wall time {self.wall_s:.1f} s ("
            + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in self.phases.items())
            + f"); output in {self.out_dir}"
        )


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f} %"


def _dur(s: float) -> str:
    if abs(s) < 120:
        return f"{s:.0f} s"
    if abs(s) < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}"
    if isinstance(v, dict):
        return " ".join(f"{k}:{x}" for k, x in v.items())
    return str(v)


def _outcome(key: str, value: Any) -> str:
    """One figure of a fault's outcome as text: ``down 9.2 h``, ``backlog peak 1209``."""
    if key.endswith("_s") and isinstance(value, int | float):
        return f"{key.removesuffix('_s').replace('_', ' ')} {_dur(float(value))}"
    return f"{key.replace('_', ' ')} {_fmt(value)}"


def _sim_time(t: Any, tz: str) -> str:
    if not isinstance(t, int | float):
        return "-"
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(float(t), ZoneInfo(tz)).strftime("%m-%d %H:%M")


def render_html(s: RunSummary) -> str:
    """A self-contained HTML page of the run summary (``run.html.j2``)."""
    from sanduan.shared.html import environment

    sections = [
        (
            sec["section"],
            sec.get("name", ""),
            _roman(sec.get("target_class")),
            _roman(sec.get("class")),
            {True: "yes", False: "no", None: "-"}[sec.get("meets_target")],
            "yes" if sec.get("valid") else "no",
        )
        for sec in s.sections
    ]
    ledger = [
        (
            le.get("rule"),
            le.get("label"),
            le.get("payer"),
            le.get("payee"),
            "-" if le.get("amount_yuan") is None else f"{le['amount_yuan']:,.0f}",
            le.get("status"),
        )
        for le in s.ledger
    ]
    faults = [
        (
            _sim_time(f.get("injected_at") or f.get("at"), s.timezone),
            f["description"],
            f.get("skipped") or ", ".join(_outcome(k, v) for k, v in f["outcome"].items()),
            "-" if f.get("recovered_s") is None else _dur(f["recovered_s"]),
        )
        for f in s.faults
    ]
    cf = s.county_figures
    truth = {True: "equal", False: "different", None: "not available"}[s.ledger_matches_truth]
    return (
        environment()
        .get_template("run.html.j2")
        .render(
            title=s.title,
            scenario=s.scenario,
            start=s.start,
            end=s.end,
            days=f"{s.days:g}",
            speed=f"{s.speed:g}",
            broker_kind=s.broker_kind,
            broker=s.broker,
            store=s.store,
            wall_s=s.wall_s,
            delivery_ok=s.lost == 0 and s.duplicates == 0,
            d=s.delivery,
            resent=s.resent,
            month=s.month,
            sections=sections,
            compliance=_pct(cf.get("compliance_rate")),
            good=_pct(cf.get("good_rate")),
            ledger=ledger,
            truth=truth,
            collector_html=Path(s.collector_html).name if s.collector_html else "",
            faults=faults,
            problems=s.problems,
            platform=s.platform,
            warnings=s.warnings,
        )
    )

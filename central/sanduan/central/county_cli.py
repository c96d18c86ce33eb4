"""The county bureau's daily commands: ``compute``, ``problems ...``, ``review ...`` and
``scorecard``. Heavy imports stay inside the commands.

``compute`` is the only one that writes results (aggregates, assessments, ledger, problems);
``report`` and ``scorecard`` only read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

if TYPE_CHECKING:
    from sanduan.central.core.compensation import RuleSet
    from sanduan.central.core.county import County
    from sanduan.central.core.problems import Action, Problem
    from sanduan.central.core.validity import Period
    from sanduan.central.store import Store
    from sanduan.shared.config import CentralConfig

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="central.toml: store, county and rules.")
]
StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (overrides --config).")]
CountyOpt = Annotated[
    Path | None, typer.Option("--county", help="County file (overrides --config).")
]
RulesOpt = Annotated[
    Path | None, typer.Option("--rules", help="Compensation rules file (overrides --config).")
]
ProblemRulesOpt = Annotated[
    Path | None,
    typer.Option("--problem-rules", help="Problem rules file (default: the built-in rules)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
MonthOpt = Annotated[str | None, typer.Option("--month", help="A local calendar month, YYYY-MM.")]
YearOpt = Annotated[str | None, typer.Option("--year", help="A calendar year, YYYY.")]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who acts (name, unit).")]
NoteOpt = Annotated[str, typer.Option("--note", help="What was done or decided.")]

problems_app = typer.Typer(
    help="Problems from discovery to closure (发现 交办 整改 反馈 销号).", no_args_is_help=True
)
review_app = typer.Typer(
    help="Data review (数据审核): mark readings, hours or days invalid, restore, audit.",
    no_args_is_help=True,
)


def _fail(command: str, message: str, code: int = 2) -> NoReturn:
    typer.echo(f"sanduan central {command}: {message}", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True, slots=True)
class _Ctx:
    cfg: CentralConfig
    store_url: str
    county: County | None


@contextmanager
def _errors(command: str) -> Iterator[None]:
    from sanduan.shared.errors import SanduanError, StoreError

    try:
        yield
    except StoreError as e:
        _fail(command, str(e), 1)
    except SanduanError as e:
        _fail(command, str(e))


def _ctx(
    command: str, config: Path | None, store: str | None, county: Path | None, need_county: bool
) -> _Ctx:
    from sanduan.central.core.county import load_county
    from sanduan.shared.config import CentralConfig, load_central_config

    cfg = load_central_config(config) if config is not None else CentralConfig()
    url = store or (cfg.central.store_url() if config is not None else None)
    if url is None:
        _fail(command, "no store: give --store URL or --config central.toml")
    county_path = county or cfg.central.county
    if county_path is None and need_county:
        _fail(command, "no county file: give --county FILE or set [central] county")
    return _Ctx(cfg, url, load_county(county_path) if county_path is not None else None)


@contextmanager
def _open(url: str) -> Iterator[Store]:
    from sanduan.central.store import open_store

    s = open_store(url)
    try:
        yield s
    finally:
        s.close()


def _period(command: str, month: str | None, year: str | None) -> Period:
    from sanduan.central.core.validity import Period

    if (month is None) == (year is None):
        _fail(command, "give exactly one of --month YYYY-MM or --year YYYY")
    p = Period.parse(month or year or "")
    if (month is not None) != (p.kind == "month"):
        _fail(command, f"{month or year!r} is not a {'month' if month else 'year'}")
    return p


def _comp_rules(cfg: CentralConfig, rules: Path | None, county: County) -> RuleSet:
    from sanduan.central.core.compensation import build_rules, load_rules

    path = rules or cfg.central.rules
    rs = load_rules(path) if path is not None else build_rules({})
    rs.check(county)
    return rs


def _fmt(ms: int | None, tz: str = "Asia/Shanghai") -> str:
    if ms is None:
        return "-"
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def _now_ms() -> int:
    from sanduan.central.store.base import now_ms

    return now_ms()


# --- compute -------------------------------------------------------------------------------


def compute_command(
    *,
    month: MonthOpt = None,
    year: YearOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    rules: RulesOpt = None,
    problem_rules: ProblemRulesOpt = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="End of the data to check for problems (ISO time; default: the latest reading"
            " in the period).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute a month or year from the reviewed data and store the results: aggregates,
    assessments, the ledger (with the rows that changed since the last computation, and why)
    and newly discovered problems."""
    import numpy as np

    from sanduan.central.analytics import compute, read_reviewed
    from sanduan.central.core.problems import detect, load_problem_rules
    from sanduan.central.core.review import ledger_changes, parse_time
    from sanduan.central.problems import record_discovery
    from sanduan.central.review import last_run_started, load_marks, stored_ledger

    cmd = "compute"
    period = _period(cmd, month, year)
    with _errors(cmd):
        c = _ctx(cmd, config, store, county, True)
        assert c.county is not None
        rs = _comp_rules(c.cfg, rules, c.county)
        prs = load_problem_rules(problem_rules)
        start, end = period.bounds_ms(c.county.timezone)
        with _open(c.store_url) as s:
            before = stored_ledger(s, period.kind, period.label)
            since = last_run_started(s, period.kind, period.label)
            columns = read_reviewed(s, c.county, period)
            result = compute(s, c.county, rs, c.cfg.validity, period, columns=columns)
            after = [
                {
                    "rule": e.rule,
                    "payer": e.payer,
                    "payee": e.payee,
                    "amount_yuan": e.amount_yuan,
                    "status": e.status,
                    "evidence": json.loads(json.dumps(dict(e.evidence), default=str)),
                }
                for e in result.ledger
            ]
            changes = ledger_changes(before, after) if before else []
            marks = load_marks(s, start_ms=start, end_ms=end)
            new_marks = [m.to_json() for m in marks if since is not None and m.time_ms >= since]
            if until is not None:
                data_end = int(parse_time(until, c.county.timezone).timestamp() * 1000)
            else:
                ts = np.asarray(columns["ts_ms"], dtype=np.int64)
                data_end = int(ts.max()) + 1 if ts.size else start
            window = (start, max(start, min(end, data_end)))
            findings = detect(prs, c.county, result.aggregates, columns, window)
            disc = record_discovery(s, prs, findings, window)
    doc = {
        "period": period.kind,
        "label": period.label,
        "run_id": result.run_id,
        "readings": result.readings,
        "ledger_rows": len(result.ledger),
        "ledger_changes": changes,
        "review_marks_since_last_run": new_marks,
        "problems": disc,
    }
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(
        f"{period.label}: {result.readings} readings, {len(result.ledger)} ledger rows"
        f" (run {result.run_id}); problems: {disc['findings']} findings,"
        f" {disc['opened']} opened, {disc['seen_again']} found again"
    )
    if before:
        typer.echo(f"ledger rows changed since the last computation: {len(changes)}")
        for ch in changes:
            b, a = ch["before"], ch["after"]
            typer.echo(
                f"  {ch['change']}: {ch['rule']} {ch['payer']} -> {ch['payee']}"
                f" {ch['component']} {ch['town']}:"
                f" {b and b['amount_yuan']} -> {a and a['amount_yuan']}"
            )
        for m in new_marks:
            typer.echo(
                f"  review mark {m['id']}: {m['action']} {m['station']} {m['parameter'] or '*'}"
                f" {_fmt(m['start_ms'], c.county.timezone)} ({m['reason']}, {m['reviewer']})"
            )


# --- problems ------------------------------------------------------------------------------


def _problems_table(ps: list[Problem], now: int, tz: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from sanduan.central.core.problems import STATE_NAMES_ZH

    t = Table(title=f"problems ({len(ps)})")
    for col in ("id", "state", "kind", "subject", "town", "found", "deadline", "message"):
        t.add_column(col)
    for p in ps:
        state = f"{p.state} {STATE_NAMES_ZH[p.state]}"
        if p.overdue(now):
            state += " [red]overdue[/]"
        t.add_row(
            str(p.id),
            state,
            p.kind,
            p.subject,
            p.assignee or p.town or "-",
            _fmt(p.first_ms, tz),
            _fmt(p.deadline_ms, tz),
            p.message,
        )
    Console().print(t)


def _prob_ctx(
    cmd: str, config: Path | None, store: str | None, county: Path | None
) -> tuple[_Ctx, str]:
    c = _ctx(cmd, config, store, county, False)
    return c, c.county.timezone if c.county is not None else "Asia/Shanghai"


@problems_app.command("list")
def problems_list(
    *,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    state: Annotated[
        str | None, typer.Option("--state", help="open, overdue, or one state name.")
    ] = None,
    town: Annotated[str | None, typer.Option("--town")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Problems, newest last; filter by state, town or kind."""
    from sanduan.central.core.problems import STATES, counts
    from sanduan.central.problems import load_problems

    cmd = "problems list"
    if state not in (None, "open", "overdue", *STATES):
        _fail(cmd, f"--state {state!r}: use open, overdue or one of {', '.join(STATES)}")
    with _errors(cmd):
        c, tz = _prob_ctx(cmd, config, store, county)
        with _open(c.store_url) as s:
            ps = load_problems(s)
    now = _now_ms()
    sel = [
        p
        for p in ps
        if (town is None or town in (p.town, p.assignee))
        and (kind is None or p.kind == kind)
        and (
            state is None
            or (state == "open" and p.is_open)
            or (state == "overdue" and p.overdue(now))
            or p.state == state
        )
    ]
    if as_json:
        doc = {"counts": counts(ps, now), "problems": [p.to_json(now) for p in sel]}
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    _problems_table(sel, now, tz)


@problems_app.command("show")
def problems_show(
    problem_id: Annotated[int, typer.Argument(help="Problem id.")],
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One problem with its evidence and every transition."""
    from sanduan.central.problems import get_problem

    cmd = "problems show"
    with _errors(cmd):
        c, tz = _prob_ctx(cmd, config, store, county)
        with _open(c.store_url) as s:
            p = get_problem(s, problem_id)
    now = _now_ms()
    if as_json:
        typer.echo(json.dumps(p.to_json(now), ensure_ascii=False, indent=2))
        return
    _problems_table([p], now, tz)
    typer.echo(json.dumps(dict(p.details), ensure_ascii=False, default=str))
    for e in p.events:
        typer.echo(f"  {_fmt(e.time_ms, tz)}  {e.action:<9} {e.actor}: {e.note}")


def _transition(
    *,
    cmd: str,
    action: str,
    problem_ids: list[int],
    config: Path | None,
    store: str | None,
    county: Path | None,
    problem_rules: Path | None,
    actor: str,
    note: str,
    details: dict[str, Any],
    as_json: bool,
) -> None:
    from sanduan.central.core.problems import STATE_NAMES_ZH, load_problem_rules
    from sanduan.central.problems import transition

    with _errors(cmd):
        c, tz = _prob_ctx(cmd, config, store, county)
        prs = load_problem_rules(problem_rules)
        if "deadline" in details:
            from sanduan.central.core.review import parse_time

            details["deadline_ms"] = int(parse_time(details.pop("deadline"), tz).timestamp() * 1000)
        act = cast("Action", action)
        with _open(c.store_url) as s:
            # each its own transaction, in the order given
            done = [
                transition(
                    s, prs, c.county, pid, act, actor=actor, note=note, details=dict(details)
                )
                for pid in problem_ids
            ]
    if as_json:
        docs = [p.to_json(_now_ms()) for p in done]
        typer.echo(json.dumps(docs[0] if len(docs) == 1 else docs, ensure_ascii=False, indent=2))
        return
    for p in done:
        typer.echo(
            f"problem {p.id}: {p.state} ({STATE_NAMES_ZH[p.state]}),"
            f" assignee {p.assignee or '-'}, deadline {_fmt(p.deadline_ms, tz)}"
        )


@problems_app.command("assign")
def problems_assign(
    problem_ids: Annotated[list[int], typer.Argument(help="Problem id(s).")],
    *,
    actor: ActorOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="Town (default: the one answerable for it).")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="ISO date (default: from the rule).")
    ] = None,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    problem_rules: ProblemRulesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """交办: assign a problem to the responsible town with a deadline."""
    d: dict[str, Any] = {}
    if to:
        d["to"] = to
    if deadline:
        d["deadline"] = deadline
    _transition(
        cmd="problems assign",
        action="assign",
        problem_ids=problem_ids,
        config=config,
        store=store,
        county=county,
        problem_rules=problem_rules,
        actor=actor,
        note=note,
        details=d,
        as_json=as_json,
    )


@problems_app.command("update")
def problems_update(
    problem_ids: Annotated[list[int], typer.Argument(help="Problem id(s).")],
    *,
    actor: ActorOpt,
    note: NoteOpt = "",
    evidence: Annotated[
        str | None,
        typer.Option("--evidence", help="反馈: evidence that the work is done (text, file, link)."),
    ] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    problem_rules: ProblemRulesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """整改 (a note on the work) or, with --evidence, 反馈 (reported done)."""
    if evidence is None and not note.strip():
        _fail("problems update", "give --note TEXT (整改) or --evidence TEXT (反馈)")
    action = "feedback" if evidence is not None else "rectify"
    d: dict[str, Any] = {"evidence": evidence} if evidence is not None else {}
    _transition(
        cmd="problems update",
        action=action,
        problem_ids=problem_ids,
        config=config,
        store=store,
        county=county,
        problem_rules=problem_rules,
        actor=actor,
        note=note,
        details=d,
        as_json=as_json,
    )


@problems_app.command("close")
def problems_close(
    problem_ids: Annotated[list[int], typer.Argument(help="Problem id(s).")],
    *,
    actor: ActorOpt,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    problem_rules: ProblemRulesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """销号: close a reported problem once its rule has stayed quiet long enough."""
    _transition(
        cmd="problems close",
        action="close",
        problem_ids=problem_ids,
        config=config,
        store=store,
        county=county,
        problem_rules=problem_rules,
        actor=actor,
        note=note,
        details={},
        as_json=as_json,
    )


@problems_app.command("reopen")
def problems_reopen(
    problem_ids: Annotated[list[int], typer.Argument(help="Problem id(s).")],
    *,
    actor: ActorOpt,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    problem_rules: ProblemRulesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reopen a reported or closed problem (it goes back to the town with a new deadline)."""
    _transition(
        cmd="problems reopen",
        action="reopen",
        problem_ids=problem_ids,
        config=config,
        store=store,
        county=county,
        problem_rules=problem_rules,
        actor=actor,
        note=note,
        details={},
        as_json=as_json,
    )


@problems_app.command("hotspots")
def problems_hotspots(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Where and of what kind problems recur: counts and median time to close by town, kind,
    river and month."""
    from sanduan.central.core.problems import hot_spots
    from sanduan.central.problems import load_problems

    cmd = "problems hotspots"
    with _errors(cmd):
        c, tz = _prob_ctx(cmd, config, store, county)
        with _open(c.store_url) as s:
            spots = hot_spots(load_problems(s), tz)
    if as_json:
        typer.echo(json.dumps(spots, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for by, rows in spots.items():
        t = Table(title=f"by {by}")
        for col in (by, "count", "open", "closed", "median h to close"):
            t.add_column(col)
        for r in rows:
            med = r["median_hours_to_close"]
            t.add_row(
                str(r[by]),
                str(r["count"]),
                str(r["open"]),
                str(r["closed"]),
                "-" if med is None else f"{med:g}",
            )
        con.print(t)


# --- review --------------------------------------------------------------------------------


def _mark(
    *,
    action: str,
    station: str,
    parameter: str | None,
    reading: str | None,
    hour: str | None,
    day: str | None,
    reason: str,
    reviewer: str,
    note: str,
    config: Path | None,
    store: str | None,
    county: Path | None,
    as_json: bool,
) -> None:
    from sanduan.central.analytics import validity_rules
    from sanduan.central.core.review import Mark, check_parameter, load_reasons, mark_span
    from sanduan.central.review import add_mark

    cmd = f"review {action}"
    given = [(lv, t) for lv, t in (("reading", reading), ("hour", hour), ("day", day)) if t]
    if len(given) != 1:
        _fail(cmd, "give exactly one of --reading TIME, --hour TIME or --day DATE")
    level, at = given[0]
    with _errors(cmd):
        c = _ctx(cmd, config, store, county, True)
        assert c.county is not None
        start, end = mark_span(level, at, c.county.timezone)  # type: ignore[arg-type]
        m = Mark(
            0,
            0,
            reviewer,
            action,  # type: ignore[arg-type]
            level,  # type: ignore[arg-type]
            station,
            check_parameter(parameter),
            start,
            end,
            reason,
            note,
        )
        excluded = validity_rules(c.cfg.validity, c.county).excluded_flags
        with _open(c.store_url) as s:
            before, after = add_mark(s, m, load_reasons(), excluded, c.county.stations)
    doc = {**m.to_json(), "before": before, "after": after}
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"{action} {station} {m.parameter or '*'} {level} {at}: valid readings"
        f" {before['valid']}/{before['readings']} -> {after['valid']}/{after['readings']}"
    )


StationOpt = Annotated[str, typer.Option("--station", help="Station id.")]
ParamOpt = Annotated[
    str | None, typer.Option("--param", help="One item (default: every item of the station).")
]
ReadingOpt = Annotated[
    str | None, typer.Option("--reading", help="The reading's exact time (ISO, local).")
]
HourOpt = Annotated[str | None, typer.Option("--hour", help="A local hour, e.g. 2026-05-03T14.")]
DayOpt = Annotated[str | None, typer.Option("--day", help="A local day, e.g. 2026-05-03.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Reason code (`review reasons`).")]
ReviewerOpt = Annotated[str, typer.Option("--reviewer", help="The reviewer's name.")]


def _hour(text: str | None) -> str | None:
    """Accept ``2026-05-03T14`` as well as a full ISO time."""
    if text is not None and len(text) == 13 and text[10] == "T":
        return text + ":00"
    return text


@review_app.command("mark")
def review_mark(
    *,
    station: StationOpt,
    reason: ReasonOpt,
    reviewer: ReviewerOpt,
    param: ParamOpt = None,
    reading: ReadingOpt = None,
    hour: HourOpt = None,
    day: DayOpt = None,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a reading, an hour or a day invalid (raw readings are kept as they are)."""
    _mark(
        action="invalidate",
        station=station,
        parameter=param,
        reading=reading,
        hour=_hour(hour),
        day=day,
        reason=reason,
        reviewer=reviewer,
        note=note,
        config=config,
        store=store,
        county=county,
        as_json=as_json,
    )


@review_app.command("restore")
def review_restore(
    *,
    station: StationOpt,
    reason: ReasonOpt,
    reviewer: ReviewerOpt,
    param: ParamOpt = None,
    reading: ReadingOpt = None,
    hour: HourOpt = None,
    day: DayOpt = None,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo earlier invalidations: the readings are back to their station flags."""
    _mark(
        action="restore",
        station=station,
        parameter=param,
        reading=reading,
        hour=_hour(hour),
        day=day,
        reason=reason,
        reviewer=reviewer,
        note=note,
        config=config,
        store=store,
        county=county,
        as_json=as_json,
    )


@review_app.command("validate")
def review_validate(
    *,
    station: StationOpt,
    reason: ReasonOpt,
    reviewer: ReviewerOpt,
    param: ParamOpt = None,
    reading: ReadingOpt = None,
    hour: HourOpt = None,
    day: DayOpt = None,
    note: NoteOpt = "",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept readings the station flagged (e.g. a checked stuck-value D) as valid."""
    _mark(
        action="validate",
        station=station,
        parameter=param,
        reading=reading,
        hour=_hour(hour),
        day=day,
        reason=reason,
        reviewer=reviewer,
        note=note,
        config=config,
        store=store,
        county=county,
        as_json=as_json,
    )


@review_app.command("list")
def review_list(
    station: Annotated[str | None, typer.Option("--station")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail: every mark with who, when, why, and the readings before and after."""
    from sanduan.central.review import load_audit

    cmd = "review list"
    with _errors(cmd):
        c, tz = _prob_ctx(cmd, config, store, county)
        with _open(c.store_url) as s:
            rows = load_audit(s, station=station)
    docs = [{**m.to_json(), "before": b, "after": a} for m, b, a in rows]
    if as_json:
        typer.echo(json.dumps(docs, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"review marks ({len(docs)})")
    for col in ("id", "when", "reviewer", "action", "station", "item", "span", "reason", "valid"):
        t.add_column(col)
    for d in docs:
        t.add_row(
            str(d["id"]),
            _fmt(d["time_ms"], tz),
            d["reviewer"],
            d["action"],
            d["station"],
            d["parameter"] or "*",
            f"{d['level']} {_fmt(d['start_ms'], tz)}",
            d["reason"],
            f"{d['before'].get('valid')} -> {d['after'].get('valid')}",
        )
    Console().print(t)


@review_app.command("reasons")
def review_reasons() -> None:
    """The reason codes a mark may give."""
    from sanduan.central.core.review import load_reasons

    for r in load_reasons().values():
        typer.echo(f"{r.code:<20} {r.zh}  ({r.en})")


# --- scorecard -----------------------------------------------------------------------------


def scorecard_document(
    s: Store,
    county: County,
    result: Any,
    score_rules: Path | None = None,
) -> dict[str, Any]:
    """The scorecard of an evaluated period (read-only)."""
    from sanduan.central.core.scorecard import cards_json, load_score_rules, score_towns
    from sanduan.central.problems import load_problems
    from sanduan.central.review import load_marks

    rules = load_score_rules(score_rules)
    window = result.period.bounds_ms(county.timezone)
    cards = score_towns(
        rules,
        county,
        result.assessment,
        result.aggregates,
        load_problems(s),
        load_marks(s, start_ms=window[0], end_ms=window[1]),
        window,
    )
    return {"period": result.period.kind, "label": result.period.label, **cards_json(cards, rules)}


def scorecard_command(
    *,
    month: MonthOpt = None,
    year: YearOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    rules: RulesOpt = None,
    score_rules: Annotated[
        Path | None, typer.Option("--score-rules", help="Scoring rules (default: built-in).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The town scorecard (生态报表) for a month or a year: ranked, each score with evidence."""
    from sanduan.central.analytics import evaluate

    cmd = "scorecard"
    period = _period(cmd, month, year)
    with _errors(cmd):
        c = _ctx(cmd, config, store, county, True)
        assert c.county is not None
        rs = _comp_rules(c.cfg, rules, c.county)
        with _open(c.store_url) as s:
            result = evaluate(s, c.county, rs, c.cfg.validity, period)
            doc = scorecard_document(s, c.county, result, score_rules)
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{period.label} town scorecard (full marks {doc['full_marks']:g})")
    t.add_column("rank")
    t.add_column("town")
    t.add_column("total")
    for it in doc["items"]:
        t.add_column(it["zh"] or it["id"])
    for town in doc["towns"]:
        t.add_row(
            str(town["rank"]),
            town["name"],
            f"{town['total']:.1f}",
            *(f"{i['score']:.1f}" for i in town["items"]),
        )
    Console().print(t)


def register(app: typer.Typer) -> None:
    """Add the commands to ``sanduan central``."""
    app.command("compute")(compute_command)
    app.command("scorecard")(scorecard_command)
    app.add_typer(problems_app, name="problems")
    app.add_typer(review_app, name="review")

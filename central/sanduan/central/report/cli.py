"""``sanduan central report sections``, ``report compensation`` and ``report dead-letters``.

The first two evaluate the period from the reviewed readings in the store without writing anything
(:func:`sanduan.central.analytics.evaluate`; storing results is ``sanduan central compute``)
and print a table, or JSON with ``--json``; ``--csv`` and ``--html`` write files as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from sanduan.central.analytics import AnalyticsResult

FAILED = 1
USAGE_ERROR = 2

MonthOpt = Annotated[str | None, typer.Option("--month", help="A local calendar month, YYYY-MM.")]
YearOpt = Annotated[str | None, typer.Option("--year", help="A calendar year, YYYY.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="central.toml: store, county and rules files.")
]
StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (overrides --config).")]
CountyOpt = Annotated[
    Path | None, typer.Option("--county", help="County file (overrides --config).")
]
RulesOpt = Annotated[Path | None, typer.Option("--rules", help="Rules file (overrides --config).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write CSV to this file.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write an HTML report here.")]
LangOpt = Annotated[
    str, typer.Option("--lang", help="Language of the HTML report: zh (default) or en.")
]


def _fail(command: str, message: str, code: int = USAGE_ERROR) -> NoReturn:
    typer.echo(f"sanduan central report {command}: {message}", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True, slots=True)
class _Options:
    month: str | None
    year: str | None
    config: Path | None
    store: str | None
    county: Path | None
    rules: Path | None


def _run(command: str, o: _Options, quiet: bool) -> AnalyticsResult:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sanduan.central.analytics import evaluate
    from sanduan.central.core.compensation import RuleSet, build_rules, load_rules
    from sanduan.central.core.county import load_county
    from sanduan.central.core.validity import Period
    from sanduan.central.store import open_store
    from sanduan.shared.config import CentralConfig, load_central_config
    from sanduan.shared.errors import ConfigError, InputError, StoreError

    if (o.month is None) == (o.year is None):
        _fail(command, "give exactly one of --month YYYY-MM or --year YYYY")
    try:
        period = Period.parse(o.month or o.year or "")
        if (o.month is not None) != (period.kind == "month"):
            _fail(command, f"{o.month or o.year!r} is not a {'month' if o.month else 'year'}")
        cfg = load_central_config(o.config) if o.config is not None else CentralConfig()
        store_url = o.store or (cfg.central.store_url() if o.config is not None else None)
        county_path = o.county or cfg.central.county
        rules_path = o.rules or cfg.central.rules
        if store_url is None:
            _fail(command, "no store: give --store URL or --config central.toml")
        if county_path is None:
            _fail(command, "no county file: give --county FILE or set [central] county")
        county = load_county(county_path)
        rules: RuleSet = load_rules(rules_path) if rules_path is not None else build_rules({})
        rules.check(county)
    except (ConfigError, InputError) as e:
        _fail(command, str(e))
    try:
        store = open_store(store_url)
    except StoreError as e:
        _fail(command, str(e), FAILED)
    try:
        console = Console(stderr=True, quiet=quiet)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{period.label}: read readings", total=None)

            def step(name: str) -> None:
                progress.update(task, description=f"{period.label}: {name}")

            return evaluate(store, county, rules, cfg.validity, period, step=step)
    except (StoreError, InputError) as e:
        _fail(command, str(e), FAILED)
    finally:
        store.close()


def _extras(o: _Options, result: AnalyticsResult) -> dict[str, Any]:
    """The problems and the town scorecard for the HTML page (read from the store, nothing
    written)."""
    from sanduan.central.core.problems import counts, hot_spots
    from sanduan.central.county_cli import scorecard_document
    from sanduan.central.problems import load_problems
    from sanduan.central.store import open_store
    from sanduan.central.store.base import now_ms
    from sanduan.shared.config import load_central_config

    url = o.store
    if url is None and o.config is not None:
        url = load_central_config(o.config).central.store_url()
    if url is None:
        return {}
    s = open_store(url)
    try:
        now = now_ms()
        start, end = result.period.bounds_ms(result.county.timezone)
        ps = [p for p in load_problems(s) if start <= p.first_ms < end]
        problems = {
            "rows": [p.to_json(now) for p in ps],
            "counts": counts(ps, now),
            "hot_spots": hot_spots(ps, result.county.timezone),
        }
        card = scorecard_document(s, result.county, result)
    finally:
        s.close()
    return {"problems": problems, "scorecard": card}


def _outputs(
    command: str,
    result: AnalyticsResult,
    *,
    as_json: bool,
    csv: Path | None,
    html_path: Path | None,
    o: _Options,
    lang: str,
) -> None:
    from rich.console import Console

    from sanduan.central import report
    from sanduan.central.report import tables
    from sanduan.central.report.html import render_html
    from sanduan.central.report.i18n import check_lang
    from sanduan.shared.errors import InputError, StoreError

    try:
        lg = check_lang(lang)
    except InputError as e:
        _fail(command, str(e))
    columns: tuple[str, ...]
    if command == "sections":
        doc = report.sections_document(result)
        columns, rows = report.SECTION_COLUMNS, report.section_rows(result)
        views = [
            tables.county_table(result, lg),
            tables.sections_table(result, lg),
            tables.towns_table(result, lg),
        ]
    else:
        doc = report.compensation_document(result)
        columns, rows = report.LEDGER_COLUMNS, report.ledger_rows(result)
        views = [tables.ledger_table(result, lg), tables.towns_table(result, lg)]
    try:
        if csv is not None:
            report.write_csv(csv, columns, rows)
        if html_path is not None:
            from sanduan.central.report.html import problems_view, scorecard_view

            ex = _extras(o, result)
            pv = None
            if "problems" in ex:
                p = ex["problems"]
                pv = problems_view(result, p["rows"], p["counts"], p["hot_spots"], lg)
            sv = scorecard_view(ex["scorecard"], lg) if "scorecard" in ex else None
            page = render_html(result, command, lg, problems=pv, scorecard=sv)
            html_path.write_text(page, encoding="utf-8")
    except OSError as e:
        _fail(command, f"cannot write {e.filename}: {e.strerror}", FAILED)
    except (InputError, StoreError) as e:
        _fail(command, str(e), FAILED if isinstance(e, StoreError) else USAGE_ERROR)
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        return
    console = Console()
    for v in views:
        console.print(v)


def sections_command(
    *,
    month: MonthOpt = None,
    year: YearOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    rules: RulesOpt = None,
    as_json: JsonOpt = False,
    csv: CsvOpt = None,
    html: HtmlOpt = None,
    lang: LangOpt = "zh",
) -> None:
    """Section classes, target compliance, 功能达标率 and 优良率 for a month or a year."""
    o = _Options(month, year, config, store, county, rules)
    result = _run("sections", o, as_json)
    _outputs("sections", result, as_json=as_json, csv=csv, html_path=html, o=o, lang=lang)


def compensation_command(
    *,
    month: MonthOpt = None,
    year: YearOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: CountyOpt = None,
    rules: RulesOpt = None,
    as_json: JsonOpt = False,
    csv: CsvOpt = None,
    html: HtmlOpt = None,
    lang: LangOpt = "zh",
) -> None:
    """The compensation ledger for a month or a year, with each amount's evidence (--json)."""
    o = _Options(month, year, config, store, county, rules)
    result = _run("compensation", o, as_json)
    _outputs("compensation", result, as_json=as_json, csv=csv, html_path=html, o=o, lang=lang)


def _since_ms(command: str, since: str | None) -> int | None:
    from datetime import UTC, datetime

    if since is None:
        return None
    try:
        when = datetime.fromisoformat(since)
    except ValueError:
        _fail(command, f"--since {since!r} is not an ISO 8601 date or time (2026-11-30T08:00)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


DEAD_LETTER_KEYS = ("station", "topic", "reason", "bytes", "sha256", "received")
"""The keys of each object ``report dead-letters --json`` prints."""


def dead_letters_command(
    *,
    station: Annotated[
        str | None, typer.Option("--station", help="Only this station's dead letters.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only those received since this ISO 8601 time (UTC if bare)."),
    ] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Messages the collector rejected, one row each: station, topic, reason (oversize,
    undecodable, invalid, origin, conflict, timestamp, store, internal), payload size and
    SHA-256, time received."""
    from sanduan.central.app import resolve_store_url
    from sanduan.central.store import open_store
    from sanduan.shared.errors import SanduanError

    since_ms = _since_ms("dead-letters", since)
    try:
        s = open_store(resolve_store_url(config, store))
        try:
            rows = s.dead_letters(station=station, since_ms=since_ms)
        finally:
            s.close()
    except SanduanError as e:
        _fail("dead-letters", str(e))
    records = [
        dict(
            zip(
                DEAD_LETTER_KEYS,
                (r.station, r.topic, r.reason, r.size_bytes, r.sha256, _iso(r.received_ms)),
                strict=True,
            )
        )
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(records, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters ({len(rows)})")
    for col in ("received (UTC)", "station", "reason", "bytes", "sha256", "detail"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for r, rec in zip(rows, records, strict=True):
        detail = (r.detail or "").replace("\n", " ")
        table.add_row(
            str(rec["received"]),
            r.station or "-",
            r.reason,
            "-" if r.size_bytes is None else str(r.size_bytes),
            (r.sha256 or "-")[:16],
            detail[:80] + ("..." if len(detail) > 80 else ""),
        )
    Console().print(table)


def register(report_app: typer.Typer) -> None:
    """Add the commands to the ``report`` sub-app."""
    report_app.command("sections")(sections_command)
    report_app.command("compensation")(compensation_command)
    report_app.command("dead-letters")(dead_letters_command)

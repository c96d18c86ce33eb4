"""``sanduan edge``: the station agent's commands. Heavy imports stay inside the commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="The station edge agent: poll, buffer, grade, forward.", no_args_is_help=True
)

CONFIG_ERROR = 2
"""Exit status of a configuration error or a damaged buffer: an operator must act."""
RUN_FAILED = 1
"""Exit status of an agent that stopped on a failure (systemd restarts it)."""


def _fail(command: str, message: str, code: int = CONFIG_ERROR) -> NoReturn:
    typer.echo(f"sanduan edge {command}: {message}", err=True)
    raise typer.Exit(code)


def station_report(path: Path) -> tuple[list[str], int]:
    """The text ``check-config`` prints for a station file, and its number of warnings.

    Raises ConfigError. Also what the golden plan tests compare against.
    """
    from sanduan.edge.core.plan import format_bus_plan
    from sanduan.edge.core.timing import bus_timing, format_bus_timing
    from sanduan.edge.devices import load_station

    config, plans = load_station(path)
    lines = [f"station {config.station.id}: {len(plans)} bus{'es' if len(plans) != 1 else ''}"]
    warnings = 0
    for plan in plans:
        timing = bus_timing(plan)
        warnings += len(timing.warnings)
        lines.extend(format_bus_plan(plan))
        lines.extend(format_bus_timing(timing))
    return lines, warnings


@app.command("check-config")
def check_config(  # noqa: PLR0917 (typer: one parameter per option)
    config: Annotated[Path, typer.Argument(help="The station TOML file.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when there are warnings.")
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also connect to the broker with the configured credentials and TLS.",
        ),
    ] = False,
    no_ports: Annotated[
        bool,
        typer.Option(
            "--no-ports",
            help="Do not open the serial ports (the agent retries a missing port by itself and"
            " keeps the other buses running).",
        ),
    ] = False,
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only",
            help="Only validate the file and print the read plans (on a machine without the"
            " station's ports and directories).",
        ),
    ] = False,
    mqtt_password_file: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-password-file",
            help="The MQTT password file `run` is given (overrides uplink.password_file).",
        ),
    ] = None,
) -> None:
    """Validate a station file; print each bus's read plan and bus timing, with warnings; then
    check what `run` needs: the buffer directory, secret and TLS files, the serial ports, and
    with --online the broker. Exit 2 on any error."""
    from sanduan.shared.config import load_station_config
    from sanduan.shared.errors import ConfigError
    from sanduan.shared.preflight import Probes, count, error, station_checks, summary

    try:
        cfg = load_station_config(config)
    except ConfigError as exc:
        _fail("check-config", str(exc))
    from sanduan.edge.runner import login_overrides

    cfg = login_overrides(mqtt_password_file)(cfg)
    try:
        lines, warnings = station_report(config)
    except ConfigError as exc:
        if plan_only:
            _fail("check-config", str(exc))
        lines, warnings = [], 0
        checks = [error("registers", str(exc), "correct the file and key named")]
    else:
        checks = []
    for line in lines:
        typer.echo(line)
    if plan_only:
        typer.echo(f"{warnings} warning{'s' if warnings != 1 else ''}")
        if strict and warnings:
            raise typer.Exit(1)
        return
    checks += station_checks(cfg, Probes(), online=online, ports=not no_ports)
    for c in checks:
        typer.echo(c.line())
    typer.echo(summary(checks, warnings))
    warnings += count(checks, "warning")
    errors = count(checks, "error")
    if errors:
        bad = ", ".join(dict.fromkeys(c.what for c in checks if c.status == "error"))
        _fail("check-config", f"{bad}: fix {'these' if errors > 1 else 'this'} before `run`")
    if strict and warnings:
        raise typer.Exit(1)


def _parameter_name(code: str) -> str:
    try:
        from sanduan.shared.params import by_code
    except ImportError:  # pragma: no cover - the registry ships with sanduan
        return code
    try:
        return by_code(code).name
    except Exception:  # an unknown code: show the code itself
        return code


def _grader(water_body: str) -> Callable[[str, float], str] | None:
    """A function value -> class label, or None when grading is not available."""
    try:
        from sanduan.shared.grading import class_label, grade_sample
        from sanduan.shared.model import WaterBody
    except ImportError:  # pragma: no cover
        return None

    def grade(code: str, value: float) -> str:
        try:
            result = grade_sample({code: value}, water_body=WaterBody(water_body))
        except Exception:  # not gradable (unknown parameter, negative value)
            return "-"
        item = next(iter(result.items.values()))
        return class_label(item.grade)

    return grade


@app.command("poll")
def poll(
    config: Annotated[Path, typer.Option("--config", "-c", help="The station TOML file.")],
    once: Annotated[
        bool, typer.Option("--once", help="Poll every device once, print a table and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Poll the station's Modbus devices: one round (--once) or continuously until Ctrl-C."""
    import asyncio
    import contextlib
    import logging
    import math

    from sanduan.edge.core.model import PolledValue
    from sanduan.edge.devices import load_station
    from sanduan.edge.io.bus import BusPoller, run_pollers
    from sanduan.shared.clock import clock_from_env
    from sanduan.shared.errors import ConfigError, DeviceError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # sanduan.edge.bus says it better
    try:
        station, plans = load_station(config)
        clock = clock_from_env()
    except ConfigError as exc:
        _fail("poll", str(exc))

    if not once:

        def show(values: list[PolledValue]) -> None:
            for v in values:
                typer.echo(f"{v.ts_ms} {v.device} {v.code} {v.value:g} {v.flag.value}")

        pollers = [BusPoller(p, clock, show) for p in plans]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_pollers(pollers))
        return

    async def one_round() -> list[tuple[BusPoller, list[PolledValue] | str]]:
        pollers = [BusPoller(p, clock) for p in plans]

        async def run(p: BusPoller) -> list[PolledValue] | str:
            try:
                return await p.poll_once()
            except DeviceError as exc:
                return str(exc)
            finally:
                await p.close()

        results = await asyncio.gather(*(run(p) for p in pollers))
        return list(zip(pollers, results, strict=True))

    rounds = asyncio.run(one_round())

    from rich.console import Console
    from rich.table import Table

    grade = _grader(station.station.water_body.value)
    table = Table(title=f"station {station.station.id}: one poll round")
    for col in ("bus", "device", "parameter", "value", "flag"):
        table.add_column(col, justify="right" if col == "value" else "left")
    if grade is not None:
        table.add_column("class", justify="center")
    problems: list[str] = []
    for poller, result in rounds:
        if isinstance(result, str):
            problems.append(result)
            continue
        for v in result:
            row = [poller.name, v.device, _parameter_name(v.code), f"{v.value:.6g}", v.flag.value]
            if grade is not None:
                ok = v.flag.value == "N" and math.isfinite(v.value)
                row.append(grade(v.code, v.value) if ok else "-")
            table.add_row(*row)
        for stats in poller.devices.values():
            if stats.polls_failed:
                errors = ", ".join(f"{k} {n}" for k, n in sorted(stats.errors.items()))
                problems.append(f"{stats.last_error} [{errors}]")
            elif stats.unchanged:
                problems.append(f"bus {poller.name}: device {stats.device}: result unchanged")
    console = Console(width=120)
    console.print(table)
    for p in problems:
        console.print(p, markup=False, highlight=False)
    failed = any(
        isinstance(r, str) or any(s.polls_failed for s in p.devices.values()) for p, r in rounds
    )
    if failed:
        raise typer.Exit(1)


# --- the agent and its buffer -------------------------------------------------------------


@app.command("run")
def run_command(  # noqa: PLR0917 (typer: one parameter per option)
    config: Annotated[Path, typer.Option("--config", "-c", help="The station TOML file.")],
    db: Annotated[
        Path | None, typer.Option("--db", help="Buffer file (default: buffer.path).")
    ] = None,
    mqtt_password_file: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-password-file",
            help="The MQTT password file (overrides uplink.password_file), e.g. the systemd"
            " credential %d/mqtt-password.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")] = "INFO",
    log_format: Annotated[str, typer.Option("--log-format", help="json or text.")] = "json",
    fake_source: Annotated[
        str | None,
        typer.Option(
            "--fake-source",
            hidden=True,
            help="PERIOD_S[:N]: deterministic values instead of the buses (tests, rigs).",
        ),
    ] = None,
) -> None:
    """Run the station agent: poll, buffer, grade, forward. Stops cleanly on SIGTERM/SIGINT;
    SIGHUP reloads the station file (a file that does not validate is refused, logged)."""
    # ``sanduan edge run`` normally starts in sanduan.edge.runner without typer; this command
    # is the same agent for what that fast path leaves to typer (see sanduan.edge.runner).
    from sanduan.edge.runner import run

    code, message = run(
        config,
        db=db,
        log_level=log_level,
        log_format=log_format,
        fake_source=fake_source,
        mqtt_password_file=mqtt_password_file,
    )
    if code:
        _fail("run", message, code)


@app.command("outbox")
def outbox_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The station TOML file.")
    ] = None,
    db: Annotated[Path | None, typer.Option("--db", help="The buffer file itself.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    salvage: Annotated[
        Path | None,
        typer.Option(
            "--salvage",
            help="Copy every readable unacknowledged reading of a damaged buffer into a new"
            " buffer at this path (a new stream).",
        ),
    ] = None,
) -> None:
    """Show the buffer: depth, oldest unacknowledged age, last ack, drops, rejections, days of
    coverage. With --salvage, rescue a damaged buffer into a new one."""
    from sanduan.edge.app import outbox_report, print_outbox_report
    from sanduan.shared.errors import SanduanError

    if config is None and db is None:
        _fail("outbox", "give --config station.toml or --db PATH")
    if salvage is not None:
        _salvage(config, db, salvage, as_json)
        return
    try:
        report = outbox_report(config, db)
    except SanduanError as exc:
        _fail("outbox", str(exc))
    if as_json:
        import json

        typer.echo(json.dumps(report, indent=2))
    else:
        print_outbox_report(report)


def _salvage(config: Path | None, db: Path | None, target: Path, as_json: bool) -> None:
    import json

    from rich.progress import Progress

    from sanduan.edge.app import salvage_buffer
    from sanduan.shared.errors import SanduanError

    try:
        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task("reading the damaged buffer", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            r = salvage_buffer(config, db, target, progress)
    except SanduanError as exc:
        _fail("outbox", str(exc))
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    span = f" (old seqs {r['old_first_seq']}..{r['old_last_seq']})" if r["copied"] else ""
    typer.echo(
        f"salvaged {r['copied']} unacknowledged readings of station {r['station']}{span}"
        f" into {r['target']}, stream {r['new_stream']} (was {r['old_stream']})"
    )
    typer.echo(
        f"unreadable seqs {r['unreadable_seqs']}, damaged rows {r['invalid_rows']},"
        f" acknowledged left behind {r['acknowledged_left']}, rejected left behind"
        f" {r['rejected_left']}, aggregates {r['aggregates']}, events {r['events']}"
    )
    typer.echo(f"point buffer.path at {r['target']} and start the agent")

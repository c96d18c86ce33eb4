"""``sanduan hil`` and ``sanduan demo``. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

app = typer.Typer(
    help="Hardware-in-the-loop rig: simulated devices and county scenarios.", no_args_is_help=True
)

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="'embedded' (default: an amqtt process the rig owns), 'mosquitto' (a private"
        " Mosquitto the rig starts) or mqtt://host:port (an external broker, never killed).",
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Collector store: default SQLite in the output directory; postgresql://... uses a"
        " schema of its own in that database (dropped after the run).",
    ),
]
SummaryOpt = Annotated[
    Path | None, typer.Option("--summary-json", help="Also write the run summary JSON here.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
SerialOpt = Annotated[
    str | None,
    typer.Option(
        "--serial",
        help="Virtual serial pairs: auto (socat when installed), socat, or python (the relay).",
    ),
]


def _run(
    scenario: str,
    *,
    out: Path,
    broker: str | None,
    store: str | None,
    days: float | None,
    speed: float | None,
    summary_json: Path | None,
    quiet: bool,
    keep_schema: bool = False,
    serial: str | None = None,
) -> None:
    from rich.console import Console

    from sanduan.hil.ports import Backend
    from sanduan.hil.rig import RigOptions, run_scenario
    from sanduan.hil.scenario import load_scenario
    from sanduan.shared.errors import SanduanError

    try:
        sc = load_scenario(scenario)
    except SanduanError as e:
        typer.echo(f"sanduan hil: {e}", err=True)
        raise typer.Exit(2) from None
    if serial not in (None, "auto", "socat", "python"):
        typer.echo(f"sanduan hil: --serial must be auto, socat or python, not {serial!r}", err=True)
        raise typer.Exit(2)
    opts = RigOptions(
        out_dir=out,
        broker=broker,
        store=store,
        days=days,
        speed=speed,
        summary_json=summary_json,
        progress=not quiet,
        keep_schema=keep_schema,
        serial=cast(Backend | None, serial),  # checked above
    )
    try:
        summary = run_scenario(sc, opts)
    except KeyboardInterrupt:
        typer.echo("sanduan hil: interrupted; every process the rig started is stopped", err=True)
        raise typer.Exit(130) from None
    except (SanduanError, OSError, RuntimeError, ValueError) as e:
        typer.echo(f"sanduan hil: {e}", err=True)
        raise typer.Exit(2) from None
    summary.print(Console())
    if not summary.ok:
        raise typer.Exit(1)


@app.command("run")
def run_command(
    scenario: Annotated[
        str, typer.Argument(help="Scenario file, or a bundled scenario's name (county, ...).")
    ],
    *,
    summary_json: SummaryOpt = None,
    broker: BrokerOpt = None,
    store: StoreOpt = None,
    days: Annotated[
        float | None, typer.Option("--days", help="Simulate only the first N days.", min=0.01)
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed", help="Simulated seconds per real second (overrides the file).", min=1
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/hil"),
    quiet: QuietOpt = False,
    keep_schema: Annotated[
        bool, typer.Option("--keep-schema", help="Keep the PostgreSQL schema after the run.")
    ] = False,
    serial: SerialOpt = None,
) -> None:
    """Run a scenario: broker, collector, one agent per station, simulated devices, faults.

    Ends with the month's section classes, 功能达标率 and 优良率, the compensation ledger and the
    delivery check (readings generated, stored, lost, duplicated, from the truth log against
    the collector's store). Exit status 1 when a reading was lost or duplicated or the ledger
    differs from the one computed from the truth log; 2 on a usage or setup error.
    """
    _run(
        scenario,
        out=out,
        broker=broker,
        store=store,
        days=days,
        speed=speed,
        summary_json=summary_json,
        quiet=quiet,
        keep_schema=keep_schema,
        serial=serial,
    )


@app.command("check")
def check_command(
    scenario: Annotated[str, typer.Argument(help="Scenario file or bundled scenario name.")],
) -> None:
    """Validate a scenario and print what it will run."""
    from rich.console import Console
    from rich.table import Table

    from sanduan.hil.faults import build_timeline
    from sanduan.hil.scenario import iso, load_scenario
    from sanduan.shared.errors import SanduanError

    try:
        sc = load_scenario(scenario)
        faults = build_timeline(sc)
    except SanduanError as e:
        typer.echo(f"sanduan hil: {e}", err=True)
        raise typer.Exit(2) from None
    c = Console()
    c.print(
        f"[bold]{sc.title}[/] ({sc.source}): {len(sc.stations)} stations,"
        f" {iso(sc.start, sc.timezone)} + {sc.days:g} days at {sc.speed:g}x"
        f" = {sc.real_duration_s:.0f} s, month {sc.month}"
    )
    st = Table(title="stations")
    for col in ("station", "section", "target", "buses", "devices"):
        st.add_column(col)
    for s in sc.stations:
        st.add_row(
            s.id,
            s.section or "-",
            str(s.target_class),
            ", ".join(f"{b.name} {b.baudrate} 8{b.parity}{b.stopbits}" for b in s.buses),
            ", ".join(
                f"{d.name}@{d.slave} {d.poll_period_s:g}s"
                + (f" cycle {d.analyzer.cycle_s:g}s" if d.analyzer else "")
                for d in s.devices
            ),
        )
    c.print(st)
    ev = Table(title="events and faults")
    for col in ("at", "what", "duration"):
        ev.add_column(col)
    for event in sc.event_specs:
        ev.add_row(
            iso(sc.start + event.start, sc.timezone)[:16],
            f"{event.kind}" + (f" in {event.town}" if event.town else ""),
            f"{event.duration / 3600:g} h",
        )
    for f in faults:
        ev.add_row(iso(f.at, sc.timezone)[:16], f.describe(), f"{f.duration / 3600:g} h")
    c.print(ev)


@app.command("list")
def list_command() -> None:
    """List the bundled scenarios."""
    from sanduan.hil.scenario import bundled_scenarios, load_scenario

    for name, path in bundled_scenarios().items():
        sc = load_scenario(path)
        typer.echo(f"{name:10} {sc.title} ({len(sc.stations)} stations, {sc.days:g} days)")


def demo_command(
    *,
    broker: BrokerOpt = None,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("out/demo"),
    days: Annotated[
        float | None, typer.Option("--days", help="Simulate only the first N days.", min=0.01)
    ] = None,
    summary_json: SummaryOpt = None,
    quiet: QuietOpt = False,
    serial: SerialOpt = None,
) -> None:
    """Run the county demo: a month of nine stations, faults included, in about two minutes.

    The same as ``sanduan hil run county --out out/demo`` (embedded broker, SQLite). With
    ``--broker mqtt://127.0.0.1:1883 --store postgresql://127.0.0.1/test`` it runs on Mosquitto
    and PostgreSQL.
    """
    try:
        _run(
            "county",
            out=out,
            broker=broker,
            store=store,
            days=days,
            speed=None,
            summary_json=summary_json,
            quiet=quiet,
            serial=serial,
        )
    finally:
        _console_hint(out, store)


def _console_hint(out: Path, store: str | None) -> None:
    """Make a console account on the demo's store and say how to open the console on it."""
    import os
    import secrets
    import subprocess
    import sys

    url = store or f"sqlite:///{(out / 'central.db').resolve()}"
    county = (out / "config" / "county.toml").resolve()
    if store is None and not (out / "central.db").exists():
        return
    password = secrets.token_urlsafe(9)
    made = subprocess.run(
        [
            *(sys.executable, "-m", "sanduan.cli", "central", "users", "add", "demo"),
            *("--role", "admin", "--store", url),
        ],
        env={**os.environ, "SANDUAN_CONSOLE_PASSWORD": password},
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        typer.echo(f"console account not made: {made.stderr.strip()}", err=True)
        return
    (out / "console-password.txt").write_text(password + "\n", encoding="utf-8")
    typer.echo(
        "\nweb console on the demo's store:\n"
        f"  .venv/bin/sanduan central console --store {url} --county {county}\n"
        f"  then open http://127.0.0.1:8480/ and log in as demo / {password}"
        f" (also in {out / 'console-password.txt'})"
    )

"""``sanduan central``: the collector's commands. Heavy imports stay inside the commands.

``report_app`` is the ``sanduan central report`` group; report commands are added to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from sanduan.central.county_cli import register as register_county_commands
from sanduan.central.report.cli import register as register_report_commands
from sanduan.central.station_cli import station_app
from sanduan.shared.clock import age_text

app = typer.Typer(
    help="The central collector: ingest, store, assess, compensate, report.", no_args_is_help=True
)
report_app = typer.Typer(help="Reports from the central database.", no_args_is_help=True)
app.add_typer(report_app, name="report")
register_report_commands(report_app)
register_county_commands(app)
app.add_typer(station_app, name="station")


def _add_console_commands() -> None:
    from sanduan.central.web.cli import console_command, users_app

    app.command("console")(console_command)
    app.add_typer(users_app, name="users")


_add_console_commands()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Collector config (central.toml).")
]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (overrides the config's central.store)."),
]


MqttUserOpt = Annotated[
    str | None,
    typer.Option(
        "--mqtt-user",
        help="MQTT user name of this collector process (overrides mqtt.username): each"
        " collector of a group has its own, e.g. central-%i in the systemd unit.",
    ),
]
MqttPasswordFileOpt = Annotated[
    Path | None,
    typer.Option("--mqtt-password-file", help="Its password file (overrides mqtt.password_file)."),
]

CONFIG_ERROR = 2
"""Exit status of a configuration error: an operator must act (systemd does not restart)."""
RUN_FAILED = 1
"""Exit status of a collector that stopped on a failure (systemd restarts it)."""


@contextmanager
def errors(failure: int = CONFIG_ERROR) -> Iterator[None]:
    """Turn sanduan's errors into one line on stderr: exit status 2 for a configuration error,
    ``failure`` for any other (a store that cannot be opened, for one)."""
    from sanduan.shared.errors import ConfigError, SanduanError

    try:
        yield
    except ConfigError as e:
        typer.echo(f"sanduan central: {e}", err=True)
        raise typer.Exit(CONFIG_ERROR) from None
    except SanduanError as e:
        typer.echo(f"sanduan central: {e}", err=True)
        raise typer.Exit(failure) from None


@app.command("run")
def run_command(  # noqa: PLR0917 (typer: one parameter per option)
    config: Annotated[Path, typer.Option("--config", "-c", help="Collector config.")],
    store: StoreOpt = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="MQTT client id (overrides mqtt.client_id): one per collector process, e.g."
            " sanduan-central-%i in the systemd unit, so its broker session survives a restart.",
        ),
    ] = None,
    mqtt_user: MqttUserOpt = None,
    mqtt_password_file: MqttPasswordFileOpt = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Create or upgrade the database schema first.")
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="host:port of /metrics and /healthz (overrides [metrics] listen): each collector"
            " on one host needs its own, e.g. 127.0.0.1:947%i in the systemd unit.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the collector: subscribe, store, acknowledge, ask for gaps. Stops on SIGTERM.

    Exits 2 on a configuration error (systemd leaves it stopped), 1 on any other failure, such
    as a store it cannot open (systemd starts it again)."""
    from sanduan.central.app import serve, setup_logging, with_login
    from sanduan.shared.config import MetricsConfig, load_central_config, parse_model

    setup_logging(verbose)
    with errors(RUN_FAILED):
        cfg = with_login(load_central_config(config), mqtt_user, mqtt_password_file)
        if metrics_listen is not None:
            m = parse_model(MetricsConfig, {"listen": metrics_listen}, "--metrics-listen")
            cfg = cfg.replace(metrics=m)
        serve(cfg, store_url=store, client_id=client_id, migrate=migrate)


@app.command("check-config")
def check_config_command(
    config: Annotated[Path, typer.Argument(help="Collector config (central.toml).")],
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also connect to the broker (with the configured credentials and TLS) and to"
            " the database, and report its schema version.",
        ),
    ] = False,
    mqtt_user: MqttUserOpt = None,
    mqtt_password_file: MqttPasswordFileOpt = None,
) -> None:
    """Check a collector config and what `run` needs: files, directories, and with --online the
    broker and the database. One line per check; exit 1 on any error. Give the same
    --mqtt-user/--mqtt-password-file as `run`."""
    from sanduan.central.app import check_config
    from sanduan.shared.preflight import count, summary

    with errors():
        checks = check_config(
            config,
            online=online,
            mqtt_user=mqtt_user,
            mqtt_password_file=mqtt_password_file,
        )
    for c in checks:
        typer.echo(c.line())
    typer.echo(summary(checks))
    if count(checks, "error"):
        bad = ", ".join(dict.fromkeys(c.what for c in checks if c.status == "error"))
        typer.echo(f"sanduan central: check-config found problems: {bad}", err=True)
        raise typer.Exit(1)


@app.command("migrate")
def migrate_command(config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Create the database schema or bring it up to date."""
    from sanduan.central.app import resolve_store_url
    from sanduan.central.store import open_store

    with errors():
        s = open_store(resolve_store_url(config, store), migrate=True)
        try:
            version = s.schema_version()
        finally:
            s.close()
    typer.echo(f"{s.url}: schema version {version}")


@app.command("replay")
def replay_command(
    files: Annotated[list[Path], typer.Argument(help="Wire-message files to ingest.")],
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Ingest wire-message files (binary, one message each) straight into the store."""
    from sanduan.central.app import resolve_store_url
    from sanduan.central.ingest import replay_files
    from sanduan.central.store import open_store
    from sanduan.shared.config import IngestConfig, load_central_config

    with errors():
        url = resolve_store_url(config, store)
        ing = load_central_config(config).ingest if config else IngestConfig()
        s = open_store(url)
        try:
            counts = replay_files(s, files, ingest=ing)
        finally:
            s.close()
    parts = [f"{k}={v}" for k, v in sorted(counts.items())]
    typer.echo("replayed " + str(len(files)) + " file(s): " + " ".join(parts))
    if counts["dead_letters"] or counts["unreadable"] or counts["store_errors"]:
        raise typer.Exit(1)


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _last_command(c: dict[str, Any] | None) -> str:
    return "-" if c is None else f"{c['name']} {c['state']} ({c['age']} ago)"


@report_app.command("stations")
def report_stations_command(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write the rows to this CSV file.")
    ] = None,
) -> None:
    """Every station: online, last seen, agent version, highest seq, open gaps, readings lost
    with replaced buffers (``lost_with_buffer``), rejects past the dead-letter budget, and from
    its latest heartbeat: buffer depth, oldest unacknowledged reading, clock offset."""
    import csv
    import json
    import time

    from sanduan.central.app import resolve_store_url
    from sanduan.central.commands import station_columns
    from sanduan.central.core.heartbeat import heartbeat_figures
    from sanduan.central.store import open_store

    with errors():
        s = open_store(resolve_store_url(config, store))
        try:
            rows = s.stations()
            more = station_columns(s, rows, int(time.time() * 1000))
        finally:
            s.close()
    beats = {r.station: heartbeat_figures(r.last_status) for r in rows}
    records: list[dict[str, Any]] = [
        {
            "station": r.station,
            "online": r.online,
            "last_seen_ms": r.last_seen_ms,
            "last_seen": _fmt_ms(r.last_seen_ms),
            "agent_version": r.agent_version,
            "max_seq": r.max_seq,
            "contiguous_seq": r.contiguous_seq,
            "open_gaps": len(r.gaps),
            "missing": sum(g.size for g in r.gaps),
            "gaps": [[g.first, g.last] for g in r.gaps],
            "last_resend_ms": r.last_resend_ms,
            "stream": r.stream,
            "lost_with_buffer": r.lost_with_buffer,
            "rejects_over_budget": r.rejects_over_budget,
            "reread": r.reread,
            "heartbeat_ms": beats[r.station].time_ms,
            "buffer_depth": beats[r.station].buffer_depth,
            "oldest_unacked_age_s": beats[r.station].oldest_unacked_age_s,
            "clock_offset_s": beats[r.station].clock_offset_s,
            "buffer_bytes": beats[r.station].buffer_bytes,
            **more[r.station],
        }
        for r in rows
    ]
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            fields = [k for k in records[0] if k != "gaps"] if records else ["station"]
            fields = [k for k in fields if k != "last_command"]
            w = csv.DictWriter(fh, fieldnames=[*fields, "gaps"], extrasaction="ignore")
            w.writeheader()
            for rec in records:
                w.writerow({**rec, "gaps": " ".join(f"{a}-{b}" for a, b in rec["gaps"])})
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"stations ({len(records)})")
    cols = ("station", "online", "last seen (UTC)", "agent", "max seq", "contiguous", "gaps")
    extra_cols = (
        "lost with buffer",
        "over budget",
        "buffer",
        "oldest unacked",
        "clock offset",
        "config",
        "last command",
    )
    for col in (*cols, *extra_cols):
        table.add_column(col, justify="left" if col in cols[:4] or col == "gaps" else "right")
    for rec in records:
        online = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[rec["online"]]
        gaps = "-"
        if rec["open_gaps"]:
            gaps = f"{rec['open_gaps']} ({rec['missing']} missing)"
        table.add_row(
            rec["station"],
            online,
            rec["last_seen"],
            rec["agent_version"] or "-",
            "-" if rec["max_seq"] is None else str(rec["max_seq"]),
            "-" if rec["contiguous_seq"] is None else str(rec["contiguous_seq"]),
            gaps,
            str(rec["lost_with_buffer"]),
            str(rec["rejects_over_budget"]),
            "-" if rec["buffer_depth"] is None else str(rec["buffer_depth"]),
            age_text(rec["oldest_unacked_age_s"]),
            "-" if rec["clock_offset_s"] is None else f"{rec['clock_offset_s']:+.1f} s",
            rec["config"] or "-",
            _last_command(rec["last_command"]),
        )
    Console().print(table)

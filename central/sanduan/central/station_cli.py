"""``sanduan central station ID ...``: remote commands to one station (docs/commands.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

station_app = typer.Typer(
    help="Remote commands to one station: poll-now, time-sync, resend, log-level, push-config;"
    " 'commands' lists the recent ones with their results.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Collector config (central.toml).")
]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (overrides the config's central.store).")
]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Wait for the station's answer (stored by the collector).")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the answer with --wait.")
]
TtlOpt = Annotated[
    str, typer.Option("--ttl", help="The station refuses the command after this (10m, 1h).")
]
UserOpt = Annotated[
    str | None,
    typer.Option("--mqtt-user", help="MQTT user allowed to send commands (e.g. ops)."),
]
PasswordOpt = Annotated[
    Path | None, typer.Option("--mqtt-password-file", help="That user's password file.")
]


@station_app.callback()
def station_callback(
    ctx: typer.Context, station: Annotated[str, typer.Argument(help="The station id.")]
) -> None:
    """Commands to station ID."""
    from sanduan.shared.topics import is_station_id

    if not is_station_id(station):
        typer.echo(f"sanduan central station: invalid station id {station!r}", err=True)
        raise typer.Exit(2)
    ctx.obj = station


def _issue(  # noqa: PLR0917
    ctx: typer.Context,
    name: str,
    args: dict[str, Any],
    body: str,
    config: Path | None,
    store: str | None,
    wait: bool,
    timeout: float,
    ttl: str,
    mqtt_user: str | None,
    mqtt_password_file: Path | None,
) -> None:
    from sanduan.central.app import resolve_store_url, with_login
    from sanduan.central.cli import errors
    from sanduan.central.commands import (
        command_row,
        new_command,
        parse_duration,
        publish_command,
        wait_result,
    )
    from sanduan.central.store import open_store
    from sanduan.shared.config import CentralConfig, load_central_config

    station: str = ctx.obj
    with errors():
        try:
            ttl_s = parse_duration(ttl)
        except ValueError as e:
            typer.echo(f"sanduan central station: --ttl: {e}", err=True)
            raise typer.Exit(2) from None
        cfg = load_central_config(config) if config else CentralConfig()
        mqtt_cfg = with_login(cfg, mqtt_user, mqtt_password_file).mqtt
        import time

        cmd = new_command(
            station, name, now_ms=int(time.time() * 1000), args=args, body=body, ttl_s=ttl_s
        )
        s = open_store(resolve_store_url(config, store))
        try:
            s.record_command(command_row(cmd))
            publish_command(mqtt_cfg, cmd)
            typer.echo(f"command {cmd.command_id}: {name} sent to station {station}")
            if not wait:
                return
            row = wait_result(s, station, cmd.command_id, timeout)
        finally:
            s.close()
    sha = f" (config {row.config_sha256[:12]})" if row.config_sha256 else ""
    typer.echo(f"{row.state}: {row.message or '-'}{sha}")
    if not row.result:
        raise typer.Exit(1)


@station_app.command("poll-now")
def poll_now_command(  # noqa: PLR0917
    ctx: typer.Context,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    ttl: TtlOpt = "10m",
    mqtt_user: UserOpt = None,
    mqtt_password_file: PasswordOpt = None,
) -> None:
    """Poll every device of the station now."""
    _issue(ctx, "poll-now", {}, "", config, store, wait, timeout, ttl, mqtt_user,
           mqtt_password_file)  # fmt: skip


@station_app.command("time-sync")
def time_sync_command(  # noqa: PLR0917
    ctx: typer.Context,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    ttl: TtlOpt = "1m",
    mqtt_user: UserOpt = None,
    mqtt_password_file: PasswordOpt = None,
) -> None:
    """Measure the station clock's offset now (the station never steps its clock)."""
    _issue(ctx, "time-sync", {}, "", config, store, wait, timeout, ttl, mqtt_user,
           mqtt_password_file)  # fmt: skip


@station_app.command("resend")
def resend_command(  # noqa: PLR0917
    ctx: typer.Context,
    first: Annotated[int, typer.Option("--from", help="First reading seq.", min=1)],
    last: Annotated[int, typer.Option("--to", help="Last reading seq.", min=1)],
    config: ConfigOpt = None,
    store: StoreOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    ttl: TtlOpt = "10m",
    mqtt_user: UserOpt = None,
    mqtt_password_file: PasswordOpt = None,
) -> None:
    """Have the station send readings FROM..TO of its buffer again."""
    if first > last:
        typer.echo("sanduan central station resend: --from must not be after --to", err=True)
        raise typer.Exit(2)
    _issue(ctx, "resend", {"first": first, "last": last}, "", config, store, wait, timeout, ttl,
           mqtt_user, mqtt_password_file)  # fmt: skip


@station_app.command("log-level")
def log_level_command(  # noqa: PLR0917
    ctx: typer.Context,
    level: Annotated[str, typer.Argument(help="DEBUG, INFO, WARNING or ERROR.")],
    for_: Annotated[
        str | None, typer.Option("--for", help="Back to the previous level after this (10m).")
    ] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 60.0,
    ttl: TtlOpt = "10m",
    mqtt_user: UserOpt = None,
    mqtt_password_file: PasswordOpt = None,
) -> None:
    """Set the station agent's log level, for a while or until the next restart."""
    from sanduan.central.commands import parse_duration

    args: dict[str, Any] = {"level": level.upper()}
    if for_ is not None:
        try:
            args["for_s"] = parse_duration(for_)
        except ValueError as e:
            typer.echo(f"sanduan central station log-level: --for: {e}", err=True)
            raise typer.Exit(2) from None
    _issue(ctx, "log-level", args, "", config, store, wait, timeout, ttl, mqtt_user,
           mqtt_password_file)  # fmt: skip


@station_app.command("push-config")
def push_config_command(  # noqa: PLR0917
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The new station TOML file.")],
    config: ConfigOpt = None,
    store: StoreOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    ttl: TtlOpt = "10m",
    mqtt_user: UserOpt = None,
    mqtt_password_file: PasswordOpt = None,
) -> None:
    """Replace the station's file: validated there, applied by a reload, rolled back by the
    station itself unless it forwards within its [commands] confirm_s."""
    try:
        body = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        typer.echo(f"sanduan central station push-config: {file}: {e}", err=True)
        raise typer.Exit(2) from None
    _issue(ctx, "push-config", {}, body, config, store, wait, timeout, ttl, mqtt_user,
           mqtt_password_file)  # fmt: skip


@station_app.command("commands")
def commands_command(
    ctx: typer.Context,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The station's recent commands with their results."""
    import json
    import time
    from dataclasses import asdict

    from sanduan.central.app import resolve_store_url
    from sanduan.central.cli import _fmt_ms, errors
    from sanduan.central.commands import age
    from sanduan.central.store import open_store

    station: str = ctx.obj
    with errors():
        s = open_store(resolve_store_url(config, store))
        try:
            rows = s.commands(station, limit=limit)
        finally:
            s.close()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    now = int(time.time() * 1000)
    table = Table(title=f"commands of station {station} ({len(rows)})")
    for col in ("id", "command", "issued (UTC)", "age", "state", "message", "config"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.id,
            r.name,
            _fmt_ms(r.issued),
            age(r.issued, now),
            r.state,
            r.message or "-",
            (r.config_sha256 or "")[:12] or "-",
        )
    Console(width=160).print(table)

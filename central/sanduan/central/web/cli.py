"""``sanduan central console`` and ``sanduan central users``: serve the console, manage accounts."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Collector config (central.toml).")
]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (overrides the config's central.store).")
]

users_app = typer.Typer(help="Console accounts (viewer, reviewer, admin).", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"sanduan central: {message}", err=True)
    return typer.Exit(code)


def console_command(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    county: Annotated[
        Path | None, typer.Option("--county", help="County file (overrides the config's).")
    ] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="host:port (overrides [console] listen).")
    ] = None,
) -> None:
    """Serve the web console on the central store (Chinese by default; /lang/en for English)."""
    import uvicorn

    from sanduan.central.core.county import load_county
    from sanduan.central.store import open_store
    from sanduan.central.web.app import build_app
    from sanduan.shared.config import CentralConfig, load_central_config, split_listen
    from sanduan.shared.errors import SanduanError

    try:
        cfg = load_central_config(config) if config is not None else CentralConfig()
        url = store or (cfg.central.store_url() if config is not None else None)
        county_path = county or cfg.central.county
        if url is None:
            raise _fail("no store: give --store URL or --config central.toml")
        if county_path is None:
            raise _fail("no county file: give --county FILE or set [central] county")
        host, port = split_listen(listen or cfg.console.listen)
        secret = None
        if cfg.console.secret_file is not None:
            secret = cfg.console.secret_file.read_text(encoding="utf-8").strip()
            if len(secret) < 16:
                raise _fail(f"{cfg.console.secret_file}: the session key needs 16+ characters")
        the_county = load_county(county_path)
        s = open_store(url)
    except SanduanError as e:
        raise _fail(str(e)) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename}: {e.strerror}") from None
    app = build_app(
        s,
        the_county,
        secret=secret,
        session_max_age_s=cfg.console.session_max_age_s,
        https_only=cfg.console.https_only,
        validity=cfg.validity,
    )
    typer.echo(f"sanduan console: http://{host}:{port}/ on {s.url}", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        s.close()


def _open(config: Path | None, store: str | None):  # type: ignore[no-untyped-def]
    from sanduan.central.app import resolve_store_url
    from sanduan.central.store import open_store

    return open_store(resolve_store_url(config, store))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", help="viewer, reviewer or admin.")] = "viewer",
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Read the password from this file (else prompt)."),
    ] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Create an account, or set a new password and role for an existing one."""
    from sanduan.central.web.auth import Role, Users
    from sanduan.shared.errors import SanduanError

    try:
        r = Role.parse(role)
        if password_file is not None:
            password = password_file.read_text(encoding="utf-8").rstrip("\n")
        elif os.environ.get("SANDUAN_CONSOLE_PASSWORD"):
            password = os.environ["SANDUAN_CONSOLE_PASSWORD"]
        else:
            password = getpass.getpass(f"password for {name}: ")
        s = _open(config, store)
        try:
            Users(s).add(name, r, password)
        finally:
            s.close()
    except SanduanError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename}: {e.strerror}") from None
    typer.echo(f"{name}: {r.label}")


@users_app.command("list")
def users_list(config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Every account with its role."""
    from sanduan.central.web.auth import Users
    from sanduan.shared.errors import SanduanError

    try:
        s = _open(config, store)
        try:
            rows = Users(s).all()
        finally:
            s.close()
    except SanduanError as e:
        raise _fail(str(e)) from None
    for name, role, disabled in rows:
        state = "\tdisabled" if disabled else ""
        typer.echo(f"{name}\t{role}{state}")


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Disable an account (its sessions end at their next request)."""
    from sanduan.central.web.auth import Users
    from sanduan.shared.errors import SanduanError

    try:
        s = _open(config, store)
        try:
            found = Users(s).disable(name)
        finally:
            s.close()
    except SanduanError as e:
        raise _fail(str(e)) from None
    if not found:
        raise _fail(f"there is no account {name!r}", 1)
    typer.echo(f"{name}: disabled")

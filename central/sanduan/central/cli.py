"""``sanduan central``: the collector's commands. Heavy imports stay inside the commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The central collector: ingest, store, assess, compensate, report.", no_args_is_help=True
)

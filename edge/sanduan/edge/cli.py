"""``sanduan edge``: the station agent's commands. Heavy imports stay inside the commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="The station edge agent: poll, buffer, grade, forward.", no_args_is_help=True)

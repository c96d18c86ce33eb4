"""``sanduan hil`` and ``sanduan demo``. Heavy imports stay inside the commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Hardware-in-the-loop rig: simulated devices and county scenarios.", no_args_is_help=True
)


def demo_command() -> None:
    """Run the main end-to-end job on the embedded defaults."""
    raise typer.Exit(2)

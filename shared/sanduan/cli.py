"""The ``sanduan`` command: the composition root.

Role sub-commands live in their own packages and import their heavy dependencies (numba,
pymodbus, paho-mqtt, psycopg) inside the commands, so ``sanduan --help`` stays fast.
"""

from __future__ import annotations

from importlib import metadata

import typer

from sanduan.shared.grade_cli import grade_command
from sanduan.shared.hj212.cli import hj212_app
from sanduan.shared.wire_cli import wire_app

app = typer.Typer(
    name="sanduan",
    help="Automatic surface-water monitoring: station agents, central collector, compensation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sanduan {metadata.version('sanduan')}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """sanduan: stations to sections to compensation."""


app.command("grade")(grade_command)
app.add_typer(wire_app, name="wire")
app.add_typer(hj212_app, name="hj212")


def _add_role_apps() -> None:
    from sanduan.central.cli import app as central_app
    from sanduan.edge.cli import app as edge_app
    from sanduan.hil.cli import app as hil_app
    from sanduan.hil.cli import demo_command

    app.add_typer(edge_app, name="edge")
    app.add_typer(central_app, name="central")
    app.add_typer(hil_app, name="hil")
    app.command("demo")(demo_command)


_add_role_apps()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

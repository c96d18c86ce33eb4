"""The ``sanduan`` command: the composition root.

Role sub-commands live in their own packages and import their heavy dependencies (numba,
pymodbus, paho-mqtt, psycopg) inside the commands, so ``sanduan --help`` stays fast.

``sanduan edge run`` is the station agent, a process that runs for months on a small gateway:
:func:`main` starts it through :mod:`sanduan.edge.runner`, without typer and the other roles'
command modules, which would stay resident for nothing. The typer application (``app``) is
built on first use.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer


@functools.cache
def _app() -> typer.Typer:
    import typer

    from sanduan.central.cli import app as central_app
    from sanduan.edge.cli import app as edge_app
    from sanduan.hil.cli import app as hil_app
    from sanduan.hil.cli import demo_command
    from sanduan.shared import __version__
    from sanduan.shared.grade_cli import grade_command
    from sanduan.shared.hj212.cli import hj212_app
    from sanduan.shared.wire_cli import wire_app

    root = typer.Typer(
        name="sanduan",
        help="Automatic surface-water monitoring: station agents, central collector, compensation.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    def _version_callback(value: bool) -> None:
        if value:
            typer.echo(f"sanduan {__version__}")
            raise typer.Exit

    @root.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """sanduan: stations to sections to compensation."""

    root.command("grade")(grade_command)
    root.add_typer(wire_app, name="wire")
    root.add_typer(hj212_app, name="hj212")
    root.add_typer(edge_app, name="edge")
    root.add_typer(central_app, name="central")
    root.add_typer(hil_app, name="hil")
    root.command("demo")(demo_command)
    return root


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["edge", "run"]:
        from sanduan.edge.runner import main as run_agent

        code = run_agent(argv[2:])
        if code is not None:
            sys.exit(code)
    _app()()


if __name__ == "__main__":
    main()

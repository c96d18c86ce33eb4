"""``sanduan wire``: look inside wire-format messages and write example ones.

Only typer is imported at module level so that ``sanduan --help`` stays fast; msgpack, rich and
the wire module are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sanduan.shared.wire import Batch, Message

wire_app = typer.Typer(
    help="Inspect wire-format v1 messages (see docs/wire-format.md).",
    no_args_is_help=True,
    add_completion=False,
)


def _die(file: Path, reason: str) -> None:
    typer.echo(f"sanduan wire: {file}: {reason}", err=True)
    raise typer.Exit(2)


def _fmt_ms(ms: int) -> str:
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"


def example_messages() -> dict[str, Message]:
    """One small, valid message of each kind."""
    from sanduan.shared.model import Flag, Reading
    from sanduan.shared.wire import Ack, Batch, Event, ResendRequest, Severity, Status

    t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    readings = [
        Reading(101, t0, "w01001", 7.21, Flag.N, 1),
        Reading(102, t0, "w21003", 0.412, Flag.N, 2),
        Reading(103, t0 + 60_000, "w01001", 7.19, Flag.N, 1),
        Reading(105, t0 + 60_000, "w21003", float("nan"), Flag.D, 0),
    ]
    return {
        "batch": Batch.from_readings("st-0001", 7, t0 + 61_000, readings),
        "ack": Ack("st-0001", 7, 101, 105, t0 + 62_000),
        "resend": ResendRequest("st-0001", ((104, 104),), t0 + 62_000, "gap"),
        "status": Status("st-0001", t0 + 63_000, agent_version="0.1.0", buffer_depth=4),
        "event": Event(
            "st-0001",
            t0 + 60_000,
            1,
            "device-fault",
            "NH3-N analyser reports fault",
            Severity.WARNING,
            "w21003",
        ),
    }


def _batch_view(msg: Batch, rows: int) -> RenderableType:
    import math

    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("kind", "batch")
    head.add_row("station", msg.station)
    head.add_row("stream", f"{msg.stream} (v2)" if msg.stream else "0 (v1, legacy stream)")
    head.add_row("batch seq", str(msg.batch_seq))
    head.add_row("readings", f"{msg.count}  (seq {msg.first_seq}..{msg.last_seq})")
    head.add_row("created", _fmt_ms(msg.created_ms))
    head.add_row("codes", " ".join(msg.codes))

    table = Table(title=f"first {min(rows, msg.count)} of {msg.count} readings")
    for col in ("seq", "time (UTC)", "code", "value", "flag", "class"):
        table.add_column(col, justify="right" if col in ("seq", "value", "class") else "left")
    for seq, ts, code, value, flag, grade in msg.rows()[:rows]:
        table.add_row(
            str(seq),
            _fmt_ms(ts),
            code,
            "missing" if math.isnan(value) else f"{value:g}",
            f"[red]{flag}[/]" if flag != "N" else str(flag),
            str(grade) if grade else "-",
        )
    return Group(head, table)


def _tree_view(obj: dict[str, Any]) -> RenderableType:
    from rich.tree import Tree

    tree = Tree(f"[bold]{obj['k']}[/]")

    def add(node: Tree, key: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            sub = node.add(f"[bold]{key}[/]")
            for k, v in value.items():
                add(sub, str(k), v)
        else:
            node.add(f"[bold]{key}[/]: {value!r}")

    for key, value in obj.items():
        if key != "k":
            add(tree, key, value)
    return tree


@wire_app.command("decode")
def decode_command(
    file: Annotated[Path, typer.Argument(help="A file holding exactly one message.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the decoded form as JSON.")
    ] = False,
    rows: Annotated[
        int, typer.Option("--rows", "-n", min=0, help="Readings of a batch to show.")
    ] = 20,
) -> None:
    """Decode and print one wire-format message file."""
    import json

    from sanduan.shared.errors import WireFormatError
    from sanduan.shared.wire import Batch, decode, to_json_obj

    try:
        data = file.read_bytes()
    except OSError as e:
        _die(file, e.strerror or str(e))
    try:
        msg: Message = decode(data)
    except WireFormatError as e:
        _die(file, e.reason)
    obj = to_json_obj(msg)
    if as_json:
        typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))
        return

    from rich.console import Console

    console = Console()
    console.print(_batch_view(msg, rows) if isinstance(msg, Batch) else _tree_view(obj))


@wire_app.command("encode-example")
def encode_example_command(
    kind: Annotated[str, typer.Argument(help="batch, ack, resend, status or event.")],
    out: Annotated[Path, typer.Argument(help="File to write the message to.")],
) -> None:
    """Write an example message of KIND to OUT (handy for trying decoders)."""
    from sanduan.shared.wire import encode

    examples = example_messages()
    if kind not in examples:
        typer.echo(f"sanduan wire: unknown kind {kind!r}; known: {', '.join(examples)}", err=True)
        raise typer.Exit(2)
    data = encode(examples[kind])
    out.write_bytes(data)
    typer.echo(f"wrote {len(data)} bytes to {out}")

"""``sanduan hj212``: look inside HJ 212-2017 packets.

Only typer is imported at module level so that ``sanduan --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sanduan.shared.hj212.codec import Packet

hj212_app = typer.Typer(
    help="Inspect HJ 212-2017 packets (see docs/hj212.md).",
    no_args_is_help=True,
    add_completion=False,
)

_CN_NAMES = {
    "2011": "real-time data",
    "2051": "minute data",
    "2061": "hourly data",
    "2031": "daily data",
    "2021": "status",
    "1011": "get time",
    "1012": "set time",
    "1013": "time calibration request",
    "9011": "request reply",
    "9012": "result",
    "9013": "notification reply",
    "9014": "data reply",
    "9015": "heartbeat (not HJ 212-2017)",
}


def packet_json(p: Packet) -> dict[str, Any]:
    """A packet as a JSON-ready dict (CP as a list of records of [key, value] pairs)."""
    out: dict[str, Any] = {
        "QN": p.qn,
        "ST": p.st,
        "CN": p.cn,
        "PW": p.pw,
        "MN": p.mn,
        "Flag": p.flag,
    }
    if p.pnum is not None:
        out["PNUM"] = p.pnum
        out["PNO"] = p.pno
    out["CP"] = [[list(f) for f in record] for record in p.cp]
    return out


def _view(p: Packet) -> RenderableType:
    from rich.console import Group
    from rich.table import Table

    from sanduan.shared.errors import Hj212Error
    from sanduan.shared.hj212.codec import DATA_CNS, parse_data

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("CN", f"{p.cn}  {_CN_NAMES.get(p.cn, '')}".rstrip())
    head.add_row("QN", p.qn)
    head.add_row("ST", p.st)
    head.add_row("MN", p.mn)
    head.add_row("PW", p.pw)
    bits = [name for bit, name in ((1, "reply wanted"), (2, "split")) if p.flag & bit]
    head.add_row("Flag", f"{p.flag}  (version {p.version}{', ' if bits else ''}{', '.join(bits)})")
    if p.pnum is not None:
        head.add_row("part", f"{p.pno} of {p.pnum}")
    if p.cn in DATA_CNS:
        try:
            up = parse_data(p)
        except Hj212Error as e:
            head.add_row("CP", f"[red]{e.reason}[/]")
        else:
            head.add_row("DataTime", up.data_time.isoformat(sep=" "))
            order = ("Rtd", "Min", "Avg", "Max", "Cou", "Flag")
            seen = {k for f in up.factors for k, _ in f.fields}
            names = [n for n in order if n in seen] + sorted(seen - set(order))
            table = Table()
            table.add_column("factor")
            for n in names:
                table.add_column(n, justify="left" if n == "Flag" else "right")
            for f in up.factors:
                table.add_row(f.code, *[f.get(n) or "" for n in names])
            return Group(head, table)
    for i, record in enumerate(p.cp):
        head.add_row(f"CP {i + 1}", ", ".join(f"{k}={v}" for k, v in record))
    return head


@hj212_app.command("decode")
def decode_command(
    file: Annotated[str, typer.Argument(help="A file of packets (a capture), or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Decode and print every HJ 212 packet in FILE; exits 1 if any bytes were not a valid
    packet (each is reported with its reason)."""
    import json

    from sanduan.shared.hj212.stream import split_bytes

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as e:
        typer.echo(f"sanduan hj212: {file}: {e.strerror or e}", err=True)
        raise typer.Exit(2) from None
    frames, _ = split_bytes(data)
    bad = 0
    console = None
    if not as_json:
        from rich.console import Console

        console = Console()
    offset = 0
    for frame in frames:
        if frame.packet is not None:
            if console is None:
                typer.echo(json.dumps(packet_json(frame.packet), ensure_ascii=False))
            else:
                console.rule(f"packet at byte {offset}")
                console.print(_view(frame.packet))
        else:
            bad += 1
            reason = frame.error.reason if frame.error else "?"
            typer.echo(f"sanduan hj212: {file}: byte {offset}: {reason}", err=True)
        offset += len(frame.raw)
    if not frames:
        typer.echo(f"sanduan hj212: {file}: no packets", err=True)
        raise typer.Exit(1)
    if bad:
        raise typer.Exit(1)

"""``sanduan grade``: grade one sample against GB 3838-2002.

Imported by ``sanduan --help``: numpy and numba are imported inside the command only.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from sanduan.shared.model import WaterBody

if TYPE_CHECKING:
    from sanduan.shared.grading import SampleGrade

USAGE_ERROR = 2


def _fail(message: str) -> NoReturn:
    typer.echo(f"sanduan grade: {message}", err=True)
    raise typer.Exit(USAGE_ERROR)


def _parse_pairs(pairs: list[str]) -> dict[str, float]:
    from sanduan.shared.errors import UnknownParameterError
    from sanduan.shared.params import resolve

    values: dict[str, float] = {}
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            _fail(f"malformed pair {pair!r}: expected PARAMETER=VALUE")
        try:
            p = resolve(name)
        except UnknownParameterError as e:
            _fail(str(e))
        try:
            v = float(text)
        except ValueError:
            _fail(f"malformed pair {pair!r}: {text!r} is not a number")
        if not math.isfinite(v):
            _fail(f"malformed pair {pair!r}: {text!r} is not a finite number")
        if p.name in given:
            _fail(f"duplicate parameter {p.name!r} ({given[p.name]!r} and {pair!r})")
        given[p.name] = pair
        values[p.name] = v
    return values


def _fmt_multiple(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _print_table(result: SampleGrade) -> None:
    from rich.console import Console
    from rich.table import Table

    from sanduan.shared.grading import class_label
    from sanduan.shared.params import resolve

    basis = class_label(result.exceedance_class)
    table = Table(title=f"GB 3838-2002, {result.water_body.value}")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("class", justify="center")
    table.add_column("evaluated", justify="center")
    table.add_column(f"exceedance vs {basis}", justify="right")
    for name, item in result.items.items():
        table.add_row(
            name,
            f"{item.value:g}",
            resolve(name).unit,
            class_label(item.grade),
            "yes" if item.evaluated else "no",
            _fmt_multiple(item.exceedance),
        )
    console = Console()
    console.print(table)
    overall = class_label(result.grade) if result.grade else "not graded"
    console.print(f"overall class: {overall}")
    if result.target_class is not None:
        met = {True: "yes", False: "no", None: "unknown (nothing graded)"}[result.meets_target]
        console.print(f"target class {class_label(result.target_class)} met: {met}")
    console.print(
        "main pollutants: " + (", ".join(result.main_pollutants) or "none"),
        highlight=False,
    )


def grade_command(
    pairs: Annotated[
        list[str],
        typer.Argument(
            metavar="PARAMETER=VALUE...",
            help="Values to grade, e.g. COD=18 DO=4.2 NH3-N=0.8 (aliases and HJ 212 codes work).",
            show_default=False,
        ),
    ],
    water_body: Annotated[
        WaterBody,
        typer.Option("--water-body", case_sensitive=False, help="river or lake (reservoir)."),
    ] = WaterBody.RIVER,
    target_class: Annotated[
        int | None,
        typer.Option(
            "--target-class",
            min=1,
            max=5,
            help="Target class 1..5: report whether it is met; exceedance is against its limit.",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON line.")] = False,
) -> None:
    """Grade a water sample against GB 3838-2002 (class per item, overall class)."""
    values = _parse_pairs(pairs)

    from sanduan.shared.errors import InputError
    from sanduan.shared.grading import grade_sample

    try:
        result = grade_sample(values, water_body, target_class)
    except InputError as e:
        _fail(str(e))
    if json_:
        doc = result.to_json()
        for item in doc["items"].values():
            if item["exceedance"] is not None and not math.isfinite(item["exceedance"]):
                item["exceedance"] = None
        typer.echo(json.dumps(doc, ensure_ascii=False, allow_nan=False))
    else:
        _print_table(result)

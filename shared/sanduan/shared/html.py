"""sanduan's one set of HTML templates (Jinja2), for the console and every HTML report.

The templates live in ``sanduan/shared/templates``: ``console/*.html`` (the web console's
pages), ``report.html.j2`` (``sanduan central report ... --html``) and ``run.html.j2`` (the rig's
run report). :func:`environment` is the one environment that renders them all: autoescaped,
strict about undefined names (a misspelt name is an error, not an empty string), with the
filters the pages share. Roles build the view data; the templates only lay it out.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


def num(x: object, digits: int = 3) -> str:
    """A number for a table cell: ``–`` for none or NaN, ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of every sanduan page (jinja2 comes with the central extra)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = num
    return env

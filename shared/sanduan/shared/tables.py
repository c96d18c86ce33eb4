"""Typed loaders for the centre's and the rig's data tables (county topology, compensation and
problem rules, scorecards, scenarios, faults), validated with pydantic.

The station's and the collector's configuration files are validated with msgspec instead
(:mod:`sanduan.shared.config`): the edge agent loads only that, and pydantic would add about
11 MiB to its resident memory. Both report a mistake the same way, as a
:class:`~sanduan.shared.errors.ConfigError` naming the file, the key (dotted, with list indices)
and the reason.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sanduan.shared.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for table sections: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _model_key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_table(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate ``data`` into ``model``; the first error becomes a ConfigError for ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _model_key(tuple(err["loc"]))
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the example files in deploy/)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = msg.removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(source, key, msg) from None

"""The parameter registry: canonical names, HJ 212-2017 factor codes, units, aliases.

Lookups ignore case and punctuation, so ``NH3-N``, ``nh3n``, ``NH3N``, ``w21003`` and
``ammonia nitrogen`` all resolve to the same :class:`Parameter`. A parameter's ``index`` is its
position in ``data/parameters.toml`` and is stable: grading kernels use it as a row number.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sanduan.shared import DATA
from sanduan.shared.errors import ConfigError, UnknownParameterError

PARAMETERS_FILE = "sanduan/shared/data/parameters.toml"
_CODE = re.compile(r"^w\d{5}$")


def normalize(name: str) -> str:
    """The lookup key of a name: case-folded, letters and digits only."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    code: str
    unit: str
    evaluated: bool
    aliases: tuple[str, ...]
    physical_min: float
    physical_max: float
    index: int
    decimals: int = 2
    """Reporting precision: values and means are rounded to this many decimals (GB/T 8170)
    before any comparison with a limit; see :mod:`sanduan.shared.precision`."""
    detection_limit: float | None = None
    """Default detection limit of the usual method (a county's file may override it)."""

    def in_physical_range(self, value: float) -> bool:
        """False for NaN and for values outside [physical_min, physical_max]."""
        return self.physical_min <= value <= self.physical_max


@dataclass(frozen=True, slots=True)
class Registry:
    parameters: tuple[Parameter, ...]
    _keys: Mapping[str, Parameter]
    _codes: Mapping[str, Parameter]

    def resolve(self, name: str) -> Parameter:
        p = self._keys.get(normalize(name))
        if p is None:
            raise UnknownParameterError(name, self._hint(name))
        return p

    def by_code(self, code: str) -> Parameter:
        p = self._codes.get(code.strip().lower())
        if p is None:
            raise UnknownParameterError(code, self._hint(code))
        return p

    def _hint(self, name: str) -> str:
        import difflib  # only for this message

        close = difflib.get_close_matches(normalize(name), list(self._keys), n=6, cutoff=0.6)
        names = list(dict.fromkeys(self._keys[k].name for k in close))[:3]
        if names:
            return "did you mean " + " or ".join(repr(n) for n in names) + "?"
        return "known parameters: " + " ".join(p.name for p in self.parameters)


def _number(file: str, key: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or math.isnan(x):
        raise ConfigError(file, key, f"expected a number, got {x!r}")
    return float(x)


def _parameter(file: str, i: int, raw: object) -> Parameter:
    key = f"parameter[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(file, key, "expected a table")
    known = {"name", "code", "unit", "evaluated", "aliases", "physical", "decimals"}
    known.add("detection_limit")
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(file, f"{key}.{extra[0]}", "unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not normalize(name):
        raise ConfigError(file, f"{key}.name", "expected a non-empty name")
    key = f"parameter[{i}] ({name})"
    code = raw.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise ConfigError(file, f"{key}.code", f"expected an HJ 212 code like w21003, got {code!r}")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise ConfigError(file, f"{key}.unit", "expected a string")
    evaluated = raw.get("evaluated")
    if not isinstance(evaluated, bool):
        raise ConfigError(file, f"{key}.evaluated", "expected true or false")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(file, f"{key}.aliases", "expected a list of non-empty strings")
    phys = raw.get("physical")
    if not isinstance(phys, list) or len(phys) != 2:
        raise ConfigError(file, f"{key}.physical", "expected [min, max]")
    lo = _number(file, f"{key}.physical[0]", phys[0])
    hi = _number(file, f"{key}.physical[1]", phys[1])
    if not lo < hi:
        raise ConfigError(file, f"{key}.physical", f"expected min < max, got [{lo}, {hi}]")
    decimals = raw.get("decimals")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 8:
        raise ConfigError(
            file, f"{key}.decimals", f"expected the reporting decimals 0..8, got {decimals!r}"
        )
    dl: float | None = None
    if "detection_limit" in raw:
        dl = _number(file, f"{key}.detection_limit", raw["detection_limit"])
        if not dl > 0:
            raise ConfigError(file, f"{key}.detection_limit", f"expected > 0, got {dl}")
    return Parameter(name, code, unit, evaluated, tuple(aliases), lo, hi, i, decimals, dl)


def parse_registry(text: str, file: str = "<string>") -> Registry:
    """Parse and validate a registry in the parameters.toml format."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML: {e}") from None
    raw = doc.get("parameter")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(file, "parameter", "expected one or more [[parameter]] tables")
    params = tuple(_parameter(file, i, r) for i, r in enumerate(raw))
    keys: dict[str, Parameter] = {}
    codes: dict[str, Parameter] = {}
    for p in params:
        if p.code in codes:
            raise ConfigError(
                file, f"parameter[{p.index}].code", f"{p.code} is also {codes[p.code].name}"
            )
        codes[p.code] = p
        for label in (p.name, p.code, *p.aliases):
            k = normalize(label)
            if not k:
                raise ConfigError(file, f"parameter[{p.index}]", f"{label!r} has no letters")
            other = keys.get(k)
            if other is not None and other is not p:
                raise ConfigError(
                    file,
                    f"parameter[{p.index}] ({p.name})",
                    f"{label!r} is ambiguous: it also names {other.name}",
                )
            keys[k] = p
    return Registry(params, MappingProxyType(keys), MappingProxyType(codes))


@functools.cache
def registry() -> Registry:
    """The registry shipped in the package data, loaded once."""
    text = (DATA / "parameters.toml").read_text("utf-8")
    return parse_registry(text, PARAMETERS_FILE)


def resolve(name: str) -> Parameter:
    """The parameter named ``name`` (canonical name, alias or HJ 212 code, any case)."""
    return registry().resolve(name)


def by_code(code: str) -> Parameter:
    """The parameter with HJ 212-2017 factor code ``code`` (for example ``w21003``)."""
    return registry().by_code(code)


def all_parameters() -> tuple[Parameter, ...]:
    """Every parameter, in index order."""
    return registry().parameters

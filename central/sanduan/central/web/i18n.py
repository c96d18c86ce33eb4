"""The console's words in Chinese (the default) and English, loaded from ``messages.toml``."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

from sanduan.shared.errors import ConfigError

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"


@cache
def messages() -> Mapping[str, Mapping[str, str]]:
    """Every language's table; each must have exactly the keys of the default language."""
    source = resources.files("sanduan.central.web").joinpath("messages.toml")
    name = "sanduan/central/web/messages.toml"
    data = tomllib.loads(source.read_text(encoding="utf-8"))
    out: dict[str, Mapping[str, str]] = {}
    keys = set(data.get(DEFAULT_LANGUAGE, {}))
    for lang in LANGUAGES:
        table = data.get(lang)
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ConfigError(name, lang, "must be a table of strings")
        if set(table) != keys:
            diff = sorted(keys.symmetric_difference(table))
            raise ConfigError(name, lang, f"keys differ from [{DEFAULT_LANGUAGE}]: {diff}")
        out[lang] = MappingProxyType(dict(table))
    return MappingProxyType(out)


def language(value: str | None) -> str:
    """A supported language code, the default for anything else."""
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def words(lang: str) -> Mapping[str, str]:
    return messages()[language(lang)]


def class_names(lang: str) -> dict[int, str]:
    """Class numbers 1..6 to their names (6 is 劣V)."""
    w = words(lang)
    return {g: w[f"class_{g}"] for g in range(1, 7)}

"""Run a shipped systemd unit's commands as systemd would, without systemd.

A unit file becomes a :class:`Unit`: its keys in order (``ExecStartPre=`` and ``Environment=``
repeat), lines continued with a backslash joined. :meth:`Unit.command` expands a command line
the way systemd does for what the shipped units use: the specifiers ``%i`` (the instance),
``%d`` (the credentials directory) and ``%%``, ``${VAR}`` and ``$VAR`` from ``Environment=``, the
``-`` prefix (a failure is ignored); and moves absolute paths into a test root, the sanduan
executable to the one of this environment.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sanduan.hil.rig import sanduan_argv

SANDUAN = "/opt/sanduan/bin/sanduan"
ABSOLUTE = re.compile(r"(?<![\w/])/(etc|var|run|dev)/")


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}``: every key in order, repeated ones kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
        else:
            raise ValueError(f"not a unit file line: {raw!r}")
    return sections


@dataclass(frozen=True)
class Command:
    argv: list[str]
    ignore_failure: bool


@dataclass
class Unit:
    sections: dict[str, list[tuple[str, str]]]
    instance: str = ""
    root: Path = Path("/")
    credentials: Path = Path("/run/credentials")
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, **kw: object) -> Unit:
        return cls(parse_unit(path.read_text(encoding="utf-8")), **kw)  # type: ignore[arg-type]

    def values(self, key: str, section: str = "Service") -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, key: str, section: str = "Service") -> str:
        values = self.values(key, section)
        assert len(values) == 1, f"{key}= appears {len(values)} times"
        return values[0]

    def reroot(self, value: str) -> str:
        """Absolute paths under /etc, /var, /run, /dev moved into the test root."""
        root = str(self.root).rstrip("/")
        return ABSOLUTE.sub(lambda m: f"{root}/{m.group(1)}/", value)

    def specifiers(self, value: str) -> str:
        table = {"i": self.instance, "d": str(self.credentials), "%": "%"}
        return re.sub(r"%(.)", lambda m: table[m.group(1)], value)

    def environment(self) -> dict[str, str]:
        """``Environment=`` assignments (specifiers expanded, paths moved into the root)."""
        env: dict[str, str] = {}
        for value in self.values("Environment"):
            for assignment in shlex.split(value):
                name, _, v = assignment.partition("=")
                env[name] = self.reroot(self.specifiers(v))
        return env

    def command(self, key: str) -> list[Command]:
        out = []
        env = self.environment()
        variable = re.compile(r"\$\{(\w+)\}|\$(\w+)")
        for value in self.values(key):
            line = value.removeprefix("-")
            assert not line.startswith(("@", "+", "!", ":")), f"prefix not handled: {value}"
            argv: list[str] = []
            for word in shlex.split(self.specifiers(line)):
                expanded = variable.sub(lambda m: env[m.group(1) or m.group(2)], word)
                argv += sanduan_argv() if expanded == SANDUAN else [self.reroot(expanded)]
            out.append(Command(argv, ignore_failure=line != value))
        return out

    def load_credentials(self) -> dict[str, str]:
        """``LoadCredential=ID:PATH``: each file copied into the credentials directory, as
        systemd does before the first command; the ``CREDENTIALS_DIRECTORY`` variable."""
        self.credentials.mkdir(parents=True, exist_ok=True)
        for value in self.values("LoadCredential"):
            name, _, path = self.specifiers(value).partition(":")
            shutil.copy(self.reroot(path), self.credentials / name)
            (self.credentials / name).chmod(0o400)
        return {"CREDENTIALS_DIRECTORY": str(self.credentials)}

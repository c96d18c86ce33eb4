"""Import layering: shared imports no role; edge, central and hil import only shared.

Pure cores (``core`` packages and the pure shared modules) import no I/O libraries.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("shared", "edge", "central", "hil")
IO_MODULES = (
    "asyncio",
    "serial",
    "paho",
    "sqlite3",
    "sqlite_utils",
    "psycopg",
    "pymodbus",
    "socket",
)
PURE_SHARED = ("params", "standards", "wire", "registers", "model", "topics", "grading", "hj212")


def _modules(role: str) -> Iterator[tuple[str, Path]]:
    base = ROOT / role / "sanduan" / role
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT / role).with_suffix("")
        yield ".".join(rel.parts), path


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _role_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "sanduan" and parts[1] in ROLES:
        return parts[1]
    if module == "sanduan.cli":
        return "cli"
    return None


@pytest.mark.parametrize("role", ROLES)
def test_role_imports_only_allowed_roles(role: str) -> None:
    allowed = {"shared", role}
    problems = []
    for module, path in _modules(role):
        for imported in _imports(path):
            other = _role_of(imported)
            if other is not None and other not in allowed:
                problems.append(f"{module} imports {imported}")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def _is_pure(module: str) -> bool:
    parts = module.split(".")
    if "core" in parts:
        return True
    return parts[1] == "shared" and len(parts) > 2 and parts[2] in PURE_SHARED


def test_pure_cores_import_no_io() -> None:
    problems: list[str] = []
    checked = 0
    for role in ROLES:
        for module, path in _modules(role):
            if not _is_pure(module):
                continue
            checked += 1
            problems.extend(
                f"{module} imports {imported}"
                for imported in _imports(path)
                if imported.split(".")[0] in IO_MODULES
            )
    assert checked > 0
    assert not problems, "pure core imports I/O:\n" + "\n".join(problems)


def test_layering_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sanduan.edge import cli\nimport sanduan.central.x\n", encoding="utf-8")
    roles = {_role_of(m) for m in _imports(bad)}
    assert {"edge", "central"} <= roles


def test_no_top_level_shared_package() -> None:
    for role in ROLES:
        assert not (ROOT / role / "sanduan" / "__init__.py").exists(), "sanduan must stay PEP 420"
        assert not (ROOT / role / "__init__.py").exists()

"""Golden read plans: tests/golden/plan/<case>/config.toml -> expected.txt.

A case's expected text is what ``sanduan edge check-config`` prints for its station file (the
plan and the bus timing of every bus), or ``error: <message>`` for a file that must be refused.
Regenerate after an intended change with ``SANDUAN_UPDATE_GOLDEN=1 pytest tests/edge`` and review
the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.edge.cli import station_report
from sanduan.shared.errors import ConfigError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "plan"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.toml").is_file())
UPDATE = os.environ.get("SANDUAN_UPDATE_GOLDEN") == "1"


def render(case: Path) -> str:
    """The golden text of a case; paths are shown relative to the case directory."""
    try:
        lines, warnings = station_report(case / "config.toml")
    except ConfigError as exc:
        return f"error: {str(exc).replace(str(case) + os.sep, '')}\n"
    lines.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return "\n".join(lines) + "\n"


def test_the_golden_set_covers_the_required_cases() -> None:
    required = {"builtin-gap0", "builtin-gap10", "scattered", "boundary-125", "mixed-fc"}
    assert required <= set(CASES)
    assert sum(c.startswith("error-") for c in CASES) >= 5


@pytest.mark.parametrize("name", CASES)
def test_plan_matches_golden(name: str) -> None:
    case = GOLDEN / name
    got = render(case)
    expected_file = case / "expected.txt"
    if UPDATE or not expected_file.exists():
        expected_file.write_text(got, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{expected_file} was missing and has been written; review it")
    assert got == expected_file.read_text(encoding="utf-8")
    assert got.startswith("error: ") == name.startswith("error-")


def test_check_config_prints_the_golden_text() -> None:
    case = GOLDEN / "builtin-gap10"
    result = CliRunner().invoke(
        app, ["edge", "check-config", "--plan-only", str(case / "config.toml")]
    )
    assert result.exit_code == 0, result.output
    assert result.output == (case / "expected.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("error-")])
def test_check_config_refuses_bad_files_with_exit_2(name: str) -> None:
    case = GOLDEN / name
    result = CliRunner().invoke(app, ["edge", "check-config", str(case / "config.toml")])
    assert result.exit_code == 2
    expected = (case / "expected.txt").read_text(encoding="utf-8").removeprefix("error: ").strip()
    message = result.output.replace(str(case) + os.sep, "")
    assert expected in message
    assert "config.toml" in message

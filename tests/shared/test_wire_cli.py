"""``sanduan wire decode`` and ``sanduan wire encode-example``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sanduan.shared.wire import decode, to_json_obj

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "wire"
runner = CliRunner()


def _app() -> typer.Typer:
    from sanduan.cli import app

    return app


def test_decode_batch_shows_header_and_readings() -> None:
    result = runner.invoke(_app(), ["wire", "decode", str(GOLDEN / "batch.bin")])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("js-taihu-07", "1001..1010", "w21003", "missing", "first 6 of 6 readings"):
        assert text in out
    assert "2026-01-01 00:00:00.000" in out


def test_decode_rows_limit() -> None:
    result = runner.invoke(_app(), ["wire", "decode", "-n", "2", str(GOLDEN / "batch.bin")])
    assert result.exit_code == 0, result.output
    assert "first 2 of 6 readings" in result.output
    assert "1010" not in result.output.split("readings", 2)[-1]


@pytest.mark.parametrize("name", ["ack-ranges", "resend", "status", "event"])
def test_decode_other_kinds_as_tree(name: str) -> None:
    result = runner.invoke(_app(), ["wire", "decode", str(GOLDEN / f"{name}.bin")])
    assert result.exit_code == 0, result.output
    assert "js-taihu-07" in result.output
    assert name.split("-", maxsplit=1)[0] in result.output


@pytest.mark.parametrize("name", ["batch", "status", "event"])
def test_decode_json(name: str) -> None:
    path = GOLDEN / f"{name}.bin"
    result = runner.invoke(_app(), ["wire", "decode", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == to_json_obj(decode(path.read_bytes()))


def test_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = GOLDEN / "bad-flag.bin"
    result = runner.invoke(_app(), ["wire", "decode", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0]
    assert "unknown flag 'X'" in lines[0]

    missing = tmp_path / "nope.bin"
    result = runner.invoke(_app(), ["wire", "decode", str(missing)])
    assert result.exit_code == 2
    assert str(missing) in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["batch", "ack", "resend", "status", "event"])
def test_encode_example_writes_a_valid_message(tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"{kind}.bin"
    result = runner.invoke(_app(), ["wire", "encode-example", kind, str(out)])
    assert result.exit_code == 0, result.output
    assert kind == decode(out.read_bytes()).KIND


def test_encode_example_unknown_kind(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["wire", "encode-example", "reading", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown kind 'reading'" in result.output


def test_importing_the_cli_module_stays_light() -> None:
    code = (
        "import sys; import sanduan.shared.wire_cli\n"
        "print(','.join(m for m in ('msgpack', 'rich', 'sanduan.shared.wire') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

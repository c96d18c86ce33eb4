"""``sanduan edge run``'s start path (sanduan.edge.runner): its argument parsing, that it takes
every option of the typer command, and what a running agent has imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from tests.edge.conftest import free_port

from sanduan.cli import app
from sanduan.edge.runner import OPTIONS, parse

HEAVY = (
    "typer",
    "click",
    "rich",
    "jinja2",
    "starlette",
    "uvicorn",
    "matplotlib",
    "psycopg",
    "sqlite_utils",
    "pydantic",
    "pydantic_core",
    "sanduan.shared.tables",
    "sanduan.central",
    "sanduan.hil",
)
"""Modules the running agent must not hold: other commands', the collector's, the rig's, and
pydantic (the configuration is validated with msgspec: about 11 MiB less resident memory)."""


def test_parse_takes_the_options_in_both_spellings() -> None:
    assert parse(["--config", "s.toml"]) == {"config": "s.toml"}
    assert parse(["-c", "s.toml", "--db=b.db", "--log-level", "DEBUG"]) == {
        "config": "s.toml",
        "db": "b.db",
        "log_level": "DEBUG",
    }
    assert parse(["--config=s.toml", "--log-format", "text", "--fake-source", "0.1:4"]) == {
        "config": "s.toml",
        "log_format": "text",
        "fake_source": "0.1:4",
    }


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no --config: typer says it is missing
        ["--db", "b.db"],
        ["--help"],
        ["--config", "s.toml", "--help"],
        ["--config"],  # no value
        ["--config", "--db", "b.db"],
        ["--config", "a.toml", "--config", "b.toml"],  # repeated
        ["--config", "s.toml", "extra"],
        ["--config", "s.toml", "--unknown", "x"],
    ],
)
def test_parse_leaves_anything_else_to_the_typer_command(argv: list[str]) -> None:
    assert parse(argv) is None


def test_the_fast_path_takes_every_option_of_the_typer_command() -> None:
    group = typer.main.get_command(app)
    edge = group.commands["edge"]  # type: ignore[attr-defined]
    run = edge.commands["run"]
    typer_options = {opt: p.name for p in run.params for opt in p.opts}
    assert typer_options == OPTIONS


def _write_station(path: Path, db: Path, port: int) -> None:
    path.write_text(
        textwrap.dedent(f"""
            [station]
            id = "runner-test"

            [buffer]
            path = "{db}"
            commit_interval_s = 0.1

            [uplink]
            broker = "mqtt://127.0.0.1:{port}"
            reconnect_max_s = 1
        """),
        encoding="utf-8",
    )


@pytest.mark.process
def test_the_running_agent_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """``sanduan edge run`` through the real entry point, until its first readings are
    committed and graded; then its modules are listed and it is stopped with SIGTERM. No broker
    listens on its port: the uplink keeps trying, which is what the agent does in the field."""
    cfg = tmp_path / "station.toml"
    db = tmp_path / "buffer.db"
    _write_station(cfg, db, free_port())
    script = textwrap.dedent(f"""
        import os, signal, sqlite3, sys, threading, time

        def watch():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.1)
                try:
                    con = sqlite3.connect("file:{db}?mode=ro", uri=True)
                    n = con.execute("SELECT count(*) FROM reading").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    continue
                if n >= 8:
                    break
            print("MODULES", " ".join(sorted(sys.modules)), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
        sys.argv = ["sanduan", "edge", "run", "--config", {str(cfg)!r},
                    "--fake-source", "0.05:4"]
        from sanduan.cli import main
        main()
    """)
    r = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = next((x for x in r.stdout.splitlines() if x.startswith("MODULES ")), None)
    assert line is not None, r.stderr[-3000:]
    modules = set(line.split()[1:])
    # It did run the agent: buffer, grading, uplink.
    for needed in ("sanduan.edge.app", "sanduan.edge.grader", "numpy", "paho.mqtt.client"):
        assert needed in modules, f"{needed} not imported: the agent did not run"
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"the running agent imported {heavy}"
    if "sanduan.shared.grading._aot" in modules:  # compiled kernels: no compiler loaded
        assert not {"numba", "llvmlite"} & modules

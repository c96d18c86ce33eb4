"""``sanduan edge run``'s start path: the station agent's process, without the CLI framework.

The agent runs for months on a gateway with little memory, and whatever its process imports
stays resident. The ``sanduan`` command (:func:`sanduan.cli.main`) hands ``edge run ARGS`` to
:func:`main` here when ARGS are only this command's options, so the agent does not load typer
and the other roles' command modules (3.5 MiB resident it never uses after parsing its
arguments). Anything else (``--help``, an unknown or repeated option, a missing value) goes to
the typer command ``sanduan edge run`` (:mod:`sanduan.edge.cli`), which takes the same options
and calls :func:`run` too, so both paths start the same agent and fail the same way.

This module imports only the standard library at its top: :func:`run` imports the agent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sanduan.shared.config import StationConfig

CONFIG_ERROR = 2
"""Exit status of a configuration error or a damaged buffer: an operator must act."""
RUN_FAILED = 1
"""Exit status of an agent that stopped on a failure (systemd restarts it)."""

OPTIONS: dict[str, str] = {
    "--config": "config",
    "-c": "config",
    "--db": "db",
    "--log-level": "log_level",
    "--log-format": "log_format",
    "--fake-source": "fake_source",
    "--mqtt-password-file": "mqtt_password_file",
}
"""Every option of ``sanduan edge run`` (each takes a value) and its parameter name."""

THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""numpy's BLAS would start a thread per core at import, each with its own buffers; the agent
does no linear algebra. Set to 1 unless the environment already says otherwise."""

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter: the number of malloc arenas (8 per core by default)."""
ARENA_MAX = 2


def parse(argv: Sequence[str]) -> dict[str, str] | None:
    """``edge run``'s arguments as ``{parameter: value}``; None when they are anything but
    options of the command, each given once with its value (``--opt VALUE`` or
    ``--opt=VALUE``), ``--config`` among them: the typer command then deals with them (help,
    usage errors)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            if value.startswith("-"):
                return None
            i += 1
        i += 1
        key = OPTIONS.get(name)
        if key is None or key in out:
            return None
        out[key] = value
    return out if "config" in out else None


def prepare_process() -> None:
    """Settings of a long-running agent process that must come before numpy is imported and
    before the agent starts its threads (see :data:`THREAD_ENV`, :data:`ARENA_MAX`)."""
    for var in THREAD_ENV:
        os.environ.setdefault(var, "1")
    if sys.platform == "linux" and "MALLOC_ARENA_MAX" not in os.environ:
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            libc.mallopt(M_ARENA_MAX, ARENA_MAX)
        except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to set
            pass


def login_overrides(password_file: Path | None) -> Callable[[StationConfig], StationConfig]:
    """What ``--mqtt-password-file`` changes in a station file (for ``run``: in every reloaded
    file too)."""

    def apply(cfg: StationConfig) -> StationConfig:
        if password_file is None:
            return cfg
        login = {"password_file": password_file, "password": None}
        return cfg.replace(uplink=cfg.uplink.replace(**login))

    return apply


def run(
    config: Path,
    *,
    db: Path | None = None,
    log_level: str = "INFO",
    log_format: str = "json",
    fake_source: str | None = None,
    mqtt_password_file: Path | None = None,
) -> tuple[int, str]:
    """Run the station agent until SIGTERM/SIGINT (SIGHUP reloads the station file): (exit
    status, what to print on stderr when it is not 0)."""
    prepare_process()
    from sanduan.edge.app import AgentFailed, BusSource, FakeSource, configure_logging, run_agent
    from sanduan.edge.io.outbox import BufferWriteError
    from sanduan.shared.clock import clock_from_env
    from sanduan.shared.config import load_station_config
    from sanduan.shared.errors import SanduanError

    configure_logging(log_level, log_format)
    try:
        overrides = login_overrides(mqtt_password_file)
        cfg = overrides(load_station_config(config))
        clock = clock_from_env()
        source = (
            FakeSource.parse(fake_source, clock)
            if fake_source is not None
            else BusSource(config, clock)
        )
        # A reload (SIGHUP, push-config) makes the buses anew; a fake source stays.
        factory = None if fake_source is not None else (lambda _: BusSource(config, clock))
        run_agent(
            cfg,
            source=source,
            clock=clock,
            db_path=db,
            config_path=config,
            source_factory=factory,
            overrides=overrides,
        )
    except (AgentFailed, BufferWriteError) as exc:
        return RUN_FAILED, str(exc)
    except SanduanError as exc:  # configuration, a damaged buffer: an operator must act
        return CONFIG_ERROR, str(exc)
    return 0, ""


def main(argv: Sequence[str]) -> int | None:
    """Run ``sanduan edge run ARGV`` here; None when ARGV is for the typer command (see
    :func:`parse`). Returns the exit status."""
    args = parse(argv)
    if args is None:
        return None
    db = args.get("db")
    secret = args.get("mqtt_password_file")
    code, message = run(
        Path(args["config"]),
        db=Path(db) if db is not None else None,
        log_level=args.get("log_level", "INFO"),
        log_format=args.get("log_format", "json"),
        fake_source=args.get("fake_source"),
        mqtt_password_file=Path(secret) if secret is not None else None,
    )
    if code:
        print(f"sanduan edge run: {message}", file=sys.stderr)
    return code

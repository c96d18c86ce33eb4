"""Where numba keeps compiled grading kernels.

The kernels are compiled with ``cache=True``. By default numba writes the cache next to the
source (``__pycache__``), which fails on a read-only gateway image. Point it elsewhere with the
environment variable ``NUMBA_CACHE_DIR`` or by calling :func:`configure_cache` early, before
anything imports numba or :mod:`sanduan.shared.grading.kernels` (for example first thing in a
command's entry point). This module does not import numba itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sanduan.shared.errors import ConfigError

ENV = "NUMBA_CACHE_DIR"
_KERNELS = "sanduan.shared.grading.kernels"


def configure_cache(directory: str | os.PathLike[str]) -> Path:
    """Make numba cache compiled kernels in ``directory`` (created if missing).

    Raises ConfigError if the directory cannot be created or written, or if the kernels were
    already imported (their cache location is fixed at import time).
    """
    path = Path(directory).expanduser().resolve()
    if _KERNELS in sys.modules:
        raise ConfigError(
            ENV,
            "",
            "the grading kernels are already imported; call configure_cache() before "
            "importing sanduan.shared.grading.kernels or grading anything",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot create numba cache directory: {e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(str(path), "", "numba cache directory is not writable")
    os.environ[ENV] = str(path)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        # numba was imported already (by someone else): its config read the environment then.
        numba_config.CACHE_DIR = str(path)  # type: ignore[attr-defined]
    return path


def cache_dir() -> str | None:
    """The configured cache directory, or None for numba's default (next to the source)."""
    return os.environ.get(ENV) or None

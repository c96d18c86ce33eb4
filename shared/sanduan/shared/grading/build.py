"""Ahead-of-time build of the grading kernels: ``kernels.py`` compiled by numba's AOT compiler
(``numba.pycc``) into the extension module ``sanduan.shared.grading._aot``.

The package build runs this (``hatch_build.py``, for ``pip install -e .`` and for a wheel), and
so can a developer after editing the kernels::

    python -m sanduan.shared.grading.build            # rebuild in place
    python -m sanduan.shared.grading.build --if-stale # only when the kernels or signatures changed

(``make aot`` runs the second; ``SANDUAN_AOT=0`` skips both here and in the package build.)

The extension needs numpy and nothing of numba or llvmlite at run time
(:mod:`sanduan.shared.grading.aot` loads it, and imports this module for :func:`source_digest`:
what only the build needs is imported inside the functions). Every kernel is exported with one
signature of C-contiguous arrays; the parallel kernels are not (numba's AOT compiler has no
``parallel``), they stay with the JIT. The extension carries :func:`source_digest` of the
sources it was built from, so a stale build is recognised and not used.

This module imports nothing of sanduan, and numba only inside :func:`compile_kernels`: the
build hook loads it by path in an environment where sanduan is not installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULE = "_aot"
"""Name of the extension module, next to this file: ``_aot.<platform suffix>``."""
DIGEST_EXPORT = "source_digest"

SIGNATURES: dict[str, str] = {
    "grade_value": "i8(f8, f8[::1], i8)",
    "classify": "i1[::1](f8[::1], f8[::1], i8)",
    "classify_indexed": "i1[::1](f8[::1], i8[::1], f8[:, ::1], i8[::1])",
    "overall_class": "i1[::1](i1[:, ::1], b1[::1])",
    "exceedance_value": "f8(f8, f8[::1], i8, i8)",
    "exceedance": "f8[::1](f8[::1], f8[::1], i8, i8)",
    "exceedance_indexed": "f8[::1](f8[::1], i8[::1], f8[:, ::1], i8[::1], i8)",
    "meets_target": "b1[::1](i1[::1], i8)",
}
"""Every kernel compiled ahead of time and its one signature (numba type strings). The wrappers
in :mod:`sanduan.shared.grading.aot` convert arguments to exactly these types."""


def source_digest(directory: Path = HERE) -> int:
    """A 60-bit digest of the kernel source and of the exported signatures."""
    h = hashlib.sha256((directory / "kernels.py").read_bytes())
    h.update(repr(sorted(SIGNATURES.items())).encode())
    return int(h.hexdigest()[:15], 16)


def extension_suffix() -> str:
    """The file-name suffix of an extension module for this interpreter."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def extension_path(directory: Path = HERE) -> Path:
    return directory / f"{MODULE}{extension_suffix()}"


def _load_kernels_source(directory: Path) -> Any:
    """``kernels.py`` as a private module, without importing the sanduan package."""
    path = directory / "kernels.py"
    spec = importlib.util.spec_from_file_location("_sanduan_grading_kernels", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with sanduan
        raise FileNotFoundError(directory / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _digest_function(value: int) -> Callable[[], int]:
    def digest() -> int:
        return value

    return digest


def compile_kernels(
    output_dir: Path = HERE, *, source_dir: Path = HERE, cpu: str = "", verbose: bool = False
) -> Path:
    """Compile every kernel of :data:`SIGNATURES` into ``output_dir/_aot.<suffix>``; returns
    its path. ``cpu`` is the LLVM CPU name to target: empty (the default) for the generic CPU
    of the platform, so that a wheel runs on any machine of its architecture; ``"host"`` for
    this machine's.

    Needs numba (with its ``pycc``), numpy, setuptools and a C compiler; raises whatever they
    raise when one is missing.
    """
    import tempfile
    import warnings

    with warnings.catch_warnings():
        # numba.pycc warns that it is pending deprecation; it is what the build uses.
        warnings.simplefilter("ignore")
        # numba is untyped: its modules as Any.
        config: Any = importlib.import_module("numba.core.config")
        CC: Any = importlib.import_module("numba.pycc").CC  # noqa: N806

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sanduan-aot-") as tmp:
        # The kernels' JIT cache of this build stays in the build: the source is loaded under a
        # private module name, which must not meet the cache of the installed module.
        saved_cache_dir = config.CACHE_DIR
        config.CACHE_DIR = str(Path(tmp) / "numba-cache")
        try:
            kernels = _load_kernels_source(source_dir)
        finally:
            config.CACHE_DIR = saved_cache_dir
        cc = CC(MODULE)
        cc.output_dir = tmp
        cc.verbose = verbose
        if cpu:
            cc.target_cpu = _host_cpu() if cpu == "host" else cpu
        for name, signature in SIGNATURES.items():
            cc.export(name, signature)(getattr(kernels, name).py_func)
        cc.export(DIGEST_EXPORT, "i8()")(_digest_function(source_digest(source_dir)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cc.compile()
        built = Path(tmp) / Path(cc.output_file).name
        target = output_dir / f"{MODULE}{extension_suffix()}"
        # Replace atomically: a process that has the old file loaded keeps its mapping.
        staged = target.with_name(target.name + ".new")
        staged.write_bytes(built.read_bytes())
        staged.chmod(0o755)
        staged.replace(target)
    return target


def _host_cpu() -> str:
    llvm: Any = importlib.import_module("llvmlite.binding")
    return str(llvm.get_host_cpu_name())


def built_digest(directory: Path = HERE) -> int | None:
    """The digest recorded in the extension in ``directory``, or None if there is none or it
    cannot be loaded (this loads the extension, which imports numpy)."""
    path = extension_path(directory)
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        return None
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return int(getattr(module, DIGEST_EXPORT)())
    except (ImportError, AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(
        prog="python -m sanduan.shared.grading.build",
        description="Compile the grading kernels ahead of time (numba.pycc).",
    )
    ap.add_argument("--if-stale", action="store_true", help="only if missing or out of date")
    ap.add_argument(
        "--cpu",
        default=os.environ.get("SANDUAN_AOT_CPU", ""),
        help='LLVM CPU name; "host" for this machine (default: $SANDUAN_AOT_CPU, else generic)',
    )
    ap.add_argument("--output-dir", type=Path, default=HERE)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    path = extension_path(a.output_dir)
    if os.environ.get("SANDUAN_AOT", "1").strip().lower() in ("0", "no", "off", "false"):
        print("SANDUAN_AOT=0: the grading kernels are not compiled ahead of time (JIT only)")
        return 0
    if a.if_stale and built_digest(a.output_dir) == source_digest():
        print(f"grading kernels up to date: {path}")
        return 0
    print("compiling the grading kernels ahead of time (numba.pycc) ...", flush=True)
    t0 = time.monotonic()
    path = compile_kernels(a.output_dir, cpu=a.cpu, verbose=a.verbose)
    print(f"built {path} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

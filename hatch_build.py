"""Package build hook: compile the grading kernels ahead of time (numba.pycc).

``pip install -e .`` puts the extension next to the sources (``shared/sanduan/shared/grading/
_aot.<suffix>``, ignored by git); a wheel build compiles it into a temporary directory and adds
it to the wheel, which then carries the platform's tag. Where the compile fails (no C compiler)
the build goes on with a warning and sanduan grades with numba's JIT kernels instead.

``SANDUAN_AOT=0`` skips the compile; ``SANDUAN_AOT=require`` makes a failed compile fail the
build. ``SANDUAN_AOT_CPU`` sets the LLVM CPU to target (default: the platform's generic CPU, so a
wheel runs on any machine of its architecture; ``host`` for the building machine's).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

GRADING = Path("shared/sanduan/shared/grading")
WHEEL_DIR = "sanduan/shared/grading"


def _build_module(root: Path) -> Any:
    path = root / GRADING / "build.py"
    spec = importlib.util.spec_from_file_location("_sanduan_grading_build", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class AotKernelsHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("SANDUAN_AOT", "1").strip().lower()
        if self.target_name != "wheel" or mode in ("0", "no", "off", "false"):
            return
        root = Path(self.root)
        source = root / GRADING
        editable = version == "editable"
        self._tmp: str | None = None if editable else tempfile.mkdtemp(prefix="sanduan-aot-")
        out = source if editable else Path(self._tmp or "")
        self.app.display_info("compiling the grading kernels ahead of time (numba.pycc) ...")
        t0 = time.monotonic()
        try:
            build = _build_module(root)
            path = build.compile_kernels(
                out, source_dir=source, cpu=os.environ.get("SANDUAN_AOT_CPU", "")
            )
        except Exception as exc:
            if mode == "require":
                raise
            self.app.display_warning(
                f"the grading kernels could not be compiled ahead of time ({type(exc).__name__}:"
                f" {exc}); sanduan will grade with numba's JIT kernels"
            )
            return
        self.app.display_info(f"built {path.name} in {time.monotonic() - t0:.1f} s")
        if not editable:
            build_data["force_include"][str(path)] = f"{WHEEL_DIR}/{path.name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

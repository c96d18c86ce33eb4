"""The grading kernels compiled ahead of time: loaded without numba, arguments converted to the
compiled types, stale builds refused, and the JIT taken when they are not there."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from sanduan.shared.errors import ConfigError
from sanduan.shared.grading import build, kernel_tables, kernels, loader
from sanduan.shared.model import WaterBody


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != loader.ENV}
    env.update(extra)
    return env


def _python(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(**extra), capture_output=True, text=True, check=False
    )


@pytest.fixture
def aot() -> loader.Kernels:
    if os.environ.get(loader.ENV) == "jit":
        pytest.skip("SANDUAN_KERNELS=jit: this machine grades with the JIT kernels only")
    return loader.load("aot")


def test_a_process_grades_with_the_aot_kernels_without_numba_or_llvmlite() -> None:
    code = (
        "import sys\n"
        "from sanduan.shared.grading import grade_sample, loader\n"
        "g = grade_sample({'COD': 18.0, 'DO': 4.2, 'NH3-N': 0.8}, target_class=3)\n"
        "print(loader.kind(), g.grade, g.main_pollutants,\n"
        "      sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n"
    )
    if os.environ.get(loader.ENV) == "jit":
        pytest.skip("SANDUAN_KERNELS=jit: this machine grades with the JIT kernels only")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["aot", "4", "('DO',)", "[]"]
    assert "JIT" not in out.stderr


def test_without_the_aot_build_a_process_falls_back_to_the_jit_with_a_warning() -> None:
    code = (
        "import sys\n"
        "sys.modules['sanduan.shared.grading._aot'] = None  # as if never built\n"
        "from sanduan.shared.grading import grade_sample, loader\n"
        "g = grade_sample({'COD': 18.0, 'DO': 4.2})\n"
        "print(loader.kind(), g.grade, 'numba' in sys.modules)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["jit", "4", "True"]
    assert "grading with numba's JIT kernels" in out.stderr
    assert "python -m sanduan.shared.grading.build" in out.stderr


def test_asking_for_aot_kernels_that_are_not_built_fails_naming_the_fix() -> None:
    code = (
        "import sys\n"
        "sys.modules['sanduan.shared.grading._aot'] = None\n"
        "from sanduan.shared.grading import grade_sample\n"
        "grade_sample({'COD': 18.0})\n"
    )
    out = _python(code, SANDUAN_KERNELS="aot")
    assert out.returncode != 0
    assert "SANDUAN_KERNELS" in out.stderr
    assert "not built" in out.stderr


def test_sanduan_kernels_jit_gives_the_jit_kernels() -> None:
    out = _python(
        "from sanduan.shared.grading import grade_sample, loader\n"
        "grade_sample({'COD': 18.0})\nprint(loader.kind())\n",
        SANDUAN_KERNELS="jit",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "jit"


@pytest.mark.parametrize("value", ["numba", "AOT2", "fast"])
def test_an_unknown_sanduan_kernels_value_is_a_config_error(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(loader.ENV, value)
    with pytest.raises(ConfigError, match="'aot', 'jit' or 'auto'"):
        loader.requested()


@pytest.fixture
def fresh_aot_import() -> Iterator[None]:
    """Import ``sanduan.shared.grading.aot`` anew in the test, and leave it as it was."""
    saved = sys.modules.pop("sanduan.shared.grading.aot", None)
    try:
        yield
    finally:
        sys.modules.pop("sanduan.shared.grading.aot", None)
        if saved is not None:
            sys.modules["sanduan.shared.grading.aot"] = saved


def test_a_stale_aot_build_is_refused(
    aot: loader.Kernels, fresh_aot_import: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = build.source_digest()
    monkeypatch.setattr(build, "source_digest", lambda directory=build.HERE: real ^ 1)
    with pytest.raises(ConfigError, match="built from other sources"):
        loader.load("aot")


def test_the_build_reports_an_up_to_date_extension(aot: loader.Kernels) -> None:
    assert build.built_digest() == build.source_digest()
    out = subprocess.run(
        [sys.executable, "-m", "sanduan.shared.grading.build", "--if-stale"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("grading kernels up to date")


def test_arguments_are_converted_to_the_compiled_types(aot: loader.Kernels) -> None:
    """A compiled kernel reads raw memory: other dtypes, strides and lists must be converted
    first, giving what the JIT kernel gives."""
    t = kernel_tables(WaterBody.RIVER)
    values = np.array([0.125, 5.0, 50.0, np.nan, -1.0, 7.5, 0.25, 2.0])  # exact in float32
    idx = np.arange(len(values)) % len(t.names)
    want = kernels.classify_indexed(values, idx, t.limits, t.directions).tolist()
    for v, i in [
        (values, idx.astype(np.int32)),
        (values.astype(np.float32), idx.astype(np.uint8)),
        (values.tolist(), idx.tolist()),
        (np.repeat(values, 2)[::2], np.repeat(idx, 2)[::2]),
    ]:
        assert aot.classify_indexed(v, i, t.limits, t.directions).tolist() == want  # type: ignore[arg-type]
    fortran = np.asfortranarray(t.limits)
    assert aot.classify_indexed(values, idx, fortran, t.directions).tolist() == want
    classes = np.array([[1, 3, 6], [0, 2, -1]], dtype=np.int64)
    evaluated = np.array([1, 1, 0])
    assert aot.overall_class(classes, evaluated).tolist() == [3, 2]  # type: ignore[arg-type]
    assert aot.meets_target([3, 4, 0], 3).tolist() == [True, False, False]  # type: ignore[arg-type]


def test_wrong_dimensions_are_a_type_error(aot: loader.Kernels) -> None:
    t = kernel_tables(WaterBody.RIVER)
    with pytest.raises(TypeError, match="values: expected a 1-d array, got 2-d"):
        aot.classify_indexed(np.zeros((2, 2)), np.zeros(4, np.int64), t.limits, t.directions)
    with pytest.raises(TypeError, match="limits: expected a 2-d array, got 1-d"):
        aot.classify_indexed(np.zeros(1), np.zeros(1, np.int64), t.limits[0], t.directions)

"""Edge grading: the kernels' classes per reading, exceedance, alarm events."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.edge.core.outbox_policy import AlarmChange
from sanduan.edge.grader import CLEARED, EXCEEDANCE, Grader
from sanduan.shared import wire
from sanduan.shared.grading import classify_batch
from sanduan.shared.model import WaterBody
from sanduan.shared.params import by_code
from sanduan.shared.wire import Severity


def test_grades_match_the_shared_classifier() -> None:
    g = Grader(WaterBody.LAKE, 3)
    codes = ["w21003", "w21011", "w01009", "w01001", "w21003"]
    values = np.array([0.12, 0.04, 3.5, 7.2, 2.6])
    got = g.grade(values, g.indexes(codes))
    idx = [by_code(c).index for c in codes]
    assert got == classify_batch(values, idx, WaterBody.LAKE).tolist()
    assert got[-1] == 6


def test_unusable_values_are_not_graded_and_do_not_raise() -> None:
    g = Grader()
    got = g.grade(np.array([-0.5, math.nan, 1.0]), g.indexes(["w21003", "w21003", "zz"]))
    assert got == [0, 0, 0]


def test_exceedance_against_target_class() -> None:
    g = Grader(target_class=3)  # NH3-N class III limit 1.0 mg/L
    e = g.exceedance("w21003", 1.5)
    assert e is not None and math.isclose(e, 0.5)
    assert g.exceedance("w01009", 2.0) is None  # DO has lower limits: no multiple
    assert g.exceedance("nope", 1.0) is None


def test_alarm_events_encode() -> None:
    g = Grader(target_class=3)
    raised = g.alarm_event("st", 7, AlarmChange("w21003", True, 1000, 6, (2.1, 2.2, 2.5), 3))
    assert raised.kind == EXCEEDANCE and raised.severity is Severity.CRITICAL
    assert raised.details["value"] == 2.5 and raised.details["streak"] == 3
    exc = raised.details["exceedance"]
    assert isinstance(exc, float) and math.isclose(exc, 1.5)
    cleared = g.alarm_event("st", 8, AlarmChange("w21003", False, 2000, 2, (0.3,), 4))
    assert cleared.kind == CLEARED and cleared.severity is Severity.INFO
    for ev in (raised, cleared):
        assert wire.decode(wire.encode(ev)) == ev


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-2, 40),
            st.one_of(st.floats(-1.0, 50.0), st.just(math.nan), st.sampled_from([0.5, 1.0, 2.0])),
        ),
        min_size=1,
        max_size=200,
    ),
    st.sampled_from(list(WaterBody)),
)
def test_numpy_engine_equals_the_numba_kernels(
    rows: list[tuple[int, float]], body: WaterBody
) -> None:
    idx = np.array([i for i, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=np.float64)
    assert Grader(body, engine="numpy").grade(values, idx) == Grader(body).grade(values, idx)


def test_numpy_engine_exceedance_matches() -> None:
    a, b = Grader(engine="numpy"), Grader()
    for code, v in [("w21003", 1.7), ("w21011", 0.01), ("w01009", 3.0), ("w01001", 7.0)]:
        assert a.exceedance(code, v) == b.exceedance(code, v)


def test_physically_impossible_values_are_screened_and_not_graded() -> None:
    for engine in ("numba", "numpy"):
        g = Grader(engine=engine)
        codes = ["w01001", "w01001", "w01001", "w21003", "w01010", "zz"]
        values = np.array([7.2, 40.0, math.nan, 250.0, -4.0, 1e9])
        grades, bad = g.screen(values, g.indexes(codes))
        assert bad.tolist() == [False, True, False, True, False, False], engine
        assert grades[1] == grades[3] == 0 and grades[0] == 1
        assert g.grade(values, g.indexes(codes)) == grades


def test_the_numba_engine_grades_without_numba_or_llvm_in_the_process() -> None:
    # A fresh process: what `sanduan edge run` does when it creates its grader.
    code = textwrap.dedent(
        """
        import json, sys
        from sanduan.edge.grader import Grader
        from sanduan.shared.grading import loader
        g = Grader()
        grades = g.grade(np.array([0.5, 7.0]), g.indexes(["w21003", "w01001"]))
        exc = g.exceedance("w21003", 1.5)
        jit = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
        print(json.dumps({"kind": loader.kind(), "grades": grades, "exc": exc, "jit": jit}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SANDUAN_KERNELS"}
    out = subprocess.run(
        [sys.executable, "-c", "import numpy as np\n" + code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["jit"] == [] and r["kind"] == "aot", r
    want = Grader(engine="numpy")
    assert r["grades"] == want.grade(np.array([0.5, 7.0]), want.indexes(["w21003", "w01001"]))
    assert r["exc"] == want.exceedance("w21003", 1.5)


def test_the_grader_says_when_grading_was_ready_and_with_what() -> None:
    numba = Grader()
    plain = Grader(engine="numpy")
    assert numba.kernels in ("aot", "jit")
    assert re.fullmatch(
        rf"grading ready in [0-9.]+ ms, [0-9.]+ ms of CPU \(numba, {numba.kernels} kernels\)",
        numba.ready_message(),
    )
    assert plain.kernels == "numpy" and plain.ready_ms >= 0 and plain.ready_cpu_ms >= 0
    assert re.fullmatch(
        r"grading ready in [0-9.]+ ms, [0-9.]+ ms of CPU \(numpy\)", plain.ready_message()
    )

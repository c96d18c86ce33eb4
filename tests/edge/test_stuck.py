"""Stuck values: the shared tracker, the agent's buffer flagging them D (kept out of its
aggregates and valid on the wire), and the rig's truth expecting the same flags."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sanduan.edge.core.model import PolledValue
from sanduan.edge.grader import Grader
from sanduan.edge.io.outbox import Outbox
from sanduan.shared import wire
from sanduan.shared.config import GradingConfig, parse_model
from sanduan.shared.errors import ConfigError
from sanduan.shared.model import Flag
from sanduan.shared.stuck import StuckTracker

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def test_tracker_flags_from_the_nth_identical_reading() -> None:
    t = StuckTracker(3)
    vals = [7.1, 7.2, 7.2, 7.2, 7.2, 7.3, 7.3, math.nan, 7.3, 7.3, 7.3]
    flags = ["N"] * len(vals)
    assert t.mark(["pH"] * len(vals), vals, flags) == [3, 4, 10]
    assert "".join(flags) == "NNNDDNNNNND"


def test_tracker_runs_are_per_item_and_end_at_a_flag() -> None:
    t = StuckTracker(2)
    assert [t.check("a", 1.0), t.check("b", 1.0), t.check("a", 1.0)] == [False, False, True]
    assert t.check("a", 1.0, "M") is False  # maintenance ends the run
    assert t.check("a", 1.0) is False
    assert StuckTracker(0).mark(["a", "a"], [1.0, 1.0], ["N", "N"]) == []


def test_default_is_on_for_stations() -> None:
    assert GradingConfig().stuck_polls == 4
    with pytest.raises(ConfigError, match="stuck_polls: must be greater than or equal to 0"):
        parse_model(GradingConfig, {"stuck_polls": -1}, "station.toml")


def test_buffer_flags_stuck_readings_d(tmp_path: Path) -> None:
    grader = Grader(engine="numpy", stuck_polls=4)
    with Outbox(tmp_path / "b.db", station="st-1", grader=grader) as ob:
        vals = [0.41, 0.43, 0.43, 0.43, 0.43, 0.43, 0.44]
        ob.commit(
            [PolledValue("nh3n", "w21003", T0 + i * 3_600_000, v, Flag.N) for i, v in
             enumerate(vals)]
        )  # fmt: skip
        flags = [r[4] for r in ob.readings()]
        assert flags == ["N", "N", "N", "N", "D", "D", "N"]
        hours = ob.aggregates("hour", "w21003")
        assert [h.valid for h in hours] == [1, 1, 1, 1, 0, 0, 1]
        batch = ob.form_batch(1)
        assert batch is not None
        back = wire.decode(wire.encode(batch))  # D is a flag every receiver knows
        assert isinstance(back, wire.Batch)
        assert "".join(str(f) for f in back.flags) == "NNNNDDN"


def test_truth_expects_the_agents_flags() -> None:
    from sanduan.hil.truth import TruthLog
    from sanduan.shared.registers import builtin_profiles

    profile = builtin_profiles()["sonde-multi"]
    decoded = {r.name: 1.0 for r in profile.registers}
    decoded |= {s.name: 7.0 + k / 10 for k, s in enumerate(profile.values)}
    log = TruthLog(stuck_polls=3)
    for k in range(4):  # the sonde serves the very same registers four polls in a row
        log.record_poll("st", "sonde", profile, 1000.0 + 3600 * k, decoded)
    by_poll = [[r.flag.value for r in log.readings() if r.ts == 1000.0 + 3600 * k] for k in
               range(4)]  # fmt: skip
    n = len(profile.values)
    assert by_poll == [["N"] * n, ["N"] * n, ["D"] * n, ["D"] * n]
    assert TruthLog().stuck.polls == GradingConfig().stuck_polls

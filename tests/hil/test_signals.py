"""Signal models: deterministic from the seed, the shapes they promise, analyzer cycles."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sanduan.hil.signals import (
    DAY,
    DEFAULT_MODELS,
    HOUR,
    AnalyzerCycle,
    PollutionEvent,
    RainEvent,
    StationSignals,
    Window,
    gaussian_noise,
    stable_hash,
)

T0 = 1_688_140_800.0  # 2023-07-01 00:00 +08:00
CODES = tuple(DEFAULT_MODELS)


def _series(sig: StationSignals, code: str, days: float = 3, step: float = 600) -> np.ndarray:
    return sig.series(code, T0 + np.arange(0, days * DAY, step))


def test_same_seed_same_values_in_any_order() -> None:
    a = StationSignals("CX-01", seed=42)
    b = StationSignals("CX-01", seed=42)
    times = T0 + np.arange(0, 2 * DAY, 3600.0)
    for code in CODES:
        forward = [a.value(code, float(t)) for t in times]
        backward = [b.value(code, float(t)) for t in times[::-1]][::-1]
        assert forward == backward
        assert np.array_equal(a.series(code, times), np.asarray(forward))


def test_seed_and_station_change_the_values() -> None:
    base = _series(StationSignals("CX-01", seed=1), "w21003")
    other_seed = _series(StationSignals("CX-01", seed=2), "w21003")
    other_station = _series(StationSignals("CX-02", seed=1), "w21003")
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_station)


def test_stable_hash_is_process_independent() -> None:
    # A fixed value: the same in every process and every Python run (unlike hash()).
    assert stable_hash(1, "CX-01", "w21003", "noise") == stable_hash(1, "CX-01", "w21003", "noise")
    assert stable_hash("a", "b") != stable_hash("ab")
    assert 0 <= stable_hash("x") < 1 << 64
    # Computed in a fresh interpreter (hash randomisation on) it is the same number.
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sanduan.hil.signals import stable_hash; print(stable_hash(7, 'w'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "random", **__import__("os").environ},
    ).stdout
    assert int(out) == stable_hash(7, "w")


def test_noise_is_standard_normal() -> None:
    z = gaussian_noise(12345, np.arange(200_000))
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1.0) < 0.01
    assert np.array_equal(z[:100], gaussian_noise(12345, np.arange(100)))


@pytest.mark.parametrize(("code", "peak_lo", "peak_hi"), [("w01009", 13, 17), ("w01001", 13, 17)])
def test_diurnal_cycle_peaks_in_the_afternoon(code: str, peak_lo: int, peak_hi: int) -> None:
    sig = StationSignals("CX-01", seed=5, tz_offset_h=8.0)
    times = T0 + np.arange(0, 14 * DAY, 600.0)
    values = sig.series(code, times)
    local_hour = ((times / HOUR) + 8.0) % 24
    by_hour = np.array([values[np.floor(local_hour) == h].mean() for h in range(24)])
    assert peak_lo <= int(np.argmax(by_hour)) <= peak_hi
    trough = int(np.argmin(by_hour))
    assert trough <= 5 or trough >= 23
    amp = DEFAULT_MODELS[code].diurnal_amp
    assert by_hour.max() - by_hour.min() > amp  # peak to trough is about twice the amplitude


def test_temperature_peaks_later_than_night() -> None:
    sig = StationSignals("CX-01", seed=5)
    afternoon = sig.value("w01010", T0 + 16 * HOUR)  # 16:00 local
    night = sig.value("w01010", T0 + 4 * HOUR)  # 04:00 local
    assert afternoon > night + 1.5


def test_rain_raises_nutrients_and_turbidity_then_decays() -> None:
    rain = RainEvent(T0 + 2 * DAY, duration_s=24 * HOUR, intensity=1.0)
    wet = StationSignals("CX-01", seed=9, rain=(rain,))
    dry = StationSignals("CX-01", seed=9)
    during = T0 + 2 * DAY + 20 * HOUR
    for code in ("w21003", "w21011", "w01003"):
        assert wet.value(code, during) > dry.value(code, during) + 0.5 * DEFAULT_MODELS[
            code
        ].rain_gain * (1 - math.exp(-20 / 3))
    # Before the storm nothing changes; a week later the runoff has decayed.
    assert wet.value("w21003", T0 + DAY) == dry.value("w21003", T0 + DAY)
    late = T0 + 12 * DAY
    assert abs(wet.value("w21003", late) - dry.value("w21003", late)) < 0.01
    assert wet.value("w01009", during) < dry.value("w01009", during)  # DO drops


def test_rain_limited_to_named_stations() -> None:
    rain = RainEvent(T0, DAY, 1.0, stations=frozenset({"CX-02"}))
    hit = StationSignals("CX-02", seed=1, rain=(rain,))
    spared = StationSignals("CX-01", seed=1, rain=(rain,))
    t = T0 + 20 * HOUR
    assert hit.value("w21003", t) > StationSignals("CX-02", seed=1).value("w21003", t)
    assert spared.value("w21003", t) == StationSignals("CX-01", seed=1).value("w21003", t)


def test_pollution_hits_downstream_stations_by_factor() -> None:
    ev = PollutionEvent(T0 + DAY, 10 * DAY, {"OUT": 1.0, "DN": 0.5})
    clean = {s: StationSignals(s, seed=3) for s in ("OUT", "DN", "UP")}
    dirty = {s: StationSignals(s, seed=3, pollution=(ev,)) for s in ("OUT", "DN", "UP")}
    t = T0 + 5 * DAY
    rise = {s: dirty[s].value("w21003", t) - clean[s].value("w21003", t) for s in clean}
    gain = DEFAULT_MODELS["w21003"].pollution_gain
    assert rise["OUT"] == pytest.approx(gain, rel=1e-9)
    assert rise["DN"] == pytest.approx(gain / 2, rel=1e-9)
    assert rise["UP"] == 0.0
    # Ramps up over hours, decays after the end.
    assert (
        0
        < dirty["OUT"].value("w21003", T0 + DAY + 3 * HOUR)
        - clean["OUT"].value("w21003", T0 + DAY + 3 * HOUR)
        < gain
    )


def test_sonde_drift_resets_at_cleaning() -> None:
    quiet = dataclasses.replace(DEFAULT_MODELS["w01014"], noise_sd=0.0)
    sig = StationSignals("CX-01", seed=4, cleaning_every_s=14 * DAY, models={"w01014": quiet})
    times = T0 + np.arange(0, 28 * DAY, 3600.0)
    steps = np.diff(sig.series("w01014", times))  # conductivity drifts up between cleanings
    rise = steps[steps > 0]
    assert len(rise) == len(steps) - 2  # two cleanings in four weeks
    assert np.allclose(rise, rise[0])  # a steady drift rate ...
    drops = steps[steps < 0]
    assert np.allclose(drops, -rise[0] * (14 * 24 - 1))  # ... reset to zero at each visit


def test_values_stay_in_the_physical_range() -> None:
    ev = PollutionEvent(T0, 30 * DAY, {"CX-01": 1.0}, intensity=20.0)
    sig = StationSignals("CX-01", seed=1, pollution=(ev,))
    for code, m in DEFAULT_MODELS.items():
        v = _series(sig, code, days=10)
        assert v.min() >= m.lo
        assert v.max() <= m.hi


def test_analyzer_cycles_and_result_times() -> None:
    cyc = AnalyzerCycle(cycle_s=4 * HOUR, measure_s=40 * 60)
    # Before the 04:00 cycle's result is ready, the 00:00 result is shown.
    s = cyc.state(T0 + 4 * HOUR + 39 * 60)
    assert s.result_time == T0
    s2 = cyc.state(T0 + 4 * HOUR + 40 * 60)
    assert s2.result_time == T0 + 4 * HOUR
    assert s2.cycle == s.cycle + 1
    got = cyc.results_between(T0, T0 + DAY)
    assert [r.result_time for r in got] == [T0 + k * 4 * HOUR for k in range(6)]


def test_analyzer_calibration_and_maintenance_cycles() -> None:
    maint = Window(T0 + DAY, T0 + DAY + 8 * HOUR)
    cyc = AnalyzerCycle(
        cycle_s=4 * HOUR, calibration_every=6, calibration_offset=2, maintenance=(maint,)
    )
    results = cyc.results_between(T0, T0 + 3 * DAY)
    kinds = [r.kind for r in results]
    assert kinds.count("maintenance") == 2  # two cycles start in the 8-hour window
    expected_cal = [
        r.cycle for r in results if r.cycle % 6 == 2 and not maint.contains(r.result_time)
    ]
    assert [r.cycle for r in results if r.kind == "calibration"] == expected_cal
    assert len(expected_cal) == 3


def test_analyzer_rejects_bad_timing() -> None:
    with pytest.raises(ValueError, match="cycle_s"):
        AnalyzerCycle(cycle_s=0)
    with pytest.raises(ValueError, match="measure_s"):
        AnalyzerCycle(cycle_s=3600, measure_s=3600)

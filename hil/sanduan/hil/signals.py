"""Signal models for simulated sensors: deterministic functions of simulated time and a seed.

Every value a simulated device serves comes from here. A value is a pure function of
``(seed, station, parameter code, t)``: two processes, or two runs, with the same seed and the
same scenario serve the same numbers at the same simulated instant, whatever order the reads
come in. Pure numpy and math; no I/O, no global random state.

A parameter's value at time ``t`` (Unix seconds) is::

    base * (1 + site variation)
      + diurnal amplitude * cos(2 pi (local hour - peak hour) / 24)
      + rain gain * rain response(t)          (runoff: NH3-N, TP, turbidity up; DO, EC down)
      + pollution gain * pollution level(t)   (a town's discharge, downstream stations only)
      + drift rate * days since the last sensor cleaning   (sondes only)
      + noise sd * N(0, 1) drawn once per noise slot (one simulated minute)

clipped to the parameter's physical range. Temperature's base also follows the season.

Analyzers (:class:`AnalyzerCycle`) measure in cycles: the result of the cycle that started at
``k * cycle_s`` becomes readable ``measure_s`` later, stamped with the cycle's start, and stays
unchanged until the next result. Calibration cycles (every ``calibration_every`` cycles) report
the check standard with status "calibrating"; cycles inside a maintenance window report no
value with status "maintenance". Both are reported through the analyzer's status register.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MODELS",
    "AnalyzerCycle",
    "AnalyzerState",
    "CycleKind",
    "ParamModel",
    "PollutionEvent",
    "RainEvent",
    "StationSignals",
    "Window",
    "gaussian_noise",
    "stable_hash",
]

FloatArray = npt.NDArray[np.float64]

DAY = 86_400.0
HOUR = 3_600.0
NOISE_SLOT_S = 60.0

_MASK64 = (1 << 64) - 1


def stable_hash(*parts: str | int) -> int:
    """A 64-bit hash of strings and ints that is the same in every process (unlike ``hash``)."""
    h = 0xCBF29CE484222325
    for part in parts:
        data = part.encode() if isinstance(part, str) else int(part).to_bytes(8, "little")
        for b in data + b"\x1f":
            h = ((h ^ b) * 0x100000001B3) & _MASK64
    return h


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser, element-wise (uint64 arithmetic wraps modulo 2**64)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def gaussian_noise(key: int, slots: npt.ArrayLike) -> FloatArray:
    """Standard normal numbers, one per integer slot, fixed by ``key`` (Box-Muller on hashes)."""
    s = np.asarray(slots, dtype=np.int64).astype(np.uint64)
    base = np.uint64(key & _MASK64)
    with np.errstate(over="ignore"):
        a = _splitmix(s * np.uint64(2) + base)
        b = _splitmix(s * np.uint64(2) + np.uint64(1) + base)
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u2 = (b >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """A simulated-time interval ``[start, end)`` in Unix seconds."""

    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class RainEvent:
    """A storm: runoff rises while it rains and decays afterwards.

    ``stations`` None means every station; ``intensity`` 1 is a heavy storm.
    """

    start: float
    duration_s: float
    intensity: float = 1.0
    stations: frozenset[str] | None = None
    rise_s: float = 3 * HOUR
    decay_s: float = 18 * HOUR

    def response(self, t: FloatArray) -> FloatArray:
        """Runoff level 0..intensity at times ``t``."""
        dt = t - self.start
        end = self.duration_s
        rising = 1.0 - np.exp(-np.clip(dt, 0.0, end) / self.rise_s)
        peak = 1.0 - math.exp(-end / self.rise_s)
        after = peak * np.exp(-np.clip(dt - end, 0.0, None) / self.decay_s)
        level = np.where(dt < 0, 0.0, np.where(dt < end, rising, after))
        out: FloatArray = self.intensity * level
        return out


@dataclass(frozen=True, slots=True)
class PollutionEvent:
    """A discharge in one town: ``stations`` maps each affected station to a factor (1 = full).

    The level ramps up over ``ramp_s``, holds, and decays over ``decay_s`` after ``duration_s``.
    """

    start: float
    duration_s: float
    stations: Mapping[str, float]
    intensity: float = 1.0
    ramp_s: float = 6 * HOUR
    decay_s: float = 24 * HOUR

    def level(self, station: str, t: FloatArray) -> FloatArray:
        factor = self.stations.get(station, 0.0)
        if factor == 0.0:
            return np.zeros_like(t)
        dt = t - self.start
        ramp = np.clip(dt / self.ramp_s, 0.0, 1.0)
        tail = np.exp(-np.clip(dt - self.duration_s, 0.0, None) / self.decay_s)
        out: FloatArray = factor * self.intensity * np.where(dt < 0, 0.0, ramp * tail)
        return out


@dataclass(frozen=True, slots=True)
class ParamModel:
    """How one parameter behaves; gains are added at rain/pollution level 1."""

    base: float
    lo: float
    hi: float
    noise_sd: float
    diurnal_amp: float = 0.0
    diurnal_peak_h: float = 15.0
    rain_gain: float = 0.0
    pollution_gain: float = 0.0
    drift_per_day: float = 0.0
    site_spread: float = 0.08
    """Relative spread of the base between stations (seeded per station)."""


# Summer values of a plain river network (GB 3838 class II-III water on a good day).
DEFAULT_MODELS: Mapping[str, ParamModel] = {
    "w01001": ParamModel(7.45, 6.0, 9.5, 0.03, 0.25, 15.0, -0.15, -0.2, 0.004, 0.01),  # pH
    "w01009": ParamModel(7.0, 0.5, 14.0, 0.12, 1.1, 15.0, -0.8, -3.2, -0.02, 0.06),  # DO
    "w01010": ParamModel(27.0, 0.0, 40.0, 0.08, 1.4, 16.0, -1.0, 0.0, 0.0, 0.02),  # temperature
    "w01014": ParamModel(480.0, 50.0, 3000.0, 4.0, 0.0, 15.0, -120.0, 150.0, 1.0, 0.15),  # EC
    "w01003": ParamModel(18.0, 0.5, 1000.0, 1.2, 0.0, 15.0, 70.0, 15.0, 0.15, 0.2),  # turbidity
    "w01016": ParamModel(6.0, 0.1, 200.0, 0.3, 1.5, 14.0, -2.0, 4.0, 0.0, 0.2),  # chlorophyll
    "w21003": ParamModel(0.42, 0.02, 20.0, 0.02, 0.0, 15.0, 0.45, 2.6, 0.0, 0.12),  # NH3-N
    "w21011": ParamModel(0.115, 0.005, 5.0, 0.004, 0.0, 15.0, 0.09, 0.42, 0.0, 0.12),  # TP
    "w01019": ParamModel(4.3, 0.3, 40.0, 0.08, 0.0, 15.0, 1.4, 5.5, 0.0, 0.1),  # CODMn
    "w21001": ParamModel(1.6, 0.05, 30.0, 0.05, 0.0, 15.0, 0.9, 3.0, 0.0, 0.1),  # TN
}
"""Built-in models by HJ 212 code: pH, DO, temperature, conductivity, turbidity, chlorophyll,
NH3-N, TP, CODMn, TN."""


@dataclass(frozen=True)
class StationSignals:
    """The true water of one station: every parameter as a function of simulated time.

    ``base`` overrides a parameter's base value (before the seeded site variation);
    ``tz_offset_h`` places the diurnal cycle in local time; ``cleaning_every_s`` resets sonde
    drift (a maintenance visit) at a seeded phase.
    """

    station: str
    seed: int
    base: Mapping[str, float] = field(default_factory=dict)
    rain: Sequence[RainEvent] = ()
    pollution: Sequence[PollutionEvent] = ()
    tz_offset_h: float = 8.0
    cleaning_every_s: float = 14 * DAY
    models: Mapping[str, ParamModel] = field(default_factory=lambda: DEFAULT_MODELS)

    def model(self, code: str) -> ParamModel:
        m = self.models.get(code)
        if m is None:
            return ParamModel(self.base.get(code, 1.0), 0.0, math.inf, 0.0)
        return m

    def _key(self, code: str, what: str) -> int:
        return stable_hash(self.seed, self.station, code, what)

    def _unit(self, code: str, what: str) -> float:
        """A fixed uniform number in [-1, 1) for this station, code and purpose."""
        return (self._key(code, what) >> 11) / float(1 << 52) - 1.0

    def site_base(self, code: str) -> float:
        m = self.model(code)
        base = self.base.get(code, m.base)
        return base * (1.0 + m.site_spread * self._unit(code, "site"))

    def series(self, code: str, t: npt.ArrayLike) -> FloatArray:
        """Values of ``code`` at the simulated times ``t`` (Unix seconds)."""
        ts = np.asarray(t, dtype=np.float64)
        m = self.model(code)
        base: float | FloatArray = self.site_base(code)
        if code == "w01010":  # water temperature follows the season (peak late July)
            doy = (ts / DAY) % 365.25
            base = base + 9.0 * (np.cos(2 * math.pi * (doy - 205.0) / 365.25) - 1.0)
        local_h = ((ts / HOUR) + self.tz_offset_h) % 24.0
        v = base + m.diurnal_amp * np.cos(2 * math.pi * (local_h - m.diurnal_peak_h) / 24.0)
        if m.rain_gain:
            for ev in self.rain:
                if ev.stations is None or self.station in ev.stations:
                    v = v + m.rain_gain * ev.response(ts)
        if m.pollution_gain:
            for pe in self.pollution:
                v = v + m.pollution_gain * pe.level(self.station, ts)
        if m.drift_per_day:
            rate = m.drift_per_day * (1.0 + 0.5 * self._unit(code, "drift"))
            phase = (self._unit(code, "clean") + 1.0) / 2.0 * self.cleaning_every_s
            since = (ts + phase) % self.cleaning_every_s
            v = v + rate * since / DAY
        if m.noise_sd:
            slots = np.floor(ts / NOISE_SLOT_S)
            v = v + m.noise_sd * gaussian_noise(self._key(code, "noise"), slots)
        out: FloatArray = np.clip(v, m.lo, m.hi)
        return out

    def value(self, code: str, t: float) -> float:
        return float(self.series(code, np.array([t]))[0])

    def values(self, codes: Iterable[str], t: float) -> dict[str, float]:
        arr = np.array([t])
        return {c: float(self.series(c, arr)[0]) for c in codes}


CycleKind = str
"""One of "normal", "calibration", "maintenance"."""


@dataclass(frozen=True, slots=True)
class AnalyzerState:
    """What an analyzer shows at some instant: the latest result and its cycle's kind."""

    cycle: int
    result_time: float
    kind: CycleKind


@dataclass(frozen=True)
class AnalyzerCycle:
    """Measuring cycles of a nutrient analyzer.

    Cycle ``k`` starts at ``phase_s + k * cycle_s`` and its result is readable from
    ``measure_s`` later. Every ``calibration_every``-th cycle (seeded offset) is a calibration;
    cycles that start inside a ``maintenance`` window are maintenance cycles.
    """

    cycle_s: float
    measure_s: float = 40 * 60.0
    phase_s: float = 0.0
    calibration_every: int = 0
    calibration_offset: int = 0
    maintenance: Sequence[Window] = ()

    def __post_init__(self) -> None:
        if self.cycle_s <= 0:
            raise ValueError(f"cycle_s must be positive, got {self.cycle_s}")
        if not 0 <= self.measure_s < self.cycle_s:
            raise ValueError(f"measure_s must be in [0, cycle_s), got {self.measure_s}")

    def cycle_at(self, t: float) -> int:
        """Index of the cycle whose result is readable at ``t``."""
        return math.floor((t - self.phase_s - self.measure_s) / self.cycle_s)

    def start_of(self, cycle: int) -> float:
        return self.phase_s + cycle * self.cycle_s

    def kind_of(self, cycle: int) -> CycleKind:
        start = self.start_of(cycle)
        if any(w.contains(start) for w in self.maintenance):
            return "maintenance"
        if self.calibration_every and cycle % self.calibration_every == self.calibration_offset:
            return "calibration"
        return "normal"

    def state(self, t: float) -> AnalyzerState:
        k = self.cycle_at(t)
        return AnalyzerState(k, self.start_of(k), self.kind_of(k))

    def results_between(self, t0: float, t1: float) -> list[AnalyzerState]:
        """Every result that becomes readable in ``[t0, t1)``, in order."""
        k0 = self.cycle_at(t0)
        if self.start_of(k0) + self.measure_s < t0:
            k0 += 1
        out = []
        k = k0
        while self.start_of(k) + self.measure_s < t1:
            out.append(AnalyzerState(k, self.start_of(k), self.kind_of(k)))
            k += 1
        return out

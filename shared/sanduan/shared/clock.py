"""Time as sanduan's schedulers see it.

In the field the clock is the system clock. The hardware-in-the-loop rig runs whole months in
minutes: it starts every process with the same ``SANDUAN_SIM_CLOCK`` setting, and each process
derives the same simulated time from the real one, so the agents' schedulers and the simulated
sensors agree without talking to each other::

    SANDUAN_SIM_CLOCK="<real epoch s>,<simulated epoch s>,<speed>[,<offset s>]"

simulated = sim_epoch + (real_now - real_epoch) * speed + offset. The optional offset models a
gateway whose clock is wrong (a clock jump). Nothing outside this module needs to know.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Protocol

from sanduan.shared.errors import ConfigError

ENV_VAR = "SANDUAN_SIM_CLOCK"


class Clock(Protocol):
    speed: float

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, in the same units as :meth:`time`."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """Real seconds that ``seconds`` of this clock's time take."""
        ...


@dataclass
class SystemClock:
    speed: float = 1.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def real_seconds(self, seconds: float) -> float:
        return seconds


@dataclass
class ScaledClock:
    """Simulated time running ``speed`` times faster than real time from a shared origin."""

    real_epoch: float
    sim_epoch: float
    speed: float
    offset: float = 0.0

    def time(self) -> float:
        return self.sim_epoch + (time.time() - self.real_epoch) * self.speed + self.offset

    def monotonic(self) -> float:
        return time.monotonic() * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds / self.speed))

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.speed

    def to_env(self) -> str:
        return f"{self.real_epoch!r},{self.sim_epoch!r},{self.speed!r},{self.offset!r}"


def parse_clock(text: str, source: str = ENV_VAR) -> ScaledClock:
    parts = text.split(",")
    bad = ConfigError(source, "", f"expected 'real_epoch,sim_epoch,speed[,offset]', got {text!r}")
    if len(parts) not in (3, 4):
        raise bad
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise bad from None
    if nums[2] <= 0:
        raise ConfigError(source, "speed", f"must be positive, got {nums[2]}")
    return ScaledClock(nums[0], nums[1], nums[2], nums[3] if len(nums) == 4 else 0.0)


def clock_from_env() -> Clock:
    text = os.environ.get(ENV_VAR)
    if not text:
        return SystemClock()
    return parse_clock(text)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` (real) have passed; True if it was set.

    Not ``asyncio.wait_for``: on Python 3.11 that returns normally when the event is set in the
    same loop iteration as a cancellation, so the cancellation is lost and a task that loops on
    it never stops. ``asyncio.timeout`` keeps the cancellation.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def age_text(seconds: float | None, decimals: int = 0) -> str:
    """A duration for people: seconds and minutes with ``decimals``, hours and days with one;
    ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.{decimals}f} s"
    if seconds < 7200:
        return f"{seconds / 60:.{decimals}f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"

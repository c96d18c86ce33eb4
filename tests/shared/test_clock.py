from __future__ import annotations

import asyncio
import time

import pytest

from sanduan.shared.clock import (
    ENV_VAR,
    ScaledClock,
    SystemClock,
    clock_from_env,
    parse_clock,
    wait_event,
)
from sanduan.shared.errors import ConfigError


def test_scaled_clock_runs_fast_from_shared_origin() -> None:
    now = time.time()
    clock = ScaledClock(real_epoch=now, sim_epoch=1_700_000_000.0, speed=1000.0)
    t0 = clock.time()
    assert 1_700_000_000.0 <= t0 < 1_700_000_000.0 + 1000.0
    time.sleep(0.01)
    assert clock.time() - t0 >= 9.0


def test_two_processes_agree_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    a = ScaledClock(time.time(), 1_000_000.0, 500.0, offset=30.0)
    monkeypatch.setenv(ENV_VAR, a.to_env())
    b = clock_from_env()
    assert isinstance(b, ScaledClock)
    assert abs(a.time() - b.time()) < 5.0  # 10 ms real at 500x
    assert b.offset == 30.0


def test_scaled_sleep_is_shorter() -> None:
    clock = ScaledClock(time.time(), 0.0, 100.0)
    t0 = time.perf_counter()
    asyncio.run(clock.sleep(5.0))
    assert time.perf_counter() - t0 < 1.0
    assert clock.real_seconds(5.0) == pytest.approx(0.05)


def test_default_is_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert isinstance(clock_from_env(), SystemClock)


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "1,2,0", "1,2,3,4,5"])
def test_bad_clock_setting(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_clock(text)


def test_wait_event_reports_set_and_timeout() -> None:
    async def main() -> tuple[bool, bool]:
        ev = asyncio.Event()
        timed_out = await wait_event(ev, 0.01)
        ev.set()
        return timed_out, await wait_event(ev, 5)

    assert asyncio.run(main()) == (False, True)


def test_wait_event_keeps_a_cancellation_that_comes_with_the_event() -> None:
    """The event set and the task cancelled in the same loop iteration: the task must end
    cancelled (``asyncio.wait_for`` on Python 3.11 returned True here and the loop went on)."""

    async def main() -> list[str]:
        ev = asyncio.Event()
        rounds: list[str] = []

        async def loop() -> None:
            while True:
                ev.clear()
                await wait_event(ev, 30)
                rounds.append("woke")

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ev.set()
        task.cancel()
        try:
            await asyncio.wait_for(task, 2)
        except asyncio.CancelledError:
            rounds.append("cancelled")
        return rounds

    assert asyncio.run(main()) == ["cancelled"]

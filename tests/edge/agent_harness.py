"""Runs an :class:`~sanduan.edge.app.Agent` on its own event loop thread for the edge tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.brokers import shared_port

from sanduan.edge.app import Agent, FakeSource
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig, parse_model


def station_config(station: str, db: Path, port: int | None = None, **uplink: Any) -> StationConfig:
    up: dict[str, Any] = {
        "broker": f"mqtt://127.0.0.1:{shared_port() if port is None else port}",
        "batch_max_age_s": 0.2,
        "heartbeat_s": 1.0,
        "ack_timeout_s": 5.0,
        "max_batches_per_s": 200.0,
        "reconnect_max_s": 1,
    }
    up.update(uplink)
    return parse_model(
        StationConfig,
        {
            "station": {"id": station},
            "buffer": {"path": str(db), "commit_interval_s": 0.1, "synchronous": "NORMAL"},
            "uplink": up,
        },
        "<test>",
    )


class AgentThread:
    def __init__(
        self, config: StationConfig, source: FakeSource, config_path: Path | None = None
    ) -> None:
        self.config = config
        self.source = source
        self.config_path = config_path
        self.agent: Agent | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.agent = Agent(
                self.config,
                source=self.source,
                clock=self.source.clock,
                config_path=self.config_path,
            )
            self._ready.set()
            await self.agent.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as e:
            self.error = e
            self._ready.set()

    def start(self) -> AgentThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        assert not self._thread.is_alive(), "agent did not stop:\n" + self._where()
        assert self.error is None, repr(self.error)

    def _where(self) -> str:
        """Every thread's stack and the agent loop's pending tasks, for a stop that hangs."""
        import sys
        import traceback

        out = []
        for tid, frame in sys._current_frames().items():
            out.append(f"thread {tid}:\n" + "".join(traceback.format_stack(frame)))
        if self._loop is not None:
            tasks = asyncio.all_tasks(self._loop)
            out.extend(f"task {t.get_name()}: {t.get_stack()}" for t in tasks)
        return "\n".join(out)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the agent's loop and return its result."""
        assert self._loop is not None
        done = threading.Event()
        out: list[Any] = []

        def wrap() -> None:
            out.append(fn())
            done.set()

        self._loop.call_soon_threadsafe(wrap)
        done.wait(10)
        return out[0]


def fake(period_s: float = 0.01, limit: int | None = None, codes: int = 4) -> FakeSource:
    from sanduan.edge.app import FAKE_CODES

    return FakeSource(SystemClock(), period_s, FAKE_CODES[:codes], limit=limit)


def wait_until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()

"""Shared fixtures of the edge tests: unique station ids, the local Mosquitto, private brokers."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.edge.acker`` imports
    sys.path.insert(0, str(ROOT))

from tests.brokers import PrivateBroker, free_port, port_open, shared_port  # noqa: E402

__all__ = ["PrivateBroker", "free_port", "port_open"]


@pytest.fixture
def station_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mosquitto() -> int:
    """The local Mosquitto (``tests.brokers.shared_port``; skips when it is not running)."""
    port = shared_port()
    if not port_open(port):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{port}")
    return port


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    from shutil import which

    if which("mosquitto") is None:
        pytest.skip("no mosquitto binary")
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()

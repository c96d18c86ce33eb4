"""Fixtures of the end-to-end tests: the real broker, stores on both backends, and a rig that
owns the simulated stations and every process a test starts (all stopped at the end).

* ``store_url``: an empty database, parametrized over a SQLite file and PostgreSQL (a fresh
  schema per test, reached through ``?options=-csearch_path%3D<schema>``, dropped afterwards).
* ``pg_url``: such a PostgreSQL URL alone.
* ``rig``: :class:`E2ERig`, with ``rig.uid`` unique to the test for station and client ids.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.e2e.harness`` imports
    sys.path.insert(0, str(ROOT))

from tests.brokers import PrivateBroker  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    BROKER_PORT,
    Agent,
    Collector,
    Procs,
    SimStation,
    write_central_config,
)

PG_BASE = os.environ.get("SANDUAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


PG_UP = _reachable(5432)
BROKER_UP = _reachable(BROKER_PORT)


class E2ERig:
    """Simulated stations, agents and collectors of one test, all under ``tmp``."""

    def __init__(self, tmp: Path, uid: str) -> None:
        self.tmp = tmp
        self.uid = uid
        self.procs = Procs()
        self.sims: list[SimStation] = []
        self.brokers: list[PrivateBroker] = []

    def private_broker(self) -> PrivateBroker:
        """A Mosquitto of this test's own (skips when there is no mosquitto binary)."""
        if shutil.which("mosquitto") is None:
            pytest.skip("no mosquitto binary")
        broker = PrivateBroker(self.tmp).start()
        self.brokers.append(broker)
        return broker

    def agent(self, index: int = 0, *, broker_port: int = BROKER_PORT) -> Agent:
        """A simulated station and its (not yet started) agent."""
        sim = SimStation(f"e2e-{self.uid}-{index}")
        self.sims.append(sim)
        return Agent(sim, self.tmp, self.procs, broker_port=broker_port)

    def collector(
        self,
        store_url: str,
        name: str = "c1",
        *,
        broker_port: int = BROKER_PORT,
        group: str | None = None,
        county: Path | None = None,
    ) -> Collector:
        config = write_central_config(
            self.tmp / f"central-{name}.toml",
            store_url,
            broker_port=broker_port,
            group=group,
            county=county,
        )
        return Collector(
            config,
            f"e2e-{self.uid}-{name}",
            self.tmp / f"central-{name}.log",
            self.procs,
            migrate=True,
        )

    def close(self) -> None:
        self.procs.kill_all()
        for broker in self.brokers:
            broker.kill()
        for sim in self.sims:
            sim.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[E2ERig]:
    if not BROKER_UP:
        pytest.skip(f"no MQTT broker on 127.0.0.1:{BROKER_PORT}")
    r = E2ERig(tmp_path, uuid.uuid4().hex[:10])
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_UP:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url

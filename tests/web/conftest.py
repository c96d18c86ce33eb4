"""A month of the example county in a store, computed, with console accounts.

``console_store`` is parametrized over SQLite and PostgreSQL. The data: hourly pH, DO, CODMn,
NH3-N and TP at every section's station for May 2026 with a daily cycle; Zonghan's outflow has a
pollution event (NH3-N at Class V for days 10..20), the reservoir's TP is high all month, one
station's analyzers are in maintenance (flag M) on day 5, Hushan's inflow station is silent. The
month is computed with ``sanduan central compute`` (assessed, settled, problems discovered),
and three accounts exist:
``ada`` (admin), ``rui`` (reviewer), ``vic`` (viewer), each with the password ``<name>-password``.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from sanduan.central.core.county import County, load_county
from sanduan.central.core.validity import HOUR_MS, Period
from sanduan.central.store import Store, open_store
from sanduan.central.web.auth import Role, Users
from sanduan.cli import app
from sanduan.shared.params import resolve
from sanduan.shared.wire import Batch, Status

ROOT = Path(__file__).resolve().parents[2]
COUNTY = ROOT / "deploy" / "county.example.toml"
RULES = ROOT / "deploy" / "rules.example.toml"
PG_BASE = os.environ.get("SANDUAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MAY = Period(2026, 5)
BASE = {"pH": 7.4, "DO": 6.8, "CODMn": 3.2, "NH3-N": 0.35, "TP": 0.12}
SILENT = "CX-ST-05"
POLLUTED = "ST-ZH-OUT"
MAINTAINED = "ST-ZH-IN"
ACCOUNTS = {"ada": Role.ADMIN, "rui": Role.REVIEWER, "vic": Role.VIEWER}


def password(name: str) -> str:
    return f"{name}-password"


def _pg_up() -> bool:
    try:
        with psycopg.connect(PG_BASE, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def month_batches(county: County) -> list[Batch]:
    start, end = MAY.bounds_ms(county.timezone)
    hours = list(range(start, end, HOUR_MS))
    out: list[Batch] = []
    for sid, sec in county.sections.items():
        if sec.station == SILENT:
            continue
        seq: list[int] = []
        ts: list[int] = []
        codes: list[str] = []
        values: list[float] = []
        flags: list[str] = []
        for h, t in enumerate(hours):
            day = h // 24
            cycle = math.sin(2 * math.pi * (h % 24) / 24)
            for name, base in BASE.items():
                v = base * (1 + 0.05 * cycle)
                if name == "DO":
                    v = base + 0.8 * cycle
                if sid == POLLUTED and name == "NH3-N" and 9 <= day < 20:
                    v = 3.0
                if sec.station == "CX-RS-01" and name == "TP":
                    v = 0.17
                seq.append(len(seq) + 1)
                ts.append(t)
                codes.append(resolve(name).code)
                values.append(round(v, 4))
                flags.append("M" if sid == MAINTAINED and day == 4 and name != "pH" else "N")
        out.append(
            Batch.from_columns(
                sec.station, 1, end, seq=seq, ts_ms=ts, code=codes, values=values, flags=flags
            )
        )
    return out


def fill(store: Store, county: County) -> None:
    _, end = MAY.bounds_ms(county.timezone)
    for batch in month_batches(county):
        store.store_batch(batch, end)
    for i, st in enumerate(county.stations):
        if st == SILENT:
            continue
        store.record_status(
            Status(
                station=st,
                time_ms=end - 60_000,
                online=i % 5 != 3,
                agent_version="sanduan-edge test",
                buffer_depth=3 * i,
                oldest_unacked_age_s=1.5 * i if i else None,
                device_errors={"sonde": i % 3},
                clock_offset_s=0.01 * i,
            ),
            end - 60_000,
        )
    users = Users(store)
    for name, role in ACCOUNTS.items():
        users.add(name, role, password(name))


def compute(url: str) -> None:
    """The month computed as the bureau would: ``sanduan central compute`` (assessments,
    ledger, problems discovered)."""
    args = ["central", "compute", "--month", "2026-05", "--store", url]
    args += ["--county", str(COUNTY), "--rules", str(RULES)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output


@dataclass(frozen=True)
class ConsoleData:
    url: str
    county: County


@pytest.fixture(scope="session")
def example_county() -> County:
    return load_county(COUNTY)


@pytest.fixture(scope="session")
def sqlite_console(tmp_path_factory: pytest.TempPathFactory, example_county: County) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'central.db'}"
    store = open_store(url, migrate=True)
    try:
        fill(store, example_county)
    finally:
        store.close()
    compute(url)
    return url


@pytest.fixture(scope="session")
def pg_console(example_county: County) -> Iterator[str]:
    if not _pg_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    schema = f"web_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    store = open_store(url, migrate=True)
    try:
        fill(store, example_county)
    finally:
        store.close()
    compute(url)
    yield url
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def console_data(request: pytest.FixtureRequest, example_county: County) -> ConsoleData:
    name = "sqlite_console" if request.param == "sqlite" else "pg_console"
    return ConsoleData(url=request.getfixturevalue(name), county=example_county)

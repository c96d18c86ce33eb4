"""End to end with real parts: simulated Modbus devices on a virtual serial port, the edge agent
process, Mosquitto, and the collector process on each storage backend; then the reports."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tests.e2e.conftest import E2ERig
from tests.e2e.harness import (
    analyzer_values,
    assert_delivered_once,
    central_events,
    central_rows,
    outbox_json,
    pending_events,
    run_cli,
    station_record,
    wait_until,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

SONDE_CODES = {"w01001", "w01009", "w01003", "w01014", "w01010", "w01016"}
ANALYZER_CODES = {"w21003", "w21011"}
TZ = "Asia/Shanghai"


def write_county(path: Path, station: str) -> Path:
    path.write_text(
        f"""
[county]
name = "e2e county"
timezone = "{TZ}"

[[river]]
id = "r1"

[[station]]
id = "{station}"

[[section]]
id = "S1"
name = "e2e section"
river = "r1"
station = "{station}"
target_class = 3

[[town]]
id = "t1"
outflow = "S1"
""",
        encoding="utf-8",
    )
    return path


def test_every_committed_reading_is_stored_once_and_reported(store_url: str, rig: E2ERig) -> None:
    agent = rig.agent()
    county = write_county(rig.tmp / "county.toml", agent.station)
    collector = rig.collector(store_url, county=county).start()
    agent.start()

    time.sleep(2.5)
    # NH3-N far above class III (2.5 mg/L is worse than class V) for about four analyzer
    # cycles: the third bad result raises an exceedance alarm, the next good one clears it.
    nh3n = agent.sim.device("nh3n")
    nh3n.set_values({"w21003": 2.5})
    time.sleep(4.2)
    nh3n.set_values(analyzer_values)
    time.sleep(1.8)
    assert agent.proc is not None and agent.proc.alive(), agent.proc and agent.proc.tail()
    # readings reach the store while the agent runs (a loaded machine may take a while)
    assert wait_until(lambda: len(central_rows(store_url, [agent.station])) > 0, 60), (
        agent.proc.tail()
    )
    agent.drain_and_stop()
    # The agent's last status (online = false, sent on SIGTERM) reaches the store.
    assert wait_until(lambda: station_record(store_url, agent.station).online is False, 60)
    counts = collector.stop()

    n = assert_delivered_once(store_url, [agent])
    # ~9 s of polls every 0.3 s: six sonde values each, one analyzer result per second.
    assert n >= 120, n
    rows = central_rows(store_url, [agent.station])
    codes = {r[1] for _, _, r in rows}
    assert codes == SONDE_CODES | ANALYZER_CODES
    flags = {r[3] for _, _, r in rows}
    assert flags == {"N"}
    # The collector serves every station on the broker: other tests' batches count too.
    assert counts["readings_new"] >= n

    # The alarm and its clearing went through the broker into the store, once each.
    events = central_events(store_url, agent.station)
    assert [(kind, code) for _, kind, code in events] == [
        ("exceedance", "w21003"),
        ("exceedance-cleared", "w21003"),
    ], events
    assert pending_events(agent) == 0
    bad = [r for _, _, r in rows if r[1] == "w21003" and r[2] == 2.5]
    assert len(bad) >= 3, bad
    assert {r[4] for r in bad} == {6}  # graded at the edge, stored with the reading

    box = outbox_json(agent)
    assert (box["station"], box["depth"], box["last_acked_seq"]) == (agent.station, 0, n)
    assert (box["dropped"], box["next_seq"]) == (0, n + 1)

    # report stations: the station, its seqs, no gaps. (The collector also records the
    # retained statuses of other stations on the shared broker, hence no equality.)
    r = run_cli("central", "report", "stations", "--store", store_url, "--json")
    assert r.returncode == 0, r.stderr
    by_station = {rec["station"]: rec for rec in json.loads(r.stdout)}
    assert agent.station in by_station
    rec = by_station[agent.station]
    assert (rec["max_seq"], rec["contiguous_seq"], rec["open_gaps"], rec["missing"]) == (
        n,
        n,
        0,
        0,
    )
    assert rec["agent_version"]
    assert rec["online"] is False
    assert rec["last_seen_ms"] is not None

    # report sections for the month of the data: a few seconds cannot make a valid month.
    first_ts = min(r[0] for _, _, r in rows)
    month = datetime.fromtimestamp(first_ts / 1000, ZoneInfo(TZ)).strftime("%Y-%m")
    r = run_cli(
        "central",
        "report",
        "sections",
        "--month",
        month,
        "--config",
        str(collector.config),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["label"] == month
    (section,) = doc["sections"]
    assert section["section"] == "S1"
    assert section["valid"] is False
    assert section["class"] is None
    assert section["meets_target"] is None
    # Every assessed item lacks a valid monthly mean (CODMn is not measured at all) ...
    assert section["missing"] == ["pH", "DO", "CODMn", "NH3-N", "TP"]
    assert section["main_pollutants"] == []
    # ... and each measured one has data on one day (or two, across midnight), none valid.
    assert set(section["items"]) == {
        "pH",
        "DO",
        "NH3-N",
        "TP",
        "turbidity",
        "temperature",
        "conductivity",
        "chlorophyll",
    }
    for name, item in section["items"].items():
        assert 1 <= item["n"] <= 2, (name, item)
        assert (item["n_valid"], item["valid"], item["value"]) == (0, False, None), (name, item)
    assert (doc["county"]["sections"], doc["county"]["valid"]) == (1, 0)
    assert doc["county"]["compliance_rate"] is None

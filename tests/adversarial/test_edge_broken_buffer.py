"""A damaged buffer: one clear line and exit 2, from ``sanduan edge run`` and ``edge outbox``,
whether the damage shows when the file is opened or later, in a running agent; and
``sanduan edge outbox --salvage`` rescues every readable unacknowledged reading into a new
stream that the agent then delivers (real files with pages overwritten, real processes)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.edge.acker`` imports
    sys.path.insert(0, str(ROOT))

from tests.brokers import port_open, shared_port  # noqa: E402
from tests.edge.acker import Acker  # noqa: E402

from sanduan.edge.core.model import PolledValue  # noqa: E402
from sanduan.edge.io.outbox import Outbox  # noqa: E402
from sanduan.shared import wire  # noqa: E402
from sanduan.shared.wire import Ack  # noqa: E402

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]

SANDUAN = str(Path(sys.executable).with_name("sanduan"))
T0 = 1_767_225_600_000


def write_config(path: Path, station: str, db: Path) -> Path:
    path.write_text(
        f"""
[station]
id = "{station}"

[buffer]
path = "{db}"
commit_interval_s = 0.1

[uplink]
broker = "mqtt://127.0.0.1:{shared_port()}"
batch_max_age_s = 0.2
heartbeat_s = 1
ack_timeout_s = 3
max_batches_per_s = 200
reconnect_max_s = 1
""",
        encoding="utf-8",
    )
    return path


def overwrite_page_with(db: Path, marker: bytes) -> None:
    """Overwrite the page holding most copies of ``marker`` with garbage (bit rot)."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    counts = [data[p * size : (p + 1) * size].count(marker) for p in range(len(data) // size)]
    page = max(range(len(counts)), key=counts.__getitem__)
    assert counts[page] >= 10
    data[page * size : (page + 1) * size] = b"\xa5" * size
    db.write_bytes(bytes(data))


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SANDUAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def about(stderr: str, text: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if text in ln]


def test_damaged_readings_one_line_exit_2_then_salvaged_and_delivered(tmp_path: Path) -> None:
    station = f"t-rot-{time.time_ns() % 10**9}"
    db = tmp_path / "buffer.db"
    cfg = write_config(tmp_path / "station.toml", station, db)
    with Outbox(db, station=station) as ob:
        ob.commit([PolledValue("d", "w01009", T0 + i * 1000, 7.0) for i in range(2000)])
        ob.commit([PolledValue("d", "zz-rot", T0 + i * 1000, 1.0) for i in range(2000, 2300)])
        ob.commit([PolledValue("d", "w01009", T0 + i * 1000, 7.5) for i in range(2300, 4000)])
        ob.ack(Ack(station, 1, 1, 1000, 0))
        old_stream = ob.stream
    overwrite_page_with(db, b"zz-rot")

    for args in (["edge", "run", "--config", str(cfg)], ["edge", "outbox", "--config", str(cfg)]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
        lines = about(r.stderr, "is damaged")
        assert len(lines) == 1 and "--salvage" in lines[0], r.stderr[-2000:]

    new = tmp_path / "salvaged.db"
    r = run("edge", "outbox", "--config", str(cfg), "--salvage", str(new), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    summary = json.loads(r.stdout)
    copied = summary["copied"]
    assert summary["old_stream"] == old_stream and summary["new_stream"] != old_stream
    assert 3000 - 300 <= copied < 3000 and summary["unreadable_seqs"] > 0
    assert summary["acknowledged_left"] >= 900

    if not port_open(shared_port()):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{shared_port()} for the delivery half")
    cfg = write_config(tmp_path / "station.toml", station, new)
    with Acker(station=station) as centre:
        log = tmp_path / "agent.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [SANDUAN, "edge", "run", "--config", str(cfg), "--fake-source", "1:0"],
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        try:
            assert centre.wait_for(lambda a: len(a.received) >= copied, 60), log.read_text()
            assert centre.streams == {summary["new_stream"]}
            proc.terminate()
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert sorted(s for _, s in centre.received) == list(range(1, copied + 1))


def test_damage_found_while_running_ends_the_agent_with_exit_2(tmp_path: Path) -> None:
    """A damaged page the start-up scan does not read (stored events): the running agent finds
    it, stops its tasks, commits what it can and exits 2 with one line."""
    station = f"t-rot2-{time.time_ns() % 10**9}"
    db = tmp_path / "buffer.db"
    cfg = write_config(tmp_path / "station.toml", station, db)
    with Outbox(db, station=station) as ob:
        ob.commit([PolledValue("d", "w01009", T0 + i * 1000, 7.0) for i in range(100)])
        for _ in range(60):
            ob.add_event(
                lambda i: wire.Event(station, T0, i, "note", "zz-event-rot " * 4, code=None)
            )
    overwrite_page_with(db, b"zz-event-rot")
    # the bound: the agent must not run on (a loaded machine may take long to start it)
    r = run("edge", "run", "--config", str(cfg), "--fake-source", "0.05:4", timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert len(about(r.stderr, "sanduan edge run:")) == 1
    assert about(r.stderr, "sanduan edge run:")[0].count("is damaged") == 1


def test_an_impossible_persisted_counter_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """What a forged resend range left in the field (resend_missing beyond 2**63, stored by
    SQLite as a float) made every start die; now it is named, with the fix."""
    import sqlite3

    station = f"t-meta-{time.time_ns() % 10**9}"
    db = tmp_path / "buffer.db"
    cfg = write_config(tmp_path / "station.toml", station, db)
    with Outbox(db, station=station) as ob:
        ob.commit([PolledValue("d", "w01009", T0 + i * 1000, 7.0) for i in range(10)])
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = 18447307023662972928.0 WHERE key = 'resend_missing'")
    con.commit()
    con.close()
    r = run("edge", "run", "--config", str(cfg), "--fake-source", "1:0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = about(r.stderr, "sanduan edge run:")
    assert "meta value resend_missing = 1.8447307023662973e+19" in line and "--salvage" in line

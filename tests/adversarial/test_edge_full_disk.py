"""The agent on a disk that fills up, for real: its buffer on a small tmpfs that a filler file
fills to the last byte (needs root to mount; skipped otherwise). While the disk is full the
agent forwards what its buffer holds, stores nothing new (one ERROR a minute, a counter of
readings not stored in every heartbeat), never exits; it resumes by itself when space returns,
and a stop while the disk is full ends with a non-zero status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.edge.acker`` imports
    sys.path.insert(0, str(ROOT))

from tests.brokers import PrivateBroker  # noqa: E402
from tests.edge.acker import Acker  # noqa: E402

SANDUAN = str(Path(sys.executable).with_name("sanduan"))

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto, pytest.mark.process]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs of the test's own."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem with one file."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    with contextlib.suppress(OSError), filler.open("ab") as fh:
        while True:
            fh.write(b"\0" * 512)
            fh.flush()
    return filler


def records(log: Path) -> list[dict[str, str]]:
    """The agent's JSON log records (the command's own last line is plain text)."""
    return [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln[:1] == "{"]


def committed(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT max(seq) FROM reading").fetchone()[0] or 0)
    finally:
        con.close()


def test_full_disk_forwards_what_it_has_counts_what_it_drops_and_resumes(
    small_disk: Path, tmp_path: Path
) -> None:
    broker = PrivateBroker(tmp_path)
    broker.start()
    station = f"t-full-{time.time_ns() % 10**9}"
    db = small_disk / "buffer.db"
    cfg = tmp_path / "station.toml"
    cfg.write_text(
        f"""
[station]
id = "{station}"

[buffer]
path = "{db}"
commit_interval_s = 0.1

[uplink]
broker = "mqtt://127.0.0.1:{broker.port}"
batch_max_age_s = 0.2
heartbeat_s = 0.5
ack_timeout_s = 2
max_batches_per_s = 200
reconnect_max_s = 1
""",
        encoding="utf-8",
    )
    log = tmp_path / "agent.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with Acker(port=broker.port, station=station) as centre:
            with log.open("wb") as fh:
                proc = subprocess.Popen(
                    [SANDUAN, "edge", "run", "--config", str(cfg), "--fake-source", "0.01:4"],
                    stdout=subprocess.DEVNULL,
                    stderr=fh,
                )
            assert centre.wait_for(lambda a: len(a.received) >= 400, 60), log.read_text()
            # The link goes down; readings pile up in the buffer; then the disk fills.
            broker.kill()
            time.sleep(1.0)
            filler = fill(small_disk)
            time.sleep(1.5)  # the agent meets the full disk
            held = committed(db)
            assert held > len(centre.received)
            # The link comes back while the disk is still full: the backlog goes out.
            broker.start()
            assert centre.wait_for(lambda a: a.seqs(station) >= set(range(1, held + 1)), 60), (
                log.read_text()[-3000:]
            )
            assert centre.wait_for(lambda a: len(a.statuses) >= 2, 30)
            first = centre.statuses[-1].extra["not_stored"]
            time.sleep(2.0)
            assert centre.wait_for(lambda a: a.statuses[-1].extra["not_stored"] != first, 30)
            last = centre.statuses[-1]
            assert isinstance(first, int) and isinstance(last.extra["not_stored"], int)
            assert 0 < first < last.extra["not_stored"]
            assert "full" in str(last.extra["buffer_write_error"])
            assert committed(db) == held  # nothing new stored
            assert proc.poll() is None  # never exits over a full disk
            errors = [r for r in records(log) if r["level"] == "error"]
            assert len([r for r in errors if "NOT STORING" in r["msg"]]) == 1  # one a minute
            # Space returns: the agent resumes by itself.
            filler.unlink()
            assert centre.wait_for(lambda a: max(a.seqs(station)) > held + 200, 60), (
                log.read_text()[-3000:]
            )
            assert any("takes writes again" in r["msg"] for r in records(log))
            # Full again, and stopped while full: a failure, so not exit 0.
            fill(small_disk)
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            assert code != 0, log.read_text()[-3000:]
            proc = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker.kill()
    tail = [r for r in records(log) if r["level"] == "error"][-2:]
    assert any("not stored" in r["msg"] for r in tail)
    last_line = log.read_text(encoding="utf-8").splitlines()[-1]
    assert last_line.startswith("sanduan edge run: stopped with the buffer not writable")
    # Started again on the still-full disk (its WAL still there: the last checkpoint needed
    # space too), it runs, stores nothing, and a stop is again a failure.
    started = log.read_text(encoding="utf-8").count("next seq")
    with log.open("ab") as fh:
        again = subprocess.Popen(
            [SANDUAN, "edge", "run", "--config", str(cfg), "--fake-source", "0.05:4"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:
        # up (its signal handlers set) once it has opened the buffer; a loaded machine is slow
        deadline = time.monotonic() + 60
        while again.poll() is None and time.monotonic() < deadline:
            if log.read_text(encoding="utf-8").count("next seq") > started:
                break
            time.sleep(0.2)
        time.sleep(3)
        assert again.poll() is None, log.read_text()[-2000:]
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 1
    finally:
        if again.poll() is None:
            again.kill()

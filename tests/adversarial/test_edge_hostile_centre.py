"""Nothing a peer sends stops the station agent: a real ``sanduan edge run`` against a centre
that forges resend ranges near 2**63, acks for seqs never issued or for another stream, nacks,
bad clocks and garbage; and the centre's nack: rejected readings kept, never sent again, said
once, counted (real Mosquitto, real processes)."""

from __future__ import annotations

import json
import signal
import sqlite3
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

from sanduan.shared import topics, wire  # noqa: E402
from sanduan.shared.wire import MAX_SEQ, U63_MAX, Ack, Batch, Nack, ResendRequest  # noqa: E402

SANDUAN = str(Path(sys.executable).with_name("sanduan"))

pytestmark = [pytest.mark.mosquitto, pytest.mark.process]


@pytest.fixture
def port() -> int:
    port = shared_port()
    if not port_open(port):
        pytest.skip(f"no MQTT broker on 127.0.0.1:{port}")
    return port


def write_config(path: Path, station: str, db: Path, port: int) -> Path:
    path.write_text(
        f"""
[station]
id = "{station}"

[buffer]
path = "{db}"
commit_interval_s = 0.1

[uplink]
broker = "mqtt://127.0.0.1:{port}"
batch_max_age_s = 0.2
heartbeat_s = 0.5
ack_timeout_s = 2
max_batches_per_s = 200
reconnect_max_s = 1
""",
        encoding="utf-8",
    )
    return path


def start(config: Path, fake: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [SANDUAN, "edge", "run", "--config", str(config), "--fake-source", fake],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def meta(db: Path) -> dict[str, object]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def log_lines(log: Path, level: str, text: str) -> list[str]:
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["level"] == level and text in rec["msg"]:
            out.append(rec["msg"])
    return out


def test_forged_answers_never_stop_the_agent(port: int, tmp_path: Path) -> None:
    station = f"t-hostile-{time.time_ns() % 10**9}"
    db = tmp_path / "buffer.db"
    cfg = write_config(tmp_path / "station.toml", station, db, port)
    log = tmp_path / "agent.log"
    with Acker(port=port, station=station) as centre:
        proc = start(cfg, "0.02:4", log)
        try:
            assert centre.wait_for(lambda a: len(a.received) >= 200, 60), log.read_text()[-3000:]
            (stream,) = centre.streams
            other = (stream ^ 1) or 2
            own = stream or 1  # a nack is wire v2 only
            now = int(time.time() * 1000)
            attacks: list[bytes] = [
                # Finding: the centre, fooled by a forged batch, asks for a range near 2**63 ...
                wire.encode(ResendRequest(station, ((10, U63_MAX),), now, "gap")),
                # ... and the same on wire v2, up to the largest seq there is.
                wire.encode(ResendRequest(station, ((5, MAX_SEQ),), now, "gap", stream=stream)),
                # Acks for seqs never issued, for batch seqs never sent, for another stream.
                wire.encode(Ack(station, 1, 1, MAX_SEQ, now, stream=stream)),
                wire.encode(Ack(station, U63_MAX, 1, 2, now, stream=stream)),
                wire.encode(Ack(station, 1, 1, 2, now, stream=other)),
                # An ack whose clock is nonsense.
                wire.encode(Ack(station, 1, 1, 1, U63_MAX, stream=stream)),
                # A nack for another stream and one for seqs never issued.
                wire.encode(
                    Nack(station, other, 1, 1, 9, wire.NackReason.CONFLICT, ((1, 9),), now)
                ),
                wire.encode(
                    Nack(
                        station,
                        own,
                        1,
                        MAX_SEQ - 9,
                        MAX_SEQ,
                        wire.NackReason.INVALID,
                        ((MAX_SEQ - 9, MAX_SEQ),),
                        now,
                    )
                ),
                b"\x00garbage\xff" * 50,
                b"",
            ]
            for payload in attacks:
                for kind in (topics.Kind.RESEND, topics.Kind.ACK, topics.Kind.NACK):
                    centre.client.publish(topics.topic(station, kind), payload, qos=1)
            before = len(centre.received)
            t_attack = time.time()
            # Still alive, still polling, still delivering, still reporting.
            assert centre.wait_for(lambda a: len(a.received) >= before + 400, 60)
            assert centre.wait_for(
                lambda a: any(s.time_ms / 1000 > t_attack + 1 for s in a.statuses), 30
            )
            assert proc.poll() is None, log.read_text()[-3000:]
            last = centre.statuses[-1]
            assert last.online and last.stream == stream
            assert last.extra["resend_missing"] == 0  # nothing issued was missing
            assert isinstance(last.extra["ignored_messages"], int)
            assert last.extra["ignored_messages"] >= 8
            # The genuine part of the resend was answered with the original readings.
            assert centre.conflicts == []
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        m = meta(db)
        assert m["resend_missing"] == 0
        assert isinstance(m["last_acked_seq"], int) and isinstance(m["next_seq"], int)
        assert m["last_acked_seq"] < m["next_seq"]
        # One warning per kind of refusal, not one per message.
        assert 1 <= len(log_lines(log, "warning", "resend request")) <= 2
        # And it starts again, on the same stream.
        proc = start(cfg, "0.02:4", log)
        try:
            n = len(centre.statuses)
            assert centre.wait_for(lambda a: len(a.statuses) > n + 1 and a.statuses[-1].online, 30)
            assert centre.statuses[-1].stream == stream and proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_nacked_readings_stay_rejected_never_resent_said_once(port: int, tmp_path: Path) -> None:
    station = f"t-nack-{time.time_ns() % 10**9}"
    db = tmp_path / "buffer.db"
    cfg = write_config(tmp_path / "station.toml", station, db, port)
    log = tmp_path / "agent.log"
    nacked: list[tuple[int, int]] = []

    def answer(b: Batch) -> list[wire.Message]:
        """Refuse the 2nd..4th readings of the first batch (a conflict), store the rest."""
        now = int(time.time() * 1000)
        ack = Ack(b.station, b.batch_seq, b.first_seq, b.last_seq, now, stream=b.stream)
        if nacked or b.count < 5:
            return [ack]
        bad = (b.seq[1], b.seq[3])
        nacked.append(bad)
        keep = ((b.first_seq, b.first_seq), (b.seq[4], b.last_seq))
        return [
            Nack(
                b.station,
                b.stream,
                b.batch_seq,
                b.first_seq,
                b.last_seq,
                wire.NackReason.CONFLICT,
                (bad,),
                now,
                "the centre holds other content for these seqs",
            ),
            Ack(b.station, b.batch_seq, b.first_seq, b.last_seq, now, keep, stream=b.stream),
        ]

    with Acker(port=port, station=station, answer=answer) as centre:
        proc = start(cfg, "0.02:4", log)
        try:
            assert centre.wait_for(lambda a: len(a.received) >= 200, 60)
            assert centre.wait_for(
                lambda a: any(s.extra.get("rejected") == 3 for s in a.statuses), 30
            )
            lo, hi = nacked[0]
            # Asked for everything again: everything but the rejected readings comes back.
            (stream,) = centre.streams
            before = len(centre.batches)
            centre.resend(station, [(1, 100)], "gap", stream=stream)
            assert centre.wait_for(lambda a: sum(b.count for b in a.batches[before:]) >= 97, 30)
            again = {s for b in centre.batches[before:] for s in b.seq}
            assert again >= set(range(1, 101)) - set(range(lo, hi + 1))
            assert not again & set(range(lo, hi + 1))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            # After a restart (everything unacknowledged is sent again) they stay out too.
            before = len(centre.batches)
            proc = start(cfg, "0.02:4", log)
            assert centre.wait_for(lambda a: len(a.batches) > before + 3, 30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not {s for b in centre.batches[before:] for s in b.seq} & set(range(lo, hi + 1))
    errors = log_lines(log, "error", "rejected 3 readings")
    assert len(errors) == 1 and "conflict" in errors[0] and f"{lo}-{hi}" in errors[0]
    con = sqlite3.connect(db)
    rows = con.execute("SELECT seq FROM reading WHERE acked = 2 ORDER BY seq").fetchall()
    con.close()
    assert [r[0] for r in rows] == list(range(lo, hi + 1))  # kept, marked rejected
    out = subprocess.run(
        [SANDUAN, "edge", "outbox", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["rejected"] == {"conflict": 3} and report["stream"] == stream
    table = subprocess.run(
        [SANDUAN, "edge", "outbox", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "rejected by the centre" in table.stdout and "conflict 3" in table.stdout

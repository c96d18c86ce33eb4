"""HJ 212 with real processes: a station agent (``sanduan edge run``) reporting to a platform
while its centre is unreachable, killed with SIGKILL and restarted; and ``sanduan central run``
taking a logger's uploads on its ``[hj212] listen`` port."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tests.brokers import shared_port

from sanduan.shared.hj212.codec import FactorData, Packet, data_ack, data_packet, encode, parse_data
from sanduan.shared.hj212.stream import Splitter

SANDUAN = str(Path(sys.executable).with_name("sanduan"))
TZ = ZoneInfo("Asia/Shanghai")
MN = "33010200000077"
PW = "pw77"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Platform(socketserver.ThreadingTCPServer):
    """A provincial platform that records every data packet and answers 9014."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _PlatformHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def realtime(self) -> list[Packet]:
        with self.lock:
            return [p for p in self.packets if p.cn == "2011"]


class _PlatformHandler(socketserver.BaseRequestHandler):
    server: Platform

    def handle(self) -> None:
        s = Splitter()
        while True:
            try:
                data = self.request.recv(4096)
            except OSError:
                return
            if not data:
                return
            for f in s.feed(data):
                if f.packet is None:
                    continue
                with self.server.lock:
                    self.server.packets.append(f.packet)
                if f.packet.reply_wanted:
                    self.request.sendall(encode(data_ack(f.packet)))


def _station_toml(path: Path, db: Path, platform_port: int) -> None:
    path.write_text(
        f"""
[station]
id = "hj-e2e"

[buffer]
path = "{db}"
commit_interval_s = 0.1

[grading]
engine = "numpy"

[uplink]
broker = "mqtt://127.0.0.1:{free_port()}"
reconnect_max_s = 1

[[hj212]]
name = "province"
address = "127.0.0.1:{platform_port}"
mn = "{MN}"
password = "{PW}"
data = ["realtime"]
ack_timeout_s = 2
""",
        encoding="utf-8",
    )


def _agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [SANDUAN, "edge", "run", "--config", str(config), "--fake-source", "1:4"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def _wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_agent_reports_to_a_platform_without_its_centre_and_survives_sigkill(
    tmp_path: Path,
) -> None:
    plat = Platform()
    db = tmp_path / "buffer.db"
    cfg = tmp_path / "station.toml"
    log = tmp_path / "agent.log"
    _station_toml(cfg, db, plat.port)
    p = _agent(cfg, log)
    try:
        assert _wait(lambda: len(plat.realtime()) >= 4, 60), log.read_text()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        p = _agent(cfg, log)
        n = len(plat.realtime())
        assert _wait(lambda: len(plat.realtime()) >= n + 4, 60), log.read_text()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
        plat.shutdown()
    # every reading of the buffer reached the platform (the agent sent what it had on SIGTERM
    # as far as the platform acknowledged it; the rest waits in the buffer for the cursor)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT seq, ts, code FROM reading ORDER BY seq").fetchall()
        (pos,) = con.execute(
            "SELECT pos FROM uplink_cursor WHERE uplink = 'province' AND kind = 'realtime'"
        ).fetchone()
    sent: dict[tuple[datetime, str], set[str]] = {}
    for pk in plat.realtime():
        up = parse_data(pk)
        for f in up.factors:
            sent.setdefault((up.data_time, f.code), set()).add(pk.qn)
    delivered = [(seq, ts, code) for seq, ts, code in rows if seq <= pos]
    assert len(delivered) >= 32
    missing = [
        r
        for r in delivered
        if (datetime.fromtimestamp(r[1] / 1000, TZ).replace(tzinfo=None, microsecond=0), r[2])
        not in sent
    ]
    assert missing == []
    # at most the packet in flight at the SIGKILL went twice (with a new QN); HJ 212 data
    # times have whole seconds, so this needs polls at least a second apart
    twice = [k for k, qns in sent.items() if len(qns) > 1]
    assert len(twice) <= 4


def _central_toml(path: Path, store: str, port: int) -> None:
    path.write_text(
        f"""
[central]
store = "{store}"

[mqtt]
broker = "mqtt://127.0.0.1:{shared_port()}"
client_id = "hj212-e2e-{os.getpid()}"

[hj212]
listen = "127.0.0.1:{port}"

[[hj212.logger]]
mn = "{MN}"
password = "{PW}"
station = "logger-77"
""",
        encoding="utf-8",
    )


@pytest.mark.mosquitto
def test_central_run_serves_hj212_loggers(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    port = free_port()
    cfg = tmp_path / "central.toml"
    _central_toml(cfg, f"sqlite:///{db}", port)
    log = tmp_path / "central.log"
    with log.open("ab") as fh:
        p = subprocess.Popen(
            [SANDUAN, "central", "run", "--config", str(cfg), "--migrate"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:

        def connect() -> socket.socket | None:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                return None

        sock: socket.socket | None = None
        deadline = time.monotonic() + 60
        while sock is None and time.monotonic() < deadline:
            sock = connect()
            if sock is None:
                time.sleep(0.2)
        assert sock is not None, log.read_text()
        pk = data_packet(
            cn="2061",
            qn="20260301090000000",
            mn=MN,
            pw=PW,
            data_time=datetime(2026, 3, 1, 8),
            factors=[FactorData("w21003", (("Avg", "0.35"), ("Flag", "N")))],
        )
        sock.settimeout(20)
        sock.sendall(encode(pk))
        s = Splitter()
        frames = s.feed(sock.recv(4096))
        assert frames and frames[0].packet is not None
        assert (frames[0].packet.cn, frames[0].packet.qn) == ("9014", pk.qn)
        sock.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT station, code, value, flag FROM readings").fetchall()
    assert rows == [("logger-77", "w21003", 0.35, "N")]

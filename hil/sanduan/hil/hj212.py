"""HJ 212 on the rig: a simulated provincial platform and its delivery check.

:class:`PlatformSim` is the platform every edge agent reports to (``[[hj212]]`` with hourly
data): a TCP server in the rig process that checks each station's MN and password, records
every data packet and answers 9014. The rig stops and starts it for a ``platform`` fault (an
outage). :func:`platform_check` then compares what the platform received with what the
stations' buffers hold: every hourly aggregate of every station, received, once, with the
buffer's values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import socketserver
import sqlite3
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sanduan.hil.truth import TruthReading
from sanduan.shared.hj212.codec import (
    CN_HOURLY,
    Packet,
    data_ack,
    encode,
    format_number,
    parse_data,
)
from sanduan.shared.hj212.stream import Splitter

PLATFORM_PW = "hil212"


def mn_for(index: int) -> str:
    """The MN the rig gives its ``index``-th station (24 characters)."""
    return f"HIL{index:021d}"


@dataclass
class _Received:
    packets: list[Packet] = field(default_factory=list)
    rejected: int = 0


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sim = self.server.sim
        with sim.lock:
            sim.conns.add(self.request)
        s = Splitter()
        try:
            while True:
                try:
                    data = self.request.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                for f in s.feed(data):
                    p = f.packet
                    if p is None or sim.stations.get(p.mn) is None or p.pw != PLATFORM_PW:
                        with sim.lock:
                            sim.received.rejected += 1
                        continue
                    with sim.lock:
                        sim.received.packets.append(p)
                    if p.reply_wanted and (not p.is_part or p.pno == p.pnum):
                        with contextlib.suppress(OSError):
                            self.request.sendall(encode(data_ack(p)))
        finally:
            with sim.lock:
                sim.conns.discard(self.request)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: PlatformSim


class PlatformSim:
    """A provincial platform on ``127.0.0.1:port``; ``stations`` maps MN to station id."""

    def __init__(self, stations: dict[str, str], port: int = 0) -> None:
        self.stations = stations
        self.port = port or _free_port()
        self.lock = threading.Lock()
        self.received = _Received()
        self.conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self.outages = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        srv = _Server(("127.0.0.1", self.port), _Handler)
        srv.sim = self
        self._server = srv
        threading.Thread(target=srv.serve_forever, name="hil-platform", daemon=True).start()

    def stop(self, *, outage: bool = True) -> None:
        """Stop listening and drop every connection (``outage``: counted as one)."""
        srv, self._server = self._server, None
        if srv is None:
            return
        self.outages += int(outage)
        srv.shutdown()
        srv.server_close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def packets(self) -> list[Packet]:
        with self.lock:
            return list(self.received.packets)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def buffer_hours(path: Path, until_ms: int) -> list[tuple[int, str, str | None]]:
    """(hour start ms, code, expected Avg text or None) of a station buffer's hourly
    aggregates for hours that ended by ``until_ms``."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT start, code, n_valid, vsum FROM agg_hour WHERE start + 3600000 <= ?"
            " ORDER BY start, code",
            (until_ms,),
        ).fetchall()
    return [
        (int(s), str(c), format_number(float(sm) / nv) if nv else None) for s, c, nv, sm in rows
    ]


def platform_check(
    sim: PlatformSim, buffers: dict[str, Path], tz: ZoneInfo, until_ms: int
) -> dict[str, Any]:
    """What the platform received against what the stations' buffers hold (hourly data)."""
    got: dict[tuple[str, int, str], list[tuple[str, str | None]]] = defaultdict(list)
    values: dict[tuple[str, int, str], str | None] = {}
    for p in sim.packets():
        if p.cn != CN_HOURLY:
            continue
        station = sim.stations[p.mn]
        up = parse_data(p)
        start = int(up.data_time.replace(tzinfo=tz).timestamp() * 1000)
        for f in up.factors:
            key = (station, start, f.code)
            got[key].append((p.qn, f.get("Avg")))
            values[key] = f.get("Avg")  # the last one received counts
    expected = 0
    lost: list[dict[str, Any]] = []
    mismatched = 0
    per_station: dict[str, Counter[str]] = defaultdict(Counter)
    for station, path in sorted(buffers.items()):
        for start, code, avg in buffer_hours(path, until_ms):
            expected += 1
            per_station[station]["expected"] += 1
            key = (station, start, code)
            if key not in got:
                per_station[station]["lost"] += 1
                if len(lost) < 5:
                    lost.append(
                        {
                            "station": station,
                            "hour": datetime.fromtimestamp(start / 1000, tz).isoformat(),
                            "code": code,
                        }
                    )
                continue
            if values[key] != avg and not _close(values[key], avg):
                mismatched += 1
    # A repeat under another QN with the same value is a duplicate; with another value it is a
    # correction (the hour's aggregate grew after it was sent: a late analyzer result).
    duplicated = corrected = 0
    for receipts in got.values():
        seen: dict[str | None, str] = {}
        for qn, avg in receipts:
            if avg in seen and seen[avg] != qn:
                duplicated += 1
            elif seen:
                corrected += avg not in seen
            seen.setdefault(avg, qn)
    return {
        "expected": expected,
        "received": sum(1 for _, start, _ in got if start + 3_600_000 <= until_ms),
        "lost": sum(c["lost"] for c in per_station.values()),
        "duplicates": duplicated,
        "corrections": corrected,
        "value_mismatches": mismatched,
        "rejected_packets": sim.received.rejected,
        "outages": sim.outages,
        "per_station": {k: dict(v) for k, v in per_station.items()},
        "lost_examples": lost,
    }


def as_sent_over_hj212(r: TruthReading) -> TruthReading:
    """A truth reading as it reaches the collector over HJ 212: the value as the wire writes it
    (6 decimals) and the time in whole seconds."""
    value = r.value if not math.isfinite(r.value) else float(format_number(r.value))
    return dataclasses.replace(r, value=value, ts=float(math.floor(r.ts)))


def _close(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    x, y = float(a), float(b)
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=2e-6)


def hj212_drained(path: Path) -> bool:
    """Every HJ 212 cursor of a station buffer is at its newest reading (real-time, minute) or
    at its newest hour (hourly): everything was sent and acknowledged."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            top = db.execute("SELECT max(seq) FROM reading").fetchone()[0]
            cursors = db.execute("SELECT kind, pos FROM uplink_cursor").fetchall()
            last_hour = db.execute("SELECT max(start) FROM agg_hour").fetchone()[0]
            grown = db.execute(
                "SELECT count(*) FROM agg_hour a JOIN uplink_cursor c ON c.kind = 'hourly'"
                " LEFT JOIN uplink_sent s ON s.uplink = c.uplink AND s.kind = 'hourly'"
                " AND s.start = a.start AND s.code = a.code"
                " WHERE a.start <= c.pos AND a.start > c.pos - 48 * 3600000"
                " AND (s.n IS NULL OR s.n < a.n_valid)"
            ).fetchone()[0]
    except sqlite3.Error:
        return False
    if grown:
        return False
    for kind, pos in cursors:
        if kind in ("realtime", "minute") and top is not None and int(pos) < int(top):
            return False
        if kind == "hourly" and last_hour is not None and int(pos) < int(last_hour):
            return False
    return True

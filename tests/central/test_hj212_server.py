"""The collector's HJ 212 server over real sockets, against SQLite and PostgreSQL: acks after
commit, dedupe, authentication, dead letters, history requests for gaps, split packets, time
calibration, idle and error limits."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from sanduan.central.hj212.core import HourlyGaps, local_ms, map_upload, reading_seq
from sanduan.central.hj212.server import Hj212Server
from sanduan.central.store import Store
from sanduan.shared.config import CentralConfig, load_central_config, parse_model
from sanduan.shared.errors import ConfigError, Hj212Error
from sanduan.shared.hj212.codec import (
    FactorData,
    Packet,
    data_packet,
    encode,
    history_range,
    parse_data,
    split,
)
from sanduan.shared.hj212.stream import Splitter

MN = "33010200000001"
PW = "secret1"
TZ = "Asia/Shanghai"


def _cfg(tmp_path: Path, store_url: str, **hj: object) -> CentralConfig:
    data = {
        "central": {"store": store_url, "timezone": TZ},
        "hj212": {
            "listen": "127.0.0.1:0",
            "logger": [
                {"mn": MN, "password": PW, "station": "hj-001"},
                {"mn": "33010200000002", "password": "pw2", "station": "hj-002"},
            ],
            **hj,
        },
    }
    return parse_model(CentralConfig, data, "test")


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Hj212Server]:
    srv = Hj212Server(_cfg(tmp_path, store_url))
    srv.start()
    yield srv
    srv.stop()


class Logger:
    """A data logger's side of a connection: send packets, read what the collector sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.splitter = Splitter()
        self.inbox: list[Packet] = []

    def send(self, data: bytes | Packet) -> None:
        self.sock.sendall(encode(data) if isinstance(data, Packet) else data)

    def receive(self, timeout: float = 10.0) -> Packet:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing from the collector")
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed by the collector")
            self.inbox.extend(f.packet for f in self.splitter.feed(data) if f.packet)
        return self.inbox.pop(0)

    def nothing_for(self, seconds: float) -> bool:
        try:
            p = self.receive(seconds)
        except TimeoutError:
            return True
        self.inbox.insert(0, p)
        return False

    def close(self) -> None:
        self.sock.close()


def upload(
    cn: str,
    t: datetime,
    values: dict[str, tuple[str, str]],
    *,
    qn: str = "20260301080000000",
    mn: str = MN,
    pw: str = PW,
    reply: bool = True,
) -> Packet:
    field = "Rtd" if cn == "2011" else "Avg"
    factors = [FactorData(c, ((field, v), ("Flag", f))) for c, (v, f) in values.items()]
    return data_packet(cn=cn, qn=qn, mn=mn, pw=pw, data_time=t, factors=factors, reply=reply)


def _dead(store: Store) -> list[tuple[str, str]]:
    rows = store.query("SELECT topic, reason, detail FROM dead_letters ORDER BY id")
    return [(r[0], f"{r[1]}: {r[2]}") for r in rows]


def test_upload_is_stored_then_acknowledged(server: Hj212Server, store: Store) -> None:
    lg = Logger(server.port)
    t = datetime(2026, 3, 1, 8)
    lg.send(
        upload(
            "2061", t, {"w01001": ("7.21", "N"), "w21003": ("0.412", "M")}, qn="20260301080000001"
        )
    )
    ack = lg.receive()
    assert (ack.cn, ack.qn, ack.mn, ack.st) == ("9014", "20260301080000001", MN, "91")
    # The ack came after the commit: the readings are there now.
    cols = store.readings(["hj-001"], 0, 2**62)
    assert sorted(cols["code"].tolist()) == ["w01001", "w21003"]
    ts = local_ms(t, __import__("zoneinfo").ZoneInfo(TZ))
    assert set(cols["ts_ms"].tolist()) == {ts}
    assert ts == 1_772_323_200_000  # 2026-03-01 08:00 +08:00
    by_code = dict(zip(cols["code"].tolist(), cols["value"].tolist(), strict=True))
    assert by_code == {"w01001": 7.21, "w21003": 0.412}
    assert sorted(cols["flag"].tolist()) == ["M", "N"]
    assert set(cols["seq"].tolist()) == {reading_seq("w01001", ts), reading_seq("w21003", ts)}
    # No seq state: the station has nothing to resend by seq.
    row = next(r for r in store.stations() if r.station == "hj-001")
    assert row.max_seq is None
    assert row.gaps == ()
    assert row.last_seen_ms is not None
    lg.close()


def test_resent_data_is_stored_once_and_acknowledged_again(
    server: Hj212Server, store: Store
) -> None:
    lg = Logger(server.port)
    p = upload("2011", datetime(2026, 3, 1, 8, 0, 30), {"w01009": ("8.1", "N")})
    for _ in range(3):
        lg.send(p)
        assert lg.receive().cn == "9014"
    assert store.count_readings(["hj-001"]) == 1
    assert server.stats()["store_readings_duplicate"] == 2
    lg.close()


def test_no_reply_wanted_means_no_ack(server: Hj212Server, store: Store) -> None:
    lg = Logger(server.port)
    lg.send(upload("2011", datetime(2026, 3, 1, 8), {"w01009": ("8.1", "N")}, reply=False))
    assert lg.nothing_for(0.5)
    assert store.count_readings(["hj-001"]) == 1
    lg.close()


def test_missing_value_is_stored_as_missing_with_its_flag(
    server: Hj212Server, store: Store
) -> None:
    lg = Logger(server.port)
    p = data_packet(
        cn="2061",
        qn="20260301090000000",
        mn=MN,
        pw=PW,
        data_time=datetime(2026, 3, 1, 8),
        factors=[FactorData("w21011", (("Flag", "D"),)), FactorData("w99999", (("Avg", "1"),))],
    )
    lg.send(p)
    assert lg.receive().cn == "9014"
    cols = store.readings(["hj-001"], 0, 2**62)
    assert cols["code"].tolist() == ["w21011"]  # the unknown factor is left out
    assert math.isnan(cols["value"][0])
    assert cols["flag"].tolist() == ["D"]
    assert server.stats()["unknown_code_w99999"] == 1
    lg.close()


def test_authentication(server: Hj212Server, store: Store) -> None:
    lg = Logger(server.port)
    t = datetime(2026, 3, 1, 8)
    lg.send(upload("2061", t, {"w01001": ("7.2", "N")}, pw="wrong"))
    lg.send(upload("2061", t, {"w01001": ("7.2", "N")}, mn="99999999999999"))
    # another logger's MN with this logger's password
    lg.send(upload("2061", t, {"w01001": ("7.2", "N")}, mn="33010200000002"))
    assert lg.nothing_for(0.5)
    assert store.count_readings() == 0
    reasons = [r for _, r in _dead(store)]
    assert reasons[0] == f"origin: wrong password (PW) for MN {MN}"
    assert "MN 99999999999999 is not a configured" in reasons[1]
    assert "wrong password" in reasons[2]
    assert PW not in " ".join(reasons)
    # the connection still serves good packets
    lg.send(upload("2061", t, {"w01001": ("7.2", "N")}))
    assert lg.receive().cn == "9014"
    assert store.count_readings(["hj-001"]) == 1
    lg.close()


def test_bad_bytes_are_dead_lettered_and_the_stream_recovers(
    server: Hj212Server, store: Store
) -> None:
    lg = Logger(server.port)
    good = encode(upload("2061", datetime(2026, 3, 1, 8), {"w01001": ("7.2", "N")}))
    bad_crc = good[:-6] + b"0000\r\n"
    lg.send(b"\x00\xffhello" + bad_crc + b"##12" + b"\r\n" + good)
    assert lg.receive().cn == "9014"
    reasons = [r for _, r in _dead(store)]
    assert any("before '##'" in r for r in reasons)
    assert any("CRC 0000" in r for r in reasons)
    assert store.count_readings(["hj-001"]) == 1
    lg.close()


def test_implausible_values_and_times_are_dead_lettered(server: Hj212Server, store: Store) -> None:
    lg = Logger(server.port)
    lg.send(upload("2061", datetime(2026, 3, 1, 8), {"w01001": ("40", "N")}))
    lg.send(upload("2061", datetime(2099, 3, 1, 8), {"w01001": ("7", "N")}))
    lg.send(upload("2061", datetime(1999, 3, 1, 8), {"w01001": ("7", "N")}))
    # pH 40 flagged as a fault is evidence, stored
    lg.send(upload("2061", datetime(2026, 3, 1, 9), {"w01001": ("40", "D")}))
    assert lg.receive().cn == "9014"
    assert lg.nothing_for(0.3)
    reasons = [r for _, r in _dead(store)]
    assert any("physical range" in r for r in reasons)
    assert any("ahead of the collector's clock" in r for r in reasons)
    assert any("before 2000" in r for r in reasons)
    assert store.count_readings(["hj-001"]) == 1
    lg.close()


def test_hourly_gap_asks_the_logger_for_history(server: Hj212Server, store: Store) -> None:
    lg = Logger(server.port)
    day = datetime(2026, 3, 1)
    lg.send(upload("2061", day.replace(hour=8), {"w01001": ("7.0", "N")}, qn="20260301080000001"))
    assert lg.receive().cn == "9014"
    lg.send(upload("2061", day.replace(hour=11), {"w01001": ("7.3", "N")}, qn="20260301110000002"))
    got = [lg.receive(), lg.receive()]
    req = next(p for p in got if p.cn == "2061")
    assert next(p for p in got if p.cn == "9014").qn == "20260301110000002"
    assert req.reply_wanted
    assert (req.mn, req.pw, req.st) == (MN, PW, "21")
    assert history_range(req) == (day.replace(hour=9), day.replace(hour=10))
    # The logger answers as HJ 212 says: 9011, the data with new QNs, then 9012.
    lg.send(Packet(req.qn, "91", "9011", PW, MN, 4, ((("QnRtn", "1"),),)))
    for i, hour in enumerate((9, 10)):
        lg.send(
            upload(
                "2061",
                day.replace(hour=hour),
                {"w01001": ("7.1", "N")},
                qn=f"20260301120000{i:03d}",
            )
        )
        assert lg.receive().cn == "9014"
    lg.send(Packet(req.qn, "91", "9012", PW, MN, 4, ((("ExeRtn", "1"),),)))
    assert lg.nothing_for(0.3)  # no new request: the history filled the gap
    assert store.count_readings(["hj-001"]) == 4
    assert server.stats()["history_requests"] == 1
    assert server.stats()["replies_9012"] == 1
    lg.close()


def test_gap_since_the_last_stored_reading_is_asked_for_on_first_contact(
    tmp_path: Path, store_url: str, store: Store
) -> None:
    t0 = datetime(2026, 3, 1, 8)
    srv = Hj212Server(_cfg(tmp_path, store_url))
    srv.start()
    try:
        lg = Logger(srv.port)
        lg.send(upload("2061", t0, {"w01001": ("7.0", "N")}))
        assert lg.receive().cn == "9014"
        lg.close()
    finally:
        srv.stop()
    # a new collector process (restart) sees the logger again after five hours
    srv = Hj212Server(_cfg(tmp_path, store_url))
    srv.start()
    try:
        lg = Logger(srv.port)
        lg.send(upload("2061", t0.replace(hour=13), {"w01001": ("7.0", "N")}))
        got = {p.cn: p for p in (lg.receive(), lg.receive())}
        assert history_range(got["2061"]) == (t0.replace(hour=9), t0.replace(hour=12))
        lg.close()
    finally:
        srv.stop()


def test_split_packet_is_acknowledged_once_complete(server: Hj212Server, store: Store) -> None:
    codes = ["w01001", "w01009", "w01010", "w01014", "w01003", "w01019", "w21003", "w21011"]
    factors = [
        FactorData(c, (("Min", "1.123456"), ("Avg", "1.5"), ("Max", "2.25"), ("Flag", "N")))
        for c in codes
    ]
    big = data_packet(
        cn="2061",
        qn="20260301090000000",
        mn=MN,
        pw=PW,
        data_time=datetime(2026, 3, 1, 8),
        factors=factors * 1,
    )
    parts = split(big, max_data=300)
    assert len(parts) >= 3
    lg = Logger(server.port)
    for p in parts[:-1]:
        lg.send(p)
    assert lg.nothing_for(0.4)
    lg.send(parts[-1])
    ack = lg.receive()
    assert (ack.cn, ack.qn) == ("9014", big.qn)
    assert store.count_readings(["hj-001"]) == len(codes)
    lg.close()


def test_time_calibration_request_gets_the_time(server: Hj212Server) -> None:
    lg = Logger(server.port)
    lg.send(Packet("20260301080000000", "21", "1013", PW, MN, 5, ()))
    reply = lg.receive()
    assert reply.cn == "1012"
    assert reply.qn == "20260301080000000"
    system_time = reply.get("SystemTime")
    assert system_time is not None and len(system_time) == 14
    lg.close()


def test_heartbeats_are_accepted_and_unknown_commands_dead_lettered(
    server: Hj212Server, store: Store
) -> None:
    lg = Logger(server.port)
    lg.send(Packet("20260301080000000", "21", "9015", PW, MN, 4, ()))
    lg.send(Packet("20260301080000000", "21", "3011", PW, MN, 5, ()))
    lg.send(upload("2011", datetime(2026, 3, 1, 8), {"w01001": ("7.0", "N")}))
    assert lg.receive().cn == "9014"
    assert server.stats()["heartbeats"] == 1
    assert any("CN 3011 is not handled" in r for _, r in _dead(store))
    lg.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_idle_connections_are_closed(tmp_path: Path, store_url: str) -> None:
    srv = Hj212Server(_cfg(tmp_path, store_url, idle_timeout_s=0.3))
    srv.start()
    try:
        lg = Logger(srv.port)
        with pytest.raises(ConnectionError):
            lg.receive(5.0)
        assert srv.stats()["idle_closed"] == 1
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_too_many_errors_close_the_connection_and_dead_letters_are_capped(
    tmp_path: Path, store_url: str, store: Store
) -> None:
    srv = Hj212Server(_cfg(tmp_path, store_url, max_errors=30))
    srv.start()
    try:
        lg = Logger(srv.port)
        bad = upload("2011", datetime(2026, 3, 1, 8), {"w01001": ("7", "N")}, pw="nope")
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(100):
                lg.send(bad)
                time.sleep(0.005)
            lg.receive(5.0)
        assert srv.stats()["error_closed"] == 1
        assert len(_dead(store)) == 20
        # a hostile peer does not stall the others
        other = Logger(srv.port)
        other.send(upload("2011", datetime(2026, 3, 1, 8), {"w01001": ("7", "N")}))
        assert other.receive().cn == "9014"
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_connection_limit(tmp_path: Path, store_url: str) -> None:
    srv = Hj212Server(_cfg(tmp_path, store_url, max_connections=2))
    srv.start()
    try:
        a, b = Logger(srv.port), Logger(srv.port)
        time.sleep(0.2)
        c = Logger(srv.port)
        with pytest.raises(ConnectionError):
            c.receive(5.0)
        a.send(upload("2011", datetime(2026, 3, 1, 8), {"w01001": ("7", "N")}))
        assert a.receive().cn == "9014"
        assert srv.stats()["connections_refused"] == 1
        b.close()
    finally:
        srv.stop()


def test_many_loggers_at_once(server: Hj212Server, store: Store) -> None:
    loggers = [Logger(server.port) for _ in range(30)]
    t = datetime(2026, 3, 1, 8)
    for i, lg in enumerate(loggers):
        mn = MN if i % 2 == 0 else "33010200000002"
        pw = PW if i % 2 == 0 else "pw2"
        for k in range(5):
            lg.send(
                upload("2011", t.replace(minute=i, second=k), {"w01001": ("7", "N")}, mn=mn, pw=pw)
            )
    for lg in loggers:
        for _ in range(5):
            assert lg.receive().cn == "9014"
        lg.close()
    assert store.count_readings(["hj-001"]) == 75
    assert store.count_readings(["hj-002"]) == 75
    assert server.stats()["commits"] < 300  # commits were grouped


# --- pure core and configuration -------------------------------------------------------


def test_map_upload_rtd_and_avg() -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(TZ)
    now = local_ms(datetime(2026, 3, 2), tz)
    rt = parse_data(upload("2011", datetime(2026, 3, 1, 8), {"w01001": ("7.5", "N")}))
    hr = parse_data(upload("2061", datetime(2026, 3, 1, 8), {"w01001": ("7.6", "C")}))
    (r1,) = map_upload(rt, tz, now, 3_600_000).readings
    (r2,) = map_upload(hr, tz, now, 3_600_000).readings
    assert (r1.value, r1.flag, r2.value, r2.flag) == (7.5, "N", 7.6, "C")
    assert r1.seq == r2.seq  # same station, parameter and data time: one reading
    with pytest.raises(Hj212Error, match="ahead"):
        map_upload(rt, tz, now - 86_400_000, 3_600_000)


def test_hourly_gaps() -> None:
    from datetime import timedelta

    g = HourlyGaps(max_back=timedelta(hours=5))
    t = datetime(2026, 3, 1, 8)
    assert g.seen("a", t) is None
    assert g.seen("a", t + timedelta(hours=1)) is None
    assert g.seen("a", t + timedelta(hours=4)) == (t + timedelta(hours=2), t + timedelta(hours=3))
    assert g.seen("a", t + timedelta(hours=2)) is None  # history filling in
    # a long outage asks for no more than max_back
    assert g.seen("a", t + timedelta(hours=24)) == (
        t + timedelta(hours=19),
        t + timedelta(hours=23),
    )
    g.seed("b", datetime(2026, 3, 1, 5, 59, 30))
    assert g.seen("b", t) == (datetime(2026, 3, 1, 6), datetime(2026, 3, 1, 7))


def test_config_keys(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("from-file\n")
    (tmp_path / "central.toml").write_text(
        """
[hj212]
listen = "0.0.0.0:9212"

[[hj212.logger]]
mn = "33010200000001"
password = "123456"
station = "st-001"

[[hj212.logger]]
mn = "33010200000002"
password_file = "pw.txt"
station = "st-002"
"""
    )
    cfg = load_central_config(tmp_path / "central.toml")
    assert cfg.hj212 is not None
    assert cfg.hj212.listen == "0.0.0.0:9212"
    assert [lg.resolved_password() for lg in cfg.hj212.logger] == ["123456", "from-file"]


@pytest.mark.parametrize(
    ("hj", "key", "reason"),
    [
        ({"listen": "9212"}, "hj212.listen", "host:port"),
        ({"listen": "h:1", "logger": [{"mn": "a", "station": "s"}]}, "logger[0]", "exactly one"),
        (
            {"listen": "h:1", "logger": [{"mn": "a" * 25, "password": "x", "station": "s"}]},
            "mn",
            "1-24",
        ),
        (
            {"listen": "h:1", "logger": [{"mn": "a", "password": "a;b", "station": "s"}]},
            "password",
            "without",
        ),
        (
            {
                "listen": "h:1",
                "logger": [
                    {"mn": "a", "password": "x", "station": "s"},
                    {"mn": "a", "password": "y", "station": "t"},
                ],
            },
            "hj212",
            "two loggers",
        ),
        ({"listen": "h:1", "bogus": 1}, "bogus", "unknown key"),
    ],
)
def test_config_errors_name_the_key(hj: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(CentralConfig, {"hj212": hj}, "central.toml")
    assert key in info.value.key
    assert reason in info.value.reason


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_port_in_use_is_a_config_error(tmp_path: Path, store_url: str) -> None:
    first = Hj212Server(_cfg(tmp_path, store_url))
    first.start()
    try:
        data = msgspec.to_builtins(_cfg(tmp_path, store_url), enc_hook=str)
        data["hj212"]["listen"] = f"127.0.0.1:{first.port}"
        second = Hj212Server(parse_model(CentralConfig, data, "<test>"))
        with pytest.raises(ConfigError, match="cannot listen"):
            second.start()
    finally:
        first.stop()


def test_missing_password_file_fails_at_start(tmp_path: Path) -> None:
    cfg = parse_model(
        CentralConfig,
        {
            "hj212": {
                "listen": "127.0.0.1:0",
                "logger": [{"mn": "a", "password_file": str(tmp_path / "no"), "station": "s"}],
            }
        },
        "central.toml",
    )
    with pytest.raises(ConfigError, match="cannot read"):
        Hj212Server(cfg)

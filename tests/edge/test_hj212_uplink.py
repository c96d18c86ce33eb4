"""The station's HJ 212 uplink against a fake platform over real TCP, on a real SQLite buffer:
real-time, minute, hourly and daily data; 9014 awaited and resent; cursors per platform that
survive restarts and hold readings in the buffer; a week-long outage; time get/set as an
offset; history requests; wrong credentials ignored."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sanduan.edge.grader import Grader
from sanduan.edge.hj212.core import Identity, QnClock, minute, periods, realtime
from sanduan.edge.hj212.cursors import cursor_report
from sanduan.edge.hj212.uplink import CursorStore, PlatformLink
from sanduan.edge.io.outbox import Outbox
from sanduan.shared.config import Hj212PlatformConfig, StationConfig, parse_model
from sanduan.shared.errors import ConfigError
from sanduan.shared.hj212.codec import (
    Packet,
    data_ack,
    encode,
    history_request,
    join,
    parse_data,
)
from sanduan.shared.hj212.stream import Splitter
from sanduan.shared.wire import Ack

TZ = ZoneInfo("Asia/Shanghai")
MN = "33010200000009"
PW = "pw9"
H = 3_600_000


def ms(dt: datetime) -> int:
    return int(dt.replace(tzinfo=TZ).timestamp() * 1000)


class FakePlatform:
    """A provincial platform: accepts the station, records data, answers 9014 (unless told
    not to), and can send commands."""

    def __init__(self, *, ack: bool = True) -> None:
        self.ack = ack
        self.received: list[Packet] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.new_packet = asyncio.Event()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        s = Splitter()
        while True:
            data = await reader.read(4096)
            if not data:
                return
            for f in s.feed(data):
                assert f.packet is not None, f.error
                p = f.packet
                self.received.append(p)
                self.new_packet.set()
                last_part = not p.is_part or p.pno == p.pnum
                is_data = p.cn in ("2011", "2051", "2061", "2031")
                if self.ack and p.reply_wanted and is_data and last_part:
                    writer.write(encode(data_ack(p)))

    async def send(self, p: Packet) -> None:
        w = self.writers[-1]
        w.write(encode(p))
        await w.drain()

    def data(self, cn: str) -> list[Packet]:
        return [p for p in self.received if p.cn == cn]


def platform_cfg(port: int, name: str = "province", **kw: object) -> Hj212PlatformConfig:
    data: dict[str, object] = {
        "name": name,
        "address": f"127.0.0.1:{port}",
        "mn": MN,
        "password": PW,
        "data": ["realtime", "hourly", "daily"],
        "ack_timeout_s": 0.5,
        "retries": 1,
        "reconnect_max_s": 1,
    }
    data.update(kw)
    return parse_model(Hj212PlatformConfig, data, "<test>")


def buffer(tmp_path: Path, hours: int = 3, start: datetime = datetime(2026, 1, 1, 8)) -> Outbox:
    """A station buffer with 8 readings (two codes, four times) per hour for ``hours``."""
    ob = Outbox(tmp_path / "buffer.db", station="st-9", grader=Grader(engine="numpy"))
    t0 = ms(start)
    ts, codes, vals, flags = [], [], [], []
    for h in range(hours):
        for q in range(4):
            for code, v in (("w01001", 7.0 + q / 10), ("w21003", 0.5)):
                ts.append(t0 + h * H + q * 15 * 60_000)
                codes.append(code)
                vals.append(v)
                flags.append("N" if q != 3 else "M")
    ob.commit_columns(ts, codes, vals, flags)
    return ob


async def until(cond: Callable[[], bool], wait_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


async def _with_link(link: PlatformLink, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(link.run())
    try:
        await body()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_data_is_sent_acked_and_the_cursor_survives_a_restart(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=3)

    async def main() -> None:
        plat = FakePlatform()
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port), ob.path)

        def all_acked() -> bool:
            # the platform has answered every packet and the link has recorded those answers:
            # a link stopped between the two sends the unrecorded packet again, as it should
            cur = {k: pos for _, k, pos, _ in cursor_report(ob.path)}
            return (
                cur.get("realtime") == 24
                and cur.get("hourly") == ms(datetime(2026, 1, 1, 10))
                and cur.get("daily") == ms(datetime(2026, 1, 1))
            )

        async def body() -> None:
            await until(lambda: len(plat.data("2011")) == 12 and len(plat.data("2061")) == 3)
            await until(lambda: len(plat.data("2031")) == 1)
            await until(all_acked)

        await _with_link(link, body)
        rt = [parse_data(p) for p in plat.data("2011")]
        assert rt[0].data_time == datetime(2026, 1, 1, 8)
        assert [f.code for f in rt[0].factors] == ["w01001", "w21003"]
        assert rt[0].factors[0].get("Rtd") == "7"
        assert rt[3].factors[0].flag == "M"
        hourly = parse_data(plat.data("2061")[0])
        assert hourly.data_time == datetime(2026, 1, 1, 8)
        ph = hourly.factors[0]
        # M-flagged readings are not valid: min/avg/max over the three N readings
        assert (ph.code, ph.get("Min"), ph.get("Avg"), ph.get("Max"), ph.flag) == (
            "w01001",
            "7",
            "7.1",
            "7.2",
            "N",
        )
        assert parse_data(plat.data("2031")[0]).data_time == datetime(2026, 1, 1)
        qns = [p.qn for p in plat.received]
        assert len(set(qns)) == len(qns)
        assert all(p.mn == MN and p.pw == PW and p.st == "21" for p in plat.received)
        cur = {k: pos for _, k, pos, _ in cursor_report(ob.path)}
        assert cur["realtime"] == 24
        assert cur["hourly"] == ms(datetime(2026, 1, 1, 10)) - 0
        # restart: nothing is sent again
        before = len(plat.received)
        link2 = PlatformLink(platform_cfg(plat.port), ob.path)

        async def body2() -> None:
            await asyncio.sleep(1.5)

        await _with_link(link2, body2)
        assert len(plat.received) == before
        await plat.stop()

    run(main)
    ob.close()


def test_unanswered_packets_are_resent_then_the_link_reconnects(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=1)

    async def main() -> None:
        plat = FakePlatform(ack=False)
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port, data=["hourly"]), ob.path)

        async def body() -> None:
            await until(lambda: len(plat.data("2061")) >= 3, wait_s=15)
            first = plat.data("2061")[0].qn
            assert [p.qn for p in plat.data("2061")[:2]] == [first, first]  # resent as is
            assert link.counts["connections"] >= 2 or len(plat.writers) >= 2
            assert cursor_report(ob.path)[0][2] == 0  # nothing acknowledged: cursor stays
            plat.ack = True
            await until(lambda: {k: p for _, k, p, _ in cursor_report(ob.path)}["hourly"] > 0)

        await _with_link(link, body)
        await plat.stop()

    run(main)
    ob.close()


def test_platform_down_for_a_week_loses_nothing(tmp_path: Path) -> None:
    hours = 7 * 24
    ob = buffer(tmp_path, hours=hours, start=datetime(2026, 1, 1, 0))
    # The centre acknowledged everything meanwhile.
    ob.ack(Ack("st-9", 1, 1, ob.next_seq - 1, 0))
    CursorStore(ob.path, "province", ["realtime", "hourly"]).close()  # registered, never sent

    async def main() -> None:
        plat = FakePlatform()
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port, data=["realtime", "hourly"]), ob.path)

        async def body() -> None:
            await until(
                lambda: len(plat.data("2061")) == hours and len(plat.data("2011")) == hours * 4,
                wait_s=120,
            )

        await _with_link(link, body)
        await plat.stop()
        times = {parse_data(p).data_time for p in plat.data("2061")}
        assert len(times) == hours
        assert len({parse_data(p).data_time for p in plat.data("2011")}) == hours * 4

    run(main)
    assert all(d == 0 for *_, d in cursor_report(ob.path))
    ob.close()


def test_space_policy_deletes_what_every_platform_has_first(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=40)  # 320 readings
    ob.ack(Ack("st-9", 1, 1, ob.next_seq - 1, 0))
    cs = CursorStore(ob.path, "province", ["realtime", "hourly"])
    cs.advance("realtime", 250)
    cs.close()
    ob.max_bytes = int(ob.used_bytes() * 0.97)  # a little over budget
    ob.check_space()
    seqs = [r[0] for r in ob.readings()]
    assert 0 < len(seqs) < 320  # something was deleted, only what the platform had
    assert 1 not in seqs
    assert set(range(251, 321)) <= set(seqs)
    assert all(d == 0 for *_, d in cursor_report(ob.path))
    ob.close()


def test_a_full_buffer_counts_what_a_lagging_platform_loses(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=10)
    ob.ack(Ack("st-9", 1, 1, ob.next_seq - 1, 0))
    cs = CursorStore(ob.path, "province", ["realtime"])
    cs.advance("realtime", 20)
    cs.close()
    ob.max_bytes = 1
    ob.check_space()  # must free space: deletes what the platform has, then what it lacks
    ob.max_bytes = 512 * 1024 * 1024
    (_, _kind, pos, dropped) = next(r for r in cursor_report(ob.path) if r[1] == "realtime")
    remaining = ob.stats().rows
    assert dropped == pos - 20
    assert dropped > 0
    assert remaining + 20 + dropped == 80
    ob.close()


def test_set_time_is_an_offset_and_get_time_answers_with_it(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=0)

    async def main() -> None:
        plat = FakePlatform()
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port, data=["hourly"]), ob.path)

        async def body() -> None:
            await until(lambda: bool(plat.writers))
            target = datetime(2030, 6, 1, 12, 0, 0)
            await plat.send(
                Packet(
                    "20300601120000000",
                    "21",
                    "1012",
                    PW,
                    MN,
                    5,
                    ((("SystemTime", target.strftime("%Y%m%d%H%M%S")),),),
                )
            )
            await until(lambda: len(plat.data("9012")) == 1)
            assert plat.data("9011")[0].get("QnRtn") == "1"
            await plat.send(Packet("20300601120001000", "21", "1011", PW, MN, 5, ()))
            await until(lambda: len(plat.data("1011")) == 1)
            got = datetime.strptime(plat.data("1011")[0].get("SystemTime") or "", "%Y%m%d%H%M%S")
            assert abs((got - target).total_seconds()) < 5
            # a wrong password is ignored
            await plat.send(Packet("20300601120002000", "21", "1011", "bad", MN, 5, ()))
            await asyncio.sleep(0.3)
            assert len(plat.data("1011")) == 1
            assert link.counts["bad_credentials"] == 1

        await _with_link(link, body)
        await plat.stop()

    run(main)
    cur = {k: p for _, k, p, _ in cursor_report(ob.path)}
    offset_s = cur["clock_offset"] / 1000
    expected = (ms(datetime(2030, 6, 1, 12)) / 1000) - datetime.now().timestamp()
    assert abs(offset_s - expected) < 10  # recorded; the system clock was not touched
    ob.close()


def test_history_request_is_answered_from_the_buffer(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=6)

    async def main() -> None:
        plat = FakePlatform()
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port, data=["daily"]), ob.path)

        async def body() -> None:
            await until(lambda: len(plat.data("2031")) == 1)
            req = history_request(
                cn="2061",
                qn="20260102000000000",
                mn=MN,
                pw=PW,
                begin=datetime(2026, 1, 1, 9),
                end=datetime(2026, 1, 1, 11),
            )
            await plat.send(req)
            await until(lambda: len(plat.data("9012")) == 1)
            assert plat.data("9011")[0].qn == req.qn
            times = [parse_data(p).data_time.hour for p in plat.data("2061")]
            assert times == [9, 10, 11]
            assert len({p.qn for p in plat.data("2061")} | {req.qn}) == 4  # new QNs

        await _with_link(link, body)
        await plat.stop()

    run(main)
    ob.close()


def test_an_hour_that_grows_after_it_was_sent_is_sent_again(tmp_path: Path) -> None:
    ob = buffer(tmp_path, hours=2)

    async def main() -> None:
        plat = FakePlatform()
        await plat.start()
        link = PlatformLink(platform_cfg(plat.port, data=["hourly"]), ob.path)

        async def body() -> None:
            await until(lambda: len(plat.data("2061")) == 2)
            # an analyzer's result for 08:30, read after the hour was sent
            ob.commit_columns([ms(datetime(2026, 1, 1, 8, 30))], ["w21011"], [0.2], ["N"])
            await until(lambda: len(plat.data("2061")) == 3)
            await asyncio.sleep(1.5)  # and only once
            assert len(plat.data("2061")) == 3

        await _with_link(link, body)
        await plat.stop()
        again = parse_data(plat.data("2061")[2])
        assert again.data_time == datetime(2026, 1, 1, 8)
        assert [f.code for f in again.factors] == ["w21011"]  # only what changed
        assert link.counts["resent_grown_hourly"] == 1

    run(main)
    ob.close()


# --- pure core ---------------------------------------------------------------------------


def _qn() -> Callable[[], str]:
    return QnClock(lambda: ms(datetime(2026, 1, 2)), TZ)


def test_realtime_groups_by_time_and_splits_long_packets() -> None:
    ident = Identity(MN, PW, "21")
    t = ms(datetime(2026, 1, 1, 8))
    rows = [(i + 1, t, f"w{i:05d}", float(i), "N") for i in range(80)]
    rows.append((81, t, "w00000", math.nan, "D"))  # same code again: a new packet
    out = realtime(rows, ident, TZ, _qn())
    assert [o.pos for o in out] == [80, 81]
    assert len(out[0].parts) > 1  # too long for one packet: split, one QN
    whole = join(out[0].parts)
    assert len(parse_data(whole).factors) == 80
    last = parse_data(out[1].parts[0]).factors[0]
    assert (last.get("Rtd"), last.flag) == (None, "D")


def test_minute_waits_for_a_complete_minute() -> None:
    ident = Identity(MN, PW, "21")
    t = ms(datetime(2026, 1, 1, 8))
    rows = [(1, t, "w01001", 7.0, "N"), (2, t + 30_000, "w01001", 8.0, "N")]
    assert minute(rows, ident, TZ, _qn(), now_ms=t + 60_000) == []
    rows.append((3, t + 61_000, "w01001", 9.0, "N"))
    (out,) = minute(rows, ident, TZ, _qn(), now_ms=t + 61_000)
    f = parse_data(out.parts[0]).factors[0]
    assert (f.get("Min"), f.get("Avg"), f.get("Max"), out.pos) == ("7", "7.5", "8", 2)


def test_periods_without_valid_values_are_flagged() -> None:
    ident = Identity(MN, PW, "21")
    t = ms(datetime(2026, 1, 1, 8))
    (out,) = periods("hourly", [(t, "w01001", 4, 0, None, None, 0.0)], ident, TZ, _qn())
    f = parse_data(out.parts[0]).factors[0]
    assert (f.get("Avg"), f.flag) == (None, "D")


def test_station_config_keys(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = parse_model(
        StationConfig,
        {
            "station": {"id": "st-1"},
            "hj212": [
                {
                    "name": "province",
                    "address": "10.0.0.1:9000",
                    "mn": MN,
                    "password": "123456",
                    "data": ["realtime", "hourly"],
                },
                {
                    "name": "nation",
                    "address": "example.org:9001",
                    "mn": MN,
                    "password_file": str(tmp_path / "pw"),
                    "st": "21",
                },
            ],
        },
        "station.toml",
    )
    assert [p.name for p in cfg.hj212] == ["province", "nation"]
    assert cfg.hj212[1].data == ["hourly"]
    assert cfg.hj212[1].resolved_password() == "s3cret"
    with pytest.raises(ConfigError, match="data"):
        parse_model(
            StationConfig,
            {
                "station": {"id": "st-1"},
                "hj212": [
                    {"name": "p", "address": "h:1", "mn": MN, "password": "x", "data": ["weekly"]}
                ],
            },
            "station.toml",
        )

"""The heartbeat's clock offset, estimated from the time the centre stamps on its acks."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path

from tests.edge.agent_harness import station_config

from sanduan.edge.core.model import PolledValue
from sanduan.edge.forwarder import DbThread, Forwarder, Inflight
from sanduan.edge.grader import Grader
from sanduan.edge.io.outbox import Outbox
from sanduan.edge.io.uplink import Published
from sanduan.shared import topics, wire
from sanduan.shared.topics import Kind
from sanduan.shared.wire import Ack

T0 = 1_767_225_600.0


@dataclass
class FakeClock:
    now: float = T0
    speed: float = 1.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - T0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def real_seconds(self, seconds: float) -> float:
        return seconds


@dataclass
class FakeUplink:
    protocol: str = "5"
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Published:
        self.sent.append((topic, payload))
        return Published(len(self.sent), queued=True)

    def events(self) -> list[wire.Event]:
        out = []
        for topic, payload in self.sent:
            if topic.endswith("/event"):
                m = wire.decode(payload)
                assert isinstance(m, wire.Event)
                out.append(m)
        return out


def test_offset_from_acks_in_the_heartbeat_and_one_clock_event(tmp_path: Path) -> None:
    cfg = station_config("st-clk", tmp_path / "b.db", clock_offset_max_s=30.0)
    clock = FakeClock()
    uplink = FakeUplink()

    async def ack(
        fwd: Forwarder, batch_seq: int, centre_s: float, *, sent_wall: float | None
    ) -> None:
        if sent_wall is not None:
            fwd.inflight[batch_seq] = Inflight(1, 1, sent_wall - T0, "new", sent_wall)
        msg = Ack("st-clk", batch_seq, 1, 1, round(centre_s * 1000), stream=fwd.stream)
        fwd.message(Kind.ACK, wire.encode(msg))
        for _ in range(50):  # the ack is handled on the loop and the buffer's thread
            await asyncio.sleep(0.01)

    async def go() -> None:
        outbox = Outbox(tmp_path / "b.db", station="st-clk", grader=Grader(engine="numpy"))
        db = DbThread(outbox)
        fwd = Forwarder(db, cfg.uplink, "st-clk", clock=clock, agent_version="t")
        fwd.uplink = uplink  # type: ignore[assignment]
        inbox = asyncio.create_task(fwd.serve_inbox())
        await db.run(outbox.commit, [PolledValue("d", "w01001", int(T0 * 1000), 7.0)])
        await db.run(outbox.next_batch_seq)  # batch seqs 1..64 issued
        assert (await fwd.status()).clock_offset_s is None  # no ack yet: unknown

        # Published at T0, acked at T0 + 0.4: the centre stamped T0 + 45.2 at commit. The
        # midpoint T0 + 0.2 against 45.2: the station is 45 s behind.
        clock.now = T0 + 0.4
        await ack(fwd, 1, T0 + 45.2, sent_wall=T0)
        assert fwd.clock_offset_s is not None and math.isclose(
            fwd.clock_offset_s, -45.0, abs_tol=1e-3
        )
        assert fwd.clock_rtt_s is not None and math.isclose(fwd.clock_rtt_s, 0.4, abs_tol=1e-3)
        st = await fwd.status()
        assert st.clock_offset_s == -45.0
        (ev,) = uplink.events()
        assert ev.kind == "clock" and ev.details["clock_offset_s"] == -45.0
        assert "behind the centre by 45.0 s" in ev.message and ev.details["limit_s"] == 30.0
        assert ev.event_id == 1 and ev.station == "st-clk"
        assert uplink.sent[-1][0] == topics.event_topic("st-clk")

        # Still off on the next acks: no second event.
        clock.now = T0 + 10.0
        await ack(fwd, 2, T0 + 55.0, sent_wall=None)  # receipt time only: -45 again
        assert fwd.clock_offset_s is not None and math.isclose(
            fwd.clock_offset_s, -45.0, abs_tol=1e-3
        )
        assert fwd.clock_rtt_s is None
        assert len(uplink.events()) == 1

        # Synchronised: nothing to say. Then 40 s ahead: one new event.
        clock.now = T0 + 20.0
        await ack(fwd, 3, T0 + 20.0 - 0.5, sent_wall=T0 + 19.0)
        assert fwd.clock_offset_s is not None and math.isclose(
            fwd.clock_offset_s, 0.0, abs_tol=1e-3
        )
        assert len(uplink.events()) == 1 and fwd.clock_events == 1
        clock.now = T0 + 30.0
        await ack(fwd, 4, T0 + 30.0 - 40.0, sent_wall=None)
        events = uplink.events()
        assert len(events) == 2 and "ahead of the centre by 40.0 s" in events[1].message
        assert (await fwd.status()).clock_offset_s == 40.0
        # An ack without a time (time_ms 0) leaves the estimate alone.
        await ack(fwd, 5, 0.0, sent_wall=None)
        assert fwd.clock_offset_s is not None and math.isclose(
            fwd.clock_offset_s, 40.0, abs_tol=1e-3
        )
        # The events are in the buffer until the broker confirms them.
        pending = await db.run(outbox.pending_events)
        assert [i for i, _ in pending] == [1, 2]
        # A forged time (2^63 - 1 ms) is no clock: ignored, the estimate and the heartbeat stay.
        fwd.message(Kind.ACK, wire.encode(Ack("st-clk", 6, 1, 1, (1 << 63) - 1, stream=fwd.stream)))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert fwd.clock_offset_s is not None and math.isclose(
            fwd.clock_offset_s, 40.0, abs_tol=1e-3
        )
        wire.encode(await fwd.status())
        inbox.cancel()
        await asyncio.get_running_loop().run_in_executor(None, db.close)

    asyncio.run(go())


def test_the_limit_is_configurable(tmp_path: Path) -> None:
    assert station_config("s", tmp_path / "b.db").uplink.clock_offset_max_s == 30.0
    cfg = station_config("s", tmp_path / "b.db", clock_offset_max_s=5)
    assert cfg.uplink.clock_offset_max_s == 5.0

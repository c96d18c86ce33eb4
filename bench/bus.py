"""RS-485 bus throughput: what the edge agent achieves on emulated lines, against the limit.

One station, two buses whose byte times are emulated by the rig's Python relay: a 9600-baud
line with a sonde and two analyzers, and a 115200-baud line with four devices. Every device is
polled back to back (a tiny poll period), so each bus runs as fast as its line allows. The
simulated devices count the polls they completed; the limit comes from the frame-time formula
(``sanduan.edge.core.timing``) applied to the agent's own read plan and each device's
turnaround. A simulated device answers after its turnaround *plus* the 3.5-character
inter-frame silence it needs to see the end of the request, as a real slave does, which is the
second gap of the formula. The simulated devices run in this process and take the relay's line
times: a request's turnaround counts from when it ended on the emulated wire, and a reply is on
the wire from when the device writes it (``--thread-times``: from when their threads noticed,
which adds two pseudo-terminal hops and thread wake-ups per transaction that a wire does not
have; the emulation before).

Also printed: the planner's requests per round against a naive gateway that sends one request
per register (per tag), and the limit that naive plan would have.

Then what bad replies cost the bus: four slaves on an emulated 115200-baud line polled once a
second (timeout 1 s, 2 retries) by the bus poller in this process, clean, with ``--bad-rate``
(20 %) of the replies given a wrong CRC, and with that share replaced by random bytes. Printed per
case: the bus utilisation the poller measures (busy time / elapsed), its ratio to the clean case
(a failed reply that waits out the 1 s timeout makes it several times the clean figure), the
requests and the polls that succeeded.

Run: ``.venv/bin/python bench/bus.py [--seconds 10] [--bad-seconds 10] [--json out.json]
[--strict] [--thread-times]``. The target is an achieved/limit ratio of at least 0.9 at 9600
baud and 0.95 at 115200 (``--strict``: exit 1 when missed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanduan.edge.core.timing import Line, bus_timing
from sanduan.edge.devices import load_station, plan_station
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.broker import BrokerHandle
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.hil.rig import sanduan_argv
from sanduan.hil.rtu import Request
from sanduan.hil.scenario import dump_toml
from sanduan.hil.truth import RecordingDevice, TruthLog, planned_blocks
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig, parse_model
from sanduan.shared.registers import load_profile

VALUES = {
    "w01001": 7.4,
    "w01009": 7.9,
    "w01010": 21.5,
    "w01014": 455.0,
    "w01003": 12.0,
    "w01016": 4.2,
    "w21003": 0.41,
    "w21011": 0.12,
    "w01019": 4.4,
    "result_time": 1_700_000_000.0,
}


@dataclass(frozen=True)
class Dev:
    name: str
    profile: str
    slave: int
    turnaround_s: float


BUSES: dict[str, tuple[int, list[Dev]]] = {
    "rs485-9600": (
        9600,
        [
            Dev("sonde", "sonde-multi", 1, 0.010),
            Dev("nh3n", "nh3n-analyzer", 2, 0.020),
            Dev("codmn", "codmn-analyzer", 4, 0.020),
        ],
    ),
    "rs485-115200": (
        115_200,
        [
            Dev("tp", "tp-analyzer", 3, 0.005),
            Dev("do", "do-optical", 5, 0.005),
            Dev("ldo", "do-ldo", 6, 0.005),
            Dev("sonde2", "sonde-multi", 7, 0.005),
        ],
    ),
}


def _station_doc(ports: dict[str, str], broker: str, buffer: Path) -> dict[str, Any]:
    return {
        "station": {"id": "BENCH-01"},
        "buffer": {"path": str(buffer), "synchronous": "NORMAL"},
        "uplink": {"broker": broker, "protocol": "3.1.1", "username": "BENCH-01"},
        "bus": [
            {
                "name": name,
                "port": ports[name],
                "baudrate": baud,
                "parity": "N",
                "max_gap": 10,
                "device": [
                    {
                        "name": d.name,
                        "slave": d.slave,
                        "profile": d.profile,
                        "poll_period_s": 0.001,
                        "timeout_s": 0.5,
                        "turnaround_s": d.turnaround_s,
                    }
                    for d in devs
                ],
            }
            for name, (baud, devs) in BUSES.items()
        ],
    }


def _naive_round_s(plan: Any, line: Line) -> float:
    """Bus time of one round if every register were its own request."""
    total = 0.0
    for d in plan.devices:
        for spec in d.profile.registers:
            total += line.transaction_s(spec.width, d.config.turnaround_s)
    return total


class Flaky(SimulatedDevice):
    """A rig device that spoils a share of its replies (``mode``: ``crc`` or ``garbage``)."""

    def __init__(self, *a: Any, rate: float, mode: str, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.rate, self.mode = rate, mode
        self.rng = random.Random(self.slave * 7919 + len(mode))

    def handle(self, req: Request) -> tuple[float, bytes | None]:
        delay, reply = super().handle(req)
        if reply is None or self.rng.random() >= self.rate:
            return delay, reply
        if self.mode == "crc":
            return delay, reply[:-1] + bytes((reply[-1] ^ 0xA5,))
        n = self.rng.randint(3, len(reply))
        return delay, bytes(self.rng.getrandbits(8) for _ in range(n))


BAD_DEVICES = [("tp", "tp-analyzer", 3), ("do", "do-optical", 5), ("ldo", "do-ldo", 6)]
BAD_DEVICES += [("sonde", "sonde-multi", 7)]


def bad_case(rate: float, mode: str, seconds: float, line_times: bool) -> dict[str, Any]:
    """One bad-replies case: the poller's snapshot figures after ``seconds``."""
    baud = 115_200
    pair = VirtualSerialPair("python", baud=baud, bits_per_char=10)
    with pair as (dev_port, client_port):
        devs = [
            Flaky(load_profile(p), s, VALUES, turnaround_s=0.005, rate=rate, mode=mode)
            for _, p, s in BAD_DEVICES
        ]
        config = parse_model(
            StationConfig,
            {
                "station": {"id": "BENCH"},
                "bus": [
                    {
                        "name": "b",
                        "port": client_port,
                        "baudrate": baud,
                        "device": [
                            {
                                "name": n,
                                "slave": s,
                                "profile": p,
                                "poll_period_s": 1.0,
                                "timeout_s": 1.0,
                                "retries": 2,
                                "turnaround_s": 0.005,
                            }
                            for n, p, s in BAD_DEVICES
                        ],
                    }
                ],
            },
            "<test>",
        )
        with SimulatedBus(dev_port, devs, baudrate=baud, line=pair.relay if line_times else None):
            poller = BusPoller(plan_station(config, "bench.toml")[0], SystemClock())

            async def go() -> dict[str, Any]:
                task = asyncio.create_task(poller.run())
                await asyncio.sleep(seconds)
                snap = poller.snapshot()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return snap

            snap = asyncio.run(go())
    errors: dict[str, int] = {}
    for d in snap["devices"]:
        for k, v in d["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "utilisation": snap["utilisation"],
        "requests": snap["requests"],
        "errors": errors,
        "polls_ok": sum(d["polls_ok"] for d in snap["devices"]),
        "polls": sum(d["polls"] for d in snap["devices"]),
    }


def bad_replies(rate: float, seconds: float, line_times: bool) -> list[dict[str, Any]]:
    print(
        f"bad replies: {len(BAD_DEVICES)} devices at 115200 baud, each polled every 1 s"
        f" (timeout 1 s, 2 retries), {seconds:g} s per case"
    )
    logging.disable(logging.WARNING)  # the failed polls are counted below, not logged
    try:
        out = []
        clean: dict[str, Any] | None = None
        for name, r, mode in (
            ("clean", 0.0, "crc"),
            (f"{rate:.0%} CRC errors", rate, "crc"),
            (f"{rate:.0%} garbage", rate, "garbage"),
        ):
            res = bad_case(r, mode, seconds, line_times)
            clean = clean or res
            x = res["utilisation"] / clean["utilisation"] if clean["utilisation"] else 0.0
            print(
                f"  {name:16s} utilisation {res['utilisation']:.4f} (x{x:.2f} of clean)"
                f"  requests {res['requests']}  failed {res['errors'] or 0}"
                f"  polls ok {res['polls_ok']}/{res['polls']}"
            )
            out.append({"case": name, "x_clean": round(x, 3), **res})
        return out
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--bad-rate", type=float, default=0.2, help="share of replies spoilt")
    ap.add_argument("--bad-seconds", type=float, default=10.0, help="0: skip that part")
    ap.add_argument(
        "--thread-times",
        action="store_true",
        help="simulated devices time requests and replies by their threads (the old emulation)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sanduan-bench-bus-"))
    log = TruthLog()
    pairs: list[VirtualSerialPair] = []
    sims: list[SimulatedBus] = []
    devices: dict[str, list[RecordingDevice]] = {}
    ports: dict[str, str] = {}
    broker = BrokerHandle.create(None, work / "broker")
    broker.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name, (baud, devs) in BUSES.items():
            line = Line(baud)
            pair = VirtualSerialPair("python", baud=baud, bits_per_char=line.bits_per_char)
            dev_port, client_port = pair.open()
            pairs.append(pair)
            recs = []
            for d in devs:
                profile = load_profile(d.profile)
                recs.append(
                    RecordingDevice(
                        profile,
                        station="BENCH-01",
                        device=d.name,
                        log=log,
                        blocks=planned_blocks(profile),
                        timeout_s=0.5,
                        slave=d.slave,
                        values=VALUES,
                        # the slave's own latency plus the silence that ends the request
                        turnaround_s=d.turnaround_s + line.gap_s,
                    )
                )
            devices[name] = recs
            line_clock = None if args.thread_times else pair.relay
            sims.append(SimulatedBus(dev_port, recs, baudrate=baud, line=line_clock).start())
            ports[name] = client_port
        cfg = work / "station.toml"
        cfg.write_text(dump_toml(_station_doc(ports, broker.url, work / "buffer.db")), "utf-8")
        _, plans = load_station(cfg)
        with (work / "agent.log").open("wb") as logf:
            proc = subprocess.Popen(
                [*sanduan_argv(), "edge", "run", "--config", str(cfg), "--log-level", "WARNING"],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ},
            )
        time.sleep(args.warmup)

        def counts() -> dict[str, int]:
            return {
                d.device: log.counters[("BENCH-01", d.device)].polls
                for v in devices.values()
                for d in v
            }

        c0, t0 = counts(), time.monotonic()
        time.sleep(args.seconds)
        c1, t1 = counts(), time.monotonic()
        elapsed = t1 - t0
        if proc.poll() is not None:
            sys.exit(f"the agent exited early; see {work / 'agent.log'}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        for s in sims:
            s.stop()
        for p in pairs:
            p.close()
        broker.stop()

    results = []
    ok = True
    print(
        f"agent polling back to back for {elapsed:.1f} s (after {args.warmup:g} s warm-up);"
        f" simulated devices timed by {'their threads' if args.thread_times else 'the line'}\n"
    )
    for plan in plans:
        timing = bus_timing(plan)
        line = timing.line
        values_per_round = sum(len(d.profile.values) for d in plan.devices)
        limit_vps = values_per_round / timing.round_s
        polls = {d.name: c1[d.name] - c0[d.name] for d in plan.devices}
        achieved_vps = sum(polls[d.name] * len(d.profile.values) for d in plan.devices) / elapsed
        naive_requests = sum(d.naive_requests for d in plan.devices)
        naive_round = _naive_round_s(plan, line)
        ratio = achieved_vps / limit_vps
        target = 0.95 if line.baudrate > 19_200 else 0.9
        ok = ok and ratio >= target
        rounds = min(polls.values()) / elapsed
        print(
            f"{plan.name}: {line.name}, {len(plan.devices)} devices,"
            f" {timing.requests} requests/round (planner) vs {naive_requests} (one per register)"
        )
        print(
            f"  limit   {limit_vps:7.1f} values/s  ({timing.round_s * 1000:.1f} ms/round;"
            f" naive plan {values_per_round / naive_round:.1f} values/s,"
            f" {naive_round * 1000:.1f} ms/round)"
        )
        print(
            f"  agent   {achieved_vps:7.1f} values/s  ({rounds:.2f} rounds/s)"
            f"  ratio {ratio:.3f} {'ok' if ratio >= target else f'BELOW {target:g}'}"
        )
        print("  polls: " + ", ".join(f"{k} {v}" for k, v in polls.items()) + "\n")
        results.append(
            {
                "bus": plan.name,
                "line": line.name,
                "devices": len(plan.devices),
                "requests_per_round": timing.requests,
                "naive_requests_per_round": naive_requests,
                "round_ms": round(timing.round_s * 1000, 2),
                "naive_round_ms": round(naive_round * 1000, 2),
                "limit_values_per_s": round(limit_vps, 2),
                "naive_limit_values_per_s": round(values_per_round / naive_round, 2),
                "achieved_values_per_s": round(achieved_vps, 2),
                "ratio": round(ratio, 4),
                "polls": polls,
            }
        )
    print("target achieved/limit >= 0.9 (9600), 0.95 (115200):", "met" if ok else "NOT met\n")
    line_times = not args.thread_times
    bad = bad_replies(args.bad_rate, args.bad_seconds, line_times) if args.bad_seconds > 0 else []
    if args.json is not None:
        doc = {
            "seconds": elapsed,
            "device_times": "thread" if args.thread_times else "line",
            "buses": results,
            "bad_replies": bad,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.strict and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

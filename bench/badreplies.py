"""What bad replies cost the bus: utilisation with clean replies, with 20 % CRC errors and with
20 % garbage, on an emulated 115200-baud line.

Four simulated slaves (the rig's devices, each answering after 5 ms) on one line whose byte
times the rig's Python relay emulates; the bus poller polls each once a second for
``--seconds``. A chosen fraction of the replies is corrupted at random: the right reply with a
wrong CRC, or random bytes. Printed per case: the bus utilisation the poller measures (busy time
/ elapsed), the requests it sent, the failed requests by kind, and the polls that succeeded.
The ratio compares the utilisation with errors to the clean one (1.0 would be free errors; a
failed reply that waits out a 1 s timeout makes it several times the clean figure).

Run: ``.venv/bin/python bench/badreplies.py [--seconds 20] [--rate 0.2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from typing import Any

from sanduan.edge.devices import plan_station
from sanduan.edge.io.bus import BusPoller
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.clock import SystemClock
from sanduan.shared.config import StationConfig
from sanduan.shared.registers import load_profile

BAUD = 115_200
DEVICES = [("tp", "tp-analyzer", 3), ("do", "do-optical", 5), ("ldo", "do-ldo", 6)]
DEVICES += [("sonde", "sonde-multi", 7)]
VALUES = {"w01001": 7.4, "w01009": 7.9, "w01010": 21.5, "w01014": 455.0, "w01003": 12.0}
VALUES |= {"w01016": 4.2, "w21003": 0.41, "w21011": 0.12, "w01019": 4.4}


class Flaky(SimulatedDevice):
    """A rig device that corrupts a fraction of its replies (``mode``: crc or garbage)."""

    def __init__(self, *a: Any, rate: float, mode: str, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.rate, self.mode = rate, mode
        self.rng = random.Random(hash((self.slave, mode)) & 0xFFFF)

    def handle(self, req: Any) -> tuple[float, bytes | None]:
        delay, reply = super().handle(req)
        if reply is None or self.rng.random() >= self.rate:
            return delay, reply
        if self.mode == "crc":
            return delay, reply[:-1] + bytes((reply[-1] ^ 0xA5,))
        n = self.rng.randint(3, len(reply))
        return delay, bytes(self.rng.getrandbits(8) for _ in range(n))


def station(port: str) -> StationConfig:
    return StationConfig.model_validate(
        {
            "station": {"id": "BENCH"},
            "bus": [
                {
                    "name": "b",
                    "port": port,
                    "baudrate": BAUD,
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
                        for n, p, s in DEVICES
                    ],
                }
            ],
        }
    )


def run_case(rate: float, mode: str, seconds: float) -> dict[str, Any]:
    with VirtualSerialPair("python", baud=BAUD, bits_per_char=10) as (dev_port, client_port):
        devs = [
            Flaky(load_profile(p), s, VALUES, turnaround_s=0.005, rate=rate, mode=mode, seed=s)
            for _, p, s in DEVICES
        ]
        with SimulatedBus(dev_port, devs, baudrate=BAUD):
            plan = plan_station(station(client_port), "bench.toml")[0]
            poller = BusPoller(plan, SystemClock())

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=0.2, help="fraction of replies corrupted")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the failed polls are counted below, not logged
    print(
        f"{len(DEVICES)} devices at {BAUD} baud, each polled every 1 s (timeout 1 s, 2 retries),"
        f" {args.seconds:g} s per case"
    )
    clean = run_case(0.0, "crc", args.seconds)
    for name, rate, mode in (
        ("clean", 0.0, "crc"),
        (f"{args.rate:.0%} CRC errors", args.rate, "crc"),
        (f"{args.rate:.0%} garbage", args.rate, "garbage"),
    ):
        r = clean if rate == 0 else run_case(rate, mode, args.seconds)
        print(
            f"{name:18s} utilisation {r['utilisation']:.4f}"
            f"  (x{r['utilisation'] / clean['utilisation']:.2f} of clean)"
            f"  requests {r['requests']}  failed {r['errors'] or 0}"
            f"  polls ok {r['polls_ok']}/{r['polls']}"
        )


if __name__ == "__main__":
    main()

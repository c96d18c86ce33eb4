"""HJ 212-2017: codec cost per reading, collector throughput against the MQTT path, and 1,000
concurrent logger connections.

    .venv/bin/python bench/hj212.py [--loggers 1000] [--packets 20] [--quick]

1. **Codec**: encode and decode of hourly uploads of 8 factors, per reading, against the wire
   format's msgpack batches of the same 8 readings (ratio HJ 212 / wire).
2. **Collector throughput**: the same readings, 8 per message, into a fresh SQLite store: over
   HJ 212 (the collector's TCP server, 50 loggers sending and awaiting their 9014s, a window
   of 8 packets each) and over MQTT (the collector with the local Mosquitto, one publisher,
   batches of 8 readings), each collector in a process of its own. Figure: readings/s from the
   first send until everything is acknowledged (HJ 212) or stored (MQTT); ratio HJ 212 / MQTT.
3. **1,000 loggers**: that many connections held open at once on one collector: its resident
   memory idle, with every connection open, and after each has uploaded ``--packets`` packets;
   readings/s for that upload.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

CODES = ["w01001", "w01009", "w01010", "w01014", "w01003", "w01019", "w21003", "w21011"]
T0 = datetime(2026, 3, 1)
PW = "bench1"
BROKER = ("127.0.0.1", 1883)


def mn(i: int) -> str:
    return f"BENCH{i:09d}"


def _packets(logger: int, n: int, start: int = 0) -> list[bytes]:
    from sanduan.shared.hj212.codec import FactorData, data_packet, encode, make_qn

    rng = random.Random(logger)
    out = []
    for k in range(start, start + n):
        t = T0 + timedelta(minutes=k)
        factors = [
            FactorData(c, (("Rtd", f"{rng.uniform(0.1, 9):.3f}"), ("Flag", "N"))) for c in CODES
        ]
        qn = make_qn(t + timedelta(milliseconds=logger % 1000))
        p = data_packet(cn="2011", qn=qn, mn=mn(logger), pw=PW, data_time=t, factors=factors)
        out.append(encode(p))
    return out


# --- 1. codec --------------------------------------------------------------------------------


def bench_codec(n: int) -> None:
    from sanduan.shared.hj212.codec import decode, parse_data
    from sanduan.shared.wire import Batch, decode_batch, encode

    raws = _packets(1, n)
    t = time.perf_counter()
    for r in raws:
        parse_data(decode(r))
    t_dec = time.perf_counter() - t
    packets = [decode(r) for r in raws]
    from sanduan.shared.hj212.codec import encode as hj_encode

    t = time.perf_counter()
    for p in packets:
        hj_encode(p)
    t_enc = time.perf_counter() - t

    batches = [
        Batch.from_columns(
            "bench",
            i,
            0,
            seq=list(range(i * 8, i * 8 + 8)),
            ts_ms=[i * 60_000] * 8,
            code=CODES,
            values=[random.uniform(0.1, 9) for _ in CODES],
        )
        for i in range(1, n + 1)
    ]
    t = time.perf_counter()
    blobs = [encode(b) for b in batches]
    t_wenc = time.perf_counter() - t
    t = time.perf_counter()
    for blob in blobs:
        decode_batch(blob)
    t_wdec = time.perf_counter() - t
    per = 1e6 / (n * len(CODES))
    print(f"codec: {n} packets of {len(CODES)} readings")
    print(
        f"  HJ 212 encode {t_enc * per:.2f} us/reading, decode+parse {t_dec * per:.2f} us/reading"
    )
    print(f"  wire   encode {t_wenc * per:.2f} us/reading, decode {t_wdec * per:.2f} us/reading")
    print(f"  ratio HJ 212 / wire: encode {t_enc / t_wenc:.2f}, decode {t_dec / t_wdec:.2f}")


# --- collectors in child processes -------------------------------------------------------------


def _hj212_child(store_url: str, loggers: int, conn: Any) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from sanduan.central.hj212.server import Hj212Server
    from sanduan.shared.config import CentralConfig, parse_model

    cfg = parse_model(
        CentralConfig,
        {
            "central": {"store": store_url},
            "hj212": {
                "listen": "127.0.0.1:0",
                "idle_timeout_s": 600,
                "logger": [
                    {"mn": mn(i), "password": PW, "station": f"hj-{i:05d}"} for i in range(loggers)
                ],
            },
        },
        "bench",
    )
    srv = Hj212Server(cfg)
    srv.start()
    conn.send(srv.port)
    conn.recv()  # stop
    stats = dict(srv.stats())
    srv.stop()
    conn.send(stats)


def _mqtt_child(store_url: str, client_id: str, conn: Any) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from sanduan.central.ingest import Collector
    from sanduan.shared.config import CentralConfig, parse_model

    cfg = parse_model(
        CentralConfig,
        {"central": {"store": store_url}, "mqtt": {"client_id": client_id}},
        "bench",
    )
    col = Collector(cfg)
    col.start()
    conn.send(col.wait_connected(20))
    conn.recv()
    col.stop()
    conn.send(dict(col.stats()))


def _rss(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def _new_store(tmp: Path, name: str) -> str:
    from sanduan.central.store import open_store

    url = f"sqlite:///{tmp / name}"
    open_store(url, migrate=True).close()
    return url


# --- HJ 212 loggers --------------------------------------------------------------------------


async def _logger(port: int, packets: list[bytes], window: int, opened: asyncio.Event) -> int:
    from sanduan.shared.hj212.stream import Splitter

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await opened.wait()
    splitter = Splitter()
    acked = 0
    sent = 0
    while acked < len(packets):
        while sent < len(packets) and sent - acked < window:
            writer.write(packets[sent])
            sent += 1
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), 60)
        if not data:
            raise ConnectionError("collector closed the connection")
        acked += sum(1 for f in splitter.feed(data) if f.packet and f.packet.cn == "9014")
    writer.close()
    return acked


async def _loggers_run(
    port: int, per_logger: list[list[bytes]], window: int, pid: int | None = None
) -> tuple[float, float | None]:
    opened = asyncio.Event()
    tasks = [asyncio.create_task(_logger(port, p, window, opened)) for p in per_logger]
    await asyncio.sleep(0.5)
    # wait until every connection is accepted (the collector counts them)
    rss_open = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if pid is None:
            break
        if _established(port) >= len(per_logger):
            rss_open = _rss(pid)
            break
    t = time.perf_counter()
    opened.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - t, rss_open


def _established(port: int) -> int:
    import psutil

    n = 0
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED:
            n += 1
    return n


def run_hj212(tmp: Path, loggers: int, packets: int, window: int, mem: bool) -> dict[str, float]:
    url = _new_store(tmp, f"hj-{loggers}.db")
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_hj212_child, args=(url, loggers, child))
    proc.start()
    port = parent.recv()
    pid = proc.pid
    assert pid is not None
    rss_idle = _rss(pid)
    per_logger = [_packets(i, packets) for i in range(loggers)]
    elapsed, rss_open = asyncio.run(_loggers_run(port, per_logger, window, pid if mem else None))
    rss_after = _rss(pid)
    parent.send("stop")
    stats = parent.recv()
    proc.join(30)
    readings = loggers * packets * len(CODES)
    from sanduan.central.store import open_store

    store = open_store(url)
    stored = store.count_readings()
    store.close()
    if stored != readings:
        raise SystemExit(f"HJ 212: {stored} readings stored, expected {readings}")
    return {
        "readings": readings,
        "seconds": elapsed,
        "rate": readings / elapsed,
        "rss_idle": rss_idle,
        "rss_open": rss_open or math.nan,
        "rss_after": rss_after,
        "commits": stats.get("commits", 0),
    }


def run_mqtt(tmp: Path, stations: int, batches: int) -> dict[str, float]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sanduan.central.store import open_store
    from sanduan.shared import topics
    from sanduan.shared.wire import Batch, encode

    url = _new_store(tmp, "mqtt.db")
    client_id = f"bench-hj212-{uuid.uuid4().hex[:8]}"
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_mqtt_child, args=(url, client_id, child))
    proc.start()
    if not parent.recv():
        raise SystemExit("MQTT collector did not connect to the broker")
    msgs: list[tuple[str, bytes]] = []
    rng = random.Random(1)
    for s in range(stations):
        station = f"mq-{s:05d}-{client_id[-8:]}"
        for b in range(batches):
            seq = list(range(b * 8 + 1, b * 8 + 9))
            batch = Batch.from_columns(
                station,
                b + 1,
                0,
                seq=seq,
                ts_ms=[1_772_323_200_000 + b * 60_000] * 8,
                code=CODES,
                values=[rng.uniform(0.1, 9) for _ in CODES],
            )
            msgs.append((topics.batch_topic(station), encode(batch)))
    # round robin over the stations, each station's batches in order
    msgs = [msgs[s * batches + b] for b in range(batches) for s in range(stations)]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(*BROKER)
    pub.loop_start()
    readings = stations * batches * 8
    store = open_store(url)
    t = time.perf_counter()
    for topic, payload in msgs:
        pub.publish(topic, payload, qos=1)
    stored = 0
    while stored < readings and time.perf_counter() - t < 300:
        time.sleep(0.05)
        stored = store.count_readings()
    elapsed = time.perf_counter() - t
    store.close()
    pub.loop_stop()
    pub.disconnect()
    parent.send("stop")
    parent.recv()
    proc.join(30)
    # on a very busy machine the MQTT path may not finish in 300 s: its rate is then what it
    # stored in that time (printed as partial)
    return {"readings": readings, "stored": stored, "seconds": elapsed, "rate": stored / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loggers", type=int, default=1000)
    ap.add_argument("--packets", type=int, default=10, help="packets per logger (1,000 run)")
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    args = ap.parse_args()
    sys.setrecursionlimit(10_000)
    quick = args.quick
    bench_codec(2000 if quick else 20_000)

    with tempfile.TemporaryDirectory(prefix="sanduan-bench-hj212-") as d:
        tmp = Path(d)
        n_log, per = (20, 25) if quick else (50, 100)
        hj = run_hj212(tmp, n_log, per, window=8, mem=False)
        have_broker = _reachable(*BROKER)
        print(f"collector: {hj['readings']:,.0f} readings, 8 per message, {n_log} senders")
        print(
            f"  HJ 212 {hj['rate']:>10,.0f} readings/s ({hj['seconds']:.1f} s,"
            f" {hj['commits']:,.0f} commits)"
        )
        if have_broker:
            # the MQTT collector commits every 8-reading batch on its own: a tenth of the
            # messages is enough for its rate
            mq = run_mqtt(tmp, n_log, max(1, per // 10))
            partial = "" if mq["stored"] == mq["readings"] else f", partial: {mq['stored']:,.0f}"
            print(
                f"  MQTT   {mq['rate']:>10,.0f} readings/s ({mq['readings']:,.0f} readings,"
                f" {mq['seconds']:.1f} s{partial})"
            )
            print(f"  ratio HJ 212 / MQTT {hj['rate'] / mq['rate']:.2f}")
        else:
            print("  MQTT   skipped: no broker on 127.0.0.1:1883")

        n = 100 if quick else args.loggers
        big = run_hj212(tmp, n, args.packets if not quick else 3, window=2, mem=True)
        print(f"{n} concurrent loggers, {big['readings']:,.0f} readings:")
        print(
            f"  collector RSS {big['rss_idle']:.0f} MiB idle, {big['rss_open']:.0f} MiB with"
            f" {n} connections open, {big['rss_after']:.0f} MiB after the upload"
            f" ({(big['rss_open'] - big['rss_idle']) * 1024 / n:.1f} KiB per connection)"
        )
        print(f"  {big['rate']:,.0f} readings/s ({big['seconds']:.1f} s)")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

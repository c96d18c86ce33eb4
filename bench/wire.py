"""Encode/decode speed and size of wire-format v1 batches.

Run: ``.venv/bin/python bench/wire.py [N_READINGS]``.
"""

from __future__ import annotations

import math
import random
import sys
import timeit

from sanduan.shared.model import Flag, Reading
from sanduan.shared.wire import Batch, decode_batch, encode

CODES = ["w01001", "w01009", "w01010", "w01014", "w01003", "w21003", "w21011", "w21001"]


def make_batch(n: int, seed: int = 1) -> Batch:
    """A realistic batch: 8 parameters polled every minute, a few gaps, flags and NaNs."""
    rng = random.Random(seed)
    readings = []
    seq = 1_000_000
    ts = 1_767_225_600_000  # 2026-01-01T00:00Z
    for i in range(n):
        seq += 1 if rng.random() > 0.02 else rng.randint(2, 5)
        if i % len(CODES) == 0:
            ts += 60_000
        value = math.nan if rng.random() < 0.01 else round(rng.uniform(0, 10), 3)
        flag = Flag.N if rng.random() > 0.05 else rng.choice(list(Flag))
        readings.append(Reading(seq, ts, CODES[i % len(CODES)], value, flag, rng.randint(0, 6)))
    return Batch.from_readings("st-0001", 42, ts + 1000, readings)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    batch = make_batch(n)
    data = encode(batch)
    assert decode_batch(data) == batch
    for name, fn in (("encode", lambda: encode(batch)), ("decode", lambda: decode_batch(data))):
        loops = 200
        best = min(timeit.repeat(fn, number=loops, repeat=7)) / loops
        print(f"{name}: {best * 1e6:8.1f} us per {n}-reading batch")
    print(f"size:   {len(data)} bytes, {len(data) / n:.1f} bytes/reading")


if __name__ == "__main__":
    main()

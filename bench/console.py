"""Console server time on a large store: a county of 100 sections and a year of data.

Builds (once, in a scratch folder) a county of 10 rivers x 10 sections (50 towns, 100 stations)
and a SQLite store holding a year (2026) of it: hourly, daily and monthly aggregates of five
parameters at every station (4.6 M rows), twelve months and the year assessed and settled, the
station table, and 1-minute readings of five parameters for ``--reading-stations`` stations (by
default 4: 10.5 M readings; the pages read readings only for flags on a section's charts).

Then it times each page in-process (ASGI, no network): the median and p95 server time of 30
requests, against the bare SQL the county page needs (the same queries without templates or SVG),
and against the 200 ms target for the county page.

    .venv/bin/python bench/console.py [--reading-stations 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from sanduan.central.core.county import County, load_county
from sanduan.central.store import Store, open_store
from sanduan.central.web import data
from sanduan.central.web.app import build_app
from sanduan.central.web.auth import Role, Users
from sanduan.shared.params import resolve
from sanduan.shared.wire import MAX_BATCH_READINGS, Batch, Status

RIVERS, TOWNS_PER_RIVER = 10, 5
PARAMS = ("pH", "DO", "CODMn", "NH3-N", "TP")
BASE = {"pH": 7.4, "DO": 6.5, "CODMn": 3.6, "NH3-N": 0.5, "TP": 0.15}
YEAR = 2026
TARGET_MS = 200.0


def county_toml() -> str:
    out = ['[county]\nname = "Bench county"\ntimezone = "Asia/Shanghai"\n']
    out += [f'[[river]]\nid = "r{r}"\nname = "River {r}"\n' for r in range(RIVERS)]
    for r in range(RIVERS):
        for t in range(TOWNS_PER_RIVER):
            for kind in ("in", "out"):
                sid = f"S{r}-{t}-{kind}"
                out.append(f'[[station]]\nid = "ST{r}-{t}-{kind}"\nname = "{sid}"\n')
                out.append(
                    f'[[section]]\nid = "{sid}"\nname = "Section {sid}"\nriver = "r{r}"\n'
                    f'station = "ST{r}-{t}-{kind}"\ntarget_class = 3\n'
                )
    for r in range(RIVERS):
        for t in range(TOWNS_PER_RIVER):
            up = f'upstream = "t{r}-{t - 1}"' if t else ""
            out.append(
                f'[[town]]\nid = "t{r}-{t}"\nname = "Town {r}-{t}"\noutflow = "S{r}-{t}-out"\n'
                f'[[town.inflow]]\nsection = "S{r}-{t}-in"\n{up}\n'
            )
    return "\n".join(out)


def _value(name: str, h: int, k: int) -> float:
    return round(BASE[name] * (1 + 0.1 * math.sin(h / 24 * 2 * math.pi) + 0.02 * (k % 7)), 4)


def build(folder: Path, reading_stations: int) -> tuple[str, County]:
    cfile = folder / "county.toml"
    cfile.write_text(county_toml(), encoding="utf-8")
    county = load_county(cfile)
    url = f"sqlite:///{folder / 'central.db'}"
    store = open_store(url, migrate=True)
    try:
        t0 = time.perf_counter()
        _fill(store, county, reading_stations)
        print(f"built the store in {time.perf_counter() - t0:.0f} s")
    finally:
        store.close()
    return url, county


def _fill(store: Store, county: County, reading_stations: int) -> None:
    start, end = data.period_bounds(str(YEAR), county.timezone)
    hour, day = 3_600_000, 86_400_000
    agg_cols = (
        "station",
        "code",
        "period",
        "start_ms",
        "mean",
        "min",
        "max",
        "n",
        "n_valid",
        "valid",
    )
    for k, st in enumerate(county.stations):
        rows: list[tuple[object, ...]] = []
        for name in PARAMS:
            code = resolve(name).code
            for h, t in enumerate(range(start, end, hour)):
                v = _value(name, h, k)
                rows.append((st, code, "hour", t, v, v, v, 1, 1, True))
            for d, t in enumerate(range(start, end, day)):
                v = _value(name, d * 24 + 12, k)
                rows.append((st, code, "day", t, v, v * 0.9, v * 1.1, 24, 24, True))
            for m in range(12):
                t = data.period_bounds(f"{YEAR}-{m + 1:02d}", county.timezone)[0]
                v = _value(name, m * 730, k)
                rows.append((st, code, "month", t, v, v * 0.8, v * 1.2, 30, 30, True))
        store.replace_rows("aggregates", {"station": st}, agg_cols, rows)
        store.record_status(
            Status(st, end - 60_000, online=k % 9 != 0, buffer_depth=k, device_errors={"s": k % 3}),
            end - 60_000,
        )
    sections = list(county.sections.values())
    labels = [f"{YEAR}-{m:02d}" for m in range(1, 13)]
    a_rows = []
    for label in [*labels, str(YEAR)]:
        kind = "year" if len(label) == 4 else "month"
        for i, sec in enumerate(sections):
            grade = 2 + (i + len(label)) % 3
            item = {"class": grade, "evaluated": True, "valid": True, "value": 0.8}
            details = json.dumps({"items": {"NH3-N": item}, "main_pollutants": []})
            a_rows.append((sec.id, kind, label, grade, grade <= 3, True, details))
    store.replace_rows(
        "assessments",
        {},
        ("section", "period", "label", "grade", "meets_target", "valid", "details"),
        a_rows,
    )
    l_rows = []
    for label in labels:
        for town in county.towns:
            ev = '{"formula": "n = c(D) - max c(I)", "classes": {}, "means": {}, "inputs": {}}'
            l_rows.append(
                ("three-section", "month", label, town, "county-fund", 300000.0, "settled", ev)
            )
    store.replace_rows(
        "ledger",
        {},
        ("rule", "period", "label", "payer", "payee", "amount_yuan", "status", "evidence"),
        l_rows,
    )
    minute = 60_000
    for k, st in enumerate(list(county.stations)[:reading_stations]):
        seq: int = 1
        for b0 in range(start, end, minute * (MAX_BATCH_READINGS // len(PARAMS))):
            ts = range(b0, min(end, b0 + minute * (MAX_BATCH_READINGS // len(PARAMS))), minute)
            n = len(ts) * len(PARAMS)
            batch = Batch.from_columns(
                st,
                seq,
                0,
                seq=range(seq, seq + n),
                ts_ms=[t for t in ts for _ in PARAMS],
                code=[resolve(p).code for _ in ts for p in PARAMS],
                values=[_value(p, (t - start) // hour, k) for t in ts for p in PARAMS],
                flags=["M" if (t // minute) % 997 == 0 else "N" for t in ts for _ in PARAMS],
            )
            store.store_batch(batch, end)
            seq += n
        print(f"  readings of {st}: {seq - 1:,}")


def timed(fn: Callable[[], object], n: int = 30) -> tuple[float, float]:
    fn()  # warm
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t0) * 1000)
    xs.sort()
    return statistics.median(xs), xs[int(0.95 * (len(xs) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reading-stations", type=int, default=4)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the store in this folder")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sanduan-console-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "central.db").exists() and (folder / "county.toml").exists():
        url, county = f"sqlite:///{folder / 'central.db'}", load_county(folder / "county.toml")
    else:
        url, county = build(folder, args.reading_stations)
    store = open_store(url, migrate=True)
    try:
        Users(store).add("bench", Role.ADMIN, "bench-password")
        readings = store.count_readings()
        aggregates = store.query("SELECT COUNT(*) FROM aggregates")[0][0]
        print(
            f"store: {len(county.sections)} sections, {aggregates:,} aggregates,"
            f" {readings:,} readings"
        )
        app = build_app(store, county, secret="b" * 40)
        with TestClient(app) as c:
            page = c.get("/login").text
            token = page.split('name="csrf" value="')[1].split('"')[0]
            c.post("/login", data={"user": "bench", "password": "bench-password", "csrf": token})
            sec = next(iter(county.sections.values()))
            pages = {
                "county /": "/",
                "stations": "/stations",
                f"section (month, {sec.id})": f"/section/{sec.id}?month={YEAR}-06",
                f"section (year, {sec.id})": f"/section/{sec.id}?year={YEAR}",
                "ledger (month)": f"/ledger?period={YEAR}-06",
            }
            results = {}
            for name, path in pages.items():
                r = c.get(path)
                assert r.status_code == 200, (path, r.status_code)
                results[name] = timed(lambda p=path: c.get(p))  # type: ignore[misc]

        def bare() -> None:
            label = data.latest_label(store, "month")
            data.section_rows(store, county, "month", label)
            data.station_rows(store, county)

        q_med, q_p95 = timed(bare)
    finally:
        store.close()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'page':<28} {'median ms':>10} {'p95 ms':>8}")
    for name, (med, p95) in results.items():
        print(f"{name:<28} {med:>10.1f} {p95:>8.1f}")
    print(f"{'bare SQL of the county page':<28} {q_med:>10.1f} {q_p95:>8.1f}")
    med = results["county /"][0]
    print(f"county page / its bare SQL: {med / q_med:.2f}x")
    verdict = "PASS" if med <= TARGET_MS else "MISS"
    ratio = med / TARGET_MS
    print(f"county page median {med:.1f} ms vs target {TARGET_MS:.0f} ms: {ratio:.2f} {verdict}")


if __name__ == "__main__":
    main()

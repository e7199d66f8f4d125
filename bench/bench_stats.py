"""绩效考评 speed (run by hand): the figures of a year of 100,000 cases, on both stores.

    .venv/bin/python bench/bench_stats.py                 # both stores, a throwaway PostGIS
    .venv/bin/python bench/bench_stats.py --url postgresql://…/empty_db --cases 200000

The sample layers (layers/demo.py) are imported into a new GeoPackage and a new PostGIS
database; `--cases` synthetic cases are spread over the `--days` before today (Beijing time),
each with the events of a plausible path through grids/case_flow.csv (closed on site, referred
to the bureau and closed, sent back once, or still open in some state; stints drawn around
their limits, so that a share is late), inserted through `Store.add_incidents`. Then, over the
whole period, timed `--repeat` times after one warm-up:

- `case_facts`: the store's one SQL statement (per-case facts), rows read back;
- `Gridmap.stats`: what the page and `gridmap stats` call — the above plus the permission
  check and the aggregation per bureau and township (server side: no rendering).

Prints median and minimum (and the median CPU time of this process, which other work on the
machine does not inflate), and writes them with the machine's details to
bench/results/stats-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grids.access import Actor  # noqa: E402
from grids.flow import load_flow  # noqa: E402
from grids.service import Gridmap  # noqa: E402
from grids.stats import Period  # noqa: E402
from layers.demo import build_sample  # noqa: E402
from layers.importer import import_path  # noqa: E402
from layers.incidents import Event  # noqa: E402
from layers.store import IncidentQuery, open_store  # noqa: E402

BJ = ZoneInfo("Asia/Shanghai")
RESULTS = ROOT / "bench" / "results"
CATEGORIES = ("air", "water", "noise", "solid_waste", "soil", "cooking_fumes", "other")
# Paths through the workflow (after `reported`) and how often each is taken.
PATHS = (
    (("dispatched", "verified", "closed"), 0.55),
    (("dispatched", "verified", "transferred", "handling", "closed"), 0.15),
    (("dispatched", "reported", "dispatched", "verified", "closed"), 0.05),
    (("dispatched", "verified", "transferred", "handling"), 0.08),
    (("dispatched",), 0.10),
    ((), 0.07),
)


def synthetic(store, n: int, days: int, seed: int = 1):
    """`n` cases over the `days` before today: (records, events), as add_incidents takes them."""
    rng = np.random.default_rng(seed)
    snap = store.snapshot()
    grids = snap["grids"]
    bureaus = snap["bureaus"]["code"].astype(str).to_numpy()
    limits = {s: h for s, (_, h) in load_flow().states.items()}
    today = datetime.now(BJ).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    offsets = np.sort(rng.uniform(0, days * 86400, n))
    g = rng.integers(0, len(grids), n)
    grid_codes = grids["code"].astype(str).to_numpy()[g]
    town_codes = grids["township_code"].astype(str).to_numpy()[g]
    bureau_pick = bureaus[rng.integers(0, len(bureaus), n)]
    ambiguous = rng.random(n) < 0.03
    cats = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)]
    path_ix = rng.choice(len(PATHS), n, p=[w for _, w in PATHS])
    gen = store.generations()[-1].id
    lon, lat = grids.geometry.iloc[0].representative_point().coords[0]
    point = shapely.Point(lon, lat)
    ids = [f"B{i:07d}" for i in range(n)]
    reported = [(start + timedelta(seconds=float(s))).isoformat(timespec="seconds")
                for s in offsets]
    records = gpd.GeoDataFrame({
        "id": ids, "reported_at": reported, "source": "12369热线", "category": cats,
        "description": "基准测试", "reporter": "", "given_x": lon, "given_y": lat,
        "given_crs": "wgs84", "accuracy_m": 0.0, "extent_wkt": None, "generation": gen,
        "route_status": np.where(ambiguous, "ambiguous", "ok"), "county_code": None,
        "township_code": np.where(ambiguous, None, town_codes).astype(object),
        "grid_code": np.where(ambiguous, None, grid_codes).astype(object), "park_code": None,
        "bureau_code": np.where(ambiguous, None, bureau_pick).astype(object), "answer": "{}",
        "created_at": reported, "created_by": "基准测试",
        "geometry": [point] * n}, geometry="geometry", crs=4490)
    events = []
    # Each stint lasts 0.1–1.05 × its state's limit (a few hours when it has none): about one
    # stint in 20 is late.
    draws = rng.uniform(0.1, 1.05, (n, 6))
    for i in range(n):
        at = start + timedelta(seconds=float(offsets[i]))
        events.append(Event(ids[i], reported[i], "基准测试", "create", "reported"))
        state = "reported"
        for k, nxt in enumerate(PATHS[path_ix[i]][0]):
            at += timedelta(hours=float((limits.get(state) or 4.0) * draws[i, k]))
            events.append(Event(ids[i], at.isoformat(timespec="seconds"), "基准测试",
                                "transition", nxt))
            state = nxt
    return records, events


def load(store, records, events, chunk: int = 20_000) -> float:
    started = time.perf_counter()
    by_case: dict[str, list[Event]] = {}
    for e in events:
        by_case.setdefault(e.incident_id, []).append(e)
    for lo in range(0, len(records), chunk):
        part = records.iloc[lo:lo + chunk]
        store.add_incidents(part, [e for cid in part["id"] for e in by_case[cid]])
    return time.perf_counter() - started


def timings(fn, repeat: int) -> dict:
    fn()  # warm-up (the router's layers, the page cache)
    runs, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # This process's CPU time (all of sqlite's work; PostgreSQL's server side is not in it):
    # unlike the wall clock, it does not count waiting for a core taken by other work.
    return {"median_s": round(statistics.median(runs), 4), "min_s": round(min(runs), 4),
            "runs_s": [round(r, 4) for r in runs],
            "cpu_median_s": round(statistics.median(cpu), 4)}


def measure(url: str, label: str, files: Path, args) -> dict:
    store = open_store(url, create=True)
    t_import = time.perf_counter()
    import_path(store, files)
    t_import = time.perf_counter() - t_import
    records, events = synthetic(store, args.cases, args.days)
    t_load = load(store, records, events)
    print(f"{label}: sample layers imported in {t_import:.1f} s; {len(records):,} cases and "
          f"{len(events):,} events inserted in {t_load:.1f} s")
    today = datetime.now(BJ).date()
    period = Period(today - timedelta(days=args.days), today)
    since, until = period.bounds()
    limits = {s: h for s, (_, h) in load_flow().states.items()}
    now = datetime.now(UTC).isoformat()
    query = IncidentQuery(reported_since=since, reported_until=until)
    facts = store.case_facts(query, limits, now=now)
    svc = Gridmap(url)
    admin = Actor.local_admin()
    result = svc.stats(admin, period)
    month = Period.last_days(30, today)
    out = {
        "store": label, "cases": len(records), "events": len(events),
        "facts_rows": len(facts), "late": int(facts["late"].sum()),
        "on_time_share": result.totals["on_time_share"],
        "case_facts": timings(lambda: store.case_facts(query, limits, now=now), args.repeat),
        "service_stats": timings(lambda: svc.stats(admin, period), args.repeat),
        "service_stats_30_days": timings(lambda: svc.stats(admin, month), args.repeat),
        "cases_30_days": svc.stats(admin, month).totals["received"],
    }
    print(f"  case_facts (SQL, {len(facts):,} rows): median {out['case_facts']['median_s']:.3f} s"
          f", min {out['case_facts']['min_s']:.3f} s (CPU here "
          f"{out['case_facts']['cpu_median_s']:.3f} s)")
    print(f"  Gridmap.stats (per bureau and township): median "
          f"{out['service_stats']['median_s']:.3f} s, min {out['service_stats']['min_s']:.3f} s"
          f" (CPU here {out['service_stats']['cpu_median_s']:.3f} s)"
          f"  (on-time share {result.totals['on_time_share']:.1%})")
    print(f"  Gridmap.stats, the last 30 days ({out['cases_30_days']:,} cases): median "
          f"{out['service_stats_30_days']['median_s']:.3f} s, min "
          f"{out['service_stats_30_days']['min_s']:.3f} s")
    svc.close()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", help="an empty PostGIS database (default: a throwaway cluster)")
    parser.add_argument("--skip-postgis", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="gridmap-bench-stats-"))
    build_sample(work / "files")
    results = [measure(str(work / "bench.gpkg"), "GeoPackage", work / "files", args)]
    pg_version = None
    if not args.skip_postgis:
        cluster = None
        if args.url:
            url = args.url
        else:
            from tests.pg import Cluster

            cluster = Cluster().start()
            url = cluster.new_database("bench_stats")
        try:
            from layers.postgis import migrate

            migrate(url)
            import psycopg2

            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                pg_version = cur.fetchone()[0]
            results.append(measure(url, "PostGIS", work / "files", args))
        finally:
            if cluster:
                cluster.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(BJ)
    report = {
        "benchmark": "bench/bench_stats.py", "at": stamp.isoformat(timespec="seconds"),
        "args": vars(args), "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "postgresql": pg_version,
            "pandas": pd.__version__,
            # Other work on the machine moves the figures: the load average (1, 5, 15 min).
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "results": results,
    }
    path = RESULTS / f"stats-{stamp:%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written {path.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""案件办理 console speed (run by hand): one view of the case console over 100,000 cases, on
both stores, server side, against a hand-written SQL statement doing the same page.

    .venv/bin/python bench/bench_console.py                 # both stores, a throwaway PostGIS
    .venv/bin/python bench/bench_console.py --cases 200000 --skip-postgis

The sample layers are imported into a new GeoPackage and a new PostGIS database; `--cases`
synthetic cases over a year (bench/bench_stats.py `synthetic`, spread over the city) are
inserted through `Store.add_incidents`. Then, per filter, timed `--repeat` times after a
warm-up (interleaved: each round runs every case once):

- **console view**: what pages/3_案件.py asks of the service for one screen — the headline
  counts (`Gridmap.case_counts`: four counts in the store), one page of 50 filtered, sorted
  by deadline and paged in the store (`Gridmap.case_page`: a count and a page), the labels,
  and the map of the page drawn to HTML (`ui.cases.cases_map`);
- **hand SQL**: the fastest fair use of the database for the same page — one prepared-free
  SELECT with the same WHERE, ORDER BY deadline and LIMIT, through the same driver, rows
  fetched, no counts, no labels, no map.

Also the intake answer (route + nearby entities + possible duplicates among the 100,000)
over 200 points: p50/p99. Prints median/min and writes them with the machine's details and
load to bench/results/console-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_stats import load, synthetic  # noqa: E402

from grids.access import Actor  # noqa: E402
from grids.cases import CaseFilter, console_query  # noqa: E402
from grids.flow import load_flow  # noqa: E402
from grids.service import Gridmap  # noqa: E402
from layers import incident_sql  # noqa: E402
from layers.demo import build_sample  # noqa: E402
from layers.importer import import_path  # noqa: E402
from layers.store import open_store  # noqa: E402

BJ = ZoneInfo("Asia/Shanghai")
RESULTS = ROOT / "bench" / "results"
DISPATCHER = Actor("bench-dispatcher", "dispatcher", "基准调度员")


def spread(store, records):
    """Scatter the synthetic cases over the city (bench_stats puts them on one point)."""
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = store.snapshot()["counties"].total_bounds
    n = len(records)
    records = records.copy()
    records["geometry"] = shapely.points(rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n))
    return records


def filters(store) -> dict[str, CaseFilter]:
    flow = load_flow()
    open_states = tuple(s for s in flow.states if s != "closed")
    bureau = str(store.snapshot()["bureaus"]["code"].iloc[3])
    return {
        "open, by deadline": CaseFilter(statuses=open_states),
        "overdue only": CaseFilter(statuses=open_states, overdue=True),
        "one bureau, all states": CaseFilter(bureau=bureau),
        "case number search": CaseFilter(text="B00123"),
        "every case, newest first": CaseFilter(order="newest"),
    }


def hand_sql(store, acting_query, now) -> callable:
    """The same page as one hand-written statement (its WHERE and ORDER BY spelled out)."""
    ph = "%s" if "postgis" in type(store).__module__ else "?"
    where, params = incident_sql.where(acting_query, ph)
    order, by = incident_sql.order(acting_query, ph)
    sql = ("SELECT s.incident_id, s.status, s.status_since, i.category, i.description, "
           f"s.lon, s.lat FROM incidents i JOIN incident_state s ON s.incident_id = i.id"
           f"{where}{order} LIMIT 50")
    args = params + by

    if ph == "?":
        def run():
            return store.conn.execute(sql, args).fetchall()
    else:
        def run():
            with store.conn, store.conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
    return run


def console_view(svc, router, filt, now) -> callable:
    from ui import cases as ui_cases
    from ui.basemap import load_settings

    basemap = load_settings({}).get(load_settings({}).default)

    def run():
        svc.case_counts(DISPATCHER, now)
        found = svc.case_page(DISPATCHER, filt, now=now, size=50)
        rows = ui_cases.labelled(found.rows, router)
        selected = rows["id"].iloc[0] if len(rows) else None
        ui_cases.cases_map(basemap, rows, selected).get_root().render()
        return found.total
    return run


def measure(url: str, label: str, files: Path, args) -> dict:
    store = open_store(url, create=True)
    import_path(store, files)
    records, events = synthetic(store, args.cases, args.days)
    t_load = load(store, spread(store, records), events)
    print(f"\n{label}: {len(records):,} cases, {len(events):,} events inserted in {t_load:.1f} s")
    svc = Gridmap(url)
    router = svc.map_router(DISPATCHER)
    now = datetime.now(UTC)
    acting = svc.acting(DISPATCHER)
    cases = {}
    for name, filt in filters(store).items():
        query = console_query(acting, filt, now, load_flow())
        cases[name] = (console_view(svc, router, filt, now), hand_sql(store, query, now),
                       svc.case_page(DISPATCHER, filt, now=now).total)
    runs = {name: ([], []) for name in cases}
    for fn, sql, _ in cases.values():
        fn(), sql()  # warm-up
    for _ in range(args.repeat):
        for name, (fn, sql, _) in cases.items():
            for slot, f in enumerate((fn, sql)):
                t = time.perf_counter()
                f()
                runs[name][slot].append(time.perf_counter() - t)
    out = {"store": label, "cases": len(records), "views": {}}
    print(f"  {'filter':28s} {'matches':>8s} {'console view':>22s} {'hand SQL':>18s} {'ratio':>6s}")
    for name, (view, sql) in runs.items():
        med_v, med_s = statistics.median(view), statistics.median(sql)
        out["views"][name] = {
            "matches": cases[name][2], "console_median_s": round(med_v, 4),
            "console_min_s": round(min(view), 4), "sql_median_s": round(med_s, 4),
            "sql_min_s": round(min(sql), 4)}
        print(f"  {name:28s} {cases[name][2]:8,d} {med_v * 1000:9.1f} ms "
              f"(min {min(view) * 1000:5.1f}) {med_s * 1000:8.1f} ms "
              f"(min {min(sql) * 1000:5.1f}) {med_v / med_s:5.1f}×")
    # The intake answer with 100,000 cases in the store (duplicates are looked up in it).
    rng = np.random.default_rng(3)
    minx, miny, maxx, maxy = store.snapshot()["counties"].total_bounds
    lat_times = []
    for _ in range(args.intake_points):
        x, y = rng.uniform(minx + 0.2, maxx - 0.4), rng.uniform(miny + 0.1, maxy - 0.1)
        t = time.perf_counter()
        try:
            svc.intake(DISPATCHER, x, y, crs="cgcs2000", accuracy_m=50, category="air", now=now)
        except ValueError:
            continue
        lat_times.append(time.perf_counter() - t)
    lat_times.sort()
    p50 = lat_times[len(lat_times) // 2]
    p99 = lat_times[min(len(lat_times) - 1, int(len(lat_times) * 0.99))]
    out["intake"] = {"points": len(lat_times), "p50_s": round(p50, 4), "p99_s": round(p99, 4)}
    print(f"  intake answer over {len(lat_times)} points: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")
    svc.close()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--intake-points", type=int, default=200)
    parser.add_argument("--url", help="an empty PostGIS database (default: a throwaway cluster)")
    parser.add_argument("--skip-postgis", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="gridmap-bench-console-"))
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
            url = cluster.new_database("bench_console")
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
        "benchmark": "bench/bench_console.py", "at": stamp.isoformat(timespec="seconds"),
        "args": vars(args), "machine": {
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "postgresql": pg_version, "pandas": pd.__version__},
        "results": results,
    }
    path = RESULTS / f"console-{stamp:%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nmachine load before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

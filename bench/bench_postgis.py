"""PostGIS routing speed (run by hand: `make bench-postgis`).

On the sample layers: 1,000,000 random points loaded by COPY (timed on its own), then assigned
inside PostGIS over every routing layer (timed on its own, and with the hits read back and the
rules applied); against the embedded store's batch path on the same points, and against a plain
`CREATE TABLE AS … JOIN … ON ST_Covers` per layer with whole (not subdivided) polygons. Single
`route` latency through psycopg2 over 10,000 random points. Starts a throwaway PostGIS cluster
unless --url names a server (its database must be empty or absent).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_routing import timed  # the same clock as the embedded benchmark

from grids.routing import Router
from layers.demo import build_sample
from layers.finder import Queries
from layers.importer import import_path
from layers.postgis import (
    _FEW_POINTS_SQL,
    _IN_GENERATION,
    _MANY_POINTS_SQL,
    PostgisFinder,
    migrate,
    set_batch_parallelism,
)
from layers.schema import ROUTING_LAYERS
from layers.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="an existing PostGIS server (default: a throwaway cluster)")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=10_000)
    args = parser.parse_args()

    cluster = None
    if args.url:
        url = args.url
    else:
        from tests.pg import Cluster

        cluster = Cluster().start()
        url = cluster.new_database("bench")
    try:
        run(url, args)
    finally:
        if cluster:
            cluster.stop()


def run(url: str, args) -> None:
    migrate(url)
    pg = open_store(url)
    work = Path(tempfile.mkdtemp(prefix="gridmap-bench-"))
    build_sample(work / "files")
    embedded = open_store(str(work / "bench.gpkg"), create=True)
    t_import_pg, _ = timed(lambda: import_path(pg, work / "files"))
    t_import_gpkg, _ = timed(lambda: import_path(embedded, work / "files"))
    print(f"import of the sample: PostGIS {t_import_pg:.1f} s, GeoPackage {t_import_gpkg:.1f} s")
    router_pg, router_gpkg = Router(pg), Router(embedded)
    snap = router_pg.snapshot
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(1)
    n = args.points
    lon, lat = rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)
    queries = Queries.build(lon, lat)
    gen = snap.generation.id

    # 1. load by COPY, 2. the set-based assignment inside PostGIS, each timed alone
    conn = pg.conn
    with conn, conn.cursor() as cur:
        t_load, (points, _) = timed(lambda: PostgisFinder.load_queries(cur, queries))
        set_batch_parallelism(cur)  # as the batch path does
        sql = "CREATE TEMP TABLE hits AS " + _MANY_POINTS_SQL.format(points=points)
        t_join, _ = timed(lambda: cur.execute(sql, {"gen": gen}))
        sql = "CREATE TEMP TABLE hits_parts AS " + _FEW_POINTS_SQL.format(points=points)
        t_parts, _ = timed(lambda: cur.execute(sql, {"gen": gen}))
        cur.execute("SELECT count(*) FROM hits")
        hit_rows = cur.fetchone()[0]
        # the reference: whole polygons, one CREATE TABLE AS per layer, ST_Covers
        t_plain = 0.0
        for name in ROUTING_LAYERS:
            plain = (
                f"CREATE TEMP TABLE plain_{name} AS SELECT q.i, o.fid FROM {name} o "
                f"JOIN {points} q ON ST_Covers(o.geom, q.pt) "
                f"WHERE {_IN_GENERATION.format(t='o')}"
            )
            dt, _ = timed(lambda plain=plain: cur.execute(plain, {"gen": gen}))
            t_plain += dt
        cur.execute("DROP TABLE hits")
        conn.rollback()
    # 3. the whole batch path: load, join, read the hits back, apply the rules
    t_full, _ = timed(lambda: router_pg.resolver.resolve_indexed(queries))
    t_gpkg, _ = timed(lambda: router_gpkg.resolver.resolve_indexed(queries))

    print(f"\nbatch, {n:,} random points, {len(ROUTING_LAYERS)} routing layers")
    rows = [
        ("COPY load of the points (+ index)", t_load),
        ("PostGIS assignment (whole polygons drive)", t_join),
        ("  same with subdivided parts (points drive)", t_parts),
        ("plain CREATE TABLE AS … ST_Covers, 6 layers", t_plain),
        ("PostGIS batch end to end (load+join+rules)", t_full),
        ("embedded batch end to end", t_gpkg),
    ]
    for label, t in rows:
        print(f"  {label:46s} {t:7.2f} s  {n / t / 1e3:8.0f} k pts/s")
    print(f"  hit rows: {hit_rows:,}")
    print(f"  assignment vs target 250 k pts/s: {n / t_join / 250e3:5.2f}x")
    print(f"  whole polygons vs subdivided parts: {t_parts / t_join:5.2f}x faster (batch)")

    slon = rng.uniform(minx, maxx, args.singles)
    slat = rng.uniform(miny, maxy, args.singles)
    router_pg.route(float(slon[0]), float(slat[0]))
    latencies = []
    for x, y in zip(slon.tolist(), slat.tolist(), strict=True):
        start = time.perf_counter()
        router_pg.route(x, y)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"\nsingle route through psycopg2 (one SQL round trip), {len(latencies):,} points")
    print(f"  p50 {statistics.median(latencies):.3f} ms   p99 {p99:.3f} ms   (target p99 < 2 ms)")
    pg.close()
    embedded.close()


if __name__ == "__main__":
    main()

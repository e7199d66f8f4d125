"""Routing speed against the standard tools, in one run (run by hand: `make bench`).

Batch: N random points over Nantong routed by gridmap's batch path (every routing layer, the
rules, one answer per point) against, on the same points and the same layers, a plain shapely
STRtree.query(points, predicate="within") per layer and geopandas.sjoin per layer (which
only find the polygons, without any rule). Single: in-process `Router.route` latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grids.routing import Router
from layers.finder import Queries
from layers.schema import ROUTING_LAYERS
from layers.store import open_store


def random_points(snapshot, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    minx, miny, maxx, maxy = snapshot["counties"].total_bounds
    rng = np.random.default_rng(seed)
    return rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=10_000)
    args = parser.parse_args()

    store = open_store(args.store)
    router = Router(store)
    snap = router.snapshot
    layer_sizes = {name: len(snap[name]) for name in ROUTING_LAYERS}
    print(f"store {store.url}, generation {snap.generation.id}, layers {layer_sizes}")
    lon, lat = random_points(snap, args.points)
    n = len(lon)

    # gridmap batch path: finder + rules + one resolution per point
    router.resolver.resolve_indexed(Queries.build(lon[:1000], lat[:1000]))  # warm up
    t_gridmap, (results, index) = timed(
        lambda: router.resolver.resolve_indexed(Queries.build(lon, lat))
    )
    t_answers, table = timed(lambda: router.writer.frame(results, index))
    statuses = {s: int((table["status"] == s).sum()) for s in ("ok", "ambiguous", "outside")}

    # plain shapely: STRtree per layer, predicate evaluated by GEOS
    points = shapely.points(lon, lat)
    t_strtree = 0.0
    for name in ROUTING_LAYERS:
        tree = shapely.STRtree(np.asarray(snap[name].geometry.values))
        dt, _ = timed(lambda tree=tree: tree.query(points, predicate="within"))
        t_strtree += dt

    # geopandas.sjoin per layer
    left = gpd.GeoDataFrame({"i": np.arange(n)}, geometry=points, crs=snap["counties"].crs)
    t_sjoin = 0.0
    for name in ROUTING_LAYERS:
        right = snap[name][["geometry"]]
        dt, _ = timed(lambda right=right: gpd.sjoin(left, right, predicate="within"))
        t_sjoin += dt

    per_layer = len(ROUTING_LAYERS)
    print(f"\nbatch, {n:,} random points over the county extent, {per_layer} layers")
    print(f"  status counts: {statuses}")
    rows = [
        ("gridmap batch (lookup + rules)", t_gridmap),
        ("gridmap batch + answer columns", t_gridmap + t_answers),
        ("shapely STRtree.query per layer", t_strtree),
        ("geopandas.sjoin per layer", t_sjoin),
    ]
    for label, t in rows:
        print(
            f"  {label:34s} {t:7.2f} s  {n / t / 1e6:6.2f} M pts/s  "
            f"({n * per_layer / t / 1e6:5.2f} M pt-layers/s)"
        )
    print(f"  ratio gridmap/sjoin speed:   {t_sjoin / t_gridmap:5.2f}x (target >= 1)")
    print(f"  ratio gridmap/STRtree speed: {t_strtree / t_gridmap:5.2f}x")

    # single routes, in process, through the full answer (coordinates, rules, JSON data)
    slon, slat = random_points(snap, args.singles, seed=2)
    router.route(float(slon[0]), float(slat[0]))
    latencies = []
    for x, y in zip(slon.tolist(), slat.tolist(), strict=True):
        start = time.perf_counter()
        router.route(x, y)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"\nsingle route, {len(latencies):,} random points, in process")
    print(f"  p50 {p50:.3f} ms   p99 {p99:.3f} ms   (target p99 < 1 ms)")
    cold_start(args.store)


def cold_start(store: str, runs: int = 5) -> None:
    """`gridmap route` as a person runs it: a new process each time (imports, store, answer)."""
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("gridmap"))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([exe, "--store", store, "route", "120.86", "32.01"], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t)
    print(f"\ncold `gridmap route`, {runs} runs: min {min(times):.2f} s, "
          f"median {sorted(times)[runs // 2]:.2f} s   (target < 1 s)")


if __name__ == "__main__":
    main()

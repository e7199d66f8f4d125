"""Batch routing against the standard tools, timed side by side (run by hand: `make bench`).

    .venv/bin/python bench/bench_routing.py                      # sample and ×16, 1M points
    .venv/bin/python bench/bench_routing.py --scales 1 --points 200000 --compare routing-….json

For each store (the sample, and `gridmap demo --scale 16` built once into `--cache` if missing;
`--store` uses a store of your own instead of the sample), the same `--points` random points
over the counties' extent (sea and outside included), as lon/lat arrays, go to every contender:

- **gridmap batch (lookup + rules)**: `Resolver.resolve_indexed` — every routing layer looked
  up and every rule applied: one decided answer (county, township, grid, park, bureau, or
  ambiguous/outside) per point. The resolver remembers the decision for each distinct place
  it has seen; that memo is emptied before every run, so every run decides every place, as a
  new `gridmap assign` process does. Points away from every boundary are answered by the face
  raster (layers/faces.py), built once per layer version before the rounds (like the finder's
  STRtrees, built when the store is opened), the rest by the finder;
- **gridmap batch incl. building the face raster**: the same as a new process runs it, the
  raster built inside the timing;
- **gridmap batch, finder only (no face raster)**: every point through the finder's STRtrees;
- **gridmap batch + answer columns**: the same and the answer table (codes, names, workers,
  reasons: what `gridmap assign` writes);
- **gridmap batch, decisions remembered**: a resolver that has routed these points before (a
  long-running app process): the lookup and the memo, no rule run — for what the rules cost;
- **geopandas.sjoin(within) per layer**: the points as the left frame (sjoin builds its tree on
  them once and reuses it for the six layers, querying with each prepared polygon,
  `contains`), the six routing layers as right frames: the (point, polygon) pairs only, no rule;
- **shapely STRtree(points).query(polygons, "contains")**: the same without geopandas: one
  tree over the points, queried with each layer's prepared polygons.

Each starts from the lon/lat arrays (the baselines' point geometries and tree are built inside
the timing, gridmap's polygon index is the store's, built when it is opened). Interleaved rounds,
min/median, the machine's load: bench/harness.py; results in bench/results/routing-<date>.json.
Then single routes in process and the cold `gridmap route` on each store.
Target (issue 14): gridmap batch ≥ 3× sjoin(within), on the sample and at 40k cells.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import Contender, Report, add_arguments, measure  # noqa: E402

from grids.resolver import Resolver  # noqa: E402
from grids.routing import Router  # noqa: E402
from layers.faces import FaceIndex  # noqa: E402
from layers.finder import Queries  # noqa: E402
from layers.schema import ROUTING_LAYERS  # noqa: E402
from layers.store import open_store  # noqa: E402

GRIDMAP = str(Path(sys.executable).with_name("gridmap"))
# Incidents of a cached store are dated from this moment, so that a rebuilt store is the same.
AS_OF = "2026-12-01T00:00"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gridmap-bench"

OURS = "gridmap batch (lookup + rules)"
COLD = "gridmap batch incl. building the face raster"
READ = "gridmap batch incl. reading the face raster from its cache file"
FINDER_ONLY = "gridmap batch, finder only (no face raster)"
SJOIN = "geopandas.sjoin(within) per layer"
STRTREE = "shapely STRtree(points) contains"


def cached_store(cache: Path, scale: int, rebuild: bool = False) -> Path:
    """`gridmap demo --scale N` into the cache directory, unless it is there already."""
    cache.mkdir(parents=True, exist_ok=True)
    store = cache / f"sample-x{scale}.gpkg"
    if store.exists() and not rebuild:
        return store
    print(f"building the ×{scale} store into {store} (once; --rebuild to redo) …", flush=True)
    started = time.perf_counter()
    subprocess.run([GRIDMAP, "--store", str(store), "demo", "--force", "--scale", str(scale),
                    "--as-of", AS_OF, "--out", str(cache / f"files-x{scale}")],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"  built in {time.perf_counter() - started:.0f} s (load {os.getloadavg()[0]:.2f})")
    return store


def random_points(snapshot, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    minx, miny, maxx, maxy = snapshot["counties"].total_bounds
    rng = np.random.default_rng(seed)
    return rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)


def statuses(out) -> dict:
    """How many points of a batch's (results, index) are ok, ambiguous and outside."""
    results, index = out
    status = np.array([r.status for r in results])[index]
    return {s: int((status == s).sum()) for s in ("ok", "ambiguous", "outside")}


def contenders(router: Router, lon: np.ndarray, lat: np.ndarray) -> list[Contender]:
    snap = router.snapshot
    crs = snap["counties"].crs
    rights = [snap[name][["geometry"]] for name in ROUTING_LAYERS]
    polys = [np.asarray(snap[name].geometry.values, dtype=object) for name in ROUTING_LAYERS]
    for p in polys:
        shapely.prepare(p)
    warm_lon, warm_lat = lon[:10_000], lat[:10_000]
    started = time.perf_counter()
    faces = router.resolver.faces()  # once per layer version, like the STRtrees at open
    print(f"  face raster {'read from its cache file' if faces.loaded else 'built'} in "
          f"{time.perf_counter() - started:.2f} s ({faces.near_share:.1%} of it near a boundary)")

    def ours(x=lon, y=lat):
        return router.resolver.resolve_indexed(Queries.build(x, y))

    def forget():  # every run decides every place afresh
        router.resolver.forget()

    def cold():  # the first process of a layer version: the raster built inside the timing
        forget()
        FaceIndex._cache.clear()
        saved = os.environ.get("GRIDMAP_CACHE_DIR")
        os.environ["GRIDMAP_CACHE_DIR"] = "off"
        try:
            return ours()
        finally:
            if saved is None:
                del os.environ["GRIDMAP_CACHE_DIR"]
            else:
                os.environ["GRIDMAP_CACHE_DIR"] = saved

    def read():  # any later process: the raster read from the cache file the first one wrote
        forget()
        FaceIndex._cache.clear()
        return ours()

    exact_only = Resolver(snap, router.resolver.finder)
    exact_only.use_faces = False

    def finder_only():
        exact_only.forget()
        return exact_only.resolve_indexed(Queries.build(lon, lat))

    remembering = Resolver(snap, router.resolver.finder)

    def remembered():
        return remembering.resolve_indexed(Queries.build(lon, lat))

    def ours_columns():
        results, index = ours()
        return router.writer.frame(results, index)

    def sjoin(x=lon, y=lat):
        left = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=crs)
        return [gpd.sjoin(left, right, predicate="within") for right in rights]

    def strtree(x=lon, y=lat):
        tree = shapely.STRtree(shapely.points(x, y))
        return [tree.query(p, predicate="contains") for p in polys]

    def pairs(out) -> dict:
        counts = [len(o) if hasattr(o, "columns") else o.shape[1] for o in out]
        return {"pairs per layer": dict(zip(ROUTING_LAYERS, counts, strict=True))}

    return [
        Contender(OURS, ours, warm=lambda: ours(warm_lon, warm_lat), check=statuses,
                  setup=forget),
        Contender(COLD, cold),
        Contender(READ, read),
        Contender(FINDER_ONLY, finder_only),
        Contender("gridmap batch + answer columns", ours_columns, setup=forget),
        Contender("gridmap batch, decisions remembered", remembered, warm=remembered),
        Contender(SJOIN, sjoin, warm=lambda: sjoin(warm_lon, warm_lat), check=pairs),
        Contender(STRTREE, strtree, warm=lambda: strtree(warm_lon, warm_lat), check=pairs),
    ]


def singles(router: Router, n: int) -> dict:
    """In-process `Router.route` latency (the full answer) over random points."""
    lon, lat = random_points(router.snapshot, n, seed=2)
    router.route(float(lon[0]), float(lat[0]))
    latencies = []
    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        start = time.perf_counter()
        router.route(x, y)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return {"routes": n, "p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3)}


def cold_start(store: Path, runs: int) -> dict:
    """`gridmap route` as a person runs it: a new process each time (imports, store, answer)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([GRIDMAP, "--store", str(store), "route", "120.86", "32.01"], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t)
    return {"runs": runs, "min_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="the store to use for ×1 (default: the sample, built "
                                        "into the cache)")
    parser.add_argument("--scales", default="1,16", help="comma-separated: 1 is the sample")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where the sample stores are built (default {DEFAULT_CACHE})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached stores")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=10_000)
    parser.add_argument("--cold", type=int, default=5, help="cold `gridmap route` runs")
    add_arguments(parser, rounds=5)
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]

    report = Report("routing", {k: str(v) for k, v in vars(args).items()})
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    extra: dict = {"singles": {}, "cold_route": {}}
    for scale in scales:
        if scale == 1 and args.store:
            path = Path(args.store)
        else:
            path = cached_store(args.cache, scale, args.rebuild)
        group = "sample" if scale == 1 else f"x{scale}"
        store = open_store(str(path))
        router = Router(store)
        snap = router.snapshot
        sizes = {name: len(snap[name]) for name in ROUTING_LAYERS}
        lon, lat = random_points(snap, args.points)
        print(f"\n{group}: {path}, layers {sizes}, {len(lon):,} points, {args.rounds} rounds")
        timings = measure(contenders(router, lon, lat), rounds=args.rounds)
        report.add(group, timings,
                   info={"store": str(path), "grids": sizes["grids"], "points": len(lon),
                         "layers": sizes, "rounds": args.rounds},
                   ratios=[(OURS, SJOIN), (OURS, STRTREE), (COLD, SJOIN), (READ, SJOIN)],
                   unit=("M pts/s", len(lon) / 1e6))
        print(f"  target: gridmap batch ≥ 3× sjoin(within); now "
              f"{report.data['groups'][group]['ratios'][0]['median_x']:.2f}×")
        if args.singles:
            extra["singles"][group] = s = singles(router, args.singles)
            print(f"  single route in process, {s['routes']:,} random points: p50 "
                  f"{s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms (load {os.getloadavg()[0]:.2f})")
        store.close()
        del router, snap, timings
        if args.cold:
            extra["cold_route"][group] = c = cold_start(path, args.cold)
            print(f"  cold `gridmap route`, {c['runs']} runs: min {c['min_s']:.2f} s, median "
                  f"{c['median_s']:.2f} s (load {os.getloadavg()[0]:.2f})")
    report.finish(save=args.save, compare=args.compare, extra=extra)


if __name__ == "__main__":
    main()

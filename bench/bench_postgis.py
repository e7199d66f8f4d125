"""PostGIS routing against hand-written SQL, timed side by side (run by hand: `make bench-postgis`).

    .venv/bin/python bench/bench_postgis.py                      # sample and ×16, 1M points
    .venv/bin/python bench/bench_postgis.py --scales 1 --points 200000 --singles 2000
    .venv/bin/python bench/bench_postgis.py --url postgresql://me@host/postgres

For each of --scales, the cached `gridmap demo --scale N` files (~/.cache/gridmap-bench/
files-xN, built once with the GeoPackage store as in bench_routing.py) are imported with
`layers.importer.import_path` into a fresh PostGIS database (`gridmap db init` first: the
migrations), in a throwaway cluster (tests/pg.py) unless --url names a server (then databases
`gridmap_bench_xN` are created on it and dropped afterwards). The same --points random points
over the counties' extent as bench_routing.py (sea and outside included) go to every contender:

- **gridmap batch (lookup + rules)**: `Router(store).resolver.resolve_indexed` on the PostGIS
  store: every rule applied, one decided answer per point. The decision memo is emptied before
  every run; the face raster (layers/faces.py) is built (or read from its cache file) once
  before the rounds, as in bench_routing.py: points away from every boundary are one array
  lookup, points near one go to the in-memory STRtrees of the same snapshot, points exactly on
  one to the store's finder (PostgisFinder: the store decides how a disc is cut there);
- **gridmap batch + answer columns**: the same and the answer table (`router.writer.frame`):
  the end-to-end figure, since the points never need to go into the database;
- **COPY load (points table + GiST index)**: the points by binary COPY (EWKB, so no
  ST_MakePoint pass) into an unlogged table, its GiST index and ANALYZE: what the CTAS below
  starts from, timed on its own;
- **parallel CTAS ST_Covers, 6 layers**: the fastest fair use of PostGIS found on this machine:
  the points already in that table (indexed), per routing layer a pre-built `ST_Subdivide`d
  copy of its current rows (`<layer>_current`; the jurisdictions keyed by bureau_code) with a
  GiST index (built outside the timing), and per layer `CREATE UNLOGGED TABLE … AS SELECT p.id,
  l.code FROM pts p JOIN sub_layer l ON ST_Covers(l.geom, p.geom)` with 2 parallel workers
  and parallel-friendly costs (the plan is EXPLAINed and printed: the subdivided parts drive,
  in parallel, each probing the points' index; measured faster than points driving). The
  (point, code) pairs only: no rule, no decision;
- **end-to-end SQL (COPY in + CTAS + COPY out)**: the load, the six CTAS and the pairs read
  back into numpy arrays (psycopg2 `COPY … TO STDOUT`, parsed by pyarrow).

Interleaved rounds, min/median, the machine's load: bench/harness.py; results in
bench/results/postgis-<date>.json (with the CTAS plans). Then --singles single points,
interleaved point by point: `Router(store).route(x, y)` as a served process runs it (the face
raster built: SQL only for a point exactly on a boundary), its figures for the points near a
boundary alone, the same route with every point through the store's SQL (no raster), against a
statement PREPAREd once and EXECUTEd per point (the covering code of each of the six layers, on
the same subdivided tables), all on autocommit psycopg2 connections; for where the time goes,
the finder's own SQL round trip (`PostgisFinder.find`), how PostgreSQL runs the store's
prepared one-point statement (EXPLAIN ANALYZE EXECUTE: planned again at every EXECUTE, or the
generic plan), and a cProfile of --profile routes.
Targets (issue 14): batch ≥ 400k pts/s at 40k cells and ahead of the CTAS; end to end ≥ 200k
pts/s; single route p99 < 1 ms and within 1.5× of the prepared statement.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_routing import DEFAULT_CACHE, cached_store, random_points, statuses  # noqa: E402
from harness import Contender, Report, add_arguments, measure  # noqa: E402

from grids.routing import Router  # noqa: E402
from layers.finder import Queries  # noqa: E402
from layers.importer import import_path  # noqa: E402
from layers.postgis import SUBDIVIDE_VERTICES, connect, migrate  # noqa: E402
from layers.schema import ROUTING_LAYERS  # noqa: E402
from layers.store import open_store  # noqa: E402

OURS = "gridmap batch (lookup + rules)"
OURS_COLUMNS = "gridmap batch + answer columns"
LOAD = "COPY load (points table + GiST index)"
CTAS = "parallel CTAS ST_Covers, 6 layers"
BASELINE = "end-to-end SQL: COPY in + CTAS + COPY out"

# The hand-written SQL's own schema, beside the store's.
B = "bench"
KEY = {name: ("bureau_code" if name == "jurisdictions" else "code") for name in ROUTING_LAYERS}
# Costs that let PostgreSQL split even small polygon tables between 2 workers.
PARALLEL = {"max_parallel_workers_per_gather": "2", "parallel_setup_cost": "0",
            "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0",
            "min_parallel_index_scan_size": "0"}
# A binary COPY row of the points table: 2 fields, id (int4) and the point as EWKB (little
# endian, type Point with the SRID flag, SRID 4490, x, y).
POINT_ROW = np.dtype([("n", ">i2"), ("li", ">i4"), ("id", ">i4"), ("lg", ">i4"), ("order", "u1"),
                      ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"), ("y", "<f8")])
COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + b"\0" * 8


def sql_connection(url: str):
    """The same kind of connection as the store's read connection: autocommit, JIT off."""
    conn = connect(url)
    conn.autocommit = True
    return conn


def point_copy(lon: np.ndarray, lat: np.ndarray) -> bytes:
    rows = np.empty(len(lon), dtype=POINT_ROW)
    rows["n"], rows["li"], rows["lg"] = 2, 4, 25
    rows["order"], rows["type"], rows["srid"] = 1, 0x20000001, 4490
    rows["id"], rows["x"], rows["y"] = np.arange(len(lon)), lon, lat
    return COPY_HEADER + rows.tobytes() + b"\xff\xff"


def load_points(cur, table: str, lon: np.ndarray, lat: np.ndarray) -> None:
    """The points by binary COPY into an unlogged table, with a GiST index, analysed."""
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE UNLOGGED TABLE {table} (id integer, geom geometry(Point, 4490))")
    cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT binary)",
                    io.BytesIO(point_copy(lon, lat)))
    cur.execute(f"CREATE INDEX ON {table} USING gist (geom)")
    cur.execute(f"ANALYZE {table}")


def ctas_sql(points: str, name: str, out: str) -> str:
    return (f"CREATE UNLOGGED TABLE {out} AS SELECT p.id, l.code FROM {points} p "
            f"JOIN {B}.sub_{name} l ON ST_Covers(l.geom, p.geom)")


def run_ctas(cur, points: str, prefix: str) -> None:
    for name in ROUTING_LAYERS:
        cur.execute(ctas_sql(points, name, f"{prefix}_{name}"))


def drop_hits(cur, prefix: str) -> None:
    cur.execute("DROP TABLE IF EXISTS "
                + ", ".join(f"{prefix}_{name}" for name in ROUTING_LAYERS))


def read_pairs(cur, prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every layer's (point id, code) pairs into numpy: COPY TO STDOUT, parsed by pyarrow."""
    options = pacsv.ParseOptions(delimiter="\t")
    names = pacsv.ReadOptions(column_names=["id", "code"])
    out = {}
    for name in ROUTING_LAYERS:
        buf = io.BytesIO()
        cur.copy_expert(f"COPY {prefix}_{name} TO STDOUT", buf)
        buf.seek(0)
        table = pacsv.read_csv(buf, read_options=names, parse_options=options,
                               convert_options=pacsv.ConvertOptions(
                                   column_types={"id": "int32", "code": "string"}))
        out[name] = (table["id"].to_numpy(), table["code"].to_numpy(zero_copy_only=False))
    return out


def prepare_sql(conn, vertices: int) -> dict:
    """The hand-written side's subdivided layer copies (GiST-indexed) and session settings;
    returns how long the copies took to build and their part counts."""
    started = time.perf_counter()
    parts = {}
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {B} CASCADE")
        cur.execute(f"CREATE SCHEMA {B}")
        for name in ROUTING_LAYERS:
            cur.execute(f"CREATE TABLE {B}.sub_{name} AS SELECT {KEY[name]} AS code, "
                        f"ST_Subdivide(geom, {vertices}) AS geom FROM gridmap.{name}_current")
            cur.execute(f"CREATE INDEX ON {B}.sub_{name} USING gist (geom)")
            cur.execute(f"ANALYZE {B}.sub_{name}")
            cur.execute(f"SELECT count(*) FROM {B}.sub_{name}")
            parts[name] = cur.fetchone()[0]
        for setting, value in PARALLEL.items():
            cur.execute(f"SET {setting} = {value}")
    return {"built_s": round(time.perf_counter() - started, 2), "parts": parts}


def explain_ctas(conn, points: str) -> dict:
    """The plan of each layer's CTAS (workers planned, what drives), and one EXPLAIN ANALYZE
    (the grids) for the workers really launched."""
    plans = {}
    with conn.cursor() as cur:
        for name in ROUTING_LAYERS:
            cur.execute("EXPLAIN " + ctas_sql(points, name, f"{B}.explain_{name}"))
            plan = [r[0] for r in cur.fetchall()]
            planned = [ln.split(":")[1].strip() for ln in plan if "Workers Planned" in ln]
            scans = [ln.strip().removeprefix("->  ").split("  (")[0] for ln in plan
                     if "Scan" in ln]
            plans[name] = {"workers_planned": int(planned[0]) if planned else 0,
                           "scans": scans}
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF) "
                    + ctas_sql(points, "grids", f"{B}.explain_grids"))
        analysed = [r[0] for r in cur.fetchall()]
        cur.execute(f"DROP TABLE IF EXISTS {B}.explain_grids")
    launched = [ln.split(":")[1].strip() for ln in analysed if "Workers Launched" in ln]
    return {"layers": plans, "grids_workers_launched": int(launched[0]) if launched else 0,
            "grids_plan": analysed}


def contenders(router: Router, lon: np.ndarray, lat: np.ndarray, conn) -> list[Contender]:
    warm_lon, warm_lat = lon[:10_000], lat[:10_000]

    def ours(x=lon, y=lat):
        return router.resolver.resolve_indexed(Queries.build(x, y))

    def forget():  # every run decides every place afresh
        router.resolver.forget()

    def ours_columns():
        results, index = ours()
        return router.writer.frame(results, index)

    cur = conn.cursor()
    points = f"{B}.pts"

    def load():
        load_points(cur, f"{B}.pts_load", lon, lat)

    def drop_load():
        cur.execute(f"DROP TABLE IF EXISTS {B}.pts_load")

    def ctas():
        run_ctas(cur, points, f"{B}.hit")

    def drop_ctas():
        drop_hits(cur, f"{B}.hit")

    def pair_counts(prefix: str) -> dict:
        counts = {}
        for name in ROUTING_LAYERS:
            cur.execute(f"SELECT count(*) FROM {prefix}_{name}")
            counts[name] = cur.fetchone()[0]
        return {"pairs per layer": counts}

    def baseline():
        load_points(cur, f"{B}.pts_e2e", lon, lat)
        run_ctas(cur, f"{B}.pts_e2e", f"{B}.e2e")
        return read_pairs(cur, f"{B}.e2e")

    def drop_baseline():
        drop_hits(cur, f"{B}.e2e")
        cur.execute(f"DROP TABLE IF EXISTS {B}.pts_e2e")

    def read_counts(out) -> dict:
        return {"pairs per layer": {n: len(ids) for n, (ids, _) in out.items()}}

    return [
        Contender(OURS, ours, warm=lambda: ours(warm_lon, warm_lat), check=statuses,
                  setup=forget),
        Contender(OURS_COLUMNS, ours_columns, setup=forget),
        Contender(LOAD, load, setup=drop_load),
        Contender(CTAS, ctas, setup=drop_ctas, check=lambda _: pair_counts(f"{B}.hit")),
        Contender(BASELINE, baseline, setup=drop_baseline, check=read_counts),
    ]


ONE_POINT = (
    "PREPARE bench_one (float8, float8) AS "
    "WITH q AS (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4490) AS pt) SELECT "
    + ", ".join(f"(SELECT l.code FROM {B}.sub_{name} l WHERE ST_Covers(l.geom, q.pt) LIMIT 1)"
                for name in ROUTING_LAYERS)
    + " FROM q"
)


ROUTE = "Router.route (full answer)"
NEAR = "  the same, points near a boundary only"
FIND = "PostgisFinder.find (its SQL round trip + hits)"
PREPARED = "hand-prepared statement (EXECUTE, 6 codes)"
SQL_ROUTE = "Router.route, every point by the store's SQL"


def singles(router: Router, url: str, n: int) -> dict:
    """Single routes, point by point interleaved: the store's `route` as a served process
    runs it (the face raster built: a point away from every boundary is a cell lookup, one
    near a boundary goes to the in-memory STRtrees, one exactly on a boundary to the store's
    SQL), the same through a second store whose router sends every point to the store's SQL
    (no raster: the finder's one-point statement), that finder's SQL round trip alone, and the
    hand-prepared statement, each on an autocommit psycopg2 connection. The store's read
    connection plans its prepared statements once (plan_cache_mode = force_generic_plan:
    under the default, `auto`, PostgreSQL re-plans the one-point statement at every EXECUTE)."""
    lon, lat = random_points(router.snapshot, n, seed=2)
    conn = sql_connection(url)
    cur = conn.cursor()
    cur.execute(ONE_POINT)
    finder = router.resolver.finder
    sql_store = open_store(url)
    by_sql = Router(sql_store)
    by_sql.resolver.use_faces = False

    def route(x, y):
        router.route(x, y)

    def route_sql(x, y):
        by_sql.route(x, y)

    def find(x, y):
        finder.find(Queries.build([x], [y]))

    def prepared(x, y):
        cur.execute("EXECUTE bench_one (%s, %s)", (x, y))
        cur.fetchone()

    ways = {ROUTE: route, FIND: find, PREPARED: prepared, SQL_ROUTE: route_sql}
    for way in ways.values():  # warm: connections, prepared statements, caches
        for x, y in zip(lon[:50].tolist(), lat[:50].tolist(), strict=True):
            way(x, y)
    latencies: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways.items())
    for k, (x, y) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True)):
        r = k % len(order)
        for name, way in order[r:] + order[:r]:
            start = time.perf_counter()
            way(x, y)
            latencies[name].append((time.perf_counter() - start) * 1000)
    conn.close()
    plan = one_point_plan(by_sql)
    sql_store.close()
    faces = router.resolver.faces()
    near = [faces is None or faces.face_at(x, y) < 0
            for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]
    latencies[NEAR] = [t for t, k in zip(latencies[ROUTE], near, strict=True) if k]
    out = {}
    for name, values in latencies.items():
        values.sort()
        out[name] = {"p50_ms": round(statistics.median(values), 3),
                     "p99_ms": round(values[int(len(values) * 0.99) - 1], 3),
                     "mean_ms": round(statistics.fmean(values), 3)}
    return {"routes": n, "near_boundary": sum(near), "load_1min": round(os.getloadavg()[0], 2),
            "ways": out, "one_point_plan": plan}


def one_point_plan(router: Router, x: float = 120.86, y: float = 32.01) -> dict:
    """How PostgreSQL runs the store's prepared one-point statement now (after the warm-up):
    planned again for this EXECUTE (a custom plan, the point inlined) or the generic plan,
    and the planning and execution times it reports."""
    finder = router.resolver.finder
    finder.find(Queries.build([x], [y]))  # prepared on first use
    with finder.store.lock, finder.store.read_conn().cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE gridmap_one_point (%s, %s, %s)",
                    (finder.generation, x, y))
        lines = [r[0] for r in cur.fetchall()]
    times = {ln.split(":")[0].strip(): float(ln.split(":")[1].split()[0]) for ln in lines
             if ln.startswith(("Planning Time", "Execution Time"))}
    return {"generic_plan": any("$2" in ln for ln in lines),
            "planning_ms": times.get("Planning Time"),
            "execution_ms": times.get("Execution Time")}


def profile_routes(router: Router, n: int, top: int = 18) -> str:
    lon, lat = random_points(router.snapshot, n, seed=3)
    profiler = cProfile.Profile()
    profiler.enable()
    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        router.route(x, y)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def run_scale(scale: int, url: str, args, report: Report, extra: dict) -> None:
    group = "sample" if scale == 1 else f"x{scale}"
    files = args.cache / f"files-x{scale}"
    cached_store(args.cache, scale, rebuild=args.rebuild or not files.is_dir())
    started = time.perf_counter()
    migrate(url)
    store = open_store(url)
    import_path(store, files, note="bench")
    imported = time.perf_counter() - started
    router = Router(store)
    snap = router.snapshot
    sizes = {name: len(snap[name]) for name in ROUTING_LAYERS}
    lon, lat = random_points(snap, args.points)
    print(f"\n{group}: {files} imported into PostGIS in {imported:.1f} s "
          f"(load {os.getloadavg()[0]:.2f}); layers {sizes}; {len(lon):,} points, "
          f"{args.rounds} rounds", flush=True)

    conn = sql_connection(url)
    sub = prepare_sql(conn, args.subdivide)
    print(f"  subdivided copies ({args.subdivide} vertices) built in {sub['built_s']:.1f} s: "
          f"{sub['parts']}")
    with conn.cursor() as cur:
        t = time.perf_counter()
        load_points(cur, f"{B}.pts", lon, lat)
        print(f"  points table for the CTAS loaded in {time.perf_counter() - t:.2f} s")
    extra["ctas_plan"][group] = plan = explain_ctas(conn, f"{B}.pts")
    planned = {n: p["workers_planned"] for n, p in plan["layers"].items()}
    print(f"  CTAS plan: workers planned per layer {planned}; grids EXPLAIN ANALYZE: "
          f"{plan['grids_workers_launched']} workers launched; driving: "
          f"{' / '.join(plan['layers']['grids']['scans'])}")
    t = time.perf_counter()
    faces = router.resolver.faces()
    print(f"  face raster {'read from its cache file' if faces.loaded else 'built'} in "
          f"{time.perf_counter() - t:.2f} s ({faces.near_share:.1%} of its cells near a "
          "boundary: in-memory STRtrees; points exactly on a boundary: PostGIS)")

    timings = measure(contenders(router, lon, lat, conn), rounds=args.rounds)
    n = len(lon)
    report.add(group, timings,
               info={"grids": sizes["grids"], "points": n, "layers": sizes,
                     "rounds": args.rounds, "import_s": round(imported, 1),
                     "subdivide_vertices": args.subdivide, "sub_parts": sub["parts"],
                     "near_boundary_share": round(faces.near_share, 4)},
               ratios=[(OURS, CTAS), (OURS_COLUMNS, BASELINE)],
               unit=("k pts/s", n / 1e3))
    median = {name: t.median_s for name, t in timings.items()}
    print(f"  targets: batch {n / median[OURS] / 1e3:.0f}k pts/s (≥ 400k at 40k cells, ahead "
          f"of the CTAS: {median[CTAS] / median[OURS]:.2f}×); end to end "
          f"{n / median[OURS_COLUMNS] / 1e3:.0f}k pts/s (≥ 200k; SQL end to end "
          f"{n / median[BASELINE] / 1e3:.0f}k)")
    conn.close()

    if args.singles:
        extra["singles"][group] = s = singles(router, url, args.singles)
        print(f"  single points, {s['routes']:,} random points ({s['near_boundary']:,} near a "
              f"boundary), interleaved (load {s['load_1min']:.2f}):")
        for name, v in s["ways"].items():
            print(f"    {name:48s} p50 {v['p50_ms']:.3f} ms  p99 {v['p99_ms']:.3f} ms  "
                  f"mean {v['mean_ms']:.3f} ms")
        p = s["one_point_plan"]
        print(f"    the store's one-point statement's EXECUTE is "
              f"{'the generic plan' if p['generic_plan'] else 'planned again (custom plan)'}"
              f": planning {p['planning_ms']} ms, execution {p['execution_ms']} ms")
        ways = s["ways"]
        for name in (ROUTE, NEAR, SQL_ROUTE):
            a, b = ways[name], ways[PREPARED]
            print(f"  target: route p99 < 1 ms and within 1.5× of the prepared statement: "
                  f"{name}: p99 {a['p99_ms']:.3f} ms, {a['p99_ms'] / b['p99_ms']:.2f}× at p99, "
                  f"{a['p50_ms'] / b['p50_ms']:.2f}× at p50")
    if args.profile:
        text = profile_routes(router, args.profile)
        extra["profile"][group] = text
        print(f"  cProfile of {args.profile:,} routes (by own time):\n{text}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an existing PostGIS server to create the benchmark "
                                      "databases on (default: a throwaway cluster)")
    parser.add_argument("--scales", default="1,16", help="comma-separated: 1 is the sample")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where the sample files are built (default {DEFAULT_CACHE})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached samples")
    parser.add_argument("--points", type=int, default=1_000_000, help="batch size")
    parser.add_argument("--singles", type=int, default=10_000,
                        help="single points (0: none)")
    parser.add_argument("--subdivide", type=int, default=SUBDIVIDE_VERTICES,
                        help="ST_Subdivide vertices of the hand-written SQL's layer copies")
    parser.add_argument("--profile", type=int, default=2000, metavar="N",
                        help="cProfile N single routes and print where the time goes "
                             "(default 2000; 0: none)")
    add_arguments(parser, rounds=3)
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]

    from tests.pg import Cluster, create_database

    cluster = None if args.url else Cluster().start()
    admin = args.url or cluster.url
    report = Report("postgis", {k: str(v) for k, v in vars(args).items() if k != "url"})
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    extra: dict = {"singles": {}, "profile": {}, "ctas_plan": {}}
    try:
        for scale in scales:
            name = f"gridmap_bench_x{scale}"
            url = create_database(admin, name)
            try:
                run_scale(scale, url, args, report, extra)
            finally:
                drop_database(admin, name)
    finally:
        if cluster:
            cluster.stop()
    report.finish(save=args.save, compare=args.compare, extra=extra)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


if __name__ == "__main__":
    main()

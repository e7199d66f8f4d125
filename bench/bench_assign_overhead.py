"""`gridmap assign`'s overhead over its own batch core, in one process (run by hand):

    .venv/bin/python bench/bench_assign_overhead.py                 # the cached ×16 sample
    .venv/bin/python bench/bench_assign_overhead.py --scale 1 --rows 200000

With the router and its face raster ready (as in `bench_routing.py`), per round: the batch core
(`resolve_indexed`: lookup and every rule) on the points of a --rows complaint CSV
(bench_assign.complaints), then `batch.assign_file` on that CSV to CSV, with machine headers and
with Chinese ones (reading, checking, routing, answer columns, writing); every decision and
answer column forgotten before each. Issue 14 asks for an overhead of at most 1.5×.

Also per round, the I/O floor: the input CSV read by arrow's multithreaded reader and the
machine-headed output (read back beforehand) written by arrow's CSV writer, with no routing
and no checks — what any program writing the same file spends on reading and writing alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_assign import complaints  # noqa: E402
from bench_routing import DEFAULT_CACHE, cached_store  # noqa: E402

from grids import batch  # noqa: E402
from grids.routing import Router  # noqa: E402
from layers.finder import Queries  # noqa: E402
from layers.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = open_store(str(cached_store(args.cache, args.scale)))
    router = Router(store)
    router.resolver.faces()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.csv", Path(tmp) / "out.csv"
        complaints(src, router.snapshot["counties"].total_bounds, args.rows)
        frame = pd.read_csv(src)
        lon, lat = frame["经度"].to_numpy(float), frame["纬度"].to_numpy(float)
        print(f"×{args.scale}, {args.rows:,} rows, load {os.getloadavg()[0]:.2f}")
        batch.assign_file(router, src, out, crs="wgs84", headers="machine")
        names = pd.read_csv(out, nrows=0).columns  # text as written, numbers as numbers
        written = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()) | {
                "route_generation": pa.int64(), "route_routed_lon": pa.float64(),
                "route_routed_lat": pa.float64()}))
        for _ in range(args.rounds):
            times = {}
            start = time.perf_counter()
            pacsv.read_csv(src)
            pacsv.write_csv(written, Path(tmp) / "floor.csv")
            floor = time.perf_counter() - start
            for way in ("core", "machine", "zh"):
                router.resolver.forget()
                router.writer._forget()
                start = time.perf_counter()
                if way == "core":
                    router.resolver.resolve_indexed(Queries.build(lon, lat))
                else:
                    batch.assign_file(router, src, out, crs="wgs84", headers=way)
                times[way] = time.perf_counter() - start
            core = times["core"]
            print(f"  core {core:.2f} s; assign_file, machine headers {times['machine']:.2f} s "
                  f"({times['machine'] / core:.1f}×), Chinese headers {times['zh']:.2f} s "
                  f"({times['zh'] / core:.1f}×); I/O floor {floor:.2f} s, so machine headers "
                  f"{times['machine'] / (core + floor):.2f}× core + floor")
    store.close()


if __name__ == "__main__":
    main()

"""`gridmap assign` end to end against a geopandas script doing the same (run by hand):

    .venv/bin/python bench/bench_assign.py                       # the sample and ×16, 1M rows
    .venv/bin/python bench/bench_assign.py --scales 1 --rows 200000

Both start a new process with the same complaint CSV (--rows rows of WGS84 points over the
counties' extent, sea and outside included; every row numeric, so that the script needs no
error handling) and write a CSV with an answer per row:

- **gridmap assign (CSV → CSV)**: the real command (`gridmap --store S assign in.csv --out
  out.csv --crs wgs84`): chunked reading, coordinate checks, every rule, the answer columns
  (codes, names, workers, chain, reasons), bad rows kept with their reason;
- **geopandas script**: read the CSV (pandas, pyarrow engine), `points_from_xy`, for each of
  the six routing layers read from a GeoPackage file (pyogrio, arrow) `sjoin(predicate=
  "within")` and the first matching code as a column, write the CSV (pyarrow's writer, the
  fastest there is): no rule, no names, no reasons — what a person would write in 15 lines.

The layer file of the script is written once from the store before the rounds (not timed).
Peak memory (largest resident set of the child, getrusage) is recorded per run. Interleaved
rounds, min/median, load, results JSON: bench/harness.py.
Targets (issue 14): gridmap assign at least as fast as the script (2×), peak ≤ 2 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_routing import DEFAULT_CACHE, cached_store  # noqa: E402
from harness import Contender, Report, add_arguments, measure  # noqa: E402

from layers.schema import ROUTING_LAYERS  # noqa: E402
from layers.store import open_store  # noqa: E402

OURS = "gridmap assign (CSV → CSV)"
SCRIPT = "geopandas script (sjoin within, 6 layers)"

# Runs a command in a fresh interpreter and prints its exit code and peak RSS (KB).
MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-2000:])\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)

SCRIPT_CODE = """
import sys
import geopandas as gpd, pandas as pd, pyarrow as pa, pyarrow.csv as pacsv, pyogrio
src, layers_path, out = sys.argv[1:4]
df = pd.read_csv(src, engine="pyarrow")
points = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["经度"], df["纬度"]), crs=4490)
for name in pyogrio.list_layers(layers_path)[:, 0]:
    layer = pyogrio.read_dataframe(layers_path, layer=name, columns=["code"], use_arrow=True)
    hit = gpd.sjoin(points[["geometry"]], layer, predicate="within")
    df[name + "_code"] = hit["code"].groupby(level=0).first().reindex(df.index)
pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), out)
"""


def complaints(path: Path, bounds, n: int) -> None:
    rng = np.random.default_rng(11)
    minx, miny, maxx, maxy = bounds
    pd.DataFrame({
        "编号": np.char.add("TS", np.arange(n).astype(str)),
        "举报内容": rng.choice(["烟囱冒黑烟", "河道发黑发臭", "夜间噪声扰民"], n),
        "经度": np.round(rng.uniform(minx, maxx, n), 6),
        "纬度": np.round(rng.uniform(miny, maxy, n), 6),
    }).to_csv(path, index=False)


def layer_file(store_path: Path, out: Path) -> None:
    """The six routing layers (code + geometry) in one GeoPackage, as a person would have them."""
    import pyogrio

    store = open_store(str(store_path))
    snap = store.snapshot()
    for name in ROUTING_LAYERS:
        key = "bureau_code" if name == "jurisdictions" else "code"
        frame = snap[name][[key, "geometry"]].rename(columns={key: "code"})
        pyogrio.write_dataframe(frame, out, layer=name)
    store.close()


def child(command: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, *command],
                          capture_output=True, text=True, check=True)
    code, kb = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-1500:]}")
    return {"peak_mb": round(int(kb) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,16")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rows", type=int, default=1_000_000)
    add_arguments(parser, rounds=3)
    args = parser.parse_args()
    gridmap = str(Path(sys.executable).with_name("gridmap"))
    report = Report("assign", {k: str(v) for k, v in vars(args).items()})
    for scale in [int(s) for s in args.scales.split(",")]:
        store = cached_store(args.cache, scale)
        group = "sample" if scale == 1 else f"x{scale}"
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            opened = open_store(str(store))
            bounds = opened.snapshot()["counties"].total_bounds
            opened.close()
            src, layers = tmp / "complaints.csv", tmp / "layers.gpkg"
            complaints(src, bounds, args.rows)
            layer_file(store, layers)
            peaks: dict[str, list[int]] = {OURS: [], SCRIPT: []}

            def ours(store=store, src=src, tmp=tmp, peaks=peaks):
                out = child([gridmap, "--store", str(store), "assign", str(src), "--out",
                             str(tmp / "ours.csv"), "--crs", "wgs84"])
                peaks[OURS].append(out["peak_mb"])
                return out

            def script(src=src, layers=layers, tmp=tmp, peaks=peaks):
                out = child([sys.executable, "-c", SCRIPT_CODE, str(src), str(layers),
                             str(tmp / "script.csv")])
                peaks[SCRIPT].append(out["peak_mb"])
                return out

            print(f"\n{group}: {store}, {args.rows:,} rows "
                  f"({src.stat().st_size / 2**20:.0f} MB), load {os.getloadavg()[0]:.2f}")
            timings = measure([Contender(OURS, ours), Contender(SCRIPT, script)],
                              rounds=args.rounds)
            for name, values in peaks.items():
                timings[name].facts["peak_mb"] = values
                print(f"  {name}: peak RSS {max(values)} MB")
            report.add(group, timings, info={"store": str(store), "rows": args.rows},
                       ratios=[(OURS, SCRIPT)], unit=("k rows/s", args.rows / 1e3))
    report.finish(save=args.save, compare=args.compare)


if __name__ == "__main__":
    main()

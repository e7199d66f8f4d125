"""Memory of `gridmap assign` (run by hand:
`.venv/bin/python bench/bench_assign_memory.py --store STORE [--rows 300000]`).

`gridmap assign` reads, routes and writes CSV and .xlsx files a chunk at a time
(grids/batch.py `assign_file`), so its peak memory should not depend on the number of rows.
This generates a complaint CSV of --rows rows (WGS84 points over the city, one bad row in a
thousand), runs the real command to .csv and to .xlsx, each in a fresh process, and prints the
peak resident memory (the largest RSS of the child, from getrusage) and the wall time. Run it
with two row counts: the peaks should match.

Measured on the Nantong sample store (2 cores): 150,000 and 300,000 rows both peak at
~0.33 GB to .csv and ~0.34 GB to .xlsx, 1,000,000 rows at ~0.35 GB. Before streaming, 150,000
rows took 0.79 GB to .csv and 2.0 GB to .xlsx.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layers.display import city_bounds  # noqa: E402
from layers.store import open_store, store_url  # noqa: E402

# Run in a fresh interpreter each time: RUSAGE_CHILDREN is the largest of all children so far.
MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def complaints(path: Path, bounds, n: int) -> None:
    rng = np.random.default_rng(11)
    minx, miny, maxx, maxy = bounds
    frame = pd.DataFrame({
        "编号": np.char.add("TS", np.arange(n).astype(str)),
        "举报内容": rng.choice(["烟囱冒黑烟", "河道发黑发臭", "夜间噪声扰民"], n),
        "经度": np.round(rng.uniform(minx, maxx, n), 6).astype(str),
        "纬度": np.round(rng.uniform(miny, maxy, n), 6).astype(str),
    })
    frame.loc[::997, "经度"] = "不是数字"
    frame.to_csv(path, index=False)


def gridmap() -> str:
    exe = Path(sys.executable).with_name("gridmap")
    return str(exe) if exe.exists() else shutil.which("gridmap") or "gridmap"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    url = store_url(args.store)
    store = open_store(url)
    bounds = city_bounds(store.snapshot())
    store.close()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "complaints.csv"
        complaints(src, bounds, args.rows)
        print(f"store {url}; {args.rows:,} rows, {src.stat().st_size / 2**20:.0f} MB of CSV")
        for suffix in (".csv", ".xlsx"):
            out = Path(tmp) / f"result{suffix}"
            command = [gridmap(), "--store", url, "assign", str(src), "--out", str(out),
                       "--crs", "wgs84"]
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", MEASURE, *command],
                                  capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - started
            code, kb = done.stdout.split()
            state = "" if code == "0" else f" (exit {code})"
            print(f"  → {suffix:5s} peak RSS {int(kb) / 1024:6.0f} MB, {seconds:5.1f} s, "
                  f"{out.stat().st_size / 2**20:.0f} MB written{state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`gridmap validate` speed (run by hand): the data-quality checks over the sample (2,544 grids)
and over a store with sixteen times as many grids (over 40,000).

    .venv/bin/python bench/bench_validate.py                # builds both stores in a temp dir
    .venv/bin/python bench/bench_validate.py --store data/gridmap.gpkg --repeat 5

The ×16 store is the sample with every grid cut into at least `--split`² pieces by a regular
lattice over its bounding box, clipped to it (a clean tiling stays clean: neighbouring pieces
share the lattice lines), and a worker and a leader for every piece. It is committed as a new
generation of a copy of the sample store (Store.commit_layers, as an import would).

Timed per store, `--repeat` times after a warm-up:

- **validate (CLI)**: the whole command as a user runs it — `gridmap --store … validate --json`
  in a new process (start-up, reading the layers, the checks, the JSON);
- **check_layers**: the checks alone (grids/checks.py) over the snapshot in memory.

Prints median/min and writes them with the machine's details to
bench/results/validate-<date>.json. Targets (issue 11): sample < 5 s, 40,000 grids < 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grids.checks import check_layers  # noqa: E402
from layers.store import open_store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GRIDMAP = str(Path(sys.executable).with_name("gridmap"))


def build_sample(directory: Path) -> Path:
    store = directory / "sample.gpkg"
    subprocess.run([GRIDMAP, "--store", str(store), "demo", "--out", str(directory / "files")],
                   check=True, capture_output=True, text=True)
    return store


def subdivide(grids: gpd.GeoDataFrame, split: int) -> gpd.GeoDataFrame:
    """Every grid cut into at least split² pieces: the cells of an n × n lattice over its
    bounding box clipped to it, n from `split` up until enough cells hold a part of it."""
    rows = []
    geoms = np.asarray(grids.geometry.values, dtype=object)
    for row, geom in zip(grids.itertuples(index=False), geoms, strict=True):
        for n in range(split, 3 * split):
            pieces = _lattice(geom, n)
            if len(pieces) >= split * split:
                break
        for k, piece in enumerate(pieces, start=1):
            rows.append({"code": f"{row.code}{k:02d}", "name": f"{row.name}-{k}",
                         "township_code": row.township_code, "kind": row.kind,
                         "attrs": dict(row.attrs or {}), "geometry": piece})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=grids.crs)


def _lattice(geom, n: int) -> list:
    minx, miny, maxx, maxy = shapely.bounds(geom)
    xs, ys = np.linspace(minx, maxx, n + 1), np.linspace(miny, maxy, n + 1)
    cells = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]
    out = []
    for piece in shapely.intersection(geom, np.asarray(cells, dtype=object)):
        polys = [p for p in shapely.get_parts(piece) if p.geom_type == "Polygon" and p.area > 0]
        if polys:
            out.append(shapely.MultiPolygon(polys))
    return out


def build_x16(sample: Path, directory: Path, split: int) -> tuple[Path, int]:
    path = directory / "x16.gpkg"
    shutil.copy(sample, path)
    store = open_store(str(path))
    try:
        snap = store.snapshot()
        grids = subdivide(snap["grids"], split)
        old = snap["workers"]
        phones = old["phone"].tolist()
        leaders = (old[old["role"] == "leader"].drop_duplicates("grid_code")
                   .set_index("grid_code"))
        workers = []
        for i, (code, parent) in enumerate(zip(grids["code"], grids["code"].str[:-2],
                                               strict=True)):
            workers.append((f"X{i:06d}", f"网格员{i}", phones[i % len(phones)], code, "worker"))
            if parent in leaders.index:
                lead = leaders.loc[parent]
                workers.append((str(lead["id"]), str(lead["name"]), str(lead["phone"]), code,
                                "leader"))
        frame = pd.DataFrame(workers, columns=["id", "name", "phone", "grid_code", "role"])
        frame["attrs"] = [{} for _ in range(len(frame))]
        store.commit_layers({"grids": grids, "workers": frame}, note="基准测试：网格 ×16",
                            source="bench_validate")
    finally:
        store.close()
    return path, len(grids)


def time_cli(store: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([GRIDMAP, "--store", str(store), "validate", "--json"],
                         capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(f"gridmap validate failed: {out.stderr}")
    return took, json.loads(out.stdout)


def time_checks(store: Path) -> tuple[float, int]:
    s = open_store(str(store))
    try:
        layers = s.snapshot().layers
    finally:
        s.close()
    started = time.perf_counter()
    found = check_layers(layers)
    return time.perf_counter() - started, len(found)


def run(name: str, store: Path, repeat: int) -> dict:
    time_cli(store)  # warm-up (page cache, imports)
    cli, checks, report = [], [], None
    for _ in range(repeat):
        took, report = time_cli(store)
        cli.append(took)
        took, _n = time_checks(store)
        checks.append(took)
    s = open_store(str(store))
    try:
        grids = len(s.snapshot()["grids"])
    finally:
        s.close()
    result = {
        "grids": grids,
        "validate_cli_s": {"median": statistics.median(cli), "min": min(cli), "runs": cli},
        "check_layers_s": {"median": statistics.median(checks), "min": min(checks),
                           "runs": checks},
        "findings": report["counts"] if report else None,
        "kinds": sorted({f["kind"] for f in (report or {}).get("findings", [])}),
    }
    print(f"{name:8s} {grids:>7,d} grids  validate (CLI) median "
          f"{statistics.median(cli):6.2f} s (min {min(cli):.2f})  check_layers median "
          f"{statistics.median(checks):6.2f} s  findings {result['findings']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="the sample store (default: build one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--split", type=int, default=4, help="lattice cells per side (4: ×16)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        tmp = Path(tmp)
        sample = args.store or build_sample(tmp)
        started = time.perf_counter()
        x16, n = build_x16(sample, tmp, args.split)
        print(f"built the ×{args.split ** 2} store: {n:,d} grids in "
              f"{time.perf_counter() - started:.1f} s")
        results = {"sample": run("sample", sample, args.repeat),
                   f"x{args.split ** 2}": run(f"x{args.split ** 2}", x16, args.repeat)}
    report = {
        "bench": "validate",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "gridmap --store STORE validate --json",
        "targets_s": {"sample": 5, "40000 grids": 60},
        "results": results,
        "machine": {"cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "shapely": shapely.__version__,
                    "geos": shapely.geos_version_string},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"validate-{datetime.now().strftime('%Y%m%d-%H%M')}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

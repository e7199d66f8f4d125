"""The routing checks on a larger store: `gridmap demo --scale 2` (about 5,000 grids, 20,000
entities), built once per session by the real command (its time printed, about 25 s of CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import shapely

from grids.checks import check_layers
from grids.routing import Router
from layers.demo import build_sample
from layers.finder import Queries
from layers.store import open_store
from tests.conftest import gridmap_exe

SCALE = 2  # enough to prove the subdivision and routing; ×16 is for the benchmarks
AS_OF = "2026-12-02T10:00"
# The sample at scale 1: 2,532 comprehensive and park grids, 12 dedicated ones, 294 incidents.
SAMPLE_SPLIT_GRIDS, SAMPLE_DEDICATED, SAMPLE_INCIDENTS = 2532, 12, 294
KIND_RANK = {"dedicated": 1, "park": 2, "comprehensive": 3}  # grids/precedence.csv


@dataclass
class Scaled:
    store: Path
    files: Path
    seconds: float
    cpu_seconds: float
    load: float
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Scaled:
    base = tmp_path_factory.mktemp("scale")
    store, files = base / "x4.gpkg", base / "files"
    started, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run([gridmap_exe(), "--store", str(store), "demo", "--scale", str(SCALE),
                          "--as-of", AS_OF, "--out", str(files)],
                         check=True, capture_output=True, text=True)
    return Scaled(store, files, time.perf_counter() - started, _children_cpu() - cpu,
                  os.getloadavg()[0], out.stdout, out.stderr)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def scaled_router(scaled):
    store = open_store(str(scaled.store))
    yield Router(store)
    store.close()


def land_points(router: Router, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` uniform random points on land (inside a county)."""
    counties = np.asarray(router.snapshot["counties"].geometry.values, dtype=object)
    land = shapely.coverage_union_all(counties)
    shapely.prepare(land)
    minx, miny, maxx, maxy = land.bounds
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while sum(len(x) for x in xs) < n:
        x, y = rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)
        keep = shapely.contains_xy(land, x, y)
        xs.append(x[keep])
        ys.append(y[keep])
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def test_n_times_the_sample(scaled):
    cpus = os.cpu_count() or 1
    # The time is printed, never asserted (tests never assert timings; bench/ measures).
    print(f"--scale {SCALE}: {scaled.seconds:.0f} s, {scaled.cpu_seconds:.0f} s of CPU, "
          f"load {scaled.load:.1f} on {cpus} CPUs")
    counts = {m[1]: int(m[2].replace(",", ""))
              for m in re.finditer(r"^\s+(\w+)\s+([\d,]+)$", scaled.stdout, re.M)}
    # Every comprehensive and park grid in SCALE parts (a part may vanish, rarely).
    split = counts["grids"] - SAMPLE_DEDICATED
    assert SCALE * SAMPLE_SPLIT_GRIDS * 0.999 <= split <= SCALE * SAMPLE_SPLIT_GRIDS
    assert SCALE * 10_000 * 0.999 <= counts["entities"] <= SCALE * 10_000
    assert counts["incidents"] == SCALE * SAMPLE_INCIDENTS
    assert f"示例事件 {SCALE * SAMPLE_INCIDENTS} 件" in scaled.stdout
    assert "未能登记" not in scaled.stderr


def test_same_seed_same_files(scaled, tmp_path):
    """Reproducible: the files again, byte for byte (the sample's own files at scale 1 are
    checked in tests/test_demo.py)."""
    as_of = datetime.fromisoformat(AS_OF).replace(tzinfo=timezone(timedelta(hours=8)))
    build_sample(tmp_path, as_of=as_of, scale=SCALE)
    for path in sorted(scaled.files.iterdir()):
        again = (tmp_path / path.name).read_bytes()
        assert hashlib.sha256(again).digest() == hashlib.sha256(path.read_bytes()).digest(), path


def test_grid_codes_names_and_workers(scaled_router):
    grids = scaled_router.snapshot["grids"]
    codes = grids["code"].astype(str)
    assert codes.is_unique
    assert all(c.startswith(t) for c, t in zip(codes, grids["township_code"], strict=True))
    split = grids[grids["kind"] != "dedicated"]
    assert split["code"].str.fullmatch(r"\d{17}").all()  # the sample's 15 digits and a number
    assert split["name"].str.endswith("微网格").all()
    per_parent = Counter(c[:15] for c in split["code"])
    assert max(per_parent.values()) == SCALE
    assert sum(1 for v in per_parent.values() if v == SCALE) >= 0.99 * len(per_parent)
    workers = scaled_router.snapshot["workers"]
    mine = workers[workers["role"] == "worker"]
    assert sorted(mine["grid_code"]) == sorted(codes)  # a worker per grid


def test_grids_still_tile_their_townships(scaled_router):
    snap = scaled_router.snapshot
    grids = snap["grids"]
    comp = grids[grids["kind"] == "comprehensive"]
    geoms = np.asarray(comp.geometry.values, dtype=object)
    assert shapely.coverage_is_valid(geoms)
    towns = snap["townships"].set_index("code").geometry
    for code, group in comp.groupby("township_code"):
        parts = np.asarray(group.geometry.values, dtype=object)
        assert shapely.coverage_is_valid(parts), code
        union = shapely.coverage_union_all(parts)
        town = towns[code]
        assert shapely.symmetric_difference(union, town).area / town.area < 1e-9, code
    assert set(comp["township_code"]) == set(towns.index)
    # Park grids: the parts of one sample grid tile it without overlap, too.
    parks = grids[grids["kind"] == "park"]
    for _, group in parks.groupby(parks["code"].str[:15]):
        assert shapely.coverage_is_valid(np.asarray(group.geometry.values, dtype=object))


def test_the_checks_find_nothing(scaled_router):
    """`gridmap validate`'s checks: as clean as the sample (no error, no warning)."""
    findings = check_layers(scaled_router.snapshot.layers)
    assert findings == [], [f.message_zh for f in findings[:10]]


def test_random_land_points_route_to_one_grid_as_shapely_says(scaled_router):
    """2,000 random points on land: each `ok`, with one grid, and that grid is the one a plain
    shapely point-in-polygon over the subdivided grids gives (the best kind covering it)."""
    lon, lat = land_points(scaled_router, 2000, seed=14)
    results, index = scaled_router.resolver.resolve_indexed(Queries.build(lon, lat))
    snap = scaled_router.snapshot
    grids = snap["grids"]
    codes = grids["code"].astype(str).to_numpy()
    kinds = grids["kind"].astype(str).to_numpy()
    tree = shapely.STRtree(np.asarray(grids.geometry.values, dtype=object))
    pi, gi = tree.query(shapely.points(lon, lat), predicate="within")
    expected: dict[int, list[int]] = {}
    for p, g in zip(pi.tolist(), gi.tolist(), strict=True):
        expected.setdefault(p, []).append(g)
    towns = snap["townships"]
    ttree = shapely.STRtree(np.asarray(towns.geometry.values, dtype=object))
    tp, tg = ttree.query(shapely.points(lon, lat), predicate="within")
    town_of = dict(zip(tp.tolist(), towns["code"].astype(str).to_numpy()[tg], strict=True))
    assert len(town_of) == len(lon)  # the townships tile the land
    for q in range(len(lon)):
        res = results[index[q]]
        assert res.status == "ok", (lon[q], lat[q], res)
        outcome = res.outcomes[0]
        hits = expected[q]
        best = min(KIND_RANK[kinds[g]] for g in hits)
        best_hits = [g for g in hits if KIND_RANK[kinds[g]] == best]
        assert len(best_hits) == 1, (lon[q], lat[q], codes[hits])
        assert outcome.grid == best_hits[0], (lon[q], lat[q], codes[outcome.grid], codes[hits])
        assert sum(kinds[g] == "comprehensive" for g in hits) == 1  # exactly one: a tiling
        assert str(towns["code"].iloc[outcome.township]) == town_of[q]


def test_the_sample_incidents_were_routed(scaled, scaled_router):
    store = open_store(str(scaled.store))
    try:
        incidents = store.incidents()
    finally:
        store.close()
    assert len(incidents) == SCALE * SAMPLE_INCIDENTS
    assert set(incidents["route_status"]) <= {"ok", "ambiguous", "outside"}
    ok = incidents[incidents["route_status"] == "ok"]
    assert len(ok) > len(incidents) / 4
    on_land = ok[ok["township_code"].notna()]  # at sea: a sea area and its county, no grid
    assert on_land["grid_code"].notna().all()
    assert set(on_land["grid_code"]) <= set(scaled_router.snapshot["grids"]["code"].astype(str))
    # The exact ones (GPS, 50 m) near an entity mostly fall in one grid.
    assert (ok["accuracy_m"] <= 50).sum() > 200


def test_route_command_on_the_scaled_store(scaled, scaled_router):
    lon, lat = land_points(scaled_router, 3, seed=41)
    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        out = subprocess.run([gridmap_exe(), "--store", str(scaled.store), "route", f"{x:.6f}",
                              f"{y:.6f}", "--json"], capture_output=True, text=True, check=True)
        answer = json.loads(out.stdout)
        direct = scaled_router.route(round(x, 6), round(y, 6))
        assert answer["status"] == "ok"
        assert answer["grid"]["code"] == direct["grid"]["code"]
        assert answer["grid"]["code"].startswith(answer["township"]["code"])
    card = subprocess.run([gridmap_exe(), "--store", str(scaled.store), "route", "120.86",
                           "32.01"], capture_output=True, text=True, check=True)
    assert "微网格" in card.stdout


def test_scale_must_be_a_whole_number_from_one(tmp_path):
    for bad in ("0", "-2", "1.5", "四"):
        out = subprocess.run([gridmap_exe(), "--store", str(tmp_path / "x.gpkg"), "demo",
                              "--scale", bad], capture_output=True, text=True)
        assert out.returncode == 2, bad
        assert "大于等于 1 的整数" in out.stderr, out.stderr
        assert not (tmp_path / "x.gpkg").exists()

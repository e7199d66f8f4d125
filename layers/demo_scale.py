"""A larger sample for benchmarks and the scale test: `gridmap demo --scale N`.

Every comprehensive grid and park grid of the sample is cut into N parts (micro-grids, 微网格):
the Voronoi cells of a regular square lattice of N points inside it, which is the lattice
clipped to the grid except near its edges, where a new edge ends on an existing vertex of the
grid (layers/demo_geom.partition). So a coverage stays a coverage: the parts of a grid tile it
exactly, vertex for vertex along its boundary, and the grids of a township still tile the
township. The grids are built with `densify_deg` (vertices along the edges between them) so that
the cuts have vertices to end on. Dedicated grids (around their targets) are kept whole.

Entities and incidents are N times as many, drawn by the sample's own generators (same places,
same mixes). The cutting draws nothing from the sample's random generator: the same seed, scale
and `--as-of` give the same files.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from layers import demo_geom as g

SPLIT_KINDS = ("comprehensive", "park")
# Vertex spacing along the edges between grids, before they are cut (township borders keep the
# sample's 150 m): finer for finer cuts.
EDGE_STEP = 0.0015
# Grids are cut in this many processes at most, when there are at least PARALLEL_FROM of them.
MAX_WORKERS = 4
PARALLEL_FROM = 400


def edge_step(scale: int) -> float | None:
    """The `densify_deg` of the grids of a build at `scale` (None: the sample as it is)."""
    if scale <= 1:
        return None
    return EDGE_STEP / max(1.0, math.sqrt(scale) / 2)


def incident_counts(scale: int) -> dict[str, int]:
    """build_incidents' counts at `scale` (its defaults × scale)."""
    return {"n_entity": 200 * scale, "n_random": 70 * scale, "n_sea": 10 * scale,
            "n_border": 14 * scale}


def suffix_width(scale: int) -> int:
    return max(2, len(str(scale)))


def subdivide_grids(grids: list[dict[str, Any]], scale: int) -> list[dict[str, Any]]:
    """Comprehensive and park grids cut into `scale` micro-grids each (codes: the grid's code
    and a running number, so they keep the township prefix); other grids unchanged."""
    width = suffix_width(scale)
    todo = [grid["geometry"] for grid in grids if grid["kind"] in SPLIT_KINDS]
    parts = iter(_split_all(todo, scale))
    out: list[dict[str, Any]] = []
    for grid in grids:
        if grid["kind"] not in SPLIT_KINDS:
            out.append(grid)
            continue
        for k, piece in enumerate(next(parts), start=1):
            out.append({**grid, "code": f"{grid['code']}{k:0{width}d}",
                        "name": f"{grid['name']}第{k}微网格",
                        "area_km2": round(g.km2_area(piece), 3), "geometry": piece})
    return out


def _split_all(geoms: list[BaseGeometry], n: int) -> list[list[BaseGeometry]]:
    """split() of every geometry, in worker processes when there are many (each result
    depends on its grid alone, so the order of work changes nothing)."""
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    forking = "fork" in multiprocessing.get_all_start_methods()  # no re-import of __main__
    if len(geoms) < PARALLEL_FROM or workers < 2 or not forking:
        return [split(geom, n) for geom in geoms]
    chunk = max(1, len(geoms) // (workers * 8))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(split, geoms, itertools.repeat(n), chunksize=chunk))


def split(geom: BaseGeometry, n: int) -> list[BaseGeometry]:
    """`geom` cut into (at most) `n` parts around a regular lattice of points inside it,
    numbered north to south, west to east. A part can vanish when the cut ends snap to the
    same boundary vertex: then there are fewer."""
    seeds = lattice_points(geom, n)
    cells = g.partition(geom, seeds)
    order = np.lexsort((seeds[:, 0], -np.round(seeds[:, 1], 4)))
    return [cells[i] for i in order.tolist() if cells[i] is not None]


def lattice_points(geom: BaseGeometry, n: int) -> np.ndarray:
    """`n` lon/lat points of a square lattice (in the local isotropic plane) inside `geom`,
    centred on its centroid: the spacing √(area/n) is tried first, then ever further from it
    (±1 %, ±2 % … ±50 %) until exactly n fall inside; failing that, the lattice nearest to
    √(area/n) with more keeps the n farthest from the edge."""
    plane = g.to_xy_geom(geom)
    shapely.prepare(plane)
    area = float(shapely.area(plane))
    cx, cy = shapely.get_coordinates(shapely.centroid(plane))[0]
    x0, y0, x1, y1 = shapely.bounds(plane)
    more = None
    factors = 1.0 + np.array([0.0] + [s * k / 100 for k in range(1, 51) for s in (-1, 1)])
    for f in factors.tolist():
        step = math.sqrt(area / n) * f
        for off in (0.5, 0.0):
            xs = cx + (np.arange(math.floor((x0 - cx) / step) - 1,
                                 math.ceil((x1 - cx) / step) + 2) + off) * step
            ys = cy + (np.arange(math.floor((y0 - cy) / step) - 1,
                                 math.ceil((y1 - cy) / step) + 2) + off) * step
            px, py = np.tile(xs, len(ys)), np.repeat(ys, len(xs))
            inside = shapely.contains_xy(plane, px, py)
            found = int(np.count_nonzero(inside))
            if found == n:
                return _lonlat(np.column_stack([px[inside], py[inside]]))
            if found > n and more is None:
                more = np.column_stack([px[inside], py[inside]])
    if more is None:  # a sliver no lattice fits in: as many as fit
        pts = g.to_xy(g.random_points_in(np.random.default_rng(n), geom, n))
        return _lonlat(pts)
    depth = shapely.distance(plane.boundary, shapely.points(more))
    keep = np.sort(np.argsort(-depth, kind="stable")[:n])
    return _lonlat(more[keep])


def _lonlat(xy: np.ndarray) -> np.ndarray:
    return xy / np.array([g.COS_LAT, 1.0])

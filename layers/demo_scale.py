"""A larger sample for benchmarks and the scale test: `gridmap demo --scale N`.

Every comprehensive grid and park grid of the sample is cut into N parts (micro-grids, 微网格):
the Voronoi cells of a regular square lattice of N points inside it, which is the lattice
clipped to the grid except near its edges, where a new edge ends on an existing vertex of the
grid (layers/demo_geom.partition). So a coverage stays a coverage: the parts of a grid tile it
exactly, vertex for vertex along its boundary, and the grids of a township still tile the
township. The grids are built with `densify_deg` (vertices along the edges between them) so that
the cuts have vertices to end on. Dedicated grids (around their targets) are kept whole.

Entities and incidents are N times as many, drawn by the sample's own generators (same places,
same mixes). Nothing here draws from the random generator: the same seed, scale and `--as-of`
give the same files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from layers import demo_geom as g

SPLIT_KINDS = ("comprehensive", "park")
# Vertex spacing along the edges between grids, before they are cut (township borders keep the
# sample's 150 m): finer for finer cuts.
EDGE_STEP = 0.0015


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
    out: list[dict[str, Any]] = []
    for grid in grids:
        if grid["kind"] not in SPLIT_KINDS:
            out.append(grid)
            continue
        for k, piece in enumerate(split(grid["geometry"], scale), start=1):
            out.append({**grid, "code": f"{grid['code']}{k:0{width}d}",
                        "name": f"{grid['name']}第{k}微网格",
                        "area_km2": round(g.km2_area(piece), 3), "geometry": piece})
    return out


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
    centred on its centroid: the spacing shrinks from √(area/n) until exactly n fall inside
    (or, failing that, the first lattice with more keeps the n farthest from the edge)."""
    plane = g.to_xy_geom(geom)
    shapely.prepare(plane)
    area = float(shapely.area(plane))
    cx, cy = shapely.get_coordinates(shapely.centroid(plane))[0]
    x0, y0, x1, y1 = shapely.bounds(plane)
    more = None
    for f in np.linspace(1.25, 0.5, 61):
        s = math.sqrt(area / n) * float(f)
        for off in (0.5, 0.0):
            xs = cx + (np.arange(math.floor((x0 - cx) / s) - 1, math.ceil((x1 - cx) / s) + 2)
                       + off) * s
            ys = cy + (np.arange(math.floor((y0 - cy) / s) - 1, math.ceil((y1 - cy) / s) + 2)
                       + off) * s
            px, py = (a.ravel() for a in np.meshgrid(xs, ys))
            inside = shapely.contains_xy(plane, px, py)
            found = int(inside.sum())
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

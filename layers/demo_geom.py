"""Geometry helpers of the sample builder: exact partitions, buffers and point sampling.

All polygons the sample writes have their coordinates on a 1e-7 degree lattice (the written
precision), so writing them rounds nothing and a coverage checked in memory stays valid on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

GRID = 1e-7  # degrees; the written precision (7 decimals, about 1 cm)
_SCALE = 10_000_000  # 1 / GRID as an integer
KM_PER_DEG_LAT = 111.32
# Nantong spans 31.6-32.7 N: one cosine keeps Voronoi cells and buffers roughly isotropic.
COS_LAT = math.cos(math.radians(32.15))


def km2_area(geom: BaseGeometry) -> float:
    """Approximate area in km² of a lon/lat geometry (fine at Nantong's latitude)."""
    return float(shapely.area(geom)) * KM_PER_DEG_LAT**2 * COS_LAT


def to_xy(lonlat: np.ndarray) -> np.ndarray:
    """Lon/lat to a locally isotropic plane (degrees of latitude) for Voronoi and distances."""
    out = np.asarray(lonlat, dtype=float).copy()
    out[..., 0] *= COS_LAT
    return out


def from_xy_geom(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda c: c / np.array([COS_LAT, 1.0]))


def to_xy_geom(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda c: c * np.array([COS_LAT, 1.0]))


def buffer_km(geom: BaseGeometry, km: float, quad_segs: int = 8) -> BaseGeometry:
    """Buffer by a distance in km (isotropic in the local plane), snapped to the lattice."""
    out = from_xy_geom(to_xy_geom(geom).buffer(km / KM_PER_DEG_LAT, quad_segs=quad_segs))
    return shapely.set_precision(out, GRID)


def snap(geom: BaseGeometry) -> BaseGeometry:
    return shapely.set_precision(geom, GRID)


# --------------------------------------------------------------------------- lattice boundaries


def densify_exact(poly: Polygon | MultiPolygon, step_deg: float) -> Polygon | MultiPolygon:
    """Insert vertices that lie *exactly* on the existing segments and on the lattice.

    A segment between lattice points (dx, dy apart, in lattice units) passes through
    gcd(dx, dy) - 1 further lattice points; we insert some of them, about `step_deg` apart. The
    polygon stays mathematically identical, yet child partitions get vertices to end their
    edges on. Inserted points depend only on the (unordered) segment, so two polygons sharing a
    segment get the same points.
    """

    def ring(coords: np.ndarray) -> np.ndarray:
        pts = np.rint(coords * _SCALE).astype(np.int64)
        out: list[tuple[int, int]] = []
        for (x0, y0), (x1, y1) in zip(pts[:-1].tolist(), pts[1:].tolist(), strict=True):
            out.append((x0, y0))
            a, b = sorted([(x0, y0), (x1, y1)])
            dx, dy = b[0] - a[0], b[1] - a[1]
            g = math.gcd(abs(dx), abs(dy))
            if g < 2:
                continue
            seg_len = math.hypot(dx * COS_LAT, dy) / _SCALE
            every = max(1, int(step_deg / (seg_len / g)))
            ts = list(range(every, g, every))
            mids = [(a[0] + dx // g * t, a[1] + dy // g * t) for t in ts]
            if (a[0], a[1]) != (x0, y0):
                mids.reverse()
            out.extend(mids)
        out.append(tuple(pts[-1]))
        return np.array(out, dtype=np.float64) / _SCALE

    def one(p: Polygon) -> Polygon:
        shell = ring(np.asarray(p.exterior.coords))
        holes = [ring(np.asarray(r.coords)) for r in p.interiors]
        return Polygon(shell, holes)

    if isinstance(poly, Polygon):
        return one(poly)
    return MultiPolygon([one(p) for p in poly.geoms])


def _round(coords: np.ndarray) -> np.ndarray:
    return np.rint(coords * _SCALE) / _SCALE


def partition(
    region: Polygon | MultiPolygon,
    seeds: np.ndarray,
    densify_deg: float | None = None,
    hole: BaseGeometry | None = None,
) -> list[BaseGeometry | None]:
    """Split `region` into Voronoi-like cells around `seeds` (lon/lat), one per seed.

    The cells form a clean coverage whose union is exactly `region`: every new edge ends on an
    existing vertex of `region`'s boundary, so that boundary is kept vertex for vertex and the
    neighbours outside `region` still match it. All new vertices are on the lattice.
    `densify_deg` adds lattice vertices along the new edges, for a finer partition later.
    `hole` (strictly inside `region`) is cut out of all cells, with edges the cells share.
    A seed whose cell vanished gets None.
    """
    seeds = np.asarray(seeds, dtype=float)
    if hole is not None:  # strictly inside: only adds an interior ring, no new vertices
        region = shapely.difference(region, hole)
    if len(seeds) == 1:
        return [region]
    base: list[BaseGeometry] = [region.boundary]
    # Plain noding keeps every input vertex, all on the lattice; the result stays on it unless
    # an edge crosses another one (a Voronoi vertex a hair from the boundary, a snapped end in a
    # concave corner). Then nudging the seeds by a few metres usually helps; snap-rounding is
    # the last resort, as it may merge vertices closer than the lattice and bend the boundary.
    jitter = np.random.default_rng(len(seeds))
    xy = to_xy(seeds)
    exact = False
    for attempt in range(8):
        lines = base + _voronoi_edges(region, xy, densify_deg)
        noded = shapely.union_all(lines)
        if exact := _on_lattice(noded):
            break
        xy = to_xy(seeds) + jitter.normal(scale=2e-5 * (attempt + 1), size=xy.shape)
    else:
        noded = shapely.union_all(lines, grid_size=GRID)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    rep = shapely.get_coordinates(shapely.point_on_surface(faces))
    shapely.prepare(region)
    # Exact faces share region's vertices, so `covers` is exact where a point test on a sliver
    # could fall on its edge; after snap-rounding only the point test works.
    if exact:
        inside = shapely.covers(region, faces)
    else:
        inside = shapely.contains_xy(region, rep[:, 0], rep[:, 1])
    rxy = to_xy(rep)
    owner = np.argmin(((rxy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2), axis=1)
    _absorb_slivers(faces, owner, inside, float(shapely.area(region)) / len(seeds) * 1e-3)
    out: list[BaseGeometry | None] = []
    for i in range(len(seeds)):
        mine = faces[inside & (owner == i)]
        out.append(shapely.coverage_union_all(mine) if len(mine) else None)
    return out


def _on_lattice(geom: BaseGeometry) -> bool:
    c = shapely.get_coordinates(geom) * _SCALE
    return bool(np.all(np.abs(c - np.rint(c)) < 1e-4))


def _voronoi_edges(
    region: BaseGeometry, xy: np.ndarray, densify_deg: float | None
) -> list[BaseGeometry]:
    """Voronoi edges inside `region`, ending on region vertices, inner vertices on the lattice."""
    env = to_xy_geom(region).envelope.buffer(0.5)
    cells = shapely.voronoi_polygons(shapely.multipoints(xy), extend_to=env)
    edges = shapely.union_all([c.boundary for c in cells.geoms])
    inner = shapely.intersection(from_xy_geom(edges), region)
    boundary = region.boundary
    bverts = np.unique(shapely.get_coordinates(boundary), axis=0)
    shapely.prepare(region)
    out = []
    for part in shapely.get_parts(shapely.line_merge(inner)):
        if part.geom_type != "LineString" or part.length == 0:
            continue
        if densify_deg:
            part = shapely.segmentize(part, densify_deg)
        raw = np.asarray(part.coords)
        c = _round(raw)
        for i, j in ((0, 1), (-1, -2)):
            if boundary.distance(Point(raw[i])) < 1e-9:
                c[i] = _snap_end(region, bverts, raw[i], c[j])
        keep = np.ones(len(c), dtype=bool)
        keep[1:] = np.any(c[1:] != c[:-1], axis=1)
        c = c[keep]
        if len(c) >= 2:
            out.append(LineString(c))
    return out


def _snap_end(
    region: BaseGeometry, bverts: np.ndarray, end: np.ndarray, inner: np.ndarray
) -> np.ndarray:
    """The boundary vertex to end an edge on: the nearest one the last segment reaches
    without leaving `region` (in a concave stretch the nearest may lie behind a bend)."""
    d = np.hypot((bverts[:, 0] - end[0]) * COS_LAT, bverts[:, 1] - end[1])
    order = np.argsort(d, kind="stable")[:8]
    for k in order:
        if region.covers(LineString([inner, bverts[k]])):
            return bverts[k]
    return bverts[order[0]]


def _absorb_slivers(
    faces: np.ndarray, owner: np.ndarray, inside: np.ndarray, tiny: float
) -> None:
    """Give faces under `tiny` area to the neighbour they share the longest edge with.

    Snapping edge ends to boundary vertices can leave slivers that the nearest-seed rule would
    hand to a cell they do not touch, making it a multipolygon with a speck.
    """
    idx = np.flatnonzero(inside & (shapely.area(faces) < tiny))
    if not len(idx):
        return
    tree = shapely.STRtree(faces)
    for i in idx:
        near = [j for j in tree.query(faces[i], predicate="intersects") if j != i and inside[j]]
        if not near:
            continue
        shared = shapely.length(shapely.intersection(faces[i].boundary,
                                                     shapely.boundary(faces[near])))
        if shared.max() > 0:
            owner[i] = owner[near[int(np.argmax(shared))]]


# --------------------------------------------------------------------------------- sampling


def random_points_in(
    rng: np.random.Generator, geom: BaseGeometry, n: int, decimals: int | None = None
) -> np.ndarray:
    """`n` uniform random lon/lat points inside `geom` (after rounding to `decimals`)."""
    shapely.prepare(geom)
    x0, y0, x1, y1 = geom.bounds
    frac = max(float(shapely.area(geom)) / ((x1 - x0) * (y1 - y0)), 0.01)
    found: list[np.ndarray] = []
    count = 0
    while count < n:
        m = int((n - count) / frac * 1.3) + 16
        pts = np.column_stack([rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)])
        if decimals is not None:
            pts = np.round(pts, decimals)
        pts = pts[shapely.contains_xy(geom, pts[:, 0], pts[:, 1])]
        found.append(pts)
        count += len(pts)
    return np.concatenate(found)[:n]


def spread_points(
    rng: np.random.Generator,
    geom: BaseGeometry,
    n: int,
    fixed: np.ndarray | None = None,
    candidates: int = 24,
    edge_weight: float = 0.0,
) -> np.ndarray:
    """`n` points inside `geom`, spread apart (Mitchell's best candidate), avoiding `fixed`.

    With `edge_weight` > 0 a candidate's score is also limited by its distance to the boundary,
    so points keep off the edges.
    """
    have = to_xy(fixed) if fixed is not None and len(fixed) else np.empty((0, 2))
    boundary = to_xy_geom(geom.boundary) if edge_weight else None
    out = []
    for _ in range(n):
        cand = random_points_in(rng, geom, candidates)
        cxy = to_xy(cand)
        if len(have):
            d = np.sqrt(((cxy[:, None, :] - have[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
        else:
            d = np.full(len(cand), np.inf)
        if boundary is not None:
            d = np.minimum(d, edge_weight * shapely.distance(boundary, shapely.points(cxy)))
        best = int(np.argmax(d))
        out.append(cand[best])
        have = np.vstack([have, cxy[best]])
    return np.array(out).reshape(-1, 2)


def blob(
    rng: np.random.Generator, centre: Sequence[float], area_km2: float, roughness: float = 0.25
) -> Polygon:
    """An irregular, star-shaped polygon of about `area_km2` around `centre` (lon/lat)."""
    k = 40
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    # A few low-frequency harmonics give plausible, smooth outlines.
    r = np.ones(k)
    for h in (2, 3, 5):
        r += roughness / h * rng.normal() * np.cos(h * angles + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.4, None)
    stretch = rng.uniform(0.75, 1.3)
    xs, ys = r * np.cos(angles) * stretch, r * np.sin(angles) / stretch
    poly = Polygon(np.column_stack([xs, ys]))
    scale = math.sqrt(area_km2 / (poly.area * KM_PER_DEG_LAT**2))
    x = centre[0] + xs * scale / COS_LAT
    y = centre[1] + ys * scale
    return snap(Polygon(np.column_stack([x, y])))


def nearest_inside(geom: BaseGeometry, lon: float, lat: float, margin_km: float = 1.0) -> Point:
    """The point itself when inside `geom`, else the nearest point well inside it."""
    p = Point(lon, lat)
    if geom.contains(p):
        return p
    core = buffer_km(geom, -margin_km)
    if core.is_empty:
        core = geom
    return shapely.ops.nearest_points(core, p)[0]


def as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    polys = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and not g.is_empty]
    return MultiPolygon(polys)


def ensure_ccw(geom: BaseGeometry) -> BaseGeometry:
    """RFC 7946 winding: exterior rings counter-clockwise, holes clockwise."""
    return shapely.orient_polygons(geom, exterior_cw=False)

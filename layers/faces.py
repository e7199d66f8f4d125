"""A raster of the faces of the routing layers' overlay, for batches of exact points.

Every polygon boundary of every routing layer is drawn into a fine raster over the layers'
extent, widened by one cell. A cell that no boundary comes near lies wholly inside one face of
the overlay of all routing layers (the same county, township, grid, park, sea area and
jurisdictions everywhere in it), and so does every cell it is connected to through other such
cells. Those connected regions are labelled once (scipy.ndimage.label) and each is looked up at
one point of it with the exact finder: afterwards a point in such a cell gets its polygon sets
from two array lookups, with no geometry test at all. Points in a cell near a boundary (a few
per cent of an area) go the exact way, so answers are the same as the exact finder's, including
points on a boundary.

Why the marking is enough: boundaries are densified so that consecutive vertices are at most a
quarter cell apart; every point of a boundary is then within an eighth of a cell of a vertex. A
vertex's cell is marked, and so is the neighbour across any side of that cell (and the corner
cell between two such sides) the vertex lies within MARGIN (a little more than an eighth) of: a
boundary point's cell is then always marked, even a point lying exactly on a cell edge,
whichever side rounding puts it. A marked band is so about one cell and a third wide, not three
cells as when every vertex marked its eight neighbours: on the sample 2.5 % of the area is near a
boundary instead of 6 %, for the same raster.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np
import shapely

from layers.schema import ROUTING_LAYERS
from layers.store import Snapshot

Sets = tuple[tuple[int, ...], ...]

# Raster size: the cell is chosen so that the band of boundary cells covers about this share of
# the extent, within these bounds on the number of cells (16 M cells: 64 MB of labels).
BOUNDARY_SHARE = 0.03
BAND_CELLS = 1.3  # how wide the marked band along a boundary is, in cells (see _mark)
# Densify boundaries to this fraction of a cell; a vertex this close to a side of its cell marks
# the neighbour too. Any boundary point is within STEP / 2 of a vertex; the extra 1/64 of a cell
# is far beyond rounding (cell indices are below 10^4, float64 errors near 10^-12). A finer STEP
# narrows the band a little more but costs more vertices to mark (sample: 1/8 → 2.3 % of the
# area near, built in 1.6 s; 1/4 → 2.5 %, 0.9 s; 1/2 → 2.9 %, 0.9 s).
STEP = 1 / 4
MARGIN = STEP / 2 + 1 / 64
MIN_CELLS = 256 * 256
MAX_CELLS = 4096 * 4096
# Building the raster costs about as much as routing this many points through the finder: a
# batch this large builds it; once built (per layer version) smaller batches use it too.
MIN_BATCH = 200_000
MIN_BATCH_BUILT = 2_000
_BUILDING = threading.Lock()


class FaceIndex:
    """Face raster of one snapshot's routing layers (see the module docstring)."""

    _cache: ClassVar[dict[tuple[str, int], FaceIndex]] = {}

    def __init__(self, snapshot: Snapshot, finder=None) -> None:
        from layers.finder import MemoryFinder

        # Points near a boundary go to STRtrees in this process whatever the store: a batch's
        # few hundred thousand such points are 3× faster here than by SQL (bench_postgis).
        self.finder = MemoryFinder.for_snapshot(snapshot)
        geoms = [np.asarray(snapshot[n].geometry.values, dtype=object) for n in ROUTING_LAYERS]
        present = [g for g in geoms if len(g)]
        bounds = np.array([shapely.total_bounds(g) for g in present]) if present else None
        if bounds is None or not np.isfinite(bounds).all():
            raise ValueError("no routing polygons")
        minx, miny = bounds[:, 0].min(), bounds[:, 1].min()
        maxx, maxy = bounds[:, 2].max(), bounds[:, 3].max()
        boundaries = [shapely.boundary(g) for g in present]
        length = float(sum(shapely.length(b).sum() for b in boundaries))
        # Square cells in degrees are fine at Nantong's latitude: the band is what matters.
        width, height = maxx - minx, maxy - miny
        cell = BOUNDARY_SHARE * width * height / (BAND_CELLS * max(length, 1e-12))
        cell = max(cell, np.sqrt(width * height / MAX_CELLS))
        cell = min(cell, np.sqrt(width * height / MIN_CELLS))
        # Two cells of margin: a point outside the raster is away from every polygon.
        self.x0, self.y0, self.cell = minx - 2 * cell, miny - 2 * cell, cell
        self.nx = int(np.ceil(width / cell)) + 5
        self.ny = int(np.ceil(height / cell)) + 5

        from scipy import ndimage  # only a batch needs it: keep single routes light

        near = np.zeros(self.ny * self.nx, dtype=bool)
        for b in boundaries:
            xy = shapely.get_coordinates(shapely.segmentize(b, cell * STEP))
            _mark(near, self.nx, (xy[:, 0] - self.x0) / cell, (xy[:, 1] - self.y0) / cell)
            del xy
        near = near.reshape(self.ny, self.nx)
        labels, count = ndimage.label(~near)
        self.labels = labels.astype(np.int32, copy=False)
        # One cell of each region: whichever write wins, it is a cell of that region.
        flat = self.labels.ravel()
        first = np.zeros(count + 1, dtype=np.int64)
        first[flat[::-1]] = np.arange(flat.size - 1, -1, -1, dtype=np.int32)
        reps = first[1:]
        cx = self.x0 + (reps % self.nx + 0.5) * cell
        cy = self.y0 + (reps // self.nx + 0.5) * cell
        region_sets = _sets_at(self.finder, cx, cy)
        # Regions with the same polygon sets share a face (the sea, a grid cut by a park …).
        self.sets: list[Sets] = []
        ids: dict[Sets, int] = {}
        face_of_region = np.full(count + 1, -1, dtype=np.int32)
        empty: Sets = tuple(() for _ in ROUTING_LAYERS)
        self._empty = ids.setdefault(empty, 0)
        for region, sets in enumerate(region_sets, start=1):
            if sets is not None:
                face_of_region[region] = ids.setdefault(sets, len(ids))
        self.sets = list(ids)
        self.face_of_region = face_of_region
        self.near_share = float(np.count_nonzero(near)) / near.size

    @classmethod
    def built(cls, snapshot: Snapshot) -> bool:
        return (snapshot.generation.created_at, snapshot.generation.id) in cls._cache

    @classmethod
    def for_snapshot(cls, snapshot: Snapshot, finder) -> FaceIndex:
        if getattr(snapshot, "scope", None) is not None:
            raise ValueError("a snapshot of one place has no face raster of its own")
        key = (snapshot.generation.created_at, snapshot.generation.id)
        with _BUILDING:  # one build per version, whichever thread (session) asks first
            found = cls._cache.get(key)
            if found is None:
                found = cls(snapshot, finder)
                while len(cls._cache) >= 2:  # large arrays: the current version and one more
                    cls._cache.pop(next(iter(cls._cache)), None)
                cls._cache[key] = found
        return found

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Per exact point its face id (an index into `sets`); -1 where the point is near a
        boundary (or not finite): those go the exact way."""
        fx = np.floor((lon - self.x0) / self.cell)
        fy = np.floor((lat - self.y0) / self.cell)
        finite = np.isfinite(fx) & np.isfinite(fy)
        inside = finite & (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        face = np.full(len(lon), -1, dtype=np.int32)
        ix, iy = fx[inside].astype(np.int64), fy[inside].astype(np.int64)
        face[inside] = self.face_of_region[self.labels[iy, ix]]
        # Beyond the raster's margin no polygon is near: the face of "nothing here".
        outside = finite & ~inside
        face[outside] = self._empty
        return face


def _mark(near: np.ndarray, nx: int, fx: np.ndarray, fy: np.ndarray) -> None:
    """Mark the cells of vertices given in cell units, and their neighbours across the sides
    (and corners) the vertex lies within MARGIN of (the raster's margin keeps them on it)."""
    for start in range(0, len(fx), 4_000_000):  # bounded temporaries on a long boundary
        x, y = fx[start:start + 4_000_000], fy[start:start + 4_000_000]
        ix, iy = np.floor(x), np.floor(y)
        rx, ry = x - ix, y - iy
        dx = np.where(rx < MARGIN, -1, np.where(rx > 1 - MARGIN, 1, 0))
        dy = np.where(ry < MARGIN, -1, np.where(ry > 1 - MARGIN, 1, 0))
        cell = iy.astype(np.int64) * nx + ix.astype(np.int64)
        near[cell] = True
        near[(cell + dx)[dx != 0]] = True
        near[(cell + dy * nx)[dy != 0]] = True
        both = (dx != 0) & (dy != 0)
        near[(cell + dy * nx + dx)[both]] = True


def _sets_at(finder, x: np.ndarray, y: np.ndarray) -> list[Sets | None]:
    """The polygon sets at points known to be away from every boundary (one finder call);
    None where the finder still sees an edge (it cannot, but then that region stays exact)."""
    from layers.finder import Queries

    hits = finder.find(Queries.build(x, y))
    on_edge = set(hits.query[hits.edge].tolist())
    grouped: list[list[set[int]]] = [[set() for _ in ROUTING_LAYERS] for _ in range(len(x))]
    for layer, q, row in zip(hits.layer.tolist(), hits.query.tolist(), hits.row.tolist(),
                             strict=True):
        grouped[q][layer].add(row)
    return [None if q in on_edge else tuple(tuple(sorted(s)) for s in g)
            for q, g in enumerate(grouped)]

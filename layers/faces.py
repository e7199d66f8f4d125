"""A raster of the faces of the routing layers' overlay, for batches of exact points.

Every polygon boundary of every routing layer is drawn into a fine raster over the layers'
extent, widened by one cell. A cell that no boundary comes near lies wholly inside one face of
the overlay of all routing layers (the same county, township, grid, park, sea area and
jurisdictions everywhere in it), and so does every cell it is connected to through other such
cells. Those connected regions are labelled once (scipy.ndimage.label) and each is looked up at
one point of it with the exact finder: afterwards a point in such a cell gets its polygon sets
from one array lookup, with no geometry test at all. Points in a cell near a boundary (a few
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

Built once per content: the raster is kept in a cache folder (`cache_dir()`), named by a hash
of everything it depends on (every routing polygon in row order, and this module's constants),
so that a new process — `gridmap assign`, a second app process — reads it (tens of
milliseconds) instead of building it again (1–2 s). A file that does not read back whole and
consistent is ignored and rebuilt; a folder that cannot be written only costs the rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, ClassVar

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
# batch this large builds it; once built (per layer version) any batch uses it, a single point
# too (a served process reads or builds it before it listens: grids/service.py `warm`).
MIN_BATCH = 200_000
_BUILDING = threading.Lock()
# What a cache file holds; a change here or in the constants above makes a new file name.
FORMAT = 1
KEEP_FILES = 4  # the most recently used rasters kept in the cache folder (≤ 64 MB each)


def cache_dir() -> Path | None:
    """Where rasters (and the answers of their faces) are kept: GRIDMAP_CACHE_DIR (``off``:
    nowhere), else $XDG_CACHE_HOME/gridmap, else ~/.cache/gridmap — None too when that folder
    cannot be trusted (`_trusted`)."""
    given = os.environ.get("GRIDMAP_CACHE_DIR", "")
    if given.lower() == "off":
        return None
    if given:
        folder = Path(given) / "faces"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base) / "gridmap" / "faces"
    return folder if _trusted(folder) else None


def _trusted(folder: Path) -> bool:
    """Whether what lies in `folder` may be believed: a file there decides answers (which
    grid, which bureau), so it must be a folder of this user that no one else may write in —
    or not exist yet (it is then made owner-only). Anything else: no cache, every raster built
    in the process."""
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


class FaceIndex:
    """Face raster of one snapshot's routing layers (see the module docstring)."""

    _cache: ClassVar[dict[tuple[str, int], FaceIndex]] = {}

    def __init__(self, snapshot: Snapshot, finder=None, *, stored: dict | None = None) -> None:
        from layers.finder import MemoryFinder

        # Points near a boundary go to STRtrees in this process whatever the store: a batch's
        # few hundred thousand such points are 3× faster here than by SQL (bench_postgis).
        self.finder = MemoryFinder.for_snapshot(snapshot)
        self.loaded = stored is not None
        # The content hash this raster was kept under ("" when no cache folder): what the
        # answers per face (grids/face_answers.py) are kept under too.
        self.content = ""
        self._signatures: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._sets: list[Sets] | None = None
        if stored is not None:
            self._adopt(stored)
        else:
            self._build(snapshot)

    def _build(self, snapshot: Snapshot) -> None:
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
        ids: dict[Sets, int] = {}
        face_of_region = np.full(count + 1, -1, dtype=np.int32)
        empty: Sets = tuple(() for _ in ROUTING_LAYERS)
        self._empty = ids.setdefault(empty, 0)
        for region, sets in enumerate(region_sets, start=1):
            if sets is not None:
                face_of_region[region] = ids.setdefault(sets, len(ids))
        self._sets = list(ids)
        self._set_sizes = np.array([len(layer) for sets in ids for layer in sets], dtype=np.int64)
        self._set_rows = np.array([r for sets in ids for layer in sets for r in layer],
                                  dtype=np.int64)
        # One array lookup per point: the face of each cell (-1 near a boundary).
        self.cell_face = face_of_region[self.labels]
        del self.labels
        self.near_share = float(np.count_nonzero(near)) / near.size

    # -- the cache file -----------------------------------------------------------------------
    @staticmethod
    def fingerprint(snapshot: Snapshot) -> str:
        """A hash of what the raster depends on: this module's constants and every routing
        polygon, in row order (face sets name rows)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(repr((FORMAT, BOUNDARY_SHARE, BAND_CELLS, STEP, MARGIN, MIN_CELLS,
                       MAX_CELLS)).encode())
        for name in ROUTING_LAYERS:
            geoms = np.asarray(snapshot[name].geometry.values, dtype=object)
            h.update(f"|{name}:{len(geoms)}|".encode())
            for wkb in shapely.to_wkb(geoms, hex=False).tolist():
                h.update(len(wkb).to_bytes(8, "little"))
                h.update(wkb)
        return h.hexdigest()

    def _arrays(self, key: str) -> dict[str, np.ndarray]:
        return {
            "key": np.array(key),
            "grid": np.array([self.x0, self.y0, self.cell, self.near_share]),
            "cell_face": self.cell_face,
            "set_sizes": self._set_sizes,
            "set_rows": self._set_rows,
            "empty": np.array(self._empty),
        }

    # -- the faces' polygon sets: flat arrays, tuples made when asked ----------------------------
    @property
    def count(self) -> int:
        """How many faces the raster has."""
        return len(self._set_sizes) // len(ROUTING_LAYERS)

    @property
    def sets(self) -> list[Sets]:
        """The polygon sets of every face (made on first use: a process reading the raster and
        the kept answers of its faces needs only a few)."""
        if self._sets is None:
            self._sets = [self.face_sets(f) for f in range(self.count)]
        return self._sets

    @cached_property
    def _set_starts(self) -> np.ndarray:
        """Where each (face, layer) set begins in `_set_rows`."""
        return np.cumsum(self._set_sizes) - self._set_sizes

    def face_sets(self, face: int) -> Sets:
        """The polygon sets of one face: per routing layer its rows, ascending."""
        if self._sets is not None:
            return self._sets[face]
        layers = len(ROUTING_LAYERS)
        at, size = self._set_starts[face * layers:(face + 1) * layers], self._set_sizes[
            face * layers:(face + 1) * layers]
        return tuple(tuple(self._set_rows[a:a + n].tolist())
                     for a, n in zip(at.tolist(), size.tolist(), strict=True))

    def _adopt(self, a: dict) -> None:
        """Take the arrays of a cache file, checking that they are whole and consistent (an
        error here means: rebuild)."""
        x0, y0, cell, near_share = (float(v) for v in a["grid"])
        cell_face = a["cell_face"]
        sizes, rows = a["set_sizes"], a["set_rows"]
        layers = len(ROUTING_LAYERS)
        if (cell_face.dtype != np.int32 or cell_face.ndim != 2 or len(sizes) % layers
                or sizes.sum() != len(rows) or (sizes < 0).any()
                or not np.isfinite(cell) or cell <= 0):
            raise ValueError("inconsistent face raster file")
        n_sets = len(sizes) // layers
        if cell_face.size and (cell_face.min() < -1 or cell_face.max() >= n_sets):
            raise ValueError("face raster file names faces it does not hold")
        self._set_sizes = sizes.astype(np.int64)
        self._set_rows = rows.astype(np.int64)
        self._sets = None
        self._empty = int(a["empty"])
        if not 0 <= self._empty < n_sets or self._set_sizes[
                self._empty * layers:(self._empty + 1) * layers].any():
            raise ValueError("face raster file without the empty face")
        self.x0, self.y0, self.cell, self.near_share = x0, y0, cell, near_share
        self.ny, self.nx = cell_face.shape
        self.cell_face = cell_face

    @classmethod
    def _load(cls, snapshot: Snapshot, folder: Path, key: str) -> FaceIndex | None:
        path = folder / f"faces-{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            if str(arrays["key"]) != key:
                return None
            found = cls(snapshot, stored=arrays)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged file is rebuilt, never trusted
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept by _save's pruning
        return found

    def _save(self, folder: Path, key: str) -> None:
        keep_file(folder, f"faces-{key}.npz", lambda out: np.savez(out, **self._arrays(key)))

    @classmethod
    def built(cls, snapshot: Snapshot) -> bool:
        return (snapshot.shared
                and (snapshot.generation.created_at, snapshot.generation.id) in cls._cache)

    @classmethod
    def for_snapshot(cls, snapshot: Snapshot, finder) -> FaceIndex:
        if not snapshot.shared:
            raise ValueError("a snapshot of one place, or a draft's, has no face raster")
        key = (snapshot.generation.created_at, snapshot.generation.id)
        with _BUILDING:  # one build per version, whichever thread (session) asks first
            found = cls._cache.get(key)
            if found is None:
                folder = cache_dir()
                content = cls.fingerprint(snapshot) if folder is not None else ""
                found = cls._load(snapshot, folder, content) if folder is not None else None
                if found is None:
                    found = cls(snapshot, finder)
                    if folder is not None:
                        found._save(folder, content)
                found.content = content
                while len(cls._cache) >= 2:  # large arrays: the current version and one more
                    cls._cache.pop(next(iter(cls._cache)), None)
                cls._cache[key] = found
        return found

    def of_signatures(self, rows: np.ndarray) -> np.ndarray:
        """Per row of polygon rows — per layer the lowest, then per layer the highest of at
        most two (-1: none) — the face with exactly those sets, or -1. By a sorted hash of
        every face's row (built on first use), each match checked exactly."""
        if self._signatures is None:
            table = self._signature_table()
            hashed = row_hash(table)
            order = np.argsort(hashed, kind="stable")
            self._signatures = (hashed[order], order, table)
        keys, order, table = self._signatures
        out = np.full(len(rows), -1, dtype=np.int32)
        if not len(keys) or not len(rows):
            return out
        hashed = row_hash(rows)
        at = np.minimum(np.searchsorted(keys, hashed), len(keys) - 1)
        face = order[at]
        same = (keys[at] == hashed) & (table[face] == rows).all(axis=1)
        out[same] = face[same]
        return out

    def _signature_table(self) -> np.ndarray:
        """Per face its first and last row per layer (-1: none; the rows are ascending), or -2
        throughout for a face with more than two polygons of a layer (never matched)."""
        layers = len(ROUTING_LAYERS)
        sizes = self._set_sizes.reshape(-1, layers)
        starts = self._set_starts.reshape(-1, layers)
        rows = np.append(self._set_rows, -1)  # an empty set points at this -1
        empty = sizes == 0
        first = rows[np.where(empty, len(rows) - 1, starts)]
        last = rows[np.where(empty, len(rows) - 1, starts + sizes - 1)]
        table = np.hstack([first, last])
        table[(sizes > 2).any(axis=1)] = -2
        return table

    def face_at(self, lon: float, lat: float) -> int:
        """`lookup` of one point without arrays (a click, an API call): the same floor of the
        same float division, so the same cell."""
        fx, fy = (lon - self.x0) / self.cell, (lat - self.y0) / self.cell
        if not (math.isfinite(fx) and math.isfinite(fy)):
            return -1
        ix, iy = math.floor(fx), math.floor(fy)
        if 0 <= ix < self.nx and 0 <= iy < self.ny:
            return int(self.cell_face[iy, ix])
        return self._empty

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Per exact point its face id (an index into `sets`); -1 where the point is near a
        boundary (or not finite): those go the exact way."""
        fx = np.floor((lon - self.x0) / self.cell)
        fy = np.floor((lat - self.y0) / self.cell)
        finite = np.isfinite(fx) & np.isfinite(fy)
        inside = finite & (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        face = np.full(len(lon), -1, dtype=np.int32)
        ix, iy = fx[inside].astype(np.int64), fy[inside].astype(np.int64)
        face[inside] = self.cell_face[iy, ix]
        # Beyond the raster's margin no polygon is near: the face of "nothing here".
        outside = finite & ~inside
        face[outside] = self._empty
        return face


# A temporary file older than this in the cache folder was left by a killed process.
STALE_SECONDS = 3600


def keep_file(folder: Path, name: str, write: Callable[[BinaryIO], object]) -> None:
    """Keep a cache file `name` (``kind-key.ext``) in `folder`, written by `write` whole or not
    at all (a temporary file, owner-only, renamed); then keep only the KEEP_FILES most recently
    used of its kind, and remove temporary files a killed process left. A folder that cannot be
    written costs only the file: the next process makes it again."""
    kind, ext = name.split("-", 1)[0], name.rsplit(".", 1)[-1]
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{kind}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        kept = sorted(folder.glob(f"{kind}-*.{ext}"), key=lambda p: p.stat().st_mtime,
                      reverse=True)
        now = time.time()
        stale = [p for p in folder.glob(f".{kind}-*.tmp")
                 if now - p.stat().st_mtime > STALE_SECONDS]
        for old in [*kept[KEEP_FILES:], *stale]:
            with contextlib.suppress(OSError):
                old.unlink()
    except OSError:
        pass


def row_hash(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of small integers (-2 and up): equal rows, equal hashes; unequal
    rows collide rarely, so callers check a match exactly."""
    weights = np.random.default_rng(7).integers(1, 2**62, size=rows.shape[1], dtype=np.int64)
    with np.errstate(over="ignore"):
        return (rows.astype(np.int64) + 2) @ weights


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

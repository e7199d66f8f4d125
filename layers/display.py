"""Display versions of the layers: what a web map draws, not what routing matches against.

Per zoom band a polygon layer is simplified with `shapely.coverage_simplify`, so the edge two
grids (or townships) share stays one line on screen, without slivers or gaps; coordinates are
rounded to what the band can show and sent as delta-encoded integers; properties are short
columns. Results are cached per generation. Routing never reads these geometries.

Layers that are not one valid coverage (parks overlap: a chemical park inside a national zone;
dedicated grids overlap comprehensive ones) are simplified per group that is (per kind), and
polygon by polygon where even that fails.

The encoded polygon layer ("gridmap-polygons/1"), decoded by static/gridmap/gridmap.js and by
`decode_polygons` below:

    {"format": "gridmap-polygons/1", "layer": "grids", "level": 0, "scale": 10000,
     "count": n, "props": {"c": [...], "n": [...], ...},   # one list per key, n values each
     "dicts": {"t": ["观音山街道", ...]},                    # props coded as indexes into these
     "geoms": [[[x0, y0, dx1, dy1, ...], [hole...]], [second polygon...]], ...]}

`geoms[i]` is feature i's list of polygons; a polygon is a list of rings (shell first); a ring
is flat integers (lon·scale, lat·scale), the first pair absolute and the rest differences to the
previous vertex, ring closed (last vertex = first).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from layers.store import Snapshot

# A point transform for display (e.g. WGS84 → GCJ-02 under an offset basemap): lon, lat arrays
# in, lon, lat arrays out.
Shift = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
FORMAT = "gridmap-polygons/1"


@dataclass(frozen=True)
class Level:
    """One zoom band, used for zooms up to `max_zoom` (inclusive)."""

    index: int
    max_zoom: int
    tolerance: float  # degrees: about half a screen pixel at the band's largest zoom
    decimals: int  # coordinates are rounded to 10**-decimals degrees


# At 32°N a screen pixel is ~130 m at zoom 10, ~16 m at zoom 13 and ~2 m at zoom 16.
LEVELS = (
    Level(0, 10, 0.0006, 4),
    Level(1, 13, 0.00008, 5),
    Level(2, 30, 0.00001, 6),
)
POLYGON_DISPLAY_LAYERS = ("counties", "townships", "sea_areas", "jurisdictions", "parks", "grids")
KINDS = {
    "grids": ("comprehensive", "park", "dedicated"),
    "parks": ("chemical_park", "dev_zone_national", "dev_zone_provincial", "other"),
}
ENTITY_SCALE = 100_000  # entity coordinates to 1e-5 degree (about 1 m)
ENTITY_CHUNK = 500  # entities per details file


def level_for_zoom(zoom: float) -> Level:
    return next((lv for lv in LEVELS if zoom <= lv.max_zoom), LEVELS[-1])


# -- geometry -------------------------------------------------------------------------------------
def _simplify_group(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    if len(geoms) > 1 and shapely.coverage_is_valid(geoms):
        return shapely.coverage_simplify(geoms, tolerance)
    return shapely.simplify(geoms, tolerance, preserve_topology=True)


def simplify(geoms, tolerance: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Simplify keeping shared edges shared: one coverage per group (e.g. per grid kind)."""
    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    if not len(geoms):
        return out
    if groups is None:
        out[:] = _simplify_group(geoms, tolerance)
        return out
    for value in pd.unique(groups):
        rows = np.flatnonzero(groups == value)
        out[rows] = _simplify_group(geoms[rows], tolerance)
    return out


def _ring_ints(xy: np.ndarray, scale: int, shift: Shift | None) -> np.ndarray | None:
    if shift is not None:
        x, y = shift(xy[:, 0], xy[:, 1])
        xy = np.column_stack([x, y])
    ints = np.round(xy * scale).astype(np.int64)
    # Rounding makes close neighbours equal: drop the repeats (the ring stays closed).
    keep = np.ones(len(ints), dtype=bool)
    keep[1:] = np.any(ints[1:] != ints[:-1], axis=1)
    ints = ints[keep]
    return ints if len(ints) >= 4 else None


def encode_geometry(geom, scale: int, shift: Shift | None = None) -> list:
    """One (multi)polygon as lists of delta-encoded integer rings; [] when below display size."""
    polys = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly is None or poly.is_empty or poly.geom_type != "Polygon":
            continue
        shell = _ring_ints(np.asarray(poly.exterior.coords), scale, shift)
        if shell is None:
            continue
        rings = [shell]
        for hole in poly.interiors:
            ints = _ring_ints(np.asarray(hole.coords), scale, shift)
            if ints is not None:
                rings.append(ints)
        polys.append([_deltas(r) for r in rings])
    return polys


def _deltas(ints: np.ndarray) -> list[int]:
    out = ints.copy()
    out[1:] -= ints[:-1]
    return out.ravel().tolist()


def decode_polygons(data: dict) -> list:
    """The shapely geometries of an encoded layer (for tests and checks; the browser decodes the
    same format in gridmap.js)."""
    scale = data["scale"]
    out = []
    for parts in data["geoms"]:
        polys = []
        for rings in parts:
            coords = [np.cumsum(np.asarray(r, dtype=np.int64).reshape(-1, 2), axis=0) / scale
                      for r in rings]
            polys.append(shapely.Polygon(coords[0], coords[1:]))
        out.append(shapely.MultiPolygon(polys) if polys else shapely.MultiPolygon())
    return out


# -- properties -----------------------------------------------------------------------------------
def _names(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["code"].astype(str), frame["name"].astype(str), strict=True))


def _dict_code(values: list[str]) -> tuple[list[str], list[int]]:
    """Dictionary-encode repeated text: (distinct values sorted, index per value)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object).fillna("").astype(str),
                                  sort=True)
    return [str(u) for u in uniques], codes.tolist()


def layer_properties(snapshot: Snapshot, name: str) -> tuple[dict[str, list], dict[str, list]]:
    """(columns, dictionaries) of what tooltips and styles need. Keys: c code, n name, k kind
    (index into KINDS[name]), p county name, t township name, m community, l bureau level."""
    frame = snapshot[name]
    counties = _names(snapshot["counties"])
    dicts: dict[str, list] = {}
    if name in ("counties", "townships", "sea_areas", "parks", "grids"):
        props: dict[str, list] = {"c": frame["code"].astype(str).tolist(),
                                  "n": frame["name"].astype(str).tolist()}
    if name in ("townships", "sea_areas", "parks"):
        dicts["p"], props["p"] = _dict_code([counties.get(c, c) for c in frame["county_code"]])
    if name in KINDS:
        kinds = KINDS[name]
        props["k"] = [kinds.index(k) if k in kinds else len(kinds) - 1 for k in frame["kind"]]
    if name == "grids":
        townships = _names(snapshot["townships"])
        dicts["t"], props["t"] = _dict_code([townships.get(t, t) for t in frame["township_code"]])
        communities = [(a or {}).get("community", "") for a in frame["attrs"]]
        dicts["m"], props["m"] = _dict_code(communities)
    if name == "jurisdictions":
        bureaus = snapshot["bureaus"]
        names = _names(bureaus)
        levels = dict(zip(bureaus["code"], bureaus["level"], strict=True))
        codes = frame["bureau_code"].astype(str).tolist()
        props = {"c": codes, "n": [names.get(c, c) for c in codes],
                 "l": [levels.get(c, "") for c in codes]}
    return props, dicts


def _groups(snapshot: Snapshot, name: str) -> np.ndarray | None:
    return snapshot[name]["kind"].to_numpy(object) if name in KINDS else None


# -- cache ----------------------------------------------------------------------------------------
class _Lru(OrderedDict):
    """A small LRU cache shared by the app's threads (page runs, the map data writer). Values
    are computed under the lock: each is made once, and they are made rarely (per generation)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.RLock()  # re-entrant: making one value may need another

    def get_or(self, key, make):
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            value = make()
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
            return value


_CACHE = _Lru(96)


# What the map's files of the entities are made from (all of them, per generation).
_ENTITY_CACHES = ("entity_order", "entities", "entity_xy", "entity_tiles")


def forget_entities(snapshot: Snapshot) -> None:
    """The cached encodings of every entity of the snapshot let go (the map's files written:
    a served process needs them no more)."""
    key = generation_key(snapshot)
    with _CACHE.lock:
        for k in [k for k in _CACHE if k[0] == key and k[1] in _ENTITY_CACHES]:
            del _CACHE[k]


def generation_key(snapshot: Snapshot) -> tuple[str, int]:
    g = snapshot.generation
    return (g.created_at, g.id)


def simplified(snapshot: Snapshot, name: str, level: Level | int) -> np.ndarray:
    """The simplified geometries of a polygon layer at a zoom band (cached per generation)."""
    level = LEVELS[level] if isinstance(level, int) else level
    return _CACHE.get_or(
        (generation_key(snapshot), "simplified", name, level.index),
        lambda: simplify(snapshot[name].geometry.values, level.tolerance, _groups(snapshot, name)),
    )


def encode_layer(snapshot: Snapshot, name: str, level: Level | int, shift: Shift | None = None,
                 shift_key: str = "") -> dict:
    """The encoded display layer (see the module docstring), cached per generation. `shift_key`
    names the `shift` in the cache key ("" when there is none)."""
    level = LEVELS[level] if isinstance(level, int) else level

    def make() -> dict:
        scale = 10**level.decimals
        geoms = [encode_geometry(g, scale, shift) for g in simplified(snapshot, name, level)]
        props, dicts = layer_properties(snapshot, name)
        return {"format": FORMAT, "layer": name, "level": level.index, "scale": scale,
                "count": len(geoms), "props": props, "dicts": dicts, "geoms": geoms}

    return _CACHE.get_or(
        (generation_key(snapshot), "encoded", name, level.index, shift_key if shift else ""), make
    )


# Written as \u escapes (the same JSON): text of the data can then never close a <script>
# or open a comment if a file is ever inlined in a page, and U+2028/U+2029 never end a line.
_SCRIPT_SAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                ("\u2029", "\\u2029"))


def compact_json(data) -> bytes:
    """JSON without spaces and with Chinese as UTF-8 (a third of the size of \\u escapes);
    `<`, `>`, `&` (and U+2028/U+2029) as \\u escapes, so it is also safe inside a <script>.
    The map reads these files with fetch().json(), never as code."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _SCRIPT_SAFE:  # str.replace: 10× faster than translate on big layers
        if char in text:
            text = text.replace(char, escaped)
    return text.encode()


# -- entities -------------------------------------------------------------------------------------
def _morton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Z-order of points, so that entities near each other are near in the list (small deltas,
    and a details chunk covers one area rather than the whole city)."""
    def spread(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.uint64) & np.uint64(0xFFFF)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    def norm(v: np.ndarray) -> np.ndarray:
        lo, hi = np.nanmin(v), np.nanmax(v)
        return np.zeros(len(v)) if hi <= lo else (v - lo) / (hi - lo) * 65535

    return spread(norm(x)) | (spread(norm(y)) << np.uint64(1))


def entity_order(snapshot: Snapshot) -> np.ndarray:
    """Positions of the snapshot's entities in display order (cached per generation)."""
    def make() -> np.ndarray:
        geoms = snapshot["entities"].geometry.values
        if not len(geoms):
            return np.array([], dtype=np.int64)
        x, y = shapely.get_x(geoms), shapely.get_y(geoms)
        return np.argsort(_morton(x, y), kind="stable")

    return _CACHE.get_or((generation_key(snapshot), "entity_order"), make)


def encode_entities(snapshot: Snapshot, shift: Shift | None = None, shift_key: str = "") -> dict:
    """Every supervised entity for a clustered layer, in display order: "xy" flat delta-encoded
    integers at ENTITY_SCALE, "s" permit-class index into "permit", "i" industry index into
    "industry". Names and the rest come in details chunks (`entity_details`)."""
    def make() -> dict:
        frame = snapshot["entities"].iloc[entity_order(snapshot)]
        geoms = frame.geometry.values
        x, y = np.asarray(shapely.get_x(geoms)), np.asarray(shapely.get_y(geoms))
        if shift is not None and len(x):
            x, y = shift(x, y)
        ints = np.round(np.column_stack([x, y]) * ENTITY_SCALE).astype(np.int64)
        permit, s = _dict_code(frame["permit_class"].tolist())
        industry, i = _dict_code(frame["industry"].tolist())
        return {"format": "gridmap-points/1", "count": len(frame), "scale": ENTITY_SCALE,
                "chunk": ENTITY_CHUNK, "xy": _deltas(ints) if len(ints) else [],
                "s": s, "permit": permit, "i": i, "industry": industry}

    return _CACHE.get_or((generation_key(snapshot), "entities", shift_key if shift else ""), make)


ENTITY_DETAIL_COLUMNS = ("id", "name", "address", "inspection_class", "grid_code", "grid_name",
                         "township_name", "workers")


def entity_details(snapshot: Snapshot, assignment: pd.DataFrame | None, chunk: int) -> list[list]:
    """Rows (ENTITY_DETAIL_COLUMNS) of the entities of one chunk of the display order.
    `assignment` is the batch-routing frame of the entities in snapshot order (or None)."""
    order = entity_order(snapshot)[chunk * ENTITY_CHUNK:(chunk + 1) * ENTITY_CHUNK]
    frame = snapshot["entities"]

    def values(table: pd.DataFrame, column: str) -> np.ndarray:
        # The chunk's rows taken first, then converted: converting the whole column for each
        # of a million entities' 2,000 chunks made a province's map files take ten minutes.
        return table[column].take(order).to_numpy(object)

    attrs = [a or {} for a in values(frame, "attrs")]
    columns = [
        [str(v) for v in values(frame, "id")],
        [str(v) for v in values(frame, "name")],
        [str(a.get("address", "")) for a in attrs],
        [str(a.get("inspection_class", "")) for a in attrs],
    ]
    for key in ("grid_code", "grid_name", "township_name", "workers"):
        if assignment is not None and key in assignment:
            cells = values(assignment, key)
            columns.append(["" if v is None or (isinstance(v, float) and v != v) else str(v)
                            for v in cells])
        else:
            columns.append([""] * len(order))
    return [list(row) for row in zip(*columns, strict=True)]


def entity_chunks(snapshot: Snapshot) -> int:
    return -(-snapshot.count("entities") // ENTITY_CHUNK)


def grid_workers(snapshot: Snapshot) -> dict[str, list[list[str]]]:
    """grid code → [[name, phone, role], …], grid workers before leaders."""
    workers = snapshot["workers"].assign(_leader=lambda w: w["role"] != "worker")
    workers = workers.sort_values(["grid_code", "_leader", "id"])
    out: dict[str, list[list[str]]] = {}
    for grid, name, phone, role in workers[["grid_code", "name", "phone", "role"]].itertuples(
        index=False
    ):
        out.setdefault(str(grid), []).append([str(name), str(phone), str(role)])
    return out


def city_bounds(snapshot: Snapshot) -> tuple[float, float, float, float]:
    """The extent to open the map on: all counties (the whole city)."""
    frame = snapshot["counties"]
    if len(frame):
        minx, miny, maxx, maxy = (float(v) for v in frame.total_bounds)
        return (minx, miny, maxx, maxy)
    return (120.2, 31.6, 121.95, 32.75)


# -- entities at every zoom: tiles of aggregated bins and of points -------------------------------
@dataclass(frozen=True)
class EntityBand:
    """Map zooms up to `max_zoom` (inclusive) show the entities of this band, fetched per
    web-mercator tile of `tile_zoom` (only the tiles in view). `bin_zoom` > 0: entities are
    counted per square bin (the web-mercator tile of `bin_zoom`, 64 px at the band's largest
    zoom) and a bin of more than one is sent as its count at its entities' mean position; 0:
    every entity is sent (the browser's cluster plugin groups them)."""

    index: int
    max_zoom: int
    tile_zoom: int
    bin_zoom: int


# One band per zoom up to 14, each with bins of 64 px (tiles of its zoom + 2) in files of
# tiles of its zoom − 2 (a view is 2–3 such tiles across); from zoom 15 every entity, in files
# of zoom-13 tiles. The files of a band hold at most 16×16 bins, whatever the number of entities.
ENTITY_BANDS = (
    *(EntityBand(i, zoom, max(zoom - 2, 0), zoom + 2) for i, zoom in enumerate(range(8, 15))),
    EntityBand(7, 30, 13, 0),
)
ENTITY_TILE_FORMAT = "gridmap-entity-tile/1"


def entity_band_for_zoom(zoom: float) -> EntityBand:
    return next((b for b in ENTITY_BANDS if zoom <= b.max_zoom), ENTITY_BANDS[-1])


def mercator_tile(lon: np.ndarray, lat: np.ndarray, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """Web-mercator tile indexes (x, y) of points at `zoom` (as gridmap.js computes them)."""
    n = 2.0**zoom
    lat = np.clip(np.asarray(lat, dtype=float), -85.0511, 85.0511)
    rad = np.radians(lat)
    x = np.floor((np.asarray(lon, dtype=float) + 180.0) / 360.0 * n)
    y = np.floor((1.0 - np.log(np.tan(rad) + 1.0 / np.cos(rad)) / np.pi) / 2.0 * n)
    top = n - 1
    return np.clip(x, 0, top).astype(np.int64), np.clip(y, 0, top).astype(np.int64)


def _display_xy(snapshot: Snapshot, shift: Shift | None, shift_key: str) -> np.ndarray:
    """Integer display positions (ENTITY_SCALE) of the entities in display order (cached)."""
    def make() -> np.ndarray:
        geoms = snapshot["entities"].geometry.values[entity_order(snapshot)]
        x, y = np.asarray(shapely.get_x(geoms)), np.asarray(shapely.get_y(geoms))
        if shift is not None and len(x):
            x, y = shift(x, y)
        return np.round(np.column_stack([x, y]) * ENTITY_SCALE).astype(np.int64).reshape(-1, 2)

    return _CACHE.get_or((generation_key(snapshot), "entity_xy", shift_key if shift else ""), make)


def entity_tiles(snapshot: Snapshot, band: EntityBand | int, shift: Shift | None = None,
                 shift_key: str = "") -> dict[str, dict]:
    """The tiles of a band: "{tx}_{ty}" → its file ("gridmap-entity-tile/1"), non-empty tiles
    only. A tile file:

        {"format": ..., "band": b, "tile": [tx, ty], "scale": 100000, "count": n,
         "points": {"xy": [...], "pos": [...], "s": [...], "i": [...]},
         "bins": {"xy": [...], "n": [...]},
         "permit": [...], "industry": [...]}

    `count` is the tile's entities: its points plus the sum of its bins' `n`. `xy` are flat
    delta-encoded integers at `scale` (as "gridmap-points/1"); a point's `pos` (delta-encoded,
    ascending) is its place in the display order, which names its details chunk
    (pos // ENTITY_CHUNK) and row (pos % ENTITY_CHUNK); `s`, `i` index `permit`, `industry`.
    Every entity is in exactly one tile of each band, as a point or counted in one bin."""
    band = ENTITY_BANDS[band] if isinstance(band, int) else band

    def make() -> dict[str, dict]:
        ints = _display_xy(snapshot, shift, shift_key)
        if not len(ints):
            return {}
        frame = snapshot["entities"].iloc[entity_order(snapshot)]
        permit, s_all = _dict_code(frame["permit_class"].tolist())
        industry, i_all = _dict_code(frame["industry"].tolist())
        s_all, i_all = np.asarray(s_all), np.asarray(i_all)
        lon, lat = ints[:, 0] / ENTITY_SCALE, ints[:, 1] / ENTITY_SCALE
        tx, ty = mercator_tile(lon, lat, band.tile_zoom)
        if band.bin_zoom:
            bx, by = mercator_tile(lon, lat, band.bin_zoom)
            cell = (bx << np.int64(32)) | by
        else:
            cell = np.arange(len(ints), dtype=np.int64)
        tile = (tx << np.int64(32)) | ty
        order = np.lexsort((np.arange(len(ints)), cell, tile))  # by tile, bin, then display order
        out: dict[str, dict] = {}
        tiles, starts = np.unique(tile[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        for k, key in enumerate(tiles.tolist()):
            members = order[bounds[k]:bounds[k + 1]]
            cells, first, counts = np.unique(cell[members], return_index=True, return_counts=True)
            single = counts == 1
            points = np.sort(members[first[single]])
            binned = np.flatnonzero(~single)
            bin_xy = np.empty((len(binned), 2), dtype=np.int64)
            group_of = np.repeat(np.arange(len(cells)), counts)  # members are sorted by cell
            sums = np.zeros((len(cells), 2))
            np.add.at(sums, group_of, ints[members].astype(float))
            if len(binned):
                bin_xy[:] = np.round(sums[binned] / counts[binned, None]).astype(np.int64)
            pos_deltas = points.copy()
            pos_deltas[1:] -= points[:-1]
            out[f"{key >> 32}_{key & 0xFFFFFFFF}"] = {
                "format": ENTITY_TILE_FORMAT, "band": band.index,
                "tile": [int(key >> 32), int(key & 0xFFFFFFFF)], "scale": ENTITY_SCALE,
                "count": len(members),
                "points": {"xy": _deltas(ints[points]) if len(points) else [],
                           "pos": pos_deltas.tolist(), "s": s_all[points].tolist(),
                           "i": i_all[points].tolist()},
                "bins": {"xy": _deltas(bin_xy) if len(binned) else [],
                         "n": counts[binned].tolist()},
                "permit": permit, "industry": industry,
            }
        return out

    return _CACHE.get_or((generation_key(snapshot), "entity_tiles", band.index,
                          shift_key if shift else ""), make)


def entity_tile_counts(snapshot: Snapshot, band: EntityBand, shift: Shift | None = None,
                       shift_key: str = "") -> dict[str, int]:
    """"{tx}_{ty}" → entities in that tile of the band (as `entity_tiles` counts them, without
    making the tiles)."""
    ints = _display_xy(snapshot, shift, shift_key)
    if not len(ints):
        return {}
    tx, ty = mercator_tile(ints[:, 0] / ENTITY_SCALE, ints[:, 1] / ENTITY_SCALE, band.tile_zoom)
    keys, counts = np.unique((tx << np.int64(32)) | ty, return_counts=True)
    return {f"{k >> 32}_{k & 0xFFFFFFFF}": int(n)
            for k, n in zip(keys.tolist(), counts.tolist(), strict=True)}


def entity_index(snapshot: Snapshot, shift: Shift | None = None, shift_key: str = "") -> dict:
    """What the browser needs to ask only for tiles that exist: per band its zooms and its
    non-empty tiles with their entity counts."""
    return {"format": "gridmap-entity-index/1", "count": len(snapshot["entities"]),
            "chunk": ENTITY_CHUNK,
            "bands": [{"index": b.index, "maxZoom": b.max_zoom, "tileZoom": b.tile_zoom,
                       "binZoom": b.bin_zoom,
                       "tiles": entity_tile_counts(snapshot, b, shift, shift_key)}
                      for b in ENTITY_BANDS]}


# -- grids only where they are legible ------------------------------------------------------------
GRID_MIN_PIXELS = 8  # a grid of median size is drawn from the zoom band where it is this wide


def grid_min_level(snapshot: Snapshot, first_zoom: float) -> int:
    """The first zoom band (index into LEVELS) in which the grid layer is drawn: the band at
    whose smallest zoom (`first_zoom` for the first band: the city view) a grid of median size
    is GRID_MIN_PIXELS wide. Below it the map shows counties and townships, and routing (which
    never reads the display layers) still answers every click. Cached per generation."""
    def make() -> int:
        geoms = np.asarray(snapshot["grids"].geometry.values, dtype=object)
        if not len(geoms):
            return 0
        width_deg = float(np.median(np.sqrt(shapely.area(geoms))))
        for level in LEVELS:
            zoom = first_zoom if level.index == 0 else LEVELS[level.index - 1].max_zoom + 1
            # degrees per pixel at this zoom (longitude, 256-px tiles; latitude narrows a
            # degree of longitude, so this errs on the side of drawing)
            if width_deg / (360.0 / (256 * 2**zoom)) >= GRID_MIN_PIXELS:
                return level.index
        return LEVELS[-1].index

    return _CACHE.get_or((generation_key(snapshot), "grid_min_level", first_zoom), make)


def empty_layer(name: str, level: Level | int) -> dict:
    """An encoded layer with no features (a layer not drawn in this zoom band)."""
    level = LEVELS[level] if isinstance(level, int) else level
    return {"format": FORMAT, "layer": name, "level": level.index, "scale": 10**level.decimals,
            "count": 0, "props": {}, "dicts": {}, "geoms": [], "hidden": True}


# -- big polygon layers per tile at the fine bands ------------------------------------------------
# A polygon layer with more features is sent per tile at bands ≥ 1 (the environment may lower
# it: the browser tests tile their ten grids).
TILED_LAYER_MIN = int(os.environ.get("GRIDMAP_MAP_TILED_MIN", "3000"))
LAYER_TILE_ZOOM = {1: 9, 2: 11}  # band → web-mercator zoom of its tiles (a view: 1–4 tiles)
TILE_MARGIN = 0.01  # degrees around a feature (covers a display shift such as GCJ-02's)


def layer_tiles(snapshot: Snapshot, name: str, level: Level | int, shift: Shift | None = None,
                shift_key: str = "") -> dict[str, dict]:
    """A polygon layer's band cut per web-mercator tile of LAYER_TILE_ZOOM[level]: "{tx}_{ty}"
    → an encoded layer (the same format) of the features whose bounding box (with
    TILE_MARGIN) touches the tile. A feature may be in several tiles: the browser draws each
    code once. Cached per generation."""
    level = LEVELS[level] if isinstance(level, int) else level
    zoom = LAYER_TILE_ZOOM[level.index]

    def make() -> dict[str, dict]:
        full = encode_layer(snapshot, name, level, shift, shift_key)
        bounds = shapely.bounds(np.asarray(snapshot[name].geometry.values, dtype=object))
        x0, y1 = mercator_tile(bounds[:, 0] - TILE_MARGIN, bounds[:, 1] - TILE_MARGIN, zoom)
        x1, y0 = mercator_tile(bounds[:, 2] + TILE_MARGIN, bounds[:, 3] + TILE_MARGIN, zoom)
        members: dict[str, list[int]] = {}
        for i in range(len(bounds)):
            if not full["geoms"][i] or np.isnan(bounds[i, 0]):
                continue
            for tx in range(int(x0[i]), int(x1[i]) + 1):
                for ty in range(int(y0[i]), int(y1[i]) + 1):
                    members.setdefault(f"{tx}_{ty}", []).append(i)
        out = {}
        for key, rows in members.items():
            props, dicts = {}, {}
            for col, values in full["props"].items():
                picked = [values[i] for i in rows]
                if col in full["dicts"]:
                    dicts[col], props[col] = _dict_code([full["dicts"][col][v] for v in picked])
                else:
                    props[col] = picked
            out[key] = {**full, "props": props, "dicts": dicts, "count": len(rows),
                        "geoms": [full["geoms"][i] for i in rows], "tile": key}
        return out

    return _CACHE.get_or((generation_key(snapshot), "layer_tiles", name, level.index,
                          shift_key if shift else ""), make)


def tiled_index(name: str, level: Level | int, tiles: dict[str, dict]) -> dict:
    """The band file of a layer sent per tile: no features, the tiles that have some."""
    level = LEVELS[level] if isinstance(level, int) else level
    return {**empty_layer(name, level), "hidden": False,
            "tiled": {"zoom": LAYER_TILE_ZOOM[level.index], "tiles": sorted(tiles)}}

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
    rows = []
    for pos in order:
        extra = frame["attrs"].iat[pos] or {}
        a = assignment.iloc[pos] if assignment is not None else {}
        rows.append([
            str(frame["id"].iat[pos]), str(frame["name"].iat[pos]),
            str(extra.get("address", "")), str(extra.get("inspection_class", "")),
            *(str(a.get(k, "") or "") for k in ("grid_code", "grid_name", "township_name",
                                               "workers")),
        ])
    return rows


def entity_chunks(snapshot: Snapshot) -> int:
    return -(-len(snapshot["entities"]) // ENTITY_CHUNK)


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

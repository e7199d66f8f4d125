"""Finding things to show on the map: entities by name, credit code or address, grids by code or
name, townships, parks, communities and villages (by the names their grids carry), roads (by
the road names in entity addresses), and workers by name (→ their grid units). Each hit has a
point or a bounding box to zoom to.

Text is compared after NFKC normalisation (full-width letters and digits become half-width),
lower-casing and removing spaces, so "９１３２ 0600" finds "913206…". Exact matches rank before
prefix matches before substring matches.
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from layers.store import Snapshot

KIND_ZH = {"entity": "监管对象", "grid": "网格", "township": "乡镇/街道", "park": "园区",
           "worker": "网格员", "county": "县（市）、区", "community": "社区/村", "road": "道路"}
KIND_ORDER = ("grid", "entity", "worker", "township", "community", "road", "park", "county")
# Hits that stand for a whole area (routed as an extent: every grid and worker in it).
AREA_KINDS = ("county", "township", "park", "community", "grid")
MAX_HITS = 30

# Where a grid names its community or village: an attribute, else its name ("永和社区第6网格").
COMMUNITY_KEYS = ("community", "village", "社区", "村", "社区/村", "community_name")
_COMMUNITY_IN_NAME = re.compile(r"^(.{1,20}?(?:社区|村|居委会|村委会))(?:第?\d+|[东南西北中]|网格)")
# An address: province, city, county, township/street, a park — then the road and number.
_ADDRESS = re.compile(
    r"^(?:[^省]{2,7}省)?(?:[^市]{2,7}市)?(?P<county>[^区县市]{1,7}[区县市])?"
    r"(?:[^镇乡路街道巷号\d]{1,8}?(?:街道|镇|乡)(?:街道)?)*"
    r"(?:[^路街道巷号\d]{1,15}?(?:工业园区|产业园区|园区|开发区|工业园|产业园))?"
)
_ROAD = re.compile(r"^(?P<road>[^\d号]{1,15}?(?:大道|路|街|巷|道))(?:\d+号)?")


@dataclass(frozen=True)
class Hit:
    kind: str  # entity, grid, township, park, worker, county
    code: str  # credit code, grid code, township code, park code, worker id
    label: str  # what to show first (the name)
    detail: str  # a second line: codes, township, phone…
    lon: float  # a point inside it (for an area: a point on its surface, not the bbox centre)
    lat: float
    bbox: tuple[float, float, float, float] | None  # what to fit, None for a point
    score: tuple = ()

    @property
    def kind_zh(self) -> str:
        return KIND_ZH[self.kind]

    @property
    def is_area(self) -> bool:
        """A whole area (route it with `Router.route_area(kind, code)`), not a point."""
        return self.kind in AREA_KINDS


def normalize(text: object) -> str:
    return "".join(unicodedata.normalize("NFKC", str(text)).lower().split()).replace("\0", "")


def address_parts(address: object) -> tuple[str, str, str]:
    """(county, road, street address) of an address: "江苏省南通市崇川区小海街道纬二路89号" →
    ("崇川区", "纬二路", "纬二路89号"). Empty strings for what it does not have."""
    text = unicodedata.normalize("NFKC", str(address or "")).strip()
    head = _ADDRESS.match(text)
    rest = text[head.end():] if head else text
    road = _ROAD.match(rest)
    county = (head.group("county") or "") if head else ""
    return county, (road.group("road") if road else ""), (rest if road else "")


def grid_communities(grids: pd.DataFrame) -> pd.DataFrame:
    """The community or village of every comprehensive grid that names one: columns row
    (position in `grids`), name, township_code and code. A community's code is the common
    12-digit prefix of its grid codes (township + community, as grid codes are built) when
    there is one, else "{township code}:{name}". Park and dedicated grids are not communities."""
    names = []
    for attrs, gname, kind in zip(grids["attrs"] if "attrs" in grids else [{}] * len(grids),
                                  grids["name"], grids["kind"], strict=True):
        name = ""
        if kind == "comprehensive":
            attrs = attrs if isinstance(attrs, dict) else {}
            name = next((str(attrs[k]).strip() for k in COMMUNITY_KEYS if attrs.get(k)), "")
            if not name:
                found = _COMMUNITY_IN_NAME.match(str(gname))
                name = found.group(1) if found else ""
        names.append(name)
    frame = pd.DataFrame({"row": np.arange(len(grids)), "name": names,
                          "township_code": grids["township_code"].astype(str).to_numpy(),
                          "grid_code": grids["code"].astype(str).to_numpy()})
    frame = frame[frame["name"] != ""]
    prefix = frame["grid_code"].str[:12]
    shared = prefix.groupby([frame["township_code"], frame["name"]]).transform("nunique") == 1
    under = np.array([c.startswith(t) for c, t in zip(prefix, frame["township_code"],
                                                       strict=True)], dtype=bool)
    usable = shared & (prefix.str.len() == 12) & under
    frame["code"] = np.where(usable, prefix, frame["township_code"] + ":" + frame["name"])
    return frame.drop(columns="grid_code").reset_index(drop=True)


def community_grids(grids: pd.DataFrame, code: str) -> tuple[pd.DataFrame, str]:
    """The grids of one community (by its code, see `grid_communities`) and its name."""
    found = grid_communities(grids)
    found = found[found["code"] == str(code)]
    return grids.iloc[found["row"].to_numpy()], (str(found["name"].iloc[0]) if len(found) else "")


@dataclass
class _Key:
    """One searched text column, joined into one string: a query is found in all rows at
    once, and each match's row and place (whole value, start, inside) read off the offsets."""

    text: str
    starts: np.ndarray
    ends: np.ndarray
    exact_only: bool  # only whole-value (or prefix) matches count
    # The score of a prefix and of an inside match: an address found by a part of it ranks
    # after every name found by a part of it.
    weaker: tuple[int, int] = (1, 2)

    @classmethod
    def of(cls, values, exact_only: bool, weaker: tuple[int, int] = (1, 2)) -> _Key:
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        return cls("\0".join(values), starts, starts + lengths, exact_only, weaker)

    def match(self, q: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, score) of the rows holding q: 0 whole value, 1 prefix, 2 inside."""
        pos = np.fromiter((m.start() for m in re.finditer(re.escape(q), self.text)),
                          dtype=np.int64)
        if not len(pos):
            return pos, pos
        rows = np.searchsorted(self.starts, pos, side="right") - 1
        first = np.concatenate([[True], rows[1:] != rows[:-1]])  # a row's earliest match
        rows, pos = rows[first], pos[first]
        at_start = pos == self.starts[rows]
        exact = at_start & (pos + len(q) == self.ends[rows])
        if self.exact_only:
            rows, exact, at_start = rows[at_start], exact[at_start], at_start[at_start]
        prefix, inside = self.weaker
        return rows, np.where(exact, 0, np.where(at_start, prefix, inside))


@dataclass
class _Table:
    kind: str
    keys: list[_Key]  # normalised text columns searched
    hits: Sequence[Hit]  # row → the hit (score filled in at query time)


class _EntityHits(Sequence):
    """An entity's hit, made when a search finds it: a province's million Hit objects and
    their detail lines were 0.6 GB of each app process (see layers/compact.py)."""

    def __init__(self, ids: Sequence, names: Sequence, industries: Sequence,
                 addresses: Sequence, xs: np.ndarray, ys: np.ndarray) -> None:
        self._columns = (ids, names, industries, addresses)
        self._xs, self._ys = xs, ys

    def __len__(self) -> int:
        return len(self._xs)

    def __getitem__(self, row: int) -> Hit:  # type: ignore[override]
        eid, name, industry, address = (c[row] for c in self._columns)
        return Hit("entity", str(eid), str(name), f"{eid} · {industry} · {address}".rstrip(" ·"),
                   float(self._xs[row]), float(self._ys[row]), None)


class SearchIndex:
    """Everything searchable in one snapshot. Build once per generation (`index_for`)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.generation = snapshot.generation
        entities, roads = self._entities(snapshot)
        self.tables = [
            self._grids(snapshot), entities, self._workers(snapshot),
            self._areas(snapshot, "townships", "township"), self._communities(snapshot), roads,
            self._areas(snapshot, "parks", "park"), self._areas(snapshot, "counties", "county"),
        ]

    # -- building ---------------------------------------------------------------------------------
    @staticmethod
    def _key(values, exact_only: bool = False, weaker: tuple[int, int] = (1, 2)) -> _Key:
        return _Key.of([normalize(v) for v in values], exact_only, weaker)

    @staticmethod
    def _bboxes(geoms) -> np.ndarray:
        return shapely.bounds(np.asarray(geoms, dtype=object))

    @staticmethod
    def _inner(geoms) -> np.ndarray:
        """A point inside each polygon (what a hit on an area is routed at)."""
        pts = shapely.point_on_surface(np.asarray(geoms, dtype=object))
        return np.column_stack([shapely.get_x(pts), shapely.get_y(pts)]) if len(pts) else pts

    def _grids(self, snap: Snapshot) -> _Table:
        g = snap["grids"]
        towns = dict(zip(snap["townships"]["code"], snap["townships"]["name"], strict=True))
        bounds, inner = self._bboxes(g.geometry.values), self._inner(g.geometry.values)
        hits = [
            _area_hit("grid", code, name, f"{code} · {towns.get(t, t)}", b, p)
            for code, name, t, b, p in zip(g["code"], g["name"], g["township_code"], bounds,
                                           inner, strict=True)
        ]
        return _Table("grid", [self._key(g["code"], True), self._key(g["name"])], hits)

    def _entities(self, snap: Snapshot) -> tuple[_Table, _Table]:
        """Entities by credit code, name and address (the whole address, and its street part
        "纬二路89号" so that a house number is an exact match); and the roads of the
        addresses, one per county and road name, fitting the entities on it."""
        e = snap["entities"]
        xs = shapely.get_x(e.geometry.values) if len(e) else np.array([])
        ys = shapely.get_y(e.geometry.values) if len(e) else np.array([])
        addresses = [str((a or {}).get("address", "") or "") if isinstance(a, dict | None)
                     else "" for a in e["attrs"]]
        parts = [address_parts(a) for a in addresses]
        # The frame's own arrays (arrow strings): no Python string per row until a hit is made.
        # The addresses as one arrow column, not as the attribute dicts' strings: those would
        # keep the dicts' memory from being given back once the layer is let go.
        hits = _EntityHits(e["id"].array, e["name"].array, e["industry"].array,
                           pd.array(addresses, dtype="str"), np.asarray(xs, dtype=float),
                           np.asarray(ys, dtype=float))
        table = _Table("entity", [self._key(e["id"], True), self._key(e["name"]),
                                  self._key([p[2] for p in parts], weaker=(1, 3)),
                                  self._key(addresses, weaker=(3, 3))], hits)
        return table, self._roads(parts, xs, ys)

    def _roads(self, parts: list[tuple[str, str, str]], xs, ys) -> _Table:
        frame = pd.DataFrame({"county": [p[0] for p in parts], "road": [p[1] for p in parts],
                              "x": xs, "y": ys})
        frame = frame[frame["road"] != ""]
        hits, names = [], []
        for (county, road), rows in frame.groupby(["county", "road"], sort=True):
            x, y = rows["x"].to_numpy(), rows["y"].to_numpy()
            # The entity nearest the middle of them: a real place on the road.
            mid = int(np.argmin(np.hypot(x - np.median(x), y - np.median(y))))
            box = (float(x.min()), float(y.min()), float(x.max()), float(y.max()))
            where = f"{county} · " if county else ""
            hits.append(Hit("road", f"{county}{road}", str(road),
                            f"{where}地址在该路的监管对象 {len(rows)} 个", float(x[mid]),
                            float(y[mid]), box if box[0] < box[2] or box[1] < box[3] else None))
            names.append(road)
        return _Table("road", [self._key(names)], hits)

    def _communities(self, snap: Snapshot) -> _Table:
        """Communities and villages by the names their grids carry: the area of their grids."""
        g = snap["grids"]
        found = grid_communities(g)
        towns = dict(zip(snap["townships"]["code"], snap["townships"]["name"], strict=True))
        bounds = pd.DataFrame(self._bboxes(g.geometry.values)[found["row"].to_numpy()],
                              columns=["minx", "miny", "maxx", "maxy"])
        inner = self._inner(g.geometry.values[found["row"].to_numpy()])
        found = pd.concat([found, bounds], axis=1)
        found["x"], found["y"] = (inner[:, 0], inner[:, 1]) if len(found) else ([], [])
        per = found.groupby("code", sort=True).agg(
            name=("name", "first"), township=("township_code", "first"),
            grids=("row", "size"), minx=("minx", "min"), miny=("miny", "min"),
            maxx=("maxx", "max"), maxy=("maxy", "max"), x=("x", "first"), y=("y", "first"))
        hits = [
            _area_hit("community", code, r.name, f"{code} · {towns.get(r.township, r.township)}"
                      f" · {r.grids} 个网格", (r.minx, r.miny, r.maxx, r.maxy), (r.x, r.y))
            for code, r in zip(per.index, per.itertuples(index=False), strict=True)
        ]
        return _Table("community", [self._key(per.index, True), self._key(per["name"])], hits)

    def _workers(self, snap: Snapshot) -> _Table:
        grids = snap["grids"]
        bounds = pd.DataFrame(self._bboxes(grids.geometry.values),
                              columns=["minx", "miny", "maxx", "maxy"])
        bounds["grid_code"] = grids["code"].to_numpy()
        w = snap["workers"].merge(bounds, on="grid_code", how="inner")
        w["leader"] = w["role"] == "leader"
        per = w.groupby("id", sort=True).agg(
            name=("name", "first"), phone=("phone", "first"), leader=("leader", "any"),
            grids=("grid_code", "nunique"), first_grid=("grid_code", "first"),
            minx=("minx", "min"), miny=("miny", "min"), maxx=("maxx", "max"), maxy=("maxy", "max"),
        )
        hits = [
            _area_hit("worker", str(wid), str(r.name), f"{'网格长' if r.leader else '网格员'} · "
                      f"{r.phone} · {r.first_grid if r.grids == 1 else f'{r.grids} 个网格'}",
                      (r.minx, r.miny, r.maxx, r.maxy))
            for wid, r in zip(per.index, per.itertuples(index=False), strict=True)
        ]
        return _Table("worker", [self._key(per["name"]), self._key(per["phone"], True)], hits)

    def _areas(self, snap: Snapshot, layer: str, kind: str) -> _Table:
        f = snap[layer]
        bounds, inner = self._bboxes(f.geometry.values), self._inner(f.geometry.values)
        hits = [_area_hit(kind, str(c), str(n), str(c), b, p)
                for c, n, b, p in zip(f["code"], f["name"], bounds, inner, strict=True)]
        return _Table(kind, [self._key(f["code"], True), self._key(f["name"])], hits)

    # -- searching --------------------------------------------------------------------------------
    def search(self, query: str, limit: int = MAX_HITS) -> list[Hit]:
        q = normalize(query)
        if not q:
            return []
        found: list[Hit] = []
        for table in self.tables:
            best: dict[int, int] = {}
            for key in table.keys:
                rows, scores = key.match(q)
                # At most limit*4 rows of each rank per column (in row order).
                for score in (0, 1, 2, 3):
                    for r in rows[scores == score][: limit * 4].tolist():
                        best[r] = min(best.get(r, 9), score)
            order = KIND_ORDER.index(table.kind)
            for r, score in best.items():
                hit = table.hits[r]
                found.append(_scored(hit, (score, order, len(hit.label), hit.code)))
        found.sort(key=lambda h: h.score)
        return found[:limit]


def _area_hit(kind: str, code, name, detail: str, bounds, inner=None) -> Hit:
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    lon, lat = (float(inner[0]), float(inner[1])) if inner is not None else (
        (minx + maxx) / 2, (miny + maxy) / 2)
    return Hit(kind, str(code), str(name), detail, lon, lat, (minx, miny, maxx, maxy))


def _scored(hit: Hit, score: tuple) -> Hit:
    return Hit(hit.kind, hit.code, hit.label, hit.detail, hit.lon, hit.lat, hit.bbox, score)


_INDEXES: OrderedDict[tuple, SearchIndex] = OrderedDict()


def index_for(snapshot: Snapshot) -> SearchIndex:
    """The search index of a snapshot, built once per generation."""
    key = (snapshot.generation.created_at, snapshot.generation.id)
    if key not in _INDEXES:
        _INDEXES[key] = SearchIndex(snapshot)
        while len(_INDEXES) > 4:
            _INDEXES.popitem(last=False)
    return _INDEXES[key]


def search(snapshot: Snapshot, query: str, limit: int = MAX_HITS) -> list[Hit]:
    return index_for(snapshot).search(query, limit)

"""Finding things to show on the map: entities by name or credit code, grids by code or name,
townships, parks, and workers by name (→ their grid units). Each hit has a point or a bounding
box to zoom to.

Text is compared after NFKC normalisation (full-width letters and digits become half-width),
lower-casing and removing spaces, so "９１３２ 0600" finds "913206…". Exact matches rank before
prefix matches before substring matches.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from layers.store import Snapshot

KIND_ZH = {"entity": "监管对象", "grid": "网格", "township": "乡镇/街道", "park": "园区",
           "worker": "网格员", "county": "县（市）、区"}
KIND_ORDER = ("grid", "entity", "worker", "township", "park", "county")
MAX_HITS = 30


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


def normalize(text: object) -> str:
    return "".join(unicodedata.normalize("NFKC", str(text)).lower().split())


@dataclass
class _Table:
    kind: str
    keys: list[np.ndarray]  # normalised text columns searched
    exact_only: list[bool]  # per key: only whole-value (or prefix) matches count
    hits: list[Hit]  # row → the hit (score filled in at query time)


class SearchIndex:
    """Everything searchable in one snapshot. Build once per generation (`index_for`)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.generation = snapshot.generation
        self.tables = [
            self._grids(snapshot), self._entities(snapshot), self._workers(snapshot),
            self._areas(snapshot, "townships", "township"), self._areas(snapshot, "parks", "park"),
            self._areas(snapshot, "counties", "county"),
        ]

    # -- building ---------------------------------------------------------------------------------
    @staticmethod
    def _norm(values) -> np.ndarray:
        return np.array([normalize(v) for v in values], dtype=object)

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
        return _Table("grid", [self._norm(g["code"]), self._norm(g["name"])], [True, False], hits)

    def _entities(self, snap: Snapshot) -> _Table:
        e = snap["entities"]
        xs = shapely.get_x(e.geometry.values) if len(e) else np.array([])
        ys = shapely.get_y(e.geometry.values) if len(e) else np.array([])
        hits = [
            Hit("entity", str(eid), str(name),
                f"{eid} · {ind} · {(a or {}).get('address', '')}".rstrip(" ·"),
                float(x), float(y), None)
            for eid, name, ind, a, x, y in zip(e["id"], e["name"], e["industry"], e["attrs"], xs,
                                               ys, strict=True)
        ]
        return _Table("entity", [self._norm(e["id"]), self._norm(e["name"])], [True, False], hits)

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
        return _Table("worker", [self._norm(per["name"]), self._norm(per["phone"])],
                      [False, True], hits)

    def _areas(self, snap: Snapshot, layer: str, kind: str) -> _Table:
        f = snap[layer]
        bounds, inner = self._bboxes(f.geometry.values), self._inner(f.geometry.values)
        hits = [_area_hit(kind, str(c), str(n), str(c), b, p)
                for c, n, b, p in zip(f["code"], f["name"], bounds, inner, strict=True)]
        return _Table(kind, [self._norm(f["code"]), self._norm(f["name"])], [True, False], hits)

    # -- searching --------------------------------------------------------------------------------
    def search(self, query: str, limit: int = MAX_HITS) -> list[Hit]:
        q = normalize(query)
        if not q:
            return []
        found: list[Hit] = []
        for table in self.tables:
            best: dict[int, int] = {}
            for keys, exact_only in zip(table.keys, table.exact_only, strict=True):
                if not len(keys):
                    continue
                series = pd.Series(keys, dtype=object)
                exact = np.flatnonzero((series == q).to_numpy())
                prefix = np.flatnonzero(series.str.startswith(q).to_numpy())
                rank = [(exact, 0), (prefix, 1)]
                # A code typed in part is a prefix; names also match inside.
                if not exact_only:
                    rank.append((np.flatnonzero(series.str.contains(q, regex=False).to_numpy()), 2))
                for rows, score in rank:
                    for r in rows[: limit * 4]:
                        best[int(r)] = min(best.get(int(r), 9), score)
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

"""A grid worker's portfolio: their grid units, the supervised entities in them, the open
incidents there, and the roster workbook of all of it.

Which grid an entity belongs to is a routing answer: every entity is routed once per generation
through the batch path (the same rules as `gridmap route`), never with a per-entity loop. An
entity whose position is ambiguous between grids is listed under each candidate grid, flagged.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from grids.deadlines import beijing_text
from grids.roster import roster
from grids.routing import Router
from layers import spreadsheet
from layers.finder import Queries
from layers.incidents import STATUSES_ZH
from layers.schema import GRID_KIND_ZH, WORKER_ROLE_ZH
from layers.store import Snapshot, Store

# -- entities → grids -----------------------------------------------------------------------------
# Around a worker's grids the store's spatial index finds the entities to route: a little more
# than the grids' extent, so that a position within the resolver's tolerance of a grid's edge
# (a candidate of an ambiguous answer) is not missed (~100 m).
_AROUND_DEG = 0.001


def entity_assignment(router: Router, entities: pd.DataFrame | None = None) -> pd.DataFrame:
    """The routing answer columns the pages use (ASSIGNMENT_COLUMNS: status, grid, township,
    workers) of `entities` (default: every entity of the router's snapshot — the map's files of
    a version, ui/mapdata.py), one row per entity in their order, plus `entity_id` and
    `candidate_grids` (the grid codes of an ambiguous position). Routed in one batch, not kept:
    a worker's page routes the entities around their grids (`build_portfolio`), so no process
    holds a province's million answers for it."""
    entities = router.snapshot["entities"] if entities is None else entities
    geoms = entities.geometry.values
    if not len(entities):
        frame = pd.DataFrame(columns=list(ASSIGNMENT_COLUMNS))
        frame["entity_id"] = frame["candidate_grids"] = pd.Series(dtype=object)
        return frame
    lon, lat = np.asarray(shapely.get_x(geoms)), np.asarray(shapely.get_y(geoms))
    results, index = router.resolver.resolve_indexed(Queries.build(lon, lat))
    writer = router.writer
    with writer.lock:
        ids = writer.ids(results)[index]
        columns = writer.arrow_columns(ids)
    # Only what the pages read (the other answer columns — county, park, bureau, chain,
    # reasons … — were half of a province's 3 GB app process), each as categories: a
    # province's million rows meet some 80,000 answers.
    frame = pd.DataFrame({name: _categories(columns[name]) for name in ASSIGNMENT_COLUMNS
                          if name in columns})
    frame["entity_id"] = entities["id"].astype(str).to_numpy()
    # One tuple per answer met (the dictionary holds those only), shared by its rows.
    candidates = columns["candidates"]
    per_answer = [_candidate_grids(w) for w in candidates.dictionary.to_pylist()]
    frame["candidate_grids"] = [per_answer[i] for i in candidates.indices.to_numpy().tolist()]
    return frame


def _categories(column: pa.DictionaryArray) -> pd.Categorical:
    """A dictionary column of answers as pandas categories (the answers' words repeat across
    answers; categories may not)."""
    codes, words = pd.factorize(column.dictionary.to_numpy(zero_copy_only=False))
    # Object categories, not pandas' arrow strings: a page or the map's details file takes a
    # few hundred rows as Python strings, and arrow categories were converted whole each time.
    return pd.Categorical.from_codes(codes[column.indices.to_numpy()],
                                     categories=pd.Index(words, dtype=object))


ASSIGNMENT_COLUMNS = ("status", "grid_code", "grid_name", "township_code", "township_name",
                      "workers")


def _candidate_grids(candidates: str) -> tuple[str, ...]:
    if not candidates:
        return ()
    return tuple(c["grid"] for c in json.loads(candidates) if c.get("grid"))


# -- workers --------------------------------------------------------------------------------------
_INDEXES: dict[int, tuple[weakref.ref, pd.DataFrame]] = {}


def worker_index(snapshot: Snapshot, ids: Collection[str] | None = None) -> pd.DataFrame:
    """One row per person (worker id): id, name, phone, roles, grid count, townships and a
    label for choosing them. Sorted by township then name. Made once per snapshot (every page
    of a worker asks for it: 0.03 s for the sample's 2,600 people, 0.9 s for a province's
    83,000); a copy is returned, of only the people `ids` names when given (a grid worker's
    page: one row, not the city's)."""
    hit = _INDEXES.get(id(snapshot))
    if hit is None or hit[0]() is not snapshot:
        if len(_INDEXES) > 8:
            _INDEXES.clear()
        hit = (weakref.ref(snapshot), _worker_index(snapshot))
        _INDEXES[id(snapshot)] = hit
    index = hit[1]
    if ids is not None:
        index = index[index["id"].isin(list(ids))]
    return index.copy()


def _worker_index(snapshot: Snapshot) -> pd.DataFrame:
    workers = snapshot["workers"]
    if not len(workers):
        return pd.DataFrame(columns=["id", "name", "phone", "roles", "grids", "townships", "label"])
    grids = snapshot["grids"]
    town_of_grid = dict(zip(grids["code"].tolist(), grids["township_code"].tolist(),
                            strict=True))
    townships = dict(zip(snapshot["townships"]["code"], snapshot["townships"]["name"], strict=True))
    # One pass over the roster (a province's has 160,000 rows: a pandas groupby with a Python
    # aggregate per person took 3 s there), each person's values in the order first met.
    per: dict[str, list] = {}
    columns = [workers[c].tolist() for c in ("name", "phone", "role", "grid_code")]
    for wid, name, phone, role, grid in zip(workers["id"].astype(str).tolist(), *columns,
                                            strict=True):
        entry = per.get(wid)
        if entry is None:
            entry = per[wid] = [None, None, {}, set(), {}]
        if entry[0] is None and _given(name):
            entry[0] = name
        if entry[1] is None and _given(phone):
            entry[1] = phone
        role_zh = WORKER_ROLE_ZH.get(role, role)
        if _given(role_zh) and role_zh:
            entry[2][role_zh] = None
        if _given(grid):
            entry[3].add(grid)
        town = townships.get(town_of_grid.get(grid))
        if _given(town) and town:
            entry[4][town] = None
    out = pd.DataFrame({
        "id": pd.array(list(per), dtype="str"),
        "name": pd.array([e[0] for e in per.values()], dtype="str"),
        "phone": pd.array([e[1] for e in per.values()], dtype="str"),
        "roles": pd.array(["、".join(e[2]) for e in per.values()], dtype="str"),
        "grids": np.array([len(e[3]) for e in per.values()], dtype=np.int64),
        "townships": pd.array(["、".join(e[4]) for e in per.values()], dtype="str"),
    })
    out["label"] = out["name"] + "（" + out["roles"] + "，" + out["id"] + "）· " + out["townships"]
    return out.sort_values(["townships", "name", "id"]).reset_index(drop=True)


def _given(value: object) -> bool:
    """Not missing (None, NaN, NA): what pandas' "first" and "nunique" skip."""
    return value is not None and not (isinstance(value, float) and value != value) \
        and value is not pd.NA


# -- incidents ------------------------------------------------------------------------------------
def open_incidents(found: pd.DataFrame) -> pd.DataFrame:
    """Incidents not closed (as the store's query returned them), with `grid` (the current
    assignment)."""
    frame = pd.DataFrame(found.drop(columns="geometry", errors="ignore"))
    if not len(frame):
        return _empty_incidents()
    frame = frame[frame["status"] != "closed"].copy()
    grid = frame["assigned_grid_code"] if "assigned_grid_code" in frame else frame["grid_code"]
    grid = grid.fillna("").astype(str)
    # An ambiguous location has no grid until a dispatcher assigns one: say so, not nothing.
    pending = (grid == "") & (frame.get("route_status", "") == "ambiguous")
    frame["grid"] = grid.where(~pending, "待人工确认（位置存在歧义）")
    if "status_zh" not in frame:
        frame["status_zh"] = frame["status"].map(STATUSES_ZH).fillna(frame["status"])
    if "category_zh" not in frame:
        frame["category_zh"] = frame.get("category", "")
    frame["reported_local"] = frame["reported_at"].map(beijing_text)
    return frame.reset_index(drop=True)


def _empty_incidents() -> pd.DataFrame:
    return pd.DataFrame(columns=["id", "reported_at", "reported_local", "source", "category_zh",
                                 "description", "status", "status_zh", "lon", "lat", "grid"])


# -- the portfolio --------------------------------------------------------------------------------
@dataclass
class Portfolio:
    worker: dict  # id, name, phone, roles
    grids: pd.DataFrame  # GeoDataFrame: code, name, kind_zh, township, community, area_km2, role
    entities: pd.DataFrame  # id, name, industry, permit_class, inspection_class, address, grid…
    incidents: pd.DataFrame  # open incidents in the grids
    generation: dict

    @property
    def grid_codes(self) -> list[str]:
        return self.grids["code"].tolist()

    @property
    def bbox(self) -> tuple[float, float, float, float] | None:
        """The extent of the worker's grids (None when they have none)."""
        if not len(self.grids):
            return None
        minx, miny, maxx, maxy = (float(v) for v in self.grids.total_bounds)
        return (minx, miny, maxx, maxy)


ENTITY_COLUMNS = {
    "id": "统一社会信用代码", "name": "名称", "industry": "行业", "permit_class": "排污许可类别",
    "inspection_class": "监管类别", "address": "地址", "grid_code": "网格编码",
    "grid_name": "网格名称", "note": "备注", "lon": "经度", "lat": "纬度",
}
GRID_COLUMNS = {
    "code": "网格编码", "name": "网格名称", "kind_zh": "网格类型", "township": "乡镇/街道",
    "community": "社区/村", "role_zh": "本人职责", "others": "同网格人员", "entities": "监管对象数",
    "open_incidents": "未结事件数",
}
INCIDENT_COLUMNS = {
    "id": "事件编号", "reported_local": "上报时间（北京时间）", "source": "来源",
    "category_zh": "类别",
    "status_zh": "状态", "description": "描述", "grid": "网格编码", "lon": "经度", "lat": "纬度",
}


def build_portfolio(router: Router, worker_id: str, store: Store,
                    incidents: pd.DataFrame | None = None) -> Portfolio:
    """Everything one worker answers for, as of the router's generation. The entities are
    those the store finds around the worker's grids, routed here: the same whether the city
    has ten thousand entities or a million. All but the open incidents is made once per
    version and worker (a phone page asks for it twice a visit) and handed out as copies."""
    base = _base(router, worker_id, store)
    grids = base.grids.copy()
    codes = set(grids["code"])
    if incidents is None:
        incidents = _empty_incidents()
    incidents = incidents[incidents["grid"].isin(codes)].reset_index(drop=True)
    counts = incidents["grid"].value_counts()
    grids["open_incidents"] = [int(counts.get(c, 0)) for c in grids["code"]]
    return Portfolio(dict(base.worker), grids, base.entities.copy(), incidents,
                     dict(base.generation))


# A worker's portfolio without its open incidents, per version and worker: a version's layers
# never change, and a phone page asks twice per visit (its list and its map), a worker many
# times a day. Only a store's whole snapshot is kept (not a proposal, not one place's).
_BASES: OrderedDict[tuple, Portfolio] = OrderedDict()
_BASES_SIZE = 512
_BASES_LOCK = threading.Lock()


def _base(router: Router, worker_id: str, store: Store) -> Portfolio:
    snap = router.snapshot
    gen = snap.generation
    key = (gen.created_at, gen.id, store.url, str(worker_id)) if snap.shared else None
    if key is not None:
        with _BASES_LOCK:
            found = _BASES.get(key)
            if found is not None:
                _BASES.move_to_end(key)
                return found
    made = _build_base(router, worker_id, store)
    if key is not None:
        with _BASES_LOCK:
            _BASES[key] = made
            while len(_BASES) > _BASES_SIZE:
                _BASES.popitem(last=False)
    return made


def _build_base(router: Router, worker_id: str, store: Store) -> Portfolio:
    snap = router.snapshot
    index = roster(snap)
    mine = index.of_worker(worker_id)
    if not len(mine):
        raise KeyError(f"找不到网格员 {worker_id}")
    role_of = dict(zip(mine["grid_code"], mine["role"], strict=True))
    worker = {"id": str(worker_id), "name": str(mine["name"].iat[0]),
              "phone": str(mine["phone"].iat[0]),
              "roles": "、".join(WORKER_ROLE_ZH.get(r, r) for r in dict.fromkeys(mine["role"]))}

    grids = snap["grids"].iloc[index.grid_positions(role_of)].copy()
    townships = dict(zip(snap["townships"]["code"], snap["townships"]["name"], strict=True))
    grids["kind_zh"] = grids["kind"].map(GRID_KIND_ZH).fillna(grids["kind"])
    grids["township"] = grids["township_code"].map(townships).fillna("")
    grids["community"] = [(a or {}).get("community", "") for a in grids["attrs"]]
    grids["role_zh"] = grids["code"].map(role_of).map(WORKER_ROLE_ZH)
    others: dict[str, list[str]] = {}
    around = index.of_grids(role_of)
    for grid, name, role, phone in around.loc[
        around["id"].astype(str) != str(worker_id), ["grid_code", "name", "role", "phone"],
    ].itertuples(index=False):
        others.setdefault(grid, []).append(f"{name}（{WORKER_ROLE_ZH.get(role, role)}）{phone}")
    grids["others"] = ["；".join(others.get(c, [])) for c in grids["code"]]

    entities = _routed_around(router, store, grids, set(role_of))
    grids["entities"] = grids["code"].map(entities["grid_code"].value_counts()).fillna(0)
    grids["entities"] = grids["entities"].astype(int)
    grids = grids.sort_values("code").reset_index(drop=True)
    return Portfolio(worker, grids, entities, _empty_incidents(), snap.generation.as_dict())


def _routed_around(router: Router, store: Store, grids: pd.DataFrame,
                   grid_codes: set[str]) -> pd.DataFrame:
    if len(grids):
        minx, miny, maxx, maxy = (float(v) for v in grids.total_bounds)
        frame = store.entities_in((minx - _AROUND_DEG, miny - _AROUND_DEG, maxx + _AROUND_DEG,
                                   maxy + _AROUND_DEG), router.snapshot.generation.id)
    else:  # none of the worker's grids in this version: nothing to read
        frame = gpd.GeoDataFrame({c: [] for c in ("fid", "id", "name", "industry",
                                                  "permit_class", "attrs")},
                                 geometry=[], crs=grids.crs)
    frame = frame.reset_index(drop=True)
    assigned = entity_assignment(router, frame)
    direct = assigned["grid_code"].isin(grid_codes).to_numpy()
    candidates = assigned["candidate_grids"].tolist()
    maybe = np.array([bool(c) and not d and bool(grid_codes.intersection(c))
                      for c, d in zip(candidates, direct, strict=True)], dtype=bool)
    rows = np.flatnonzero(direct | maybe)
    sub = frame.iloc[rows]
    attrs = sub["attrs"].tolist()
    geoms = sub.geometry.values
    out = pd.DataFrame({
        "id": sub["id"].astype(str).to_numpy(),
        "name": sub["name"].astype(str).to_numpy(),
        "industry": sub["industry"].astype(str).to_numpy(),
        "permit_class": sub["permit_class"].astype(str).to_numpy(),
        "inspection_class": [str((a or {}).get("inspection_class", "")) for a in attrs],
        "address": [str((a or {}).get("address", "")) for a in attrs],
        "grid_code": assigned["grid_code"].iloc[rows].to_numpy(),
        "grid_name": assigned["grid_name"].iloc[rows].to_numpy(),
        "note": np.where(maybe[rows], "位置在网格边界，存在歧义，请核实归属", ""),
        "lon": np.round(np.asarray(shapely.get_x(geoms), dtype=float), 6),
        "lat": np.round(np.asarray(shapely.get_y(geoms), dtype=float), 6),
    })
    # An ambiguous entity is listed under the first of this worker's candidate grids.
    for i in np.flatnonzero(maybe[rows]):
        cands = [g for g in assigned["candidate_grids"].iat[rows[i]] if g in grid_codes]
        out.loc[i, "grid_code"] = cands[0]
    return out.sort_values(["grid_code", "name"]).reset_index(drop=True)


def filter_entities(entities: pd.DataFrame, industries: list[str] | None = None,
                    permit_classes: list[str] | None = None) -> pd.DataFrame:
    """Entities of the chosen industries and permit classes (None or empty = all)."""
    keep = np.ones(len(entities), dtype=bool)
    if industries:
        keep &= entities["industry"].isin(industries).to_numpy()
    if permit_classes:
        keep &= entities["permit_class"].isin(permit_classes).to_numpy()
    return entities[keep]


# -- the roster workbook --------------------------------------------------------------------------
def roster_excel(portfolio: Portfolio) -> bytes:
    """The worker's roster as an .xlsx: worker, grids, entities, open incidents. Text is
    always written as text (`layers.spreadsheet`): a name starting with '=' never becomes a
    formula."""
    w = portfolio.worker
    facts = spreadsheet.facts_table((
        ("姓名", w["name"]), ("编号", w["id"]), ("电话", w["phone"]), ("职责", w["roles"]),
        ("负责网格数", len(portfolio.grids)), ("监管对象数", len(portfolio.entities)),
        ("未结事件数", len(portfolio.incidents)),
        ("图层版本", portfolio.generation.get("generation")),
        ("图层版本时间", beijing_text(portfolio.generation.get("created_at"))),
        ("导出时间", beijing_text(datetime.now(UTC)))))
    return spreadsheet.xlsx_bytes({
        "网格员": facts,
        "负责网格": spreadsheet.headed(pd.DataFrame(portfolio.grids), GRID_COLUMNS),
        "监管对象": spreadsheet.headed(portfolio.entities, ENTITY_COLUMNS),
        "未结事件": spreadsheet.headed(portfolio.incidents, INCIDENT_COLUMNS),
    })

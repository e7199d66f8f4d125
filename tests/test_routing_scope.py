"""Routing reads what one answer needs, not the registry: the supervised entities are never
read to route (a snapshot reads them on first use), and `gridmap route` reads only the grids
around the place (a scoped snapshot) — with the same answers as the whole layers. Both stores,
on the real sample; the command itself is watched at the database driver."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import shapely

from grids import patrols
from grids.access import Actor
from grids.acting import Acting
from grids.intake import NEARBY_RADIUS_M, EntityIndex, intake, intake_extent
from grids.routing import Router, point_box, route_extent_once, route_once
from grids.service import Gridmap
from layers.finder import MemoryFinder
from layers.importer import import_path
from layers.store import DEFERRED_LAYERS, Layers, StoreError, open_store
from tests.conftest import ROOT, STORES

# Points of the sample: city centre, a chemical park, the sea, outside, a county border.
POINTS = [(120.86, 32.01), (121.05, 32.45), (121.2, 32.0), (121.95, 31.9), (118.0, 31.0),
          (120.55, 32.4), (120.95, 32.2)]
EXTENTS = [
    "LINESTRING (120.96 32.22, 120.99 32.22)",
    "LINESTRING (120.80 32.00, 120.90 32.05, 121.00 32.02)",
    "POLYGON ((120.85 32.0, 120.87 32.0, 120.87 32.02, 120.85 32.02, 120.85 32.0))",
]


@pytest.fixture(scope="module", params=STORES)
def sample(request, new_store, sample_store):
    """(kind, store) with the Nantong sample (10,000 entities)."""
    if request.param == "gpkg":
        store = open_store(str(sample_store))
        yield request.param, store
        store.close()
    else:
        store = new_store("postgis")
        import_path(store, sample_store.parent / "files")
        yield request.param, store


def _places(store, n: int, seed: int) -> list[tuple[float, float, float]]:
    """Random points in the sample's grids, grid corners (exactly on boundaries) and the
    fixed points, each with an accuracy (0, 30 or 400 m)."""
    grids = store.snapshot()["grids"]
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = grids.total_bounds
    places = [(x, y, 0.0) for x, y in POINTS]
    for x, y in zip(rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n), strict=True):
        places.append((float(x), float(y), float(rng.choice([0.0, 30.0, 400.0]))))
    for geom in grids.geometry.iloc[rng.choice(len(grids), n // 2, replace=False)]:
        x, y = shapely.get_coordinates(geom)[0]
        places.append((float(x), float(y), float(rng.choice([0.0, 30.0]))))
    return places


def test_routing_never_reads_the_entities(sample):
    _kind, store = sample
    store.clear_cache()
    router = Router(store)
    assert isinstance(router.snapshot.layers, Layers)
    for x, y, acc in _places(store, 20, seed=1):
        router.route(x, y, "cgcs2000", acc)
    for wkt in EXTENTS:
        router.route_extent(wkt)
    assert not router.snapshot.is_read("entities")
    # Counted in the store, still not read.
    assert router.snapshot.counts()["entities"] == 10_000
    assert not router.snapshot.is_read("entities")
    # Whoever needs them (the map, exports, the intake's nearby list) still has all of them.
    entities = router.snapshot["entities"]
    assert len(entities) == 10_000 and router.snapshot.is_read("entities")
    assert entities.crs.to_epsg() == 4490 and entities["fid"].is_monotonic_increasing
    assert "entities" in router.snapshot.layers and list(router.snapshot.layers)[-2:] == [
        "entities", "precedence"]


def test_a_workers_page_and_a_patrol_visit_never_read_the_entities(sample):
    """Both ask the store (around the worker's grids, by id): a province's million entities
    are never read for one person's page."""
    _kind, store = sample
    svc = Gridmap(store.url)
    admin = Actor.local_admin()
    router = svc._router()
    mine = None
    for wid in router.snapshot["workers"]["id"].astype(str).unique()[:50]:
        mine = svc.worker_portfolio(admin, wid)
        if len(mine.entities):
            break
    assert mine is not None and len(mine.entities)
    entity, answer = patrols.entity_place(svc.acting(admin), router, mine.entities["id"].iat[0])
    assert entity["id"] == mine.entities["id"].iat[0] and answer["status"] in ("ok", "ambiguous")
    assert not router.snapshot.is_read("entities")
    # Let go after use (a served process once the map's files are written), read again if
    # asked: the same rows, counted without reading them.
    whole = router.snapshot["entities"]
    router.snapshot.release("entities")
    assert not router.snapshot.is_read("entities")
    assert router.snapshot.count("entities") == len(whole) == 10_000
    again = router.snapshot["entities"]
    assert again is not whole and again["id"].tolist() == whole["id"].tolist()
    svc.close()


def test_deferred_layers_are_read_from_any_thread(sample):
    """A router's snapshot is shared by a server's threads; the store's connection is not."""
    _kind, store = sample
    store.clear_cache()
    snap = store.snapshot()
    out: dict = {}

    def read():
        try:
            out["frames"] = {name: snap[name] for name in DEFERRED_LAYERS}
        except Exception as exc:  # reported below
            out["error"] = exc

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert "error" not in out, out.get("error")
    assert len(out["frames"]["entities"]) == 10_000
    assert snap["entities"] is out["frames"]["entities"]  # read once, kept


def test_scoped_answers_are_the_whole_layers_answers(sample):
    _kind, store = sample
    whole = Router(store)
    for x, y, acc in _places(store, 24, seed=2):
        assert route_once(store, x, y, "cgcs2000", acc) == whole.route(x, y, "cgcs2000", acc), (
            x, y, acc)
    # Other systems, swapped order: located first, then scoped.
    assert route_once(store, 32.01, 120.86) == whole.route(32.01, 120.86)
    for wkt in EXTENTS:
        assert route_extent_once(store, wkt) == whole.route_extent(wkt), wkt


def test_scoped_snapshot_holds_the_grids_around_only(sample):
    kind, store = sample
    whole = store.snapshot()
    box = point_box(120.86, 32.01, 300.0)
    scoped = store.snapshot(bbox=box)
    assert scoped.scope == box and scoped is not store.snapshot(bbox=box)
    grids = whole["grids"]
    near = set(grids["code"][grids.geometry.intersects(shapely.box(*box))])
    assert near and near <= set(scoped["grids"]["code"])
    assert len(scoped["grids"]) < len(grids) / 20
    assert set(scoped["workers"]["grid_code"]) == set(scoped["grids"]["code"])
    mine = whole["workers"][whole["workers"]["grid_code"].isin(scoped["grids"]["code"])]
    assert len(scoped["workers"]) == len(mine)
    for name in ("counties", "townships", "parks", "sea_areas", "bureaus", "jurisdictions",
                 "precedence"):
        assert len(scoped[name]) == len(whole[name]), name
    assert not scoped.is_read("entities")
    # A scoped snapshot never stands in for the whole one.
    if kind == "gpkg":
        assert MemoryFinder.for_snapshot(scoped) is not MemoryFinder.for_snapshot(whole)
        assert len(MemoryFinder.for_snapshot(whole).geoms[2]) == len(grids)
    router = Router(store, bbox=box)
    router.route(120.86, 32.01, accuracy_m=300.0)
    with pytest.raises(ValueError):
        router.route(120.95, 32.2)
    with pytest.raises(ValueError):
        store.snapshot(bbox=(121.0, 32.0, 120.0, 33.0))


def test_the_geopackage_reads_around_a_place_through_its_indexes(sample_store):
    store = open_store(str(sample_store))
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    box = point_box(120.86, 32.01, 300.0)
    store.snapshot(bbox=box)
    store.entities_in(box)
    store.conn.set_trace_callback(None)
    reads = [sql for sql in seen if re.search(r'FROM "(grids|workers|entities)"', sql)]
    assert len(reads) == 3, seen
    for sql in reads:
        plan = " ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert not re.search(r"\bSCAN (grids|workers|entities)\b", plan), (sql, plan)
    store.close()


def test_a_deferred_layer_of_a_replaced_file_is_refused(tmp_path, sample_store):
    path = tmp_path / "copy.gpkg"
    shutil.copy(sample_store, path)
    store = open_store(str(path))
    snap = store.snapshot()
    store.close()
    other = tmp_path / "other.gpkg"
    shutil.copy(sample_store, other)
    # The same file with another history: generation 1 made at another time.
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("UPDATE generations SET created_at = '2001-01-01T00:00:00.000Z'")
    conn.close()
    other.replace(path)
    with pytest.raises(StoreError):
        snap["entities"]


def test_entities_in_a_box_come_from_the_store(sample):
    _kind, store = sample
    whole = store.snapshot()["entities"]
    x, y = whole.geometry.x.to_numpy(), whole.geometry.y.to_numpy()
    boxes = [(120.85, 32.0, 120.87, 32.02), point_box(120.86, 32.01, 1000.0),
             (x[5], y[5], x[5], y[5]), (0.0, 0.0, 1.0, 1.0)]
    for box in boxes:
        got = store.entities_in(box)
        keep = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
        expect = whole[keep].reset_index(drop=True)
        assert list(got.columns) == list(whole.columns) and got.crs == whole.crs
        assert got["id"].tolist() == expect["id"].tolist(), box
        assert got["attrs"].tolist() == expect["attrs"].tolist()
        assert shapely.equals(got.geometry.values, expect.geometry.values).all()
    assert len(store.entities_in(boxes[0], generation=1)) == len(store.entities_in(boxes[0]))
    assert len(store.entities_in(boxes[2])) >= 1


def test_entities_by_id_come_from_the_store(sample):
    _kind, store = sample
    whole = store.snapshot()["entities"]
    ids = whole["id"].astype(str).tolist()
    wanted = [ids[7], ids[3], ids[3], "不存在的代码", "x') OR 1=1 --"]
    got = store.entities_by_id(wanted)
    expect = whole[whole["id"].isin(wanted)].reset_index(drop=True)
    assert list(got.columns) == list(whole.columns) and got.crs == whole.crs
    assert got["id"].tolist() == expect["id"].tolist() and len(got) == 2  # fid order, once each
    assert got["attrs"].tolist() == expect["attrs"].tolist()
    assert shapely.equals(got.geometry.values, expect.geometry.values).all()
    assert store.entities_by_id([]).empty
    assert len(store.entities_by_id(ids[:1200])) == 1200  # more than sqlite's parameter limit
    assert store.entities_by_id([ids[0]], generation=1)["id"].tolist() == [ids[0]]


def test_the_geopackage_reads_one_entity_through_its_id_index(sample_store):
    store = open_store(str(sample_store))
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    store.entities_by_id(["913206001000231381"])
    store.conn.set_trace_callback(None)
    reads = [sql for sql in seen if 'FROM "entities"' in sql]
    assert len(reads) == 1, seen
    plan = " ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + reads[0]))
    assert "entities_id" in plan and not re.search(r"\bSCAN entities\b", plan), plan
    store.close()


def test_the_intake_asks_the_store_for_the_entities_nearby(sample):
    _kind, store = sample
    store.clear_cache()
    router = Router(store)
    acting = Acting(Actor("t-dispatcher", "dispatcher"), store)
    places = [(120.86, 32.01, 0.0), (120.86, 32.01, 1500.0), (121.05, 32.45, 30.0)]
    answers = [intake(router, acting, x, y, accuracy_m=acc) for x, y, acc in places]
    extent, _ = intake_extent(router, acting, EXTENTS[2])
    assert not router.snapshot.is_read("entities")
    # The same entities as an index over all of them gives.
    index = EntityIndex(router.snapshot["entities"])
    for (_, _, acc), answer in zip(places, answers, strict=True):
        lon, lat = answer.route["point"]["cgcs2000"]
        expect = index.near(lon, lat, max(NEARBY_RADIUS_M, acc))
        pd.testing.assert_frame_equal(answer.nearby, expect)
    assert len(answers[0].nearby) > 0 and len(extent.nearby) > 0


# The command, with every statement it sends to the database recorded at the driver.
TRACED = r"""
import re, sys, sqlite3
import psycopg2, psycopg2.extensions

seen = []
_sqlite = sqlite3.connect

def sqlite_connect(*args, **kwargs):
    conn = _sqlite(*args, **kwargs)
    conn.set_trace_callback(seen.append)
    return conn

class Cursor(psycopg2.extensions.cursor):
    def execute(self, sql, args=None):
        seen.append(sql if isinstance(sql, str) else sql.decode())
        return super().execute(sql, args)

_pg = psycopg2.connect
sqlite3.connect = sqlite_connect
psycopg2.connect = lambda *a, **k: _pg(*a, cursor_factory=Cursor, **k)

import cli

code = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("streamlit", "folium", "branca", "fastapi", "uvicorn", "openpyxl",
                           "pyogrio", "matplotlib") if m in sys.modules)
# Any statement that reads entity rows (not the schema checks of opening a store).
entities = [s for s in seen if re.search(r'\b(from|join)\s+"?(\w+\.)?entities\b', s, re.I)]
print("TRACE", {"code": code, "heavy": heavy, "entities": entities, "statements": len(seen)},
      file=sys.stderr)
"""


def _traced_route(store_url: str, *args: str) -> tuple[dict, dict]:
    out = subprocess.run([sys.executable, "-c", TRACED, "--store", store_url, "route", *args,
                          "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    trace = next(line for line in out.stderr.splitlines() if line.startswith("TRACE "))
    return json.loads(out.stdout), eval(trace[len("TRACE "):])  # a dict literal of ours


def test_gridmap_route_reads_no_entity_and_no_web_module(sample):
    _kind, store = sample
    whole = Router(store)
    answer, trace = _traced_route(store.url, "120.86", "32.01")
    assert trace["code"] == 0 and trace["statements"] > 0
    assert trace["entities"] == [], trace["entities"]
    assert trace["heavy"] == []
    assert answer == whole.route(120.86, 32.01)
    answer, trace = _traced_route(store.url, "--wkt", EXTENTS[0])
    assert trace["entities"] == [] and answer == whole.route_extent(EXTENTS[0])


def test_a_plain_point_is_located_as_check_points_locates_it():
    """Router.locate's short way (WGS84/CGCS2000 inside the region as given) answers exactly as
    geo.sanity.check_points does, and leaves every other point to it: the region's edges,
    swapped pairs, NaN, far away, other systems."""
    import numpy as np

    from geo.crs import parse_crs
    from geo.sanity import NANTONG_REGION as R
    from geo.sanity import check_points
    from grids.routing import Router

    rng = np.random.default_rng(21)
    points = [(R.lon_min, R.lat_min), (R.lon_max, R.lat_max), (R.lon_min - 1e-9, 32.0),
              (120.9, R.lat_max + 1e-9), (32.0, 120.9), (float("nan"), 32.0), (0.0, 0.0),
              *zip(rng.uniform(118, 124, 300), rng.uniform(30, 34, 300), strict=True)]
    for crs in ("wgs84", "cgcs2000", "gcj02"):
        system = parse_crs(crs)
        for x, y in points:
            lon, lat, status = check_points(np.array([x]), np.array([y]), system)
            if str(status[0]) in ("ok", "swapped"):
                got = Router.locate(x, y, crs)
                assert got[0] == system and got[3] == str(status[0]), (crs, x, y)
                assert np.array_equal(got[1], lon) and np.array_equal(got[2], lat), (crs, x, y)
                assert got[1].dtype == lon.dtype and got[1].shape == lon.shape

"""Search: entities by name or credit code, grids by code or name, townships, parks, workers."""

from __future__ import annotations

import pytest
import shapely

from layers import search
from layers.store import open_store
from tests import world
from tests.browser import XSS_NAME, build_map_world


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    store = open_store(str(build_map_world(tmp_path_factory.mktemp("search"))))
    yield store.snapshot()
    store.close()


def first(snap, query):
    hits = search.search(snap, query)
    assert hits, query
    return hits[0]


def test_entity_by_credit_code_exact_and_full_width(snap):
    entity = snap["entities"].iloc[0]
    hit = first(snap, entity["id"])
    assert (hit.kind, hit.code, hit.label) == ("entity", entity["id"], entity["name"])
    assert hit.bbox is None and (hit.lon, hit.lat) == pytest.approx(
        (entity.geometry.x, entity.geometry.y))
    # Typed on a Chinese keyboard: full-width characters, lower case, spaces.
    full = "".join(chr(ord(c) + 0xFEE0) for c in entity["id"].lower())
    assert first(snap, full[:6] + " " + full[6:]).code == entity["id"]


def test_entity_by_part_of_name(snap):
    hit = first(snap, "印染")
    assert hit.kind == "entity" and hit.label == "甲二镇印染有限公司"
    assert "纺织印染" in hit.detail


def test_grid_by_code_and_prefix(snap):
    hit = first(snap, "320901002800001")
    assert (hit.kind, hit.label) == ("grid", "某化工厂专属网格")
    assert hit.bbox == pytest.approx(world.DEDICATED.bounds)
    # The point to route is inside the grid (not merely the bbox centre).
    assert world.DEDICATED.contains(shapely.Point(hit.lon, hit.lat))
    codes = {h.code for h in search.search(snap, "320901001001")}
    assert codes == {"320901001001001", "320901001001002"}


def test_township_and_park(snap):
    hit = first(snap, "甲一镇")
    assert hit.kind in ("township", "grid", "entity")
    kinds = {h.kind for h in search.search(snap, "甲一镇")}
    assert "township" in kinds
    town = next(h for h in search.search(snap, "甲一镇") if h.kind == "township")
    assert town.code == "320901001" and town.bbox == pytest.approx(world.A1.bounds)
    assert first(snap, "甲化工园区").kind in ("park", "entity", "grid")


def test_worker_by_name_zooms_to_their_grids(snap):
    hit = first(snap, "甲二镇网格长")
    assert hit.kind == "worker" and hit.code == "L001"
    leader_grids = snap["grids"][snap["grids"]["code"] == "320901002001001"]
    assert hit.bbox == pytest.approx(leader_grids.total_bounds)
    assert "网格长" in hit.detail
    assert first(snap, "13800000001").code == "W001"  # by phone


def test_exact_before_substring_and_limits(snap):
    hits = search.search(snap, "网格员1")
    assert hits[0].label == "网格员1"  # exact, before 网格员10, 网格员11
    assert len(search.search(snap, "网格", limit=3)) == 3
    assert search.search(snap, "   ") == []
    assert search.search(snap, "不存在的名字") == []


def test_names_are_data_not_markup(snap):
    hit = first(snap, "<img")
    assert hit.label == XSS_NAME  # kept verbatim; escaping is the renderer's job


def test_index_built_once_per_generation(snap):
    assert search.index_for(snap) is search.index_for(snap)

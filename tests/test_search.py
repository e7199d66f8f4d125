"""Search: entities by name, credit code or address, grids by code or name, townships, parks,
communities and villages, roads, workers."""

from __future__ import annotations

import pandas as pd
import pytest
import shapely

from layers import search
from layers.store import open_store
from tests import world
from tests.browser import ENTITIES, XSS_NAME, build_map_world


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


# -- communities, addresses and roads ------------------------------------------------------------
ADDRESSES = {
    "a2_plain": "江苏省南通市甲县甲二镇工农路12号",
    "a1_numbered": "江苏省南通市甲县甲一镇工农路89号",
    "chemical": "江苏省南通市甲县甲二镇甲化工园区纬二路89号",
    "national": "南通市甲县甲二镇纬二路8号",
    "dedicated": "甲县甲二镇滨海大道1号",
    "enclave": "江苏省南通市乙县乙飞地街道工农路3号",
    "b1": "乙县乙一镇人民路100号",
    "border_ab": "",
    "a2_strip": "甲县甲二镇某某村三组",
    "near_border": "江苏省南通市甲县甲二镇道口路5号",
}


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """The world with entity addresses, a village named by an attribute of its grids (甲一镇:
    东风村) and a community named only by its grids' names (甲二镇: 幸福社区第N网格)."""
    from layers.importer import import_path
    from tests.browser import world_entities

    grids = world.layers()["grids"].copy()
    a1 = grids["township_code"] == "320901001"
    a2 = (grids["township_code"] == "320901002") & (grids["kind"] == "comprehensive")
    grids["community"] = ["东风村" if x else "" for x in a1]
    grids.loc[a2, "name"] = [f"幸福社区第{i}网格" for i in range(1, int(a2.sum()) + 1)]
    base = tmp_path_factory.mktemp("town")
    files = world.write(base / "files", {"grids": grids})
    ents = world_entities()
    ents["address"] = [ADDRESSES[p] for p in (point for _, point, _, _ in ENTITIES)]
    ents.to_csv(files / "entities.csv", index=False)
    store = open_store(str(base / "town.gpkg"), create=True)
    import_path(store, files)
    yield store.snapshot(), ents, grids
    store.close()


def test_road_names_from_addresses_one_per_county(town):
    snap, ents, _ = town
    hits = search.search(snap, "工农路")
    roads = [h for h in hits if h.kind == "road"]
    assert [h.kind for h in hits[:2]] == ["road", "road"]  # exact before the entities on it
    assert {h.code for h in roads} == {"甲县工农路", "乙县工农路"}
    jia = next(h for h in roads if h.code == "甲县工农路")
    on_it = ents[ents["address"].str.contains("甲县.*工农路", regex=True)]
    assert len(on_it) == 2 and jia.bbox == pytest.approx(
        (on_it["lon"].min(), on_it["lat"].min(), on_it["lon"].max(), on_it["lat"].max()))
    assert (jia.lon, jia.lat) in set(zip(on_it["lon"], on_it["lat"], strict=True))
    assert "甲县" in jia.detail and "2" in jia.detail and jia.kind_zh == "道路"
    assert not jia.is_area
    # The entities whose address is on the road follow, by their street part.
    assert {h.label for h in hits if h.kind == "entity"} == set(
        ents[ents["address"].str.contains("工农路")]["name"])
    assert {h.code for h in search.search(snap, "道口路") if h.kind == "road"} == {"甲县道口路"}
    assert not any(h.kind == "road" and "村" in h.label for h in search.search(snap, "村"))


def test_house_number_finds_the_entity_at_that_address(town):
    snap, ents, _ = town
    hit = first(snap, "纬二路89号")
    at = ents[ents["address"].str.endswith("纬二路89号")].iloc[0]
    assert (hit.kind, hit.label) == ("entity", at["name"])
    assert (hit.lon, hit.lat) == pytest.approx((at["lon"], at["lat"]))
    assert at["address"] in hit.detail
    # A part of the street address is a prefix: both houses on 纬二路 of 甲县.
    both = {h.label for h in search.search(snap, "纬二路8") if h.kind == "entity"}
    assert both == set(ents[ents["address"].str.contains("纬二路8")]["name"])


def test_whole_address_ranks_after_names(town):
    snap, ents, _ = town
    # Only its address holds "甲一镇工农路".
    hit = first(snap, "甲一镇工农路")
    assert hit.label == ents[ents["address"].str.contains("甲一镇工农路")]["name"].iloc[0]
    hits = search.search(snap, "甲二镇")
    assert hits[0].kind == "township"
    by_name = [i for i, h in enumerate(hits) if h.kind == "entity" and "甲二镇" in h.label]
    by_address = [i for i, h in enumerate(hits)
                  if h.kind == "entity" and "甲二镇" not in h.label]
    assert by_name and by_address and max(by_name) < min(by_address)


def test_communities_and_villages_by_their_grids(town):
    snap, _, grids = town
    village = first(snap, "东风村")
    assert (village.kind, village.kind_zh) == ("community", "社区/村") and village.is_area
    mine = grids[grids["community"] == "东风村"]
    assert village.code == "320901001001" and "2 个网格" in village.detail
    assert village.bbox == pytest.approx(tuple(mine.total_bounds))
    assert mine.union_all().contains(shapely.Point(village.lon, village.lat))
    # Named only by its grids' names: the community first, its grids after it.
    hits = search.search(snap, "幸福社区")
    assert (hits[0].kind, hits[0].label, hits[0].code) == ("community", "幸福社区",
                                                            "320901002001")
    assert {h.kind for h in hits[1:3]} == {"grid"}
    # Park and dedicated grids are no community.
    assert not [h for h in search.search(snap, "化工") if h.kind == "community"]


def test_community_codes_without_a_shared_prefix():
    grids = pd.DataFrame({
        "code": ["G1", "G2", "320901002003001", "320901002003002", "320901002800001"],
        "name": ["红星村第1网格", "红星村第2网格", "x", "y", "红旗村专属网格"],
        "township_code": ["320901003", "320901003", "320901002", "320901002", "320901002"],
        "kind": ["comprehensive"] * 4 + ["dedicated"],
        "attrs": [{}, {}, {"village": "红旗村"}, {"village": "红旗村"}, {}],
    })
    found = search.grid_communities(grids)
    assert dict(zip(found["row"], found["code"], strict=True)) == {
        0: "320901003:红星村", 1: "320901003:红星村", 2: "320901002003", 3: "320901002003"}
    rows, name = search.community_grids(grids, "320901003:红星村")
    assert list(rows["code"]) == ["G1", "G2"] and name == "红星村"


@pytest.mark.parametrize("address,parts", [
    ("江苏省南通市崇川区小海街道纬二路89号", ("崇川区", "纬二路", "纬二路89号")),
    ("江苏省南通市崇川区唐闸镇街道港城路768号", ("崇川区", "港城路", "港城路768号")),
    ("江苏省南通市海安市海安街道滨海大道412号", ("海安市", "滨海大道", "滨海大道412号")),
    ("南通市如东县洋口化学工业园区黄海路1号", ("如东县", "黄海路", "黄海路1号")),
    ("如东县长沙镇新村三组", ("如东县", "", "")),
    ("", ("", "", "")),
])
def test_address_parts(address, parts):
    assert search.address_parts(address) == parts


def test_the_issue_examples_on_the_sample(sample_store):
    store = open_store(str(sample_store))
    try:
        snap = store.snapshot()
        index = search.index_for(snap)
        entities = snap["entities"]
        addresses = pd.Series([a.get("address", "") for a in entities["attrs"]])
        for road in ("工农路", "纬二路"):
            hits = [h for h in index.search(road) if h.kind == "road"]
            expected = {c + r for c, r, _ in map(search.address_parts, addresses) if r == road}
            assert len(expected) > 1 and {h.code for h in hits} == expected
        street = search.address_parts(addresses.iloc[0])[2]
        hit = index.search(street)[0]
        assert hit.kind == "entity" and hit.score[0] == 0
        assert addresses[(entities["id"] == hit.code).to_numpy()].iloc[0].endswith(street)
        town = index.search("石港镇")[0]
        assert (town.kind, town.is_area) == ("township", True)
        grids = snap["grids"]
        named = next(a["community"] for a in grids["attrs"]
                     if str(a.get("community", "")).endswith("村"))
        village = index.search(named)[0]  # before its grids "…村第1网格"
        assert (village.kind, village.label, village.is_area) == ("community", named, True)
        assert village.code[:9] in set(grids["township_code"])
    finally:
        store.close()

"""Extents (a river stretch, a plume, a township chosen from search) are led by the lowest
bureau whose area covers all of them, the bureaus they reach into co-handle, and every grid
and worker they touch is listed — on both stores, through the router, the service and the
`gridmap route --wkt/--geojson` command.

The world is tests/world.py with a second numbered bureau in county A (B-A-2, the south-east of
甲二镇) and community names on the comprehensive grids of 甲二镇:

    120.5        120.6  120.62      120.7
 32.2 +------------+------+-----------+
      | A1  (B-A-1 strip) |  A2: B-A  |   chemical park P2 (B-P2): 120.6-120.64 x 32.13-32.17
 32.1 |            |      +-----------+
      |            |      |  B-A-2    |
 32.0 +------------+------+-----------+
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from grids.access import PermissionDenied
from grids.routing import Router, RoutingInputError
from grids.service import Gridmap
from layers.importer import import_path
from tests import world
from tests.conftest import STORES, gridmap_exe
from tests.signin import WORLD_USERS, add_world_users

NUMBERED_A2 = box(120.62, 32.0, 120.7, 32.1)
TOWN_A2 = "320901002"
COMMUNITY_A2 = "320901002001"  # the township code and the community digits of its grids


def variant() -> dict:
    layers = world.layers()
    bureaus = pd.concat([layers["bureaus"], pd.DataFrame(
        [("B-A-2", "甲县执法二局", "numbered", "B-A", "320901", "")],
        columns=layers["bureaus"].columns)], ignore_index=True)
    jurisdictions = layers["jurisdictions"].copy()
    jurisdictions.loc[len(jurisdictions)] = {"bureau_code": "B-A-2", "name": "甲二局辖区",
                                             "geometry": NUMBERED_A2}
    grids = layers["grids"].copy()
    grids["community"] = [
        "甲二社区" if t == TOWN_A2 and k == "comprehensive" else ""
        for t, k in zip(grids["township_code"], grids["kind"], strict=True)
    ]
    return {"bureaus": bureaus, "jurisdictions": jurisdictions, "grids": grids}


LAYERS = {**world.layers(), **variant()}


@pytest.fixture(scope="module")
def built(new_store, tmp_path_factory):
    """(store, router) of the world of this module in a store of a kind, built once."""
    files = world.write(tmp_path_factory.mktemp("lead") / "files", variant())
    stores: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in stores:
            store = new_store(kind)
            import_path(store, files)
            add_world_users(store.url)
            stores[kind] = (store, Router(store))
        return stores[kind]

    return get


@pytest.fixture(scope="module", params=STORES)
def lead(request, built):
    return built(request.param)


@pytest.fixture(scope="module")
def lead_gpkg(built):
    """For what does not depend on the store (argument and input errors of the command)."""
    return built("gpkg")


def touched_grids(geom) -> set[str]:
    """The grids a line or area really enters (a shared edge is not entering), by plain
    geometry on the source layer."""
    g = LAYERS["grids"]
    size = (lambda x: x.length) if "Line" in geom.geom_type else (lambda x: x.area)
    return {c for c, shape in zip(g["code"], g.geometry, strict=True)
            if size(shape.intersection(geom)) > 1e-9}


KIND_RANK = {"dedicated": 1, "park": 2, "comprehensive": 3}


def responsible_grids(geom) -> set[str]:
    """The touched grids that answer for some part of the extent: their part is not wholly
    under more specific grids (dedicated over park over comprehensive)."""
    g = LAYERS["grids"]
    band = geom.buffer(1e-6, cap_style="flat") if "Line" in geom.geom_type else geom
    parts = {c: (shape.intersection(band), k)
             for c, shape, k in zip(g["code"], g.geometry, g["kind"], strict=True)
             if c in touched_grids(geom)}
    out = set()
    for code, (part, kind) in parts.items():
        better = [p for p, k in parts.values() if KIND_RANK[k] < KIND_RANK[kind]]
        rest = part.difference(shapely.union_all(better)) if better else part
        if rest.area > band.area * 1e-6:
            out.add(code)
    return out


def workers_of(codes) -> set[str]:
    w = LAYERS["workers"]
    return set(w[w["grid_code"].isin(list(codes))]["id"])


def codes(items) -> set[str]:
    return {i["code"] for i in items}


def check_lists(a: dict, geom) -> None:
    """Every grid the extent enters is listed with its workers and whether it answers for a
    part of the extent; `workers` is everyone of the responsible grids."""
    expected = touched_grids(geom)
    assert codes(a["grids"]) == expected
    for g in a["grids"]:
        assert {w["id"] for w in g["workers"]} == workers_of([g["code"]])
    responsible = responsible_grids(geom)
    assert {g["code"] for g in a["grids"] if g["responsible"]} == responsible
    assert {w["id"] for w in a["workers"]} == workers_of(responsible)
    assert a["candidates"] == [] and a["status"] == "ok"


def test_two_numbered_bureaus_in_one_county_go_to_the_county_bureau(lead):
    _, router = lead
    # 甲一镇 and 甲二镇, across the strip of B-A-1 into the area of B-A-2.
    area = box(120.58, 32.02, 120.64, 32.04)
    a = router.route_extent(area.wkt)
    assert a["status"] == "ok" and a["status_zh"] == "明确"
    assert a["bureau"]["code"] == "B-A" and a["chain"] == ["B-A", "B-M"]
    assert codes(a["co_bureaus"]) == {"B-A-1", "B-A-2"}
    assert a["county"]["code"] == "320901" and a["township"] is None
    assert codes(a["townships"]) == {"320901001", TOWN_A2}
    assert "multi_bureau" in a["flags"] and "cross_county" not in a["flags"]
    check_lists(a, area)
    assert any("最低一级" in r and "甲县执法局" in r for r in a["reasons"])
    # The same keys as a point answer, plus the extent's lists.
    point = router.route(*world.P["a2_plain"])
    assert set(point) <= set(a) and set(a) - set(point) == {"townships", "grids"}


def test_an_extent_inside_one_numbered_bureau_is_its_and_not_ambiguous(lead):
    _, router = lead
    # Both grids of 甲一镇 (split at 32.1), all inside the strip of B-A-1.
    area = box(120.51, 32.08, 120.54, 32.12)
    a = router.route_extent(area.wkt)
    assert a["bureau"]["code"] == "B-A-1" and a["co_bureaus"] == []
    assert a["grid"] is None and len(a["grids"]) == 2
    check_lists(a, area)
    # A point is still ambiguous when it is uncertain.
    assert router.route(*world.P["border_ab"])["status"] == "ambiguous"
    assert router.route(*world.P["a1_numbered"], accuracy_m=0)["status"] == "ok"


def test_a_plume_inside_a_dedicated_grid_is_that_grids(lead):
    _, router = lead
    plume = box(120.655, 32.025, 120.665, 32.035)
    a = router.route_extent(plume.wkt)
    assert a["grid"]["code"] == "320901002800001" and a["rules"]["grid"] == "dedicated"
    # The comprehensive grid around it is listed, but its worker is not the one to send.
    assert codes(a["grids"]) == {"320901002800001", "320901002001001"}
    assert responsible_grids(plume) == {"320901002800001"}
    check_lists(a, plume)
    assert any("专属" in r and "320901002001001" in r for r in a["reasons"])
    assert a["bureau"]["code"] == "B-A-2"  # the south-east of 甲二镇


def test_park_and_its_surroundings_go_to_the_county_bureau(lead):
    _, router = lead
    area = box(120.59, 32.12, 120.66, 32.18)  # the chemical park, the strip and the rest of A2
    a = router.route_extent(area.wkt)
    assert a["bureau"]["code"] == "B-A"
    assert codes(a["co_bureaus"]) == {"B-P2", "B-A-1"}
    assert [p["code"] for p in a["parks"]] == ["P2", "P1"]  # chemical park first
    assert a["park"]["code"] == "P1"  # the national zone holds all of it, the chemical park not
    check_lists(a, area)
    inside = box(120.605, 32.14, 120.615, 32.15)  # only the chemical park
    b = router.route_extent(inside.wkt)
    assert b["bureau"]["code"] == "B-P2" and b["co_bureaus"] == []
    assert b["grid"]["code"] == "320901002900001" and b["park"]["code"] == "P2"
    assert b["rules"]["bureau"] == "park"


def test_land_and_the_county_sea_go_to_the_county_bureau(lead):
    _, router = lead
    line = shapely.LineString([(120.85, 32.11), (120.95, 32.11)])
    a = router.route_extent(line.wkt)
    assert a["bureau"]["code"] == "B-B" and codes(a["co_bureaus"]) == {"B-B-1"}
    assert a["sea_area"]["code"] == "S1" and "sea" in a["flags"]
    assert a["county"]["code"] == "320902"
    check_lists(a, line)


def test_cross_county_stays_municipal_with_county_bureaus(lead):
    _, router = lead
    line = shapely.LineString([(120.65, 32.15), (120.75, 32.15)])
    a = router.route_extent(line.wkt)
    assert a["status"] == "ok" and a["bureau"]["code"] == "B-M"
    assert codes(a["co_bureaus"]) == {"B-A", "B-B"} and "cross_county" in a["flags"]
    assert a["rules"] == {"bureau": "cross_county"}
    check_lists(a, line)
    assert {g["township"]["code"] for g in a["grids"]} == {TOWN_A2, "320902001"}
    # A line that only ends on the county border stays in its county.
    ends = router.route_extent("LINESTRING (120.65 32.15, 120.7 32.15)")
    assert ends["bureau"]["code"] == "B-A" and "cross_county" not in ends["flags"]


def test_partly_and_wholly_outside(lead):
    _, router = lead
    a = router.route_extent("LINESTRING (120.4 32.03, 120.55 32.03)")
    assert a["status"] == "ok" and a["bureau"]["code"] == "B-A-1"
    assert "partly_outside" in a["flags"]
    b = router.route_extent("LINESTRING (121.4 32.1, 121.55 32.1)")
    assert b["status"] == "outside" and b["grids"] == [] and b["bureau"] is None


def test_a_township_area_lists_all_its_grids(lead):
    _, router = lead
    a = router.route_area("township", TOWN_A2)
    grids = LAYERS["grids"]
    own = set(grids[grids["township_code"] == TOWN_A2]["code"])
    assert len(own) == 4 and codes(a["grids"]) == own
    check_lists(a, world.A2)
    leader = next(w for w in a["workers"] if w["id"] == "L001")
    assert leader["grid_codes"] == ["320901002001001"]
    assert a["bureau"]["code"] == "B-A"
    assert codes(a["co_bureaus"]) == {"B-A-1", "B-A-2", "B-P2"}
    assert a["point"]["input"]["area"] == {"kind": "township", "kind_zh": "乡镇/街道",
                                           "code": TOWN_A2, "name": "甲二镇"}
    assert "甲二镇" in a["reasons"][0] and "整个范围" in a["reasons"][0]
    # 甲一镇 lies wholly in the strip of B-A-1: that bureau, alone.
    b = router.route_area("township", "320901001")
    assert b["bureau"]["code"] == "B-A-1" and b["co_bureaus"] == []
    assert codes(b["grids"]) == set(grids[grids["township_code"] == "320901001"]["code"])


def test_a_community_park_and_grid_as_areas(lead):
    _, router = lead
    community = router.route_area("community", COMMUNITY_A2)
    assert community["point"]["input"]["area"]["name"] == "甲二社区"
    # Its two comprehensive grids, and the park and dedicated grids lying on them.
    assert codes(community["grids"]) == touched_grids(world.A2)
    outline = router.area_of("community", COMMUNITY_A2)
    assert outline.area == pytest.approx(world.A2.area)
    park = router.route_area("park", "P2")
    assert park["bureau"]["code"] == "B-P2" and park["park"]["code"] == "P2"
    grid = router.route_area("grid", "320901002800001")
    assert grid["grid"]["code"] == "320901002800001"
    # A county in two parts (乙县 and its enclave in 甲县): one county, its bureau leads.
    county = router.route_area("county", "320902")
    assert county["bureau"]["code"] == "B-B" and codes(county["co_bureaus"]) == {"B-B-1"}
    assert codes(county["townships"]) == {"320902001", "320902002"}
    check_lists(county, world.COUNTY_B)
    with pytest.raises(RoutingInputError, match="没有编码"):
        router.route_area("township", "999999999")
    with pytest.raises(RoutingInputError, match="不能按区域受理"):
        router.area_of("entity", "x")


def test_bad_extents_are_refused_in_chinese(lead):
    _, router = lead
    for bad, needle in [("POINT (120.6 32.1)", "线"), ("LINESTRING (120.6 32.1", "无法识别"),
                        ("POLYGON ((120.6 32, 120.7 32.1, 120.7 32, 120.6 32.1, 120.6 32))",
                         "自相交"), ("LINESTRING (32.05 120.61, 32.05 120.65)", "经度")]:
        with pytest.raises(RoutingInputError, match=needle):
            router.route_extent(bad)
    with pytest.raises(RoutingInputError, match="EPSG:4549"):
        router.route_extent("LINESTRING (120.61 32.05, 120.65 32.05)", "EPSG:4549")


def test_service_intake_area_checks_the_actor(lead):
    store, router = lead
    svc = Gridmap(store.url)
    try:
        from grids.access import Actor

        def actor(role):
            login, links = WORLD_USERS[role]
            links = dict(links)
            return Actor(login, role, links.pop("name", ""), **links)

        answer, geom = svc.intake_area(actor("dispatcher"), "township", TOWN_A2,
                                       category="water")
        assert geom.area == pytest.approx(world.A2.area)
        route = answer.route
        assert route["bureau"]["code"] == "B-A"
        assert route["point"]["input"]["area"]["code"] == TOWN_A2
        assert route["reasons"][0].startswith("按乡镇/街道“甲二镇”")
        assert codes(route["grids"]) == codes(router.route_area("township", TOWN_A2)["grids"])
        referral, _ = svc.intake_area(actor("dispatcher"), "township", TOWN_A2,
                                      category="cooking_fumes")
        assert referral.referral and "餐饮油烟" in referral.route["reasons"][0]
        assert "甲二镇" in referral.route["reasons"][1]
        with pytest.raises(PermissionDenied):
            svc.intake_area(actor("viewer"), "township", TOWN_A2)
        extent = svc.route_extent(actor("viewer"), "LINESTRING (120.65 32.15, 120.75 32.15)")
        assert extent["bureau"]["code"] == "B-M"
    finally:
        svc.close()


# -- the command line ---------------------------------------------------------------------------
def run(store, *args) -> subprocess.CompletedProcess:
    return subprocess.run([gridmap_exe(), "--store", store.url, "route", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_routes_wkt_and_geojson_like_the_router(lead, tmp_path):
    store, router = lead
    line = "LINESTRING (120.61 32.05, 120.65 32.05)"
    out = run(store, "--wkt", line, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(json.dumps(router.route_extent(line),
                                                           ensure_ascii=False))
    feature = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"名称": "某河段"},
         "geometry": shapely.geometry.mapping(shapely.from_wkt(line))}]}
    path = tmp_path / "河段.geojson"
    path.write_text(json.dumps(feature, ensure_ascii=False), encoding="utf-8")
    by_file = json.loads(run(store, "--geojson", path, "--json").stdout)
    assert by_file["bureau"]["code"] == "B-A"
    assert codes(by_file["co_bureaus"]) == {"B-A-1", "B-A-2"}
    assert codes(by_file["grids"]) == touched_grids(shapely.from_wkt(line))
    card = run(store, "--geojson", path)
    assert card.returncode == 0 and "牵头执法机构：甲县执法局（B-A）" in card.stdout
    assert "协办执法机构：" in card.stdout and "网格员1" not in card.stdout
    assert "网格员3" in card.stdout  # the worker of the grid it runs through


@pytest.mark.parametrize("args,needle", [
    (("--wkt", "POINT (120.6 32.1)"), "Point"),
    (("--wkt", "LINESTRING (120.6 32.1"), "无法识别"),
    (("--wkt", "LINESTRING (120.61 32.05, 120.65 32.05)", "--crs", "EPSG:99999"), "99999"),
    (("--wkt", "LINESTRING (120.61 32.05, 120.65 32.05)", "--crs", "EPSG:4549"), "经纬度"),
    (("120.6", "32.1", "--wkt", "LINESTRING (120.61 32.05, 120.65 32.05)"), "只能"),
    ((), "请给出位置"),
    (("--geojson", "/nonexistent/河段.geojson"), "不存在"),
])
def test_cli_extent_errors_are_chinese_with_exit_2(lead_gpkg, args, needle):
    store, _ = lead_gpkg
    out = run(store, *args)
    assert out.returncode == 2 and needle in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_cli_refuses_a_file_that_is_not_geojson(lead_gpkg, tmp_path):
    store, _ = lead_gpkg
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Feature", "geometry": ', encoding="utf-8")
    out = run(store, "--geojson", bad)
    assert out.returncode == 2 and "不是有效的 GeoJSON" in out.stderr

"""The data-quality checks (grids/checks.py): each check finds what it should on a broken copy
of the hand-drawn world (tests/world.py) — with the area measured independently on the
ellipsoid — and nothing on the clean world and the Nantong sample; the rules are data; ids
are stable; `gridmap validate` (current layers, a folder, a zip, a draft) as JSON and text."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.geometry import Polygon, box

from grids.access import Actor
from grids.checks import RulesError, check_layers, counts, has_errors, load_rules
from grids.service import Gridmap
from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.browser import world_entities
from tests.conftest import gridmap_exe
from tests.signin import WORLD_USERS, add_world_users

GEOD = pyproj.Geod(ellps="GRS80")
A2_SOUTH = "320901002001001"  # world: the southern comprehensive grid of 甲二镇 (32.0–32.1)
A2_NORTH = "320901002001002"


def m2(geom) -> float:
    """Area on the ellipsoid (independent of the checks' projection)."""
    return abs(GEOD.geometry_area_perimeter(geom)[0])


def layers(**changes) -> dict[str, pd.DataFrame]:
    out = world.layers()
    out.update(changes)
    return out


def grids_with(code: str, geom) -> gpd.GeoDataFrame:
    g = world.layers()["grids"].copy()
    g.loc[g["code"] == code, "geometry"] = geom
    return g


def one(findings, kind: str, layer: str | None = None):
    found = [f for f in findings if f.kind == kind and (layer is None or f.layer == layer)]
    assert len(found) == 1, [(f.kind, f.layer, f.codes, f.message_zh) for f in findings]
    return found[0]


def kinds(findings) -> set[tuple[str, str, str]]:
    return {(f.kind, f.severity, f.layer) for f in findings}


# -- clean data -----------------------------------------------------------------------------------
def test_the_clean_world_has_no_finding():
    assert check_layers(world.layers()) == []


def test_the_clean_sample_has_no_error(sample_store):
    store = open_store(str(sample_store))
    try:
        findings = check_layers(store.snapshot().layers)
    finally:
        store.close()
    assert not has_errors(findings), [f.message_zh for f in findings if f.severity == "error"]
    assert findings == []  # and no warning either: the sample is what a clean store looks like


# -- each check -----------------------------------------------------------------------------------
def test_a_park_overlapping_another_is_an_error_but_a_nested_park_is_not():
    parks = world.layers()["parks"]
    extra = box(120.66, 32.10, 120.69, 32.14)  # overlaps 甲国家级开发区 (P1) by 0.02 × 0.02°
    parks.loc[len(parks)] = {"code": "P3", "name": "乙园区", "kind": "other",
                             "county_code": "320901", "geometry": extra}
    found = check_layers(layers(parks=parks))
    f = one(found, "overlap")
    assert (f.severity, f.layer, sorted(f.codes), f.check) == ("error", "parks", ["P1", "P3"],
                                                              "park_overlap")
    expected = m2(extra.intersection(world.NATIONAL_ZONE))
    assert f.area_m2 == pytest.approx(expected, rel=0.005)
    assert f.geometry.equals(extra.intersection(world.NATIONAL_ZONE))
    assert world.NATIONAL_ZONE.intersection(extra).contains(shapely.Point(f.location))
    assert "甲国家级开发区" in f.message_zh and "乙园区" in f.message_zh
    # The chemical park P2 lies inside P1 in the clean world: nested, no finding (above).


def test_a_narrow_gap_between_two_grids_is_a_sliver():
    width = 0.00002  # ~2.2 m of latitude between the two grids of 甲二镇
    south = box(120.6, 32.0, 120.7, 32.1 - width)
    found = check_layers(layers(grids=grids_with(A2_SOUTH, south)))
    f = one(found, "sliver")
    assert (f.severity, f.layer) == ("warning", "grids")
    assert f.codes[0] == "320901002" and set(f.codes[1:]) == {A2_SOUTH, A2_NORTH}
    gap = box(120.6, 32.1 - width, 120.7, 32.1)
    assert f.area_m2 == pytest.approx(m2(gap), rel=0.005)
    assert 32.1 - width <= f.location[1] <= 32.1
    assert not has_errors(found)


def test_a_wide_gap_in_a_township_is_an_error():
    south = box(120.6, 32.0, 120.7, 32.09)  # 0.01° of latitude without a grid
    f = one(check_layers(layers(grids=grids_with(A2_SOUTH, south))), "gap")
    assert (f.severity, f.check, f.codes[0]) == ("error", "grid_gap", "320901002")
    assert f.area_m2 == pytest.approx(m2(box(120.6, 32.09, 120.7, 32.1)), rel=0.005)
    assert "甲二镇" in f.message_zh


def test_overlapping_comprehensive_grids_are_an_error():
    south = box(120.6, 32.0, 120.7, 32.11)  # 0.01° into the northern grid
    found = check_layers(layers(grids=grids_with(A2_SOUTH, south)))
    f = one(found, "overlap")
    assert (f.severity, f.check, sorted(f.codes)) == ("error", "grid_overlap",
                                                      [A2_SOUTH, A2_NORTH])
    assert f.area_m2 == pytest.approx(m2(box(120.6, 32.1, 120.7, 32.11)), rel=0.005)


def test_a_grid_crossing_its_township_border():
    grown = box(120.6, 32.0, 120.7, 32.1).union(box(120.59, 32.0, 120.6, 32.01))
    found = check_layers(layers(grids=grids_with(A2_SOUTH, grown)))
    f = one(found, "crossing")
    # the grid, its township, the township it reaches into (甲一镇)
    assert f.codes == [A2_SOUTH, "320901002", "320901001"]
    assert (f.severity, f.check) == ("error", "grid_crossing")
    assert f.area_m2 == pytest.approx(m2(box(120.59, 32.0, 120.6, 32.01)), rel=0.005)
    assert "甲一镇" in f.message_zh
    # The part inside 甲一镇 also overlaps 甲一镇's own grid: the crossing is what names it.
    assert {x.kind for x in found} == {"crossing"}


def test_a_cycle_in_bureau_parents_and_a_bureau_its_own_parent():
    b = world.layers()["bureaus"]
    b.loc[b["code"] == "B-A", "parent_code"] = "B-A-1"  # B-A → B-A-1 → B-A
    b.loc[b["code"] == "B-B-1", "parent_code"] = "B-B-1"
    found = check_layers(layers(bureaus=b))
    cycles = sorted(f.codes for f in found if f.kind == "cycle")
    assert cycles == [["B-A", "B-A-1"], ["B-B-1"]]
    assert all(f.severity == "error" for f in found if f.kind == "cycle")
    text = next(f.message_zh for f in found if f.codes == ["B-A", "B-A-1"])
    assert "甲县执法局（B-A） → 甲县执法一局（B-A-1） → 甲县执法局（B-A）" in text


def test_orphans_and_unknown_codes():
    w = world.layers()["workers"]
    w.loc[len(w)] = ("W999", "无网格的网格员", "13800009999", "320999999999999", "worker")
    w = w[w["grid_code"] != "320902001001002"]  # 乙一镇北网格 loses its worker
    g = world.layers()["grids"]
    g.loc[g["code"] == A2_NORTH, "township_code"] = "320901999"
    b = world.layers()["bureaus"]
    b.loc[b["code"] == "B-B", "parent_code"] = "B-X"
    found = check_layers(layers(workers=w, grids=g, bureaus=b))
    orphan_worker = [f for f in found if f.check == "worker_without_grid"]
    assert [(f.codes, f.severity, f.kind) for f in orphan_worker] == [
        (["W999", "320999999999999"], "error", "orphan")]
    unstaffed = [f for f in found if f.check == "grid_without_worker"]
    assert [(f.codes, f.severity) for f in unstaffed] == [(["320902001001002"], "warning")]
    unknown = sorted(f.codes for f in found if f.kind == "unknown_code")
    assert unknown == [[A2_NORTH, "320901999"], ["B-B", "B-X"]]
    # 甲二镇 lost its northern grid to an unknown township: that half is a gap now.
    gap = one(found, "gap")
    assert gap.codes[0] == "320901002"
    assert gap.area_m2 == pytest.approx(m2(box(120.6, 32.1, 120.7, 32.2)), rel=0.005)


def test_invalid_geometry_is_reported_where_it_is_and_checked_repaired():
    parks = world.layers()["parks"]
    bowtie = Polygon([(120.8, 32.05), (120.85, 32.1), (120.85, 32.05), (120.8, 32.1)])
    parks.loc[len(parks)] = {"code": "P9", "name": "蝴蝶园区", "kind": "other",
                             "county_code": "320902", "geometry": bowtie}
    found = check_layers(layers(parks=parks))
    f = one(found, "invalid")
    assert (f.codes, f.severity, f.layer) == (["P9"], "error", "parks")
    assert f.location == pytest.approx((120.825, 32.075), abs=1e-9)
    assert "自相交" in f.message_zh
    assert len(found) == 1  # the repaired triangles lie inside county B: nothing else


def test_features_beyond_the_city():
    parks = world.layers()["parks"]
    parks.loc[parks["code"] == "P1", "geometry"] = box(120.58, 32.12, 120.68, 32.25)
    f = one(check_layers(layers(parks=parks)), "outside")
    assert (f.codes, f.severity, f.layer) == (["P1"], "error", "parks")
    assert f.area_m2 == pytest.approx(m2(box(120.58, 32.2, 120.68, 32.25)), rel=0.005)
    ents = world_entities()
    ents.loc[len(ents)] = {**ents.iloc[0].to_dict(), "id": "91320600MA00000000",
                           "name": "界外企业", "lon": 121.5, "lat": 32.5}
    points = gpd.GeoDataFrame(ents, geometry=gpd.points_from_xy(ents["lon"], ents["lat"]),
                              crs=4490)
    found = check_layers(layers(entities=points))
    f = one(found, "outside", "entities")
    assert (f.codes, f.severity, f.location) == (["91320600MA00000000"], "warning",
                                                 (121.5, 32.5))


def test_numbered_bureaus_must_partition_their_county():
    j = world.layers()["jurisdictions"]
    b = world.layers()["bureaus"]
    b.loc[len(b)] = ("B-A-2", "甲县执法二局", "numbered", "B-A", "320901", "")
    # A second numbered bureau of county A, 3 m short of the first one's eastern edge: a narrow
    # gap between them. The wide rest of county A left to nobody is the county bureau's own.
    eps = 0.00003
    j.loc[len(j)] = {"bureau_code": "B-A-2", "name": "甲二局辖区",
                     "geometry": box(120.62 + eps, 32.0, 120.66, 32.2)}
    found = check_layers(layers(jurisdictions=j, bureaus=b))
    f = one(found, "sliver")
    assert f.layer == "jurisdictions" and f.codes == ["320901", "B-A-1", "B-A-2"]
    assert f.area_m2 == pytest.approx(m2(box(120.62, 32.0, 120.62 + eps, 32.2)), rel=0.01)
    assert len(found) == 1
    # overlapping numbered bureaus and one reaching into the next county
    j.loc[j["bureau_code"] == "B-A-2", "geometry"] = box(120.61, 32.0, 120.66, 32.2)
    j.loc[j["bureau_code"] == "B-B-1", "geometry"] = box(120.69, 32.0, 120.9, 32.2)
    found = check_layers(layers(jurisdictions=j, bureaus=b))
    over = one(found, "overlap")
    assert sorted(over.codes) == ["B-A-1", "B-A-2"] and over.severity == "error"
    assert over.area_m2 == pytest.approx(m2(box(120.61, 32.0, 120.62, 32.2)), rel=0.005)
    cross = one(found, "crossing")
    assert cross.codes == ["B-B-1", "320902", "320901"]
    assert cross.area_m2 == pytest.approx(m2(box(120.69, 32.0, 120.7, 32.2)), rel=0.005)
    # a numbered bureau without any area
    found = check_layers(layers(jurisdictions=j[j["bureau_code"] != "B-B-1"]))
    f = one(found, "orphan")
    assert (f.check, f.codes, f.severity) == ("bureau_without_area", ["B-B-1"], "warning")


def test_townships_must_tile_their_county():
    t = world.layers()["townships"]
    t.loc[t["code"] == "320901001", "geometry"] = box(120.5, 32.0, 120.61, 32.2).difference(
        world.ENCLAVE)
    found = check_layers(layers(townships=t))
    over = [f for f in found if f.check == "township_overlap"]
    assert [sorted(f.codes) for f in over] == [["320901001", "320901002"]]
    assert over[0].area_m2 == pytest.approx(m2(box(120.6, 32.0, 120.61, 32.2)), rel=0.005)
    t = world.layers()["townships"]
    t.loc[t["code"] == "320901002", "geometry"] = box(120.6, 32.0, 120.7, 32.15)
    found = check_layers(layers(townships=t))
    gap = [f for f in found if f.check == "township_gap"]
    assert [(f.codes[:1], f.severity) for f in gap] == [(["320901"], "error")]
    assert gap[0].area_m2 == pytest.approx(m2(box(120.6, 32.15, 120.7, 32.2)), rel=0.005)


def test_duplicates_chemical_parks_without_bureau_and_seas_over_land():
    parks = world.layers()["parks"]
    parks.loc[len(parks)] = {**parks.iloc[0].to_dict(), "name": "重复园区"}
    b = world.layers()["bureaus"]
    seas = world.layers()["sea_areas"]
    seas.loc[0, "geometry"] = box(120.89, 32.0, 121.0, 32.2)
    found = check_layers(layers(parks=parks, bureaus=b[b["code"] != "B-P2"], sea_areas=seas))
    dup = one(found, "duplicate")
    assert (dup.codes, dup.layer, dup.severity) == (["P1"], "parks", "error")
    orphan = one(found, "orphan")
    assert (orphan.check, orphan.codes) == ("chemical_park_without_bureau", ["P2"])
    sea = one(found, "overlap", "sea_areas")
    assert sea.severity == "warning"
    assert sea.area_m2 == pytest.approx(m2(box(120.89, 32.0, 120.9, 32.2)), rel=0.005)


def test_a_narrow_gap_between_counties():
    c = world.layers()["counties"]
    c.loc[c["code"] == "320901", "geometry"] = box(120.5, 32.0, 120.69998, 32.2).difference(
        world.ENCLAVE)
    found = check_layers(layers(counties=c))
    sliver = [f for f in found if f.kind == "sliver" and f.layer == "counties"]
    assert len(sliver) == 1 and set(sliver[0].codes) == {"320901", "320902"}


# -- rules, ids, output ---------------------------------------------------------------------
def overlapping_parks() -> dict:
    parks = world.layers()["parks"]
    parks.loc[len(parks)] = {"code": "P3", "name": "乙园区", "kind": "other",
                             "county_code": "320901",
                             "geometry": box(120.66, 32.10, 120.69, 32.14)}
    return layers(parks=parks)


def test_tolerances_and_severities_are_data(tmp_path):
    broken = overlapping_parks()
    area = one(check_layers(broken), "overlap").area_m2
    assert check_layers(broken, settings={"park_overlap": {"tolerance_m2": area + 1}}) == []
    assert one(check_layers(broken, settings={"park_overlap": {"tolerance_m2": area - 1}}),
               "overlap")
    warned = check_layers(broken, settings={"park_overlap": {"severity": "warning"}})
    assert one(warned, "overlap").severity == "warning" and not has_errors(warned)
    table = tmp_path / "rules.csv"
    text = Path("grids/check_rules.csv").read_text(encoding="utf-8")
    table.write_text(text.replace("park_overlap,overlap,error,100,", "park_overlap,overlap,"
                                  "error,1e12,"), encoding="utf-8")
    assert load_rules(table)["park_overlap"].tolerance_m2 == 1e12
    assert check_layers(broken, settings=table) == []
    with pytest.raises(RulesError, match="severity"):
        check_layers(broken, settings={"park_overlap": {"severity": "fatal"}})
    with pytest.raises(RulesError, match="没有名为"):
        check_layers(broken, settings={"no_such_check": {"tolerance_m2": 1}})


def test_ids_are_stable_and_say_which_problem():
    broken = overlapping_parks()
    first = one(check_layers(broken), "overlap")
    again = one(check_layers(overlapping_parks()), "overlap")
    assert first.id == again.id and first.id.startswith("overlap-")
    # Another, unrelated change leaves this finding's id as it was.
    w = broken["workers"]
    broken["workers"] = w[w["grid_code"] != "320902001001002"]
    found = check_layers(broken)
    assert one(found, "overlap").id == first.id
    assert len({f.id for f in found}) == len(found) == 2
    as_json = json.loads(json.dumps([f.as_dict() for f in found], ensure_ascii=False))
    assert set(as_json[0]) >= {"id", "kind", "severity", "layer", "codes", "area_m2",
                               "location", "bbox", "message"}
    assert counts(found) == {"error": 1, "warning": 1}


# -- gridmap validate -----------------------------------------------------------------------
def validate(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([gridmap_exe(), "--store", str(store), "validate", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def world_gpkg(tmp_path_factory, world_dir) -> Path:
    path = tmp_path_factory.mktemp("validate") / "world.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, world_dir)
    store.close()
    add_world_users(path)
    return path


def broken_folder(base: Path) -> Path:
    """The world with a sliver between two grids and a cycle in the bureaus' parents."""
    b = world.layers()["bureaus"]
    b.loc[b["code"] == "B-A", "parent_code"] = "B-A-1"
    grids = grids_with(A2_SOUTH, box(120.6, 32.0, 120.7, 32.1 - 0.00002))
    files = world.write(base / "broken", {"bureaus": b, "grids": grids})
    for name in ("counties", "townships", "parks", "sea_areas", "jurisdictions", "workers"):
        for file in files.glob(f"{name}.*"):
            file.unlink()  # only the changed layers: the others are the store's
    return files


def test_validate_the_current_layers(world_gpkg):
    out = validate(world_gpkg, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"] == {"error": 0, "warning": 0} and report["findings"] == []
    assert report["subject"] == "当前图层（版本 1）"
    text = validate(world_gpkg)
    assert text.returncode == 0 and text.stdout.splitlines() == ["检查对象：当前图层（版本 1）",
                                                                 "未发现问题。"]


def test_validate_a_folder_and_a_zip_over_the_current_layers(world_gpkg, tmp_path):
    folder = broken_folder(tmp_path)
    before = open_store(str(world_gpkg))
    generations = len(before.generations())
    before.close()
    out = validate(world_gpkg, str(folder), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["replaced"] == ["bureaus", "grids"]
    found = {(f["kind"], f["severity"], f["layer"]): f for f in report["findings"]}
    assert set(found) == {("cycle", "error", "bureaus"), ("sliver", "warning", "grids")}
    sliver = found[("sliver", "warning", "grids")]
    assert sliver["codes"] == ["320901002", A2_SOUTH, A2_NORTH]
    assert sliver["area_m2"] == pytest.approx(m2(box(120.6, 32.09998, 120.7, 32.1)), rel=0.005)
    lon, lat = sliver["location"]
    assert 120.6 <= lon <= 120.7 and 32.09998 <= lat <= 32.1
    assert report["counts"] == {"error": 1, "warning": 1}
    # nothing was written
    after = open_store(str(world_gpkg))
    assert len(after.generations()) == generations
    after.close()
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in folder.iterdir():
            z.write(file, file.name)
    zipped = json.loads(validate(world_gpkg, str(archive), "--json").stdout)
    assert [f["id"] for f in zipped["findings"]] == [f["id"] for f in report["findings"]]
    text = validate(world_gpkg, str(archive))
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert lines[0].startswith("检查对象：broken.zip 中的图层")
    header = next(line for line in lines if line.startswith("严重程度"))
    assert header.split() == ["严重程度", "类型", "图层", "编码", "面积(平方米)",
                              "位置(经度,纬度)", "说明"]
    assert any(line.startswith("错误") and "循环上级" in line for line in lines)
    assert lines[-1] == "共 2 项：错误 1 项，警告 1 项。有错误，不能发布。"


def test_a_file_the_importer_would_refuse_is_a_format_error(world_gpkg, tmp_path):
    files = tmp_path / "bad"
    files.mkdir()
    w = world.layers()["workers"]
    w.loc[0, "phone"] = "不是电话"
    w.to_csv(files / "workers.csv", index=False)
    report = json.loads(validate(world_gpkg, str(files), "--json").stdout)
    assert [(f["kind"], f["layer"]) for f in report["findings"]] == [("format", "workers")]
    assert "不是电话" in report["findings"][0]["message"]


def test_validate_a_draft(world_gpkg):
    svc = Gridmap(str(world_gpkg))
    planner = Actor(WORLD_USERS["planner"][0], "planner", "规划员")
    try:
        draft = svc.create_draft(planner, "parks", note="新增乙园区")
        parks = svc.draft_features(planner, draft.id, "parks")
        parks = pd.concat([parks, gpd.GeoDataFrame(
            [{"code": "P3", "name": "乙园区", "kind": "other", "county_code": "320901",
              "attrs": {}, "geometry": box(120.66, 32.10, 120.69, 32.14)}], crs=4490)],
            ignore_index=True)
        svc.save_draft(planner, draft.id, parks, layer="parks")
    finally:
        svc.close()
    out = validate(world_gpkg, "--draft", str(draft.id), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert [(f["kind"], sorted(f["codes"])) for f in report["findings"]] == [
        ("overlap", ["P1", "P3"])]
    assert report["replaced"] == ["parks"] and "新增乙园区" in report["subject"]
    missing = validate(world_gpkg, "--draft", "999")
    assert missing.returncode == 2 and "草稿 999 不存在" in missing.stderr
    both = validate(world_gpkg, "--draft", str(draft.id), str(world_gpkg.parent))
    assert both.returncode == 2 and "只能检查一个对象" in both.stderr


def test_the_service_refuses_roles_without_the_permission(world_gpkg):
    from grids.access import PermissionDenied

    svc = Gridmap(str(world_gpkg))
    try:
        worker = Actor(WORLD_USERS["grid_worker"][0], "grid_worker", "",
                       worker_id="W003")
        with pytest.raises(PermissionDenied):
            svc.check_layers(worker)
        viewer = Actor(WORLD_USERS["viewer"][0], "viewer", "领导")
        assert svc.check_layers(viewer).findings == []
    finally:
        svc.close()


def test_the_world_folder_over_its_own_store_is_clean(tmp_path, world_dir):
    """A world folder copied under a new name validates like the store's own layers."""
    copy = tmp_path / "copy"
    shutil.copytree(world_dir, copy)
    store = tmp_path / "s.gpkg"
    s = open_store(str(store), create=True)
    import_path(s, world_dir)
    s.close()
    out = validate(store, str(copy), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["findings"] == []


def test_a_bow_tie_is_drawn_on_the_findings_map_where_it_is_wrong():
    """An invalid polygon cannot be snapped to a grid (GEOS raises): the map drew nothing and
    the 数据质检 page stopped with Streamlit's English error box."""
    from shapely.geometry import Polygon

    from grids.checks import Finding
    from ui import basemap, checks

    bowtie = Polygon([(120.61, 32.01), (120.69, 32.09), (120.69, 32.01), (120.61, 32.09)])
    finding = Finding(kind="invalid", severity="error", layer="parks", codes=["P03"],
                      message_zh="几何无效：自相交", geometry=bowtie, location=(120.65, 32.05))
    m = checks.findings_map(basemap.load_settings({}).get("none"), [finding])
    html = m.get_root().render()
    assert "120.61" in html and "32.09" in html  # the bow-tie's own corners

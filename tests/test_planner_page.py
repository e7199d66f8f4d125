"""The 规划调整 page (pages/9_规划调整.py) with Streamlit's AppTest (no browser) on the map
world, and the geometry behind it (ui/planner.py): picking a park starts a draft; a polygon
drawn on the map (what streamlit-folium reports) replaces, joins or is cut out of the boundary,
snapped to the neighbours, and is saved with the impact beside it; paint-by-unit; undo,
leave and resume, discard; a conflict keeps the draft; warnings must be acknowledged one by
one before the publish; a new park with its bureau; history and roll back; only planners."""

from __future__ import annotations

import math
import shutil
import zipfile

import pytest
import shapely
from shapely.geometry import box, mapping
from streamlit.testing.v1 import AppTest

from grids.access import Actor
from grids.service import Gridmap
from tests import world
from tests.browser import ROOT, XSS_NAME, build_map_world
from tests.signin import sign_in_page
from ui import cards
from ui import planner as pl

PAGE = "pages/9_规划调整.py"
PLANNER = Actor("t-planner", "planner", "规划员")
# P2 (the chemical park, box 120.60–120.64 × 32.13–32.17) drawn wider to the east: the
# entity at world.P["national"] (120.66, 32.16) moves from county bureau B-A to B-P2.
P2_WIDER = box(120.6, 32.13, 120.67, 32.17)


@pytest.fixture(scope="module")
def map_world(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("planner"))


@pytest.fixture
def store_path(map_world, tmp_path):
    path = tmp_path / "plan.gpkg"
    shutil.copy(map_world, path)
    return path


def open_page(store, monkeypatch, role: str = "planner") -> AppTest:
    sign_in_page(monkeypatch, store, role)
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def texts(at) -> str:
    parts = [e.value for e in (*at.error, *at.warning, *at.success, *at.info)]
    parts += [m.value for m in at.caption] + [m.value for m in at.markdown]
    return "\n".join(parts).replace("\\", "")  # markdown escapes of the data's text


def button(at, label: str):
    [b] = [b for b in at.button if b.label == label]
    return b


def start(at, code: str = "P2", note: str = "按批复扩大化工园区") -> AppTest:
    at.selectbox(key="pl_pick").set_value(code).run()
    at.text_input(key="pl_pick_note").input(note).run()
    return button(at, "开始调整（新建草稿）").click().run()


def draw(at, geom, kind: str = "created", n: int = 1) -> AppTest:
    """What streamlit-folium reports after a polygon is drawn (or the edit tool saved)."""
    if kind == "created":
        drawing = {"type": "Feature", "properties": {"gm": kind, "n": n},
                   "geometry": mapping(geom)}
    else:
        drawing = {"type": "FeatureCollection", "properties": {"gm": kind, "n": n},
                   "features": [{"type": "Feature", "properties": {}, "geometry": mapping(p)}
                                for p in shapely.get_parts(geom)]}
    at.session_state["pl_map_draw"] = {"last_active_drawing": drawing}
    return at.run()


def drawn_boundary(store, draft_id: int, code: str = "P2"):
    svc = Gridmap(str(store))
    try:
        parks = svc.draft_features(PLANNER, draft_id, "parks")
    finally:
        svc.close()
    return parks[parks["code"] == code].geometry.values[0]


def draft_id(at) -> int:
    return int(at.session_state["pl_draft"])


def table(at, column: str):
    """The first table with `column` (AppTest names st.dataframe only when selectable)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, column
    return found[0]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def route(store, point: str, **kwargs) -> dict:
    svc = Gridmap(str(store))
    try:
        return svc.route(PLANNER, *world.P[point], **kwargs)
    finally:
        svc.close()


# -- the geometry of an edit ------------------------------------------------------------------
def test_snap_moves_vertices_onto_neighbour_vertices_and_edges():
    m = 1 / (pl.M_PER_DEG_LON * math.cos(math.radians(32.15)))  # one metre of longitude
    layers = world.layers()
    # A vertex 5 m from the park grid's corner (120.6, 32.13), one 6 m east of the township
    # border x = 120.6 (no vertex near), one 100 m from anything.
    drawn = shapely.Polygon([(120.6 + 5 * m, 32.13 + 1e-5), (120.67, 32.13),
                             (120.67 + 100 * m, 32.17), (120.6 + 6 * m, 32.15)])
    ref = pl.neighbours(layers, drawn, 20, {"parks": ["P2"]})
    out = pl.snap(drawn, ref, 20)
    xy = shapely.get_coordinates(out)
    assert any(x == 120.6 and y == 32.13 for x, y in xy)  # onto the vertex, exactly
    assert any(abs(x - 120.6) < 1e-9 and abs(y - 32.15) < 1e-6 for x, y in xy)  # the edge
    assert any(x == pytest.approx(120.67 + 100 * m, abs=1e-12) for x, _ in xy)  # untouched
    assert out.is_valid
    assert pl.snap(drawn, ref, 0) is drawn  # snapping off


def test_combine_replace_join_and_cut_a_hole():
    p2 = world.CHEMICAL_PARK
    assert pl.combine(p2, P2_WIDER, "replace").equals(P2_WIDER)
    joined = pl.combine(p2, box(120.64, 32.13, 120.66, 32.15), "union")
    assert joined.area == pytest.approx(p2.area + 0.02 * 0.02)
    holed = pl.combine(p2, box(120.61, 32.14, 120.62, 32.15), "subtract")
    assert holed.geom_type == "Polygon" and len(holed.interiors) == 1
    with pytest.raises(ValueError, match="为空"):
        pl.combine(p2, box(120.5, 32.0, 120.7, 32.2), "subtract")


def test_a_unit_mostly_inside_leaves_and_any_other_joins():
    a2_south = box(120.6, 32.0, 120.7, 32.1)
    joined, added = pl.toggle_unit(world.CHEMICAL_PARK, a2_south)
    assert added and joined.geom_type == "MultiPolygon"
    back, added = pl.toggle_unit(joined, a2_south)
    assert not added and back.equals(world.CHEMICAL_PARK)


# -- the page -----------------------------------------------------------------------------------
def test_only_planners_open_the_page(store_path, monkeypatch):
    at = open_page(store_path, monkeypatch, role="dispatcher")
    assert any("无权打开此页面" in w.value for w in at.warning)
    assert not at.metric and "pl_pick" not in [s.key for s in at.selectbox]
    assert "pl_pick_go" not in [b.key for b in at.button]
    # The attempt is in the audit trail, as every refusal is.
    from layers.store import AuditQuery, open_store

    store = open_store(str(store_path))
    try:
        refused = store.audit_rows(AuditQuery(action="denied", target="page"))
    finally:
        store.close()
    assert list(refused["actor"]) == ["t-dispatcher"]
    assert "layers.publish" in refused["detail"].iat[0]


def test_a_drawn_boundary_is_snapped_saved_and_previewed(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    assert "新建草稿" in texts(at) and draft_id(at) == 1
    m = 1 / (pl.M_PER_DEG_LON * math.cos(math.radians(32.15)))
    drawn = box(120.6 + 5 * m, 32.13, 120.67, 32.17)  # the west side 5 m off the border
    at = draw(at, drawn)
    assert not at.exception, at.exception
    assert "替换园区边界（已吸附到 20 米内的相邻边界）：已保存到草稿 1" in texts(at)
    saved = drawn_boundary(store_path, 1)
    assert saved.equals(P2_WIDER) or saved.symmetric_difference(P2_WIDER).area < 1e-12
    shown = metrics(at)
    assert shown["监管对象变化"] == "1" and shown["其中执法机构变化"] == "1"
    assert shown["受影响的未结案件"] == "0" and shown["减少面积（公顷）"] == "0.00"
    assert shown["增加面积（公顷）"] == "1,255.34"
    live = table(at, "监管对象")
    assert live["监管对象"].tolist() == ["甲开发区电子有限公司"]
    assert live["执法机构"].iat[0] == "甲县执法局 → 甲化工园区执法局"
    # The same report again (a rerun) is not a second edit.
    at = at.run()
    svc = Gridmap(str(store_path))
    assert svc.draft(PLANNER, 1).revision == 1
    svc.close()


def test_join_cut_a_hole_edit_and_undo(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    at.radio(key="pl_op").set_value("union").run()
    at = draw(at, box(120.64, 32.13, 120.66, 32.15), n=1)
    assert drawn_boundary(store_path, 1).area == pytest.approx(0.04 * 0.04 + 0.02 * 0.02)
    at.radio(key="pl_op").set_value("subtract").run()
    at = draw(at, box(120.61, 32.14, 120.62, 32.15), n=2)
    holed = drawn_boundary(store_path, 1)
    assert len(holed.interiors) == 1
    # The edit tool saved: the whole boundary comes back (a vertex moved).
    moved = shapely.Polygon([(120.6, 32.13), (120.66, 32.13), (120.66, 32.15), (120.64, 32.15),
                             (120.64, 32.18), (120.6, 32.17)], [holed.interiors[0].coords])
    at = draw(at, moved, kind="edited", n=3)
    assert drawn_boundary(store_path, 1).equals(moved)
    # Deleting every part is refused; the boundary stays.
    at.session_state["pl_map_draw"] = {"last_active_drawing": {
        "type": "FeatureCollection", "properties": {"gm": "deleted", "n": 4}, "features": []}}
    at = at.run()
    assert "园区边界不能全部删除" in texts(at)
    assert drawn_boundary(store_path, 1).equals(moved)
    # A click on a polygon (no mark) is no drawing.
    at.session_state["pl_map_draw"] = {"last_active_drawing": {
        "type": "Feature", "properties": {}, "geometry": mapping(box(120, 32, 121, 33))}}
    at = at.run()
    assert drawn_boundary(store_path, 1).equals(moved)
    # Undo, step by step, back to the published boundary.
    at = undo(at)
    assert drawn_boundary(store_path, 1).equals(holed) and "已撤销上一步" in texts(at)
    at = undo(at)
    assert len(drawn_boundary(store_path, 1).interiors) == 0
    at = undo(at)
    assert drawn_boundary(store_path, 1).equals(world.CHEMICAL_PARK)
    assert at.button(key="pl_undo").disabled
    assert "草稿尚无改动" in texts(at)


def undo(at) -> AppTest:
    return at.button(key="pl_undo").click().run()


def test_paint_by_unit(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    at.radio(key="pl_mode").set_value("paint").run()
    at.session_state["pl_map_paint"] = {"last_object_clicked": {"lat": 32.05, "lng": 120.65},
                                        "last_object_clicked_count": 1}
    at = at.run()
    assert not at.exception, at.exception
    assert "网格单元 320901002南网格（320901002001001）并入园区" in texts(at)
    shown = metrics(at)
    # The entities of the unit (one named like a script, one in its dedicated grid, one on
    # the county border) go to B-P2; so does the open case T0001 at the first of them.
    assert shown["监管对象变化"] == "4" and shown["受影响的未结案件"] == "1"
    assert sorted(table(at, "监管对象")["监管对象"]) == sorted(
        ["甲二镇印染有限公司", XSS_NAME, "某化工厂", "界线上的汽修厂"])
    assert drawn_boundary(store_path, 1).geom_type == "MultiPolygon"
    at.session_state["pl_map_paint"] = {"last_object_clicked": {"lat": 32.07, "lng": 120.66},
                                        "last_object_clicked_count": 2}
    at = at.run()
    assert "移出园区" in texts(at)
    assert drawn_boundary(store_path, 1).equals(world.CHEMICAL_PARK)
    assert "草稿尚无改动" in texts(at)
    at.session_state["pl_map_paint"] = {"last_object_clicked": {"lat": 33.5, "lng": 121.5},
                                        "last_object_clicked_count": 3}
    at = at.run()
    assert "单击处没有综合网格单元" in texts(at)


def test_leave_resume_and_discard(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    at = draw(at, P2_WIDER)
    at = at.button(key="pl_leave").click().run()
    assert "已离开草稿" in texts(at)
    at.radio(key="pl_start").set_value("resume").run()
    drafts = table(at, "草稿编号")
    assert drafts["草稿编号"].tolist() == [1]
    assert drafts["修改原因"].iat[0] == "按批复扩大化工园区"
    assert drafts["改动"].iat[0] == "园区（parks）修改 1"
    at = at.button(key="pl_resume").click().run()
    assert at.selectbox(key="pl_park").value == "P2"  # the park the draft edits
    assert metrics(at)["监管对象变化"] == "1"
    at = at.button(key="pl_discard").click().run()
    assert "草稿 1 已放弃" in texts(at)
    svc = Gridmap(str(store_path))
    assert svc.draft(PLANNER, 1).status == "discarded" and not svc.drafts(PLANNER)
    svc.close()


def publish_other(store_path, code: str, shape, note: str) -> Gridmap:
    """Another planner publishes a new boundary of park `code` (the service, left open)."""
    other = Actor("t-planner", "planner", "规划员乙")
    svc = Gridmap(str(store_path))
    theirs = svc.create_draft(other, ["parks"], note)
    parks = svc.draft_features(other, theirs.id, "parks")
    svc.save_draft(other, theirs.id, pl.with_geometry(parks, code, shape))
    svc.publish_draft(other, theirs.id, [])
    return svc


def test_a_conflict_keeps_the_draft_and_rebase_continues(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    at = draw(at, P2_WIDER)
    at = at.button(key="pl_check").click().run()
    assert "检查未发现问题" in texts(at)
    assert not at.button(key="pl_publish").disabled
    # Another planner publishes a change of the parks meanwhile.
    svc = publish_other(store_path, "P1", box(120.58, 32.12, 120.69, 32.18), "调整开发区")
    at = at.button(key="pl_publish").click().run()
    shown = texts(at)
    assert "草稿已保留" in shown and "园区" in shown
    assert svc.draft(PLANNER, 1).status == "draft"
    assert at.button(key="pl_publish").disabled
    at = at.button(key="pl_rebase").click().run()
    assert "已改为基于当前版本" in texts(at)
    at = at.button(key="pl_check").click().run()
    at = at.button(key="pl_publish").click().run()
    assert "已发布为版本 3" in texts(at)
    assert svc.draft(PLANNER, 1).status == "published"
    svc.close()


def test_a_rebase_over_a_change_of_the_same_park_asks_first(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch))
    at = draw(at, P2_WIDER)
    svc = publish_other(store_path, "P2", box(120.62, 32.02, 120.66, 32.09), "化工园区向北")
    at = at.button(key="pl_check").click().run()
    at = at.button(key="pl_rebase").click().run()
    shown = texts(at)
    assert "未变基" in shown and "园区 P2" in shown and "版本 2（t-planner）" in shown
    assert svc.draft(PLANNER, 1).base == {"parks": 1}  # nothing done yet
    at = at.button(key="pl_rebase_over").click().run()
    assert "草稿中的要素覆盖了他人的修改" in texts(at)
    assert svc.draft(PLANNER, 1).base == {"parks": 2}
    svc.close()


def test_warnings_acknowledged_one_by_one_then_history_and_rollback(store_path, monkeypatch):
    at = start(open_page(store_path, monkeypatch), code="P1", note="开发区向东扩展")
    at = draw(at, box(120.58, 32.12, 120.72, 32.18))  # into county B
    at = at.button(key="pl_check").click().run()
    [ack] = [c for c in at.checkbox if c.key.startswith("pl_ack_")]
    assert "超出所属县" in ack.label
    publish = at.button(key="pl_publish")
    assert publish.disabled
    at = ack.check().run()
    at = at.button(key="pl_publish").click().run()
    assert "已发布为版本 2" in texts(at)
    assert route(store_path, "near_border", generation=2)["park"]["code"] == "P1"
    # History: who and why, the diff of the version, roll back with a reason.
    at.radio(key="pl_view").set_value("history").run()
    versions = table(at, "发布人")
    assert versions["版本"].tolist() == [2, 1]
    assert versions["发布人"].iat[0] == "t-planner" and versions["原因"].iat[0] == "开发区向东扩展"
    assert at.selectbox(key="pl_hist_layer").value == "parks"
    diff = table(at, "状态")
    assert diff.values.tolist() == [["删除或修改前", "P1", "甲国家级开发区"],
                                    ["新增或修改后", "P1", "甲国家级开发区"]]
    at.selectbox(key="pl_rb_to").set_value(1).run()
    at = at.button(key="pl_rb_go").click().run()
    assert "回退前请填写原因" in texts(at)
    at.text_input(key="pl_rb_note").input("批复撤回").run()
    at = at.button(key="pl_rb_go").click().run()
    # Asked first, with what it undoes; cancel does nothing, confirm publishes.
    asked = " ".join(w.value for w in at.warning)
    assert "确认把园区回退到版本 1" in asked and "版本 3" in asked
    assert "园区（parks）修改 1" in asked
    at = at.button(key="pl_rb_no").click().run()
    assert route(store_path, "near_border")["park"]["code"] == "P1"
    assert not [b for b in at.button if b.key == "pl_rb_yes"]
    at = at.button(key="pl_rb_go").click().run()
    at = at.button(key="pl_rb_yes").click().run()
    assert "已回退为版本 3" in texts(at)
    assert at.selectbox(key="pl_hist_gen").value == 3  # the history shows the new version
    assert route(store_path, "near_border")["park"] is None
    assert route(store_path, "near_border", generation=2)["park"]["code"] == "P1"


def test_a_new_park_and_its_bureau(store_path, monkeypatch):
    at = open_page(store_path, monkeypatch)
    at.radio(key="pl_start").set_value("new").run()
    at.text_input(key="pl_new_code").input("P9").run()
    at.text_input(key="pl_new_name").input("甲二镇新材料园").run()
    at.selectbox(key="pl_new_kind").set_value("chemical_park").run()
    at.selectbox(key="pl_new_county").set_value("320901").run()
    at = at.button(key="pl_new_go").click().run()
    assert "请填写执法机构编码" in texts(at) and "请先给出园区的初始范围" in texts(at)
    at.text_input(key="pl_new_bcode").input("B-P9").run()
    at.text_input(key="pl_new_bname").input("甲二镇新材料园执法局").run()
    assert at.selectbox(key="pl_new_bparent").value == "B-A"  # the county's bureau
    # No "Select all" (Streamlit's English bulk action would take a whole county's units).
    assert at.multiselect(key="pl_new_units").proto.select_all == 0
    at.multiselect(key="pl_new_units").select("320901002001001").run()
    at.text_input(key="pl_new_note").input("省政府批复新设化工园区").run()
    at = at.button(key="pl_new_go").click().run()
    assert not at.exception, at.exception
    assert "已新建草稿 1：园区 P9 及执法机构 B-P9" in texts(at)
    assert at.selectbox(key="pl_park").value == "P9"
    assert metrics(at)["监管对象变化"] == "4"  # as painting the unit into P2 above
    at = at.button(key="pl_check").click().run()
    for box_ in [c for c in at.checkbox if c.key.startswith("pl_ack_")]:
        at = box_.check().run()
    at = at.button(key="pl_publish").click().run()
    assert "已发布为版本 2" in texts(at), texts(at)
    answer = route(store_path, "a2_plain")
    assert answer["park"]["code"] == "P9" and answer["bureau"]["code"] == "B-P9"
    assert answer["chain"] == ["B-P9", "B-A", "B-M"]
    # Rolling back the parks alone would leave B-P9 pointing at no park: refused, saying which
    # bureau and what to do, and that nothing changed (a rollback has no draft to keep).
    from grids.publishing import PublishBlocked

    svc = Gridmap(str(store_path))
    try:
        with pytest.raises(PublishBlocked) as err:
            svc.rollback(PLANNER, "parks", 1, "撤回新园区")
    finally:
        svc.close()
    message = str(err.value)
    assert "数据未作任何改动" in message and "草稿已保留" not in message
    assert "执法机构一并回退" in message
    assert "数据库中现有的执法机构（bureaus），编码 B-P9" in message
    assert "引用的园区（parks）编码 P9 不存在" in message


def test_upload_a_layer_file(store_path, monkeypatch, tmp_path):
    """A parks file (as QGIS exports it) put by code; a zipped Shapefile with one polygon
    taken as the edited park's boundary only."""
    at = start(open_page(store_path, monkeypatch))
    at.radio(key="pl_mode").set_value("upload").run()
    parks = world.layers()["parks"]
    parks = parks[parks["code"] == "P2"].copy()
    parks["geometry"] = [P2_WIDER]
    geojson = tmp_path / "parks.geojson"
    parks.to_file(geojson, driver="GeoJSON")
    at.file_uploader(key="pl_upload").set_value(
        ("parks.geojson", geojson.read_bytes(), "application/geo+json")).run()
    assert not at.exception, at.exception
    assert table(at, "编码")["编码"].tolist() == ["P2"]
    assert table(at, "编码")["类型"].tolist() == [cards.PARK_KIND_ZH["chemical_park"]]
    at = at.button(key="pl_upload_put").click().run()
    assert "上传文件中的 1 个园区：已保存到草稿 1" in texts(at)
    assert drawn_boundary(store_path, 1).equals(P2_WIDER)
    assert metrics(at)["监管对象变化"] == "1"
    # A Shapefile drawn in QGIS, zipped, in the projected CGCS2000 zone (EPSG:4549).
    shape = parks.assign(geometry=[box(120.6, 32.13, 120.65, 32.17)]).to_crs(4549)
    shape.to_file(tmp_path / "drawn.shp", encoding="utf-8")
    archive = tmp_path / "drawn.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for part in tmp_path.glob("drawn.*"):
            if part.suffix != ".zip":
                z.write(part, part.name)
    at.file_uploader(key="pl_upload").set_value(
        ("drawn.zip", archive.read_bytes(), "application/zip")).run()
    assert not at.exception, at.exception
    at = at.button(key="pl_upload_shape").click().run()
    assert "园区 P2 的边界（取自上传文件）" in texts(at)
    saved = drawn_boundary(store_path, 1)
    assert saved.symmetric_difference(box(120.6, 32.13, 120.65, 32.17)).area < 1e-10


def test_unreadable_uploads_say_each_problem_on_its_own_line(store_path, monkeypatch, tmp_path):
    from shapely.geometry import Polygon

    at = start(open_page(store_path, monkeypatch))
    at.radio(key="pl_mode").set_value("upload").run()
    parks = world.layers()["parks"].iloc[[0, 1]].copy()
    parks["kind"] = "游乐园"
    parks["geometry"] = [Polygon([(120.61, 32.01), (120.69, 32.09), (120.69, 32.01),
                                  (120.61, 32.09)]), parks.geometry.iat[1]]
    geojson = tmp_path / "园区草图.geojson"
    parks.to_file(geojson, driver="GeoJSON")
    at.file_uploader(key="pl_upload").set_value(
        ("园区草图.geojson", geojson.read_bytes(), "application/geo+json")).run()
    assert not at.exception
    [error] = at.error
    lines = error.value.split("  \n")
    assert lines[0].startswith("文件未读入，草稿未作改动。发现 ") and "导入失败" not in lines[0]
    assert len(lines) >= 3 and all(line.startswith("\\- ") for line in lines[1:])
    assert any("自相交（位置" in line for line in lines) and "Self-intersection" not in error.value
    # A 数据质检 upload that is no zip: named as uploaded, in Chinese.
    at.switch_page("pages/8_数据质检.py").run()
    at.file_uploader(key="qc_upload").set_value(("我的图层.zip", b"not a zip", "application/zip"))
    at.run()
    assert not at.exception
    [error] = at.error
    assert error.value.startswith("无法检查这个文件。") and r"我的图层\.zip" in error.value
    assert "File is not" not in error.value and "layers.zip" not in error.value


def test_names_on_the_planner_maps_are_text():
    """Unit tooltips (paint mode) and the version diff carry names from the data: escaped for
    the JavaScript template literal folium writes them into (cards.js_html)."""
    from grids.publishing import VersionDiff
    from layers.store import Generation
    from ui.basemap import load_settings

    hostile = "${alert(7)}`</script><img src=x onerror=alert(8)>"
    layers = world.layers()
    layers["grids"]["name"] = hostile
    layers["parks"]["name"] = hostile
    basemap = load_settings({}).get("none")
    m = pl.edit_map(basemap, layers, code="P2", boundary=world.CHEMICAL_PARK,
                    published=world.CHEMICAL_PARK, mode="paint", display=pl.Display(basemap))
    diff = VersionDiff(Generation(2, "2026-12-01T00:00:00Z", ("parks",)), "parks",
                       layers["parks"].iloc[[1]], layers["parks"].iloc[[1]])
    for fmap in (m, pl.diff_map(basemap, diff, layers["counties"].geometry.values)):
        page = fmap.get_root().render()
        assert "lt;img src=x" in page  # the names are there, as text (in JSON: \\u0026lt;)
        assert "<img src=x" not in page and "${alert" not in page and "`</script>" not in page


def test_gcj02_basemap_brings_unmoved_vertices_back_exactly():
    """On a GCJ-02 basemap (Amap-style tiles) the map shows shifted coordinates; an edit that
    moves one vertex brings the others back exactly as stored (the inverse is iterative)."""
    from ui.basemap import Basemap

    display = pl.Display(Basemap("amap", "高德", datum="gcj02"))
    shown = display.geom(world.CHEMICAL_PARK, remember=True)
    assert shown.bounds[0] > 120.604  # hundreds of metres east, as the tiles draw it
    xy = shapely.get_coordinates(shown)
    xy[2] += 0.001  # the edit tool moved one vertex
    back = shapely.get_coordinates(display.back(shapely.Polygon(xy)))
    stored = shapely.get_coordinates(world.CHEMICAL_PARK)
    assert [tuple(p) for i, p in enumerate(back) if i != 2] == [
        tuple(p) for i, p in enumerate(stored) if i != 2]
    assert back[2] == pytest.approx(stored[2] + 0.001, abs=2e-5)

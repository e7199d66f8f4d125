"""The dispatcher pages with Streamlit's AppTest (no browser): intake (typed, pasted, clicked,
searched and drawn locations, referral, ambiguous candidates, case creation, duplicates), the
case desk (steps, a stale step refused, reassignment needs a reason), the batch upload
(Chinese headers, bad rows), and the header recognition and Excel/CSV export behind them."""

from __future__ import annotations

import io
import json
import re
import shutil

import pandas as pd
import pytest
from openpyxl import load_workbook
from streamlit.testing.v1 import AppTest

from geo.china_offsets import wgs84_to_bd09, wgs84_to_gcj02
from geo.crs import from_store
from grids.access import Actor
from grids.batch import BatchInputError, assign, header_crs, header_key
from grids.routing import Router
from grids.service import Gridmap
from layers import spreadsheet
from layers.importer import import_path
from layers.store import AuditQuery, open_store
from tests import world
from tests.browser import ROOT, XSS_NAME, build_map_world
from tests.signin import sign_in_page
from ui.state import WIDGET_CSS

INTAKE, CASES, BATCH = "pages/2_受理.py", "pages/3_案件.py", "pages/4_批量分派.py"
A2_SOUTH = "320901002001001"  # the grid of world.P["a2_plain"]; worker 网格员3, 13800000003


@pytest.fixture(scope="module")
def map_world(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("intake"))


@pytest.fixture
def store_path(map_world, tmp_path):
    """A fresh copy of the map world per test: tests register cases."""
    path = tmp_path / "desk.gpkg"
    shutil.copy(map_world, path)
    return path


def open_page(path: str, store, monkeypatch, query: dict | None = None,
              role: str = "dispatcher") -> AppTest:
    sign_in_page(monkeypatch, store, role)
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def html(at) -> str:
    """The cards the page shows (not the sidebar's logout link, nor every page's style of
    Streamlit's own words, ui/state.py)."""
    return "".join(h.proto.body for h in at.get("html") if 'href="/logout"' not in h.proto.body
                   and h.proto.body != WIDGET_CSS)


def text(at) -> str:
    """Everything the page says in alerts, captions and markdown."""
    parts = [e.value for e in (*at.error, *at.warning, *at.success, *at.info)]
    parts += [m.value for m in at.caption] + [m.value for m in at.markdown]
    return "\n".join(parts)


def map_args(at, key: str) -> dict:
    elements = [e for e in at.get("component_instance")
                if e.proto.component_name == "streamlit_folium.st_folium"]
    assert len(elements) == 1
    return json.loads(elements[0].proto.json_args)


def K(at, name: str) -> str:
    """The key of an intake field in the page's current form (a filed call starts a new one)."""
    state = at.session_state  # AppTest's session state has no .get
    form = state["_in_form"] if "_in_form" in state else 0  # noqa: SIM401
    return f"{name}#{form}"


def type_coordinates(at, value: str, crs: str = "wgs84") -> AppTest:
    at.selectbox(key=K(at, "in_crs")).set_value(crs).run()
    return at.text_input(key=K(at, "in_coord")).input(value).run()


# The signed-in dispatcher of tests/signin.py, as events name them.
ME = "调度员甲（t-dispatcher）"
OTHER = Actor("t-dispatcher2", "dispatcher", "调度员丙")


def register(at, category="air", description="印染厂后面冒黑烟") -> AppTest:
    at.selectbox(key=K(at, "in_cat")).set_value(category).run()
    at.text_area(key=K(at, "in_desc")).input(description).run()
    [button] = [b for b in at.button if b.label == "登记为新案件"]
    return button.click().run()


def cases_in(store_path) -> pd.DataFrame:
    store = open_store(str(store_path))
    try:
        return pd.DataFrame(store.incidents().drop(columns="geometry"))
    finally:
        store.close()


# -- intake ----------------------------------------------------------------------------------------
def test_typed_gcj02_coordinate_routes_and_registers(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    assert any("单击事发位置" in i.value for i in at.info)
    gx, gy = (float(v) for v in wgs84_to_gcj02(*world.P["a2_plain"]))
    at = type_coordinates(at, f"{gx:.6f}, {gy:.6f}", "gcj02")
    card = html(at)
    assert "明确" in card and A2_SOUTH in card and "网格员3" in card and "13800000003" in card
    assert "甲县执法局" in card
    lon, lat = world.P["a2_plain"]
    assert f"{lon:.6f}, {lat:.6f}" in card  # converted from GCJ-02 before routing
    # The map moved to the point and highlights the grid, the point and nearby entities.
    args = map_args(at, "intakemap")
    assert args["center"] == pytest.approx([lat, lon], abs=1e-5)
    assert args["returned_objects"] == ["last_clicked"]
    assert "甲二镇印染有限公司" in args["feature_group"]  # the nearest entity's tooltip
    assert at.dataframe[0].value["名称"].iloc[0] == "甲二镇印染有限公司"  # likely source
    before = len(cases_in(store_path))
    at = register(at)
    assert not at.exception
    [done] = [s.value for s in at.success]
    case_id = re.search(r"已登记案件 (\S+)，", done)[1]
    case = cases_in(store_path).set_index("id").loc[case_id]
    assert len(cases_in(store_path)) == before + 1
    assert case["given_crs"] == "gcj02" and case["given_x"] == pytest.approx(gx, abs=1e-6)
    assert case["lon"] == pytest.approx(lon, abs=1e-6) and case["grid_code"] == A2_SOUTH
    assert case["generation"] == 1 and case["created_by"] == ME
    assert case["status"] == "reported" and case["source"] == "12369热线"
    assert case["reported_at"].endswith("+08:00")  # typed in Beijing time
    # The next call starts clean; the link opens the case.
    assert at.text_input(key=K(at, "in_coord")).value == ""
    assert at.text_area(key=K(at, "in_desc")).value == ""
    link = [p for p in at.get("page_link") if "打开案件" in p.proto.label]
    assert link and case_id in link[0].proto.query_string


def test_pasted_lat_lon_is_swapped_and_flagged(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    lon, lat = world.P["a2_plain"]
    at = type_coordinates(at, f"{lat}，{lon}")  # full-width comma, latitude first
    assert "对调" in text(at)
    card = html(at)
    assert "经纬度已对调" in card and A2_SOUTH in card


def test_garbage_and_unknown_system_are_messages(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at = type_coordinates(at, "黑烟在工厂后面")
    assert any("无法解析坐标" in e.value for e in at.error)
    assert not html(at)  # nothing routed
    at.selectbox(key=K(at, "in_crs")).set_value("other").run()
    at.text_input(key=K(at, "in_crs_other")).input("EPSG:2415").run()  # Beijing 1954 GK
    at.text_input(key=K(at, "in_coord")).input("120.68, 32.08").run()
    assert any("旧大地基准" in e.value or "不支持" in e.value for e in at.error)


def test_gauss_kruger_coordinates(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    e, n = (float(v) for v in from_store(*world.P["b1"], "EPSG:4549"))
    at = type_coordinates(at, f"{e:.2f} {n:.2f}", "EPSG:4549")
    assert "乙一镇" in html(at) and "乙县执法一局" in html(at)


def test_click_search_and_source_accuracy(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    # A described location brings its ±500 m.
    at.selectbox(key=K(at, "in_source")).set_value("described").run()
    assert at.number_input(key=K(at, "in_acc")).value == 500
    at.session_state[K(at, "intakemap")] = {"last_clicked": {"lat": world.P["b1"][1],
                                                      "lng": world.P["b1"][0]}}
    at = at.run()
    assert "地图单击" in text(at) and "±500 米" in html(at) and "乙一镇" in html(at)
    at.text_input(key=K(at, "in_query")).input("印染").run()
    assert "甲二镇印染有限公司" in text(at) and A2_SOUTH in html(at)
    assert "搜索" in text(at)
    # A township hit is an area: the page says the point is only somewhere in it.
    at.text_input(key=K(at, "in_query")).input("乙飞地街道").run()
    assert "在地图上单击确定" in text(at) and "乙飞地街道" in html(at)


def test_partner_category_is_a_referral(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at = type_coordinates(at, "120.68, 32.08")
    at.selectbox(key=K(at, "in_cat")).set_value("cooking_fumes").run()
    card = html(at)
    assert "转办" in card and "城市管理" in card and "餐饮油烟" in card
    assert A2_SOUTH in card  # the place is still answered, to tell the partner


def test_ambiguous_location_shows_every_candidate(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at.number_input(key=K(at, "in_acc")).set_value(500).run()
    lon, lat = world.P["near_border"]
    at = type_coordinates(at, f"{lon}, {lat}")
    card = html(at)
    assert "存在歧义" in card and "候选 1" in card and "候选 2" in card
    assert "甲县" in card and "乙县" in card
    assert at.tabs[0].label.startswith("候选归属对比")
    side = re.search(r'<table class="gm-cands">.*?</table>', card, re.S)[0]
    assert side.count("<th><span") >= 2 and "甲县执法局" in side and "乙县执法" in side
    group = map_args(at, "intakemap")["feature_group"]
    assert "候选 1" in group and "候选 2" in group  # labelled side by side on the map
    # An ambiguous case can be registered; it says so in its trail.
    at = register(at)
    case = cases_in(store_path).iloc[-1]
    assert case["route_status"] == "ambiguous" and pd.isna(case["grid_code"])


def test_outside_and_missing_fields_are_refused(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    before = len(cases_in(store_path))
    at = type_coordinates(at, "120.68, 32.08")
    [button] = [b for b in at.button if b.label == "登记为新案件"]
    at = button.click().run()
    assert any("请选择事件类别" in e.value and "请填写事件描述" in e.value for e in at.error)
    at = type_coordinates(at, f"{world.P['outside'][0]}, {world.P['outside'][1]}")
    assert "不在辖区内" in html(at)
    at = register(at)
    assert any("不在本市" in e.value for e in at.error)
    assert len(cases_in(store_path)) == before


def test_duplicate_is_linked_not_created(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at = register(type_coordinates(at, "120.68, 32.08"), description="第一次来电：黑烟")
    first = re.search(r"已登记案件 (\S+)，", at.success[0].value)[1]
    count = len(cases_in(store_path))
    at = type_coordinates(at, "120.681, 32.0805")  # ~100 m away, same matter
    dup_tab = next(t for t in at.tabs if t.label.startswith("附近未结案件"))
    assert dup_tab.label == "附近未结案件（1）"
    assert first in set(at.dataframe[1].value["案件编号"])
    assert "可能重复" not in html(at)  # no category yet: nothing to compare with
    at.selectbox(key=K(at, "in_cat")).set_value("air").run()
    at.text_area(key=K(at, "in_desc")).input("第二次来电：还在冒黑烟").run()
    # On the card itself, before filing: the same-category open case within the air rule.
    card = html(at)
    assert "可能重复" in card and first in card and "1500 米内、3 天内" in card
    [button] = [b for b in at.button if b.key == K(at, "in_file")]
    at = button.click().run()  # neither link nor new chosen: refused, nothing filed
    assert any("请选择并入原案件" in e.value for e in at.error)
    assert len(cases_in(store_path)) == count
    at.radio(key=K(at, "in_dup_choice")).set_value(f"link:{first}").run()
    [button] = [b for b in at.button if b.key == K(at, "in_file")]
    assert button.label == "并入所选案件（不新建）"
    at = button.click().run()
    assert any(first in s.value.replace("\\", "") and "未新建" in s.value for s in at.success)
    assert len(cases_in(store_path)) == count  # no new case
    store = open_store(str(store_path))
    last = store.incident_events(first).iloc[-1]
    store.close()
    assert last["action"] == "link" and last["actor"] == ME
    assert "第二次来电：还在冒黑烟" in last["reason"]  # the caller's words are kept
    # The next call starts from an empty form, with no location.
    assert at.text_area(key=K(at, "in_desc")).value == "" and "可能重复" not in html(at)


def test_duplicate_filed_new_needs_a_reason(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at = register(type_coordinates(at, "120.68, 32.08"), category="noise",
                  description="夜间机器轰鸣")
    first = re.search(r"已登记案件 (\S+)，", at.success[0].value)[1]
    count = len(cases_in(store_path))
    at = type_coordinates(at, "120.6805, 32.0802")  # ~50 m: within the noise rule (300 m)
    at.selectbox(key=K(at, "in_cat")).set_value("noise").run()
    at.text_area(key=K(at, "in_desc")).input("另一家工厂白天冲压噪声").run()
    assert "可能重复" in html(at) and "300 米内" in html(at)
    at.radio(key=K(at, "in_dup_choice")).set_value("new").run()
    [button] = [b for b in at.button if b.key == K(at, "in_file")]
    at = button.click().run()
    assert any("新建案件须填写理由" in e.value for e in at.error)
    assert len(cases_in(store_path)) == count
    at.text_input(key=K(at, "in_new_reason")).input("不同企业、不同时段").run()
    [button] = [b for b in at.button if b.key == K(at, "in_file")]
    at = button.click().run()
    new = re.search(r"已登记案件 (\S+)，", at.success[0].value)[1]
    assert new != first and len(cases_in(store_path)) == count + 1
    store = open_store(str(store_path))
    created = store.incident_events(new).iloc[0]
    audit = store.audit_rows(AuditQuery(action="case.create", target=new))
    store.close()
    assert first in created["reason"] and "不同企业、不同时段" in created["reason"]
    assert first in audit.iloc[0]["detail"] and "不同企业" in audit.iloc[0]["detail"]


def test_line_across_two_counties_is_a_municipal_case(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at.toggle(key=K(at, "in_extent_on")).set_value(True).run()
    args = map_args(at, "extentmap")
    assert args["returned_objects"] == ["last_active_drawing"]  # drawing, not clicking
    assert any("leaflet-draw@1.0.4/leaflet.draw.js" in u for u in args["js_links"])
    assert not [u for u in args["js_links"] + args["css_links"] if "//" in u.split("?")[0][:8]]
    at.selectbox(key=K(at, "in_crs")).set_value("wgs84").run()
    at.text_area(key=K(at, "in_wkt")).input("LINESTRING (120.65 32.15, 120.75 32.15)").run()
    card = html(at)
    assert "市执法局" in card and "跨县" in card and "甲县执法局" in card and "乙县执法局" in card
    at = register(at, category="water", description="河道一段发黑发臭")
    case = cases_in(store_path).iloc[-1]
    assert case["bureau_code"] == "B-M" and case["extent_wkt"].startswith("LINESTRING")
    assert json.loads(case["answer"])["co_bureaus"]


def test_drawn_area_is_routed(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at.toggle(key=K(at, "in_extent_on")).set_value(True).run()
    ring = [[120.66, 32.02], [120.69, 32.02], [120.69, 32.05], [120.66, 32.05], [120.66, 32.02]]
    at.session_state[K(at, "extentmap")] = {"last_active_drawing": {
        "type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                          "coordinates": [ring]}}}
    at = at.run()
    assert "地图上绘制的范围" in text(at)
    card = html(at)
    assert "甲县执法局" in card and "跨县" not in card  # one county: not a municipal case
    assert "某化工厂专属网格" in card  # the area covers the dedicated grid too: a candidate


# -- cases -----------------------------------------------------------------------------------
def new_case(store_path, point=world.P["a2_plain"]) -> str:
    svc = Gridmap(str(store_path))
    try:
        answer = svc.route(OTHER, *point)
        return svc.create_case(Actor("t-dispatcher", "dispatcher", "调度员甲"), answer,
                               {"category": "air", "description": "黑烟"})
    finally:
        svc.close()


def test_case_steps_and_a_stale_step_is_refused(store_path, monkeypatch):
    cid = new_case(store_path)
    at = open_page(CASES, store_path, monkeypatch, {"case": cid})
    assert at.selectbox(key="cs_case").value == cid
    assert cid in set(at.dataframe[0].value["案件编号"])
    assert "登记时的责任归属（图层版本 1）" in html(at) and A2_SOUTH in html(at)
    step = at.button(key="cs_step_dispatched")
    assert step.label == "派遣至网格员"
    # Meanwhile another dispatcher dispatches it: the page still offers the old step.
    svc = Gridmap(str(store_path))
    svc.step_case(OTHER, cid, "dispatched")
    svc.close()
    at = step.click().run()
    assert any("已被他人更新" in e.value for e in at.error)
    # Now the page offers the dispatcher's steps of the new state (the on-site check is the
    # grid worker's, not offered); a legal one is taken.
    assert not [b for b in at.button if b.key == "cs_step_verified"]
    at.text_area(key="cs_reason").input("网格员请假，重新派遣").run()
    at = at.button(key="cs_step_reported").click().run()
    assert any("退回重新派遣" in s.value for s in at.success)
    trail = at.dataframe[-1].value
    assert list(trail["办理人"]) == [ME, "调度员丙（t-dispatcher2）", ME]
    assert trail["理由/说明"].iloc[-1] == "网格员请假，重新派遣"
    assert at.text_area(key="cs_reason").value == ""
    # The stored answer is reproduced with its generation.
    at = at.button(key="cs_reproduce").click().run()
    assert any("复核一致" in s.value for s in at.success)


def test_closing_asks_for_confirmation_and_a_result(store_path, monkeypatch):
    cid = new_case(store_path)
    svc = Gridmap(str(store_path))
    svc.step_case(OTHER, cid, "dispatched")
    svc.close()
    at = open_page(CASES, store_path, monkeypatch, {"case": cid}, role="grid_worker")
    at = at.button(key="cs_step_verified").click().run()  # the on-site check needs a result
    assert any("须填写办理结果" in e.value for e in at.error)
    at.text_area(key="cs_reason").input("现场核实：未发现冒烟").run()
    at = at.button(key="cs_step_verified").click().run()
    assert cases_in(store_path).set_index("id").loc[cid, "status"] == "verified"
    # Closing: first a question, nothing recorded; cancel keeps the case open.
    at.text_area(key="cs_reason").input("无污染问题").run()
    at = at.button(key="cs_step_closed").click().run()
    assert any("结案后办理流程结束" in w.value for w in at.warning)
    assert cases_in(store_path).set_index("id").loc[cid, "status"] == "verified"
    at = at.button(key="cs_confirm_no").click().run()
    assert not at.warning and cases_in(store_path).set_index("id").loc[cid, "status"] == "verified"
    at = at.button(key="cs_step_closed").click().run()
    at = at.button(key="cs_confirm_yes").click().run()
    assert cases_in(store_path).set_index("id").loc[cid, "status"] == "closed"
    assert at.dataframe[-1].value["理由/说明"].iloc[-1] == "无污染问题"
    assert any("已结案" in i.value for i in at.info)


def test_reassignment_needs_a_reason(store_path, monkeypatch):
    cid = new_case(store_path)
    at = open_page(CASES, store_path, monkeypatch, {"case": cid})
    at.selectbox(key="cs_grid").set_value("320901002001002").run()
    at = at.button(key="cs_reassign").click().run()
    assert any("理由" in e.value for e in at.error)
    store = open_store(str(store_path))
    assert len(store.incident_events(cid)) == 1  # nothing recorded
    store.close()
    at.text_area(key="cs_why").input("企业实际在北侧厂区").run()
    at = at.button(key="cs_reassign").click().run()
    assert any("已改派" in s.value for s in at.success)
    case = cases_in(store_path).set_index("id").loc[cid]
    assert case["assigned_grid_code"] == "320901002001002" and case["grid_code"] == A2_SOUTH
    assert "已人工改派" in html(at) and "320901002北网格" in html(at)
    trail = at.dataframe[-1].value
    assert trail["操作"].iloc[-1].startswith("人工改派")
    assert trail["理由/说明"].iloc[-1] == "企业实际在北侧厂区"
    assert A2_SOUTH in trail["改派至"].iloc[-1]  # where it came from


def test_the_console_stays_on_the_case_a_step_moves_or_takes_off_the_list(store_path,
                                                                          monkeypatch):
    first, second = new_case(store_path), new_case(store_path)
    at = open_page(CASES, store_path, monkeypatch)
    at.toggle(key="cs_mine").set_value(True).run()  # 待我办理: both wait to be dispatched
    listed = list(at.dataframe[0].value["案件编号"])
    assert {first, second} <= set(listed)
    at.selectbox(key="cs_case").set_value(second).run()
    assert at.query_params["case"] == second
    # Dispatching moves it off "待我办理" (and gives it a new deadline): the console stays.
    at = at.button(key="cs_step_dispatched").click().run()
    assert any("：派遣至网格员" in s.value for s in at.success)
    assert second not in set(at.dataframe[0].value["案件编号"])
    assert at.selectbox(key="cs_case").value == second and at.query_params["case"] == second
    at.text_area(key="cs_reason").input("网格员请假，重新派遣").run()  # any later rerun
    assert at.selectbox(key="cs_case").value == second
    at = at.button(key="cs_step_reported").click().run()
    assert cases_in(store_path).set_index("id").loc[second, "status"] == "reported"
    assert at.selectbox(key="cs_case").value == second
    # Changing the filters starts from the top of the new list.
    at.toggle(key="cs_mine").set_value(False).run()
    at.multiselect(key="cs_status").set_value(["closed"]).run()
    assert at.dataframe[0].value.empty or second not in set(at.dataframe[0].value["案件编号"])
    assert not at.exception


def test_a_bureau_handing_a_case_to_another_bureau_is_told_and_not_refused(store_path,
                                                                          monkeypatch):
    cid = new_case(store_path)
    at = open_page(CASES, store_path, monkeypatch, {"case": cid}, role="bureau")
    assert at.selectbox(key="cs_case").value == cid
    at = at.button(key="cs_reassign").click().run()  # nothing chosen: said so
    assert any("与当前相同" in e.value for e in at.error)
    at.selectbox(key="cs_bureau").set_value("B-B").run()
    at.text_area(key="cs_why").input("属乙县管辖，移送").run()
    at = at.button(key="cs_reassign").click().run()
    assert not at.exception
    assert any("已改派" in s.value and "不在您的办理范围内" in s.value for s in at.success)
    assert cases_in(store_path).set_index("id").loc[cid, "assigned_bureau_code"] == "B-B"
    assert at.query_params.get("case") != cid
    store = open_store(str(store_path))
    try:  # the page did not try to read the case again: no refusal in the audit
        refused = store.audit_rows(AuditQuery(action="denied", target=cid))
        moved = store.audit_rows(AuditQuery(action="case.reassign", target=cid))
    finally:
        store.close()
    assert refused.empty and len(moved) == 1


def test_case_list_filters(store_path, monkeypatch):
    cid = new_case(store_path, (120.8, 32.05))  # B1 south (T0002 lies on B1's grid border)
    at = open_page(CASES, store_path, monkeypatch)
    listed = at.dataframe[0].value
    # Open cases only by default, the most overdue first (T0001/T0002 are weeks old), the
    # new one last with its time left.
    assert set(listed["案件编号"]) == {cid, "T0001", "T0002"}
    assert listed["案件编号"].iloc[-1] == cid and listed["剩余时限"].iloc[-1].startswith("剩")
    assert all(t.startswith("超时") for t in listed["剩余时限"].iloc[:2])
    at.multiselect(key="cs_status").set_value(["closed"]).run()
    assert list(at.dataframe[0].value["案件编号"]) == ["T0003"]
    at.multiselect(key="cs_status").set_value([]).run()  # every state
    assert len(at.dataframe[0].value) == 4
    at.text_input(key="cs_grid_filter").input("320902001").run()
    assert set(at.dataframe[0].value["案件编号"]) == {cid}
    at.text_input(key="cs_grid_filter").input("").run()
    at.selectbox(key="cs_bureau_filter").set_value("B-B-1").run()
    assert set(at.dataframe[0].value["案件编号"]) == {cid, "T0002"}
    at.selectbox(key="cs_bureau_filter").set_value(None).run()
    at.selectbox(key="cs_category").set_value("water").run()
    assert set(at.dataframe[0].value["案件编号"]) == {"T0002"}
    at.selectbox(key="cs_category").set_value(None).run()
    at.toggle(key="cs_overdue").set_value(True).run()
    assert cid not in set(at.dataframe[0].value["案件编号"])  # just registered: not late
    assert "T0002" in set(at.dataframe[0].value["案件编号"])  # reported weeks ago
    at.toggle(key="cs_overdue").set_value(False).run()
    at.toggle(key="cs_mine").set_value(True).run()  # a dispatcher's: waiting for dispatch
    assert set(at.dataframe[0].value["案件编号"]) == {cid, "T0002"}
    at.toggle(key="cs_mine").set_value(False).run()
    at.text_input(key="cs_text").input("废水").run()
    assert set(at.dataframe[0].value["案件编号"]) == {"T0002"}


def test_postgis_store_intake_and_case(new_store, tmp_path, monkeypatch):
    store = new_store("postgis")
    import_path(store, world.write(tmp_path / "files"))
    at = open_page(INTAKE, store.url, monkeypatch)
    at = register(type_coordinates(at, "120.68, 32.08"))
    cid = re.search(r"已登记案件 (\S+)，", at.success[0].value)[1]
    at.query_params["case"] = cid
    at.switch_page(CASES).run()
    assert not at.exception
    at = at.button(key="cs_step_dispatched").click().run()
    assert any("派遣至网格员" in s.value for s in at.success)
    assert list(store.incident_events(cid)["status"]) == ["reported", "dispatched"]


# -- batch --------------------------------------------------------------------------------------
def complaint_csv() -> bytes:
    a = world.P["a2_plain"]
    gx, gy = wgs84_to_gcj02(*a)
    bx, by = wgs84_to_bd09(*world.P["b1"])
    ex, ey = from_store(*world.P["dedicated"], "EPSG:4549")
    rows = [
        ("C1", f"{float(gx):.6f}", f"{float(gy):.6f}", "GCJ02", "大气"),
        ("C2", f"{float(bx):.6f}", f"{float(by):.6f}", "BD09", "餐饮油烟"),
        ("C3", f"{float(ex):.2f}", f"{float(ey):.2f}", "EPSG:4549", "水"),
        ("C4", str(a[1]), str(a[0]), "WGS84", "噪声"),  # swapped
        ("C5", "", "", "WGS84", "大气"),  # empty
        ("C6", "东边", "厂后面", "WGS84", "大气"),  # garbage
        ("C7", "120.68", "32.08", "北京54", "大气"),  # unusable system
        ("C8", "121.5", "32.5", "CGCS2000", "其他"),  # outside
        ("C9", XSS_NAME, "32.08", "WGS84", "大气"),
    ]
    frame = pd.DataFrame(rows, columns=["编号", "经度", "纬度", "坐标系", "类别"])
    frame["举报内容"] = "=cmd|' /C calc'!A0"  # a formula attempt in every row
    return frame.to_csv(index=False).encode("gbk")


def test_batch_upload_with_chinese_headers_and_bad_rows(store_path, monkeypatch):
    at = open_page(BATCH, store_path, monkeypatch)
    assert any("上传文件后" in i.value for i in at.info)
    at.file_uploader(key="bt_file").set_value(("投诉导出.csv", complaint_csv(), "text/csv"))
    at = at.run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"明确": "4", "存在歧义": "0", "不在辖区内": "1", "无法分派": "4"}
    bad = at.dataframe[0].value
    assert list(bad["编号"]) == ["C5", "C6", "C7", "C9"]  # listed, with the reason
    assert bad["原因"].str.len().gt(0).all() and "北京54" in bad["原因"].iloc[2]
    table = at.dataframe[1].value
    assert list(table["编号"]) == [f"C{i}" for i in range(1, 10)]  # nothing dropped, in order
    by_id = table.set_index("编号")
    assert by_id.loc["C1", "网格编码"] == A2_SOUTH and by_id.loc["C4", "网格编码"] == A2_SOUTH
    assert by_id.loc["C3", "网格编码"] == "320901002800001"
    assert by_id.loc["C2", "移交部门"].startswith("城市管理") and by_id.loc["C1", "移交部门"] == ""
    assert "swapped" in by_id.loc["C4", "标记"]
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["下载 Excel（含分派结果）", "下载 CSV"]
    args = map_args(at, "batchmap")
    assert args["feature_group"].count('"s": "ok"') == 4  # routed rows as dots
    assert XSS_NAME not in args["feature_group"]
    at.multiselect(key="bt_status").select("error").run()
    assert list(at.dataframe[1].value["编号"]) == ["C5", "C6", "C7", "C9"]


def test_batch_file_without_system_asks_for_one(store_path, monkeypatch):
    at = open_page(BATCH, store_path, monkeypatch)
    data = "经度,纬度\n120.68,32.08\n".encode()
    at.file_uploader(key="bt_file").set_value(("a.csv", data, "text/csv")).run()
    assert any("整个文件的坐标系" in e.value for e in at.error)
    # Only systems a file's rows can be read in: not the single location's double reading
    # (every row would come back "无法识别的坐标系：'unstated'").
    offered = at.selectbox(key="bt_crs").options
    assert "WGS84（GPS）" in offered and not any("未说明" in o for o in offered)
    at.selectbox(key="bt_crs").set_value("wgs84").run()
    assert not at.error and {m.label: m.value for m in at.metric}["明确"] == "1"
    empty = "编号,经度,纬度,坐标系\n".encode()
    at.file_uploader(key="bt_file").set_value(("empty.csv", empty, "text/csv")).run()
    assert not at.exception and "共 0 行" in text(at)


@pytest.mark.parametrize(("data", "said"), [
    (b"", "文件是空的"),
    ("编号,经度,纬度\nA,120.68,32.08\nB,120.69,32.08,多,余\n".encode(),
     "第 3 行：有 5 个字段，表头只有 3 个"),
    ('编号,经度,纬度\nA,120.68,32.08\nB,"120.69,32.08\nC,120.7,32.1\n'.encode(),
     "第 3 行：引号没有闭合"),
])
def test_a_file_that_cannot_be_read_is_named_and_explained_in_chinese(store_path, data, said):
    from ui import batch

    store = open_store(str(store_path))
    try:
        with pytest.raises(BatchInputError) as caught:
            batch.run(Router(store), "12369导出（十一月）.csv", data, "wgs84")
    finally:
        store.close()
    message = str(caught.value)
    assert message.startswith("12369导出（十一月）.csv：") and said in message, message
    assert "upload" not in message and "Error" not in message and "C error" not in message


def test_batch_excel_and_csv_downloads(store_path):
    from ui import batch

    store = open_store(str(store_path))
    result = batch.run(Router(store), "投诉.csv", complaint_csv(), None)
    store.close()
    wb = load_workbook(io.BytesIO(batch.excel(result)))
    sheet = wb["分派结果"]
    header = [c.value for c in sheet[1]]
    assert header[:6] == ["编号", "经度", "纬度", "坐标系", "类别", "举报内容"]
    assert "网格编码" in header and "无法分派原因" in header  # Chinese (tests/test_batch_export.py)
    assert not any(str(h).startswith("route_") for h in header)
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert len(rows) == 9
    formula = [c for row in sheet.iter_rows(min_row=2) for c in row
               if c.value == "=cmd|' /C calc'!A0"]
    assert len(formula) == 9 and all(c.data_type == "s" for c in formula)  # text, not formulas
    notes = {machine: note for _, machine, note in wb["字段说明"].iter_rows(min_row=2,
                                                                          values_only=True)}
    assert "分派状态" in notes["route_status"]
    frame = pd.read_csv(io.BytesIO(batch.csv(result)), encoding="utf-8-sig", dtype=str)
    assert list(frame["编号"]) == [f"C{i}" for i in range(1, 10)]
    assert (frame["举报内容"] == "'=cmd|' /C calc'!A0").all()  # Excel will not run it


# -- the pieces behind the pages -----------------------------------------------------------------
def test_header_recognition():
    assert header_key(" 经 度（WGS84） ") == "经度" and header_key("精度(米)") == "精度"
    assert header_crs("经度（GCJ-02）") == "gcj02" and header_crs("精度(米)") is None
    assert header_key("ＬＯＮ") == "lon"  # full-width letters


def test_header_variants_route_like_the_plain_names(router):
    lon, lat = world.P["a2_plain"]
    gx, gy = (float(v) for v in wgs84_to_gcj02(lon, lat))
    plain = assign(router, pd.DataFrame({"lon": [gx], "lat": [gy], "crs": ["gcj02"]})).table
    variants = [
        pd.DataFrame({"工单编号": ["1"], "东经": [gx], "北纬": [gy], "坐标类型": ["高德"]}),
        pd.DataFrame({"经度（GCJ02）": [gx], "纬度（GCJ02）": [gy]}),  # system in the header
        pd.DataFrame({"经 度": [gx], "纬 度": [gy], "坐标系统": ["GCJ-02"],
                      "定位精度（米）": ["0"]}),
    ]
    for frame in variants:
        t = assign(router, frame).table
        assert t["route_grid_code"].iloc[0] == plain["route_grid_code"].iloc[0] == A2_SOUTH


def test_empty_and_all_bad_files_keep_every_row(router):
    empty = assign(router, pd.DataFrame({"经度": [], "纬度": [], "坐标系": []})).table
    assert len(empty) == 0 and "route_status" in empty and "route_grid_code" in empty
    bad = assign(router, pd.DataFrame({"经度": ["x", ""], "纬度": ["y", ""],
                                       "坐标系": ["wgs84", "wgs84"]})).table
    assert list(bad["route_status"]) == ["error", "error"]
    assert (bad["route_error"] == "坐标为空或不是数字").all()


def test_xlsx_writer_round_trip():
    frame = pd.DataFrame({
        "文本": ["甲", "=1+1", "  前后空格 ", "a\x07b", None, "<b>&</b>"],
        "整数": [1, 2, 3, 4, 5, 6],
        "小数": [1.5, float("nan"), -2.25, 1e-9, 3.0, float("inf")],
        "布尔": [True, False, True, False, True, False],
    })
    wb = load_workbook(io.BytesIO(spreadsheet.xlsx_bytes({"表/1": frame, "表:1": frame})))
    assert wb.sheetnames == ["表_1", "表_1(2)"]
    ws = wb.worksheets[0]
    values = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    assert [v[0] for v in values] == ["甲", "=1+1", "  前后空格 ", "ab", None, "<b>&</b>"]
    assert ws["A3"].data_type == "s"  # "=1+1" stays text
    assert [v[1] for v in values] == [1, 2, 3, 4, 5, 6]
    assert [v[2] for v in values] == [1.5, None, -2.25, 1e-9, 3.0, None]
    assert [v[3] for v in values] == [True, False, True, False, True, False]
    assert ws.freeze_panes == "A2" and ws["A1"].font.b


def test_csv_guard_leaves_numbers_alone():
    frame = pd.DataFrame({"a": ["=SUM(A1)", "+1", "-x", "@x", "-1.5", "正常"], "n": range(6)})
    back = pd.read_csv(io.BytesIO(spreadsheet.csv_bytes(frame)), encoding="utf-8-sig", dtype=str)
    assert list(back["a"]) == ["'=SUM(A1)", "'+1", "'-x", "'@x", "-1.5", "正常"]


def test_names_from_the_data_stay_text(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at.text_input(key=K(at, "in_query")).input("<img").run()
    assert not at.exception
    shown = text(at) + html(at)
    # Escaped for markdown (\<img) or HTML (&lt;img): shown as characters, never a tag.
    assert not re.search(r"(?<!\\)<img", shown) and "img src" in shown
    group = map_args(at, "intakemap")["feature_group"]
    assert XSS_NAME not in group and "&lt;img src=x onerror=alert(1)&gt;" in group
    assert XSS_NAME in set(at.dataframe[0].value["名称"])  # a table cell is data


def test_batch_reads_excel_uploads(store_path):
    from ui import batch

    frame = pd.DataFrame({"编号": ["X1", "X2"], "经度(WGS84)": [120.68, "?"],
                          "纬度(WGS84)": [32.08, "?"]})
    buf = io.BytesIO()
    frame.to_excel(buf, index=False)
    store = open_store(str(store_path))
    result = batch.run(Router(store), "导出.xlsx", buf.getvalue(), None)
    store.close()
    t = result.result.table
    assert list(t["route_status"]) == ["ok", "error"] and t["route_grid_code"][0] == A2_SOUTH
    assert result.id_column == "编号"


def test_a_half_typed_call_survives_a_look_at_the_cases(store_path, monkeypatch):
    at = open_page(INTAKE, store_path, monkeypatch)
    at = type_coordinates(at, "120.68, 32.08", "gcj02")
    at.text_area(key=K(at, "in_desc")).input("冒黑烟，来电人还在线").run()
    at.switch_page(CASES).run()
    assert not at.exception
    at.switch_page(INTAKE).run()
    assert at.text_area(key=K(at, "in_desc")).value == "冒黑烟，来电人还在线"
    assert at.selectbox(key=K(at, "in_crs")).value == "gcj02"
    assert "320901002" in html(at)  # the location and its answer are still there

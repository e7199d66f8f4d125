"""The 规划调整 page in Debian's Chromium against `gridmap serve` on the map world: the planner
picks the chemical park, draws its new boundary with mouse clicks on the Leaflet map, sees the
preview (the entity of the national zone east of the park goes to the park's bureau),
publishes it, finds the version in the history, and routing as of now answers with the new
park while as of before the publish it answers the old one; a dispatcher does not see the page
and is refused at its URL. Every request is recorded: none may leave the host. Screenshots go
to test-artifacts/planner/."""

from __future__ import annotations

import contextlib
import io
import time
from datetime import UTC, datetime

import pytest
import shapely
from openpyxl import load_workbook

from grids.access import Actor
from grids.service import Gridmap
from tests import world
from tests.browser import (
    ARTIFACTS,
    SCRIPT_IDLE,
    AppServer,
    Tab,
    build_map_world,
    page_point,
    wait_idle,
)

SHOTS = ARTIFACTS / "planner"
MAP = "iframe[title='streamlit_folium.st_folium']"
PLANNER = Actor("t-planner", "planner", "规划员")
P2_LABEL = "甲化工园区（P2 · 化工园区 · 甲县 · 执法机构：甲化工园区执法局）"
NOTE = "按省政府批复扩大化工园区"
# The new boundary: P2 (120.60–120.64 × 32.13–32.17) drawn 0.03° further east.
CORNERS = [(120.6, 32.13), (120.67, 32.13), (120.67, 32.17), (120.6, 32.17)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("planner"))) as s:
        yield s


def draw_map(page):
    """(iframe element, frame) of the editing map once its draw toolbar is there."""
    page.frame_locator(MAP).locator(".leaflet-draw-draw-polygon").wait_for(timeout=60_000)
    element = page.query_selector(MAP)
    return element, element.content_frame()


def paint_map(page, timeout_s: float = 60.0):
    """(iframe element, frame) of the map once it is the paint map: one map, no draw toolbar,
    the grid units drawn."""
    for _ in range(int(timeout_s * 4)):
        maps = page.query_selector_all(MAP)
        frame = maps[0].content_frame() if len(maps) == 1 else None
        if frame is not None:
            with contextlib.suppress(Exception):
                if frame.evaluate("""() => !!window.map && !document.querySelector(
                        '.leaflet-draw-draw-polygon') && document.querySelectorAll(
                        'path.leaflet-interactive').length > 0"""):
                    return maps[0], frame
        page.wait_for_timeout(250)
    raise AssertionError("the paint map did not appear")


def metric(page, label: str) -> str:
    box = page.locator("[data-testid=stMetric]").filter(has_text=label).first
    return box.locator("[data-testid=stMetricValue]").inner_text().strip()


def route(server, point: str, **kwargs) -> dict:
    svc = Gridmap(str(server.store))
    try:
        return svc.route(PLANNER, *world.P[point], **kwargs)
    finally:
        svc.close()


def test_planner_draws_a_new_park_boundary_previews_and_publishes(browser, server):
    tab = Tab(browser, server, SHOTS, height=1500, role="planner")
    page = tab.page
    page.goto(server.url + "规划调整")
    page.get_by_role("button", name="开始调整（新建草稿）").wait_for(timeout=60_000)
    page.locator("[data-testid=stSidebar]").get_by_text("规划调整").first.wait_for()  # its link
    box = page.get_by_label("要调整的园区", exact=True).and_(page.locator("input"))
    box.click()
    page.keyboard.type("化工")
    page.get_by_role("option", name=P2_LABEL, exact=True).click()
    note = page.get_by_role("textbox", name="修改原因（发布时记入版本记录）", exact=True)
    note.fill(NOTE)
    note.press("Tab")
    page.wait_for_timeout(500)  # the values reach the server before the click
    page.get_by_role("button", name="开始调整（新建草稿）").click()
    page.get_by_text("已新建草稿", exact=False).wait_for(timeout=30_000)
    element, frame = draw_map(page)
    assert frame.evaluate("() => document.querySelectorAll('path.leaflet-interactive')"
                          ".length") > 0  # the park's polygon, loaded editable
    tab.shot("01_draft")

    frame.evaluate("() => { window.map.setView([32.15, 120.635], 13); }")
    page.wait_for_timeout(500)
    frame.locator(".leaflet-draw-draw-polygon").click()
    for lon, lat in CORNERS:
        page.mouse.click(*page_point(element, frame, lon, lat))
        page.wait_for_timeout(250)
    page.mouse.click(*page_point(element, frame, *CORNERS[0]))  # the first point: closed
    page.get_by_text("已保存到草稿", exact=False).wait_for(timeout=30_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    assert metric(page, "监管对象变化") == "1"
    assert metric(page, "其中执法机构变化") == "1"
    preview = page.locator("[data-testid=stDataFrame]").first
    preview.locator("[role=gridcell]", has_text="甲开发区电子有限公司").first.wait_for(
        state="attached", timeout=15_000)
    tab.shot("02_preview")

    # The edit tool on the saved boundary (loaded editable): drag the north-east vertex.
    element, frame = draw_map(page)
    frame.evaluate("() => { window.map.setView([32.15, 120.635], 13); }")
    page.wait_for_timeout(500)
    frame.locator(".leaflet-draw-edit-edit").click()
    frame.locator(".leaflet-editing-icon").first.wait_for(timeout=10_000)
    page.mouse.move(*page_point(element, frame, 120.67, 32.17))
    page.mouse.down()
    page.mouse.move(*page_point(element, frame, 120.675, 32.175), steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)
    frame.locator(".leaflet-draw-actions a", has_text="保存").first.click()
    page.get_by_text("修改边界节点", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text("第 2 次保存", exact=False).first.wait_for(timeout=30_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    assert metric(page, "监管对象变化") == "1"
    svc = Gridmap(str(server.store))
    parks = svc.draft_features(PLANNER, int(svc.drafts(PLANNER)[0].id), "parks")
    svc.close()
    moved = parks[parks["code"] == "P2"].geometry.values[0]
    assert moved.bounds[2] > 120.671 and moved.bounds[3] > 32.171  # the corner moved
    corners = {tuple(xy) for xy in shapely.get_coordinates(moved).tolist()}
    assert {(120.6, 32.13), (120.6, 32.17)} <= corners  # clicked near, snapped exactly
    tab.shot("03_vertex_moved")

    # The impact for the sign-off, as Excel.
    with page.expect_download(timeout=30_000) as download:
        page.get_by_role("button", name="下载影响评估 Excel（签字确认用）").click()
    book = load_workbook(io.BytesIO(download.value.path().read_bytes()))
    rows = list(book["监管对象变化"].iter_rows(values_only=True))
    assert rows[0][:2] == ("统一社会信用代码", "名称") and rows[1][1] == "甲开发区电子有限公司"
    facts = dict(r[:2] for r in book["概况"].iter_rows(values_only=True))
    assert facts["修改原因"] == NOTE

    before = datetime.now(UTC)
    page.get_by_role("button", name="检查草稿").click()
    page.get_by_text("检查未发现问题", exact=False).wait_for(timeout=60_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    page.get_by_role("button", name="发布为新版本").click()
    page.get_by_text("已发布为版本 2", exact=False).wait_for(timeout=60_000)
    tab.shot("04_published")

    page.get_by_text("版本历史与回退", exact=True).click()
    versions = page.locator("[data-testid=stDataFrame]").first
    versions.locator("[role=gridcell]", has_text=NOTE).first.wait_for(state="attached",
                                                                     timeout=30_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    tab.shot("05_history")

    now = route(server, "national")
    assert now["park"]["code"] == "P2" and now["bureau"]["code"] == "B-P2"
    assert now["version"]["generation"] == 2
    then = route(server, "national", at=before)
    assert then["park"]["code"] == "P1" and then["bureau"]["code"] == "B-A"
    tab.check_clean()
    tab.context.close()


def test_paint_a_grid_unit_into_the_park(browser, server):
    """Paint-by-unit: a click on the comprehensive grid south of the park joins it to the park;
    its entities (one named like a script) and its open case change hands."""
    tab = Tab(browser, server, SHOTS, height=1500, role="planner")
    page = tab.page
    page.goto(server.url + "规划调整")
    page.get_by_role("button", name="开始调整（新建草稿）").wait_for(timeout=60_000)
    box = page.get_by_label("要调整的园区", exact=True).and_(page.locator("input"))
    box.click()
    page.keyboard.type("化工")
    page.get_by_role("option", name=P2_LABEL.split("（")[0], exact=False).first.click()
    page.get_by_role("button", name="开始调整（新建草稿）").click()
    page.get_by_text("已新建草稿", exact=False).wait_for(timeout=30_000)
    draw_map(page)
    page.get_by_text("按网格单元增减（点选网格）", exact=True).click()
    wait_idle(page)
    element, frame = paint_map(page)  # the map of the finished run, not one being replaced
    frame.evaluate("() => { window.map.setView([32.1, 120.64], 11, {animate: false}); }")
    page.wait_for_timeout(500)
    # One unit clicked once: a second click would give it back. Only a click that never left
    # the browser (the component was still being set up) is given again.
    for _ in range(3):
        sent = len(tab.sent)
        page.mouse.click(*page_point(element, frame, 120.65, 32.05))
        deadline = time.monotonic() + 8
        while len(tab.sent) == sent and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        if len(tab.sent) > sent:
            break
        element, frame = paint_map(page)
    else:
        raise AssertionError("three clicks on the paint map never reached the server")
    page.get_by_text("（320901002001001）并入园区：已保存", exact=False).wait_for(timeout=30_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    assert metric(page, "受影响的未结案件") == "1"
    assert metric(page, "其中执法机构变化") == "4"
    tab.shot("06_painted")
    page.get_by_role("button", name="放弃草稿").click()
    page.get_by_role("button", name="确认放弃草稿", exact=False).click()
    page.get_by_text("已放弃", exact=False).first.wait_for(timeout=30_000)
    tab.check_clean()  # the script-named entity in the preview ran nothing
    tab.context.close()


def test_a_dispatcher_does_not_see_the_page(browser, server):
    tab = Tab(browser, server, SHOTS, role="dispatcher")
    tab.page.goto(server.url)  # the city map, with the pages the dispatcher may open
    bar = tab.page.locator("[data-testid=stSidebar]")
    bar.get_by_text("投诉受理").first.wait_for(timeout=60_000)  # the page links
    tab.page.wait_for_function(SCRIPT_IDLE, timeout=60_000)  # the whole run: nothing more comes
    assert "规划调整" not in bar.inner_text()
    tab.page.goto(server.url + "规划调整")
    tab.page.get_by_text("无权打开此页面").wait_for(timeout=60_000)
    assert tab.page.get_by_role("button", name="开始调整（新建草稿）").count() == 0
    assert tab.page.locator(MAP).count() == 0
    tab.shot("10_dispatcher_refused")
    tab.check_clean()
    tab.context.close()

from tests.browser import AppServer, Tab, build_map_world, page_point, ARTIFACTS
from tests.test_planner_browser import draw_map, MAP, IDLE, metric, P2_LABEL
import pytest

def test_adhoc(browser, tmp_path):
    with AppServer(build_map_world(tmp_path)) as server:
        tab = Tab(browser, server, ARTIFACTS / "planner_adhoc", height=1500, role="planner")
        page = tab.page
        page.goto(server.url + "规划调整")
        page.get_by_role("button", name="开始调整（新建草稿）").wait_for(timeout=60_000)
        box = page.get_by_label("要调整的园区", exact=True).and_(page.locator("input"))
        box.click(); page.keyboard.type("化工")
        page.get_by_role("option", name=P2_LABEL, exact=True).click()
        page.get_by_role("button", name="开始调整（新建草稿）").click()
        page.get_by_text("已新建草稿", exact=False).wait_for(timeout=30_000)
        draw_map(page)
        page.get_by_text("按网格单元增减（点选网格）").click()
        page.wait_for_function(IDLE, timeout=60_000)
        page.wait_for_timeout(1500)
        el = page.query_selector(MAP); fr = el.content_frame()
        fr.wait_for_selector("path.leaflet-interactive", state="attached")
        fr.evaluate("() => { window.map.setView([32.1, 120.64], 11); }")
        page.wait_for_timeout(500)
        page.mouse.click(*page_point(el, fr, 120.65, 32.05))
        page.get_by_text("并入园区：已保存", exact=False).wait_for(timeout=30_000)
        page.wait_for_function(IDLE, timeout=60_000)
        page.wait_for_timeout(1500)
        print("metric", metric(page, "监管对象变化"))
        tab.shot("paint")
        page.get_by_text("离开草稿（稍后继续）").click()
        page.get_by_text("新建园区及其执法机构").click()
        page.wait_for_function(IDLE, timeout=60_000)
        page.wait_for_timeout(2500)
        tab.shot("new")
        print(tab.errors, tab.dialogs)
        tab.check_clean()

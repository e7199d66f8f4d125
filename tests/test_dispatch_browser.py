"""The dispatcher pages in a real browser (Debian's Chromium, headless, via Playwright) against
`streamlit run app.py` on the map world: a GCJ-02 coordinate typed as a caller reads it from
WeChat gives the right grid worker, the case is registered and appears in the case list; a river
stretch drawn across two counties becomes a municipal case; a complaint file is routed and
downloaded. Every request is recorded: none may leave the host. Screenshots go to
test-artifacts/dispatch/."""

from __future__ import annotations

import io
import re

import pytest
from openpyxl import load_workbook

from geo.china_offsets import wgs84_to_gcj02
from tests import world
from tests.browser import (
    ARTIFACTS,
    SCRIPT_IDLE,
    AppServer,
    Tab,
    build_map_world,
    page_point,
    wait_for_map,
)
from tests.test_intake_page import complaint_csv

SHOTS = ARTIFACTS / "dispatch"
A2_SOUTH = "320901002001001"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("dispatch"))) as s:
        yield s


class Desk(Tab):
    """A dispatcher's browser tab."""

    def __init__(self, browser, server) -> None:
        super().__init__(browser, server, SHOTS, height=1400)

    def choose(self, label: str, typed: str, option: str) -> None:
        """Pick an option of a Streamlit selectbox by typing part of it."""
        box = self.page.get_by_label(label, exact=True).and_(self.page.locator("input"))
        box.click()
        self.page.keyboard.type(typed)
        self.page.get_by_role("option", name=option, exact=True).click()

    def textbox(self, name: str):
        return self.page.get_by_role("textbox", name=name, exact=True)


@pytest.fixture
def desk(browser, server):
    d = Desk(browser, server)
    yield d
    d.context.close()


def test_typed_gcj02_coordinate_to_a_registered_case(desk):
    desk.open("受理")
    page = desk.page
    desk.choose("坐标系", "GCJ", "GCJ-02（高德/腾讯/微信）")
    gx, gy = (float(v) for v in wgs84_to_gcj02(*world.P["a2_plain"]))
    box = desk.textbox("坐标（可直接粘贴）")
    box.fill(f"{gx:.6f},{gy:.6f}")
    box.press("Enter")
    card = page.locator(".gm-route-card")
    card.get_by_text("13800000003", exact=False).wait_for(timeout=15_000)
    shown = card.inner_text()
    assert "明确" in shown and A2_SOUTH in shown and "网格员3" in shown and "甲县执法局" in shown
    lon, lat = world.P["a2_plain"]
    assert f"{lon:.6f}, {lat:.6f}" in shown  # routed at the converted point
    # The likely source is listed first among the nearby entities.
    # (st.dataframe draws on a canvas; its accessible table holds the cells, hidden.)
    nearby = page.locator("[data-testid=stDataFrame]").first
    first_row = nearby.locator("[role=gridcell][aria-colindex='3']").first
    first_row.wait_for(state="attached", timeout=10_000)
    assert first_row.text_content() == "甲二镇印染有限公司"
    desk.shot("01_intake_answer")

    desk.choose("事件类别", "大气", "大气污染")
    desk.textbox("事件描述").fill("印染厂后面冒黑烟，气味刺鼻")
    desk.textbox("事件描述").press("Tab")
    page.wait_for_timeout(500)  # the widgets' values reach the server before the click
    page.get_by_role("button", name="登记为新案件").click()
    done = page.get_by_text("已登记案件", exact=False)
    done.wait_for(timeout=15_000)
    case_id = re.search(r"已登记案件 (\S+)，", done.inner_text())[1]
    desk.shot("02_case_registered")

    page.get_by_role("link", name=f"打开案件 {case_id}").click()
    page.get_by_text("办理记录", exact=True).wait_for(timeout=30_000)
    grid = page.locator("[data-testid=stDataFrame]").first
    grid.locator("[role=gridcell]", has_text=case_id).first.wait_for(state="attached",
                                                                     timeout=15_000)
    row = grid.locator("[role=row]", has_text=case_id).first.text_content()
    assert "大气污染" in row and "已受理（待派遣）" in row
    heading = page.get_by_text(f"案件 {case_id}", exact=False).first.inner_text()
    assert "已受理" in heading
    assert "网格员3" in page.locator(".gm-card").nth(1).inner_text()  # who has it now
    # Dispatch it: a step of the workflow, recorded with the signed-in person.
    page.get_by_role("button", name="派遣至网格员").click()
    page.get_by_text(f"案件 {case_id}：派遣至网格员（调度员甲）").wait_for(timeout=15_000)
    desk.shot("03_case_list")
    desk.check_clean()


def test_river_stretch_drawn_across_two_counties(desk):
    desk.open("受理")
    page = desk.page
    page.get_by_text("按线/面范围受理", exact=False).click()
    page.wait_for_timeout(1000)
    element, frame = wait_for_map(page, timeout_s=60)  # the drawing map
    frame.locator(".leaflet-draw-draw-polyline").wait_for(timeout=15_000)
    frame.evaluate("() => { window.map.setView([32.15, 120.7], 12); }")
    page.wait_for_timeout(500)
    frame.locator(".leaflet-draw-draw-polyline").click()
    points = [(120.66, 32.15), (120.7, 32.152), (120.74, 32.15)]
    for lon, lat in points:
        page.mouse.click(*page_point(element, frame, lon, lat))
        page.wait_for_timeout(250)
    page.mouse.click(*page_point(element, frame, *points[-1]))  # the last point again: done
    card = page.locator(".gm-route-card")
    card.get_by_text("跨县（市）、区", exact=False).first.wait_for(timeout=15_000)
    shown = card.inner_text()
    assert "市执法局" in shown and "甲县执法局" in shown and "乙县执法局" in shown
    assert "地图上绘制的范围" in page.locator("body").inner_text()
    desk.shot("04_cross_county_line")
    desk.check_clean()


def test_complaint_file_routed_and_downloaded(desk, tmp_path):
    _, frame = desk.open("批量分派")
    page = desk.page
    upload = tmp_path / "投诉导出.csv"
    upload.write_bytes(complaint_csv())
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_text("无法分派的行（4）").wait_for(timeout=30_000)
    dots = "() => { const p = window.map.getPane('gmTop'); " \
           "return p ? p.querySelectorAll('path').length : 0; }"
    for _ in range(100):
        if frame.evaluate(dots) == 5:
            break
        page.wait_for_timeout(100)
    assert frame.evaluate(dots) == 5  # 4 routed + 1 outside, above the entity markers
    metrics = page.locator("[data-testid=stMetric]")
    metrics.filter(has_text="无法分派").get_by_text("4", exact=True).wait_for(timeout=15_000)
    assert "明确" in metrics.first.inner_text() and "4" in metrics.first.inner_text()
    desk.shot("05_batch")
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    with page.expect_download(timeout=30_000) as download:  # one click, as a user gives it
        page.get_by_role("button", name="下载 Excel（含分派结果）").click()
    assert download.value.suggested_filename == "投诉导出_分派结果.xlsx"
    wb = load_workbook(io.BytesIO(download.value.path().read_bytes()))
    rows = list(wb["分派结果"].iter_rows(values_only=True))
    assert len(rows) == 10 and rows[0][0] == "编号"
    desk.check_clean()

"""The dispatcher's console in a real browser (Debian's Chromium, headless, 1400×900) on the map
world behind `gridmap serve`: intake that cannot mis-file (a new form after filing, the system
taken from the location source, a pair of unstated system read both ways, a parse failure that
takes the answer away), duplicates decided before filing (link, or new with a reason), a
township searched as a whole area, and the case console (overdue first; an on-site check with a
photo, shown as a thumbnail). Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from geo.china_offsets import wgs84_to_gcj02
from grids.access import Actor
from grids.intake import route_unstated
from grids.routing import Router
from grids.service import Gridmap
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab, build_map_world, wait_idle

SHOTS = ARTIFACTS / "console"
A2_SOUTH = "320901002001001"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("console"))) as s:
        yield s


class Desk(Tab):
    def __init__(self, browser, server, role="dispatcher") -> None:
        super().__init__(browser, server, SHOTS, height=900, role=role)
        self.context.set_default_timeout(20_000)

    def choose(self, label: str, typed: str, option: str) -> None:
        """Pick `option` by typing into the select box; again if a rerun redrew the list while
        it was open (the option then detaches before the click lands)."""
        self.idle()
        box = self.page.get_by_label(label, exact=True).and_(self.page.locator("input"))
        for attempt in range(3):
            box.click()
            self.page.keyboard.press("Control+a")
            self.page.keyboard.type(typed)
            try:
                self.page.get_by_role("option", name=option, exact=True).click(timeout=6_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
                self.page.keyboard.press("Escape")
                self.idle()
        self.idle()

    def selected(self, label: str) -> str:
        """What a selectbox shows as chosen."""
        box = self.page.get_by_label(label, exact=True).and_(self.page.locator("input"))
        return box.evaluate("e => e.value || e.closest('[data-testid=stSelectbox]')"
                            ".querySelector('[value], div[title]')?.textContent || ''") + (
            box.evaluate("e => e.closest('[data-testid=stSelectbox]').textContent"))

    def textbox(self, name: str):
        return self.page.get_by_role("textbox", name=name, exact=True)

    def type_in(self, name: str, text: str) -> None:
        box = self.textbox(name)
        box.fill(text)
        box.press("Tab")
        self.idle()

    def idle(self) -> None:
        wait_idle(self.page)

    def card(self) -> str:
        card = self.page.locator(".gm-route-card")
        return card.first.inner_text() if card.count() else ""

    def file_button(self):
        return self.page.get_by_role("button", name=re.compile("登记为新案件|并入所选案件"))


@pytest.fixture
def desk(browser, server):
    d = Desk(browser, server)
    d.open("受理")
    yield d
    d.context.close()


def gcj(point) -> str:
    gx, gy = (float(v) for v in wgs84_to_gcj02(*point))
    return f"{gx:.6f}, {gy:.6f}"


def test_the_form_resets_after_filing_and_the_source_sets_the_system(desk):
    page = desk.page
    desk.choose("位置来源", "高德", "高德地图（±30 米，GCJ-02（高德/腾讯/微信））")
    # The source decided the system, and the page says it was assumed from the source.
    assert "GCJ-02" in desk.selected("坐标系")
    page.get_by_text("由位置来源“高德地图”确定", exact=False).wait_for()
    desk.type_in("坐标（可直接粘贴）", gcj(world.P["a2_plain"]))
    page.locator(".gm-route-card").get_by_text(A2_SOUTH, exact=False).first.wait_for()
    assert "明确" in desk.card() and "±30 米" in desk.card()
    desk.choose("事件类别", "土壤", "土壤污染")
    desk.type_in("举报人及联系方式（可不填）", "王先生 13912345678")
    desk.type_in("事件描述", "厂区后方土壤发黑")
    desk.shot("01_filled")
    desk.file_button().click()
    done = page.get_by_text("已登记案件", exact=False)
    done.wait_for()
    desk.idle()
    # A new call starts from an empty form: no field of the previous caller survives, and
    # nothing can be filed until a new location is given.
    assert desk.textbox("坐标（可直接粘贴）").input_value() == ""
    assert desk.textbox("事件描述").input_value() == ""
    assert desk.textbox("举报人及联系方式（可不填）").input_value() == ""
    assert page.locator(".gm-route-card").count() == 0
    assert desk.file_button().is_disabled()
    assert "来电人报坐标" in desk.selected("位置来源")
    desk.shot("02_new_form")
    # A search in a select box that finds nothing says so in Chinese, not Streamlit's English.
    desk.page.get_by_label("事件类别", exact=True).and_(page.locator("input")).click()
    page.keyboard.type("没有这一类")
    empty = page.locator("[role=listbox][data-empty=true] [role=option] span")
    empty.wait_for()
    shown = empty.evaluate("e => [getComputedStyle(e).fontSize, getComputedStyle(e, '::after')"
                           ".content, getComputedStyle(e, '::after').fontSize]")
    assert shown[0] == "0px" and shown[1] == '"没有匹配的选项"' and shown[2] != "0px", shown
    page.keyboard.press("Escape")
    desk.check_clean()


def unstated_split_point(store_path) -> tuple[float, float]:
    """A pair near the county border that routes differently as WGS84 and as GCJ-02."""
    store = open_store(str(store_path))
    try:
        router = Router(store)
        for i in range(40):
            lon = 120.700 + i * 0.0002
            if route_unstated(router, lon, 32.13)["status"] == "ambiguous":
                return lon, 32.13
    finally:
        store.close()
    raise AssertionError("no point reads differently")


def test_a_pair_without_its_system_is_read_both_ways(desk):
    lon, lat = unstated_split_point(desk.server.store)
    desk.type_in("坐标（可直接粘贴）", f"{lon:.6f}, {lat:.6f}")
    page = desk.page
    page.locator(".gm-route-card").get_by_text("存在歧义", exact=False).first.wait_for()
    card = desk.card()
    assert "坐标系未说明" in card and "WGS84 与 GCJ-02" in card
    assert "候选 1（按 WGS84" in card and "（按 GCJ-02" in card  # which reading each one is
    table = page.locator("table.gm-cands").inner_text()
    assert "按 WGS84" in table and "按 GCJ-02" in table
    assert "甲县" in table and "乙县" in table
    desk.shot("03_two_readings")
    desk.check_clean()


def test_a_location_that_does_not_parse_takes_the_answer_away(desk):
    desk.choose("坐标系", "WGS", "WGS84（GPS）")
    desk.type_in("坐标（可直接粘贴）", "120.68, 32.08")
    page = desk.page
    page.locator(".gm-route-card").first.wait_for()
    desk.choose("事件类别", "生态", "生态破坏")
    desk.type_in("事件描述", "河边有人挖砂")
    assert desk.file_button().is_enabled()
    desk.type_in("坐标（可直接粘贴）", "东经一百二十度")
    page.locator("[data-testid=stAlertContentError]").first.wait_for()
    assert page.locator(".gm-route-card").count() == 0
    assert desk.file_button().is_disabled()
    desk.shot("04_parse_failure")


def test_a_repeat_call_is_linked_or_filed_new_with_a_reason(desk):
    page = desk.page
    desk.choose("坐标系", "WGS", "WGS84（GPS）")

    def call(point: str, words: str) -> None:
        desk.type_in("坐标（可直接粘贴）", point)
        page.locator(".gm-route-card").first.wait_for()
        desk.choose("事件类别", "工业", "工业噪声")
        desk.type_in("事件描述", words)

    call("120.6800, 32.0800", "夜间冲床噪声")
    desk.file_button().click()
    first = re.search(r"已登记案件 (\S+)，", page.get_by_text("已登记案件", exact=False)
                      .inner_text())[1]
    desk.idle()
    desk.choose("坐标系", "WGS", "WGS84（GPS）")
    call("120.6805, 32.0802", "还是那家厂的冲床")
    dups = page.locator(".gm-dups")
    dups.wait_for()
    assert first in dups.inner_text() and "300 米内" in dups.inner_text()
    desk.shot("05_duplicate_prompt")
    page.get_by_text(f"是同一事项：并入案件 {first}").click()
    desk.idle()
    page.get_by_role("button", name="并入所选案件（不新建）").click()
    page.get_by_text("已作为重复举报并入案件", exact=False).wait_for()
    desk.idle()
    # Once more, a different source: filed new, with the reason.
    desk.choose("坐标系", "WGS", "WGS84（GPS）")
    call("120.6803, 32.0801", "隔壁木材厂电锯声")
    page.locator(".gm-dups").wait_for()
    page.get_by_text("不是同一事项：登记为新案件（须说明理由）").click()
    desk.idle()
    desk.file_button().click()
    page.get_by_text("新建案件须填写理由", exact=False).wait_for()
    desk.type_in("新建理由（必填，例如：不同污染源、不同时段）", "不同企业：木材厂")
    desk.file_button().click()
    second = re.search(r"已登记案件 (\S+)，", page.get_by_text("已登记案件", exact=False)
                       .inner_text())[1]
    assert second != first
    svc = Gridmap(str(desk.server.store))
    try:
        events = svc.case_events(Actor("t-dispatcher", "dispatcher", "调度员甲"), first)
        created = svc.case_events(Actor("t-dispatcher", "dispatcher", "调度员甲"), second)
    finally:
        svc.close()
    assert events.iloc[-1]["action"] == "link" and "冲床" in events.iloc[-1]["reason"]
    assert "不同企业：木材厂" in created.iloc[0]["reason"] and first in created.iloc[0]["reason"]
    desk.check_clean()


def test_a_township_from_search_is_answered_as_the_whole_area(desk):
    page = desk.page
    desk.type_in("搜索", "甲二镇")
    page.locator(".gm-route-card").first.wait_for()
    desk.idle()
    card = desk.card()
    assert "甲县执法局" in card
    tab = page.get_by_role("tab", name=re.compile("范围内网格"))
    tab.click()
    grids_table = page.locator("[data-testid=stDataFrame]").first
    grids_table.locator("[role=gridcell]", has_text=A2_SOUTH).first.wait_for(state="attached")
    text = grids_table.text_content()
    assert A2_SOUTH in text and "320901002001002" in text  # every grid of the township
    assert "网格员3" in text
    desk.shot("06_township_area")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (180, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_console_overdue_first_and_an_on_site_check_with_a_photo(browser, server):
    svc = Gridmap(str(server.store))
    dispatcher = Actor("t-dispatcher", "dispatcher", "调度员甲")
    try:
        cid = svc.create_case(dispatcher, svc.route(dispatcher, *world.P["a2_plain"]),
                              {"category": "water", "description": "排口冒泡"})
        svc.step_case(dispatcher, cid, "dispatched")
    finally:
        svc.close()
    boss = Desk(browser, server)
    try:
        boss.page.goto(server.url + "案件")
        listed = boss.page.locator("[data-testid=stDataFrame]").first
        listed.locator("[role=gridcell]", has_text="超时").first.wait_for(state="attached")
        rows = listed.locator("[role=row]").all_text_contents()[1:]  # after the header
        cells = [re.match(r"(超时[^X]*?(?:分|小时)|剩[^X]*?(?:分|小时)|无时限)", r.strip())[0]
                 if re.match(r"(超时|剩|无时限)", r.strip()) else r for r in rows]
        assert cells[0].startswith("超时")  # the most overdue on top
        first_fresh = next(i for i, c in enumerate(cells) if c.startswith("剩"))
        assert all(c.startswith("超时") for c in cells[:first_fresh])
        # The table's own "Download as CSV" would write a description like =HYPERLINK(…) as a
        # live formula: hidden; its other tools stay.
        listed.hover()
        tools = boss.page.locator("[data-testid=stElementToolbarButton]")
        tools.filter(has=boss.page.locator("button[aria-label^=Search]")).first.wait_for()
        download = tools.filter(has=boss.page.locator('button[aria-label^="Download as CSV"]'))
        assert download.count() >= 1  # one per table, drawn and hidden
        assert not any(download.nth(i).is_visible() for i in range(download.count()))
        boss.shot("07_console")
    finally:
        boss.context.close()
    worker = Desk(browser, server, role="grid_worker")
    try:
        page = worker.page
        page.goto(server.url + f"案件?case={cid}")
        page.get_by_text(f"案件 {cid}", exact=False).first.wait_for()
        page.get_by_role("textbox", name=re.compile("办理结果")).fill("现场核实：排口有泡沫")
        page.get_by_role("textbox", name=re.compile("办理结果")).press("Tab")
        worker.idle()
        page.locator("input[type=file]").set_input_files(
            files=[{"name": "排口.png", "mimeType": "image/png", "buffer": png()}])
        page.get_by_text("排口.png", exact=False).first.wait_for()
        worker.idle()
        page.get_by_role("button", name="网格员现场核实", exact=True).click()
        page.get_by_text("附件 1 个", exact=False).wait_for()
        page.get_by_text("现场照片与附件", exact=False).wait_for()
        image = page.locator("[data-testid=stImage] img").first
        image.wait_for()
        assert image.evaluate("i => i.naturalWidth") > 0  # the thumbnail, served and decoded
        assert "SHA-256" in page.locator("body").inner_text()
        worker.shot("08_step_with_photo")
        worker.check_clean()
    finally:
        worker.context.close()


def test_the_console_stays_on_its_case_after_a_step(browser, server):
    """A step gives the case a new deadline: the chooser once kept its choice by a label with
    the time left in it, lost it at the next rerun and showed the first case of the list."""
    svc = Gridmap(str(server.store))
    dispatcher = Actor("t-dispatcher", "dispatcher", "调度员甲")
    try:
        cid = svc.create_case(dispatcher, svc.route(dispatcher, *world.P["a2_plain"]),
                              {"category": "air", "description": "夜间异味"})
    finally:
        svc.close()
    desk = Desk(browser, server)
    try:
        page = desk.page
        page.goto(server.url + f"案件?case={cid}")
        heading = page.get_by_role("heading", name=re.compile("^案件 "))
        heading.first.wait_for()
        desk.idle()
        assert cid in heading.first.inner_text()
        page.get_by_role("button", name="派遣至网格员", exact=True).click()
        page.get_by_text("：派遣至网格员", exact=False).first.wait_for()
        desk.idle()
        assert cid in heading.first.inner_text()
        desk.type_in("办理结果（核实情况、处理结果；部分环节必填）", "网格员请假，重新派遣")
        assert cid in heading.first.inner_text()  # the rerun of the text kept the case
        assert page.url.endswith(f"case={cid}")
        page.get_by_role("button", name="退回重新派遣", exact=True).click()
        page.get_by_text("：退回重新派遣", exact=False).first.wait_for()
        desk.idle()
        assert cid in heading.first.inner_text()
        store = open_store(str(server.store))
        try:
            assert store.incident_events(cid)["status"].iloc[-1] == "reported"
        finally:
            store.close()
        desk.check_clean()
    finally:
        desk.context.close()

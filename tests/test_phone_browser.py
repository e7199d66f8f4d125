"""The grid worker's phone page in a real browser (Debian's Chromium, headless) at 390×844 with
touch, on the map world behind `gridmap serve`: the first screen (who, units, tasks — and no
phone number of another township's people), a vertical swipe that starts on the map scrolls the
page, a case taken from the phone through 接单 → 到达现场 (the browser's geolocation, granted)
→ the on-site check with a photo → handed to the bureau, seen by a dispatcher; a patrol visit
recorded and shown as last visited. Screenshots go to test-artifacts/phone/."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from grids.access import Actor
from grids.service import Gridmap
from tests import world
from tests.browser import ARTIFACTS, ENTITIES, AppServer, Tab, build_map_world, wait_idle

SHOTS = ARTIFACTS / "phone"
A2_SOUTH = "320901002001001"
# W003's township is 甲二镇 (320901002): its people's phones may show, no one else's.
OTHER_TOWNSHIP_PHONES = ("13800000001", "13800000002", "13800000005", "13800000006",
                         "13800000007", "13800000008")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("phone"))) as s:
        yield s


class Phone(Tab):
    """A grid worker's phone: 390×844, touch, the browser's position granted (at `where`)."""

    def __init__(self, browser, server, where=world.P["a2_plain"], role="grid_worker") -> None:
        self.server = server
        self.shots = SHOTS
        lon, lat = where
        self.context = browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
            has_touch=True, locale="zh-CN", geolocation={"longitude": lon + 0.0003,
                                                         "latitude": lat, "accuracy": 12},
            permissions=["geolocation"], accept_downloads=True)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.requests, self.sent, self.dialogs, self.errors = [], [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.sign_in(role)

    def idle(self) -> None:
        wait_idle(self.page)

    def tap(self, name: str, exact: bool = True) -> None:
        self.page.get_by_role("button", name=name, exact=exact).first.tap()
        self.idle()


def wider_than_the_screen(page, selector: str) -> list[str]:
    """The elements of `selector` (and inside them) that reach past the screen's right edge
    or scroll sideways: what a person would have to swipe to read."""
    return page.evaluate("""s => [...document.querySelectorAll(s + ', ' + s + ' *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                     || e.scrollWidth > e.clientWidth + 1)
        .map(e => e.tagName + ' ' + e.innerText.slice(0, 20))""", selector)


@pytest.fixture
def phone(browser, server):
    p = Phone(browser, server)
    yield p
    p.context.close()


def test_first_screen_shows_my_units_and_tasks(phone):
    page = phone.page
    page.get_by_text("我的任务（按时限）").wait_for()
    phone.idle()
    # The task cards are drawn by the page's own script (static/gridmap/rows.js) once it has
    # loaded, which may be after the script run is over: wait for them, not for the run.
    page.get_by_role("button", name="打开 T0001").wait_for()
    body = page.locator("body").inner_text()
    assert "我的工作台" in body and "网格员3" in body and "320901002南网格" in body
    assert "T0001" in body and "大气污染" in body  # the open case in my grid
    assert "T0002" not in body  # another county's case
    for number in OTHER_TOWNSHIP_PHONES:
        assert number not in page.content(), number
    # The first screen: who, the counts, the first task — without scrolling.
    first_task = page.get_by_role("button", name="打开 T0001")
    box = first_task.bounding_box()
    assert box["y"] + box["height"] <= 844 and box["height"] >= 44  # a thumb-sized target
    sizes = page.evaluate("""() => [...document.querySelectorAll('.gm-task, .gm-who')]
        .map(e => parseFloat(getComputedStyle(e).fontSize))""")
    assert sizes and min(sizes) >= 14
    # Every control a thumb may need, at least 44 px high (and wide, those with an icon only).
    small = page.evaluate("""() => [...document.querySelectorAll(
            'button, summary, a.leaflet-control-zoom-in, a.leaflet-control-zoom-out, '
            + '[data-testid=stTextInputRootElement], [data-baseweb=select] > div')]
        .filter(e => e.offsetParent !== null && !e.closest('[data-testid=stSidebar]'))
        .map(e => [e.getAttribute('aria-label') || e.innerText.trim().slice(0, 20),
                   e.getBoundingClientRect()])
        .filter(([, r]) => r.width > 0 && (r.height < 43.5 || r.width < 43.5))
        .map(([name, r]) => name + ' ' + Math.round(r.width) + 'x' + Math.round(r.height))""")
    assert not small, small
    # The search box of my entities (further down) and, in the side menu, the page links.
    search = page.get_by_placeholder("名称、行业或地址")
    assert search.bounding_box()["height"] >= 43.5
    page.locator("[data-testid=stExpandSidebarButton]").tap()
    links = page.locator("[data-testid=stSidebar] [data-testid=stPageLink-NavLink]")
    links.first.wait_for()
    heights = [links.nth(i).bounding_box()["height"] for i in range(links.count())]
    assert heights and min(heights) >= 43.5, heights
    page.locator("[data-testid=stSidebarCollapseButton] button").tap()
    page.wait_for_timeout(400)
    phone.shot("01_first_screen")
    # My grids and roster: one card per grid, each value under its name, nothing sideways.
    page.get_by_text("负责网格与花名册").tap()
    records = page.locator(".gm-records")
    records.wait_for()
    text = records.inner_text()
    assert A2_SOUTH in text and "本人职责" in text and "网格员" in text
    assert not wider_than_the_screen(page, ".gm-records")
    phone.shot("01b_roster")
    phone.check_clean()


def test_a_swipe_on_the_map_scrolls_the_page(phone):
    page = phone.page
    # The map is drawn in the page itself (static/gridmap/phonemap.js), not in an iframe.
    assert page.locator("iframe[title='streamlit_folium.st_folium']").count() == 0
    map_el = page.locator(".gm-phone-map[data-gridmap=ready]")
    map_el.wait_for()
    titles = map_el.evaluate("""m => [...m.querySelectorAll('.leaflet-control a[title]')]
        .map(a => a.title)""")
    assert sorted(titles) == ["图层", "放大", "缩小"], titles  # not Leaflet's English
    map_el.scroll_into_view_if_needed()
    phone.idle()
    page.wait_for_timeout(800)
    # The map fits the worker's own units, at most about half the screen tall.
    box = map_el.bounding_box()
    assert box["height"] <= 844 / 2 + 10
    centre = ("() => { const c = document.querySelector('.gm-phone-map').gridmapMap.getCenter();"
              " return [c.lat, c.lng]; }")
    centre_before = page.evaluate(centre)
    scroller = "document.querySelector('[data-testid=stMain]') || document.scrollingElement"
    top_before = page.evaluate(f"() => ({scroller}).scrollTop")
    # One finger, real touch events (what a thumb sends), starting on the map, moving up.
    cdp = page.context.new_cdp_session(page)
    x = int(box["x"] + box["width"] / 2)
    y = int(min(box["y"] + box["height"] * 0.7, 800))
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for i in range(1, 11):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove",
                                               "touchPoints": [{"x": x, "y": y - 20 * i}]})
        page.wait_for_timeout(16)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_timeout(800)
    top_after = page.evaluate(f"() => ({scroller}).scrollTop")
    centre_after = page.evaluate(centre)
    assert top_after > top_before + 100  # the page scrolled …
    assert centre_after == pytest.approx(centre_before, abs=1e-9)  # … the map did not move
    phone.shot("02_after_swipe")
    # A tap on my case's marker shows what a hover shows on a desktop, as text.
    point = page.evaluate("""() => { const box = document.querySelector('.gm-phone-map');
        let out = null;
        box.gridmapMap.eachLayer(l => { if (!out && l.getLatLng && l.options.radius === 10) {
            const p = box.gridmapMap.latLngToContainerPoint(l.getLatLng()),
                  r = box.getBoundingClientRect();
            out = [r.left + p.x, r.top + p.y]; } });
        return out; }""")
    page.touchscreen.tap(*point)
    popup = page.locator(".gm-phone-map .leaflet-popup-content")
    popup.wait_for()
    assert "T0001" in popup.inner_text() and "<script>" in popup.inner_text()
    assert page.locator(".gm-phone-map .leaflet-popup-content script").count() == 0


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def test_a_case_taken_from_the_phone_and_seen_by_the_dispatcher(phone, browser, server):
    page = phone.page
    phone.tap("打开 T0001")
    page.get_by_text("T0001", exact=False).first.wait_for()
    nav = page.locator(".gm-nav a")
    nav.nth(3).wait_for()
    hrefs = [nav.nth(i).get_attribute("href") for i in range(nav.count())]
    assert any(h.startswith("amapuri://") for h in hrefs)
    assert any(h.startswith("baidumap://") and "bd09ll" in h for h in hrefs)
    assert any(h.startswith("geo:32.08") for h in hrefs)
    phone.tap("接单")
    page.get_by_text("已记录：接单").wait_for()
    page.get_by_role("button", name="获取手机定位").tap()
    page.get_by_text("已定位，精度 ±12 米").wait_for()
    phone.idle()
    phone.tap("到达现场（记录定位）")
    page.get_by_text("已记录：到达现场").wait_for()
    # The step's line comes further down the same script run than the message: wait for it
    # (reading the page at once raced the run in CI).
    page.get_by_text(re.compile(r"距上报位置 \d+ 米")).first.wait_for()
    page.get_by_role("textbox", name=re.compile("办理结果")).fill("现场核实：有刺鼻异味")
    page.get_by_role("textbox", name=re.compile("办理结果")).press("Tab")
    phone.idle()
    # Streamlit's uploader speaks English of its own: its button reads 选择文件 (drawn over its
    # word), its English size line is hidden, the label says the limit in Chinese.
    uploader = page.locator("[data-testid=stFileUploader]").first
    assert "单个不超过 10 MB" in uploader.inner_text()
    word = uploader.locator("button [data-testid=stMarkdownContainer] p").first
    assert word.evaluate("e => getComputedStyle(e, '::after').content") == '"选择文件"'
    assert word.evaluate("e => getComputedStyle(e).visibility") == "hidden"
    assert uploader.locator("[data-testid=stFileUploaderDropzoneInstructions]").is_hidden()
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "现场.jpg", "mimeType": "image/jpeg", "buffer": png()}])
    page.get_by_text("现场.jpg", exact=False).first.wait_for()
    phone.idle()
    phone.tap("网格员现场核实")
    page.get_by_text("网格员现场核实，照片/附件 1 个", exact=False).wait_for()
    page.get_by_role("textbox", name=re.compile("办理结果")).fill("废气未经处理直排，移送执法局")
    page.get_by_role("textbox", name=re.compile("办理结果")).press("Tab")
    phone.idle()
    phone.tap("移送执法局（案件移送）")
    # The confirmation, not the button of the same words (waiting on those raced the step).
    page.get_by_text("案件 T0001：移送执法局（案件移送）", exact=False).wait_for()
    phone.shot("03_case_handed_over")
    # Its trail: a card per event, every value under its name, nothing wider than the screen.
    page.get_by_text("办理记录", exact=True).tap()
    trail = page.locator(".gm-records").last
    trail.get_by_text("到达现场", exact=False).first.wait_for()
    assert "废气未经处理直排，移送执法局" in trail.inner_text()
    assert not wider_than_the_screen(page, ".gm-records")
    phone.shot("03b_case_trail")
    phone.check_clean()
    # The dispatcher's desk sees it at the bureau, with the steps and the position.
    svc = Gridmap(str(server.store))
    try:
        desk = Actor("t-dispatcher", "dispatcher", "调度员甲")
        case = svc.case(desk, "T0001")
        events = svc.case_events(desk, "T0001")
        files = svc.case_files(desk, "T0001")
    finally:
        svc.close()
    assert case["status"] == "transferred"
    assert list(events["action"])[-4:] == ["accept", "arrive", "transition", "transition"]
    arrive = events[events["action"] == "arrive"].iloc[-1]
    assert "距上报位置" in arrive["reason"] and '"accuracy_m": 12' in arrive["data"]
    assert [f.name for f in files] == ["现场.jpg"]
    boss = Tab(browser, server, SHOTS, height=900)
    try:
        boss.page.goto(server.url + "案件?case=T0001")
        boss.page.get_by_text("已移送执法局", exact=False).first.wait_for(timeout=30_000)
        # The trail (a data grid: its accessible cells hold the text) names the arrival.
        boss.page.locator("[data-testid=stDataFrame] [role=gridcell]",
                          has_text="到达现场").first.wait_for(state="attached")
        boss.shot("04_dispatcher_sees_it")
    finally:
        boss.context.close()


def test_a_patrol_visit_is_recorded_and_shown_as_last_visited(phone, server):
    page = phone.page
    name = next(n for n, point, *_ in ENTITIES if point == "a2_plain")
    page.get_by_text("监管对象与巡查", exact=False).wait_for()
    page.get_by_role("textbox", name="查找监管对象").fill("印染")
    page.get_by_role("textbox", name="查找监管对象").press("Enter")
    phone.idle()
    # The list's cards are drawn by static/gridmap/rows.js once the run's data is there.
    card = page.locator(".gm-row", has_text=name)
    card.get_by_role("button", name="巡查 / 查看").tap()
    phone.idle()
    page.get_by_text(f"巡查：{name}").wait_for()
    page.get_by_role("button", name="获取手机定位").tap()
    page.get_by_text("已定位", exact=False).wait_for()
    phone.idle()
    groups = page.locator("[data-testid=stButtonGroup]")
    assert groups.count() >= 4  # the industry's items and the common ones
    for i in range(groups.count()):
        groups.nth(i).get_by_role("radio", name="正常").tap()
        phone.idle()
        assert groups.nth(i).get_by_role("radio", name="正常").get_attribute(
            "aria-checked") == "true"
    phone.shot("05_visit_form")
    phone.tap("保存巡查记录")
    page.get_by_text("巡查已记录", exact=False).wait_for()
    page.get_by_text(re.compile(r"距企业 \d+ 米")).first.wait_for()
    page.get_by_role("textbox", name="查找监管对象").fill("印染")
    page.get_by_role("textbox", name="查找监管对象").press("Enter")
    phone.idle()
    card.get_by_text("最近巡查：今天").wait_for()
    phone.shot("06_last_visited")
    svc = Gridmap(str(server.store))
    try:
        worker = Actor("t-worker", "grid_worker", "网格员3", worker_id="W003")
        ents = svc._router().snapshot["entities"]
        eid = str(ents[ents["name"] == name]["id"].iat[0])
        visits = svc.entity_visits(worker, eid)
    finally:
        svc.close()
    assert len(visits) == 1 and visits.iloc[0]["result"] == "ok"
    assert visits.iloc[0]["distance_m"] < 60 and visits.iloc[0]["actor"] == "t-worker"
    phone.check_clean()


def test_a_phone_whose_session_ended_while_away_goes_back_to_the_login_form(browser, tmp_path):
    """A phone asleep past the idle limit: its connection drops (here: the server restarts),
    and when it reconnects the session is over. The page takes the worker to the login form,
    which brings them back to the page they were on — not Streamlit's English "Connection
    failed with status 401" box with no way out."""
    from datetime import UTC, datetime, timedelta

    from grids.accounts import SESSION_IDLE, _iso, token_hash
    from layers.store import open_store

    store = build_map_world(tmp_path / "world")
    first = AppServer(store)
    with first:
        phone = Phone(browser, first)
        try:
            page = phone.page
            page.get_by_text("我的任务（按时限）").wait_for()
            phone.idle()
            assert "/网格员" in page.url or "%E7%BD%91" in page.url, page.url
            token = next(c["value"] for c in phone.context.cookies()
                         if c["name"] == "gridmap_session")
            away = datetime.now(UTC) - SESSION_IDLE - timedelta(minutes=5)
            open_store(str(store)).touch_session(token_hash(token), _iso(away))
        except BaseException:
            phone.context.close()
            raise
    again = AppServer(store)
    again.port, again.url = first.port, first.url  # the same address, as after a restart
    try:
        with again:
            page.wait_for_url(re.compile(r"/login\?next="), timeout=60_000)
            assert "请使用本人账号登录" in page.locator("body").inner_text()
            phone.shot("session_ended_login")
            phone.sign_in("grid_worker")
            page.get_by_text("我的任务（按时限）").wait_for()
            assert "Connection" not in page.locator("body").inner_text()
    finally:
        phone.context.close()

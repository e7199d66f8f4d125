"""The city map at a dispatcher's desk (1400×900) in Debian's Chromium, headless, against
`gridmap serve` on the map world: a click routes wherever it lands — on an entity cluster (the
point under the mouse), on an entity or incident marker (the marker's position) or on a popup's
"在此处查询归属"; an incident's popup links to its case, and the link opens the case page with
that case selected (in the same session: the component's iframe may not navigate the page
itself); the legend explains the incident colours and starts folded, the scale is metric only,
the layer control is closed, and no time is shown in UTC. Screenshots go to
test-artifacts/map_clicks/."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from grids.routing import Router
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab, build_map_world, page_point

SHOTS = ARTIFACTS / "map_clicks"
UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z\b")
POINT = re.compile(r"位置（CGCS2000/WGS84）(\d+\.\d{6}), (\d+\.\d{6})")
A2_OPEN = (120.665, 32.06)  # no marker there: grid 320901002001001


@pytest.fixture(scope="module")
def world_path(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("mapclicks"))


@pytest.fixture(scope="module")
def server(world_path):
    with AppServer(world_path) as s:
        yield s


@pytest.fixture(scope="module")
def router(world_path):
    return Router(open_store(str(world_path)))


class Desk(Tab):
    """A dispatcher at a 1400×900 screen."""

    def __init__(self, browser, server) -> None:
        super().__init__(browser, server, SHOTS, height=900)
        self.page.set_viewport_size({"width": 1400, "height": 900})

    def card_at(self, lon: float, lat: float, timeout: int = 15_000) -> str:
        """The routing card once it shows the point (lon, lat) (to 6 decimals)."""
        card = self.page.locator(".gm-route-card")
        card.get_by_text(f"{lon:.6f}, {lat:.6f}", exact=False).wait_for(timeout=timeout)
        return card.inner_text()

    def card_point(self, other_than: tuple[float, float] | None = None,
                   timeout_s: float = 15) -> tuple[float, float]:
        """The point the routing card shows (once it is not `other_than`)."""
        card = self.page.locator(".gm-route-card")
        point = None
        for _ in range(int(timeout_s * 10)):
            if card.count():
                found = POINT.search(card.first.inner_text())
                point = (float(found[1]), float(found[2])) if found else None
                if point is not None and point != other_than:
                    return point
            self.page.wait_for_timeout(100)
        raise AssertionError(f"the card still shows {point}")


@pytest.fixture
def desk(browser, server):
    d = Desk(browser, server)
    yield d
    d.context.close()


def icon_centre(element, frame, js_layer: str) -> tuple[float, float]:
    """Where the icon of a marker (a JS expression for the layer) is on the page."""
    box = frame.evaluate(f"""() => {{ const r = ({js_layer})._icon.getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2]; }}""")
    frame_box = element.bounding_box()
    return frame_box["x"] + box[0], frame_box["y"] + box[1]


NEAREST_ENTITY = """([lat, lon]) => window.gridmap.groups.entities.getLayers().reduce((best, m) => {
    const d = m.getLatLng().distanceTo([lat, lon]);
    return !best || d < best.d ? {m: m, d: d} : best; }, null).m"""


def test_clicks_on_clusters_markers_and_popups_route(desk, router):
    element, frame = desk.open()
    page = desk.page
    assert frame.evaluate("() => window.map.getSize().x") < 900  # a desk-sized map
    # The controls: layer control closed, legend folded (it would cover the clicks), metric
    # scale only.
    control = frame.locator(".leaflet-control-layers")
    assert "leaflet-control-layers-expanded" not in control.get_attribute("class")
    scale = frame.locator(".leaflet-control-scale-line")
    assert scale.count() == 1 and re.fullmatch(r"\d+ k?m", scale.inner_text().strip())
    legend = frame.locator(".gm-legend")
    assert "gm-legend-closed" in legend.get_attribute("class")
    assert not frame.locator(".gm-legend-body").is_visible()
    frame.locator(".gm-legend-title").click()
    body = frame.locator(".gm-legend-body")
    assert body.is_visible()
    shown = body.inner_text()
    for label in ("未结事件：已受理", "未结事件：已派遣", "未结事件：处理中", "已超过本环节时限",
                  "监管对象聚合", "监管对象：重点管理", "化工园区", "单击地图任意处"):
        assert label in shown, label
    desk.shot("01_legend_open")
    frame.locator(".gm-legend-title").click()
    assert not body.is_visible()
    control.hover()  # the closed control opens under the mouse
    frame.locator(".leaflet-control-layers-expanded").wait_for(timeout=5_000)
    assert "监管对象" in control.inner_text() and "未结事件" in control.inner_text()
    page.mouse.move(5, 5)

    # 1. An entity marker on its own: its position is routed, and its popup opens.
    lon, lat = world.P["dedicated"]  # 某化工厂, in a dedicated grid
    marker = f"({NEAREST_ENTITY})([{lat}, {lon}])"
    assert frame.evaluate(f"() => window.gridmap.groups.entities.getVisibleParent("
                          f"{marker}) === {marker}")  # not in a cluster at city zoom
    page.mouse.click(*icon_centre(element, frame, marker))
    text = desk.card_at(lon, lat)
    expected = router.route(lon, lat)
    assert expected["grid"]["code"] in text and expected["township"]["name"] in text
    popup = frame.locator(".leaflet-popup-content")
    popup.get_by_text("信用代码").wait_for(timeout=15_000)
    assert "某化工厂" in popup.inner_text()
    assert popup.locator("button.gm-route-here").inner_text() == "在此处查询归属"
    desk.shot("02_entity_marker_routed")

    # 2. A cluster: the point under the mouse is routed (not the cluster's centre), and it
    # still zooms in.
    before = desk.card_point()
    frame.evaluate("() => window.map.closePopup()")
    # The popup fades out: until it is gone it is what a click there would hit.
    frame.locator(".leaflet-popup").wait_for(state="detached", timeout=5_000)
    page.wait_for_timeout(300)
    zoom = frame.evaluate("() => window.map.getZoom()")
    # A cluster whose icon is on top where it is drawn (not under the legend or a control,
    # not half outside the map).
    cluster = frame.evaluate("""() => { let found = null; window.map.eachLayer(l => {
        if (found || !l.getChildCount || !l._icon) { return; }
        const r = l._icon.getBoundingClientRect();
        const hit = document.elementFromPoint(r.left + r.width / 2 + 7, r.top + r.height / 2 - 5);
        if (hit && hit.closest('.marker-cluster') === l._icon) { found = l; } });
        window._cluster = found; const c = found.getLatLng(); return [c.lng, c.lat]; }""")
    x, y = icon_centre(element, frame, "window._cluster")
    x, y = x + 7, y - 5  # on the icon, off its centre
    box = element.bounding_box()
    aim = frame.evaluate("""([x, y]) => {
        const r = window.map.getContainer().getBoundingClientRect();
        const p = window.map.containerPointToLatLng([x - r.left, y - r.top]);
        return [p.lng, p.lat]; }""", [x - box["x"], y - box["y"]])
    assert frame.evaluate("([x, y]) => !!document.elementFromPoint(x, y).closest("
                          "'.marker-cluster')", [x - box["x"], y - box["y"]])
    page.mouse.click(x, y)
    got = desk.card_point(other_than=before)
    assert got == pytest.approx(aim, abs=2e-4)
    assert abs(got[0] - cluster[0]) + abs(got[1] - cluster[1]) > 1e-3  # not the centre
    expected = router.route(*got)
    text = page.locator(".gm-route-card").inner_text()
    assert expected["township"]["name"] in text and expected["grid"]["code"] in text
    page.wait_for_timeout(800)
    assert frame.evaluate("() => window.map.getZoom()") > zoom
    desk.shot("03_cluster_routed")

    # 3. A popup's "在此处查询归属": after a click elsewhere, an incident's popup opened without
    # a click routes its position by the button.
    frame.evaluate("() => window.map.setView([32.08, 120.68], 12, {animate: false})")
    page.mouse.click(*page_point(element, frame, *A2_OPEN))
    assert desk.card_point(other_than=got) == pytest.approx(A2_OPEN, abs=1e-3)
    lon, lat = world.P["a2_plain"]  # incident T0001
    frame.evaluate("""() => window.gridmap.groups.incidents.getLayers().find(
        m => m.getPopup().getContent().includes('T0001')).openPopup()""")
    button = frame.locator(".leaflet-popup-content button.gm-route-here")
    button.click()
    text = desk.card_at(lon, lat)
    assert "320901002001001" in text
    assert frame.evaluate("() => window.gridmapStats.routedFromPopup") == 1
    desk.shot("04_popup_route_here")
    desk.check_clean()


def test_incident_popup_links_to_its_case(desk):
    element, frame = desk.open()
    page = desk.page
    lon, lat = world.P["b1"]  # incident T0002 (an entity sits there too: the incident is on top)
    incident = ("window.gridmap.groups.incidents.getLayers().find("
                "m => m.getPopup().getContent().includes('T0002'))")
    page.mouse.click(*icon_centre(element, frame, incident))
    desk.card_at(lon, lat)  # the click routed the incident's position
    popup = frame.locator(".leaflet-popup-content")
    popup.get_by_text("事件 T0002").wait_for(timeout=10_000)
    text = popup.inner_text()
    assert "上报时间" in text and "2026-11-01 08:00（北京时间）" in text and "本环节时限" in text
    link = popup.locator("a.gm-case-link")
    assert link.inner_text() == "打开案件 T0002"
    href = urlparse(link.get_attribute("href"))
    assert unquote(href.path) == "/案件" and parse_qs(href.query) == {"case": ["T0002"]}
    assert href.netloc == urlparse(desk.server.url).netloc
    # Hover the other incident: its tooltip, like every time on the map, in Beijing time.
    page.mouse.move(*icon_centre(element, frame, incident.replace("T0002", "T0001")))
    tip = frame.locator(".leaflet-tooltip", has_text="大气污染")
    tip.wait_for(timeout=10_000)
    assert "2026-11-01 08:00" in tip.inner_text()
    seen = frame.locator("body").inner_text() + page.locator("body").inner_text()
    assert not UTC_TIME.search(seen), UTC_TIME.search(seen)
    assert "北京时间" in page.locator("[data-testid=stSidebar]").inner_text()
    desk.shot("05_incident_popup")

    link.click()
    page.wait_for_url(lambda url: unquote(urlparse(url).path) == "/案件"
                      and parse_qs(urlparse(url).query).get("case") == ["T0002"],
                      timeout=30_000)
    page.get_by_text("案件 T0002", exact=False).first.wait_for(timeout=30_000)
    assert page.url.startswith(desk.server.url)
    desk.shot("06_case_page")
    desk.check_clean()

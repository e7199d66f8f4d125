"""The web map in a real browser: Debian's Chromium, headless, driven by Playwright, against
`streamlit run app.py` on the map world. Every network request is recorded: none may leave the
host. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import time

import pytest

from tests import world
from tests.browser import (
    ARTIFACTS,
    XSS_NAME,
    AppServer,
    Tab,
    build_map_world,
    page_point,
    wait_idle,
)

SHOTS = ARTIFACTS / "browser"
# Points with no marker on them (a click on a marker opens its popup instead of routing).
A2_OPEN = (120.665, 32.06)  # grid 320901002001001, county bureau
ON_COUNTY_BORDER = (120.7, 32.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("browser"))) as s:
        yield s


class Visit(Tab):
    """A map page in a fresh browser context."""

    def __init__(self, browser, server) -> None:
        super().__init__(browser, server, SHOTS)


@pytest.fixture
def visit(browser, server):
    v = Visit(browser, server)
    yield v
    v.context.close()


def test_city_map_draws_every_layer_offline(visit):
    element, frame = visit.open()
    stats = frame.evaluate("() => window.gridmapStats")
    assert stats["drawn"]["grids"] == 10 and stats["drawn"]["counties"] == 2
    assert stats["drawn"]["entities"] == 10 and stats["drawn"]["incidents"] == 2  # open only
    # Grids are on a canvas: count its painted pixels. Outlines are SVG paths.
    painted = frame.evaluate("""() => {
        const c = document.querySelector('.leaflet-gm-fill-pane canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; }""")
    assert painted > 10_000
    assert frame.evaluate("() => document.querySelectorAll('.gm-lines-pane path').length") >= 9
    legend = frame.evaluate("() => document.querySelector('.gm-legend').textContent")
    assert "化工园区" in legend and "专属网格" in legend
    frame.hover(".leaflet-control-layers")  # closed until pointed at
    control = frame.inner_text(".leaflet-control-layers")
    assert "监管对象" in control and "执法辖区" in control
    # Leaflet's own controls in Chinese (it titles them "Zoom in", "Zoom out", "Layers").
    titles = frame.evaluate("""() => [...document.querySelectorAll(
        '.leaflet-control a.leaflet-control-zoom-in, .leaflet-control a.leaflet-control-zoom-out,'
        + ' .leaflet-control a.leaflet-control-layers-toggle, .leaflet-control-attribution a')]
        .map(a => a.title + '|' + a.textContent)""")
    assert sorted(t.split("|")[0] for t in titles) == ["图层", "放大", "缩小"], titles
    # Hovering a grid: its name, code, township and (fetched once) its workers and phones.
    x, y = page_point(element, frame, *A2_OPEN)
    visit.page.mouse.move(x, y)
    visit.page.mouse.move(x + 2, y + 1)
    tip = frame.locator(".leaflet-tooltip")
    tip.get_by_text("13800000003", exact=False).wait_for(timeout=10_000)
    assert "320901002001001" in tip.inner_text() and "甲二镇" in tip.inner_text()
    visit.shot("01_city")
    # Leaflet's default marker icon comes from the app (L.Icon.Default.imagePath is set).
    icon = frame.evaluate("""() => new Promise(done => {
        const img = L.marker(window.map.getCenter()).addTo(window.map)._icon;
        const check = () => done([img.src, img.naturalWidth]);
        img.complete ? check() : (img.onload = check, img.onerror = check); })""")
    assert icon[0].endswith("/app/static/vendor/leaflet@1.9.4/images/marker-icon.png")
    assert icon[1] > 0
    # Panning and zooming send nothing to the server: only clicks rerun the script.
    before = len(visit.sent)
    frame.evaluate("() => { window.map.panBy([120, 80]); window.map.zoomIn(); }")
    visit.page.wait_for_timeout(1200)  # streamlit-folium debounces its updates by 250 ms
    assert len(visit.sent) == before
    assert any("/app/static/vendor/leaflet@1.9.4/leaflet.js" in u for u in visit.requests)
    assert any("/app/static/cache/" in u and "grids.0.json" in u for u in visit.requests)
    visit.check_clean()


def test_click_shows_the_routing_card(visit):
    element, frame = visit.open()
    x, y = page_point(element, frame, *A2_OPEN)
    visit.page.mouse.click(x, y)
    card = visit.page.locator(".gm-route-card")
    card.wait_for(timeout=15_000)  # how fast: bench/bench_map.py (tests assert no timings)
    text = card.inner_text()
    assert "明确" in text and "320901002001001" in text
    assert "网格员3" in text and "13800000003" in text and "甲县执法局" in text
    assert visit.sent  # the click did go to the server (so the no-rerun check sees frames)
    # With ±500 m, a click by the county border is ambiguous: the card lists the candidates.
    visit.page.get_by_label("点击位置精度", exact=True).and_(visit.page.locator("input")).click()
    visit.page.get_by_role("option", name="±500 米").click()
    visit.page.get_by_text("±500 米").wait_for(timeout=15_000)  # the card was routed again
    x, y = page_point(element, frame, *ON_COUNTY_BORDER)
    visit.page.mouse.click(x, y)
    visit.page.get_by_text("候选 2").wait_for(timeout=15_000)
    assert "存在歧义" in visit.page.locator(".gm-route-card").inner_text()
    # The clicked point is marked on the map (the highlight layer), without a reload.
    assert frame.evaluate("() => document.querySelectorAll('.leaflet-overlay-pane path').length")
    assert frame.evaluate("() => window.gridmapStats.drawn.grids") == 10
    visit.shot("02_click_card")
    visit.check_clean()


def test_search_zooms_to_the_hit(visit):
    _, frame = visit.open()
    box = visit.page.get_by_placeholder("搜索", exact=False)
    box.fill("印染")
    box.press("Enter")
    visit.page.locator(".gm-hit-card").wait_for(timeout=15_000)
    assert "甲二镇印染有限公司" in visit.page.locator(".gm-hit-card").first.inner_text()
    lon, lat = world.P["a2_plain"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        zoom, centre = frame.evaluate("() => [window.map.getZoom(), window.map.getCenter()]")
        if zoom == 16:
            break
        visit.page.wait_for_timeout(100)
    assert zoom == 16
    assert abs(centre["lng"] - lon) < 1e-3 and abs(centre["lat"] - lat) < 1e-3
    # The finer zoom band replaces the city one (its files may still be being written).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and frame.evaluate("() => window.gridmapStats.level") != 2:
        visit.page.wait_for_timeout(100)
    assert frame.evaluate("() => window.gridmapStats.level") == 2
    visit.shot("03_search")
    visit.check_clean()


def test_names_render_as_text(visit):
    _, frame = visit.open()
    box = visit.page.get_by_placeholder("搜索", exact=False)
    box.fill("<img")
    box.press("Enter")
    hit = visit.page.locator(".gm-hit-card").first
    hit.wait_for(timeout=15_000)
    assert XSS_NAME in hit.inner_text() and hit.locator("img").count() == 0
    lon, lat = world.P["a2_strip"]
    # Open the entity's popup the way a click does, and the incident whose text has a script.
    frame.evaluate("""([lat, lon]) => {
        const near = (g) => g.getLayers().reduce((best, m) => {
            const d = m.getLatLng().distanceTo([lat, lon]);
            return !best || d < best.d ? {m: m, d: d} : best; }, null).m;
        const m = near(window.gridmap.groups.entities);
        window.gridmap.groups.entities.zoomToShowLayer(
            m, () => m.fire('click', {latlng: m.getLatLng()}, true));
    }""", [lat, lon])
    popup = frame.locator(".leaflet-popup-content")
    popup.get_by_text("信用代码").wait_for(timeout=15_000)
    assert XSS_NAME in popup.inner_text() and popup.locator("img").count() == 0
    visit.shot("04_xss_as_text")
    frame.evaluate("""() => {
        const inc = window.gridmap.groups.incidents.getLayers();
        const m = inc.find(l => l.getPopup().getContent().includes('&lt;script&gt;'));
        m.openPopup(); }""")
    incident = frame.locator(".leaflet-popup-content", has_text="T0001")
    assert "<script>alert(2)</script>" in incident.inner_text()
    scripts = "() => document.querySelectorAll('.leaflet-popup-content script').length"
    assert frame.evaluate(scripts) == 0
    visit.check_clean()


def test_worker_page(visit):
    # A dispatcher opens one worker's page: the phone layout, its own compact map of the
    # worker's units (not the city map's data files).
    visit.page.goto(visit.server.url + "网格员?worker=W003")
    visit.page.get_by_text("我的任务（按时限）").wait_for(timeout=30_000)
    wait_idle(visit.page)  # the heading comes first; the rest of the run after it
    text = visit.page.locator("body").inner_text()
    assert "网格员3" in text and "320901002南网格" in text and "T0001" in text
    visit.page.get_by_text("负责网格与花名册").wait_for()  # the roster's expander
    # The map is drawn in the page itself (static/gridmap/phonemap.js).
    visit.page.locator(".gm-phone-map[data-gridmap=ready]").wait_for(timeout=30_000)
    # Fitted to the worker's units: their outline is wholly in view, and not lost in it.
    fit = visit.page.evaluate("""() => { let out = null;
        const map = document.querySelector('.gm-phone-map').gridmapMap;
        map.eachLayer(l => { if (!out && l.getBounds && l.getLatLngs) {
            const v = map.getBounds(), b = l.getBounds();
            out = [v.contains(b), Math.max(
                (b.getEast() - b.getWest()) / (v.getEast() - v.getWest()),
                (b.getNorth() - b.getSouth()) / (v.getNorth() - v.getSouth()))]; }
        }); return out; }""")
    assert fit[0] and fit[1] > 0.3
    visit.shot("05_worker_page")
    visit.check_clean()

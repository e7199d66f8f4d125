"""The city map with many entities, in Debian's Chromium (headless): the city view fetches no
all-entities file, only the first band's tiles (counts per bin); zoomed in, the browser fetches
exactly the entity tiles of the view and shows every entity there, whose popup keeps a hostile
name as text; the grids of the finer bands come per tile too. Screenshots go to
test-artifacts/map_tiles/."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from layers import display
from layers.credit_code import generate
from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, XSS_NAME, AppServer, Tab, world_entities

SHOTS = ARTIFACTS / "map_tiles"
CROWD = 3_000
NEAR = (120.66, 32.07)  # in county A, where most of the crowd is (and the hostile name)


def crowd() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    lon = np.concatenate([rng.normal(NEAR[0], 0.02, CROWD - 200), rng.uniform(120.55, 121.4, 200)])
    lat = np.concatenate([rng.normal(NEAR[1], 0.015, CROWD - 200), rng.uniform(32.04, 32.45, 200)])
    rows = [{"id": generate(rng, "320600"), "name": f"人群企业{i}", "lon": x, "lat": y,
             "crs": "wgs84", "industry": "机械制造", "permit_class": "登记管理",
             "inspection_class": "一般监管对象", "address": f"地址{i}"}
            for i, (x, y) in enumerate(zip(lon, lat, strict=True))]
    rows[0].update(name=XSS_NAME + "人群", lon=NEAR[0] + 0.0003, lat=NEAR[1] + 0.0002)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("maptiles")
    files = world.write(directory / "files")
    pd.concat([world_entities(), crowd()]).to_csv(files / "entities.csv", index=False)
    path = directory / "tiles.gpkg"
    store = open_store(str(path), create=True)
    try:
        import_path(store, files)
    finally:
        store.close()
    from tests.signin import add_world_users

    add_world_users(path)
    # Its ten grids sent per tile at the finer bands, as a big layer's are.
    with AppServer(path, env={"GRIDMAP_MAP_TILED_MIN": "1"}) as s:
        yield s


@pytest.fixture
def tab(browser, server):
    t = Tab(browser, server, SHOTS)
    yield t
    t.context.close()


TILE = re.compile(r"/entities\.b(\d+)\.(\d+_\d+)\.json$")


def tiles_fetched(tab) -> list[tuple[int, str]]:
    out = []
    for url in tab.requests:
        found = TILE.search(url.split("?")[0])
        if found:
            out.append((int(found[1]), found[2]))
    return out


def wait_stats(frame, predicate: str, timeout_s: float = 20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if frame.evaluate(f"() => {{ const s = window.gridmapStats; return !!({predicate}); }}"):
            return frame.evaluate("() => window.gridmapStats")
        frame.page.wait_for_timeout(100)
    raise AssertionError(f"not {predicate}: {frame.evaluate('() => window.gridmapStats')}")


def test_city_view_fetches_bins_and_zoom_fetches_the_tiles_in_view(tab):
    total = CROWD + len(world_entities())
    _, frame = tab.open()
    stats = frame.evaluate("() => window.gridmapStats")
    # No file with every entity: only the index and the city band's tiles.
    assert not any(u.split("?")[0].endswith("/entities.json") for u in tab.requests)
    assert any(u.split("?")[0].endswith("/entities.index.json") for u in tab.requests)
    city = stats["entityBand"]
    fetched = tiles_fetched(tab)
    assert fetched and {b for b, _ in fetched} == {city}
    assert city < display.ENTITY_BANDS[-1].index
    bins = frame.evaluate("() => window.gridmap.groups.entityBins.getLayers().map(l => l.gmCount)")
    points = frame.evaluate("() => window.gridmap.groups.entities.getLayers().length")
    # The tiles of the view, counted whole: the city (a few lone ones may lie beyond it).
    assert bins and max(bins) > 50 and sum(bins) + points == stats["drawn"]["entities"]
    assert stats["drawn"]["entities"] > 0.9 * total
    assert frame.evaluate("() => document.querySelectorAll('.gm-bin').length") > 0
    tab.shot("01_city_bins")

    # Zoomed in where the crowd is: the finest band, the tiles of the view and only those.
    frame.evaluate(f"() => window.map.setView([{NEAR[1]}, {NEAR[0]}], 16, {{animate: false}})")
    last = display.ENTITY_BANDS[-1]
    stats = wait_stats(frame, f"s.entityBand === {last.index}")
    view = frame.evaluate("() => { const b = window.map.getBounds();"
                          " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; }")
    x0, y1 = display.mercator_tile(np.array([view[0]]), np.array([view[1]]), last.tile_zoom)
    x1, y0 = display.mercator_tile(np.array([view[2]]), np.array([view[3]]), last.tile_zoom)
    in_view = {f"{x}_{y}" for x in range(int(x0[0]), int(x1[0]) + 1)
               for y in range(int(y0[0]), int(y1[0]) + 1)}
    loaded = {k for b, k in tiles_fetched(tab) if b == last.index}
    assert loaded and loaded <= in_view and set(stats["entityTiles"]) == loaded
    shown = frame.evaluate("() => window.gridmap.groups.entities.getLayers().length")
    assert shown == stats["drawn"]["entities"] < total
    # The grids of the view, from their tiles of the band (the band's file only lists them).
    wait_stats(frame, "s.level === 2 && s.layerTiles >= 1 && s.drawn.grids >= 1")
    grid_tiles = [u for u in tab.requests if re.search(r"/grids\.2\.\d+_\d+\.json", u)]
    assert grid_tiles and frame.evaluate("() => window.gridmap.groups.grids.getLayers().length") \
        == frame.evaluate("() => window.gridmapStats.drawn.grids")
    assert frame.evaluate("() => window.gridmap.groups.entityBins.getLayers().length") == 0
    # Every entity in the view is among them (counted in Python from the crowd).
    people = pd.concat([world_entities(), crowd()])
    inside = ((people.lon >= view[0]) & (people.lon <= view[2]) & (people.lat >= view[1])
              & (people.lat <= view[3])).sum()
    assert shown >= inside > 20

    # The hostile name: its popup (details from its chunk) shows it as text.
    # zoomToShowLayer zooms, the move loads the view's tiles again and may replace the marker
    # it was called for: then the marker is looked up afresh and clicked once it is drawn.
    opener = """([lat, lon]) => {
        const g = window.gridmap.groups.entities;
        const m = g.getLayers().reduce((best, l) => {
            const d = l.getLatLng().distanceTo([lat, lon]);
            return !best || d < best.d ? {m: l, d: d} : best; }, null).m;
        const click = () => m.fire('click', {latlng: m.getLatLng()}, true);
        if (m._icon) { click(); } else { g.zoomToShowLayer(m, click); } }"""
    popup = frame.locator(".leaflet-popup-content")
    for attempt in range(4):
        frame.evaluate(opener, [NEAR[1] + 0.0002, NEAR[0] + 0.0003])
        try:
            popup.get_by_text("信用代码").wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            if attempt == 3:
                raise
            frame.wait_for_timeout(1_000)
    assert XSS_NAME + "人群" in popup.inner_text() and popup.locator("img").count() == 0
    tab.shot("02_zoomed_points")

    # Moving on (same zoom: the popup above may have zoomed in further) to one of the lone
    # entities far from the crowd loads its tile; zooming back out shows counts again.
    far = crowd().sort_values("lon").iloc[-1]
    fx, fy = display.mercator_tile(np.array([far.lon]), np.array([far.lat]), last.tile_zoom)
    key = f"{int(fx[0])}_{int(fy[0])}"
    assert key not in loaded
    frame.evaluate(f"() => window.map.setView([{far.lat}, {far.lon}], 16, {{animate: false}})")
    moved = wait_stats(frame, f"s.entityTiles.includes({key!r})")
    assert moved["entityBand"] == last.index and key in {k for _, k in tiles_fetched(tab)}
    frame.evaluate("() => window.map.setZoom(10, {animate: false})")
    wait_stats(frame, "s.entityBand === 2")
    assert frame.evaluate("() => window.gridmap.groups.entityBins.getLayers().length") > 0
    tab.check_clean()

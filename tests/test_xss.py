"""Text from the data can never run as script on the map (stored XSS).

folium writes tooltip HTML into a JavaScript template literal (backticks) of the map script, and
streamlit-folium `eval`s the highlight layer: HTML escaping alone lets a name with a backtick
or `${…}` run. Every text that reaches folium goes through `cards.js_html`; the map's own script
(static/gridmap/gridmap.js) reads its JSON files and escapes every text before it becomes HTML.

The world here is the hand-drawn one of tests/world.py with every name (counties, townships,
grids, parks, sea areas, jurisdictions, workers, supervised entities, incidents, batch rows)
replaced by an attack. The browser test serves the rendered folium page and the map's data
files with a loopback http.server (no Streamlit) and opens every tooltip and popup.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import pytest
from branca.element import MacroElement
from jinja2 import Template

from grids.flow import load_categories
from grids.intake import NEARBY_RADIUS_M, EntityIndex, IntakeAnswer
from grids.routing import Router
from layers import display
from layers.credit_code import generate
from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.browser import is_local
from ui import batch, cards, mapdata, mapview
from ui.assets import STATIC_DIR
from ui.basemap import NONE
from ui.intake import Desk, Located, overlay

BIG = ("${alert(7)}`</script><script>alert(8)</script>\\" * 3000)[:100_000]
HOSTILE = [
    "${alert(1)}",
    "`;alert(2);`",
    "</script><script>alert(3)</script>",
    "<img src=x onerror=alert(4)>",
    "\\u0060${alert(5)}",
    "'\"><svg onload=alert(6)>",
    BIG,  # 100 KB
]
# The same world with harmless text: what folium's own code contributes to the page.
HARMLESS = [f"安全名称{i}" for i in range(len(HOSTILE) - 1)] + ["甲" * 100_000]
# What only the attacks could have put into the page source (raw, not as character references).
RAW_ATTACK = ("${alert", "`;alert", "alert(2);`", "alert(7)}`", "</script><script>alert",
              "<img src=x", "<svg onload", "\\u0060$")
LAYERS = ("counties", "townships", "grids", "parks", "sea_areas", "jurisdictions")
AT = world.P["border_ab"]  # on the county border: an ambiguous location, several candidates
ACCURACY_M = 300.0
STORED_CHARS = 200  # what the importer takes in a name (layers.schema.MAX_NAME_CHARS)


@dataclass
class World:
    texts: list[str]
    path: Path
    store: object
    router: Router
    desk: Desk
    batch: batch.Batch
    incidents: pd.DataFrame  # open incidents, as grids.portfolio.open_incidents gives them


def build_world(directory: Path, texts: list[str]) -> World:
    """The hand-drawn world with `texts` as every name, entities near AT (so the intake desk
    shows them all), open incidents near AT named by `texts` (the desk's possible duplicates,
    and the map's incident layer), and a routed batch file whose row ids are `texts`. What is
    imported into the store is cut to the importer's limit (layers.schema.MAX_NAME_CHARS); the
    incidents and the batch file keep the whole 100 KB."""
    directory.mkdir(parents=True, exist_ok=True)
    stored = [t[:STORED_CHARS] for t in texts]
    layers = world.layers()
    for name in (*LAYERS, "workers", "bureaus"):  # bureaus: the jurisdictions' tooltips
        frame = layers[name].copy()
        frame["name"] = [stored[i % len(stored)] for i in range(len(frame))]
        layers[name] = frame
    files = world.write(directory / "files", layers)
    rng = np.random.default_rng(7)
    lon, lat = AT
    pd.DataFrame([
        {"id": generate(rng, "320600"), "name": t, "lon": lon - 0.002 + 0.0006 * i,
         "lat": lat + 0.001, "crs": "wgs84", "industry": t, "permit_class": "重点管理",
         "inspection_class": t, "address": t}
        for i, t in enumerate(stored)
    ]).to_csv(files / "entities.csv", index=False)
    path = directory / "xss.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, files)
    router = Router(store)
    incidents = pd.DataFrame([
        {"id": t, "reported_at": t, "source": t, "category_zh": t, "status": "reported",
         "status_zh": t, "description": t, "grid": t, "lon": lon + 0.0005 * i,
         "lat": lat - 0.001}
        for i, t in enumerate(texts)
    ])
    # The intake desk as ui.intake.locate makes it (grids.intake.intake's answer).
    desk = Desk(Located("text", lon, lat, "wgs84", "输入坐标"))
    route = router.route(lon, lat, "wgs84", ACCURACY_M)
    nearby = EntityIndex(router.snapshot["entities"]).near(lon, lat, NEARBY_RADIUS_M)
    desk.answer = IntakeAnswer(route, load_categories()["air"], None, nearby,
                               incidents[["id", "description"]])
    desk.extra["duplicate_points"] = {
        t: (x, y) for t, x, y in zip(incidents["id"], incidents["lon"], incidents["lat"],
                                     strict=True)}
    rows = pd.DataFrame({"编号": texts, "经度": [lon - 0.01 + 0.003 * i for i in range(len(texts))],
                         "纬度": [lat + 0.01] * len(texts)})
    routed = batch.run(router, "投诉.csv", rows.to_csv(index=False).encode(), "wgs84")
    return World(texts, path, store, router, desk, routed, incidents)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    w = build_world(tmp_path_factory.mktemp("xss"), HOSTILE)
    yield w
    w.store.close()


@pytest.fixture(scope="module")
def harmless(tmp_path_factory):
    w = build_world(tmp_path_factory.mktemp("harmless"), HARMLESS)
    yield w
    w.store.close()


def overlays(w: World) -> list[folium.FeatureGroup]:
    """Every folium layer the app builds from the data: the intake overlay, the batch overlay
    and the selection highlights (pages 1–4, app.py)."""
    answer = w.desk.answer.route
    grids = [c["grid"]["code"] for c in answer["candidates"] if c.get("grid")]
    geoms = w.router.snapshot["grids"].geometry.values[:3]
    out = [overlay(w.router, NONE, w.desk), batch.overlay(w.batch, NONE)[0]]
    assert grids and len(w.desk.answer.nearby) == len(w.texts)
    assert len(w.desk.answer.duplicates) == len(w.texts)
    out += [mapview.highlight_group(NONE, geoms, [AT], name=t) for t in w.texts]
    # The grid worker's own-units map (pages/1_网格员.py for roles without the city map).
    entities = pd.DataFrame({"name": w.texts, "industry": w.texts,
                             "lon": w.incidents["lon"], "lat": w.incidents["lat"] + 0.002})
    out += mapview.units_groups(NONE, w.router.snapshot["grids"].iloc[:2], entities,
                                w.incidents)
    return out


def rendered(w: World) -> str:
    m = folium.Map(location=[AT[1], AT[0]], zoom_start=13, tiles=None)
    for group in overlays(w):
        group.add_to(m)
    return m.get_root().render()


# -- 1. what the page source holds ----------------------------------------------------------------
def test_js_html_is_html_that_survives_a_template_literal():
    for text in [*HOSTILE, "a\nb\r\u2028\u2029c", "${", "`", "\\", "$"]:
        out = cards.js_html(text)
        assert html.unescape(out) == text  # the browser shows exactly the text
        assert not set(out) & set("`$\\<>\"'\n\r\u2028\u2029"), out[:80]
    assert cards.js_html(None) == ""
    assert cards.js_html("甲二镇 & 网格") == "甲二镇 &amp; 网格"


def test_hostile_names_stay_out_of_the_map_script(hostile, harmless):
    page, base = rendered(hostile), rendered(harmless)
    # Every `${`, backtick and `</script` in the page is folium's own code: the harmless world
    # has exactly as many.
    for token in ("${", "`", "</script"):
        assert page.lower().count(token.lower()) == base.lower().count(token.lower()), token
    for raw in RAW_ATTACK:
        assert raw not in page, raw
    # The text is there, as HTML character references.
    for text in HOSTILE:
        assert cards.js_html(f"附近监管对象：{text[:STORED_CHARS]}") in page
        assert cards.js_html(f"可能重复：{text}") in page
        assert cards.js_html(f"{text}（{text}）") in page  # the own-units map's entities
        assert cards.js_html(f"{text} {text}：{text[:60]}") in page  # …and incidents
    for i, cand in enumerate(hostile.desk.answer.route["candidates"], start=1):
        assert cards.js_html(f"候选 {i}：{cand['grid']['name']}") in page
    # The cards (st.html, never folium) stay HTML-escaped.
    route = hostile.desk.answer.route
    for card in (cards.route_card(route), cards.error_card(BIG)):
        for raw in ("<img", "<svg", "<script", "</script"):
            assert raw not in card.lower()
    names = {c["grid"]["name"] for c in route["candidates"] if c.get("grid")}
    assert all(cards.esc(n) in cards.route_card(route) for n in names)


def test_data_files_cannot_close_a_script():
    data = {"n": HOSTILE, "m": ["甲\u2028乙\u2029"]}
    body = display.compact_json(data)
    assert json.loads(body) == data
    assert b"<" not in body and b">" not in body and b"&" not in body
    assert "\u2028".encode() not in body and "甲".encode() in body


# -- 2. a real browser ----------------------------------------------------------------------------
class ExposeMap(MacroElement):
    """`window.map`, as streamlit-folium sets it (batch.TopPane and the tests use it)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        window.map = {{ this._parent.get_name() }};
        {% endmacro %}
    """)


def site_for(w: World, root: Path) -> tuple[Path, str]:
    """A folder laid out like the app's URLs: the map page where the streamlit-folium iframe
    is (component/streamlit_folium.st_folium/index.html, so `../../app/static/` works), the
    vendored and own files, and the map data files (ui/mapdata.py) written into it. Returns
    the page's path and streamlit-folium's script of the highlight layers, which the page
    `eval`s as the component does."""
    static = root / "app" / "static"
    static.mkdir(parents=True)
    for name in ("vendor", "gridmap"):
        (static / name).symlink_to(STATIC_DIR / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mapdata, "CACHE_DIR", static / "cache")
        data = mapdata.publish(str(w.path), w.router, NONE, w.incidents, background=False)
    assert data.incidents_file
    m = mapview.build_map(data, NONE, display.city_bounds(w.router.snapshot), case_page="案件")
    ExposeMap().add_to(m)
    for group in overlays(w):  # in the page's own script…
        group.add_to(m)
    from streamlit_folium import _get_feature_group_string

    other = folium.Map()  # …and as st_folium(feature_group_to_add=…) sends them
    script = "".join(_get_feature_group_string(g, other, i) for i, g in enumerate(overlays(w)))
    page = root / "component" / "streamlit_folium.st_folium" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(m.get_root().render(), encoding="utf-8")
    return page, script


@contextlib.contextmanager
def serve(root: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# Opens every tooltip and popup of every layer (a group's shared one once per member) and
# returns what each shows: {layer, kind, text, tags (elements the text must not have made)}.
OPEN_ALL = """async (center) => {
    const map = window.map, groups = window.gridmap.groups;
    const sleep = ms => new Promise(done => setTimeout(done, ms));
    const loading = /加载中/;
    const out = [];
    const nameOf = owner => {  // a gridmap group, or the group of an incident marker
        const found = Object.entries(groups).find(([, g]) => g === owner || g.hasLayer(owner));
        return found ? found[0] : "folium";
    };
    async function open(owner, member, kind) {
        const o = kind === "tooltip" ? owner.getTooltip() : owner.getPopup();
        if (owner.getLayers) { o._source = member; }  // a group's one tooltip, for this member
        // a marker's place, or the middle of a shape (a tile's group of shapes has bounds)
        const at = member.getLatLng ? member.getLatLng()
            : (member.getBounds && member.getBounds().isValid() ? member.getBounds().getCenter()
               : null);
        if (!at) { return; }
        kind === "tooltip" ? owner.openTooltip(at) : owner.openPopup(at);
        let text = "", el = null;
        for (let i = 0; i < 200; i++) {  // content fetched on demand (workers, details)
            el = o.getElement();
            text = el ? el.textContent : "";
            if (el && !loading.test(text)) { break; }
            await sleep(25);
        }
        out.push({layer: nameOf(owner), kind: kind, text: text,
                  tags: el ? el.querySelectorAll("img,svg,script,iframe,object").length : -1});
        kind === "tooltip" ? owner.closeTooltip() : owner.closePopup();
    }
    async function openAll(owners) {
        for (const owner of owners) {
            const members = owner.getLayers ? owner.getLayers().filter(l => l._map) : [owner];
            for (const member of members) {
                if (owner.getTooltip && owner.getTooltip()) {
                    await open(owner, member, "tooltip");
                }
                if (owner.getPopup && owner.getPopup()) { await open(owner, member, "popup"); }
            }
        }
    }
    Object.values(groups).forEach(g => { if (!map.hasLayer(g)) { g.addTo(map); } });
    await sleep(100);
    const owners = new Set();
    map.eachLayer(l => { if (l !== groups.entities) { owners.add(l); } });
    await openAll(owners);
    // The entities: at zoom 18 the tiles of the view give every marker on its own (at the
    // city zoom there are only counts per square, ui/mapdata.py).
    map.setView(center, 18, {animate: false});
    for (let i = 0; i < 400 && !groups.entities.getLayers().length; i++) { await sleep(25); }
    await sleep(500);
    await openAll([groups.entities]);
    const icons = Array.from(document.querySelectorAll(".leaflet-marker-icon"));
    out.push({layer: "icons", kind: "html", text: icons.map(i => i.textContent).join("|"),
              tags: icons.reduce((n, i) => n + i.querySelectorAll("img,svg,script").length, 0)});
    return out;
}"""


def test_hostile_names_are_text_in_a_real_browser(hostile, browser, tmp_path):
    page_path, script = site_for(hostile, tmp_path / "site")
    with serve(tmp_path / "site") as port:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = context.new_page()
        dialogs: list[str] = []
        errors: list[str] = []
        requests: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        try:
            url = f"http://127.0.0.1:{port}/" + page_path.relative_to(tmp_path / "site").as_posix()
            page.goto(url)
            state = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not dialogs and not errors:
                state = page.evaluate("() => { const c = document.querySelector("
                                      "'.leaflet-container'); return c && c.dataset.gridmap; }")
                if state in ("ready", "error"):
                    break
                page.wait_for_timeout(50)
            assert not dialogs, f"a script ran from the data: {dialogs}"
            assert not errors, errors
            assert state == "ready", page.evaluate("() => window.gridmapStats")
            # The highlight layers as streamlit-folium adds them: by `eval`.
            page.evaluate("code => { window.map_div = window.map; (0, eval)(code); }", script)
            ents = hostile.router.snapshot["entities"].geometry
            x0, y0, x1, y1 = ents.total_bounds
            shown = page.evaluate(OPEN_ALL, [(y0 + y1) / 2, (x0 + x1) / 2])
            page.wait_for_timeout(300)
            assert not dialogs, f"a script ran from the data: {dialogs}"
            assert not errors, errors
        finally:
            context.close()
    outside = [u for u in requests if not is_local(u, port)]
    assert not outside, outside
    assert all(s["tags"] == 0 for s in shown), [s for s in shown if s["tags"]]
    by_layer: dict[str, list[str]] = {}
    for s in shown:
        by_layer.setdefault(s["layer"], []).append(s["text"])
    folium_text = by_layer["folium"]

    def seen(texts: list[str], wanted: str, times: int = 1) -> bool:
        return sum(wanted in t for t in texts) >= times

    for text in HOSTILE:
        short = text[:40]
        # The folium layers, once in the page script and once eval'd: the intake overlay…
        assert seen(folium_text, f"附近监管对象：{text[:STORED_CHARS]}（", 2), short
        assert seen(folium_text, f"可能重复：{text}", 2), short
        # …and the batch rows (GeoJsonTooltip)…
        assert seen(folium_text, f"{text}｜", 2), short
        # …and a grid worker's own-units map: entities and incidents.
        assert seen(folium_text, f"{text}（{text}）", 2), short
        assert seen(folium_text, f"{text} {text}：{text[:60]}", 2), short
        # gridmap.js: grid names and their workers, every polygon layer, entities, incidents.
        assert seen(by_layer["grids"], text[:STORED_CHARS]), short
        assert seen(by_layer["entities"], text[:STORED_CHARS]), short
        assert seen(by_layer["incidents"], text), short
        assert seen(by_layer["incidents"], f"打开案件 {text}"), short  # the link to its case
    for i, cand in enumerate(hostile.desk.answer.route["candidates"], start=1):
        assert seen(folium_text, f"候选 {i}：{cand['grid']['name']}", 2)
    snap = hostile.router.snapshot
    for layer in LAYERS:  # every feature's name, as the layer file has it
        data = display.encode_layer(snap, layer, 0)
        codes = data["dicts"].get("n")
        for n in data["props"]["n"]:
            name = codes[n] if codes else n
            assert seen(by_layer[layer], name), (layer, name[:40])
    grid_text = "".join(by_layer["grids"])
    assert all(name in grid_text for name in snap["workers"]["name"].astype(str))
    assert any("信用代码" in t for t in by_layer["entities"])  # a popup with every detail

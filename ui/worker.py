"""The grid worker's phone page (pages/1_网格员.py): what it draws and the links it offers.

Phones are the grid workers' computers: the page is laid out for 390 px first — one column,
touch targets of at least 44 px, text of at least 14 px —, the map is compact and fitted to the
worker's units, one finger scrolls the page and two move the map (leaflet-gesture-handling,
vendored), and a tap on a marker opens what a hover shows on a desktop. The map is drawn in the
page itself by a small components-v2 module (static/gridmap/phonemap.js) from JSON, not in
streamlit-folium's iframe: on a phone's slow CPU that iframe (its own page, a React app and
folium's marker script) took about a second of each visit.

Navigation buttons are links the worker taps (the phone's Amap or Baidu Maps app, or any map
app through `geo:`), converted to the coordinate system each app expects; the page itself makes
no request to them.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import numpy as np
import pandas as pd
import shapely
import streamlit as st

from geo.china_offsets import wgs84_to_bd09, wgs84_to_gcj02
from grids.deadlines import LEVEL_COLOR
from ui import assets, cards, mapview
from ui.basemap import MAX_ZOOM, Basemap

MAP_HEIGHT = 330  # px: well under half of an 844 px phone screen
PHONE_CSS = """<style>
/* Touch targets of at least 44 px and text of at least 14 px on the worker's page. */
div[data-testid="stButton"] button, div[data-testid="stDownloadButton"] button,
div[data-testid="stLinkButton"] a { min-height: 44px; font-size: 15px; }
[data-testid="stButtonGroup"] button { min-height: 44px; min-width: 64px; }
[data-testid="stExpander"] summary { min-height: 44px; }
[data-testid="stTextInputRootElement"], [data-testid="stSelectbox"] [data-baseweb="select"] > div,
[data-testid="stTextArea"] [data-baseweb="textarea"] { min-height: 44px; }
[data-testid="stFileChipDeleteBtn"] button, [data-testid="stFileUploader"] button,
[data-testid="stExpandSidebarButton"], [data-testid="stSidebarCollapseButton"] button {
  min-width: 44px; min-height: 44px; }
.leaflet-touch .leaflet-bar a { width: 44px; height: 44px; line-height: 44px; }
.gm-nav { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 4px 0 8px 0; }
.gm-nav a { display: flex; align-items: center; justify-content: center; min-height: 44px;
  border: 1px solid #c8d1dc; border-radius: 8px; text-decoration: none; color: #0b5394;
  font-size: 15px; background: #f6f8fa; }
.gm-task { font-size: 15px; line-height: 1.45; }
.gm-chip { display: inline-block; padding: 1px 8px; border-radius: 4px; color: #fff;
  font-weight: 600; font-size: 14px; }
.gm-chip.amber { color: #000; }
.gm-who { font-size: 15px; }
.gm-records { font-size: 14px; }
.gm-record { border-bottom: 1px solid #e6e9ef; padding: 6px 0; }
.gm-record dl { display: grid; grid-template-columns: 6.5em 1fr; gap: 2px 8px; margin: 0;
  padding: 0; }
.gm-record dt { color: #5f6368; margin: 0; padding: 0; }
.gm-record dd { margin: 0; padding: 0; overflow-wrap: anywhere; }
</style>"""


GESTURE_TEXT = {"touch": "请用两根手指移动地图", "scroll": "按住 Ctrl 并滚动鼠标滚轮缩放地图",
                "scrollMac": "按住 ⌘ 并滚动以缩放地图"}
# Leaflet and leaflet-gesture-handling (static/vendor), as the page's own URLs (the map is drawn
# in the page, not in an iframe: relative to the page, under any baseUrlPath).
MAP_ASSETS = ("leaflet_css", "gesture_handling_css", "leaflet", "gesture_handling_js")
ENTITY_STYLE = {"radius": 7, "color": "#ffffff", "weight": 2, "fillOpacity": 1, "popupWidth": 240}
CASE_STYLE = {"radius": 10, "color": "#000000", "weight": 2, "fillOpacity": 1, "popupWidth": 260}
_PHONE_MAP = st.components.v2.component(
    "gridmap_phone_map", isolate_styles=False,
    js=(assets.STATIC_DIR / "gridmap" / "phonemap.js").read_text(encoding="utf-8"))


def phone_map_data(basemap: Basemap, grids, entities: pd.DataFrame, tasks: pd.DataFrame,
                   visited: dict[str, str] | None = None) -> dict:
    """What static/gridmap/phonemap.js draws: the worker's units outlined, their entities
    (blue: visited in the period, grey: not), their cases coloured by time left; fitted to the
    units. Positions in the basemap's display coordinates; texts are plain text (the script
    sets them as text, a tap shows what a hover shows)."""
    missing = [n for n in MAP_ASSETS if not (assets.VENDOR_DIR / assets.VENDORED[n]).is_file()]
    if missing:
        raise assets.OfflineAssetError(
            "地图前端文件缺失（static/vendor/）：" + "、".join(assets.VENDORED[n] for n in missing)
            + "。请运行 static/vendor/refresh.sh 恢复，见 static/vendor/ASSETS.md。")
    minx, miny, maxx, maxy = shapely_bounds(grids)
    visited = visited or {}

    def point(lon, lat) -> list[float]:
        x, y = basemap.to_display([float(lon)], [float(lat)])
        return [round(float(np.ravel(y)[0]), 6), round(float(np.ravel(x)[0]), 6)]

    units = []
    for geom in grids.geometry.values if len(grids) else ():
        if geom is None or geom.is_empty:
            continue
        if basemap.shifted:
            geom = shapely.transform(geom, lambda xy: np.column_stack(
                basemap.to_display(xy[:, 0], xy[:, 1])))
        units.append({"type": "Feature", "properties": {}, "geometry": json.loads(
            shapely.to_geojson(shapely.set_precision(geom, 1e-6)))})
    ents = []
    for row in entities.itertuples(index=False):
        last = visited.get(str(row.id))
        text = f"{row.name}（{row.industry}）" + (f"\n最近巡查 {last}" if last else "\n尚未巡查")
        ents.append([*point(row.lon, row.lat), bool(last), text])
    cases = [[*point(row.lon, row.lat), LEVEL_COLOR.get(row.level, "#9e9e9e"),
              f"{row.id} {row.category_zh} · {row.countdown}\n{str(row.description)[:60]}"]
             for row in tasks.itertuples(index=False)]
    return {
        "height": MAP_HEIGHT, "minZoom": mapview.MIN_ZOOM, "maxZoom": MAX_ZOOM,
        "assets": ["app/static/vendor/" + assets.VENDORED[n] for n in MAP_ASSETS],
        "tiles": [{"url": t.url, "attr": t.attr, "subdomains": t.subdomains,
                   "maxNativeZoom": t.max_native_zoom} for t in basemap.tiles],
        "bounds": [point(minx, miny), point(maxx, maxy)],
        "units": {"type": "FeatureCollection", "features": units},
        "unitStyle": {k: v for k, v in mapview.HIGHLIGHT.items() if k != "interactive"},
        "entities": ents, "entityStyle": ENTITY_STYLE,
        "visitedFill": "#1565c0", "unvisitedFill": "#90a4ae",
        "cases": cases, "caseStyle": CASE_STYLE,
        "labels": {"entities": "监管对象", "cases": "我的案件"}, "gestureText": GESTURE_TEXT,
    }


def phone_map(key: str, basemap: Basemap, grids, entities: pd.DataFrame, tasks: pd.DataFrame,
              visited: dict[str, str] | None = None) -> None:
    """The worker's compact map (see phone_map_data), drawn in the page by phonemap.js."""
    _PHONE_MAP(key=key, data=phone_map_data(basemap, grids, entities, tasks, visited))


def shapely_bounds(grids) -> tuple[float, float, float, float]:
    if not len(grids):
        return (120.5, 31.6, 121.9, 32.7)
    b = shapely.total_bounds(np.asarray(grids.geometry.values, dtype=object))
    return tuple(float(v) for v in b)


# -- links the worker taps -------------------------------------------------------------------------
def nav_targets(lon: float, lat: float, name: str) -> list[tuple[str, str]]:
    """(label, link) of the phone's map apps at the place: Amap (GCJ-02), Baidu (BD-09) and any
    map app (`geo:`, WGS84). `lon`/`lat` are CGCS2000 (= WGS84 to centimetres)."""
    gx, gy = (float(np.ravel(v)[0]) for v in wgs84_to_gcj02(lon, lat))
    bx, by = (float(np.ravel(v)[0]) for v in wgs84_to_bd09(lon, lat))
    label = quote(str(name)[:40])
    return [
        ("高德地图（安卓）", f"amapuri://route/plan/?dlat={gy:.6f}&dlon={gx:.6f}&dname={label}"
                           "&dev=0&t=0&sourceApplication=gridmap"),
        ("高德地图（苹果）", f"iosamap://path?sourceApplication=gridmap&dlat={gy:.6f}"
                           f"&dlon={gx:.6f}&dname={label}&dev=0&t=0"),
        ("百度地图", f"baidumap://map/direction?destination=latlng:{by:.6f},{bx:.6f}"
                    f"|name:{label}&coord_type=bd09ll&mode=driving&src=gridmap"),
        ("其他地图（geo）", f"geo:{lat:.6f},{lon:.6f}?q={lat:.6f},{lon:.6f}({label})"),
    ]


# st.html and st.markdown drop links whose scheme is not http(s)/mailto/tel (DOMPurify): the
# app links (amapuri:, baidumap:, geo:) are drawn by a small component of ours, from data set
# as attributes and text (never as HTML).
_LINKS_JS = """
export default function(component) {
  const { parentElement, data } = component;
  let box = parentElement.querySelector('.gm-nav');
  if (!box) { box = document.createElement('div'); box.className = 'gm-nav';
              parentElement.appendChild(box); }
  box.replaceChildren();
  for (const item of (data && data.links) || []) {
    if (!/^(amapuri|iosamap|baidumap|geo|tel):/.test(item.href)) { continue; }
    const a = document.createElement('a');
    a.setAttribute('href', item.href);
    a.textContent = item.label;
    box.appendChild(a);
  }
}
"""
_LINKS_CSS = """
.gm-nav { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 4px 0 8px 0; }
.gm-nav a { display: flex; align-items: center; justify-content: center; min-height: 44px;
  border: 1px solid #c8d1dc; border-radius: 8px; text-decoration: none; color: #0b5394;
  font-size: 15px; background: #f6f8fa; font-family: sans-serif; }
"""
_LINKS = st.components.v2.component("gridmap_app_links", js=_LINKS_JS, css=_LINKS_CSS)


def app_links(key: str, links: list[tuple[str, str]]) -> None:
    _LINKS(key=key, data={"links": [{"label": t, "href": h} for t, h in links]})


def nav_links(key: str, lon: float, lat: float, name: str) -> None:
    app_links(key, nav_targets(lon, lat, name))


_PHONE = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?!\d)")


def phone_in(text: object) -> str | None:
    """A mobile or landline number in a reporter's text ("王先生 13912345678")."""
    found = _PHONE.search(str(text or ""))
    return found.group(1) if found else None


def tel_link(key: str, number: str, label: str) -> None:
    digits = re.sub(r"[^\d+]", "", number)
    app_links(key, [(f"拨打电话：{label} {number}", f"tel:{digits}")])


def chip(left_text: str, level: str) -> str:
    color = LEVEL_COLOR.get(level, "#9e9e9e")
    extra = " amber" if level == "amber" else ""
    return f'<span class="gm-chip{extra}" style="background:{color}">{cards.esc(left_text)}</span>'


def ago_zh(epoch: float | None, now_epoch: float) -> str:
    """"3 天前" / "今天" / "从未巡查"."""
    if epoch is None or (isinstance(epoch, float) and np.isnan(epoch)):
        return "从未巡查"
    days = int((now_epoch - float(epoch)) // 86400)
    return "今天" if days <= 0 else f"{days} 天前"


def inject_css() -> None:
    st.html(PHONE_CSS)


# -- lists of cards with a button (tasks, entities) ------------------------------------------------
ROWS_CSS = """
.gm-rows { display: flex; flex-direction: column; gap: 8px; }
.gm-row { border: 1px solid rgba(49, 51, 63, 0.2); border-radius: 8px; padding: 10px 14px;
  font-size: 15px; line-height: 1.45; overflow-wrap: anywhere; }
.gm-row button { display: block; width: 100%; min-height: 44px; margin-top: 8px; padding: 4px 12px;
  font: inherit; font-size: 15px; color: inherit; background: #fff; cursor: pointer;
  border: 1px solid rgba(49, 51, 63, 0.2); border-radius: 8px; }
.gm-row button:hover, .gm-row button:focus-visible { border-color: #ff4b4b; color: #ff4b4b; }
.gm-row button:active { background: #ff4b4b; color: #fff; }
"""
_ROWS = st.components.v2.component(
    "gridmap_rows", isolate_styles=False, css=ROWS_CSS,
    js=(assets.STATIC_DIR / "gridmap" / "rows.js").read_text(encoding="utf-8"))


def rows(key: str, items: list[dict], on_open) -> None:
    """Cards with a button each (static/gridmap/rows.js), one element for the whole list;
    `items`: {id, chip: [text, colour, dark] or None, title, tag, lines, button} — all plain
    text. A tap on a button calls `on_open(id)` before the next script run (like a button's
    on_click)."""

    def opened() -> None:
        value = (st.session_state.get(key) or {}).get("open")
        if value is not None:
            on_open(str(value))

    _ROWS(key=key, data={"rows": items}, on_open_change=opened)


def task_rows(tasks: pd.DataFrame) -> list[dict]:
    """The task list's cards: time left, category, state, place, the first words."""
    out = []
    for row in tasks.itertuples(index=False):
        place = row.grid_label if row.grid_label != "—" else row.bureau_label
        out.append({"id": str(row.id), "chip": chip_spec(row.countdown, row.level),
                    "title": str(row.category_zh), "tag": str(row.status_label),
                    "lines": [str(place), str(row.description)[:40]],
                    "button": f"打开 {row.id}"})
    return out


def entity_rows(entities: pd.DataFrame, now_epoch: float) -> list[dict]:
    """The entity list's cards: name, industry, when last visited."""
    return [{"id": str(row.id), "chip": None, "title": str(row.name), "tag": str(row.industry),
             "lines": [f"最近巡查：{ago_zh(row.last_epoch, now_epoch)}"],
             "button": "巡查 / 查看"} for row in entities.itertuples(index=False)]


def chip_spec(left_text: str, level: str) -> list:
    return [str(left_text), LEVEL_COLOR.get(level, "#9e9e9e"), level == "amber"]


def records_html(frame: pd.DataFrame) -> str:
    """A small table as one card per row, each cell under its column's name: on a 390 px
    phone a table of nine columns would scroll sideways inside its expander. HTML (st.html)
    rather than st.table, which brings Arrow's formatting, moment and numbro to the page (65 kB
    compressed, and their start-up on a slow CPU)."""
    names = [cards.esc(c) for c in frame.columns]
    cards_out = []
    for row in frame.itertuples(index=False):
        pairs = "".join(f"<dt>{n}</dt><dd>{cards.esc(v)}</dd>"
                        for n, v in zip(names, row, strict=True))
        cards_out.append(f'<div class="gm-record"><dl>{pairs}</dl></div>')
    return f'<div class="gm-records">{"".join(cards_out)}</div>'


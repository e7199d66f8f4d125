"""The grid worker's phone page (pages/1_网格员.py): what it draws and the links it offers.

Phones are the grid workers' computers: the page is laid out for 390 px first — one column,
touch targets of at least 44 px, text of at least 14 px —, the map is compact and fitted to the
worker's units, one finger scrolls the page and two move the map (leaflet-gesture-handling,
vendored), and a tap on a marker opens what a hover shows on a desktop.

Navigation buttons are links the worker taps (the phone's Amap or Baidu Maps app, or any map
app through `geo:`), converted to the coordinate system each app expects; the page itself makes
no request to them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import folium
import numpy as np
import pandas as pd
import streamlit as st
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from jinja2 import Template

from geo.china_offsets import wgs84_to_bd09, wgs84_to_gcj02
from grids.deadlines import LEVEL_COLOR
from ui import assets, cards, mapview
from ui.basemap import Basemap

MAP_HEIGHT = 330  # px: well under half of an 844 px phone screen
PHONE_CSS = """<style>
/* Touch targets of at least 44 px and text of at least 14 px on the worker's page. */
div[data-testid="stButton"] button, div[data-testid="stDownloadButton"] button,
div[data-testid="stLinkButton"] a { min-height: 44px; font-size: 15px; }
[data-testid="stButtonGroup"] button { min-height: 44px; min-width: 64px; }
.gm-nav { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 4px 0 8px 0; }
.gm-nav a { display: flex; align-items: center; justify-content: center; min-height: 44px;
  border: 1px solid #c8d1dc; border-radius: 8px; text-decoration: none; color: #0b5394;
  font-size: 15px; background: #f6f8fa; }
.gm-task { font-size: 15px; line-height: 1.45; }
.gm-chip { display: inline-block; padding: 1px 8px; border-radius: 4px; color: #fff;
  font-weight: 600; font-size: 14px; }
.gm-chip.amber { color: #000; }
.gm-who { font-size: 15px; }
</style>"""


class GestureHandling(JSCSSMixin, MacroElement):
    """leaflet-gesture-handling: on a touch screen one finger scrolls the page and two fingers
    move the map (a hint says so, in Chinese); on a desktop the wheel zooms only with Ctrl."""

    _template = Template("")
    default_js = [("gesture_handling_js", "leaflet-gesture-handling.min.js")]  # noqa: RUF012
    default_css = [("gesture_handling_css", "leaflet-gesture-handling.min.css")]  # noqa: RUF012


GESTURE_TEXT = {"touch": "请用两根手指移动地图", "scroll": "按住 Ctrl 并滚动鼠标滚轮缩放地图",
                "scrollMac": "按住 ⌘ 并滚动以缩放地图"}


def phone_map(basemap: Basemap, grids, entities: pd.DataFrame, tasks: pd.DataFrame,
              visited: dict[str, str] | None = None) -> folium.Map:
    """The worker's units outlined, their cases coloured by time left, their entities; fitted
    to the units. Popups (a tap) carry what tooltips (a hover) do. Every text is
    `cards.js_html`: folium writes it into JavaScript template literals."""
    bounds = shapely_bounds(grids)
    minx, miny, maxx, maxy = bounds
    m = mapview._base_map(basemap, (miny + maxy) / 2, (minx + maxx) / 2, 13)
    m.options.update(gestureHandling=True,
                     gestureHandlingOptions={"text": GESTURE_TEXT, "duration": 1200})
    GestureHandling().add_to(m)
    units = mapview.highlight_group(basemap, grids.geometry.values, name="负责网格")
    units.add_to(m)
    visited = visited or {}

    def point(lon, lat) -> list[float]:
        x, y = basemap.to_display([float(lon)], [float(lat)])
        return [float(np.ravel(y)[0]), float(np.ravel(x)[0])]

    ents = folium.FeatureGroup(name=cards.js_html("监管对象"))
    for row in entities.itertuples(index=False):
        last = visited.get(str(row.id))
        text = f"{row.name}（{row.industry}）" + (f"\n最近巡查 {last}" if last else "\n尚未巡查")
        folium.CircleMarker(point(row.lon, row.lat), radius=7, color="#ffffff", weight=2,
                            fill_color="#1565c0" if last else "#90a4ae", fill_opacity=1,
                            tooltip=folium.Tooltip(cards.js_html(text)),
                            popup=folium.Popup(cards.js_html(text), max_width=240),
                            ).add_to(ents)
    ents.add_to(m)
    cases = folium.FeatureGroup(name=cards.js_html("我的案件"))
    for row in tasks.itertuples(index=False):
        text = f"{row.id} {row.category_zh} · {row.countdown}\n{str(row.description)[:60]}"
        folium.CircleMarker(point(row.lon, row.lat), radius=10, color="#000000", weight=2,
                            fill_color=LEVEL_COLOR.get(row.level, "#9e9e9e"), fill_opacity=1,
                            tooltip=folium.Tooltip(cards.js_html(text)),
                            popup=folium.Popup(cards.js_html(text), max_width=260),
                            ).add_to(cases)
    cases.add_to(m)
    folium.LayerControl(collapsed=True).add_to(m)
    sw, ne = point(minx, miny), point(maxx, maxy)
    m.fit_bounds([sw, ne], padding=(12, 12))
    assets.localize(m)
    # Leaflet and jQuery (folium's popups are built with it), not Bootstrap or the icon fonts:
    # on a phone every script costs, and streamlit-folium loads them one after another.
    m.default_js = [(n, u) for n, u in m.default_js if n in ("leaflet", "jquery")]
    m.default_css = [(n, u) for n, u in m.default_css if n == "leaflet_css"]
    return m


def shapely_bounds(grids) -> tuple[float, float, float, float]:
    if not len(grids):
        return (120.5, 31.6, 121.9, 32.7)
    import shapely

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

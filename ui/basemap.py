"""Basemaps: none by default (intranet), Tianditu when a key is configured, any intranet XYZ.

Configuration (environment variables, read at each page run):

- GRIDMAP_BASEMAP: the basemap shown first: none | tianditu_vec | tianditu_img | custom
- GRIDMAP_TIANDITU_KEY: a Tianditu (天地图) browser key; enables vector and imagery with labels
- GRIDMAP_TILE_URL: an XYZ template, e.g. http://10.1.2.3/tiles/{z}/{x}/{y}.png
- GRIDMAP_TILE_NAME, GRIDMAP_TILE_ATTR, GRIDMAP_TILE_MAXZOOM, GRIDMAP_TILE_SUBDOMAINS: its
  label, attribution, highest zoom with tiles, and the values of {s} (default abc)
- GRIDMAP_TILE_DATUM: wgs84 | cgcs2000 | gcj02 — the coordinates the tiles are drawn in
- GRIDMAP_GCJ02: shift (default) | refuse — what to do with GCJ-02 (Amap/Tencent) tiles

Tianditu is drawn in CGCS2000 (= WGS84 to centimetres), like the layers. Amap/Tencent tiles are
GCJ-02, hundreds of metres off: with `shift` the overlays are moved to match them (and clicks
moved back before routing), the page says so; with `refuse` the basemap is not offered. Baidu
tiles (BD-09 and their own tile grid) are always refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from geo.china_offsets import wgs84_to_gcj02
from ui.assets import tile_host

GCJ02_HOSTS = ("autonavi.com", "amap.com", "gaode.com", "map.qq.com", "gtimg.com", "tencent.com")
BAIDU_HOSTS = ("baidu.com", "bdimg.com", "bdstatic.com")
TIANDITU = ("https://t{{s}}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
            "&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={{z}}"
            "&TILEROW={{y}}&TILECOL={{x}}&tk={key}")
TIANDITU_ATTR = "© 天地图 国家地理信息公共服务平台"
MAX_ZOOM = 18  # the map needs one even with no tile layer at all


@dataclass(frozen=True)
class Tiles:
    url: str
    name: str
    attr: str
    subdomains: str = "abc"
    max_native_zoom: int = MAX_ZOOM
    overlay: bool = False  # an annotation layer over another


@dataclass(frozen=True)
class Basemap:
    key: str
    label: str
    tiles: tuple[Tiles, ...] = ()
    datum: str = "wgs84"  # wgs84 (= CGCS2000 here) or gcj02
    notice: str = ""

    @property
    def hosts(self) -> tuple[str, ...]:
        """The tile servers the browser may contact (the only hosts besides the app's)."""
        return tuple(dict.fromkeys(tile_host(t.url) for t in self.tiles))

    @property
    def shifted(self) -> bool:
        return self.datum == "gcj02"

    def to_display(self, lon, lat):
        """Store coordinates (CGCS2000/WGS84) → where the basemap draws them."""
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        return wgs84_to_gcj02(lon, lat) if self.shifted else (lon, lat)

    def fit(self, m, bounds, padding: tuple[int, int] | None = None) -> None:
        """Fit the folium map `m` to `bounds` (minx, miny, maxx, maxy in store coordinates)."""
        minx, miny, maxx, maxy = (float(v) for v in bounds)
        (west, east), (south, north) = self.to_display([minx, maxx], [miny, maxy])
        corners = [[float(south), float(west)], [float(north), float(east)]]
        if padding is None:
            m.fit_bounds(corners)
        else:
            m.fit_bounds(corners, padding=padding)

    @property
    def click_crs(self) -> str:
        """The coordinate system of a point clicked on this basemap, for routing."""
        return "gcj02" if self.shifted else "wgs84"


@dataclass
class Settings:
    basemaps: list[Basemap]
    default: str
    problems: list[str] = field(default_factory=list)  # refused configurations, in Chinese

    def get(self, key: str) -> Basemap:
        return next((b for b in self.basemaps if b.key == key), self.basemaps[0])


NONE = Basemap("none", "无底图（内网默认）")


def _host_in(url: str, hosts: tuple[str, ...]) -> bool:
    netloc = urlparse(url.replace("{s}", "a")).netloc.lower()
    return any(netloc == h or netloc.endswith("." + h) for h in hosts)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    basemaps = [NONE]
    problems: list[str] = []
    key = env.get("GRIDMAP_TIANDITU_KEY", "").strip()
    if key:
        for kind, label, base, notes in (("vec", "天地图 矢量", "vec", "cva"),
                                         ("img", "天地图 影像", "img", "cia")):
            basemaps.append(Basemap(f"tianditu_{kind}", label, (
                Tiles(TIANDITU.format(layer=base, key=key), label, TIANDITU_ATTR, "01234567"),
                Tiles(TIANDITU.format(layer=notes, key=key), label + "注记", TIANDITU_ATTR,
                      "01234567", overlay=True),
            )))
    url = env.get("GRIDMAP_TILE_URL", "").strip()
    if url:
        custom = _custom(url, env, problems)
        if custom is not None:
            basemaps.append(custom)
    wanted = env.get("GRIDMAP_BASEMAP", "").strip() or "none"
    if wanted not in {b.key for b in basemaps}:
        if wanted != "none":
            problems.append(f"GRIDMAP_BASEMAP={wanted} 不可用（未配置或已拒绝），已改用无底图。")
        wanted = "none"
    return Settings(basemaps, wanted, problems)


def _custom(url: str, env: Mapping[str, str], problems: list[str]) -> Basemap | None:
    if not all(p in url for p in ("{z}", "{x}", "{y}")):
        problems.append(f"GRIDMAP_TILE_URL 必须是含 {{z}}/{{x}}/{{y}} 的瓦片地址：{url}")
        return None
    if _host_in(url, BAIDU_HOSTS):
        problems.append("百度地图瓦片使用 BD-09 坐标和自有切片方案，无法与图层对齐，已拒绝使用。")
        return None
    datum = env.get("GRIDMAP_TILE_DATUM", "").strip().lower() or "wgs84"
    if datum == "cgcs2000":
        datum = "wgs84"
    if datum not in ("wgs84", "gcj02"):
        problems.append(f"GRIDMAP_TILE_DATUM 只能是 wgs84、cgcs2000 或 gcj02，收到 {datum}。")
        return None
    notice = ""
    if _host_in(url, GCJ02_HOSTS) and datum != "gcj02":
        notice = "该底图来自高德/腾讯，按 GCJ-02 坐标处理（配置的坐标系有误）。"
        datum = "gcj02"
    if datum == "gcj02":
        if env.get("GRIDMAP_GCJ02", "shift").strip().lower() == "refuse":
            problems.append("底图为 GCJ-02 坐标（高德/腾讯等），与图层相差数百米；"
                            "按配置 GRIDMAP_GCJ02=refuse 已拒绝使用。")
            return None
        notice += ("底图为 GCJ-02 坐标：图层和点击位置已按 GCJ-02 偏移对齐，"
                   "分派结果仍按 CGCS2000 计算。")
    try:
        max_zoom = int(env.get("GRIDMAP_TILE_MAXZOOM", "") or MAX_ZOOM)
    except ValueError:
        max_zoom = MAX_ZOOM
    name = env.get("GRIDMAP_TILE_NAME", "").strip() or "自定义底图"
    attr = env.get("GRIDMAP_TILE_ATTR", "").strip() or name
    subdomains = env.get("GRIDMAP_TILE_SUBDOMAINS", "").strip() or "abc"
    return Basemap("custom", name, (Tiles(url, name, attr, subdomains, max_zoom),), datum, notice)

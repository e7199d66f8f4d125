"""The folium map of the city: an empty Leaflet map (no tiles unless a basemap is configured)
plus one element that hands the layer files to static/gridmap/gridmap.js, and the highlight
layer (clicked point, search hit, a worker's grids) that streamlit-folium swaps without
reloading the map.

The map object is rebuilt on every run from cached data (it is small: the data is in files),
never cached itself.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

import folium
import numpy as np
import shapely
from branca.element import MacroElement
from jinja2 import Template

from layers.display import ENTITY_CHUNK, LEVELS
from layers.incidents import STATUSES_ZH as STATUS_ZH
from ui import assets, cards
from ui.basemap import MAX_ZOOM, Basemap
from ui.mapdata import MapData

MIN_ZOOM = 7
MAP_HEIGHT = 660
HIGHLIGHT_COLOR = "#00e5ff"

# Styles of the layers (Leaflet path options) and what the legend says about them.
LAYERS = (
    {"name": "sea_areas", "title": "海域", "on": True, "canvas": False,
     "style": {"color": "#2a9d8f", "weight": 1.5, "fillColor": "#a8dadc", "fillOpacity": 0.35,
               "dashArray": "4 3"},
     "legend": {"color": "#2a9d8f", "fill": "#a8dadc", "dash": True}},
    {"name": "grids", "title": "网格", "on": True, "canvas": True,
     "style": {"color": "#4e79a7", "weight": 0.7, "fillColor": "#4e79a7", "fillOpacity": 0.06,
               "opacity": 0.9},
     "legend": {"color": "#4e79a7", "fill": "rgba(78,121,167,0.15)", "weight": 1}},
    {"name": "parks", "title": "园区", "on": True, "canvas": False,
     "style": {"color": "#59a14f", "weight": 2, "fillColor": "#59a14f", "fillOpacity": 0.06},
     "legend": {"color": "#59a14f", "fill": "rgba(89,161,79,0.12)"}},
    {"name": "jurisdictions", "title": "执法辖区", "on": False, "canvas": False,
     "style": {"color": "#8c564b", "weight": 2.5, "fill": False, "dashArray": "8 5"},
     "legend": {"color": "#8c564b", "dash": True, "weight": 2}},
    {"name": "townships", "title": "乡镇/街道", "on": True, "canvas": False,
     "style": {"color": "#555555", "weight": 1.3, "fill": False, "opacity": 0.8},
     "legend": {"color": "#555555", "weight": 1}},
    {"name": "counties", "title": "县（市）、区", "on": True, "canvas": False,
     "style": {"color": "#222222", "weight": 3, "fill": False},
     "legend": {"color": "#222222", "weight": 3}},
)
# Per kind index (layers/display.KINDS): grids comprehensive/park/dedicated; parks chemical
# park first, so it can stand out.
KIND_STYLES = {
    "grids": [{}, {"color": "#e8702a", "fillColor": "#f28e2b", "fillOpacity": 0.18},
              {"color": "#7b3294", "fillColor": "#b07aa1", "fillOpacity": 0.35, "weight": 1.2}],
    "parks": [{"color": "#d62728", "weight": 3.5, "fillColor": "#d62728", "fillOpacity": 0.12},
              {}, {"color": "#8cd17d", "dashArray": "6 4"}, {"color": "#8cd17d"}],
}
KIND_NAMES = {
    "grids": ["综合网格", "园区网格", "专属网格"],
    "parks": ["化工园区（独立执法机构）", "国家级开发区", "省级开发区", "其他园区"],
}
LEVEL_NAMES = {"municipal": "市级执法局", "county": "县（市）、区执法局", "numbered": "编号执法局",
               "park": "园区/区域执法局"}
PERMIT_COLORS = {"重点管理": "#c62828", "简化管理": "#ef6c00", "登记管理": "#2e7d32", "": "#757575"}
STATUS_COLORS = {"reported": "#d32f2f", "dispatched": "#f57c00", "verified": "#1976d2",
                 "transferred": "#6a1b9a", "handling": "#0288d1", "": "#455a64"}
LABELS = {
    "loading": "加载中…", "loadError": "图层数据加载失败：", "legend": "图例",
    "legendToggle": "点击收起/展开图例",
    "creditCode": "信用代码", "industry": "行业", "permit": "排污许可", "inspection": "监管类别",
    "address": "地址", "grid": "网格", "township": "乡镇/街道", "workers": "网格员",
    "none": "无", "incident": "事件", "category": "类别", "status": "状态",
    "reportedAt": "上报时间", "source": "来源", "description": "描述",
    "deadline": "本环节时限", "overdue": "已超时", "beijing": "（北京时间）",
    "routeHere": "在此处查询归属",
    "routeHereHelp": "以此位置查询县（市）、区、乡镇/街道、网格、网格员和责任执法机构",
    "openCase": "打开案件", "openCaseHelp": "在“案件办理”页打开该案件",
    "clickHint": "单击地图任意处（含标记、聚合）即查询该处归属",
    "binTip": "个监管对象（单击放大）", "tenThousand": "万",
    "gridHint": "放大后显示网格",
}
GRID_LATER = "放大后显示"
LEGEND = [
    {"label": "县（市）、区界", "color": "#222222", "weight": 3},
    {"label": "乡镇/街道界", "color": "#555555", "weight": 1},
    {"label": "综合网格", "color": "#4e79a7", "fill": "rgba(78,121,167,0.15)", "weight": 1},
    {"label": "园区网格", "color": "#e8702a", "fill": "rgba(242,142,43,0.35)", "weight": 1},
    {"label": "专属网格", "color": "#7b3294", "fill": "rgba(176,122,161,0.55)", "weight": 1},
    {"label": "化工园区", "color": "#d62728", "fill": "rgba(214,39,40,0.2)", "weight": 3},
    {"label": "开发区", "color": "#59a14f", "fill": "rgba(89,161,79,0.12)"},
    {"label": "执法辖区（默认隐藏）", "color": "#8c564b", "dash": True},
    {"label": "海域", "color": "#2a9d8f", "fill": "#a8dadc", "dash": True},
    *({"label": f"监管对象：{k}", "color": "#ffffff", "fill": v, "shape": "dot", "weight": 1}
      for k, v in PERMIT_COLORS.items() if k),
    {"label": "监管对象：无排污许可", "color": "#ffffff", "fill": PERMIT_COLORS[""], "shape": "dot",
     "weight": 1},
    {"label": "监管对象聚合（数字为个数，单击放大）", "color": "rgba(110,204,57,0.6)",
     "fill": "rgba(181,226,140,0.9)", "shape": "cluster", "weight": 3},
    {"label": "查询的位置及其网格", "color": HIGHLIGHT_COLOR, "fill": "rgba(0,229,255,0.12)",
     "weight": 3},
]
# The open incidents (for roles that may read cases): colour by the state of the case, and a
# ring when its current step is past its time limit (grids/case_flow.csv).
INCIDENT_LEGEND = [
    *({"label": f"未结事件：{STATUS_ZH.get(k, k)}", "color": "#ffffff", "fill": v,
       "shape": "diamond", "weight": 1} for k, v in STATUS_COLORS.items() if k),
    {"label": "未结事件：已超过本环节时限（红圈）", "color": "#ffffff", "fill": STATUS_COLORS[""],
     "shape": "diamond-late", "weight": 1},
]


class GridmapLayers(MacroElement):
    """Mounts the gridmap layers on the parent map.

    streamlit-folium loads the map's scripts one after another, then runs the map script. So
    gridmap.js goes first (`boot_url`, before Leaflet) and at once starts the downloads the map
    needs (layer files, styles, a preload of the marker cluster plugin); the map script then
    adds the plugin (already downloaded) and mounts the layers. Every URL involved is in
    `js`/`css`/`prefetch`, which `assets.external_urls` checks."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map, cfg) {
            L.Icon.Default.imagePath = cfg.imagePath;
            window.gridmap.boot(cfg);  // no-op for what gridmap.js's URL already started
            window.gridmap.loadScripts(cfg.js, function () { window.gridmap.mount(map, cfg); },
                function (src) {
                    map.getContainer().setAttribute("data-gridmap", "error");
                    var box = document.createElement("div");
                    box.className = "gm-error"; box.textContent = cfg.labels.loadError + src;
                    map.getContainer().appendChild(box);
                });
        })({{ this._parent.get_name() }}, {{ this.config|tojson }});
        {% endmacro %}
    """)

    def __init__(self, config: dict) -> None:
        super().__init__()
        self._name = "GridmapLayers"
        self.js = [assets.vendor_url(assets.VENDORED["markerclusterjs"])]
        self.css = [assets.vendor_url(assets.VENDORED[n])
                    for n in ("markerclustercss", "markerclusterdefaultcss")]
        self.css.append(assets.own_url("gridmap/gridmap.css"))
        self.prefetch = [config["base"] + f for f in config.pop("prefetch_files", [])]
        self.config = {**config, "imagePath": assets.image_path(), "js": self.js,
                       "css": self.css, "prefetch": self.prefetch}
        query = {"pre": ",".join(self.prefetch), "css": ",".join(self.css),
                 "js": ",".join(self.js)}
        self.boot_url = assets.own_url("gridmap/gridmap.js") + "&" + urlencode(query, safe="/@,")


class MetricScale(MacroElement):
    """Leaflet's scale bar in metres and kilometres only (folium's `control_scale` adds miles
    and feet too)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        L.control.scale({metric: true, imperial: false, maxWidth: 120, position: "bottomleft"})
            .addTo({{ this._parent.get_name() }});
        {% endmacro %}
    """)

    def __init__(self) -> None:
        super().__init__()
        self._name = "MetricScale"


def map_config(data: MapData, clicks: bool = True, hidden: tuple[str, ...] = (),
               case_page: str = "") -> dict:
    """`clicks`: a click routes — on the map, on a marker (its position), on a cluster (the
    point under the mouse) and "在此处查询归属" in a popup — and is sent at once (see
    gridmap.js `clicks`). `case_page`: the URL path of the case page, for an incident popup's
    link to its case ("" — no link: the role may not read cases). `hidden`: layers (by name,
    e.g. "incidents") that start switched off; the layer control still offers them. (Not
    "entities": gridmap.js reports the map ready once the entity cluster has placed its
    markers, which it only does on the map.)"""
    return {
        "base": data.base_url,
        "levels": [{"index": lv.index, "maxZoom": lv.max_zoom} for lv in LEVELS],
        "layers": [{**spec, "on": spec["on"] and spec["name"] not in hidden,
                    **({"title": f"{spec['title']}（{GRID_LATER}）"}
                       if spec["name"] == "grids" and data.grid_min_zoom else {})}
                   for spec in LAYERS],
        # Grids too small to see at the city view are drawn from this zoom on (ui/mapdata).
        "gridMinZoom": data.grid_min_zoom,
        "kindStyles": KIND_STYLES, "kindNames": KIND_NAMES, "levelNames": LEVEL_NAMES,
        "roleNames": {"worker": "网格员", "leader": "网格长"},
        "entities": {"title": f"监管对象（{data.entity_count:,}）", "on": "entities" not in hidden,
                     "chunk": ENTITY_CHUNK,
                     "permitColors": PERMIT_COLORS,
                     "legend": {"color": "#ffffff", "fill": PERMIT_COLORS["重点管理"],
                                "shape": "dot", "weight": 1}},
        "incidents": {"title": "未结事件", "on": "incidents" not in hidden,
                      "file": data.incidents_file,
                      "statusColors": STATUS_COLORS,
                      "casePage": case_page,
                      "legend": {"color": "#ffffff", "fill": STATUS_COLORS["reported"],
                                 "shape": "diamond", "weight": 1}},
        "labels": LABELS,
        "legend": LEGEND + (INCIDENT_LEGEND if data.incidents_file else []),
        # Closed, both: open they would cover a third of a desk-sized map (and its clicks).
        "collapsedControl": True, "legendOpenMinWidth": 900,
        "clicks": clicks,
        # Fetched while the scripts load: what the first (city) view draws.
        "prefetch_files": [f"{name}.{LEVELS[0].index}.json" for name in
                           (spec["name"] for spec in LAYERS)]
        + ["entities.index.json", *data.entity_first]
        + ([data.incidents_file] if data.incidents_file else []),
    }


def view_for_bbox(bbox, width_px: int = 900, height_px: int = MAP_HEIGHT,
                  max_zoom: int = 16) -> tuple[list[float], int]:
    """Centre [lat, lon] and the largest whole zoom that shows `bbox` in a map of that size."""
    minx, miny, maxx, maxy = bbox
    centre = [(miny + maxy) / 2, (minx + maxx) / 2]

    def merc_y(lat: float) -> float:
        s = math.sin(math.radians(max(min(lat, 85.0), -85.0)))
        return math.log((1 + s) / (1 - s)) / (4 * math.pi)

    dx = max((maxx - minx) / 360.0, 1e-9)
    dy = max(abs(merc_y(maxy) - merc_y(miny)), 1e-9)
    zoom = math.floor(min(math.log2(width_px * 0.85 / 256 / dx),
                          math.log2(height_px * 0.85 / 256 / dy)))
    return centre, int(max(MIN_ZOOM, min(max_zoom, zoom)))


def build_map(data: MapData, basemap: Basemap, city_bbox, clicks: bool = True,
              hidden: tuple[str, ...] = (), case_page: str = "") -> folium.Map:
    """The city map. Call `assets.ensure_offline` on it before showing it (app.py does).
    `clicks`, `hidden`, `case_page`: see `map_config`."""
    minx, miny, maxx, maxy = city_bbox
    cx, cy = basemap.to_display([(minx + maxx) / 2], [(miny + maxy) / 2])
    _, zoom = view_for_bbox(city_bbox)
    m = _base_map(basemap, float(np.asarray(cy).ravel()[0]), float(np.asarray(cx).ravel()[0]),
                  zoom)
    layers = GridmapLayers(map_config(data, clicks, hidden, case_page))
    layers.add_to(m)
    assets.localize(m)
    assets.trim_map_assets(m)
    m.default_js = [("gridmap_js", layers.boot_url), *m.default_js]  # before Leaflet: see above
    return m


# -- the highlight layer --------------------------------------------------------------------------
HIGHLIGHT = {"color": HIGHLIGHT_COLOR, "weight": 4, "fillColor": HIGHLIGHT_COLOR,
             "fillOpacity": 0.12, "interactive": False}
POINT = {"radius": 8, "color": "#ffffff", "weight": 3, "fill_color": "#e53935", "fill_opacity": 1}


def highlight_group(basemap: Basemap, geoms=(), points=(), name: str = "选中"
                    ) -> folium.FeatureGroup:
    """Outlined polygons and marked points, shifted like the layers. `points`: (lon, lat).
    Vector shapes only: the map loads no icon libraries (see assets.trim_map_assets). No text
    of the data is on it; its name would reach a layer control's script, so it is
    `cards.js_html`."""
    group = folium.FeatureGroup(name=cards.js_html(name), control=False)
    for geom in geoms:
        if geom is None or geom.is_empty:
            continue
        if basemap.shifted:
            geom = shapely.transform(geom, lambda xy: np.column_stack(
                basemap.to_display(xy[:, 0], xy[:, 1])))
        folium.GeoJson(
            shapely.to_geojson(shapely.set_precision(geom, 1e-6)),
            style_function=lambda _f: dict(HIGHLIGHT), interactive=False, control=False,
        ).add_to(group)
    for lon, lat in points:
        x, y = basemap.to_display([lon], [lat])
        folium.CircleMarker(
            [float(np.asarray(y).ravel()[0]), float(np.asarray(x).ravel()[0])],
            interactive=False, **POINT,
        ).add_to(group)
    assets.localize(group)
    return group


def units_map(basemap: Basemap, grids, entities, incidents) -> folium.Map:
    """A worker's own units only (for roles that may not see the city map): their grid
    outlines, their entities and their open incidents, drawn from the page itself — no city
    data file is fetched."""
    bounds = shapely.total_bounds(np.asarray(grids.geometry.values, dtype=object)) if len(
        grids) else (120.5, 31.6, 121.9, 32.7)
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    m = _base_map(basemap, (miny + maxy) / 2, (minx + maxx) / 2, 13)
    for group in units_groups(basemap, grids, entities, incidents):
        group.add_to(m)
    basemap.fit(m, (minx, miny, maxx, maxy))
    assets.localize(m)
    return m


def units_groups(basemap: Basemap, grids, entities, incidents) -> list[folium.FeatureGroup]:
    """The layers of `units_map`: grid outlines, entities (name, industry) and open incidents
    (number, category, description). Every text is `cards.js_html`: it lands in folium's
    scripts as a JavaScript template literal."""
    groups = [highlight_group(basemap, grids.geometry.values, name="负责网格")]
    for layer, rows, color in (("监管对象", entities, "#1565c0"),
                               ("未结事件", incidents, "#d81b60")):
        group = folium.FeatureGroup(name=cards.js_html(layer))
        for row in rows.itertuples(index=False):
            x, y = basemap.to_display([float(row.lon)], [float(row.lat)])
            label = (f"{row.name}（{row.industry}）" if layer == "监管对象"
                     else f"{row.id} {row.category_zh}：{str(row.description)[:60]}")
            folium.CircleMarker(
                [float(np.asarray(y).ravel()[0]), float(np.asarray(x).ravel()[0])], radius=6,
                color="#ffffff", weight=2, fill_color=color, fill_opacity=1,
                tooltip=folium.Tooltip(cards.js_html(label)),
            ).add_to(group)
        groups.append(group)
    return groups


def _base_map(basemap: Basemap, lat: float, lon: float, zoom: int) -> folium.Map:
    """A map with no tiles of folium's own: the basemap's tile layers only, and the zoom range
    Leaflet (and the marker cluster) need, which folium sets only on a tile layer it makes."""
    m = folium.Map(location=[lat, lon], zoom_start=zoom, tiles=None)
    m.options.update(maxZoom=MAX_ZOOM, minZoom=MIN_ZOOM)
    MetricScale().add_to(m)
    for t in basemap.tiles:
        folium.TileLayer(
            tiles=t.url, attr=t.attr, name=t.name, subdomains=t.subdomains, overlay=t.overlay,
            control=False, max_zoom=MAX_ZOOM, max_native_zoom=t.max_native_zoom,
        ).add_to(m)
    return m

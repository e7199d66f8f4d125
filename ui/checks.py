"""The 数据质检 page's pieces: filtering the findings of grids/checks.py, the map (every finding
as its area and a marker at its location, coloured by severity; offline like every map of the
app: the basemap's tiles only, vendored assets) and the Excel workbook."""

from __future__ import annotations

from collections.abc import Iterable

import folium
import numpy as np
import pandas as pd
import shapely

from grids.checks import KIND_ZH, RULES_TABLE, SEVERITY_ZH, Finding, findings_frame, layer_zh
from layers import spreadsheet
from ui import assets, cards, mapview
from ui.basemap import Basemap

MAP_HEIGHT = 560
MAX_ON_MAP = 2000  # findings drawn (errors first); the table and the Excel hold them all
COLORS = {"error": "#d73027", "warning": "#f39c12"}
CONTEXT_COLOR = "#7f8c8d"
SIMPLIFY_DEG = 0.00005  # ~5 m: pieces are drawn a little simplified, never their area changed


def choices(findings: Iterable[Finding]) -> tuple[list[str], list[str], list[str]]:
    """The severities, kinds and layers present (for the filters), in a stable order."""
    found = list(findings)
    severities = [s for s in SEVERITY_ZH if any(f.severity == s for f in found)]
    kinds = [k for k in KIND_ZH if any(f.kind == k for f in found)]
    kinds += sorted({f.kind for f in found} - set(kinds))
    layers = sorted({f.layer for f in found})
    return severities, kinds, layers


def filtered(findings: Iterable[Finding], severities=None, kinds=None,
             layers=None) -> list[Finding]:
    """The findings of the chosen severities, kinds and layers (None or empty: all)."""
    return [f for f in findings
            if (not severities or f.severity in severities)
            and (not kinds or f.kind in kinds)
            and (not layers or f.layer in layers)]


def tooltip(f: Finding) -> str:
    """What hovering a finding says (plain text; escaped by `findings_map`)."""
    area = "" if f.area_m2 is None else f"（约 {f.area_m2:,.0f} 平方米）"
    return (f"{SEVERITY_ZH.get(f.severity, f.severity)}·{KIND_ZH.get(f.kind, f.kind)}·"
            f"{layer_zh(f.layer)}{area}：{f.message_zh}")


def _display(basemap: Basemap, geom):
    if basemap.shifted:
        return shapely.transform(geom, lambda xy: np.column_stack(
            basemap.to_display(xy[:, 0], xy[:, 1])))
    return geom


def _drawable(geom):
    """An area as drawn: simplified and snapped to 1e-7°, except an invalid one (a bow-tie is
    the finding itself), which GEOS cannot snap: drawn as it is, where it is wrong."""
    if not shapely.is_valid(geom):
        return geom
    try:
        return shapely.set_precision(shapely.simplify(geom, SIMPLIFY_DEG), 1e-7)
    except shapely.errors.GEOSException:  # a snapping that collapses: the area as it is
        return geom


def findings_map(basemap: Basemap, findings: list[Finding], context=None,
                 focus: Finding | None = None) -> folium.Map:
    """The findings on a map: an area where a finding has one (a gap, an overlap, the part
    outside, the outline of the feature) and a marker at every location, red for errors and
    orange for warnings; `context` (the counties) drawn thin for orientation. The view fits
    `focus`, else the findings, else the context. Every text goes through `cards.js_html`."""
    shown = findings[:MAX_ON_MAP]
    areas, points = [], []
    for n, f in enumerate(shown):
        tip = cards.js_html(tooltip(f))
        color = COLORS.get(f.severity, COLORS["warning"])
        geom = f.geometry
        if geom is not None and not shapely.is_empty(geom) and shapely.get_type_id(geom) in (
                3, 6):
            shape = _drawable(geom)
            if not shapely.is_empty(shape):
                areas.append({"type": "Feature", "id": f"a{n}",
                              "geometry": shapely.geometry.mapping(_display(basemap, shape)),
                              "properties": {"tip": tip, "color": color}})
        if f.location is not None:
            x, y = basemap.to_display([f.location[0]], [f.location[1]])
            points.append({"type": "Feature", "id": f"p{n}",
                           "geometry": {"type": "Point",
                                        "coordinates": [float(np.ravel(x)[0]),
                                                        float(np.ravel(y)[0])]},
                           "properties": {"tip": tip, "color": color}})
    bounds = _bounds(focus, shown, context)
    minx, miny, maxx, maxy = bounds
    m = mapview._base_map(basemap, (miny + maxy) / 2, (minx + maxx) / 2, 9)
    if context is not None and len(context):
        outlines = [{"type": "Feature", "geometry": shapely.geometry.mapping(_display(
            basemap, shapely.simplify(g, 0.0005))), "properties": {}}
            for g in context if g is not None and not g.is_empty]
        folium.GeoJson({"type": "FeatureCollection", "features": outlines},
                       name=cards.js_html("县（市）、区"), interactive=False,
                       style_function=lambda _f: {"color": CONTEXT_COLOR, "weight": 1,
                                                  "fill": False, "dashArray": "4 4"},
                       ).add_to(m)
    if areas:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": areas}, name=cards.js_html("问题范围"),
            style_function=lambda f: {"color": f["properties"]["color"], "weight": 2,
                                      "fillColor": f["properties"]["color"],
                                      "fillOpacity": 0.35},
            highlight_function=lambda _f: {"weight": 4, "fillOpacity": 0.6},
            tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
            zoom_on_click=False,
        ).add_to(m)
    if points:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": points}, name=cards.js_html("问题位置"),
            marker=folium.CircleMarker(radius=6, weight=2, fill=True, fill_opacity=0.9),
            style_function=lambda f: {"color": "#ffffff", "fillColor": f["properties"]["color"]},
            tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
            zoom_on_click=False,
        ).add_to(m)
    basemap.fit(m, (minx, miny, maxx, maxy))
    assets.localize(m)
    assets.trim_map_assets(m)
    return m


def _bounds(focus: Finding | None, findings: list[Finding], context) -> tuple:
    """lon/lat bounds to show: the focused finding (with a margin), else every finding, else
    the context (the counties), else Nantong."""
    boxes = []
    if focus is not None:
        if focus.bbox is not None:
            boxes = [focus.bbox]
        elif focus.location is not None:
            boxes = [(*focus.location, *focus.location)]
    if not boxes:
        boxes = [f.bbox or (*f.location, *f.location) for f in findings
                 if f.bbox is not None or f.location is not None]
    if not boxes and context is not None and len(context):
        boxes = [tuple(shapely.total_bounds(np.asarray(list(context), dtype=object)))]
    if not boxes:
        return (120.5, 31.6, 121.9, 32.7)
    arr = np.asarray(boxes, dtype=float)
    minx, miny = np.nanmin(arr[:, 0]), np.nanmin(arr[:, 1])
    maxx, maxy = np.nanmax(arr[:, 2]), np.nanmax(arr[:, 3])
    pad = max(maxx - minx, maxy - miny, 0.004) * 0.15  # a point or a sliver: still ~ 500 m
    return (minx - pad, miny - pad, maxx + pad, maxy + pad)


def table_height(rows: int, most: int = 600) -> int:
    """Pixels for a table of `rows` rows and its header, at most `most`."""
    return min(most, 35 * (max(rows, 1) + 1) + 3)


def table(findings: list[Finding]) -> pd.DataFrame:
    """The page's table (the Excel's first sheet)."""
    return findings_frame(findings)


def rules_frame() -> pd.DataFrame:
    """The rules table as the page and the Excel explain it."""
    rules = pd.read_csv(RULES_TABLE, dtype=str, keep_default_na=False)
    return pd.DataFrame({
        "检查项": rules["check"], "类型": [KIND_ZH.get(k, k) for k in rules["kind"]],
        "严重程度": [SEVERITY_ZH.get(s, s) for s in rules["severity"]],
        "容差（平方米）": rules["tolerance_m2"], "宽度（米）": rules["width_m"],
        "说明": rules["label_zh"], "备注": rules["note_zh"],
    })


def excel(findings: list[Finding], subject_zh: str) -> bytes:
    """The findings (all of the current filter) and the rules, as a workbook."""
    about = pd.DataFrame({"项目": ["检查对象", "问题数", "错误", "警告"],
                          "内容": [subject_zh, str(len(findings)),
                                 str(sum(f.severity == "error" for f in findings)),
                                 str(sum(f.severity == "warning" for f in findings))]})
    return spreadsheet.xlsx_bytes({"问题清单": spreadsheet.guarded(table(findings)),
                                   "检查规则": spreadsheet.guarded(rules_frame()),
                                   "说明": spreadsheet.guarded(about)})

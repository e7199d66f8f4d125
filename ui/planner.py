"""The 规划调整 page's pieces (pages/9_规划调整.py): the parks to pick from, the geometry of an
edit (a drawn polygon replacing, joining or cut out of the boundary; a grid unit painted in or
out; snapping to the neighbours), the editing map (Leaflet.draw 1.0.4 with the park's polygons
loaded editable), the impact and history tables and the version diff map.

Snapping is done here, on the server, after each edit: every vertex of the new boundary within
`tolerance_m` metres of a neighbour's vertex (counties, townships, grids, other parks, bureau
areas, sea areas) is moved onto it, else onto the nearest point of a neighbour's edge within
the tolerance, and the neighbours' vertices near the new edges are inserted into them
(`shapely.snap`). The park's own published boundary is not a neighbour (a vertex moved a few
metres would jump back).

Paint-by-unit: the units are the comprehensive grids (they tile the townships exactly). A
click on a unit that lies mostly inside the park takes it out of the park's boundary, a click
on any other unit adds it: the park boundary becomes the union of the units chosen (plus what
was drawn). Grids keep their codes and workers; which park and bureau their places belong to
follows from the new boundary, as the impact preview shows.

Every text that reaches the map goes through `cards.js_html`; the page shows data as text in
tables or through `cards.esc`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import MacroElement
from jinja2 import Template

from grids.publishing import AREA_COLUMNS, AREA_CRS, CASE_COLUMNS, CUT_COLUMNS, ENTITY_COLUMNS
from layers.schema import BUREAU_LEVEL_ZH, BUREAU_LEVELS, PARK_KINDS, STORE_EPSG
from ui import assets, cards, mapview
from ui.basemap import Basemap
from ui.draw import LABELS as DRAW_LABELS

MAP_HEIGHT = 600
DEFAULT_SNAP_M = 20.0
MAX_SNAP_M = 200.0
MAX_UNITS_ON_MAP = 3000
PAINT_KINDS = ("comprehensive",)
# What a newly drawn polygon does to the boundary being edited.
OPERATIONS = {"replace": "替换园区边界", "union": "并入园区（扩大）",
              "subtract": "从园区挖去（挖洞、缩小）"}
COLORS = {"draft": "#d81b60", "current": "#111111", "added": "#1a9850", "removed": "#d73027",
          "cut": "#f39c12", "unit": "#4e79a7", "painted": "#f28e2b", "park": "#59a14f",
          "township": "#777777", "county": "#222222"}
SHAPE = {"color": COLORS["draft"], "weight": 3, "opacity": 0.95, "fillOpacity": 0.12}
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0  # at the equator; times cos(latitude)
SNAP_LAYERS = ("counties", "townships", "grids", "parks", "jurisdictions", "sea_areas")

HELP = """
**流程**：选择要调整的园区（或新建园区及其执法机构）→ 在地图上修改边界、按网格单元增减或上传文件
→ 每次修改自动保存到草稿，右侧即时显示影响（监管对象、未结案件、被切分网格、面积增减）→
“检查草稿”列出问题（错误须改正，警告须逐条确认）→ 发布为新版本。草稿可以离开后继续、可撤销、可放弃；
发布前别人发布了同一图层时，发布会被拒绝并保留草稿（可“在最新版本上继续”后重新检查发布）。

**在地图上绘制/修改**：工具栏“画园区边界”逐点单击、单击第一个点闭合；新画的面按所选方式
**替换**园区边界、**并入**园区或从园区**挖去**（在园区内画一个面并选“挖去”即挖洞）。
“编辑”可拖动边界节点（拖动节点之间的小方块可增加节点），完成后单击“保存”；“删除图形”可删去园区的某一部分。

**吸附**（在服务器端完成）：每次修改后，距相邻边界（县（市）、区，乡镇/街道，网格，其他园区，执法辖区，海域）
节点不超过吸附距离的节点移到该节点上，否则移到相邻边界线上的最近点；相邻边界在新边线附近的节点也插入新边线。
这样新边界与相邻边界严丝合缝，不留狭长缝隙。本园区现行的边界不参与吸附。

**按网格单元增减**（类似 Districtr）：单击综合网格单元：大部分在园区内的单元从园区移出，
其余单元并入园区，园区边界即所选单元的合并范围。网格本身（编码、网格员）不变；网格内的监管对象和案件归哪个园区、哪个执法机构，
随新边界而定，右侧的影响预览即时显示。

**上传文件**：GeoJSON、KML、GeoPackage 或含 Shapefile 的 zip
（可为 QGIS 中编辑后导出的 parks 图层）。
文件中的园区按编码写入草稿；文件只有一个面时，也可只取其范围作为正在编辑的园区的边界。
"""


# -- parks -------------------------------------------------------------------------------------
def parks_table(layers: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The parks with their kind, county and bureau(s), for picking one."""
    parks = layers["parks"]
    bureaus = layers.get("bureaus")
    counties = layers.get("counties")
    county_names = (dict(zip(counties["code"].astype(str), counties["name"].astype(str),
                             strict=True)) if counties is not None else {})
    by_park: dict[str, list[tuple[str, str, str]]] = {}
    if bureaus is not None and len(bureaus):
        for b in bureaus.itertuples(index=False):
            if str(b.park_code or ""):
                by_park.setdefault(str(b.park_code), []).append(
                    (str(b.code), str(b.name), str(b.level)))
    rows = []
    for p in parks.itertuples(index=False):
        mine = by_park.get(str(p.code), [])
        rows.append({
            "code": str(p.code), "name": str(p.name), "kind": str(p.kind),
            "kind_zh": cards.PARK_KIND_ZH.get(str(p.kind), str(p.kind)),
            "county_code": str(p.county_code),
            "county": county_names.get(str(p.county_code), str(p.county_code)),
            "bureau_code": "、".join(b[0] for b in mine),
            "bureau": "、".join(b[1] for b in mine),
            "bureau_level": "、".join(BUREAU_LEVEL_ZH.get(b[2], b[2]) for b in mine),
        })
    columns = ["code", "name", "kind", "kind_zh", "county_code", "county", "bureau_code",
               "bureau", "bureau_level"]
    return pd.DataFrame(rows, columns=columns)


def park_label(row) -> str:
    """“甲化工园区（P2 · 化工园区 · 甲县 · 执法机构：甲化工园区执法局）”: plain text (selectbox)."""
    bureau = f"执法机构：{row['bureau']}" if row["bureau"] else "无独立执法机构"
    return f"{row['name']}（{row['code']} · {row['kind_zh']} · {row['county']} · {bureau}）"


def parks_frame_zh(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"编码": table["code"], "名称": table["name"], "类型": table["kind_zh"],
                         "所属县（市）、区": table["county"], "执法机构": table["bureau"],
                         "执法机构级别": table["bureau_level"]})


def edited_codes(draft, layer: str = "parks") -> list[str]:
    """Codes of the features a draft puts or drops in `layer`, in order."""
    edits = (draft.edits or {}).get(layer, {})
    codes = [str(r["values"].get("code", "")) for r in edits.get("put", [])]
    codes += [str(c) for c in edits.get("drop", [])]
    return list(dict.fromkeys(c for c in codes if c))


def new_park_frames(parks: pd.DataFrame, bureaus: pd.DataFrame, park: dict,
                    bureau: dict | None, geometry) -> dict[str, pd.DataFrame]:
    """The proposed parks (and bureaus) layers with a new park (and its bureau) added.
    Raises ValueError (Chinese) when a field is missing or a code is taken."""
    problems = []
    code = str(park.get("code", "")).strip()
    for key, label in (("code", "园区编码"), ("name", "园区名称"), ("kind", "园区类型"),
                       ("county_code", "所属县（市）、区")):
        if not str(park.get(key, "")).strip():
            problems.append(f"请填写{label}")
    if code and code in set(parks["code"].astype(str)):
        problems.append(f"园区编码 {code} 已存在")
    if str(park.get("kind", "")) and park.get("kind") not in PARK_KINDS:
        problems.append(f"园区类型 {park.get('kind')} 不在允许范围内")
    if geometry is None or shapely.is_empty(geometry):
        problems.append("请先给出园区的初始范围（在地图上画出，或选择网格单元）")
    out: dict[str, pd.DataFrame] = {}
    if bureau is not None:
        bcode = str(bureau.get("code", "")).strip()
        for key, label in (("code", "执法机构编码"), ("name", "执法机构名称"),
                           ("level", "执法机构级别"), ("parent_code", "上级执法机构")):
            if not str(bureau.get(key, "")).strip():
                problems.append(f"请填写{label}")
        if bcode and bcode in set(bureaus["code"].astype(str)):
            problems.append(f"执法机构编码 {bcode} 已存在")
        if str(bureau.get("level", "")) and bureau.get("level") not in BUREAU_LEVELS:
            problems.append(f"执法机构级别 {bureau.get('level')} 不在允许范围内")
    if problems:
        raise ValueError("；".join(problems))
    row = {"code": code, "name": str(park["name"]).strip(), "kind": park["kind"],
           "county_code": str(park["county_code"]), "attrs": {}}
    base = parks.drop(columns=["fid"], errors="ignore")
    added = gpd.GeoDataFrame([row], geometry=[geometry], crs=STORE_EPSG)
    out["parks"] = gpd.GeoDataFrame(pd.concat([base, added], ignore_index=True),
                                    geometry="geometry", crs=STORE_EPSG)
    if bureau is not None:
        brow = {"code": str(bureau["code"]).strip(), "name": str(bureau["name"]).strip(),
                "level": bureau["level"], "parent_code": str(bureau.get("parent_code") or ""),
                "county_code": str(park["county_code"]), "park_code": code, "attrs": {}}
        out["bureaus"] = pd.concat([bureaus.drop(columns=["fid"], errors="ignore"),
                                    pd.DataFrame([brow])], ignore_index=True)
    return out


def with_geometry(frame: gpd.GeoDataFrame, code: str, geometry) -> gpd.GeoDataFrame:
    """`frame` (a proposed parks layer) with the feature `code` given `geometry`."""
    geoms = list(frame.geometry.values)
    hit = [i for i, c in enumerate(frame["code"].astype(str)) if c == code]
    if not hit:
        raise ValueError(f"草稿中没有园区 {code}")
    for i in hit:
        geoms[i] = geometry
    return gpd.GeoDataFrame(frame.drop(columns=[frame.geometry.name]), geometry=geoms,
                            crs=frame.crs or STORE_EPSG)


# -- geometry of an edit --------------------------------------------------------------------------
def polygonal(geom):
    """The polygonal part of `geom`, made valid; None when nothing polygonal is left."""
    if geom is None or shapely.is_empty(geom):
        return None
    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if shapely.get_type_id(g) in (3, 6)
             and not shapely.is_empty(g)]
    parts = [p for g in parts for p in shapely.get_parts(g)]  # multipolygons into polygons
    if not parts:
        return None
    out = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    if shapely.get_type_id(out) == 7:  # a collection again: keep its polygons
        return polygonal(out)
    return out


def combine(current, drawn, operation: str):
    """The boundary after a drawn polygon replaces it, joins it or is cut out of it."""
    drawn = polygonal(drawn)
    if drawn is None:
        raise ValueError("画出的图形不是有效的面")
    if operation == "replace" or current is None or shapely.is_empty(current):
        if operation == "subtract":
            raise ValueError("园区还没有范围，不能挖去")
        return drawn
    if operation == "union":
        return polygonal(shapely.union(current, drawn))
    if operation == "subtract":
        out = polygonal(shapely.difference(current, drawn))
        if out is None:
            raise ValueError("挖去后园区范围为空：若要缩小园区，请画出要挖去的部分")
        return out
    raise ValueError(f"未知的操作：{operation}")


def unit_share(boundary, unit) -> float:
    """How much of `unit` lies inside `boundary` (0–1; areas in degrees suffice for a ratio)."""
    if boundary is None or shapely.is_empty(boundary) or unit is None:
        return 0.0
    area = shapely.area(unit)
    return float(shapely.area(shapely.intersection(boundary, unit)) / area) if area else 0.0


def toggle_unit(boundary, unit) -> tuple[object, bool]:
    """(new boundary, whether the unit was added): a unit mostly inside is taken out, any
    other unit is added."""
    if unit_share(boundary, unit) > 0.5:
        out = polygonal(shapely.difference(boundary, unit))
        if out is None:
            raise ValueError("移出该网格单元后园区范围为空")
        return out, False
    if boundary is None or shapely.is_empty(boundary):
        return polygonal(unit), True
    return polygonal(shapely.union(boundary, unit)), True


def _metric(lat0: float):
    kx = M_PER_DEG_LON * math.cos(math.radians(lat0))

    def to(xy):
        return np.column_stack([xy[:, 0] * kx, xy[:, 1] * M_PER_DEG_LAT])

    def back(xy):
        return np.column_stack([xy[:, 0] / kx, xy[:, 1] / M_PER_DEG_LAT])

    return to, back


def neighbours(layers: dict[str, pd.DataFrame], geom, tolerance_m: float,
               exclude: dict[str, Iterable[str]] | None = None) -> list:
    """Polygons of the snapping layers near `geom` (within the tolerance of its bounding box),
    without the features `exclude` names ({layer: codes})."""
    if geom is None or shapely.is_empty(geom):
        return []
    pad = tolerance_m / M_PER_DEG_LAT * 2 + 1e-6
    minx, miny, maxx, maxy = shapely.bounds(geom)
    found = []
    for name in SNAP_LAYERS:
        frame = layers.get(name)
        if frame is None or not len(frame):
            continue
        geoms = np.asarray(frame.geometry.values, dtype=object)
        b = shapely.bounds(geoms)
        near = ((b[:, 0] <= maxx + pad) & (b[:, 2] >= minx - pad)
                & (b[:, 1] <= maxy + pad) & (b[:, 3] >= miny - pad))
        skip = {str(c) for c in (exclude or {}).get(name, ())}
        if skip and "code" in frame.columns:
            near &= ~frame["code"].astype(str).isin(skip).to_numpy()
        found += [g for g in geoms[near] if g is not None and not shapely.is_empty(g)]
    return found


def snap(geom, reference: Sequence, tolerance_m: float):
    """`geom` with its vertices moved onto the vertices (else the edges) of the `reference`
    polygons within `tolerance_m` metres, and the reference vertices near its edges inserted.
    Distances are measured in a local metric plane (equirectangular at the geometry's
    latitude); coordinates that do not move, and those moved onto a reference vertex, keep
    their exact values (the diff of a version compares them exactly)."""
    if geom is None or shapely.is_empty(geom) or tolerance_m <= 0 or not len(reference):
        return geom
    lat0 = float(shapely.get_y(shapely.centroid(geom)))
    to, back = _metric(lat0)
    tol = float(tolerance_m)
    pad = 2 * tol / M_PER_DEG_LAT
    minx, miny, maxx, maxy = shapely.bounds(geom)
    edges = []
    for r in reference:
        edge = shapely.clip_by_rect(shapely.boundary(r), minx - pad, miny - pad, maxx + pad,
                                    maxy + pad)
        if not shapely.is_empty(edge):
            edges.append(edge)
    if not edges:
        return geom
    ref_lines = shapely.union_all(edges)  # noded: where edges cross is a vertex too
    ref_xy = np.unique(shapely.get_coordinates(ref_lines), axis=0)
    coords = shapely.get_coordinates(geom)
    points_m = shapely.points(to(coords))
    out = coords.copy()
    done = np.zeros(len(coords), dtype=bool)
    if len(ref_xy):
        tree = shapely.STRtree(shapely.points(to(ref_xy)))
        pairs = tree.query_nearest(points_m, max_distance=tol, all_matches=False)
        for i, j in zip(pairs[0], pairs[1], strict=True):
            if not done[i]:
                out[i] = ref_xy[j]
                done[i] = True
    rest = np.flatnonzero(~done)
    if len(rest):
        shortest = shapely.shortest_line(points_m[rest], shapely.transform(ref_lines, to))
        gap = shapely.length(shortest)
        close = (gap <= tol) & (gap > 1e-6)  # a vertex on an edge already stays as it is
        if close.any():
            ends = shapely.get_coordinates(shapely.get_point(shortest[close], 1))
            out[rest[close]] = back(ends)
    g = shapely.transform(geom, lambda _xy: out)
    tol_deg = tol / M_PER_DEG_LAT  # a degree of latitude is the longer: at most `tol` metres
    near = ref_xy[shapely.dwithin(shapely.points(ref_xy), g, tol_deg)]
    if len(near):
        g = shapely.snap(g, shapely.multipoints(near), tol_deg)
    snapped = polygonal(g)
    return snapped if snapped is not None else geom


# -- the map -----------------------------------------------------------------------------------
class Display:
    """Store coordinates (CGCS2000) ↔ the basemap's (GCJ-02 for some online tiles). The
    vertices sent to the map are remembered, so that an edit brings unmoved vertices back
    exactly (the GCJ-02 inverse is iterative)."""

    def __init__(self, basemap: Basemap, sent: dict | None = None) -> None:
        self.basemap = basemap
        self.sent: dict[tuple[float, float], tuple[float, float]] = dict(sent or {})

    def geom(self, geom, remember: bool = False):
        if not self.basemap.shifted or geom is None:
            return geom
        xy = shapely.get_coordinates(geom)
        x, y = self.basemap.to_display(xy[:, 0], xy[:, 1])
        shown = np.column_stack([np.ravel(x), np.ravel(y)])
        if remember:
            for (a, b), (c, d) in zip(shown.tolist(), xy.tolist(), strict=True):
                self.sent[(a, b)] = (c, d)
        return shapely.transform(geom, lambda _xy: shown)

    def back(self, geom):
        """A geometry in the map's coordinates → store coordinates."""
        if not self.basemap.shifted or geom is None:
            return geom
        from geo.china_offsets import gcj02_to_wgs84

        xy = shapely.get_coordinates(geom)
        x, y = gcj02_to_wgs84(xy[:, 0], xy[:, 1])
        out = np.column_stack([np.ravel(x), np.ravel(y)])
        for i, key in enumerate(map(tuple, xy.tolist())):
            if key in self.sent:
                out[i] = self.sent[key]
        return shapely.transform(geom, lambda _xy: out)

    def point(self, lon: float, lat: float) -> tuple[float, float]:
        p = self.back(shapely.Point(lon, lat))
        return float(p.x), float(p.y)


def geojson_geometry(drawing: dict):
    """A polygon (or several) from what the map sent: a Feature or a FeatureCollection."""
    if not isinstance(drawing, dict):
        return None
    if drawing.get("type") == "FeatureCollection":
        geoms = [shapely.geometry.shape(f["geometry"]) for f in drawing.get("features") or []
                 if isinstance(f, dict) and f.get("geometry")]
        return polygonal(shapely.union_all(geoms)) if geoms else None
    data = drawing.get("geometry", drawing) if drawing.get("type") == "Feature" else drawing
    if not data:
        return None
    return polygonal(shapely.geometry.shape(data))


def drawing_kind(drawing) -> str:
    """What the map reported: "created", "edited" or "deleted" (planner_events), else ""."""
    if not isinstance(drawing, dict):
        return ""
    props = drawing.get("properties") or {}
    kind = props.get("gm") if isinstance(props, dict) else None
    return kind if kind in ("created", "edited", "deleted") else ""


def _labels() -> dict:
    labels = copy.deepcopy(DRAW_LABELS)
    toolbar = labels["draw"]["toolbar"]
    toolbar["buttons"] = {"polygon": "画园区边界（单击逐点，单击第一点闭合）",
                          "rectangle": "画矩形范围"}
    labels["draw"]["handlers"]["polygon"]["tooltip"] = {
        "start": "单击开始画边界", "cont": "单击继续画边界", "end": "单击第一个点闭合"}
    labels["draw"]["handlers"]["polyline"]["error"] = "<strong>错误：</strong>边界不能自相交"
    labels["edit"]["toolbar"]["buttons"] = {
        "edit": "编辑边界节点（拖动节点）", "editDisabled": "没有可编辑的边界",
        "remove": "删除园区的某一部分", "removeDisabled": "没有可删除的部分"}
    labels["edit"]["handlers"] = {
        "edit": {"tooltip": {"text": "拖动节点修改边界，拖动节点间的小方块增加节点",
                             "subtext": "完成后单击“保存”，单击“取消”放弃修改"}},
        "remove": {"tooltip": {"text": "单击要删除的部分，完成后单击“保存”"}},
    }
    return labels


class PlannerLabels(MacroElement):
    """Before the draw control is made: Chinese labels."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (labels) {
            function merge(into, from) {
                for (var k in from) {
                    if (typeof from[k] === "object" && into[k]) { merge(into[k], from[k]); }
                    else { into[k] = from[k]; }
                }
            }
            if (window.L && L.drawLocal) { merge(L.drawLocal, labels); }
        })({{ this.labels|tojson }});
        {% endmacro %}
    """)

    def __init__(self) -> None:
        super().__init__()
        self._name = "PlannerLabels"
        self.labels = _labels()


class PlannerEvents(MacroElement):
    """After the draw control (its own handlers first): what streamlit-folium reports as
    `last_active_drawing` is marked with what happened — a new polygon ("created"), or the
    whole edited boundary after the edit or delete tool was saved ("edited", "deleted";
    streamlit-folium reports nothing useful for those by itself). A click on a polygon, which
    streamlit-folium also reports as a drawing, carries no mark and is ignored."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map, shapes) {
            var seq = 0;
            function marked(kind, make) {
                seq += 1;
                var n = seq;
                return { toGeoJSON: function () {
                    var g = make(); g.properties = { gm: kind, n: n }; return g; } };
            }
            map.on("draw:created", function (e) {
                var layer = e.layer;
                e.layer = marked("created", function () { return layer.toGeoJSON(); });
            });
            map.on("draw:edited draw:deleted", function (e) {
                var kind = e.type === "draw:edited" ? "edited" : "deleted";
                e.layer = marked(kind, function () { return shapes.toGeoJSON(); });
            });
        })({{ this._parent.get_name() }}, {{ this.shapes.get_name() }});
        {% endmacro %}
    """)

    def __init__(self, shapes: folium.FeatureGroup) -> None:
        super().__init__()
        self._name = "PlannerEvents"
        self.shapes = shapes


def _rings(poly, display: Display) -> list[list[list[float]]]:
    shown = display.geom(poly, remember=True)
    rings = [shown.exterior, *shown.interiors]
    return [[[float(y), float(x)] for x, y in ring.coords[:-1]] for ring in rings]


def _features(geoms, props: list[dict], display: Display, simplify: float = 0.0) -> list:
    out = []
    for n, (g, p) in enumerate(zip(geoms, props, strict=True)):
        if g is None or shapely.is_empty(g):
            continue
        if simplify:
            g = shapely.simplify(g, simplify)
        out.append({"type": "Feature", "id": f"f{n}", "properties": p,
                    "geometry": shapely.geometry.mapping(display.geom(g))})
    return out


def _outline(m, geoms, display: Display, name: str, style: dict, simplify: float = 0.0):
    feats = _features(list(geoms), [{}] * len(geoms), display, simplify)
    if feats:
        folium.GeoJson({"type": "FeatureCollection", "features": feats},
                       name=cards.js_html(name), interactive=False, control=False,
                       style_function=lambda _f, s=style: s).add_to(m)


def bounds_of(geoms, pad: float = 0.25) -> tuple[float, float, float, float]:
    found = [g for g in geoms if g is not None and not shapely.is_empty(g)]
    if not found:
        return (120.5, 31.6, 121.9, 32.7)
    minx, miny, maxx, maxy = shapely.total_bounds(np.asarray(found, dtype=object))
    d = max(maxx - minx, maxy - miny, 0.005) * pad
    return (minx - d, miny - d, maxx + d, maxy + d)


def units_near(layers: dict[str, pd.DataFrame], bounds) -> gpd.GeoDataFrame:
    """The paint units (comprehensive grids) within `bounds`, at most MAX_UNITS_ON_MAP."""
    grids = layers["grids"]
    grids = grids[grids["kind"].isin(PAINT_KINDS)]
    b = shapely.bounds(np.asarray(grids.geometry.values, dtype=object))
    minx, miny, maxx, maxy = bounds
    near = (b[:, 0] <= maxx) & (b[:, 2] >= minx) & (b[:, 1] <= maxy) & (b[:, 3] >= miny)
    return grids[near].head(MAX_UNITS_ON_MAP)


def unit_at(layers: dict[str, pd.DataFrame], lon: float, lat: float):
    """The paint unit (a comprehensive grid row) at a point, or None."""
    grids = layers["grids"]
    grids = grids[grids["kind"].isin(PAINT_KINDS)]
    geoms = np.asarray(grids.geometry.values, dtype=object)
    hit = np.flatnonzero(shapely.intersects_xy(geoms, lon, lat))
    return grids.iloc[hit[0]] if len(hit) else None


def edit_map(basemap: Basemap, layers: dict[str, pd.DataFrame], *, code: str | None,
             boundary, published, mode: str, display: Display, impact=None,
             cut_geoms=(), focus=None) -> folium.Map:
    """The editing map: counties and townships for orientation, the comprehensive grids (in
    paint mode clickable, the ones in the park filled), the other parks, the park's published
    boundary (dashed black), the areas added (green) and removed (red) and the grids cut
    (orange), and the draft boundary — in draw mode loaded into Leaflet.draw's layer, so that
    the edit tool moves its vertices. `mode`: "draw", "paint", or "view". The view fits the
    boundaries, else `focus` (geometries, e.g. the county of a new park)."""
    shown = [g for g in (boundary, published) if g is not None and not shapely.is_empty(g)]
    bounds = bounds_of(shown or list(focus if focus is not None else []))
    sw = display.geom(shapely.Point(bounds[0], bounds[1]))
    ne = display.geom(shapely.Point(bounds[2], bounds[3]))
    m = mapview._base_map(basemap, (sw.y + ne.y) / 2, (sw.x + ne.x) / 2, 12)
    area = shapely.box(*bounds)
    for name, style, simplify in (
            ("counties", {"color": COLORS["county"], "weight": 2.5, "fill": False}, 0.0002),
            ("townships", {"color": COLORS["township"], "weight": 1.2, "fill": False,
                           "dashArray": "5 4"}, 0.0001)):
        frame = layers.get(name)
        if frame is not None and len(frame):
            geoms = np.asarray(frame.geometry.values, dtype=object)
            near = shapely.intersects(geoms, area)
            _outline(m, geoms[near], display, name, style, simplify)
    units = units_near(layers, bounds_of(shown or list(focus if focus is not None else []),
                                         pad=1.0))  # beyond the view: units to paint in
    if len(units):
        geoms = list(units.geometry.values)
        shares = [unit_share(boundary, g) for g in geoms]
        if mode == "paint":
            props = [{"tip": cards.js_html(
                f"{n}（{c}）· 单击{'移出园区' if s > 0.5 else '并入园区'}"),
                "in": bool(s > 0.5)} for n, c, s in zip(units["name"], units["code"], shares,
                                                        strict=True)]
            folium.GeoJson(
                {"type": "FeatureCollection", "features": _features(geoms, props, display)},
                name=cards.js_html("网格单元"), control=False,
                style_function=lambda f: {
                    "color": COLORS["unit"], "weight": 1,
                    "fillColor": COLORS["painted"] if f["properties"]["in"] else COLORS["unit"],
                    "fillOpacity": 0.45 if f["properties"]["in"] else 0.06},
                highlight_function=lambda _f: {"weight": 3, "fillOpacity": 0.6},
                tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
                zoom_on_click=False,
            ).add_to(m)
        else:
            _outline(m, geoms, display, "grids",
                     {"color": COLORS["unit"], "weight": 0.7, "fill": False, "opacity": 0.8})
    parks = layers.get("parks")
    if parks is not None and len(parks):
        others = parks[parks["code"].astype(str) != str(code)]
        geoms = np.asarray(others.geometry.values, dtype=object)
        near = shapely.intersects(geoms, area) if len(geoms) else np.array([], dtype=bool)
        _outline(m, geoms[near], display, "parks",
                 {"color": COLORS["park"], "weight": 2, "fillColor": COLORS["park"],
                  "fillOpacity": 0.08})
    if published is not None:
        _outline(m, [published], display, "published",
                 {"color": COLORS["current"], "weight": 2.5, "fill": False, "dashArray": "8 6"})
    if impact is not None and len(impact.areas):
        _outline(m, list(impact.areas["added_geometry"]), display, "added",
                 {"color": COLORS["added"], "weight": 1, "fillColor": COLORS["added"],
                  "fillOpacity": 0.35})
        _outline(m, list(impact.areas["removed_geometry"]), display, "removed",
                 {"color": COLORS["removed"], "weight": 1, "fillColor": COLORS["removed"],
                  "fillOpacity": 0.35})
    if len(cut_geoms):
        _outline(m, list(cut_geoms), display, "cut",
                 {"color": COLORS["cut"], "weight": 3, "fill": False, "dashArray": "3 5"})
    if mode == "draw":
        shapes = folium.FeatureGroup(name=cards.js_html("园区边界（草稿）"), control=False)
        shapes.add_to(m)
        for poly in shapely.get_parts(boundary) if boundary is not None else []:
            folium.Polygon(_rings(poly, display), color=SHAPE["color"], weight=SHAPE["weight"],
                           opacity=SHAPE["opacity"], fill=True, fill_color=SHAPE["color"],
                           fill_opacity=SHAPE["fillOpacity"]).add_to(shapes)
        PlannerLabels().add_to(m)
        folium.plugins.Draw(
            feature_group=shapes, show_geometry_on_click=False, position="topleft",
            draw_options={"polygon": {"shapeOptions": SHAPE, "allowIntersection": False,
                                      "showArea": False},
                          "rectangle": {"shapeOptions": SHAPE, "showArea": False},
                          "polyline": False, "circle": False, "marker": False,
                          "circlemarker": False},
            edit_options={"edit": {"poly": {"allowIntersection": False}}, "remove": True},
        ).add_to(m)
        PlannerEvents(shapes).add_to(m)
    elif boundary is not None:
        _outline(m, [boundary], display, "draft",
                 {"color": COLORS["draft"], "weight": 3, "fillColor": COLORS["draft"],
                  "fillOpacity": 0.1 if mode == "paint" else 0.15})
    m.fit_bounds([[sw.y, sw.x], [ne.y, ne.x]])
    assets.localize(m)
    assets.trim_map_assets(m)
    return m


LEGEND = ("品红：草稿中的园区边界；黑色虚线：现行（已发布）边界；绿色：新增范围；红色：减少范围；"
          "橙色虚线：被新边界切分的网格；蓝色：综合网格单元（点选模式下橙色填充的单元在园区内）；"
          "绿色细线：其他园区。")


# -- tables ------------------------------------------------------------------------------------
def impact_metrics(impact) -> list[tuple[str, str]]:
    s = impact.summary
    return [
        ("监管对象变化", f"{s.get('entities', 0)}"),
        ("其中执法机构变化", f"{s.get('entities_bureau', 0)}"),
        ("其中网格变化", f"{s.get('entities_grid', 0)}"),
        ("受影响的未结案件", f"{s.get('cases', 0)}"),
        ("被切分的网格", f"{s.get('cut_grids', 0)}"),
        ("增加面积（公顷）", f"{s.get('added_m2', 0.0) / 1e4:,.2f}"),
        ("减少面积（公顷）", f"{s.get('removed_m2', 0.0) / 1e4:,.2f}"),
    ]


def area_m2(geom) -> float:
    """The area of a polygon in m² (in the impact's equal-area projection)."""
    import pyproj

    if geom is None or shapely.is_empty(geom):
        return 0.0
    to = pyproj.Transformer.from_crs(STORE_EPSG, AREA_CRS, always_xy=True)
    return float(shapely.area(shapely.transform(geom, lambda xy: np.column_stack(
        to.transform(xy[:, 0], xy[:, 1])))))


def area_text(m2: float) -> str:
    m2 = float(m2 or 0.0)
    return f"{m2 / 1e6:,.2f} 平方千米" if m2 >= 1e5 else f"{m2:,.0f} 平方米"


def entity_brief(impact, limit: int | None = 10) -> pd.DataFrame:
    """The entities that change hands: name, what changes, before → after."""
    e = impact.entities
    rows = e if limit is None else e.head(limit)
    return pd.DataFrame({
        "监管对象": rows["name"].astype(str),
        "变化": rows["changes"].astype(str),
        "执法机构": [_arrow(a, b) for a, b in zip(rows["bureau_before_name"],
                                                rows["bureau_after_name"], strict=True)],
        "网格": [_arrow(a, b) for a, b in zip(rows["grid_before_name"], rows["grid_after_name"],
                                            strict=True)],
    })


def _arrow(a, b) -> str:
    a, b = str(a or "（无）"), str(b or "（无）")
    return a if a == b else f"{a} → {b}"


def full_tables(impact) -> dict[str, pd.DataFrame]:
    """The impact's four tables with Chinese headers (as in the Excel)."""
    out = {}
    for title, frame, columns in (("监管对象变化", impact.entities, ENTITY_COLUMNS),
                                  ("受影响的未结案件", impact.cases, CASE_COLUMNS),
                                  ("被切分的网格", impact.cut_grids, CUT_COLUMNS),
                                  ("面积变化", impact.areas, AREA_COLUMNS)):
        cols = [c for c in columns if c in frame.columns]
        out[title] = frame[cols].rename(columns=columns).reset_index(drop=True)
    return out


def cut_geometries(layers: dict[str, pd.DataFrame], impact) -> list:
    if impact is None or not len(impact.cut_grids):
        return []
    grids = layers["grids"]
    wanted = set(impact.cut_grids["grid_code"].astype(str))
    return list(grids[grids["code"].astype(str).isin(wanted)].geometry.values)


def drafts_frame(drafts) -> pd.DataFrame:
    from layers.schema import LAYERS
    from layers.versions import describe_changes

    return pd.DataFrame([{
        "草稿编号": d.id, "修改原因": d.note, "编制人": d.author,
        "图层": "、".join(LAYERS[n].title_zh for n in d.layers if n in LAYERS),
        "改动": describe_changes(d.counts) if d.counts else "（尚无改动）",
        "创建时间（北京时间）": cards.beijing_text(d.created_at),
        "保存时间（北京时间）": cards.beijing_text(d.updated_at),
        "可撤销步数": d.undo_depth,
        "冲突": "；".join(d.conflicts) if d.conflicts else "",
    } for d in drafts])


def findings_text(f) -> str:
    """A finding as one line of plain text (for st.markdown through cards.md or a label)."""
    from grids.checks import KIND_ZH, SEVERITY_ZH, layer_zh

    codes = "、".join(str(c) for c in (f.codes or [])[:5])
    area = "" if f.area_m2 is None else f"，约 {f.area_m2:,.0f} 平方米"
    return (f"{SEVERITY_ZH.get(f.severity, f.severity)}·{KIND_ZH.get(f.kind, f.kind)}·"
            f"{layer_zh(f.layer)}（{codes}{area}）：{f.message_zh}")


def versions_frame(generations) -> pd.DataFrame:
    from layers.versions import describe_changes

    return pd.DataFrame([{
        "版本": g.id, "发布时间（北京时间）": cards.beijing_text(g.created_at),
        "发布人": g.actor or "（导入）", "原因": g.note, "来源": g.source,
        "改动": describe_changes(g.changes),
    } for g in reversed(generations)])


def changed_layers(generation) -> list[str]:
    return [n for n, c in (generation.changes or {}).items()
            if any(c.get(k) for k in ("added", "changed", "removed"))]


def diff_table(diff) -> pd.DataFrame:
    from layers.schema import LAYERS
    from layers.versions import keys_of

    spec = LAYERS[diff.layer]
    rows = []
    for what, frame in (("删除或修改前", diff.removed), ("新增或修改后", diff.added)):
        names = (frame["name"].astype(str).tolist() if "name" in frame.columns
                 else [""] * len(frame))
        for key, name in zip(keys_of(spec, frame), names, strict=True):
            rows.append({"状态": what, "编码": key.replace("\x1f", "/"), "名称": name})
    return pd.DataFrame(rows, columns=["状态", "编码", "名称"])


def diff_map(basemap: Basemap, diff, context=()) -> folium.Map:
    """A version's change of a polygon layer: the rows it closed red, the rows it added green."""
    display = Display(basemap)
    geoms = [*(diff.removed.geometry.values if "geometry" in diff.removed else []),
             *(diff.added.geometry.values if "geometry" in diff.added else [])]
    bounds = bounds_of(geoms or list(context))
    sw = display.geom(shapely.Point(bounds[0], bounds[1]))
    ne = display.geom(shapely.Point(bounds[2], bounds[3]))
    m = mapview._base_map(basemap, (sw.y + ne.y) / 2, (sw.x + ne.x) / 2, 11)
    _outline(m, list(context), display, "context",
             {"color": COLORS["county"], "weight": 1.5, "fill": False, "dashArray": "4 4"},
             0.0005)
    for frame, color, label in ((diff.added, COLORS["added"], "本版本新增（新增或修改后）"),
                                (diff.removed, COLORS["removed"], "本版本关闭（删除或修改前）")):
        if "geometry" not in frame or not len(frame):
            continue
        names = frame["name"] if "name" in frame.columns else [""] * len(frame)
        codes = frame["code"] if "code" in frame.columns else [""] * len(frame)
        props = [{"tip": cards.js_html(f"{label}：{n}（{c}）"), "color": color}
                 for n, c in zip(names, codes, strict=True)]
        folium.GeoJson(
            {"type": "FeatureCollection",
             "features": _features(list(frame.geometry.values), props, display)},
            name=cards.js_html(label), control=False,
            style_function=lambda f: {"color": f["properties"]["color"], "weight": 2.5,
                                      "fillColor": f["properties"]["color"],
                                      "fillOpacity": 0.2,
                                      "dashArray": ("6 4" if f["properties"]["color"]
                                                    == COLORS["removed"] else None)},
            tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False), zoom_on_click=False,
        ).add_to(m)
    m.fit_bounds([[sw.y, sw.x], [ne.y, ne.x]])
    assets.localize(m)
    assets.trim_map_assets(m)
    return m

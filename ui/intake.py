"""The intake desk of pages/2_受理.py: where the location of a complaint comes from (a click,
typed or pasted coordinates in a chosen system, a search, a drawn or pasted line/area), what it
is routed to (grids.intake), and the cards, tables and map overlay that show it.

The newest of the location inputs wins: each input sets the location when it changes (widget
callbacks; map clicks and drawings are compared with the last one seen), so a dispatcher can
click, then type, then search, and the card always shows the last thing they did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import folium
import numpy as np
import pandas as pd
import shapely
import streamlit as st

from geo.crs import CrsError, common_systems, parse_crs, to_store
from geo.disc import accuracy_disc
from geo.parse import CoordinateParseError, parse_coordinate_text
from grids.flow import load_categories, load_sources
from grids.intake import (
    NEARBY_RADIUS_M,  # noqa: F401  (the intake page says how far it looked)
    UNSTATED,
    IntakeAnswer,
)
from grids.routing import Router, RoutingInputError
from layers.schema import WORKER_ROLE_ZH
from layers.search import Hit
from ui import assets, cards, mapview
from ui.basemap import Basemap
from ui.page import new_view

TZ = ZoneInfo("Asia/Shanghai")  # times are typed and shown in Beijing time
CHANNELS = ("12369热线", "网络举报", "微信举报", "巡查发现", "在线监控报警", "来信来访", "其他")
OTHER_CRS = "other"
ACCURACY_MAX_M = 50_000
CANDIDATE_COLORS = ("#e53935", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00897b")
NEARBY_ON_MAP = 10
# Session keys of the location state (widget keys are "in_…").
LOC = "_in_loc"  # the current Located
ERR = "_in_loc_error"  # why the last input could not be used
VIEW = "_in_view"  # where to move the map
HITS = "_in_hits"  # the search hits of the current query
FORM = "_in_form"  # which intake form this is: every widget key carries it (see `k`)
AREA_KINDS = ("county", "township", "park", "grid", "community")  # a search hit that is an area


def k(name: str) -> str:
    """The widget key of `name` in the current intake form. A filed call starts a new form
    with new keys, so no field of the previous caller can survive into the next case (a
    widget's value outlives `del session_state[key]` while the browser still shows it)."""
    return f"{name}#{st.session_state.get(FORM, 0)}"


def new_form() -> None:
    """Start the next call: new widget keys, no location, no answer, no search."""
    ss = st.session_state
    old = f"#{ss.get(FORM, 0)}"
    for key in [key for key in ss if isinstance(key, str) and key.endswith(old)]:
        del ss[key]
    for key in (LOC, ERR, HITS, VIEW, "_in_view_now", "_in_seen_click", "_in_seen_drawing",
                "_in_fitted"):
        ss.pop(key, None)
    ss[FORM] = ss.get(FORM, 0) + 1


@dataclass(frozen=True)
class Located:
    """A location as the dispatcher gave it."""

    how: str  # click | text | search | draw | wkt
    x: float  # as given (for an extent: a point inside it, in `crs`)
    y: float
    crs: str
    label: str  # how it was obtained (Chinese)
    note: str = ""  # a swap, a vague area…
    extent: str | None = None  # a line/area as given: WKT in `crs`
    area: tuple[str, str] | None = None  # (kind, code) of a searched township, park, grid…

    @property
    def is_extent(self) -> bool:
        return self.extent is not None or self.area is not None


@dataclass
class Desk:
    """The answer shown for the current location."""

    located: Located
    answer: IntakeAnswer | None = None
    error: str = ""
    extent_store: object = None  # the extent in EPSG:4490 (shapely), for extents
    extra: dict = field(default_factory=dict)


# -- choices -----------------------------------------------------------------------------------
def crs_options(unstated: bool = True) -> list[str]:
    """The systems offered for a location; `unstated` (routing both WGS84 and GCJ-02
    readings and comparing them) only where one location is answered, not for a file."""
    return [UNSTATED] * unstated + [cs.key for cs in common_systems()] + [OTHER_CRS]


def crs_label(key: str) -> str:
    labels = {cs.key: cs.label_zh for cs in common_systems()}
    labels[UNSTATED] = "未说明（比对 WGS84 与 GCJ-02 两种读法）"
    return labels.get(key, "其他 EPSG 代码…" if key == OTHER_CRS else key)


def source_crs(source: str) -> str:
    """The system a location source implies (Amap → GCJ-02…); unstated when it implies none."""
    return load_sources()[source].crs or UNSTATED


def on_source() -> None:
    """A location source brings its usual accuracy and its coordinate system, and re-reads
    whatever was typed in the new system."""
    ss = st.session_state
    src = load_sources()[ss[k("in_source")]]
    ss[k("in_acc")] = float(src.accuracy_m)
    ss[k("in_crs")] = source_crs(ss[k("in_source")])
    on_crs()


def crs_note() -> str:
    """Which system typed numbers are read in, and why (shown under the inputs)."""
    ss = st.session_state
    crs = ss.get(k("in_crs"), UNSTATED)
    source = ss.get(k("in_source"), "unknown")
    implied = source_crs(source)
    label = load_sources()[source].label_zh
    if crs == UNSTATED:
        return ("坐标系未说明：输入的经纬度同时按 WGS84 和 GCJ-02 两种读法查询，"
                "两种读法归属不同时显示为“存在歧义”。")
    if crs == implied:
        return f"坐标按 {crs_label(crs)} 读取（由位置来源“{label}”确定）。"
    usual = crs_label(implied)
    return f"坐标按 {crs_label(crs)} 读取（人工选择；位置来源“{label}”通常为 {usual}）。"


def chosen_crs(choice: str, other: str) -> str:
    """The key of the chosen system; CrsError (Chinese) for an unusable 'other' code."""
    if choice != OTHER_CRS:
        return choice
    if not other.strip():
        raise CrsError("请填写 EPSG 代码，例如 EPSG:4549")
    return parse_crs(other).key


def source_options() -> list[str]:
    return list(load_sources())


def source_label(key: str) -> str:
    src = load_sources()[key]
    system = f"，{crs_label(src.crs)}" if src.crs else ""
    return f"{src.label_zh}（±{src.accuracy_m:g} 米{system}）"


def category_options() -> list[str]:
    return list(load_categories())


def category_label(key: str) -> str:
    c = load_categories()[key]
    return f"{c.label_zh}（移交{c.agency_zh}）" if c.handler == "partner" else c.label_zh


def now_beijing() -> datetime:
    """Now in Beijing, to the minute, without tzinfo (what the date-time widget holds)."""
    return datetime.now(TZ).replace(second=0, microsecond=0, tzinfo=None)


def beijing_iso(value: datetime) -> str:
    aware = value.replace(tzinfo=TZ) if value.tzinfo is None else value.astimezone(TZ)
    return aware.isoformat(timespec="seconds")


# -- setting the location ------------------------------------------------------------------------
def _set(loc: Located, centre: tuple[float, float] | None = None) -> None:
    """Take `loc` as the location; move the map to `centre` (store lon/lat) when given."""
    ss = st.session_state
    ss[LOC] = loc
    ss[ERR] = ""
    if centre is not None:
        ss[VIEW] = {"point": centre, "zoom": 15}


def _fail(message: str) -> None:
    """An input that cannot be used: say why and drop the previous location and its answer,
    so nothing can be filed under a location the dispatcher no longer sees."""
    st.session_state[ERR] = message
    st.session_state.pop(LOC, None)


def on_coordinates() -> None:
    """The typed/pasted coordinate text or its system changed."""
    ss = st.session_state
    text = str(ss.get(k("in_coord"), "") or "").strip()
    if not text:
        loc = ss.get(LOC)
        if loc is not None and loc.how == "text":  # the typed location was erased
            ss.pop(LOC, None)
        return
    try:
        crs = chosen_crs(ss.get(k("in_crs"), UNSTATED),
                         str(ss.get(k("in_crs_other"), "") or ""))
        # Unstated: parsed as WGS84 numbers; grids.intake reads them both ways.
        p = parse_coordinate_text(text, "wgs84" if crs == UNSTATED else crs)
    except (CrsError, CoordinateParseError) as exc:
        _fail(str(exc))
        return
    note = p.note_zh
    if p.swapped:
        note = f"⚠️ 经纬度顺序已对调：{note}" if note else "⚠️ 经纬度顺序已对调"
    # The map moves to the point as understood (swapped back when typed lat first).
    crs = crs if crs == UNSTATED else p.crs
    _set(Located("text", p.x, p.y, crs, f"输入坐标（{crs_label(crs)}）", note),
         centre=(p.lon, p.lat))


def on_crs() -> None:
    """A new system re-reads whatever was typed in the old one (coordinates or WKT)."""
    loc = st.session_state.get(LOC)
    if loc is not None and loc.how == "wkt":
        on_wkt()
    else:
        on_coordinates()


def hit_location(hit: Hit) -> Located:
    """A searched place: an area (township, park, grid, community…) is answered as the whole
    area — its bureau and every grid and worker in it —, an entity or address as its point."""
    if hit.kind in AREA_KINDS:
        note = (f"按{hit.kind_zh}“{hit.label}”整个范围受理：列出责任执法机构及范围内全部网格和"
                "网格员。来电人能说出具体位置时，请在地图上单击确定。")
        return Located("search", hit.lon, hit.lat, "cgcs2000",
                       f"搜索：{hit.kind_zh} {hit.label}", note, area=(hit.kind, hit.code))
    note = ""
    if hit.kind == "road":
        note = f"道路“{hit.label}”上的一点；请向来电人确认门牌或在地图上单击确定具体位置。"
    return Located("search", hit.lon, hit.lat, "cgcs2000",
                   f"搜索：{hit.kind_zh} {hit.label}", note)


def on_search(index) -> None:
    ss = st.session_state
    query = str(ss.get(k("in_query"), "") or "").strip()
    hits = index.search(query) if query else []
    hits = [h for h in hits if h.kind != "worker"]  # a person is not a place
    ss[HITS] = hits
    ss[k("in_hit")] = 0
    if hits:
        _set(hit_location(hits[0]))
        _view_hit(hits[0])
    elif query:
        _fail(f"没有找到“{query}”：可搜索企业名称、统一社会信用代码、乡镇/街道、园区或网格编码。")


def on_hit() -> None:
    ss = st.session_state
    hits = ss.get(HITS) or []
    i = int(ss.get(k("in_hit"), 0) or 0)
    if 0 <= i < len(hits):
        _set(hit_location(hits[i]))
        _view_hit(hits[i])


def _view_hit(hit: Hit) -> None:
    st.session_state[VIEW] = ({"bbox": hit.bbox} if hit.bbox else
                              {"point": (hit.lon, hit.lat), "zoom": 16})


def on_wkt() -> None:
    ss = st.session_state
    text = str(ss.get(k("in_wkt"), "") or "").strip()
    if not text:
        return
    try:
        crs = chosen_crs(ss.get(k("in_crs"), UNSTATED),
                         str(ss.get(k("in_crs_other"), "") or ""))
        if crs == UNSTATED:
            raise CrsError("粘贴范围前请选择坐标系（WGS84、GCJ-02 等）")
        geom = parse_extent(text)
    except (CrsError, ValueError) as exc:
        _fail(str(exc))
        return
    c = geom.representative_point()
    _set(Located("wkt", c.x, c.y, crs, f"粘贴的范围（{crs_label(crs)}）", extent=geom.wkt))
    st.session_state[VIEW] = {"bbox_given": (geom.bounds, crs)}


def parse_extent(text: str):
    """A line or an area from WKT or GeoJSON text; ValueError (Chinese) otherwise."""
    text = text.strip()
    try:
        if text.startswith("{"):
            data = json.loads(text)
            data = data.get("geometry", data) if data.get("type") == "Feature" else data
            geom = shapely.geometry.shape(data)
        else:
            geom = shapely.from_wkt(text)
    except (ValueError, TypeError, AttributeError, KeyError, shapely.errors.GEOSException) as exc:
        raise ValueError(f"无法识别的范围：请粘贴 WKT（如 LINESTRING (…)）或 GeoJSON。（{exc}）"
                         ) from exc
    if geom.is_empty or geom.geom_type not in ("LineString", "MultiLineString", "Polygon",
                                               "MultiPolygon"):
        raise ValueError("范围应为线（LINESTRING）或面（POLYGON），收到 " + geom.geom_type)
    if not geom.is_valid:
        raise ValueError("范围不是有效的线或面（例如面自相交），请检查坐标")
    return geom


def track_map(map_key: str, basemap: Basemap, draw: bool) -> None:
    """Take a new click (or, when drawing, a finished drawing) on the map as the location."""
    ss = st.session_state
    value = ss.get(map_key) or {}
    if not isinstance(value, dict):
        return
    if draw:
        drawing = value.get("last_active_drawing")
        if drawing and drawing != ss.get("_in_seen_drawing"):
            ss["_in_seen_drawing"] = drawing
            try:
                geom = parse_extent(json.dumps(drawing))
            except ValueError as exc:
                _fail(str(exc))
                return
            c = geom.representative_point()
            _set(Located("draw", c.x, c.y, basemap.click_crs, "地图上绘制的范围",
                         extent=geom.wkt))
        return
    click = value.get("last_clicked")
    if click:
        point = (float(click["lng"]), float(click["lat"]))
        if point != ss.get("_in_seen_click"):
            ss["_in_seen_click"] = point
            _set(Located("click", point[0], point[1], basemap.click_crs, "地图单击"))


def current() -> Located | None:
    return st.session_state.get(LOC)


# -- answering ------------------------------------------------------------------------------------
def answer(svc, actor, loc: Located, accuracy_m: float, category: str) -> Desk:
    """The intake answer through the service (which checks the actor may take complaints)."""
    desk = Desk(loc)
    try:
        if loc.area is not None:
            desk.answer, desk.extent_store = svc.intake_area(actor, *loc.area,
                                                             category=category)
        elif loc.is_extent:
            desk.answer, desk.extent_store = svc.intake_extent(actor, loc.extent, crs=loc.crs,
                                                               category=category)
        else:
            desk.answer = svc.intake(actor, loc.x, loc.y, crs=loc.crs,
                                     accuracy_m=float(accuracy_m), category=category)
    except (RoutingInputError, CrsError, ValueError) as exc:
        desk.error = str(exc)
        return desk
    if len(desk.answer.duplicates):
        dups = desk.answer.duplicates
        desk.extra["duplicate_points"] = {
            str(i): (float(x), float(y))
            for i, x, y in zip(dups["id"], dups["lon"], dups["lat"], strict=True)}
    return desk


def map_view(basemap: Basemap) -> dict | None:
    """The view the map should move to: set once when a typed or searched location arrives,
    then passed unchanged (streamlit-folium moves only when it changes)."""
    ss = st.session_state
    wanted = ss.pop(VIEW, None)
    if wanted:
        if "bbox_given" in wanted:
            (minx, miny, maxx, maxy), crs = wanted["bbox_given"]
            xs, ys = to_store([minx, maxx], [miny, maxy], crs)
            wanted = {"bbox": (float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1]))}
        if "bbox" in wanted:
            ss["_in_view_now"] = new_view(bbox=wanted["bbox"], basemap=basemap)
        else:
            ss["_in_view_now"] = new_view(point=wanted["point"], zoom=wanted["zoom"],
                                          basemap=basemap)
    return ss.get("_in_view_now")


# -- what the page shows --------------------------------------------------------------------------
def location_text(loc: Located, desk: Desk | None) -> str:
    """One line (markdown-safe) about where the location came from and where it was routed."""
    if loc.area is not None:
        text = f"**{cards.md(loc.label)}**：整个区域"
    elif loc.is_extent:
        kind = shapely.from_wkt(loc.extent).geom_type
        shape = "线" if "Line" in kind else "面"
        text = f"**{cards.md(loc.label)}**：{shape}范围"
    else:
        text = (f"**{cards.md(loc.label)}**：{loc.x:.6f}, {loc.y:.6f}"
                if abs(loc.x) < 1000 else f"**{cards.md(loc.label)}**：{loc.x:.2f}, {loc.y:.2f}")
    if desk is not None and desk.answer is not None:
        lon, lat = desk.answer.route["point"]["cgcs2000"]
        same = (not loc.is_extent and loc.area is None
                and f"{loc.x:.6f}, {loc.y:.6f}" == f"{lon:.6f}, {lat:.6f}")
        if same:  # WGS84 and CGCS2000 agree to the centimetre here: nothing was converted
            text += "（CGCS2000 与 WGS84 相同，无需换算）"
        else:
            word = "范围中心" if loc.is_extent else "换算为"
            text += f" → {word} CGCS2000 {lon:.6f}, {lat:.6f}"
    return text


def referral_html(a: IntakeAnswer) -> str:
    if not a.referral:
        return ""
    c = a.category
    return (f'{cards.CSS}<div class="gm-card gm-warn gm-referral">'
            f'<span class="gm-badge">转办</span><b>{cards.esc(c.label_zh)}</b> 不属生态环境部门'
            f'直接办理，应移交 <b>{cards.esc(a.referral)}</b>'
            f'<div class="gm-meta">{cards.esc(c.note_zh)}。下方属地信息供移交时告知对方。</div>'
            "</div>")


def candidates_html(route: dict, bureau_names: dict[str, str]) -> str:
    """Every candidate of an ambiguous answer side by side, coloured like on the map."""
    cands = route.get("candidates") or []
    if not cands:
        return ""
    head = "".join(
        f'<th><span class="gm-swatch" style="background:{_color(i)}"></span>候选 {i + 1}</th>'
        for i in range(len(cands)))

    def ref(d):
        return ("—" if not d else f'{cards.esc(d.get("name"))}<br>'
                f'<span class="gm-code">{cards.esc(d.get("code"))}</span>')

    def workers(ws):
        return "<br>".join(f'{cards.esc(WORKER_ROLE_ZH.get(w.get("role"), w.get("role")))} '
                           f'{cards.esc(w.get("name"))} {cards.esc(w.get("phone"))}'
                           for w in ws) or "—"

    def chain(c):
        return " → ".join(cards.esc(bureau_names.get(b, b)) for b in c.get("chain", [])) or "—"

    rows = [
        ("县（市）、区", [ref(c.get("county")) for c in cands]),
        ("乡镇/街道", [ref(c.get("township")) for c in cands]),
        ("网格", [ref(c.get("grid")) for c in cands]),
        ("网格员", [workers(c.get("workers", [])) for c in cands]),
        ("园区", [ref(c.get("park")) for c in cands]),
        ("责任执法机构", [ref(c.get("bureau")) for c in cands]),
        ("上级", [chain(c) for c in cands]),
        ("依据", ["<br>".join(cards.esc(r) for r in c.get("reasons", [])) for c in cands]),
    ]
    body = "".join(f"<tr><th>{cards.esc(k)}</th>" + "".join(f"<td>{v}</td>" for v in vals)
                   + "</tr>" for k, vals in rows)
    style = ("<style>.gm-cands{border-collapse:collapse;width:100%;font-size:0.85rem}"
             ".gm-cands th,.gm-cands td{border:1px solid #d0d7de;padding:4px 6px;"
             "vertical-align:top;text-align:left}.gm-cands thead th{background:#f6f8fa}"
             ".gm-swatch{display:inline-block;width:10px;height:10px;margin-right:4px;"
             "border-radius:2px}.gm-code{color:#57606a;font-family:monospace;font-size:0.8rem}"
             "</style>")
    return (f'{style}<table class="gm-cands"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _color(i: int) -> str:
    return CANDIDATE_COLORS[i % len(CANDIDATE_COLORS)]


NEARBY_COLUMNS = {"distance_m": "距离（米）", "name": "名称", "industry": "行业",
                  "permit_class": "排污许可", "inspection_class": "监管类别",
                  "id": "统一社会信用代码"}
DUPLICATE_COLUMNS = {"id": "案件编号", "reported_at": "上报时间", "category_zh": "类别",
                     "status_zh": "状态", "distance_m": "距离（米）", "same_category": "同类",
                     "description": "描述"}


def nearby_table(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=list(NEARBY_COLUMNS)).rename(columns=NEARBY_COLUMNS)
    out["排污许可"] = out["排污许可"].replace("", "无")
    out.insert(0, "序号", range(1, len(out) + 1))
    return out


def duplicates_table(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=list(DUPLICATE_COLUMNS)).rename(columns=DUPLICATE_COLUMNS)
    out["同类"] = out["同类"].map({True: "是", False: "否"})
    return out


def overlay(router: Router, basemap: Basemap, desk: Desk | None) -> folium.FeatureGroup:
    """What the map highlights: the point and its accuracy disc (or the extent), the grid it is
    routed to — or every candidate's grid in its own colour with its number — the nearest
    supervised entities and the possible duplicates. Every text on it goes through
    `cards.js_html` (folium writes tooltips into a JavaScript template literal)."""
    group = folium.FeatureGroup(name="受理", control=False)
    if desk is None or desk.answer is None:
        return group
    route = desk.answer.route
    show = basemap.to_display

    def geojson(geom, style: dict, tip: str | None = None) -> None:
        if geom is None or geom.is_empty:
            return
        if basemap.shifted:
            geom = shapely.transform(geom, lambda xy: np.column_stack(show(xy[:, 0], xy[:, 1])))
        folium.GeoJson(shapely.to_geojson(shapely.set_precision(geom, 1e-6)),
                       style_function=lambda _f, s=style: dict(s), control=False,
                       tooltip=folium.Tooltip(cards.js_html(tip)) if tip else None).add_to(group)

    def at(lon, lat) -> list[float]:
        x, y = show([lon], [lat])
        return [float(np.asarray(y).ravel()[0]), float(np.asarray(x).ravel()[0])]

    def label(lon, lat, text: str, color: str) -> None:
        folium.Marker(at(lon, lat), icon=folium.DivIcon(
            html=f'<div style="background:{color};color:#fff;font:bold 12px sans-serif;'
                 'padding:1px 6px;border-radius:3px;white-space:nowrap;'
                 f'box-shadow:0 0 2px #000;display:inline-block">{cards.js_html(text)}</div>',
            icon_size=(60, 18), icon_anchor=(30, 9)), interactive=False).add_to(group)

    cands = route.get("candidates") or []
    near = _near_area(desk)
    if cands:
        for i, c in enumerate(cands):
            geom, name = _candidate_area(router, c)
            color = _color(i)
            geojson(geom, {"color": color, "weight": 4, "fillColor": color, "fillOpacity": 0.12,
                           "dashArray": "6 4"}, f"候选 {i + 1}：{name}")
            if geom is not None:
                # The label goes on the part of the candidate the location may be in.
                piece = geom.intersection(near) if near is not None else geom
                p = (piece if not piece.is_empty else geom).representative_point()
                label(p.x, p.y, f"候选 {i + 1}", color)
    elif route.get("grid"):
        geom, _ = _candidate_area(router, route)
        geojson(geom, dict(mapview.HIGHLIGHT))
    if desk.extent_store is not None:
        geojson(desk.extent_store, {"color": "#d81b60", "weight": 5, "fillColor": "#d81b60",
                                    "fillOpacity": 0.15})
    else:
        lon, lat = route["point"]["cgcs2000"]
        radius = float(route["point"]["input"].get("accuracy_m") or 0)
        if radius > 0:
            geojson(accuracy_disc(lon, lat, radius).exterior,
                    {"color": "#e53935", "weight": 2, "dashArray": "4 4", "fill": False})
        folium.CircleMarker(at(lon, lat), interactive=False, **mapview.POINT).add_to(group)
        for i, reading in enumerate(route.get("readings") or []):
            # Both readings of a pair whose system was not stated, each with its name.
            rx, ry = reading["cgcs2000"]
            folium.CircleMarker(at(rx, ry), radius=6, color=_color(i), weight=3,
                                fill=True, fill_opacity=0.9, interactive=False).add_to(group)
            label(rx, ry, "WGS84" if reading["crs"] == "wgs84" else "GCJ-02", _color(i))
    for row in desk.answer.nearby.head(NEARBY_ON_MAP).itertuples(index=False):
        folium.CircleMarker(
            at(row.lon, row.lat), radius=9, color="#ff6f00", weight=3, fill=False,
            tooltip=folium.Tooltip(
                cards.js_html(f"附近监管对象：{row.name}（{row.distance_m:.0f} 米）")),
        ).add_to(group)
    if len(desk.answer.duplicates):
        cases = desk.extra.get("duplicate_points", {})
        for cid, (lon, lat) in cases.items():
            # A diamond outline around the incident's own marker (an HTML icon: the polygon
            # markers of folium would load leaflet-dvf from a CDN).
            folium.Marker(at(lon, lat), icon=folium.DivIcon(
                html='<div style="width:16px;height:16px;border:3px solid #6a1b9a;'
                     'transform:rotate(45deg);box-sizing:border-box"></div>',
                icon_size=(16, 16), icon_anchor=(8, 8)),
                tooltip=folium.Tooltip(cards.js_html(f"可能重复：{cid}"))).add_to(group)
    assets.localize(group)
    return group


def _near_area(desk: Desk):
    """Where the location may be: its accuracy disc (around each reading of a pair whose
    system was not stated), or the extent (slightly widened)."""
    if desk.extent_store is not None:
        return desk.extent_store.buffer(1e-4)
    route = desk.answer.route
    radius = float(route["point"]["input"].get("accuracy_m") or 0)
    points = [r["cgcs2000"] for r in route.get("readings") or []] or [route["point"]["cgcs2000"]]
    if radius <= 0 and len(points) == 1:
        return None
    return shapely.union_all([accuracy_disc(lon, lat, max(radius, 30.0)) for lon, lat in points])


def fit_ambiguous(desk: Desk | None, basemap: Basemap) -> None:
    """Once per new ambiguous location: show its whole accuracy disc (or extent), so every
    candidate around it is in view."""
    ss = st.session_state
    if desk is None or desk.answer is None or not desk.answer.route.get("candidates"):
        return
    key = (desk.located, desk.answer.route["point"]["input"].get("accuracy_m"))
    if ss.get("_in_fitted") == key:
        return
    ss["_in_fitted"] = key
    area = _near_area(desk)
    if area is not None:
        minx, miny, maxx, maxy = area.bounds
        pad_x, pad_y = (maxx - minx) * 0.3 + 1e-3, (maxy - miny) * 0.3 + 1e-3
        ss[VIEW] = {"bbox": (minx - pad_x, miny - pad_y, maxx + pad_x, maxy + pad_y)}


def _candidate_area(router: Router, part: dict):
    """The most specific area of an answer (grid, else township, else county) and its name."""
    snap = router.snapshot
    for key, layer in (("grid", "grids"), ("township", "townships"), ("county", "counties"),
                       ("sea_area", "sea_areas")):
        ref = part.get(key)
        if ref and layer in snap.layers:
            rows = snap[layer][snap[layer]["code"].astype(str) == str(ref["code"])]
            if len(rows):
                return rows.geometry.values[0], str(ref["name"])
    return None, ""


# -- recording ------------------------------------------------------------------------------------
def record_answer(desk: Desk) -> dict:
    """The routing answer to store with a new case. An extent's answer says where its centre
    was given, so the record has a location as given even for a line or an area."""
    route = desk.answer.route
    if not desk.located.is_extent:
        return route
    loc = desk.located
    given = loc.extent
    if given is None and desk.extent_store is not None:  # a searched area: its outline
        given = shapely.to_wkt(desk.extent_store, rounding_precision=7)
    point = dict(route["point"])
    point["input"] = {**point.get("input", {}), "x": loc.x, "y": loc.y, "crs": loc.crs,
                      "accuracy_m": 0.0, "extent_given": given}
    if loc.area is not None:
        point["input"]["area"] = {"kind": loc.area[0], "code": loc.area[1]}
    return {**route, "point": point}


def case_fields(desk: Desk, category: str, description: str, reported_at: datetime,
                channel: str, reporter: str) -> dict:
    fields = {"category": category, "description": description.strip(),
              "reported_at": beijing_iso(reported_at), "source": channel,
              "reporter": reporter.strip()}
    if desk.extent_store is not None:
        fields["extent_wkt"] = shapely.to_wkt(desk.extent_store, rounding_precision=8)
    return fields


def duplicate_reference(channel: str, reported_at: datetime, reporter: str,
                        description: str) -> str:
    """How a linked repeat report is named in the original case's audit trail: it gets no case
    of its own, so its channel, time, caller and words are kept there."""
    who = f"，{reporter.strip()}" if reporter.strip() else ""
    words = description.strip().replace("\n", " ")
    words = words[:80] + ("…" if len(words) > 80 else "")
    return f"{channel}来电（{beijing_iso(reported_at)}{who}）：{words}"


# -- duplicates before filing ---------------------------------------------------------------------
def likely_duplicates(desk: Desk | None) -> pd.DataFrame | None:
    """The open cases of the same category within the category's duplicate rule."""
    if desk is None or desk.answer is None or desk.answer.duplicates is None:
        return None
    dups = desk.answer.duplicates
    if not len(dups) or "likely" not in dups:
        return dups.iloc[0:0]
    return dups[dups["likely"].astype(bool)].reset_index(drop=True)


def duplicates_card(likely: pd.DataFrame, category: str) -> str:
    """The warning on the card itself: these open cases may be this same matter."""
    from grids.flow import duplicate_rule  # the rule the dispatcher is told about

    rule = duplicate_rule(category)
    rows = "".join(
        f'<li><b>{cards.esc(r.id)}</b>　{cards.esc(_local(r.reported_at))}　'
        f'{cards.esc(r.status_zh)}　相距 {float(r.distance_m):.0f} 米'
        f'<div class="gm-meta">{cards.esc(str(r.description)[:120])}</div></li>'
        for r in likely.itertuples(index=False))
    return (f'{cards.CSS}<div class="gm-card gm-warn gm-dups">'
            f'<span class="gm-badge">可能重复</span><b>附近有 {len(likely)} 件同类未结案件</b>'
            f'<div class="gm-meta">规则：{cards.esc(load_categories()[category].label_zh)}'
            f' {rule.radius_m:g} 米内、{rule.days:g} 天内（{cards.esc(rule.note_zh)}）。'
            "请选择并入原案件，或新建并说明理由。</div>"
            f'<ol style="margin:4px 0 0 1.2em;padding:0">{rows}</ol></div>')


def duplicate_choice_label(value: str) -> str:
    if value.startswith("link:"):
        return f"是同一事项：并入案件 {value[5:]}"
    return "不是同一事项：登记为新案件（须说明理由）"


GRID_COLUMNS = {"code": "网格编码", "name": "网格名称", "township": "乡镇/街道",
                "workers": "网格员", "phones": "联系电话"}


def grids_table(route: dict) -> pd.DataFrame:
    """Every grid an extent or area touches, with its workers (the `grids` of the answer)."""
    rows = []
    for g in route.get("grids") or []:
        workers = g.get("workers") or []
        town = g.get("township")
        rows.append({
            "code": g.get("code"), "name": g.get("name"),
            "township": town.get("name") if isinstance(town, dict) else (town or ""),
            "workers": "、".join(str(w.get("name", "")) for w in workers),
            "phones": "、".join(str(w.get("phone", "")) for w in workers),
        })
    return pd.DataFrame(rows, columns=list(GRID_COLUMNS)).rename(columns=GRID_COLUMNS)


def _local(value: object) -> str:
    from ui.cases import local_time  # one formatting of times for every dispatcher page

    return local_time(value)

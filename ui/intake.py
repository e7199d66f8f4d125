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
    IntakeAnswer,
)
from grids.routing import Router, RoutingInputError
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

    @property
    def is_extent(self) -> bool:
        return self.extent is not None


@dataclass
class Desk:
    """The answer shown for the current location."""

    located: Located
    answer: IntakeAnswer | None = None
    error: str = ""
    extent_store: object = None  # the extent in EPSG:4490 (shapely), for extents
    extra: dict = field(default_factory=dict)


# -- choices -----------------------------------------------------------------------------------
def crs_options() -> list[str]:
    return [cs.key for cs in common_systems()] + [OTHER_CRS]


def crs_label(key: str) -> str:
    labels = {cs.key: cs.label_zh for cs in common_systems()}
    return labels.get(key, "其他 EPSG 代码…" if key == OTHER_CRS else key)


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
    label, metres = load_sources()[key]
    return f"{label}（默认 ±{metres:g} 米）"


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
    st.session_state[ERR] = message


def on_coordinates() -> None:
    """The typed/pasted coordinate text or its system changed."""
    ss = st.session_state
    text = str(ss.get("in_coord", "") or "").strip()
    if not text:
        return
    try:
        crs = chosen_crs(ss.get("in_crs", "wgs84"), str(ss.get("in_crs_other", "") or ""))
        p = parse_coordinate_text(text, crs)
    except (CrsError, CoordinateParseError) as exc:
        _fail(str(exc))
        return
    note = p.note_zh
    if p.swapped:
        note = f"⚠️ 经纬度顺序已对调：{note}" if note else "⚠️ 经纬度顺序已对调"
    # The map moves to the point as understood (swapped back when typed lat first).
    _set(Located("text", p.x, p.y, p.crs, f"输入坐标（{crs_label(p.crs)}）", note),
         centre=(p.lon, p.lat))


def on_crs() -> None:
    """A new system re-reads whatever was typed in the old one (coordinates or WKT)."""
    loc = st.session_state.get(LOC)
    if loc is not None and loc.how == "wkt":
        on_wkt()
    else:
        on_coordinates()


def hit_location(hit: Hit) -> Located:
    note = ""
    if hit.kind in ("township", "grid", "park", "county"):
        note = (f"取{hit.kind_zh}“{hit.label}”内的一点；来电人描述的具体位置请在地图上单击确定，"
                "并相应放大精度半径。")
    return Located("search", hit.lon, hit.lat, "cgcs2000",
                   f"搜索：{hit.kind_zh} {hit.label}", note)


def on_search(index) -> None:
    ss = st.session_state
    query = str(ss.get("in_query", "") or "").strip()
    hits = index.search(query) if query else []
    hits = [h for h in hits if h.kind != "worker"]  # a person is not a place
    ss[HITS] = hits
    ss["in_hit"] = 0
    if hits:
        _set(hit_location(hits[0]))
        _view_hit(hits[0])
    elif query:
        _fail(f"没有找到“{query}”：可搜索企业名称、统一社会信用代码、乡镇/街道、园区或网格编码。")


def on_hit() -> None:
    ss = st.session_state
    hits = ss.get(HITS) or []
    i = int(ss.get("in_hit", 0) or 0)
    if 0 <= i < len(hits):
        _set(hit_location(hits[i]))
        _view_hit(hits[i])


def _view_hit(hit: Hit) -> None:
    st.session_state[VIEW] = ({"bbox": hit.bbox} if hit.bbox else
                              {"point": (hit.lon, hit.lat), "zoom": 16})


def on_wkt() -> None:
    ss = st.session_state
    text = str(ss.get("in_wkt", "") or "").strip()
    if not text:
        return
    try:
        crs = chosen_crs(ss.get("in_crs", "wgs84"), str(ss.get("in_crs_other", "") or ""))
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
        if loc.is_extent:
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
    if loc.is_extent:
        kind = shapely.from_wkt(loc.extent).geom_type
        shape = "线" if "Line" in kind else "面"
        text = f"**{cards.md(loc.label)}**：{shape}范围"
    else:
        text = (f"**{cards.md(loc.label)}**：{loc.x:.6f}, {loc.y:.6f}"
                if abs(loc.x) < 1000 else f"**{cards.md(loc.label)}**：{loc.x:.2f}, {loc.y:.2f}")
    if desk is not None and desk.answer is not None:
        lon, lat = desk.answer.route["point"]["cgcs2000"]
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
        return "<br>".join(f'{cards.esc(cards.ROLE_ZH.get(w.get("role"), w.get("role")))} '
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
    """Where the location may be: its accuracy disc, or the extent (slightly widened)."""
    if desk.extent_store is not None:
        return desk.extent_store.buffer(1e-4)
    route = desk.answer.route
    radius = float(route["point"]["input"].get("accuracy_m") or 0)
    if radius <= 0:
        return None
    lon, lat = route["point"]["cgcs2000"]
    return accuracy_disc(lon, lat, radius)


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
    point = dict(route["point"])
    point["input"] = {**point.get("input", {}), "x": loc.x, "y": loc.y, "crs": loc.crs,
                      "accuracy_m": 0.0, "extent_given": loc.extent}
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

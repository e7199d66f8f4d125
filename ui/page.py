"""Pieces both pages use: the sidebar settings and the city map element."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import streamlit as st
from streamlit_folium import st_folium

from grids.access import Actor, can
from grids.routing import Router
from grids.service import Gridmap
from layers.display import city_bounds
from ui import assets, auth, mapdata, mapview, server
from ui.basemap import Basemap, load_settings
from ui.cards import BEIJING_NOTE, beijing_text

MAP_KEY = "citymap"
ACCURACY_CHOICES = (0, 20, 50, 100, 300, 500, 1000, 3000)
MAP_PAGE = "app.py"
WORKER_PAGE = "pages/1_网格员.py"
INTAKE_PAGE = "pages/2_受理.py"
CASES_PAGE = "pages/3_案件.py"
BATCH_PAGE = "pages/4_批量分派.py"
# Every file uploader's limit (Streamlit's server.maxUploadSize), said in its label.
UPLOAD_LIMIT_ZH = f"不超过 {server.SERVER_CONFIG['server.maxUploadSize']} MB"


@dataclass
class Options:
    basemap: Basemap
    accuracy_m: float


def options() -> Options:
    """The sidebar's settings as of this run. Read from the session before the widgets are drawn:
    the pages draw the map first, so its iframe starts loading before the widgets' code."""
    settings = load_settings()
    key = st.session_state.get("basemap", settings.default)
    return Options(settings.get(key), float(st.session_state.get("accuracy", 0)))


def sidebar(router: Router | None, actor: Actor, accuracy: bool = True) -> None:
    """The signed-in user, the pages they may open, and the settings widgets (their values
    are read by `options` at the next run). The dispatcher pages have an accuracy of their own
    (`accuracy=False`); pages without a map pass no router."""
    settings = load_settings()
    keys = [b.key for b in settings.basemaps]
    with st.sidebar:
        # Our own links: Streamlit's automatic ones would be labelled with the file names.
        auth.sidebar_links(actor)
        if router is None:
            return
        st.divider()
        st.subheader("地图设置")
        for problem in settings.problems:
            st.warning(problem)
        key = st.selectbox(
            "底图", keys, index=keys.index(settings.default),
            format_func=lambda k: settings.get(k).label, key="basemap",
            help="内网默认不加载任何在线底图。"
                 "配置 GRIDMAP_TIANDITU_KEY 或 GRIDMAP_TILE_URL 后可选。",
        )
        if settings.get(key).notice:
            st.info(settings.get(key).notice)
        # A selectbox like the one above, not a number input: one kind of widget less for the
        # browser to fetch before the map appears.
        if accuracy:
            st.selectbox(
                "点击位置精度", ACCURACY_CHOICES, key="accuracy", persist_state="session",
                format_func=lambda m: f"±{m} 米" if m else "精确位置（0 米）",
                help="大于 0 时按该半径判断：跨越边界即显示所有候选归属（存在歧义），"
                     "不会自动指定。",
            )
        snap = router.snapshot
        counts = snap.counts()
        st.caption(
            f"图层版本 {snap.generation.id}（{beijing_text(snap.generation.created_at)}"
            f"{BEIJING_NOTE}）· "
            f"网格 {counts.get('grids', 0):,} · 监管对象 {counts.get('entities', 0):,} · "
            f"网格员 {counts.get('workers', 0):,}"
        )


class Click(NamedTuple):
    """A click the map reported: where (map coordinates) and its number (`seq`, from
    gridmap.js), so the same place clicked again — a marker, after a search hit — is a new
    click. A click without a number (another sender) has seq 0."""

    lat: float
    lng: float
    seq: int = 0


def last_click(key: str = MAP_KEY) -> Click | None:
    """The last clicked point in map coordinates, as the component reported it: a click on the
    map, on a marker or cluster, or "在此处查询归属" in a popup (static/gridmap/gridmap.js)."""
    value = st.session_state.get(key) or {}
    click = value.get("last_clicked") if isinstance(value, dict) else None
    if not click:
        return None
    try:
        seq = int(click.get("n") or 0)
    except (TypeError, ValueError):
        seq = 0
    return Click(float(click["lat"]), float(click["lng"]), seq)


def case_page_path() -> str:
    """The URL path Streamlit gives the case page ("pages/3_案件.py" → "案件")."""
    return re.sub(r"^\d+_", "", Path(CASES_PAGE).stem)


def follow_case_link(value, key: str, actor: Actor) -> None:
    """An incident popup's "打开案件" link, clicked: gridmap.js sends {open_case: {id, n}} with
    the map's value (a link in the component's sandboxed iframe cannot navigate the page, and
    a page load would lose the session: a half-typed intake). Switch to the case page with the
    case selected, once per click (`n`), for roles that may read cases."""
    wanted = value.get("open_case") if isinstance(value, dict) else None
    if not isinstance(wanted, dict) or not str(wanted.get("id") or "").strip():
        return
    token = (str(wanted["id"]), str(wanted.get("n")))
    seen = f"_{key}_case_link"
    if st.session_state.get(seen) == token:
        return
    st.session_state[seen] = token
    if can(actor, "case.read"):
        st.switch_page(CASES_PAGE, query_params={"case": token[0]})


def new_view(bbox=None, point=None, zoom: int = 16, basemap: Basemap | None = None) -> dict:
    """A view to move the map to. The tiny jitter makes streamlit-folium move again even when
    the same place is chosen twice (it only moves when the centre changes)."""
    if bbox is not None:
        centre, zoom = mapview.view_for_bbox(bbox)
    else:
        centre = [point[1], point[0]]
    if basemap is not None and basemap.shifted:
        x, y = basemap.to_display([centre[1]], [centre[0]])
        centre = [float(y[0]), float(x[0])]
    jitter = random.uniform(-1e-7, 1e-7)
    return {"center": [centre[0] + jitter, centre[1]], "zoom": zoom}


def city_map(svc: Gridmap, actor: Actor, router: Router, options: Options, highlight=None,
             view: dict | None = None, key: str = MAP_KEY, clicks: bool = True,
             draw: bool = False, hidden: tuple[str, ...] = ()):
    """Publish the map data (once per generation), build the map, refuse anything that would
    load from another host, and show it. Only clicks come back (`clicks`: on the map, on a
    marker or cluster, or a popup's "在此处查询归属" — see `last_click`), so panning and
    zooming never rerun the script; with `draw` the line/area tools are on and only a finished
    drawing comes back (`last_active_drawing`, in the basemap's coordinates). `hidden` layers
    start switched off (the batch page hides the open incidents among its own dots). An
    incident popup's link to its case switches to the case page (`follow_case_link`)."""
    svc.map_router(actor)  # the city map's data files are for the roles that may see it
    # Open incidents on the map: those the actor may read (none for a planner), with the time
    # limit of their step and overdue as the case list computes them.
    readable = can(actor, "case.read")
    incidents = svc.map_incidents(actor) if readable else None
    try:
        data = mapdata.publish(svc.url, router, options.basemap, incidents,
                               audience=mapdata.audience(actor))
    except OSError as exc:
        st.error(f"无法写入地图数据文件（{mapdata.CACHE_DIR}）：{exc}")
        st.stop()
    m = mapview.build_map(data, options.basemap, city_bounds(router.snapshot),
                          clicks=clicks and not draw, hidden=hidden,
                          case_page=case_page_path() if readable else "")
    if draw:
        from ui.draw import add_draw

        add_draw(m)
    try:
        assets.ensure_offline(m, allowed_hosts=options.basemap.hosts)
        if highlight is not None:
            assets.ensure_offline(highlight)
    except assets.OfflineAssetError as exc:
        st.error(str(exc))
        st.stop()
    view = view or {}
    value = st_folium(
        m, key=key, height=mapview.MAP_HEIGHT, use_container_width=True,
        returned_objects=(["last_active_drawing"] if draw else ["last_clicked"] if clicks else []),
        feature_group_to_add=highlight,
        center=view.get("center"), zoom=view.get("zoom"),
    )
    follow_case_link(value, key, actor)
    return value

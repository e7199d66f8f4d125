"""网格员工作台 — one grid worker's view: their grid units on the map, their supervised
entities, the open incidents in their units, and the Excel roster of all of it.

A grid worker opens on their own units (and cannot choose another worker); a leader may choose
the workers of the units they lead; dispatchers, bureaus, admins and leadership any worker.
?worker=<id> preselects one.
"""

from __future__ import annotations

import streamlit as st
from streamlit_folium import st_folium

from grids import portfolio
from grids.access import can
from ui import assets, cards, mapview, page, state

st.set_page_config(page_title="网格员工作台 · 南通市生态环境执法网格地图",
                   page_icon="🪪", layout="wide")
svc, actor, router = state.load("worker.view")
options = page.options()
city = can(actor, "map.city")  # roles without the city map see their own units only
workers = svc.workers(actor)
if not len(workers):
    st.warning("当前图层中没有可查看的网格员（账号关联的花名册编号可能已不在当前花名册中，"
               "请联系系统管理员）。")
    page.sidebar(None, actor)
    st.stop()

ids = workers["id"].tolist()
labels = dict(zip(workers["id"], workers["label"], strict=True))
wanted = st.query_params.get("worker")
# The address wins when it names another worker than the one it named before (a link).
if "worker" not in st.session_state or (
        wanted in labels and wanted != st.session_state.get("_worker_from_url")):
    st.session_state["worker"] = wanted if wanted in labels else ids[0]
    st.session_state["_worker_from_url"] = wanted
worker_id = st.session_state["worker"]
st.query_params["worker"] = worker_id  # the address names the worker shown: a shareable link

mine = svc.worker_portfolio(actor, worker_id)
w = mine.worker
if st.session_state.get("_worker_view_for") != worker_id:  # move the map once per worker
    st.session_state["_worker_view_for"] = worker_id
    st.session_state["_worker_view"] = (page.new_view(bbox=mine.bbox, basemap=options.basemap)
                                        if mine.bbox else None)

top = st.container()
map_col, info_col = st.columns([3, 1.25], gap="small")
with map_col:
    if city:
        page.city_map(svc, actor, router, options, key="workermap", clicks=False,
                      highlight=mapview.highlight_group(options.basemap,
                                                        mine.grids.geometry.values),
                      view=st.session_state.get("_worker_view"))
    else:
        units = mapview.units_map(options.basemap, mine.grids, mine.entities, mine.incidents)
        assets.ensure_offline(units, allowed_hosts=options.basemap.hosts)
        st_folium(units, key="unitsmap", height=mapview.MAP_HEIGHT, use_container_width=True,
                  returned_objects=[])

with top:
    st.markdown("#### 网格员工作台")
    if len(ids) > 1:
        st.selectbox("网格员（可输入姓名、编号或乡镇筛选）", ids, key="worker",
                     format_func=lambda i: labels.get(i, i))

with info_col:
    st.markdown(f"**{cards.md(w['name'])}**（{cards.md(w['roles'])}，编号 {cards.md(w['id'])}）"
                f"  \n电话 {cards.md(w['phone'])}")
    c1, c2, c3 = st.columns(3)
    c1.metric("负责网格", len(mine.grids))
    c2.metric("监管对象", len(mine.entities))
    c3.metric("未结事件", len(mine.incidents))
    st.caption(f"图层版本 {mine.generation['generation']}"
               f"（{cards.beijing_text(mine.generation['created_at'])}，北京时间）。"
               "地图上青色轮廓为其负责的网格。")
    st.download_button(  # the workbook is written when the button is pressed
        "下载 Excel 花名册（网格、监管对象、未结事件）",
        lambda: svc.roster_excel(actor, worker_id),
        file_name=f"网格员花名册_{w['name']}_{w['id']}.xlsx",
        mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        width="stretch",
    )

grids_tab, entities_tab, incidents_tab = st.tabs(
    [f"负责网格（{len(mine.grids)}）", f"监管对象（{len(mine.entities)}）",
     f"未结事件（{len(mine.incidents)}）"])
with grids_tab:
    st.dataframe(mine.grids[list(portfolio.GRID_COLUMNS)].rename(columns=portfolio.GRID_COLUMNS),
                 hide_index=True, width="stretch")
with entities_tab:
    f1, f2 = st.columns(2)
    industries = f1.multiselect("行业", sorted(mine.entities["industry"].unique()),
                                key="f_industry", placeholder="全部行业")
    permits = f2.multiselect("排污许可类别", [p for p in ("重点管理", "简化管理", "登记管理", "")
                                            if p in set(mine.entities["permit_class"])],
                             format_func=lambda p: p or "无", key="f_permit",
                             placeholder="全部类别")
    shown = portfolio.filter_entities(mine.entities, industries, permits)
    st.caption(f"显示 {len(shown)} / {len(mine.entities)} 家")
    st.dataframe(shown.rename(columns=portfolio.ENTITY_COLUMNS), hide_index=True,
                 width="stretch")
with incidents_tab:
    if len(mine.incidents):
        cols = [c for c in portfolio.INCIDENT_COLUMNS if c in mine.incidents]
        st.dataframe(mine.incidents[cols].rename(columns=portfolio.INCIDENT_COLUMNS),
                     hide_index=True, width="stretch")
    else:
        st.info("其负责的网格内没有未结事件。")

page.sidebar(router if city else None, actor)

"""南通市生态环境综合执法网格地图 — the city map: every layer, click-to-route, search. The grid
worker page is pages/1_网格员.py (Streamlit multipage; the sidebar links both, in Chinese).

Run with `streamlit run app.py` (or `make run`). The store is GRIDMAP_STORE (default
data/gridmap.gpkg); basemaps are configured in the environment (ui/basemap.py).

The map is drawn first and the widgets after it (their values are read from the session), so
the map's iframe starts loading while Streamlit still fetches the widgets' code.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from grids.access import can
from ui import auth, cards, page, selection, state

# An emoji icon, not a :material: one: Streamlit fetches those from fonts.gstatic.com.
st.set_page_config(page_title="南通市生态环境执法网格地图", page_icon="🗺️",
                   layout="wide")

svc, actor = auth.signed_in()
if not can(actor, "map.city"):  # a grid worker lands on their own units
    first = auth.landing(actor)
    if first is not None:
        st.switch_page(first[0])
svc, actor, router = state.load("map.city")
options = page.options()

query = str(st.session_state.get("query", "") or "")
hits = svc.search_index(actor).search(query) if query.strip() else []
# A new list of hits starts at its first hit.
choice_key = "hit_" + hashlib.sha1(query.strip().encode()).hexdigest()[:12]
choice = int(st.session_state.get(choice_key, 0) or 0)
hit = hits[min(choice, len(hits) - 1)] if hits else None

view = selection.track(hit, page.last_click(), options, searched=bool(query.strip()))
chosen = selection.current(svc, actor, router, options, svc.bureau_names(actor))

top = st.container()
map_col, card_col = st.columns([3, 1.25], gap="small")
with map_col:
    page.city_map(svc, actor, router, options,
                  highlight=chosen.highlight if chosen else None, view=view)

with top:
    st.markdown("#### 南通市生态环境综合执法 · 网格地图")
    st.text_input(
        "搜索", key="query", label_visibility="collapsed",
        placeholder="搜索：企业名称、统一社会信用代码、网格编码、乡镇/街道、网格员姓名或电话",
    )
    if hits:
        st.selectbox(
            f"找到 {len(hits)} 条结果（地图已定位到所选结果）", range(len(hits)),
            key=choice_key,
            format_func=lambda i: f"{hits[i].kind_zh}｜{hits[i].label}　{hits[i].detail}",
        )
    elif query.strip():
        st.caption(f"没有找到“{cards.md(query.strip())}”。"
                   "可搜索企业名称、信用代码、网格编码、乡镇/街道、网格员姓名或电话。")

with card_col:
    if chosen is None:
        st.info("在地图上任意位置单击，即可查看该位置的县（市）、区、乡镇/街道、网格、"
                "网格员和责任执法机构。")
    else:
        st.html(chosen.card)
        if chosen.worker_id and can(actor, "worker.view"):
            st.page_link(page.WORKER_PAGE, label="打开该网格员的工作台",
                         query_params={"worker": chosen.worker_id})
        if chosen.answer is not None:
            with st.expander("原始 JSON（与 gridmap route --json 相同）"):
                st.json(chosen.answer)

page.sidebar(router, actor)

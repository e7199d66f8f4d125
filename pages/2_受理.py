"""投诉受理 — the 12369 dispatcher's desk: locate a complaint (map click, typed or pasted
coordinates in their system, a search, or a drawn/pasted line or area), see who is responsible,
the likely sources nearby and possible duplicates, and register the case (or link the call to
an open case instead).

The page only shows and asks: locating and answering are ui/intake.py calls into geo/ and
grids/; cases are written by grids/cases.py.
"""

from __future__ import annotations

import streamlit as st

from grids.access import PermissionDenied
from grids.flow import CaseError, load_sources
from layers.store import StoreError
from ui import cards, intake, page, state

st.set_page_config(page_title="投诉受理 · 南通市生态环境执法网格地图", page_icon="☎️",
                   layout="wide")
svc, actor, router = state.load("case.create")
options = page.options()
index = svc.search_index(actor)
names = svc.bureau_names(actor)
ss = st.session_state
KEEP = "session"  # a half-typed call survives a look at the case list and back
k = intake.k  # every field's key carries the form number: a filed call starts a new form

ss.setdefault(k("in_source"), "unknown")
ss.setdefault(k("in_crs"), intake.source_crs(ss[k("in_source")]))
ss.setdefault(k("in_acc"), float(load_sources()[ss[k("in_source")]].accuracy_m))
ss.setdefault(k("in_time"), intake.now_beijing())


extent_mode = bool(ss.get(k("in_extent_on"), False))
map_key = k("extentmap" if extent_mode else "intakemap")
intake.track_map(map_key, options.basemap, draw=extent_mode)
loc = intake.current()
category = ss.get(k("in_cat")) or "other"
desk = None
if loc is not None:
    desk = intake.answer(svc, actor, loc, float(ss.get(k("in_acc")) or 0), category)
    intake.fit_ambiguous(desk, options.basemap)

top = st.container()
map_col, side = st.columns([2.5, 1.5], gap="small")
with map_col:
    page.city_map(svc, actor, router, options, key=map_key, clicks=not extent_mode,
                  draw=extent_mode,
                  highlight=intake.overlay(router, options.basemap, desk),
                  view=intake.map_view(options.basemap))

with top:
    st.markdown("#### 投诉受理（12369 热线 / 网络举报）")
    created = ss.pop("_in_created", None)
    if created:
        st.success(f"已登记案件 {created}，已进入“已受理（待派遣）”。")
        st.page_link(page.CASES_PAGE, label=f"打开案件 {created}",
                     query_params={"case": created}, icon="📋")
    linked = ss.pop("_in_linked", None)
    if linked:
        st.success(f"已作为重复举报并入案件 {cards.md(linked)}（未新建案件，已记入其办理记录）。")
        st.page_link(page.CASES_PAGE, label=f"打开案件 {linked}",
                     query_params={"case": linked}, icon="📋")

with side:
    st.markdown("##### ① 事发位置")
    c3, c4 = st.columns([3, 2])
    c3.selectbox("位置来源", intake.source_options(), key=k("in_source"), persist_state=KEEP,
                 format_func=intake.source_label, on_change=intake.on_source,
                 help="位置来源决定坐标系：高德/腾讯/微信为 GCJ-02，百度为 BD-09，手机 GPS 为 "
                      "WGS84；未说明时两种读法比对。")
    c4.number_input("精度半径（米）", min_value=0.0, max_value=float(intake.ACCURACY_MAX_M),
                    step=10.0, format="%.0f", key=k("in_acc"), persist_state=KEEP,
                    disabled=extent_mode,
                    help="位置的不确定范围。范围跨越边界时显示所有候选归属，不会自动指定。")
    c1, c2 = st.columns([3, 2])
    c1.text_input(
        "坐标（可直接粘贴）", key=k("in_coord"), persist_state=KEEP,
        on_change=intake.on_coordinates,
        placeholder="120.8637, 32.0112 或 32.0112,120.8637",
        help="经度、纬度两个数，顺序可颠倒（按数值范围识别并提示）；也可带“东经/北纬”、"
             "度分秒。高斯投影坐标填东坐标、北坐标（米）。",
    )
    c2.selectbox("坐标系", intake.crs_options(), key=k("in_crs"), persist_state=KEEP,
                 format_func=intake.crs_label, on_change=intake.on_crs,
                 help="高德/腾讯/微信位置为 GCJ-02，百度为 BD-09，手机 GPS 为 WGS84。")
    st.caption(cards.md(intake.crs_note()))
    if ss.get(k("in_crs")) == intake.OTHER_CRS:
        st.text_input("EPSG 代码", key=k("in_crs_other"), persist_state=KEEP,
                      on_change=intake.on_crs, placeholder="如 EPSG:4528（3 度带第 40 带，含带号）")
    st.text_input("搜索", key=k("in_query"), persist_state=KEEP, on_change=intake.on_search,
                  args=(index,),
                  placeholder="企业名称、统一社会信用代码、乡镇/街道、园区、网格编码")
    hits = ss.get(intake.HITS) or []
    if hits:
        st.selectbox(f"找到 {len(hits)} 条（已定位到所选结果）", range(len(hits)), key=k("in_hit"),
                     persist_state=KEEP, on_change=intake.on_hit,
                     format_func=lambda i: f"{hits[i].kind_zh}｜{hits[i].label}　{hits[i].detail}")
    st.toggle("按线/面范围受理（河段、烟羽等）", key=k("in_extent_on"), persist_state=KEEP,
              help="打开后在地图左上角选择画线或画面，或在下方粘贴 WKT/GeoJSON。"
                   "范围跨越两个以上县（市）、区时为跨县案件，由市执法局牵头。")
    if extent_mode:
        st.text_area("粘贴范围（WKT 或 GeoJSON，坐标系同上）", key=k("in_wkt"), persist_state=KEEP,
                     on_change=intake.on_wkt, height=80,
                     placeholder="LINESTRING (120.65 32.15, 120.75 32.15)")
    if ss.get(intake.ERR):
        st.error(cards.md(ss[intake.ERR]))  # may quote what was typed
    if loc is None:
        st.info("在地图上单击事发位置，或输入/粘贴坐标，或搜索企业、地址、道路、乡镇、社区、园区。")
    else:
        st.caption(intake.location_text(loc, desk))
        if loc.note:
            st.caption(cards.md(loc.note))
    if desk is not None:
        if desk.error:
            st.html(cards.error_card(desk.error))
        else:
            st.html(cards.route_card(desk.answer.route, names, title="责任归属"))
            if desk.answer.route.get("candidates"):
                st.caption("地图上以不同颜色标出各候选网格；地图下方“候选归属对比”并排列出。")
            if desk.extent_store is not None and desk.answer.route.get("grids"):
                st.caption(f"范围内共 {len(desk.answer.route['grids'])} 个网格，"
                           "全部网格及网格员见地图下方“范围内网格”。")

    st.markdown("##### ② 受理登记")
    st.selectbox("事件类别", intake.category_options(), key=k("in_cat"), persist_state=KEEP,
                 index=None, format_func=intake.category_label, placeholder="请选择事件类别")
    if desk is not None and desk.answer is not None and desk.answer.referral:
        st.html(intake.referral_html(desk.answer))
    c5, c6, c7 = st.columns([1.8, 2.2, 1], vertical_alignment="bottom")
    c5.selectbox("受理渠道", intake.CHANNELS, key=k("in_channel"), persist_state=KEEP)
    c6.datetime_input("举报时间（北京时间）", key=k("in_time"), persist_state=KEEP, step=60,
                      format="YYYY-MM-DD")
    c7.button("现在", key=k("in_now"), help="把举报时间设为当前时间", width="stretch",
              on_click=lambda: ss.__setitem__(k("in_time"), intake.now_beijing()))
    st.text_input("举报人及联系方式（可不填）", key=k("in_reporter"), persist_state=KEEP)
    st.text_area("事件描述", key=k("in_desc"), persist_state=KEEP, height=90,
                 placeholder="例：石港镇印染厂后面冒黑烟，气味刺鼻")
    st.caption(f"受理人：{cards.md(actor.label)}（按登录账号记录）")

    ready = desk is not None and desk.answer is not None and not ss.get(intake.ERR)
    likely = intake.likely_duplicates(desk) if ready and ss.get(k("in_cat")) else None
    choice = "new"
    if likely is not None and len(likely):
        # Before filing, as FixMyStreet shows nearby reports: the dispatcher decides whether
        # this call is one of these open cases.
        st.html(intake.duplicates_card(likely, ss[k("in_cat")]))
        options_dup = [*[f"link:{i}" for i in likely["id"].astype(str)], "new"]
        choice = st.radio("此来电是否为上述案件的同一事项？", options_dup, key=k("in_dup_choice"),
                          index=None, format_func=intake.duplicate_choice_label)
        if choice == "new":
            st.text_input("新建理由（必填，例如：不同污染源、不同时段）", key=k("in_new_reason"),
                          max_chars=500)
    label = "并入所选案件（不新建）" if str(choice or "").startswith("link:") else "登记为新案件"
    if st.button(label, type="primary", disabled=not ready, width="stretch", key=k("in_file")):
        problems = [msg for ok, msg in (
            (ss.get(k("in_cat")), "请选择事件类别"),
            (str(ss.get(k("in_desc")) or "").strip(), "请填写事件描述"),
            (choice is not None, "附近有同类未结案件：请选择并入原案件，或选择新建并说明理由"),
            (choice != "new" or likely is None or not len(likely)
             or str(ss.get(k("in_new_reason")) or "").strip(), "新建案件须填写理由"),
        ) if not ok]
        if problems:
            st.error("；".join(problems))
        elif str(choice).startswith("link:"):
            original = str(choice)[5:]
            ref = intake.duplicate_reference(ss[k("in_channel")], ss[k("in_time")],
                                             str(ss.get(k("in_reporter")) or ""),
                                             ss[k("in_desc")])
            try:
                svc.link_duplicate(actor, ref, original)
            except (CaseError, PermissionDenied, StoreError) as exc:
                st.error(cards.md(exc))
            else:
                intake.new_form()
                ss["_in_linked"] = original
                st.rerun()
        else:
            fields = intake.case_fields(desk, ss[k("in_cat")], ss[k("in_desc")],
                                        ss[k("in_time")], ss[k("in_channel")],
                                        str(ss.get(k("in_reporter")) or ""))
            if likely is not None and len(likely):
                fields["not_duplicate_of"] = likely["id"].astype(str).tolist()
                fields["not_duplicate_reason"] = str(ss.get(k("in_new_reason")) or "").strip()
            try:
                cid = svc.create_case(actor, intake.record_answer(desk), fields)
            except (CaseError, PermissionDenied, StoreError) as exc:
                st.error(cards.md(exc))
            else:
                intake.new_form()
                ss["_in_created"] = cid
                st.rerun()
    if not ready:
        st.caption("确定事发位置并得到归属结果后才能登记。")

with map_col:
    if desk is not None and desk.answer is not None:
        a = desk.answer
        route = a.route
        tabs = [f"附近监管对象（{len(a.nearby)}）", f"附近未结案件（{len(a.duplicates)}）"]
        if route.get("grids"):
            tabs.insert(0, f"范围内网格（{len(route['grids'])}）")
        if route.get("candidates"):
            tabs.insert(0, f"候选归属对比（{len(route['candidates'])}）")
        shown = list(st.tabs(tabs))
        if route.get("candidates"):
            with shown.pop(0):
                st.html(intake.candidates_html(route, names))
        if route.get("grids"):
            with shown.pop(0):
                st.dataframe(intake.grids_table(route), hide_index=True, width="stretch")
        with shown[0]:
            if len(a.nearby):
                reach = max(intake.NEARBY_RADIUS_M, float(ss.get(k("in_acc")) or 0))
                st.caption(f"{'范围' if loc.is_extent else '位置'}周边 {reach:g} 米内，"
                           "按距离排列（可能的污染来源）；地图上橙色圆圈为最近的 "
                           f"{min(len(a.nearby), intake.NEARBY_ON_MAP)} 家。")
                st.dataframe(intake.nearby_table(a.nearby), hide_index=True, width="stretch")
            else:
                st.info("周边 1 公里内没有监管对象。")
        with shown[1]:
            if len(a.duplicates):
                st.caption("附近最近的未结案件（各类别；地图上紫色菱形）。同类且在重复规则范围内的"
                           "已在右侧列出，登记前须选择并入或新建。")
                st.dataframe(intake.duplicates_table(a.duplicates), hide_index=True,
                             width="stretch")
            else:
                st.info("附近最近 7 天内没有未结案件。")

page.sidebar(router, actor, accuracy=False)

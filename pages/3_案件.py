"""案件办理 — the case console on one screen, as 数字城管/12345 consoles are: the list with the
time left on each case (coloured by the share of its limit left, overdue on top), filters by
state, bureau, grid, category, overdue and "待我办理", a map of the listed cases with the
selected one ringed, and the case beside them: its record, the answer it was routed with (and
its layer generation), the steps the workflow allows next — each with its result text and, on
site, photos — manual reassignment with a mandatory reason (干预留痕) and its trail.
Nothing is edited in place: every action appends an event. ?case=<id> opens a case.

The list is filtered, sorted and paged in the store (grids.cases.case_page), whatever the
number of cases.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st
from streamlit_folium import st_folium

from grids.cases import CaseFilter
from grids.deadlines import LEVEL_COLOR, LEVEL_ZH
from grids.evidence import MAX_BYTES
from grids.flow import load_categories, load_flow
from ui import cards, cases, page, state

st.set_page_config(page_title="案件办理 · 南通市生态环境执法网格地图", page_icon="📋",
                   layout="wide")
svc, actor, router = state.load("case.read")
options = page.options()
generation = router.snapshot.generation.id
names = svc.bureau_names(actor)
flow = load_flow()
ss = st.session_state
now = datetime.now(UTC)

st.markdown("#### 案件办理")
message = ss.pop(cases.MSG, None)
cases.show_message(message, "top")  # about a case no longer on this page

counts = svc.case_counts(actor, now)
st.html(cases.counts_html(counts))

open_states = [s for s in flow.states if s != "closed"]
ss.setdefault("cs_status", open_states)
f1, f2, f3, f4, f5 = st.columns([2.4, 1.6, 1.4, 1.2, 1.4])
statuses = f1.multiselect("状态", list(flow.states), select_all=False, key="cs_status",
                          format_func=flow.label, placeholder="全部状态")
bureaus = sorted(names)
bureau = f2.selectbox("责任执法机构", [None, *bureaus], key="cs_bureau_filter",
                      format_func=lambda c: "全部" if c is None else names.get(c, c))
grid_text = f3.text_input("网格（编码或名称）", key="cs_grid_filter",
                          help="网格编码的前几位（如乡镇编码）或网格名称中的字")
category = f4.selectbox("类别", [None, *load_categories()], key="cs_category",
                        format_func=lambda c: "全部" if c is None
                        else load_categories()[c].label_zh)
order = f5.selectbox("排序", list(cases.ORDER_ZH), key="cs_order",
                     format_func=cases.ORDER_ZH.get)
g1, g2, g3, g4 = st.columns([1, 1, 3.2, 1.2], vertical_alignment="center")
overdue_only = g1.toggle("仅超时", key="cs_overdue")
mine = g2.toggle("待我办理", key="cs_mine",
                 help="处在本岗位可办理环节的案件（如调度员：待派遣；网格员：待核实）")
text = g3.text_input("案件编号或描述", key="cs_text", label_visibility="collapsed",
                     placeholder="按案件编号或描述查找")

grid_codes = cases.grid_codes_matching(router, grid_text)
filt = CaseFilter(statuses=tuple(statuses) or None, bureau=bureau, grids=grid_codes,
                  category=category, overdue=overdue_only, mine=mine, text=text, order=order)
g4.number_input("页码", min_value=1, step=1, key="cs_page", label_visibility="collapsed",
                help="每页 50 件")
page_no = int(ss.get("cs_page", 1) or 1) - 1
found = svc.case_page(actor, filt, now=now, page=page_no, size=cases.PAGE_SIZE)
rows = cases.labelled(found.rows, router)

# The case on screen is the page's own (`_cs_current`), not the chooser's state: a step moves
# a case in the list (its deadline) or out of it ("待我办理"), and the console must stay on it.
ids = rows["id"].tolist()
current = ss.get("_cs_current")
if current == ss.pop(cases.LEFT, None):
    current = None  # reassigned out of the actor's scope: not to be read again
wanted = st.query_params.get("case")
linked = bool(wanted) and wanted != ss.get("_cs_from_url")  # a link (?case=…), not our own
if linked:
    current = wanted
if "_cs_goto" in ss:  # a dot clicked on the map
    current, linked = ss.pop("_cs_goto"), True
view = (filt, page_no)  # the list the person asked for
if current is not None and current not in ids and (linked or ss.get("_cs_view") == view):
    # A link opens its case even when the filters or the page hide it; the case being worked
    # on stays when a step takes it off this list. Changing the filters starts from the list.
    try:
        svc.case(actor, current)
    except Exception:  # not there, or not the actor's (refused and audited)
        current = None
    else:
        ids = [current, *ids]
ss["_cs_view"] = view

list_col, case_col = st.columns([1.35, 1], gap="medium")
with list_col:
    legend = "　".join(
        f'<span style="background:{LEVEL_COLOR[k]};color:{"#000" if k == "amber" else "#fff"};'
        f'padding:0 6px;border-radius:3px">{LEVEL_ZH[k]}</span>'
        for k in ("overdue", "red", "amber", "green"))
    st.html(f'<div style="font-size:0.85rem">共 {found.total} 件，第 {found.page + 1}/'
            f'{found.pages} 页。剩余时限按本环节时限剩余比例着色：{legend}'
            "（紧急：剩余不足 20%；临近：不足 50%）。时间均为北京时间。</div>")
    if rows.empty:
        st.info("没有符合条件的案件。")
    else:
        picked = st.dataframe(cases.list_styler(rows), hide_index=True, width="stretch",
                              height=300, on_select="rerun", selection_mode="single-row",
                              key="cs_table")
        chosen_rows = picked.selection.rows if picked and picked.selection else []
        if not chosen_rows:  # deselected: the same row picked again is a new pick
            ss.pop("_cs_table_pick", None)
        elif ss.get("_cs_table_pick") != chosen_rows[0]:
            ss["_cs_table_pick"] = chosen_rows[0]
            current = rows["id"].iloc[chosen_rows[0]]
    if ids and current not in ids:
        current = ids[0]
    selected = ss["_cs_current"] = current if ids else None
    view = st_folium(cases.cases_map(options.basemap, rows, selected), key="cs_map",
                     height=300, use_container_width=True,
                     returned_objects=["last_object_clicked"])
    hit = cases.clicked_case(view, rows, options.basemap)
    if hit and ss.get("_cs_map_pick") != (hit, str(view.get("last_object_clicked"))):
        ss["_cs_map_pick"] = (hit, str(view.get("last_object_clicked")))
        if hit != selected:
            ss["_cs_goto"] = hit
            st.rerun()

if not ids:
    page.sidebar(None, actor)
    st.stop()

case_id = selected
st.query_params["case"] = ss["_cs_from_url"] = case_id
case = svc.case(actor, case_id)
case = cases.labelled(cases.with_deadlines(case.to_frame().T, now, flow), router).iloc[0]

with case_col:
    # Labels that do not change with the clock or a step: the chooser's state is its label.
    label_of = dict(zip(rows["id"], rows["category_zh"] + "｜"
                        + rows["description"].fillna("").str.slice(0, 30), strict=True))
    ss["cs_case"] = case_id
    st.selectbox("当前案件", ids, key="cs_case", label_visibility="collapsed",
                 format_func=lambda i: f"{i}　{label_of.get(i, '')}",
                 on_change=lambda: ss.__setitem__("_cs_current", ss["cs_case"]))
    st.markdown(f"##### 案件 {cards.md(case_id)}　{cards.md(case['status_label'])}")
    st.html(cases.record_html(case, case["deadline"], bool(case["overdue"]),
                              case["countdown"], case["level"]))
    mine_now = svc.can_take(actor, case)
    steps = flow.steps_for(case["status"], actor.role) if mine_now else []
    if steps:
        st.markdown("**下一步**")
        st.text_area("办理结果（核实情况、处理结果；部分环节必填）", key="cs_reason", height=70,
                     placeholder="如：现场核实，印染厂废气处理设施未开启，已拍照取证")
        if any(flow.evidence.get((case["status"], t)) for t in steps):
            st.file_uploader("现场照片/附件（JPEG、PNG、WebP、PDF，单个不超过 10 MB，最多 6 个）",
                             type=["jpg", "jpeg", "png", "webp", "gif", "pdf"],
                             accept_multiple_files=True, key=cases.files_key(),
                             max_upload_size=MAX_BYTES // (1024 * 1024))
        confirm = ss.get(cases.CONFIRM)
        if confirm and confirm[0] == case_id and confirm[2] == case["status"]:
            st.warning(f"确认“{flow.steps[(case['status'], confirm[1])]}”？结案后办理流程结束，"
                       "不能再推进或改派。办理结果将记入办理记录。")
            y, n = st.columns(2)
            y.button("确认结案", key="cs_confirm_yes", type="primary", width="stretch",
                     on_click=cases.do_step,
                     args=(svc, actor, case_id, confirm[1], case["status"], True))
            n.button("取消", key="cs_confirm_no", width="stretch", on_click=cases.cancel_confirm)
        else:
            cols = st.columns(len(steps))
            for col, target in zip(cols, steps, strict=True):
                col.button(flow.steps[(case["status"], target)], key=f"cs_step_{target}",
                           on_click=cases.do_step,
                           args=(svc, actor, case_id, target, case["status"]),
                           type="primary" if target != "reported" else "secondary",
                           width="stretch")
    elif case["status"] == "closed":
        st.info("案件已结案，办理流程结束。")
    else:
        waiting = [flow.steps[(case["status"], t)] for t in flow.next_states(case["status"])]
        st.info("当前环节由其他岗位办理：" + "、".join(waiting))
    cases.show_message(message, "steps")
    st.html(cases.assignment_html(case, router))

    if case["status"] != "closed" and svc.can_take(actor, case, "case.reassign"):
        reassigning = bool(message and message[2] == "reassign")
        with st.expander("人工改派（须填写理由，记入办理记录）", expanded=reassigning,
                         key="cs_reassign_box"):
            snap = router.snapshot
            grid_list = snap["grids"]["code"].astype(str).tolist()
            grid_names = dict(zip(grid_list, snap["grids"]["name"], strict=True))
            bureau_codes = snap["bureaus"]["code"].astype(str).tolist()
            grid_now = case["assigned_grid_code"] if isinstance(case["assigned_grid_code"],
                                                                 str) else None
            bureau_now = (case["assigned_bureau_code"]
                          if isinstance(case["assigned_bureau_code"], str) else None)
            if ss.get("_cs_reassign_for") != case_id:  # start from the current assignment
                ss["_cs_reassign_for"] = case_id
                ss["cs_grid"] = grid_now
                ss["cs_bureau"] = bureau_now
            st.selectbox("改派到网格", [None, *grid_list], key="cs_grid",
                         format_func=lambda c: "（不变）" if c is None
                         else f"{c} {grid_names.get(c, '')}")
            st.selectbox("改派到执法机构", [None, *bureau_codes], key="cs_bureau",
                         format_func=lambda c: "（不变）" if c is None else names.get(c, c))
            st.text_area("改派理由（必填）", key="cs_why", height=70,
                         placeholder="如：企业实际位于相邻网格；属园区执法局管辖")
            st.button("确认改派", key="cs_reassign", on_click=cases.do_reassign,
                      args=(svc, actor, case_id, grid_now, bureau_now))
            cases.show_message(message, "reassign")

    cases.attachments_view(svc, actor, case_id)
    with st.expander("登记时的责任归属与复核", expanded=False):
        answer = cases.stored_answer(case)
        gen = int(case["generation"])
        st.html(cards.route_card(answer, names, title=f"登记时的责任归属（图层版本 {gen}）"))
        if gen != generation:
            st.caption(f"当前图层版本为 {generation}；本案件按版本 {gen} 分派，以上为当时的答案。")
        if st.button("按登记时的图层版本复核", key="cs_reproduce",
                     help="用登记时的图层版本重新计算，核对与存档答案是否一致。"):
            same, diffs = cases.reproduce(svc, actor, case)
            if same:
                st.success(f"复核一致：按图层版本 {gen} 重新计算，与存档答案相同。")
            else:
                st.error("复核不一致：" + cards.md("；".join(diffs)))

st.markdown("**办理记录**（只追加，不可修改；办理结果、人工改派的理由、原承办均在其中）")
events = svc.case_events(actor, case_id)
st.dataframe(cases.events_table(events, router), hide_index=True, width="stretch")

page.sidebar(None, actor)

"""案件办理 — every case with its state and time limit; one case's record, the answer it was
routed with (and its layer generation), its audit trail, the steps the workflow allows next and
manual reassignment with a mandatory reason (干预留痕). Nothing is edited in place: every action
appends an event. ?case=<id> opens a case.
"""

from __future__ import annotations

import streamlit as st

from grids.flow import load_flow
from ui import cards, cases, page, state

st.set_page_config(page_title="案件办理 · 南通市生态环境执法网格地图", page_icon="📋",
                   layout="wide")
svc, actor, router = state.load("case.read")
generation = router.snapshot.generation.id
names = svc.bureau_names(actor)
flow = load_flow()
ss = st.session_state

st.markdown("#### 案件办理")
message = ss.pop(cases.MSG, None)

everything = cases.load_cases(svc, actor, router)
if everything.empty:
    st.info("还没有案件。可在“投诉受理”页面登记，或用“批量分派”导入。")
    page.sidebar(None, actor)
    st.stop()

open_ = everything[everything["status"] != "closed"]
m1, m2, m3, m4 = st.columns(4)
m1.metric("全部案件", len(everything))
m2.metric("未结案件", len(open_))
m3.metric("超时未办", int(open_["overdue"].sum()))
m4.metric("待派遣", int((everything["status"] == "reported").sum()))

f1, f2, f3, f4, f5 = st.columns([2.2, 1, 2, 1.6, 1.6])
statuses = f1.multiselect("状态", list(flow.states), key="cs_status", format_func=flow.label,
                          placeholder="全部状态")
overdue_only = f2.toggle("仅超时", key="cs_overdue")
bureaus = sorted(everything["assigned_bureau_code"].dropna().unique())
bureau = f3.selectbox("责任执法机构", [None, *bureaus], key="cs_bureau_filter",
                      format_func=lambda c: "全部" if c is None else names.get(c, c))
grid = f4.text_input("网格（编码或名称）", key="cs_grid_filter")
text = f5.text_input("案件编号或描述", key="cs_text")
shown = cases.filter_cases(everything, statuses, overdue_only, bureau, grid, text)
st.caption(f"显示 {len(shown)} / {len(everything)} 件，最新在前。")
st.dataframe(cases.list_table(shown), hide_index=True, width="stretch", height=280)

ids = shown["id"].tolist()
wanted = st.query_params.get("case")
# A link (?case=…) opens that case even when the filters hide it.
if wanted and wanted in set(everything["id"]) and wanted not in ids:
    ids = [wanted, *ids]
if not ids:
    st.info("没有符合条件的案件。")
    page.sidebar(None, actor)
    st.stop()
if wanted in ids and ss.get("_cs_from_url") != wanted:
    ss["cs_case"] = wanted
    ss["_cs_from_url"] = wanted
if ss.get("cs_case") not in ids:
    ss["cs_case"] = ids[0]
# Category and words, not the state: the state is in the heading below and changes.
labels = dict(zip(everything["id"], everything["category_zh"] + "｜"
                  + everything["description"].fillna("").str.slice(0, 40), strict=True))
case_id = st.selectbox("查看案件", ids, key="cs_case",
                       format_func=lambda i: f"{i}　{labels.get(i, '')}")
st.query_params["case"] = case_id
case = everything.set_index("id").loc[case_id]
case["id"] = case_id

st.divider()
badge = "⚠️ 已超时 · " if case["overdue"] else ""
st.markdown(f"##### 案件 {cards.md(case_id)}　{badge}{cards.md(case['status_label'])}")
left, right = st.columns([1.25, 1], gap="medium")
with left:
    st.html(cases.record_html(case, case["deadline"], bool(case["overdue"])))
    st.html(cases.assignment_html(case, router))
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

with right:
    st.caption(f"办理人：{cards.md(actor.label)}（按登录账号自动记入办理记录）")
    mine = svc.can_take(actor, case)
    steps = flow.steps_for(case["status"], actor.role) if mine else []
    if steps:
        st.markdown("**下一步**")
        st.text_input("说明（可不填）", key="cs_reason",
                      placeholder="如：已电话通知网格员、现场核实情况")
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

    if case["status"] != "closed" and svc.can_take(actor, case, "case.reassign"):
        reassigning = bool(message and message[2] == "reassign")
        with st.expander("人工改派（须填写理由，记入办理记录）", expanded=reassigning,
                         key="cs_reassign_box"):
            snap = router.snapshot
            grid_codes = snap["grids"]["code"].astype(str).tolist()
            grid_names = dict(zip(grid_codes, snap["grids"]["name"], strict=True))
            bureau_codes = snap["bureaus"]["code"].astype(str).tolist()
            grid_now = case["assigned_grid_code"] if isinstance(case["assigned_grid_code"],
                                                                 str) else None
            bureau_now = (case["assigned_bureau_code"]
                          if isinstance(case["assigned_bureau_code"], str) else None)
            if ss.get("_cs_reassign_for") != case_id:  # start from the current assignment
                ss["_cs_reassign_for"] = case_id
                ss["cs_grid"] = grid_now
                ss["cs_bureau"] = bureau_now
            st.selectbox("改派到网格", [None, *grid_codes], key="cs_grid",
                         format_func=lambda c: "（不变）" if c is None
                         else f"{c} {grid_names.get(c, '')}")
            st.selectbox("改派到执法机构", [None, *bureau_codes], key="cs_bureau",
                         format_func=lambda c: "（不变）" if c is None else names.get(c, c))
            st.text_area("改派理由（必填）", key="cs_why", height=70,
                         placeholder="如：企业实际位于相邻网格；属园区执法局管辖")
            st.button("确认改派", key="cs_reassign", on_click=cases.do_reassign,
                      args=(svc, actor, case_id, grid_now, bureau_now))
            cases.show_message(message, "reassign")

st.markdown("**办理记录**（只追加，不可修改；人工改派的理由、原承办均在其中）")
events = svc.case_events(actor, case_id)
st.dataframe(cases.events_table(events, router), hide_index=True, width="stretch")

page.sidebar(None, actor)

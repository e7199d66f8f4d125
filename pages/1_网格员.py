"""网格员工作台 — the grid worker's phone page (also what dispatchers, bureaus and leaders open
for one worker). Laid out for a 390×844 phone first:

- **首页**: who I am and my units, my open cases with the nearest deadline, then my tasks sorted
  by deadline (countdown, category, place, words), each opened with one tap; a compact map of my
  units and cases (two fingers move it, one finger scrolls the page; a tap shows what a hover
  does); the supervised entities of my units with when each was last visited (巡查); for a leader
  the visit coverage of their units; the roster in Excel.
- **?case=<id>**: act on a case from the phone — 接单, 到达现场 (the phone's position, its
  accuracy and the distance to the reported place), the on-site check with a result and photos
  from the camera, hand over to the bureau — through the same workflow and audit as the desk;
  navigate there in Amap / Baidu Maps / any map app; call the reporter.
- **?visit=<entity id>**: record a patrol visit — the phone's position and distance, the
  industry checklist, a note, photos; a problem found becomes a case in the same step.

A grid worker opens on their own units and cannot choose another worker; a leader may choose
the workers of the units they lead; dispatchers, bureaus, admins and leadership any worker.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from grids import portfolio
from grids.access import PermissionDenied, can
from grids.cases import CaseFilter, with_deadlines
from grids.evidence import MAX_BYTES, Upload
from grids.flow import CaseError, load_flow
from grids.patrols import ANSWERS_ZH, checklist_for
from layers.store import StoreError
from ui import cards, cases, geolocate, page, state, worker

st.set_page_config(page_title="网格员工作台 · 南通市生态环境执法网格地图",
                   page_icon="🪪", layout="wide")
svc, actor, router = state.load("worker.view")
options = page.options()
worker.inject_css()
ss = st.session_state
flow = load_flow()
now = datetime.now(UTC)

workers = svc.workers(actor)
if not len(workers):
    st.warning("当前图层中没有可查看的网格员（账号关联的花名册编号可能已不在当前花名册中，"
               "请联系系统管理员）。")
    page.sidebar(None, actor)
    st.stop()
ids = workers["id"].tolist()
labels = dict(zip(workers["id"], workers["label"], strict=True))
wanted = st.query_params.get("worker")
# One's own page first (a leader is in their own list), else the first one may open.
default = actor.worker_id if actor.worker_id in labels else ids[0]
# The address wins when it names another worker than the page last put there (a link); the
# chooser's pick is then written to the address and remembered as the page's own, so that
# the next pick is not taken for a link and undone.
if ss.get("worker") not in labels or (wanted in labels
                                        and wanted != ss.get("_worker_from_url")):
    ss["worker"] = wanted if wanted in labels else default
worker_id = ss["worker"]
st.query_params["worker"] = ss["_worker_from_url"] = worker_id
mine = svc.worker_portfolio(actor, worker_id)
w = mine.worker
codes = tuple(mine.grid_codes)
self_view = actor.worker_id == worker_id


def go(**params) -> None:
    """Open a view of this page (the address says which: shareable, and Back works)."""
    for key in ("case", "visit"):
        st.query_params.pop(key, None)
    for key, value in params.items():
        st.query_params[key] = value


def say(kind: str, text: str) -> None:
    ss["wk_msg"] = (kind, text)


def show_message() -> None:
    msg = ss.pop("wk_msg", None)
    if msg:
        (st.error if msg[0] == "error" else st.success)(cards.md(msg[1]))


def back_button() -> None:
    st.button("← 返回我的工作台", key="wk_back", on_click=go, width="stretch")


# -- a case, from the phone ------------------------------------------------------------------
def others_turn(status: str) -> None:
    """Say whose turn it is when the case waits on another role."""
    waiting = "、".join(flow.steps[(status, t)] for t in flow.next_states(status))
    st.info("当前环节由其他岗位办理：" + waiting)


def mark_case(case_id: str, key: str, position) -> None:
    try:
        svc.mark_case(actor, case_id, key, position)
    except (CaseError, PermissionDenied, StoreError) as exc:
        say("error", f"未记录：{exc}")
        return
    say("success", f"已记录：{flow.marks[(ss['_wk_status'], key)].label.split('（')[0]}")


def step_case(case_id: str, target: str, shown: str, confirmed: bool = False) -> None:
    if flow.closes(shown, target) and not confirmed:
        ss["wk_confirm"] = (case_id, target)
        return
    ss.pop("wk_confirm", None)
    files = [Upload(f.name, f.getvalue()) for f in (ss.get(f"wk_files_{ss.get('_wk_n', 0)}")
                                                     or [])]
    try:
        svc.step_case(actor, case_id, target, str(ss.get("wk_result") or ""),
                      expected_status=shown, files=files)
    except (CaseError, PermissionDenied, StoreError) as exc:
        say("error", f"未办理：{exc}")
        return
    more = f"，照片/附件 {len(files)} 个" if files else ""
    say("success", f"案件 {case_id}：{flow.steps[(shown, target)]}{more}")
    ss["wk_result"] = ""
    ss["_wk_n"] = ss.get("_wk_n", 0) + 1


def case_view(case_id: str) -> None:
    back_button()
    try:
        case = svc.case(actor, case_id)
    except (CaseError, PermissionDenied) as exc:
        st.error(cards.md(exc))
        return
    case = cases.labelled(with_deadlines(case.to_frame().T, now, flow), router).iloc[0]
    ss["_wk_status"] = case["status"]
    st.markdown(f"##### {cards.md(case['category_zh'])}　{cards.md(case_id)}")
    st.html(worker.chip(case["countdown"], case["level"])
            + f' <span class="gm-task">{cards.esc(case["status_label"])}，截止 '
              f'{cards.esc(case["deadline_local"] or "—")}</span>')
    show_message()
    st.html(cases.record_html(case, case["deadline"], bool(case["overdue"]),
                              case["countdown"], case["level"]))
    worker.nav_links(f"wk_nav_{case_id}", float(case["lon"]), float(case["lat"]),
                     f"{case['category_zh']} {case_id}")
    reporter = worker.phone_in(case.get("reporter"))
    if reporter and can(actor, "case.read"):
        worker.tel_link(f"wk_tel_{case_id}", reporter, "致电举报人")
    if case["status"] == "closed" or not svc.can_take(actor, case):
        if case["status"] != "closed":
            others_turn(case["status"])
    else:
        events = svc.case_events(actor, case_id)
        done = set(events["action"])
        for m in flow.marks_for(case["status"], actor.role):
            if m.key in done:
                last = events[events["action"] == m.key].iloc[-1]
                st.caption(f"✅ {m.label.split('（')[0]}：{cards.beijing_text(last['at'])}　"
                           f"{cards.md(last['reason'])}")
                continue
            if m.needs_location:
                pos = geolocate.position(f"wk_geo_{case_id}")
                st.button(f"{m.label.split('（')[0]}（记录定位）", key=f"wk_mark_{m.key}",
                          disabled=pos is None, width="stretch", on_click=mark_case,
                          args=(case_id, m.key, pos),
                          help="先点“获取手机定位”，允许浏览器使用位置后再记录")
            else:
                st.button(m.label.split("（")[0], key=f"wk_mark_{m.key}", type="primary",
                          width="stretch", on_click=mark_case, args=(case_id, m.key, None))
        steps = flow.steps_for(case["status"], actor.role)
        if not steps and not flow.marks_for(case["status"], actor.role):
            others_turn(case["status"])
        if steps:
            st.text_area("办理结果（核实情况、处理结果）", key="wk_result", height=90,
                         placeholder="如：现场核实，废气处理设施未开启，已拍照")
            if any(flow.evidence.get((case["status"], t)) for t in steps):
                st.file_uploader("现场照片（可直接拍照；JPG、PNG、WebP、GIF 或 PDF，单个不超过 "
                                 "10 MB，最多 6 个）",
                                 type=["jpg", "jpeg", "png", "webp", "gif", "pdf"],
                                 accept_multiple_files=True,
                                 key=f"wk_files_{ss.get('_wk_n', 0)}",
                                 max_upload_size=MAX_BYTES // (1024 * 1024))
            confirm = ss.get("wk_confirm")
            if confirm and confirm[0] == case_id:
                st.warning("确认结案？结案后办理流程结束，不能再推进。")
                st.button("确认结案", key="wk_confirm_yes", type="primary", width="stretch",
                          on_click=step_case, args=(case_id, confirm[1], case["status"], True))
                st.button("取消", key="wk_confirm_no", width="stretch",
                          on_click=lambda: ss.pop("wk_confirm", None))
            else:
                for target in steps:
                    st.button(flow.steps[(case["status"], target)], key=f"wk_step_{target}",
                              type="primary" if target != "reported" else "secondary",
                              width="stretch", on_click=step_case,
                              args=(case_id, target, case["status"]))
    cases.attachments_view(svc, actor, case_id)
    with st.expander("办理记录", expanded=False):
        # A card per event, each value under its name (a six-column table would not fit a
        # 390 px screen), and no data grid: its script alone weighs ~270 kB on a phone.
        st.html(worker.records_html(cases.events_table(svc.case_events(actor, case_id), router)))


# -- a patrol visit ---------------------------------------------------------------------------
def record_visit(entity_id: str, items, pos) -> None:
    answers = {i.key: ss.get(f"vs_{entity_id}_{i.key}") for i in items}
    missing = [i.label_zh for i in items if not answers[i.key]]
    if missing:
        say("error", f"请逐项填写检查表（还有 {len(missing)} 项：{missing[0]}…）")
        return
    n = ss.get("_vs_n", 0)
    files = [Upload(f.name, f.getvalue()) for f in (ss.get(f"vs_files_{n}") or [])]
    try:
        result = svc.record_visit(actor, entity_id, answers,
                                  note=str(ss.get(f"vs_note_{entity_id}") or ""),
                                  position=pos, files=files,
                                  file_case=bool(ss.get(f"vs_case_{entity_id}")))
    except (CaseError, PermissionDenied, StoreError) as exc:
        say("error", f"未保存：{exc}")
        return
    text = "巡查已记录"
    if result.distance_m is not None:
        text += f"（距企业 {result.distance_m:.0f} 米）"
    if result.incident_id:
        text += f"，发现的问题已转为案件 {result.incident_id}"
    say("success", text)
    for i in items:
        ss.pop(f"vs_{entity_id}_{i.key}", None)
    ss.pop(f"vs_note_{entity_id}", None)
    ss.pop(f"vs_case_{entity_id}", None)
    ss["_vs_n"] = n + 1
    go()


def visit_view(entity_id: str) -> None:
    back_button()
    found = mine.entities[mine.entities["id"].astype(str) == str(entity_id)]
    if found.empty:
        st.error("该监管对象不在此网格员负责的网格内。")
        return
    e = found.iloc[0]
    st.markdown(f"##### 巡查：{cards.md(e['name'])}")
    st.caption(f"{cards.md(e['industry'])}｜{cards.md(e['address'])}｜网格 "
               f"{cards.md(e['grid_name'])}")
    show_message()
    worker.nav_links(f"vs_nav_{entity_id}", float(e["lon"]), float(e["lat"]), str(e["name"]))
    past = svc.entity_visits(actor, entity_id, limit=3)
    if len(past):
        st.caption("最近巡查：" + "；".join(
            f"{cards.beijing_text(r.visited_at)} {r.actor}"
            f"{'（发现问题）' if r.result == 'problem' else ''}" for r in past.itertuples()))
    if not can(actor, "patrol.record"):
        st.info("巡查由负责该网格的网格员记录。")
        return
    pos = geolocate.position(f"vs_geo_{entity_id}")
    items = checklist_for(e["industry"])
    st.markdown("**检查表**（逐项选择）")
    for item in items:
        st.segmented_control(item.label_zh, list(ANSWERS_ZH), key=f"vs_{entity_id}_{item.key}",
                             format_func=ANSWERS_ZH.get)
    problems = [i for i in items if ss.get(f"vs_{entity_id}_{i.key}") == "problem"]
    st.text_area("巡查说明" + ("（发现问题，必填）" if problems else "（可不填）"),
                 key=f"vs_note_{entity_id}", height=80,
                 placeholder="如：废气处理设施未开启，车间异味明显")
    st.file_uploader("现场照片（可直接拍照；JPG、PNG、WebP 或 GIF，单个不超过 10 MB，最多 6 个）",
                     type=["jpg", "jpeg", "png", "webp", "gif"],
                     accept_multiple_files=True, key=f"vs_files_{ss.get('_vs_n', 0)}",
                     max_upload_size=MAX_BYTES // (1024 * 1024))
    if problems:
        st.toggle("发现的问题直接转为案件（巡查发现）", key=f"vs_case_{entity_id}", value=True)
    if pos is None:
        st.caption("未获取定位：可以保存，但记录中没有位置和距离。")
    st.button("保存巡查记录", key="vs_save", type="primary", width="stretch",
              on_click=record_visit, args=(entity_id, items, pos))


# -- home ------------------------------------------------------------------------------------
def home() -> None:
    st.markdown("#### 我的工作台" if self_view else "#### 网格员工作台")
    if len(ids) > 1:
        st.selectbox("网格员（可输入姓名、编号或乡镇筛选）", ids, key="worker",
                     format_func=lambda i: labels.get(i, i))
    show_message()
    units = "、".join(f"{g.name}（{g.kind_zh}）" for g in mine.grids.itertuples())
    phone = f'，电话 {cards.esc(w["phone"])}' if w.get("phone") else ""
    st.html(f'<div class="gm-who"><b>{cards.esc(w["name"])}</b>（{cards.esc(w["roles"])}，'
            f'编号 {cards.esc(w["id"])}{phone}）<br>负责网格：{cards.esc(units) or "—"}</div>')
    open_states = tuple(s for s in flow.states if s != "closed")
    found = svc.case_page(actor, CaseFilter(statuses=open_states, grids=codes), now=now,
                          size=100)
    tasks = cases.labelled(found.rows, router)
    if len(tasks):
        first = tasks.iloc[0]
        st.html(f'<div class="gm-task">未结案件 <b>{found.total}</b> 件，最近截止：'
                f'{worker.chip(first["countdown"], first["level"])} '
                f'{cards.esc(first["id"])}</div>')
    else:
        st.html('<div class="gm-task">未结案件 <b>0</b> 件。</div>')
    st.markdown("##### 我的任务（按时限）")
    if not len(tasks):
        st.info("负责网格内没有未结案件。")
    if len(tasks):
        worker.rows("wk_tasks", worker.task_rows(tasks.head(20)), lambda i: go(case=i))
    if len(tasks) > 20:
        st.caption(f"另有 {len(tasks) - 20} 件，见“案件办理”。")

    days = int(ss.get("wk_days") or 30)
    coverage = None
    if can(actor, "patrol.coverage"):
        try:
            coverage = svc.coverage(actor, worker_id, days, now)
        except PermissionDenied:
            coverage = None
    visited = {}
    if coverage is not None:
        visited = {str(r.id): cards.beijing_text(r.last_at)
                   for r in coverage.entities.itertuples() if r.last_at}
    st.markdown("##### 地图")
    worker.phone_map("wk_map", options.basemap, mine.grids, mine.entities, tasks, visited)

    st.markdown(f"##### 监管对象与巡查（{len(mine.entities)}）")
    query = st.text_input("查找监管对象", key="wk_find", placeholder="名称、行业或地址",
                          label_visibility="collapsed")
    ents = mine.entities
    if coverage is not None:
        ents = ents.merge(coverage.entities[["id", "last_epoch"]], on="id", how="left")
    else:
        ents = ents.assign(last_epoch=None)
    if query.strip():
        q = query.strip()
        ents = ents[ents["name"].str.contains(q, regex=False)
                    | ents["industry"].str.contains(q, regex=False)
                    | ents["address"].str.contains(q, regex=False)]
    # Not visited for the longest first: that is where to go next.
    ents = ents.sort_values("last_epoch", na_position="first")
    if len(ents):
        worker.rows("wk_ents", worker.entity_rows(ents.head(15), now.timestamp()),
                    lambda i: go(visit=i))
    if len(ents) > 15:
        st.caption(f"共 {len(ents)} 家，仅显示最久未巡查的 15 家；可输入名称查找。")

    if coverage is not None and (actor.role != "grid_worker" or not self_view):
        with st.expander(f"巡查覆盖（近 {days} 天）", expanded=actor.role == "grid_leader"):
            st.segmented_control("统计期", [7, 30, 90], key="wk_days", default=30,
                                 format_func=lambda d: f"近 {d} 天")
            st.caption("地图上蓝点为期内已巡查的监管对象，灰点为未巡查。")
            by = coverage.by_grid.assign(share=[f"{v:.1%}" for v in coverage.by_grid["share"]])
            by = by.rename(columns={
                "grid": "网格编码", "name": "网格名称", "entities": "监管对象",
                "visited": "已巡查", "share": "覆盖率"})
            st.table(by, hide_index=True)
            st.download_button("下载巡查覆盖 Excel",
                               lambda: svc.coverage_excel(actor, worker_id, days),
                               file_name=f"巡查覆盖_{w['name']}_{days}天.xlsx",
                               mime="application/vnd.openxmlformats-officedocument."
                                    "spreadsheetml.sheet", width="stretch", on_click="ignore")
    with st.expander("负责网格与花名册"):
        st.html(worker.records_html(pd.DataFrame(mine.grids[list(portfolio.GRID_COLUMNS)]).rename(
            columns=portfolio.GRID_COLUMNS)))
        st.download_button("下载 Excel 花名册（网格、监管对象、未结事件）",
                           lambda: svc.roster_excel(actor, worker_id),
                           file_name=f"网格员花名册_{w['name']}_{w['id']}.xlsx",
                           mime="application/vnd.openxmlformats-officedocument."
                                "spreadsheetml.sheet", width="stretch", on_click="ignore")
        st.caption(f"图层版本 {mine.generation['generation']}"
                   f"（{cards.beijing_text(mine.generation['created_at'])}，北京时间）。")


case_param = st.query_params.get("case")
visit_param = st.query_params.get("visit")
if case_param:
    case_view(str(case_param))
elif visit_param:
    visit_view(str(visit_param))
else:
    home()
page.sidebar(None, actor)

"""审计记录 — the hash-chained audit trail for administrators: filter by user, action, target
(a case number, a login…) and time; verify the chain; export what is shown to Excel (the
export itself is audited)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from grids.access import ROLES_ZH, VIA_ZH
from layers import spreadsheet
from layers.audit import ACTIONS_ZH, beijing
from layers.store import AuditQuery
from ui import cards, page, state
from ui.intake import TZ

st.set_page_config(page_title="审计记录 · 南通市生态环境执法网格地图", page_icon="🛡️",
                   layout="wide")
svc, actor, _router = state.load("audit.read")
st.markdown("#### 审计记录（只追加，哈希链防篡改）")

c1, c2, c3, c4, c5 = st.columns([1.3, 1.3, 1.5, 1.3, 1.3])
who = c1.text_input("用户（登录名）", key="au_actor").strip() or None
action = c2.selectbox("操作", [None, *ACTIONS_ZH], key="au_action",
                      format_func=lambda a: "全部" if a is None else ACTIONS_ZH[a])
target = c3.text_input("对象（案件编号、登录名等）", key="au_target").strip() or None
today = datetime.now(TZ).date()
since = c4.date_input("起始日期（北京时间）", today - timedelta(days=30), key="au_since")
until = c5.date_input("截止日期", today, key="au_until")


def utc(day, end: bool) -> str:
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=TZ)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


query = AuditQuery(actor=who, action=action, target=target, since=utc(since, False),
                   until=utc(until, True), limit=2000)
rows = svc.audit_entries(actor, query)
shown = pd.DataFrame({
    "序号": rows["seq"], "时间（北京时间）": rows["at"].map(beijing), "用户": rows["actor"],
    "角色": rows["actor_role"].map(lambda r: ROLES_ZH.get(r, r)),
    "途径": rows["via"].map(lambda v: VIA_ZH.get(v, v)),
    "操作": rows["action"].map(lambda a: ACTIONS_ZH.get(a, a)), "对象": rows["target"],
    "详情（前后对比）": rows["detail"]})
st.caption(f"显示 {len(shown)} 条（最多 2000 条，最新在前）。")
st.dataframe(shown, hide_index=True, width="stretch", height=420)

left, right = st.columns(2)
with left:
    if st.button("校验审计链", key="au_verify"):
        result = svc.audit_verify(actor)
        if result.ok:
            st.success(f"审计链完整：共 {result.entries} 条，末条序号 {result.head_seq}，"
                       f"末条哈希 {result.head_hash[:16]}…")
        else:
            st.error("审计链被破坏：" + cards.md(result.problem_zh))
with right:
    st.download_button(
        "导出为 Excel（导出操作本身记入审计）",
        lambda: svc.audit_export(actor, query,
                                 lambda frame: spreadsheet.xlsx_bytes({"审计记录": shown})),
        file_name="审计记录.xlsx", mime=spreadsheet.XLSX_MIME, key="au_export",
        on_click="ignore")  # no rerun racing the file; the entry shows on the next refresh

page.sidebar(None, actor)

"""绩效考评 — the number, quality and timeliness of cases per enforcement bureau and per
township over a period (grids/stats.py defines every figure): tables, a map of on-time share by
township, and the Excel workbook. Bureaus see their own bureau tree, grid leaders their units;
the service checks it (`stats.read`)."""

from __future__ import annotations

from datetime import datetime

import streamlit as st
from streamlit_folium import st_folium

from grids.stats import FIGURES, PeriodError, display_table, percent
from layers import spreadsheet
from ui import assets, cards, page, state
from ui import stats as view
from ui.intake import TZ

st.set_page_config(page_title="绩效考评 · 南通市生态环境执法网格地图", page_icon="📊",
                   layout="wide")
svc, actor, router = state.load("stats.read")
options = page.options()
st.markdown("#### 绩效考评（案件数量、质量与时效）")

bureau_choices, township_choices = svc.stats_choices(actor)
today = datetime.now(TZ).date()
c1, c2, c3, c4, c5 = st.columns([1.1, 1.1, 1.1, 2.2, 1.6])
preset = c1.selectbox("统计期", view.PRESETS, key="st_preset")
custom = preset == "自定义"
if not custom:  # the dates show the preset's period (自定义 then starts from them)
    chosen = view.preset_period(preset, today)
    st.session_state["st_since"], st.session_state["st_until"] = chosen.since, chosen.until
since = c2.date_input("开始日期（北京时间）", key="st_since", disabled=not custom)
until = c3.date_input("结束日期（含当日）", key="st_until", disabled=not custom)
bureau = c4.selectbox(
    "执法机构（含下属机构）", [None, *bureau_choices], key="st_bureau",
    format_func=lambda c: "全部" if c is None else f"{bureau_choices[c]}（{c}）",
    disabled=not bureau_choices)
township = c5.selectbox(
    "乡镇/街道", [None, *township_choices], key="st_township",
    format_func=lambda c: "全部" if c is None else township_choices[c],
    disabled=not township_choices)

try:
    period = view.preset_period(preset, today, since, until)
    result = svc.stats(actor, period, bureau_code=bureau, township_code=township)
except PeriodError as exc:
    st.error(str(exc))
    page.sidebar(router, actor, accuracy=False)
    st.stop()

t = result.totals
share = percent(t["on_time_share"])
hours = t["median_hours_to_close"]
m = st.columns(6)
m[0].metric("受理数", t["received"])
m[1].metric("已结案", t["closed"])
m[2].metric("按时率", "—" if share is None else f"{share:.1f}%")
m[3].metric("超时", t["overdue"])
m[4].metric("未结且已超时", t["open_overdue"])
m[5].metric("结案用时中位数", "—" if hours is None else f"{hours:.1f} 小时")
st.caption(f"统计期 {period.label}（北京时间，按受理日期）· 范围：{cards.md(result.scope_zh)} · "
           f"案件状态截至 {result.computed_at[:16].replace('T', ' ')} · 移送执法局 "
           f"{t['referred']} 件，移交其他部门 {t['partner']} 件，退回重派 {t['returned']} 件")

st.download_button(
    "下载 Excel（按执法机构、按乡镇/街道、指标说明）",
    lambda: svc.stats_excel(actor, result),
    file_name=f"绩效考评_{period.since}_{period.until}.xlsx", mime=spreadsheet.XLSX_MIME,
    key="st_excel", on_click="ignore")  # the workbook of the figures shown: no new count

st.markdown("**按执法机构**")
bureaus = display_table(result.bureaus, "bureaus")
st.dataframe(view.styled(bureaus), hide_index=True, width="stretch", key="st_bureaus",
             height=view.table_height(len(bureaus), 600))

st.markdown("**按乡镇/街道**")
map_col, table_col = st.columns([1.35, 1], gap="small")
with table_col:
    towns = display_table(result.townships, "townships")
    st.dataframe(view.styled(towns), hide_index=True, width="stretch",
                 height=view.table_height(len(towns)), key="st_townships")
with map_col:
    shapes = view.township_shapes(router.snapshot)
    choropleth = view.choropleth(options.basemap, shapes, result.townships)
    try:
        assets.ensure_offline(choropleth, allowed_hosts=options.basemap.hosts)
    except assets.OfflineAssetError as exc:
        st.error(str(exc))
        st.stop()
    st_folium(choropleth, key="statsmap", height=view.MAP_HEIGHT, use_container_width=True,
              returned_objects=[])
    st.html(view.legend_html())

with st.expander("指标说明"):
    st.markdown("\n".join(f"- **{FIGURES[k]}**：{cards.md(v)}"
                          for k, v in result.definitions.items()))

page.sidebar(router, actor, accuracy=False)

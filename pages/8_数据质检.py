"""数据质检 — every finding of the checks (grids/checks.py) over the current layers, or over a
layer set uploaded in the import format as it would replace them: on the map and as a table,
filtered by severity, kind and layer, with the Excel. The service checks the permission
(`layers.check`) and computes the findings; this page only shows them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st
from streamlit_folium import st_folium

from grids.checks import KIND_ZH, SEVERITY_ZH, layer_zh
from layers import spreadsheet
from layers.problems import ImportFailed
from ui import assets, cards, page, state
from ui import checks as view

st.set_page_config(page_title="数据质检 · 南通市生态环境执法网格地图", page_icon="🧭",
                   layout="wide")
svc, actor, router = state.load("layers.check")
options = page.options()
st.markdown("#### 数据质检（缺口、重叠、越界、编码与无人负责）")

with st.expander("检查一套导入格式的图层（不写入数据库）"):
    st.caption("上传导入格式的 zip（如 grids.geojson、workers.csv …）：按替换当前同名图层后的结果"
               "检查，与 `gridmap validate 目录或zip` 相同。")
    upload = st.file_uploader(f"图层 zip（{page.UPLOAD_LIMIT_ZH}）", type=["zip"], key="qc_upload")
    if upload is not None and st.session_state.get("_qc_upload_id") != upload.file_id:
        with tempfile.TemporaryDirectory(prefix="gridmap-qc-") as tmp:
            # The file by the name it was uploaded with: messages name it so.
            path = Path(tmp) / (Path(upload.name).name[-100:] or "layers.zip")
            path.write_bytes(upload.getvalue())
            try:
                st.session_state["_qc_report"] = svc.check_path(actor, path)
            except ImportFailed as exc:
                st.session_state["_qc_report"] = None
                st.error(cards.lines_md(exc.summary(head="无法检查这个文件。")))
        st.session_state["_qc_upload_id"] = upload.file_id
    if upload is None:
        st.session_state.pop("_qc_report", None)
        st.session_state.pop("_qc_upload_id", None)

report = st.session_state.get("_qc_report") or svc.check_layers(actor)
findings = report.findings
counts = report.counts()
m = st.columns(4)
m[0].metric("错误", counts["error"])
m[1].metric("警告", counts["warning"])
m[2].metric("问题合计", len(findings))
m[3].metric("检查用时", f"{report.seconds:.1f} 秒")
st.caption(f"检查对象：{cards.md(report.subject_zh)} · 错误须改正后才能发布；警告须在发布时确认。"
           "检查项和容差见 grids/check_rules.csv。")

severities, kinds, layers = view.choices(findings)
c1, c2, c3 = st.columns(3)
chosen_sev = c1.multiselect("严重程度", severities, format_func=lambda s: SEVERITY_ZH.get(s, s),
                            select_all=False, key="qc_severity", placeholder="全部")
chosen_kind = c2.multiselect("类型", kinds, format_func=lambda k: KIND_ZH.get(k, k),
                             select_all=False, key="qc_kind", placeholder="全部")
chosen_layer = c3.multiselect("图层", layers, format_func=layer_zh, select_all=False,
                              key="qc_layer", placeholder="全部")
shown = view.filtered(findings, chosen_sev, chosen_kind, chosen_layer)

if not findings:
    st.success("未发现问题。")

# The table first in the script (its selection moves the map), drawn below the map.
map_area = st.container()
frame = view.table(shown)
picked = st.dataframe(frame, hide_index=True, width="stretch",
                      height=view.table_height(len(frame)), key="qc_table", on_select="rerun",
                      selection_mode="single-row",
                      column_config={"说明": st.column_config.TextColumn(width="large")})
rows = list(getattr(getattr(picked, "selection", None), "rows", []) or [])
focus = shown[rows[0]] if rows and rows[0] < len(shown) else None
with map_area:
    snapshot = router.snapshot
    context = snapshot["counties"].geometry.values if "counties" in snapshot.layers else None
    fmap = view.findings_map(options.basemap, shown, context, focus)
    try:
        assets.ensure_offline(fmap, allowed_hosts=options.basemap.hosts)
    except assets.OfflineAssetError as exc:
        st.error(str(exc))
        st.stop()
    st_folium(fmap, key="qcmap", height=view.MAP_HEIGHT, use_container_width=True,
              returned_objects=[])
    if len(shown) > view.MAX_ON_MAP:
        st.caption(f"地图上显示前 {view.MAX_ON_MAP} 项（错误在前）；表格和 Excel 含全部 "
                   f"{len(shown)} 项。")
    else:
        st.caption("红色：错误；橙色：警告。选中下表中的一行，地图移到该问题。")

st.download_button(
    f"下载 Excel（当前筛选的 {len(shown)} 项问题、检查规则）",
    lambda: view.excel(shown, report.subject_zh), file_name="数据质检.xlsx",
    mime=spreadsheet.XLSX_MIME, key="qc_excel", on_click="ignore")

with st.expander("检查规则与容差"):
    st.dataframe(view.rules_frame(), hide_index=True, width="stretch", key="qc_rules")

page.sidebar(router, actor, accuracy=False)

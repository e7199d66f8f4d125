"""批量分派 — a complaint export (CSV or Excel, Chinese headers such as 编号/经度/纬度/坐标系
recognised) routed row by row: the same answers and columns as `gridmap assign`, shown on the
map and in a table, the rows that could not be routed listed with the reason, and the whole
table downloadable as Excel or CSV (Chinese headers and labels; machine columns on the Excel's
second sheet). A dispatcher can file the rows as cases: each is filed, linked to the open case
it repeats, or refused with the reason, and the report is downloadable.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from geo.crs import CrsError
from grids.access import PermissionDenied, can
from grids.batch import MAX_FILE_ROWS, BatchInputError
from layers import spreadsheet
from layers.store import StoreError
from ui import batch, cards, intake, page, state

st.set_page_config(page_title="批量分派 · 南通市生态环境执法网格地图", page_icon="🗂️",
                   layout="wide")
svc, actor, router = state.load("batch.assign")
router = svc.batch_router(actor)
generation = router.snapshot.generation.id
options = page.options()
ss = st.session_state
FILE_CRS = "__rows__"  # the coordinate system comes from the file's own column

st.markdown("#### 批量分派（投诉/举报导出文件）")
c1, c2, c3 = st.columns([2.2, 1.4, 1])
upload = c1.file_uploader(
    f"上传 CSV 或 Excel 文件（.csv、.xlsx、.xls，{page.UPLOAD_LIMIT_ZH}）",
    type=["csv", "xlsx", "xls"], key="bt_file",
    help="按列名识别：编号/工单编号、经度/纬度（或 lon/lat、x/y）、坐标系（每行可不同，如 WGS84、"
         "GCJ02、BD09、CGCS2000、EPSG:4549）、精度（米）、类别。CSV 可为 UTF-8 或 GBK。",
)
c2.selectbox("整个文件的坐标系", [FILE_CRS, *intake.crs_options(unstated=False)], key="bt_crs",
             format_func=lambda k: "按文件中的坐标系列" if k == FILE_CRS else intake.crs_label(k),
             help="文件没有坐标系列时必须选择；有坐标系列时，只用于该列为空的行。")
if ss.get("bt_crs") == intake.OTHER_CRS:
    c3.text_input("EPSG 代码", key="bt_crs_other", placeholder="如 EPSG:4549")

result = None
if upload is not None:
    data = upload.getvalue()
    choice = ss.get("bt_crs", FILE_CRS)
    try:
        crs = None if choice == FILE_CRS else intake.chosen_crs(choice,
                                                                str(ss.get("bt_crs_other") or ""))
    except CrsError as exc:
        st.error(cards.md(exc))
        crs = False
    if crs is not False:
        key = (hashlib.sha256(data).hexdigest(), upload.name, crs, generation)
        if ss.get("_bt_key") != key:  # route once per file, system and generation
            ss.pop("_bt_view", None)
            ss.pop("_bt_filing", None)
            try:
                with st.spinner("正在分派…"):
                    ss["_bt_result"] = batch.run(router, upload.name, data, crs)
                svc.record_batch(actor, upload.name, batch.counts(ss["_bt_result"]))
                box = batch.bbox(ss["_bt_result"])
                if box:  # zoom to the file's rows once
                    ss["_bt_view"] = page.new_view(bbox=box, basemap=options.basemap)
            except BatchInputError as exc:
                ss["_bt_result"] = None
                st.error(cards.md(f"{upload.name}：{exc}"))  # quotes the file's columns
            ss["_bt_key"] = key
        result = ss.get("_bt_result")

group = None
placed = 0
if result is not None:
    group, placed = batch.overlay(result, options.basemap)

map_col, side = st.columns([2.5, 1.5], gap="small")
with map_col:
    page.city_map(svc, actor, router, options, key="batchmap", clicks=False, highlight=group,
                  hidden=("incidents",), view=ss.get("_bt_view") if result else None)

with side:
    if result is None:
        st.info("上传文件后，每一行都会按位置分派到网格、网格员和责任执法机构；"
                "无法分派的行会列出原因，不会丢弃。结果可下载为 Excel 或 CSV。")
    else:
        n = len(result.result.table)
        st.markdown(f"**{cards.md(result.name)}**：共 {n} 行")
        counts = batch.counts(result)
        m = st.columns(2)
        for i, (label, value) in enumerate(counts.items()):
            m[i % 2].metric(label, value)
        if placed < n - counts["无法分派"]:
            st.caption(f"地图上显示前 {placed} 个点；表格和下载包含全部行。")
        st.caption("地图上蓝点为明确、玫红点为存在歧义、灰点为不在辖区内。")
        stem = result.name.rsplit(".", 1)[0]
        # on_click="ignore" on every generated download: a rerun started by the click replaces
        # the button's file id and can drop the old one before the browser asks for it (the
        # download then silently fails; Streamlit's deferred files).
        st.download_button("下载 Excel（含分派结果）", lambda: batch.excel(result),
                           file_name=f"{stem}_分派结果.xlsx", mime=spreadsheet.XLSX_MIME,
                           type="primary", width="stretch", key="bt_xlsx", on_click="ignore")
        st.download_button("下载 CSV", lambda: batch.csv(result),
                           file_name=f"{stem}_分派结果.csv", mime=spreadsheet.CSV_MIME,
                           width="stretch", key="bt_csv", on_click="ignore")

if result is not None:
    bad = batch.bad_rows(result)
    if len(bad):
        st.markdown(f"##### 无法分派的行（{len(bad)}）")
        st.caption("这些行保留在下载文件中（分派状态为“无法分派”），原因见“无法分派原因”列。")
        st.dataframe(bad, hide_index=True, width="stretch")
    st.markdown("##### 分派结果")
    statuses = st.multiselect("分派状态", list(batch.STATUS_ZH), select_all=False, key="bt_status",
                              format_func=batch.STATUS_ZH.get, placeholder="全部")
    st.dataframe(batch.shown_table(result, statuses), hide_index=True, width="stretch",
                 height=420)

LINK, FILE = "link", "file"
if result is not None and can(actor, "case.create"):
    st.markdown("##### 登记为案件")
    n = len(result.result.table)
    # Rows outside the jurisdiction or that could not be routed are not filed (said below).
    fileable = int(sum(result.result.counts.get(k, 0) for k in ("ok", "ambiguous")))
    try:
        columns = batch.case_columns(result)
    except BatchInputError as exc:
        columns = None
        st.info(cards.md(f"{exc}。补齐这些列后重新上传，即可把各行登记为案件。"))
    if columns is not None:
        st.caption(cards.md(
            f"按列登记：事件类别“{columns.category}”，事件描述“{columns.description}”，"
            f"举报时间“{columns.reported_at}”（未注明时区的按北京时间）"
            + (f"，受理渠道“{columns.source}”" if columns.source else "")
            + (f"，举报人“{columns.reporter}”" if columns.reporter else "") + "。"
            "不在辖区内或无法分派的行不登记；存在歧义的行登记后标记为待人工确认归属；"
            "同一文件再次提交不会重复登记。"))
        st.radio("附近已有同类未结案件时", [LINK, FILE], key="bt_dup", horizontal=True,
                 format_func={LINK: "作为重复举报并入原案件（不新建）",
                              FILE: "仍登记为新案件"}.get)
        if n > MAX_FILE_ROWS:
            st.warning(f"一次最多登记 {MAX_FILE_ROWS:,} 行，本文件 {n:,} 行，请分成几个文件提交。")
        elif st.button(f"登记为案件（{fileable} 行可登记，{n - fileable} 行不登记）"
                       if fileable < n else f"将 {n} 行登记为案件",
                       type="primary", key="bt_file_cases", disabled=not fileable):
            bar = st.progress(0.0, text="正在登记…")
            try:
                ss["_bt_filing"] = svc.file_batch(
                    actor, result.frame, file_key=result.digest, name=result.name,
                    crs=result.crs, on_duplicate=ss.get("bt_dup", LINK),
                    progress=lambda done, total: (
                        bar.progress(done / total, text=f"正在登记…{done}/{total}")
                        if done == total or done % max(1, total // 50) == 0 else None))
            except (BatchInputError, PermissionDenied, StoreError) as exc:
                st.error(cards.md(exc))
            finally:
                bar.empty()
    filing = ss.get("_bt_filing")
    if filing is not None:
        done = filing.counts
        m = st.columns(3)
        m[0].metric("已登记", done["filed"])
        m[1].metric("已并入原案件", done["linked"])
        m[2].metric("未登记", done["refused"])
        earlier = sum(r.earlier for r in filing.rows)
        if earlier:
            st.caption(f"其中 {earlier} 行在此前提交同一文件时已处理，本次没有重复登记。")
        st.dataframe(batch.filing_table(filing), hide_index=True, width="stretch",
                     height=min(420, 35 * (len(filing.rows) + 1) + 3))
        stem = result.name.rsplit(".", 1)[0]
        st.download_button("下载登记结果（Excel）", lambda: batch.filing_excel(filing),
                           file_name=f"{stem}_登记结果.xlsx", mime=spreadsheet.XLSX_MIME,
                           key="bt_filing_xlsx", on_click="ignore")

page.sidebar(router, actor, accuracy=False)

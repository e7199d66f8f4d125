"""Batch dispatch of a complaint file (pages/4_批量分派.py): the upload is read and routed by
grids/batch.py — the same answers and columns as `gridmap assign` — and shown on the map, in a
table, with the rows that could not be routed and why, and as Excel/CSV downloads (Chinese
headers and labels; the Excel also has the machine columns on its second sheet). A dispatcher
can then file the rows as cases (`Gridmap.file_batch`) and download what happened to each."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import folium
import numpy as np
import pandas as pd
from branca.element import MacroElement
from jinja2 import Template

from grids import batch as grids_batch
from grids.batch import (
    CATEGORY_NAMES,
    ID_NAMES,
    MACHINE_SHEET,
    MAX_ROWS_INTERACTIVE,
    MAX_UPLOAD_BYTES,
    OUTCOME_ZH,
    STATUS_LABELS,
    BatchFiling,
    BatchInputError,
    BatchResult,
    CaseColumns,
    ExportLabels,
    assign,
    category_key,
    category_lookup,
    export_sheets,
    extent,
    header_key,
    localize,
    read_rows,
)
from grids.deadlines import beijing_text
from grids.flow import load_categories
from grids.routing import Router
from layers import spreadsheet
from ui import assets, cards
from ui.basemap import Basemap

MAX_ON_MAP = 5000
STATUS_ZH = STATUS_LABELS
# Not the permit colours of the entity markers (red/orange/green), which share the map.
STATUS_COLORS = {"ok": "#1565c0", "ambiguous": "#d81b60", "outside": "#757575"}
# What the dispatcher sees of each row (the downloads keep every column).
SHOWN = {"route_status_zh": "分派状态", "route_county_name": "县（市）、区",
         "route_township_name": "乡镇/街道", "route_grid_code": "网格编码",
         "route_grid_name": "网格", "route_workers": "网格员", "route_park_name": "园区",
         "route_bureau_name": "责任执法机构", "route_referral": "移交部门",
         "route_flags": "标记", "route_error": "无法分派原因"}
FILING_COLUMNS = {"row": "序号", "ref": "编号", "outcome": "结果", "case_id": "案件编号",
                  "route_status": "分派状态", "reported_at": "举报时间（北京时间）",
                  "note": "说明", "earlier": "此前已提交"}


class TopPane(MacroElement):
    """A map pane above the entity markers and clusters (markerPane is 600), so the routed rows
    stay visible over the supervised entities."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map) {
            if (map && !map.getPane("gmTop")) { map.createPane("gmTop").style.zIndex = 650; }
        })(window.map);
        {% endmacro %}
    """)


@dataclass
class Batch:
    name: str
    result: BatchResult
    id_column: str | None
    digest: str = ""  # SHA-256 of the uploaded bytes (the request keys of filed rows)
    inputs: list = field(default_factory=list)  # the file's own columns
    labels: ExportLabels | None = None  # names of the codes in the Chinese export
    crs: str | None = None  # the system chosen for the whole file (None: the file's column)

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as the file has them (without the answer columns)."""
        return self.result.table[self.inputs]


def run(router: Router, name: str, data: bytes, crs: str | None) -> Batch:
    """Read an uploaded CSV/Excel file and route every row (BatchInputError when the file as a
    whole cannot be used: no coordinate columns, no coordinate system…, or when it is larger than
    the page handles: MAX_UPLOAD_BYTES, MAX_ROWS_INTERACTIVE rows; those go to `gridmap assign`,
    which streams)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BatchInputError(
            f"文件大小 {len(data) / 2**20:.1f} MB，超过网页批量分派的上限 "
            f"{MAX_UPLOAD_BYTES // 2**20} MB；请在命令行用 "
            "`gridmap assign 文件 --out 结果.csv` 分派（不限大小）"
        )
    suffix = Path(name).suffix.lower() or ".csv"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        # TooManyRows is a BatchInputError; messages name the file as the person named it.
        frame = read_rows(path, max_rows=MAX_ROWS_INTERACTIVE, name=name)
    result = assign(router, frame, crs=crs)
    inputs = list(frame.columns)
    table = result.table
    table.insert(table.columns.get_loc("route_status") + 1, "route_status_zh",
                 table["route_status"].map(STATUS_ZH).fillna(table["route_status"]))
    _referrals(table)
    keys = {header_key(c): c for c in frame.columns}
    id_col = next((keys[n] for n in ID_NAMES if n in keys), None)
    return Batch(name, result, id_col, hashlib.sha256(data).hexdigest(), inputs,
                 ExportLabels.of(router), crs)


def _referrals(table: pd.DataFrame) -> None:
    """With a category column: which rows go to a partner agency (grids/categories.csv)."""
    keys = {header_key(c): c for c in table.columns if not str(c).startswith("route_")}
    col = next((keys[n] for n in CATEGORY_NAMES if n in keys), None)
    if col is None:
        return
    cats = load_categories()
    lookup = category_lookup()
    found = table[col].map(lambda v: category_key(v, lookup))
    table["route_category"] = found
    table["route_referral"] = found.map(
        lambda k: cats[k].agency_zh if k and cats[k].handler == "partner" else "")


def bbox(batch: Batch) -> tuple[float, float, float, float] | None:
    """The extent of the routed rows inside the jurisdiction (what the map zooms to)."""
    return extent(batch.result.table)


def counts(batch: Batch) -> dict[str, int]:
    c = batch.result.counts
    return {STATUS_ZH[k]: int(c.get(k, 0)) for k in STATUS_ZH}


def shown_table(batch: Batch, statuses: list[str] | None = None) -> pd.DataFrame:
    t = batch.result.table
    if statuses:
        t = t[t["route_status"].isin(statuses)]
    cols = [c for c in SHOWN if c in t.columns]
    out = t[cols].rename(columns=SHOWN)
    out.insert(0, "序号", t.index + 1)
    if batch.id_column:
        out.insert(1, str(batch.id_column), t[batch.id_column].to_numpy())
    return out


def bad_rows(batch: Batch) -> pd.DataFrame:
    """Rows that could not be routed, with the reason: listed, never dropped."""
    t = batch.result.table
    bad = t[t["route_status"] == "error"]
    out = pd.DataFrame({"序号": bad.index + 1})
    if batch.id_column:
        out[str(batch.id_column)] = bad[batch.id_column].to_numpy()
    inputs = [c for c in t.columns if not str(c).startswith("route_")
              and c != batch.id_column][:4]
    for c in inputs:
        out[str(c)] = bad[c].to_numpy()
    out["原因"] = bad["route_error"].to_numpy()
    return out


def excel(batch: Batch) -> bytes:
    """The whole table: in Chinese on the first sheet, with its machine names and coded values
    on the second (complete, for other programs), and what each column is on the third."""
    return spreadsheet.xlsx_bytes(export_sheets(batch.result.table, batch.labels))


def csv(batch: Batch) -> bytes:
    """The whole table in Chinese (the first sheet of `excel`)."""
    return spreadsheet.csv_bytes(localize(batch.result.table, batch.labels))


# -- filing the rows as cases -------------------------------------------------------------------
def case_columns(batch: Batch) -> CaseColumns:
    """Which columns hold a case's category, description and time (BatchInputError naming
    what is missing)."""
    return grids_batch.case_columns(batch.frame)


def filing_table(filing: BatchFiling) -> pd.DataFrame:
    """What happened to each row, in words (the page's report and the first sheet of its
    download)."""
    t = filing.frame()
    t["outcome"] = t["outcome"].map(OUTCOME_ZH)
    t["route_status"] = t["route_status"].map(lambda v: STATUS_ZH.get(v, v) if v else "")
    t["reported_at"] = t["reported_at"].map(beijing_text)
    t["earlier"] = t["earlier"].map({True: "是", False: ""})
    return t.rename(columns=FILING_COLUMNS)


def filing_excel(filing: BatchFiling) -> bytes:
    """The report as Excel: in words, then with machine names and codes."""
    return spreadsheet.xlsx_bytes({"登记结果": filing_table(filing),
                                   MACHINE_SHEET: filing.frame()})


def overlay(batch: Batch, basemap: Basemap) -> tuple[folium.FeatureGroup, int]:
    """The routed rows as dots coloured by status (at most MAX_ON_MAP), with their number."""
    t = batch.result.table
    placed = t[t["route_status"] != "error"]
    placed = placed.head(MAX_ON_MAP)
    group = folium.FeatureGroup(name="批量分派", control=False)
    if placed.empty:
        return group, 0
    lon = pd.to_numeric(placed["route_routed_lon"], errors="coerce").to_numpy(float)
    lat = pd.to_numeric(placed["route_routed_lat"], errors="coerce").to_numpy(float)
    x, y = basemap.to_display(lon, lat)
    ids = (placed[batch.id_column].astype(str).to_numpy() if batch.id_column
           else (placed.index + 1).astype(str).to_numpy())
    features = []
    for i, (px, py, status, rid, grid) in enumerate(zip(
            np.asarray(x), np.asarray(y), placed["route_status"], ids, placed["route_grid_name"],
            strict=True)):
        if not (np.isfinite(px) and np.isfinite(py)):
            continue
        tip = f"{rid}｜{STATUS_ZH.get(status, status)}｜{grid or '—'}"
        features.append({
            "type": "Feature", "id": i,
            "geometry": {"type": "Point", "coordinates": [round(float(px), 6),
                                                          round(float(py), 6)]},
            # Shown as HTML by the tooltip; js_html so no `${`, backtick or `</script` of
            # the file's text is in the map script at all.
            "properties": {"s": str(status), "t": cards.js_html(tip)},
        })
    TopPane().add_to(group)  # first: the pane must exist before the dots are added
    dot = folium.CircleMarker(radius=6, weight=2, color="#ffffff", fill=True, fill_opacity=0.95)
    dot.options["pane"] = "gmTop"  # folium keeps only the path options it knows
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features}, marker=dot,
        style_function=lambda f: {"fillColor": STATUS_COLORS.get(f["properties"]["s"], "#616161")},
        tooltip=folium.GeoJsonTooltip(fields=["t"], labels=False),
        control=False,
    ).add_to(group)
    assets.localize(group)
    return group, len(features)

"""Batch assignment: every row of an entity or incident file routed at once, same answers as
`route`. Rows that cannot be routed stay in the output with the reason; none are dropped."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geo.crs import CrsError, parse_crs
from geo.sanity import check_points
from grids.routing import Router
from layers import spreadsheet
from layers.finder import Queries
from layers.readers import LAT_NAMES, LON_NAMES, ReadError, read_table, read_vector

# Header names are compared after `header_key` (NFKC, lower case, no spaces, no bracketed
# note such as "（米）" or "(WGS84)"), so "经 度（WGS84）" is a longitude column.
ID_NAMES = ("id", "编号", "code", "案件编号", "统一社会信用代码", "工单编号", "工单号",
            "投诉编号", "举报编号", "信访编号", "事件编号", "序号")
LON_ALIASES = (*LON_NAMES, "东经", "经度坐标", "定位经度", "事发地经度", "事发地点经度")
LAT_ALIASES = (*LAT_NAMES, "北纬", "纬度坐标", "定位纬度", "事发地纬度", "事发地点纬度")
CRS_NAMES = ("crs", "坐标系", "坐标系统", "坐标类型", "坐标体系", "srs", "epsg")
ACCURACY_NAMES = ("accuracy_m", "accuracy", "精度", "定位精度", "精度米", "误差半径")
_BRACKETED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|【[^【】]*】")


class BatchInputError(ValueError):
    pass


@dataclass
class BatchResult:
    table: pd.DataFrame  # the input columns followed by the answer columns
    counts: dict[str, int]

    @property
    def errors(self) -> pd.DataFrame:
        return self.table[self.table["route_status"] == "error"]


def read_rows(path: Path) -> pd.DataFrame:
    """A table of locations: CSV/Excel with lon/lat columns, or a point vector file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".xlsx", ".xls"):
            return read_table(path, path.name, None).frame.reset_index(drop=True)
        raw = read_vector(path, path.name, None, None)
    except ReadError as exc:
        raise BatchInputError(str(exc)) from exc
    frame = raw.frame.copy()
    geoms = raw.geometry
    if geoms is None or not all(g is not None and g.geom_type == "Point" for g in geoms):
        raise BatchInputError(f"{path.name}：只能批量分派点要素（或带经纬度列的表格）")
    frame["lon"] = [g.x for g in geoms]
    frame["lat"] = [g.y for g in geoms]
    if raw.crs and "crs" not in frame:
        frame["crs"] = raw.crs
    return frame


def header_key(name: object) -> str:
    """A header as compared with the names above."""
    text = unicodedata.normalize("NFKC", str(name))  # full-width （） become ()
    return "".join(_BRACKETED.sub("", text).lower().split())


def _column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    keys: dict[str, object] = {}
    for c in frame.columns:
        keys.setdefault(header_key(c), c)
    return next((keys[n] for n in names if n in keys), None)


def header_crs(name: object) -> str | None:
    """The coordinate system a coordinate header names in brackets, e.g. "经度(GCJ02)"."""
    for note in re.findall(r"\(([^()]*)\)", unicodedata.normalize("NFKC", str(name))):
        try:
            return parse_crs(note).key
        except CrsError:
            continue
    return None


def assign(router: Router, frame: pd.DataFrame, crs: str | None = None) -> BatchResult:
    lon_col, lat_col = _column(frame, LON_ALIASES), _column(frame, LAT_ALIASES)
    if lon_col is None or lat_col is None:
        raise BatchInputError(
            f"找不到经纬度列（经度列名可为 {'/'.join(LON_ALIASES)}，"
            f"纬度列名可为 {'/'.join(LAT_ALIASES)}）；"
            f"现有列：{'、'.join(map(str, frame.columns))}"
        )
    crs_col, acc_col = _column(frame, CRS_NAMES), _column(frame, ACCURACY_NAMES)
    if crs_col is None and crs is None:
        # "经度(GCJ02)"/"纬度(GCJ02)": the header names the system of the whole file.
        named = {header_crs(lon_col), header_crs(lat_col)} - {None}
        crs = named.pop() if len(named) == 1 else None
    if crs_col is None and crs is None:
        raise BatchInputError(
            "文件没有坐标系列（crs/坐标系），请指定整个文件的坐标系"
            "（命令行用 --crs，网页上选择“整个文件的坐标系”）"
        )
    n = len(frame)
    x = pd.to_numeric(frame[lon_col], errors="coerce").to_numpy(float)
    y = pd.to_numeric(frame[lat_col], errors="coerce").to_numpy(float)
    acc = (
        pd.to_numeric(frame[acc_col], errors="coerce").fillna(0).to_numpy(float)
        if acc_col
        else np.zeros(n)
    )
    crs_values = (
        frame[crs_col].astype(str).str.strip().replace("", crs or "").to_numpy(object)
        if crs_col
        else np.full(n, crs, dtype=object)
    )
    error = np.full(n, "", dtype=object)
    error[~(np.isfinite(x) & np.isfinite(y))] = "坐标为空或不是数字"
    lon, lat = np.full(n, np.nan), np.full(n, np.nan)
    swapped = np.zeros(n, dtype=bool)
    for value in pd.unique(crs_values):
        rows = np.flatnonzero((crs_values == value) & (error == ""))
        if not len(rows):
            continue
        try:
            system = parse_crs(value) if value else None
        except CrsError as exc:
            error[rows] = str(exc)
            continue
        if system is None:
            error[rows] = "坐标系为空"
            continue
        lo, la, status = check_points(x[rows], y[rows], system)
        lon[rows], lat[rows] = lo, la
        error[rows[status == "out_of_range"]] = f"坐标在 {system.label_zh} 中不是有效坐标"
        swapped[rows[status == "swapped"]] = True
    bad_acc = (acc < 0) | (acc > 50_000)
    error[bad_acc & (error == "")] = "精度半径应在 0–50000 米之间"

    good = np.flatnonzero(error == "")
    if len(good):
        results, index = router.resolver.resolve_indexed(
            Queries.build(lon[good], lat[good], acc[good])
        )
        answers = router.writer.frame(results, index)
    else:  # an empty file, or only bad rows: the same columns, all rows kept with their reasons
        zero = np.zeros(1)
        answers = router.writer.frame(
            *router.resolver.resolve_indexed(Queries.build(zero, zero, zero))
        ).iloc[:0]
    columns = list(answers.columns)
    out = pd.DataFrame({c: [""] * n for c in columns}, index=pd.RangeIndex(n))
    out["generation"] = router.snapshot.generation.id
    out.loc[good, columns] = answers.to_numpy()
    out.loc[error != "", "status"] = "error"
    swapped_rows = swapped & (error == "")
    out.loc[swapped_rows, "flags"] = [
        ",".join(filter(None, ["swapped", f])) for f in out.loc[swapped_rows, "flags"]
    ]
    out["routed_lon"] = np.round(lon, 7)
    out["routed_lat"] = np.round(lat, 7)
    out["error"] = error
    table = pd.concat([frame.reset_index(drop=True), out.add_prefix("route_")], axis=1)
    counts = table["route_status"].value_counts().to_dict()
    return BatchResult(table, counts)


def write_result(result: BatchResult, out: Path) -> None:
    """Write the table as .xlsx or .csv (UTF-8 with BOM, opens in Excel); text is never
    written as a formula."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".xlsx":
        out.write_bytes(spreadsheet.xlsx_bytes({"分派结果": result.table}))
    elif suffix == ".csv":
        out.write_bytes(spreadsheet.csv_bytes(result.table))
    else:
        raise BatchInputError(f"输出文件只能是 .csv 或 .xlsx：{out.name}")

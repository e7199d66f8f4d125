"""Reading layer files as they arrive in a government office.

Shapefiles (UTF-8 or GBK .dbf, with or without .cpg/.prj), GeoPackage layers, GeoJSON/KML, and
tables (CSV in UTF-8 or GBK, Excel) with longitude/latitude columns. Every reader returns the raw
columns plus geometries in the file's own CRS; checking and converting is the importer's job.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio

from layers.problems import Problem, shown

VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".kml")
TABLE_SUFFIXES = (".csv", ".xlsx", ".xls")
# ESRI language driver ids in the .dbf header that mean Chinese code pages.
CHINESE_LDIDS = {0x4D: "GBK", 0x7A: "GBK", 0x4E: "CP949", 0x4F: "BIG5", 0x78: "BIG5"}
LON_NAMES = ("lon", "lng", "longitude", "经度", "x")
LAT_NAMES = ("lat", "latitude", "纬度", "y")


class ReadError(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass
class RawLayer:
    """A file's content before checking: attribute columns, geometries (or None) and CRS."""

    file: str  # name shown to the user
    frame: pd.DataFrame
    geometry: np.ndarray | None  # shapely geometries, for vector files
    crs: str | None  # as declared by the file (WKT/"EPSG:n"), None if it declares none
    encoding: str = ""
    is_table: bool = False  # rows of a table (numbered from line 2) rather than features
    notes: list[str] = field(default_factory=list)

    def where(self, i: int) -> str:
        # A table's index still holds the row's position in the file (blank rows were dropped).
        return f"第 {int(self.frame.index[i]) + 2} 行" if self.is_table else f"第 {i + 1} 个要素"


def read_vector(path: Path, display: str, layer: str | None, encoding: str | None) -> RawLayer:
    """Read one vector layer with GDAL (through pyogrio)."""
    enc = None
    notes: list[str] = []
    if path.suffix.lower() == ".shp":
        enc = encoding or shapefile_encoding(path, display)
        notes.append(f"属性编码 {enc}")
    try:
        meta = pyogrio.read_info(path, layer=layer, encoding=enc)
        frame = pyogrio.read_dataframe(
            path, layer=layer, encoding=enc, read_geometry=True, use_arrow=False
        )
    except Exception as exc:
        raise ReadError(Problem(display, vector_error_zh(exc, path, enc))) from exc
    geometry = np.asarray(frame.geometry.values, dtype=object) if "geometry" in frame else None
    attrs = pd.DataFrame(frame.drop(columns="geometry", errors="ignore"))
    _refuse_duplicate_columns(attrs, display)
    crs = meta.get("crs")
    if crs is None and path.suffix.lower() in (".geojson", ".json", ".kml"):
        crs = "EPSG:4326"  # RFC 7946 / KML define WGS84 lon/lat
    return RawLayer(display, attrs, geometry, crs, enc or "UTF-8", notes=notes)


def shapefile_encoding(path: Path, display: str) -> str:
    """The .dbf text encoding: .cpg, else the LDID byte, else what the bytes decode as."""
    cpg = _sibling(path, ".cpg")
    if cpg is not None:
        text = cpg.read_bytes().decode("ascii", "ignore").strip()
        if text:
            return {"936": "GBK", "65001": "UTF-8", "UTF8": "UTF-8"}.get(text.upper(), text)
    dbf = _sibling(path, ".dbf")
    if dbf is None:
        raise ReadError(Problem(display, "缺少 .dbf 属性文件"))
    data = dbf.read_bytes()
    if len(data) < 32:
        raise ReadError(Problem(dbf.name, ".dbf 文件已损坏（长度不足）"))
    ldid = data[29]
    if ldid in CHINESE_LDIDS:
        return CHINESE_LDIDS[ldid]
    header_len = struct.unpack("<H", data[8:10])[0]
    body = data[header_len:]
    if body.isascii():
        return "UTF-8"
    for candidate in ("UTF-8", "GB18030"):
        try:
            body.decode(candidate)
            return "GBK" if candidate == "GB18030" else candidate
        except UnicodeDecodeError:
            continue
    raise ReadError(
        Problem(
            dbf.name, "无法判断属性表的文字编码（既不是 UTF-8 也不是 GBK）：请另存为 UTF-8，"
            "或用命令行的 --encoding 指定"
        )
    )


def vector_error_zh(exc: Exception, path: Path, encoding: str | None) -> str:
    """What GDAL's or a codec's error reading a vector file means, in Chinese; GDAL's own
    words follow where nothing better is known (they are the most precise there is)."""
    text = str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (f"属性表按 {encoding or 'UTF-8'} 无法解码：编码不对（中文 Shapefile 多为 GBK，"
                "可用 --encoding GBK 指定，或去掉 --encoding 让系统判断）")
    if path.is_file() and path.stat().st_size == 0:
        return "文件是空的（0 字节）"
    if "not recognized as being in a supported file format" in text:
        return "不是可识别的地理数据文件：文件已损坏，或扩展名与内容不符"
    if "No such file" in text:
        return "文件不存在"
    if "do not form a closed linestring" in text:
        return ("面的边界没有闭合（首末点不是同一点）：请在 GIS 软件中修复后再导入"
                f"（GDAL：{text[:200]}）")
    if "Invalid number of points in LinearRing" in text:
        return ("面的边界点数太少（至少 4 个点，首末相同）：请在 GIS 软件中修复后再导入"
                f"（GDAL：{text[:200]}）")
    return f"无法读取（GDAL：{text[:300]}）"


def table_error_zh(exc: Exception, lines_before: int = 0) -> tuple[str, str | None]:
    """What a CSV or Excel reader's error means, in Chinese, and where (a line) when it says:
    pandas' and openpyxl's own messages are English and name no row a person can find.
    `lines_before`: lines the reader was told to skip before the header."""
    text = str(exc)
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if ragged:
        n, line, saw = ragged.groups()
        return f"有 {saw} 个字段，表头只有 {n} 个：请检查分隔符和引号", f"第 {line} 行"
    quote = re.search(r"EOF inside string starting at row (\d+)", text)
    if quote:  # the row counts lines from 0 after the skipped ones
        return ("引号没有闭合（其后直到文件末尾都被当作同一个值）：请检查引号",
                f"第 {int(quote.group(1)) + 1 + lines_before} 行")
    if isinstance(exc, pd.errors.EmptyDataError) or "No columns to parse" in text:
        return "文件是空的：没有表头，也没有数据", None
    if isinstance(exc, zipfile.BadZipFile) or "Excel file format cannot be determined" in text:
        return "不是有效的 Excel 文件（.xlsx）：文件可能已损坏，或是改了扩展名的其他文件", None
    return f"无法读取表格（{type(exc).__name__}：{text[:200]}）", None


def read_table(path: Path, display: str, encoding: str | None) -> RawLayer:
    """CSV (UTF-8 with or without BOM, or GBK) or Excel; every cell read as text."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            refuse_wide_csv(path, display)
            enc = csv_encoding(path, encoding, display)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=enc)
        else:
            enc = "xlsx"
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
    except ReadError:
        raise
    except Exception as exc:
        problem, where = table_error_zh(exc)
        raise ReadError(Problem(display, problem, where)) from exc
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas takes the first column as row labels when the data rows have one field more
        # than the header: every column would be read one to the left.
        raise ReadError(
            Problem(display, "数据行的字段比表头多一个：请检查分隔符、引号，或表头是否少了一列")
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    _refuse_duplicate_columns(frame, display)
    # A row shorter than the header (and an empty Excel cell) reads as NaN: it is blank text.
    frame = frame.astype(object).where(frame.notna(), "")
    frame = frame.map(lambda v: v.strip() if isinstance(v, str) else str(v).strip())
    blank = (frame == "").all(axis=1)
    frame = frame[~blank]  # keep original row numbers in the index for messages
    return RawLayer(display, frame, None, None, enc, is_table=True)


def csv_encoding(path: Path, preferred: str | None = None, display: str | None = None) -> str:
    """UTF-8 when the bytes are valid UTF-8 (GBK text practically never is), else the given
    encoding, else GB18030 (a superset of GBK)."""
    display = display or path.name
    data = path.read_bytes()
    for candidate in ("utf-8-sig", preferred or "gb18030"):
        try:
            data.decode(candidate)
            return candidate
        except UnicodeDecodeError:
            continue
        except LookupError:
            raise ReadError(
                Problem(display, f"无法识别的文字编码：{shown(candidate)}（可用 utf-8 或 gbk）")
            ) from None
    raise ReadError(
        Problem(display, "无法判断文字编码（既不是 UTF-8 也不是 GBK）：请另存为 UTF-8，"
                "或用命令行的 --encoding 指定")
    )


# Columns of a table at most: a layer or a complaint export has tens; a million (a header
# gone wrong, or a file made to hurt) would take pandas a minute and 2 GB to read.
MAX_COLUMNS = 1000


def refuse_wide_csv(path: Path, display: str) -> None:
    """Refuse a CSV whose header has more than MAX_COLUMNS fields, from its first MiB, before
    any reader parses the file."""
    import csv

    with open(path, "rb") as f:
        head = f.read(1 << 20)
    parts = re.split(rb"\r\n|\r|\n", head, maxsplit=1)  # any line end (old Mac files: \r)
    line = parts[0].decode("utf-8", errors="replace")
    try:
        width = len(next(csv.reader([line]), []))
    except csv.Error:  # a quoted header cell running on: its commas are an upper bound
        width = line.count(",") + 1
    if width > MAX_COLUMNS:
        # Without a line end in the first MiB the header goes on: more fields than counted.
        count = f"{width:,} 个" if len(parts) > 1 else f"超过 {width:,} 个"
        raise ReadError(Problem(display, f"字段过多：表头有{count}字段，至多 {MAX_COLUMNS:,} 个"
                                "（请检查分隔符和表头）", "第 1 行"))


def _refuse_duplicate_columns(frame: pd.DataFrame, display: str) -> None:
    """Two columns of one name (e.g. "name" and "name " once trimmed) would be read as one."""
    counts = Counter(str(c) for c in frame.columns)  # counted once: a wide header is linear
    dup = sorted(n for n, k in counts.items() if k > 1)
    if dup:
        raise ReadError(
            Problem(display, "字段名重复：" + "、".join(shown(n) for n in dup[:10]), field=dup[0])
        )


def lonlat_columns(frame: pd.DataFrame) -> tuple[str, str] | None:
    lower = {c.lower(): c for c in frame.columns}
    lon = next((lower[n] for n in LON_NAMES if n in lower), None)
    lat = next((lower[n] for n in LAT_NAMES if n in lower), None)
    return (lon, lat) if lon and lat else None


def points_from_columns(
    raw: RawLayer, lon_col: str, lat_col: str
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Parse the coordinate columns; returns x, y (NaN where unparsable) and the problems."""
    problems = []
    xs = pd.to_numeric(raw.frame[lon_col], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(raw.frame[lat_col], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(xs) | ~np.isfinite(ys))
    for i in bad[:20]:
        lon_v, lat_v = shown(raw.frame[lon_col].iat[i]), shown(raw.frame[lat_col].iat[i])
        problems.append(
            Problem(
                raw.file,
                f"坐标不是有限的数字：{lon_col}='{lon_v}'，{lat_col}='{lat_v}'",
                raw.where(int(i)),
                f"{lon_col}/{lat_col}",
            )
        )
    if len(bad) > 20:
        problems.append(Problem(raw.file, f"……同类问题另有 {len(bad) - 20} 处"))
    return xs, ys, problems


def _sibling(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.exists():
            return candidate
    return None

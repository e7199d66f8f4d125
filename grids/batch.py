"""Batch assignment: every row of an entity or incident file routed at once, same answers as
`route`. Rows that cannot be routed stay in the output with the reason; none are dropped.

Two ways in, one routing core (`assign`):

* `assign(router, frame, crs)` for a table held in memory (the web page shows it on a map);
* `assign_file(router, in_path, out_path, crs)` for files of any length (`gridmap assign`): the
  input (CSV in UTF-8 or GBK, Excel .xlsx, point vector files) is read `CHUNK_ROWS` rows at a
  time, each chunk routed by `assign` and written straight to the .csv/.xlsx output, so memory
  stays that of one chunk whatever the number of rows. It returns a `BatchSummary`.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import os
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd

from geo.crs import CrsError, parse_crs
from geo.plausibility import implausible_many
from geo.sanity import check_points
from grids.routing import Router
from layers import spreadsheet
from layers.finder import Queries
from layers.problems import shown
from layers.readers import LAT_NAMES, LON_NAMES, ReadError, read_table, read_vector

CHUNK_ROWS = 20_000  # rows read, routed and written at a time by `assign_file` (~5 KB each)
# The web page (pages/4_批量分派.py, ui/batch.py) holds a whole upload and its result in memory:
# larger files are for `gridmap assign`. .streamlit/config.toml's server.maxUploadSize is the
# same limit in MB (Streamlit counts 1 MB = 1024 × 1024 bytes).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_ROWS_INTERACTIVE = 100_000
MAX_BAD_ROWS = 500  # rows that could not be routed, listed in a BatchSummary (all are counted)

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


class TooManyRows(BatchInputError):
    pass


@dataclass
class BatchResult:
    table: pd.DataFrame  # the input columns followed by the answer columns
    counts: dict[str, int]

    @property
    def errors(self) -> pd.DataFrame:
        return self.table[self.table["route_status"] == "error"]


def read_rows(path: Path, max_rows: int | None = None) -> pd.DataFrame:
    """A table of locations: CSV/Excel with lon/lat columns, or a point vector file, all in
    memory (for the web page). More than `max_rows` rows: TooManyRows, read no further."""
    chunks, total = [], 0
    for chunk in iter_rows(path):
        total += len(chunk)
        if max_rows is not None and total > max_rows:
            raise TooManyRows(
                f"超过 {max_rows:,} 行，网页上无法一次分派；"
                "请在命令行用 `gridmap assign 文件 --out 结果.csv` 分派（不限行数）"
            )
        chunks.append(chunk)
    frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks)
    return frame.reset_index(drop=True)


def iter_rows(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The rows of a batch file, at most `chunk_rows` at a time, every cell as stripped text
    (numbers as written, like `layers.readers.read_table`) and blank rows dropped. A chunk's
    index is each row's number as the user sees it: the line or sheet row of a table (the header
    is 1), the feature number of a vector file. At least one chunk (maybe empty) is yielded."""
    return _Source(Path(path), chunk_rows).chunks()


class _Source:
    """An input file opened for reading in chunks (what `iter_rows` and `assign_file` read)."""

    def __init__(self, path: Path, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = path
        self.chunk_rows = max(1, int(chunk_rows))
        self.suffix = path.suffix.lower()
        self.is_table = self.suffix in (".csv", ".xlsx", ".xls")
        self.unit = "行" if self.is_table else "个要素"
        # Sizes seen before reading, to plan the output: lines (or rows) and text bytes.
        self.lines_hint = 0
        self.bytes_hint = 0
        if not path.is_file():
            raise BatchInputError(f"{shown(path.name, 200)}：文件不存在")

    def chunks(self) -> Iterator[pd.DataFrame]:
        if self.suffix == ".csv":
            return self._csv()
        if self.suffix == ".xlsx":
            return self._xlsx()
        return self._whole()

    def _fail(self, exc: Exception) -> BatchInputError:
        return BatchInputError(f"{shown(self.path.name, 200)}：无法读取表格：{exc}")

    # CSV: pandas' parser, a chunk at a time. The encoding is found by decoding the file as a
    # stream (never the whole text in memory); blank lines are read as rows and then dropped,
    # so a row's index is its line.
    def _csv(self) -> Iterator[pd.DataFrame]:
        enc, lead = self._csv_encoding()
        try:
            # index_col=False: a row longer than the header must not turn its first cells into
            # row labels (every column would shift); pandas warns instead, refused below.
            reader = pd.read_csv(
                self.path, dtype=str, keep_default_na=False, encoding=enc, skiprows=lead,
                skip_blank_lines=False, chunksize=self.chunk_rows, index_col=False,
            )
        except Exception as exc:
            raise self._fail(exc) from exc
        return self._csv_chunks(reader, lead)

    def _csv_chunks(self, reader, lead: int) -> Iterator[pd.DataFrame]:
        with reader:
            first = True
            while True:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", pd.errors.ParserWarning)
                        chunk = next(reader)
                except StopIteration:
                    return
                except pd.errors.ParserWarning as exc:
                    raise BatchInputError(
                        f"{shown(self.path.name, 200)}：有的行字段比表头多"
                        "（多出的值会使各列错位），请检查分隔符、引号或是否缺少表头列") from exc
                except Exception as exc:  # a malformed line, far down the file
                    raise self._fail(exc) from exc
                chunk.index = chunk.index + 2 + lead
                cleaned = _clean(chunk)
                if first:
                    _unique_headers(self.path.name, cleaned.columns)
                    first = False
                yield cleaned

    def _csv_encoding(self) -> tuple[str, int]:
        """UTF-8 when the bytes are valid UTF-8 (GBK text practically never is), else GB18030
        (a superset of GBK); and the number of empty lines before the header."""
        for enc in ("utf-8-sig", "gb18030"):
            decoder = codecs.getincrementaldecoder(enc)()
            lines, lead, at_start = 0, 0, True
            try:
                with open(self.path, "rb") as f:
                    while block := f.read(1 << 20):
                        decoder.decode(block)
                        lines += block.count(b"\n")
                        if at_start:
                            stripped = block.lstrip(b"\r\n")
                            text = block[: len(block) - len(stripped)]
                            lead += text.count(b"\n")
                            at_start = not stripped
                    decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                continue
            except OSError as exc:
                raise self._fail(exc) from exc
            self.lines_hint = lines
            self.bytes_hint = self.path.stat().st_size
            return enc, lead
        raise BatchInputError(
            f"{shown(self.path.name, 200)}：无法判断文字编码（既不是 UTF-8 也不是 GBK），"
            "请另存为 UTF-8 的 CSV"
        )

    # Excel: openpyxl's read-only mode streams the sheet; cells become text as pandas'
    # read_excel(dtype=str) makes them (5.0 -> "5", dates "2026-11-01 08:00:00").
    def _xlsx(self) -> Iterator[pd.DataFrame]:
        try:
            book = openpyxl.load_workbook(
                self.path, read_only=True, data_only=True, keep_links=False
            )
        except Exception as exc:
            raise self._fail(exc) from exc
        try:
            sheet = book.worksheets[0]
            self.lines_hint = int(sheet.max_row or 0)
            with zipfile.ZipFile(self.path) as z:
                self.bytes_hint = sum(i.file_size for i in z.infolist())
            if not self.lines_hint:
                self.lines_hint = self.bytes_hint // 100
            sheet.reset_dimensions()  # a wrong <dimension> must not cut the data
            rows = sheet.iter_rows(values_only=True)
        except Exception as exc:
            book.close()
            raise self._fail(exc) from exc
        return self._xlsx_chunks(book, rows)

    def _xlsx_chunks(self, book, rows) -> Iterator[pd.DataFrame]:
        try:
            header: list[str] = []
            row_number = 0
            for values in self._guarded(rows):
                row_number += 1
                header = [_excel_text(v) for v in values]
                if any(header):  # empty rows above the header are skipped
                    break
            while header and not header[-1]:
                header.pop()
            columns = _dedup([h or f"Unnamed: {j}" for j, h in enumerate(header)])
            width, yielded = len(columns), False
            block, index = [], []
            for values in self._guarded(rows):
                row_number += 1
                cells = [_excel_text(v) for v in values[:width]]
                if not any(cells):
                    continue
                block.append(cells + [""] * (width - len(cells)))
                index.append(row_number)
                if len(block) >= self.chunk_rows:
                    yield _clean(pd.DataFrame(block, columns=columns, index=index, dtype=str))
                    block, index, yielded = [], [], True
            if block or not yielded:
                yield _clean(pd.DataFrame(block, columns=columns, index=index, dtype=str))
        finally:
            book.close()

    def _guarded(self, rows) -> Iterator[tuple]:
        while True:
            try:
                values = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # a damaged sheet part
                raise self._fail(exc) from exc
            yield values

    # Vector files (points) and old .xls: read whole, then handed on in chunks.
    def _whole(self) -> Iterator[pd.DataFrame]:
        frame = _read_whole(self.path)
        self.lines_hint = len(frame)
        self.bytes_hint = self.path.stat().st_size
        return self._slices(frame)

    def _slices(self, frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
        for start in range(0, max(len(frame), 1), self.chunk_rows):
            yield frame.iloc[start : start + self.chunk_rows]


def _read_whole(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".xlsx", ".xls"):
            frame = read_table(path, path.name, None).frame
            frame.index = frame.index + 2  # the line of each row (header: line 1)
            return frame
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
    frame.index = pd.RangeIndex(1, len(frame) + 1)  # feature numbers
    return frame


def _excel_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return str(pd.Timestamp(value))
    return str(value).strip()


def _dedup(names: list[str]) -> list[str]:
    """Repeated column names made unique the way pandas does: "a", "a.1", "a.2"."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        cur, k = name, seen.get(name, 0)
        while cur in seen:
            cur = f"{name}.{k}"
            k += 1
        seen[name] = k
        seen.setdefault(cur, 0)
        out.append(cur)
    return out


def _unique_headers(name: str, columns) -> None:
    """Two headers that are the same once trimmed ("经度" and "经度 ") would make every later
    lookup ambiguous: refused, naming them."""
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            raise BatchInputError(f"{shown(name, 200)}：表头“{shown(col, 50)}”出现了不止一次"
                                  "（去掉首尾空格后相同），请删除或改名")
        seen.add(col)


def _clean(chunk: pd.DataFrame) -> pd.DataFrame:
    """Header and cells stripped, every cell text, blank rows dropped (index kept)."""
    columns = [str(c).strip() for c in chunk.columns]
    data = {
        j: chunk.iloc[:, j].fillna("").astype(str).str.strip() for j in range(chunk.shape[1])
    }
    frame = pd.DataFrame(data, index=chunk.index)
    frame.columns = columns
    if frame.shape[1]:
        frame = frame[~(frame == "").all(axis=1)]
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
        # The same plausibility as a single route: a row in the wrong system says so.
        suspect = rows[np.isin(status, ("out_of_range", "outside_region"))]
        if len(suspect):
            for row, why in zip(suspect, implausible_many(x[suspect], y[suspect], system),
                                strict=True):
                if why:
                    error[row] = why
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


@dataclass
class BadRow:
    line: int  # the row's line (sheet row) in the file, header = 1; for vector files the feature
    reason: str
    unit: str = "行"

    @property
    def where(self) -> str:
        return f"第 {self.line} {self.unit}"


@dataclass
class BatchSummary:
    """What `assign_file` did: every row is in the output file; this is the overview."""

    out: Path
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)  # the first MAX_BAD_ROWS of them
    bbox: tuple[float, float, float, float] | None = None  # of the rows routed inside
    generation: int | None = None

    @property
    def errors(self) -> int:
        return int(self.counts.get("error", 0))

    def add(self, table: pd.DataFrame, lines: pd.Index, unit: str) -> None:
        self.total += len(table)
        for status, n in table["route_status"].value_counts().items():
            self.counts[status] = self.counts.get(status, 0) + int(n)
        room = MAX_BAD_ROWS - len(self.bad_rows)
        if room > 0:
            bad = np.flatnonzero((table["route_status"] == "error").to_numpy())[:room]
            reasons = table["route_error"].to_numpy()
            self.bad_rows += [BadRow(int(lines[i]), str(reasons[i]), unit) for i in bad]
        box = extent(table)
        if box is not None:
            old = self.bbox or box
            self.bbox = (min(old[0], box[0]), min(old[1], box[1]),
                         max(old[2], box[2]), max(old[3], box[3]))


def extent(table: pd.DataFrame) -> tuple[float, float, float, float] | None:
    """The extent of the rows routed inside the jurisdiction (ok or ambiguous)."""
    inside = table["route_status"].isin(["ok", "ambiguous"]).to_numpy()
    lon = pd.to_numeric(table["route_routed_lon"], errors="coerce").to_numpy(float)[inside]
    lat = pd.to_numeric(table["route_routed_lat"], errors="coerce").to_numpy(float)[inside]
    keep = np.isfinite(lon) & np.isfinite(lat)
    if not keep.any():
        return None
    lon, lat = lon[keep], lat[keep]
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


RESULT_SHEET = "分派结果"
# Sheet XML above this size is written with ZIP64 (a zip part without it stops at 2 GiB).
_ZIP64_FROM = 1536 * 1024 * 1024


def assign_file(
    router: Router,
    in_path: Path,
    out_path: Path,
    crs: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BatchSummary:
    """Route every row of `in_path` and write the input columns with the answer columns to
    `out_path` (.csv: UTF-8 with BOM; .xlsx), `chunk_rows` rows at a time: memory does not grow
    with the file. The output appears only when complete (BatchInputError leaves none)."""
    in_path, out_path = Path(in_path), Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise BatchInputError(f"输出文件只能是 .csv 或 .xlsx：{shown(out_path.name, 200)}")
    source = _Source(in_path, chunk_rows)
    chunks = source.chunks()  # reads the start of the file: refusals come before any output
    summary = BatchSummary(out_path, generation=router.snapshot.generation.id)
    part = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    try:
        with _writer(part, out_path, source) as write, contextlib.closing(chunks):
            for chunk in chunks:
                table = assign(router, chunk, crs=crs).table
                write(table)
                summary.add(table, chunk.index, source.unit)
        os.replace(part, out_path)
    except spreadsheet.SheetFull as exc:
        raise BatchInputError(
            f"结果超过 Excel 单个工作表的容量（至多 {spreadsheet.XLSX_MAX_ROWS - 1:,} 行、"
            "约 2 GB），请输出为 .csv"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    return summary


@contextlib.contextmanager
def _writer(part: Path, out: Path, source: _Source) -> Iterator:
    """A function appending a result table to `part`, the output file being written."""
    suffix = out.suffix.lower()
    try:
        if suffix == ".csv":
            sink = spreadsheet.CsvWriter(part)
        else:
            guess = source.bytes_hint * 2 + min(source.lines_hint, spreadsheet.XLSX_MAX_ROWS) * 2048
            sink = spreadsheet.XlsxWriter(part, [RESULT_SHEET], zip64=guess > _ZIP64_FROM)
    except OSError as exc:
        raise BatchInputError(f"无法写入结果文件 {shown(out, 200)}：{exc.strerror}") from exc
    with sink:
        append = sink.append if suffix == ".csv" else sink.sheet().append
        yield append


def write_result(result: BatchResult, out: Path) -> None:
    """Write the table as .xlsx or .csv (UTF-8 with BOM, opens in Excel); text is never
    written as a formula."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".xlsx":
        out.write_bytes(spreadsheet.xlsx_bytes({RESULT_SHEET: result.table}))
    elif suffix == ".csv":
        out.write_bytes(spreadsheet.csv_bytes(result.table))
    else:
        raise BatchInputError(f"输出文件只能是 .csv 或 .xlsx：{out.name}")

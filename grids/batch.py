"""Batch assignment: every row of an entity or incident file routed at once, same answers as
`route`. Rows that cannot be routed stay in the output with the reason; none are dropped.

Two ways in, one routing core (`assign`):

* `assign(router, frame, crs)` for a table held in memory (the web page shows it on a map);
* `assign_file(router, in_path, out_path, crs)` for files of any length (`gridmap assign`): the
  input (CSV in UTF-8 or GBK, Excel .xlsx, point vector files) is read `CHUNK_ROWS` rows at a
  time, each chunk routed by `assign` and written straight to the .csv/.xlsx output, so memory
  stays that of one chunk whatever the number of rows. It returns a `BatchSummary`.

What people open is in Chinese (`localize`, `export_sheets`): Chinese headers and labels for the
coded values, with the machine table, complete, on an Excel's second sheet; programs ask for
`headers="machine"`. `file_cases` (`Gridmap.file_batch`) files the rows of a complaint table as
cases, each checked for a duplicate first, and says per row what it did.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import json
import os
import re
import threading
import time
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from geo.crs import CrsError, parse_crs
from geo.plausibility import implausible_many
from geo.sanity import check_points
from grids import cases
from grids.access import PermissionDenied
from grids.acting import Acting
from grids.answer import (
    ANSWER_COLUMNS,
    FLAG_ZH,
    STATUS_ZH,
    AnswerWriter,
    GrowingText,
    taken_text,
)
from grids.cases import BEIJING
from grids.deadlines import beijing_text
from grids.flow import CaseError, load_categories
from grids.intake import possible_duplicates
from grids.routing import Router, RoutingInputError
from layers import spreadsheet
from layers.finder import Queries
from layers.incidents import CATEGORIES_ZH, category_labels
from layers.problems import errno_zh, shown
from layers.readers import (
    LAT_NAMES,
    LON_NAMES,
    ReadError,
    read_table,
    read_vector,
    refuse_wide_csv,
    table_error_zh,
)
from layers.schema import BUREAU_LEVEL_ZH, GRID_KIND_ZH
from layers.store import IncidentQuery

# From this size on (about 200,000 rows) a file is routed through the face raster
# (layers/faces.py), built once before its first chunk.
FACES_FROM_BYTES = 10 * 2**20
CHUNK_ROWS = 50_000  # rows read, routed and written at a time by `assign_file`
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


def read_rows(path: Path, max_rows: int | None = None, name: str | None = None
              ) -> pd.DataFrame:
    """A table of locations: CSV/Excel with lon/lat columns, or a point vector file, all in
    memory (for the web page). More than `max_rows` rows: TooManyRows, read no further.
    `name`: the file's name as its user knows it (an upload's), for messages."""
    chunks, total = [], 0
    for chunk in iter_rows(path, name=name):
        total += len(chunk)
        if max_rows is not None and total > max_rows:
            raise TooManyRows(
                f"超过 {max_rows:,} 行，网页上无法一次分派；"
                "请在命令行用 `gridmap assign 文件 --out 结果.csv` 分派（不限行数）"
            )
        chunks.append(chunk)
    frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks)
    return frame.reset_index(drop=True)


def iter_rows(path: Path, chunk_rows: int = CHUNK_ROWS, name: str | None = None
              ) -> Iterator[pd.DataFrame]:
    """The rows of a batch file, at most `chunk_rows` at a time, every cell as stripped text
    (numbers as written, like `layers.readers.read_table`) and blank rows dropped. A chunk's
    index is each row's number as the user sees it: the line or sheet row of a table (the header
    is 1), the feature number of a vector file. At least one chunk (maybe empty) is yielded."""
    return _Source(Path(path), chunk_rows, name).chunks()


class _Source:
    """An input file opened for reading in chunks (what `iter_rows` and `assign_file` read)."""

    def __init__(self, path: Path, chunk_rows: int = CHUNK_ROWS, name: str | None = None
                 ) -> None:
        self.path = path
        self.name = name or path.name  # as messages name it (an upload by its own name)
        self.chunk_rows = max(1, int(chunk_rows))
        self.suffix = path.suffix.lower()
        self.is_table = self.suffix in (".csv", ".xlsx", ".xls")
        self.unit = "行" if self.is_table else "个要素"
        # Sizes seen before reading, to plan the output: lines (or rows) and text bytes (a
        # CSV's lines are counted when asked: only an .xlsx output asks).
        self._lines: int | None = None
        self.bytes_hint = 0
        if path.is_dir():
            raise BatchInputError(f"{shown(self.name, 200)}：这是一个目录，不是文件")
        if not path.is_file():
            raise BatchInputError(f"{shown(self.name, 200)}：文件不存在")

    @property
    def lines_hint(self) -> int:
        if self._lines is None:
            self._lines = _line_count(self.path) if self.suffix == ".csv" else 0
        return self._lines

    @lines_hint.setter
    def lines_hint(self, value: int) -> None:
        self._lines = value

    def chunks(self) -> Iterator[pd.DataFrame]:
        if self.suffix == ".csv":
            return self._csv()
        if self.suffix == ".xlsx":
            return self._xlsx()
        return self._whole()

    def _fail(self, exc: Exception, lines_before: int = 0) -> BatchInputError:
        problem, where = table_error_zh(exc, lines_before)
        return BatchInputError(f"{shown(self.name, 200)}：{where + '：' if where else ''}{problem}")

    # CSV: arrow's reader where it reads the file as pandas does (a UTF-8 file: arrow checks
    # every cell is UTF-8 as it parses), else pandas' parser, a chunk at a time, in the
    # encoding found by looking at the whole file (never the whole text in memory); blank
    # lines are read as rows and then dropped, so a row's index is its line.
    def _csv(self) -> Iterator[pd.DataFrame]:
        self.bytes_hint = self.path.stat().st_size
        try:
            refuse_wide_csv(self.path, self.name)
        except ReadError as exc:
            raise BatchInputError(str(exc)) from exc
        lead = _blank_lines(self.path)
        fast = self._arrow_csv(lead)
        if fast is not None:
            return fast
        enc = self._csv_encoding()
        try:
            # index_col=False: a row longer than the header must not turn its first cells into
            # row labels (every column would shift); pandas warns instead, refused below.
            reader = pd.read_csv(
                self.path, dtype=str, keep_default_na=False, encoding=enc, skiprows=lead,
                skip_blank_lines=False, chunksize=self.chunk_rows, index_col=False,
            )
        except Exception as exc:
            raise self._fail(exc, lead) from exc
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
                        f"{shown(self.name, 200)}：有的行字段比表头多"
                        "（多出的值会使各列错位），请检查分隔符、引号或是否缺少表头列") from exc
                except Exception as exc:  # a malformed line, far down the file
                    raise self._fail(exc, lead) from exc
                chunk.index = chunk.index + 2 + lead
                cleaned = _clean(chunk)
                if first:
                    _unique_headers(self.name, cleaned.columns)
                    first = False
                yield cleaned

    def _arrow_csv(self, lead: int) -> Iterator[pd.DataFrame] | None:
        """The same chunks by arrow's CSV reader (a million rows in 0.2 s, pandas' parser takes
        1.2 s), or None — then pandas reads — for any file the two might read differently: a
        header with an empty or repeated name (pandas renames them), or any row arrow will not
        take (more or fewer cells than the header, a broken quote: pandas' reading and its
        messages stay the reference). The file is parsed once through before anything is
        yielded, so that such a row far down cannot stop a reading half-way."""
        import pyarrow.csv as pacsv

        try:
            with pacsv.open_csv(self.path, read_options=pacsv.ReadOptions(
                    skip_rows=lead, block_size=1 << 16)) as head:
                names = head.schema.names
            if not names or len(set(names)) != len(names) or not all(n.strip() for n in names):
                return None
            options = {
                "read_options": pacsv.ReadOptions(skip_rows=lead, block_size=8 << 20),
                # a quoted cell may hold line breaks; blank lines are rows (dropped by _clean)
                "parse_options": pacsv.ParseOptions(newlines_in_values=True,
                                                    ignore_empty_lines=False),
                "convert_options": pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            }
            with pacsv.open_csv(self.path, **options) as reader:
                rows = sum(batch.num_rows for batch in reader)
        except (pa.ArrowException, OSError, ValueError):
            return None
        if rows == 0:
            return None  # a header alone: pandas' answer
        return self._arrow_chunks(options, names, lead)

    def _arrow_chunks(self, options: dict, names: list[str], lead: int
                      ) -> Iterator[pd.DataFrame]:
        import pyarrow.csv as pacsv

        pending: list[pa.RecordBatch] = []
        held = start = 0
        first = True

        def chunk(table: pa.Table, start: int) -> pd.DataFrame:
            # `_clean`, done by arrow before pandas sees the text: cells trimmed (the kernel
            # pandas' str.strip() calls), rows with every cell empty dropped.
            columns = [pc.utf8_trim_whitespace(c) for c in table.columns]
            lines = np.arange(start, start + table.num_rows) + 2 + lead
            blank = pc.equal(columns[0], "")
            for column in columns[1:]:
                blank = pc.and_(blank, pc.equal(column, ""))
            if pc.any(blank).as_py():
                keep = pc.invert(blank)
                columns = [pc.filter(c, keep) for c in columns]
                lines = lines[keep.to_numpy(zero_copy_only=False)]
            frame = pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(len(names))]
                                         ).to_pandas()
            frame.columns = [str(n).strip() for n in names]
            frame.index = pd.Index(lines)
            return frame

        try:
            with pacsv.open_csv(self.path, **options) as reader:
                for batch in reader:
                    pending.append(batch)
                    held += batch.num_rows
                    while held >= self.chunk_rows:
                        table = pa.Table.from_batches(pending)
                        out = chunk(table.slice(0, self.chunk_rows), start)
                        rest = table.slice(self.chunk_rows)
                        pending, held = rest.to_batches(), rest.num_rows
                        start += self.chunk_rows
                        if first:
                            _unique_headers(self.name, out.columns)
                            first = False
                        yield out
        except (pa.ArrowException, OSError) as exc:  # the file changed since it was checked
            raise self._fail(exc) from exc
        if held or first:
            out = chunk(pa.Table.from_batches(pending, schema=reader.schema), start)
            if first:
                _unique_headers(self.name, out.columns)
            yield out

    def _csv_encoding(self) -> str:
        """UTF-8 when the bytes are valid UTF-8 (GBK text practically never is), else GB18030
        (a superset of GBK). Only files arrow's reader steps aside for get here (arrow checks
        the others as it parses)."""
        try:
            for enc in ("utf-8-sig", "gb18030"):
                if _decodes(self.path, enc):
                    return enc
        except OSError as exc:
            raise self._fail(exc) from exc
        raise BatchInputError(
            f"{shown(self.name, 200)}：无法判断文字编码（既不是 UTF-8 也不是 GBK），"
            "请另存为 UTF-8 的 CSV"
        )

    # Excel: openpyxl's read-only mode streams the sheet; cells become text as pandas'
    # read_excel(dtype=str) makes them (5.0 -> "5", dates "2026-11-01 08:00:00").
    def _xlsx(self) -> Iterator[pd.DataFrame]:
        try:
            import openpyxl  # only a workbook needs it (0.1 s to import)

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
        frame = _read_whole(self.path, self.name)
        self.lines_hint = len(frame)
        self.bytes_hint = self.path.stat().st_size
        return self._slices(frame)

    def _slices(self, frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
        for start in range(0, max(len(frame), 1), self.chunk_rows):
            yield frame.iloc[start : start + self.chunk_rows]


_BLOCK = 16 << 20  # bytes read at a time by the checks below


def _line_count(path: Path) -> int:
    """The number of line feeds in a file."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(_BLOCK), b""))


def _blank_lines(path: Path) -> int:
    """The number of line feeds before a file's first other character than CR or LF (blank
    lines above the header; CR LF counted once)."""
    lead = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 16):
            stripped = block.lstrip(b"\r\n")
            lead += block[: len(block) - len(stripped)].count(b"\n")
            if stripped:
                break
    return lead


def _decodes(path: Path, encoding: str) -> bool:
    """Whether a file is text in `encoding`, decoded as a stream (never the whole text in
    memory)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _read_whole(path: Path, name: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".xlsx", ".xls"):
            frame = read_table(path, name, None).frame
            frame.index = frame.index + 2  # the line of each row (header: line 1)
            return frame
        raw = read_vector(path, name, None, None)
    except ReadError as exc:
        raise BatchInputError(str(exc)) from exc
    frame = raw.frame.copy()
    geoms = raw.geometry
    if geoms is None or not all(g is not None and g.geom_type == "Point" for g in geoms):
        raise BatchInputError(f"{shown(name, 200)}：只能批量分派点要素（或带经纬度列的表格）")
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


@dataclass
class _Given:
    """The locations of a table as given: numbers, accuracy and coordinate system per row, and
    why a row cannot be used at all (empty when it can)."""

    x: np.ndarray
    y: np.ndarray
    acc: np.ndarray
    crs: np.ndarray | str  # the system's text per row ("" when none), or the whole file's
    error: np.ndarray

    def system(self, row: int) -> str:
        """The coordinate system's text of one row ("" when none)."""
        return self.crs if isinstance(self.crs, str) else str(self.crs[row])


def _given(frame: pd.DataFrame, crs: str | None) -> _Given:
    """Read the coordinate, system and accuracy columns (BatchInputError when the table as a
    whole has none to read)."""
    clash = [str(c) for c in frame.columns if str(c) in ZH_HEADERS or str(c) in _ZH_DROPPED]
    if clash:  # e.g. a result file sent again: its answer columns would be mistaken for ours
        raise BatchInputError(
            f"文件中已有与分派结果同名的列：{'、'.join(shown(c, 50) for c in clash[:10])}"
            "（可能是之前分派的结果文件）；请删除或改名这些列后再分派"
        )
    lon_col, lat_col = _column(frame, LON_ALIASES), _column(frame, LAT_ALIASES)
    if lon_col is None or lat_col is None:
        raise BatchInputError(
            f"找不到经纬度列（经度列名可为 {'/'.join(LON_ALIASES)}，"
            f"纬度列名可为 {'/'.join(LAT_ALIASES)}）；"
            f"现有列：{'、'.join(shown(c, 50) for c in frame.columns[:30])}"
            + (f" 等 {len(frame.columns)} 列" if len(frame.columns) > 30 else "")
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
    x, y = _numbers(frame[lon_col]), _numbers(frame[lat_col])
    acc = _numbers(frame[acc_col]) if acc_col else np.zeros(n)
    acc[np.isnan(acc)] = 0.0  # no accuracy given: an exact point
    crs_values = (
        frame[crs_col].astype(str).str.strip().replace("", crs or "").to_numpy(object)
        if crs_col
        else crs  # the whole file's
    )
    error = np.full(n, "", dtype=object)
    error[~(np.isfinite(x) & np.isfinite(y))] = "坐标为空或不是数字"
    return _Given(x, y, acc, crs_values, error)


def _numbers(values: pd.Series) -> np.ndarray:
    """A text column's numbers, NaN where a cell is empty or not a number (pd.to_numeric's
    answer, errors coerced). A column of plain decimals — every coordinate column of a sane
    file — is cast by arrow in C++ (18 ms for a million cells instead of 330); anything arrow
    will not cast whole goes to pandas as before."""
    numbers = None
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        import pyarrow.compute as pc

        cells = pa.array(values.array)
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cells = pc.if_else(pc.equal(cells, ""), pa.scalar(None, cells.type), cells)
            numbers = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)  # null: NaN
    if numbers is None:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(float)
    return numbers if numbers.flags.writeable else numbers.copy()  # the caller fills blanks


def _by_system(crs: np.ndarray | str, usable: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Each coordinate system the rows name, with its usable rows."""
    if isinstance(crs, str):
        yield crs, np.flatnonzero(usable)
        return
    codes, systems = pd.factorize(crs)
    for k, system in enumerate(systems.tolist()):
        yield system, np.flatnonzero((codes == k) & usable)


def assign(router: Router, frame: pd.DataFrame, crs: str | None = None) -> BatchResult:
    """Route every row of `frame`: the input columns followed by the answer columns."""
    table = _route_rows(router, frame, crs).table
    return BatchResult(table, table["route_status"].value_counts().to_dict())


@dataclass
class _Routed:
    """A routed chunk: its table and, for the summary, which answer each row shows (counting
    and picking rows by answer id, not by the table's text)."""

    table: pd.DataFrame | pa.Table | _PieceChunk  # the input columns, then the answers'
    of_row: np.ndarray  # the answer id each row shows
    ids: np.ndarray  # the distinct ids of of_row, ascending
    counts: np.ndarray  # how many rows show each of them
    statuses: list[str]  # the status of each of them (ok, ambiguous, outside, error)
    lon: np.ndarray
    lat: np.ndarray
    error: np.ndarray

    def rows_of(self, *statuses: str) -> np.ndarray:
        """Whether each row's status is one of `statuses`."""
        mine = np.zeros(int(self.ids[-1]) + 1 if len(self.ids) else 0, dtype=bool)
        mine[self.ids[[s in statuses for s in self.statuses]]] = True
        return mine[self.of_row]  # a lookup per row, not a sort (np.isin)


def _route_rows(router: Router, frame: pd.DataFrame, crs: str | None,
                arrow: bool = False, pieces: _AnswerPieces | None = None) -> _Routed:
    """Route the rows of `frame`; the table is pandas, or with `arrow` (and input columns all
    text, as a CSV or a workbook is read) an arrow table whose answer columns are dictionary
    arrays: what a CSV file writer takes without a copy per row. With `pieces` too, the answer
    columns are one, `route_answers`: each row's answer as a piece of a CSV line."""
    return _answer_rows(router, _locate_rows(router, frame, crs), arrow, pieces)


@dataclass
class _Located:
    """A chunk's rows checked and placed (`_locate_rows`), not yet answered."""

    frame: pd.DataFrame
    lon: np.ndarray
    lat: np.ndarray
    acc: np.ndarray
    error: np.ndarray  # why a row cannot be routed ("" where it can)
    swapped: np.ndarray
    good: np.ndarray  # the rows that can be routed
    face: np.ndarray | None  # per good row its face of the raster with kept answers, or -1
    rest: np.ndarray  # the good rows answered by the rules (no single-answer face)


def _locate_rows(router: Router, frame: pd.DataFrame, crs: str | None) -> _Located:
    """The coordinates of `frame` read and checked, and the face of each usable row found
    (a large file's, with kept answers): no answer registered yet, so that `assign_file` can
    locate the next chunk in a second thread while this one is answered (the lookup near
    boundaries runs in GEOS, outside the GIL)."""
    given = _given(frame, crs)
    x, y, acc, crs_values, error = given.x, given.y, given.acc, given.crs, given.error
    n = len(frame)
    lon, lat = np.full(n, np.nan), np.full(n, np.nan)
    swapped = np.zeros(n, dtype=bool)
    for value, rows in _by_system(crs_values, error == ""):
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
    # With the answers of the raster's faces ready (a large file), a row in a face of one
    # outcome takes that face's answer; only the others are resolved by the rules.
    face = None
    rest = good
    if len(good) and router.face_answers is not None and router.resolver.use_faces:
        face = router.resolver.face_ids(Queries.build(lon[good], lat[good], acc[good]),
                                        router.resolver.faces())
        rest = good[(face < 0) | ~router.face_answers.single[face]]
    return _Located(frame, lon, lat, acc, error, swapped, good, face, rest)


def _answer_rows(router: Router, located: _Located, arrow: bool = False,
                 pieces: _AnswerPieces | None = None) -> _Routed:
    """The located rows answered (`_route_rows`)."""
    frame, lon, lat, acc, error = (located.frame, located.lon, located.lat, located.acc,
                                   located.error)
    swapped, good, face, rest = located.swapped, located.good, located.face, located.rest
    arrow = arrow and all(isinstance(t, pd.StringDtype) for t in frame.dtypes)
    results: list = []
    index = np.zeros(0, dtype=np.int64)
    if len(rest):
        results, index = router.resolver.resolve_indexed(
            Queries.build(lon[rest], lat[rest], acc[rest]))
    writer = router.writer
    with writer.lock:  # this batch's answer ids stay valid until its table is taken
        # The faces' block first: registered into an empty registry it is kept as arrow words.
        by_face = writer.face_ids(router.face_answers) if face is not None else None
        of_row = _answer_ids(router, results, index, error, swapped, rest)
        if by_face is not None:
            answered = np.flatnonzero(face >= 0)
            answered = answered[by_face[face[answered]] >= 0]
            of_row[good[answered]] = by_face[face[answered]]
        of_row = _swapped_copies(writer, of_row, swapped & (error == ""))
        column = None
        if arrow and pieces is not None:
            column = pieces.column(of_row)
            answers = {"answers": column.at}
        else:
            answers = writer.arrow_columns(of_row) if arrow else writer.table(of_row)
        ids, counts = np.unique(of_row, return_counts=True)
        statuses = writer.statuses(ids.tolist())
    answers["routed_lon"] = np.round(lon, 7)
    answers["routed_lat"] = np.round(lat, 7)
    answers["error"] = error
    if arrow:
        table = _arrow_table(frame, answers)
        if column is not None:
            table = _PieceChunk(table, column)
    else:
        table = pd.concat([frame.reset_index(drop=True), answers.add_prefix("route_")], axis=1)
    return _Routed(table, of_row, ids, counts, statuses, lon, lat, error)


def _arrow_table(frame: pd.DataFrame, answers: dict) -> pa.Table:
    """The input columns (text) followed by the answer columns, as one arrow table; numbers
    and texts as the pandas table's are written (NaN: an empty cell)."""
    names = [str(c) for c in frame.columns] + [f"route_{name}" for name in answers]
    columns = [pa.array(frame.iloc[:, j].array, pa.string(), from_pandas=True)
               for j in range(frame.shape[1])]
    columns += [value if isinstance(value, pa.Array)
                else pa.array(value, pa.string() if value.dtype == object else None,
                              from_pandas=True)
                for value in answers.values()]
    return pa.Table.from_arrays(columns, names=names)


class _AnswerPieces:
    """The answer columns of each answer rendered once as one piece of a CSV line — in words
    with `labels`, guarded, quoted as arrow's writer quotes — so that each row of a chunk takes
    one piece, not nineteen cells (a ×16 million rows carry 550 MB of answer text).

    The routing thread gives each answer met for the first time the next position and takes
    its columns from the registry (under the writer's lock); the writing thread renders them
    and takes the rows' pieces (`_PieceColumn.cells`). It handles the chunks in order, so
    pieces are appended in the order their positions were given, and the routing thread (the
    busier one) does no rendering."""

    def __init__(self, writer: AnswerWriter, labels: ExportLabels | None) -> None:
        self.writer, self.labels = writer, labels
        self._epoch = -1
        self._given = 0  # positions given so far (pieces rendered, or to be)
        self._at = np.zeros(0, dtype=np.int64)  # per answer id its piece's position, or -1
        # The writing thread's alone: rendered, in order (made by the first chunk's `fresh`).
        self._pieces: GrowingText | None = None

    def column(self, of_row: np.ndarray) -> _PieceColumn:
        """Each row's piece, to be taken in the writing thread (called under the writer's
        lock: ids of its registry as it is)."""
        fresh = self._epoch != self.writer.epoch
        if fresh:  # the first chunk, or the registry emptied: its ids name other answers now
            self._epoch, self._given = self.writer.epoch, 0
            self._at = np.zeros(0, dtype=np.int64)
        of_row = np.asarray(of_row, dtype=np.int64)
        top = int(of_row.max()) + 1 if len(of_row) else 0
        if len(self._at) < top:
            self._at = np.concatenate([self._at, np.full(top - len(self._at), -1)])
        at = self._at[of_row]
        missing = np.unique(of_row[at < 0])
        new = None
        if len(missing):
            new = pa.table({f"route_{name}": column
                            for name, column in self.writer.columns_of(missing).items()})
            self._at[missing] = np.arange(self._given, self._given + len(missing))
            self._given += len(missing)
            at = self._at[of_row]
        return _PieceColumn(self, at, new, fresh)

    def _cells(self, column: _PieceColumn) -> pa.Array:
        """The rows' pieces of `column` as text (the writing thread, chunk after chunk)."""
        if column.fresh:
            self._pieces = GrowingText()
        if column.new is not None:
            self._pieces.append(self._render(column.new))
        return self._pieces.words.take(pa.array(column.at))

    def _render(self, table: pa.Table) -> pa.Array:
        if self.labels is not None:
            table = localize(table, self.labels)
        cells = [spreadsheet.csv_cells(c) for c in spreadsheet.guarded_arrow(table.columns)]
        return pc.binary_join_element_wise(*cells, spreadsheet.large_text(","),
                                           null_handling="replace", null_replacement="")


def _piece_names(inputs: list[str], labels: ExportLabels | None) -> list[str]:
    """The header of a file written with answer pieces: the input columns, the answer columns
    (in Chinese with `labels`) and the routed point and error, as the tables would name them."""
    text, routed = pa.string(), ("route_routed_lon", "route_routed_lat")
    names = [*inputs, *(f"route_{c}" for c in ANSWER_COLUMNS), *routed, "route_error"]
    types = [text] * len(inputs) + [pa.int64() if c == "generation" else text
                                    for c in ANSWER_COLUMNS] + [pa.float64()] * 2 + [text]
    empty = pa.Table.from_arrays([pa.array([], t) for t in types], names=names)
    return (localize(empty, labels) if labels is not None else empty).column_names


@dataclass(frozen=True)
class _PieceColumn:
    """A chunk's answer pieces (`_AnswerPieces.column`): each row's piece position, the
    columns of the answers met first in this chunk (rendered when written) and whether the
    pieces start afresh here."""

    pieces: _AnswerPieces
    at: np.ndarray
    new: pa.Table | None
    fresh: bool

    def cells(self) -> pa.Array:
        """The rows' pieces as text: to be called once per chunk, in the chunks' order."""
        return self.pieces._cells(self)


@dataclass(frozen=True)
class _PieceChunk:
    """A chunk routed with answer pieces: the input columns, then `route_answers` (each
    row's piece position) and the routed point and error."""

    table: pa.Table
    pieces: _PieceColumn


def _piece_cells(chunk: _PieceChunk) -> list:
    """The cells of a chunk routed with answer pieces, rendered for `CsvWriter.append_cells`:
    the input columns and the error guarded, the answer pieces as they are."""
    # By position: an input column may bear any name, "route_answers" too.
    *inputs, _answers, lon, lat, error = chunk.table.columns
    guarded = spreadsheet.guarded_arrow([*inputs, error])
    return [*(spreadsheet.csv_cells(c, quote_later=True) for c in guarded[:-1]),
            chunk.pieces.cells(), spreadsheet.csv_cells(lon), spreadsheet.csv_cells(lat),
            spreadsheet.csv_cells(guarded[-1], quote_later=True)]


def _answer_ids(router: Router, results: list, index: np.ndarray, error: np.ndarray,
                swapped: np.ndarray, good: np.ndarray) -> np.ndarray:
    """The answer id (router.writer's registry) each row shows."""
    n, writer = len(error), router.writer
    ids = writer.ids(results)
    # Which answer each row shows: a bad row the error answer — an answer of its own in the
    # writer, with every column.
    generation = router.snapshot.generation.id
    error_id = writer.add(("error", generation), dict.fromkeys(ANSWER_COLUMNS, "") | {
        "status": "error", "generation": generation})
    of_row = np.full(n, error_id, dtype=np.int64)
    of_row[good] = ids[index]
    return of_row


def _swapped_copies(writer, of_row: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """`of_row` with each swapped row (`swapped`) showing a copy of its answer flagged so: one
    copy per distinct answer, an answer of its own in the writer."""
    swapped_rows = np.flatnonzero(swapped)
    copies: dict[int, int] = {}
    for k in np.unique(of_row[swapped_rows]).tolist():
        answer = writer.row(k)
        flags = ",".join(filter(None, ["swapped", answer["flags"]]))
        copies[k] = writer.add(("swapped", k), answer | {"flags": flags})
    if copies:
        of_row[swapped_rows] = [copies[k] for k in of_row[swapped_rows].tolist()]
    return of_row


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

    def add(self, routed: _Routed, lines: pd.Index, unit: str) -> None:
        self.total += len(routed.of_row)
        for status, n in zip(routed.statuses, routed.counts.tolist(), strict=True):
            self.counts[status] = self.counts.get(status, 0) + n
        room = MAX_BAD_ROWS - len(self.bad_rows)
        if room > 0:
            bad = np.flatnonzero(routed.rows_of("error"))[:room]
            self.bad_rows += [BadRow(int(lines[i]), str(routed.error[i]), unit) for i in bad]
        box = _extent_box(routed.rows_of("ok", "ambiguous"), routed.lon, routed.lat)
        if box is not None:
            old = self.bbox or box
            self.bbox = (min(old[0], box[0]), min(old[1], box[1]),
                         max(old[2], box[2]), max(old[3], box[3]))


def extent(table: pd.DataFrame) -> tuple[float, float, float, float] | None:
    """The extent of the rows routed inside the jurisdiction (ok or ambiguous)."""
    return _extent_box(table["route_status"].isin(["ok", "ambiguous"]).to_numpy(),
                       pd.to_numeric(table["route_routed_lon"], errors="coerce").to_numpy(float),
                       pd.to_numeric(table["route_routed_lat"], errors="coerce").to_numpy(float))


def _extent_box(inside: np.ndarray, lon: np.ndarray, lat: np.ndarray
                ) -> tuple[float, float, float, float] | None:
    lon, lat = np.round(lon[inside], 7), np.round(lat[inside], 7)
    keep = np.isfinite(lon) & np.isfinite(lat)
    if not keep.any():
        return None
    lon, lat = lon[keep], lat[keep]
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


RESULT_SHEET = "分派结果"
MACHINE_SHEET = "机器字段"
NOTES_SHEET = "字段说明"
HEADERS = ("zh", "machine")
# Sheet XML above this size is written with ZIP64 (a zip part without it stops at 2 GiB).
_ZIP64_FROM = 1536 * 1024 * 1024


def assign_file(
    router: Router,
    in_path: Path | OpenedFile,
    out_path: Path,
    crs: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    headers: str = "machine",
) -> BatchSummary:
    """Route every row of `in_path` and write the input columns with the answer columns to
    `out_path` (.csv: UTF-8 with BOM; .xlsx), `chunk_rows` rows at a time: memory does not grow
    with the file. The output appears only when complete (BatchInputError leaves none).
    `in_path` may be an `OpenedFile`, already being read while the router was made (its own
    chunk size then applies).

    `headers="machine"`: the `route_*` columns with their coded values (for other programs).
    `headers="zh"`: for people (`localize`): Chinese headers and labels; an .xlsx then also has
    the machine table, complete, on its second sheet and the column notes on a third."""
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise BatchInputError(f"输出文件只能是 .csv 或 .xlsx：{shown(out_path.name, 200)}")
    if headers not in HEADERS:
        raise BatchInputError(f"表头只能是 {' 或 '.join(HEADERS)}：{shown(headers, 50)}")
    opened = in_path if isinstance(in_path, OpenedFile) else OpenedFile(in_path, chunk_rows,
                                                                         background=False)
    source = opened.source
    in_path = source.path
    if out_path.resolve() == in_path.resolve():  # the input would be replaced by its result
        raise BatchInputError(f"输出文件不能与输入文件相同：{shown(out_path.name, 200)}；"
                              "请用 --out 指定另一个文件")
    chunks = opened.chunks()  # reads the start of the file: refusals come before any output
    summary = BatchSummary(out_path, generation=router.snapshot.generation.id)
    labels = ExportLabels.of(router) if headers == "zh" else None
    part = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    _remove_stale_parts(out_path)
    if in_path.stat().st_size >= FACES_FROM_BYTES:
        router.prepare_batch()  # a large file: its chunks all use the face raster
    try:
        csv = suffix == ".csv"
        pieces = _AnswerPieces(router.writer, labels) if csv else None
        with (_writer(part, out_path, source, labels) as write,
              contextlib.closing(chunks), _WriteBehind(write) as behind,
              _ReadAhead(chunks, lambda chunk: _locate_rows(router, chunk, crs)) as located):
            if router.face_answers is not None:  # registered while the first chunks are read
                router.writer.face_ids(router.face_answers)
            for where in located:
                routed = _answer_rows(router, where, arrow=csv, pieces=pieces)
                behind.put(routed.table)  # written while the next chunk is answered
                summary.add(routed, where.frame.index, source.unit)
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


# A part file of `assign_file` this old whose process is gone was left by a killed run.
STALE_PART_SECONDS = 600


def _remove_stale_parts(out_path: Path) -> None:
    """Remove the part files a killed `assign_file` left for `out_path` (a run killed midway
    leaves gigabytes): ours, untouched for STALE_PART_SECONDS (a writer touches its file all
    the time), of a process that no longer runs here — never a run still writing, on this
    machine or, on a shared folder, on another."""
    prefix, suffix = f".{out_path.name}.", ".part"
    with contextlib.suppress(OSError):
        for entry in os.scandir(out_path.parent):
            pid = entry.name[len(prefix):-len(suffix)]
            if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)
                    and pid.isdigit() and len(pid) <= 10 and int(pid) != os.getpid()):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if (not entry.is_file(follow_symlinks=False) or st.st_uid != os.getuid()
                        or time.time() - st.st_mtime < STALE_PART_SECONDS
                        or _running(int(pid))):
                    continue
                os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: running
        return True
    return True


class OpenedFile:
    """An input file of `assign_file`, its reading begun: the encoding found and a CSV checked
    through by arrow's reader (a third of a second a million rows, outside the GIL) — in a
    background thread with `background`, so that `gridmap assign` checks the file while it
    reads the layers. Refusals (BatchInputError) are raised by `chunks`, as `_Source` raises
    them; a missing file at once."""

    def __init__(self, path: Path, chunk_rows: int = CHUNK_ROWS, background: bool = True
                 ) -> None:
        self.source = _Source(Path(path), chunk_rows)
        self._chunks: Iterator[pd.DataFrame] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        if background:
            threading.Thread(target=self._open, name="assign-open", daemon=True).start()
        else:
            self._open()

    def _open(self) -> None:
        try:
            self._chunks = self.source.chunks()
        except BaseException as exc:  # raised in the caller's thread by chunks()
            self._error = exc
        finally:
            self._done.set()

    def chunks(self) -> Iterator[pd.DataFrame]:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._chunks


class _ReadAhead:
    """`locate(chunk)` of each chunk of `chunks`, read and located in a second thread up to
    AHEAD chunks ahead of the caller, who answers the one before meanwhile: the lookup near
    boundaries (GEOS) and arrow's reading run outside the GIL, so on two cores they overlap
    the answering. Reading begins on entering (while the caller makes ready what the first
    answers need). An error of reading or locating is raised where that chunk is taken;
    leaving waits for the chunks in progress, so `chunks` is never closed while it is read."""

    AHEAD = 2  # chunks (a chunk's located rows are a few MB)

    def __init__(self, chunks: Iterator[pd.DataFrame],
                 locate: Callable[[pd.DataFrame], _Located]) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._chunks, self._locate = chunks, locate
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assign-locate")
        self._pending: deque = deque()
        self._ended = False

    def _next(self) -> _Located | None:
        if self._ended:  # an earlier one met the end (or failed): read no further
            return None
        try:
            chunk = next(self._chunks, None)
        except BaseException:
            self._ended = True
            raise
        if chunk is None:
            self._ended = True
            return None
        return self._locate(chunk)

    def __iter__(self) -> Iterator[_Located]:
        while self._pending:
            located = self._pending.popleft().result()
            if located is None:
                return
            self._pending.append(self._pool.submit(self._next))
            yield located

    def __enter__(self) -> _ReadAhead:
        for _ in range(self.AHEAD):
            self._pending.append(self._pool.submit(self._next))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for pending in self._pending:  # left early (an error): reads not begun are
                if not pending.cancel():    # dropped, the one under way ends
                    with contextlib.suppress(Exception):
                        pending.result()
        finally:
            self._pool.shutdown(wait=True)


class _WriteBehind:
    """Writes each table with `write` in a second thread while the caller routes the next
    chunk: rendering and writing it (arrow's CSV writer, zlib for an .xlsx) run mostly outside
    the GIL, so on two cores they overlap the routing of the next chunk (taking the answer
    columns there too was slower: 7.0–7.3 s against 7.5–7.8 s for a ×16 million). At most
    one table is being written while the next is made (memory stays a chunk or two); a failed
    write is raised by the next `put` or on leaving, and leaving waits for the write in
    progress, so the file is never closed under it."""

    def __init__(self, write: Callable[[pd.DataFrame], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assign-write")
        self._pending = None

    def put(self, table: pd.DataFrame) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, table)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._wait()
            elif self._pending is not None:  # failing anyway: wait, keep the first error
                with contextlib.suppress(Exception):
                    self._pending.result()
        finally:
            self._pool.shutdown(wait=True)


@contextlib.contextmanager
def _writer(part: Path, out: Path, source: _Source,
            labels: ExportLabels | None = None) -> Iterator:
    """A function appending a result table to `part`, the output file being written (with
    `labels`: in Chinese, and an .xlsx with the machine sheet and the notes too). A CSV's
    chunks come with answer pieces (`_PieceChunk`), or as tables when routed without them."""
    suffix = out.suffix.lower()
    try:
        if suffix == ".csv":
            sink = spreadsheet.CsvWriter(part)
        else:
            guess = source.bytes_hint * 2 + min(source.lines_hint, spreadsheet.XLSX_MAX_ROWS) * 2048
            names = [RESULT_SHEET] if labels is None else [RESULT_SHEET, MACHINE_SHEET,
                                                           NOTES_SHEET]
            sink = spreadsheet.XlsxWriter(part, names, zip64=guess > _ZIP64_FROM)
    except OSError as exc:
        raise BatchInputError(f"无法写入结果文件 {shown(out, 200)}：{errno_zh(exc)}") from exc
    with sink:
        if suffix == ".csv":
            names: list[str] = []

            def append_csv(table: _PieceChunk | pa.Table | pd.DataFrame) -> None:
                if not isinstance(table, _PieceChunk):  # routed without pieces
                    sink.append(table if labels is None else localize(table, labels))
                    return
                names[:] = names or _piece_names(table.table.column_names[:-4], labels)
                sink.append_cells(names, _piece_cells(table))

            yield append_csv
        elif labels is None:
            yield sink.sheet().append
        else:
            people, machine = sink.sheets(2)
            columns: list = []

            def append(table: pd.DataFrame) -> None:
                columns[:] = list(table.columns)
                people.append(localize(table, labels))
                machine.append(table)

            yield append
            sink.sheet().append(field_notes(columns))


def write_result(result: BatchResult, out: Path, headers: str = "machine",
                 labels: ExportLabels | None = None) -> None:
    """Write the table as .xlsx or .csv (UTF-8 with BOM, opens in Excel); text is never
    written as a formula. `headers="zh"`: as `export_sheets` (CSV: its first sheet)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise BatchInputError(f"输出文件只能是 .csv 或 .xlsx：{out.name}")
    if headers == "zh":
        sheets = export_sheets(result.table, labels)
        if suffix == ".xlsx":
            out.write_bytes(spreadsheet.xlsx_bytes(sheets))
        else:
            out.write_bytes(spreadsheet.csv_bytes(sheets[RESULT_SHEET]))
    elif suffix == ".xlsx":
        out.write_bytes(spreadsheet.xlsx_bytes({RESULT_SHEET: result.table}))
    else:
        out.write_bytes(spreadsheet.csv_bytes(result.table))


# -- exports people open: Chinese headers and labels --------------------------------------------
# The answer columns as the first sheet (and a Chinese CSV) names them, in the table's order. A
# column of the input with the same name keeps it; the answer's gets "（分派）" appended.
ZH_HEADERS = {
    "route_status": "分派状态",
    "route_county_code": "县（市）、区代码",
    "route_county_name": "县（市）、区",
    "route_township_code": "乡镇/街道代码",
    "route_township_name": "乡镇/街道",
    "route_grid_code": "网格编码",
    "route_grid_name": "网格名称",
    "route_grid_kind": "网格类型",
    "route_workers": "网格员",
    "route_park_code": "园区代码",
    "route_park_name": "园区",
    "route_bureau_code": "责任执法机构代码",
    "route_bureau_name": "责任执法机构",
    "route_bureau_level": "机构级别",
    "route_chain": "上级执法机构",
    "route_flags": "标记",
    "route_reasons": "判定依据",
    "route_candidates": "候选归属（存在歧义时）",
    "route_generation": "图层版本",
    "route_routed_lon": "换算后经度（CGCS2000）",
    "route_routed_lat": "换算后纬度（CGCS2000）",
    "route_error": "无法分派原因",
    "route_category": "事件类别",
    "route_referral": "应移交部门",
}
GENERATION_TIME = "图层版本时间（北京时间）"  # follows 图层版本 in the Chinese view
# Columns that only repeat another one in words (the page's route_status_zh): not in Chinese.
_ZH_DROPPED = ("route_status_zh",)
STATUS_LABELS = {**STATUS_ZH, "error": "无法分派"}
FIELD_NOTES = {
    "route_status": "分派状态：ok 明确；ambiguous 存在歧义（见 route_candidates）；"
                    "outside 不在辖区内；error 无法分派（原因见 route_error）",
    "route_county_code": "县（市）、区代码", "route_county_name": "县（市）、区",
    "route_township_code": "乡镇/街道代码", "route_township_name": "乡镇/街道",
    "route_grid_code": "网格编码", "route_grid_name": "网格名称",
    "route_grid_kind": "网格类型：comprehensive 综合网格；park 园区网格；dedicated 专属网格",
    "route_workers": "网格员及电话", "route_park_code": "园区代码", "route_park_name": "园区",
    "route_bureau_code": "责任执法机构代码", "route_bureau_name": "责任执法机构",
    "route_bureau_level": "机构级别：municipal 市级；county 县（市）、区级；numbered 编号执法局；"
                          "park 园区/区域执法局",
    "route_chain": "上级链（执法机构代码，至市执法局；中文表中为机构名称）",
    "route_flags": "标记（逗号分隔）：swapped 经纬度已对调；sea 海域；cross_county 跨县；"
                   "no_township 无乡镇；no_grid 无网格；no_bureau 无执法机构",
    "route_reasons": "判定依据", "route_candidates": "存在歧义时的各候选（JSON，编码）",
    "route_generation": "所用图层版本", "route_routed_lon": "换算后经度（CGCS2000）",
    "route_routed_lat": "换算后纬度（CGCS2000）", "route_error": "无法分派的原因",
    "route_category": "识别出的事件类别（代码，见 grids/categories.csv）",
    "route_referral": "应移交的部门（非生态环境部门办理的类别）",
    "route_status_zh": "分派状态（中文）",
}


@dataclass(frozen=True)
class ExportLabels:
    """Names for the codes of one generation (bureaus of a chain, a candidate's county, grid…)
    and the time that generation was made, in Beijing time."""

    names: dict[str, dict[str, str]]  # layer -> code -> name
    generation: int | None = None
    generation_time: str = ""

    @classmethod
    def of(cls, router: Router) -> ExportLabels:
        snap = router.snapshot
        names = {}
        for layer in ("counties", "townships", "grids", "bureaus", "parks"):
            if layer in snap.layers:
                frame = snap[layer]
                names[layer] = dict(zip(frame["code"].astype(str), frame["name"].astype(str),
                                        strict=True))
        gen = snap.generation
        return cls(names, gen.id, beijing_text(gen.created_at))

    def name(self, layer: str, code: object) -> str:
        code = "" if code is None else str(code)
        return self.names.get(layer, {}).get(code, code)


def zh_columns(columns) -> dict:
    """Machine column -> the Chinese header of the first sheet (answer columns only)."""
    inputs = {str(c) for c in columns if c not in ZH_HEADERS and c not in _ZH_DROPPED}
    return {c: (ZH_HEADERS[c] if ZH_HEADERS[c] not in inputs else f"{ZH_HEADERS[c]}（分派）")
            for c in columns if c in ZH_HEADERS}


def localize(table: pd.DataFrame | pa.Table, labels: ExportLabels | None = None
             ) -> pd.DataFrame | pa.Table:
    """The table as people read it: the input columns as they were, the answer columns with
    Chinese headers and coded values in words (明确, 综合网格, 县（市）、区级, 海域…; a chain
    and the candidates by name with `labels`). Every row stays, in order. A pandas table gives
    a pandas table, an arrow table (a file's chunk, see `_route_rows`) an arrow table."""
    labels = labels or ExportLabels({})
    arrow = isinstance(table, pa.Table)
    names = table.column_names if arrow else list(table.columns)
    headers = zh_columns(names)
    out = {}
    for j, col in enumerate(names):
        if col in _ZH_DROPPED:
            continue
        values = table.column(j) if arrow else table[col]
        convert = _CONVERT.get(col)
        if convert is not None:
            def words(v, f=convert):
                return f(v, labels)
            values = _mapped_arrow(values, words) if arrow else _mapped(values, words)
        out[headers.get(col, col)] = values
        if col == "route_generation" and labels.generation is not None:
            if arrow:  # two words, picked per row
                other = pc.not_equal(values, labels.generation).cast(pa.int8()).fill_null(1)
                out[GENERATION_TIME] = pa.DictionaryArray.from_arrays(
                    other.combine_chunks(), pa.array([labels.generation_time, ""]))
            else:
                same = values.astype(str) == str(labels.generation)
                out[GENERATION_TIME] = np.where(same, labels.generation_time, "")
    if arrow:
        return pa.Table.from_arrays(list(out.values()), names=list(out))
    return pd.DataFrame(out, index=table.index)


def _mapped(values: pd.Series, convert) -> pd.Series:
    """`convert` applied once per distinct value (a batch repeats few answers); the words are
    taken for the rows by pyarrow, as arrow-backed pandas text."""
    codes, uniques = pd.factorize(values.fillna("").astype(str))
    words = pa.array([convert(v) for v in uniques], pa.string())
    return taken_text(words, pa.array(codes, pa.int64()), values.index)


def _mapped_arrow(values: pa.ChunkedArray, convert) -> pa.DictionaryArray:
    """`_mapped` for an arrow column: `convert` applied once to each distinct text (an answer
    column's dictionary holds the answers its rows show; the same text under many of them)."""
    values = values.combine_chunks()
    if values.null_count or not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values.cast(pa.string()).fill_null(""))
    texts = pc.dictionary_encode(values.dictionary)
    words = pa.array([convert(w) for w in texts.dictionary.to_pylist()], pa.string())
    return pa.DictionaryArray.from_arrays(texts.indices.take(values.indices), words)


def _flags(value: str, labels: ExportLabels) -> str:
    return "、".join(FLAG_ZH.get(f, f) for f in value.split(",") if f)


def _chain(value: str, labels: ExportLabels) -> str:
    return " > ".join(labels.name("bureaus", c) for c in value.split(" > ") if c)


def _candidates(value: str, labels: ExportLabels) -> str:
    if not value:
        return ""
    try:
        found = json.loads(value)
    except ValueError:
        return value
    parts = []
    for i, c in enumerate(found, start=1):
        where = " / ".join(labels.name(layer, c.get(key)) for key, layer in (
            ("county", "counties"), ("township", "townships"), ("grid", "grids"),
            ("park", "parks"), ("bureau", "bureaus")) if c.get(key))
        parts.append(f"候选{i}：{where}")
    return "；".join(parts)


_CONVERT = {
    "route_status": lambda v, _: STATUS_LABELS.get(v, v),
    "route_grid_kind": lambda v, _: GRID_KIND_ZH.get(v, v),
    "route_bureau_level": lambda v, _: BUREAU_LEVEL_ZH.get(v, v),
    "route_flags": _flags,
    "route_chain": _chain,
    "route_candidates": _candidates,
    "route_category": lambda v, _: category_labels().get(v, v),
}


def field_notes(columns) -> pd.DataFrame:
    """What each column of an export is: its Chinese header (first sheet), its machine name
    (second sheet) and what it holds, the codes of coded values included."""
    headers = zh_columns(columns)
    rows = []
    for c in columns:
        if c in _ZH_DROPPED:
            continue
        rows.append((headers.get(c, str(c)), str(c), FIELD_NOTES.get(c, "原文件中的列")))
        if c == "route_generation":
            rows.append((GENERATION_TIME, "", "该图层版本的生成时间（北京时间）"))
    return pd.DataFrame(rows, columns=["中文列名", "机器字段名", "说明"])


def export_sheets(table: pd.DataFrame, labels: ExportLabels | None = None
                  ) -> dict[str, pd.DataFrame]:
    """An export's sheets: in Chinese, the machine table (complete), and the column notes."""
    return {RESULT_SHEET: localize(table, labels), MACHINE_SHEET: table,
            NOTES_SHEET: field_notes(list(table.columns))}


# -- filing the rows of a complaint file as cases ------------------------------------------------
# Each row goes through what the intake page does for one call: routed, checked for a possible
# duplicate, then filed (`grids.cases.create_incident`) or linked to the open case it repeats
# (`grids.cases.link_duplicate`), each audited and permission-checked there. A row carries a
# request key made of the file's hash and its row number, so the same file sent again files
# nothing twice.
MAX_FILE_ROWS = 2000  # rows filed per request (each is a routed, checked, audited write)
CATEGORY_NAMES = ("类别", "事件类别", "投诉类别", "举报类别", "污染类型", "问题类型", "问题类别",
                  "category")
DESCRIPTION_NAMES = ("description", "事件描述", "举报内容", "投诉内容", "反映内容", "诉求内容",
                     "问题描述", "情况描述", "描述", "内容")
REPORTED_AT_NAMES = ("reported_at", "举报时间", "投诉时间", "来电时间", "受理时间", "反映时间",
                     "发现时间", "发生时间", "登记时间", "时间", "日期")
SOURCE_NAMES = ("source", "受理渠道", "来源", "渠道", "举报渠道", "举报方式", "投诉渠道")
REPORTER_NAMES = ("reporter", "举报人及联系方式", "举报人", "投诉人", "来电人", "联系人",
                  "联系方式", "联系电话")
DEFAULT_SOURCE = "批量导入"
ON_DUPLICATE = ("link", "file")
FILED, LINKED, REFUSED = "filed", "linked", "refused"
OUTCOME_ZH = {FILED: "已登记", LINKED: "已并入原案件", REFUSED: "未登记"}
_LIMITS = {"description": 2000, "source": 50, "reporter": 200}
_CN_DATE = str.maketrans({"年": "-", "月": "-", "日": " ", "号": " ", "时": ":", "点": ":",
                          "分": ":", "秒": " "})


@dataclass(frozen=True)
class CaseColumns:
    """Which columns of a complaint file hold what a case needs."""

    category: str
    description: str
    reported_at: str
    source: str | None = None
    reporter: str | None = None
    id: str | None = None


def case_columns(frame: pd.DataFrame) -> CaseColumns:
    """The case columns of a file, or BatchInputError naming what is missing and the names
    each may have."""
    found = {what: _column(frame, names) for what, names in (
        ("category", CATEGORY_NAMES), ("description", DESCRIPTION_NAMES),
        ("reported_at", REPORTED_AT_NAMES))}
    missing = [f"{label}（列名可为 {'/'.join(names)}）" for (what, names), label in zip(
        (("category", CATEGORY_NAMES), ("description", DESCRIPTION_NAMES),
         ("reported_at", REPORTED_AT_NAMES)), ("事件类别", "事件描述", "举报时间"), strict=True)
        if found[what] is None]
    if missing:
        raise BatchInputError("登记为案件还需要这些列：" + "；".join(missing))
    return CaseColumns(found["category"], found["description"], found["reported_at"],
                       _column(frame, SOURCE_NAMES), _column(frame, REPORTER_NAMES),
                       _column(frame, ID_NAMES))


@dataclass(frozen=True)
class FiledRow:
    """What happened to one row."""

    row: int  # 1, 2, … in the file's order (the 序号 of the batch page's table)
    ref: str  # the row's own number (编号/工单编号…), when the file has one
    outcome: str  # FILED, LINKED or REFUSED
    case_id: str = ""  # the new case (filed) or the open case it was linked to
    route_status: str = ""  # ok / ambiguous / outside / error ("" when never routed)
    reported_at: str = ""  # as stored: Beijing time, ISO 8601
    note: str = ""  # why it was refused; or what to know (ambiguous, referral, …)
    earlier: bool = False  # done by an earlier submission of the same file: nothing new now


@dataclass
class BatchFiling:
    """The result of filing a file's rows: one `FiledRow` per row, in order."""

    name: str
    on_duplicate: str
    rows: list[FiledRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((FILED, LINKED, REFUSED), 0)
        for r in self.rows:
            out[r.outcome] += 1
        return out

    def frame(self) -> pd.DataFrame:
        """The rows with their machine names (see `ui.batch.filing_table` for people)."""
        names = list(FiledRow.__dataclass_fields__)
        return pd.DataFrame([[getattr(r, n) for n in names] for r in self.rows], columns=names)


def reported_time(text: object, now: datetime) -> datetime:
    """A report time as complaint exports write it ("2026-11-01 08:30", "2026/11/1 8:30:00",
    "2026年11月1日8时30分", "20261101083000", ISO 8601 with a zone), as an aware datetime in
    Beijing time. A time without a zone is Beijing time. ValueError (Chinese) otherwise."""
    raw = unicodedata.normalize("NFKC", str(text or "")).strip()
    if not raw:
        raise ValueError("举报时间为空")
    shown_raw = shown(raw, 40)
    if re.fullmatch(r"\d{8}(?:\d{4}(?:\d{2})?)?", raw):
        d = raw.ljust(14, "0")
        value = f"{d[:4]}-{d[4:6]}-{d[6:8]} {d[8:10]}:{d[10:12]}:{d[12:]}"
    else:
        value = " ".join(raw.translate(_CN_DATE).split()).replace(" :", ":").rstrip(":")
        head = re.match(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?=$|[ T])", value)
        if head is None:
            raise ValueError(f"无法识别的举报时间“{shown_raw}”（应为 2026-11-01 08:30 这样的格式，"
                             "年在前）")
        value = f"{head[1]}-{int(head[2]):02d}-{int(head[3]):02d}{value[head.end():]}"
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"无法识别的举报时间“{shown_raw}”") from exc
    if pd.isna(stamp):
        raise ValueError(f"无法识别的举报时间“{shown_raw}”")
    moment = stamp.to_pydatetime()
    moment = (moment.replace(tzinfo=BEIJING) if moment.tzinfo is None
              else moment.astimezone(BEIJING))
    if moment.year < 2000:
        raise ValueError(f"举报时间“{shown_raw}”早于 2000 年，请检查")
    if moment > now + timedelta(minutes=10):
        raise ValueError(f"举报时间“{shown_raw}”晚于当前时间，请检查（按北京时间理解）")
    return moment.replace(microsecond=0)


def category_lookup() -> dict[str, str]:
    """Category text as files write it (key, full Chinese name or short name) -> key."""
    lookup: dict[str, str] = {}
    for c in load_categories().values():
        lookup[c.key.lower()] = c.key
        lookup[c.label_zh] = c.key
    for key, short in CATEGORIES_ZH.items():
        lookup.setdefault(short, key)
    return lookup


def category_key(text: object, lookup: dict[str, str] | None = None) -> str:
    """The category key of a cell ("" when it names none)."""
    value = unicodedata.normalize("NFKC", str(text or "")).strip()
    lookup = lookup if lookup is not None else category_lookup()
    return lookup.get(value, lookup.get(value.lower(), ""))


def file_cases(
    acting: Acting,
    router: Router,
    frame: pd.DataFrame,
    *,
    file_key: str,
    name: str = "",
    crs: str | None = None,
    on_duplicate: str = "link",
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchFiling:
    """File every row of a complaint table (the input columns of a batch: coordinates, system,
    accuracy, category, description, report time; source, reporter and number if present).

    Per row: refused with the reason when a field is missing or wrong, when it cannot be routed
    or lies outside the jurisdiction; linked (`on_duplicate="link"`) to the nearest open case
    of the same category near and recent (the intake's duplicate rule); otherwise filed as a new
    case (ambiguous locations flagged for a person to settle, as at intake). `file_key` (e.g.
    the file's SHA-256) with the row number is the row's request key: a row filed or linked by
    an earlier submission of the same file is reported as such and not done again."""
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be one of {ON_DUPLICATE}")
    acting.require("case.create", name)
    if len(frame) > MAX_FILE_ROWS:
        raise BatchInputError(f"一次最多登记 {MAX_FILE_ROWS:,} 行（本文件 {len(frame):,} 行），"
                              "请分成几个文件提交")
    if not str(file_key).strip():
        raise ValueError("file_key is required (it makes a re-submission file nothing twice)")
    columns = case_columns(frame)
    given = _given(frame, crs)
    now = (now or datetime.now(BEIJING)).astimezone(BEIJING)
    filing = BatchFiling(name, on_duplicate)
    filer = _Filer(acting, router, frame, columns, given, str(file_key), name, on_duplicate, now)
    for i in range(len(frame)):
        filing.rows.append(filer.row(i))
        if progress is not None:
            progress(i + 1, len(frame))
    return filing


class _Filer:
    """One submission of a file, row by row."""

    def __init__(self, acting: Acting, router: Router, frame: pd.DataFrame,
                 columns: CaseColumns, given: _Given, file_key: str, name: str,
                 on_duplicate: str, now: datetime) -> None:
        self.acting, self.router, self.frame = acting, router, frame
        self.columns, self.given, self.file_key = columns, given, file_key
        self.name, self.on_duplicate, self.now = name, on_duplicate, now
        self.lookup = category_lookup()
        self.categories = load_categories()

    def cell(self, col: str | None, i: int) -> str:
        return "" if col is None else str(self.frame[col].iat[i]).strip()

    def row(self, i: int) -> FiledRow:
        number = i + 1
        ref = self.cell(self.columns.id, i)
        request_id = f"batch:{self.file_key}:{number}"
        marker = f"〔批量登记 {self.file_key[:12]}·第{number}行〕"
        known = self.acting.store.request_case(cases.request_key(self.acting.actor, request_id))
        if known is not None:
            found = self.acting.store.query_incidents(IncidentQuery(ids=(known,)))
            status, at = ((str(found["route_status"].iat[0]), str(found["reported_at"].iat[0]))
                          if len(found) else ("", ""))
            return FiledRow(number, ref, FILED, known, route_status=status, reported_at=at,
                            note="同一文件此前提交时已登记", earlier=True)

        problems, fields = self.fields(i)
        status, answer = "error", None
        if self.given.error[i]:
            problems.insert(0, str(self.given.error[i]))
        elif not self.given.system(i):
            problems.insert(0, "坐标系为空")
        else:
            try:
                answer = self.router.route(float(self.given.x[i]), float(self.given.y[i]),
                                           self.given.system(i), float(self.given.acc[i]))
            except RoutingInputError as exc:
                problems.insert(0, str(exc))
            else:
                status = answer["status"]
                if status == "outside":
                    problems.insert(0, "位置不在本市管辖范围内，不能登记为本系统案件，"
                                       "请告知举报人向属地反映")
        reported = fields.get("reported_at")
        row = FiledRow(number, ref, REFUSED, route_status=status,
                       reported_at=reported.isoformat() if reported else "")
        if problems or answer is None:
            return replace(row, note="；".join(problems))
        category = self.categories[fields["category"]]
        if category.handler == "partner":  # as at intake: the reason comes first
            why = category.note_zh or "移交" + category.agency_zh
            answer["reasons"].insert(0, f"事件类别“{category.label_zh}”：{why}")
        lon, lat = answer["point"]["cgcs2000"]
        # The intake's rule (grids/duplicate_rules.csv): a same-category open case within the
        # category's radius (widened by the row's accuracy) and window is a likely repeat.
        dups = possible_duplicates(self.acting.store, lon, lat, category=fields["category"],
                                   slack_m=float(self.given.acc[i]), now=reported)
        flag = "likely" if "likely" in dups.columns else "same_category"
        same = dups[dups[flag].astype(bool)] if len(dups) else dups
        for original in same["id"].astype(str) if len(same) else ():
            events = self.acting.store.incident_events(original)
            if events["reason"].fillna("").astype(str).str.contains(marker, regex=False).any():
                return replace(row, outcome=LINKED, case_id=original, earlier=True,
                               note="同一文件此前提交时已并入该案件")
        notes = self.notes(answer, category)
        try:
            if len(same) and self.on_duplicate == "link":
                original = str(same["id"].iloc[0])
                cases.link_duplicate(self.acting, self.reference(marker, fields), original)
                metres = float(same["distance_m"].iloc[0])
                return replace(row, outcome=LINKED, case_id=original, note="；".join(
                    [(f"{metres:.0f} 米内" if metres >= 1 else "同一位置") +
                     "有同类未结案件，作为重复举报并入", *notes]))
            if len(same):
                ids = "、".join(same["id"].astype(str).head(3))
                notes.append(f"附近有同类未结案件 {ids}，按选择仍登记为新案件")
            fields["reported_at"] = reported.isoformat()
            case_id = cases.create_incident(self.acting, answer, fields, request_id)
        except (CaseError, PermissionDenied) as exc:
            return replace(row, note=str(exc))
        return replace(row, outcome=FILED, case_id=case_id, note="；".join(notes))

    def fields(self, i: int) -> tuple[list[str], dict]:
        """The case fields of row i, and what is wrong with them."""
        problems: list[str] = []
        fields: dict = {}
        raw_category = self.cell(self.columns.category, i)
        key = category_key(raw_category, self.lookup)
        if not raw_category:
            problems.append("事件类别为空")
        elif not key:
            known = "、".join(c.label_zh for c in self.categories.values())
            problems.append(f"事件类别“{shown(raw_category, 30)}”不是已知类别（可用：{known}）")
        fields["category"] = key
        for what, col in (("description", self.columns.description),
                          ("source", self.columns.source), ("reporter", self.columns.reporter)):
            text = _CONTROL.sub("", self.cell(col, i).replace("\r\n", "\n"))
            limit = _LIMITS[what]
            if len(text) > limit:
                problems.append(f"{_FIELD_ZH[what]}超过 {limit} 个字符（现有 {len(text)} 个）")
            fields[what] = text
        if not fields["description"]:
            problems.append("事件描述为空")
        fields["source"] = fields["source"] or DEFAULT_SOURCE
        try:  # absent when it cannot be read
            fields["reported_at"] = reported_time(self.cell(self.columns.reported_at, i),
                                                  self.now)
        except ValueError as exc:
            problems.append(str(exc))
        return problems, fields

    def notes(self, answer: dict, category) -> list[str]:
        out = []
        if answer["status"] == "ambiguous":
            out.append("位置存在歧义，已登记并标记为待人工确认归属")
        if "swapped" in answer.get("flags", []):
            out.append("经纬度顺序已交换，请核实")
        if category.handler == "partner":
            out.append(f"该类别应移交{category.agency_zh}")
        return out

    def reference(self, marker: str, fields: dict) -> str:
        """How the linked row is named in the original case's record: it gets no case of its
        own, so where it came from, its time, its caller and its words are kept there."""
        who = f"，{fields['reporter']}" if fields["reporter"] else ""
        words = fields["description"].replace("\n", " ")
        words = words[:80] + ("…" if len(words) > 80 else "")
        at = fields["reported_at"].strftime("%Y-%m-%d %H:%M")
        return f"{marker}{fields['source']}（{at}{who}）：{words}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FIELD_ZH = {"description": "事件描述", "source": "受理渠道", "reporter": "举报人"}

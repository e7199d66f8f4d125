"""Tables the dispatcher downloads: Excel (.xlsx) and CSV.

The .xlsx is written directly as SpreadsheetML (a zip of a few XML parts) instead of through
openpyxl: 10,000 complaints with their answer columns take ~0.4 s this way against 3–5 s with
openpyxl, which alone would break the 5 s target of a batch (bench/bench_dispatch.py). Rows are
appended a chunk at a time (`XlsxWriter`, `CsvWriter`) and go straight into the compressed zip
member or the file, so writing a million rows takes no more memory than writing one chunk.

Text is always written as text: a complaint whose description starts with "=" never becomes an
Excel formula (inline strings are never evaluated). In CSV, which Excel would evaluate, such
cells get a leading apostrophe (`guard`, OWASP's advice on CSV injection).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from layers.direct_io import DirectFile

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MIME = "text/csv"
XLSX_MAX_ROWS = 1_048_576  # rows of one Excel sheet, the header row included
# Characters XML 1.0 does not allow (Excel refuses the whole file when one appears).
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")
_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_STYLES = (
    f'{_XML_DECL}<styleSheet {_NS}>'
    '<fonts count="2"><font><sz val="11"/><name val="等线"/></font>'
    '<font><b/><sz val="11"/><name val="等线"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_ROWS_PER_WRITE = 4096  # rows turned into XML at a time (a few MB of text)


class SheetFull(ValueError):
    """More rows than an Excel sheet holds."""


def _letters(n: int) -> str:
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


def _text(value: str) -> str:
    value = escape(_ILLEGAL.sub("", value), quote=False)
    return f'<is><t xml:space="preserve">{value}</t></is>'


def _column_cells(values: pd.Series, letter: str, first_row: int = 2) -> list[str]:
    """The <c> elements of one column, from sheet row `first_row` on (row 1 is the header)."""
    cells: list[str] = []
    kind = values.dtype.kind
    items = values.tolist()
    if kind in "iu":
        return [f'<c r="{letter}{i}"><v>{v}</v></c>' for i, v in enumerate(items, first_row)]
    for i, v in enumerate(items, start=first_row):
        ref = f"{letter}{i}"
        if v is None or v is pd.NA or v is pd.NaT:
            cells.append("")
        elif isinstance(v, bool | np.bool_):
            cells.append(f'<c r="{ref}" t="b"><v>{int(v)}</v></c>')
        elif isinstance(v, int | np.integer):
            cells.append(f'<c r="{ref}"><v>{v}</v></c>')
        elif isinstance(v, float | np.floating):
            cells.append(f'<c r="{ref}"><v>{v!r}</v></c>' if math.isfinite(v) else "")
        else:
            text = v.isoformat() if isinstance(v, pd.Timestamp) else str(v)
            cells.append(f'<c r="{ref}" t="inlineStr">{_text(text)}</c>' if text else "")
    return cells


def _width(values: pd.Series, header: str) -> float:
    """A column width fitting the header and a sample of values (CJK counts double)."""
    sample = [str(v) for v in values.head(200).tolist()] + [header]
    longest = max((sum(2 if ord(ch) > 0x2E80 else 1 for ch in s) for s in sample), default=8)
    return float(min(max(longest + 2, 6), 60))


def _rows_xml(frame: pd.DataFrame, letters: list[str], first_row: int) -> str:
    columns = [_column_cells(frame.iloc[:, j], letters[j], first_row) for j in range(len(letters))]
    return "".join(
        f'<row r="{i}">{"".join(cells)}</row>'
        for i, cells in enumerate(zip(*columns, strict=True), start=first_row)
    )


def _sheet_name(name: str, used: set[str]) -> str:
    base = _SHEET_BAD.sub("_", name).strip("'")[:31] or "Sheet"
    out, k = base, 2
    while out.lower() in used:
        out, k = f"{base[:28]}({k})", k + 1
    used.add(out.lower())
    return out


class SheetWriter:
    """One worksheet of an `XlsxWriter`: rows appended chunk by chunk, header bold and frozen.

    The header and the column widths come from the first chunk (its first 200 rows), so every
    chunk must have the same columns. The XML goes straight into the compressed zip member."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._columns: list | None = None
        self._letters: list[str] = []
        self.rows = 0  # data rows written so far

    def append(self, frame: pd.DataFrame) -> None:
        if self._columns is None:
            self._start(frame)
        elif list(frame.columns) != self._columns:
            raise ValueError("every chunk of a sheet must have the same columns")
        if self.rows + len(frame) + 1 > XLSX_MAX_ROWS:
            raise SheetFull(f"an Excel sheet holds at most {XLSX_MAX_ROWS - 1:,} rows of data")
        for start in range(0, len(frame), _ROWS_PER_WRITE):
            part = frame.iloc[start : start + _ROWS_PER_WRITE]
            self._stream.write(_rows_xml(part, self._letters, self.rows + 2).encode("utf-8"))
            self.rows += len(part)

    def _start(self, frame: pd.DataFrame) -> None:
        self._columns = list(frame.columns)
        self._letters = [_letters(j) for j in range(len(self._columns))]
        header = "".join(
            f'<c r="{letter}1" t="inlineStr" s="1">{_text(str(name))}</c>'
            for letter, name in zip(self._letters, self._columns, strict=True)
        )
        cols = "".join(
            f'<col min="{j + 1}" max="{j + 1}" width="{_width(frame.iloc[:, j], str(name))}" '
            'customWidth="1"/>'
            for j, name in enumerate(self._columns)
        )
        self._stream.write(
            (
                f"{_XML_DECL}<worksheet {_NS}>"
                '<sheetViews><sheetView workbookViewId="0">'
                '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                "</sheetView></sheetViews>"
                + (f"<cols>{cols}</cols>" if cols else "")
                + f'<sheetData><row r="1">{header}</row>'
            ).encode("utf-8")
        )

    def close(self) -> None:
        if self._stream.closed:
            return
        if self._columns is None:  # nothing appended: an empty sheet
            self._start(pd.DataFrame())
        self._stream.write(b"</sheetData></worksheet>")
        self._stream.close()


class _Spool:
    """Where a sheet's XML waits for its turn in the zip (a zip is written one part at a time):
    a temporary file that `SheetWriter.close` leaves open for the copy."""

    def __init__(self, directory: Path | None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by the book
        self.closed = False

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def close(self) -> None:
        self.closed = True


class XlsxWriter:
    """An .xlsx workbook written sheet by sheet in the order of `sheet_names`:

        with XlsxWriter(path, ["分派结果"]) as book:
            sheet = book.sheet()
            for chunk in chunks:
                sheet.append(chunk)

    `zip64` is needed only when one sheet's XML passes 2 GiB (about a million rows of a wide
    table); Excel may then offer to "repair" the file, so it is off unless asked for."""

    def __init__(
        self, target: str | Path | IO[bytes], sheet_names: Sequence[str], zip64: bool = False
    ) -> None:
        used: set[str] = set()
        self.names = [_sheet_name(n, used) for n in sheet_names]
        self._zip64 = zip64
        self._zip = zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
        self._current: SheetWriter | None = None
        self._spooled: list[tuple[int, _Spool, SheetWriter]] = []
        self._spool_dir = (Path(target).resolve().parent if isinstance(target, str | Path)
                           else None)
        self._opened = 0
        self._package()

    def _package(self) -> None:
        n = len(self.names)
        z = self._zip
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT}.worksheet+xml"/>'
            for i in range(1, n + 1)
        )
        z.writestr(
            "[Content_Types].xml",
            f"{_XML_DECL}"
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/>'
            f"{overrides}</Types>",
        )
        z.writestr(
            "_rels/.rels",
            f'{_XML_DECL}<Relationships xmlns="{_PKG_REL_NS}"><Relationship Id="rId1" '
            f'Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        sheet_list = "".join(
            f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, name in enumerate(self.names, start=1)
        )
        z.writestr(
            "xl/workbook.xml",
            f'{_XML_DECL}<workbook {_NS} xmlns:r="{_REL_NS}"><sheets>{sheet_list}</sheets>'
            "</workbook>",
        )
        rels = "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" '
            f'Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, n + 1)
        )
        rels += f'<Relationship Id="rId{n + 1}" Type="{_REL_NS}/styles" Target="styles.xml"/>'
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            f'{_XML_DECL}<Relationships xmlns="{_PKG_REL_NS}">{rels}</Relationships>',
        )
        z.writestr("xl/styles.xml", _STYLES)

    def sheets(self, count: int) -> list[SheetWriter]:
        """The next `count` sheets at once, for rows that arrive for all of them together (a
        table and another view of it, chunk by chunk). The first is written into the workbook
        as rows come; the others are kept as XML in temporary files (on disk, next to the
        output when it is a file) and copied in when the next sheet is asked for or the
        workbook is closed, so memory stays that of one chunk."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if self._opened + count > len(self.names):
            raise ValueError(f"the workbook was opened for {len(self.names)} sheets")
        first = self.sheet()
        for _ in range(count - 1):
            self._opened += 1
            spool = _Spool(self._spool_dir)
            self._spooled.append((self._opened, spool, SheetWriter(spool)))
        return [first, *(writer for _, _, writer in self._spooled)]

    def _finish(self) -> None:
        """Finish the sheet being written and copy in the spooled ones (in sheet order)."""
        if self._current is not None:
            self._current.close()
            self._current = None
        spooled, self._spooled = self._spooled, []
        try:
            for number, spool, writer in spooled:
                writer.close()  # its end tags (or, never written to, an empty sheet)
                with self._zip.open(f"xl/worksheets/sheet{number}.xml", "w",
                                    force_zip64=self._zip64) as member:
                    spool.file.seek(0)
                    shutil.copyfileobj(spool.file, member, 1 << 20)
        finally:
            for _, spool, _ in spooled:
                spool.file.close()

    def sheet(self) -> SheetWriter:
        """The next sheet (the one before it is finished)."""
        self._finish()
        if self._opened >= len(self.names):
            raise ValueError(f"the workbook was opened for {len(self.names)} sheets")
        self._opened += 1
        stream = self._zip.open(
            f"xl/worksheets/sheet{self._opened}.xml", "w", force_zip64=self._zip64
        )
        self._current = SheetWriter(stream)
        return self._current

    def close(self) -> None:
        """Finish the workbook; sheets never asked for are written empty."""
        if self._zip.fp is None:
            return
        try:
            while self._opened < len(self.names):
                self.sheet()
            self._finish()
        except RuntimeError as exc:  # zipfile: a part over 2 GiB without zip64
            raise SheetFull(f"the sheet is too large for a workbook without ZIP64: {exc}") from exc
        finally:
            self._zip.close()

    def abort(self) -> None:
        """Stop writing (after an error): whatever was written is not a valid workbook."""
        if self._current is not None and not self._current._stream.closed:
            with contextlib.suppress(RuntimeError):  # a part too large: dropped anyway
                self._current._stream.close()
        for _, spool, _ in self._spooled:
            spool.file.close()
        self._spooled = []
        self._zip.close()

    def __enter__(self) -> XlsxWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def xlsx_bytes(sheets: dict[str, pd.DataFrame]) -> bytes:
    """An .xlsx workbook with one sheet per (name, table), header row bold and frozen."""
    buf = io.BytesIO()
    with XlsxWriter(buf, list(sheets)) as book:
        for frame in sheets.values():
            book.sheet().append(frame)
    return buf.getvalue()


# The sign-off workbooks (a worker's roster, a leader's patrol coverage, a planner's impact)
# are a sheet of facts and sheets of tables with Chinese headers, written by `xlsx_bytes`.
FACT_HEADERS = ("项目", "内容")


def facts_table(facts: Sequence[tuple[str, object]]) -> pd.DataFrame:
    """A sheet of (item, value) rows: what the workbook is about, when it was made."""
    return pd.DataFrame([list(f) for f in facts], columns=list(FACT_HEADERS), dtype=object)


def headed(frame: pd.DataFrame, headers: dict[str, str]) -> pd.DataFrame:
    """The columns of `frame` named in `headers` (in its order, those present), renamed to
    the header each is given there."""
    present = [c for c in headers if c in frame.columns]
    return frame[present].rename(columns=headers)


# -- CSV -------------------------------------------------------------------------------------
# OWASP, CSV injection: a cell starting with = + - @, a tab or a carriage return is taken for a
# formula by Excel or LibreOffice (the full-width ＝＋－＠ too, which some versions fold), also
# after leading spaces. Such cells are written with a leading apostrophe, which makes the cell
# text. The one exception is a plain number ("-32.5", "-1e-3"): nothing in it can be evaluated,
# and a negative coordinate read as text from an upload must stay a number in Excel.
_FORMULA_START = re.compile(r"[\t\r]|\s*[=+\-@\uff1d\uff0b\uff0d\uff20]")
_PLAIN_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
# Rows end in CRLF (RFC 4180, what Excel writes). With a bare "\n" Python's csv module (3.11)
# leaves a cell holding a lone "\r" unquoted, and Excel starts a new row there: "x\r=1+1" would
# put the formula "=1+1" at the start of a row, past the guard. With CRLF such cells are quoted.
_EOL = "\r\n"


def guard(value: object) -> object:
    """`value` as a CSV cell that no spreadsheet evaluates (only text is ever changed)."""
    if (
        isinstance(value, str)
        and _FORMULA_START.match(value)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def _is_text_column(values: pd.Series) -> bool:
    """Columns of numbers, booleans and dates are written as such; any other may hold text."""
    dtype = values.dtype
    return not (
        pd.api.types.is_numeric_dtype(dtype)  # int, float, bool (never a formula)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
    )


def _guard_column(values: pd.Series) -> pd.Series:
    """`values` with its text cells guarded. Each distinct value is looked at once (answer
    columns repeat a few thousand values over a million rows), and only those that do not start
    with a letter, a digit or a Chinese character (which no formula or space does); the column
    is returned untouched when nothing changes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        found = _guarded_cells(pa.array(values.array))
        if found is None:
            return values
        out = values.astype(object)
        out.iloc[found[0]] = found[1]
        return out
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    try:
        text = pa.array(uniques, type=pa.string(), from_pandas=True)
        plain = pc.fill_null(pc.match_substring_regex(text, _PLAIN_START), False)
        look = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the text: look at each
        look = np.arange(len(uniques))
    changed, fixed = [], []
    for k in look.tolist():
        value = uniques[k]
        safe = guard(value)
        if safe is not value:
            changed.append(k)
            fixed.append(safe)
    if not changed:
        return values
    out = values.astype(object)
    lookup = np.empty(len(uniques), dtype=object)
    lookup[changed] = fixed
    mask = np.isin(codes, changed)
    out[mask] = lookup[codes[mask]]
    return out


def _guard_array(cells):
    """An arrow array with its text cells guarded (`cells` itself when nothing changes). A
    dictionary array's dictionary is guarded instead of its rows (answer columns: a few
    thousand values over a million rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(cells.type):
        words = _guard_array(cells.dictionary)
        return cells if words is cells else pa.DictionaryArray.from_arrays(cells.indices, words)
    if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
        return cells  # numbers are written as numbers
    found = _guarded_cells(cells)
    if found is None:
        return cells
    mask = np.zeros(len(cells), dtype=bool)
    mask[found[0]] = True
    return pc.replace_with_mask(cells, pa.array(mask), pa.array(found[1], cells.type))


def _guarded_cells(cells) -> tuple[np.ndarray, list[str]] | None:
    """The rows of an arrow text array that guard() changes, ascending, and their new text; None
    when there are none. Only the cells `_needs_look` picks are looked at, each distinct one
    once (a column of row ids would otherwise be hashed whole, every chunk)."""
    import pyarrow as pa

    rows = np.flatnonzero(_needs_look(cells))
    if not len(rows):
        return None
    looked = cells.take(pa.array(rows)).to_pylist()
    fixed = {}
    for value in set(looked):
        safe = guard(value)
        if safe is not value:
            fixed[value] = safe
    if not fixed:
        return None
    hit = [k for k, value in enumerate(looked) if value in fixed]
    return rows[hit], [fixed[looked[k]] for k in hit]


# A cell starting like this needs no look: no formula and no space starts with such a character.
_PLAIN_START = "^[0-9A-Za-z\u4e00-\u9fff]"


def _needs_look(cells) -> np.ndarray:
    """Per cell of an arrow text array, whether guard() must look at it: not when it is null,
    empty, or starts with an ASCII letter or digit or a Chinese character U+4E00–U+9FFF (the
    cells _PLAIN_START matches). Read straight from the array's offsets and bytes: a million
    cells in milliseconds, where a regular expression per cell took most of the guard's time."""
    import pyarrow as pa

    if isinstance(cells, pa.ChunkedArray):  # chunk by chunk: no copy of a long text column
        parts = [_needs_look(chunk) for chunk in cells.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    n = len(cells)
    _validity, offsets_buf, data_buf = cells.buffers()
    if n == 0 or data_buf is None or data_buf.size == 0:
        return np.zeros(n, dtype=bool)
    width = np.int64 if pa.types.is_large_string(cells.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=width)[cells.offset:cells.offset + n + 1]
    start = offsets[:-1]
    filled = offsets[1:] > start
    data = np.frombuffer(data_buf, dtype=np.uint8)
    first = np.zeros(n, dtype=np.uint8)
    first[filled] = data[start[filled]]
    folded = first | 0x20  # ASCII upper case to lower
    plain = (((first >= 0x30) & (first <= 0x39)) | ((folded >= 0x61) & (folded <= 0x7A))
             | ((first >= 0xE5) & (first <= 0xE9)))
    # Lead byte E4 holds U+4000–U+4FFF; U+4E00 on (不, 位, 中 …) has a second byte of B8–BF.
    e4 = np.flatnonzero(first == 0xE4)
    e4 = e4[offsets[e4 + 1] - start[e4] >= 2]
    plain[e4[data[start[e4] + 1] >= 0xB8]] = True
    look = filled & ~plain
    if cells.null_count:
        look &= cells.is_valid().to_numpy(zero_copy_only=False)
    return look


def guarded(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names are guarded. Number columns are left
    as numbers (-32.5 in a float column is written -32.5); object columns can mix numbers and
    text, and only their text is guarded."""
    safe = frame.copy(deep=False)
    for j in range(safe.shape[1]):
        values = safe.iloc[:, j]
        if _is_text_column(values):
            safe.isetitem(j, _guard_column(values))
    safe.columns = [guard(str(c)) for c in safe.columns]
    return safe


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV with a BOM (so Excel opens Chinese text correctly) and CRLF line ends; text cells
    that Excel would take for a formula are prefixed with an apostrophe. Numbers are left alone."""
    return _BOM + _csv_rows(guarded(frame), header=True)


_BOM = "\ufeff".encode()


def _csv_rows(safe: pd.DataFrame, header: bool) -> bytes:
    """CSV rows of an already guarded frame: through pyarrow's writer (ten times pandas'), which
    quotes every text cell — a CR or LF inside a cell can never start a row. Frames with columns
    it would write differently from pandas (dates, categories …) go through pandas."""
    columns = [_arrow_column(safe.iloc[:, j]) for j in range(safe.shape[1])]
    if any(c is None for c in columns):
        return safe.to_csv(index=False, header=header, lineterminator=_EOL).encode("utf-8")
    return _arrow_csv([str(c) for c in safe.columns], columns, header)


def _arrow_csv(names: list[str], columns: list, header: bool) -> bytes:
    """The CSV rows of arrow columns named `names` (all already guarded), by arrow's writer."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(dict(zip([f"c{j}" for j in range(len(names))], columns, strict=True)))
    buf = io.BytesIO()
    if header:
        buf.write(_csv_header(names))
    if len(table):
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, eol=_EOL))
    return buf.getvalue()


def _csv_header(names: list[str]) -> bytes:
    """The header line of `names` (already guarded), as arrow's writer writes it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    heading = pa.table({f"c{j}": pa.array([], pa.string()) for j in range(len(names))})
    buf = io.BytesIO()
    pacsv.write_csv(heading.rename_columns(names), buf, pacsv.WriteOptions(eol=_EOL))
    return buf.getvalue()


def guarded_arrow(columns: list) -> list:
    """Arrow columns guarded; a dictionary column decoded to text, its words guarded first,
    once each (answer columns: a chunk's dictionary holds the answers its rows show)."""
    import pyarrow as pa

    out = []
    for column in columns:
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_dictionary(column.type) and not column.indices.null_count:
            out.append(_guard_array(column.dictionary).take(column.indices))
        else:
            out.append(_guard_array(column))
    return out


def _arrow_column(values: pd.Series):
    """`values` as an arrow array written as pandas writes it, or None (then pandas writes)."""
    import pyarrow as pa

    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) and not values.isna().any():
        return pa.array(np.where(values.to_numpy(dtype=bool), "True", "False"))
    if pd.api.types.is_integer_dtype(dtype) and not values.isna().any():
        return pa.array(values.to_numpy())
    if pd.api.types.is_float_dtype(dtype):
        return pa.array(np.asarray(values, dtype=float), from_pandas=True)  # NaN: empty
    if pd.api.types.is_string_dtype(dtype) or dtype.kind == "O":
        try:  # pandas' arrow-backed text is handed over as it is
            return pa.array(values, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        if dtype.kind != "O":
            return None
        # Text mixed with numbers: each number as pandas writes it (str), empty for NaN/None.
        cells = [None if v is None or (isinstance(v, float) and v != v)
                 else v if isinstance(v, str) else str(v) for v in values.tolist()]
        return pa.array(cells, type=pa.string())
    return None


def large_text(value: str):
    """`value` as an arrow large-text scalar (what `csv_cells` columns are joined with)."""
    import pyarrow as pa

    return pa.scalar(value, pa.large_string())


@dataclass(frozen=True)
class QuotedLater:
    """Text cells with their quotes doubled and no null, to be written between quotes by
    `CsvWriter.append_cells` — in its one join of the whole line, not by a join of their own
    (a copy of every cell fewer)."""

    escaped: object  # a pyarrow large-text array


def csv_cells(cells, quote_later: bool = False):
    """Each cell of an arrow column as arrow's CSV writer writes it — text quoted with its
    quotes doubled, numbers as arrow casts them, nothing for a null — as large text (a chunk's
    lines may pass 2 GB), for `CsvWriter.append_cells`; with `quote_later`, text with no null
    as `QuotedLater`. Not guarded here: guard text first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    if pa.types.is_dictionary(cells.type):
        cells = cells.dictionary.take(cells.indices)
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        escaped = cells.cast(pa.large_string())
        if _may_quote(escaped):  # the copy only if some cell may hold a quote
            escaped = pc.replace_substring(escaped, '"', '""')
        if quote_later and not escaped.null_count:
            return QuotedLater(escaped)
        quote = large_text('"')
        return pc.binary_join_element_wise(quote, escaped, quote, large_text(""))
    return pc.cast(cells, pa.string()).cast(pa.large_string())


def _may_quote(text) -> bool:
    """Whether a text array may hold a double quote: any in its data buffer (a byte scan, far
    cheaper than a match per cell; bytes of a slice's neighbours only make it say yes)."""
    data = text.buffers()[2]
    return data is not None and bool((np.frombuffer(data, dtype=np.uint8) == ord('"')).any())


class CsvWriter:
    """The CSV of `csv_bytes` written chunk by chunk: header with the first chunk, then rows."""

    def __init__(self, target: str | Path) -> None:
        # Past the page cache: a batch's output is large and read once, later (direct_io).
        self._file = DirectFile(target)
        self._file.write(_BOM)
        self._columns: list | None = None
        self.rows = 0

    def append(self, frame) -> None:
        """Write the rows of a pandas frame, or of an arrow table (text, dictionary-encoded
        text and number columns: no pandas in between, and a dictionary column guarded once
        per distinct value)."""
        if isinstance(frame, pd.DataFrame):
            first = self._first(list(frame.columns))
            self._file.write(_csv_rows(guarded(frame), header=first))
        else:
            first = self._first(list(frame.column_names))
            self._file.write(_arrow_csv([guard(n) for n in frame.column_names],
                                        guarded_arrow(frame.columns), first))
        self.rows += len(frame)

    def append_cells(self, names: list[str], cells: list) -> None:
        """Write rows given as cells already rendered (`csv_cells`, or pieces of several cells
        joined by commas), column by column, under the header `names` (guarded here): one
        arrow join per chunk, the lines written from its buffer as they are."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._first(list(names)):
            self._file.write(_csv_header([guard(n) for n in names]))
        if not cells:
            return
        # One join of the whole line: the cells, and between them the commas (and the quotes
        # of QuotedLater cells) as constants; a null cell is written as nothing.
        parts: list = []
        between = ""  # the constant text before the next cell
        for k, cell in enumerate(cells):
            quoted = isinstance(cell, QuotedLater)
            between += ("," if k else "") + ('"' if quoted else "")
            cell = cell.escaped if quoted else cell
            if isinstance(cell, pa.ChunkedArray):
                cell = cell.combine_chunks()
            if pa.types.is_dictionary(cell.type):
                cell = cell.dictionary.take(cell.indices)
            if between:
                parts.append(large_text(between))
            parts.append(cell)
            between = '"' if quoted else ""
        parts.append(large_text(between + _EOL))
        if not len(next(p for p in parts if not isinstance(p, pa.Scalar))):
            return
        lines = pc.binary_join_element_wise(*parts, large_text(""), null_handling="replace",
                                            null_replacement="")
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        _validity, offsets, data = lines.buffers()
        at = np.frombuffer(offsets, dtype=np.int64)[lines.offset:lines.offset + len(lines) + 1]
        self._file.write(memoryview(data)[int(at[0]):int(at[-1])])
        self.rows += len(lines)

    def _first(self, columns: list) -> bool:
        """Whether this is the first chunk (the header goes with it); later ones must match."""
        if self._columns is None:
            self._columns = columns
            return True
        if columns != self._columns:
            raise ValueError("every chunk of a CSV file must have the same columns")
        return False

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

"""Tables the dispatcher downloads: Excel (.xlsx) and CSV.

The .xlsx is written directly as SpreadsheetML (a zip of a few XML parts) instead of through
openpyxl: 10,000 complaints with their answer columns take ~0.4 s this way against 3–5 s with
openpyxl, which alone would break the 5 s target of a batch (bench/bench_dispatch.py).

Text is always written as text: a complaint whose description starts with "=" never becomes an
Excel formula (inline strings are never evaluated). In CSV, which Excel would evaluate, such
cells get a leading apostrophe.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from html import escape

import numpy as np
import pandas as pd

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MIME = "text/csv"
# Characters XML 1.0 does not allow (Excel refuses the whole file when one appears).
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")
_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_STYLES = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<styleSheet {_NS}>'
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


def _column_cells(values: pd.Series, letter: str) -> list[str]:
    """The <c> elements of one column, rows 2… (row 1 is the header)."""
    cells: list[str] = []
    kind = values.dtype.kind
    items = values.tolist()
    if kind in "iu":
        return [f'<c r="{letter}{i}"><v>{v}</v></c>' for i, v in enumerate(items, start=2)]
    for i, v in enumerate(items, start=2):
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


def _sheet_xml(frame: pd.DataFrame) -> str:
    letters = [_letters(j) for j in range(len(frame.columns))]
    header = "".join(
        f'<c r="{letter}1" t="inlineStr" s="1">{_text(str(name))}</c>'
        for letter, name in zip(letters, frame.columns, strict=True)
    )
    columns = [_column_cells(frame.iloc[:, j], letters[j]) for j in range(len(letters))]
    rows = [f'<row r="1">{header}</row>']
    rows += [
        f'<row r="{i}">{"".join(cells)}</row>'
        for i, cells in enumerate(zip(*columns, strict=True), start=2)
    ]
    cols = "".join(
        f'<col min="{j + 1}" max="{j + 1}" width="{_width(frame.iloc[:, j], str(name))}" '
        'customWidth="1"/>'
        for j, name in enumerate(frame.columns)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet {_NS}>'
        '<sheetViews><sheetView workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        "</sheetView></sheetViews>"
        + (f"<cols>{cols}</cols>" if cols else "")
        + f"<sheetData>{''.join(rows)}</sheetData></worksheet>"
    )


def _sheet_name(name: str, used: set[str]) -> str:
    base = _SHEET_BAD.sub("_", name).strip("'")[:31] or "Sheet"
    out, k = base, 2
    while out.lower() in used:
        out, k = f"{base[:28]}({k})", k + 1
    used.add(out.lower())
    return out


def xlsx_bytes(sheets: dict[str, pd.DataFrame]) -> bytes:
    """An .xlsx workbook with one sheet per (name, table), header row bold and frozen."""
    used: set[str] = set()
    names = [_sheet_name(n, used) for n in sheets]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT}.worksheet+xml"/>'
            for i in range(1, len(names) + 1)
        )
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
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
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Relationships xmlns="{_PKG_REL_NS}"><Relationship Id="rId1" '
            f'Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        sheet_list = "".join(
            f'<sheet name="{escape(n)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, n in enumerate(names, start=1)
        )
        z.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<workbook {_NS} xmlns:r="{_REL_NS}"><sheets>{sheet_list}</sheets></workbook>',
        )
        rels = "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" '
            f'Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, len(names) + 1)
        )
        rels += (
            f'<Relationship Id="rId{len(names) + 1}" Type="{_REL_NS}/styles" '
            'Target="styles.xml"/>'
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<Relationships xmlns="{_PKG_REL_NS}">{rels}</Relationships>',
        )
        z.writestr("xl/styles.xml", _STYLES)
        for i, frame in enumerate(sheets.values(), start=1):
            z.writestr(f"xl/worksheets/sheet{i}.xml", _sheet_xml(frame))
    return buf.getvalue()


_FORMULA_START = re.compile(r"^[=+@\t\r]|^-(?![\d.])")


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV with a BOM (so Excel opens Chinese text correctly); text cells that Excel would
    take for a formula are prefixed with an apostrophe. Numbers are left alone."""

    def guard(v):
        return "'" + v if isinstance(v, str) and _FORMULA_START.match(v) else v

    safe = frame.copy()
    for col in safe.columns:
        if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(guard)
    return safe.to_csv(index=False).encode("utf-8-sig")

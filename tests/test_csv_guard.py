"""CSV downloads never carry a formula (OWASP, CSV injection): every text cell that starts with
= + - @, a tab or a carriage return (or full-width ＝＋－＠) gets a leading apostrophe, while
numbers, negative ones included, stay numbers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from layers import spreadsheet
from layers.spreadsheet import CsvWriter, csv_bytes, guard

ATTACKS = [
    "-1+1",
    "-2+3+cmd|' /C calc'!A0",
    "-.5+1",
    "@SUM(1)",
    "\t=1",
    "\r=1",
    "＝1+1",
    "=cmd|' /C calc'!A0",
    "+1",
    "+41 22 555",
    "＋1",
    "－1",
    "＠SUM(1)",
    " =1+1",  # leading spaces are skipped by some importers
    "\n=1+1",
    "-",
    "=",
    "-1-",
    "-1e5+1",
    "-0x10",
]
PLAIN = ["-32.5", "-1", "-0.5", "-.5", "-1e-3", "-1E+5", "-7.", "12", "0", "正常", "a=b", "",
         "1-2", "北京-上海", "'=1"]


def cells(data: bytes) -> list[list[str]]:
    """The CSV as a spreadsheet importer sees it: rows of raw cell texts."""
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize("text", ATTACKS)
def test_formula_text_gets_an_apostrophe(text):
    assert guard(text) == "'" + text
    out = cells(csv_bytes(pd.DataFrame({"内容": [text]})))
    assert out[1] == ["'" + text]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_text_and_plain_numbers_as_text_are_left_alone(text):
    assert guard(text) == text
    out = cells(csv_bytes(pd.DataFrame({"内容": [text], "n": [1]})))
    assert out[1][0] == text


def test_number_columns_stay_numbers():
    frame = pd.DataFrame({
        "float": [-32.5, 120.5, np.nan],
        "int": [-3, 0, 7],
        "bool": [True, False, True],
        "mixed": [-32.5, "=1+1", None],  # object column: numbers stay, text is guarded
        "text_number": ["-32.5", "-1+1", "32.5"],  # an upload's coordinate column, read as text
    })
    out = cells(csv_bytes(frame))
    assert out[0] == ["float", "int", "bool", "mixed", "text_number"]
    assert out[1] == ["-32.5", "-3", "True", "-32.5", "-32.5"]
    assert out[2] == ["120.5", "0", "False", "'=1+1", "'-1+1"]
    back = pd.read_csv(io.BytesIO(csv_bytes(frame)), encoding="utf-8-sig")
    assert back["float"].dtype.kind == "f" and back["float"][0] == -32.5
    assert back["int"].tolist() == [-3, 0, 7]
    assert back["text_number"][0] == "-32.5"


def test_a_carriage_return_inside_a_cell_cannot_start_a_row():
    """Excel ends a row at a bare CR: "x\r=1+1" unquoted would put "=1+1" first in a new row."""
    data = csv_bytes(pd.DataFrame({"内容": ["x\r=1+1", "y\n@SUM(1)"], "n": [1, 2]}))
    text = data.decode("utf-8-sig")
    assert '"x\r=1+1"' in text and '"y\n@SUM(1)"' in text  # quoted: one cell each
    assert text.endswith("\r\n") and cells(data)[1:] == [["x\r=1+1", "1"], ["y\n@SUM(1)", "2"]]


def test_headers_are_guarded_too():
    out = cells(csv_bytes(pd.DataFrame({"=HYPERLINK(\"x\")": ["a"], "-1+1": ["b"], "ok": ["c"]})))
    assert out[0] == ["'=HYPERLINK(\"x\")", "'-1+1", "ok"]


def test_streamed_csv_is_guarded_like_csv_bytes(tmp_path):
    frame = pd.DataFrame({"内容": ATTACKS + PLAIN, "n": np.arange(len(ATTACKS) + len(PLAIN))})
    out = tmp_path / "out.csv"
    with CsvWriter(out) as w:
        w.append(frame.iloc[:7])
        w.append(frame.iloc[7:])
    assert out.read_bytes() == csv_bytes(frame)
    rows = cells(out.read_bytes())
    assert [r[0] for r in rows[1:]] == [guard(t) for t in ATTACKS + PLAIN]


def test_excel_keeps_the_text_as_typed():
    """In .xlsx every string is an inline string, never evaluated: no apostrophe is added."""
    texts = [t for t in ATTACKS if "\r" not in t]  # Excel stores CR as _x000D_; not the point
    frame = pd.DataFrame({"内容": texts, "x": [-32.5] * len(texts)})
    ws = load_workbook(io.BytesIO(spreadsheet.xlsx_bytes({"表": frame}))).active
    got = list(ws.iter_rows(min_row=2, values_only=True))
    assert [r[0] for r in got] == texts and all(r[1] == -32.5 for r in got)
    assert all(ws.cell(row=i, column=1).data_type == "s" for i in range(2, len(texts) + 2))


def test_the_first_byte_filter_looks_at_every_cell_the_rule_would():
    """_needs_look (the guard's fast filter over arrow text) skips exactly the cells that start
    with an ASCII letter or digit or a CJK character U+4E00–U+9FFF, and nothing else: the
    edges of that block, other scripts, full-width signs, nulls, empty cells, sliced and
    chunked arrays, both offset widths."""
    import re

    import pyarrow as pa

    cells = ["", None, "=1+1", "@SUM(A1)", "-x", "+1", " =1", "\t1", "\r1", "'x", "a", "Z",
             "0", "9", "[x", "`x", "{x", "一", "不在", "位于", "中", "鿿", "\u4dff", "\ua000",
             "龥", "䷀", "＝1", "＋", "－", "＠", "（", "“x”", "é", "😀", "Я", "ア", "가", "·"]
    rule = re.compile(spreadsheet._PLAIN_START)
    expected = np.array([c is not None and c != "" and not rule.match(c) for c in cells])
    for kind in (pa.string(), pa.large_string()):
        array = pa.array(cells, type=kind)
        assert (spreadsheet._needs_look(array) == expected).all(), kind
        # a slice starts inside the buffers (offset ≠ 0)
        assert (spreadsheet._needs_look(array.slice(3, 20)) == expected[3:23]).all(), kind
        chunked = pa.chunked_array([array.slice(0, 10), array.slice(10)])
        assert (spreadsheet._needs_look(chunked) == expected).all(), kind
    assert not spreadsheet._needs_look(pa.array(["", ""], pa.large_string())).any()
    assert len(spreadsheet._needs_look(pa.array([], pa.large_string()))) == 0


def test_arrow_tables_are_written_and_guarded_as_frames_are(tmp_path):
    """A batch file's chunks reach the CSV writer as arrow tables whose answer columns are
    dictionary arrays sharing one index array (a dictionary may hold words no row uses): the
    file is byte for byte the pandas frame's, every formula guarded."""
    import pyarrow as pa

    rng = np.random.default_rng(7)
    words = ATTACKS + PLAIN + ["甲,乙", 'say "hi"', "两行\n文字"]
    n = 500
    answers = rng.integers(0, len(words), n)
    indices = pa.array(answers.astype(np.int32))
    registry = pa.array(words)
    other = pa.array(list(reversed(words)))
    lon = rng.uniform(120, 122, n).round(7)
    lon[::17] = np.nan
    text = rng.choice(words, n).tolist()
    table = pa.Table.from_arrays([
        pa.array(text), pa.DictionaryArray.from_arrays(indices, registry),
        pa.DictionaryArray.from_arrays(indices, other), pa.array(answers * 3),
        pa.array(lon, from_pandas=True),
        pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 3, n).astype(np.int32)),
                                       pa.array(["", "=x", "好"])),
    ], names=["=内容", "route_a", "route_b", "route_generation", "route_routed_lon", "route_e"])
    frame = pd.DataFrame({
        "=内容": text, "route_a": [words[k] for k in answers],
        "route_b": [words[len(words) - 1 - k] for k in answers], "route_generation": answers * 3,
        "route_routed_lon": lon,
        "route_e": table.column("route_e").combine_chunks().cast(pa.string()).to_pylist(),
    })
    out = tmp_path / "out.csv"
    with CsvWriter(out) as w:
        w.append(table.slice(0, 180))
        w.append(table.slice(180))
    assert out.read_bytes() == csv_bytes(frame)
    rows = cells(out.read_bytes())
    assert rows[0][0] == guard("=内容")
    assert [r[1] for r in rows[1:]] == [guard(words[k]) for k in answers]
    assert any(r[1].startswith("'=") for r in rows[1:])
    with CsvWriter(tmp_path / "y.csv") as w, pytest.raises(ValueError, match="same columns"):
        w.append(table)
        w.append(table.drop_columns(["route_e"]))


def test_cells_rendered_and_joined_are_what_arrows_writer_writes(tmp_path):
    """`csv_cells` + `CsvWriter.append_cells` (a batch file's lines, joined by arrow compute)
    write what the arrow-table path writes, byte for byte: text with quotes, commas, line breaks
    and formulas (guarded first), empty text and nulls, numbers with NaN, a dictionary column of
    pre-joined pieces, characters beyond the BMP and a long cell — chunk after chunk."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(9)
    words = ATTACKS + PLAIN + ["甲,乙", 'say "hi"', "两行\r\n文字", "𠀀𝄞", "x" * 70_000, None]
    n = 400
    text = rng.choice(np.array(words, dtype=object), n).tolist()
    lon = rng.uniform(120, 122, n).round(7)
    lon[::13] = np.nan
    gen = rng.integers(0, 5, n)
    table = pa.Table.from_arrays([
        pa.array(text, pa.string()), pa.array(gen), pa.array(lon, from_pandas=True),
        pa.array(rng.choice(np.array(words[:-1], dtype=object), n).tolist(), pa.string()),
    ], names=["=内容", "route_generation", "route_routed_lon", "route_error"])
    expected = tmp_path / "arrow.csv"
    with CsvWriter(expected) as w:
        w.append(table.slice(0, 150))
        w.append(table.slice(150))
    for later in (False, True):  # text with no null quoted in the line's join (QuotedLater)
        rendered = tmp_path / f"cells-{later}.csv"
        with CsvWriter(rendered) as w:
            for part in (table.slice(0, 150), table.slice(150)):
                rendered_cells = [spreadsheet.csv_cells(c, quote_later=later)
                                  for c in spreadsheet.guarded_arrow(part.columns)]
                # the two middle columns as one piece per distinct pair (as answers are)
                pair = pc.binary_join_element_wise(
                    rendered_cells[1], rendered_cells[2], spreadsheet.large_text(","),
                    null_handling="replace", null_replacement="")
                w.append_cells(part.column_names, [
                    rendered_cells[0], pc.dictionary_encode(pair), rendered_cells[3]])
        assert rendered.read_bytes() == expected.read_bytes()
    # Quoted in the join: the last column (no null), not the first (it has nulls: a null is
    # written as nothing, not as "").
    last = spreadsheet.guarded_arrow([table.column(3)])[0]
    assert isinstance(spreadsheet.csv_cells(last, quote_later=True), spreadsheet.QuotedLater)
    first = spreadsheet.guarded_arrow([table.column(0)])[0]
    assert not isinstance(spreadsheet.csv_cells(first, quote_later=True),
                          spreadsheet.QuotedLater)
    # A line that begins and ends with such cells, a quote inside: as arrow's writer writes.
    both = pa.table({"a": ['x"y', "", "=1+1"], "b": ["1", '""', "z"]})
    with CsvWriter(tmp_path / "both-arrow.csv") as w:
        w.append(both)
    with CsvWriter(tmp_path / "both-cells.csv") as w:
        w.append_cells(both.column_names, [
            spreadsheet.csv_cells(c, quote_later=True)
            for c in spreadsheet.guarded_arrow(both.columns)])
    assert ((tmp_path / "both-cells.csv").read_bytes()
            == (tmp_path / "both-arrow.csv").read_bytes())
    assert b'"x""y"' in (tmp_path / "both-cells.csv").read_bytes()
    rows = cells(rendered.read_bytes())
    assert rows[0][0] == guard("=内容")
    assert [r[0] for r in rows[1:]] == ["" if t is None else guard(t) for t in text]
    with CsvWriter(tmp_path / "y.csv") as w, pytest.raises(ValueError, match="same columns"):
        w.append_cells(["a", "b"], [spreadsheet.csv_cells(pa.array(["1"]))] * 2)
        w.append_cells(["a"], [spreadsheet.csv_cells(pa.array(["1"]))])

"""Batch exports people open are in Chinese — headers, and labels for coded values — with the
machine table, complete, on the Excel's second sheet; `gridmap assign --headers zh|machine`
streams both; times are Beijing time."""

from __future__ import annotations

import io
import re
import subprocess

import pandas as pd
import pytest
from openpyxl import load_workbook

from grids.batch import (
    GENERATION_TIME,
    MACHINE_SHEET,
    NOTES_SHEET,
    RESULT_SHEET,
    ZH_HEADERS,
    ExportLabels,
    assign,
    assign_file,
    localize,
    write_result,
)
from grids.deadlines import beijing_text
from layers import spreadsheet
from layers.store import open_store
from tests.browser import build_map_world
from tests.conftest import gridmap_exe
from tests.world import P

ROWS = [  # (编号, place, accuracy); "swap" gives the row as lat, lon
    ("E1", "a2_plain", 0), ("E2", "dedicated", 0), ("E3", "chemical", 0),
    ("E4", "a1_numbered", 0), ("E5", "near_border", 300), ("E6", "sea", 0),
    ("E7", "outside", 0), ("E8", "swap", 0), ("E9", None, 0),
]
UTC_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|\+00:00)")


def rows_frame() -> pd.DataFrame:
    out = []
    for ref, place, acc in ROWS:
        if place is None:
            lon, lat = "不是数字", ""
        elif place == "swap":
            lat, lon = P["a2_plain"]
        else:
            lon, lat = P[place]
        out.append({"编号": ref, "经度": str(lon), "纬度": str(lat), "坐标系": "WGS84",
                    "精度": str(acc), "网格编码": "原文件里的同名列"})
    return pd.DataFrame(out)


def sheet_frame(sheet) -> pd.DataFrame:
    rows = list(sheet.iter_rows(values_only=True))
    return pd.DataFrame(rows[1:], columns=rows[0])


def test_localized_table_has_chinese_headers_and_labels(router):
    table = assign(router, rows_frame()).table
    labels = ExportLabels.of(router)
    zh = localize(table, labels)
    assert len(zh) == len(table)  # every row, in order
    assert list(zh["编号"]) == [r[0] for r in ROWS]
    assert not [c for c in zh.columns if str(c).startswith("route_")]
    # An input column keeps its name; the answer's column of the same name is told apart.
    assert (zh["网格编码"] == "原文件里的同名列").all()
    assert "网格编码（分派）" in zh.columns
    by = zh.set_index("编号")
    status = dict(zip(table["编号"], table["route_status"], strict=True))
    expected = {"ok": "明确", "ambiguous": "存在歧义", "outside": "不在辖区内", "error": "无法分派"}
    assert {r: by.loc[r, "分派状态"] for r in by.index} == {
        r: expected[s] for r, s in status.items()}
    assert set(by["分派状态"]) == set(expected.values())  # the file has every status
    assert by.loc["E2", "网格类型"] == "专属网格" and by.loc["E1", "网格类型"] == "综合网格"
    assert by.loc["E3", "网格类型"] == "园区网格"
    assert by.loc["E3", "机构级别"] == "园区/区域执法局"
    assert by.loc["E1", "机构级别"] == "县（市）、区级"
    assert by.loc["E4", "机构级别"] == "编号执法局"
    assert by.loc["E4", "上级执法机构"] == "甲县执法一局 > 甲县执法局 > 市执法局"  # names
    assert "海域" in by.loc["E6", "标记"] and "经纬度已对调" in by.loc["E8", "标记"]
    assert by.loc["E8", "网格编码（分派）"] == by.loc["E1", "网格编码（分派）"]
    assert by.loc["E9", "无法分派原因"] == "坐标为空或不是数字"
    candidates = by.loc["E5", "候选归属（存在歧义时）"]
    assert "候选1：" in candidates and "候选2：" in candidates and "甲县" in candidates
    assert "乙县" in candidates
    # The layer version with its time, in Beijing time.
    gen = router.snapshot.generation
    assert (by[GENERATION_TIME] == beijing_text(gen.created_at)).all()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", by[GENERATION_TIME].iat[0])
    assert not zh.astype(str).apply(lambda c: c.str.contains(UTC_TEXT)).any().any()


def test_page_excel_first_sheet_chinese_second_sheet_machine(router):
    from ui import batch

    data = rows_frame().to_csv(index=False).encode("gbk")
    result = batch.run(router, "投诉.csv", data, None)
    wb = load_workbook(io.BytesIO(batch.excel(result)))
    assert wb.sheetnames == [RESULT_SHEET, MACHINE_SHEET, NOTES_SHEET]
    people, machine = sheet_frame(wb[RESULT_SHEET]), sheet_frame(wb[MACHINE_SHEET])
    table = result.result.table
    # The second sheet is the machine table, complete: every column and value.
    assert list(machine.columns) == list(table.columns)
    assert "route_status" in machine.columns and "route_grid_kind" in machine.columns
    back = machine.astype(object).where(machine.notna(), "").astype(str)
    expected = table.astype(object).where(table.notna(), "").astype(str)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    # The first: Chinese headers and labels.
    assert list(people.columns[:6]) == ["编号", "经度", "纬度", "坐标系", "精度", "网格编码"]
    assert {"分派状态", "网格类型", "机构级别", "无法分派原因"} <= set(people.columns)
    assert not any(str(c).startswith("route_") for c in people.columns)
    assert list(people["分派状态"]) == list(localize(table, result.labels)["分派状态"])
    assert "专属网格" in set(people["网格类型"]) and "ok" not in set(people["分派状态"])
    # The notes map each Chinese header to its machine name and explain the codes.
    notes = sheet_frame(wb[NOTES_SHEET]).set_index("中文列名")
    assert notes.loc["分派状态", "机器字段名"] == "route_status"
    assert "comprehensive" in notes.loc["网格类型", "说明"]
    for machine_name, header in ZH_HEADERS.items():
        if machine_name in table.columns and header != "网格编码":
            assert notes.loc[header, "机器字段名"] == machine_name
    # CSV: the first sheet's table.
    csv = pd.read_csv(io.BytesIO(batch.csv(result)), encoding="utf-8-sig", dtype=str,
                      keep_default_na=False)
    assert list(csv.columns) == list(people.columns)
    assert list(csv["分派状态"]) == list(people["分派状态"])


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_streamed_chinese_export_equals_the_table_in_memory(router, tmp_path, chunk):
    src = tmp_path / "投诉.csv"
    rows_frame().to_csv(src, index=False)
    whole = assign(router, pd.read_csv(src, dtype=str, keep_default_na=False)).table
    labels = ExportLabels.of(router)
    out_csv = tmp_path / "结果.csv"
    assign_file(router, src, out_csv, chunk_rows=chunk, headers="zh")
    assert out_csv.read_bytes() == spreadsheet.csv_bytes(localize(whole, labels))
    out_xlsx = tmp_path / "结果.xlsx"
    summary = assign_file(router, src, out_xlsx, chunk_rows=chunk, headers="zh")
    assert summary.total == len(ROWS)
    wb = load_workbook(out_xlsx)
    assert wb.sheetnames == [RESULT_SHEET, MACHINE_SHEET, NOTES_SHEET]
    people, machine = sheet_frame(wb[RESULT_SHEET]), sheet_frame(wb[MACHINE_SHEET])
    zh = localize(whole, labels)
    assert list(people.columns) == list(zh.columns) and len(people) == len(zh)
    assert list(people["分派状态"]) == list(zh["分派状态"])
    assert list(people["上级执法机构"].fillna("")) == list(zh["上级执法机构"])
    assert list(machine.columns) == list(whole.columns)
    assert list(machine["route_status"]) == list(whole["route_status"])
    assert list(machine["route_grid_code"].fillna("")) == list(whole["route_grid_code"])
    assert sheet_frame(wb[NOTES_SHEET])["机器字段名"].tolist()[:2] == ["编号", "经度"]
    # Machine headers: the table as before, one sheet.
    out_m = tmp_path / "机器.xlsx"
    assign_file(router, src, out_m, chunk_rows=chunk, headers="machine")
    assert load_workbook(out_m).sheetnames == [RESULT_SHEET]
    write_result(type("R", (), {"table": whole})(), tmp_path / "内存.csv", headers="zh",
                 labels=labels)
    assert (tmp_path / "内存.csv").read_bytes() == out_csv.read_bytes()


def test_parallel_sheets_stream_through_temporary_files(tmp_path):
    a = pd.DataFrame({"甲": range(5), "文本": ["=1+1", "x", "y", "z", "w"]})
    b = pd.DataFrame({"b": [f"行{i}" for i in range(5)]})
    target = tmp_path / "book.xlsx"
    with spreadsheet.XlsxWriter(target, ["一", "二", "三", "四"]) as book:
        first, second = book.sheets(2)
        for start in range(0, 5, 2):
            first.append(a.iloc[start:start + 2])
            second.append(b.iloc[start:start + 2])
        book.sheet().append(pd.DataFrame({"说明": ["第三张"]}))
    assert not list(tmp_path.glob("tmp*"))  # the spooled sheet is gone
    wb = load_workbook(target)
    assert wb.sheetnames == ["一", "二", "三", "四"]
    assert [r[1] for r in wb["一"].iter_rows(min_row=2, values_only=True)] == list(a["文本"])
    assert wb["一"]["B2"].data_type == "s"  # text stays text
    assert [r[0] for r in wb["二"].iter_rows(values_only=True)] == ["b", *b["b"]]
    assert wb["三"]["A2"].value == "第三张" and wb["四"].max_row == 1
    # A failure part-way leaves no workbook and no spooled file behind.
    broken = tmp_path / "broken.xlsx"
    with pytest.raises(RuntimeError), spreadsheet.XlsxWriter(broken, ["一", "二"]) as book:
        _, two = book.sheets(2)
        two.append(b)
        raise RuntimeError("stop")
    with pytest.raises(ValueError, match="2 sheets"):
        spreadsheet.XlsxWriter(io.BytesIO(), ["一", "二"]).sheets(3)


@pytest.fixture(scope="module")
def world_file(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("export"))


def test_cli_assign_in_chinese_by_default_machine_names_on_request(world_file, tmp_path):
    src = tmp_path / "投诉.csv"
    frame = rows_frame()
    frame.loc[len(frame)] = {**frame.iloc[-1].to_dict(), "编号": "E10"}  # two bad rows
    frame.to_csv(src, index=False)

    def run(*args):
        done = subprocess.run([gridmap_exe(), "--store", str(world_file), "assign", str(src),
                               *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    out = tmp_path / "结果.csv"
    run("--out", str(out))
    zh = pd.read_csv(out, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert "分派状态" in zh.columns and not any(c.startswith("route_") for c in zh.columns)
    assert set(zh["分派状态"]) == {"明确", "存在歧义", "不在辖区内", "无法分派"}
    machine_out = tmp_path / "机器.csv"
    run("--out", str(machine_out), "--headers", "machine")
    machine = pd.read_csv(machine_out, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert set(machine["route_status"]) == {"ok", "ambiguous", "outside", "error"}
    assert len(machine) == len(zh) == len(frame)
    xlsx = tmp_path / "结果.xlsx"
    run("--out", str(xlsx))
    wb = load_workbook(xlsx, read_only=True)
    assert wb.sheetnames == [RESULT_SHEET, MACHINE_SHEET, NOTES_SHEET]
    store = open_store(str(world_file))
    try:
        audit = store.audit_rows()
    finally:
        store.close()
    assert (audit["action"] == "batch.assign").sum() >= 3
    bad = subprocess.run([gridmap_exe(), "--store", str(world_file), "assign", str(src),
                          "--headers", "english"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "zh" in bad.stderr and "machine" in bad.stderr

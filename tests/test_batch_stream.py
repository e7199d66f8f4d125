"""`assign_file` streams: chunk by chunk it writes exactly what routing the whole table in memory
writes, keeps every bad row with its reason and line, and its memory does not grow with the
number of rows."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from geo.crs import from_store
from grids.batch import (
    MAX_BAD_ROWS,
    MAX_ROWS_INTERACTIVE,
    MAX_UPLOAD_BYTES,
    BatchInputError,
    ExportLabels,
    assign,
    assign_file,
    iter_rows,
    localize,
    read_rows,
)
from grids.routing import Router
from layers import spreadsheet
from layers.readers import read_table
from layers.store import open_store
from tests.conftest import gridmap_exe

BOX = (120.3, 31.7, 121.9, 32.7)  # around Nantong: inside, at sea and outside the city
CHUNK = 700  # small chunks, so a few thousand rows cross several boundaries


@pytest.fixture(scope="module")
def sample_router(sample_store):
    store = open_store(str(sample_store))
    yield Router(store)
    store.close()


def mixed_rows(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    """Complaints in several coordinate systems, with swapped, bad and formula-looking rows and a
    run of bad rows longer than a chunk (a chunk with no routable row at all)."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(BOX[0], BOX[2], n)
    lat = rng.uniform(BOX[1], BOX[3], n)
    systems = rng.choice(["WGS84", "GCJ02", "EPSG:4549", ""], n, p=[0.5, 0.3, 0.15, 0.05])
    x, y = lon.copy(), lat.copy()
    for name, key in (("GCJ02", "gcj02"), ("EPSG:4549", "EPSG:4549")):
        rows = systems == name
        x[rows], y[rows] = from_store(lon[rows], lat[rows], key)
    text_x = [f"{v:.2f}" if abs(v) > 1000 else f"{v:.6f}" for v in x]
    text_y = [f"{v:.2f}" if abs(v) > 1000 else f"{v:.6f}" for v in y]
    frame = pd.DataFrame({
        "编号": [f"TS{i:05d}" for i in range(n)],
        "举报内容": rng.choice(["烟囱冒黑烟", "=1+1", "-1+1", "@SUM(1)", "河道发黑 "], n),
        "差值": rng.choice(["-32.5", "0", "-.5+1", "12"], n),
        "经度": text_x, "纬度": text_y, "坐标系": systems,
        "精度": rng.choice(["", "", "", "30", "500", "-5"], n),
    })
    swap = rng.choice(n, 30, replace=False)
    frame.loc[swap, ["经度", "纬度"]] = frame.loc[swap, ["纬度", "经度"]].to_numpy()
    bad = np.arange(1200, min(n, 1200 + 2 * CHUNK + 50))  # whole chunks that cannot be routed
    frame.loc[bad[::3], "经度"] = ""
    frame.loc[bad[1::3], "经度"] = "一百二十"
    frame.loc[bad[2::3], "坐标系"] = "北京54"
    frame.loc[[7, 8], ["经度", "纬度", "坐标系"]] = [["500", "500", "WGS84"], ["", "", "WGS84"]]
    return frame


def write_csv(frame: pd.DataFrame, path: Path, encoding: str) -> None:
    """A CSV as offices export them: a blank line and a row of empty cells in the middle."""
    text = frame.to_csv(index=False, lineterminator="\n")
    lines = text.split("\n")
    lines[11:11] = ["", ",,,,,,"]  # lines 12 and 13 of the file
    path.write_bytes("\n".join(lines).encode(encoding))


def write_xlsx(frame: pd.DataFrame, path: Path) -> None:
    """An .xlsx as Excel keeps it: numbers as numbers, a date column, an empty row."""
    typed = frame.copy()
    typed["差值"] = pd.to_numeric(typed["差值"], errors="coerce")
    typed["举报时间"] = pd.Timestamp("2026-11-01 08:00") + pd.to_timedelta(
        np.arange(len(typed)), unit="min"
    )
    typed = pd.concat([typed.iloc[:10], pd.DataFrame([{}]), typed.iloc[10:]], ignore_index=True)
    typed.to_excel(path, index=False)


def files(tmp_path: Path, frame: pd.DataFrame) -> dict[str, Path]:
    paths = {"utf8": tmp_path / "投诉_utf8.csv", "gbk": tmp_path / "投诉_gbk.csv",
             "xlsx": tmp_path / "投诉.xlsx"}
    write_csv(frame, paths["utf8"], "utf-8")
    write_csv(frame, paths["gbk"], "gbk")
    write_xlsx(frame, paths["xlsx"])
    return paths


@pytest.mark.parametrize("kind", ["utf8", "gbk", "xlsx"])
def test_streaming_equals_in_memory_row_for_row(sample_router, tmp_path, kind):
    frame = mixed_rows()
    src = files(tmp_path, frame)[kind]
    table = read_rows(src)
    # The chunked reader reads what pandas reads (read_table, the importer's reader).
    expected = read_table(src, src.name, None).frame.reset_index(drop=True)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert len(table) == len(frame)

    whole = assign(sample_router, table, crs="wgs84").table
    statuses = set(whole["route_status"])
    assert {"ok", "outside", "error"} <= statuses

    out_csv, out_xlsx = tmp_path / "结果.csv", tmp_path / "结果.xlsx"
    summary = assign_file(sample_router, src, out_csv, crs="wgs84", chunk_rows=CHUNK)
    assert out_csv.read_bytes() == spreadsheet.csv_bytes(whole)  # byte for byte
    # In Chinese (the CSV's chunks are arrow tables, localized as such): what the page writes.
    assign_file(sample_router, src, out_csv, crs="wgs84", chunk_rows=CHUNK, headers="zh")
    labels = ExportLabels.of(sample_router)
    assert out_csv.read_bytes() == spreadsheet.csv_bytes(localize(whole, labels))
    summary_x = assign_file(sample_router, src, out_xlsx, crs="wgs84", chunk_rows=CHUNK)
    streamed = zipfile.ZipFile(out_xlsx)
    in_memory = zipfile.ZipFile(io.BytesIO(spreadsheet.xlsx_bytes({"分派结果": whole})))
    assert streamed.namelist() == in_memory.namelist()
    for part in in_memory.namelist():
        assert streamed.read(part) == in_memory.read(part), part

    counts = {k: int(v) for k, v in whole["route_status"].value_counts().items()}
    errors = whole[whole["route_status"] == "error"]
    for s in (summary, summary_x):
        assert s.total == len(frame) and s.counts == counts and s.errors == len(errors)
        assert len(s.bad_rows) == min(len(errors), MAX_BAD_ROWS)
        assert [b.reason for b in s.bad_rows] == list(errors["route_error"][:MAX_BAD_ROWS])
    # Bad rows keep their line in the file: the header is line 1, then rows 0-9; after them the
    # CSV has a blank line and a line of empty cells, the sheet an empty row.
    offset = 3 if kind == "xlsx" else 4
    lines = {b.line: b.reason for b in summary.bad_rows}
    assert "有效坐标" in lines[7 + 2] and "数字" in lines[8 + 2]
    assert "数字" in lines[1200 + offset] and "北京54" in lines[1202 + offset]
    assert all(b.where == f"第 {b.line} 行" for b in summary.bad_rows)
    inside = whole[whole["route_status"].isin(["ok", "ambiguous"])]
    assert summary.bbox == pytest.approx((
        inside["route_routed_lon"].min(), inside["route_routed_lat"].min(),
        inside["route_routed_lon"].max(), inside["route_routed_lat"].max(),
    ))

    back = load_workbook(out_xlsx, read_only=True)["分派结果"]
    rows = back.iter_rows(min_row=2, max_row=3, values_only=True)
    assert [r[0] for r in rows] == ["TS00000", "TS00001"]


def test_every_chunk_size_gives_the_same_file(sample_router, tmp_path):
    frame = mixed_rows(200, seed=9)  # chunks of one row: 200 chunks
    src = tmp_path / "in.csv"
    write_csv(frame, src, "utf-8")
    outs = []
    for chunk in (1, 37, 199, 10_000):
        out = tmp_path / f"out_{chunk}.csv"
        assign_file(sample_router, src, out, crs="wgs84", chunk_rows=chunk)
        outs.append(out.read_bytes())
    assert len(set(outs)) == 1


def test_empty_and_unusable_files(sample_router, tmp_path):
    header = tmp_path / "empty.csv"
    header.write_text("编号,经度,纬度,坐标系\n", encoding="utf-8")
    out = tmp_path / "empty_out.csv"
    summary = assign_file(sample_router, header, out)
    assert summary.total == 0 and summary.bad_rows == [] and summary.bbox is None
    back = pd.read_csv(out, encoding="utf-8-sig")
    assert len(back) == 0 and "route_status" in back and "route_grid_code" in back
    xlsx_out = tmp_path / "empty_out.xlsx"
    assign_file(sample_router, header, xlsx_out)
    assert [c.value for c in load_workbook(xlsx_out)["分派结果"][1]][:2] == ["编号", "经度"]

    no_coords = tmp_path / "no_coords.csv"
    no_coords.write_text("编号,地址\n1,崇川区\n", encoding="utf-8")
    target = tmp_path / "never.csv"
    with pytest.raises(BatchInputError, match="找不到经纬度列"):
        assign_file(sample_router, no_coords, target)
    no_crs = tmp_path / "no_crs.csv"
    no_crs.write_text("编号,经度,纬度\n1,120.6,32.1\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match="--crs"):
        assign_file(sample_router, no_crs, target)  # neither a column nor --crs
    with pytest.raises(BatchInputError, match=r"\.csv 或 \.xlsx"):
        assign_file(sample_router, header, tmp_path / "out.txt", crs="wgs84")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"lon,lat\n\xff\xfe\x00\x81,1\n")
    with pytest.raises(BatchInputError, match="编码"):
        assign_file(sample_router, binary, target, crs="wgs84")
    assert not target.exists() and not list(tmp_path.glob(".*.part"))  # nothing half-written


def test_more_rows_than_a_sheet_holds_is_refused_for_xlsx(sample_router, tmp_path, monkeypatch):
    src = tmp_path / "rows.csv"
    src.write_text("编号,经度,纬度\n" + "".join(f"{i},120.6,32.1\n" for i in range(30)),
                   encoding="utf-8")
    monkeypatch.setattr(spreadsheet, "XLSX_MAX_ROWS", 21)
    out = tmp_path / "rows.xlsx"
    with pytest.raises(BatchInputError, match=r"\.csv"):
        assign_file(sample_router, src, out, crs="wgs84", chunk_rows=7)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))
    assign_file(sample_router, src, tmp_path / "rows.csv.out.csv", crs="wgs84", chunk_rows=7)


def test_chunks_are_written_behind_and_a_failed_write_leaves_nothing(sample_router, tmp_path,
                                                                     monkeypatch):
    """The chunks are written by a second thread while the next is routed (batch._WriteBehind),
    in order; a write that fails (a full disk) stops the file with that error, and neither the
    output nor its part file is left, the writing thread ended."""
    import threading

    src = tmp_path / "rows.csv"
    src.write_text("编号,经度,纬度\n" + "".join(f"{i},120.{600 + i},32.1\n" for i in range(40)),
                   encoding="utf-8")
    seen: list[tuple[str, int]] = []
    append = spreadsheet.CsvWriter.append_cells  # the rows with their answers' pieces

    def recording(self, names, cells):
        seen.append((threading.current_thread().name, len(cells[-2])))  # the routed lat
        return append(self, names, cells)

    monkeypatch.setattr(spreadsheet.CsvWriter, "append_cells", recording)
    out = tmp_path / "out.csv"
    assign_file(sample_router, src, out, crs="wgs84", chunk_rows=7)
    assert [n for _, n in seen] == [7, 7, 7, 7, 7, 5]
    assert all(name.startswith("assign-write") for name, _ in seen)
    back = pd.read_csv(out, encoding="utf-8-sig")
    assert back["编号"].tolist() == list(range(40))

    def failing(self, names, cells):
        if self.rows >= 14:
            raise OSError(28, "No space left on device")
        return append(self, names, cells)

    monkeypatch.setattr(spreadsheet.CsvWriter, "append_cells", failing)
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        assign_file(sample_router, src, tmp_path / "full.csv", crs="wgs84", chunk_rows=7)
    assert not (tmp_path / "full.csv").exists() and not list(tmp_path.glob(".*.part"))
    assert threading.active_count() <= before


def test_chunks_are_located_ahead_and_a_failed_chunk_leaves_nothing(sample_router, tmp_path,
                                                                     monkeypatch):
    """The chunks are read and located by a second thread a little ahead of the answering
    (batch._ReadAhead), in order; a chunk that fails there stops the file with that error: no
    output, no part file, no chunk read more than the few ahead, no thread left."""
    import threading

    from grids import batch

    src = tmp_path / "rows.csv"
    src.write_text("编号,经度,纬度\n" + "".join(f"{i},120.{600 + i},32.1\n" for i in range(70)),
                   encoding="utf-8")
    locate = batch._locate_rows
    seen: list[tuple[str, int]] = []

    def recording(router, frame, crs):
        seen.append((threading.current_thread().name, int(frame.index[0])))
        return locate(router, frame, crs)

    monkeypatch.setattr(batch, "_locate_rows", recording)
    out = tmp_path / "out.csv"
    assign_file(sample_router, src, out, crs="wgs84", chunk_rows=7)
    assert [line for _, line in seen] == list(range(2, 72, 7))  # each chunk once, in order
    assert all(name.startswith("assign-locate") for name, _ in seen)
    assert pd.read_csv(out, encoding="utf-8-sig")["编号"].tolist() == list(range(70))

    def failing(router, frame, crs):
        seen.append((threading.current_thread().name, int(frame.index[0])))
        if frame.index[0] >= 16:  # the third chunk
            raise BatchInputError("第 16 行起无法读取")
        return locate(router, frame, crs)

    seen.clear()
    monkeypatch.setattr(batch, "_locate_rows", failing)
    before = threading.active_count()
    with pytest.raises(BatchInputError, match="第 16 行"):
        assign_file(sample_router, src, tmp_path / "bad.csv", crs="wgs84", chunk_rows=7)
    assert not (tmp_path / "bad.csv").exists() and not list(tmp_path.glob(".*.part"))
    assert [line for _, line in seen][:3] == [2, 9, 16]
    assert len(seen) <= 3 + batch._ReadAhead.AHEAD  # not the whole file
    assert threading.active_count() <= before


def test_part_files_of_killed_runs_are_removed_and_no_others(sample_router, tmp_path):
    """A run killed midway leaves its part file (gigabytes for a province): the next run on
    the same output removes it — only when its process is gone and it has not been touched
    for STALE_PART_SECONDS, so never a run still writing."""
    import os
    import subprocess
    import time

    from grids import batch

    src = tmp_path / "rows.csv"
    src.write_text("编号,经度,纬度\nA,120.6,32.1\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a process that has ended
    old = time.time() - batch.STALE_PART_SECONDS - 60

    def part(name: str, age: float | None = old) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        if age is not None:
            os.utime(path, (age, age))
        return path

    stale = part(f".out.csv.{dead}.part")
    fresh = part(f".out.csv.{dead + 1}.part", age=None)  # touched just now: maybe writing
    alive = part(f".out.csv.{os.getppid()}.part")  # its process runs
    other = part(f".other.csv.{dead}.part")  # another output's
    odd = part(".out.csv.notapid.part")
    huge = part(".out.csv.99999999999999999999.part")
    link = tmp_path / f".out.csv.{dead + 2}.part"
    link.symlink_to(other)
    assign_file(sample_router, src, out, crs="wgs84")
    assert out.exists() and not stale.exists()
    assert all(p.exists() for p in (fresh, alive, other, odd, huge))
    assert link.is_symlink()


def test_point_files_are_numbered_by_feature(sample_router, tmp_path):
    import json

    features = [
        {"type": "Feature", "properties": {"编号": f"P{i}"},
         "geometry": {"type": "Point", "coordinates": xy}}
        for i, xy in enumerate([[120.86, 32.01], [200.0, 95.0], [120.6, 32.1]], start=1)
    ]
    src = tmp_path / "points.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    whole = assign(sample_router, read_rows(src)).table
    out = tmp_path / "points_out.csv"
    summary = assign_file(sample_router, src, out, chunk_rows=2)
    assert out.read_bytes() == spreadsheet.csv_bytes(whole)
    assert [b.where for b in summary.bad_rows] == ["第 2 个要素"]


def test_encoding_is_found_as_pythons_decoders_find_it(tmp_path, monkeypatch):
    """The reader tells UTF-8 from GBK reading the file in blocks: on random texts and random
    damage, with blocks of a few bytes (characters cut in two), it answers what decoding the
    whole file with Python's codecs answers (encoding, blank lines before the header, line
    count). A file arrow reads is checked by arrow's reader itself
    (test_arrow_reads_a_csv_as_pandas_does)."""
    import codecs
    import random

    from grids import batch

    def by_codecs(path: Path):
        for enc in ("utf-8-sig", "gb18030"):
            try:
                raw = path.read_bytes()
                codecs.decode(raw, enc)
            except UnicodeDecodeError:
                continue
            blank = raw[: len(raw) - len(raw.lstrip(b"\r\n"))]
            return enc, blank.count(b"\n"), raw.count(b"\n")
        return None

    rng = random.Random(3)
    samples = [b"", b"\n\n", b"\r\n\r\na,b\n1,2", "\ufeff经度,纬度\n1,2".encode(),
               "经度,纬度\n".encode("gbk"), b"\xed\xa0\x80", b"\xc0\xaf", b"a\xff",
               b"\xf0\x9f\x98"]
    for _ in range(150):
        text = "".join(rng.choice(["a", "经", "😀", "\n", "\r", ",", '"', "é"])
                       for _ in range(rng.randint(0, 40)))
        raw = text.encode(rng.choice(["utf-8", "gb18030"]))
        if raw and rng.random() < 0.3:
            k = rng.randrange(len(raw))
            raw = raw[:k] + bytes([rng.randrange(256)]) + raw[k + 1:]
        samples.append(raw)
    src = tmp_path / "enc.csv"
    seen = set()
    for block in (1, 3, 5, 1 << 20):
        monkeypatch.setattr(batch, "_BLOCK", block)
        for raw in samples:
            src.write_bytes(raw)
            source = batch._Source(src)
            try:
                found = (source._csv_encoding(), batch._blank_lines(src), source.lines_hint)
            except BatchInputError:
                found = None
            assert found == by_codecs(src), (block, raw)
            seen.add(found and found[0])
    assert seen == {"utf-8-sig", "gb18030", None}  # each answer was met


def test_reader_skips_leading_blank_lines_and_keeps_line_numbers(tmp_path):
    src = tmp_path / "lead.csv"
    src.write_text("\n\nid,lon,lat\nA,120.6,32.1\n\nB,x,32.1\n", encoding="utf-8")
    (chunk,) = list(iter_rows(src))
    assert list(chunk.columns) == ["id", "lon", "lat"]
    assert list(chunk["id"]) == ["A", "B"] and list(chunk.index) == [4, 6]


def test_page_refuses_what_it_cannot_hold(sample_router, monkeypatch):
    from ui import batch as page

    assert MAX_UPLOAD_BYTES == 50 * 2**20 and MAX_ROWS_INTERACTIVE == 100_000
    config = (Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text()
    assert f"maxUploadSize = {MAX_UPLOAD_BYTES // 2**20}\n" in config
    with pytest.raises(BatchInputError, match="gridmap assign") as exc:
        page.run(sample_router, "大.csv", b"x" * (MAX_UPLOAD_BYTES + 1), "wgs84")
    assert "50 MB" in str(exc.value)
    monkeypatch.setattr(page, "MAX_ROWS_INTERACTIVE", 3)
    rows = "编号,经度,纬度\n" + "".join(f"{i},120.6,32.1\n" for i in range(4))
    with pytest.raises(BatchInputError, match=r"超过 3 行.*gridmap assign"):
        page.run(sample_router, "多.csv", rows.encode(), "wgs84")
    ok = page.run(sample_router, "少.csv", rows[: rows.index("3,")].encode(), "wgs84")
    assert len(ok.result.table) == 3


# -- memory ------------------------------------------------------------------------------------
# Peak RSS of `gridmap assign` on the sample store, CSV in: before streaming 0.79 GB for 150,000
# rows to .csv and 2.0 GB to .xlsx (about 3.8 and 12 KB a row on top of ~0.2 GB of interpreter,
# libraries and layers); streaming 0.33 GB to .csv and 0.34 GB to .xlsx, the same for 300,000
# rows. Since then the face raster, the kept answers of its faces, two chunks read ahead and the
# direct-write buffers (grids/batch.py, layers/direct_io.py) are held too: 0.42–0.49 GB to .csv
# on a quiet machine, 0.53 GB once under the whole suite's load, and 0.53 GB for 300,000 rows
# (bench/bench_assign_memory.py). The bound sits between that and holding the file whole; the
# .xlsx case writes 60,000 rows (two chunks, 0.9 GB held whole), as writing Excel is the slow
# part of the suite's budget.
MEMORY_ROWS = {".csv": 150_000, ".xlsx": 60_000}
MEMORY_BOUND_MB = 640

# Run in a fresh interpreter: RUSAGE_CHILDREN is the largest of all children so far.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-2000:])\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "done.stdout.strip())\n"
)


def peak_rss_mb(command: list[str]) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True,
                          text=True, timeout=600, check=True)
    code, kb, stdout = done.stdout.split(" ", 2)
    assert code == "0", done.stderr
    return int(kb) / 1024, stdout


def big_csv(path: Path, n: int) -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({
        "编号": np.char.add("TS", np.arange(n).astype(str)),
        "举报内容": rng.choice(["烟囱冒黑烟", "河道发黑发臭", "夜间噪声扰民"], n),
        "经度": np.round(rng.uniform(BOX[0], BOX[2], n), 6).astype(str),
        "纬度": np.round(rng.uniform(BOX[1], BOX[3], n), 6).astype(str),
    })
    frame.loc[::997, "经度"] = "不是数字"
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_assign_memory_does_not_grow_with_rows(sample_store, tmp_path_factory, suffix):
    base = tmp_path_factory.mktemp("memory")
    rows = MEMORY_ROWS[suffix]
    src = base / "big.csv"
    big_csv(src, rows)
    out = base / f"big_out{suffix}"
    mb, stdout = peak_rss_mb([gridmap_exe(), "--store", str(sample_store), "assign", str(src),
                              "--out", str(out), "--crs", "wgs84"])
    unreadable = len(range(0, rows, 997))  # big_csv's "不是数字"
    assert f"共 {rows} 行" in stdout and f"无法分派 {unreadable}" in stdout
    assert out.stat().st_size > 1_000_000
    assert mb < MEMORY_BOUND_MB, f"gridmap assign to {suffix} peaked at {mb:.0f} MB"


CSV_SHAPES = {
    "plain": "id,lon,lat\nA,120.6,32.1\nB,120.7,32.2\n",
    "bom and CRLF": "\ufeffid,lon,lat\r\nA,120.6,32.1\r\nB,120.7,32.2\r\n",
    "blank lines before and between": "\n\r\nid,lon,lat\nA,120.6,32.1\n\n\nB,x,32.1\n",
    "a line break inside quotes":
        'id,note,lon,lat\nA,"烟囱\n冒黑烟",120.6,32.1\nB,"x,""y""",120.7,32\n',
    "spaces around cells": "id , lon,lat\n  A ,\t120.6 , 32.1\n\"  B\"  ,120.7,32.2\n",
    "a short row": "id,lon,lat,note\nA,120.6,32.1\nB,120.7,32.2,x\n",
    "a long row": "id,lon,lat\nA,120.6,32.1,extra\nB,120.7,32.2\n",
    "a repeated header": "id,lon,id\nA,120.6,x\n",
    "an empty header name": "id,,lat\nA,120.6,32.1\n",
    "a broken quote": 'id,lon,lat\n"A,120.6,32.1\nB,120.7,32.2\n',
    "no final line break": "id,lon,lat\nA,120.6,32.1",
    "a header alone": "id,lon,lat\n",
    "Mac line ends": "id,lon,lat\rA,120.6,32.1\rB,120.7,32.2\r",
}


@pytest.mark.parametrize("shape", list(CSV_SHAPES))
@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_arrow_reads_a_csv_as_pandas_does(tmp_path, monkeypatch, shape, chunk_rows):
    """The CSV fast path (arrow's reader, batch._Source._arrow_csv) gives the chunks pandas'
    reader gives — cells, headers, line numbers, chunk by chunk — or the same error, for the
    shapes real files come in (or steps aside for pandas where the two would differ)."""
    from grids import batch

    src = tmp_path / "in.csv"
    src.write_bytes(CSV_SHAPES[shape].encode("utf-8"))

    def read() -> list[pd.DataFrame] | str:
        try:
            return list(iter_rows(src, chunk_rows=chunk_rows))
        except BatchInputError as exc:
            return f"error: {exc}"

    fast = read()
    monkeypatch.setattr(batch._Source, "_arrow_csv", lambda self, lead: None)
    reference = read()
    if isinstance(reference, str):
        assert fast == reference
        return
    assert not isinstance(fast, str), fast
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference, strict=True):
        pd.testing.assert_frame_equal(ours, theirs)


def test_arrow_fast_path_is_taken_for_a_plain_file(tmp_path):
    from grids import batch

    src = tmp_path / "in.csv"
    src.write_text(CSV_SHAPES["plain"], encoding="utf-8")
    source = batch._Source(src, 1000)
    assert source._arrow_csv(batch._blank_lines(src)) is not None
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("编号,经度,纬度\n甲,120.6,32.1\n".encode("gbk"))
    source = batch._Source(gbk, 1000)
    assert source._arrow_csv(0) is None  # arrow's reader refuses the bytes that are not UTF-8
    assert source._csv_encoding() == "gb18030"  # so pandas reads, as GBK


def test_a_file_opened_ahead_is_routed_and_refused_as_a_path_is(sample_router, tmp_path):
    """`gridmap assign` opens its file before reading the layers (OpenedFile: the file is checked
    through in a background thread meanwhile): the same output as from a path, and the same
    refusals, raised in the caller's thread by assign_file — a missing file at once."""
    from grids.batch import OpenedFile

    src = files(tmp_path, mixed_rows(1500))["utf8"]
    by_path, ahead = tmp_path / "a.csv", tmp_path / "b.csv"
    assign_file(sample_router, src, by_path, crs="wgs84", chunk_rows=CHUNK)
    summary = assign_file(sample_router, OpenedFile(src, CHUNK), ahead, crs="wgs84")
    assert ahead.read_bytes() == by_path.read_bytes() and summary.total == 1500

    broken = tmp_path / "坏.csv"
    broken.write_bytes(b"\xff\xfe\x00\x01" * 1000)  # neither UTF-8 nor GBK
    opened = OpenedFile(broken)
    with pytest.raises(BatchInputError, match="无法判断文字编码"):
        assign_file(sample_router, opened, tmp_path / "c.csv", crs="wgs84")
    assert not (tmp_path / "c.csv").exists()
    with pytest.raises(BatchInputError, match="文件不存在"):
        OpenedFile(tmp_path / "无.csv")


def test_a_file_with_answer_columns_of_its_own_is_refused(sample_router, tmp_path):
    """A result file sent again (machine headers: route_status …) would have its old answer
    columns mistaken for the new ones — the Chinese view even dropped one. It is refused by
    name, by the command and by the page's and the API's path alike, and nothing is written;
    a column named like a Chinese header (网格员) is the file's own and stays."""
    src = tmp_path / "上次结果.csv"
    src.write_text("编号,route_status,route_error,经度,纬度\nA1,ok,,120.86,32.01\n",
                   encoding="utf-8")
    out = tmp_path / "out.csv"
    for headers in ("zh", "machine"):
        with pytest.raises(BatchInputError, match="route_status、route_error"):
            assign_file(sample_router, src, out, crs="wgs84", headers=headers)
    assert not out.exists()
    with pytest.raises(BatchInputError, match="同名的列"):
        assign(sample_router, read_rows(src), crs="wgs84")

    own = tmp_path / "自有列.csv"
    own.write_text("编号,网格员,经度,纬度\nA1,张三,120.86,32.01\n", encoding="utf-8")
    assign_file(sample_router, own, out, crs="wgs84", headers="zh")
    header = out.read_text(encoding="utf-8-sig").splitlines()[0]
    assert '"网格员"' in header and '"网格员（分派）"' in header


def test_the_output_cannot_be_the_input(sample_router, tmp_path):
    src = tmp_path / "投诉.csv"
    src.write_text("编号,经度,纬度\n1,120.8,32.0\n", encoding="utf-8")
    before = src.read_bytes()
    with pytest.raises(BatchInputError, match="输出文件不能与输入文件相同"):
        assign_file(sample_router, src, tmp_path / "." / "投诉.csv", crs="wgs84")
    assert src.read_bytes() == before
    with pytest.raises(BatchInputError, match="文件或目录不存在"):
        assign_file(sample_router, src, tmp_path / "没有" / "结果.csv", crs="wgs84")


def test_a_rules_table_without_its_columns_is_named(tmp_path):
    from grids.checks import RulesError, load_rules

    bad = tmp_path / "规则.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(RulesError, match="缺少列：check、kind、severity"):
        load_rules(bad)
    with pytest.raises(RulesError, match="文件或目录不存在"):
        load_rules(tmp_path / "无.csv")

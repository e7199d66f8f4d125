"""Hostile import files: every one refused with a Chinese message naming the file, the record
and the field, nothing written, nothing left behind; and the odd-but-valid ones accepted."""

from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from shapely import affinity
from shapely.geometry import box

from layers import importer
from layers.importer import copy_member, import_path, remove_stale_tempdirs
from layers.problems import ImportFailed, Problem
from layers.store import StoreError
from tests import world
from tests.conftest import STORES
from tests.test_import import entities_frame


@pytest.fixture(params=STORES)
def store(request, new_store, world_dir):
    s = new_store(request.param)
    import_path(s, world_dir)
    return s


@pytest.fixture
def gpkg(new_store, world_dir):
    s = new_store("gpkg")
    import_path(s, world_dir)
    return s


@pytest.fixture
def files(tmp_path) -> Path:
    return world.write(tmp_path / "files")


@pytest.fixture
def only(tmp_path) -> Path:
    """A directory for a partial import (one or two layers)."""
    path = tmp_path / "only"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch) -> Path:
    """Staging directories go to a directory of this test, so leftovers can be counted."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def state(store) -> tuple:
    snap = store.snapshot()
    return (
        [g.id for g in store.generations()],
        snap.counts(),
        {name: tuple(df.iloc[:, 1].astype(str)) for name, df in snap.layers.items()},
    )


def refused(store, path, **kw) -> str:
    """The import is refused, in Chinese, and the store is exactly as before."""
    before = state(store)
    with pytest.raises(ImportFailed) as err:
        import_path(store, path, **kw)
    store.clear_cache()
    assert state(store) == before
    message = str(err.value)
    assert message.startswith("导入失败，数据库未作任何改动")
    return message


def zipped(tmp_path: Path, members: dict[str, bytes], name: str = "in.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def world_members(files: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(files.iterdir())}


def declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a zip declares for `member` (central directory and local
    header), as a crafted archive would."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_len]) == member.encode():
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


# -- zip archives ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "member",
    ["../evil.csv", "/tmp/evil.csv", "a/../../evil.csv", "..\\evil.csv", "C:\\evil.csv"],
)
def test_zip_member_outside_the_staging_directory_is_refused(gpkg, files, tmp_path, member):
    archive = zipped(tmp_path, {**world_members(files), member: b"x"})
    message = refused(gpkg, archive)
    assert "in.zip" in message and "解压目录之外" in message and "evil.csv" in message
    assert not list(tmp_path.rglob("evil.csv"))


def test_zip_symlink_member_is_refused(gpkg, files, tmp_path):
    archive = zipped(tmp_path, world_members(files))
    with zipfile.ZipFile(archive, "a") as zf:
        link = zipfile.ZipInfo("parks.geojson.lnk")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    message = refused(gpkg, archive)
    assert "parks.geojson.lnk" in message and "符号链接" in message


def test_zip_member_declared_too_large_is_refused_before_extracting(
    gpkg, files, tmp_path, monkeypatch
):
    archive = zipped(tmp_path, {**world_members(files), "big.bin": b"x" * 1000})
    declare_size(archive, "big.bin", 600 << 20)
    monkeypatch.setattr(importer, "copy_member", _never_called)
    message = refused(gpkg, archive)
    assert "big.bin" in message and "512 MiB" in message


def test_zip_declared_total_over_the_limit_is_refused(gpkg, files, tmp_path, monkeypatch):
    members = {f"part{i}.bin": b"x" * 1000 for i in range(5)}
    archive = zipped(tmp_path, {**world_members(files), **members})
    for name in members:
        declare_size(archive, name, 500 << 20)  # each under the member limit, 2.5 GiB in all
    monkeypatch.setattr(importer, "copy_member", _never_called)
    message = refused(gpkg, archive)
    assert "总大小" in message and "2048 MiB" in message


def _never_called(*args, **kwargs):
    raise AssertionError("extracted although the central directory already said no")


def test_zip_bomb_ratio_is_refused(gpkg, files, tmp_path):
    archive = zipped(tmp_path, {**world_members(files), "readme.txt": bytes(3 << 20)})
    message = refused(gpkg, archive)
    assert "readme.txt" in message and "压缩比" in message and "压缩炸弹" in message


def test_copy_member_stops_when_the_data_outgrows_its_declared_size():
    out = io.BytesIO()
    with pytest.raises(Exception, match="超过压缩包声明"):
        copy_member(io.BytesIO(bytes(3 << 20)), out, 1 << 20, 1 << 30)
    assert len(out.getvalue()) <= 1 << 20
    out = io.BytesIO()
    assert copy_member(io.BytesIO(b"abc"), out, 3, 1 << 30) == 3 and out.getvalue() == b"abc"


def test_zip_that_declares_less_than_it_holds_is_refused(gpkg, files, tmp_path):
    noise = np.random.default_rng(0).bytes(2 << 20)
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in world_members(files).items():
            zf.writestr(name, data)
        zf.writestr("noise.bin", noise)
    declare_size(path, "noise.bin", 1000)
    message = refused(gpkg, path)
    assert "noise.bin" in message


@pytest.mark.parametrize(
    "members",
    [
        {"workers.csv": b"a", "./workers.csv": b"b"},  # two members, one file
        {"workers.csv": b"a", "workers.csv/": b""},  # a file and a directory of one name
        {"名" * 300 + ".csv": b"a"},  # longer than the file system allows
    ],
)
def test_zip_members_that_cannot_be_extracted_are_refused(gpkg, tmp_path, members):
    message = refused(gpkg, zipped(tmp_path, members))
    assert "in.zip" in message


def test_zip_and_directory_without_layer_files_are_refused(store, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "说明.txt").write_text("这不是图层")
    (folder / "park.geojson").write_text("{}")  # not a layer name
    message = refused(store, folder)
    assert "没有找到任何图层文件" in message and "grids.geojson" in message
    archive = zipped(tmp_path, {"说明.txt": "这不是图层".encode()})
    assert "没有找到任何图层文件" in refused(store, archive)
    assert "没有找到任何图层文件" in refused(store, zipped(tmp_path, {}, "empty.zip"))


def test_staging_directory_is_removed_after_failure_and_success(
    gpkg, files, tmp_path, private_tempdir
):
    good = zipped(tmp_path, world_members(files), "good.zip")
    import_path(gpkg, good)
    broken = world_members(files)
    broken["grids.geojson"] = b'{"type": "FeatureCollection", "features": [{"type":'
    refused(gpkg, zipped(tmp_path, broken, "bad.zip"))
    assert list(private_tempdir.iterdir()) == []


def test_stale_staging_directories_of_killed_imports_are_removed(gpkg, files, private_tempdir):
    old = time.time() - 2 * 3600
    dead = private_tempdir / "gridmap-import-999999999-abcd"  # no such process
    unnamed = private_tempdir / "gridmap-import-k3j4h5"  # as tempfile names them
    alive = private_tempdir / f"gridmap-import-{os.getpid()}-efgh"  # an import in this process
    fresh = private_tempdir / "gridmap-import-999999998-ijkl"
    other = private_tempdir / "something-else"
    for path in (dead, unnamed, alive, fresh, other):
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "grids.geojson").write_text("{}")
    for path in (dead, unnamed, alive, other):
        os.utime(path, (old, old))
    import_path(gpkg, files)
    assert sorted(p.name for p in private_tempdir.iterdir()) == sorted(
        p.name for p in (alive, fresh, other)
    )
    assert remove_stale_tempdirs(time.time() + 2 * 3600) == [fresh]


# -- bureaus and grids ----------------------------------------------------------------------------
def test_bureau_parent_cycles_are_refused(store, only):
    bureaus = world.layers()["bureaus"]
    bureaus.loc[bureaus["code"] == "B-A", "parent_code"] = "B-A-1"  # B-A-1's parent is B-A
    bureaus.loc[bureaus["code"] == "B-B", "parent_code"] = "B-B"
    bureaus.to_csv(only / "bureaus.csv", index=False)
    message = refused(store, only)
    assert "bureaus.csv，第 3 行，字段 parent_code：上级机构形成循环：B-A → B-A-1 → B-A" in message
    assert "bureaus.csv，第 4 行，字段 parent_code：上级机构不能是自身（B-B）" in message


def test_overlapping_comprehensive_grids_are_refused(store, only):
    grids = world.layers()["grids"]
    grids.loc[0, "geometry"] = grids.loc[0, "geometry"].buffer(0.002, join_style="mitre")
    grids.to_file(only / "grids.geojson", driver="GeoJSON")
    message = refused(store, only)
    assert (
        "grids.geojson，第 1 个要素，字段 geometry：综合网格 320901001001001 与综合网格" in message
    )
    assert "平方米" in message


def test_slivers_and_park_or_dedicated_grids_over_comprehensive_ones_are_accepted(gpkg, only):
    grids = world.layers()["grids"]
    assert set(grids["kind"]) == {"comprehensive", "park", "dedicated"}  # they overlap
    # Digitising noise: the south half of A2 reaches 1 cm into the north half.
    south = grids.index[grids["code"] == "320901002001001"][0]
    grids.loc[south, "geometry"] = grids.loc[south, "geometry"].union(
        box(120.6, 32.1, 120.7, 32.1000001)
    )
    grids.to_file(only / "grids.geojson", driver="GeoJSON")
    import_path(gpkg, only)
    grids.loc[south, "geometry"] = affinity.translate(grids.loc[south, "geometry"], yoff=0.01)
    grids.to_file(only / "grids.geojson", driver="GeoJSON")
    assert "重叠" in refused(gpkg, only)


# -- text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\u202e", "\x85", "\n", "\u2066", "\x7f"])
def test_control_characters_are_refused_in_every_text_field(gpkg, only, char):
    workers = world.layers()["workers"]
    workers.loc[0, "name"] = f"网格{char}员"
    workers.to_csv(only / "workers.csv", index=False)
    message = refused(gpkg, only)
    assert f"workers.csv，第 2 行，字段 name：含有不允许的控制字符 U+{ord(char):04X}" in message
    # The message itself is safe to print: the character is escaped, one line per problem.
    assert char not in message.replace("\n", "") and len(message.splitlines()) == 2

    workers = world.layers()["workers"].assign(备注="")
    workers.loc[3, "备注"] = f"备{char}注"
    workers.to_csv(only / "workers.csv", index=False)
    assert "第 5 行，字段 备注：含有不允许的控制字符" in refused(gpkg, only)

    workers = world.layers()["workers"].assign(**{f"备{char}注": "x"})
    workers.to_csv(only / "workers.csv", index=False)
    assert "字段名含有不允许的控制字符" in refused(gpkg, only)


def test_control_characters_in_geojson_properties_are_refused(gpkg, only):
    parks = json.loads(world.layers()["parks"].to_json())
    parks["features"][1]["properties"]["name"] = "甲化工\u202e园区"
    (only / "parks.geojson").write_text(json.dumps(parks))
    message = refused(gpkg, only)
    assert "parks.geojson，第 2 个要素，字段 name：含有不允许的控制字符 U+202E" in message


def test_overlong_names_and_free_text_are_refused(gpkg, only):
    workers = world.layers()["workers"].assign(备注="")
    workers.loc[0, "name"] = "名" * 200
    workers.loc[1, "备注"] = "备" * 2000
    workers.to_csv(only / "workers.csv", index=False)
    import_path(gpkg, only)  # at the limits
    workers.loc[0, "name"] = "名" * 201
    workers.loc[1, "备注"] = "备" * 2001
    workers.loc[2, "name"] = "名" * (1 << 20)
    workers.to_csv(only / "workers.csv", index=False)
    message = refused(gpkg, only)
    assert "第 2 行，字段 name：过长：201 个字符，上限 200 个字符" in message
    assert "第 3 行，字段 备注：过长：2,001 个字符，上限 2000 个字符" in message
    assert "第 4 行，字段 name：过长：1,048,576 个字符" in message
    assert len(message) < 5000  # a 1 MB value is not echoed back


@pytest.mark.parametrize(
    "phone",
    ["13812345678", "138-1234-5678", "+86 13812345678", "0513-12345678", "051312345678",
     "(0513)12345678", "0513-12345678-123", "0513-12345678转8", "021-1234567"],
)  # fmt: skip
def test_phone_numbers_that_are_phone_numbers_are_accepted(gpkg, only, phone):
    workers = world.layers()["workers"]
    workers.loc[0, "phone"] = phone
    workers.to_csv(only / "workers.csv", index=False)
    import_path(gpkg, only)
    assert phone in set(gpkg.snapshot()["workers"]["phone"])


@pytest.mark.parametrize(
    "phone,reason",
    [
        ("abc", "格式无效"),
        ("<script>alert(1)</script>", "格式无效"),
        ("138-1234-567", "格式无效"),
        ("１３８１２３４５６７８", "格式无效"),  # full-width digits
        ("٠٥١٣١٢٣٤٥٦٧٨", "格式无效"),  # Arabic-Indic digits
        ("13812345678/13912345678", "格式无效"),
        ("1" * (1 << 20), "过长"),
        ("", "必填字段为空"),
    ],
)
def test_phone_numbers_that_are_not_are_refused(gpkg, only, phone, reason):
    workers = world.layers()["workers"]
    workers.loc[2, "phone"] = phone
    workers.to_csv(only / "workers.csv", index=False)
    message = refused(gpkg, only)
    assert "workers.csv，第 4 行，字段 phone：" in message and reason in message


# -- tables and attributes ------------------------------------------------------------------------
def test_blank_extra_columns_give_empty_attrs_that_read_back(store, files):
    ents = entities_frame(4).assign(备注="", 地址="")
    ents.loc[2, "备注"] = "夜间排放"
    lines = ents.to_csv(index=False).splitlines()
    lines[4] = lines[4].rsplit(",", 2)[0]  # a row that stops before the blank extra columns
    (files / "entities.csv").write_text("\n".join(lines) + "\n")
    import_path(store, files)
    store.clear_cache()
    stored = store.snapshot()["entities"].set_index("id")["attrs"]
    assert stored.loc[ents.loc[2, "id"]] == {"备注": "夜间排放"}
    for code in ents["id"].drop(2):
        assert stored.loc[code] == {}


def test_nan_inf_and_missing_dates_are_never_stored_in_attrs(store, only):
    ents = entities_frame(3)
    features = [
        {
            "type": "Feature",
            "properties": {
                "id": row.id,
                "name": row.name,
                "industry": row.industry,
                "permit_class": row.permit_class,
                "检查日期": "2026-03-01" if i == 0 else None,
                "排放量": [1.5, math.inf, None][i],
            },
            "geometry": {"type": "Point", "coordinates": [row.lon, row.lat]},
        }
        for i, row in enumerate(ents.itertuples())
    ]
    doc = {"type": "FeatureCollection", "features": features}
    (only / "entities.geojson").write_text(json.dumps(doc, ensure_ascii=False))
    import_path(store, only)
    store.clear_cache()
    attrs = store.snapshot()["entities"].set_index("id")["attrs"]
    assert attrs.loc[ents.loc[0, "id"]] == {"检查日期": "2026-03-01T00:00:00", "排放量": 1.5}
    assert attrs.loc[ents.loc[1, "id"]] == {"排放量": "inf"}
    assert attrs.loc[ents.loc[2, "id"]] == {}
    for value in attrs:
        json.dumps(value, allow_nan=False)


def test_rows_with_more_fields_than_the_header_are_refused(gpkg, only):
    text = world.layers()["workers"].to_csv(index=False).splitlines()
    every = [text[0]] + [line + ",多余" for line in text[1:]]  # pandas would shift every column
    (only / "workers.csv").write_text("\n".join(every) + "\n")
    assert "workers.csv：数据行的字段比表头多一个" in refused(gpkg, only)
    one = [*text[:3], text[3] + ",多余", *text[4:]]
    (only / "workers.csv").write_text("\n".join(one) + "\n")
    assert "workers.csv，第 4 行：有 6 个字段，表头只有 5 个" in refused(gpkg, only)


def test_duplicate_and_ambiguous_headers_are_refused(gpkg, only):
    (only / "workers.csv").write_text(
        world.layers()["workers"].assign(**{"name ": "x"}).to_csv(index=False)
    )
    assert "workers.csv，字段 name：字段名重复：name" in refused(gpkg, only)
    workers = world.layers()["workers"].rename(columns={"name": "Name"}).assign(NAME="x")
    workers.to_csv(only / "workers.csv", index=False)
    assert "workers.csv，字段 name：有多个字段都可作为 name：Name、NAME" in refused(gpkg, only)
    workers.assign(name="网格员").to_csv(only / "workers.csv", index=False)
    import_path(gpkg, only)  # the exact name wins; the others are extra attributes
    assert set(gpkg.snapshot()["workers"]["name"]) == {"网格员"}


def test_precedence_rank_must_be_ascii_digits(gpkg, only):
    from grids.precedence import default_frame

    rules = default_frame()
    rules["rank"] = rules["rank"].astype(str)
    rules.loc[1, "rank"] = "²"
    rules.to_csv(only / "precedence.csv", index=False)
    assert "precedence.csv，第 3 行，字段 rank：rank 必须是整数" in refused(gpkg, only)


def test_unknown_crs_is_named_even_when_no_coordinate_is_usable(gpkg, only):
    ents = entities_frame(2).astype(str).assign(crs="EPSG:99999", lon="abc")
    ents.to_csv(only / "entities.csv", index=False)
    message = refused(gpkg, only)
    assert "entities.csv，第 2 行，字段 crs：无法识别的坐标系" in message
    assert "坐标不是有限的数字" in message


@pytest.mark.parametrize(
    "name,header",
    [
        ("entities.csv", "id,name,lon,lat,industry,permit_class,crs"),
        ("workers.csv", "id,name,phone,grid_code,role"),
    ],
)
def test_empty_layer_files_are_refused(gpkg, only, name, header):
    (only / name).write_text(header + "\n\n")
    assert f"{name}：文件中没有任何数据行" in refused(gpkg, only)


def test_nan_and_infinite_coordinates_are_refused(gpkg, only):
    grids = json.loads(world.layers()["grids"].to_json())
    grids["features"][2]["geometry"]["coordinates"][0][1][0] = math.inf
    grids["features"][4]["geometry"]["coordinates"][0][2][1] = math.nan
    (only / "grids.geojson").write_text(json.dumps(grids))
    message = refused(gpkg, only)
    assert "grids.geojson，第 3 个要素：坐标含有 NaN 或无穷大" in message
    assert "grids.geojson，第 5 个要素：坐标含有 NaN 或无穷大" in message


def test_z_coordinates_are_dropped(store, only):
    grids = json.loads(world.layers()["grids"].to_json())
    for feature in grids["features"]:
        feature["geometry"]["coordinates"] = _with_z(feature["geometry"]["coordinates"])
    (only / "grids.geojson").write_text(json.dumps(grids))
    import_path(store, only)
    store.clear_cache()
    assert not store.snapshot()["grids"].geometry.has_z.any()


def _with_z(coords):
    if coords and isinstance(coords[0], (int, float)):
        return [*coords[:2], 5.0]
    return [_with_z(c) for c in coords]


def test_a_store_error_at_commit_is_an_import_failure(gpkg, files):
    class Failing:
        def __getattr__(self, name):
            return getattr(gpkg, name)

        def commit_layers(self, *args, **kwargs):
            raise StoreError("写入 PostGIS 失败：模拟")

    with pytest.raises(ImportFailed, match="写入数据库失败，已全部回滚：写入 PostGIS 失败：模拟"):
        import_path(Failing(), files)


def test_problem_text_is_escaped_and_cut():
    problem = Problem("a\x1b[2J.csv", "x" * 2000, "第 1 行", "na\u202eme")
    text = str(problem)
    assert "\x1b" not in text and "\u202e" not in text
    assert "a\\x1b[2J.csv" in text and "na\\u202eme" in text
    assert len(text) < 700


def test_a_header_of_a_million_fields_is_refused_at_once(tmp_path):
    """pandas took a minute and 2 GB to read it, and the duplicate check was quadratic: the
    header is counted from the file's first MiB before any reader parses it."""
    from grids.batch import BatchInputError, iter_rows
    from layers.readers import MAX_COLUMNS, ReadError, read_table

    wide = tmp_path / "bureaus.csv"
    wide.write_text("code,name," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n"
                    + "a,b," + ",".join("1" for _ in range(1_000_000)) + "\n")
    with pytest.raises(ReadError) as err:
        read_table(wide, "bureaus.csv", None)
    assert "字段过多" in str(err.value) and f"至多 {MAX_COLUMNS:,} 个" in str(err.value)
    with pytest.raises(BatchInputError, match="字段过多"):
        next(iter_rows(wide))
    narrow = tmp_path / "ok.csv"
    narrow.write_text(",".join(f"c{i}" for i in range(MAX_COLUMNS)) + "\n"
                      + ",".join("1" for _ in range(MAX_COLUMNS)) + "\n")
    assert read_table(narrow, "ok.csv", None).frame.shape == (1, MAX_COLUMNS)


def test_unreadable_vector_files_are_explained_in_chinese(gpkg, only):
    (only / "parks.geojson").write_bytes(b"")
    message = refused(gpkg, only)
    assert "parks.geojson：文件是空的（0 字节）" in message and "not recognized" not in message
    (only / "parks.geojson").write_bytes(b"\x00\x01 not geodata at all")
    message = refused(gpkg, only)
    assert "不是可识别的地理数据文件" in message and "GDAL" not in message
    (only / "parks.geojson").unlink()
    world.layers()["townships"].to_file(only / "townships.shp", encoding="GBK")
    message = refused(gpkg, only, encoding="utf-8")  # the wrong encoding named
    assert "按 utf-8 无法解码" in message and "GBK" in message and "codec" not in message

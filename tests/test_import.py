"""Import: every format a government office sends, and every file that must be refused
without touching the store."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Polygon

from grids.routing import Router
from layers.credit_code import generate
from layers.importer import import_path
from layers.problems import ImportFailed
from tests import world
from tests.conftest import STORES


def entities_frame(n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "id": [generate(rng, "320901") for _ in range(n)],
            "name": [f"甲县第{i}化工有限公司" for i in range(n)],
            "lon": np.linspace(120.61, 120.69, n).round(6),
            "lat": np.linspace(32.01, 32.19, n).round(6),
            "industry": ["化工"] * n,
            "permit_class": ["重点管理"] * n,
            "crs": ["wgs84"] * n,
        }
    )


@pytest.fixture
def files(tmp_path) -> Path:
    return world.write(tmp_path / "files")


@pytest.fixture(params=STORES)
def store(request, new_store, world_dir):
    s = new_store(request.param)
    import_path(s, world_dir)
    return s


def state(store) -> tuple:
    """Everything a failed import must leave as it was."""
    snap = store.snapshot()
    return (
        [g.id for g in store.generations()],
        {name: (len(df), tuple(df.iloc[:, 1].astype(str))) for name, df in snap.layers.items()},
    )


def refused(store, path, **kw) -> str:
    before = state(store)
    with pytest.raises(ImportFailed) as err:
        import_path(store, path, **kw)
    store.clear_cache()
    assert state(store) == before
    return str(err.value)


def test_store_is_a_real_geopackage_gdal_can_read(new_store, world_dir):
    store = new_store("gpkg")
    import_path(store, world_dir)
    layers = dict(pyogrio.list_layers(store.path))
    assert layers["counties"] == "MultiPolygon"
    assert layers["entities"] == "Point"
    grids = pyogrio.read_dataframe(store.path, layer="grids")
    assert grids.crs.to_epsg() == 4490
    assert len(grids) == len(world.layers()["grids"])


def test_gbk_shapefile_without_cpg_is_detected(store, files):
    townships = world.layers()["townships"]
    (files / "townships.geojson").unlink()
    townships.to_file(files / "townships.shp", encoding="GBK")
    for extra in files.glob("townships.cpg"):
        extra.unlink()
    dbf = files / "townships.dbf"
    data = bytearray(dbf.read_bytes())
    data[29] = 0  # no language driver id either: only the bytes tell
    dbf.write_bytes(bytes(data))
    assert "甲一镇".encode("gbk") in dbf.read_bytes()
    report = import_path(store, files)
    assert "GBK" in report.files["townships"]
    assert "乙飞地街道" in set(store.snapshot()["townships"]["name"])


def test_gbk_shapefile_with_explicit_encoding(store, files):
    (files / "townships.geojson").unlink()
    world.layers()["townships"].to_file(files / "townships.shp", encoding="GBK")
    import_path(store, files, encoding="gbk")
    assert set(store.snapshot()["townships"]["name"]) >= {"甲一镇", "甲二镇"}


def test_projected_shapefile_is_transformed_and_truncated_fields_are_matched(store, files):
    grids = world.layers()["grids"].to_crs(4549)  # CGCS2000 3-degree GK CM 120E
    (files / "grids.geojson").unlink()
    grids.to_file(files / "grids.shp")  # township_code is cut to 'township_c' by the format
    assert "township_c" in pyogrio.read_info(files / "grids.shp")["fields"]
    import_path(store, files)
    answer = Router(store).route(*world.P["dedicated"])
    assert answer["grid"]["code"] == "320901002800001"


def test_shapefile_without_prj_needs_crs(store, files):
    grids = world.layers()["grids"].to_crs(4549)
    (files / "grids.geojson").unlink()
    grids.to_file(files / "grids.shp")
    (files / "grids.prj").unlink()
    message = refused(store, files)
    assert "grids.shp" in message and "--crs" in message
    refused(store, files, crs="EPSG:99999")
    import_path(store, files, crs="EPSG:4549")
    assert Router(store).route(*world.P["dedicated"])["grid"]["kind"] == "dedicated"


def test_broken_polygon_is_refused_with_feature_and_reason(store, files):
    grids = world.layers()["grids"]
    bowtie = Polygon([(120.61, 32.01), (120.69, 32.09), (120.69, 32.01), (120.61, 32.09)])
    grids.loc[3, "geometry"] = bowtie
    grids.to_file(files / "grids.geojson", driver="GeoJSON")
    message = refused(store, files)
    assert "grids.geojson" in message and "第 4 个要素" in message
    assert "自相交（位置 120.65" in message and "Self-intersection" not in message


def test_wrong_column_names_the_field(store, files):
    parks = world.layers()["parks"].rename(columns={"kind": "type"})
    parks.to_file(files / "parks.geojson", driver="GeoJSON")
    message = refused(store, files)
    assert "parks.geojson" in message and "kind" in message and "type" in message


def test_bad_values_references_and_duplicates(store, files):
    grids = world.layers()["grids"]
    grids.loc[0, "kind"] = "普通"
    grids.loc[1, "township_code"] = "999999999"
    grids.loc[2, "code"] = grids.loc[3, "code"]
    grids.to_file(files / "grids.geojson", driver="GeoJSON")
    message = refused(store, files)
    assert "'普通'" in message
    assert "重复" in message
    # references are checked once values are clean
    grids = world.layers()["grids"]
    grids.loc[1, "township_code"] = "999999999"
    grids.to_file(files / "grids.geojson", driver="GeoJSON")
    assert "999999999" in refused(store, files)


def test_swapped_and_garbage_entity_rows_are_refused_by_row(store, files):
    ents = entities_frame().astype({"lon": object, "lat": object})
    ents.loc[2, ["lon", "lat"]] = ents.loc[2, ["lat", "lon"]].to_numpy()
    ents.loc[4, "lon"] = "abc"
    ents.to_csv(files / "entities.csv", index=False)
    message = refused(store, files)
    assert "第 4 行" in message and "颠倒" in message
    assert "第 6 行" in message and "abc" in message


def test_invalid_credit_code_is_refused(store, files):
    ents = entities_frame()
    ents.loc[1, "id"] = ents.loc[1, "id"][:-1] + ("0" if ents.loc[1, "id"][-1] != "0" else "1")
    ents.to_csv(files / "entities.csv", index=False)
    assert "统一社会信用代码" in refused(store, files)


def test_table_without_crs_is_refused_unless_given(store, files):
    entities_frame().drop(columns="crs").to_csv(files / "entities.csv", index=False)
    assert "坐标系" in refused(store, files)
    import_path(store, files, crs="wgs84")
    assert len(store.snapshot()["entities"]) == 5


def test_gcj02_entities_in_excel_are_converted(store, files):
    from geo.china_offsets import wgs84_to_gcj02

    ents = entities_frame()
    gx, gy = wgs84_to_gcj02(ents["lon"].to_numpy(), ents["lat"].to_numpy())
    ents = ents.assign(lon=gx, lat=gy, crs="gcj02").rename(columns={"lon": "经度", "lat": "纬度"})
    ents.to_excel(files / "entities.xlsx", index=False)
    import_path(store, files)
    stored = store.snapshot()["entities"]
    assert np.allclose(stored.geometry.x, entities_frame()["lon"], atol=1e-7)


class GbkZipInfo(zipfile.ZipInfo):
    """A member name as Chinese Windows zip tools write it: GBK bytes, no UTF-8 flag."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("gbk"), self.flag_bits


def test_geopackage_with_many_layers_and_gbk_zip(store, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    for name, frame in world.layers().items():
        if isinstance(frame, gpd.GeoDataFrame):
            frame.to_file(package / "南通图层.gpkg", layer=name, driver="GPKG")
        else:
            frame.to_csv(package / f"{name}.csv", index=False)
    archive = tmp_path / "layers.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in package.iterdir():
            zf.writestr(GbkZipInfo(f.name), f.read_bytes())
    report = import_path(store, archive)
    assert "南通图层.gpkg:grids" in report.files["grids"]
    assert report.generation.id == 2


def test_partial_import_keeps_other_layers_and_old_generation(store, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    workers = world.layers()["workers"]
    workers.loc[0, "name"] = "新网格员"
    workers.to_csv(only / "workers.csv", index=False)
    report = import_path(store, only)
    assert report.counts == {"workers": len(workers)}
    snap = store.snapshot()
    assert snap.generation.id == 2 and len(snap["grids"]) == len(world.layers()["grids"])
    assert "新网格员" in set(snap["workers"]["name"])
    assert "新网格员" not in set(store.snapshot(1)["workers"]["name"])


def test_dangling_reference_from_stored_layer_is_refused(store, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    grids = world.layers()["grids"].iloc[1:]  # drops a grid that stored workers point at
    grids.to_file(only / "grids.geojson", driver="GeoJSON")
    message = refused(store, only)
    assert "数据库中现有的网格员（workers），编号 " in message
    assert "引用的网格（grids）编码" in message


@pytest.mark.parametrize("kind", STORES)
def test_first_import_must_be_complete(new_store, files, kind):
    (files / "bureaus.csv").unlink()
    s = new_store(kind)
    with pytest.raises(ImportFailed, match="bureaus"):
        import_path(s, files)
    assert s.generations() == []


def test_unrecognised_file_is_reported(store, files):
    shutil.copy(files / "parks.geojson", files / "park.geojson")
    report = import_path(store, files)
    assert any("park.geojson" in w for w in report.warnings)


def test_entity_without_permit_is_kept_and_a_wrong_class_is_refused(store, files):
    ents = entities_frame()
    ents.loc[1, "permit_class"] = ""
    ents.to_csv(files / "entities.csv", index=False)
    import_path(store, files)
    stored = store.snapshot()["entities"].set_index("id")
    assert stored.loc[ents.loc[1, "id"], "permit_class"] == ""
    ents.loc[2, "permit_class"] = "特许经营"
    ents.to_csv(files / "entities.csv", index=False)
    message = refused(store, files)
    assert "特许经营" in message and "permit_class" in message


def test_kml_parks_with_their_name_element(store, files):
    """KML keeps the name in its <name> element (GDAL: Name): matched case-insensitively."""
    (files / "parks.geojson").unlink()
    world.layers()["parks"].to_file(files / "parks.kml", driver="KML")
    report = import_path(store, files)
    assert "parks.kml" in report.files["parks"]
    parks = store.snapshot()["parks"].set_index("code")
    assert parks.loc["P2", "name"] == "甲化工园区" and parks.loc["P2", "kind"] == "chemical_park"
    assert Router(store).route(*world.P["chemical"])["park"]["code"] == "P2"


def test_every_problem_in_one_run_numbered_by_file_line(tmp_path, new_store):
    """A bad value in one file and an unknown reference in another are both reported in the
    same run; a table's rows are named by their line in the file."""
    store = new_store("gpkg")
    d = world.write(tmp_path / "files")
    workers = pd.read_csv(d / "workers.csv", dtype=str)
    workers.loc[2, "grid_code"] = "NO-SUCH-GRID"  # file line 4
    workers.to_csv(d / "workers.csv", index=False)
    bureaus = pd.read_csv(d / "bureaus.csv", dtype=str, keep_default_na=False)
    bureaus.loc[1, "level"] = "galactic"  # an unknown level: a value problem
    bureaus.to_csv(d / "bureaus.csv", index=False)
    with pytest.raises(ImportFailed) as failed:
        import_path(store, d)
    text = str(failed.value)
    assert "NO-SUCH-GRID" in text and "galactic" in text  # one run, both problems
    ref = next(p for p in failed.value.problems if "NO-SUCH-GRID" in str(p))
    assert "第 4 行" in str(ref)  # the file line, like every other problem of a table
    assert store.generations() == []

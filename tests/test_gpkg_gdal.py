"""The GeoPackage store as planners' GIS tools open it, proven with GDAL itself (Debian's
python3-gdal and gdal-bin, installed by scripts/test.sh): GDAL's validate_gpkg.py finds no
error in the stores we write (the sample, an imported world, an older file upgraded in place);
a store GDAL has touched — its own spatial index with triggers calling ST_IsEmpty, a write —
accepts the next import; our R-tree and SQL functions agree with GDAL's."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest
import shapely
from shapely.geometry import box

from grids.access import Actor
from grids.service import Gridmap
from layers import gpkg
from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.signin import PASSWORD, add_world_users

SYSTEM_PYTHON = "/usr/bin/python3"
FEATURE_TABLES = ("counties", "townships", "parks", "grids", "sea_areas", "jurisdictions",
                  "entities", "incidents")


def gdal_python(code: str, *args: str) -> str:
    """Run `code` with the system Python and its GDAL bindings (the venv has none); returns
    its standard output. GDAL missing is a failure: the test command installs it."""
    out = subprocess.run([SYSTEM_PYTHON, "-c", textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=300)
    if "No module named 'osgeo" in out.stderr:
        pytest.fail("GDAL's Python bindings are missing: run scripts/test.sh (it installs "
                    "Debian's python3-gdal and gdal-bin)")
    assert out.returncode == 0, out.stderr
    return out.stdout


def validate_gpkg(path: Path) -> list[str]:
    """GDAL's validator (osgeo_utils/samples/validate_gpkg.py), every error (-k)."""
    out = subprocess.run([SYSTEM_PYTHON, "-m", "osgeo_utils.samples.validate_gpkg", "-k",
                          str(path)], capture_output=True, text=True, timeout=300)
    if "No module named" in out.stderr:
        pytest.fail("GDAL's validate_gpkg.py is missing: run scripts/test.sh (python3-gdal)")
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()] + (
        [f"exit {out.returncode}"] if out.returncode else [])


def counts(path: Path) -> dict[str, tuple[int, int]]:
    """Per feature table: (rows with a geometry, entries of its R-tree)."""
    with sqlite3.connect(path) as conn:
        return {t: (conn.execute(f"SELECT count(*) FROM {t} WHERE geom IS NOT NULL")
                    .fetchone()[0],
                    conn.execute(f"SELECT count(*) FROM rtree_{t}_geom").fetchone()[0])
                for t in FEATURE_TABLES}


@pytest.fixture
def world_gpkg(tmp_path, world_dir) -> Path:
    path = tmp_path / "world.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, world_dir)
    store.close()
    add_world_users(path)
    return path


def moved_grid(base: Path) -> Path:
    """The world with one grid boundary moved (new rows in the grids table on import)."""
    g = world.layers()["grids"]
    south, north = "320901002001001", "320901002001002"
    g.loc[g["code"] == south, "geometry"] = box(120.6, 32.0, 120.7, 32.12)
    g.loc[g["code"] == north, "geometry"] = box(120.6, 32.12, 120.7, 32.2)
    return world.write(base / "moved", {"grids": g})


def test_gdal_validates_the_sample_store(sample_store):
    assert validate_gpkg(sample_store) == []
    assert all(rows == entries for rows, entries in counts(sample_store).values())


def test_gdal_validates_an_imported_store_with_users_and_cases(world_gpkg, tmp_path):
    svc = Gridmap(str(world_gpkg))
    try:
        svc.sign_in("t-dispatcher", PASSWORD, "test")  # a session row
        me = Actor("t-dispatcher", "dispatcher", "调度员甲")
        svc.create_case(me, svc.route(me, *world.P["a2_plain"]),
                        {"category": "air", "description": "校验测试"}, request_id="gdal-1")
    finally:
        svc.close()
    assert validate_gpkg(world_gpkg) == []
    with sqlite3.connect(world_gpkg) as conn:
        for table in ("gridmap_meta", "users", "sessions", "request_keys", "incident_state"):
            keys = [(name, typ) for _, name, typ, _, _, pk in
                    conn.execute(f"PRAGMA table_info({table})") if pk]
            assert keys == [("fid", "INTEGER")], table
        ext = conn.execute("SELECT table_name, scope FROM gpkg_extensions WHERE "
                           "extension_name = 'gpkg_rtree_index' ORDER BY 1").fetchall()
    assert ext == [(t, "write-only") for t in sorted(FEATURE_TABLES)]


def test_an_older_store_is_upgraded_in_place(world_gpkg):
    """A file as the previous version wrote it (text primary keys, no R-tree) keeps its rows
    and accounts, and passes the validator after the next open."""
    svc = Gridmap(str(world_gpkg))
    try:
        svc.sign_in("t-admin", PASSWORD, "test")
    finally:
        svc.close()
    _make_old(world_gpkg)
    assert any("Req 119: table gridmap_meta has a PRIMARY KEY of type TEXT" in line
               for line in validate_gpkg(world_gpkg))
    with sqlite3.connect(world_gpkg) as conn:
        users_before = conn.execute("SELECT * FROM users ORDER BY login").fetchall()
        sessions_before = conn.execute("SELECT * FROM sessions ORDER BY token_hash").fetchall()
    store = open_store(str(world_gpkg))
    store.close()
    assert validate_gpkg(world_gpkg) == []
    with sqlite3.connect(world_gpkg) as conn:
        assert conn.execute("SELECT fid, key, value FROM gridmap_meta").fetchall()[0][1] == (
            "schema_version")
        after = conn.execute("SELECT * FROM users ORDER BY login").fetchall()
        assert [row[1:] for row in after] == users_before  # fid first, then the old columns
        assert [row[1:] for row in conn.execute(
            "SELECT * FROM sessions ORDER BY token_hash")] == sessions_before
        with pytest.raises(sqlite3.IntegrityError):  # the text key stays unique
            conn.execute("INSERT INTO users (login, role, name, worker_id, bureau_code, "
                         "password_hash, disabled, failed_count, locked_until, created_at, "
                         "updated_at) SELECT login, role, name, worker_id, bureau_code, "
                         "password_hash, disabled, failed_count, locked_until, created_at, "
                         "updated_at FROM users LIMIT 1")
    assert all(rows == entries for rows, entries in counts(world_gpkg).values())
    svc = Gridmap(str(world_gpkg))
    try:  # accounts and sessions work on the rebuilt tables
        signed = svc.sign_in("t-admin", PASSWORD, "test")
        assert svc.actor_for(signed.token).login == "t-admin"
    finally:
        svc.close()


def _make_old(path: Path) -> None:
    """Turn a store back into the previous version's layout: text primary keys on the
    key-value and account tables, no R-tree."""
    conn = sqlite3.connect(path, isolation_level=None)
    gpkg.register_functions(conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN")
    for table in FEATURE_TABLES:
        for trigger in [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?",
                (f"rtree_{table}_geom_%",))]:
            conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute(f'DROP TABLE "rtree_{table}_geom"')
    conn.execute("DELETE FROM gpkg_extensions WHERE extension_name = 'gpkg_rtree_index'")
    for table, key in (("gridmap_meta", "key"), ("users", "login"), ("sessions", "token_hash"),
                       ("request_keys", "request_key"), ("incident_state", "incident_id")):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        old = sql.replace(f'fid INTEGER PRIMARY KEY AUTOINCREMENT, "{key}" TEXT NOT NULL UNIQUE',
                          f"{key} TEXT PRIMARY KEY").replace(f'"{table}"', f'"{table}_old"', 1)
        assert old != sql
        others = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
            "AND sql IS NOT NULL", (table,))]
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "fid"]
        conn.execute(old)
        conn.execute(f"INSERT INTO {table}_old ({', '.join(cols)}) "
                     f"SELECT {', '.join(cols)} FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_old RENAME TO {table}")
        for statement in others:
            conn.execute(statement)
    conn.execute("COMMIT")
    conn.close()


def test_a_store_gdal_has_indexed_and_written_accepts_the_next_import(world_gpkg, tmp_path):
    """What a planner's QGIS/ogrinfo does to the file: GDAL replaces the grids' index with its
    own (triggers calling ST_IsEmpty, ST_MinX …) and writes through it; the next import must
    still go through, and the index must stay right."""
    before = counts(world_gpkg)
    gdal_python("""
        import sys
        from osgeo import gdal, ogr
        gdal.UseExceptions()
        ds = ogr.Open(sys.argv[1], update=1)
        ds.ExecuteSQL("SELECT DisableSpatialIndex('grids', 'geom')")
        ds.ExecuteSQL("SELECT CreateSpatialIndex('grids', 'geom')")
        ds.ExecuteSQL("UPDATE counties SET name = name")  # a write with our triggers live
        layer = ds.GetLayerByName("grids")
        layer.SetSpatialFilterRect(120.6, 32.0, 120.7, 32.2)
        print(layer.GetFeatureCount())
        ds = None
    """, str(world_gpkg))
    with sqlite3.connect(world_gpkg) as conn:
        triggers = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                                "name = 'rtree_grids_geom_insert'").fetchone()[0]
    assert "ST_IsEmpty" in triggers
    svc = Gridmap(str(world_gpkg))
    try:
        report = svc.import_layers(Actor.local_admin(), moved_grid(tmp_path), note="GDAL 之后")
    finally:
        svc.close()
    assert report.generation.id == 2
    after = counts(world_gpkg)
    assert all(rows == entries for rows, entries in after.values()), after
    assert after["grids"][0] > before["grids"][0]  # new rows went through GDAL's triggers
    assert validate_gpkg(world_gpkg) == []
    # GDAL's own spatial filter (through the R-tree) finds the moved grids where they are now.
    found = json.loads(gdal_python("""
        import json, sys
        from osgeo import ogr
        ds = ogr.Open(sys.argv[1])
        layer = ds.GetLayerByName("grids_current") or ds.GetLayerByName("grids")
        layer.SetAttributeFilter("gen_to IS NULL" if layer.GetName() == "grids" else None)
        layer.SetSpatialFilterRect(120.65, 32.11, 120.66, 32.115)
        print(json.dumps(sorted(f.GetField("code") for f in layer)))
    """, str(world_gpkg)))
    assert "320901002001001" in found and "320901002001002" not in found


def test_our_index_and_functions_agree_with_gdal(world_gpkg):
    """The R-tree we fill and the SQL functions we register answer as GDAL's do."""
    sql = ("SELECT fid + 0 AS row_id, ST_MinX(geom), ST_MaxX(geom), ST_MinY(geom), "
           "ST_MaxY(geom), "
           "ST_IsEmpty(geom), ST_GeometryType(geom), ST_SRID(geom), "
           "GPKG_IsAssignable('GEOMETRY', ST_GeometryType(geom)), "
           "GPKG_IsAssignable('POINT', ST_GeometryType(geom)) FROM grids ORDER BY fid")
    theirs = json.loads(gdal_python("""
        import json, sys
        from osgeo import ogr
        ds = ogr.Open(sys.argv[1])
        rows = []
        result = ds.ExecuteSQL(sys.argv[2])
        for f in result:
            rows.append([f.GetField(i) for i in range(f.GetFieldCount())])
        ds.ReleaseResultSet(result)
        print(json.dumps(rows))
    """, str(world_gpkg), sql))
    conn = sqlite3.connect(world_gpkg)
    gpkg.register_functions(conn)
    ours = [list(r) for r in conn.execute(sql)]
    assert ours == theirs
    assert ours[0][6:] == ["MULTIPOLYGON", 4490, 1, 0]
    index = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, minx, maxx, miny, maxy FROM rtree_grids_geom")}
    for fid, minx, maxx, miny, maxy, *_ in ours:  # float32 boxes, rounded outwards
        lo_x, hi_x, lo_y, hi_y = index[fid]
        assert lo_x <= minx and hi_x >= maxx and lo_y <= miny and hi_y >= maxy
        assert max(minx - lo_x, hi_x - maxx, miny - lo_y, hi_y - maxy) < 1e-4
    empty = gpkg.encode([shapely.Polygon()], 4490)[0]
    assert conn.execute("SELECT ST_IsEmpty(?), ST_MinX(?)", (empty, empty)).fetchone() == (
        1, None)
    conn.close()


def test_ogrinfo_reads_the_store(sample_store, tmp_path):
    copy = tmp_path / "sample.gpkg"
    shutil.copy(sample_store, copy)
    if shutil.which("ogrinfo") is None:
        pytest.fail("ogrinfo is missing: run scripts/test.sh (it installs gdal-bin)")
    out = subprocess.run(["ogrinfo", "-ro", "-so", str(copy), "grids"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Feature Count: 2544" in out.stdout and "Geometry: Multi Polygon" in out.stdout

"""Minimal GeoPackage (OGC 12-128r18) plumbing over sqlite3.

We write the file ourselves instead of through GDAL so that one sqlite transaction covers every
layer of an import (all or nothing) and the versioning columns stay under our control. The file
is a plain GeoPackage: QGIS and `ogrinfo` open it.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pyproj
import shapely

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10400  # GeoPackage 1.4

# Envelope sizes in bytes by the envelope indicator of the geometry header (bits 1-3 of flags).
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
_TEXT_KEY = re.compile(r'"?(\w+)"?\s+TEXT\s+PRIMARY\s+KEY', re.IGNORECASE)

_CORE_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
    srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
    organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
    table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
    description TEXT DEFAULT '',
    last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
    srs_id INTEGER, CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id)
        REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
    table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
    srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
    CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
    CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
    CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
"""


@lru_cache(maxsize=8)
def _srs_definition(epsg: int) -> tuple[str, str]:
    crs = pyproj.CRS.from_epsg(epsg)
    return crs.name, crs.to_wkt("WKT1_GDAL")


def initialise(conn: sqlite3.Connection, srs_ids: Iterable[int]) -> None:
    """Create the GeoPackage core tables (idempotent) and register the given EPSG codes."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {USER_VERSION}")
    # executescript() would commit the caller's transaction: run the statements one by one.
    for statement in filter(str.strip, _CORE_DDL.split(";")):
        conn.execute(statement)
    rows = [
        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic"),
    ]
    for epsg in srs_ids:
        name, wkt = _srs_definition(epsg)
        rows.append((name, epsg, "EPSG", epsg, wkt, name))
    conn.executemany("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?,?,?,?,?,?)", rows)


def create_feature_table(
    conn: sqlite3.Connection,
    table: str,
    geometry_type: str,
    srs_id: int,
    columns: Sequence[tuple[str, str]],
    description: str = "",
) -> None:
    """Create a features table `table(fid, geom, <columns>)` and register it."""
    cols = ", ".join(f'"{name}" {sqltype}' for name, sqltype in columns)
    conn.execute(
        f'CREATE TABLE "{table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, '
        f"geom {geometry_type}, {cols})"
    )
    conn.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
        "VALUES (?, 'features', ?, ?, ?)",
        (table, table, description, srs_id),
    )
    conn.execute(
        "INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
        (table, geometry_type, srs_id),
    )
    create_spatial_index(conn, table)


def create_attribute_table(
    conn: sqlite3.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    description: str = "",
    primary_key: str = "fid INTEGER PRIMARY KEY AUTOINCREMENT",
) -> None:
    """Create a non-spatial table registered as GeoPackage 'attributes'. A GeoPackage
    attribute table needs an INTEGER PRIMARY KEY (Req 119): a text key ("login TEXT PRIMARY
    KEY") becomes a NOT NULL UNIQUE column after an integer `fid`, so inserts must name
    their columns."""
    cols = ", ".join(f'"{name}" {sqltype}' for name, sqltype in columns)
    text_key = _TEXT_KEY.fullmatch(primary_key.strip())
    if text_key:
        primary_key = (f'fid INTEGER PRIMARY KEY AUTOINCREMENT, "{text_key.group(1)}" '
                       "TEXT NOT NULL UNIQUE")
    conn.execute(f'CREATE TABLE "{table}" ({primary_key}, {cols})')
    conn.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
        "VALUES (?, 'attributes', ?, ?)",
        (table, table, description),
    )


def touch_contents(conn: sqlite3.Connection, table: str, bounds: Sequence[float] | None) -> None:
    """Record the change time and extent of a table in gpkg_contents."""
    if bounds is None or not np.all(np.isfinite(bounds)):
        bounds = (None, None, None, None)
    conn.execute(
        "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now'), "
        "min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE table_name = ?",
        (*[None if b is None else float(b) for b in bounds], table),
    )


def encode(geoms: np.ndarray, srs_id: int) -> list[bytes | None]:
    """Shapely geometries -> GeoPackage binary blobs (little endian, XY envelope)."""
    geoms = np.asarray(geoms, dtype=object)
    wkb = shapely.to_wkb(geoms, byte_order=1, flavor="iso", output_dimension=2)
    bounds = shapely.bounds(geoms)
    out: list[bytes | None] = []
    for blob, (minx, miny, maxx, maxy), geom in zip(wkb, bounds, geoms, strict=True):
        if geom is None:
            out.append(None)
        elif shapely.is_empty(geom):
            out.append(struct.pack("<2sBBi", b"GP", 0, 0b10001, srs_id) + blob)
        else:
            header = struct.pack("<2sBBi4d", b"GP", 0, 0b011, srs_id, minx, maxx, miny, maxy)
            out.append(header + blob)
    return out


def decode(blobs: Sequence[bytes | None]) -> np.ndarray:
    """GeoPackage binary blobs -> array of shapely geometries (None stays None)."""
    wkb: list[bytes | None] = []
    for blob in blobs:
        if blob is None:
            wkb.append(None)
            continue
        if blob[:2] != b"GP":
            raise ValueError("not a GeoPackage geometry blob")
        envelope = _ENVELOPE_BYTES[(blob[3] >> 1) & 0b111]
        wkb.append(bytes(blob[8 + envelope :]))
    return shapely.from_wkb(np.array(wkb, dtype=object))


# -- what GIS tools expect of a GeoPackage they open -----------------------------------------------
# GDAL and QGIS write R-tree spatial indexes whose triggers call the GeoPackage SQL functions
# (ST_IsEmpty, ST_MinX …). Every connection that writes the file must have them, or the next
# insert fails with "no such function: ST_IsEmpty". We register them on each connection, keep
# an index on every feature table, and keep attribute tables on INTEGER primary keys, so that
# `validate_gpkg.py` passes and QGIS draws large layers fast.

RTREE_EXTENSION = "http://www.geopackage.org/spec120/#extension_rtree"
_WKB_TYPES = {
    0: "GEOMETRY", 1: "POINT", 2: "LINESTRING", 3: "POLYGON", 4: "MULTIPOINT",
    5: "MULTILINESTRING", 6: "MULTIPOLYGON", 7: "GEOMETRYCOLLECTION", 8: "CIRCULARSTRING",
    9: "COMPOUNDCURVE", 10: "CURVEPOLYGON", 11: "MULTICURVE", 12: "MULTISURFACE", 13: "CURVE",
    14: "SURFACE",
}
# Geometry type -> the types a column of it accepts besides itself (OGC's class hierarchy).
_SUBTYPES = {
    "GEOMETRY": set(_WKB_TYPES.values()),
    "GEOMETRYCOLLECTION": {"MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON", "MULTICURVE",
                           "MULTISURFACE"},
    "MULTICURVE": {"MULTILINESTRING"},
    "MULTISURFACE": {"MULTIPOLYGON"},
    "CURVE": {"LINESTRING", "CIRCULARSTRING", "COMPOUNDCURVE"},
    "SURFACE": {"POLYGON", "CURVEPOLYGON"},
    "CURVEPOLYGON": {"POLYGON"},
    "COMPOUNDCURVE": {"LINESTRING", "CIRCULARSTRING"},
}


def _header(blob) -> tuple[int, int, int, int, bool] | None:
    """(flags, srs_id, envelope indicator, header length, little endian) of a GeoPackage
    geometry blob, or None when it is not one."""
    if blob is None or len(blob) < 8 or blob[:2] != b"GP":
        return None
    flags = blob[3]
    little = bool(flags & 1)
    indicator = (flags >> 1) & 0b111
    if indicator not in _ENVELOPE_BYTES:
        return None
    srs_id = struct.unpack("<i" if little else ">i", bytes(blob[4:8]))[0]
    return flags, srs_id, indicator, 8 + _ENVELOPE_BYTES[indicator], little


def _is_empty(blob) -> int | None:
    """The header's empty flag, as GDAL reads it (no WKB is parsed: the triggers call this
    for every row written)."""
    head = _header(blob)
    return None if head is None else int(bool(head[0] & 0b10000))


def _geometry(blob, head):
    try:
        return shapely.from_wkb(bytes(blob[head[3]:]))
    except Exception:  # not WKB: the SQL function answers NULL, as GDAL's does
        return None


def _bound(index: int):
    """ST_MinX (0), ST_MaxX (1), ST_MinY (2), ST_MaxY (3): from the header's envelope when
    there is one, else from the geometry."""

    def function(blob):
        head = _header(blob)
        if head is None or head[0] & 0b10000:
            return None
        if head[2]:
            order = "<4d" if head[4] else ">4d"
            return float(struct.unpack(order, bytes(blob[8:40]))[index])
        geom = _geometry(blob, head)
        if geom is None or shapely.is_empty(geom):
            return None
        minx, miny, maxx, maxy = shapely.bounds(geom)
        return float((minx, maxx, miny, maxy)[index])

    return function


def _geometry_type(blob) -> str | None:
    head = _header(blob)
    if head is None or len(blob) < head[3] + 5:
        return None
    wkb = bytes(blob[head[3]:head[3] + 5])
    code = struct.unpack("<I" if wkb[0] == 1 else ">I", wkb[1:5])[0]
    return _WKB_TYPES.get((code & 0x0FFFFFFF) % 1000)


def _srid(blob) -> int | None:
    head = _header(blob)
    return None if head is None else head[1]


def _is_assignable(expected, actual) -> int:
    expected, actual = str(expected or "").upper(), str(actual or "").upper()
    return int(expected == actual or actual in _SUBTYPES.get(expected, ()))


def register_functions(conn: sqlite3.Connection) -> None:
    """The GeoPackage SQL functions (OGC 12-128r18 Annex F.3 and the R-tree extension) on a
    connection: what the spatial index triggers GDAL, QGIS and we write call."""
    functions = {
        "ST_IsEmpty": (1, _is_empty), "ST_MinX": (1, _bound(0)), "ST_MaxX": (1, _bound(1)),
        "ST_MinY": (1, _bound(2)), "ST_MaxY": (1, _bound(3)),
        "ST_GeometryType": (1, _geometry_type), "ST_SRID": (1, _srid),
        "GPKG_IsAssignable": (2, _is_assignable),
    }
    for name, (nargs, function) in functions.items():
        conn.create_function(name, nargs, function, deterministic=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rtree_triggers(table: str, column: str, key: str) -> list[str]:
    """The R-tree extension's triggers (the 1.2/1.3 set GDAL writes and validate_gpkg.py
    expects: insert, update1-4, delete)."""
    t, c, i = _quote(table), _quote(column), _quote(key)
    rtree = f"rtree_{table}_{column}"
    r = _quote(rtree)
    values = (f"VALUES (NEW.{i}, ST_MinX(NEW.{c}), ST_MaxX(NEW.{c}), "
              f"ST_MinY(NEW.{c}), ST_MaxY(NEW.{c}))")
    non_empty = f"(NEW.{c} NOTNULL AND NOT ST_IsEmpty(NEW.{c}))"
    empty = f"(NEW.{c} ISNULL OR ST_IsEmpty(NEW.{c}))"
    return [
        f"CREATE TRIGGER {_quote(rtree + '_insert')} AFTER INSERT ON {t} "
        f"WHEN (NEW.{c} NOT NULL AND NOT ST_IsEmpty(NEW.{c})) "
        f"BEGIN INSERT OR REPLACE INTO {r} {values}; END",
        f"CREATE TRIGGER {_quote(rtree + '_update1')} AFTER UPDATE OF {c} ON {t} "
        f"WHEN OLD.{i} = NEW.{i} AND {non_empty} "
        f"BEGIN INSERT OR REPLACE INTO {r} {values}; END",
        f"CREATE TRIGGER {_quote(rtree + '_update2')} AFTER UPDATE OF {c} ON {t} "
        f"WHEN OLD.{i} = NEW.{i} AND {empty} "
        f"BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END",
        f"CREATE TRIGGER {_quote(rtree + '_update3')} AFTER UPDATE ON {t} "
        f"WHEN OLD.{i} != NEW.{i} AND {non_empty} "
        f"BEGIN DELETE FROM {r} WHERE id = OLD.{i}; INSERT OR REPLACE INTO {r} {values}; END",
        f"CREATE TRIGGER {_quote(rtree + '_update4')} AFTER UPDATE ON {t} "
        f"WHEN OLD.{i} != NEW.{i} AND {empty} "
        f"BEGIN DELETE FROM {r} WHERE id IN (OLD.{i}, NEW.{i}); END",
        f"CREATE TRIGGER {_quote(rtree + '_delete')} AFTER DELETE ON {t} "
        f"WHEN OLD.{c} NOT NULL BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END",
    ]


def has_spatial_index(conn: sqlite3.Connection, table: str, column: str = "geom") -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                        (f"rtree_{table}_{column}",)).fetchone() is not None


def create_spatial_index(conn: sqlite3.Connection, table: str, column: str = "geom",
                         key: str = "fid") -> bool:
    """The GeoPackage R-tree index of a feature table (filled from its rows, kept by its
    triggers, registered in gpkg_extensions); nothing when it exists. The caller holds the
    transaction and has registered the SQL functions. Returns whether it was created."""
    if has_spatial_index(conn, table, column):
        return False
    rtree = _quote(f"rtree_{table}_{column}")
    conn.execute(f"CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)")
    c = _quote(column)
    conn.execute(
        f"INSERT OR REPLACE INTO {rtree} SELECT {_quote(key)}, ST_MinX({c}), ST_MaxX({c}), "
        f"ST_MinY({c}), ST_MaxY({c}) FROM {_quote(table)} "
        f"WHERE {c} NOT NULL AND NOT ST_IsEmpty({c})")
    for trigger in _rtree_triggers(table, column, key):
        conn.execute(trigger)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT, column_name TEXT, "
        "extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL, "
        "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))")
    conn.execute("INSERT OR IGNORE INTO gpkg_extensions VALUES (?, ?, 'gpkg_rtree_index', ?, "
                 "'write-only')", (table, column, RTREE_EXTENSION))
    return True


def _feature_tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, geometry column) of every feature table (views have no index)."""
    return [tuple(r) for r in conn.execute(
        "SELECT g.table_name, g.column_name FROM gpkg_geometry_columns g "
        "JOIN sqlite_master m ON m.name = g.table_name AND m.type = 'table' "
        "ORDER BY g.table_name")]


def _text_keyed_tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, key column) of registered tables whose primary key is not an INTEGER."""
    out = []
    rows = conn.execute(
        "SELECT c.table_name FROM gpkg_contents c JOIN sqlite_master m "
        "ON m.name = c.table_name AND m.type = 'table' ORDER BY c.table_name").fetchall()
    for (table,) in rows:
        keys = [(name, typ) for _, name, typ, _, _, pk in
                conn.execute(f"PRAGMA table_info({_quote(table)})") if pk]
        if len(keys) == 1 and keys[0][1].upper() != "INTEGER":
            out.append((table, keys[0][0]))
    return out


def needs_conformance(conn: sqlite3.Connection) -> bool:
    """Whether `conform` has work to do (read-only: an up-to-date file takes no write lock)."""
    return bool(_text_keyed_tables(conn)) or any(
        not has_spatial_index(conn, t, c) for t, c in _feature_tables(conn))


def conform(conn: sqlite3.Connection) -> list[str]:
    """Bring a file written by an older version up to what GIS tools expect, in place: every
    registered table on an INTEGER primary key (a text key kept NOT NULL UNIQUE, rows, indexes
    and triggers kept) and an R-tree on every feature table. Idempotent; the caller holds the
    transaction, with foreign keys off (a table is rebuilt under its own name). Returns what
    was done."""
    done = []
    for table, key in _text_keyed_tables(conn):
        if _rekey(conn, table, key):
            done.append(f"{table}: INTEGER PRIMARY KEY")
    for table, column in _feature_tables(conn):
        if create_spatial_index(conn, table, column):
            done.append(f"{table}: rtree_{table}_{column}")
    return done


def _rekey(conn: sqlite3.Connection, table: str, key: str) -> bool:
    """Rebuild `table` with `fid INTEGER PRIMARY KEY` and its text key NOT NULL UNIQUE
    (SQLite's documented twelve-step table rebuild)."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (table,)).fetchone()[0]
    pattern = re.compile(r'"?' + re.escape(key) + r'"?\s+TEXT\s+PRIMARY\s+KEY', re.IGNORECASE)
    if not pattern.search(sql) or re.search(r"\bfid\b", sql, re.IGNORECASE):
        return False  # not a form we wrote: leave it as it is
    temp = f"{table}__rekey"
    head = re.compile(r"^\s*CREATE\s+TABLE\s+(\"[^\"]+\"|'[^']+'|\S+)\s*\(", re.IGNORECASE)
    body = pattern.sub(f'fid INTEGER PRIMARY KEY AUTOINCREMENT, "{key}" TEXT NOT NULL UNIQUE',
                       head.sub("", sql, count=1), count=1)
    others = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name", (table,))]
    columns = ", ".join(_quote(r[1]) for r in conn.execute(f"PRAGMA table_info({_quote(table)})"))
    conn.execute(f"CREATE TABLE {_quote(temp)} ({body}")
    conn.execute(f"INSERT INTO {_quote(temp)} ({columns}) SELECT {columns} "
                 f"FROM {_quote(table)} ORDER BY rowid")
    conn.execute(f"DROP TABLE {_quote(table)}")
    conn.execute(f"ALTER TABLE {_quote(temp)} RENAME TO {_quote(table)}")
    for statement in others:
        conn.execute(statement)
    return True

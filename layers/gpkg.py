"""Minimal GeoPackage (OGC 12-128r18) plumbing over sqlite3.

We write the file ourselves instead of through GDAL so that one sqlite transaction covers every
layer of an import (all or nothing) and the versioning columns stay under our control. The file
is a plain GeoPackage: QGIS and `ogrinfo` open it.
"""

from __future__ import annotations

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


def create_attribute_table(
    conn: sqlite3.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    description: str = "",
    primary_key: str = "fid INTEGER PRIMARY KEY AUTOINCREMENT",
) -> None:
    """Create a non-spatial table registered as GeoPackage 'attributes'."""
    cols = ", ".join(f'"{name}" {sqltype}' for name, sqltype in columns)
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

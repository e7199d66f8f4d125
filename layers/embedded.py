"""The embedded store: one GeoPackage file holding every layer and all its generations."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from layers import gpkg
from layers.incidents import (
    EVENT_COLUMNS,
    INCIDENT_COLUMNS,
    INCIDENT_NAMES,
    Event,
    incidents_frame,
)
from layers.schema import LAYERS, STORE_EPSG, LayerSpec
from layers.store import Generation, Snapshot, StoreError

SCHEMA_VERSION = "1"
VERSION_COLUMNS = [("gen_from", "INTEGER NOT NULL"), ("gen_to", "INTEGER")]
GEOMETRY_TYPES = {"polygon": "MULTIPOLYGON", "point": "POINT"}


def layer_columns(spec: LayerSpec) -> list[tuple[str, str]]:
    """The stored columns of a layer: its required attributes, extras as JSON, versioning."""
    cols = [(c, "INTEGER NOT NULL" if c == "rank" else "TEXT NOT NULL") for c in spec.required]
    return [*cols, ("attrs", "TEXT"), *VERSION_COLUMNS]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GeoPackageStore:
    """Store in a GeoPackage file. Writers take sqlite's write lock for the whole import."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        if not self.path.exists() and not create:
            raise StoreError(
                f"数据库文件不存在：{self.path}。请先运行 `gridmap demo` 生成示例数据，"
                "或用 `gridmap import` 导入数据。"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._ensure_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"无法打开数据库文件 {self.path}：{exc}") from exc
        self._snapshots: dict[int, Snapshot] = {}

    # -- schema -----------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        have = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "gridmap_meta" in have:
            return
        if have - {"sqlite_sequence"}:
            raise StoreError(f"{self.path} 不是 gridmap 数据库（已有其他数据表）。")
        with self._transaction():
            gpkg.initialise(self.conn, [4326, STORE_EPSG])
            gpkg.create_attribute_table(
                self.conn,
                "gridmap_meta",
                [("value", "TEXT")],
                "gridmap 元数据",
                primary_key="key TEXT PRIMARY KEY",
            )
            self.conn.execute(
                "INSERT INTO gridmap_meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
            gpkg.create_attribute_table(
                self.conn,
                "generations",
                [
                    ("created_at", "TEXT NOT NULL"),
                    ("layers", "TEXT NOT NULL"),
                    ("note", "TEXT"),
                    ("source", "TEXT"),
                ],
                "图层版本（每次导入或编辑生成一个新版本）",
                primary_key="id INTEGER PRIMARY KEY",
            )
            for spec in LAYERS.values():
                cols = layer_columns(spec)
                if spec.geometry:
                    gpkg.create_feature_table(
                        self.conn,
                        spec.name,
                        GEOMETRY_TYPES[spec.geometry],
                        STORE_EPSG,
                        cols,
                        spec.title_zh,
                    )
                else:
                    gpkg.create_attribute_table(self.conn, spec.name, cols, spec.title_zh)
                self.conn.execute(
                    f'CREATE INDEX "{spec.name}_gen" ON "{spec.name}" (gen_to, gen_from)'
                )
            gpkg.create_feature_table(
                self.conn, "incidents", "POINT", STORE_EPSG, INCIDENT_COLUMNS, "事件（案件）"
            )
            gpkg.create_attribute_table(
                self.conn,
                "incident_events",
                EVENT_COLUMNS,
                "事件处理记录（只追加，不修改）",
                primary_key="seq INTEGER PRIMARY KEY AUTOINCREMENT",
            )
            self.conn.execute("CREATE INDEX incident_events_id ON incident_events (incident_id)")
            # The audit trail is append-only, enforced by the database itself.
            for op in ("UPDATE", "DELETE"):
                self.conn.execute(
                    f"CREATE TRIGGER incident_events_no_{op.lower()} "
                    f"BEFORE {op} ON incident_events "
                    "BEGIN SELECT RAISE(ABORT, '事件处理记录只能追加，不能修改或删除'); END"
                )
                self.conn.execute(
                    f"CREATE TRIGGER incidents_no_{op.lower()} BEFORE {op} ON incidents "
                    "BEGIN SELECT RAISE(ABORT, '事件登记记录不能修改或删除'); END"
                )

    def clear_cache(self) -> None:
        self._snapshots.clear()

    def _transaction(self):
        return _Transaction(self.conn)

    # -- reading ----------------------------------------------------------------------------
    def generations(self) -> list[Generation]:
        rows = self.conn.execute(
            "SELECT id, created_at, layers, note, source FROM generations ORDER BY id"
        ).fetchall()
        return [
            Generation(r[0], r[1], tuple(json.loads(r[2])), r[3] or "", r[4] or "") for r in rows
        ]

    def current_generation(self) -> int:
        row = self.conn.execute("SELECT max(id) FROM generations").fetchone()
        return int(row[0] or 0)

    def snapshot(self, generation: int | None = None) -> Snapshot:
        gens = {g.id: g for g in self.generations()}
        if not gens:
            raise StoreError(
                f"数据库 {self.path} 中还没有任何图层，请先导入数据或运行 `gridmap demo`。"
            )
        gen_id = max(gens) if generation is None else int(generation)
        if gen_id not in gens:
            raise StoreError(f"版本 {gen_id} 不存在（现有版本 1–{max(gens)}）。")
        if gen_id not in self._snapshots:
            layers = {name: self._read_layer(spec, gen_id) for name, spec in LAYERS.items()}
            self._snapshots[gen_id] = Snapshot(gens[gen_id], layers)
        return self._snapshots[gen_id]

    def _read_layer(self, spec: LayerSpec, gen: int) -> pd.DataFrame:
        cols = ["fid", *spec.required, "attrs"]
        select = ", ".join(f'"{c}"' for c in cols) + (", geom" if spec.geometry else "")
        rows = self.conn.execute(
            f'SELECT {select} FROM "{spec.name}" WHERE gen_from <= ? '
            "AND (gen_to IS NULL OR gen_to >= ?) ORDER BY fid",
            (gen, gen),
        ).fetchall()
        frame = pd.DataFrame([r[: len(cols)] for r in rows], columns=cols)
        frame["attrs"] = [json.loads(a) if a else {} for a in frame["attrs"]]
        if spec.geometry:
            geoms = gpkg.decode([r[-1] for r in rows]) if rows else np.array([], dtype=object)
            return gpd.GeoDataFrame(frame, geometry=geoms, crs=STORE_EPSG)
        return frame

    def finder(self, snapshot: Snapshot):
        from layers.finder import MemoryFinder

        return MemoryFinder.for_snapshot(snapshot)

    # -- writing ----------------------------------------------------------------------------
    def commit_layers(
        self, layers: dict[str, pd.DataFrame], *, note: str = "", source: str = ""
    ) -> Generation:
        """Close the current rows of each given layer and insert the new ones, atomically."""
        created = utc_now()
        with self._transaction():
            gen = self.current_generation() + 1
            self.conn.execute(
                "INSERT INTO generations VALUES (?, ?, ?, ?, ?)",
                (gen, created, json.dumps(sorted(layers)), note, source),
            )
            for name, frame in layers.items():
                spec = LAYERS[name]
                self.conn.execute(
                    f'UPDATE "{name}" SET gen_to = ? WHERE gen_to IS NULL', (gen - 1,)
                )
                self._insert(spec, frame, gen)
        self._snapshots.clear()
        return Generation(gen, created, tuple(sorted(layers)), note, source)

    def _insert(self, spec: LayerSpec, frame: pd.DataFrame, gen: int) -> None:
        values = [frame[c].astype(int if c == "rank" else str).tolist() for c in spec.required]
        attrs = [
            json.dumps(a, ensure_ascii=False, sort_keys=True) if a else None
            for a in frame.get("attrs", [None] * len(frame))
        ]
        names = [*spec.required, "attrs", "gen_from"]
        columns = [*values, attrs, [gen] * len(frame)]
        if spec.geometry:
            geoms = np.asarray(frame.geometry.values, dtype=object)
            if spec.geometry == "polygon":
                geoms = _as_multipolygons(geoms)
            columns.append(gpkg.encode(geoms, STORE_EPSG))
            names.append("geom")
            gpkg.touch_contents(self.conn, spec.name, shapely.total_bounds(geoms))
        else:
            gpkg.touch_contents(self.conn, spec.name, None)
        placeholders = ", ".join("?" * len(names))
        quoted = ", ".join(f'"{n}"' for n in names)
        self.conn.executemany(
            f'INSERT INTO "{spec.name}" ({quoted}) VALUES ({placeholders})',
            zip(*columns, strict=True),
        )

    # -- incidents ------------------------------------------------------------------------------
    def add_incidents(self, records: pd.DataFrame, events: list[Event]) -> None:
        """Insert new incident records (with a point geometry) and their first events."""
        names = [name for name, _ in INCIDENT_COLUMNS]
        blobs = gpkg.encode(np.asarray(records.geometry.values, dtype=object), STORE_EPSG)
        rows = [
            (*[_sql_value(v) for v in values], blob)
            for values, blob in zip(records[names].itertuples(index=False), blobs, strict=True)
        ]
        quoted = ", ".join(f'"{n}"' for n in names)
        with self._transaction():
            self.conn.executemany(
                f"INSERT INTO incidents ({quoted}, geom) "
                f"VALUES ({', '.join('?' * (len(names) + 1))})",
                rows,
            )
            self._insert_events(events)
            gpkg.touch_contents(self.conn, "incidents", None)

    def append_events(self, events: list[Event]) -> None:
        with self._transaction():
            self._insert_events(events)

    def _insert_events(self, events: list[Event]) -> None:
        names = ", ".join(f'"{n}"' for n, _ in EVENT_COLUMNS)
        self.conn.executemany(
            f"INSERT INTO incident_events ({names}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            [e.row() for e in events],
        )

    def incident_events(self, incident_id: str | None = None) -> pd.DataFrame:
        cols = ["seq", *(n for n, _ in EVENT_COLUMNS)]
        sql = f"SELECT {', '.join(cols)} FROM incident_events"
        args: tuple = ()
        if incident_id is not None:
            sql += " WHERE incident_id = ?"
            args = (incident_id,)
        return pd.DataFrame(self.conn.execute(sql + " ORDER BY seq", args).fetchall(), columns=cols)

    def incidents(self, status: list[str] | None = None) -> gpd.GeoDataFrame:
        """Every incident with its current status and assignment (from its events)."""
        rows = self.conn.execute(
            f"SELECT {', '.join(INCIDENT_NAMES)}, geom FROM incidents ORDER BY reported_at, id"
        ).fetchall()
        geoms = gpkg.decode([r[-1] for r in rows]) if rows else []
        return incidents_frame(
            [r[:-1] for r in rows], geoms, self.incident_events(), status, STORE_EPSG
        )

    def close(self) -> None:
        self.conn.close()


def _sql_value(value):
    """numpy scalars and NaN as sqlite understands them."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _as_multipolygons(geoms: np.ndarray) -> np.ndarray:
    single = shapely.get_type_id(geoms) == 3
    out = geoms.copy()
    out[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
    return out


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception: all or nothing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")

"""The embedded store: one GeoPackage file holding every layer and all its generations."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from layers import gpkg, incident_sql, visit_sql
from layers.audit import (
    AUDIT_COLUMNS,
    AUDIT_NAMES,
    AuditRecord,
    audit_where,
    chain,
    with_target,
)
from layers.compact import batches_of, frame_of_batches
from layers.incidents import (
    EVENT_COLUMNS,
    INCIDENT_COLUMNS,
    INCIDENT_NAMES,
    STATE_READ,
    Event,
    frame_from_state,
)
from layers.schema import LAYERS, STORE_EPSG, LayerSpec
from layers.store import (
    ATTACHMENT_INFO,
    DEFERRED_LAYERS,
    SCOPED_LAYERS,
    SESSION_FIELDS,
    USER_FIELDS,
    VISIT_FIELDS,
    Attachment,
    AttachmentInfo,
    AuditQuery,
    ConcurrentChange,
    Deferred,
    DraftRecord,
    Generation,
    IncidentQuery,
    Layers,
    SessionRecord,
    Snapshot,
    Store,
    StoreError,
    UserRecord,
    VisitQuery,
    VisitRecord,
    scope_box,
    within_box,
)
from layers.visit_sql import VISIT_COLUMNS

SCHEMA_VERSION = "5"
USER_COLUMNS = (
    ("login", "TEXT PRIMARY KEY"), ("role", "TEXT NOT NULL"), ("name", "TEXT NOT NULL"),
    ("worker_id", "TEXT NOT NULL"), ("bureau_code", "TEXT NOT NULL"),
    ("password_hash", "TEXT NOT NULL"), ("disabled", "INTEGER NOT NULL"),
    ("failed_count", "INTEGER NOT NULL"), ("locked_until", "TEXT NOT NULL"),
    ("created_at", "TEXT NOT NULL"), ("updated_at", "TEXT NOT NULL"),
)
SESSION_COLUMNS = (
    ("token_hash", "TEXT PRIMARY KEY"), ("login", "TEXT NOT NULL REFERENCES users (login)"),
    ("created_at", "TEXT NOT NULL"), ("expires_at", "TEXT NOT NULL"),
    ("last_seen", "TEXT NOT NULL"), ("client", "TEXT NOT NULL"),
)
VERSION_COLUMNS = [("gen_from", "INTEGER NOT NULL"), ("gen_to", "INTEGER")]
DRAFT_COLUMNS = [
    ("layers", "TEXT NOT NULL"), ("base", "TEXT NOT NULL"), ("author", "TEXT NOT NULL"),
    ("created_at", "TEXT NOT NULL"), ("updated_at", "TEXT NOT NULL"), ("note", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"), ("revision", "INTEGER NOT NULL"), ("generation", "INTEGER"),
    ("content", "TEXT NOT NULL"),
]
GEOMETRY_TYPES = {"polygon": "MULTIPOLYGON", "point": "POINT"}
# Indexes for what the store's queries filter by, beyond the schema's own: the workers of the
# grids around a place (`snapshot(bbox=…)`). Created when a file lacks them.
INDEXES = {"workers_grid": 'CREATE INDEX IF NOT EXISTS "workers_grid" ON "workers" (grid_code)',
           "entities_id": 'CREATE INDEX IF NOT EXISTS "entities_id" ON "entities" (id)'}


def layer_columns(spec: LayerSpec) -> list[tuple[str, str]]:
    """The stored columns of a layer: its required attributes, extras as JSON, versioning."""
    cols = [(c, "INTEGER NOT NULL" if c == "rank" else "TEXT NOT NULL") for c in spec.required]
    return [*cols, ("attrs", "TEXT"), *VERSION_COLUMNS]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GeoPackageStore(Store):
    """Store in a GeoPackage file. Writers take sqlite's write lock for the whole import."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        if not self.path.exists() and not create:
            raise StoreError(
                f"数据库文件不存在：{self.path}。请先运行 `gridmap demo` 生成示例数据，"
                "或用 `gridmap import` 导入数据。"
            )
        if not create and self.path.is_file() and self.path.stat().st_size == 0:
            # An empty file is no store: schema written into it would hide a wrong path (or a
            # copy that failed) behind an empty map.
            raise StoreError(
                f"数据库文件是空的（0 字节）：{self.path}。请检查路径；新建请运行 `gridmap demo` "
                "或 `gridmap import`。")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not self.path.exists():
                # Names, phones and cases: readable by the owner only (sqlite's journal files
                # take the database file's permissions).
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            gpkg.register_functions(self.conn)  # what GDAL's index triggers call
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._ensure_schema()
            self._conform()
            self._ensure_indexes()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"无法打开数据库文件 {self.path}：{exc}") from exc
        self._snapshots: dict[int, Snapshot] = {}

    # -- schema -----------------------------------------------------------------------------
    def _conform(self) -> None:
        """Upgrade in place what GIS tools expect (layers/gpkg.py `conform`): INTEGER primary
        keys, an R-tree per feature table. Idempotent and read-only when nothing is due."""
        if not gpkg.needs_conformance(self.conn):
            return
        self.conn.execute("PRAGMA foreign_keys = OFF")  # tables are rebuilt under their names
        try:
            with self._transaction():
                gpkg.conform(self.conn)
                if self.conn.execute("PRAGMA foreign_key_check").fetchone():
                    raise StoreError(f"{self.path} 升级后外键校验失败，已回滚")
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    def _ensure_indexes(self) -> None:
        """The INDEXES a file lacks (made before they were added), created; read-only when
        it has them all."""
        have = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        missing = [sql for name, sql in INDEXES.items() if name not in have]
        if missing:
            with self._transaction():
                for sql in missing:
                    self.conn.execute(sql)

    def _ensure_schema(self) -> None:
        have = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "gridmap_meta" in have:
            version = self.conn.execute(
                "SELECT value FROM gridmap_meta WHERE key = 'schema_version'").fetchone()
            if version and version[0] in ("1", "2", "3", "4"):
                with self._transaction():
                    if version[0] == "1":
                        self._schema_v2()
                    if version[0] in ("1", "2"):
                        self._schema_v3()
                    if version[0] in ("1", "2", "3"):
                        self._schema_v4()
                    self._schema_v5()
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
                "INSERT INTO gridmap_meta (key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,)
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
            self._schema_v2()
            self._schema_v3()
            self._schema_v4()
            self._schema_v5()

    def _schema_v5(self) -> None:
        """Versions say who and what changed; planners' drafts with their undo history; one
        view per layer of its current rows (`<layer>_current`), registered so that QGIS lists
        it next to the history table."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(generations)")}
        if "actor" not in have:
            self.conn.execute("ALTER TABLE generations ADD COLUMN actor TEXT")
            self.conn.execute("ALTER TABLE generations ADD COLUMN changes TEXT")
        gpkg.create_attribute_table(
            self.conn, "drafts", DRAFT_COLUMNS, "图层草稿（规划调整，发布前）",
            primary_key="id INTEGER PRIMARY KEY AUTOINCREMENT")
        gpkg.create_attribute_table(
            self.conn, "draft_history",
            [("draft_id", "INTEGER NOT NULL REFERENCES drafts (id)"),
             ("revision", "INTEGER NOT NULL"), ("layers", "TEXT NOT NULL"),
             ("base", "TEXT NOT NULL"), ("content", "TEXT NOT NULL"),
             ("saved_at", "TEXT NOT NULL")],
            "图层草稿的撤销记录", primary_key="id INTEGER PRIMARY KEY AUTOINCREMENT")
        self.conn.execute("CREATE INDEX draft_history_draft ON draft_history (draft_id, id)")
        for spec in LAYERS.values():
            cols = ", ".join(f'"{c}"' for c in ["fid", *(["geom"] if spec.geometry else []),
                                                 *spec.required, "attrs", "gen_from"])
            view = f"{spec.name}_current"
            self.conn.execute(f'CREATE VIEW "{view}" AS SELECT {cols} FROM "{spec.name}" '
                              "WHERE gen_to IS NULL")
            kind = "features" if spec.geometry else "attributes"
            self.conn.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                "srs_id, min_x, min_y, max_x, max_y) SELECT ?, ?, ?, ?, srs_id, min_x, min_y, "
                "max_x, max_y FROM gpkg_contents WHERE table_name = ?",
                (view, kind, view, f"{spec.title_zh}（当前版本）", spec.name))
            if spec.geometry:
                self.conn.execute(
                    "INSERT INTO gpkg_geometry_columns SELECT ?, column_name, geometry_type_name,"
                    " srs_id, z, m FROM gpkg_geometry_columns WHERE table_name = ?",
                    (view, spec.name))
        self.conn.execute("UPDATE gridmap_meta SET value = '5' WHERE key = 'schema_version'")

    def _schema_v4(self) -> None:
        """Files kept with case steps (photos, documents): append-only, with their hash; the
        instant each case entered its state, for deadlines sorted and filtered in SQL; and what
        the performance figures need of each case (report time, longest stint per state,
        times sent back, township), so that they read neither events nor records. Columns a
        file lacks are added and the state rebuilt from the events, which fills them."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(incident_state)")}
        missing = [(n, t) for n, t in incident_sql.STATE_COLUMNS if n not in have]
        for name, kind in missing:
            self.conn.execute(f"ALTER TABLE incident_state ADD COLUMN {name} {kind}")
        if missing:
            self._rebuild_state()
        self.conn.execute("CREATE INDEX IF NOT EXISTS incident_state_deadline "
                          "ON incident_state (status, since_epoch)")
        gpkg.create_attribute_table(
            self.conn, "attachments",
            [("incident_id", "TEXT"), ("event_at", "TEXT NOT NULL"),
             ("name", "TEXT NOT NULL"), ("mime", "TEXT NOT NULL"), ("size", "INTEGER NOT NULL"),
             ("sha256", "TEXT NOT NULL"), ("created_at", "TEXT NOT NULL"),
             ("created_by", "TEXT NOT NULL"), ("data", "BLOB NOT NULL"),
             ("visit_id", "INTEGER")],
            "案件附件（现场照片等，只追加）", primary_key="id INTEGER PRIMARY KEY AUTOINCREMENT")
        self.conn.execute("CREATE INDEX attachments_incident ON attachments (incident_id, id)")
        self.conn.execute("CREATE INDEX attachments_visit ON attachments (visit_id, id)")
        gpkg.create_attribute_table(
            self.conn, "visits", [(n, t) for n, t in VISIT_COLUMNS],
            "巡查记录（只追加）", primary_key="id INTEGER PRIMARY KEY AUTOINCREMENT")
        self.conn.execute("CREATE INDEX visits_entity ON visits (entity_id, visited_epoch)")
        self.conn.execute("CREATE INDEX visits_grid ON visits (grid_code, visited_epoch)")
        for table in ("visits",):
            for op in ("UPDATE", "DELETE"):
                self.conn.execute(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, '巡查记录只能追加，不能修改或删除'); END")
            self.conn.execute(
                f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                f"WHEN EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
                "BEGIN SELECT RAISE(ABORT, '记录只能追加，不能替换已有记录'); END")
        for op in ("UPDATE", "DELETE"):
            self.conn.execute(
                f"CREATE TRIGGER attachments_no_{op.lower()} BEFORE {op} ON attachments "
                "BEGIN SELECT RAISE(ABORT, '案件附件只能追加，不能修改或删除'); END")
        self.conn.execute(
            "CREATE TRIGGER attachments_no_replace BEFORE INSERT ON attachments "
            "WHEN EXISTS (SELECT 1 FROM attachments WHERE id = NEW.id) "
            "BEGIN SELECT RAISE(ABORT, '记录只能追加，不能替换已有记录'); END")
        self.conn.execute("UPDATE gridmap_meta SET value = '4' WHERE key = 'schema_version'")

    def _schema_v3(self) -> None:
        """Client request ids (the API's idempotent POST): a retried request finds its case."""
        gpkg.create_attribute_table(
            self.conn, "request_keys", [("incident_id", "TEXT NOT NULL")],
            "客户端请求编号（重试返回同一案件）", primary_key="request_key TEXT PRIMARY KEY")
        self.conn.execute("UPDATE gridmap_meta SET value = '3' WHERE key = 'schema_version'")

    def _schema_v2(self) -> None:
        """Accounts, sessions, the audit chain, the incidents' current state, and guards
        against INSERT OR REPLACE (which deletes the old row without firing DELETE
        triggers). A version 1 file is upgraded in place, its incidents' state rebuilt."""
        c = self.conn
        gpkg.create_attribute_table(c, "users", USER_COLUMNS[1:], "用户（密码仅存哈希）",
                                    primary_key="login TEXT PRIMARY KEY")
        gpkg.create_attribute_table(c, "sessions", SESSION_COLUMNS[1:], "登录会话",
                                    primary_key="token_hash TEXT PRIMARY KEY")
        gpkg.create_attribute_table(c, "audit_log", AUDIT_COLUMNS, "审计记录（哈希链，只追加）",
                                    primary_key="seq INTEGER PRIMARY KEY")
        c.execute("CREATE INDEX audit_log_actor ON audit_log (actor, seq)")
        c.execute("CREATE INDEX audit_log_target ON audit_log (target, seq)")
        gpkg.create_attribute_table(c, "incident_state", incident_sql.STATE_COLUMNS[1:],
                                    "事件当前状态（由处理记录推导，可重建）",
                                    primary_key="incident_id TEXT PRIMARY KEY")
        for col in incident_sql.STATE_INDEXES:
            c.execute(f"CREATE INDEX incident_state_{col} ON incident_state ({col})")
        for op in ("UPDATE", "DELETE"):
            c.execute(f"CREATE TRIGGER audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
                      "BEGIN SELECT RAISE(ABORT, '审计记录只能追加，不能修改或删除'); END")
        guards = {
            "incident_events": "seq = NEW.seq",
            "incidents": "id = NEW.id OR fid = NEW.fid",
            "audit_log": "seq = NEW.seq",
        }
        for table, same in guards.items():
            c.execute(
                f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {same}) "
                "BEGIN SELECT RAISE(ABORT, '记录只能追加，不能替换已有记录'); END")
        c.execute("INSERT OR IGNORE INTO gridmap_meta (key, value) "
                  "VALUES ('schema_version', '1')")
        c.execute("UPDATE gridmap_meta SET value = '2' WHERE key = 'schema_version'")
        self._rebuild_state()

    def _rebuild_state(self) -> None:
        """incident_state from the append-only record (for an upgraded file), replacing what
        it held."""
        self.conn.execute("DELETE FROM incident_state")
        rows = self.conn.execute(
            f"SELECT {', '.join(INCIDENT_NAMES)}, geom FROM incidents ORDER BY fid").fetchall()
        if not rows:
            return
        geoms = gpkg.decode([r[-1] for r in rows])
        states = {}
        for row, geom in zip(rows, geoms, strict=True):
            record = dict(zip(INCIDENT_NAMES, row[:-1], strict=True))
            states[record["id"]] = dict(zip(incident_sql.STATE_NAMES, incident_sql.initial_state(
                record, geom.x, geom.y, None), strict=True))
        events = self.conn.execute(
            f"SELECT {', '.join(n for n, _ in EVENT_COLUMNS)} FROM incident_events ORDER BY seq")
        for values in events.fetchall():
            event = Event(*values)
            if event.incident_id in states:
                states[event.incident_id] = incident_sql.apply_event(
                    states[event.incident_id], event)
        self._write_states(list(states.values()), insert=True)

    def clear_cache(self) -> None:
        self._snapshots.clear()

    def _transaction(self):
        return _Transaction(self.conn)

    # -- reading ----------------------------------------------------------------------------
    def generations(self) -> list[Generation]:
        rows = self.conn.execute(
            "SELECT id, created_at, layers, note, source, actor, changes FROM generations "
            "ORDER BY id"
        ).fetchall()
        return [
            Generation(r[0], r[1], tuple(json.loads(r[2])), r[3] or "", r[4] or "", r[5] or "",
                       json.loads(r[6]) if r[6] else {}) for r in rows
        ]

    def current_generation(self) -> int:
        row = self.conn.execute("SELECT max(id) FROM generations").fetchone()
        return int(row[0] or 0)

    def snapshot(self, generation: int | None = None, *,
                 bbox: tuple[float, float, float, float] | None = None) -> Snapshot:
        gens = {g.id: g for g in self.generations()}
        if not gens:
            raise StoreError(
                f"数据库 {self.path} 中还没有任何图层，请先导入数据或运行 `gridmap demo`。"
            )
        gen_id = max(gens) if generation is None else int(generation)
        if gen_id not in gens:
            raise StoreError(f"版本 {gen_id} 不存在（现有版本 1–{max(gens)}）。")
        if bbox is not None:
            return self._read_snapshot(gens[gen_id], scope_box(bbox))
        if gen_id not in self._snapshots:
            self._snapshots[gen_id] = self._read_snapshot(gens[gen_id])
        return self._snapshots[gen_id]

    def _read_snapshot(self, gen: Generation, bbox: tuple | None = None) -> Snapshot:
        frames: dict[str, pd.DataFrame] = {}
        deferred: dict[str, Deferred] = {}
        for name, spec in LAYERS.items():
            if name in DEFERRED_LAYERS:
                deferred[name] = Deferred(
                    lambda spec=spec: self._read_later(spec, gen),
                    lambda spec=spec: self._count_later(spec, gen),
                )
            elif bbox is not None and name in SCOPED_LAYERS:
                frames[name] = self._read_scoped(spec, gen.id, bbox)
            else:
                frames[name] = self._read_layer(spec, gen.id)
        return Snapshot(gen, Layers(frames, deferred, order=LAYERS), scope=bbox)

    def _read_scoped(self, spec: LayerSpec, gen: int, bbox: tuple) -> pd.DataFrame:
        """Rows of a SCOPED_LAYERS layer around `bbox`: grids whose extent meets it (their
        R-tree), workers of those grids."""
        # The GeoPackage R-tree of the grids (every file has one: `_conform`) holds rows of
        # every generation; the generation filter is the layer query's own.
        near = ('fid IN (SELECT id FROM "rtree_grids_geom" WHERE minx <= ? AND maxx >= ? '
                "AND miny <= ? AND maxy >= ?)")
        box = (bbox[2], bbox[0], bbox[3], bbox[1])
        if spec.name == "grids":
            return self._read_layer(spec, gen, near, box)
        return self._read_layer(
            spec, gen,
            "grid_code IN (SELECT code FROM grids WHERE gen_from <= ? "
            f"AND (gen_to IS NULL OR gen_to >= ?) AND {near})",
            (gen, gen, *box),
        )

    def entities_in(self, bbox: tuple[float, float, float, float],
                    generation: int | None = None) -> gpd.GeoDataFrame:
        box = scope_box(bbox)
        gen = self.current_generation() if generation is None else int(generation)
        frame = self._read_layer(
            LAYERS["entities"], gen,
            'fid IN (SELECT id FROM "rtree_entities_geom" WHERE minx <= ? AND maxx >= ? '
            "AND miny <= ? AND maxy >= ?)", (box[2], box[0], box[3], box[1]))
        return within_box(frame, box)

    def entities_by_id(self, ids: Sequence[str],
                       generation: int | None = None) -> gpd.GeoDataFrame:
        gen = self.current_generation() if generation is None else int(generation)
        # One parameter however many ids (sqlite limits the number of parameters).
        wanted = json.dumps(sorted({str(i) for i in ids}), ensure_ascii=False)
        return self._read_layer(LAYERS["entities"], gen,
                                "id IN (SELECT value FROM json_each(?))", (wanted,))

    def _read_later(self, spec: LayerSpec, gen: Generation) -> pd.DataFrame:
        """A deferred layer, read on a connection of its own (whichever thread asks)."""
        with contextlib.closing(self._reader(gen)) as conn:
            return self._read_layer(spec, gen.id, conn=conn)

    def _count_later(self, spec: LayerSpec, gen: Generation) -> int:
        with contextlib.closing(self._reader(gen)) as conn:
            return int(conn.execute(
                f'SELECT count(*) FROM "{spec.name}" WHERE gen_from <= ? '
                "AND (gen_to IS NULL OR gen_to >= ?)", (gen.id, gen.id)).fetchone()[0])

    def _reader(self, gen: Generation) -> sqlite3.Connection:
        """A read-only connection to the file, refused when the file no longer holds `gen`
        as it was (replaced by `gridmap demo --force` meanwhile)."""
        conn = None
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   timeout=60)
            row = conn.execute("SELECT created_at FROM generations WHERE id = ?",
                               (gen.id,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"无法读取数据库文件 {self.path}：{exc}") from exc
        if row is None or row[0] != gen.created_at:
            conn.close()
            raise StoreError(f"数据库文件 {self.path} 已被替换（版本 {gen.id} 已不是原来的内容），"
                             "请重新打开。")
        return conn

    def _read_layer(self, spec: LayerSpec, gen: int, where: str = "", params: tuple = (), *,
                    conn: sqlite3.Connection | None = None) -> pd.DataFrame:
        cols = ["fid", *spec.required, "attrs"]
        select = ", ".join(f'"{c}"' for c in cols) + (", geom" if spec.geometry else "")
        cursor = (conn or self.conn).execute(
            f'SELECT {select} FROM "{spec.name}" WHERE gen_from <= ? '
            "AND (gen_to IS NULL OR gen_to >= ?)" + (f" AND {where}" if where else "")
            + " ORDER BY fid",
            (gen, gen, *params),
        )
        # A NULL attrs is {} (layers/compact.attrs_of).
        frame, geoms = frame_of_batches(batches_of(cursor), cols,
                                        gpkg.decode if spec.geometry else None)
        if spec.geometry:
            return gpd.GeoDataFrame(frame, geometry=geoms, crs=STORE_EPSG)
        return frame

    def finder(self, snapshot: Snapshot):
        from layers.finder import MemoryFinder

        return MemoryFinder.for_snapshot(snapshot)

    # -- writing ----------------------------------------------------------------------------
    def commit_layers(
        self, layers: dict[str, pd.DataFrame], *, note: str = "", source: str = "",
        base_generation: int | None = None, audit: list[AuditRecord] | None = None,
        actor: str = "", layer_bases: dict[str, int] | None = None,
        draft_id: int | None = None,
    ) -> Generation:
        """Make the given layers current, writing only the features that changed, atomically
        (the contract: Store.commit_layers)."""
        from layers import draft_sql
        from layers.versions import check_layer_bases, diff_layer, stamp_audit

        with self._transaction():
            current = self.current_generation()
            if base_generation is not None and current != base_generation:
                raise ConcurrentChange(
                    f"导入检查期间图层已被他人更新（版本 {base_generation} → {current}），"
                    "本次导入未写入任何数据，请重新导入以按最新图层检查。")
            if layer_bases:
                oldest = min(layer_bases.values())
                check_layer_bases([g for g in self.generations() if g.id > oldest], layer_bases)
            gen = current + 1
            # Never before the previous generation, whatever the clock says: "as of" a time
            # finds one generation.
            last = self.conn.execute("SELECT max(created_at) FROM generations").fetchone()[0]
            created = max(utc_now(), last or "")
            diffs = {name: diff_layer(LAYERS[name], self._read_layer(LAYERS[name], current),
                                      layers[name]) for name in LAYERS if name in layers}
            changes = {name: d.counts() for name, d in diffs.items()}
            changed = tuple(sorted(name for name, d in diffs.items() if d.any))
            self.conn.execute(
                "INSERT INTO generations (id, created_at, layers, note, source, actor, changes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gen, created, json.dumps(list(changed)), note, source, actor,
                 json.dumps(changes, sort_keys=True)),
            )
            for name, diff in diffs.items():
                spec, frame = LAYERS[name], layers[name]
                self.conn.executemany(f'UPDATE "{name}" SET gen_to = ? WHERE fid = ?',
                                      [(gen - 1, fid) for fid in diff.close])
                if diff.insert:
                    self._insert(spec, frame.iloc[diff.insert], gen)
                bounds = (shapely.total_bounds(np.asarray(frame.geometry.values, dtype=object))
                          if spec.geometry else None)
                for table in (name, f"{name}_current"):
                    gpkg.touch_contents(self.conn, table, bounds)
            if draft_id is not None:
                draft_sql.set_status(self.conn.cursor(), "?", draft_id, "published", gen)
            self._append_audit(stamp_audit(audit or [], gen, changes))
        self._snapshots.clear()
        return Generation(gen, created, changed, note, source, actor, changes)

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
        placeholders = ", ".join("?" * len(names))
        quoted = ", ".join(f'"{n}"' for n in names)
        self.conn.executemany(
            f'INSERT INTO "{spec.name}" ({quoted}) VALUES ({placeholders})',
            zip(*columns, strict=True),
        )

    # -- drafts -----------------------------------------------------------------------------------
    def add_draft(self, draft: DraftRecord, *, audit: AuditRecord | None = None) -> int:
        from layers import draft_sql

        with self._transaction():
            draft_id = draft_sql.add(self.conn.cursor(), "?", draft)
            self._append_audit([with_target(audit, f"draft:{draft_id}")] if audit else [])
        return draft_id

    def drafts(self, status: str | None = None) -> list[DraftRecord]:
        from layers import draft_sql

        return draft_sql.select(self.conn.cursor(), "?", status=status)

    def draft(self, draft_id: int) -> DraftRecord | None:
        from layers import draft_sql

        found = draft_sql.select(self.conn.cursor(), "?", draft_id=draft_id)
        return found[0] if found else None

    def save_draft(self, draft_id: int, *, content: dict, layers: tuple[str, ...],
                   base: dict[str, int], note: str | None = None,
                   expected_revision: int | None = None) -> DraftRecord:
        from layers import draft_sql

        with self._transaction():
            draft_sql.save(self.conn.cursor(), "?", draft_id, content=content, layers=layers,
                           base=base, note=note, expected_revision=expected_revision)
        return self.draft(draft_id)

    def undo_draft(self, draft_id: int) -> DraftRecord:
        from layers import draft_sql

        with self._transaction():
            draft_sql.undo(self.conn.cursor(), "?", draft_id)
        return self.draft(draft_id)

    def set_draft_status(self, draft_id: int, status: str, *,
                         audit: AuditRecord | None = None) -> DraftRecord:
        from layers import draft_sql

        with self._transaction():
            draft_sql.set_status(self.conn.cursor(), "?", draft_id, status)
            self._append_audit([audit] if audit else [])
        return self.draft(draft_id)

    # -- incidents ------------------------------------------------------------------------------
    def add_incidents(self, records: pd.DataFrame, events: list[Event], *,
                      audit: list[AuditRecord] | None = None) -> None:
        """Insert new incident records (with a point geometry) and their first events."""
        with self._transaction():
            self._insert_incidents(records, events)
            self._append_audit(audit or [])

    def _insert_incidents(self, records: pd.DataFrame, events: list[Event]) -> None:
        names = [name for name, _ in INCIDENT_COLUMNS]
        self._insert_rows(records[names].to_dict("records"),
                          np.asarray(records.geometry.values, dtype=object), events)

    def _insert_rows(self, records: list[dict], geoms, events: list[Event]) -> None:
        """Incident records (dicts of INCIDENT_COLUMNS), their points and first events."""
        names = [name for name, _ in INCIDENT_COLUMNS]
        geoms = np.asarray(geoms, dtype=object)
        blobs = gpkg.encode(geoms, STORE_EPSG)
        rows = [
            (*[_sql_value(rec[n]) for n in names], blob)
            for rec, blob in zip(records, blobs, strict=True)
        ]
        quoted = ", ".join(f'"{n}"' for n in names)
        self.conn.executemany(
            f"INSERT INTO incidents ({quoted}, geom) "
            f"VALUES ({', '.join('?' * (len(names) + 1))})",
            rows,
        )
        states = [
            dict(zip(incident_sql.STATE_NAMES,
                     incident_sql.initial_state(rec, g.x, g.y, None), strict=True))
            for rec, g in zip(records, geoms, strict=True)
        ]
        self._write_states(states, insert=True)
        self._insert_events(events)
        gpkg.touch_contents(self.conn, "incidents", None)

    def create_incident(self, record: dict, geometry, note: str, *, day: str,
                        audit: AuditRecord, request_key: str | None = None) -> str:
        with self._transaction():
            if request_key is not None:
                known = self.conn.execute(
                    "SELECT incident_id FROM request_keys WHERE request_key = ?",
                    (request_key,)).fetchone()
                if known:
                    return str(known[0])
            prefix = f"12369-{day.replace('-', '')}-"
            row = self.conn.execute(
                "SELECT max(CAST(substr(id, ?) AS INTEGER)) FROM incidents "
                "WHERE id LIKE ? AND substr(id, ?) GLOB '[0-9]*'",
                (len(prefix) + 1, prefix + "%", len(prefix) + 1),
            ).fetchone()
            number = f"{prefix}{int(row[0] or 0) + 1:04d}"
            rec = {**record, "id": number}
            event = Event(number, rec["created_at"], rec["created_by"], "create", "reported",
                          reason=note)
            self._insert_rows([rec], [geometry], [event])
            if request_key is not None:
                self.conn.execute("INSERT INTO request_keys (request_key, incident_id) "
                                  "VALUES (?, ?)",
                                  (request_key, number))
            self._append_audit([with_target(audit, number)])
        return number

    def request_case(self, request_key: str) -> str | None:
        row = self.conn.execute("SELECT incident_id FROM request_keys WHERE request_key = ?",
                                (request_key,)).fetchone()
        return str(row[0]) if row else None

    def append_events(self, events: list[Event], *,
                      audit: list[AuditRecord] | None = None,
                      attachments: list[Attachment] | None = None) -> None:
        with self._transaction():
            self._insert_events(events)
            if attachments:
                self._insert_attachments(list(attachments))
            self._append_audit(audit or [])

    def _insert_events(self, events: list[Event]) -> None:
        if not events:
            return
        names = ", ".join(f'"{n}"' for n, _ in EVENT_COLUMNS)
        self.conn.executemany(
            f"INSERT INTO incident_events ({names}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            [e.row() for e in events],
        )
        ids = sorted({e.incident_id for e in events})
        marks = ", ".join("?" * len(ids))
        cur = self.conn.execute(
            f"SELECT {', '.join(incident_sql.STATE_NAMES)} FROM incident_state "
            f"WHERE incident_id IN ({marks})", ids)
        states = {r[0]: dict(zip(incident_sql.STATE_NAMES, r, strict=True))
                  for r in cur.fetchall()}
        for event in events:
            if event.incident_id not in states:
                raise StoreError(f"案件 {event.incident_id} 不存在")
            states[event.incident_id] = incident_sql.apply_event(states[event.incident_id], event)
        self._write_states(list(states.values()), insert=False)

    def _write_states(self, states: list[dict], insert: bool) -> None:
        names = incident_sql.STATE_NAMES
        if insert:
            self.conn.executemany(
                f"INSERT INTO incident_state ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                [tuple(_sql_value(s[n]) for n in names) for s in states])
        else:
            sets = ", ".join(f"{n} = ?" for n in names[1:])
            self.conn.executemany(
                f"UPDATE incident_state SET {sets} WHERE incident_id = ?",
                [(*[s[n] for n in names[1:]], s["incident_id"]) for s in states])

    def incident_events(self, incident_id: str | None = None) -> pd.DataFrame:
        cols = ["seq", *(n for n, _ in EVENT_COLUMNS)]
        sql = f"SELECT {', '.join(cols)} FROM incident_events"
        args: tuple = ()
        if incident_id is not None:
            sql += " WHERE incident_id = ?"
            args = (incident_id,)
        return pd.DataFrame(self.conn.execute(sql + " ORDER BY seq", args).fetchall(), columns=cols)

    def query_incidents(self, query: IncidentQuery | None = None) -> gpd.GeoDataFrame:
        """Incidents with their current state, filtered and paged by sqlite."""
        query = query or IncidentQuery()
        select = ", ".join([*(f"i.{n}" for n in INCIDENT_NAMES),
                            *(f"s.{n}" for n in STATE_READ), "i.geom"])
        sql, params = incident_sql.select_sql(select, query, "?")
        rows = self.conn.execute(sql, params).fetchall()
        geoms = gpkg.decode([r[-1] for r in rows]) if rows else []
        frame = frame_from_state([r[:-1] for r in rows], geoms, STORE_EPSG)
        return incident_sql.within(frame, query)

    def incidents_stamp(self) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM incident_events").fetchone()
        return int(row[0] or 0)

    def count_incidents(self, query: IncidentQuery | None = None) -> int:
        sql, params = incident_sql.count_sql(query or IncidentQuery(), "?")
        return int(self.conn.execute(sql, params).fetchone()[0])

    # -- attachments ----------------------------------------------------------------------------
    def attachments(self, incident_id: str) -> list[AttachmentInfo]:
        rows = self.conn.execute(
            f"SELECT {', '.join(ATTACHMENT_INFO)} FROM attachments WHERE incident_id = ? "
            "ORDER BY id", (incident_id,)).fetchall()
        return [AttachmentInfo(*r) for r in rows]

    def attachment_data(self, attachment_id: int) -> tuple[AttachmentInfo, bytes] | None:
        row = self.conn.execute(
            f"SELECT {', '.join(ATTACHMENT_INFO)}, data FROM attachments WHERE id = ?",
            (int(attachment_id),)).fetchone()
        return None if row is None else (AttachmentInfo(*row[:-1]), bytes(row[-1]))

    def _insert_attachments(self, files: list[Attachment], visit_id: int | None = None) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.conn.executemany(
            "INSERT INTO attachments (incident_id, event_at, name, mime, size, sha256, "
            "created_at, created_by, data, visit_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.incident_id, f.event_at, f.name, f.mime, len(f.data), f.sha256, now,
              f.created_by, sqlite3.Binary(f.data), visit_id) for f in files])

    # -- patrol visits --------------------------------------------------------------------------
    def add_visit(self, visit: VisitRecord, *, audit: list[AuditRecord] | None = None,
                  attachments: list[Attachment] | None = None) -> int:
        names = [n for n in VISIT_FIELDS if n != "id"]
        with self._transaction():
            cur = self.conn.execute(
                f"INSERT INTO visits ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [getattr(visit, n) for n in names])
            visit_id = int(cur.lastrowid)
            if attachments:
                self._insert_attachments(list(attachments), visit_id)
            self._append_audit(audit or [])
        return visit_id

    def visits(self, query: VisitQuery) -> pd.DataFrame:
        sql, params = visit_sql.select(query, "?")
        return pd.DataFrame(self.conn.execute(sql, params).fetchall(), columns=list(VISIT_FIELDS))

    def last_visits(self, grid_codes: tuple[str, ...]) -> pd.DataFrame:
        sql, params = visit_sql.last(grid_codes, "?")
        return pd.DataFrame(self.conn.execute(sql, params).fetchall(), columns=visit_sql.LAST)

    def visit_attachments(self, visit_id: int) -> list[AttachmentInfo]:
        rows = self.conn.execute(
            f"SELECT {', '.join(ATTACHMENT_INFO)} FROM attachments WHERE visit_id = ? "
            "ORDER BY id", (int(visit_id),)).fetchall()
        return [AttachmentInfo(*r) for r in rows]

    # -- performance figures (绩效考评) ------------------------------------------------------------
    def case_facts(self, query: IncidentQuery, limits: dict[str, float | None], *, now: str,
                   township_codes: tuple[str, ...] | None = None) -> pd.DataFrame:
        from layers import case_facts

        sql, params = case_facts.facts_sql(query, limits, case_facts.now_epoch(now),
                                           case_facts.SQLITE, township_codes)
        return case_facts.facts_frame(self.conn.execute(sql, params).fetchall())

    # -- users and sessions ---------------------------------------------------------------------
    def user(self, login: str) -> UserRecord | None:
        row = self.conn.execute(
            f"SELECT {', '.join(USER_FIELDS)} FROM users WHERE login = ?", (login,)).fetchone()
        return _user(row) if row else None

    def users(self) -> list[UserRecord]:
        rows = self.conn.execute(
            f"SELECT {', '.join(USER_FIELDS)} FROM users ORDER BY login").fetchall()
        return [_user(r) for r in rows]

    def add_user(self, user: UserRecord, *, audit: AuditRecord) -> None:
        with self._transaction():
            if self.conn.execute("SELECT 1 FROM users WHERE login = ?", (user.login,)).fetchone():
                raise StoreError(f"用户 {user.login} 已存在")
            values = [_sql_value(getattr(user, f)) for f in USER_FIELDS]
            self.conn.execute(
                f"INSERT INTO users ({', '.join(USER_FIELDS)}) "
                f"VALUES ({', '.join('?' * len(USER_FIELDS))})",
                [int(v) if isinstance(v, bool) else v for v in values])
            self._append_audit([audit])

    def update_user(self, login: str, changes: dict, *,
                    audit: AuditRecord | None = None) -> None:
        bad = set(changes) - set(USER_FIELDS) | ({"login"} & set(changes))
        if bad:
            raise StoreError(f"不能修改用户字段：{'、'.join(sorted(bad))}")
        with self._transaction():
            sets = ", ".join(f"{k} = ?" for k in changes)
            values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
            cur = self.conn.execute(f"UPDATE users SET {sets} WHERE login = ?", [*values, login])
            if cur.rowcount != 1:
                raise StoreError(f"用户 {login} 不存在")
            self._append_audit([audit] if audit else [])

    def count_failure(self, login: str, *, lock_after: int, lock_until: str,
                      audit: AuditRecord) -> int:
        with self._transaction():
            self.conn.execute(
                "UPDATE users SET failed_count = failed_count + 1, locked_until = CASE "
                "WHEN failed_count + 1 >= ? THEN ? ELSE locked_until END WHERE login = ?",
                (lock_after, lock_until, login))
            row = self.conn.execute(
                "SELECT failed_count FROM users WHERE login = ?", (login,)).fetchone()
            self._append_audit([audit])
        return int(row[0]) if row else 0

    def add_session(self, session: SessionRecord, *, audit: AuditRecord) -> None:
        with self._transaction():
            self.conn.execute(
                f"INSERT INTO sessions ({', '.join(SESSION_FIELDS)}) "
                f"VALUES ({', '.join('?' * len(SESSION_FIELDS))})",
                [getattr(session, f) for f in SESSION_FIELDS])
            self._append_audit([audit])

    def session(self, token_hash: str) -> SessionRecord | None:
        row = self.conn.execute(
            f"SELECT {', '.join(SESSION_FIELDS)} FROM sessions WHERE token_hash = ?",
            (token_hash,)).fetchone()
        return SessionRecord(*row) if row else None

    def touch_session(self, token_hash: str, last_seen: str) -> None:
        with self._transaction():
            self.conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                              (last_seen, token_hash))

    def end_sessions(self, *, token_hash: str | None = None, login: str | None = None,
                     idle_before: str | None = None, audit: AuditRecord | None = None) -> int:
        with self._transaction():
            if token_hash is not None:
                cur = self.conn.execute("DELETE FROM sessions WHERE token_hash = ?",
                                        (token_hash,))
            elif idle_before is not None:
                cur = self.conn.execute(
                    "DELETE FROM sessions WHERE last_seen < ? OR expires_at < ?",
                    (idle_before, utc_now()))
            else:
                cur = self.conn.execute("DELETE FROM sessions WHERE login = ?", (login,))
            self._append_audit([audit] if audit else [])
            return cur.rowcount

    # -- audit ------------------------------------------------------------------------------------
    def append_audit(self, records: list[AuditRecord]) -> None:
        with self._transaction():
            self._append_audit(records)

    def _append_audit(self, records: list[AuditRecord]) -> None:
        """Chain `records` onto the head; the caller holds the write lock (BEGIN IMMEDIATE)."""
        if not records:
            return
        head = self.conn.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        rows = chain(records, int(head[0]) if head else 0, head[1] if head else "")
        self.conn.executemany(
            f"INSERT INTO audit_log (seq, {', '.join(AUDIT_NAMES)}) "
            f"VALUES ({', '.join('?' * (len(AUDIT_NAMES) + 1))})", rows)

    def audit_rows(self, query: AuditQuery | None = None) -> pd.DataFrame:
        query = query or AuditQuery()
        where, params = audit_where(query, "?")
        order = "DESC" if query.newest_first else "ASC"
        sql = (f"SELECT seq, {', '.join(AUDIT_NAMES)} FROM audit_log{where} "
               f"ORDER BY seq {order}")
        if query.limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(query.limit), int(query.offset)]
        rows = self.conn.execute(sql, params).fetchall()
        return pd.DataFrame(rows, columns=["seq", *AUDIT_NAMES])

    def audit_chain(self) -> Iterator[dict]:
        cur = self.conn.execute(f"SELECT seq, {', '.join(AUDIT_NAMES)} FROM audit_log "
                                "ORDER BY seq")
        names = ["seq", *AUDIT_NAMES]
        while batch := cur.fetchmany(5000):
            for row in batch:
                yield dict(zip(names, row, strict=True))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def _user(row) -> UserRecord:
    values = dict(zip(USER_FIELDS, row, strict=True))
    values["disabled"] = bool(values["disabled"])
    values["failed_count"] = int(values["failed_count"])
    return UserRecord(**values)


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

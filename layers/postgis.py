"""The PostGIS store: the same interface and answers as the GeoPackage, for production.

Writes are one transaction with COPY; the spatial lookup for routing runs inside PostGIS (one
statement for a single location, a set-based join for a batch) and hands the same candidate
hits to the one resolver of grids/. User values always travel as parameters or COPY data,
never inside SQL text.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
import shapely

from layers import incident_sql, ratelimit, visit_sql
from layers.audit import (
    AUDIT_NAMES,
    AuditRecord,
    audit_where,
    chain,
    utc_now,
    with_target,
)
from layers.compact import batches_of, frame_of_batches
from layers.finder import Hits, Queries
from layers.incidents import (
    EVENT_COLUMNS,
    INCIDENT_COLUMNS,
    INCIDENT_NAMES,
    STATE_READ,
    Event,
    frame_from_state,
)
from layers.schema import LAYERS, ROUTING_LAYERS, STORE_EPSG, LayerSpec
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
    redact_url,
    scope_box,
    within_box,
)

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA = "gridmap"
# Batch lookups create their unlogged work tables here: the runtime role may create tables in
# this schema only, never in the schema of the record.
WORK_SCHEMA = "gridmap_work"
APP_ROLE = "gridmap_app"
# Layer -> identity table of its key; codes referenced by other layers live there.
IDENTITY = {
    "counties": "county_codes",
    "townships": "township_codes",
    "parks": "park_codes",
    "grids": "grid_codes",
    "bureaus": "bureau_codes",
}
IDENTITY_OF_REF = {
    "counties": "county_codes",
    "townships": "township_codes",
    "parks": "park_codes",
    "grids": "grid_codes",
    "bureaus": "bureau_codes",
}
SUBDIVIDE_VERTICES = 128
# Locations routed with one statement and parameters; larger batches go through COPY.
INLINE_LIMIT = 2_000


# psycopg2's connection failures, in words (the driver's text is English and may hold a URL).
PG_ERRORS_ZH = (
    (re.compile(r"connection refused", re.I), "连接被拒绝（数据库服务未启动或端口不对）"),
    (re.compile(r"timeout|timed out", re.I), "连接超时（网络不通或防火墙拦截）"),
    (re.compile(r"password authentication failed|no password supplied", re.I),
     "用户名或密码错误"),
    (re.compile(r"does not exist", re.I), "数据库或用户不存在"),
    (re.compile(r"could not translate host name|name or service not known", re.I),
     "无法解析数据库主机名"),
    (re.compile(r"no pg_hba.conf entry", re.I), "数据库不允许从本机连接（pg_hba.conf）"),
)


def _pg_error(text: str) -> str:
    for pattern, zh in PG_ERRORS_ZH:
        if pattern.search(text):
            return zh
    return "连接失败"



def connect(url: str):
    try:
        # JIT compiles the big routing statements for longer than they run.
        conn = psycopg2.connect(url, options=f"-c search_path={SCHEMA},public -c jit=off")
    except psycopg2.OperationalError as exc:
        # The driver's text is English and may quote the address: said in words instead.
        raise StoreError(f"无法连接 PostGIS 数据库 {redact_url(url)}：{_pg_error(str(exc))}"
                         ) from exc
    return conn


def migrate(url: str) -> list[str]:
    """Apply the migration files not yet applied, in order; returns the ones applied now."""
    conn = connect(url)
    applied_now = []
    try:
        with conn, conn.cursor() as cur:
            # One initialiser at a time; the lock is released at commit.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('gridmap migrations'))")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
                "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")
            done = {r[0] for r in cur.fetchall()}
            for path in sorted(MIGRATIONS.glob("*.sql")):
                if path.stem in done:
                    continue
                cur.execute(path.read_text(encoding="utf-8"))
                cur.execute(
                    f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (%s)", (path.stem,)
                )
                applied_now.append(path.stem)
            # After every migration, so that the state table is complete: 0002 created it,
            # 0004 added columns only the events can fill.
            if any(stem.startswith(("0002", "0004")) for stem in applied_now):
                _rebuild_state(cur)
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {WORK_SCHEMA}")
    except psycopg2.Error as exc:
        raise StoreError(f"数据库初始化失败：{exc}") from exc
    finally:
        conn.close()
    return applied_now


# What the runtime role may do: read everything; append to the record; close layer rows
# (gen_to) when a new generation replaces them; keep accounts, sessions and the state
# projection. No TRUNCATE, no ALTER (it owns nothing), no UPDATE/DELETE of the record.
_APPEND = ("generations", "county_codes", "township_codes", "park_codes", "grid_codes",
           "bureau_codes", "routing_parts", "incidents", "incident_events", "audit_log",
           "users", "sessions", "incident_state", "request_keys", "attachments", "visits",
           *LAYERS)
_CLOSE_ROWS = ("routing_parts", *LAYERS)


def grant_runtime(url: str, role: str = APP_ROLE, password: str | None = None) -> None:
    """Create (or update) the login role the app runs as, with only the privileges above.
    The tables stay owned by the role that ran `gridmap db init`."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('gridmap migrations'))")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            ident = psycopg2.extensions.quote_ident(role, cur)
            if cur.fetchone() is None:
                cur.execute(f"CREATE ROLE {ident} LOGIN")
            if password is not None:
                cur.execute(f"ALTER ROLE {ident} PASSWORD %s", (password,))
            cur.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE "
                        f"{psycopg2.extensions.quote_ident(conn.info.dbname, cur)} TO {ident}")
            cur.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ident}")
            cur.execute(f"GRANT USAGE, CREATE ON SCHEMA {WORK_SCHEMA} TO {ident}")
            cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {ident}")
            cur.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {ident}")
            cur.execute(f"GRANT INSERT ON {', '.join(_APPEND)} TO {ident}")
            for table in _CLOSE_ROWS:
                cur.execute(f"GRANT UPDATE (gen_to) ON {table} TO {ident}")
            cur.execute(f"GRANT UPDATE ON users, sessions, incident_state TO {ident}")
            # Drafts are work in progress, not the record: saved over, their undo history
            # trimmed.
            cur.execute(f"GRANT INSERT, UPDATE ON drafts TO {ident}")
            cur.execute(f"GRANT INSERT, DELETE ON draft_history TO {ident}")
            cur.execute(f"GRANT DELETE ON sessions TO {ident}")
            # Rate limits (layers/ratelimit.py): counters, not the record.
            cur.execute(f"GRANT INSERT, UPDATE, DELETE ON rate_buckets TO {ident}")
            cur.execute(f"GRANT EXECUTE ON FUNCTION {SCHEMA}.analyze_routing_parts() TO {ident}")
    except psycopg2.Error as exc:
        raise StoreError(f"创建运行账号失败：{exc}") from exc
    finally:
        conn.close()


def _rebuild_state(cur) -> None:
    """incident_state from the record (of a database migrated from before 0002 or 0004),
    replacing what it held."""
    cur.execute("DELETE FROM incident_state")
    cur.execute(f"SELECT {', '.join(INCIDENT_NAMES)}, ST_X(geom), ST_Y(geom) FROM incidents "
                "ORDER BY fid")
    states = {}
    for row in cur.fetchall():
        record = dict(zip(INCIDENT_NAMES, row[:-2], strict=True))
        states[record["id"]] = dict(zip(incident_sql.STATE_NAMES, incident_sql.initial_state(
            record, row[-2], row[-1], None), strict=True))
    if not states:
        return
    cur.execute(f"SELECT {', '.join(n for n, _ in EVENT_COLUMNS)} FROM incident_events "
                "ORDER BY seq")
    for values in cur.fetchall():
        event = Event(*values)
        if event.incident_id in states:
            states[event.incident_id] = incident_sql.apply_event(states[event.incident_id], event)
    _write_states(cur, list(states.values()), insert=True)


class PostgisStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = connect(url)
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.schema_migrations",))
            present = cur.fetchone()[0] is not None
            missing = True
            if present:
                cur.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")
                done = {r[0] for r in cur.fetchall()}
                missing = any(p.stem not in done for p in MIGRATIONS.glob("*.sql"))
        if missing:
            self.conn.close()
            raise StoreError("PostGIS 数据库尚未初始化或版本过旧：请先运行 `gridmap db init`")
        self._snapshots: dict[int, Snapshot] = {}
        self._read_conn = None
        self.prepared: set[str] = set()  # statements prepared on the read connection
        # A router's store is shared by the threads of a server (the web pages, the API's
        # thread pool): one connection serves one statement or transaction at a time.
        self.lock = threading.RLock()

    def clear_cache(self) -> None:
        self._snapshots.clear()

    # -- reading ----------------------------------------------------------------------------
    def generations(self) -> list[Generation]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT id, to_char(created_at AT TIME ZONE 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), layers, note, source, actor, changes '
                "FROM generations ORDER BY id"
            )
            return [Generation(r[0], r[1], tuple(r[2]), r[3], r[4], r[5], r[6] or {})
                    for r in cur.fetchall()]

    def snapshot(self, generation: int | None = None, *,
                 bbox: tuple[float, float, float, float] | None = None) -> Snapshot:
        gens = {g.id: g for g in self.generations()}
        if not gens:
            raise StoreError("PostGIS 数据库中还没有任何图层，请先导入数据或运行 `gridmap demo`。")
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
        with self.lock, self.conn, self.conn.cursor() as cur:
            for name, spec in LAYERS.items():
                if name in DEFERRED_LAYERS:
                    deferred[name] = Deferred(
                        lambda spec=spec: self._read_later(spec, gen),
                        lambda spec=spec: self._read_later(spec, gen, count=True),
                    )
                elif bbox is not None and name in SCOPED_LAYERS:
                    frames[name] = _read_layer(cur, spec, gen.id, *_scoped(spec, gen.id, bbox))
                else:
                    frames[name] = _read_layer(cur, spec, gen.id)
        return Snapshot(gen, Layers(frames, deferred, order=LAYERS), scope=bbox)

    def entities_in(self, bbox: tuple[float, float, float, float],
                    generation: int | None = None) -> gpd.GeoDataFrame:
        box = scope_box(bbox)
        with self.lock, self.conn, self.conn.cursor() as cur:
            if generation is None:
                cur.execute("SELECT coalesce(max(id), 0) FROM generations")
                generation = cur.fetchone()[0]
            frame = _read_layer(cur, LAYERS["entities"], int(generation),
                                "geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490)", box)
        return within_box(frame, box)

    def entities_by_id(self, ids: Sequence[str],
                       generation: int | None = None) -> gpd.GeoDataFrame:
        wanted = sorted({str(i) for i in ids})
        with self.lock, self.conn, self.conn.cursor() as cur:
            if generation is None:
                cur.execute("SELECT coalesce(max(id), 0) FROM generations")
                generation = cur.fetchone()[0]
            return _read_layer(cur, LAYERS["entities"], int(generation), "id = ANY(%s)",
                               (wanted,))

    def _read_later(self, spec: LayerSpec, gen: Generation, count: bool = False):
        """A deferred layer (or its row count), read when first used, from whichever thread,
        on a connection of its own (never inside a transaction of the store's, nor after the
        store is closed). Refused when the generation is no longer the one the snapshot was
        of."""
        conn = connect(self.url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT to_char(created_at AT TIME ZONE 'UTC', "
                    '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') FROM generations WHERE id = %s',
                    (gen.id,))
                row = cur.fetchone()
                if row is None or row[0] != gen.created_at:
                    raise StoreError(f"数据库中的版本 {gen.id} 已不是原来的内容，请重新打开。")
                if count:
                    cur.execute(f"SELECT count(*) FROM {spec.name} WHERE gen_from <= %s "
                                "AND (gen_to IS NULL OR gen_to >= %s)", (gen.id, gen.id))
                    return int(cur.fetchone()[0])
                return _read_layer(cur, spec, gen.id)
        finally:
            conn.close()

    def finder(self, snapshot: Snapshot) -> PostgisFinder:
        return PostgisFinder(self, snapshot)

    def read_conn(self):
        """An autocommit connection for routing reads: no BEGIN/COMMIT round trips."""
        if self._read_conn is None or self._read_conn.closed:
            self._read_conn = connect(self.url)
            self._read_conn.autocommit = True
            with self._read_conn.cursor() as cur:
                # Statements are prepared once per connection: plan them once too. Under the
                # default `auto` PostgreSQL re-plans the one-point statement at every EXECUTE
                # on a large store (0.33 ms of a 0.9 ms route at 40k grids).
                cur.execute("SET plan_cache_mode = force_generic_plan")
            self.prepared = set()
        return self._read_conn

    # -- writing ----------------------------------------------------------------------------
    def commit_layers(
        self, layers: dict[str, pd.DataFrame], *, note: str = "", source: str = "",
        base_generation: int | None = None, audit: list[AuditRecord] | None = None,
        actor: str = "", layer_bases: dict[str, int] | None = None,
        draft_id: int | None = None,
    ) -> Generation:
        """Make the given layers current, writing only the features that changed, in one
        transaction (the contract: Store.commit_layers)."""
        from layers import draft_sql
        from layers.versions import check_layer_bases, diff_layer, stamp_audit

        try:
            with self.conn, self.conn.cursor() as cur:
                # Imports and publishes are serialised: the second waits for the first to
                # commit, then finds the generation it made.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('gridmap layers'))")
                cur.execute("SELECT coalesce(max(id), 0) FROM generations")
                current = cur.fetchone()[0]
                if base_generation is not None and current != base_generation:
                    raise ConcurrentChange(
                        f"导入检查期间图层已被他人更新（版本 {base_generation} → {current}），"
                        "本次导入未写入任何数据，请重新导入以按最新图层检查。")
                if layer_bases:
                    cur.execute(
                        "SELECT id, to_char(created_at AT TIME ZONE 'UTC', "
                        '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), layers, note, source, actor '
                        "FROM generations WHERE id > %s ORDER BY id",
                        (min(layer_bases.values()),))
                    check_layer_bases([Generation(r[0], r[1], tuple(r[2]), r[3], r[4], r[5])
                                       for r in cur.fetchall()], layer_bases)
                gen = current + 1
                diffs = {name: diff_layer(LAYERS[name], _read_layer(cur, LAYERS[name], current),
                                          layers[name]) for name in LAYERS if name in layers}
                changes = {name: d.counts() for name, d in diffs.items()}
                changed = sorted(name for name, d in diffs.items() if d.any)
                # The time after the lock, never before the previous generation's: "as of" a
                # time finds one generation.
                cur.execute(
                    "INSERT INTO generations (id, created_at, layers, note, source, actor, "
                    "changes) SELECT %s, greatest(clock_timestamp(), max(created_at)), %s, %s, "
                    "%s, %s, %s FROM generations",
                    (gen, changed, note, source, actor, json.dumps(changes)),
                )
                for name, diff in diffs.items():
                    spec, frame = LAYERS[name], layers[name]
                    _register_codes(cur, spec, frame)
                    if diff.close:
                        cur.execute(f"UPDATE {name} SET gen_to = %s WHERE fid = ANY(%s::bigint[])",
                                    (gen - 1, diff.close))
                    if diff.insert:
                        _copy_rows(cur, spec, frame.iloc[diff.insert], gen)
                    if name in ROUTING_LAYERS and diff.any:
                        _refresh_parts(cur, name, gen, diff.close)
                if draft_id is not None:
                    draft_sql.set_status(cur, "%s", draft_id, "published", gen)
                _append_audit(cur, stamp_audit(audit or [], gen, changes))
        except psycopg2.Error as exc:
            raise StoreError(f"写入 PostGIS 失败，已全部回滚：{exc}") from exc
        self._snapshots.clear()
        return next(g for g in self.generations() if g.id == gen)

    # -- drafts -----------------------------------------------------------------------------------
    def add_draft(self, draft: DraftRecord, *, audit: AuditRecord | None = None) -> int:
        from layers import draft_sql

        with self._write() as cur:
            draft_id = draft_sql.add(cur, "%s", draft)
            _append_audit(cur, [with_target(audit, f"draft:{draft_id}")] if audit else [])
        return draft_id

    def drafts(self, status: str | None = None) -> list[DraftRecord]:
        from layers import draft_sql

        with self.conn, self.conn.cursor() as cur:
            return draft_sql.select(cur, "%s", status=status)

    def draft(self, draft_id: int) -> DraftRecord | None:
        from layers import draft_sql

        with self.conn, self.conn.cursor() as cur:
            found = draft_sql.select(cur, "%s", draft_id=draft_id)
        return found[0] if found else None

    def save_draft(self, draft_id: int, *, content: dict, layers: tuple[str, ...],
                   base: dict[str, int], note: str | None = None,
                   expected_revision: int | None = None) -> DraftRecord:
        from layers import draft_sql

        with self._write() as cur:
            draft_sql.save(cur, "%s", draft_id, content=content, layers=layers, base=base,
                           note=note, expected_revision=expected_revision)
        return self.draft(draft_id)

    def undo_draft(self, draft_id: int) -> DraftRecord:
        from layers import draft_sql

        with self._write() as cur:
            draft_sql.undo(cur, "%s", draft_id)
        return self.draft(draft_id)

    def set_draft_status(self, draft_id: int, status: str, *,
                         audit: AuditRecord | None = None) -> DraftRecord:
        from layers import draft_sql

        with self._write() as cur:
            draft_sql.set_status(cur, "%s", draft_id, status)
            _append_audit(cur, [audit] if audit else [])
        return self.draft(draft_id)

    # -- incidents ------------------------------------------------------------------------------
    def _write(self):
        """A write transaction on the main connection; driver errors become StoreError."""
        return _Write(self.conn)

    def add_incidents(self, records: pd.DataFrame, events: list[Event], *,
                      audit: list[AuditRecord] | None = None) -> None:
        with self._write() as cur:
            _insert_incidents(cur, records, events)
            _append_audit(cur, audit or [])

    def create_incident(self, record: dict, geometry, note: str, *, day: str,
                        audit: AuditRecord, request_key: str | None = None) -> str:
        prefix = f"12369-{day.replace('-', '')}-"
        with self._write() as cur:
            # One allocator at a time per database; released at commit.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('gridmap case numbers'))")
            if request_key is not None:
                cur.execute("SELECT incident_id FROM request_keys WHERE request_key = %s",
                            (request_key,))
                known = cur.fetchone()
                if known:
                    return str(known[0])
            cur.execute(
                "SELECT max(substr(id, %s)::int) FROM incidents "
                "WHERE id LIKE %s AND substr(id, %s) ~ '^[0-9]+$'",
                (len(prefix) + 1, prefix + "%", len(prefix) + 1))
            number = f"{prefix}{int(cur.fetchone()[0] or 0) + 1:04d}"
            rec = {**record, "id": number}
            event = Event(number, rec["created_at"], rec["created_by"], "create", "reported",
                          reason=note)
            _insert_rows(cur, [rec], [geometry], [event])
            if request_key is not None:
                cur.execute("INSERT INTO request_keys VALUES (%s, %s)", (request_key, number))
            _append_audit(cur, [with_target(audit, number)])
        return number

    def request_case(self, request_key: str) -> str | None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT incident_id FROM request_keys WHERE request_key = %s",
                        (request_key,))
            row = cur.fetchone()
        return str(row[0]) if row else None

    def append_events(self, events: list[Event], *,
                      audit: list[AuditRecord] | None = None,
                      attachments: list[Attachment] | None = None) -> None:
        with self._write() as cur:
            _insert_events(cur, events)
            if attachments:
                _insert_attachments(cur, list(attachments))
            _append_audit(cur, audit or [])

    # -- patrol visits --------------------------------------------------------------------------
    def add_visit(self, visit: VisitRecord, *, audit: list[AuditRecord] | None = None,
                  attachments: list[Attachment] | None = None) -> int:
        names = [n for n in VISIT_FIELDS if n != "id"]
        with self._write() as cur:
            cur.execute(f"INSERT INTO visits ({', '.join(names)}) VALUES "
                        f"({', '.join(['%s'] * len(names))}) RETURNING id",
                        [getattr(visit, n) for n in names])
            visit_id = int(cur.fetchone()[0])
            if attachments:
                _insert_attachments(cur, list(attachments), visit_id)
            _append_audit(cur, audit or [])
        return visit_id

    def visits(self, query: VisitQuery) -> pd.DataFrame:
        sql, params = visit_sql.select(query, "%s")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            return pd.DataFrame(cur.fetchall(), columns=list(VISIT_FIELDS))

    def last_visits(self, grid_codes: tuple[str, ...]) -> pd.DataFrame:
        sql, params = visit_sql.last(grid_codes, "%s")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            return pd.DataFrame(cur.fetchall(), columns=visit_sql.LAST)

    def visit_attachments(self, visit_id: int) -> list[AttachmentInfo]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(ATTACHMENT_INFO)} FROM attachments "
                        "WHERE visit_id = %s ORDER BY id", (int(visit_id),))
            return [AttachmentInfo(*r) for r in cur.fetchall()]

    def attachments(self, incident_id: str) -> list[AttachmentInfo]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(ATTACHMENT_INFO)} FROM attachments "
                        "WHERE incident_id = %s ORDER BY id", (incident_id,))
            return [AttachmentInfo(*r) for r in cur.fetchall()]

    def attachment_data(self, attachment_id: int) -> tuple[AttachmentInfo, bytes] | None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(ATTACHMENT_INFO)}, data FROM attachments "
                        "WHERE id = %s", (int(attachment_id),))
            row = cur.fetchone()
        return None if row is None else (AttachmentInfo(*row[:-1]), bytes(row[-1]))

    def incidents_stamp(self) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT MAX(seq) FROM incident_events")
            return int(cur.fetchone()[0] or 0)

    def count_incidents(self, query: IncidentQuery | None = None) -> int:
        sql, params = incident_sql.count_sql(query or IncidentQuery(), "%s")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            return int(cur.fetchone()[0])

    def incident_events(self, incident_id: str | None = None) -> pd.DataFrame:
        cols = ["seq", *(n for n, _ in EVENT_COLUMNS)]
        sql = f"SELECT {', '.join(cols)} FROM incident_events"
        args: tuple = ()
        if incident_id is not None:
            sql += " WHERE incident_id = %s"
            args = (incident_id,)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql + " ORDER BY seq", args)
            return pd.DataFrame(cur.fetchall(), columns=cols)

    def query_incidents(self, query: IncidentQuery | None = None) -> gpd.GeoDataFrame:
        query = query or IncidentQuery()
        select = ", ".join([*("i.answer::text" if n == "answer" else f"i.{n}"
                              for n in INCIDENT_NAMES),
                            *(f"s.{n}" for n in STATE_READ), "ST_AsBinary(i.geom)"])
        sql, params = incident_sql.select_sql(select, query, "%s")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        geoms = shapely.from_wkb([bytes(r[-1]) for r in rows]) if rows else []
        frame = frame_from_state([r[:-1] for r in rows], geoms, STORE_EPSG)
        return incident_sql.within(frame, query)

    # -- performance figures (绩效考评) ------------------------------------------------------------
    def case_facts(self, query: IncidentQuery, limits: dict[str, float | None], *, now: str,
                   township_codes: tuple[str, ...] | None = None) -> pd.DataFrame:
        from layers import case_facts

        sql, params = case_facts.facts_sql(query, limits, case_facts.now_epoch(now),
                                           case_facts.POSTGRES, township_codes)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return case_facts.facts_frame(rows)

    # -- users and sessions ---------------------------------------------------------------------
    def user(self, login: str) -> UserRecord | None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(USER_FIELDS)} FROM users WHERE login = %s", (login,))
            row = cur.fetchone()
        return UserRecord(*row) if row else None

    def users(self) -> list[UserRecord]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(USER_FIELDS)} FROM users ORDER BY login")
            return [UserRecord(*r) for r in cur.fetchall()]

    def add_user(self, user: UserRecord, *, audit: AuditRecord) -> None:
        with self._write() as cur:
            cur.execute(
                f"INSERT INTO users ({', '.join(USER_FIELDS)}) VALUES "
                f"({', '.join(['%s'] * len(USER_FIELDS))}) ON CONFLICT (login) DO NOTHING",
                [getattr(user, f) for f in USER_FIELDS])
            if cur.rowcount != 1:
                raise StoreError(f"用户 {user.login} 已存在")
            _append_audit(cur, [audit])

    def update_user(self, login: str, changes: dict, *,
                    audit: AuditRecord | None = None) -> None:
        bad = set(changes) - set(USER_FIELDS) | ({"login"} & set(changes))
        if bad:
            raise StoreError(f"不能修改用户字段：{'、'.join(sorted(bad))}")
        with self._write() as cur:
            sets = ", ".join(f"{k} = %s" for k in changes)
            cur.execute(f"UPDATE users SET {sets} WHERE login = %s", [*changes.values(), login])
            if cur.rowcount != 1:
                raise StoreError(f"用户 {login} 不存在")
            _append_audit(cur, [audit] if audit else [])

    def count_failure(self, login: str, *, lock_after: int, lock_until: str,
                      audit: AuditRecord) -> int:
        with self._write() as cur:
            cur.execute(
                "UPDATE users SET failed_count = failed_count + 1, locked_until = CASE "
                "WHEN failed_count + 1 >= %s THEN %s ELSE locked_until END WHERE login = %s "
                "RETURNING failed_count", (lock_after, lock_until, login))
            row = cur.fetchone()
            _append_audit(cur, [audit])
        return int(row[0]) if row else 0

    def add_session(self, session: SessionRecord, *, audit: AuditRecord) -> None:
        with self._write() as cur:
            cur.execute(
                f"INSERT INTO sessions ({', '.join(SESSION_FIELDS)}) "
                f"VALUES ({', '.join(['%s'] * len(SESSION_FIELDS))})",
                [getattr(session, f) for f in SESSION_FIELDS])
            _append_audit(cur, [audit])

    def session(self, token_hash: str) -> SessionRecord | None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(SESSION_FIELDS)} FROM sessions "
                        "WHERE token_hash = %s", (token_hash,))
            row = cur.fetchone()
        return SessionRecord(*row) if row else None

    def touch_session(self, token_hash: str, last_seen: str) -> None:
        with self._write() as cur:
            cur.execute("UPDATE sessions SET last_seen = %s WHERE token_hash = %s",
                        (last_seen, token_hash))

    def end_sessions(self, *, token_hash: str | None = None, login: str | None = None,
                     idle_before: str | None = None, audit: AuditRecord | None = None) -> int:
        with self._write() as cur:
            if token_hash is not None:
                cur.execute("DELETE FROM sessions WHERE token_hash = %s", (token_hash,))
            elif idle_before is not None:
                cur.execute("DELETE FROM sessions WHERE last_seen < %s OR expires_at < %s",
                            (idle_before, utc_now()))
            else:
                cur.execute("DELETE FROM sessions WHERE login = %s", (login,))
            count = cur.rowcount
            _append_audit(cur, [audit] if audit else [])
        return count

    # -- rate limits ------------------------------------------------------------------------------
    def take_token(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """In the database: one bucket for every process (layers/ratelimit.py)."""
        with self._write() as cur:
            return ratelimit.take_in_database(cur, bucket, rate, burst, cost)

    # -- audit ------------------------------------------------------------------------------------
    def append_audit(self, records: list[AuditRecord]) -> None:
        with self._write() as cur:
            _append_audit(cur, records)

    def audit_rows(self, query: AuditQuery | None = None) -> pd.DataFrame:
        query = query or AuditQuery()
        where, params = audit_where(query, "%s")
        order = "DESC" if query.newest_first else "ASC"
        sql = f"SELECT seq, {', '.join(AUDIT_NAMES)} FROM audit_log{where} ORDER BY seq {order}"
        if query.limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params += [int(query.limit), int(query.offset)]
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql, params)
            return pd.DataFrame(cur.fetchall(), columns=["seq", *AUDIT_NAMES])

    def audit_chain(self):
        names = ["seq", *AUDIT_NAMES]
        # A named (server-side) cursor streams the chain instead of loading it whole.
        with self.conn, self.conn.cursor(name=f"audit_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 5000
            cur.execute(f"SELECT {', '.join(names)} FROM audit_log ORDER BY seq")
            for row in cur:
                yield dict(zip(names, row, strict=True))

    def close(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
        self.conn.close()


# -- layer rows ---------------------------------------------------------------------------------
def _read_layer(cur, spec: LayerSpec, gen: int, where: str = "",
                params: tuple = ()) -> pd.DataFrame:
    cols = ["fid", *spec.required, "attrs"]
    # attrs as text: decoded in one call for all rows (layers/compact.py), not row by row.
    select = (", ".join(f'"{c}"' for c in cols[:-1]) + ', "attrs"::text'
              + (", ST_AsBinary(geom)" if spec.geometry else ""))
    cur.execute(
        f"SELECT {select} FROM {spec.name} WHERE gen_from <= %s AND "
        "(gen_to IS NULL OR gen_to >= %s)" + (f" AND {where}" if where else "")
        + " ORDER BY fid",
        (gen, gen, *params),
    )
    frame, geoms = frame_of_batches(batches_of(cur), cols, _from_wkb if spec.geometry else None)
    for col in spec.nullable:
        frame[col] = frame[col].fillna("")
    if "rank" in frame:
        frame["rank"] = frame["rank"].astype(int)
    frame["fid"] = frame["fid"].astype(np.int64)
    if spec.geometry:
        return gpd.GeoDataFrame(frame, geometry=geoms, crs=STORE_EPSG)
    return frame


def _from_wkb(blobs: list) -> np.ndarray:
    return shapely.from_wkb([bytes(b) for b in blobs])


def _scoped(spec: LayerSpec, gen: int, bbox: tuple) -> tuple[str, tuple]:
    """(condition, parameters) of a SCOPED_LAYERS layer around `bbox`: the grids whose extent
    meets it (their GiST index), the workers of those grids (their grid_code index)."""
    near = "geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490)"
    if spec.name == "grids":
        return near, tuple(bbox)
    return (
        "grid_code IN (SELECT code FROM grids WHERE gen_from <= %s "
        f"AND (gen_to IS NULL OR gen_to >= %s) AND {near})",
        (gen, gen, *bbox),
    )


def _register_codes(cur, spec: LayerSpec, frame: pd.DataFrame) -> None:
    """Add the layer's own codes to its identity table (codes are never removed)."""
    table = IDENTITY.get(spec.name)
    if table:
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {table} (code) VALUES %s ON CONFLICT DO NOTHING",
            [(c,) for c in frame[spec.key].unique()],
            page_size=5000,
        )


def _copy_rows(cur, spec: LayerSpec, frame: pd.DataFrame, gen: int) -> None:
    data = pd.DataFrame({c: frame[c] for c in spec.required})
    for col in spec.nullable:
        if col in spec.refs:  # an absent reference is NULL for the foreign key
            data[col] = data[col].replace("", None)
    data["attrs"] = [json.dumps(a or {}, ensure_ascii=False) for a in frame["attrs"]]
    data["gen_from"] = gen
    names = [*spec.required, "attrs", "gen_from"]
    if spec.geometry:
        geoms = np.asarray(frame.geometry.values, dtype=object)
        if spec.geometry == "polygon":
            single = shapely.get_type_id(geoms) == 3
            geoms = geoms.copy()
            geoms[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
        data["geom"] = _ewkb(geoms)
        names.append("geom")
    _copy(cur, spec.name, names, data[names].itertuples(index=False))


def _refresh_parts(cur, name: str, gen: int, closed: list[int]) -> None:
    """The routing parts of the rows a generation closed are closed with them; its new rows
    are cut into parts."""
    layer = ROUTING_LAYERS.index(name)
    cur.execute(
        "UPDATE routing_parts SET gen_to = %s WHERE layer = %s AND gen_to IS NULL "
        "AND fid = ANY(%s::bigint[])", (gen - 1, layer, closed)
    )
    cur.execute(
        f"INSERT INTO routing_parts (layer, fid, gen_from, geom) "
        f"SELECT %s, fid, gen_from, ST_Subdivide(geom, %s) FROM {name} WHERE gen_from = %s",
        (layer, SUBDIVIDE_VERTICES, gen),
    )
    cur.execute("SELECT analyze_routing_parts()")


def _ewkb(geoms: np.ndarray) -> list[str]:
    return list(shapely.to_wkb(shapely.set_srid(geoms, STORE_EPSG), hex=True, include_srid=True))


def _copy(cur, table: str, columns: list[str], rows) -> None:
    """COPY rows (tuples) into table; CSV escaping handles any text a user typed. Rows end in
    CRLF: Python's writer then quotes a cell holding a lone carriage return too (with "\n" it
    leaves it bare, and PostgreSQL ends the row there: "missing data for column …")."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow(["\\N" if _is_null(v) else v for v in row])
    buf.seek(0)
    quoted = ", ".join(f'"{c}"' for c in columns)
    cur.copy_expert(f"COPY {table} ({quoted}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


class _Write:
    """`with conn, conn.cursor()` for a write, with the driver's errors as StoreError (a
    refusal by a trigger or a missing privilege is the user's message, in Chinese first)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def __enter__(self):
        self.cur = self.conn.__enter__().cursor()
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        self.cur.close()
        self.conn.__exit__(exc_type, exc, tb)
        if isinstance(exc, psycopg2.Error):
            raise StoreError(f"写入数据库失败，已全部回滚：{str(exc).strip()}") from exc
        return False


def _insert_incidents(cur, records: pd.DataFrame, events: list[Event]) -> None:
    names = [n for n, _ in INCIDENT_COLUMNS]
    _insert_rows(cur, records[names].to_dict("records"),
                 np.asarray(records.geometry.values, dtype=object), events)


def _insert_rows(cur, records: list[dict], geoms, events: list[Event]) -> None:
    """Incident records (dicts of INCIDENT_COLUMNS), their points and first events."""
    names = [n for n, _ in INCIDENT_COLUMNS]
    geoms = np.asarray(geoms, dtype=object)
    rows = [(*[rec[n] for n in names], wkb)
            for rec, wkb in zip(records, _ewkb(geoms), strict=True)]
    _copy(cur, "incidents", [*names, "geom"], rows)
    states = [
        dict(zip(incident_sql.STATE_NAMES,
                 incident_sql.initial_state(rec, g.x, g.y, None), strict=True))
        for rec, g in zip(records, geoms, strict=True)
    ]
    _write_states(cur, states, insert=True)
    _insert_events(cur, events)


def _insert_events(cur, events: list[Event]) -> None:
    if not events:
        return
    names = [n for n, _ in EVENT_COLUMNS]
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO incident_events ({', '.join(names)}) VALUES %s",
        [e.row() for e in events],
        page_size=2000,
    )
    ids = sorted({e.incident_id for e in events})
    cur.execute(f"SELECT {', '.join(incident_sql.STATE_NAMES)} FROM incident_state "
                "WHERE incident_id = ANY(%s) FOR UPDATE", (ids,))
    states = {r[0]: dict(zip(incident_sql.STATE_NAMES, r, strict=True)) for r in cur.fetchall()}
    for event in events:
        if event.incident_id not in states:
            raise StoreError(f"案件 {event.incident_id} 不存在")
        states[event.incident_id] = incident_sql.apply_event(states[event.incident_id], event)
    _write_states(cur, list(states.values()), insert=False)


def _insert_attachments(cur, files: list[Attachment], visit_id: int | None = None) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cur.executemany(
        "INSERT INTO attachments (incident_id, event_at, name, mime, size, sha256, "
        "created_at, created_by, data, visit_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [(f.incident_id, f.event_at, f.name, f.mime, len(f.data), f.sha256, now,
          f.created_by, f.data, visit_id) for f in files])


def _write_states(cur, states: list[dict], insert: bool) -> None:
    names = incident_sql.STATE_NAMES
    if not states:
        return
    if insert:
        psycopg2.extras.execute_values(
            cur, f"INSERT INTO incident_state ({', '.join(names)}) VALUES %s",
            # A missing code of a pandas string column is NaN: NULL, as COPY writes it above
            # (psycopg2 would send the text 'NaN').
            [tuple(None if _is_null(s[n]) else s[n] for n in names) for s in states],
            page_size=2000)
    else:
        sets = ", ".join(f"{n} = %s" for n in names[1:])
        psycopg2.extras.execute_batch(
            cur, f"UPDATE incident_state SET {sets} WHERE incident_id = %s",
            [(*[s[n] for n in names[1:]], s["incident_id"]) for s in states])


def _append_audit(cur, records: list[AuditRecord]) -> None:
    """Chain `records` onto the head, one writer at a time (the lock ends with the
    transaction, so the entry commits or rolls back with the change it records)."""
    if not records:
        return
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('gridmap audit'))")
    cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    head = cur.fetchone()
    rows = chain(records, int(head[0]) if head else 0, head[1] if head else "")
    psycopg2.extras.execute_values(
        cur, f"INSERT INTO audit_log (seq, {', '.join(AUDIT_NAMES)}) VALUES %s", rows)


# -- the lookup for routing -------------------------------------------------------------------
_ROUTING_POLYGONS = (
    "("
    + " UNION ALL ".join(
        f"SELECT {i}::smallint AS layer, fid, gen_from, gen_to, geom FROM {name}"
        for i, name in enumerate(ROUTING_LAYERS)
    )
    + ")"
)
_IN_GENERATION = "{t}.gen_from <= %(gen)s AND ({t}.gen_to IS NULL OR {t}.gen_to >= %(gen)s)"

# A few points, each looked up through the GiST index of the routing parts (small polygons,
# cheap to test unprepared): inside a part means inside the polygon; on a part's edge the whole
# polygon decides (a seam between parts is still inside, the real boundary is an edge). A point
# on a seam comes back once per part; the finder merges them.
_FEW_POINTS_SQL = f"""
SELECT q.i, p.layer, p.fid,
       CASE WHEN ST_Contains(p.geom, q.pt) THEN false
            ELSE NOT ST_Contains((SELECT o.geom FROM {_ROUTING_POLYGONS} o
                                  WHERE o.layer = p.layer AND o.fid = p.fid), q.pt)
       END AS edge,
       NULL::bytea AS part
FROM {{points}} q JOIN routing_parts p ON ST_Intersects(p.geom, q.pt)
WHERE {_IN_GENERATION.format(t="p")}
"""
# Many points: whole polygons drive the join, each prepared once by PostGIS and tested against
# the points its bounding box finds in their GiST index (measured faster than the parts).
_MANY_POINTS_SQL = f"""
SELECT q.i, o.layer, o.fid, NOT ST_Contains(o.geom, q.pt) AS edge
FROM {_ROUTING_POLYGONS} o JOIN {{points}} q ON ST_Intersects(o.geom, q.pt)
WHERE {_IN_GENERATION.format(t="o")}
"""
# Discs: covered by the whole polygon, or only partly — then the piece inside comes back.
_DISC_HITS_SQL = f"""
SELECT q.i, o.layer, o.fid, NOT ST_Covers(o.geom, q.disc),
       CASE WHEN NOT ST_Covers(o.geom, q.disc)
            THEN ST_AsBinary(ST_Intersection(o.geom, q.disc)) END
FROM {{discs}} q JOIN {_ROUTING_POLYGONS} o ON ST_Intersects(o.geom, q.disc)
WHERE {_IN_GENERATION.format(t="o")}
"""
# Up to INLINE_LIMIT locations in one statement, as array parameters; prepared once per
# connection, so that a route is one EXECUTE with no planning.
_INLINE_SQL = (
    """WITH q AS (
        SELECT u.i, ST_SetSRID(ST_MakePoint(u.x, u.y), 4490) AS pt,
               ST_GeomFromWKB(u.d, 4490) AS disc
        FROM unnest(%(i)s::int[], %(x)s::float8[], %(y)s::float8[], %(d)s::bytea[])
             AS u(i, x, y, d)
    )"""
    + _FEW_POINTS_SQL.format(points="(SELECT i, pt FROM q WHERE disc IS NULL)")
    + " UNION ALL "
    + _DISC_HITS_SQL.format(discs="(SELECT i, disc FROM q WHERE disc IS NOT NULL)")
)
_ONE_POINT_SQL = _FEW_POINTS_SQL.format(
    points="(SELECT 0 AS i, ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), 4490) AS pt)"
)
_PREPARED = {
    "gridmap_one_point": (_ONE_POINT_SQL, ("gen", "x", "y"), "int, float8, float8"),
    "gridmap_inline": (
        _INLINE_SQL,
        ("gen", "i", "x", "y", "d"),
        "int, int[], float8[], float8[], bytea[]",
    ),
}
# A binary COPY row of the batch load: field count, then (length, value) for i, x, y.
_COPY_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("li", ">i4"),
        ("i", ">i4"),
        ("lx", ">i4"),
        ("x", ">f8"),
        ("ly", ">i4"),
        ("y", ">f8"),
    ]
)


def set_batch_parallelism(cur) -> None:
    """The polygon tables are small, yet a batch join is long: let PostgreSQL split them
    between workers anyway, and keep the leader free to gather their rows (measured: 4.2 s ->
    3.7 s for 1,000,000 points on 2 cores)."""
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
        cur.execute(f"SET LOCAL {setting} = 0")
    cur.execute("SET LOCAL parallel_leader_participation = off")


class PostgisFinder:
    """Candidate hits from PostGIS, in the same form as the in-memory finder's."""

    def __init__(self, store: PostgisStore, snapshot: Snapshot) -> None:
        self.store = store
        self.generation = snapshot.generation.id
        # The snapshot's fids per routing layer, ascending (it is read ORDER BY fid): a fid's
        # position in it is the layer row the resolver works with.
        self.fids = [snapshot[name]["fid"].to_numpy(np.int64) for name in ROUTING_LAYERS]

    def find(self, queries: Queries) -> Hits:
        if len(queries) == 1 and queries.radius[0] <= 0:
            params = {
                "gen": self.generation,
                "x": float(queries.lon[0]),
                "y": float(queries.lat[0]),
            }
            return self._hits(*_rows(self._execute("gridmap_one_point", params)))
        if len(queries) <= INLINE_LIMIT:
            discs = [
                None if r <= 0 else psycopg2.Binary(shapely.to_wkb(d))
                for r, d in zip(queries.radius.tolist(), queries.discs, strict=True)
            ]
            params = {
                "gen": self.generation,
                "i": list(range(len(queries))),
                "x": queries.lon.tolist(),
                "y": queries.lat.tolist(),
                "d": discs,
            }
            return self._hits(*_rows(self._execute("gridmap_inline", params)))
        with self.store.lock, self.store.conn, self.store.conn.cursor() as cur:
            return self._hits(*self._batch(cur, queries))

    def _execute(self, name: str, params: dict) -> list[tuple]:
        """EXECUTE a statement prepared on the store's read connection: one round trip."""
        sql, order, types = _PREPARED[name]
        with self.store.lock, self.store.read_conn().cursor() as cur:
            if name not in self.store.prepared:
                positional = sql
                for k, key in enumerate(order, start=1):
                    positional = positional.replace(f"%({key})s", f"${k}")
                cur.execute(f"PREPARE {name} ({types}) AS {positional}")
                self.store.prepared.add(name)
            placeholders = ", ".join(["%s"] * len(order))
            cur.execute(f"EXECUTE {name} ({placeholders})", [params[k] for k in order])
            return cur.fetchall()

    def _batch(self, cur, queries: Queries) -> tuple:
        """Load the locations with a binary COPY, join set-based (in parallel), and read the
        (many) point hits back with COPY too."""
        points, discs = self.load_queries(cur, queries)
        try:
            set_batch_parallelism(cur)
            out = io.StringIO()
            sql = cur.mogrify(_MANY_POINTS_SQL.format(points=points), {"gen": self.generation})
            cur.copy_expert(f"COPY ({sql.decode()}) TO STDOUT", out)
            out.seek(0)
            table = pd.read_csv(
                out,
                sep="\t",
                header=None,
                names=["i", "l", "f", "e"],
                dtype={"i": np.int64, "l": np.int8, "f": np.int64, "e": str},
            )
            arrays = [table[c].to_numpy() for c in ("i", "l", "f")] + [table["e"].to_numpy() == "t"]
            parts: dict[int, bytes] = {}
            if (queries.radius > 0).any():
                cur.execute(_DISC_HITS_SQL.format(discs=discs), {"gen": self.generation})
                *more, more_parts = _rows(cur.fetchall())
                parts = {len(table) + k: v for k, v in more_parts.items()}
                arrays = [np.concatenate([a, b]) for a, b in zip(arrays, more, strict=True)]
        finally:
            cur.execute(f"DROP TABLE IF EXISTS {points}, {discs}")
        return (*arrays, parts)

    @staticmethod
    def load_queries(cur, queries: Queries) -> tuple[str, str]:
        """Two unlogged tables (points, discs) with GiST indexes; returns their names.
        Unlogged rather than temporary: parallel workers can scan them, and they live in
        shared buffers. Two tables, so that the planner sees the real number of each."""
        name = f"{WORK_SCHEMA}.batch_{uuid.uuid4().hex[:16]}"
        points, discs = f"{name}_points", f"{name}_discs"
        n = len(queries)
        rows = np.empty(n, dtype=_COPY_ROW)
        rows["n"], rows["li"], rows["lx"], rows["ly"] = 3, 4, 8, 8
        rows["i"], rows["x"], rows["y"] = np.arange(n), queries.lon, queries.lat
        exact = queries.radius <= 0
        data = b"PGCOPY\n\xff\r\n\0" + b"\0" * 8 + rows[exact].tobytes() + b"\xff\xff"
        cur.execute("CREATE TEMP TABLE route_load (i integer, x float8, y float8) ON COMMIT DROP")
        cur.copy_expert("COPY route_load FROM STDIN WITH (FORMAT binary)", io.BytesIO(data))
        cur.execute(
            f"CREATE UNLOGGED TABLE {points} AS "
            "SELECT i, ST_SetSRID(ST_MakePoint(x, y), 4490) AS pt FROM route_load"
        )
        cur.execute(f"CREATE INDEX ON {points} USING gist (pt)")
        cur.execute(f"ANALYZE {points}")
        cur.execute(
            f"CREATE UNLOGGED TABLE {discs} (i integer PRIMARY KEY, disc geometry(Polygon, 4490))"
        )
        wide = np.flatnonzero(~exact)
        if len(wide):
            psycopg2.extras.execute_values(
                cur,
                f"INSERT INTO {discs} VALUES %s",
                list(zip(wide.tolist(), _ewkb(queries.discs[wide]), strict=True)),
                page_size=2000,
            )
            cur.execute(f"CREATE INDEX ON {discs} USING gist (disc)")
            cur.execute(f"ANALYZE {discs}")
        return points, discs

    def _hits(self, query, layer, fid, edge, parts: dict[int, bytes]) -> Hits:
        """Arrays of (query, layer, fid, edge), disc pieces by row -> Hits in snapshot rows."""
        row = np.empty(len(fid), dtype=np.int64)
        for k in range(len(ROUTING_LAYERS)):
            mine = layer == k
            if mine.any():
                found = np.minimum(np.searchsorted(self.fids[k], fid[mine]),
                                   max(len(self.fids[k]) - 1, 0))
                if not len(self.fids[k]) or (self.fids[k][found] != fid[mine]).any():
                    # A polygon the snapshot does not hold: a place outside a scoped
                    # snapshot's box. Never answered with another row.
                    raise ValueError(f"{ROUTING_LAYERS[k]} 中有不在本快照中的要素")
                row[mine] = found
        pieces = {i: shapely.from_wkb(bytes(p)) for i, p in parts.items()}
        return Hits(
            np.asarray(layer, np.int8),
            np.asarray(query, np.int64),
            row,
            np.asarray(edge, bool),
            pieces,
        )


def _rows(rows: list[tuple]) -> tuple:
    """Statement rows (i, layer, fid, edge, part) -> arrays. A point on a seam between two
    parts of one polygon comes back once per part: one row is kept, inside if any says so."""
    merged: dict[tuple, list] = {}
    for i, layer, fid, edge, part in rows:
        seen = merged.get((i, layer, fid))
        if seen is None:
            merged[(i, layer, fid)] = [edge, part]
        else:
            seen[0] = seen[0] and edge
    keys = list(merged)
    query = np.array([k[0] for k in keys], dtype=np.int64)
    layer = np.array([k[1] for k in keys], dtype=np.int8)
    fid = np.array([k[2] for k in keys], dtype=np.int64)
    edge = np.array([v[0] for v in merged.values()], dtype=bool)
    parts = {n: v[1] for n, v in enumerate(merged.values()) if v[1] is not None}
    return query, layer, fid, edge, parts

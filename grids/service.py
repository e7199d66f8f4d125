"""The service layer: every action of gridmap as a method that takes the acting user.

The web pages, the command line and the HTTP API call these methods and nothing below them:
no page opens the store. Each method checks the actor's permission itself (grids/access.py,
grids/permissions.csv) and records what it changed in the audit trail, in the same transaction
as the change; a page that forgets to check is still refused here.

A `Gridmap` is cheap to keep for the life of a process: stores are opened per thread (a sqlite
connection belongs to the thread that opened it) and routers are kept per generation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from grids import accounts, cases, intake, portfolio
from grids.access import ROLES_ZH, ROSTER_ROLE, Actor
from grids.acting import Acting
from grids.flow import CaseError
from grids.roster import roster
from grids.routing import Router, route_extent_once, route_once
from layers.audit import AuditRecord, Verification, verify
from layers.schema import WORKER_ROLE_ZH
from layers.store import (
    AuditQuery,
    Generation,
    IncidentQuery,
    Store,
    StoreError,
    UserRecord,
    open_store,
    store_url,
)

# Open-incident lists kept for the city map (per actor, incidents stamp and minute).
MAP_INCIDENT_ENTRIES = 64


@dataclass(frozen=True)
class UserView:
    """An account as the user list shows it (never the password hash)."""

    login: str
    role: str
    name: str
    worker_id: str
    bureau_code: str
    disabled: bool
    locked_until: str
    failed_count: int
    created_at: str
    updated_at: str


class Gridmap:
    def __init__(self, url: str | None = None, *, create: bool = False) -> None:
        self.url = store_url(url)
        self._create = create
        self._local = threading.local()
        self._routers: dict[tuple, Router] = {}
        self._derived: dict[tuple, object] = {}
        self._router_lock = threading.Lock()
        self._serving = False  # set by `warm`: a served process, which keeps rasters ready

    # -- plumbing ---------------------------------------------------------------------------------
    def store(self) -> Store:
        """This thread's store (opened on first use)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.url, create=self._create)
            self._local.store = store
        return store

    def close(self) -> None:
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None

    def current_generation(self) -> int:
        return self._generation(None)[0]

    def _generation(self, generation: int | None) -> tuple[int, str]:
        """(id, created_at) of a generation (default: the current one), in one query."""
        gens = self.store().generations()
        if not gens:
            raise StoreError(
                "数据库中还没有任何图层，请先运行 `gridmap demo` 或 `gridmap import`。")
        if generation is None:
            return gens[-1].id, gens[-1].created_at
        found = next((g for g in gens if g.id == generation), None)
        if found is None:
            raise StoreError(f"版本 {generation} 不存在（现有版本 1–{gens[-1].id}）")
        return found.id, found.created_at

    def _router(self, generation: int | None = None) -> Router:
        """The router of a generation (default: the current one), shared across threads."""
        key = self._generation(generation)
        gen = key[0]
        with self._router_lock:
            if key not in self._routers:
                if len(self._routers) >= 4:
                    self._routers.pop(next(iter(self._routers)))
                # A store of its own: routing reads happen from many threads (PostGIS routes
                # on an autocommit connection; the embedded finder is in memory).
                router = self._routers[key] = Router(open_store(self.url), gen)
                if self._serving and generation is None:
                    # A version published while the process serves: its face raster read or
                    # built beside the requests (their single routes take the store's SQL
                    # until it is there), as `warm` did for the version it started with.
                    threading.Thread(target=router.resolver.faces, name="faces",
                                     daemon=True).start()
            return self._routers[key]

    def warm(self) -> None:
        """Load the current layers and what every page derives from them before the first
        visitor asks (a served process's start: otherwise its first visitors wait for it).
        Shows nobody anything: no actor."""
        router = self._router()
        portfolio.worker_index(router.snapshot)
        roster(router.snapshot)
        # The face raster (read from its cache file, or built once per layer version): single
        # routes — clicks, intake, the API — then skip the geometry tests away from boundaries.
        router.resolver.faces()
        self.serving()

    def serving(self) -> None:
        """A served process from now on: the face raster of a version published later is read
        or built in the background as soon as a request meets that version."""
        self._serving = True

    def acting(self, actor: Actor, generation: int | None = None) -> Acting:
        return Acting(actor, self.store(), lambda: self._router(generation).snapshot)

    def require(self, actor: Actor, action: str, target: str = "") -> str:
        """The actor's scope of `action`, or PermissionDenied, the refusal audited (a page
        opened by its address by someone it is not for)."""
        return self.acting(actor).require(action, target)

    # -- signing in -------------------------------------------------------------------------------
    def sign_in(self, login: str, password: str, client: str = "") -> accounts.SignedIn:
        return accounts.sign_in(self.store(), login, password, client)

    def actor_for(self, token: str | None) -> Actor | None:
        return accounts.session_actor(self.store(), token)

    def sign_out(self, token: str | None) -> bool:
        return accounts.sign_out(self.store(), token)

    def is_sample_store(self) -> bool:
        """Whether this is the demo sample (the login page then says its accounts are demo
        accounts); nothing else is told before signing in."""
        from grids.demo_users import DEMO_MARK

        return self.store().user(DEMO_MARK) is not None

    # -- layers and routing -----------------------------------------------------------------------
    def router_for(self, actor: Actor, action: str, generation: int | None = None) -> Router:
        """The layers (default: current) for a page or command the actor may use for
        `action`."""
        self.acting(actor).require(action)
        return self._router(generation)

    def map_router(self, actor: Actor) -> Router:
        """The current layers for the city map (every layer, every worker's phone)."""
        return self.router_for(actor, "map.city")

    def batch_router(self, actor: Actor, generation: int | None = None) -> Router:
        """The router a batch is routed with (the batch page and `gridmap assign`)."""
        return self.router_for(actor, "batch.assign", generation)

    def route(self, actor: Actor, x: float, y: float, crs: str = "wgs84",
              accuracy_m: float = 0.0, generation: int | None = None, at=None,
              once: bool = False) -> dict:
        """The answer with the current layers, a `generation`, or the layers current `at` a
        time (ISO 8601 or datetime; no zone = Beijing time: `gridmap route --at`). `once`:
        one answer and no more (the command line): only the grids around the place are read
        and no router is kept (grids/routing.route_once)."""
        self.acting(actor).require("route")
        if once:
            return route_once(self.store(), x, y, crs, accuracy_m, self._as_of(generation, at))
        return self._router(self._as_of(generation, at)).route(x, y, crs, accuracy_m)

    def route_extent(self, actor: Actor, extent, crs: str = "wgs84",
                     generation: int | None = None, at=None, once: bool = False) -> dict:
        """A line or an area (WKT, GeoJSON or shapely in `crs`): led by the lowest bureau
        covering all of it (cross-county: the municipal bureau), with every grid and worker it
        touches (`gridmap route --wkt/--geojson`; `once` as for `route`)."""
        self.acting(actor).require("route")
        if once:
            return route_extent_once(self.store(), extent, crs, self._as_of(generation, at))
        return self._router(self._as_of(generation, at)).route_extent(extent, crs)

    def _as_of(self, generation: int | None, at) -> int | None:
        """The generation asked for, or the one current at time `at`."""
        from layers.versions import VersionError, beijing_time, parse_at

        if at is None or at == "":
            return generation
        if generation is not None:
            raise VersionError("按版本号和按时间查询只能选其一（--generation 或 --at）")
        found = self.store().generation_at(at)
        if found is None:
            gens = self.store().generations()
            first = f"：最早的版本是 {gens[0].id}" if gens else ""
            raise VersionError(f"{beijing_time(parse_at(at))}（北京时间）时还没有任何图层版本"
                               + first)
        return found.id

    def route_area(self, actor: Actor, kind: str, code: str,
                   generation: int | None = None) -> dict:
        """A whole named area (kind township, park, community, grid, county or sea) as an
        extent: its bureau and every grid and worker in it."""
        self.acting(actor).require("route")
        return self._router(generation).route_area(kind, code)

    def search_index(self, actor: Actor):
        """Search over entities, codes, townships and workers (names and phones): the city
        map's roles only."""
        from layers import search

        self.acting(actor).require("map.city")
        router = self._router()
        key = ("search", router.snapshot.generation.id, router.snapshot.generation.created_at)
        with self._router_lock:
            found = self._derived.get(key)
        if found is None:
            found = search.index_for(router.snapshot)
            with self._router_lock:
                self._derived = {k: v for k, v in self._derived.items() if k[0] != "search"}
                self._derived[key] = found
        return found

    def bureau_names(self, actor: Actor) -> dict[str, str]:
        """Bureau names (reference data for whoever reads layers or cases)."""
        from grids.access import can

        acting = self.acting(actor)
        if not can(actor, "case.read"):
            acting.require("layers.read")
        b = self._router().snapshot["bureaus"]
        return dict(zip(b["code"].astype(str), b["name"].astype(str), strict=True))

    def area(self, actor: Actor, code: str) -> dict | None:
        """One unit of the current layers (a grid, township, county, park or sea area) as a
        GeoJSON Feature with its attributes (a grid with its workers), or None."""
        import shapely

        self.acting(actor).require("layers.read", code)
        snap = self._router().snapshot
        for layer in ("grids", "townships", "counties", "parks", "sea_areas"):
            if layer not in snap.layers:
                continue
            frame = snap[layer]
            rows = frame[frame["code"].astype(str) == str(code)]
            if not len(rows):
                continue
            row = rows.iloc[0]
            props = {k: (None if v is None or v == "" else v) for k, v in row.items()
                     if k not in ("geometry", "fid", "attrs")}
            props.update(row["attrs"] or {})
            props["layer"] = layer
            if layer == "grids":
                workers = snap["workers"]
                mine = workers[workers["grid_code"] == code]
                props["workers"] = [{"id": str(w.id), "name": w.name, "phone": w.phone,
                                     "role": w.role} for w in mine.itertuples(index=False)]
            gen = snap.generation
            props["version"] = {"generation": gen.id, "created_at": gen.created_at}
            return {"type": "Feature", "id": str(code), "properties": props,
                    "geometry": shapely.geometry.mapping(row.geometry)}
        return None

    def layer_versions(self, actor: Actor) -> tuple[list, dict]:
        """(generations, counts of the current snapshot)."""
        self.acting(actor).require("layers.read")
        gens = self.store().generations()
        if not gens:
            raise StoreError("数据库中还没有图层，请先运行 `gridmap demo` 或 `gridmap import`")
        return gens, self._router().snapshot.counts()

    def import_layers(self, actor: Actor, path: Path, *, crs: str | None = None,
                      encoding: str | None = None, note: str = ""):
        """Import a layer set (all or nothing), audited with what it replaced."""
        from layers.importer import import_path

        acting = self.acting(actor)
        acting.require("layers.import", str(path))
        audit = acting.record("import", Path(path).name, note=note)
        return import_path(self.store(), path, crs=crs, encoding=encoding, note=note,
                           audit=audit)

    # -- versions, drafts and publishing (planners: grids/publishing.py) -------------------------
    def generation_at(self, actor: Actor, at) -> Generation | None:
        """The generation that was current at `at` (None before the first)."""
        self.acting(actor).require("layers.read")
        return self.store().generation_at(at)

    def versions(self, actor: Actor) -> list[Generation]:
        """Every version, oldest first, with who (`actor`), why (`note`), what changed
        (`changes`: layer -> added/changed/removed/unchanged counts)."""
        self.acting(actor).require("layers.read")
        return self.store().generations()

    def version_diff(self, actor: Actor, generation: int, layer: str):
        """The rows one version closed and added in one layer (the history's map diff)."""
        from grids import publishing

        self.acting(actor).require("layers.read", f"{layer}@{generation}")
        return publishing.version_diff(self.store(), int(generation), layer)

    def create_draft(self, actor: Actor, layer, note: str = ""):
        """A new draft of one layer (or several) starting from the current version."""
        from grids import publishing

        return publishing.create_draft(self.acting(actor), layer, note)

    def drafts(self, actor: Actor, status: str | None = "draft") -> list:
        from grids import publishing

        return publishing.drafts(self.acting(actor), status)

    def draft(self, actor: Actor, draft_id: int):
        from grids import publishing

        return publishing.draft(self.acting(actor), draft_id)

    def draft_features(self, actor: Actor, draft_id: int, layer: str) -> pd.DataFrame:
        """A layer as the draft proposes it (the current layer with its edits)."""
        from grids import publishing

        return publishing.draft_features(self.acting(actor), draft_id, layer)

    def save_draft(self, actor: Actor, draft_id: int, data, *, layer: str | None = None,
                   note: str | None = None, expected_revision: int | None = None):
        """Save a whole proposed layer (GeoDataFrame), several ({layer: frame}) or
        `grids.publishing.FeatureEdits`; the previous content can be restored by undo."""
        from grids import publishing

        return publishing.save_draft(self.acting(actor), draft_id, data, layer=layer,
                                     note=note, expected_revision=expected_revision)

    def undo_draft(self, actor: Actor, draft_id: int):
        from grids import publishing

        return publishing.undo_draft(self.acting(actor), draft_id)

    def rebase_draft(self, actor: Actor, draft_id: int, *, overwrite: bool = False):
        """The draft on the newest version; publishing.RebaseClash when it edits features
        changed meanwhile, unless `overwrite`."""
        from grids import publishing

        return publishing.rebase_draft(self.acting(actor), draft_id, overwrite=overwrite)

    def discard_draft(self, actor: Actor, draft_id: int):
        from grids import publishing

        return publishing.discard_draft(self.acting(actor), draft_id)

    def read_layer_file(self, actor: Actor, path: Path, layer: str, *, crs: str | None = None,
                        encoding: str | None = None) -> pd.DataFrame:
        """An uploaded layer file (GeoJSON, KML, GeoPackage, zipped Shapefile) checked as an
        import checks it, ready for `save_draft`."""
        from grids import publishing

        self.acting(actor).require("layers.publish", Path(path).name)
        return publishing.read_layer_file(Path(path), layer, crs=crs, encoding=encoding)

    def check_draft(self, actor: Actor, draft_id: int) -> list:
        from grids import publishing

        return publishing.check_draft(self.acting(actor), draft_id)

    def publish_draft(self, actor: Actor, draft_id: int,
                      acknowledged_warnings: list[str] | tuple = ()) -> Generation:
        """Publish a draft as a new version (one transaction, audited). Refused with the draft
        kept: LayerConflict (someone published one of its layers since it began),
        PublishBlocked (check errors, warnings not acknowledged)."""
        from grids import publishing

        return publishing.publish_draft(self.acting(actor), draft_id, acknowledged_warnings)

    def rollback_changes(self, actor: Actor, layer, to_generation: int
                         ) -> dict[str, dict[str, int]]:
        """Per layer, the features a rollback would add, change and remove (before asking)."""
        from grids import publishing

        return publishing.rollback_changes(self.acting(actor), layer, to_generation)

    def rollback(self, actor: Actor, layer, to_generation: int, note: str,
                 acknowledged_warnings: list[str] | tuple = ()) -> Generation:
        """Publish the features `layer` had in `to_generation` as a new version (audited)."""
        from grids import publishing

        return publishing.rollback(self.acting(actor), layer, to_generation, note,
                                   acknowledged_warnings)

    def impact(self, actor: Actor, draft_id: int):
        """Who changes hands if the draft is published (grids.publishing.Impact)."""
        from grids import publishing

        return publishing.impact(self.acting(actor), draft_id)

    def impact_excel(self, actor: Actor, draft_id: int) -> bytes:
        from grids import publishing

        acting = self.acting(actor)
        found = publishing.impact(acting, draft_id)
        return publishing.impact_excel(found, publishing.draft(acting, draft_id))

    # -- data quality (数据质检: grids/checks.py, grids/validate.py) -------------------------------
    def check_layers(self, actor: Actor, replacements: dict | None = None, *, settings=None):
        """The findings over the current layers (some replaced by `replacements`, frames in
        the store's form), as a `grids.validate.CheckReport`. The current layers' report is
        kept per generation (the data-quality page reruns on every filter)."""
        from grids import validate

        self.acting(actor).require("layers.check")
        snapshot = self._router().snapshot
        if replacements or settings is not None:
            return validate.check_snapshot(snapshot, replacements, settings=settings)
        key = ("checks", snapshot.generation.id, snapshot.generation.created_at)
        with self._router_lock:
            found = self._derived.get(key)
        if found is None:
            found = validate.check_snapshot(snapshot)
            with self._router_lock:
                self._derived = {k: v for k, v in self._derived.items() if k[0] != "checks"}
                self._derived[key] = found
        return found

    def check_path(self, actor: Actor, path: Path, *, crs: str | None = None,
                   encoding: str | None = None, settings=None):
        """A folder or zip in the import format checked as it would be published over the
        current layers (`gridmap validate DIR`); nothing is written."""
        from grids import validate

        self.acting(actor).require("layers.check", Path(path).name)
        return validate.check_path(self._router().snapshot, path, crs=crs, encoding=encoding,
                                   settings=settings)

    def check_draft_report(self, actor: Actor, draft_id: int, *, settings=None):
        """The layers as a planner's draft would leave them, checked, as a CheckReport
        (`gridmap validate --draft ID`; `layers.check`, where `check_draft` is the planner's
        list of findings under `layers.publish`)."""
        from grids import validate
        from layers.schema import LAYERS
        from layers.versions import VersionError, apply_edits

        self.acting(actor).require("layers.check", f"draft:{draft_id}")
        record = self.store().draft(int(draft_id))
        if record is None:
            raise VersionError(f"草稿 {draft_id} 不存在")
        snapshot = self.store().snapshot()
        edits = record.content.get("layers", {})
        frames = {name: apply_edits(LAYERS[name], snapshot[name], edits[name])
                  for name in record.layers if edits.get(name)}
        return validate.check_snapshot(
            snapshot, frames, settings=settings,
            subject_zh=f"草稿 {record.id}（{record.note or '无说明'}；{record.status}）修改 "
                       f"{'、'.join(sorted(frames)) or '（尚无修改）'} 后的图层"
                       f"（基于当前版本 {snapshot.generation.id}）")

    def record_batch(self, actor: Actor, name: str, counts: dict) -> None:
        acting = self.acting(actor)
        acting.require("batch.assign", name)
        self.store().append_audit([acting.record("batch.assign", name, counts=counts)])

    # -- intake and cases -------------------------------------------------------------------------
    def intake(self, actor: Actor, x: float, y: float, **kwargs) -> intake.IntakeAnswer:
        acting = self.acting(actor)
        return intake.intake(self._router(), acting, x, y, **kwargs)

    def intake_extent(self, actor: Actor, extent, **kwargs):
        acting = self.acting(actor)
        return intake.intake_extent(self._router(), acting, extent, **kwargs)

    def intake_area(self, actor: Actor, kind: str, code: str, **kwargs):
        """A township, park, community, grid (or county, sea area) chosen from search, taken
        as the whole area: (IntakeAnswer, outline in EPSG:4490) like `intake_extent`, the
        answer naming the area in `point.input.area`. kwargs: category, now."""
        from grids.routing import mark_area

        acting = self.acting(actor)
        acting.require("case.create")
        router = self._router()
        geom = router.area_of(kind, code)
        answer, geom = intake.intake_extent(router, acting, geom, crs="cgcs2000", **kwargs)
        # After the referral, when the category goes to a partner agency.
        mark_area(answer.route, router.area_ref(kind, code), 1 if answer.referral else 0)
        return answer, geom

    def create_case(self, actor: Actor, answer: dict, fields: dict,
                    request_id: str | None = None) -> str:
        """A new case; with the client's `request_id`, a retry returns the same case."""
        return cases.create_incident(self.acting(actor), answer, fields, request_id)

    def case_for_request(self, actor: Actor, request_id: str) -> pd.Series | None:
        """The case this actor's client request id already made (a retried request), read
        like any case (`case.read`), or None."""
        incident_id = self.store().request_case(cases.request_key(actor, request_id))
        return None if incident_id is None else self.case(actor, incident_id)

    def step_case(self, actor: Actor, incident_id: str, target: str, reason: str = "",
                  expected_status: str | None = None, files: list | None = None,
                  data: dict | None = None):
        """One workflow step with its result text and (where the workflow allows) photos or
        documents as `grids.evidence.Upload`s; `data` is what the device measured."""
        return cases.transition(self.acting(actor), incident_id, target, reason,
                                expected_status=expected_status, files=files, data=data)

    def mark_case(self, actor: Actor, incident_id: str, mark: str,
                  position: tuple[float, float, float] | None = None):
        """A progress mark on a case (接单, 到达现场 with the phone's position and its distance
        from the reported place); the case stays in its state."""
        return cases.mark(self.acting(actor), incident_id, mark, position)

    # -- patrols (巡查) ------------------------------------------------------------------------
    def record_visit(self, actor: Actor, entity_id: str, answers: dict[str, str], **kwargs):
        """A patrol visit to an entity of the actor's units (grids.patrols.record_visit;
        kwargs: note, position, files, file_case, now)."""
        from grids import patrols

        return patrols.record_visit(self.acting(actor), self._router(), entity_id, answers,
                                    **kwargs)

    def entity_visits(self, actor: Actor, entity_id: str, limit: int = 20) -> pd.DataFrame:
        """An entity's visits, newest first (read like its worker's page: `worker.view`)."""
        from grids import patrols

        acting = self.acting(actor)
        _, answer = patrols.entity_place(acting, self._router(), entity_id)
        mine = set(patrols.answer_grids(answer)) & set(acting.own_grids)
        if acting.require("worker.view", str(entity_id)) == "own" and not mine:
            acting.deny("worker.view", str(entity_id),
                        f"{actor.label} 无权限查看该监管对象的巡查记录")
        return patrols.entity_visits(acting, entity_id, limit)

    def visit_files(self, actor: Actor, visit_id: int, entity_id: str):
        """The photos of one visit of an entity the actor may see."""
        visits = self.entity_visits(actor, entity_id, limit=500)
        if int(visit_id) not in set(visits["id"].astype(int)):
            raise CaseError(f"巡查记录 {visit_id} 不属于该监管对象")
        return self.store().visit_attachments(int(visit_id))

    def coverage(self, actor: Actor, worker_id: str, days: int = 30,
                 now: datetime | None = None):
        """The visit coverage of a worker's (or leader's) units over the last `days`."""
        from grids import patrols

        acting = self.acting(actor)
        acting.require_worker("patrol.coverage", worker_id)
        mine = portfolio.build_portfolio(self._router(), worker_id, self.store())
        codes = tuple(mine.grids["code"].astype(str))
        return patrols.coverage(acting, self._router(), codes, mine.entities, days, now)

    def coverage_excel(self, actor: Actor, worker_id: str, days: int = 30) -> bytes:
        from grids import patrols

        return patrols.coverage_excel(self.coverage(actor, worker_id, days))

    def case_page(self, actor: Actor, filt: cases.CaseFilter, *, now: datetime | None = None,
                  page: int = 0, size: int = 50) -> cases.CasePage:
        """One page of the case console (filtered, sorted by deadline, paged in the store)."""
        return cases.case_page(self.acting(actor), filt, now=now, page=page, size=size)

    def case_counts(self, actor: Actor, now: datetime | None = None) -> dict[str, int]:
        return cases.console_counts(self.acting(actor), now)

    def case_files(self, actor: Actor, incident_id: str):
        """The files attached to a case's steps (without their bytes)."""
        return cases.case_files(self.acting(actor), incident_id)

    def case_file(self, actor: Actor, attachment_id: int):
        """(info, bytes) of one attached file, if the actor may read its case."""
        return cases.case_file(self.acting(actor), attachment_id)

    def reassign_case(self, actor: Actor, incident_id: str, reason: str, *,
                      grid_code: str | None = None, bureau_code: str | None = None):
        return cases.reassign(self.acting(actor), incident_id, reason, grid_code=grid_code,
                              bureau_code=bureau_code)

    def link_duplicate(self, actor: Actor, report: str, original_id: str):
        return cases.link_duplicate(self.acting(actor), report, original_id)

    def file_batch(self, actor: Actor, frame: pd.DataFrame, *, file_key: str, name: str = "",
                   crs: str | None = None, on_duplicate: str = "link", now: datetime | None = None,
                   progress: Callable[[int, int], None] | None = None):
        """File the rows of a complaint table as cases (the batch page): per row filed, linked
        to the open case it repeats (`on_duplicate="link"`; "file" files it anyway) or refused
        with the reason; the same `file_key` sent again files nothing twice. Returns a
        `grids.batch.BatchFiling`."""
        from grids import batch

        return batch.file_cases(self.acting(actor), self._router(), frame, file_key=file_key,
                                name=name, crs=crs, on_duplicate=on_duplicate, now=now,
                                progress=progress)

    def cases(self, actor: Actor, query: IncidentQuery | None = None,
              now: datetime | None = None) -> pd.DataFrame:
        return cases.case_list(self.acting(actor), query, now)

    def case(self, actor: Actor, incident_id: str) -> pd.Series:
        return cases.current_case(self.acting(actor), incident_id)

    def case_events(self, actor: Actor, incident_id: str) -> pd.DataFrame:
        return cases.case_events(self.acting(actor), incident_id)

    def case_router(self, actor: Actor, incident_id: str) -> Router:
        """The router of the generation a case was routed with (to reproduce its answer)."""
        case = cases.current_case(self.acting(actor), incident_id)
        return self._router(int(case["generation"]))

    def map_incidents(self, actor: Actor, now: datetime | None = None) -> pd.DataFrame:
        """The open incidents the actor may read, for the city map (with their step's time
        limit and overdue level): read again only when an incident has changed (the store's
        incidents stamp) or a minute has passed (overdue levels move with the clock), not at
        every click on the map."""
        acting = self.acting(actor)
        acting.require("case.read")
        now = now or datetime.now(UTC)
        key = ("map_incidents", actor, self.store().incidents_stamp(),
               int(now.timestamp() // 60))
        with self._router_lock:
            found = self._derived.get(key)
        if found is None:
            found = portfolio.open_incidents(
                cases.case_list(acting, IncidentQuery(not_statuses=("closed",)), now))
            with self._router_lock:
                kept = [k for k in self._derived if k[0] == "map_incidents"]
                for old in kept[: max(0, len(kept) - MAP_INCIDENT_ENTRIES + 1)]:
                    self._derived.pop(old, None)
                self._derived[key] = found
        return found.copy()

    def open_incidents(self, actor: Actor) -> pd.DataFrame:
        """Open incidents the actor may read (for maps and lists)."""
        acting = self.acting(actor)
        query = acting.incident_query("case.read", IncidentQuery(not_statuses=("closed",)))
        return portfolio.open_incidents(self.store().query_incidents(query))

    def can_take(self, actor: Actor, case: pd.Series | dict, action: str = "case.step") -> bool:
        """Whether the actor may `action` this case at all (to show or hide buttons; the
        actions check again themselves)."""
        return self.acting(actor).may_case(action, case)

    # -- performance figures (绩效考评) ------------------------------------------------------------
    def stats(self, actor: Actor, since=None, until=None, *, bureau_code: str | None = None,
              township_code: str | None = None, now: datetime | None = None):
        """Figures per bureau and per township of the cases reported between two Beijing dates
        (texts like 2026-11-01 or dates; default the last 30 days), as grids/stats.py defines
        them; `stats.read`, an own scope filtered in the store."""
        from grids import stats

        period = since if isinstance(since, stats.Period) else stats.Period.parse(since, until)
        return stats.performance(self.acting(actor), period, bureau_code=bureau_code,
                                 township_code=township_code, now=now)

    def stats_choices(self, actor: Actor) -> tuple[dict[str, str], dict[str, str]]:
        """The bureaus and townships the actor may narrow `stats` to (code -> name)."""
        from grids import stats

        return stats.choices(self.acting(actor))

    def stats_excel(self, actor: Actor, result) -> bytes:
        """The workbook of a `stats` result (checked again: a page may hold an old result)."""
        from grids import stats

        self.acting(actor).require(stats.ACTION)
        return stats.excel(result)

    # -- grid workers -----------------------------------------------------------------------------
    def workers(self, actor: Actor) -> pd.DataFrame:
        """The workers the actor may open (a grid worker: themselves; a leader: their units'),
        phones shown only where the actor may see them."""
        acting = self.acting(actor)
        found = acting.require("worker.view")
        index = portfolio.worker_index(acting.snapshot,
                                       acting.own_workers if found == "own" else None)
        return _mask_phones(acting, index).reset_index(drop=True)

    def worker_portfolio(self, actor: Actor, worker_id: str) -> portfolio.Portfolio:
        acting = self.acting(actor)
        acting.require_worker("worker.view", worker_id)
        router = self._router()
        grids = tuple(sorted(set(roster(router.snapshot).of_worker(worker_id)["grid_code"])))
        found = self.store().query_incidents(IncidentQuery(not_statuses=("closed",),
                                                           grid_codes=grids))
        mine = portfolio.build_portfolio(router, worker_id, self.store(),
                                         portfolio.open_incidents(found))
        if not acting.sees_all_phones():
            mine.grids["others"] = [_colleague_text(acting, router, c) for c in mine.grids["code"]]
        return mine

    def roster_excel(self, actor: Actor, worker_id: str) -> bytes:
        acting = self.acting(actor)
        acting.require_worker("roster.export", worker_id)
        data = portfolio.roster_excel(self.worker_portfolio(actor, worker_id))
        self.store().append_audit([acting.record("roster.export", worker_id)])
        return data

    # -- users ------------------------------------------------------------------------------------
    def add_user(self, actor: Actor, login: str, role: str, password: str, *, name: str = "",
                 worker_id: str = "", bureau_code: str = "") -> UserView:
        acting = self.acting(actor)
        acting.require("users.manage", login)
        user = accounts.new_user(login, role, password, name=name, worker_id=worker_id,
                                 bureau_code=bureau_code)
        self._check_links(acting, user)
        self.store().add_user(user, audit=acting.record("user.add", login, after=user.public()))
        return _view(user)

    def set_password(self, actor: Actor, login: str, password: str) -> None:
        acting = self.acting(actor)
        if actor.login != login:  # everyone may change their own password
            acting.require("users.manage", login)
        accounts.require_person(self.store(), login)
        problem = accounts.password_problem(password)
        if problem:
            raise accounts.AuthError(problem)
        self.store().update_user(
            login, {"password_hash": accounts.hash_password(password), "failed_count": 0,
                    "locked_until": "", "updated_at": _now()},
            audit=acting.record("user.passwd", login))
        self.store().end_sessions(login=login)  # a new password signs every session out

    def set_disabled(self, actor: Actor, login: str, disabled: bool = True) -> None:
        acting = self.acting(actor)
        acting.require("users.manage", login)
        user = accounts.require_person(self.store(), login)
        if user.disabled == disabled:  # nothing to change, nothing to audit
            raise accounts.AuthError(f"用户 {login} 已{'停用' if disabled else '启用'}")
        self.store().update_user(
            login, {"disabled": disabled, "updated_at": _now()},
            audit=acting.record("user.disable" if disabled else "user.enable", login,
                                before={"disabled": user.disabled},
                                after={"disabled": disabled}))
        if disabled:
            self.store().end_sessions(login=login)

    def users(self, actor: Actor) -> list[UserView]:
        """People's accounts (API keys are listed by `api_keys`)."""
        self.acting(actor).require("users.manage")
        return [_view(u) for u in self.store().users()
                if not u.login.startswith(accounts.API_PREFIX)]

    # -- API keys ---------------------------------------------------------------------------------
    def add_api_key(self, actor: Actor, name: str, role: str) -> tuple[str, UserView]:
        """A new key for another system (the key itself is returned once, never stored)."""
        acting = self.acting(actor)
        acting.require("users.manage", name)
        key, user = accounts.new_api_key(name, role)
        self.store().add_user(user, audit=acting.record("apikey.add", user.login,
                                                        after=user.public()))
        return key, _view(user)

    def api_keys(self, actor: Actor) -> list[UserView]:
        self.acting(actor).require("users.manage")
        return [_view(u) for u in self.store().users()
                if u.login.startswith(accounts.API_PREFIX)]

    def revoke_api_key(self, actor: Actor, key_id: str) -> None:
        login = key_id if key_id.startswith(accounts.API_PREFIX) else accounts.API_PREFIX + key_id
        acting = self.acting(actor)
        acting.require("users.manage", login)
        user = self.store().user(login)
        if user is None:
            raise StoreError(f"接口密钥 {accounts.clean_login(key_id)} 不存在（见 gridmap apikey "
                             "list）")
        if user.disabled:
            raise accounts.AuthError(f"接口密钥 {key_id} 已吊销")
        # For good: the stored digest goes too, so that no later change can bring it back.
        self.store().update_user(login, {"disabled": True, "password_hash": "revoked$",
                                         "updated_at": _now()},
                                 audit=acting.record("apikey.revoke", login))

    def actor_for_key(self, key: str | None) -> Actor | None:
        return accounts.api_key_actor(self.store(), key)

    def take_token(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """A rate limit's token bucket (`Store.take_token`): 0 when let through, else the
        seconds to wait. With PostGIS one bucket for every process of the deployment."""
        return self.store().take_token(bucket, rate, burst, cost)

    def _check_links(self, acting: Acting, user: UserRecord) -> None:
        """A worker account names a roster id, a bureau account a bureau code, that exist."""
        if not (user.worker_id or user.bureau_code):
            return
        try:
            snap = acting.snapshot
        except StoreError as exc:
            raise accounts.AuthError(f"关联花名册或执法机构前需先导入图层：{exc}") from exc
        if user.worker_id:
            workers = snap["workers"]
            rows = workers[workers["id"].astype(str) == user.worker_id]
            if not len(rows):
                raise accounts.AuthError(f"花名册中没有编号为 {user.worker_id} 的网格员")
            # A worker's account on a leader's roster id (or the reverse) would give the
            # person the other's grids and pages: the roster's role must be the account's.
            wanted = ROSTER_ROLE[user.role]
            if wanted not in set(rows["role"].astype(str)):
                held = "、".join(WORKER_ROLE_ZH.get(r, r) for r in dict.fromkeys(rows["role"]))
                raise accounts.AuthError(
                    f"花名册编号 {user.worker_id} 的岗位是{held}，不能用于"
                    f"{ROLES_ZH[user.role]}账号（须为{WORKER_ROLE_ZH[wanted]}）")
        if user.bureau_code and user.bureau_code not in set(snap["bureaus"]["code"].astype(str)):
            raise accounts.AuthError(f"没有编码为 {user.bureau_code} 的执法机构")

    # -- audit ------------------------------------------------------------------------------------
    def audit_entries(self, actor: Actor, query: AuditQuery | None = None) -> pd.DataFrame:
        self.acting(actor).require("audit.read")
        return self.store().audit_rows(query)

    def audit_verify(self, actor: Actor) -> Verification:
        self.acting(actor).require("audit.verify")
        return verify(self.store().audit_chain())

    def audit_export(self, actor: Actor, query: AuditQuery | None,
                     write: Callable[[pd.DataFrame], bytes]) -> bytes:
        acting = self.acting(actor)
        acting.require("audit.read")
        rows = self.store().audit_rows(query)
        data = write(rows)
        self.store().append_audit([acting.record("audit.export", "", rows=len(rows))])
        return data

    def record(self, actor: Actor, action: str, target: str = "", **detail) -> None:
        """Audit something that is not a change of the store (a sample build)."""
        self.store().append_audit([AuditRecord(actor.login, actor.role, actor.via, action,
                                               target, detail)])


def _now() -> str:
    from layers.audit import utc_now

    return utc_now()


def _view(user: UserRecord) -> UserView:
    return UserView(**{k: v for k, v in user.public().items()})


def _mask_phones(acting: Acting, index: pd.DataFrame) -> pd.DataFrame:
    if acting.sees_all_phones():
        return index
    out = index.copy()
    out["phone"] = [p if i in acting.colleagues else "（仅同乡镇同事可见）"
                    for i, p in zip(out["id"], out["phone"], strict=True)]
    return out


def _colleague_text(acting: Acting, router: Router, grid_code: str) -> str:
    """Other people of a grid, phones of colleagues only (a grid worker's view)."""
    parts = []
    for wid, name, role, phone, _ in roster(router.snapshot).people_of_grids([grid_code]):
        if wid == acting.actor.worker_id:
            continue
        shown = phone if wid in acting.colleagues else "—"
        parts.append(f"{name}（{WORKER_ROLE_ZH.get(role, role)}）{shown}")
    return "；".join(parts)

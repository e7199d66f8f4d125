"""One interface for stores (like pygeoapi's providers).

A store keeps every layer versioned by *generation* (as MapIt does): each import or edit makes a
new generation; a row carries the first and last generation it belongs to (`gen_from`,
`gen_to`, NULL while current), so any past generation can be read back exactly and an answer
can be reproduced with the layers it was given with.
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

if TYPE_CHECKING:
    import geopandas as gpd

    from layers.audit import AuditRecord

DEFAULT_STORE = Path(__file__).resolve().parent.parent / "data" / "gridmap.gpkg"


class StoreError(RuntimeError):
    """A store that cannot be opened or used; the message is for the user (Chinese)."""


@dataclass(frozen=True)
class Generation:
    id: int
    created_at: str  # ISO 8601, UTC
    layers: tuple[str, ...]  # the layers in which this generation changed features
    note: str = ""  # why
    source: str = ""  # the file imported, draft:<id>, rollback:<layer>@<generation>
    actor: str = ""  # who (login; os:<user> for the command line)
    # What changed: layer -> {"added", "changed", "removed", "unchanged"} feature counts.
    changes: dict = field(default_factory=dict, hash=False, compare=False)

    def as_dict(self) -> dict:
        return {"generation": self.id, "created_at": self.created_at}


@dataclass(frozen=True)
class DraftRecord:
    """A planner's change of some layers before it is published: edits of the current layers
    (layers/versions.py), who began it and why, and the generation each layer was taken from."""

    id: int
    layers: tuple[str, ...]
    base: dict  # layer -> generation the draft's edits of it start from
    author: str  # login
    created_at: str  # UTC ISO
    updated_at: str
    note: str  # why
    status: str  # draft | published | discarded
    content: dict  # {"layers": {layer: {"put": [...], "drop": [...]} | {"rows": [...]}}}
    revision: int = 0  # saves and undos so far
    undo_depth: int = 0  # previous contents that `undo_draft` can restore
    generation: int | None = None  # the generation it was published as


# Layers a store's snapshot reads only when they are first used: routing never needs them, and
# they are the ones that grow to a million rows (a province's supervised entities).
DEFERRED_LAYERS = ("entities",)
# Layers a snapshot for one place (`Store.snapshot(bbox=…)`) holds only around that place: the
# ones that grow with the number of grid units. A grid's workers are kept with their grid.
SCOPED_LAYERS = ("grids", "workers")


def scope_box(bbox) -> tuple[float, float, float, float]:
    """A snapshot scope checked: (min lon, min lat, max lon, max lat), finite, not inverted."""
    box = tuple(float(v) for v in bbox)
    if len(box) != 4 or not all(map(math.isfinite, box)) or box[0] > box[2] or box[1] > box[3]:
        raise ValueError(f"bbox 应为 (最小经度, 最小纬度, 最大经度, 最大纬度)，收到 {bbox}")
    return box  # type: ignore[return-value]


def within_box(frame: gpd.GeoDataFrame, box: tuple[float, float, float, float]):
    """The rows of a point layer inside `box`, edges included (after an index's coarser
    box test: GeoPackage R-trees and GiST keep float32 boxes)."""
    x, y = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
    keep = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
    return frame[keep].reset_index(drop=True)


@dataclass(frozen=True)
class Deferred:
    """How a store reads one layer of a snapshot later: the whole frame, and its row count
    (without reading it)."""

    read: Callable[[], pd.DataFrame]
    count: Callable[[], int]


class Layers(Mapping):
    """The layers of a snapshot by name: the frames read with it, and the deferred ones
    (DEFERRED_LAYERS), read on first use and kept. Any thread may read a deferred layer: the
    stores read it on a connection of its own."""

    def __init__(self, frames: Mapping[str, pd.DataFrame] | None = None,
                 deferred: Mapping[str, Deferred] | None = None,
                 order: Iterable[str] | None = None) -> None:
        self._frames = dict(frames or {})
        self._deferred = dict(deferred or {})
        names = [*self._frames, *(n for n in self._deferred if n not in self._frames)]
        if order is not None:
            first = [n for n in order if n in names]
            names = [*first, *(n for n in names if n not in first)]
        self._names = names
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> pd.DataFrame:
        frame = self._frames.get(name)
        if frame is not None:
            return frame
        if name not in self._deferred:
            raise KeyError(name)
        with self._lock:
            if name not in self._frames:
                self._frames[name] = self._deferred[name].read()
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._frames or name in self._deferred

    def is_read(self, name: str) -> bool:
        """Whether the layer's rows are in memory (a deferred layer not yet used: False)."""
        return name in self._frames

    def release(self, name: str) -> None:
        """A deferred layer's rows let go (read again if used again)."""
        if name in self._deferred:
            with self._lock:
                frame = self._frames.pop(name, None)
                if frame is not None:
                    self._counts[name] = len(frame)

    def count(self, name: str) -> int:
        """The layer's row count, without reading a deferred layer (counted once: a
        snapshot's rows do not change, and every map page asks)."""
        if name in self._frames:
            return len(self._frames[name])
        if name not in self._counts:
            self._counts[name] = self._deferred[name].count()
        return self._counts[name]


@dataclass
class Snapshot:
    """Every layer as of one generation. Spatial layers are GeoDataFrames in EPSG:4490 with a
    `fid` column (the store's row id) and an `attrs` column (dict of the extra attributes).

    A store's snapshot reads the DEFERRED_LAYERS (the supervised entities) only when they are
    first used (`layers` is then a `Layers`). A snapshot with a `scope` (lon/lat box) holds
    the SCOPED_LAYERS only around it: it answers for places inside that box and nothing else
    (see `Store.snapshot`). A `proposed` snapshot holds layers not in the store (a planner's
    draft over the current ones): it shares the current generation's number, so nothing kept
    per generation (finders, the face raster) may stand for it."""

    generation: Generation
    layers: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    scope: tuple[float, float, float, float] | None = None
    proposed: bool = False

    @property
    def shared(self) -> bool:
        """Whether what is derived from it may be kept per generation and shared: a store's
        whole snapshot, not one place's, not a proposal."""
        return self.scope is None and not self.proposed

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.layers[name]

    def is_read(self, name: str) -> bool:
        """Whether a layer's rows are in memory (False for a deferred layer not yet used)."""
        layers = self.layers
        return layers.is_read(name) if isinstance(layers, Layers) else name in layers

    def release(self, name: str) -> None:
        """A deferred layer's rows let go, to be read again only if used again (a served
        process, once it has written the map's files from a province's million entities)."""
        if isinstance(self.layers, Layers):
            self.layers.release(name)

    def count(self, name: str) -> int:
        """One layer's row count (a deferred layer is counted in the store, not read)."""
        layers = self.layers
        return layers.count(name) if isinstance(layers, Layers) else len(layers[name])

    def counts(self) -> dict[str, int]:
        """Row counts per layer (a deferred layer is counted in the store, not read)."""
        return {name: self.count(name) for name in self.layers}


class CandidateFinder(Protocol):
    """Finds, for a batch of locations, every polygon of every routing layer they touch."""

    def find(self, queries) -> object: ...


class ConcurrentChange(StoreError):
    """The layers changed between the check of an import and its commit: nothing was written."""


@dataclass
class UserRecord:
    """An account. The password is only ever kept as its KDF hash (grids/accounts.py)."""

    login: str
    role: str
    name: str = ""
    worker_id: str = ""
    bureau_code: str = ""
    password_hash: str = ""
    disabled: bool = False
    failed_count: int = 0
    locked_until: str = ""  # UTC ISO; empty when not locked
    created_at: str = ""
    updated_at: str = ""

    def public(self) -> dict:
        """Everything but the password hash (for lists and the audit's before/after)."""
        return {k: v for k, v in self.__dict__.items() if k != "password_hash"}


USER_FIELDS = tuple(UserRecord.__dataclass_fields__)


@dataclass
class SessionRecord:
    token_hash: str  # sha256 of the cookie value: a stolen database holds no usable token
    login: str
    created_at: str
    expires_at: str  # absolute limit
    last_seen: str  # idle limit counts from here
    client: str = ""


SESSION_FIELDS = tuple(SessionRecord.__dataclass_fields__)


@dataclass
class IncidentQuery:
    """Which incidents to read, filtered in the store (never read in full and filtered here).
    Every field left at its default does not filter."""

    ids: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    not_statuses: tuple[str, ...] | None = None
    grid_codes: tuple[str, ...] | None = None  # the current (assigned) grid
    bureau_codes: tuple[str, ...] | None = None  # the current (assigned) bureau
    reported_since: str | None = None  # ISO 8601, compared as UTC instants
    reported_until: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # lon/lat EPSG:4490
    near: tuple[float, float, float] | None = None  # lon, lat, radius in metres
    category: str | None = None
    text: str | None = None  # in the case number or the description
    # Deadlines: the time limit in hours of each state (the workflow table, passed as data:
    # the store knows no rules). With them a query can keep only cases past their deadline at
    # `overdue_at` (UTC ISO) and sort by deadline.
    limits: tuple[tuple[str, float], ...] | None = None
    overdue_at: str | None = None
    order: str = "reported"  # reported (oldest first) | newest | deadline (soonest first)
    limit: int | None = None
    offset: int = 0

    def near_bbox(self) -> tuple[float, float, float, float] | None:
        """A lon/lat box that holds the `near` disc (a prefilter the store can index)."""
        if self.near is None:
            return None
        import math

        lon, lat, radius = self.near
        dlat = radius / 110_574.0 + 1e-6
        dlon = radius / (111_320.0 * max(math.cos(math.radians(lat)), 0.01)) + 1e-6
        return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


@dataclass(frozen=True)
class Attachment:
    """A file kept with a case step (a photo from the site, a document): stored in the store
    itself with its SHA-256, append-only like the events."""

    incident_id: str | None  # the case it belongs to (None for a patrol visit's photo)
    name: str
    mime: str
    data: bytes
    event_at: str = ""  # the step it belongs to (its event time), or the visit's time
    created_by: str = ""
    visit_id: int | None = None  # filled by the store for a visit's photos

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.data).hexdigest()


ATTACHMENT_INFO = ("id", "incident_id", "event_at", "name", "mime", "size", "sha256",
                   "created_at", "created_by", "visit_id")  # AttachmentInfo's, in order


@dataclass(frozen=True)
class AttachmentInfo:
    id: int
    incident_id: str
    event_at: str
    name: str
    mime: str
    size: int
    sha256: str
    created_at: str
    created_by: str
    visit_id: int | None = None


VISIT_FIELDS = ("id", "entity_id", "grid_code", "worker_id", "actor", "visited_at",
                "visited_epoch", "lon", "lat", "accuracy_m", "distance_m", "checklist", "note",
                "result", "incident_id", "created_at")


@dataclass
class VisitRecord:
    """A patrol visit (巡查) to a supervised entity: when, where the phone was (and how far
    from the entity), the industry checklist's answers, a note; append-only like the events."""

    entity_id: str
    grid_code: str | None
    worker_id: str | None
    actor: str  # login
    visited_at: str  # ISO 8601, Beijing time
    visited_epoch: float
    lon: float | None  # the phone's position (None when it gave none)
    lat: float | None
    accuracy_m: float | None
    distance_m: float | None  # from the entity
    checklist: str  # JSON: item key -> "ok" | "problem" | "na"
    note: str
    result: str  # ok | problem
    incident_id: str | None = None  # the case a problem became
    created_at: str = ""
    id: int | None = None


@dataclass(frozen=True)
class VisitQuery:
    entity_ids: tuple[str, ...] | None = None
    grid_codes: tuple[str, ...] | None = None
    since_epoch: float | None = None
    limit: int | None = 200


@dataclass
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None  # a case id, a login, a generation …
    since: str | None = None  # UTC ISO
    until: str | None = None
    limit: int | None = 500
    offset: int = 0
    newest_first: bool = True


class Store(ABC):
    """The whole contract of a store (like pygeoapi's provider base): layers and their
    generations, incidents and their events, users and sessions, and the audit trail. Both
    backends implement every method and are proven by one suite (tests/test_store_contract.py).

    Every write that a person causes takes the audit records of it and writes them in the same
    transaction: the change and its audit entry are committed together or not at all."""

    url: str

    # -- layers ---------------------------------------------------------------------------------
    @abstractmethod
    def generations(self) -> list[Generation]:
        """All generations, oldest first."""

    @abstractmethod
    def snapshot(self, generation: int | None = None, *,
                 bbox: tuple[float, float, float, float] | None = None) -> Snapshot:
        """Every layer as of `generation` (default: the current one). The DEFERRED_LAYERS
        (the supervised entities) are read only when first used (`Snapshot.layers` is a
        `Layers`), so that routing never reads them.

        With `bbox` (min lon, min lat, max lon, max lat in EPSG:4490): a snapshot for
        answering places inside that box only (one `gridmap route`), its `scope`: the
        SCOPED_LAYERS hold only the grids whose extent meets the box (found through the
        spatial index) and the workers of those grids, every other layer is whole. Every
        polygon that touches a place inside the box is in it, so a place's answer is the
        same as with the whole snapshot; any other use is wrong. Never cached."""

    @abstractmethod
    def entities_in(self, bbox: tuple[float, float, float, float],
                    generation: int | None = None) -> gpd.GeoDataFrame:
        """The supervised entities of `generation` (default: the current one) whose point
        lies in `bbox` (min lon, min lat, max lon, max lat in EPSG:4490, edges included),
        found through the spatial index, never by reading them all: the columns of the
        snapshot's `entities` layer, in fid order (what is near a place: the intake)."""

    @abstractmethod
    def entities_by_id(self, ids: Sequence[str],
                       generation: int | None = None) -> gpd.GeoDataFrame:
        """The supervised entities of `generation` (default: the current one) with these ids
        (credit codes), found through the id index, never by reading them all: the columns of
        the snapshot's `entities` layer, in fid order (one entity's patrol visit)."""

    @abstractmethod
    def commit_layers(
        self, layers: dict[str, pd.DataFrame], *, note: str = "", source: str = "",
        base_generation: int | None = None, audit: list[AuditRecord] | None = None,
        actor: str = "", layer_bases: dict[str, int] | None = None,
        draft_id: int | None = None,
    ) -> Generation:
        """Make the given layers (whole, as they are to be) current in one transaction;
        returns the new generation. Only features that changed get new rows (layers/versions.py:
        unchanged rows stay open, changed and removed ones are closed). With `base_generation`,
        refuses (ConcurrentChange) when the current generation is no longer the one the layers
        were checked against; with `layer_bases` (layer -> generation), refuses (LayerConflict)
        when one of those layers changed after its generation (other layers may have). With
        `draft_id`, that draft is marked published in the same transaction. The generation and
        its changes are added to the detail of the `audit` entries."""

    def generation_at(self, at) -> Generation | None:
        """The generation that was current at `at` (an aware datetime or ISO 8601 text; without
        a zone, Beijing time), or None before the first one."""
        from layers.versions import parse_at, utc_instant

        moment = parse_at(at)
        found = None
        for gen in self.generations():  # oldest first; created_at never goes backwards
            if utc_instant(gen.created_at) > moment:
                break
            found = gen
        return found

    # -- drafts (planners' changes before they are published) --------------------------------
    @abstractmethod
    def add_draft(self, draft: DraftRecord, *, audit: AuditRecord | None = None) -> int:
        """Store a new draft; its id."""

    @abstractmethod
    def drafts(self, status: str | None = None) -> list[DraftRecord]:
        """Drafts (newest first), of one status or all."""

    @abstractmethod
    def draft(self, draft_id: int) -> DraftRecord | None: ...

    @abstractmethod
    def save_draft(self, draft_id: int, *, content: dict, layers: tuple[str, ...],
                   base: dict[str, int], note: str | None = None,
                   expected_revision: int | None = None) -> DraftRecord:
        """Replace a draft's content, keeping the previous one on its undo history (the
        newest UNDO_DEPTH states). With `expected_revision`, refuses (VersionError) when the
        draft was saved elsewhere in between."""

    @abstractmethod
    def undo_draft(self, draft_id: int) -> DraftRecord:
        """Restore the content the draft had before its last save (VersionError when none)."""

    @abstractmethod
    def set_draft_status(self, draft_id: int, status: str, *,
                         audit: AuditRecord | None = None) -> DraftRecord:
        """Discard a draft (only a draft that is still a draft)."""

    @abstractmethod
    def finder(self, snapshot: Snapshot) -> CandidateFinder:
        """The spatial lookup for routing against `snapshot`."""

    # -- incidents --------------------------------------------------------------------------------
    @abstractmethod
    def add_incidents(self, records: pd.DataFrame, events: list, *,
                      audit: list[AuditRecord] | None = None) -> None:
        """Insert incident records (with ids) and their first events."""

    @abstractmethod
    def create_incident(self, record: dict, geometry, note: str, *, day: str,
                        audit: AuditRecord, request_key: str | None = None) -> str:
        """Insert one new case, its case number allocated inside the write transaction
        (12369-YYYYMMDD-NNNN, the next free number of `day`); returns the number. With a
        `request_key` already used, nothing is inserted and that request's case is returned
        (a retried API request never makes a second case)."""

    @abstractmethod
    def request_case(self, request_key: str) -> str | None:
        """The case a client request id already made, if any (a retry's fast path; the
        guarantee stays in `create_incident`)."""

    @abstractmethod
    def append_events(self, events: list, *, audit: list[AuditRecord] | None = None,
                      attachments: list[Attachment] | None = None) -> None:
        """Events (and the files that go with them) and their audit, in one transaction."""

    @abstractmethod
    def attachments(self, incident_id: str) -> list[AttachmentInfo]:
        """A case's files, oldest first (without their bytes)."""

    @abstractmethod
    def attachment_data(self, attachment_id: int) -> tuple[AttachmentInfo, bytes] | None:
        ...

    @abstractmethod
    def count_incidents(self, query: IncidentQuery | None = None) -> int:
        """How many incidents `query` matches (ignoring its paging)."""

    @abstractmethod
    def incidents_stamp(self) -> int:
        """A number that grows whenever any incident changes: the newest event's seq (a case
        is filed with its first event and changes only by appending events). One indexed
        lookup, for caches of what is derived from the open incidents (the city map's)."""

    # -- patrol visits -------------------------------------------------------------------------
    @abstractmethod
    def add_visit(self, visit: VisitRecord, *, audit: list[AuditRecord] | None = None,
                  attachments: list[Attachment] | None = None) -> int:
        """Store a visit (and its photos) with its audit in one transaction; its id."""

    @abstractmethod
    def visits(self, query: VisitQuery) -> pd.DataFrame:
        """Visits, newest first, filtered in the store (VISIT_FIELDS columns)."""

    @abstractmethod
    def last_visits(self, grid_codes: tuple[str, ...]) -> pd.DataFrame:
        """Per entity visited in these grids: entity_id, last_epoch, last_at, visits."""

    @abstractmethod
    def visit_attachments(self, visit_id: int) -> list[AttachmentInfo]:
        ...

    @abstractmethod
    def incident_events(self, incident_id: str | None = None) -> pd.DataFrame:
        ...

    @abstractmethod
    def query_incidents(self, query: IncidentQuery | None = None) -> gpd.GeoDataFrame:
        """Incidents with their current status and assignment, filtered in the store."""

    def incidents(self, status: list[str] | None = None) -> gpd.GeoDataFrame:
        return self.query_incidents(IncidentQuery(statuses=tuple(status) if status else None))

    # -- performance figures (绩效考评) ------------------------------------------------------------
    @abstractmethod
    def case_facts(self, query: IncidentQuery, limits: dict[str, float | None], *, now: str,
                   township_codes: tuple[str, ...] | None = None) -> pd.DataFrame:
        """One row per case of `query` (its period: `reported_since`/`reported_until`; its
        scope: bureaus, grids), computed in SQL from the state kept with the events (one row
        per case of `incident_state`), never replayed here: the columns of
        layers/case_facts.FACT_COLUMNS (late against `limits`, state -> hours, the open stint
        measured up to `now`, an ISO time). Rules: layers/case_facts.py."""

    # -- users and sessions -------------------------------------------------------------------
    @abstractmethod
    def user(self, login: str) -> UserRecord | None: ...

    @abstractmethod
    def users(self) -> list[UserRecord]: ...

    @abstractmethod
    def add_user(self, user: UserRecord, *, audit: AuditRecord) -> None:
        """Insert an account; StoreError when the login exists."""

    @abstractmethod
    def update_user(self, login: str, changes: dict, *,
                    audit: AuditRecord | None = None) -> None: ...

    @abstractmethod
    def count_failure(self, login: str, *, lock_after: int, lock_until: str,
                      audit: AuditRecord) -> int:
        """Atomically count a failed login (locking the account at `lock_after` failures);
        returns the new count."""

    @abstractmethod
    def add_session(self, session: SessionRecord, *, audit: AuditRecord) -> None: ...

    @abstractmethod
    def session(self, token_hash: str) -> SessionRecord | None: ...

    @abstractmethod
    def touch_session(self, token_hash: str, last_seen: str) -> None: ...

    @abstractmethod
    def end_sessions(self, *, token_hash: str | None = None, login: str | None = None,
                     idle_before: str | None = None, audit: AuditRecord | None = None) -> int:
        """End one session, every session of a login, or every session idle since before
        `idle_before` or past its absolute limit; returns how many ended."""

    # -- audit ------------------------------------------------------------------------------------
    @abstractmethod
    def append_audit(self, records: list[AuditRecord]) -> None:
        """Append entries to the hash chain (in a transaction of their own)."""

    @abstractmethod
    def audit_rows(self, query: AuditQuery | None = None) -> pd.DataFrame:
        """Entries (seq and AUDIT_NAMES), filtered and paged in the store."""

    @abstractmethod
    def audit_chain(self) -> Iterator[dict]:
        """Every entry in sequence order, streamed (for verification)."""

    # -- rate limits ------------------------------------------------------------------------------
    def take_token(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """Token bucket `bucket`, refilled at `rate` per second up to `burst` (≥ 1): 0 when it
        held a token (then `cost` are taken; 0 only looks), else the seconds until it will.
        Here the process's buckets (a GeoPackage serves one machine); PostGIS keeps them in
        the database, shared by every process (layers/ratelimit.py)."""
        from layers import ratelimit

        return ratelimit.LOCAL.take(f"{self.url}|{bucket}", rate, burst, cost)

    @abstractmethod
    def close(self) -> None: ...


def store_url(explicit: str | None = None) -> str:
    """The store to use: --store, then GRIDMAP_STORE, then DATABASE_URL, then the default file."""
    return (
        explicit
        or os.environ.get("GRIDMAP_STORE")
        or os.environ.get("DATABASE_URL")
        or str(DEFAULT_STORE)
    )


def redact_url(url: str) -> str:
    """A store URL fit to print: the password of a postgresql:// URL replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "（无法解析的数据库地址）"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _open_postgis(url: str, create: bool) -> Store:
    from layers.postgis import PostgisStore

    return PostgisStore(url)


def _open_geopackage(url: str, create: bool) -> Store:
    from layers.embedded import GeoPackageStore

    return GeoPackageStore(Path(url), create=create)


# The backends, chosen by the form of the URL (the one place that knows them all).
BACKENDS: dict[str, tuple[str, object]] = {
    "postgresql://": ("PostGIS", _open_postgis),
    "postgres://": ("PostGIS", _open_postgis),
}
FILE_BACKEND = ("GeoPackage", _open_geopackage)


def open_store(url: str | None = None, *, create: bool = False) -> Store:
    """Open the store at `url` (a GeoPackage path or a postgresql:// URL)."""
    url = store_url(url)
    for prefix, (_label, opener) in BACKENDS.items():
        if url.startswith(prefix):
            return opener(url, create)  # type: ignore[operator]
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme:
        raise StoreError(f"不支持的数据库地址“{scheme}://…”：请用 GeoPackage 文件路径或 "
                         "postgresql:// 连接串")
    return FILE_BACKEND[1](url, create)  # type: ignore[operator]

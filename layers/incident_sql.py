"""What both stores share about incidents in SQL: the current-state table and the filters.

The record of a case is append-only (incidents + incident_events). Its current state — status,
since when, assigned grid and bureau — is a projection of the events, kept in `incident_state`
in the same transaction as each event, so that lists and maps filter in the store (by state,
bureau, grid, time, box, distance) instead of replaying every event in Python. It can always be
rebuilt from the events (`state_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import geopandas as gpd
import pandas as pd

from geo.disc import distance_m
from layers.incidents import Event
from layers.store import IncidentQuery

STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("incident_id", "TEXT PRIMARY KEY"),
    ("status", "TEXT NOT NULL"),
    ("status_since", "TEXT NOT NULL"),
    ("updated_at", "TEXT NOT NULL"),
    ("grid_code", "TEXT"),
    ("bureau_code", "TEXT"),
    ("reported_utc", "TEXT NOT NULL"),
    ("category", "TEXT NOT NULL"),
    ("lon", "REAL NOT NULL"),
    ("lat", "REAL NOT NULL"),
    # status_since as Unix seconds: deadlines are this plus the state's limit, so the store
    # sorts and filters by them with arithmetic and an index (status, since_epoch).
    ("since_epoch", "REAL"),
    # What the performance figures (layers/case_facts.py) need of the case, so that they read
    # one row per case and neither events nor records: the report time as Unix seconds; per
    # state, the longest finished stint in it in seconds (JSON text {"reported": 1200.0, …}: a
    # state is a key once the case has left it, so the keys are also the states it went
    # through); how many times the case was sent back to its first state (`returns`); and the
    # township it was routed to at intake (no event changes it), which the figures count by.
    ("reported_epoch", "REAL"),
    ("stays", "TEXT"),
    ("returns", "INTEGER"),
    ("township_code", "TEXT"),
)
STATE_NAMES = [n for n, _ in STATE_COLUMNS]
STATE_INDEXES = ("status", "grid_code", "bureau_code", "reported_utc", "lon")
# Every case begins in this state (its `create` event); back in it, a case was sent back.
FIRST_STATE = "reported"


def utc_text(value: object) -> str:
    """An ISO time (any offset, or none = Beijing time) as a sortable UTC string."""
    ts = pd.Timestamp(str(value))
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Shanghai")
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def initial_state(record: dict, lon: float, lat: float, event: Event | None) -> tuple:
    """The state row of a new incident (before any event but its creation): its first stint
    counts from the report."""
    status = event.status if event else FIRST_STATE
    at = event.at if event else record["created_at"]
    reported = epoch_of(record["reported_at"])
    return (record["id"], status, str(record["reported_at"]), str(at),
            record.get("grid_code"), record.get("bureau_code"),
            utc_text(record["reported_at"]), str(record["category"]), float(lon), float(lat),
            reported, reported, "{}", 0, record.get("township_code"))


def apply_event(state: dict, event: Event) -> dict:
    """The state after `event`. A change of status ends the current stint: its length counts
    towards the longest stint in that state (`stays`), and the new status and its time begin
    the next; an event that keeps the status (a reassignment, a linked duplicate) does not."""
    out = dict(state)
    stays = read_stays(state.get("stays"))
    if event.status != state["status"]:
        at = epoch_of(event.at)
        began = state.get("since_epoch")
        if began is None:
            began = epoch_of(state["status_since"])
        held = round(at - float(began), 3)
        left = state["status"]
        if left not in stays or held > stays[left]:
            stays[left] = held
        if event.status == FIRST_STATE:
            out["returns"] = int(state.get("returns") or 0) + 1
        out["status_since"] = event.at
        out["since_epoch"] = at
    out["stays"] = json.dumps(stays, separators=(",", ":"), ensure_ascii=False)
    out["status"] = event.status
    out["updated_at"] = event.at
    if event.grid_code:
        out["grid_code"] = event.grid_code
    if event.bureau_code:
        out["bureau_code"] = event.bureau_code
    return out


def where(query: IncidentQuery, ph: str) -> tuple[str, list]:
    """The WHERE clause over `s` (incident_state) for `query`; `ph` is the placeholder."""
    clauses: list[str] = []
    params: list = []

    def among(column: str, values: Iterable[str] | None, negate: bool = False) -> None:
        if values is None:
            return
        values = list(values)
        if not values:
            clauses.append("1 = 1" if negate else "1 = 0")
            return
        marks = ", ".join([ph] * len(values))
        clauses.append(f"{column} {'NOT IN' if negate else 'IN'} ({marks})")
        params.extend(values)

    if query.text:
        # A case number or words of the description (LIKE with its wildcards escaped).
        pattern = "%" + query.text.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        clauses.append(f"(s.incident_id LIKE {ph} ESCAPE '\\' OR "
                       f"i.description LIKE {ph} ESCAPE '\\')")
        params.extend([pattern, pattern])
    if query.overdue_at:
        # Past its deadline: per limited state, entered before now − limit (index range scans
        # on (status, since_epoch)); states without a limit are never overdue.
        now = epoch_of(query.overdue_at)
        limits = [(state, float(h)) for state, h in (query.limits or ()) if h]
        if limits:
            clauses.append("(" + " OR ".join(
                f"(s.status = {ph} AND s.since_epoch < {ph})" for _ in limits) + ")")
            for state, hours in limits:
                params.extend([state, now - hours * 3600.0])
        else:
            clauses.append("1 = 0")
    among("s.incident_id", query.ids)
    among("s.status", query.statuses)
    among("s.status", query.not_statuses, negate=True)
    among("s.grid_code", query.grid_codes)
    among("s.bureau_code", query.bureau_codes)
    if query.category:
        clauses.append(f"s.category = {ph}")
        params.append(query.category)
    if query.reported_since:
        clauses.append(f"s.reported_utc >= {ph}")
        params.append(utc_text(query.reported_since))
    if query.reported_until:
        clauses.append(f"s.reported_utc <= {ph}")
        params.append(utc_text(query.reported_until))
    for box in (query.bbox, query.near_bbox()):
        if box is not None:
            clauses.append(f"s.lon BETWEEN {ph} AND {ph} AND s.lat BETWEEN {ph} AND {ph}")
            params.extend([box[0], box[2], box[1], box[3]])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def read_stays(value: object) -> dict[str, float]:
    """The `stays` of a state row: JSON text (sqlite), already a dict (PostgreSQL's jsonb), or
    nothing (a row not yet rebuilt)."""
    if isinstance(value, dict):
        return dict(value)
    return json.loads(value) if isinstance(value, str) and value else {}


def epoch_of(value: object) -> float:
    ts = pd.Timestamp(str(value))
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Shanghai")
    return ts.timestamp()


def deadline(query: IncidentQuery, ph: str) -> tuple[str, list]:
    """SQL for each case's deadline (Unix seconds; NULL for a state without a limit): the
    time its current state began plus that state's limit."""
    limits = [(state, float(hours)) for state, hours in (query.limits or ()) if hours]
    if not limits:
        return "NULL", []
    cases = " ".join(f"WHEN {ph} THEN {ph}" for _ in limits)
    params: list = []
    for state, hours in limits:
        params.extend([state, hours * 3600.0])
    return f"(s.since_epoch + CASE s.status {cases} END)", params


def order(query: IncidentQuery, ph: str) -> tuple[str, list]:
    """ORDER BY for the query: reported (oldest first), newest, or deadline (the most
    overdue first, states without a limit last)."""
    if query.order == "newest":
        return " ORDER BY s.reported_utc DESC, s.incident_id DESC", []
    if query.order == "deadline":
        due, params = deadline(query, ph)
        return (f" ORDER BY CASE WHEN {due} IS NULL THEN 1 ELSE 0 END, {due}, "
                "s.reported_utc, s.incident_id", params + params)
    return " ORDER BY s.reported_utc, s.incident_id", []


def needs_record(query: IncidentQuery) -> bool:
    """Whether the filter reads the incident record (`i`), not only its state (`s`)."""
    return bool(query.text)


def count_sql(query: IncidentQuery, ph: str) -> tuple[str, list]:
    where_sql, params = where(query, ph)
    join = " JOIN incidents i ON i.id = s.incident_id" if needs_record(query) else ""
    return f"SELECT count(*) FROM incident_state s{join}{where_sql}", params


def select_sql(columns: str, query: IncidentQuery, ph: str) -> tuple[str, list]:
    """The incidents (record and state) `query` asks for. A page is chosen on the state table
    alone (filtered, sorted, limited) before the records of its rows are joined: the records
    (with their stored answers) of every match are never carried through the sort."""
    where_sql, params = where(query, ph)
    order_sql, by = order(query, ph)
    base = "FROM incidents i JOIN incident_state s ON s.incident_id = i.id"
    if query.limit is None:
        return f"SELECT {columns} {base}{where_sql}{order_sql}", params + by
    page_sql, more = paging(query, ph)
    join = " JOIN incidents i ON i.id = s.incident_id" if needs_record(query) else ""
    inner = f"SELECT s.incident_id FROM incident_state s{join}{where_sql}{order_sql}{page_sql}"
    return (f"SELECT {columns} {base} WHERE s.incident_id IN ({inner}){order_sql}",
            params + by + more + by)


def paging(query: IncidentQuery, ph: str) -> tuple[str, list]:
    if query.limit is None:
        return "", []
    return f" LIMIT {ph} OFFSET {ph}", [int(query.limit), int(query.offset)]


def within(frame: gpd.GeoDataFrame, query: IncidentQuery) -> gpd.GeoDataFrame:
    """The exact distance filter of `near` on the few rows the store's box let through."""
    if query.near is None or not len(frame):
        return frame
    lon, lat, radius = query.near
    dist = distance_m(lon, lat, frame["lon"].to_numpy(float), frame["lat"].to_numpy(float))
    return frame[dist <= radius]

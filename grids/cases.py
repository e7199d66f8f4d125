"""Incidents at intake: route them and turn them into immutable records plus first events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import geopandas as gpd
import pandas as pd

from grids.flow import CaseError, Flow, load_flow
from grids.routing import Router, RoutingInputError
from layers.incidents import Event
from layers.schema import STORE_EPSG

BEIJING = ZoneInfo("Asia/Shanghai")


def now_iso() -> str:
    """Now, in Beijing time: case ids and records are read by people in Nantong."""
    return datetime.now(BEIJING).isoformat(timespec="seconds")


def _code(answer: dict, key: str) -> str | None:
    return answer[key]["code"] if answer.get(key) else None


def record_from_answer(fields: dict, answer: dict, actor: str, created_at: str) -> dict:
    """One incident record: the location as given and as routed, and the whole answer."""
    lon, lat = answer["point"]["cgcs2000"]
    given = answer["point"]["input"]
    return {
        "id": str(fields["id"]),
        "reported_at": str(fields["reported_at"]),
        "source": str(fields.get("source", "")),
        "category": str(fields["category"]),
        "description": str(fields.get("description", "")),
        "reporter": str(fields.get("reporter", "")),
        # An extent (a line or an area) has no single point as given: its WKT is the record.
        "given_x": given.get("x"),
        "given_y": given.get("y"),
        "given_crs": given.get("crs"),
        "accuracy_m": given.get("accuracy_m", 0.0),
        "extent_wkt": fields.get("extent_wkt"),
        "generation": answer["version"]["generation"],
        "route_status": answer["status"],
        "county_code": _code(answer, "county"),
        "township_code": _code(answer, "township"),
        "grid_code": _code(answer, "grid"),
        "park_code": _code(answer, "park"),
        "bureau_code": _code(answer, "bureau"),
        "answer": json.dumps(answer, ensure_ascii=False),
        "created_at": created_at,
        "created_by": actor,
        "geometry": (lon, lat),
    }


def records_from_table(
    router: Router, frame: pd.DataFrame, actor: str
) -> tuple[gpd.GeoDataFrame, list[Event], list[tuple[int, str]]]:
    """Route every row of an incident table (id, reported_at, category, description, lon, lat,
    crs, accuracy_m, source). Returns the records, their 'create' events, and the rows that
    could not be routed with the reason (kept aside, never dropped silently)."""
    created = now_iso()
    rows, bad = [], []
    for i, fields in enumerate(frame.to_dict("records")):
        try:
            answer = router.route(
                float(fields["lon"]),
                float(fields["lat"]),
                str(fields.get("crs") or "wgs84"),
                float(fields.get("accuracy_m") or 0.0),
            )
        except (RoutingInputError, ValueError) as exc:
            bad.append((i, str(exc)))
            continue
        rows.append(record_from_answer(fields, answer, actor, created))
    records = pd.DataFrame(rows)
    geometry = gpd.points_from_xy(*zip(*records.pop("geometry"), strict=True)) if rows else []
    records = gpd.GeoDataFrame(records, geometry=geometry, crs=STORE_EPSG)
    events = [
        Event(r["id"], r["reported_at"], actor, "create", "reported", reason="受理登记")
        for r in rows
    ]
    return records, events, bad


def sample_events(records: gpd.GeoDataFrame, statuses: pd.Series, actor: str) -> list[Event]:
    """The later events of sample incidents whose sample status is past 'reported'."""
    path = {"dispatched": ["dispatched"], "closed": ["dispatched", "verified", "closed"]}
    events = []
    for rec, status in zip(records.itertuples(index=False), statuses, strict=True):
        at = pd.Timestamp(rec.reported_at)
        for step, state in enumerate(path.get(status, []), start=1):
            events.append(
                Event(
                    rec.id,
                    (at + pd.Timedelta(minutes=20 * step)).isoformat(),
                    actor,
                    "transition",
                    state,
                    reason="示例数据",
                )
            )
    return events


def load_incident_file(
    store, router: Router, path, actor: str
) -> tuple[int, list[tuple[int, str]]]:
    """Route and store every incident of a CSV (the sample's incidents.csv)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    records, events, bad = records_from_table(router, frame, actor)
    known = frame.set_index("id")["status"] if "status" in frame else pd.Series(dtype=str)
    events += sample_events(records, records["id"].map(known).fillna("reported"), actor)
    store.add_incidents(records, events)
    return len(records), bad


# -- the workflow ------------------------------------------------------------------------------
def next_incident_id(store, day: str) -> str:
    """Readable, unique per day: 12369-20261129-0007."""
    prefix = f"12369-{day.replace('-', '')}-"
    existing = [i for i in store.incidents()["id"] if str(i).startswith(prefix)]
    numbers = [int(i.rsplit("-", 1)[1]) for i in existing if i.rsplit("-", 1)[1].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1:04d}"


def create_incident(store, answer: dict, fields: dict, actor: str) -> str:
    """Store a new case with the routing answer it was given at intake; returns its id."""
    if not actor.strip():
        raise CaseError("请填写受理人")
    if answer["status"] == "outside":
        raise CaseError("该位置不在本市管辖范围内，不能登记为本系统案件，请告知来电人向属地反映")
    created = now_iso()
    fields = {**fields}
    fields.setdefault("reported_at", created)
    fields.setdefault("id", next_incident_id(store, created[:10]))
    record = record_from_answer(fields, answer, actor, created)
    lon, lat = record.pop("geometry")
    records = gpd.GeoDataFrame([record], geometry=gpd.points_from_xy([lon], [lat]), crs=STORE_EPSG)
    note = "受理登记" if answer["status"] == "ok" else "受理登记（位置存在歧义，待人工确认归属）"
    store.add_incidents(
        records, [Event(record["id"], created, actor, "create", "reported", reason=note)]
    )
    return record["id"]


def _current(store, incident_id: str) -> pd.Series:
    cases = store.incidents()
    mine = cases[cases["id"] == incident_id]
    if mine.empty:
        raise CaseError(f"案件 {incident_id} 不存在")
    return mine.iloc[0]


def transition(
    store, incident_id: str, target: str, actor: str, reason: str = "", flow: Flow | None = None
) -> Event:
    """Move a case one step along the workflow; anything else is refused."""
    flow = flow or load_flow()
    if not actor.strip():
        raise CaseError("请填写办理人")
    case = _current(store, incident_id)
    label = flow.check(case["status"], target)
    event = Event(
        incident_id, now_iso(), actor, "transition", target, reason=reason.strip() or label
    )
    store.append_events([event])
    return event


def reassign(
    store,
    incident_id: str,
    actor: str,
    reason: str,
    *,
    grid_code: str | None = None,
    bureau_code: str | None = None,
) -> Event:
    """A manual change of the automatic assignment: who, when and why are kept (干预留痕)."""
    if not reason.strip():
        raise CaseError("人工改派必须填写理由")
    if not actor.strip():
        raise CaseError("请填写办理人")
    if not grid_code and not bureau_code:
        raise CaseError("请选择改派到的网格或执法机构")
    case = _current(store, incident_id)
    if case["status"] == "closed":
        raise CaseError("已结案的案件不能改派")
    snapshot = store.snapshot()
    if grid_code and grid_code not in set(snapshot["grids"]["code"]):
        raise CaseError(f"网格 {grid_code} 不存在")
    if bureau_code and bureau_code not in set(snapshot["bureaus"]["code"]):
        raise CaseError(f"执法机构 {bureau_code} 不存在")
    data = json.dumps(
        {"from_grid": case["assigned_grid_code"], "from_bureau": case["assigned_bureau_code"]},
        ensure_ascii=False,
    )
    event = Event(
        incident_id,
        now_iso(),
        actor,
        "reassign",
        case["status"],
        grid_code=grid_code,
        bureau_code=bureau_code,
        reason=reason.strip(),
        data=data,
    )
    store.append_events([event])
    return event


def link_duplicate(store, incident_id: str, original_id: str, actor: str) -> Event:
    """Record that a new report is the same matter as an open case (no new case is opened)."""
    if incident_id == original_id:
        raise CaseError("不能与自身关联")
    _current(store, original_id)
    event = Event(
        original_id,
        now_iso(),
        actor,
        "link",
        _current(store, original_id)["status"],
        reason=f"重复举报并入：{incident_id}",
        data=json.dumps({"duplicate": incident_id}, ensure_ascii=False),
    )
    store.append_events([event])
    return event


def case_list(store, now: datetime | None = None, flow: Flow | None = None) -> pd.DataFrame:
    """Every case with its current state, deadline and whether it is overdue."""
    flow = flow or load_flow()
    now = now or datetime.now(UTC)
    cases = pd.DataFrame(store.incidents().drop(columns="geometry"))
    if cases.empty:
        return cases.assign(deadline=[], overdue=[])
    since = pd.to_datetime(cases["status_since"], utc=True, format="ISO8601")
    deadlines = [
        flow.deadline(s, t.to_pydatetime()) for s, t in zip(cases["status"], since, strict=True)
    ]
    cases["deadline"] = [d.isoformat() if d else "" for d in deadlines]
    cases["overdue"] = [bool(d and d < now) for d in deadlines]
    return cases

"""Incidents at intake: route them and turn them into immutable records plus first events."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import geopandas as gpd
import pandas as pd
import shapely

from grids.acting import Acting
from grids.flow import CaseError, Flow, load_flow
from grids.routing import Router, RoutingInputError
from layers.audit import AuditRecord
from layers.incidents import Event
from layers.schema import STORE_EPSG
from layers.store import IncidentQuery

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
    audit = AuditRecord(actor=f"system:{actor}", actor_role="admin", via="system",
                        action="sample", target=str(path.name if hasattr(path, "name") else path),
                        detail={"incidents": len(records), "events": len(events)})
    store.add_incidents(records, events, audit=[audit])
    return len(records), bad


# -- the workflow ------------------------------------------------------------------------------
def actor_text(acting: Acting) -> str:
    """How an event names its actor: the name and the login (never typed in by hand)."""
    a = acting.actor
    return f"{a.name}（{a.login}）" if a.name else a.login


def create_incident(acting: Acting, answer: dict, fields: dict,
                    request_id: str | None = None) -> str:
    """Store a new case with the routing answer it was given at intake; returns its number,
    allocated inside the store's write transaction (concurrent dispatchers never clash)."""
    acting.require("case.create")
    if answer["status"] == "outside":
        raise CaseError("该位置不在本市管辖范围内，不能登记为本系统案件，请告知来电人向属地反映")
    created = now_iso()
    fields = {**fields, "id": ""}
    fields.setdefault("reported_at", created)
    if not str(fields.get("reported_at") or "").strip():
        fields["reported_at"] = created
    record = record_from_answer(fields, answer, actor_text(acting), created)
    lon, lat = record.pop("geometry")
    note = "受理登记" if answer["status"] == "ok" else "受理登记（位置存在歧义，待人工确认归属）"
    audit = acting.record("case.create", "", category=record["category"],
                          route_status=record["route_status"], grid=record["grid_code"],
                          bureau=record["bureau_code"], generation=record["generation"],
                          source=record["source"])
    key = request_key(acting.actor, request_id) if request_id else None
    return acting.store.create_incident(record, shapely.Point(lon, lat), note,
                                        day=created[:10], audit=audit, request_key=key)


def request_key(actor, request_id: str) -> str:
    """How a client's request id is stored: per actor (two systems may use the same ids)."""
    return f"{actor.login}:{request_id}"


def current_case(acting: Acting, incident_id: str, action: str = "case.read") -> pd.Series:
    """One case with its current state, if the actor may `action` it."""
    acting.require(action, incident_id)
    found = acting.store.query_incidents(IncidentQuery(ids=(str(incident_id),)))
    if found.empty:
        raise CaseError(f"案件 {incident_id} 不存在")
    case = found.iloc[0]
    acting.require_case(action, case)
    return case


def transition(acting: Acting, incident_id: str, target: str, reason: str = "",
               flow: Flow | None = None, expected_status: str | None = None) -> Event:
    """Move a case one step along the workflow; anything else is refused. A step is taken
    only by the roles the workflow table names for it, on cases in the actor's scope."""
    flow = flow or load_flow()
    case = current_case(acting, incident_id, "case.step")
    if expected_status is not None and case["status"] != expected_status:
        raise CaseError(f"案件状态已被他人更新为“{flow.label(case['status'])}”，"
                        "请查看最新状态后再办理")
    label = flow.check(case["status"], target)
    if acting.actor.role not in flow.roles.get((case["status"], target), ()):
        acting.deny("case.step", incident_id,
                    f"{acting.actor.label} 无权限办理“{label}”这一步")
    reason = _text(reason, "说明", 2000)
    event = Event(incident_id, now_iso(), actor_text(acting), "transition", target,
                  reason=reason or label)
    audit = acting.record("case.step", incident_id, before=case["status"], after=target,
                          reason=reason or label)
    acting.store.append_events([event], audit=[audit])
    return event


def reassign(
    acting: Acting,
    incident_id: str,
    reason: str,
    *,
    grid_code: str | None = None,
    bureau_code: str | None = None,
) -> Event:
    """A manual change of the automatic assignment: who, when and why are kept (干预留痕)."""
    reason = _text(reason, "改派理由", 2000)
    if not reason:
        raise CaseError("人工改派必须填写理由")
    if not grid_code and not bureau_code:
        raise CaseError("请选择改派到的网格或执法机构")
    case = current_case(acting, incident_id, "case.reassign")
    if case["status"] == "closed":
        raise CaseError("已结案的案件不能改派")
    snapshot = acting.snapshot
    if grid_code and grid_code not in set(snapshot["grids"]["code"]):
        raise CaseError(f"网格 {grid_code} 不存在")
    if bureau_code and bureau_code not in set(snapshot["bureaus"]["code"]):
        raise CaseError(f"执法机构 {bureau_code} 不存在")
    before = {"grid": _str(case["assigned_grid_code"]),
              "bureau": _str(case["assigned_bureau_code"])}
    data = json.dumps({"from_grid": before["grid"], "from_bureau": before["bureau"]},
                      ensure_ascii=False)
    event = Event(
        incident_id,
        now_iso(),
        actor_text(acting),
        "reassign",
        case["status"],
        grid_code=grid_code,
        bureau_code=bureau_code,
        reason=reason,
        data=data,
    )
    after = {"grid": grid_code or before["grid"], "bureau": bureau_code or before["bureau"]}
    audit = acting.record("case.reassign", incident_id, before=before, after=after,
                          reason=reason)
    acting.store.append_events([event], audit=[audit])
    return event


def link_duplicate(acting: Acting, incident_id: str, original_id: str) -> Event:
    """Record that a new report is the same matter as an open case (no new case is opened)."""
    if incident_id == original_id:
        raise CaseError("不能与自身关联")
    case = current_case(acting, original_id, "case.link")
    event = Event(
        original_id,
        now_iso(),
        actor_text(acting),
        "link",
        case["status"],
        reason=f"重复举报并入：{incident_id}",
        data=json.dumps({"duplicate": incident_id}, ensure_ascii=False),
    )
    audit = acting.record("case.link", original_id, duplicate=incident_id)
    acting.store.append_events([event], audit=[audit])
    return event


def case_list(acting: Acting, query: IncidentQuery | None = None, now: datetime | None = None,
              flow: Flow | None = None) -> pd.DataFrame:
    """The cases the actor may read (filtered in the store), with deadline and overdue."""
    flow = flow or load_flow()
    now = now or datetime.now(UTC)
    found = acting.store.query_incidents(acting.incident_query("case.read", query))
    cases = pd.DataFrame(found.drop(columns="geometry"))
    if cases.empty:
        return cases.assign(deadline=[], overdue=[])
    since = pd.to_datetime(cases["status_since"], utc=True, format="ISO8601")
    deadlines = [
        flow.deadline(s, t.to_pydatetime()) for s, t in zip(cases["status"], since, strict=True)
    ]
    cases["deadline"] = [d.isoformat() if d else "" for d in deadlines]
    cases["overdue"] = [bool(d and d < now) for d in deadlines]
    return cases


def case_events(acting: Acting, incident_id: str) -> pd.DataFrame:
    current_case(acting, incident_id, "case.read")
    return acting.store.incident_events(incident_id)


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(value: object, what: str, limit: int) -> str:
    text = str(value or "").strip()
    if len(text) > limit:
        raise CaseError(f"{what}不能超过 {limit} 个字符（现有 {len(text)} 个）")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise CaseError(f"{what}含有控制字符，请删除后重试")
    return text

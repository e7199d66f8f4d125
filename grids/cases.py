"""Incidents at intake: route them and turn them into immutable records plus first events."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import geopandas as gpd
import pandas as pd
import shapely

from geo.disc import distance_m
from grids import evidence
from grids.acting import Acting
from grids.deadlines import countdown_zh, time_left
from grids.evidence import Upload
from grids.flow import CaseError, Flow, load_flow
from grids.routing import Router, RoutingInputError
from layers.audit import AuditRecord
from layers.incidents import Event
from layers.schema import STORE_EPSG
from layers.store import Attachment, AttachmentInfo, IncidentQuery

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


def sample_events(records: gpd.GeoDataFrame, histories: pd.Series, actor: str) -> list[Event]:
    """The later events of sample incidents: their `history` column, "state@ISO;…" (the
    sample's own pace of handling, see layers/demo_entities.py)."""
    flow = load_flow()
    events = []
    for rec, history in zip(records.itertuples(index=False), histories, strict=True):
        for part in filter(None, str(history or "").split(";")):
            state, _, at = part.partition("@")
            if state not in flow.states:
                raise CaseError(f"示例事件 {rec.id} 的处理记录含未知状态：{state}")
            events.append(Event(rec.id, at, actor, "transition", state, reason="示例数据"))
    return events


SAMPLE_PATHS = {"dispatched": ("dispatched",), "verified": ("dispatched", "verified"),
                "closed": ("dispatched", "verified", "closed")}


def _history(status: str, reported_at: str) -> str:
    at = pd.Timestamp(reported_at)
    return ";".join(f"{state}@{(at + pd.Timedelta(minutes=20 * n)).isoformat()}"
                    for n, state in enumerate(SAMPLE_PATHS.get(status, ()), start=1))


def load_incident_file(
    store, router: Router, path, actor: str
) -> tuple[int, list[tuple[int, str]]]:
    """Route and store every incident of a CSV (the sample's incidents.csv)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    records, events, bad = records_from_table(router, frame, actor)
    if "history" in frame:
        known = frame.set_index("id")["history"]
    else:  # only a final status: the steps to it, 20 minutes apart
        known = frame.set_index("id").apply(
            lambda r: _history(str(r.get("status") or ""), str(r["reported_at"])), axis=1)
    events += sample_events(records, records["id"].map(known).fillna(""), actor)
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
                    request_id: str | None = None, action: str = "case.create") -> str:
    """Store a new case with the routing answer it was given at intake; returns its number,
    allocated inside the store's write transaction (concurrent dispatchers never clash).
    `action` is the permission it is filed under: a dispatcher's intake (case.create), or a
    problem found on a patrol (patrol.record, already checked against the worker's units)."""
    acting.require(action)
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
    # Filed new although open cases of the same category were offered as the same matter:
    # which ones, and the dispatcher's reason, stay with the case and in the audit.
    others = [str(i) for i in fields.get("not_duplicate_of") or []]
    reason = _text(fields.get("not_duplicate_reason"), "新建理由", 500)
    if others and not reason:
        raise CaseError("附近有同类未结案件，新建案件须填写理由")
    if others:
        note += f"；附近同类未结案件 {'、'.join(others)}，仍新建：{reason}"
    extra = {"not_duplicate_of": others, "reason": reason} if others else {}
    audit = acting.record("case.create", "", category=record["category"],
                          route_status=record["route_status"], grid=record["grid_code"],
                          bureau=record["bureau_code"], generation=record["generation"],
                          source=record["source"], **extra)
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
               flow: Flow | None = None, expected_status: str | None = None,
               files: list[Upload] | None = None, data: dict | None = None) -> Event:
    """Move a case one step along the workflow; anything else is refused. A step is taken
    only by the roles the workflow table names for it, on cases in the actor's scope; the
    table says which steps need a result text and which may carry photos or documents
    (checked, then stored with the step and its audit in one transaction). `data` is what a
    device measured with the step (a phone's position and accuracy…)."""
    flow = flow or load_flow()
    case = current_case(acting, incident_id, "case.step")
    if expected_status is not None and case["status"] != expected_status:
        raise CaseError(f"案件状态已被他人更新为“{flow.label(case['status'])}”，"
                        "请查看最新状态后再办理")
    step = (case["status"], target)
    label = flow.check(*step)
    if acting.actor.role not in flow.roles.get(step, ()):
        acting.deny("case.step", incident_id,
                    f"{acting.actor.label} 无权限办理“{label}”这一步")
    reason = _text(reason, "办理结果", 2000)
    if flow.needs_result.get(step) and len(reason) < 2:
        raise CaseError(f"“{label}”须填写办理结果（如核实情况、处理结果）")
    checked = evidence.check(list(files or []))
    if checked and not flow.evidence.get(step):
        raise CaseError(f"“{label}”这一步不能上传附件")
    at = now_iso()
    event = Event(incident_id, at, actor_text(acting), "transition", target,
                  reason=reason or label,
                  data=json.dumps(data, ensure_ascii=False) if data else None)
    stored = [Attachment(incident_id, name, mime, blob, event_at=at,
                         created_by=acting.actor.login) for name, mime, blob in checked]
    audit = acting.record("case.step", incident_id, before=case["status"], after=target,
                          reason=reason or label,
                          files=[{"name": a.name, "sha256": a.sha256, "size": len(a.data)}
                                 for a in stored])
    acting.store.append_events([event], audit=[audit], attachments=stored)
    return event


def mark(acting: Acting, incident_id: str, key: str,
         position: tuple[float, float, float] | None = None) -> Event:
    """A progress mark (the workflow table's `mark` rows: 接单, 到达现场) taken by a role the
    table names, on a case in the actor's scope; the case keeps its state. A mark that needs
    the phone's position stores it with its accuracy and the distance to the reported place."""
    flow = load_flow()
    case = current_case(acting, incident_id, "case.step")
    found = flow.marks.get((case["status"], key))
    if found is None:
        raise CaseError(f"案件当前为“{flow.label(case['status'])}”，不能记录“{key}”")
    if acting.actor.role not in found.roles:
        acting.deny("case.step", incident_id, f"{acting.actor.label} 无权限记录“{found.label}”")
    data: dict = {}
    if found.needs_location:
        if position is None:
            raise CaseError(f"“{found.label}”需要手机定位：请允许浏览器获取位置后重试")
        lon, lat, acc = (float(v) for v in position)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90 and acc >= 0):
            raise CaseError("手机定位无效")
        dist = float(distance_m(lon, lat, float(case["lon"]), float(case["lat"])))
        data = {"lon": round(lon, 7), "lat": round(lat, 7), "accuracy_m": round(acc, 1),
                "distance_m": round(dist, 1)}
    reason = found.label.split("（")[0]
    if data:
        reason += (f"（距上报位置 {data['distance_m']:.0f} 米，"
                   f"定位精度 ±{data['accuracy_m']:.0f} 米）")
    event = Event(incident_id, now_iso(), actor_text(acting), key, case["status"],
                  reason=reason, data=json.dumps(data, ensure_ascii=False) if data else None)
    audit = acting.record("case.mark", incident_id, mark=key, **data)
    acting.store.append_events([event], audit=[audit])
    return event


def case_files(acting: Acting, incident_id: str) -> list[AttachmentInfo]:
    current_case(acting, incident_id, "case.read")
    return acting.store.attachments(incident_id)


def case_file(acting: Acting, attachment_id: int) -> tuple[AttachmentInfo, bytes]:
    """One attached file, if the actor may read its case."""
    found = acting.store.attachment_data(int(attachment_id))
    if found is None:
        raise CaseError(f"附件 {attachment_id} 不存在")
    current_case(acting, found[0].incident_id, "case.read")
    return found


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


def with_deadlines(cases: pd.DataFrame, now: datetime, flow: Flow) -> pd.DataFrame:
    """Each case's deadline (Beijing time, ISO), hours left, share of the limit left, colour
    level and overdue flag, from the workflow table's limit for its current state."""
    lefts = [time_left(flow, s, t, now)
             for s, t in zip(cases["status"], cases["status_since"], strict=True)]
    return cases.assign(
        deadline=[x.deadline.isoformat() if x.deadline else "" for x in lefts],
        remaining_h=[x.remaining_hours for x in lefts],
        share=[x.share for x in lefts],
        level=[x.level for x in lefts],
        countdown=[countdown_zh(x) for x in lefts],
        overdue=[x.overdue for x in lefts],
    )


def case_list(acting: Acting, query: IncidentQuery | None = None, now: datetime | None = None,
              flow: Flow | None = None) -> pd.DataFrame:
    """The cases the actor may read (filtered in the store), with deadline and overdue."""
    flow = flow or load_flow()
    now = now or datetime.now(UTC)
    found = acting.store.query_incidents(acting.incident_query("case.read", query))
    cases = pd.DataFrame(found.drop(columns="geometry"))
    if cases.empty:
        return cases.assign(deadline=[], remaining_h=[], share=[], level=[], countdown=[],
                            overdue=[])
    return with_deadlines(cases, now, flow)


@dataclass(frozen=True)
class CaseFilter:
    """What the case console shows; every field left at its default does not filter."""

    statuses: tuple[str, ...] | None = None  # None: every state
    bureau: str | None = None
    grids: tuple[str, ...] | None = None  # the assigned grid is one of these
    category: str | None = None
    overdue: bool = False
    mine: bool = False  # waiting for a step the actor's role takes
    text: str = ""
    order: str = "deadline"  # deadline (overdue first) | newest | reported


@dataclass
class CasePage:
    rows: pd.DataFrame  # one page, with deadlines (see with_deadlines)
    total: int  # how many match the filter
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def my_states(flow: Flow, role: str) -> tuple[str, ...]:
    """The states in which a case waits for this role (a forward step it may take)."""
    return tuple(sorted({frm for (frm, to), roles in flow.roles.items()
                         if role in roles and to != "reported"}))


def console_query(acting: Acting, filt: CaseFilter, now: datetime, flow: Flow) -> IncidentQuery:
    statuses = filt.statuses
    if filt.mine:
        mine = my_states(flow, acting.actor.role)
        statuses = tuple(s for s in (statuses or mine) if s in mine)
    query = IncidentQuery(
        statuses=statuses,
        bureau_codes=(filt.bureau,) if filt.bureau else None,
        grid_codes=filt.grids,
        category=filt.category or None,
        text=filt.text.strip() or None,
        limits=flow.limits(),
        overdue_at=now.isoformat() if filt.overdue else None,
        order=filt.order,
    )
    return acting.incident_query("case.read", query)


def case_page(acting: Acting, filt: CaseFilter, *, now: datetime | None = None, page: int = 0,
              size: int = 50, flow: Flow | None = None) -> CasePage:
    """One page of the console's list: filtered, sorted (by deadline: overdue first) and
    paged in the store, whatever the number of cases."""
    flow = flow or load_flow()
    now = now or datetime.now(UTC)
    size = max(1, min(int(size), 500))
    query = console_query(acting, filt, now, flow)
    total = acting.store.count_incidents(query)
    page = max(0, min(int(page), max(0, -(-total // size) - 1)))
    found = acting.store.query_incidents(replace(query, limit=size, offset=page * size))
    rows = pd.DataFrame(found.drop(columns="geometry"))
    if rows.empty:
        rows = rows.assign(deadline=[], remaining_h=[], share=[], level=[], countdown=[],
                           overdue=[])
    else:
        rows = with_deadlines(rows, now, flow).reset_index(drop=True)
    return CasePage(rows, total, page, size)


def console_counts(acting: Acting, now: datetime | None = None,
                   flow: Flow | None = None) -> dict[str, int]:
    """The console's headline numbers, counted in the store."""
    flow = flow or load_flow()
    now = now or datetime.now(UTC)
    open_states = tuple(s for s in flow.states if s != "closed")

    def count(**kw) -> int:
        return acting.store.count_incidents(acting.incident_query("case.read", IncidentQuery(
            limits=flow.limits(), **kw)))

    mine = my_states(flow, acting.actor.role)
    return {
        "open": count(statuses=open_states),
        "overdue": count(statuses=open_states, overdue_at=now.isoformat()),
        "mine": count(statuses=mine) if mine else 0,
        "all": count(),
    }


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

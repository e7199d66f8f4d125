"""Patrols (巡查): the daily work of a grid worker is visiting the supervised entities of their
units. A visit records when, where the phone was and how far from the entity, the answers to
the entity's industry checklist (grids/checklists.csv: the rows of its industry plus the common
`*` rows), a note and photos; a problem found becomes a case in one step. Leaders see the visit
coverage of their units."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from geo.disc import distance_m
from grids import cases, evidence
from grids.acting import Acting
from grids.deadlines import BEIJING
from grids.evidence import Upload
from grids.flow import CaseError
from grids.roster import roster
from grids.routing import Router
from layers.store import Attachment, VisitQuery, VisitRecord

CHECKLIST_TABLE = Path(__file__).with_name("checklists.csv")
ANSWERS_ZH = {"ok": "正常", "problem": "有问题", "na": "不适用"}


@dataclass(frozen=True)
class CheckItem:
    key: str
    label_zh: str
    category: str  # the case category a problem with it is filed under


@lru_cache(maxsize=4)
def load_checklists(path: Path = CHECKLIST_TABLE) -> dict[str, tuple[CheckItem, ...]]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    out: dict[str, list[CheckItem]] = {}
    for r in table.itertuples():
        out.setdefault(r.industry, []).append(CheckItem(r.key, r.label_zh, r.category))
    if "*" not in out:
        raise CaseError("巡查检查表缺少通用项（industry 为 *）")
    return {k: tuple(v) for k, v in out.items()}


def checklist_for(industry: str) -> tuple[CheckItem, ...]:
    """The industry's own items first, then the common ones."""
    tables = load_checklists()
    return tables.get(str(industry), ()) + tables["*"]


@dataclass
class VisitResult:
    visit_id: int
    distance_m: float | None
    problems: list[str]
    incident_id: str | None


def entity_place(acting: Acting, router: Router, entity_id: str) -> tuple[pd.Series, dict]:
    """The entity and its routing answer (its grid decides whose patrol it is)."""
    # Asked of the store by id (its index), not found among every entity of the province.
    found = acting.store.entities_by_id([str(entity_id)], router.snapshot.generation.id)
    if found.empty:
        raise CaseError(f"监管对象 {entity_id} 不存在")
    row = found.iloc[0]
    answer = router.route(float(row.geometry.x), float(row.geometry.y), "cgcs2000")
    return row, answer


def answer_grids(answer: dict) -> list[str]:
    """The grid of an answer, or every candidate's (an entity on a grid border)."""
    if answer.get("grid"):
        return [answer["grid"]["code"]]
    return [c["grid"]["code"] for c in answer.get("candidates") or [] if c.get("grid")]


def record_visit(acting: Acting, router: Router, entity_id: str, answers: dict[str, str], *,
                 note: str = "", position: tuple[float, float, float] | None = None,
                 files: list[Upload] | None = None, file_case: bool = False,
                 now: datetime | None = None) -> VisitResult:
    """Record a visit to an entity of the actor's own units (`patrol.record`); with
    `file_case` and a problem ticked, the problem becomes a case (巡查发现) in the same step.
    `position` is the phone's (lon, lat, accuracy m) in WGS84/CGCS2000."""
    entity, answer = entity_place(acting, router, entity_id)
    grids = answer_grids(answer)
    grid = next((g for g in grids if g in acting.own_grids), grids[0] if grids else None)
    scope = acting.require("patrol.record", str(entity_id))
    if scope == "own" and grid not in acting.own_grids:
        acting.deny("patrol.record", str(entity_id),
                    f"{acting.actor.label} 无权限：监管对象 {entity['name']} 不在本人负责网格内")
    items = {i.key: i for i in checklist_for(entity["industry"])}
    unknown = set(answers) - set(items)
    if unknown:
        raise CaseError(f"检查表中没有这些项目：{'、'.join(sorted(unknown))}")
    bad = {k: v for k, v in answers.items() if v not in ANSWERS_ZH}
    if bad:
        raise CaseError(f"检查结果只能是“正常”“有问题”“不适用”：{'、'.join(bad)}")
    missing = [items[k].label_zh for k in items if k not in answers]
    if missing:
        raise CaseError(f"请逐项填写检查表（还有 {len(missing)} 项未填：{missing[0]}…）")
    note = cases._text(note, "巡查说明", 2000)
    problems = [k for k, v in answers.items() if v == "problem"]
    if file_case and not problems:
        raise CaseError("没有勾选“有问题”的项目，不能转为案件")
    if problems and len(note) < 2:
        raise CaseError("发现问题时须填写巡查说明（问题的具体情况）")
    checked = evidence.check(list(files or []))
    now = now or datetime.now(UTC)
    at = now.astimezone(BEIJING).isoformat(timespec="seconds")
    lon = lat = acc = dist = None
    if position is not None:
        lon, lat, acc = (float(v) for v in position)
        if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise CaseError("手机定位无效")
        dist = round(float(distance_m(lon, lat, float(entity.geometry.x),
                                      float(entity.geometry.y))), 1)
    incident_id = None
    if file_case:
        labels = "；".join(items[k].label_zh for k in problems)
        fields = {"category": items[problems[0]].category, "source": "巡查发现",
                  "description": f"{entity['name']}：{labels}。{note}",
                  "reported_at": at, "reporter": cases.actor_text(acting)}
        incident_id = cases.create_incident(acting, answer, fields, action="patrol.record")
    visit = VisitRecord(
        entity_id=str(entity_id), grid_code=grid, worker_id=acting.actor.worker_id or None,
        actor=acting.actor.login, visited_at=at, visited_epoch=now.timestamp(), lon=lon,
        lat=lat, accuracy_m=acc, distance_m=dist,
        checklist=json.dumps(answers, ensure_ascii=False, sort_keys=True), note=note,
        result="problem" if problems else "ok", incident_id=incident_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    photos = [Attachment(None, name, mime, blob, event_at=at, created_by=acting.actor.login)
              for name, mime, blob in checked]
    audit = acting.record("patrol.record", str(entity_id), grid=grid, result=visit.result,
                          distance_m=dist, problems=problems, case=incident_id,
                          files=[{"name": a.name, "sha256": a.sha256} for a in photos])
    visit_id = acting.store.add_visit(visit, audit=[audit], attachments=photos)
    return VisitResult(visit_id, dist, problems, incident_id)


def last_visited(acting: Acting, grid_codes: tuple[str, ...]) -> pd.DataFrame:
    """entity_id → last visit (Beijing time) and number of visits, for the entities of these
    grids (the store aggregates)."""
    return acting.store.last_visits(tuple(grid_codes))


def entity_visits(acting: Acting, entity_id: str, limit: int = 20) -> pd.DataFrame:
    return acting.store.visits(VisitQuery(entity_ids=(str(entity_id),), limit=limit))


@dataclass
class Coverage:
    days: int
    entities: pd.DataFrame  # id, name, industry, grid, last_at, visited (bool), lon, lat
    by_grid: pd.DataFrame  # grid, name, entities, visited, share


def coverage(acting: Acting, router: Router, grid_codes: tuple[str, ...], entities: pd.DataFrame,
             days: int = 30, now: datetime | None = None) -> Coverage:
    """Which entities of these grids were visited in the last `days` (a leader's view). A
    worker's few hundred entities at most: looked up in dictionaries, not joined frame to
    frame (a phone page asks for this at every visit)."""
    now = now or datetime.now(UTC)
    last = acting.store.last_visits(tuple(grid_codes))
    since = (now - timedelta(days=days)).timestamp()
    ids = entities["id"].astype(str).tolist()
    epoch_of = dict(zip(last["entity_id"].astype(str), last["last_epoch"], strict=True))
    at_of = dict(zip(last["entity_id"].astype(str), last["last_at"], strict=True))
    count_of = dict(zip(last["entity_id"].astype(str), last["visits"], strict=True))
    out = entities.copy()
    out["last_epoch"] = np.array([epoch_of.get(i, np.nan) for i in ids], dtype=float)
    out["last_at"] = [at_of.get(i) for i in ids]
    out["visits"] = np.array([count_of.get(i, 0) for i in ids], dtype=int)
    out["visited"] = np.nan_to_num(out["last_epoch"].to_numpy(), nan=0.0) >= since
    out = out.rename(columns={"grid_code": "grid"})
    per: dict[str, list[int]] = {}
    for grid, seen in zip(out["grid"].astype(str), out["visited"], strict=True):
        tally = per.setdefault(grid, [0, 0])
        tally[0] += 1
        tally[1] += bool(seen)
    index = roster(router.snapshot)
    names = router.snapshot["grids"]["name"]
    order = sorted(per)
    by = pd.DataFrame({
        "grid": order,
        "name": [names.iat[index.grid_row[g]] if g in index.grid_row else None for g in order],
        "entities": [per[g][0] for g in order],
        "visited": [per[g][1] for g in order],
    })
    by["share"] = (by["visited"] / by["entities"]).round(3) if len(by) else pd.Series(
        dtype=float)
    return Coverage(days, out, by[["grid", "name", "entities", "visited", "share"]])


COVERAGE_COLUMNS = {"grid": "网格编码", "name": "网格名称", "entities": "监管对象数",
                    "visited": "已巡查", "share": "巡查覆盖率"}
ENTITY_COLUMNS = {"id": "统一社会信用代码", "name": "名称", "industry": "行业",
                  "grid": "网格编码", "last_at": "最近巡查（北京时间）", "visits": "巡查次数",
                  "visited_zh": "期内已巡查"}


def coverage_excel(cov: Coverage) -> bytes:
    """The coverage for a leader's sign-off: per grid, then per entity (Chinese headers; text
    always as text, `layers.spreadsheet`: a name like "=HYPERLINK(…)" is data, not a
    formula)."""
    from grids.deadlines import beijing_text
    from layers import spreadsheet

    by_grid = cov.by_grid.astype({"entities": int, "visited": int, "share": float})
    entities = cov.entities.assign(
        last_at=[beijing_text(v) for v in cov.entities["last_at"]],
        visits=cov.entities["visits"].astype(int),
        visited_zh=["是" if v else "否" for v in cov.entities["visited"]])
    return spreadsheet.xlsx_bytes({
        f"按网格（近{cov.days}天）": spreadsheet.headed(by_grid, COVERAGE_COLUMNS),
        "监管对象": spreadsheet.headed(entities, ENTITY_COLUMNS),
    })

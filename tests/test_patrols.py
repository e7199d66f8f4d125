"""Patrols and case progress marks, through the service, on both stores: a visit to an entity of
the worker's own units with its checklist, position and distance; the checklist's rules; a
problem that becomes a case in one step; photos kept with the visit; the last visit per entity
and a leader's coverage (with its Excel); 接单 / 到达现场 recorded without moving the case."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from openpyxl import load_workbook
from PIL import Image

from grids.access import Actor, PermissionDenied
from grids.evidence import Upload
from grids.flow import CaseError
from grids.patrols import Coverage, checklist_for, coverage_excel, load_checklists
from grids.service import Gridmap
from layers.importer import import_path
from tests.browser import FORMULA_NAME, world_entities
from tests.conftest import STORES
from tests.signin import add_world_users
from tests.world import P

WORKER = Actor("t-worker", "grid_worker", "网格员3", worker_id="W003")
LEADER = Actor("t-leader", "grid_leader", "甲二镇网格长", worker_id="L001")
DISPATCHER = Actor("t-dispatcher", "dispatcher", "调度员甲")


@pytest.fixture(params=STORES)
def svc(request, new_store, world_dir, tmp_path):
    files = tmp_path / "files"
    shutil.copytree(world_dir, files)
    world_entities().to_csv(files / "entities.csv", index=False)
    store = new_store(request.param)
    import_path(store, files)
    add_world_users(store.url)
    s = Gridmap(store.url)
    yield s
    s.close()


def entity(svc: Gridmap, point: str) -> tuple[str, str]:
    ents = svc._router().snapshot["entities"]
    lon, lat = P[point]
    row = ents.iloc[int(((ents.geometry.x - lon) ** 2 + (ents.geometry.y - lat) ** 2)
                        .to_numpy().argmin())]
    return str(row["id"]), str(row["industry"])


def answers(industry: str, problem: str | None = None) -> dict[str, str]:
    out = {i.key: "ok" for i in checklist_for(industry)}
    if problem:
        out[problem] = "problem"
    return out


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def test_the_checklist_is_the_industry_rows_then_the_common_ones():
    items = [i.key for i in checklist_for("化工")]
    tables = load_checklists()
    assert items == [i.key for i in tables["化工"]] + [i.key for i in tables["*"]]
    assert [i.key for i in checklist_for("未列出的行业")] == [i.key for i in tables["*"]]


def test_a_visit_keeps_position_distance_answers_and_photos(svc):
    eid, industry = entity(svc, "a2_plain")
    lon, lat = P["a2_plain"]
    result = svc.record_visit(WORKER, eid, answers(industry), note="", files=[
        Upload("门口.jpg", jpeg())], position=(lon + 0.001, lat, 8.0))
    assert 90 < result.distance_m < 100  # 0.001° of longitude at 32°N ≈ 94 m
    assert result.incident_id is None and result.problems == []
    [visit] = svc.entity_visits(WORKER, eid).to_dict("records")
    assert visit["actor"] == "t-worker" and visit["grid_code"] == "320901002001001"
    assert json.loads(visit["checklist"]) == answers(industry) and visit["result"] == "ok"
    assert visit["accuracy_m"] == 8.0
    [photo] = svc.visit_files(WORKER, visit["id"], eid)
    assert photo.name == "门口.jpg" and photo.visit_id == visit["id"]


def test_the_checklist_rules(svc):
    eid, industry = entity(svc, "a2_plain")
    full = answers(industry)
    with pytest.raises(CaseError, match="未填"):
        svc.record_visit(WORKER, eid, dict(list(full.items())[:-1]))
    with pytest.raises(CaseError, match="没有这些项目"):
        svc.record_visit(WORKER, eid, {**full, "nonsense": "ok"})
    with pytest.raises(CaseError, match="只能是"):
        svc.record_visit(WORKER, eid, {**full, next(iter(full)): "maybe"})
    key = next(iter(full))
    with pytest.raises(CaseError, match="须填写巡查说明"):
        svc.record_visit(WORKER, eid, answers(industry, key))
    with pytest.raises(CaseError, match="不能转为案件"):
        svc.record_visit(WORKER, eid, full, file_case=True)
    assert svc.entity_visits(WORKER, eid).empty  # nothing was stored


def test_a_problem_becomes_a_case_in_one_step(svc):
    eid, industry = entity(svc, "a2_plain")
    first = checklist_for(industry)[0]
    result = svc.record_visit(WORKER, eid, answers(industry, first.key),
                              note="排口水色发黑", file_case=True)
    case = svc.case(DISPATCHER, result.incident_id)
    assert case["source"] == "巡查发现" and case["category"] == first.category
    assert "排口水色发黑" in case["description"] and first.label_zh in case["description"]
    assert case["status"] == "reported" and case["grid_code"] == "320901002001001"
    visit = svc.entity_visits(WORKER, eid).iloc[0]
    assert visit["incident_id"] == result.incident_id and visit["result"] == "problem"


def test_only_the_units_own_worker_records_a_visit(svc):
    other, industry = entity(svc, "a1_numbered")  # W001's grid
    with pytest.raises(PermissionDenied):
        svc.record_visit(WORKER, other, answers(industry))
    mine, industry = entity(svc, "a2_plain")
    with pytest.raises(PermissionDenied):
        svc.record_visit(DISPATCHER, mine, answers(industry))  # dispatchers do not patrol


def test_a_leaders_coverage_and_its_excel(svc):
    eid, industry = entity(svc, "a2_plain")
    svc.record_visit(WORKER, eid, answers(industry))
    now = datetime.now(UTC)
    cov = svc.coverage(LEADER, "L001", days=30, now=now)
    mine = cov.entities.set_index("id")
    assert bool(mine.loc[eid, "visited"]) and mine.loc[eid, "visits"] == 1
    row = cov.by_grid.set_index("grid").loc["320901002001001"]
    assert row["visited"] == 1 and row["share"] == pytest.approx(1 / row["entities"], abs=1e-3)
    # Seen from 40 days later, last month's visit is out of a 30-day window.
    later = svc.coverage(LEADER, "L001", days=30, now=now + timedelta(days=40))
    assert not bool(later.entities.set_index("id").loc[eid, "visited"])
    wb = load_workbook(io.BytesIO(svc.coverage_excel(LEADER, "L001")))
    assert wb.sheetnames[0].startswith("按网格")
    names = [c.value for c in wb.worksheets[1][1]]
    assert names[:3] == ["统一社会信用代码", "名称", "行业"]
    # A worker sees only their own; another township's leader is not theirs to see.
    with pytest.raises(PermissionDenied):
        svc.coverage(WORKER, "W001")


def test_the_coverage_workbook_writes_every_name_as_text():
    """A grid or entity named like a formula is data: text in the cell, as it was typed (no
    formula, no apostrophe added), and the numbers stay numbers."""
    entities = pd.DataFrame({"id": ["91320600MA0000001X"], "name": [FORMULA_NAME],
                             "industry": ["-1+1"], "grid": ["g1"], "last_at": [None],
                             "visits": [0], "visited": [False]})
    by_grid = pd.DataFrame({"grid": ["g1"], "name": ["=1+2"], "entities": [1], "visited": [0],
                            "share": [0.0]})
    wb = load_workbook(io.BytesIO(coverage_excel(Coverage(30, entities, by_grid))))
    cells = {c.value: c for ws in wb.worksheets for row in ws.iter_rows(min_row=2) for c in row}
    for text in ("=1+2", FORMULA_NAME, "-1+1"):
        assert cells[text].data_type == "s", text
    assert [c.value for c in wb.worksheets[0][2]] == ["g1", "=1+2", 1, 0, 0]
    assert [c.value for c in wb.worksheets[1][2]][-1] == "否"


def test_accept_and_arrive_marks_keep_the_state(svc):
    cid = svc.create_case(DISPATCHER, svc.route(DISPATCHER, *P["a2_plain"]),
                          {"category": "air", "description": "黑烟"})
    with pytest.raises(CaseError, match="不能记录"):
        svc.mark_case(WORKER, cid, "accept")  # not dispatched yet
    svc.step_case(DISPATCHER, cid, "dispatched")
    svc.mark_case(WORKER, cid, "accept")
    with pytest.raises(CaseError, match="需要手机定位"):
        svc.mark_case(WORKER, cid, "arrive")
    lon, lat = P["a2_plain"]
    svc.mark_case(WORKER, cid, "arrive", (lon, lat + 0.001, 15.0))
    events = svc.case_events(DISPATCHER, cid)
    assert list(events["action"])[-2:] == ["accept", "arrive"]
    data = json.loads(events.iloc[-1]["data"])
    assert 105 < data["distance_m"] < 115 and data["accuracy_m"] == 15.0  # 0.001° lat ≈ 111 m
    assert svc.case(DISPATCHER, cid)["status"] == "dispatched"
    with pytest.raises(PermissionDenied):
        svc.mark_case(DISPATCHER, cid, "accept")  # the table gives marks to workers

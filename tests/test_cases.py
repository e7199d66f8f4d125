"""Dispatch: intake answers, the case workflow, the audit trail, duplicates, cross-county
extents and complaint batches — against both stores."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg2
import pytest

from geo.china_offsets import wgs84_to_gcj02
from grids.acting import Acting
from grids.batch import assign
from grids.cases import case_list, create_incident, link_duplicate, reassign, transition
from grids.flow import CaseError, load_flow
from grids.intake import intake as intake_
from grids.routing import Router
from layers.importer import import_path
from tests.conftest import STORES
from tests.signin import acting_as
from tests.world import P

DISPATCHER = "调度员甲（t-dispatcher）"


def disp(store) -> Acting:
    return acting_as(store, "dispatcher")


def step(store, cid: str, target: str) -> None:
    """Take a step as the role the workflow gives it to (scoped to the case), with a result
    text (some steps require one)."""
    transition(acting_as(store, flow_role(cid, store, target), case=cid), cid, target,
               "已办理")


def flow_role(cid: str, store, target: str) -> str:
    status = store.query_incidents().set_index("id").loc[cid, "status"]
    return load_flow().roles[(status, target)][0]


def intake(router, store, *args, **kw):
    return intake_(router, disp(store), *args, **kw)


@pytest.fixture(params=STORES)
def desk(request, new_store, world_dir):
    """A store with the world loaded and a router: a dispatcher's desk."""
    store = new_store(request.param)
    import_path(store, world_dir)
    return store, Router(store)


def new_case(desk, name="dedicated", category="air", **kw) -> str:
    store, router = desk
    answer = router.route(*P[name], **kw)
    return create_incident(disp(store), answer, {"category": category, "description": "黑烟"})


def test_case_keeps_location_answer_and_generation(desk):
    store, router = desk
    x, y = wgs84_to_gcj02(*P["dedicated"])
    answer = router.route(float(x), float(y), "gcj02", 50)
    cid = create_incident(disp(store), answer, {"category": "air", "description": "黑烟"})
    case = store.incidents().set_index("id").loc[cid]
    assert case["given_crs"] == "gcj02" and case["given_x"] == pytest.approx(float(x))
    assert case["lon"] == pytest.approx(P["dedicated"][0], abs=1e-7)
    assert case["grid_code"] == "320901002800001" and case["generation"] == 1
    assert case["status"] == "reported" and case["created_by"] == DISPATCHER
    assert '"320901002800001"' in case["answer"]


def test_any_line_ends_a_person_typed_are_kept_as_typed(desk):
    """A description pasted from Windows (CRLF), an old Mac (a lone CR) or a phone (LF), and a
    CSV-like line: stored and read back unchanged by both stores (PostgreSQL's COPY ended a row
    at a lone CR left unquoted)."""
    store, router = desk
    text = '窗外有黑烟\r\n气味刺鼻\r第二天仍有\n"很大",，\\N'
    cid = create_incident(disp(store), router.route(*P["dedicated"]),
                          {"category": "air", "description": text, "reporter": "张三\r李四"})
    case = store.incidents().set_index("id").loc[cid]
    assert case["description"] == text and case["reporter"] == "张三\r李四"


def test_workflow_follows_the_table_and_refuses_illegal_steps(desk):
    store, _ = desk
    cid = new_case(desk)
    with pytest.raises(CaseError, match="不允许"):
        transition(disp(store), cid, "closed")
    for state in ("dispatched", "verified", "transferred", "handling", "closed"):
        step(store, cid, state)
    with pytest.raises(CaseError):
        transition(disp(store), cid, "dispatched")
    events = store.incident_events(cid)
    assert list(events["status"]) == [
        "reported",
        "dispatched",
        "verified",
        "transferred",
        "handling",
        "closed",
    ]
    assert (events["actor"] != "").all() and events["at"].is_monotonic_increasing


def test_reassignment_needs_a_reason_and_is_kept(desk):
    store, _ = desk
    cid = new_case(desk)
    with pytest.raises(CaseError, match="理由"):
        reassign(disp(store), cid, "  ", grid_code="320901002001001")
    with pytest.raises(CaseError, match="不存在"):
        reassign(disp(store), cid, "网格调整", grid_code="nope")
    reassign(disp(store), cid, "企业实际在北侧厂区", grid_code="320901002001002")
    case = store.incidents().set_index("id").loc[cid]
    assert case["assigned_grid_code"] == "320901002001002"
    assert case["grid_code"] == "320901002800001"  # the automatic answer is never overwritten
    last = store.incident_events(cid).iloc[-1]
    assert last["action"] == "reassign" and last["actor"] == DISPATCHER
    assert last["reason"] == "企业实际在北侧厂区" and "320901002800001" in last["data"]


def test_the_record_cannot_be_edited_in_place(desk):
    store, _ = desk
    cid = new_case(desk)
    if hasattr(store, "path"):
        with pytest.raises(sqlite3.DatabaseError, match="只能追加"):
            store.conn.execute("UPDATE incident_events SET actor = 'x'")
        with pytest.raises(sqlite3.DatabaseError):
            store.conn.execute("DELETE FROM incidents")
    else:
        with (
            pytest.raises(psycopg2.Error, match="只能追加"),
            store.conn,
            store.conn.cursor() as cur,
        ):
            cur.execute("UPDATE incidents SET description = 'x' WHERE id = %s", (cid,))
    assert store.incidents().set_index("id").loc[cid, "description"] == "黑烟"


def test_overdue_by_the_time_limit_of_the_state(desk):
    store, _ = desk
    cid = new_case(desk)
    flow = load_flow()
    soon = datetime.now(UTC) + timedelta(minutes=10)
    late = datetime.now(UTC) + timedelta(hours=flow.states["reported"][1] + 1)
    assert not case_list(disp(store), now=soon).set_index("id").loc[cid, "overdue"]
    assert case_list(disp(store), now=late).set_index("id").loc[cid, "overdue"]
    step(store, cid, "dispatched")
    assert not case_list(disp(store), now=late).set_index("id").loc[cid, "overdue"]


def test_nearby_open_cases_are_offered_as_duplicates(desk):
    store, router = desk
    first = new_case(desk, category="air")
    answer = intake(router, store, *P["dedicated"], accuracy_m=50, category="air")
    assert list(answer.duplicates["id"]) == [first]
    assert answer.duplicates["same_category"].iloc[0]
    far = intake(router, store, *P["b1"], category="air")
    assert far.duplicates.empty
    second = new_case(desk, category="air")
    link_duplicate(disp(store), second, first)
    assert store.incident_events(first).iloc[-1]["action"] == "link"
    for state in ("dispatched", "verified", "closed"):
        step(store, first, state)
    again = intake(router, store, *P["dedicated"], category="air")
    assert first not in set(again.duplicates["id"])  # closed cases are not offered


def test_partner_category_is_a_referral(desk):
    store, router = desk
    answer = intake(router, store, *P["a2_plain"], category="cooking_fumes")
    assert answer.referral and "城市管理" in answer.referral
    assert "餐饮油烟" in answer.route["reasons"][0]
    assert intake(router, store, *P["a2_plain"], category="water").referral is None


def test_outside_location_is_not_registered(desk):
    store, router = desk
    with pytest.raises(CaseError, match="不在本市"):
        create_incident(disp(store), router.route(*P["outside"]), {"category": "air"})


def test_river_across_two_counties_is_a_municipal_case(desk):
    _, router = desk
    a = router.route_extent("LINESTRING (120.65 32.15, 120.75 32.15)")
    assert a["status"] == "ok" and a["bureau"]["level"] == "municipal"
    assert {b["code"] for b in a["co_bureaus"]} == {"B-A", "B-B"}
    assert "cross_county" in a["flags"]
    inside = router.route_extent(
        "POLYGON ((120.66 32.02, 120.69 32.02, 120.69 32.05, 120.66 32.05, 120.66 32.02))"
    )
    assert inside["bureau"] is None or inside["bureau"]["level"] != "municipal"
    assert inside["county"]["code"] == "320901"


def test_complaint_batch_with_chinese_headers_and_row_crs(desk):
    _, router = desk
    x, y = wgs84_to_gcj02(*P["dedicated"])
    frame = pd.DataFrame(
        {
            "编号": ["A1", "A2", "A3", "A4", ""],
            "经度": [x, P["dedicated"][0], P["dedicated"][1], "无", None],
            "纬度": [y, P["dedicated"][1], P["dedicated"][0], "无", None],
            "坐标系": ["GCJ02", "WGS84", "wgs84", "wgs84", "wgs84"],
        }
    )
    t = assign(router, frame).table
    assert list(t["编号"]) == ["A1", "A2", "A3", "A4", ""]  # nothing dropped, order kept
    assert list(t["route_grid_code"][:3]) == ["320901002800001"] * 3
    assert "swapped" in t.loc[2, "route_flags"]
    assert list(t["route_status"][3:]) == ["error", "error"]


def test_extent_intake_and_its_case_record(desk):
    from grids.intake import intake_extent

    store, router = desk
    river = "LINESTRING (120.65 32.15, 120.75 32.15)"
    answer, geom = intake_extent(router, disp(store), river, category="water")
    assert answer.route["bureau"]["level"] == "municipal"
    assert geom.geom_type == "LineString"
    cid = create_incident(disp(store), answer.route,
                          {"category": "water", "extent_wkt": geom.wkt})
    case = store.incidents().set_index("id").loc[cid]
    assert case["extent_wkt"].startswith("LINESTRING") and pd.isna(case["given_x"])
    assert case["bureau_code"] == "B-M" and cid.startswith("12369-")


def test_incidents_stamp_grows_with_every_change_and_the_map_list_follows(desk):
    """The store's incidents stamp moves with a new case and with every step; the city map's
    open-incident list (kept between clicks) is read again when it moves, not before."""
    store, _ = desk
    empty = store.incidents_stamp()
    cid = new_case(desk)
    filed = store.incidents_stamp()
    assert filed > empty
    assert store.incidents_stamp() == filed  # reading changes nothing
    step(store, cid, "dispatched")
    assert store.incidents_stamp() > filed

    from grids.service import Gridmap

    svc = Gridmap(store.url)
    try:
        dispatcher = disp(store).actor
        now = datetime.now(UTC)
        first = svc.map_incidents(dispatcher, now)
        assert cid in set(first["id"]) and first.set_index("id").loc[cid, "status"] == "dispatched"
        first.loc[:, "status"] = "tampered"  # a copy: the kept list is not the caller's
        again = svc.map_incidents(dispatcher, now)
        assert set(again["status"]) != {"tampered"}
        other = new_case(desk, "a2_plain")
        assert other in set(svc.map_incidents(dispatcher, now)["id"])  # the stamp moved
        # A planner may not read cases: refused below the page.
        with pytest.raises(PermissionError):
            svc.map_incidents(acting_as(store, "planner").actor, now)
    finally:
        svc.close()

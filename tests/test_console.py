"""The case console's rules: deadline arithmetic in Beijing time (across midnight, across
days, the colour thresholds), the console query filtered, sorted by deadline and paged in each
store, step results required by the workflow table, and photos kept with their step (checked,
hashed, append-only, readable only by who may read the case) — against both stores."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from grids.access import PermissionDenied
from grids.cases import CaseFilter, case_file, case_files, case_page, create_incident, transition
from grids.deadlines import as_instant, countdown_zh, deadline_zh, time_left
from grids.evidence import MAX_BYTES, Upload
from grids.flow import CaseError, load_flow
from grids.routing import Router
from layers.importer import import_path
from layers.incidents import Event
from layers.store import AuditQuery
from tests.conftest import STORES
from tests.signin import acting_as
from tests.world import P

FLOW = load_flow()


# -- deadline arithmetic ------
def test_a_deadline_after_midnight_in_beijing_is_tomorrow():
    # Dispatched at 23:00 Beijing (15:00 UTC, the same UTC day): 2 h → 01:00 the next day.
    left = time_left(FLOW, "dispatched", "2026-12-02T23:00:00+08:00", "2026-12-02T15:30:00Z")
    assert left.deadline.isoformat() == "2026-12-03T01:00:00+08:00"
    assert left.remaining_hours == pytest.approx(1.5)
    assert left.share == pytest.approx(0.75) and left.level == "green"
    assert countdown_zh(left) == "剩 1 小时 30 分"
    assert deadline_zh(left, "2026-12-02T23:30:00+08:00") == "明天 01:00"
    # Seen after midnight, the same deadline is today's.
    assert deadline_zh(left, "2026-12-03T00:10:00+08:00") == "今天 01:00"


def test_a_time_without_zone_is_beijing_time():
    assert as_instant("2026-12-02T08:00:00") == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    assert as_instant(datetime(2026, 12, 2, 8, 0)) == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)


def test_overdue_by_days_and_hours():
    # Handling has 168 h: from 28 Nov 10:00 to 5 Dec 10:00; on 6 Dec 12:30 it is 26.5 h late.
    left = time_left(FLOW, "handling", "2026-11-28T10:00:00+08:00", "2026-12-06T12:30:00+08:00")
    assert left.deadline.isoformat() == "2026-12-05T10:00:00+08:00"
    assert left.overdue and left.level == "overdue"
    assert left.remaining_hours == pytest.approx(-26.5)
    assert countdown_zh(left) == "超时 1 天 2 小时"
    assert deadline_zh(left, "2026-12-06T12:30:00+08:00") == "昨天 10:00"
    assert deadline_zh(left, "2026-12-07T00:30:00+08:00") == "2026年12月5日 10:00"


@pytest.mark.parametrize(("minutes_left", "level"), [
    (119, "green"), (61, "green"), (59, "amber"), (25, "amber"), (23, "red"), (0, "red"),
    (-1, "overdue"),
])
def test_colour_by_share_of_the_limit_left(minutes_left, level):
    since = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    now = since + timedelta(hours=2) - timedelta(minutes=minutes_left)  # dispatched: 2 h
    assert time_left(FLOW, "dispatched", since, now).level == level


def test_a_state_without_a_limit_has_none():
    left = time_left(FLOW, "closed", "2026-12-01T10:00:00+08:00", "2026-12-02T10:00:00+08:00")
    assert left.level == "none" and left.deadline is None and countdown_zh(left) == "无时限"


# -- the console query, in each store ------
@pytest.fixture(params=STORES)
def desk(request, new_store, world_dir):
    store = new_store(request.param)
    import_path(store, world_dir)
    return store, Router(store)


def new_case(desk, name="a2_plain", category="air", description="黑烟") -> str:
    store, router = desk
    return create_incident(acting_as(store, "dispatcher"), router.route(*P[name]),
                           {"category": category, "description": description})


def entered(store, cid: str, state: str, at: str) -> None:
    """The case entered `state` at `at` (an event written as the workflow would)."""
    store.append_events([Event(cid, at, "测试", "transition", state, reason="测试")])


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # 20:00 Beijing


def test_console_sorts_by_deadline_filters_overdue_and_pages_in_the_store(desk):
    store, _ = desk
    late = new_case(desk, description="超时很久")
    entered(store, late, "dispatched", "2026-12-02T10:00:00+08:00")  # due 12:00, 8 h late
    soon = new_case(desk, description="快到期")
    entered(store, soon, "dispatched", "2026-12-02T18:10:00+08:00")  # due 20:10
    slack = new_case(desk, "b1", "water", "还有很多时间")
    entered(store, slack, "dispatched", "2026-12-02T19:50:00+08:00")
    entered(store, slack, "verified", "2026-12-02T19:55:00+08:00")  # due 23:55
    done = new_case(desk, description="已结")
    for state in ("dispatched", "verified", "closed"):
        entered(store, done, state, "2026-12-01T09:00:00+08:00")
    acting = acting_as(store, "dispatcher")
    open_states = tuple(s for s in FLOW.states if s != "closed")

    page = case_page(acting, CaseFilter(statuses=open_states), now=NOW)
    assert page.total == 3
    assert list(page.rows["id"]) == [late, soon, slack]  # soonest deadline first
    assert list(page.rows["level"]) == ["overdue", "red", "green"]
    assert page.rows["countdown"].iloc[0] == "超时 8 小时 0 分"
    # Every state: the closed case (no deadline) comes last.
    assert list(case_page(acting, CaseFilter(), now=NOW).rows["id"])[-1] == done
    assert list(case_page(acting, CaseFilter(overdue=True), now=NOW).rows["id"]) == [late]
    assert list(case_page(acting, CaseFilter(category="water"), now=NOW).rows["id"]) == [slack]
    assert list(case_page(acting, CaseFilter(text="到期"), now=NOW).rows["id"]) == [soon]
    assert case_page(acting, CaseFilter(text="%"), now=NOW).total == 0  # a literal '%'
    assert list(case_page(acting, CaseFilter(text=soon[-4:]), now=NOW).rows["id"]) == [soon]
    # Paged in the store: 2 per page.
    first = case_page(acting, CaseFilter(statuses=open_states), now=NOW, size=2)
    second = case_page(acting, CaseFilter(statuses=open_states), now=NOW, size=2, page=1)
    assert (first.pages, list(first.rows["id"]), list(second.rows["id"])) == (
        2, [late, soon], [slack])
    # "Mine": a dispatcher's cases are the ones waiting for dispatch.
    fresh = new_case(desk)
    assert list(case_page(acting, CaseFilter(mine=True), now=NOW).rows["id"]) == [fresh]


def test_a_grid_worker_sees_only_their_grid_in_the_console(desk):
    store, _ = desk
    mine = new_case(desk, "a2_plain")
    other = new_case(desk, "b1")
    worker = acting_as(store, "grid_worker")  # W003 of a2_plain's grid
    ids = set(case_page(worker, CaseFilter(), now=NOW).rows["id"])
    assert mine in ids and other not in ids


# -- step results and photos ------
def png(size=(64, 48), color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def dispatched_case(desk) -> tuple[str, object]:
    store, _ = desk
    cid = new_case(desk)
    transition(acting_as(store, "dispatcher"), cid, "dispatched")
    return cid, acting_as(store, "grid_worker", case=cid)


def test_an_on_site_check_needs_a_result_and_keeps_its_photos(desk):
    store, _ = desk
    cid, worker = dispatched_case(desk)
    with pytest.raises(CaseError, match="须填写办理结果"):
        transition(worker, cid, "verified", "")
    photo = png()
    transition(worker, cid, "verified", "现场核实：废气处理设施未开启",
               files=[Upload("C:\\DCIM\\现场1.png", photo),
                      Upload("现场2.png", png(color=(0, 0, 0)))])
    files = case_files(worker, cid)
    assert [f.name for f in files] == ["现场1.png", "现场2.png"]  # folders dropped
    assert files[0].mime == "image/png" and files[0].size == len(photo)
    info, data = case_file(worker, files[0].id)
    assert data == photo and info.sha256 == hashlib.sha256(photo).hexdigest()
    last = store.incident_events(cid).iloc[-1]
    assert last["reason"] == "现场核实：废气处理设施未开启" and files[0].event_at == last["at"]
    audit = store.audit_rows(AuditQuery(action="case.step", target=cid))
    assert info.sha256 in audit.iloc[0]["detail"]


@pytest.mark.parametrize(("upload", "message"), [
    (Upload("伪装.jpg", b"MZ\x90\x00 not a photo"), "不是可接受的格式"),
    (Upload("截断.png", png()[:60]), "不是完整的图片"),
    (Upload("空.jpg", b""), "空文件"),
    (Upload("超大.png", b"\x89PNG\r\n\x1a\n" + b"0" * MAX_BYTES), "超过 10 MB"),
])
def test_a_bad_file_is_refused_and_nothing_is_recorded(desk, upload, message):
    store, _ = desk
    cid, worker = dispatched_case(desk)
    events = len(store.incident_events(cid))
    with pytest.raises(CaseError, match=message):
        transition(worker, cid, "verified", "现场核实", files=[upload])
    assert len(store.incident_events(cid)) == events  # the step was not taken either
    assert store.attachments(cid) == []


def test_files_only_where_the_workflow_allows_them(desk):
    store, _ = desk
    cid = new_case(desk)
    with pytest.raises(CaseError, match="不能上传附件"):
        transition(acting_as(store, "dispatcher"), cid, "dispatched", "派遣",
                   files=[Upload("a.png", png())])


def test_someone_outside_the_case_cannot_read_its_photos(desk):
    store, _ = desk
    other = new_case(desk, "a1_numbered")  # another grid than W003's
    transition(acting_as(store, "dispatcher"), other, "dispatched")
    theirs = acting_as(store, "grid_worker", case=other)
    transition(theirs, other, "verified", "现场核实", files=[Upload("b.png", png())])
    [info] = case_files(theirs, other)
    for stranger in (acting_as(store, "grid_worker"),  # W003: another grid
                     acting_as(store, "planner")):  # planners read no cases
        with pytest.raises(PermissionDenied):
            case_file(stranger, info.id)
    assert case_file(acting_as(store, "dispatcher"), info.id)[1] == png()


def test_attachments_are_append_only_in_the_geopackage(new_store, world_dir):
    """(PostGIS: the runtime role has no UPDATE/DELETE on attachments — test_accounts.)"""
    store = new_store("gpkg")
    import_path(store, world_dir)
    desk = (store, Router(store))
    cid, worker = dispatched_case(desk)
    transition(worker, cid, "verified", "现场核实", files=[Upload("a.png", png())])
    [info] = store.attachments(cid)
    for sql in ("UPDATE attachments SET name = 'x'", "DELETE FROM attachments",
                "INSERT OR REPLACE INTO attachments (id, incident_id, event_at, name, mime, "
                f"size, sha256, created_at, created_by, data) VALUES ({info.id}, 'x', '', "
                "'x', 'x', 0, '', '', '', x'00')"):
        with pytest.raises(sqlite3.DatabaseError, match="只能追加"):
            store.conn.execute(sql)
    assert store.attachment_data(info.id)[1] == png()


@pytest.mark.parametrize(("given", "shown"), [
    ("unstated", "坐标系未说明"), ("bd09", "BD-09（百度）"), ("gcj02", "GCJ-02（高德/腾讯/微信）"),
    ("EPSG:4549", "EPSG:4549 CGCS2000 / 3度带 高斯-克吕格 CM 120E"), ("", "坐标系未记录")])
def test_the_record_names_the_given_system_in_words(given, shown):
    import pandas as pd

    from ui.cases import record_html

    case = pd.Series({"given_x": 120.86, "given_y": 32.01, "given_crs": given, "accuracy_m": 0,
                      "lon": 120.86, "lat": 32.01, "category": "air", "description": "黑烟",
                      "source": "12369", "status": "reported", "reporter": "",
                      "reported_at": "2026-11-01T00:00:00+00:00",
                      "created_at": "2026-11-01T00:00:00+00:00", "extent_wkt": None})
    html = record_html(case, "—", False)
    assert f"120.860000, 32.010000（{shown}）" in html

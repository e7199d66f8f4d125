"""Filing the rows of a complaint file as cases (`Gridmap.file_batch`), on both stores: each row
is filed, linked to the open case it repeats, or refused with the reason; the same file sent
again files nothing twice; only a role that may file cases may file a batch."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pandas as pd
import pytest

from grids import batch
from grids.access import Actor, PermissionDenied
from grids.batch import BatchInputError, case_columns, reported_time
from grids.cases import BEIJING
from grids.flow import duplicate_rule
from grids.service import Gridmap
from layers.importer import import_path
from layers.store import AuditQuery
from tests.conftest import STORES
from tests.world import P

DISPATCHER = Actor("t-dispatcher", "dispatcher", "调度员甲")
NOW = datetime.now(BEIJING).replace(second=0, microsecond=0)


@pytest.fixture(params=STORES)
def svc(request, new_store, world_dir):
    """The service on a fresh store of the world (layers only, no cases yet)."""
    store = new_store(request.param)
    import_path(store, world_dir)
    service = Gridmap(store.url)
    yield service
    service.close()


def at(hours: float) -> str:
    """A report time `hours` ago, as an export writes it (Beijing time, no zone)."""
    return (NOW - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M")


def complaints(rows: list[tuple]) -> pd.DataFrame:
    """A complaint table as read from an upload: every cell text, Chinese headers."""
    frame = pd.DataFrame(rows, columns=["编号", "经度", "纬度", "精度", "类别", "举报内容",
                                        "举报时间"])
    frame["坐标系"] = "WGS84"
    return frame.astype(str)


def existing_case(svc: Gridmap, place: str, category: str, days_ago: float = 1.0) -> str:
    answer = svc.route(DISPATCHER, *P[place])
    reported = (NOW - timedelta(days=days_ago)).isoformat()
    return svc.create_case(DISPATCHER, answer, {"category": category, "description": "原案件",
                                                "reported_at": reported})


def all_cases(svc: Gridmap) -> pd.DataFrame:
    return svc.store().query_incidents().set_index("id")


def link_events(svc: Gridmap) -> pd.DataFrame:
    events = svc.store().incident_events()
    return events[events["action"] == "link"]


FILE = [
    ("R1", *P["a2_plain"], 0, "大气", "又冒黑烟了", at(2)),  # repeats the open air case
    ("R2", *P["a2_plain"], 0, "水污染", "排污口冒泡", at(2)),  # same place, other category
    ("R3", *P["outside"], 0, "大气", "市外的烟", at(2)),
    ("R4", *P["near_border"], 300, "大气", "边界附近有异味", at(3)),  # accuracy over a border
    ("R5", *P["a1_numbered"], 0, "噪声", "", at(2)),  # no description
    ("R6", *P["a1_numbered"], 0, "火星污染", "看不懂的类别", at(2)),
    ("R7", *P["a1_numbered"], 0, "噪声", "明天的投诉", (NOW + timedelta(days=1)).isoformat()),
    ("R8", "", "", 0, "大气", "没有坐标", at(2)),
    ("R9", *P["dedicated"], 0, "大气污染", "化工厂异味",
     (NOW - timedelta(hours=5)).strftime("%Y年%m月%d日%H时%M分")),
    ("R10", *P["dedicated"], 0, "air", "化工厂异味又来了", at(1)),  # repeats R9's new case
    ("R11", *P["a1_numbered"], 0, "餐饮油烟", "饭店油烟直排", at(4)),  # a partner's category
]


def test_rows_are_filed_linked_or_refused_each_with_its_reason(svc):
    original = existing_case(svc, "a2_plain", "air")
    before = set(all_cases(svc).index)
    filing = svc.file_batch(DISPATCHER, complaints(FILE), file_key="f" * 64, name="投诉.csv")
    got = {r.ref: r for r in filing.rows}
    assert [r.row for r in filing.rows] == list(range(1, 12)) and list(got) == [
        f"R{i}" for i in range(1, 12)]
    outcome = {ref: r.outcome for ref, r in got.items()}
    assert outcome == {"R1": "linked", "R2": "filed", "R3": "refused", "R4": "filed",
                       "R5": "refused", "R6": "refused", "R7": "refused", "R8": "refused",
                       "R9": "filed", "R10": "linked", "R11": "filed"}
    assert filing.counts == {"filed": 4, "linked": 2, "refused": 5}
    assert not any(r.earlier for r in filing.rows)

    # Linked: to the open case of the same category, recorded on that case, no new case.
    assert got["R1"].case_id == original
    assert got["R10"].case_id == got["R9"].case_id  # a repeat inside the file itself
    links = link_events(svc)
    assert sorted(links["incident_id"]) == sorted([original, got["R9"].case_id])
    on_original = links[links["incident_id"] == original]["reason"].iat[0]
    assert "又冒黑烟了" in on_original and "第1行" in on_original

    # Filed: exactly the filed rows are new cases, with what the row said.
    cases = all_cases(svc)
    new = set(cases.index) - before
    assert new == {got[r].case_id for r in ("R2", "R4", "R9", "R11")}
    r2 = cases.loc[got["R2"].case_id]
    assert r2["category"] == "water" and r2["description"] == "排污口冒泡"
    assert r2["created_by"] == "调度员甲（t-dispatcher）" and r2["source"] == batch.DEFAULT_SOURCE
    assert r2["reported_at"] == (NOW - timedelta(hours=2)).isoformat()  # Beijing time, +08:00
    r9 = cases.loc[got["R9"].case_id]
    assert r9["reported_at"] == (NOW - timedelta(hours=5)).isoformat()  # 年月日时分 read
    # Ambiguous: filed, flagged as the intake page flags it.
    r4 = cases.loc[got["R4"].case_id]
    assert r4["route_status"] == "ambiguous" and got["R4"].route_status == "ambiguous"
    assert "歧义" in got["R4"].note
    created = svc.case_events(DISPATCHER, got["R4"].case_id)
    assert "位置存在歧义" in created["reason"].iat[0]
    assert "城市管理" in got["R11"].note  # filed, with the agency it goes to

    # Refused: why, per row.
    assert got["R3"].route_status == "outside" and "不在本市管辖范围内" in got["R3"].note
    assert got["R5"].note == "事件描述为空" and got["R5"].route_status == "ok"  # routed too
    assert "火星污染" in got["R6"].note and "大气污染" in got["R6"].note
    assert "晚于当前时间" in got["R7"].note
    assert got["R8"].route_status == "error" and "坐标为空" in got["R8"].note
    assert all(not got[r].case_id for r in ("R3", "R5", "R6", "R7", "R8"))

    # Each case and link is audited as the dispatcher's.
    audit = svc.store().audit_rows(AuditQuery(actor="t-dispatcher", limit=None))
    assert (audit["action"] == "case.create").sum() == 1 + 4
    assert (audit["action"] == "case.link").sum() == 2


def test_the_same_file_sent_again_files_nothing_twice(svc):
    original = existing_case(svc, "a2_plain", "air")
    frame = complaints(FILE)
    first = svc.file_batch(DISPATCHER, frame, file_key="a" * 64, name="投诉.csv")
    cases_after, links_after = len(all_cases(svc)), len(link_events(svc))
    again = svc.file_batch(DISPATCHER, frame, file_key="a" * 64, name="投诉.csv")
    assert len(all_cases(svc)) == cases_after and len(link_events(svc)) == links_after
    assert [(r.outcome, r.case_id) for r in again.rows] == [
        (r.outcome, r.case_id) for r in first.rows]
    done = [r for r in again.rows if r.outcome != "refused"]
    assert done and all(r.earlier for r in done)
    assert {r.ref: r.route_status for r in done}["R4"] == "ambiguous"  # read back
    assert again.rows[0].case_id == original
    # Another file (another key) with the same complaints is checked as new: the duplicates
    # it repeats are linked, not filed again.
    other = svc.file_batch(DISPATCHER, frame.iloc[[0, 9]], file_key="b" * 64)
    assert [r.outcome for r in other.rows] == ["linked", "linked"]
    assert len(all_cases(svc)) == cases_after


def test_file_anyway_files_a_repeat_as_a_new_case(svc):
    original = existing_case(svc, "a2_plain", "air")
    filing = svc.file_batch(DISPATCHER, complaints(FILE[:1]), file_key="c" * 64,
                            on_duplicate="file")
    [row] = filing.rows
    assert row.outcome == "filed" and row.case_id != original
    assert original in row.note and "仍登记为新案件" in row.note
    assert link_events(svc).empty
    # An old or closed case is not a duplicate: a repeat of it is filed.
    old = existing_case(svc, "b1", "water", days_ago=60)
    filing = svc.file_batch(DISPATCHER, complaints([("W1", *P["b1"], 0, "水", "河水发黑", at(1))]),
                            file_key="d" * 64)
    assert filing.rows[0].outcome == "filed" and filing.rows[0].case_id != old


def test_a_repeat_follows_the_categorys_own_duplicate_rule(svc):
    """Nearby means within the category's radius of the rules table (noise: small), not any
    same-category case the intake lists."""
    rule = duplicate_rule("noise")
    noise = existing_case(svc, "a1_numbered", "noise", days_ago=0.5)
    lon, lat = P["a1_numbered"]
    metres_east = rule.radius_m + 150

    def east(metres: float) -> float:
        return lon + metres / (111_320 * math.cos(math.radians(lat)))

    # The accuracy widens the radius, as at intake.
    uncertain = complaints([("N0", east(metres_east), lat, 200, "噪声", "位置不确定", at(1))])
    [row] = svc.file_batch(DISPATCHER, uncertain, file_key="m" * 64).rows
    assert (row.outcome, row.case_id) == ("linked", noise)
    frame = complaints([
        ("N1", east(metres_east), lat, 0, "噪声", "远一点的噪声", at(1)),
        ("N2", east(rule.radius_m / 3), lat, 0, "噪声", "近处的噪声", at(1)),
    ])
    got = {r.ref: (r.outcome, r.case_id)
           for r in svc.file_batch(DISPATCHER, frame, file_key="n" * 64).rows}
    assert got["N1"][0] == "filed" and got["N2"] == ("linked", noise)


@pytest.mark.parametrize("role", ["grid_worker", "planner"])
def test_a_role_that_may_not_file_cases_is_refused(svc, role):
    actor = Actor(f"t-{role}", role, "无权限的人")
    before = len(all_cases(svc))
    with pytest.raises(PermissionDenied):
        svc.file_batch(actor, complaints(FILE), file_key="e" * 64, name="投诉.csv")
    assert len(all_cases(svc)) == before
    denied = svc.store().audit_rows(AuditQuery(actor=actor.login, action="denied"))
    assert len(denied) == 1 and denied["target"].iat[0] == "投诉.csv"


def test_file_level_problems_are_refused_before_any_row(svc, monkeypatch):
    no_time = complaints(FILE).drop(columns=["举报时间"])
    with pytest.raises(BatchInputError, match="举报时间（列名可为"):
        svc.file_batch(DISPATCHER, no_time, file_key="g" * 64)
    no_crs = complaints(FILE).drop(columns=["坐标系"])
    with pytest.raises(BatchInputError, match="坐标系"):
        svc.file_batch(DISPATCHER, no_crs, file_key="g" * 64)
    # …the system for the whole file, as on the page, makes it usable
    done = svc.file_batch(DISPATCHER, no_crs.iloc[[1]], file_key="g" * 64, crs="wgs84")
    assert done.rows[0].outcome == "filed"
    monkeypatch.setattr(batch, "MAX_FILE_ROWS", 3)
    with pytest.raises(BatchInputError, match="一次最多登记 3 行"):
        svc.file_batch(DISPATCHER, complaints(FILE), file_key="h" * 64)
    assert len(all_cases(svc)) == 1


def test_case_columns_are_found_by_their_chinese_names():
    frame = pd.DataFrame(columns=["工单编号", "经度", "纬度", "问题类型", "诉求内容",
                                  "来电时间（北京时间）", "受理渠道", "投诉人"])
    cols = case_columns(frame)
    assert (cols.category, cols.description, cols.reported_at) == ("问题类型", "诉求内容",
                                                                   "来电时间（北京时间）")
    assert (cols.source, cols.reporter, cols.id) == ("受理渠道", "投诉人", "工单编号")
    with pytest.raises(BatchInputError) as exc:
        case_columns(pd.DataFrame(columns=["经度", "纬度", "类别"]))
    assert "事件描述" in str(exc.value) and "举报时间" in str(exc.value)
    assert "事件类别" not in str(exc.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-01 08:30", "2026-11-01T08:30:00+08:00"),
    ("2026/11/1 8:30:15", "2026-11-01T08:30:15+08:00"),
    ("2026年11月1日8时30分", "2026-11-01T08:30:00+08:00"),
    ("2026年11月1日 08:30", "2026-11-01T08:30:00+08:00"),
    ("20261101083000", "2026-11-01T08:30:00+08:00"),
    ("20261101", "2026-11-01T00:00:00+08:00"),
    ("2026-11-01T00:30:00Z", "2026-11-01T08:30:00+08:00"),  # UTC becomes Beijing time
    ("2026-11-01 08:30:00+08:00", "2026-11-01T08:30:00+08:00"),
    ("2026-11-01 00:00:00", "2026-11-01T00:00:00+08:00"),  # how Excel dates are read
])
def test_report_times_are_read_as_beijing_time(text, expected):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=BEIJING)
    assert reported_time(text, now).isoformat() == expected


@pytest.mark.parametrize(("text", "why"), [
    ("", "为空"), ("11/01/2026", "年在前"), ("昨天下午", "无法识别"),
    ("2026-13-01", "无法识别"), ("1999-01-01", "2000"), ("2026-12-02 12:00", "晚于当前时间"),
])
def test_bad_report_times_say_why(text, why):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=BEIJING)
    with pytest.raises(ValueError, match=why):
        reported_time(text, now)

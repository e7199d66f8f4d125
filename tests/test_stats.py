"""绩效考评 against hand-counted cases, on both stores: the per-case facts computed in SQL
(stints, limits, referrals, returns, Beijing-day periods), the figures per bureau and township,
who may see which, the Excel workbook and `gridmap stats --json`.

The cases (limits of grids/case_flow.csv: reported 0.5 h, dispatched 2 h, verified 4 h,
transferred 24 h, handling 168 h), period 2026-11-01 … 2026-11-10, counted at NOW:

- C1 (B-A-1, 320901001, air): on time, closed after 2 h; its events are written without an
  offset (Beijing time).
- C2 (B-A-1, 320901001, water): 4 h 50 in dispatched (late), closed after 5.5 h.
- C3 (B-A, 320901002, air): referred (transferred 21 h, handling 27 h), closed after 50 h.
- C4 (B-A, 320901002, water): open, dispatched since 11-05 (a duplicate linked since: the same
  stint): late now.
- C5 (B-B, then B-B-1 by reassignment; 320902001, cooking_fumes: a partner category):
  dispatched 1 h 25, reassigned, 1 h 30 more: one stint of 2 h 55, late; closed after 3.5 h.
- C6 (B-A-1, 320901001, noise): sent back once (returned), every stint in time, closed after
  2.5 h.
- C7 (no bureau, no township: ambiguous; air): open, reported since 11-08 (a duplicate linked
  10 minutes later: the same, first stint): late now.
- C9 (B-B, 320902001, air): exactly 30 min in reported (in time), closed after 1 h 20.
- C10 (B-A-1, 320901001, soil): 23:30 on the last day; referred, handling since 11-11 20:00
  (88 h at NOW): open, on time.
- C11 (B-A, 320901002): 2026-10-31 23:59 Beijing, before the period.
- C12 (B-A, 320901002): 2026-11-11 00:00 Beijing (still 11-10 in UTC), after the period.
"""

from __future__ import annotations

import io
import json
import subprocess
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import geopandas as gpd
import openpyxl
import pandas as pd
import pytest
import shapely

from grids.access import Actor, PermissionDenied
from grids.flow import load_flow
from grids.service import Gridmap
from grids.stats import Period, PeriodError
from layers.importer import import_path
from layers.incidents import Event
from layers.store import AuditQuery, IncidentQuery
from tests.conftest import STORES, gridmap_exe
from tests.signin import WORLD_USERS, add_world_users
from tests.world import P

BJ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=BJ)
SINCE, UNTIL = "2026-11-01", "2026-11-10"
GRID_A1, GRID_A2, GRID_B1 = "320901001001001", "320901002001001", "320902001001001"

# id: (reported_at, bureau, township, grid, category, [(at, status, action, bureau)])
CASES = {
    "C1": ("2026-11-02T09:00:00+08:00", "B-A-1", "320901001", GRID_A1, "air", [
        ("2026-11-02T09:20:00", "dispatched"), ("2026-11-02T10:30:00", "verified"),
        ("2026-11-02T11:00:00", "closed")]),
    "C2": ("2026-11-03T08:00:00+08:00", "B-A-1", "320901001", GRID_A1, "water", [
        ("2026-11-03T08:10:00+08:00", "dispatched"), ("2026-11-03T13:00:00+08:00", "verified"),
        ("2026-11-03T13:30:00+08:00", "closed")]),
    "C3": ("2026-11-04T10:00:00+08:00", "B-A", "320901002", GRID_A2, "air", [
        ("2026-11-04T10:15:00+08:00", "dispatched"), ("2026-11-04T11:00:00+08:00", "verified"),
        ("2026-11-04T12:00:00+08:00", "transferred"),
        ("2026-11-05T09:00:00+08:00", "handling"), ("2026-11-06T12:00:00+08:00", "closed")]),
    "C4": ("2026-11-05T14:00:00+08:00", "B-A", "320901002", GRID_A2, "water", [
        ("2026-11-05T14:10:00+08:00", "dispatched"),
        ("2026-11-05T15:00:00+08:00", "dispatched", "link")]),  # a duplicate call
    "C5": ("2026-11-06T09:00:00+08:00", "B-B", "320902001", GRID_B1, "cooking_fumes", [
        ("2026-11-06T09:05:00+08:00", "dispatched"),
        ("2026-11-06T10:30:00+08:00", "dispatched", "reassign", "B-B-1"),
        # written in UTC: 12:00 Beijing
        ("2026-11-06T04:00:00Z", "verified"), ("2026-11-06T12:30:00+08:00", "closed")]),
    "C6": ("2026-11-07T08:00:00+08:00", "B-A-1", "320901001", GRID_A1, "noise", [
        ("2026-11-07T08:10:00+08:00", "dispatched"), ("2026-11-07T09:00:00+08:00", "reported"),
        ("2026-11-07T09:20:00+08:00", "dispatched"), ("2026-11-07T10:00:00+08:00", "verified"),
        ("2026-11-07T10:30:00+08:00", "closed")]),
    "C7": ("2026-11-08T10:00:00+08:00", None, None, None, "air", [
        ("2026-11-08T10:10:00+08:00", "reported", "link")]),  # still its first stint
    "C9": ("2026-11-01T07:00:00+08:00", "B-B", "320902001", GRID_B1, "air", [
        ("2026-11-01T07:30:00+08:00", "dispatched"), ("2026-11-01T08:00:00+08:00", "verified"),
        ("2026-11-01T08:20:00+08:00", "closed")]),
    "C10": ("2026-11-10T23:30:00+08:00", "B-A-1", "320901001", GRID_A1, "soil", [
        ("2026-11-10T23:40:00+08:00", "dispatched"), ("2026-11-11T01:00:00+08:00", "verified"),
        ("2026-11-11T02:00:00+08:00", "transferred"),
        ("2026-11-11T20:00:00+08:00", "handling")]),
    "C11": ("2026-10-31T23:59:00+08:00", "B-A", "320901002", GRID_A2, "air", []),
    "C12": ("2026-11-11T00:00:00+08:00", "B-A", "320901002", GRID_A2, "air", []),
}

# Counted by hand from the table above.
FACTS = {  # id: (bureau now, late, late_now, referred, returned, hours to close or None)
    "C1": ("B-A-1", False, False, False, False, 2.0),
    "C2": ("B-A-1", True, False, False, False, 5.5),
    "C3": ("B-A", False, False, True, False, 50.0),
    "C4": ("B-A", True, True, False, False, None),
    "C5": ("B-B-1", True, False, False, False, 3.5),
    "C6": ("B-A-1", False, False, False, True, 2.5),
    "C7": (None, True, True, False, False, None),
    "C9": ("B-B", False, False, False, False, 80 / 60),
    "C10": ("B-A-1", False, False, True, False, None),
}
TOTALS = {"received": 9, "closed": 6, "open": 3, "on_time": 5, "overdue": 4,
          "open_overdue": 2, "on_time_share": round(5 / 9, 4),
          # closed: 80 min, 2, 2.5, 3.5, 5.5, 50 h -> (2.5 + 3.5) / 2
          "median_hours_to_close": 3.0, "referred": 2, "partner": 1, "returned": 1}
BUREAU_ROWS = {  # code: (received, closed, on_time, overdue, open_overdue, median h, referred,
    #                     partner, returned)
    "B-A-1": (4, 3, 3, 1, 0, 2.5, 1, 0, 1),  # C1 C2 C6 C10
    "B-A": (2, 1, 1, 1, 1, 50.0, 1, 0, 0),  # C3 C4
    "B-B-1": (1, 1, 0, 1, 0, 3.5, 0, 1, 0),  # C5 (after reassignment)
    "B-B": (1, 1, 1, 0, 0, 80 / 60, 0, 0, 0),  # C9
    "": (1, 0, 0, 1, 1, None, 0, 0, 0),  # C7
    "B-M": (0, 0, 0, 0, 0, None, 0, 0, 0),
    "B-P2": (0, 0, 0, 0, 0, None, 0, 0, 0),
}
TOWNSHIP_ROWS = {
    "320901001": (4, 3, 3, 1, 0, 2.5, 1, 0, 1),  # C1 C2 C6 C10
    "320901002": (2, 1, 1, 1, 1, 50.0, 1, 0, 0),  # C3 C4
    "320902001": (2, 2, 1, 1, 0, (3.5 + 80 / 60) / 2, 0, 1, 0),  # C5 C9
    "320902002": (0, 0, 0, 0, 0, None, 0, 0, 0),
    "": (1, 0, 0, 1, 1, None, 0, 0, 0),  # C7
}
ROW_KEYS = ("received", "closed", "on_time", "overdue", "open_overdue", "median_hours_to_close",
            "referred", "partner", "returned")


def shifted(at: str, shift: timedelta) -> str:
    """An ISO time moved by `shift`, written as it was (with its offset, or none)."""
    return (datetime.fromisoformat(at) + shift).isoformat() if shift else at


def add_cases(store, shift: timedelta = timedelta(0)) -> None:
    """The cases of the table, every time moved by `shift` (the browser test moves them into
    the page's default period, the last 30 days)."""
    gen = store.generations()[-1].id
    rows, events = [], []
    for cid, (reported, bureau, town, grid, category, steps) in CASES.items():
        reported = shifted(reported, shift)
        steps = [(shifted(at, shift), *rest) for at, *rest in steps]
        rows.append({
            "id": cid, "reported_at": reported, "source": "12369热线", "category": category,
            "description": f"绩效测试 {cid}", "reporter": "", "given_x": P["a2_plain"][0],
            "given_y": P["a2_plain"][1], "given_crs": "wgs84", "accuracy_m": 0.0,
            "extent_wkt": None, "generation": gen,
            "route_status": "ok" if bureau else "ambiguous", "county_code": None,
            "township_code": town, "grid_code": grid, "park_code": None,
            "bureau_code": bureau, "answer": "{}", "created_at": reported,
            "created_by": "测试", "geometry": shapely.Point(*P["a2_plain"])})
        events.append(Event(cid, reported, "测试", "create", "reported"))
        for at, status, *rest in steps:
            action = rest[0] if rest else "transition"
            events.append(Event(cid, at, "测试", action, status,
                                bureau_code=rest[1] if len(rest) > 1 else None))
    store.add_incidents(gpd.GeoDataFrame(rows, geometry="geometry", crs=4490), events)


@pytest.fixture(scope="module", params=STORES)
def world(request, new_store, world_dir):
    store = new_store(request.param)
    import_path(store, world_dir)
    add_cases(store)
    add_world_users(store.url)
    return store


@pytest.fixture
def svc(world):
    s = Gridmap(world.url)
    yield s
    s.close()


def actor(role: str) -> Actor:
    login, links = WORLD_USERS[role]
    links = dict(links)
    return Actor(login, role, links.pop("name", ""), **links)


def limits() -> dict:
    return {s: h for s, (_, h) in load_flow().states.items()}


def period_query() -> IncidentQuery:
    since, until = Period.parse(SINCE, UNTIL).bounds()
    return IncidentQuery(reported_since=since, reported_until=until)


def test_case_facts_match_the_hand_count(world):
    facts = world.case_facts(period_query(), limits(), now=NOW.isoformat()).set_index(
        "incident_id")
    assert sorted(facts.index) == sorted(FACTS)  # C11 and C12 are outside the Beijing days
    for cid, (bureau, late, late_now, referred, returned, hours) in FACTS.items():
        row = facts.loc[cid]
        got_bureau = row["bureau_code"] if isinstance(row["bureau_code"], str) else None
        assert got_bureau == bureau, cid
        assert (bool(row["late"]), bool(row["late_now"]), bool(row["referred"]),
                bool(row["returned"])) == (late, late_now, referred, returned), cid
        if hours is None:
            assert row["status"] != "closed" and row["hours_to_close"] != row["hours_to_close"]
        else:
            assert row["status"] == "closed"
            assert row["hours_to_close"] == pytest.approx(hours, abs=1e-4), cid
            reported = datetime.fromisoformat(CASES[cid][0])
            assert abs(row["closed_at"].timestamp() - reported.timestamp()
                       - hours * 3600) < 0.01, cid
    assert pd.isna(facts.loc["C7", "township_code"]) and pd.isna(facts.loc["C7", "bureau_code"])


def test_open_stints_are_measured_up_to_now(world):
    """C10 has been handled for 88 h at NOW; past 168 h (at 11-18 20:00) it is late now."""
    later = datetime(2026, 11, 18, 20, 0, 1, tzinfo=BJ).isoformat()
    facts = world.case_facts(period_query(), limits(), now=later).set_index("incident_id")
    assert bool(facts.loc["C10", "late"]) and bool(facts.loc["C10", "late_now"])
    earlier = datetime(2026, 11, 18, 19, 59, tzinfo=BJ).isoformat()
    facts = world.case_facts(period_query(), limits(), now=earlier).set_index("incident_id")
    assert not facts.loc["C10", "late"]


def test_a_stricter_limit_changes_who_is_late(world):
    """The limits are the caller's (the workflow table): 20 minutes in `reported` makes C1 (20
    min), C6 (10 + 20 min) stay in time and C9 (30 min) late."""
    strict = {**limits(), "reported": 20 / 60}
    facts = world.case_facts(period_query(), strict, now=NOW.isoformat()).set_index(
        "incident_id")
    assert not facts.loc["C1", "late"] and not facts.loc["C6", "late"]
    assert facts.loc["C9", "late"]


def test_scope_is_filtered_in_the_store(world):
    q = period_query()
    from dataclasses import replace

    by_bureau = world.case_facts(replace(q, bureau_codes=("B-A", "B-A-1")), limits(),
                                 now=NOW.isoformat())
    assert sorted(by_bureau["incident_id"]) == ["C1", "C10", "C2", "C3", "C4", "C6"]
    by_town = world.case_facts(q, limits(), now=NOW.isoformat(), township_codes=("320902001",))
    assert sorted(by_town["incident_id"]) == ["C5", "C9"]
    assert world.case_facts(q, limits(), now=NOW.isoformat(), township_codes=()).empty


def _row(table, code) -> tuple:
    row = table.set_index("code").loc[code]
    out = []
    for key in ROW_KEYS:
        value = row[key]
        out.append(None if value != value else value)
    return tuple(out)


def _same(got: tuple, want: tuple) -> None:
    for g, w in zip(got, want, strict=True):
        assert g == (None if w is None else pytest.approx(w, abs=1e-4)), (got, want)


def test_figures_per_bureau_and_township(svc):
    result = svc.stats(actor("dispatcher"), SINCE, UNTIL, now=NOW)
    assert result.totals == {k: pytest.approx(v) if isinstance(v, float) else v
                             for k, v in TOTALS.items()}
    assert result.totals["on_time"] + result.totals["overdue"] == result.totals["received"]
    assert set(result.bureaus["code"]) == set(BUREAU_ROWS)
    for code, want in BUREAU_ROWS.items():
        _same(_row(result.bureaus, code), want)
    for code, want in TOWNSHIP_ROWS.items():
        _same(_row(result.townships, code), want)
    names = result.bureaus.set_index("code")
    assert names.loc["B-A-1", "name"] == "甲县执法一局"
    assert names.loc["B-A-1", "parent_name"] == "甲县执法局"
    assert names.loc["", "name"] == "（未确定责任机构）"
    assert result.townships.set_index("code").loc["320901001", "county_name"] == "甲县"
    assert result.bureaus["code"].iat[-1] == ""  # no bureau last
    shares = result.bureaus.set_index("code")["on_time_share"]
    assert shares["B-A-1"] == pytest.approx(0.75) and shares["B-M"] != shares["B-M"]


def test_a_bureau_sees_its_tree_and_nothing_else(svc):
    bureau = actor("bureau")  # B-A, over B-A-1 and B-P2
    mine = svc.stats(bureau, SINCE, UNTIL, now=NOW)
    assert mine.totals["received"] == 6  # C1 C2 C3 C4 C6 C10
    assert set(mine.bureaus["code"]) == {"B-A", "B-A-1", "B-P2"}
    assert set(mine.townships["code"]) == {"320901001", "320901002"}  # where its cases are
    numbered = svc.stats(bureau, SINCE, UNTIL, bureau_code="B-A-1", now=NOW)
    assert numbered.totals["received"] == 4 and list(numbered.bureaus["code"]) == ["B-A-1"]
    before = len(svc.audit_entries(actor("admin"), AuditQuery(action="denied", limit=None)))
    with pytest.raises(PermissionDenied, match="本局及下属"):
        svc.stats(bureau, SINCE, UNTIL, bureau_code="B-B", now=NOW)
    denied = svc.audit_entries(actor("admin"), AuditQuery(action="denied", limit=None))
    assert len(denied) == before + 1 and denied.iloc[0]["target"] == "B-B"
    assert svc.stats_choices(bureau) == ({"B-A": "甲县执法局", "B-A-1": "甲县执法一局",
                                          "B-P2": "甲化工园区执法局"}, {})


def test_a_leader_sees_the_units_they_lead(svc):
    leader = actor("grid_leader")  # L001 leads 320901002001001: C3 and C4
    mine = svc.stats(leader, SINCE, UNTIL, now=NOW)
    assert mine.totals["received"] == 2 and mine.totals["referred"] == 1
    assert svc.stats(leader, SINCE, UNTIL, township_code="320901002",
                     now=NOW).totals["received"] == 2
    with pytest.raises(PermissionDenied):
        svc.stats(leader, SINCE, UNTIL, township_code="320901001", now=NOW)
    assert svc.stats_choices(leader) == ({}, {"320901002": "甲二镇"})


@pytest.mark.parametrize("role", ["grid_worker", "planner"])
def test_roles_without_the_permission_are_refused(svc, role):
    with pytest.raises(PermissionDenied, match="绩效考评"):
        svc.stats(actor(role), SINCE, UNTIL, now=NOW)
    with pytest.raises(PermissionDenied):
        svc.stats_choices(actor(role))


def test_filters_for_everyone(svc):
    viewer = actor("viewer")
    county_b = svc.stats(viewer, SINCE, UNTIL, bureau_code="B-B", now=NOW)
    assert county_b.totals["received"] == 2  # C5 (now B-B-1, under B-B) and C9
    assert county_b.scope_zh == "乙县执法局及下属机构"
    town = svc.stats(viewer, SINCE, UNTIL, township_code="320902001", now=NOW)
    assert town.totals["received"] == 2 and town.totals["partner"] == 1
    with pytest.raises(PeriodError, match="不存在"):
        svc.stats(viewer, SINCE, UNTIL, bureau_code="B-X", now=NOW)


def test_periods_are_beijing_days():
    assert Period.parse("2026-11-01", "2026-11-10").bounds() == (
        "2026-11-01T00:00:00+08:00", "2026-11-10T23:59:59.999999+08:00")
    with pytest.raises(PeriodError, match="晚于"):
        Period.parse("2026-11-10", "2026-11-01")
    with pytest.raises(PeriodError, match="不是有效日期"):
        Period.parse("2026-11-31", None)
    last = Period.parse(None, None, today=datetime(2026, 12, 2).date())
    assert (last.since.isoformat(), last.until.isoformat()) == ("2026-11-03", "2026-12-02")
    assert Period.month(2026, 2).until.isoformat() == "2026-02-28"


def test_a_period_without_cases(svc):
    empty = svc.stats(actor("admin"), "2020-01-01", "2020-01-31", now=NOW)
    assert empty.totals["received"] == 0 and empty.totals["on_time_share"] is None
    assert set(empty.bureaus["received"]) == {0} and len(empty.bureaus) == 6
    assert json.loads(json.dumps(empty.as_dict()))["totals"]["median_hours_to_close"] is None


def test_the_workbook(svc):
    result = svc.stats(actor("dispatcher"), SINCE, UNTIL, now=NOW)
    book = openpyxl.load_workbook(io.BytesIO(svc.stats_excel(actor("dispatcher"), result)))
    assert book.sheetnames == ["按执法机构", "按乡镇街道", "说明"]
    sheet = book["按执法机构"]
    header = [c.value for c in sheet[1]]
    assert header[:6] == ["机构编码", "执法机构", "层级", "上级机构", "受理数", "已结案"]
    assert "按时率（%）" in header and "结案用时中位数（小时）" in header
    rows = {r[1]: dict(zip(header, r, strict=True))
            for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert rows["甲县执法一局"]["受理数"] == 4 and rows["甲县执法一局"]["按时率（%）"] == 75.0
    assert rows["合计"]["受理数"] == 9 and rows["合计"]["超时"] == 4
    assert rows["合计"]["按时率（%）"] == 55.6
    towns = {r[1]: r for r in book["按乡镇街道"].iter_rows(min_row=2, values_only=True)}
    assert towns["乙一镇"][3] == 2  # 受理数 of C5 and C9
    notes = {r[0]: r[1] for r in book["说明"].iter_rows(min_row=2, values_only=True)}
    assert notes["统计期（北京时间）"] == "2026-11-01 至 2026-11-10"
    with pytest.raises(PermissionDenied):
        svc.stats_excel(actor("planner"), result)


# The command line is the same code on both stores: it runs once, on the GeoPackage.
@pytest.mark.parametrize("world", ["gpkg"], indirect=True)
def test_cli_json(world):
    assert world.url.endswith(".gpkg")
    out = subprocess.run([gridmap_exe(), "--store", world.url, "stats", "--since", SINCE,
                          "--until", UNTIL, "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["period"] == {"since": SINCE, "until": UNTIL, "timezone": "Asia/Shanghai"}
    # Counted at the real clock, past 2026-11-18 20:00: C10's 168 h in handling are over too.
    assert datetime.now(BJ) > datetime(2026, 11, 18, 20, 0, tzinfo=BJ)
    totals = data["totals"]
    assert (totals["received"], totals["closed"], totals["overdue"], totals["open_overdue"],
            totals["referred"], totals["partner"], totals["returned"]) == (9, 6, 5, 3, 2, 1, 1)
    rows = {r["code"]: r for r in data["bureaus"]}
    assert rows["B-A-1"]["overdue"] == 2 and rows["B-A-1"]["on_time_share"] == 0.5
    assert rows[""]["name"] == "（未确定责任机构）"
    assert data["definitions"]["on_time"]["label"] == "按时办理"
    text = subprocess.run([gridmap_exe(), "--store", world.url, "stats", "--since", SINCE,
                           "--until", UNTIL, "--bureau", "B-A"], capture_output=True,
                          text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "甲县执法一局" in text.stdout and "乙县执法局" not in text.stdout
    assert "受理 6 件" in text.stdout
    bad = subprocess.run([gridmap_exe(), "--store", world.url, "stats", "--since",
                          "2026-11-10", "--until", "2026-11-01"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("错误：开始日期 2026-11-10 晚于")

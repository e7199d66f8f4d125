"""Versions, drafts and publishing (issue 11), on both stores: only changed features get new
rows; answers as of any past time; drafts saved, resumed, undone and discarded; a publish
refused when someone else published the same layer first (and two real PostgreSQL connections
racing: exactly one wins, nothing lost); rollback; the impact preview against hand-computed
lists; planners only; views of the current rows for GIS tools."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.geometry import box

from grids import publishing
from grids.access import Actor, PermissionDenied
from grids.publishing import FeatureEdits, PublishBlocked
from grids.service import Gridmap
from layers.credit_code import generate
from layers.importer import import_path
from layers.store import AuditQuery, open_store
from layers.versions import (
    BEIJING,
    UNDO_DEPTH,
    LayerConflict,
    VersionError,
    parse_at,
    utc_instant,
)
from tests import world
from tests.conftest import STORES, gridmap_exe
from tests.signin import add_world_users

PLANNER = Actor("t-planner", "planner", "规划员")
CHECKS_ADAPTER = publishing._findings
PLANNER_B = Actor("t-planner-b", "planner", "规划员乙")
DISPATCHER = Actor("t-dispatcher", "dispatcher", "调度员甲")
ADMIN = Actor("t-admin", "admin", "管理员")
# The chemical park P2 (box 120.60–120.64 × 32.13–32.17, bureau B-P2) drawn 0.02° further
# east, over part of the national zone P1 (which has no bureau of its own: county bureau B-A).
P2_WIDER = box(120.6, 32.13, 120.66, 32.17)
# Entities at hand-picked places: (name, lon, lat).
ENTITIES = [
    ("新园区内甲", 120.65, 32.15),  # P1 only -> inside the wider P2
    ("新园区内乙", 120.655, 32.135),  # likewise
    ("老园区内", 120.61, 32.15),  # already in P2
    ("园区外", 120.665, 32.15),  # east of the new line
    ("甲二镇南", 120.68, 32.08),  # far away
    ("甲一局辖区内", 120.55, 32.15),  # in numbered bureau B-A-1's strip, no park
]


def entities_frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame({
        "id": [generate(rng, "320901") for _ in ENTITIES],
        "name": [n for n, _, _ in ENTITIES],
        "lon": [x for _, x, _ in ENTITIES], "lat": [y for _, _, y in ENTITIES],
        "industry": ["化工"] * len(ENTITIES), "permit_class": ["重点管理"] * len(ENTITIES),
        "crs": ["cgcs2000"] * len(ENTITIES),
    })


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = world.write(tmp_path_factory.mktemp("versions") / "files")
    entities_frame().to_csv(d / "entities.csv", index=False)
    return d


@pytest.fixture(params=STORES)
def kind(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def rules_of_this_test(monkeypatch):
    """The data-quality rules (grids/checks.py) are another module's, tested there: here the
    checks find nothing unless a test says what they find (how publishing treats findings
    is tested below, and so is the call into grids.checks)."""
    monkeypatch.setattr(publishing, "_findings", lambda layers, changed=(): [])


@pytest.fixture
def store(kind, new_store, files):
    s = new_store(kind)
    import_path(s, files)
    add_world_users(s.url)
    made = Gridmap(s.url)
    made.add_user(Actor.local_admin(), PLANNER_B.login, "planner", "Test#pass2026",
                  name=PLANNER_B.name)
    made.close()
    return s


@pytest.fixture
def svc(store):
    s = Gridmap(store.url)
    yield s
    s.close()


def rows(store, sql: str) -> list[tuple]:
    """Raw rows of the store's own tables (both stores speak this SQL)."""
    if hasattr(store, "path"):
        return store.conn.execute(sql).fetchall()
    with store.conn, store.conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def wider_park_draft(svc: Gridmap, who: Actor = PLANNER, note: str = "化工园区向东扩展"):
    d = svc.create_draft(who, "parks", note)
    parks = svc.draft_features(who, d.id, "parks")
    parks.loc[parks["code"] == "P2", "geometry"] = P2_WIDER
    return svc.save_draft(who, d.id, parks)


def bureau_at(svc: Gridmap, x: float, y: float, **kw) -> str:
    return svc.route(DISPATCHER, x, y, **kw)["bureau"]["code"]


# -- only changed features get new rows -----------------------------------------------------------
def test_only_changed_features_get_new_rows(store, files, tmp_path):
    before = {t: rows(store, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("parks", "grids", "workers", "entities", "counties")}
    parks = world.layers()["parks"]
    parks.loc[parks["code"] == "P1", "geometry"] = box(120.58, 32.12, 120.69, 32.18)
    grids = world.layers()["grids"]
    grids.loc[grids["code"] == "320901001001001", "name"] = "甲一镇南网格（改名）"
    workers = world.layers()["workers"]
    workers.loc[workers["id"] == "W001", "phone"] = "13900009999"
    again = world.write(tmp_path / "again", {"parks": parks, "grids": grids,
                                             "workers": workers})
    entities_frame().to_csv(again / "entities.csv", index=False)
    gen = import_path(store, again).generation
    assert gen.id == 2
    assert gen.layers == ("grids", "parks", "workers")
    assert gen.changes["parks"] == {"added": 0, "changed": 1, "removed": 0, "unchanged": 1}
    assert gen.changes["grids"]["changed"] == 1 and gen.changes["grids"]["unchanged"] == 9
    assert gen.changes["counties"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 2}
    after = {t: rows(store, f"SELECT count(*) FROM {t}")[0][0] for t in before}
    # One new row per changed feature; unchanged layers (the whole re-read files) none.
    assert {t: after[t] - before[t] for t in before} == {
        "parks": 1, "grids": 1, "workers": 1, "entities": 0, "counties": 0}
    p = rows(store, "SELECT code, gen_from, gen_to FROM parks ORDER BY fid")
    assert p == [("P1", 1, 1), ("P2", 1, None), ("P1", 2, None)]
    # Both versions read back exactly.
    store.clear_cache()
    old = store.snapshot(1)["parks"].set_index("code").geometry
    new = store.snapshot(2)["parks"].set_index("code").geometry
    assert shapely.equals(old["P1"], world.NATIONAL_ZONE)
    assert shapely.equals(new["P1"], box(120.58, 32.12, 120.69, 32.18))
    assert old["P2"] is not None and shapely.equals(old["P2"], new["P2"])
    # The same files once more: a version that changes nothing writes no row.
    same = import_path(store, again).generation
    assert same.layers == () and all(c["added"] + c["changed"] + c["removed"] == 0
                                     for c in same.changes.values())
    assert {t: rows(store, f"SELECT count(*) FROM {t}")[0][0] for t in before} == after


# -- as of a time ---------------------------------------------------------------------------------
def test_as_of_routing_gives_the_old_answer(store, svc):
    x, y = ENTITIES[0][1:]
    case = svc.create_case(DISPATCHER, svc.route(DISPATCHER, x, y),
                           {"category": "air", "description": "园区扩展前的投诉"})
    assert bureau_at(svc, x, y) == "B-A"
    d = wider_park_draft(svc)
    gen = svc.publish_draft(PLANNER, d.id, [])
    assert gen.id == 2 and gen.actor == PLANNER.login and gen.note == "化工园区向东扩展"
    assert bureau_at(svc, x, y) == "B-P2"
    first = store.generations()[0]
    moment = utc_instant(first.created_at)
    between = moment + (utc_instant(gen.created_at) - moment) / 2
    # A time without a zone is Beijing time.
    naive = between.astimezone(BEIJING).replace(tzinfo=None).isoformat()
    assert svc.route(DISPATCHER, x, y, at=naive)["version"]["generation"] == 1
    assert bureau_at(svc, x, y, at=naive) == "B-A"
    assert bureau_at(svc, x, y, at=between.isoformat()) == "B-A"
    assert bureau_at(svc, x, y, at=gen.created_at) == "B-P2"
    assert store.generation_at(between).id == 1
    with pytest.raises(VersionError, match="还没有任何图层版本"):
        svc.route(DISPATCHER, x, y, at=(moment - timedelta(days=1)).isoformat())
    with pytest.raises(VersionError, match="只能选其一"):
        svc.route(DISPATCHER, x, y, generation=1, at=naive)
    # The case keeps the version it was routed with, and its answer is reproduced by it.
    kept = svc.case(DISPATCHER, case)
    assert int(kept["generation"]) == 1 and kept["bureau_code"] == "B-A"
    assert bureau_at(svc, x, y, generation=int(kept["generation"])) == "B-A"
    # The command line: `gridmap route --at`, and `gridmap layers` says who, why and what.
    out = cli(store.url, "route", str(x), str(y), "--crs", "cgcs2000", "--at", naive, "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["bureau"]["code"] == "B-A" and answer["version"]["generation"] == 1
    now = cli(store.url, "route", str(x), str(y), "--crs", "cgcs2000", "--json")
    assert json.loads(now.stdout)["bureau"]["code"] == "B-P2"
    early = cli(store.url, "route", str(x), str(y), "--at", "2001-01-01T08:00")
    assert early.returncode == 2
    assert early.stderr.strip() == ("错误：2001-01-01 08:00:00（北京时间）时还没有任何图层版本："
                                    "最早的版本是 1")
    listed = cli(store.url, "layers")
    assert "t-planner  化工园区向东扩展" in listed.stdout
    assert "改动：园区（parks）修改 1" in listed.stdout
    one = cli(store.url, "layers", "--generation", "2")
    assert "发布人：t-planner" in one.stdout and "修改 1：P2" in one.stdout
    data = json.loads(cli(store.url, "layers", "--json").stdout)
    assert data["generations"][1]["actor"] == "t-planner"
    assert data["generations"][1]["changes"]["parks"]["changed"] == 1


def test_times_are_read_as_beijing_time_unless_they_say_otherwise():
    assert parse_at("2026-12-02T10:00").isoformat() == "2026-12-02T02:00:00+00:00"
    assert parse_at("2026-12-02").isoformat() == "2026-12-01T16:00:00+00:00"
    assert parse_at("2026-12-02T10:00:00Z").isoformat() == "2026-12-02T10:00:00+00:00"
    assert parse_at("2026-12-02T10:00:00+08:00").isoformat() == "2026-12-02T02:00:00+00:00"
    # "+08:00" in a URL query string that was not escaped arrives as " 08:00".
    assert parse_at("2026-12-02T10:00:00 08:00").isoformat() == "2026-12-02T02:00:00+00:00"
    with pytest.raises(VersionError, match="ISO 8601"):
        parse_at("昨天下午")


def test_the_api_answers_as_of_a_time(store, svc):
    from tests.test_api import ApiServer, get

    x, y = ENTITIES[0][1:]
    gen = svc.publish_draft(PLANNER, wider_park_draft(svc).id, [])
    first = utc_instant(store.generations()[0].created_at)
    between = first + (utc_instant(gen.created_at) - first) / 2
    key, _ = svc.add_api_key(Actor.local_admin(), "时点查询", "viewer")
    naive = between.astimezone(BEIJING).replace(tzinfo=None).isoformat()
    with ApiServer(store.url) as api:
        now = get(api, "/route", key, lon=x, lat=y, crs="cgcs2000").json()
        old = get(api, "/route", key, lon=x, lat=y, crs="cgcs2000", at=naive).json()
        by_number = get(api, "/route", key, lon=x, lat=y, crs="cgcs2000", at=1).json()
        point = get(api, f"/point/4490/{x},{y}", key, at=between.isoformat()).json()
        bad = get(api, "/route", key, lon=x, lat=y, at="昨天")
    assert now["bureau"]["code"] == "B-P2" and now["version"]["generation"] == 2
    assert old["bureau"]["code"] == "B-A" and old["version"]["generation"] == 1
    assert by_number == old and point["bureau"]["code"] == "B-A"
    assert bad.status_code == 400 and "ISO 8601" in bad.text


# -- drafts ---------------------------------------------------------------------------------------
def test_a_draft_is_saved_resumed_undone_and_discarded(store, svc):
    d = svc.create_draft(PLANNER, "parks", "调整园区")
    assert d.status == "draft" and d.base == {"parks": 1} and d.author == PLANNER.login
    assert not d.changed and not d.can_undo
    widths = [120.65, 120.66, 120.67]
    for east in widths:
        parks = svc.draft_features(PLANNER, d.id, "parks")
        parks.loc[parks["code"] == "P2", "geometry"] = box(120.6, 32.13, east, 32.17)
        d = svc.save_draft(PLANNER, d.id, parks)
    assert d.counts == {"parks": {"added": 0, "changed": 1, "removed": 0}}
    assert d.undo_depth == 3 and d.revision == 3
    # Resumed from another session (another process would see the same): the content is kept.
    other = Gridmap(store.url)
    resumed = other.draft(PLANNER, d.id)
    p2 = resumed_p2(other, d.id)
    assert shapely.equals(p2, box(120.6, 32.13, 120.67, 32.17))
    other.close()
    # A feature edit on top: a new park, and P1 removed.
    new_park = world.layers()["parks"].iloc[[0]].copy()
    new_park["code"], new_park["name"] = "P9", "新设园区"
    new_park["geometry"] = [box(120.8, 32.05, 120.82, 32.07)]
    d = svc.save_draft(PLANNER, d.id, FeatureEdits("parks", new_park, ("P1",)))
    assert d.counts["parks"] == {"added": 1, "changed": 1, "removed": 1}
    proposed = svc.draft_features(PLANNER, d.id, "parks")
    assert sorted(proposed["code"]) == ["P2", "P9"]
    # Undo, step by step, back to the first save; then nothing is left to undo.
    d = svc.undo_draft(PLANNER, d.id)
    assert sorted(svc.draft_features(PLANNER, d.id, "parks")["code"]) == ["P1", "P2"]
    assert shapely.equals(resumed_p2(svc, d.id), box(120.6, 32.13, 120.67, 32.17))
    d = svc.undo_draft(PLANNER, d.id)
    d = svc.undo_draft(PLANNER, d.id)
    assert shapely.equals(resumed_p2(svc, d.id), box(120.6, 32.13, 120.65, 32.17))
    d = svc.undo_draft(PLANNER, d.id)
    assert not d.changed and d.undo_depth == 0
    with pytest.raises(VersionError, match="没有可撤销"):
        svc.undo_draft(PLANNER, d.id)
    assert resumed.revision == 3
    # A page that opened revision 3 cannot save over a newer one.
    with pytest.raises(VersionError, match="已在别处保存"):
        svc.save_draft(PLANNER, d.id, proposed, expected_revision=3)
    # Discarded: audited, and nothing more can be done with it.
    gone = svc.discard_draft(PLANNER, d.id)
    assert gone.status == "discarded"
    assert d.id not in [x.id for x in svc.drafts(PLANNER)]
    assert d.id in [x.id for x in svc.drafts(PLANNER, status=None)]
    with pytest.raises(VersionError, match=r"已放弃|不能再"):
        svc.save_draft(PLANNER, d.id, proposed)
    with pytest.raises(VersionError):
        svc.publish_draft(PLANNER, d.id, [])
    audit = svc.audit_entries(ADMIN, AuditQuery(actor=PLANNER.login, limit=None))
    assert {"draft.create", "draft.discard"} <= set(audit["action"])
    assert [g.id for g in store.generations()] == [1]


def resumed_p2(svc: Gridmap, draft_id: int):
    parks = svc.draft_features(PLANNER, draft_id, "parks")
    return parks.loc[parks["code"] == "P2", "geometry"].iat[0]


def test_a_layer_edited_in_qgis_comes_back_as_one_change(new_store, files, tmp_path):
    """The `parks_current` view exported (as QGIS would: with `attrs` as JSON text and
    `gen_from`), one park moved, uploaded into a draft: one feature changed, the extra
    attributes kept."""
    import pyogrio

    store = new_store("gpkg")
    parks = world.layers()["parks"].assign(备注=["国家级", "省批化工园区"])
    import_path(store, world.write(tmp_path / "in", {"parks": parks}))
    add_world_users(store.url)
    svc = Gridmap(store.url)
    exported = pyogrio.read_dataframe(store.path, layer="parks_current")
    assert {"attrs", "gen_from"} <= set(exported.columns)
    exported.loc[exported["code"] == "P2", "geometry"] = P2_WIDER
    path = tmp_path / "园区_修改.geojson"
    exported.to_file(path, driver="GeoJSON")
    frame = svc.read_layer_file(PLANNER, path, "parks")
    assert "gen_from" not in frame.columns
    assert frame.set_index("code")["attrs"]["P1"] == {"备注": "国家级"}
    d = svc.create_draft(PLANNER, "parks", "QGIS 中修改")
    d = svc.save_draft(PLANNER, d.id, frame)
    assert d.counts == {"parks": {"added": 0, "changed": 1, "removed": 0}}
    assert svc.publish_draft(PLANNER, d.id, []).changes["parks"]["unchanged"] == 1
    svc.close()


def test_undo_keeps_at_least_fifty_states(store, svc):
    d = svc.create_draft(PLANNER, "parks", "多次修改")
    saves = 55
    for k in range(saves):
        parks = svc.draft_features(PLANNER, d.id, "parks")
        parks.loc[parks["code"] == "P2", "geometry"] = box(120.6, 32.13, 120.641 + k * 1e-4,
                                                           32.17)
        d = svc.save_draft(PLANNER, d.id, parks)
    assert d.undo_depth == min(saves, UNDO_DEPTH) >= 50
    for _ in range(50):
        d = svc.undo_draft(PLANNER, d.id)
    # 55 saves, 50 undone: the content of the 5th save.
    assert shapely.equals(resumed_p2(svc, d.id), box(120.6, 32.13, 120.641 + 4e-4, 32.17))


def test_a_draft_refuses_what_the_layer_does_not_allow(svc):
    d = svc.create_draft(PLANNER, "parks", "错误数据")
    parks = svc.draft_features(PLANNER, d.id, "parks")
    bowtie = shapely.Polygon([(120.6, 32.13), (120.64, 32.17), (120.64, 32.13),
                              (120.6, 32.17)])
    parks.loc[parks["code"] == "P2", "geometry"] = bowtie
    parks.loc[parks["code"] == "P1", "kind"] = "游乐园"
    with pytest.raises(VersionError) as err:
        svc.save_draft(PLANNER, d.id, parks)
    assert "P2：几何无效" in str(err.value) and "游乐园" in str(err.value)
    doubled = pd.concat([parks.iloc[[0]], parks.iloc[[0]]])
    doubled["kind"] = "other"
    with pytest.raises(VersionError, match="编码重复"):
        svc.save_draft(PLANNER, d.id, doubled)
    assert not svc.draft(PLANNER, d.id).changed


# -- publishing -----------------------------------------------------------------------------------
def test_a_rebase_does_not_silently_undo_a_change_to_the_same_feature(store, svc):
    """Two planners change the same park: the second one's rebase would put their boundary
    over the first one's without a word. It is refused, naming the park and the version, and
    goes through only when the planner says their draft should win."""
    from grids.publishing import RebaseClash

    mine = wider_park_draft(svc, PLANNER)  # P2 wider to the east
    theirs = svc.create_draft(PLANNER_B, "parks", "园区改名并调整")
    parks = svc.draft_features(PLANNER_B, theirs.id, "parks")
    parks.loc[parks["code"] == "P2", "name"] = "甲化工园区（调整）"
    svc.save_draft(PLANNER_B, theirs.id, parks)
    assert svc.publish_draft(PLANNER_B, theirs.id, []).id == 2
    with pytest.raises(RebaseClash) as err:
        svc.rebase_draft(PLANNER, mine.id)
    message = str(err.value)
    assert "园区 P2" in message and "版本 2（t-planner-b）" in message and "覆盖" in message
    assert err.value.codes == [("parks", "P2")]
    kept = svc.draft(PLANNER, mine.id)
    assert kept.base == {"parks": 1} and kept.conflicts  # nothing changed
    rebased = svc.rebase_draft(PLANNER, mine.id, overwrite=True)
    assert rebased.base == {"parks": 2} and not rebased.conflicts
    gen = svc.publish_draft(PLANNER, mine.id, [])
    p2 = store.snapshot(gen.id)["parks"].set_index("code").loc["P2"]
    assert shapely.equals(p2["geometry"], P2_WIDER) and p2["name"] != "甲化工园区（调整）"


def test_publish_is_refused_on_conflict_and_the_draft_is_kept(store, svc):
    mine = wider_park_draft(svc, PLANNER)
    theirs = svc.create_draft(PLANNER_B, "parks", "国家级开发区改名")
    parks = svc.draft_features(PLANNER_B, theirs.id, "parks")
    parks.loc[parks["code"] == "P1", "name"] = "甲国家级经济技术开发区"
    theirs = svc.save_draft(PLANNER_B, theirs.id, parks)
    # A draft of another layer, begun at the same version, is not in conflict with them.
    grids = svc.create_draft(PLANNER_B, "grids", "网格改名")
    g = svc.draft_features(PLANNER_B, grids.id, "grids")
    g.loc[g["code"] == "320902001001001", "name"] = "乙一镇南网格（新名）"
    svc.save_draft(PLANNER_B, grids.id, g)
    assert svc.publish_draft(PLANNER_B, theirs.id, []).id == 2
    waiting = svc.draft(PLANNER, mine.id)
    assert waiting.conflicts and "t-planner-b" in waiting.conflicts[0]
    with pytest.raises(LayerConflict) as err:
        svc.publish_draft(PLANNER, mine.id, [])
    message = str(err.value)
    assert "发布冲突" in message and "园区" in message and "版本 2" in message
    assert "草稿已保留" in message
    kept = svc.draft(PLANNER, mine.id)
    assert kept.status == "draft" and kept.edits == mine.edits
    assert [g.id for g in store.generations()] == [1, 2]
    refused = svc.audit_entries(ADMIN, AuditQuery(action="publish.refused", limit=None))
    assert refused["actor"].iat[0] == PLANNER.login and "conflict" in refused["detail"].iat[0]
    assert svc.publish_draft(PLANNER_B, grids.id, []).layers == ("grids",)
    # Taken over to the newest version, it publishes, and nothing of the other is lost.
    rebased = svc.rebase_draft(PLANNER, mine.id)
    assert rebased.base == {"parks": 3} and not rebased.conflicts
    gen = svc.publish_draft(PLANNER, mine.id, [])
    parks = store.snapshot(gen.id)["parks"].set_index("code")
    assert parks.loc["P1", "name"] == "甲国家级经济技术开发区"
    assert shapely.equals(parks.loc["P2", "geometry"], P2_WIDER)
    assert svc.draft(PLANNER, mine.id).status == "published"
    assert svc.draft(PLANNER, mine.id).generation == gen.id
    published = svc.audit_entries(ADMIN, AuditQuery(action="publish", limit=None))
    assert len(published) == 3
    detail = json.loads(published["detail"].iat[0])
    assert detail["generation"] == gen.id and detail["changes"]["parks"]["changed"] == 1
    assert detail["note"] == "化工园区向东扩展"


def test_errors_block_and_warnings_need_an_acknowledgement(store, svc, monkeypatch):
    from grids.checks import Finding

    found: list = []
    monkeypatch.setattr(publishing, "_findings", lambda layers, changed=(): list(found))
    d = wider_park_draft(svc)
    found[:] = [Finding("overlap", "error", "parks", ["P1", "P2"], 1200.0, (120.65, 32.15),
                        "园区与开发区重叠", id="overlap:P1+P2")]
    with pytest.raises(PublishBlocked, match="园区与开发区重叠"):
        svc.publish_draft(PLANNER, d.id, ["overlap:P1+P2"])  # an error is not acknowledged
    found[:] = [Finding("sliver", "warning", "parks", ["P2"], 3.5, (120.66, 32.15),
                        "狭长缝隙", id="sliver:P2")]
    with pytest.raises(PublishBlocked) as err:
        svc.publish_draft(PLANNER, d.id, [])
    assert "sliver:P2" in str(err.value) and "尚未确认" in str(err.value)
    assert [g.id for g in store.generations()] == [1]
    assert svc.draft(PLANNER, d.id).status == "draft"
    gen = svc.publish_draft(PLANNER, d.id, ["sliver:P2"])
    entry = svc.audit_entries(ADMIN, AuditQuery(action="publish", limit=1))
    detail = json.loads(entry["detail"].iat[0])
    assert detail["acknowledged"] == ["sliver:P2"] and detail["warnings"] == ["sliver:P2"]
    assert detail["generation"] == gen.id


def test_publishing_asks_the_checks_module_about_the_proposed_layers(svc, monkeypatch):
    from grids import checks

    seen = {}

    def check_layers(layers, *, settings=None):
        seen["parks"] = layers["parks"]
        seen["names"] = sorted(layers)
        return [checks.Finding("gap", "warning", "grids", ["320901001001001"], 12.0,
                               (120.55, 32.1), "网格间缝隙", id="gap:1")]

    monkeypatch.setattr(publishing, "_findings", CHECKS_ADAPTER)  # the real one, here
    monkeypatch.setattr(checks, "check_layers", check_layers)
    d = wider_park_draft(svc)
    assert [publishing.finding_id(f) for f in svc.check_draft(PLANNER, d.id)] == ["gap:1"]
    proposed = seen["parks"].set_index("code").geometry
    assert shapely.equals(proposed["P2"], P2_WIDER)  # the draft's layer, not the current one
    assert "grids" in seen["names"] and "bureaus" in seen["names"]
    with pytest.raises(PublishBlocked, match="gap:1"):
        svc.publish_draft(PLANNER, d.id, [])
    assert svc.publish_draft(PLANNER, d.id, ["gap"]).id == 2  # a kind acknowledges all of it


def test_a_publish_that_breaks_references_is_refused(svc):
    d = svc.create_draft(PLANNER, "parks", "删除化工园区")
    d = svc.save_draft(PLANNER, d.id, FeatureEdits("parks", None, ("P2",)))
    with pytest.raises(PublishBlocked, match="P2"):  # bureau B-P2 is the park's
        svc.publish_draft(PLANNER, d.id, [])
    empty = svc.create_draft(PLANNER, "parks", "")
    with pytest.raises(VersionError, match="原因"):
        svc.publish_draft(PLANNER, empty.id, [])


def test_rollback_publishes_the_old_geometry_as_a_new_version(store, svc):
    x, y = ENTITIES[0][1:]
    svc.publish_draft(PLANNER, wider_park_draft(svc).id, [])
    before = rows(store, "SELECT count(*) FROM parks")[0][0]
    gen = svc.rollback(PLANNER, "parks", 1, "扩展方案撤回")
    assert gen.id == 3 and gen.source == "rollback:parks@1" and gen.actor == PLANNER.login
    assert gen.changes["parks"] == {"added": 0, "changed": 1, "removed": 0, "unchanged": 1}
    assert rows(store, "SELECT count(*) FROM parks")[0][0] == before + 1
    store.clear_cache()
    now = store.snapshot(3)["parks"].set_index("code").geometry
    assert shapely.equals(now["P2"], world.CHEMICAL_PARK)
    assert shapely.equals(store.snapshot(2)["parks"].set_index("code").geometry["P2"],
                          P2_WIDER)  # the history stays
    assert bureau_at(svc, x, y) == "B-A"
    entry = svc.audit_entries(ADMIN, AuditQuery(action="rollback", limit=1))
    assert json.loads(entry["detail"].iat[0])["to_generation"] == 1
    with pytest.raises(VersionError, match="没有任何改动"):
        svc.rollback(PLANNER, "parks", 1, "再来一次")
    with pytest.raises(VersionError, match="此前的版本"):
        svc.rollback(PLANNER, "parks", 3, "当前版本")


def test_planners_only(svc, store):
    d = wider_park_draft(svc)
    before = len(svc.audit_entries(ADMIN, AuditQuery(action="denied", limit=None)))
    for who in (DISPATCHER, ADMIN):
        with pytest.raises(PermissionDenied, match="无权限"):
            svc.create_draft(who, "parks", "越权")
        with pytest.raises(PermissionDenied):
            svc.publish_draft(who, d.id, [])
        with pytest.raises(PermissionDenied):
            svc.rollback(who, "parks", 1, "越权回退")
        with pytest.raises(PermissionDenied):
            svc.impact(who, d.id)
    denied = svc.audit_entries(ADMIN, AuditQuery(action="denied", limit=None))
    assert len(denied) == before + 8
    assert set(denied["actor"].head(8)) == {DISPATCHER.login, ADMIN.login}
    assert "layers.publish" in denied["detail"].iat[0]
    assert [g.id for g in store.generations()] == [1]
    assert svc.draft(PLANNER, d.id).status == "draft"


# -- the impact preview ---------------------------------------------------------------------------
def test_a_drafts_preview_never_takes_the_current_face_raster(store, svc):
    """A served process holds the current version's face raster (Gridmap.warm builds it before
    it listens); a draft's proposed layers carry the same version number but are other
    polygons: neither that raster nor the version's shared finder may answer for them."""
    from layers.faces import FaceIndex

    svc.warm()
    assert FaceIndex.built(svc.map_router(ADMIN).snapshot)
    d = wider_park_draft(svc)
    found = svc.impact(PLANNER, d.id)
    assert sorted(found.entities["name"]) == ["新园区内乙", "新园区内甲"]
    assert set(found.entities["bureau_after"]) == {"B-P2"}


def test_a_serving_process_gets_the_raster_of_a_version_published_later(store, svc):
    """After `warm` (a served process) the face raster of a version published later is read or
    built in the background once a request meets that version, and single routes then take
    it with the store's answers."""
    import time

    from layers.faces import FaceIndex

    svc.warm()
    d = wider_park_draft(svc)
    svc.publish_draft(PLANNER, d.id, [])
    router = svc.map_router(ADMIN)
    assert router.snapshot.generation.id == 2
    deadline = time.monotonic() + 30
    while not FaceIndex.built(router.snapshot) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert FaceIndex.built(router.snapshot)
    # the new version's single routes through it are the store's answers
    by_raster = svc.route(DISPATCHER, *ENTITIES[0][1:])
    router.resolver.use_faces = False
    try:
        assert svc.route(DISPATCHER, *ENTITIES[0][1:]) == by_raster
    finally:
        router.resolver.use_faces = True
    assert by_raster["bureau"]["code"] == "B-P2"


def test_impact_preview_equals_the_hand_computed_lists(store, svc):
    inside = svc.create_case(DISPATCHER, svc.route(DISPATCHER, *ENTITIES[0][1:]),
                             {"category": "air", "description": "新园区范围内"})
    svc.create_case(DISPATCHER, svc.route(DISPATCHER, *ENTITIES[4][1:]),
                    {"category": "air", "description": "园区外"})
    d = wider_park_draft(svc)
    found = svc.impact(PLANNER, d.id)
    # Entities: the two between the old and the new east line change bureau (county bureau ->
    # park bureau); grids and workers stay (the grids layer is not in the draft).
    assert sorted(found.entities["name"]) == ["新园区内乙", "新园区内甲"]
    assert set(found.entities["bureau_before"]) == {"B-A"}
    assert set(found.entities["bureau_after"]) == {"B-P2"}
    assert set(found.entities["bureau_after_name"]) == {"甲化工园区执法局"}
    assert set(found.entities["changes"]) == {"执法机构"}
    assert (found.entities["grid_before"] == found.entities["grid_after"]).all()
    assert found.entities_routed == len(ENTITIES)
    # Only the entities in the old or the new park were routed: elsewhere nothing changed.
    assert found.summary["entities_in_reach"] == 3
    # Open cases: the one inside the new area.
    assert list(found.cases["id"]) == [inside]
    assert found.cases["bureau_after"].iat[0] == "B-P2"
    # Grids cut by the new line: only 甲二镇北网格 (the park grid lies wholly inside; the
    # line at 120.60 is a township border, not a cut), which the old line cut too.
    assert list(found.cut_grids["grid_code"]) == ["320901002001002"]
    assert found.cut_grids["already_cut"].iat[0] == "是"
    geod = pyproj.Geod(ellps="GRS80")
    added = abs(geod.geometry_area_perimeter(box(120.64, 32.13, 120.66, 32.17))[0])
    inside_area = abs(geod.geometry_area_perimeter(P2_WIDER)[0])
    grid_area = abs(geod.geometry_area_perimeter(box(120.6, 32.1, 120.7, 32.2))[0])
    cut = found.cut_grids.iloc[0]
    assert cut["inside_m2"] == pytest.approx(inside_area, rel=2e-3)
    assert cut["outside_m2"] == pytest.approx(grid_area - inside_area, rel=2e-3)
    area = found.areas.set_index("code").loc["P2"]
    assert area["change"] == "changed" and area["removed_m2"] == 0
    assert area["added_m2"] == pytest.approx(added, rel=2e-3)
    assert shapely.equals(area["added_geometry"], box(120.64, 32.13, 120.66, 32.17))
    # A grid moved into the park as well: the grid and its worker change for one entity.
    grids = svc.draft_features(PLANNER, d.id, "grids")
    grids.loc[grids["code"] == "320901002900001", "geometry"] = box(120.6, 32.13, 120.66,
                                                                    32.14)
    d = svc.save_draft(PLANNER, d.id, {"grids": grids})
    found = svc.impact(PLANNER, d.id).entities.set_index("name")
    assert found.loc["新园区内乙", "changes"] == "执法机构、网格、网格员"
    assert found.loc["新园区内乙", "grid_after"] == "320901002900001"
    assert found.loc["新园区内乙", "workers_after"] == "网格员9（W009）"
    assert found.loc["新园区内甲", "changes"] == "执法机构"
    assert found.loc["老园区内", "changes"] == "网格、网格员"  # its park grid shrank away
    # A bureau's area taken away reaches beyond its shape (the county bureau covers what no
    # area is drawn for): every entity is compared again.
    areas = svc.create_draft(PLANNER, "jurisdictions", "撤销甲县执法一局辖区")
    j = svc.draft_features(PLANNER, areas.id, "jurisdictions")
    areas = svc.save_draft(PLANNER, areas.id, j[j["bureau_code"] != "B-A-1"])
    moved = svc.impact(PLANNER, areas.id)
    assert list(moved.entities["name"]) == ["甲一局辖区内"]
    assert moved.entities[["bureau_before", "bureau_after"]].values.tolist() == [["B-A-1",
                                                                                  "B-A"]]
    assert moved.summary["entities_in_reach"] == len(ENTITIES)
    # The sign-off workbook: Chinese headers, one row per entity.
    import io

    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(svc.impact_excel(PLANNER, d.id)))
    assert book.sheetnames == ["概况", "监管对象变化", "受影响案件", "被切分网格", "面积变化"]
    sheet = book["监管对象变化"]
    assert [c.value for c in sheet[1]][:3] == ["统一社会信用代码", "名称", "行业"]
    assert sheet.max_row == 1 + len(found)


# -- views for GIS tools --------------------------------------------------------------------------
def test_current_views_show_the_current_rows_only(store, svc, kind):
    svc.publish_draft(PLANNER, wider_park_draft(svc).id, [])
    assert rows(store, "SELECT count(*) FROM parks")[0][0] == 3
    if kind == "gpkg":
        import pyogrio

        listed = dict(rows(store, "SELECT table_name, data_type FROM gpkg_contents "
                                  "WHERE table_name LIKE '%\\_current' ESCAPE '\\'"))
        from layers.schema import LAYERS

        assert listed == {f"{n}_current": "features" if s.geometry else "attributes"
                          for n, s in LAYERS.items()}
        geo = dict(rows(store, "SELECT table_name, geometry_type_name FROM "
                               "gpkg_geometry_columns WHERE table_name = 'parks_current'"))
        assert geo == {"parks_current": "MULTIPOLYGON"}
        read = pyogrio.read_dataframe(store.path, layer="parks_current")
        assert sorted(read["code"]) == ["P1", "P2"]
        assert shapely.equals(read.set_index("code").geometry["P2"], P2_WIDER)
        return
    import psycopg2

    from layers.postgis import grant_runtime

    grant_runtime(store.url, "gridmap_app")
    app_url = store.url.replace("://gridmap@", "://gridmap_app@")
    conn = psycopg2.connect(app_url, options="-c search_path=gridmap,public")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT code, ST_AsBinary(geom) FROM parks_current ORDER BY code")
            got = cur.fetchall()
            cur.execute("SELECT count(*) FROM bureaus_current")
            assert cur.fetchone()[0] == 6
    finally:
        conn.close()
    assert [c for c, _ in got] == ["P1", "P2"]
    assert shapely.equals(shapely.from_wkb(bytes(got[1][1])), P2_WIDER)
    # The whole planner's round runs as the runtime role: drafts saved over and undone,
    # published, rolled back.
    app = Gridmap(app_url)
    try:
        d = app.create_draft(PLANNER, "parks", "运行账号下的草稿")
        d = app.save_draft(PLANNER, d.id, FeatureEdits("parks", None, ("P1",)))
        d = app.undo_draft(PLANNER, d.id)
        d = app.save_draft(PLANNER, d.id, FeatureEdits("parks", None, ("P1",)))
        assert app.publish_draft(PLANNER, d.id, []).id == 3
        assert app.rollback(PLANNER, "parks", 2, "恢复开发区").id == 4
    finally:
        app.close()


def test_an_older_geopackage_is_upgraded_in_place(new_store, files):
    store = new_store("gpkg")
    import_path(store, files)
    path = store.path
    store.close()
    import sqlite3

    from layers.schema import LAYERS

    conn = sqlite3.connect(path)  # back to schema 4, as a store written before versions
    for name in LAYERS:
        conn.execute(f'DROP VIEW "{name}_current"')
    conn.execute("DELETE FROM gpkg_geometry_columns WHERE table_name LIKE '%_current'")
    conn.execute("DELETE FROM gpkg_contents WHERE table_name LIKE '%_current'")
    conn.execute("DELETE FROM gpkg_contents WHERE table_name IN ('drafts', 'draft_history')")
    conn.execute("DROP TABLE draft_history")
    conn.execute("DROP TABLE drafts")
    conn.execute("ALTER TABLE generations DROP COLUMN actor")
    conn.execute("ALTER TABLE generations DROP COLUMN changes")
    conn.execute("UPDATE gridmap_meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    again = open_store(str(path))
    try:
        assert again.generations()[0].actor == "" and again.generations()[0].changes == {}
        assert again.conn.execute("SELECT value FROM gridmap_meta WHERE key = "
                                  "'schema_version'").fetchone()[0] == "5"
        assert again.conn.execute("SELECT count(*) FROM parks_current").fetchone()[0] == 2
        svc = Gridmap(str(path))
        add_world_users(str(path))
        d = wider_park_draft(svc)
        assert svc.publish_draft(PLANNER, d.id, []).changes["parks"]["changed"] == 1
        svc.close()
    finally:
        again.close()


# -- two planners at once, on PostgreSQL ----------------------------------------------------------
def test_two_concurrent_publishes_of_one_layer_exactly_one_wins(new_store, files):
    """Two planners publish drafts of the same layer at the same moment, each through its own
    PostgreSQL connection, both past the service's conflict check: the store's lock lets one
    commit, the other is refused inside its transaction with the conflict message, its draft
    kept; after a rebase it publishes and both changes are there."""
    from layers.postgis import PostgisStore

    store = new_store("postgis")
    import_path(store, files)
    add_world_users(store.url)
    setup = Gridmap(store.url)
    setup.add_user(Actor.local_admin(), PLANNER_B.login, "planner", "Test#pass2026")
    a = wider_park_draft(setup, PLANNER)
    b = setup.create_draft(PLANNER_B, "parks", "开发区改名")
    parks = setup.draft_features(PLANNER_B, b.id, "parks")
    parks.loc[parks["code"] == "P1", "name"] = "甲国家级经济技术开发区"
    b = setup.save_draft(PLANNER_B, b.id, parks)
    setup.close()

    barrier = threading.Barrier(2, timeout=60)
    real_commit = PostgisStore.commit_layers
    connections = set()

    def commit_together(self, *args, **kwargs):
        connections.add(self.conn.info.backend_pid)
        barrier.wait()  # both have passed every check before either commits
        return real_commit(self, *args, **kwargs)

    results: dict[str, object] = {}

    def publish(who: Actor, draft_id: int) -> None:
        svc = Gridmap(store.url)
        try:
            results[who.login] = svc.publish_draft(who, draft_id, [])
        except Exception as exc:  # the loser's refusal is the point
            results[who.login] = exc
        finally:
            svc.close()

    PostgisStore.commit_layers = commit_together
    try:
        threads = [threading.Thread(target=publish, args=(who, d.id))
                   for who, d in ((PLANNER, a), (PLANNER_B, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        PostgisStore.commit_layers = real_commit
    assert len(connections) == 2  # two real server connections
    won = [k for k, v in results.items() if not isinstance(v, Exception)]
    lost = [k for k, v in results.items() if isinstance(v, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    refusal = results[lost[0]]
    assert isinstance(refusal, LayerConflict) and "发布冲突" in str(refusal)
    assert won[0] in str(refusal) and "草稿已保留" in str(refusal)
    check = Gridmap(store.url)
    try:
        assert [g.id for g in check.versions(PLANNER)] == [1, 2]
        loser = PLANNER if lost[0] == PLANNER.login else PLANNER_B
        kept = check.draft(loser, (a if loser is PLANNER else b).id)
        assert kept.status == "draft" and kept.conflicts
        assert kept.edits == (a if loser is PLANNER else b).edits
        audit = check.audit_entries(ADMIN, AuditQuery(limit=None))
        assert (audit["action"] == "publish").sum() == 1
        refused = audit[audit["action"] == "publish.refused"]
        assert list(refused["actor"]) == [lost[0]]
        # Nothing lost: taken over to the new version, the loser's change joins the winner's.
        check.rebase_draft(loser, kept.id)
        gen = check.publish_draft(loser, kept.id, [])
        parks = check.store().snapshot(gen.id)["parks"].set_index("code")
        assert parks.loc["P1", "name"] == "甲国家级经济技术开发区"
        assert shapely.equals(parks.loc["P2", "geometry"], P2_WIDER)
        assert check.audit_verify(ADMIN).ok
    finally:
        check.close()


def cli(store: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([gridmap_exe(), "--store", store, *args], capture_output=True,
                          text=True, timeout=120)


def test_a_renamed_park_cuts_no_grid(svc):
    """Only a moved boundary cuts grids: a new name alone listed every grid its unchanged
    boundary already crossed as 被切分."""
    d = svc.create_draft(PLANNER, "parks", "园区改名")
    parks = svc.draft_features(PLANNER, d.id, "parks")
    parks.loc[parks["code"] == "P2", "name"] = "甲化工园区（更名）"
    svc.save_draft(PLANNER, d.id, parks)
    found = svc.impact(PLANNER, d.id)
    assert found.cut_grids.empty
    moved = wider_park_draft(svc, PLANNER)
    assert list(svc.impact(PLANNER, moved.id).cut_grids["grid_code"]) == ["320901002001002"]


def test_an_uploaded_boundary_of_too_many_nodes_is_refused(svc, tmp_path):
    import geopandas as gpd
    import numpy as np
    from shapely.geometry import Polygon

    from grids.publishing import MAX_UPLOAD_NODES
    from layers.problems import ImportFailed

    parks = world.layers()["parks"]
    parks = parks[parks["code"] == "P2"].copy()
    t = np.linspace(0, 2 * np.pi, MAX_UPLOAD_NODES + 10, endpoint=False)
    parks["geometry"] = [Polygon(np.column_stack([120.65 + 0.02 * np.cos(t),
                                                  32.15 + 0.02 * np.sin(t)]))]
    path = tmp_path / "dense.geojson"
    gpd.GeoDataFrame(parks).to_file(path, driver="GeoJSON")
    with pytest.raises(ImportFailed) as err:
        svc.read_layer_file(PLANNER, path, "parks")
    message = str(err.value)
    assert "dense.geojson" in message and "第 1 个要素（编码 P2）" in message
    assert f"{MAX_UPLOAD_NODES + 11:,} 个节点" in message and "简化" in message
    parks["geometry"] = [P2_WIDER]
    gpd.GeoDataFrame(parks).to_file(path, driver="GeoJSON")
    assert svc.read_layer_file(PLANNER, path, "parks")["code"].tolist() == ["P2"]


def test_an_upload_that_cannot_be_used_is_a_typed_refusal_that_says_why(svc, tmp_path):
    """Each bad boundary file is an ImportFailed (the page shows its problems; a ReadError
    crashed the page with Streamlit's English box) naming what is wrong, and nothing changes."""
    import geopandas as gpd

    from layers.problems import ImportFailed

    before = svc.versions(PLANNER)
    parks = world.layers()["parks"]
    park = parks[parks["code"] == "P2"].copy()
    files = {
        "zero.geojson": b"",
        "open.geojson": b'{"type": "FeatureCollection", "features": [{"type": "Feature", '
                        b'"properties": {"code": "P9"}, "geometry": {"type": "Polygon", '
                        b'"coordinates": [[[120.6, 32.1], [120.7, 32.1], [120.7, 32.2], '
                        b'[120.6, 32.2]]]}}]}',
        "none.geojson": b'{"type": "FeatureCollection", "features": []}',
    }
    wanted = {"zero.geojson": "文件是空的", "open.geojson": "没有闭合",
              "none.geojson": "文件中没有要素", "far.geojson": "坐标 (1e+300, 32.100000)",
              "code.geojson": "编码不能含空格"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    far = park.copy()
    far["geometry"] = [shapely.Polygon([(120.6, 32.1), (1e300, 32.1), (120.7, 32.2),
                                        (120.6, 32.1)])]
    gpd.GeoDataFrame(far).to_file(tmp_path / "far.geojson", driver="GeoJSON")
    marked = park.assign(code="P2</script><img src=x onerror=alert(1)>")
    gpd.GeoDataFrame(marked).to_file(tmp_path / "code.geojson", driver="GeoJSON")
    for name, says in wanted.items():
        with pytest.raises(ImportFailed) as err:
            svc.read_layer_file(PLANNER, tmp_path / name, "parks")
        message = str(err.value)
        assert name in message and says in message, message
        assert "自相交" not in message  # a far vertex is said as such, not as GEOS's noise
    # A code like that is refused in a draft as well, not only from a file.
    d = svc.create_draft(PLANNER, "parks", "编码测试")
    frame = svc.draft_features(PLANNER, d.id, "parks")
    frame.loc[frame["code"] == "P2", "code"] = "P2 <b>"
    with pytest.raises(Exception, match="编码不能含空格"):
        svc.save_draft(PLANNER, d.id, frame)
    assert svc.versions(PLANNER) == before

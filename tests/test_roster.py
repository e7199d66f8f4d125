"""The roster index (grids/roster.py) answers as scanning the whole roster did: on the Nantong
sample (2,600 people, 5,000 roster rows), for every person, grid and township."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grids import portfolio
from grids.access import Actor
from grids.acting import Acting
from grids.roster import roster
from grids.routing import Router
from grids.service import _colleague_text
from layers.schema import WORKER_ROLE_ZH
from layers.store import IncidentQuery, open_store


@pytest.fixture(scope="module")
def sample(sample_store):
    store = open_store(str(sample_store))
    yield store, Router(store)
    store.close()


def test_rows_of_each_person_and_grid_are_the_scanned_ones(sample):
    _, router = sample
    snap = router.snapshot
    workers = snap["workers"]
    index = roster(snap)
    assert roster(snap) is index  # made once per snapshot
    ids = workers["id"].astype(str)
    for wid in ids.unique():
        expected = workers[ids == wid]
        assert index.of_worker(wid).index.tolist() == expected.index.tolist(), wid
    codes = workers["grid_code"].astype(str)
    some = sorted(codes.unique())[::7]
    expected = workers[codes.isin(some)]
    assert index.of_grids(some).index.tolist() == expected.index.tolist()
    assert index.workers_of_grids(some) == frozenset(expected["id"].astype(str))
    people = index.people_of_grids(some)
    assert [p[0] for p in people] == expected["id"].astype(str).tolist()
    assert [p[3] for p in people] == expected["phone"].fillna("").astype(str).tolist()
    # Unknown keys are nobody, not an error; an empty list is nobody too.
    assert index.of_worker("nobody").empty and index.of_grids(["nowhere"]).empty
    assert index.people_of_grids([]) == []


def test_townships_and_grid_positions_are_the_layers(sample):
    _, router = sample
    grids = router.snapshot["grids"]
    index = roster(router.snapshot)
    some = grids["code"].astype(str).tolist()[::50]
    rows = index.grid_positions([*some, "unknown"])
    assert grids["code"].iloc[rows].astype(str).tolist() == sorted(
        some, key=lambda c: grids["code"].astype(str).tolist().index(c))
    towns = set(grids[grids["code"].astype(str).isin(some)]["township_code"])
    expected = set(grids[grids["township_code"].isin(towns)]["code"].astype(str))
    assert index.grids_in_townships_of(some) == expected and len(expected) > len(some)


def _scanned_scope(snap, actor: Actor) -> tuple[frozenset, frozenset, frozenset]:
    """own grids, own workers and colleagues as acting.py computed them by scanning."""
    workers, grids = snap["workers"], snap["grids"]
    mine = workers[workers["id"].astype(str) == actor.worker_id]
    if actor.role == "grid_leader":
        led = mine[mine["role"] == "leader"]
        mine = led if len(led) else mine
    own = frozenset(mine["grid_code"].astype(str))
    if actor.role == "grid_leader":
        people = frozenset(workers[workers["grid_code"].astype(str).isin(own)]["id"]
                           .astype(str)) | {actor.worker_id}
    else:
        people = frozenset({actor.worker_id})
    towns = set(grids[grids["code"].astype(str).isin(own)]["township_code"])
    codes = set(grids[grids["township_code"].isin(towns)]["code"].astype(str))
    colleagues = frozenset(workers[workers["grid_code"].astype(str).isin(codes)]["id"]
                           .astype(str))
    return own, people, colleagues


def test_an_actors_scope_is_the_scanned_one(sample):
    store, router = sample
    snap = router.snapshot
    workers = snap["workers"]
    leaders = workers[workers["role"] == "leader"]["id"].astype(str).unique()[:40]
    plain = workers[workers["role"] == "worker"]["id"].astype(str).unique()[:40]
    checked = 0
    for role, ids in (("grid_leader", leaders), ("grid_worker", plain)):
        for wid in ids:
            actor = Actor(login=f"u{wid}", role=role, worker_id=str(wid))
            acting = Acting(actor, store, lambda: snap)
            own, people, colleagues = _scanned_scope(snap, actor)
            assert acting.own_grids == own and own, wid
            assert acting.own_workers == people, wid
            assert acting.colleagues == colleagues and str(wid) in colleagues, wid
            for grid in sorted(own)[:2]:
                rows = workers[(workers["grid_code"] == grid)
                               & (workers["id"].astype(str) != str(wid))]
                expected = "；".join(
                    f"{n}（{WORKER_ROLE_ZH.get(r, r)}）"
                    f"{p if str(i) in colleagues else '—'}"
                    for i, n, r, p in rows[["id", "name", "role", "phone"]].itertuples(
                        index=False))
                assert _colleague_text(acting, router, grid) == expected
            checked += 1
    assert checked == len(leaders) + len(plain) >= 60


def test_a_portfolio_is_kept_per_version_but_its_incidents_are_not(sample):
    store, router = sample
    open_ones = portfolio.open_incidents(store.query_incidents(IncidentQuery(
        not_statuses=("closed",))))
    workers = router.snapshot["workers"]
    staffed = set(workers["grid_code"])
    grid = next(g for g in open_ones["grid"] if g in staffed)  # a grid with an open incident
    wid = str(workers[workers["grid_code"] == grid]["id"].iat[0])
    bare = portfolio.build_portfolio(router, wid, store)
    assert set(bare.grids["open_incidents"]) == {0} and bare.incidents.empty
    found = open_ones[open_ones["grid"].isin(bare.grid_codes)]
    assert len(found)
    full = portfolio.build_portfolio(router, wid, store, found)
    assert int(full.grids["open_incidents"].sum()) == len(full.incidents) == len(found)
    # A page changing what it was given changes nothing kept.
    full.grids.loc[:, "name"] = "改过"
    full.worker["name"] = "改过"
    again = portfolio.build_portfolio(router, wid, store)
    assert "改过" not in set(again.grids["name"]) and again.worker["name"] != "改过"
    assert set(again.grids["open_incidents"]) == {0}
    assert again.grids["code"].tolist() == bare.grids["code"].tolist()
    pd.testing.assert_frame_equal(again.entities, bare.entities)
    assert np.array_equal(again.grids["entities"], bare.grids["entities"])


def _grouped_index(snapshot) -> pd.DataFrame:
    """The people index as a pandas groupby made it (before one pass over the roster)."""
    workers = snapshot["workers"]
    grids = snapshot["grids"].set_index("code")
    townships = dict(zip(snapshot["townships"]["code"], snapshot["townships"]["name"],
                         strict=True))
    tw = workers["grid_code"].map(grids["township_code"]).map(townships).fillna("")
    role_zh = workers["role"].map(WORKER_ROLE_ZH).fillna(workers["role"])
    frame = workers.assign(township=tw, role_zh=role_zh)

    def joined(values: pd.Series) -> str:
        return "、".join(v for v in dict.fromkeys(values) if v)

    per = frame.groupby("id", sort=False).agg(
        name=("name", "first"), phone=("phone", "first"), roles=("role_zh", joined),
        grids=("grid_code", "nunique"), townships=("township", joined)).reset_index()
    per["id"] = per["id"].astype(str)
    per["label"] = per["name"] + "（" + per["roles"] + "，" + per["id"] + "）· " + per["townships"]
    return per.sort_values(["townships", "name", "id"]).reset_index(drop=True)


def test_the_people_index_is_the_grouped_one(sample):
    from dataclasses import replace

    _, router = sample
    snap = router.snapshot
    pd.testing.assert_frame_equal(portfolio._worker_index(snap), _grouped_index(snap))
    # A person whose first row has no phone (the first phone given is theirs), one in two
    # roles of two townships, a row of a grid not in this version.
    workers = snap["workers"].copy()
    grids = snap["grids"]
    a, b = grids["code"].iat[0], grids[grids["township_code"] != grids["township_code"].iat[0]][
        "code"].iat[0]
    extra = pd.DataFrame({"id": ["X1", "X1", "X1"], "name": ["某甲", "某甲", "某甲"],
                          "phone": [None, "13800000000", "13900000000"],
                          "role": ["worker", "leader", "worker"],
                          "grid_code": [a, b, "000000000000000"]})
    extra = extra.astype({c: workers[c].dtype for c in extra.columns})
    workers = pd.concat([workers, extra], ignore_index=True)
    edited = replace(snap, layers={**{k: snap[k] for k in ("grids", "townships")},
                                   "workers": workers})
    got = portfolio._worker_index(edited)
    pd.testing.assert_frame_equal(got, _grouped_index(edited))
    person = got.set_index("id").loc["X1"]
    assert person["phone"] == "13800000000" and person["roles"] == "网格员、网格长"
    assert person["grids"] == 3 and "、" in person["townships"]

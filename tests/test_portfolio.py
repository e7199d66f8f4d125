"""A grid worker's portfolio: grids, entities (batch-routed), open incidents, Excel roster."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from openpyxl import load_workbook

from grids import portfolio
from grids.routing import Router
from layers.store import IncidentQuery, open_store
from tests.browser import FORMULA_NAME, XSS_NAME, build_map_world

A2_SOUTH = "320901002001001"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(str(build_map_world(tmp_path_factory.mktemp("portfolio"))))
    yield s
    s.close()


@pytest.fixture(scope="module")
def router(store):
    return Router(store)


def worker_of(router, grid, role="worker"):
    w = router.snapshot["workers"]
    return w[(w["grid_code"] == grid) & (w["role"] == role)]["id"].iat[0]


def test_assignment_is_the_routing_answer(router):
    assigned = portfolio.entity_assignment(router)
    entities = router.snapshot["entities"]
    assert len(assigned) == len(entities)
    for geom, grid, status in zip(entities.geometry.values, assigned["grid_code"],
                                  assigned["status"], strict=True):
        answer = router.route(geom.x, geom.y)
        assert status == answer["status"]
        assert grid == (answer["grid"]["code"] if answer["grid"] else "")


def test_each_workers_entities_are_those_routed_to_their_grids(store, router):
    """Found by the store around a worker's grids and routed there: the same entities as
    every entity routed at once and selected by grid (or by candidate grid when ambiguous)."""
    assigned = portfolio.entity_assignment(router)
    seen = set()
    for wid in router.snapshot["workers"]["id"].astype(str).unique():
        mine = portfolio.build_portfolio(router, wid, store)
        codes = set(mine.grid_codes)
        expected = {eid for eid, grid, cands in zip(
            assigned["entity_id"], assigned["grid_code"], assigned["candidate_grids"],
            strict=True) if grid in codes or codes.intersection(cands)}
        assert set(mine.entities["id"]) == expected, wid
        seen |= expected
    assert len(seen) >= len(assigned) // 2  # most entities belong to some worker's grid


def test_a_workers_entities_asked_again_are_the_same_and_their_own(store, router):
    wid = worker_of(router, A2_SOUTH)
    first = portfolio.build_portfolio(router, wid, store)
    first.entities.loc[:, "name"] = "改过的名称"  # a page changing its copy
    again = portfolio.build_portfolio(router, wid, store)
    assert "改过的名称" not in set(again.entities["name"]) and len(again.entities)
    assert again.entities["id"].tolist() == first.entities["id"].tolist()


def test_worker_index(router):
    index = portfolio.worker_index(router.snapshot)
    assert set(index["id"]) == set(router.snapshot["workers"]["id"])
    leader = index.set_index("id").loc["L001"]
    assert leader["roles"] == "网格长" and leader["townships"] == "甲二镇"
    assert "甲二镇网格长" in leader["label"]
    # Made once per snapshot (every worker page asks); each caller gets its own copy.
    index.loc[:, "phone"] = "changed"
    again = portfolio.worker_index(router.snapshot)
    assert "changed" not in set(again["phone"]) and len(again) == len(index)
    assert portfolio._INDEXES[id(router.snapshot)][0]() is router.snapshot


def test_portfolio_of_a_worker(store, router):
    incidents = portfolio.open_incidents(store.query_incidents(
        IncidentQuery(not_statuses=("closed",))))
    mine = portfolio.build_portfolio(router, worker_of(router, A2_SOUTH), store, incidents)
    assert mine.grid_codes == [A2_SOUTH]
    names = set(mine.entities["name"])
    assert {"甲二镇印染有限公司", XSS_NAME} <= names
    assert mine.grids["entities"].iat[0] == len(mine.entities)
    # An entity exactly on the grid's border is listed, with a note, not silently assigned.
    border = mine.entities[mine.entities["name"] == "界线上的汽修厂"]
    assert len(border) == 1 and "歧义" in border["note"].iat[0]
    if True:
        assert mine.incidents["id"].tolist() == ["T0001"]  # T0003 is closed
        assert mine.grids["open_incidents"].iat[0] == 1
    assert "网格长" in mine.grids["others"].iat[0]


def test_leader_and_unknown_worker(store, router):
    lead = portfolio.build_portfolio(router, "L001", store)
    assert lead.worker["roles"] == "网格长" and lead.grid_codes == [A2_SOUTH]
    with pytest.raises(KeyError):
        portfolio.build_portfolio(router, "nobody", store)


def test_filters(store, router):
    mine = portfolio.build_portfolio(router, worker_of(router, A2_SOUTH), store)
    only = portfolio.filter_entities(mine.entities, ["纺织印染"], None)
    assert only["name"].tolist() == ["甲二镇印染有限公司"]
    assert len(portfolio.filter_entities(mine.entities, None, ["简化管理"])) == 1
    assert len(portfolio.filter_entities(mine.entities, [], [])) == len(mine.entities)


def test_roster_workbook(store, router):
    wid = worker_of(router, "320901002001002")  # A2 north: holds the formula-named entity
    mine = portfolio.build_portfolio(router, wid, store, portfolio.open_incidents(
        store.query_incidents(IncidentQuery(not_statuses=("closed",)))))
    wb = load_workbook(io.BytesIO(portfolio.roster_excel(mine)))
    assert wb.sheetnames == ["网格员", "负责网格", "监管对象", "未结事件"]
    info = {r[0]: r[1] for r in wb["网格员"].iter_rows(values_only=True)}
    assert info["编号"] == wid and info["负责网格数"] == 1
    rows = list(wb["监管对象"].iter_rows(values_only=True))
    assert rows[0][:2] == ("统一社会信用代码", "名称")
    assert len(rows) - 1 == len(mine.entities)
    cells = [c for row in wb["监管对象"].iter_rows() for c in row if c.value == FORMULA_NAME]
    assert cells and all(c.data_type == "s" for c in cells)  # text, never a formula


def test_no_incident_records(store):
    none = store.query_incidents(IncidentQuery(ids=("no-such-case",)))
    frame = portfolio.open_incidents(none)
    assert isinstance(frame, pd.DataFrame) and frame.empty and "grid" in frame

"""Who may do what, cell by cell: every action of grids/permissions.csv for every role, on
both stores, through the service layer (the functions the pages, the CLI and the API call).

A cell `all` must work on a target outside the actor's own scope; `own` must work inside it
and be refused outside; `-` must be refused. Every refusal is in the audit trail."""

from __future__ import annotations

import shutil

import pytest

from grids.access import ROLES, Actor, PermissionDenied, load_permissions
from grids.service import Gridmap
from layers.importer import import_path
from layers.store import AuditQuery
from tests.browser import world_entities
from tests.conftest import STORES
from tests.signin import WORLD_USERS, add_world_users
from tests.world import P

ACTIONS = list(load_permissions())
OWN_GRID = "320901002001001"  # a2_plain: W003's grid, led by L001; bureau B-A
OTHER_WORKER = "W001"


def actor(role: str) -> Actor:
    login, links = WORLD_USERS[role]
    links = dict(links)
    return Actor(login, role, links.pop("name", ""), **links)


DISPATCHER = actor("dispatcher")


@pytest.fixture(scope="module", params=STORES)
def world(request, new_store, world_dir, tmp_path_factory):
    # The world with the supervised entities of tests/browser.py (patrols visit them).
    files = tmp_path_factory.mktemp("access") / "files"
    shutil.copytree(world_dir, files)
    world_entities().to_csv(files / "entities.csv", index=False)
    store = new_store(request.param)
    import_path(store, files)
    add_world_users(store.url)
    return store.url, files


def entity_at(svc: Gridmap, point: str) -> str:
    ents = svc._router().snapshot["entities"]
    lon, lat = P[point]
    d = (ents.geometry.x - lon) ** 2 + (ents.geometry.y - lat) ** 2
    return str(ents["id"].iloc[int(d.to_numpy().argmin())])


def all_ok(svc: Gridmap, entity_id: str) -> dict[str, str]:
    from grids.patrols import checklist_for

    ents = svc._router().snapshot["entities"]
    industry = ents[ents["id"].astype(str) == entity_id]["industry"].iat[0]
    return {i.key: "ok" for i in checklist_for(industry)}


@pytest.fixture
def svc(world):
    s = Gridmap(world[0])
    yield s
    s.close()


def new_case(svc: Gridmap, where: str, to: str = "reported") -> str:
    """A case at world point `where`, moved along the workflow to state `to`."""
    cid = svc.create_case(DISPATCHER, svc.route(DISPATCHER, *P[where]),
                          {"category": "air", "description": f"矩阵测试 {where}"})
    path = {"reported": [], "dispatched": ["dispatched"],
            "transferred": ["dispatched", "verified", "transferred"]}[to]
    for state in path:
        case = svc.case(DISPATCHER, cid)
        role = {"dispatched": "dispatcher", "verified": "grid_worker",
                "transferred": "grid_worker"}[state]
        mover = DISPATCHER if role == "dispatcher" else _worker_of(svc, case)
        svc.step_case(mover, cid, state, "矩阵测试办理结果")
    return cid


def _worker_of(svc: Gridmap, case) -> Actor:
    workers = svc._router().snapshot["workers"]
    wid = workers[workers["grid_code"] == case["assigned_grid_code"]]["id"].iat[0]
    return Actor(f"w-{wid}", "grid_worker", "", worker_id=str(wid))


# Per action: (inside the actor's own scope, outside it). Each runs the real service call and
# returns normally when allowed, raises PermissionDenied when refused.
def _cases_for(role: str) -> tuple[str, str]:
    if role == "bureau":
        return "a2_plain", "enclave"  # B-A's own / B-B's
    return "a2_plain", "a1_numbered"  # W003's grid / another grid


def run(action: str, svc: Gridmap, who: Actor | None, world_dir, inside: bool) -> None:
    role, worker_id = (who.role, who.worker_id) if who is not None else ("", "")
    mine, other = _cases_for(role)
    where = mine if inside else other
    if action == "map.city":
        svc.map_router(who)
    elif action == "route":
        svc.route(who, *P["a2_plain"])
    elif action in ("worker.view", "roster.export"):
        wid = worker_id if inside and worker_id else OTHER_WORKER
        if action == "worker.view":
            svc.worker_portfolio(who, wid)
        else:
            assert svc.roster_excel(who, wid)[:2] == b"PK"
    elif action == "case.read":
        svc.case(who, new_case(svc, where))
    elif action == "case.create":
        svc.create_case(who, svc.route(DISPATCHER, *P["a2_plain"]),
                        {"category": "air", "description": "矩阵测试"})
    elif action == "case.link":
        svc.link_duplicate(who, "重复来电", new_case(svc, where))
    elif action == "case.step":
        if role == "dispatcher":
            svc.step_case(who, new_case(svc, where), "dispatched")
        elif role == "bureau":
            svc.step_case(who, new_case(svc, where, "transferred"), "handling")
        else:  # the on-site check; other roles are refused before the step is looked at
            svc.step_case(who, new_case(svc, where, "dispatched"), "verified", "现场已核实")
    elif action == "case.reassign":
        svc.reassign_case(who, new_case(svc, where), "矩阵测试改派", bureau_code="B-M")
    elif action == "stats.read":
        if role == "grid_leader":  # the townships of the units they lead
            svc.stats(who, township_code="320901002" if inside else "320901001")
        else:  # a bureau: its own tree (B-A) or county B's
            svc.stats(who, bureau_code="B-A" if inside else "B-B")
    elif action == "patrol.record":  # W003's grid (a2_plain) or another grid (a1_numbered)
        ent = entity_at(svc, "a2_plain" if inside else "a1_numbered")
        svc.record_visit(who, ent, all_ok(svc, ent), note="矩阵测试")
    elif action == "patrol.coverage":
        wid = worker_id if inside and worker_id else OTHER_WORKER
        svc.coverage(who, wid)
    elif action == "batch.assign":
        svc.batch_router(who)
    elif action == "layers.import":
        svc.import_layers(who, world_dir, note="矩阵测试")
    elif action == "layers.publish":
        svc.create_draft(who, "parks", "矩阵测试")  # what the planner page begins with
    elif action == "layers.read":
        svc.layer_versions(who)
    elif action == "layers.check":
        assert not svc.check_layers(who).has_errors  # the clean world
    elif action == "users.manage":
        svc.users(who)
    elif action == "audit.read":
        svc.audit_entries(who, AuditQuery(limit=5))
    elif action == "audit.verify":
        assert svc.audit_verify(who).ok
    else:  # a new action in the table needs a line here
        raise AssertionError(f"no test for action {action}")


CELLS = [(a, r) for a in ACTIONS for r in ROLES]


@pytest.mark.parametrize(("action", "role"), CELLS, ids=[f"{a}-{r}" for a, r in CELLS])
def test_matrix_cell(action, role, svc, world):
    cell = load_permissions()[action].scopes[role]
    who = actor(role)
    before = len(svc.audit_entries(DISPATCHER_ADMIN, AuditQuery(action="denied", limit=None)))
    if cell == "all":
        run(action, svc, who, world[1], inside=False)
    elif cell == "own":
        run(action, svc, who, world[1], inside=True)
        with pytest.raises(PermissionDenied):
            run(action, svc, who, world[1], inside=False)
    else:
        with pytest.raises(PermissionDenied):
            run(action, svc, who, world[1], inside=True)
    denied = svc.audit_entries(DISPATCHER_ADMIN, AuditQuery(action="denied", limit=None))
    refusals = 0 if cell == "all" else 1
    assert len(denied) == before + refusals
    if refusals:
        assert denied.iloc[0]["actor"] == who.login


DISPATCHER_ADMIN = Actor("t-admin", "admin", "管理员")


@pytest.mark.parametrize("action", ACTIONS)
def test_no_actor_is_refused_and_the_refusal_audited(action, svc, world):
    """A page or command that calls the service without a signed-in actor (a forgotten
    check above it) is refused by the service, and the refusal is in the audit trail."""
    before = len(svc.audit_entries(DISPATCHER_ADMIN, AuditQuery(action="denied", limit=None)))
    with pytest.raises(PermissionDenied, match="未登录"):
        run(action, svc, None, world[1], inside=True)
    denied = svc.audit_entries(DISPATCHER_ADMIN, AuditQuery(action="denied", limit=None))
    assert len(denied) == before + 1
    assert denied.iloc[0]["actor"] == "（未登录）"


def test_every_cell_has_a_known_value():
    for perm in load_permissions().values():
        assert set(perm.scopes) == set(ROLES)
        assert set(perm.scopes.values()) <= {"all", "own", "-"}


def test_a_step_of_another_role_is_refused_even_in_scope(svc):
    """A grid worker may not dispatch, even a case in their own grid (the workflow table's
    roles column), and a dispatcher may not do the on-site check."""
    cid = new_case(svc, "a2_plain")
    with pytest.raises(PermissionDenied, match="派遣"):
        svc.step_case(actor("grid_worker"), cid, "dispatched")
    svc.step_case(DISPATCHER, cid, "dispatched")
    with pytest.raises(PermissionDenied, match="现场核实"):
        svc.step_case(DISPATCHER, cid, "verified")
    svc.step_case(actor("grid_worker"), cid, "verified", "现场已核实")
    assert svc.case(DISPATCHER, cid)["status"] == "verified"


def test_lists_are_scoped_in_the_store(svc):
    """A grid worker's case list and worker list hold their own grid only; a bureau's its
    bureau tree; phones of non-colleagues are hidden from a grid worker."""
    new_case(svc, "a2_plain")
    new_case(svc, "b1")
    mine = svc.cases(actor("grid_worker"))
    assert len(mine) and set(mine["assigned_grid_code"]) == {OWN_GRID}
    bureau = svc.cases(actor("bureau"))
    assert len(bureau) and set(bureau["assigned_bureau_code"]) <= {"B-A", "B-A-1", "B-P2"}
    assert len(svc.cases(DISPATCHER)) > len(bureau)
    workers = svc.workers(actor("grid_worker"))
    assert list(workers["id"]) == ["W003"]
    leader = svc.workers(actor("grid_leader"))
    assert set(leader["id"]) == {"W003", "L001"}
    everyone = svc.workers(actor("viewer"))
    assert len(everyone) > 10 and not everyone["phone"].str.contains("仅同乡镇").any()
    portfolio = svc.worker_portfolio(actor("grid_worker"), "W003")
    assert "13900000001" in portfolio.grids["others"].iat[0]  # the leader: a colleague


def test_readme_matrix_is_the_table():
    """The README's role matrix says what grids/permissions.csv says (the docs cannot drift)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    words = {"all": "全部", "own": "本人范围", "-": "—"}
    for perm in load_permissions().values():
        row = f"| `{perm.action}` | {perm.label_zh} | " + " | ".join(
            words[perm.scopes[r]] for r in ROLES) + " |"
        assert row in readme, row


def test_an_actor_label_has_one_pair_of_brackets():
    from grids.access import Actor

    assert Actor("d", "dispatcher", "调度员甲").label == "调度员甲（调度员·受理派遣）"
    assert Actor("w", "grid_worker", "网格员3").label == "网格员3（网格员）"
    assert Actor("x", "nobody").label == "x（nobody）"

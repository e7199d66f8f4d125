"""One demo account per role for the sample store (`gridmap demo`). The passwords are public
(README): for demonstration only, never for a real deployment, where the first administrator
is created with `gridmap user add` and there is no default password."""

from __future__ import annotations

from grids.access import ROLES_ZH, Actor

DEMO_PASSWORDS = {
    "grid_worker": "Demo#worker2026",
    "grid_leader": "Demo#leader2026",
    "dispatcher": "Demo#dispatch2026",
    "bureau": "Demo#bureau2026",
    "planner": "Demo#planner2026",
    "admin": "Demo#admin2026",
    "viewer": "Demo#viewer2026",
}
DEMO_LOGINS = {
    "grid_worker": "demo-worker",
    "grid_leader": "demo-leader",
    "dispatcher": "demo-dispatcher",
    "bureau": "demo-bureau",
    "planner": "demo-planner",
    "admin": "demo-admin",
    "viewer": "demo-viewer",
}
DEMO_MARK = "demo-admin"  # the login page tells a sample store by this account


def demo_links(svc) -> dict[str, dict]:
    """Roster and bureau links for the demo accounts: the worker of the grid with the most
    open sample incidents, that grid's leader, and the county bureau over it."""
    store = svc.store()
    snap = store.snapshot()
    workers = snap["workers"]
    open_cases = store.query_incidents()
    open_cases = open_cases[open_cases["status"] != "closed"]
    busiest = open_cases["assigned_grid_code"].dropna().value_counts()
    grid = next((g for g in busiest.index if (workers["grid_code"] == g).any()),
                str(workers["grid_code"].iat[0]))
    here = workers[workers["grid_code"] == grid]
    worker = here[here["role"] == "worker"]
    leader = here[here["role"] == "leader"]
    worker_id = str((worker if len(worker) else here)["id"].iat[0])
    leader_id = str((leader if len(leader) else here)["id"].iat[0])
    grids = snap["grids"].set_index("code")
    township = grids.loc[grid, "township_code"]
    county = snap["townships"].set_index("code").loc[township, "county_code"]
    bureaus = snap["bureaus"]
    county_bureau = bureaus[(bureaus["level"] == "county") & (bureaus["county_code"] == county)]
    bureau = str((county_bureau if len(county_bureau) else bureaus)["code"].iat[0])
    names = dict(zip(workers["id"].astype(str), workers["name"].astype(str), strict=False))
    return {
        "grid_worker": {"worker_id": worker_id, "name": names.get(worker_id, "")},
        "grid_leader": {"worker_id": leader_id, "name": names.get(leader_id, "")},
        "bureau": {"bureau_code": bureau, "name": "执法局演示账号"},
    }


def add_demo_users(svc, actor: Actor) -> list[tuple[str, str, str]]:
    links = demo_links(svc)
    made = []
    for role, login in DEMO_LOGINS.items():
        extra = links.get(role, {"name": f"{ROLES_ZH[role].split('（')[0]}演示账号"})
        svc.add_user(actor, login, role, DEMO_PASSWORDS[role], **extra)
        made.append((login, role, DEMO_PASSWORDS[role]))
    return made

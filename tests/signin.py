"""Accounts for the test worlds, one per role, and signing a Streamlit AppTest in as one of
them (AppTest cannot send cookies: the page's cookie reader is replaced by the session token of
a real sign-in through the service; the browser tests sign in through the real login form)."""

from __future__ import annotations

from pathlib import Path

from grids.access import Actor
from grids.service import Gridmap

PASSWORD = "Test#pass2026"
# role -> (login, links) in the hand-drawn world of tests/world.py: 网格员3 (W003) has the grid
# of world.P["a2_plain"]; L001 leads that grid; B-A is county A's bureau (over B-A-1, B-P2).
WORLD_USERS: dict[str, tuple[str, dict]] = {
    "grid_worker": ("t-worker", {"worker_id": "W003", "name": "网格员3"}),
    "grid_leader": ("t-leader", {"worker_id": "L001", "name": "甲二镇网格长"}),
    "dispatcher": ("t-dispatcher", {"name": "调度员甲"}),
    "bureau": ("t-bureau", {"bureau_code": "B-A", "name": "甲县执法局人员"}),
    "planner": ("t-planner", {"name": "规划员"}),
    "admin": ("t-admin", {"name": "管理员"}),
    "viewer": ("t-viewer", {"name": "领导"}),
}


def add_world_users(store: str | Path) -> None:
    svc = Gridmap(str(store))
    try:
        have = {u.login for u in svc.users(Actor.local_admin())}
        for role, (login, links) in WORLD_USERS.items():
            if login not in have:
                svc.add_user(Actor.local_admin(), login, role, PASSWORD, **links)
    finally:
        svc.close()


def sign_in_page(monkeypatch, store: str | Path, role: str = "dispatcher") -> Actor:
    """Point the app at `store` and make the next AppTest runs signed in as `role`."""
    import ui.auth
    import ui.server

    monkeypatch.setenv("GRIDMAP_STORE", str(store))
    monkeypatch.setenv(ui.server.SERVED_FLAG, "1")
    add_world_users(store)
    svc = ui.server.service()
    signed = svc.sign_in(WORLD_USERS[role][0], PASSWORD, "apptest")
    monkeypatch.setattr(ui.auth, "session_token", lambda: signed.token)
    return signed.actor


def acting_as(store, role: str, case: str | None = None):
    """An Acting of `role` on `store` (the service layer's view of an actor). With `case`, a
    grid worker, leader or bureau account is linked to that case's grid or bureau."""
    from grids.acting import Acting

    login, links = WORLD_USERS[role]
    links = dict(links)
    if case is not None and role in ("grid_worker", "grid_leader", "bureau"):
        row = store.query_incidents().set_index("id").loc[case]
        snap = store.snapshot()
        if role == "bureau":
            links["bureau_code"] = row["assigned_bureau_code"]
        else:
            workers = snap["workers"]
            mine = workers[workers["grid_code"] == row["assigned_grid_code"]]
            if role == "grid_leader" and (mine["role"] == "leader").any():
                mine = mine[mine["role"] == "leader"]
            links["worker_id"] = str(mine["id"].iat[0])
    return Acting(Actor(login, role, links.pop("name", ""), **links), store)

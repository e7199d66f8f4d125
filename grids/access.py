"""Who may do what: the acting user, the roles, and the permission table (grids/permissions.csv).

The table is data, like the workflow and the categories: a deployment edits the CSV, not the
code. A cell is `all` (anywhere in the city), `own` (within the actor's own scope: a grid
worker's units, a leader's led units, a bureau and the bureaus under it) or `-` (refused).
Every service function asks `require(actor, action)` itself, so a page or an API route that
forgets to check is still refused below it.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

PERMISSION_TABLE = Path(__file__).with_name("permissions.csv")

ROLES_ZH: dict[str, str] = {
    "grid_worker": "网格员",
    "grid_leader": "网格长",
    "dispatcher": "调度员（受理派遣）",
    "bureau": "执法局人员",
    "planner": "规划编制人员",
    "admin": "系统管理员",
    "viewer": "领导查看",
}
ROLES = tuple(ROLES_ZH)
# How an actor was authenticated (Actor.via), as the audit trail shows it.
VIA_ZH: dict[str, str] = {"session": "网页", "api": "接口", "cli": "命令行", "system": "系统"}
# Roles whose account must name a roster id (their units follow the roster as layers change).
WORKER_ROLES = ("grid_worker", "grid_leader")
# The roster role (layers/schema.WORKER_ROLES) each of them must hold.
ROSTER_ROLE = {"grid_worker": "worker", "grid_leader": "leader"}
SCOPES = ("all", "own", "-")


class PermissionDenied(PermissionError):
    """The actor may not do this; the message says what was refused (Chinese)."""

    def __init__(self, message: str, action: str = "", target: str = "") -> None:
        super().__init__(message)
        self.action = action
        self.target = target


@dataclass(frozen=True)
class Actor:
    """The authenticated user an action is taken by. `worker_id` links a grid worker or leader
    to the roster; `bureau_code` a bureau's staff to their bureau."""

    login: str
    role: str
    name: str = ""
    worker_id: str = ""
    bureau_code: str = ""
    # How the actor was authenticated: "session" (web), "cli" (local administrator), "api".
    via: str = "session"

    @property
    def label(self) -> str:
        # One pair of brackets: 调度员甲（调度员·受理派遣）, not （调度员（受理派遣））.
        role = ROLES_ZH.get(self.role, self.role).replace("（", "·").replace("）", "")
        return f"{self.name or self.login}（{role}）"

    @classmethod
    def local_admin(cls) -> Actor:
        """The command line holds the store's credentials and acts as the local administrator;
        the audit names the operating-system user."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        return cls(login=f"os:{who}", role="admin", name=f"本机管理员 {who}", via="cli")

    @classmethod
    def system(cls, what: str) -> Actor:
        """Background work the system does by itself (the sample builder)."""
        return cls(login=f"system:{what}", role="admin", name=what, via="system")


@dataclass(frozen=True)
class Permission:
    action: str
    label_zh: str
    scopes: dict[str, str]


@lru_cache(maxsize=4)
def load_permissions(path: Path = PERMISSION_TABLE) -> dict[str, Permission]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [r for r in ROLES if r not in table.columns]
    if missing:
        raise ValueError(f"权限表缺少角色列：{'、'.join(missing)}")
    out = {}
    for row in table.to_dict("records"):
        scopes = {role: row[role].strip() or "-" for role in ROLES}
        bad = {s for s in scopes.values() if s not in SCOPES}
        if bad:
            raise ValueError(f"权限表 {row['action']} 行有未知取值：{'、'.join(sorted(bad))}")
        out[row["action"]] = Permission(row["action"], row["label_zh"], scopes)
    return out


def scope(actor: Actor, action: str) -> str:
    """`all`, `own` or `-` for this actor and action (an unknown action is refused)."""
    perm = load_permissions().get(action)
    if perm is None:
        return "-"
    return perm.scopes.get(actor.role, "-")


def can(actor: Actor | None, action: str) -> bool:
    return actor is not None and scope(actor, action) != "-"


def require(actor: Actor | None, action: str) -> str:
    """The actor's scope for `action`, or PermissionDenied."""
    if actor is None:
        raise PermissionDenied("未登录，请先登录", action)
    found = scope(actor, action)
    if found == "-":
        perm = load_permissions().get(action)
        what = perm.label_zh if perm else action
        raise PermissionDenied(f"{actor.label} 无权限：{what}", action)
    return found

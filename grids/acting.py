"""An action being taken: who (the actor), on which store, against which layers — and what the
actor's `own` scope is in those layers: a grid worker's units (from the roster, so they follow
the roster as layers change), a leader's led units, a bureau with the bureaus under it.

Every domain function that reads or changes something takes an `Acting` and asks it to
`require` the permission; a refusal is written to the audit trail before it is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import pandas as pd

from grids.access import Actor, PermissionDenied, require, scope
from grids.roster import roster
from layers.audit import AuditRecord
from layers.store import IncidentQuery, Snapshot, Store


@dataclass
class Acting:
    actor: Actor | None  # None: no session — every `require` refuses (and is audited)
    store: Store
    # The current layers, read only when a scope needs them (user administration and the
    # audit work on a store that has no layers yet).
    layers: Callable[[], Snapshot] | None = None

    @cached_property
    def snapshot(self) -> Snapshot:
        return self.layers() if self.layers is not None else self.store.snapshot()

    # -- permission ---------------------------------------------------------------------------
    def require(self, action: str, target: str = "") -> str:
        """The scope (`all`/`own`) of `action` for the actor, or PermissionDenied (audited)."""
        try:
            return require(self.actor, action)
        except PermissionDenied as exc:
            self.deny(action, target, str(exc))  # audits, then raises

    def scope_of(self, action: str) -> str:
        """The scope without checking (for showing or hiding a button)."""
        return scope(self.actor, action)

    def deny(self, action: str, target: str, message: str) -> None:
        self.store.append_audit([self.record("denied", target, refused=action,
                                             message=message)])
        raise PermissionDenied(message, action, target)

    def record(self, action: str, target: str = "", **detail) -> AuditRecord:
        """An audit record of this actor (no actor: a call made without a session, refused
        and recorded as such rather than failing on the missing actor)."""
        actor = self.actor
        if actor is None:
            return AuditRecord(actor="（未登录）", actor_role="", via="", action=action,
                               target=str(target), detail=detail)
        if actor.via == "api":  # the key's name, as the caller knows it
            detail = {**detail, "key_name": actor.name}
        return AuditRecord(actor=actor.login, actor_role=actor.role, via=actor.via,
                           action=action, target=str(target), detail=detail)

    # -- the actor's own scope in the current layers ------------------------------------------
    @cached_property
    def own_grids(self) -> frozenset[str]:
        """Grid codes of the actor's roster rows (a leader's led grids are among them)."""
        if self.actor is None or not self.actor.worker_id:
            return frozenset()
        mine = roster(self.snapshot).of_worker(self.actor.worker_id)
        if self.actor.role == "grid_leader":
            led = mine[mine["role"] == "leader"]
            mine = led if len(led) else mine
        return frozenset(mine["grid_code"].astype(str))

    @cached_property
    def own_bureaus(self) -> frozenset[str]:
        """The actor's bureau and every bureau under it (parent_code links, cycle-safe)."""
        if self.actor is None or not self.actor.bureau_code:
            return frozenset()
        bureaus = self.snapshot["bureaus"]
        children: dict[str, list[str]] = {}
        for code, parent in zip(bureaus["code"].astype(str),
                                bureaus["parent_code"].fillna("").astype(str), strict=True):
            children.setdefault(parent, []).append(code)
        seen: set[str] = set()
        todo = [self.actor.bureau_code]
        while todo:
            code = todo.pop()
            if code in seen:
                continue
            seen.add(code)
            todo.extend(children.get(code, []))
        return frozenset(seen)

    @cached_property
    def own_workers(self) -> frozenset[str]:
        """Roster ids the actor may see as `own`: themselves; a leader also the workers of the
        units they lead."""
        if self.actor is None or not self.actor.worker_id:
            return frozenset()
        if self.actor.role != "grid_leader":
            return frozenset({self.actor.worker_id})
        return roster(self.snapshot).workers_of_grids(self.own_grids) | {self.actor.worker_id}

    @cached_property
    def colleagues(self) -> frozenset[str]:
        """Roster ids whose phones a grid worker may see: the people of the townships of their
        own units."""
        index = roster(self.snapshot)
        return index.workers_of_grids(index.grids_in_townships_of(self.own_grids))

    def sees_all_phones(self) -> bool:
        return self.actor.role not in ("grid_worker", "grid_leader")

    # -- cases ----------------------------------------------------------------------------------
    def incident_query(self, action: str, query: IncidentQuery | None = None) -> IncidentQuery:
        """`query` narrowed to what the actor may see for `action` (filtered in the store)."""
        query = query or IncidentQuery()
        if self.require(action) == "all":
            return query
        if self.actor.role == "bureau":
            return replace(query, bureau_codes=_narrow(query.bureau_codes, self.own_bureaus))
        return replace(query, grid_codes=_narrow(query.grid_codes, self.own_grids))

    def owns_case(self, case: pd.Series | dict) -> bool:
        grid = case.get("assigned_grid_code")
        bureau = case.get("assigned_bureau_code")
        if self.actor.role == "bureau":
            return isinstance(bureau, str) and bureau in self.own_bureaus
        return isinstance(grid, str) and grid in self.own_grids

    def may_case(self, action: str, case: pd.Series | dict) -> bool:
        """`require_case` without auditing or raising (to show or hide a button)."""
        found = self.scope_of(action)
        return found == "all" or (found == "own" and self.owns_case(case))

    def require_case(self, action: str, case: pd.Series | dict) -> str:
        found = self.require(action, str(case.get("id", "")))
        if found == "own" and not self.owns_case(case):
            self.deny(action, str(case.get("id", "")),
                      f"{self.actor.label} 无权限：案件 {case.get('id', '')} 不在本人负责范围内")
        return found

    def require_worker(self, action: str, worker_id: str) -> str:
        found = self.require(action, worker_id)
        if found == "own" and worker_id not in self.own_workers:
            self.deny(action, worker_id,
                      f"{self.actor.label} 无权限：只能查看本人（网格长：所带网格）的工作台")
        return found


def _narrow(asked: tuple[str, ...] | None, own: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(own if asked is None else set(asked) & own))

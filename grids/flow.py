"""The case workflow as data (grids/case_flow.csv), after the city-management loop
信息采集 → 案卷建立 → 任务派遣 → 任务处理 → 处理反馈 → 核查结案: the states with their time
limits, and the steps allowed between them. A deployment edits the table, not the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pandas as pd

FLOW_TABLE = Path(__file__).with_name("case_flow.csv")
CATEGORY_TABLE = Path(__file__).with_name("categories.csv")
SOURCE_TABLE = Path(__file__).with_name("sources.csv")
DUPLICATE_TABLE = Path(__file__).with_name("duplicate_rules.csv")


class CaseError(ValueError):
    """A step the workflow does not allow; the message says why (Chinese)."""


@dataclass(frozen=True)
class Mark:
    """A progress mark a role records on a case without moving it (the `mark` rows)."""

    state: str
    key: str  # accept | arrive …
    label: str
    roles: tuple[str, ...]
    needs_location: bool  # the phone's position is recorded with it (`evidence`: location)


@dataclass(frozen=True)
class Flow:
    states: dict[str, tuple[str, float | None]]  # state -> (label, time limit in hours)
    steps: dict[tuple[str, str], str]  # (from, to) -> label of the step
    # (from, to) -> the roles that may take the step (the `roles` column; empty = nobody)
    roles: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # (from, to) -> whether the step needs a result text (`result` column: required/optional)
    needs_result: dict[tuple[str, str], bool] = field(default_factory=dict)
    # (from, to) -> whether photos/documents may be attached (`evidence` column: photo)
    evidence: dict[tuple[str, str], bool] = field(default_factory=dict)
    # Progress marks that do not change the state (接单, 到达现场): (state, mark) -> Mark
    marks: dict[tuple[str, str], Mark] = field(default_factory=dict)

    def marks_for(self, state: str, role: str) -> list[Mark]:
        return [m for (s, _), m in self.marks.items() if s == state and role in m.roles]

    def steps_for(self, state: str, role: str) -> list[str]:
        """The next states a role may move a case to from `state`."""
        return [to for to in self.next_states(state) if role in self.roles.get((state, to), ())]

    def label(self, state: str) -> str:
        return self.states[state][0]

    def next_states(self, state: str) -> list[str]:
        return [to for (frm, to) in self.steps if frm == state]

    def check(self, current: str, target: str) -> str:
        """The label of the step current -> target, or CaseError."""
        if (current, target) not in self.steps:
            allowed = "、".join(self.label(s) for s in self.next_states(current)) or "无（已结案）"
            raise CaseError(
                f"不允许从“{self.label(current)}”直接转为“{self.label(target)}”；可转为：{allowed}"
            )
        return self.steps[(current, target)]

    def deadline(self, state: str, since: datetime) -> datetime | None:
        hours = self.states[state][1]
        return None if hours is None else since + timedelta(hours=hours)

    def limits(self) -> tuple[tuple[str, float], ...]:
        """The time limit of every state that has one (what a store query sorts by)."""
        return tuple((s, h) for s, (_, h) in self.states.items() if h)

    def closes(self, state: str, target: str) -> bool:
        return target == "closed" and state != "closed"


@lru_cache(maxsize=4)
def load_flow(path: Path = FLOW_TABLE) -> Flow:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    states = {
        r.from_state: (r.label_zh, float(r.limit_hours) if r.limit_hours else None)
        for r in table[table["kind"] == "state"].itertuples()
    }
    steps = {
        (r.from_state, r.to_state): r.label_zh for r in table[table["kind"] == "step"].itertuples()
    }
    roles = {
        (r.from_state, r.to_state): tuple(str(getattr(r, "roles", "") or "").split())
        for r in table[table["kind"] == "step"].itertuples()
    }
    def flag(column: str, yes: str) -> dict[tuple[str, str], bool]:
        if column not in table:
            return {}
        return {(r.from_state, r.to_state): str(getattr(r, column)).strip() == yes
                for r in table[table["kind"] == "step"].itertuples()}

    unknown = {s for pair in steps for s in pair} - set(states)
    if unknown:
        raise CaseError(f"流程表中的步骤引用了未定义的状态：{'、'.join(sorted(unknown))}")
    marks = {
        (r.from_state, r.to_state): Mark(r.from_state, r.to_state, r.label_zh,
                                         tuple(str(getattr(r, "roles", "") or "").split()),
                                         str(getattr(r, "evidence", "")).strip() == "location")
        for r in table[table["kind"] == "mark"].itertuples()
    }
    unknown = {m.state for m in marks.values()} - set(states)
    if unknown:
        raise CaseError(f"流程表中的进度标记引用了未定义的状态：{'、'.join(sorted(unknown))}")
    return Flow(states, steps, roles, flag("result", "required"), flag("evidence", "photo"),
                marks)


@dataclass(frozen=True)
class Category:
    key: str
    label_zh: str
    handler: str  # "eco" or "partner"
    agency_zh: str
    note_zh: str


@lru_cache(maxsize=4)
def load_categories(path: Path = CATEGORY_TABLE) -> dict[str, Category]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {
        r.key: Category(r.key, r.label_zh, r.handler, r.agency_zh, r.note_zh)
        for r in table.itertuples()
    }


class Source(NamedTuple):
    """Where a location comes from: its usual accuracy and the coordinate system it is in
    (Amap/WeChat/Tencent → GCJ-02, Baidu → BD-09, GPS → WGS84; empty = not stated)."""

    label_zh: str
    accuracy_m: float
    crs: str


@lru_cache(maxsize=4)
def load_sources(path: Path = SOURCE_TABLE) -> dict[str, Source]:
    """Location source -> (label, default accuracy radius in metres, coordinate system)."""
    table = pd.read_csv(path, dtype={"accuracy_m": float, "crs": str}, keep_default_na=False)
    if "crs" not in table:
        table["crs"] = ""
    return {r.key: Source(r.label_zh, float(r.accuracy_m), str(r.crs).strip())
            for r in table.itertuples()}


@dataclass(frozen=True)
class DuplicateRule:
    """How near and how recent an open case of the same category must be to be offered as
    the same matter (a row of duplicate_rules.csv; `*` is every other category)."""

    category: str
    radius_m: float
    days: float
    note_zh: str


@lru_cache(maxsize=4)
def load_duplicate_rules(path: Path = DUPLICATE_TABLE) -> dict[str, DuplicateRule]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    rules = {r.category: DuplicateRule(r.category, float(r.radius_m), float(r.days), r.note_zh)
             for r in table.itertuples()}
    if "*" not in rules:
        raise CaseError("重复案件规则表缺少默认行（category 为 *）")
    return rules


def duplicate_rule(category: str | None) -> DuplicateRule:
    rules = load_duplicate_rules()
    return rules.get(category or "*", rules["*"])

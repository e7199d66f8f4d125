"""The case workflow as data (grids/case_flow.csv), after the city-management loop
信息采集 → 案卷建立 → 任务派遣 → 任务处理 → 处理反馈 → 核查结案: the states with their time
limits, and the steps allowed between them. A deployment edits the table, not the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import pandas as pd

FLOW_TABLE = Path(__file__).with_name("case_flow.csv")
CATEGORY_TABLE = Path(__file__).with_name("categories.csv")
SOURCE_TABLE = Path(__file__).with_name("sources.csv")


class CaseError(ValueError):
    """A step the workflow does not allow; the message says why (Chinese)."""


@dataclass(frozen=True)
class Flow:
    states: dict[str, tuple[str, float | None]]  # state -> (label, time limit in hours)
    steps: dict[tuple[str, str], str]  # (from, to) -> label of the step
    # (from, to) -> the roles that may take the step (the `roles` column; empty = nobody)
    roles: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

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
    unknown = {s for pair in steps for s in pair} - set(states)
    if unknown:
        raise CaseError(f"流程表中的步骤引用了未定义的状态：{'、'.join(sorted(unknown))}")
    return Flow(states, steps, roles)


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


@lru_cache(maxsize=4)
def load_sources(path: Path = SOURCE_TABLE) -> dict[str, tuple[str, float]]:
    """Location source -> (label, default accuracy radius in metres)."""
    table = pd.read_csv(path, dtype={"accuracy_m": float}, keep_default_na=False)
    return {r.key: (r.label_zh, r.accuracy_m) for r in table.itertuples()}

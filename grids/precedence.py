"""The precedence table: which bureau, grid and park win where several cover a place.

Rules are data: a deployment reorders them by importing its own `precedence.csv`; the store
keeps the table versioned with the layers, so a past answer is reproduced with the rules it was
given under. Lower rank wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from layers.schema import BUREAU_LEVELS, GRID_KINDS, PARK_KINDS

DEFAULT_TABLE = Path(__file__).with_name("precedence.csv")

# Every key a subject must rank; the municipal level never covers a place by area.
SUBJECT_KEYS: dict[str, tuple[str, ...]] = {
    "bureau_level": tuple(level for level in BUREAU_LEVELS if level != "municipal"),
    "grid_kind": GRID_KINDS,
    "park_kind": PARK_KINDS,
    "extent": ("cross_county",),
}


class PrecedenceError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    subject: str
    key: str
    rank: int
    label_zh: str


class Precedence:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = {(r.subject, r.key): r for r in rules}
        for subject, keys in SUBJECT_KEYS.items():
            missing = [k for k in keys if (subject, k) not in self.rules]
            if missing:
                raise PrecedenceError(f"优先规则表缺少 {subject} 的取值：{', '.join(missing)}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame | None) -> Precedence:
        if frame is None or frame.empty:
            frame = default_frame()
        unknown = [
            f"{s}/{k}"
            for s, k in zip(frame["subject"], frame["key"], strict=True)
            if k not in SUBJECT_KEYS.get(s, ())
        ]
        if unknown:
            raise PrecedenceError(f"优先规则表中有无法识别的规则：{', '.join(unknown)}")
        return cls(
            [
                Rule(str(s), str(k), int(r), str(label))
                for s, k, r, label in frame[["subject", "key", "rank", "label_zh"]].itertuples(
                    index=False
                )
            ]
        )

    def rank(self, subject: str, key: str) -> int:
        return self.rules[(subject, key)].rank

    def label(self, subject: str, key: str) -> str:
        return self.rules[(subject, key)].label_zh


def default_frame() -> pd.DataFrame:
    return pd.read_csv(DEFAULT_TABLE, dtype={"rank": int}, keep_default_na=False)

"""Import problems that name the file, the feature or row, and the field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    where: str = ""  # "第 3 个要素（code=…）" / "第 12 行"
    field: str = ""

    def __str__(self) -> str:
        parts = [self.file]
        if self.where:
            parts.append(self.where)
        if self.field:
            parts.append(f"字段 {self.field}")
        return "，".join(parts) + "：" + self.message


class ImportFailed(Exception):
    """The import was refused; nothing was written. Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(self.summary())

    def summary(self, limit: int = 30) -> str:
        lines = [f"导入失败，数据库未作任何改动。发现 {len(self.problems)} 个问题："]
        lines += [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  …… 另有 {len(self.problems) - limit} 个问题未列出")
        return "\n".join(lines)

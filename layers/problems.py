"""Import problems that name the file, the feature or row, and the field."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

# Characters that must never reach a terminal, a log or a web page unescaped: C0 and C1 controls
# (NUL, ESC, CR, LF, TAB, DEL…), bidirectional formatting (U+202E makes "exe.txt" read "txt.exe")
# and lone surrogates (not encodable, a database refuses them).
UNSAFE_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
MAX_MESSAGE = 500  # characters of one problem's message shown, the rest cut


def escaped(text: str) -> str:
    """`text` with every unsafe character written as a visible escape (\\x1b, \\u202e)."""
    return UNSAFE_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown(value: object, limit: int = 40) -> str:
    """A user's value as it may appear in a message: unsafe characters escaped, cut to `limit`."""
    text = str(value)
    cut = len(text) > limit
    text = escaped(text[:limit])
    return f"{text}…（共 {len(str(value))} 个字符）" if cut else text


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    where: str = ""  # "第 3 个要素（code=…）" / "第 12 行"
    field: str = ""

    def __str__(self) -> str:
        parts = [shown(self.file, 200)]
        if self.where:
            parts.append(shown(self.where, 200))
        if self.field:
            parts.append(f"字段 {shown(self.field, 80)}")
        return "，".join(parts) + "：" + shown(self.message, MAX_MESSAGE)


class ImportFailed(Exception):
    """The import was refused; nothing was written. Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(self.summary())

    def summary(self, limit: int = 30, head: str = "导入失败，数据库未作任何改动。") -> str:
        """Every problem on a line of its own, after `head` (what was not done: an import's,
        by default; a page reading a file for a draft or a check says its own)."""
        lines = [f"{head}发现 {len(self.problems)} 个问题："]
        lines += [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  …… 另有 {len(self.problems) - limit} 个问题未列出")
        return "\n".join(lines)


# What an OSError means, in Chinese (Python's strerror is English).
ERRNO_ZH = {
    errno.ENOENT: "文件或目录不存在",
    errno.EACCES: "没有读写权限",
    errno.EPERM: "没有权限",
    errno.EISDIR: "这是一个目录，不是文件",
    errno.ENOTDIR: "路径中的某一级不是目录",
    errno.ENOSPC: "磁盘空间不足",
    errno.EROFS: "文件系统只读",
}


def errno_zh(exc: OSError) -> str:
    """Why a file could not be read or written, in Chinese."""
    return ERRNO_ZH.get(exc.errno or -1, exc.strerror or "读写失败")

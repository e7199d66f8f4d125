"""What the command line shows people: argparse in Chinese, file and connection errors in
Chinese, tables aligned for wide (Chinese) characters, flags and statuses in words."""

from __future__ import annotations

import argparse
import unicodedata

from layers.problems import errno_zh

# argparse's own messages (it looks `_` up at call time, so translating it here covers the
# usage line, the help headings and every parse error).
ARGPARSE_ZH = {
    "usage: ": "用法：",
    "positional arguments": "位置参数",
    "options": "选项",
    "optional arguments": "选项",
    "show this help message and exit": "显示本帮助并退出",
    "the following arguments are required: %s": "缺少必需的参数：%s",
    "unrecognized arguments: %s": "无法识别的参数：%s",
    "invalid choice: %(value)r (choose from %(choices)s)":
        "无效的选项 %(value)r（可选：%(choices)s）",
    "invalid %(type)s value: %(value)r": "无效的%(type)s值：%(value)r",
    "expected one argument": "需要一个值",
    "expected at most one argument": "最多一个值",
    "expected at least one argument": "至少需要一个值",
    "ambiguous option: %(option)s could match %(matches)s":
        "选项 %(option)s 有歧义，可能是 %(matches)s",
    "argument %(argument_name)s: %(message)s": "参数 %(argument_name)s：%(message)s",
    "%(prog)s: error: %(message)s\n": "%(prog)s：错误：%(message)s\n",
    "not allowed with argument %s": "不能与参数 %s 同时使用",
    "one of the arguments %s is required": "参数 %s 必须给出其中之一",
}
TYPE_ZH = {"float": "数字", "int": "整数", "Path": "路径"}


def _translate(text: str) -> str:
    return ARGPARSE_ZH.get(text, text)


class ChineseArgumentParser(argparse.ArgumentParser):
    """argparse with Chinese messages and type names ("无效的数字值：'东'")."""

    def error(self, message: str):
        for english, chinese in TYPE_ZH.items():
            message = message.replace(f"无效的{english}值", f"无效的{chinese}值")
        super().error(message)


def install() -> None:
    argparse._ = _translate  # type: ignore[attr-defined]


def os_error(exc: OSError) -> str:
    """An OSError as the user reads it: what happened to which file (as they named it)."""
    what = errno_zh(exc)
    name = exc.filename if exc.filename is not None else ""
    return f"{name}：{what}" if name else what


def width(text: str) -> int:
    """Columns a text takes in a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


FLAGS_ZH = {
    "swapped": "经纬度顺序已交换",
    "sea": "海域",
    "no_grid": "无网格",
    "cross_county": "跨县（市）、区",
    "on_border": "位于边界",
    "no_township": "无乡镇/街道",
    "no_bureau": "无责任执法机构",
}
STATUS_ZH = {"ok": "明确", "ambiguous": "存在歧义", "outside": "不在辖区内", "error": "无法分派"}


def flags_zh(flags) -> str:
    return "、".join(FLAGS_ZH.get(f, f) for f in flags)

"""Why a geometry is invalid, in Chinese: GEOS says it in English ("Self-intersection[x y]"),
and a planner or an importer's user reads Chinese, with the place it happens."""

from __future__ import annotations

import re

import shapely

REASONS_ZH = (
    ("Ring Self-intersection", "环自相交"),
    ("Self-intersection", "自相交"),
    ("Too few points", "点数过少"),
    ("Hole lies outside shell", "内环位于外环之外"),
    ("Nested holes", "内环相互嵌套"),
    ("Nested shells", "外环相互嵌套"),
    ("Interior is disconnected", "内部不连通（内环把面分成了几块）"),
    ("Invalid Coordinate", "坐标无效（NaN 或无穷大）"),
    ("Duplicate Rings", "环重复"),
    ("Ring is not closed", "环未闭合"),
)
_PLACE = re.compile(r"\[\s*(-?[\d.eE+-]+)\s+(-?[\d.eE+-]+)")


def reason_zh(reason: str) -> tuple[str, tuple[float, float] | None]:
    """GEOS's validity reason in Chinese, and the place it names (None when it names none)."""
    text = next((zh for en, zh in REASONS_ZH if reason.startswith(en)), reason)
    match = _PLACE.search(reason)
    where = None
    if match:
        try:
            where = (float(match.group(1)), float(match.group(2)))
        except ValueError:
            where = None
    return text, where


def invalid_zh(geom) -> str:
    """Why `geom` is invalid, in one Chinese phrase with its place: 自相交（位置 120.96, 31.87）."""
    text, where = reason_zh(shapely.is_valid_reason(geom))
    return text if where is None else f"{text}（位置 {where[0]:.6f}, {where[1]:.6f}）"

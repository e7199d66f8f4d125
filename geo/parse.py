"""Parse coordinates typed or pasted by a dispatcher (12369 hotline, field reports).

Accepted: "120.9,32.0" and other separators (full-width ，；、, spaces, semicolons),
lat-first pairs recognised by range ("32.0,120.9"), hemisphere letters or Chinese
labels (E120.9 N32.0, 东经…北纬…, 120.9E 32N), degrees-minutes-seconds and decimal
minutes (120°54′30″, 120°54.5', 120度54分30秒), and "经度:"/"lat=" style labels.
Projected CRSs take two plain numbers (easting, northing, either order).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from geo.crs import CoordSystem, parse_crs, to_store
from geo.sanity import CHINA_REGION, NANTONG_REGION, Region, check_points

__all__ = ["CoordinateParseError", "ParsedPoint", "parse_coordinate_text"]


class CoordinateParseError(ValueError):
    """The text is not a coordinate pair; the message is Simplified Chinese."""


@dataclass(frozen=True)
class ParsedPoint:
    lon: float  # store CRS (EPSG:4490)
    lat: float
    x: float  # the first number as typed (sign and DMS applied)
    y: float  # the second number as typed
    crs: str  # CoordSystem.key of the input system
    swapped: bool  # True when the first number was taken as latitude/northing
    note_zh: str  # why, or a warning (e.g. outside the region); "" when nothing to say


# Applied in order, after NFKC (which already folds full-width digits and ，；：).
_REPLACEMENTS = (
    ("东经", "E"),  # Chinese labels before 度/分/秒, which they may contain (经度)
    ("西经", "W"),
    ("北纬", "N"),
    ("南纬", "S"),
    ("经度", "LON"),
    ("纬度", "LAT"),
    ("东", "E"),
    ("西", "W"),
    ("北", "N"),
    ("南", "S"),
    ("度", "°"),
    ("分", "'"),
    ("秒", '"'),
    ("″", '"'),
    ("′′", '"'),  # NFKC turns ″ into two primes
    ("''", '"'),
    ("“", '"'),
    ("”", '"'),
    ("〃", '"'),
    ("′", "'"),
    ("’", "'"),
    ("‘", "'"),
    ("´", "'"),
    ("`", "'"),
    ("−", "-"),
)
_TOKEN_RE = re.compile(
    r"""(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[ \t]*(?P<mark>[°'"]))?
      | (?P<label>LONGITUDE|LATITUDE|LON|LNG|LAT)[ \t]*[:=]?
      | (?P<hemi>[NSEW])
      | (?P<hard>[,;、/|()\[\]])
      | (?P<space>\s+)""",
    re.VERBOSE | re.IGNORECASE,
)
_AXIS_OF = {"E": "lon", "W": "lon", "N": "lat", "S": "lat", "LON": "lon", "LNG": "lon"}
_AXIS_OF |= {"LONGITUDE": "lon", "LAT": "lat", "LATITUDE": "lat"}
_RANGE_REASON = "超出经纬度范围：经度应在 ±180° 内，纬度应在 ±90° 内"
_MARK_ORDER = {"°": 0, "'": 1, '"': 2}


@dataclass
class _Component:
    parts: list[tuple[str, str]] = field(default_factory=list)  # (number, mark)
    hemi: str | None = None
    axis: str | None = None
    closed: bool = False
    decorated: bool = False  # had a mark, hemisphere or label


def _normalize(text: str) -> str:
    # º (masculine ordinal, often typed as a degree sign) and ˚ must go before NFKC,
    # which would turn them into "o" and a combining ring.
    out = unicodedata.normalize("NFKC", text.replace("º", "°").replace("˚", "°"))
    for old, new in _REPLACEMENTS:
        out = out.replace(old, new)
    return out


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "…"


def _fail(text: str, reason: str) -> CoordinateParseError:
    return CoordinateParseError(f"无法解析坐标：'{_shown(text)}'（{reason}）")


def _set_axis(comp: _Component, marker: str, text: str) -> None:
    axis = _AXIS_OF[marker]
    if comp.axis is not None and comp.axis != axis:
        raise _fail(text, "同一个数同时标成了经度和纬度")
    comp.axis = axis
    comp.decorated = True
    if marker in "NSEW":
        if comp.hemi is not None:
            raise _fail(text, "一个数带了两个方位字母")
        comp.hemi = marker


def _kind(tok: re.Match[str]) -> str:
    # Not tok.lastgroup: for "120°" that is the nested "mark" group.
    return next(k for k in ("num", "label", "hemi", "hard", "space") if tok.group(k) is not None)


def _tokenize(text: str, norm: str) -> list[re.Match[str]]:
    tokens: list[re.Match[str]] = []
    pos = 0
    while pos < len(norm):
        match = _TOKEN_RE.match(norm, pos)
        if match is None:
            raise _fail(text, f"含有无法识别的字符“{norm[pos]}”")
        tokens.append(match)
        pos = match.end()
    return tokens


def _components(text: str, norm: str) -> list[_Component]:
    """Group tokens into coordinate components (one number, or one D°M'S" group each)."""
    tokens = _tokenize(text, norm)
    comps: list[_Component] = []
    current: _Component | None = None
    pending: list[str] = []  # hemisphere letters/labels waiting for the next number
    hard_since_last = False
    for i, tok in enumerate(tokens):
        kind = _kind(tok)
        if kind == "space":
            continue
        if kind == "hard":
            current, hard_since_last = None, True
            continue
        if kind == "num":
            mark = tok.group("mark") or ""
            prev = tokens[i - 1] if i else None
            if prev is not None and _kind(prev) == "num" and not prev.group("mark"):
                raise _fail(text, "数字之间缺少分隔符")
            extends = (
                mark in ("'", '"')
                and current is not None
                and not current.closed
                and _MARK_ORDER[current.parts[-1][1]] < _MARK_ORDER[mark]
            )
            if extends:
                assert current is not None
                current.parts.append((tok.group("num"), mark))
                continue
            if mark in ("'", '"'):
                raise _fail(text, "分或秒前面缺少度数")
            current = _Component(parts=[(tok.group("num"), mark)], closed=not mark)
            current.decorated = bool(mark)
            for marker in pending:
                _set_axis(current, marker, text)
            pending, hard_since_last = [], False
            comps.append(current)
            continue
        marker = (tok.group("hemi") or tok.group("label")).upper()
        prev_glued = i > 0 and _kind(tokens[i - 1]) == "num" and tokens[i - 1].end() == tok.start()
        next_glued = i + 1 < len(tokens) and _kind(tokens[i + 1]) == "num"
        last = comps[-1] if comps else None
        as_suffix = (
            kind == "hemi"
            and last is not None
            and last.axis is None
            and not pending
            and (prev_glued or (not next_glued and not hard_since_last))
        )
        if as_suffix:
            assert last is not None
            _set_axis(last, marker, text)
            last.closed = True
        else:
            pending.append(marker)
    if pending:
        raise _fail(text, "方位字母或标签后面缺少数值")
    return comps


def _value(comp: _Component, text: str) -> float:
    (deg_s, _), *rest = comp.parts
    value = abs(float(deg_s))
    if rest and not float(deg_s).is_integer():
        raise _fail(text, "带分秒时度数应为整数")
    for num_s, mark in rest:
        part = float(num_s)
        if num_s[0] in "+-" or part >= 60:
            raise _fail(text, "分、秒应在 0 到 60 之间")
        value += part / (60.0 if mark == "'" else 3600.0)
    negative = deg_s.startswith("-")
    if comp.hemi in ("S", "W"):
        if negative:
            raise _fail(text, "负号与方位字母 S/W 重复")
        negative = True
    return -value if negative else value


def _parse_numbers(text: str, system: CoordSystem) -> tuple[_Component, _Component]:
    if not text.strip():
        raise _fail(text, "内容为空")
    comps = _components(text, _normalize(text))
    if len(comps) != 2:
        found = f"找到 {len(comps)} 个数" if comps else "没有找到数字"
        raise _fail(text, f"需要经度和纬度两个数，{found}")
    if not system.geographic and any(c.decorated for c in comps):
        raise _fail(text, "投影坐标（米）不能带度分秒、方位字母或经纬度标签")
    return comps[0], comps[1]


def parse_coordinate_text(
    text: str, crs: str | int | CoordSystem = "wgs84", region: Region = NANTONG_REGION
) -> ParsedPoint:
    """Parse one coordinate pair typed in ``crs``; raise CoordinateParseError if unusable.

    Without hemisphere letters or labels the order is judged by range, as in
    ``geo.sanity.check_points``: first against ``region``, then against all of China, so
    a lat-first point elsewhere in China is still recognised (with a note). Points outside
    ``region`` are returned with a note, not rejected: being outside the jurisdiction is
    an answer for the caller to give.
    """
    system = parse_crs(crs)
    first, second = _parse_numbers(text, system)
    x, y = _value(first, text), _value(second, text)
    outside_note = f"不在{region.name_zh}范围内"

    if first.axis or second.axis:
        if first.axis == second.axis:
            name = "经度" if first.axis == "lon" else "纬度"
            raise _fail(text, f"两个数都标成了{name}")
        swapped = first.axis == "lat" or second.axis == "lon"
        lon_in, lat_in = (y, x) if swapped else (x, y)
        if abs(lon_in) > 180 or abs(lat_in) > 90:
            raise _fail(text, _RANGE_REASON)
        lon, lat = (float(v) for v in to_store(lon_in, lat_in, system))
        notes = ["按经纬度标记（N/E、北纬/东经等）识别为先纬度后经度"] if swapped else []
        if not region.contains(lon, lat):
            notes.append(outside_note)
        return ParsedPoint(lon, lat, x, y, system.key, swapped, "；".join(notes))

    order = "“纬度, 经度”" if system.geographic else "“北坐标, 东坐标”"
    for candidate, note in ((region, ""), (CHINA_REGION, outside_note)):
        lon, lat, status = check_points(x, y, system, candidate)
        if status == "ok":
            return ParsedPoint(float(lon), float(lat), x, y, system.key, False, note)
        if status == "swapped":
            swap_note = f"按数值范围判断为{order}顺序，已调换"
            full = "；".join(n for n in (swap_note, note) if n)
            return ParsedPoint(float(lon), float(lat), x, y, system.key, True, full)
    if status == "outside_region":
        return ParsedPoint(float(lon), float(lat), x, y, system.key, False, outside_note)
    if system.geographic:
        raise _fail(text, _RANGE_REASON)
    raise _fail(text, f"不是有效的 {system.label_zh} 坐标")

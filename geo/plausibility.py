"""Whether a pair of numbers can be a point in the coordinate system it was declared in — asked
before it is routed, so that a wrong system never becomes a silent "outside".

`check_points` (geo/sanity.py) already knows valid / swapped / outside the Nantong box. For a
pair that is not in the box as given (nor swapped), `implausible` says why in Chinese when the
numbers look like another system that *would* land in Nantong: degrees given with a metric
system, metres given with a geographic one, a Gauss–Krüger easting with its zone prefix for
the EPSG code without it (or the other way round), another 3° zone; and it refuses a declared
3° zone that does not contain Nantong at all. Only a plausible pair is ever answered "outside".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pyproj import CRS

from geo.crs import CoordSystem, parse_crs
from geo.sanity import NANTONG_REGION, check_points

# The systems a Nantong pair of numbers is usually in, tried in this order for a suggestion.
CANDIDATES = (
    ("wgs84", "WGS84/CGCS2000 经纬度（度）"),
    ("gcj02", "GCJ-02 经纬度（高德/腾讯/微信）"),
    ("EPSG:4549", "EPSG:4549（CGCS2000 3 度带，中央经线 120°E，东坐标不含带号）"),
    ("EPSG:4528", "EPSG:4528（CGCS2000 3 度带第 40 带，东坐标含带号 40）"),
    ("EPSG:4550", "EPSG:4550（CGCS2000 3 度带，中央经线 123°E，东坐标不含带号）"),
    ("EPSG:4529", "EPSG:4529（CGCS2000 3 度带第 41 带，东坐标含带号 41）"),
)


def _fmt(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".")


def looks(x: float, y: float) -> str:
    """What the numbers look like, in words."""
    if abs(x) <= 180 and abs(y) <= 90:
        return "经纬度（度）"
    digits = len(str(int(abs(x)))) if np.isfinite(x) else 0
    if digits == 8:
        return f"含带号 {int(abs(x)) // 1_000_000} 的高斯投影坐标（米）"
    if digits in (5, 6, 7):
        return "不含带号的投影坐标（米）"
    return "无法识别的数值"


@lru_cache(maxsize=64)
def covers_nantong(system_key: str) -> bool:
    """Whether the declared system's area of use reaches Nantong (a CGCS2000 3° zone far west
    does not: its numbers can never be a point here)."""
    system = parse_crs(system_key)
    if system.geographic or system.epsg is None:
        return True
    area = CRS.from_epsg(system.epsg).area_of_use
    if area is None:
        return True
    r = NANTONG_REGION
    return not (area.east < r.lon_min or area.west > r.lon_max
                or area.north < r.lat_min or area.south > r.lat_max)


def implausible(x: float, y: float, system: CoordSystem) -> str | None:
    """A Chinese message when (x, y) cannot be meant in `system` near Nantong, or None when it
    is a plausible point of that system (in the box, swapped into it, or truly elsewhere)."""
    return implausible_many(np.array([x], dtype=float), np.array([y], dtype=float), system)[0]


def implausible_many(x, y, system: CoordSystem) -> list[str | None]:
    """`implausible` for arrays (a batch's rows that were not in Nantong): each candidate
    system is tried once on all of them."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not covers_nantong(system.key):
        return [(f"所选坐标系 {system.label_zh} 的适用范围不含南通，其坐标不可能落在南通："
                 "南通位于 CGCS2000 3 度带中央经线 120°E 与 123°E 两带，请选择 "
                 "EPSG:4549/4528（120°E）或 EPSG:4550/4529（123°E），"
                 "经纬度请选 WGS84/CGCS2000")] * len(x)
    # A geographic system's numbers are only suspect as metres; a metric one's as degrees or
    # as another zone (GCJ-02 is not offered for WGS84 input: the two differ by metres).
    keys = [(k, label) for k, label in CANDIDATES if k != system.key
            and not (system.geographic and parse_crs(k).geographic)]
    finite = np.isfinite(x) & np.isfinite(y)
    _, _, declared = check_points(np.where(finite, x, 0.0), np.where(finite, y, 0.0), system)
    # A pair that is in Nantong as declared (or swapped into it) is plausible as it is.
    here = finite & np.isin(np.atleast_1d(declared), ("ok", "swapped"))
    fits: list[list[str]] = [[] for _ in range(len(x))]
    for key, label in keys:
        if not finite.any():
            break
        _, _, status = check_points(np.where(finite, x, 0.0), np.where(finite, y, 0.0), key)
        for i in np.flatnonzero(finite & np.isin(status, ("ok", "swapped"))):
            fits[i].append(label)
    out: list[str | None] = []
    for i in range(len(x)):
        if not finite[i]:
            out.append(f"坐标（{x[i]}, {y[i]}）不是有效数字")
        elif here[i] or not fits[i]:
            out.append(None)  # plausible in the declared system: an honest "outside"
        else:
            more = f"（也可能是：{'、'.join(fits[i][1:3])}）" if len(fits[i]) > 1 else ""
            out.append(f"坐标（{_fmt(x[i])}, {_fmt(y[i])}）看起来是{looks(x[i], y[i])}，"
                       f"按所选坐标系 {system.label_zh} 不在南通附近；按 {fits[i][0]} "
                       f"则位于南通，请核对坐标系后重新输入{more}")
    return out

"""Coordinate systems accepted on input, and conversion to the store CRS (EPSG:4490).

The store is CGCS2000 geographic lon/lat (EPSG:4490). WGS84 (EPSG:4326) is treated as
numerically identical: the two differ by centimetres, and PROJ has no better operation
than a no-op "ballpark" between them anyway.

x/y are always easting/longitude then northing/latitude (pyproj ``always_xy``), whatever
the EPSG axis order; Chinese survey tables label northing "X", so a swapped pair is a
common input error that ``geo.sanity`` detects.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as _ProjCRSError

from geo import china_offsets

__all__ = [
    "BD09",
    "CGCS2000",
    "GCJ02",
    "METRIC_EPSG",
    "STORE_EPSG",
    "WGS84",
    "CoordSystem",
    "CrsError",
    "common_systems",
    "from_store",
    "gauss_kruger_zone",
    "metric_transformer",
    "parse_crs",
    "to_store",
]

STORE_EPSG = 4490
# CGCS2000 / 3-degree Gauss-Kruger CM 120E. Nantong spans 120.2-122.2E (plus sea); east of
# 121.5E is formally the CM 123E zone, but one CRS for the whole city keeps geometry in one
# plane. Scale error stays below ~0.06% (0.6 m per km) at Nantong's eastern edge.
METRIC_EPSG = 4549


class CrsError(ValueError):
    """Unknown or unsupported coordinate system; the message is Simplified Chinese."""


@dataclass(frozen=True)
class CoordSystem:
    """A coordinate system the user can type coordinates in."""

    key: str  # "wgs84", "cgcs2000", "gcj02", "bd09" or "EPSG:NNNN"
    label_zh: str
    geographic: bool  # lon/lat in degrees (else projected metres)

    @property
    def epsg(self) -> int | None:
        """The EPSG code behind the key (GCJ-02/BD-09 have none)."""
        if self.key == "wgs84":
            return 4326
        if self.key == "cgcs2000":
            return STORE_EPSG
        if self.key.startswith("EPSG:"):
            return int(self.key[5:])
        return None

    def __str__(self) -> str:
        return self.label_zh


WGS84 = CoordSystem("wgs84", "WGS84（GPS）", True)
CGCS2000 = CoordSystem("cgcs2000", "CGCS2000（国家2000）", True)
GCJ02 = CoordSystem("gcj02", "GCJ-02（高德/腾讯/微信）", True)
BD09 = CoordSystem("bd09", "BD-09（百度）", True)
_NAMED = {cs.key: cs for cs in (WGS84, CGCS2000, GCJ02, BD09)}

# Keys are in _normalize() form: NFKC, lower case, no spaces/hyphens/underscores/slashes/
# brackets. "2000" means CGCS2000 here, shadowing EPSG:2000 (a Caribbean grid).
_ALIAS_LISTS: dict[str, tuple[str, ...]] = {
    "wgs84": ("wgs84", "wgs1984", "gps", "4326"),
    "cgcs2000": ("cgcs2000", "cgcs", "国家2000", "2000", "2000国家大地坐标系", "中国2000", "4490"),
    "gcj02": ("gcj02", "gcj", "火星", "高德", "腾讯", "微信", "国测局", "amap", "gaode", "tencent"),
    "bd09": ("bd09", "bd09ll", "百度", "baidu"),
}
# Old national datums, often named rather than coded; their EPSG codes are refused with why.
_OLD_DATUMS = {"北京54": 4214, "北京1954": 4214, "beijing54": 4214, "beijing1954": 4214,
               "西安80": 4610, "西安1980": 4610, "xian80": 4610, "xian1980": 4610}
_ALIASES = {alias: key for key, aliases in _ALIAS_LISTS.items() for alias in aliases}
_STRIP_RE = re.compile(r"[\s\-_/()\[\]【】]+")
_EPSG_RE = re.compile(r"^(?:urn:ogc:def:crs:)?(?:epsg)?:{0,2}(\d{4,6})$")
_EPSG_PREFIX_RE = re.compile(r"^epsg:{0,2}(\d{4,6})(?!\d)")

_ONLY = "只支持经纬度坐标系或以米为单位的投影坐标系"
_UNKNOWN_MSG = "无法识别的坐标系：'{}'（支持 WGS84、CGCS2000、GCJ-02、BD-09 或 EPSG 代码）"


def _normalize(text: str) -> str:
    return _STRIP_RE.sub("", unicodedata.normalize("NFKC", text).lower())


for _cs in _NAMED.values():  # the labels themselves are accepted, e.g. from a select box
    _ALIASES.setdefault(_normalize(_cs.label_zh), _cs.key)


class _Rejected(Exception):
    """Internal: an EPSG code that exists but cannot be used; args[0] is the reason."""


def _label_for(code: int, name: str) -> str:
    """Chinese label for an EPSG CRS; GK names get the usual Chinese wording."""
    name = re.sub(r"3-degree Gauss-Kruger CM (\d+)E", r"3度带 高斯-克吕格 CM \1E", name)
    name = re.sub(r"3-degree Gauss-Kruger zone (\d+)", r"3度带 高斯-克吕格 第\1带（含带号）", name)
    name = re.sub(r"(?<!带 )Gauss-Kruger CM (\d+)E", r"6度带 高斯-克吕格 CM \1E", name)
    name = re.sub(r"(?<!带 )Gauss-Kruger zone (\d+)", r"6度带 高斯-克吕格 第\1带（含带号）", name)
    return f"EPSG:{code} {name}"


def _is_modern_ellipsoid(crs: CRS) -> bool:
    # GRS80 / WGS84 / CGCS2000 ellipsoids: datums realised on ITRF-like frames, within
    # about a metre of CGCS2000 in China.
    ell = crs.ellipsoid
    return (
        ell is not None
        and abs(ell.semi_major_metre - 6378137.0) < 1e-3
        and 298.2572 < ell.inverse_flattening < 298.2573
    )


@lru_cache(maxsize=256)
def _epsg_system(code: int) -> CoordSystem:
    if code == 4326:
        return WGS84
    if code == STORE_EPSG:
        return CGCS2000
    try:
        crs = CRS.from_epsg(code)
    except _ProjCRSError as exc:
        raise LookupError(code) from exc
    if crs.is_compound:  # e.g. GK + height: the horizontal part is what we need
        horizontal = crs.sub_crs_list[0]
        sub_code = horizontal.to_epsg()
        if sub_code is None:
            raise _Rejected(f"{crs.name} 的水平部分没有 EPSG 代码")
        return _epsg_system(sub_code)

    units = [axis.unit_name for axis in crs.axis_info[:2]]
    if crs.is_geographic:
        if units != ["degree", "degree"]:
            raise _Rejected(f"{crs.name} 是经纬度坐标系，但单位是 {units[0]}，不是度；{_ONLY}")
    elif crs.is_projected:
        if units != ["metre", "metre"]:
            raise _Rejected(f"{crs.name} 是投影坐标系，但单位是 {units[0]}，不是米；{_ONLY}")
    else:
        kind = {
            "Vertical CRS": "高程坐标系",
            "Geocentric CRS": "地心直角坐标系",
            "Engineering CRS": "工程（独立）坐标系",
        }.get(crs.type_name, f"{crs.type_name} 类型")
        raise _Rejected(f"{crs.name} 是{kind}；{_ONLY}")

    if not _is_modern_ellipsoid(crs):
        # Beijing 1954, Xian 1980 etc.: PROJ only has a "ballpark" no-op to CGCS2000, which
        # is off by tens to hundreds of metres. Refuse rather than misroute silently.
        best = Transformer.from_crs(crs, CRS.from_epsg(STORE_EPSG), always_xy=True)
        if "Ballpark" in best.description or best.accuracy < 0:
            datum = crs.geodetic_crs.datum.name if crs.geodetic_crs else "未知基准"
            raise _Rejected(
                f"{crs.name} 基于旧大地基准 {datum}，与 CGCS2000 之间没有通用的精确转换参数，"
                "直接换算误差可达数十至上百米；请先用当地转换参数转成 CGCS2000"
            )
    return CoordSystem(f"EPSG:{code}", _label_for(code, crs.name), crs.is_geographic)


def parse_crs(text: str | int | CoordSystem) -> CoordSystem:
    """Recognise a coordinate system from user input.

    Accepts the named systems in several spellings (wgs84, "WGS-84", 4326, "EPSG:4326";
    cgcs2000, 国家2000, 2000, 4490; gcj02, "GCJ-02", 火星, 高德, 腾讯; bd09, "BD-09", 百度),
    their labels, and any EPSG code PROJ knows that is geographic lon/lat in degrees or
    projected in metres on a CGCS2000/WGS84-like datum ("EPSG:4549", "4549", 4549, ...).
    Raises CrsError with a Chinese message naming the input otherwise.
    """
    if isinstance(text, CoordSystem):
        return text
    if isinstance(text, bool) or not isinstance(text, int | np.integer | str):
        raise CrsError(_UNKNOWN_MSG.format(text))
    shown = str(text).strip()
    code: int | None = None
    if not isinstance(text, str):
        code = int(text)
    else:
        norm = _normalize(text)
        for candidate in (norm, norm.removesuffix("坐标系"), norm.removesuffix("坐标")):
            if candidate in _ALIASES:
                return _NAMED[_ALIASES[candidate]]
        match = _EPSG_RE.match(norm) or _EPSG_PREFIX_RE.match(norm)
        if match:
            code = int(match.group(1))
        elif any(name in norm for name in _OLD_DATUMS):
            # Named by its datum: refused below with the reason, like its EPSG code would be.
            code = next(c for name, c in _OLD_DATUMS.items() if name in norm)
    if code is None or code <= 0:
        raise CrsError(_UNKNOWN_MSG.format(shown))
    try:
        system = _epsg_system(code)
    except LookupError:
        raise CrsError(_UNKNOWN_MSG.format(shown)) from None
    except _Rejected as exc:
        raise CrsError(f"不支持的坐标系：'{shown}'（{exc.args[0]}）") from None
    # "EPSG:4549 <something>": only accept when the rest is this code's own label.
    norm = _normalize(shown)
    if not _EPSG_RE.match(norm) and norm != _normalize(system.label_zh):
        raise CrsError(_UNKNOWN_MSG.format(shown))
    return system


def common_systems() -> tuple[CoordSystem, ...]:
    """Systems worth offering first in a picker, for Nantong."""
    return (WGS84, CGCS2000, GCJ02, BD09, *(parse_crs(c) for c in (4549, 4550, 4528, 4529)))


@lru_cache(maxsize=64)
def _transformer(key: str, inverse: bool) -> Transformer:
    # pyproj >= 3.1 Transformers are thread-safe, so one cached instance serves all threads.
    src, dst = CRS.from_user_input(key), CRS.from_epsg(STORE_EPSG)
    if inverse:
        src, dst = dst, src
    return Transformer.from_crs(src, dst, always_xy=True)


def _prepare(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x_a, y_a = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return x_a.copy(), y_a.copy()


def _apply(
    transformer: Transformer, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    out_x, out_y = transformer.transform(x.ravel(), y.ravel())
    return np.asarray(out_x).reshape(x.shape)[()], np.asarray(out_y).reshape(y.shape)[()]


def to_store(
    x: ArrayLike, y: ArrayLike, crs: str | int | CoordSystem
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Convert x/y in ``crs`` to store lon/lat (EPSG:4490); vectorized, shape-preserving.

    Never raises for bad numbers: projected values PROJ cannot invert come back as inf,
    NaN stays NaN. Use ``geo.sanity.check_points`` to validate and catch swapped axes.
    """
    system = parse_crs(crs)
    x_a, y_a = _prepare(x, y)
    if system.key in ("wgs84", "cgcs2000"):
        return x_a[()], y_a[()]
    if system.key == "gcj02":
        return china_offsets.gcj02_to_wgs84(x_a, y_a)
    if system.key == "bd09":
        return china_offsets.bd09_to_wgs84(x_a, y_a)
    return _apply(_transformer(system.key, False), x_a, y_a)


def from_store(
    lon: ArrayLike, lat: ArrayLike, crs: str | int | CoordSystem
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Convert store lon/lat to x/y in ``crs`` (to show a point in the user's system)."""
    system = parse_crs(crs)
    lon_a, lat_a = _prepare(lon, lat)
    if system.key in ("wgs84", "cgcs2000"):
        return lon_a[()], lat_a[()]
    if system.key == "gcj02":
        return china_offsets.wgs84_to_gcj02(lon_a, lat_a)
    if system.key == "bd09":
        return china_offsets.wgs84_to_bd09(lon_a, lat_a)
    return _apply(_transformer(system.key, True), lon_a, lat_a)


def gauss_kruger_zone(lon: float) -> tuple[int, int]:
    """CGCS2000 3-degree GK EPSG codes for a longitude: (with zone prefix, without).

    Zone n has central meridian 3n and covers 3n-1.5 to 3n+1.5 (a boundary longitude
    goes to the eastern zone). E.g. 120.9 -> (4528, 4549), 121.8 -> (4529, 4550).
    """
    if not math.isfinite(lon) or not 73.5 <= lon < 136.5:
        raise CrsError(f"经度 {lon} 不在中国 3 度带范围内（73.5°E–136.5°E）")
    zone = math.floor((lon + 1.5) / 3.0)
    # EPSG:4513-4533 are zones 25-45 with prefix; EPSG:4534-4554 are CM 75E-135E without.
    return 4513 + zone - 25, 4534 + zone - 25


@lru_cache(maxsize=1)
def metric_transformer() -> tuple[Transformer, Transformer]:
    """(store -> EPSG:4549 metres, EPSG:4549 -> store), always_xy, cached."""
    store, metric = CRS.from_epsg(STORE_EPSG), CRS.from_epsg(METRIC_EPSG)
    return (
        Transformer.from_crs(store, metric, always_xy=True),
        Transformer.from_crs(metric, store, always_xy=True),
    )

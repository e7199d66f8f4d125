"""Chinese web-map coordinate offsets: WGS84 <-> GCJ-02 <-> BD-09.

Phones and web maps in China report GCJ-02 (Amap/Tencent/WeChat) or BD-09 (Baidu),
offset from WGS84/CGCS2000 by hundreds of metres. The forward formulas are the publicly
known ones; the inverses are solved iteratively so a round trip is accurate to millimetres
(the widely copied one-step inverses are off by metres).

Every function takes scalars or array-likes (lon, lat), broadcasts them, and returns values
of the same shape: 0-d inputs give numpy float64 scalars. NaN in either coordinate gives
NaN in both.

Outside the rough China bounding box (lon 72.004-137.8347, lat 0.8293-55.8271) GCJ-02 is
taken to equal WGS84 and points are returned unchanged. That is the convention of the
common implementations; the box is coarse, so near the box edges (far from Nantong) it is
not a statement about where the real obfuscation stops. BD-09's rotation is applied
everywhere, as Baidu's published formula has no bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "in_china_box",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

# Krasovsky 1940 ellipsoid, as used by the GCJ-02 algorithm.
_A = 6378245.0
_EE = 0.00669342162296594323
# Baidu's rotation constant.
_X_PI = math.pi * 3000.0 / 180.0

_LON_MIN, _LON_MAX = 72.004, 137.8347
_LAT_MIN, _LAT_MAX = 0.8293, 55.8271

# The inverses stop once the forward of the estimate matches the input this closely
# (1e-11 deg is about 1 micrometre), or after _MAX_ITER rounds. The maps are a small
# perturbation of the identity (Jacobian off-diagonal ~1e-3), so the fixed-point iteration
# contracts by ~1e3 per round and converges in 4-5 rounds.
_TOL_DEG = 1e-11
_MAX_ITER = 30

Coords = tuple[NDArray[np.float64], NDArray[np.float64]]


def _prepare(lon: ArrayLike, lat: ArrayLike) -> Coords:
    lon_a, lat_a = np.broadcast_arrays(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    lon_a, lat_a = lon_a.copy(), lat_a.copy()
    # Half a coordinate is no point: NaN in either makes both NaN, in and outside China.
    missing = np.isnan(lon_a) | np.isnan(lat_a)
    lon_a[missing] = np.nan
    lat_a[missing] = np.nan
    return lon_a, lat_a


def _finish(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Coords:
    # arr[()] turns 0-d arrays into numpy scalars and leaves n-d arrays alone.
    return lon[()], lat[()]


def in_china_box(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """True where GCJ-02 applies (rough bounding box; NaN is outside)."""
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    return (lon_a >= _LON_MIN) & (lon_a <= _LON_MAX) & (lat_a >= _LAT_MIN) & (lat_a <= _LAT_MAX)


def _gcj_offset(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Coords:
    """GCJ-02 minus WGS84 in degrees at a WGS84 point (no bounding-box test)."""
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    abs_x = np.sqrt(np.abs(x))

    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * abs_x + common
    dlat += (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0

    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * abs_x + common
    dlon += (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0

    # The polynomial is in metres-ish units; scale by the Krasovsky radii of curvature.
    rad_lat = np.radians(lat)
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * pi)
    return dlon, dlat


def _wgs_to_gcj_raw(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Coords:
    dlon, dlat = _gcj_offset(lon, lat)
    return lon + dlon, lat + dlat


def _gcj_to_bd_raw(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Coords:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _invert(
    forward: Callable[[NDArray[np.float64], NDArray[np.float64]], Coords],
    target_lon: NDArray[np.float64],
    target_lat: NDArray[np.float64],
    guess: Coords,
) -> Coords:
    """Solve forward(lon, lat) == target by fixed-point iteration (vectorized).

    Each round moves the estimate by the current residual; the maps are near-identity so
    this converges geometrically. NaN inputs stay NaN and do not block convergence.
    """
    lon, lat = guess
    for _ in range(_MAX_ITER):
        f_lon, f_lat = forward(lon, lat)
        r_lon = f_lon - target_lon
        r_lat = f_lat - target_lat
        lon = lon - r_lon
        lat = lat - r_lat
        residual = np.fmax(np.abs(r_lon), np.abs(r_lat))
        if not np.any(residual > _TOL_DEG):  # NaN compares False: ignored
            break
    return lon, lat


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """WGS84 (or CGCS2000) lon/lat to GCJ-02; unchanged outside the China box."""
    lon_a, lat_a = _prepare(lon, lat)
    inside = in_china_box(lon_a, lat_a)
    g_lon, g_lat = _wgs_to_gcj_raw(lon_a, lat_a)
    return _finish(np.where(inside, g_lon, lon_a), np.where(inside, g_lat, lat_a))


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """GCJ-02 lon/lat to WGS84, exact to ~1e-11 deg; unchanged outside the China box.

    The box test is made on the GCJ-02 input. Within ~1 km of the box edges (nowhere near
    China's populated areas) the result may fall on the other side of the box and then
    not round-trip exactly.
    """
    lon_a, lat_a = _prepare(lon, lat)
    inside = in_china_box(lon_a, lat_a)
    d_lon, d_lat = _gcj_offset(lon_a, lat_a)
    w_lon, w_lat = _invert(_wgs_to_gcj_raw, lon_a, lat_a, (lon_a - d_lon, lat_a - d_lat))
    return _finish(np.where(inside, w_lon, lon_a), np.where(inside, w_lat, lat_a))


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """GCJ-02 lon/lat to BD-09 (Baidu's published rotation, applied everywhere)."""
    lon_a, lat_a = _prepare(lon, lat)
    return _finish(*_gcj_to_bd_raw(lon_a, lat_a))


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """BD-09 lon/lat to GCJ-02, exact to ~1e-11 deg (iterative inverse)."""
    lon_a, lat_a = _prepare(lon, lat)
    guess = (lon_a - 0.0065, lat_a - 0.006)
    return _finish(*_invert(_gcj_to_bd_raw, lon_a, lat_a, guess))


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """WGS84 (or CGCS2000) lon/lat to BD-09 via GCJ-02."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> Coords:
    """BD-09 lon/lat to WGS84 via GCJ-02 (both steps iterative)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))

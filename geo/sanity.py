"""Range checks and lat/lon (or northing/easting) swap detection for input points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.crs import CoordSystem, from_store, parse_crs, to_store

__all__ = [
    "CHINA_REGION",
    "NANTONG_REGION",
    "STATUSES",
    "Region",
    "check_points",
]

STATUSES = ("ok", "swapped", "out_of_range", "outside_region")

# A projected point is only valid if it survives store -> CRS -> store to within this many
# metres; wild inputs (e.g. a Gauss-Krueger northing past the pole) fail that.
_ROUND_TRIP_TOL_M = 0.01


@dataclass(frozen=True)
class Region:
    """A lon/lat box in the store CRS, used to judge which coordinate order is plausible."""

    name_zh: str
    lon_min: float
    lon_max: float
    lat_min: float
    lat_max: float

    def contains(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
        lon_a = np.asarray(lon, dtype=np.float64)
        lat_a = np.asarray(lat, dtype=np.float64)
        return (
            (lon_a >= self.lon_min)
            & (lon_a <= self.lon_max)
            & (lat_a >= self.lat_min)
            & (lat_a <= self.lat_max)
        )


# Generous box around Nantong's land and its sea areas (marine enforcement is in scope).
NANTONG_REGION = Region("南通市及其海域", 119.8, 122.9, 31.3, 33.0)
CHINA_REGION = Region("中国", 73.0, 136.0, 3.0, 54.0)


def _to_store_checked(
    x: NDArray[np.float64], y: NDArray[np.float64], system: CoordSystem
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Store lon/lat of x/y and whether x/y is a valid coordinate in ``system``."""
    valid = np.isfinite(x) & np.isfinite(y)
    if system.geographic:
        valid &= (np.abs(x) <= 180.0) & (np.abs(y) <= 90.0)
        # Only convert valid points: the GCJ/BD formulas would make up numbers for lat 120.
        lon, lat = to_store(np.where(valid, x, np.nan), np.where(valid, y, np.nan), system)
    else:
        with np.errstate(invalid="ignore"):
            lon, lat = to_store(x, y, system)
            back_x, back_y = from_store(lon, lat, system)
            valid &= np.isfinite(lon) & np.isfinite(lat)
            valid &= (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)
            valid &= (np.abs(back_x - x) < _ROUND_TRIP_TOL_M) & (
                np.abs(back_y - y) < _ROUND_TRIP_TOL_M
            )
    lon = np.where(valid, lon, np.nan)
    lat = np.where(valid, lat, np.nan)
    return lon, lat, valid


def check_points(
    x: ArrayLike,
    y: ArrayLike,
    crs: str | int | CoordSystem,
    region: Region = NANTONG_REGION,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.str_]]:
    """Check points given as x/y (lon/lat or easting/northing) in ``crs``.

    Returns store lon/lat and a status per point (arrays of the broadcast input shape):

    - "ok": valid and inside ``region`` as given;
    - "swapped": outside ``region`` as given, inside when x and y are exchanged; the
      returned lon/lat are the corrected (swapped) ones;
    - "outside_region": valid as given but outside ``region`` either way; lon/lat as given;
    - "out_of_range": not a valid coordinate as given (|lat| > 90, NaN, inf, impossible
      projected values) and swapping does not land in ``region``; lon/lat are NaN so the
      point cannot be used by accident.
    """
    system = parse_crs(crs)
    x_a, y_a = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    lon, lat, valid = _to_store_checked(x_a, y_a, system)
    s_lon, s_lat, s_valid = _to_store_checked(y_a, x_a, system)
    inside = valid & region.contains(lon, lat)
    s_inside = s_valid & region.contains(s_lon, s_lat)
    use_swap = ~inside & s_inside

    status = np.full(x_a.shape, "out_of_range", dtype="<U14")
    status[valid] = "outside_region"
    status[use_swap] = "swapped"
    status[inside] = "ok"
    out_lon = np.where(use_swap, s_lon, lon)
    out_lat = np.where(use_swap, s_lat, lat)
    return out_lon[()], out_lat[()], status[()]  # [()] gives scalars for scalar input

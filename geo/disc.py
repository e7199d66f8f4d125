"""Accuracy circles and geodesic distances on the CGCS2000 (GRS80) ellipsoid.

A phone fix "±300 m" is a disc, not a point: routing treats a disc that crosses a
boundary as ambiguous. Discs are true geodesic circles in store lon/lat (EPSG:4490),
so no projection distortion creeps in anywhere in Nantong.
"""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from pyproj import Geod
from shapely.geometry import Point, Polygon

__all__ = ["GEOD", "accuracy_disc", "accuracy_discs", "distance_m"]

# CGCS2000's ellipsoid differs from GRS80 only in the 11th digit of the flattening.
GEOD = Geod(ellps="GRS80")


def _ring_coords(
    lons: NDArray[np.float64], lats: NDArray[np.float64], radii: NDArray[np.float64], segments: int
) -> NDArray[np.float64]:
    """(n, segments, 2) vertices at the given geodesic radii, counter-clockwise."""
    if segments < 3:
        raise ValueError("segments must be at least 3")
    # Azimuths run north -> west -> south -> east: counter-clockwise in lon/lat, the
    # exterior-ring orientation GeoJSON (RFC 7946) asks for.
    azimuths = -np.linspace(0.0, 360.0, segments, endpoint=False)
    n = lons.shape[0]
    v_lon, v_lat, _ = GEOD.fwd(
        np.repeat(lons, segments),
        np.repeat(lats, segments),
        np.tile(azimuths, n),
        np.repeat(radii, segments),
    )
    return np.stack([v_lon, v_lat], axis=-1).reshape(n, segments, 2)


def accuracy_disc(lon: float, lat: float, radius_m: float, segments: int = 64) -> Polygon | Point:
    """Geodesic circle of ``radius_m`` around lon/lat as a polygon with ``segments`` vertices.

    Every vertex is exactly ``radius_m`` from the centre (the edges are chords, so the
    area is slightly less than pi r^2). A radius <= 0 (or NaN: accuracy unknown) gives the
    Point itself.
    """
    result = accuracy_discs([lon], [lat], [radius_m], segments)[0]
    if result is None:
        raise ValueError(f"invalid centre: {lon}, {lat}")
    return result


def accuracy_discs(
    lons: ArrayLike, lats: ArrayLike, radii: ArrayLike, segments: int = 64
) -> NDArray[np.object_]:
    """Vectorized accuracy_disc: a 1-D object array of Polygons (Points where radius <= 0
    or NaN, None where the centre is not finite). Inputs broadcast against each other."""
    lon_a, lat_a, rad_a = (
        np.ravel(a)
        for a in np.broadcast_arrays(
            np.asarray(lons, dtype=np.float64),
            np.asarray(lats, dtype=np.float64),
            np.asarray(radii, dtype=np.float64),
        )
    )
    out = np.full(lon_a.shape, None, dtype=object)
    centre_ok = np.isfinite(lon_a) & np.isfinite(lat_a) & (np.abs(lat_a) <= 90.0)
    is_disc = centre_ok & (rad_a > 0)  # NaN radius compares False: a Point
    is_point = centre_ok & ~is_disc
    if is_point.any():
        out[is_point] = shapely.points(lon_a[is_point], lat_a[is_point])
    if is_disc.any():
        rings = _ring_coords(lon_a[is_disc], lat_a[is_disc], rad_a[is_disc], segments)
        out[is_disc] = shapely.polygons(rings)
    return out


def distance_m(
    lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> NDArray[np.float64]:
    """Geodesic distance in metres on GRS80; vectorized with broadcasting (scalars in,
    numpy scalar out)."""
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (lon1, lat1, lon2, lat2))
    )
    shape = arrays[0].shape
    _, _, dist = GEOD.inv(*(a.ravel() for a in arrays))
    return np.asarray(dist, dtype=np.float64).reshape(shape)[()]


def distance_to_geometry_m(geom, lons, lats) -> np.ndarray:
    """Distances in metres from points to a line or area (all in the store CRS), measured in
    the city's Gauss–Krüger plane (EPSG:4549; scale error well under 0.1 % over Nantong)."""
    from geo.crs import metric_transformer

    fwd, _ = metric_transformer()
    metric = shapely.transform(geom, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    px, py = fwd.transform(np.asarray(lons, float), np.asarray(lats, float))
    return np.asarray(shapely.distance(metric, shapely.points(px, py)), dtype=float)

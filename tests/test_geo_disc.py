"""Accuracy discs are geodesic circles; distance_m is the GRS80 geodesic distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Geod
from shapely.geometry import Point, Polygon

from geo.disc import accuracy_disc, accuracy_discs, distance_m

_GEOD = Geod(ellps="GRS80")


def _vertex_distances(polygon: Polygon, lon: float, lat: float) -> np.ndarray:
    xs, ys = np.asarray(polygon.exterior.coords).T
    return np.asarray(_GEOD.inv(np.full(xs.shape, lon), np.full(ys.shape, lat), xs, ys)[2])


@pytest.mark.parametrize("radius", [5.0, 300.0, 2000.0, 20000.0])
@pytest.mark.parametrize(("lon", "lat"), [(120.9, 32.0), (121.9, 31.7), (0.0, 0.0), (20.0, 70.0)])
def test_vertices_are_at_the_radius(lon, lat, radius):
    disc = accuracy_disc(lon, lat, radius)
    assert isinstance(disc, Polygon) and disc.is_valid
    assert len(disc.exterior.coords) == 64 + 1  # closed ring
    assert np.abs(_vertex_distances(disc, lon, lat) - radius).max() < 1e-3


@pytest.mark.parametrize("segments", [8, 64, 256])
def test_area_close_to_pi_r_squared(segments):
    radius = 300.0
    disc = accuracy_disc(120.9, 32.0, radius, segments=segments)
    area, _ = _GEOD.geometry_area_perimeter(disc)
    assert area > 0  # counter-clockwise exterior ring
    # Chords cut the circle: an inscribed n-gon has (n / 2pi) sin(2pi / n) of its area.
    inscribed = segments / (2 * math.pi) * math.sin(2 * math.pi / segments)
    assert area / (math.pi * radius**2) == pytest.approx(inscribed, rel=1e-4)
    if segments >= 64:
        assert area == pytest.approx(math.pi * radius**2, rel=2e-3)


def test_disc_contains_centre_and_is_ccw():
    disc = accuracy_disc(120.9, 32.0, 100.0)
    assert disc.contains(Point(120.9, 32.0))
    assert disc.exterior.is_ccw


@pytest.mark.parametrize("radius", [0.0, -5.0, float("nan")])
def test_zero_negative_or_unknown_radius_gives_the_point(radius):
    result = accuracy_disc(120.9, 32.0, radius)
    assert isinstance(result, Point)
    assert (result.x, result.y) == (120.9, 32.0)


def test_vectorized_discs():
    lons = np.array([120.9, 121.0, 121.5, np.nan])
    lats = np.array([32.0, 32.1, 31.9, 32.0])
    radii = np.array([300.0, 0.0, 50.0, 10.0])
    discs = accuracy_discs(lons, lats, radii, segments=32)
    assert discs.shape == (4,) and discs.dtype == object
    assert isinstance(discs[0], Polygon) and len(discs[0].exterior.coords) == 33
    assert isinstance(discs[1], Point)
    assert isinstance(discs[2], Polygon)
    assert discs[3] is None  # no centre, no geometry
    for disc, lon, lat, radius in zip(
        discs[[0, 2]], lons[[0, 2]], lats[[0, 2]], radii[[0, 2]], strict=True
    ):
        assert np.abs(_vertex_distances(disc, lon, lat) - radius).max() < 1e-3


def test_vectorized_discs_broadcast_a_single_radius():
    discs = accuracy_discs([120.9, 121.0, 121.1], [32.0, 32.0, 32.0], 100.0)
    assert all(isinstance(d, Polygon) for d in discs)
    single = accuracy_disc(121.0, 32.0, 100.0)
    assert discs[1].equals_exact(single, tolerance=0.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        accuracy_disc(120.9, 32.0, 100.0, segments=2)
    with pytest.raises(ValueError):
        accuracy_disc(float("nan"), 32.0, 100.0)


def test_distance_published_vector():
    # Vincenty's inverse example on GRS80 from the GDA94 Technical Manual (Geoscience
    # Australia): Flinders Peak (37°57'03.72030"S, 144°25'29.52440"E) to Buninyong
    # (37°39'10.15610"S, 143°55'35.38390"E), ellipsoidal distance 54 972.271 m.
    flinders = (144 + 25 / 60 + 29.52440 / 3600, -(37 + 57 / 60 + 3.72030 / 3600))
    buninyong = (143 + 55 / 60 + 35.38390 / 3600, -(37 + 39 / 60 + 10.15610 / 3600))
    assert distance_m(*flinders, *buninyong) == pytest.approx(54972.271, abs=1e-3)


def test_distance_vectorized_and_scalar():
    d = distance_m(120.9, 32.0, [120.9, 121.0, 120.9], [32.0, 32.0, 32.001])
    assert d.shape == (3,)
    assert d[0] == 0.0
    assert d[1] == pytest.approx(9449.3, abs=0.5)  # 0.1 deg of longitude at 32N
    assert d[2] == pytest.approx(110.9, abs=0.2)  # 0.001 deg of latitude
    assert np.ndim(distance_m(120.9, 32.0, 121.0, 32.0)) == 0
    grid = distance_m(np.zeros((2, 3)) + 120.9, 32.0, 121.0, 32.0)
    assert grid.shape == (2, 3)

"""WGS84 <-> GCJ-02 <-> BD-09 against published vectors, and inverse round trips."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from geo.china_offsets import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    in_china_box,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

_GEOD = Geod(ellps="GRS80")
FORWARD_TOL_DEG = 1e-6
ROUND_TRIP_TOL_M = 0.01


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Geodesic distance between two sets of lon/lat, for metre-based assertions."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (lon1, lat1, lon2, lat2)))
    return np.asarray(_GEOD.inv(*(a.ravel() for a in arrays))[2])


# Forward vectors as (function, input lon/lat, expected lon/lat). Each vector's source is
# the comment above it; the sources list (lat, lon) in some files, reordered here to lon/lat.
FORWARD_VECTORS = [
    # googollee/eviltransform go/transform_test.go (same table in javascript/test.js,
    # python/test.py, c/test.c): wgsLat, wgsLng -> gcjLat, gcjLng. Shanghai:
    (wgs84_to_gcj02, (121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),
    # googollee/eviltransform go/transform_test.go, Shenzhen:
    (wgs84_to_gcj02, (113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),
    # googollee/eviltransform go/transform_test.go, Beijing:
    (wgs84_to_gcj02, (116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),
    # wandergis/coordtransform README.md "result" block: wgs84togcj02(116.404, 39.915)
    (wgs84_to_gcj02, (116.404, 39.915), (116.41024449916938, 39.91640428150164)),
    # wandergis/coordtransform README.md: gcj02tobd09(116.404, 39.915)
    (gcj02_to_bd09, (116.404, 39.915), (116.41036949371029, 39.92133699351021)),
    # feiquan123/coordtransform-go coordtransform_test.go: p = (114.363089, 30.517411)
    (wgs84_to_gcj02, (114.363089, 30.517411), (114.36861383019243, 30.515078352018758)),
    # feiquan123/coordtransform-go coordtransform_test.go: expGCJ02toBD09
    (gcj02_to_bd09, (114.363089, 30.517411), (114.36951652929112, 30.523754384540837)),
    # feiquan123/coordtransform-go coordtransform_test.go: expWGS84toBD09
    (wgs84_to_bd09, (114.363089, 30.517411), (114.3750500836037, 30.521392123098003)),
    # ipcjs/coordtransform_dart test/coordtransform_dart_test.dart: wgs84ToBd09 (Jiangsu)
    (wgs84_to_bd09, (118.3013077, 32.2719040), (118.31309502519456, 32.27614034221775)),
    # Glatzel/pyxis python/tests/test_crypto.py (near Shanghai): wgs84 -> gcj02
    (wgs84_to_gcj02, (121.0917077, 30.6107779), (121.09626935575027, 30.608604331756705)),
    # Glatzel/pyxis python/tests/test_crypto.py: wgs84 -> bd09
    (wgs84_to_bd09, (121.0917077, 30.6107779), (121.10271732371203, 30.61484572185035)),
    # Glatzel/pyxis python/tests/test_crypto.py: gcj02 -> bd09
    (
        gcj02_to_bd09,
        (121.09626935575027, 30.608604331756705),
        (121.10271732371203, 30.61484572185035),
    ),
]


@pytest.mark.parametrize(("func", "given", "expected"), FORWARD_VECTORS)
def test_forward_matches_published_vectors(func, given, expected):
    lon, lat = func(*given)
    assert abs(lon - expected[0]) < FORWARD_TOL_DEG
    assert abs(lat - expected[1]) < FORWARD_TOL_DEG


# Published *exact* inverses (iterated by their authors): (function, input, expected).
EXACT_INVERSE_VECTORS = [
    # Glatzel/pyxis python/tests/test_crypto.py: gcj02 -> wgs84 (run with exact=True)
    (gcj02_to_wgs84, (121.09626935575027, 30.608604331756705), (121.0917077, 30.6107779)),
    # Glatzel/pyxis python/tests/test_crypto.py: bd09 -> wgs84
    (bd09_to_wgs84, (121.10271732371203, 30.61484572185035), (121.0917077, 30.6107779)),
    # Glatzel/pyxis python/tests/test_crypto.py: bd09 -> gcj02
    (
        bd09_to_gcj02,
        (121.10271732371203, 30.61484572185035),
        (121.09626935575027, 30.608604331756705),
    ),
]


@pytest.mark.parametrize(("func", "given", "expected"), EXACT_INVERSE_VECTORS)
def test_inverse_matches_published_exact_vectors(func, given, expected):
    lon, lat = func(*given)
    assert abs(lon - expected[0]) < FORWARD_TOL_DEG
    assert abs(lat - expected[1]) < FORWARD_TOL_DEG


# Published values from the common *one-step* inverses. Those are known to be off by up to
# a couple of metres, so they only bound ours loosely; the round-trip tests are the real check.
APPROXIMATE_INVERSE_VECTORS = [
    # wandergis/coordtransform README.md: gcj02towgs84(116.404, 39.915)
    (gcj02_to_wgs84, (116.404, 39.915), (116.39775550083061, 39.91359571849836), 3.0),
    # ipcjs/coordtransform_dart test/coordtransform_dart_test.dart: bd09ToWgs84 (Suzhou)
    (bd09_to_wgs84, (120.698967, 31.324966), (120.68817433685123, 31.320969743354603), 3.0),
    # wandergis/coordtransform README.md: bd09togcj02(116.404, 39.915)
    (bd09_to_gcj02, (116.404, 39.915), (116.39762729119315, 39.90865673957631), 0.1),
]


@pytest.mark.parametrize(("func", "given", "expected", "tol_m"), APPROXIMATE_INVERSE_VECTORS)
def test_inverse_close_to_published_one_step_inverses(func, given, expected, tol_m):
    lon, lat = func(*given)
    assert metres(lon, lat, *expected)[0] < tol_m


def _grid(lon_min, lon_max, lat_min, lat_max, step):
    lons, lats = np.meshgrid(
        np.arange(lon_min, lon_max + 1e-9, step), np.arange(lat_min, lat_max + 1e-9, step)
    )
    return lons.ravel(), lats.ravel()


NANTONG_GRID = _grid(120.2, 122.2, 31.6, 32.8, 0.01)  # ~24,000 points, ~1 km apart
CHINA_GRID = _grid(73.0, 135.0, 3.0, 54.0, 0.25)  # ~51,000 points


@pytest.mark.parametrize("grid", [NANTONG_GRID, CHINA_GRID], ids=["nantong", "china"])
def test_gcj_round_trip_under_a_centimetre(grid):
    lon, lat = grid
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    back_lon, back_lat = gcj02_to_wgs84(g_lon, g_lat)
    assert metres(lon, lat, back_lon, back_lat).max() < ROUND_TRIP_TOL_M
    # The other way round, from GCJ-02 input: forward(inverse(x)) == x to 1e-9 deg.
    w_lon, w_lat = gcj02_to_wgs84(lon, lat)
    f_lon, f_lat = wgs84_to_gcj02(w_lon, w_lat)
    assert np.abs(f_lon - lon).max() < 1e-9
    assert np.abs(f_lat - lat).max() < 1e-9


@pytest.mark.parametrize("grid", [NANTONG_GRID, CHINA_GRID], ids=["nantong", "china"])
def test_bd_round_trip_under_a_centimetre(grid):
    lon, lat = grid
    b_lon, b_lat = wgs84_to_bd09(lon, lat)
    back_lon, back_lat = bd09_to_wgs84(b_lon, b_lat)
    assert metres(lon, lat, back_lon, back_lat).max() < ROUND_TRIP_TOL_M
    g_lon, g_lat = bd09_to_gcj02(lon, lat)
    f_lon, f_lat = gcj02_to_bd09(g_lon, g_lat)
    assert np.abs(f_lon - lon).max() < 1e-9
    assert np.abs(f_lat - lat).max() < 1e-9


def test_offsets_in_nantong_are_hundreds_of_metres():
    lon, lat = NANTONG_GRID
    gcj = metres(lon, lat, *wgs84_to_gcj02(lon, lat))
    bd = metres(lon, lat, *wgs84_to_bd09(lon, lat))
    assert gcj.min() > 100 and gcj.max() < 1000
    assert bd.min() > 500 and bd.max() < 2000


@pytest.mark.parametrize(
    ("lon", "lat"),
    [(139.6917, 35.6895), (-0.1276, 51.5072), (151.2093, -33.8688), (120.9, 60.0)],
    ids=["tokyo", "london", "sydney", "north-of-box"],
)
def test_gcj_unchanged_outside_china(lon, lat):
    assert not in_china_box(lon, lat)
    assert wgs84_to_gcj02(lon, lat) == (lon, lat)
    assert gcj02_to_wgs84(lon, lat) == (lon, lat)


def test_shapes_scalars_and_broadcasting():
    lon, lat = wgs84_to_gcj02(120.9, 32.0)
    assert np.ndim(lon) == 0 and np.ndim(lat) == 0
    assert isinstance(lon, float)  # numpy float64 is a float subclass

    grid_lon = np.full((3, 4), 120.9)
    grid_lat = np.full((3, 4), 32.0)
    for func in (wgs84_to_gcj02, gcj02_to_wgs84, wgs84_to_bd09, bd09_to_wgs84):
        out_lon, out_lat = func(grid_lon, grid_lat)
        assert out_lon.shape == (3, 4) and out_lat.shape == (3, 4)

    out_lon, out_lat = gcj02_to_wgs84([120.9, 121.0, 121.1], 32.0)  # lists broadcast
    assert out_lon.shape == out_lat.shape == (3,)


def test_nan_propagates_without_breaking_other_points():
    lon, lat = gcj02_to_wgs84([np.nan, 120.9], [32.0, 32.0])
    assert np.isnan(lon[0]) and np.isnan(lat[0])
    assert np.isfinite(lon[1]) and np.isfinite(lat[1])
    lon, lat = bd09_to_wgs84(np.nan, np.nan)
    assert np.isnan(lon) and np.isnan(lat)


def test_inputs_are_not_modified():
    lon = np.array([120.9, 121.0])
    lat = np.array([32.0, 32.1])
    gcj02_to_wgs84(lon, lat)
    bd09_to_wgs84(lon, lat)
    assert lon.tolist() == [120.9, 121.0] and lat.tolist() == [32.0, 32.1]

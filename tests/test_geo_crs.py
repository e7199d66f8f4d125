"""Input coordinate systems: parse_crs aliases and errors, to/from store, GK zones."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from geo import china_offsets
from geo.crs import (
    BD09,
    CGCS2000,
    GCJ02,
    WGS84,
    CoordSystem,
    CrsError,
    common_systems,
    from_store,
    gauss_kruger_zone,
    metric_transformer,
    parse_crs,
    to_store,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wgs84", WGS84),
        ("WGS-84", WGS84),
        ("WGS 84", WGS84),
        ("ＷＧＳ８４", WGS84),  # full-width
        (4326, WGS84),
        ("4326", WGS84),
        ("EPSG:4326", WGS84),
        ("epsg：4326", WGS84),  # full-width colon
        ("GPS", WGS84),
        ("cgcs2000", CGCS2000),
        ("CGCS 2000", CGCS2000),
        ("国家2000", CGCS2000),
        ("国家2000坐标系", CGCS2000),
        ("2000", CGCS2000),
        (4490, CGCS2000),
        ("EPSG:4490", CGCS2000),
        ("gcj02", GCJ02),
        ("GCJ-02", GCJ02),
        ("火星", GCJ02),
        ("火星坐标系", GCJ02),
        ("高德", GCJ02),
        ("腾讯", GCJ02),
        ("bd09", BD09),
        ("BD-09", BD09),
        ("百度", BD09),
        ("百度坐标", BD09),
    ],
)
def test_parse_crs_aliases(text, expected):
    assert parse_crs(text) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("EPSG:4549", "EPSG:4549"),
        ("4549", "EPSG:4549"),
        (4549, "EPSG:4549"),
        ("epsg 4549", "EPSG:4549"),
        ("ＥＰＳＧ：４５４９", "EPSG:4549"),
        ("EPSG:4528", "EPSG:4528"),
        ("4529", "EPSG:4529"),
        ("EPSG:4550", "EPSG:4550"),
        ("EPSG:4527", "EPSG:4527"),
        ("4548", "EPSG:4548"),
        ("EPSG:32651", "EPSG:32651"),
        ("urn:ogc:def:crs:EPSG::4549", "EPSG:4549"),
    ],
)
def test_parse_crs_epsg_codes(text, key):
    system = parse_crs(text)
    assert system.key == key
    assert system.geographic is False
    assert system.epsg == int(key[5:])


def test_labels():
    assert parse_crs(4549).label_zh == "EPSG:4549 CGCS2000 / 3度带 高斯-克吕格 CM 120E"
    assert parse_crs(4528).label_zh == "EPSG:4528 CGCS2000 / 3度带 高斯-克吕格 第40带（含带号）"
    assert WGS84.label_zh == "WGS84（GPS）"
    assert CGCS2000.label_zh == "CGCS2000（国家2000）"
    assert GCJ02.label_zh == "GCJ-02（高德/腾讯/微信）"
    assert BD09.label_zh == "BD-09（百度）"


def test_labels_parse_back_and_common_systems():
    for system in common_systems():
        assert parse_crs(system.label_zh) == system
        assert parse_crs(system) is system
    assert [s.key for s in common_systems()][:4] == ["wgs84", "cgcs2000", "gcj02", "bd09"]


def test_compound_crs_uses_horizontal_part():
    assert parse_crs("EPSG:9518") == WGS84  # WGS 84 + EGM2008 height


@pytest.mark.parametrize("text", ["EPSG:99999", "99999", "foo", "", "EPSG:4549 nonsense", -4326])
def test_unknown_crs_has_chinese_message(text):
    with pytest.raises(CrsError) as info:
        parse_crs(text)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"无法识别的坐标系：'{text}'（支持 WGS84、CGCS2000、GCJ-02、BD-09 或 EPSG 代码）"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("EPSG:5773", "高程坐标系"),  # EGM96 height
        ("EPSG:4479", "地心直角坐标系"),  # CGCS2000 geocentric
        ("EPSG:2263", "不是米"),  # New York, US survey feet
        ("EPSG:2385", "旧大地基准"),  # Xian 1980 / 3-degree GK CM 120E
        ("EPSG:4214", "旧大地基准"),  # Beijing 1954
    ],
)
def test_unsupported_crs_is_refused_clearly(text, fragment):
    with pytest.raises(CrsError) as info:
        parse_crs(text)
    message = str(info.value)
    assert message.startswith(f"不支持的坐标系：'{text}'（")
    assert fragment in message


def test_bad_types_are_refused():
    for bad in (True, 3.5, None):
        with pytest.raises(CrsError):
            parse_crs(bad)  # type: ignore[arg-type]


# Published pair: OSGeo/PROJ test/gie/builtins.gie, "Transverse Mercator" section,
# operation "+proj=tmerc +ellps=GRS80": accept (2, 1) -> expect (222650.796795778,
# 110642.229411927), tolerance 0.1 mm. EPSG:4549 is the same projection with lon_0=120 and
# x_0=500000 (EPSG:4528 x_0=40500000) on the CGCS2000 ellipsoid, whose flattening differs
# from GRS80 in the 11th digit (a few micrometres here).
PROJ_GIE_TMERC = ((2.0, 1.0), (222650.796795778, 110642.229411927))


@pytest.mark.parametrize(
    ("crs", "false_easting"), [("EPSG:4549", 500000.0), ("EPSG:4528", 40500000.0)]
)
def test_gauss_kruger_against_published_pair(crs, false_easting):
    (dlon, lat), (east, north) = PROJ_GIE_TMERC
    x, y = from_store(120.0 + dlon, lat, crs)
    assert abs(x - (east + false_easting)) < 1e-3
    assert abs(y - north) < 1e-3
    lon, lat_back = to_store(east + false_easting, north, crs)
    assert abs(lon - (120.0 + dlon)) < 1e-9
    assert abs(lat_back - lat) < 1e-9


def test_utm_against_published_pair():
    # OSGeo/PROJ test/gie/builtins.gie, "Universal Transverse Mercator (UTM)" section:
    # operation "+proj=utm +zone=32" (WGS84): accept 12 56 -> expect 687071.43910944
    # 6210141.32674801, tolerance 0.001 mm. EPSG:32632 is that CRS.
    x, y = from_store(12.0, 56.0, "EPSG:32632")
    assert abs(x - 687071.43910944) < 1e-3
    assert abs(y - 6210141.32674801) < 1e-3


NANTONG_LON, NANTONG_LAT = (
    a.ravel() for a in np.meshgrid(np.linspace(120.2, 122.2, 21), np.linspace(31.6, 32.8, 13))
)


@pytest.mark.parametrize("code", [4549, 4528, 4550, 4529, 32651])
def test_projected_round_trip_and_agreement_with_pyproj(code):
    x, y = from_store(NANTONG_LON, NANTONG_LAT, code)
    ref = Transformer.from_crs(4490, code, always_xy=True)
    ref_x, ref_y = ref.transform(NANTONG_LON, NANTONG_LAT)
    assert np.abs(x - ref_x).max() < 1e-6 and np.abs(y - ref_y).max() < 1e-6
    lon, lat = to_store(x, y, code)
    # 1e-9 deg is ~0.1 mm.
    assert np.abs(lon - NANTONG_LON).max() < 1e-9
    assert np.abs(lat - NANTONG_LAT).max() < 1e-9


def test_easting_is_x_regardless_of_epsg_axis_order():
    # EPSG:4549 declares northing first; we always take (easting, northing).
    x, y = from_store(120.9, 32.0, 4549)
    assert 500000 < x < 600000
    assert 3_500_000 < y < 3_600_000


def test_named_systems_route_through_offsets():
    lon, lat = 120.9, 32.0
    assert to_store(lon, lat, "wgs84") == (lon, lat)
    assert to_store(lon, lat, "cgcs2000") == (lon, lat)
    assert to_store(lon, lat, GCJ02) == china_offsets.gcj02_to_wgs84(lon, lat)
    assert to_store(lon, lat, "百度") == china_offsets.bd09_to_wgs84(lon, lat)
    assert from_store(lon, lat, "gcj02") == china_offsets.wgs84_to_gcj02(lon, lat)
    assert from_store(lon, lat, "bd09") == china_offsets.wgs84_to_bd09(lon, lat)
    assert to_store(lon, lat, 4326) == (lon, lat)


def test_shapes_are_preserved():
    x = np.full((2, 3), 585000.0)
    y = np.full((2, 3), 3542000.0)
    lon, lat = to_store(x, y, 4549)
    assert lon.shape == lat.shape == (2, 3)
    lon, lat = to_store(585000.0, 3542000.0, 4549)
    assert np.ndim(lon) == 0
    lon, lat = to_store([120.9, 121.0], 32.0, "gcj02")
    assert lon.shape == (2,)


def test_invalid_projected_values_give_non_finite_not_errors():
    lon, lat = to_store([1e12, np.nan], [1e12, 3542000.0], 4549)
    assert not np.isfinite(lon).any() and not np.isfinite(lat).any()


def test_input_arrays_untouched():
    lon = np.array([120.9])
    lat = np.array([32.0])
    out_lon, _ = to_store(lon, lat, "wgs84")
    out_lon[0] = 0.0
    assert lon[0] == 120.9


@pytest.mark.parametrize(
    ("lon", "expected"),
    [
        (120.9, (4528, 4549)),  # Nantong city: zone 40, CM 120E
        (121.8, (4529, 4550)),  # Qidong: zone 41, CM 123E
        (121.5, (4529, 4550)),  # boundary goes east
        (117.9, (4527, 4548)),
        (75.0, (4513, 4534)),
        (135.0, (4533, 4554)),
    ],
)
def test_gauss_kruger_zone(lon, expected):
    assert gauss_kruger_zone(lon) == expected
    with_prefix, without = expected
    assert parse_crs(with_prefix).label_zh.endswith("带（含带号）")
    assert f"CM {3 * (with_prefix - 4513 + 25)}E" in parse_crs(without).label_zh


@pytest.mark.parametrize("lon", [10.0, 140.0, float("nan")])
def test_gauss_kruger_zone_outside_china(lon):
    with pytest.raises(CrsError):
        gauss_kruger_zone(lon)


def test_metric_transformer():
    to_metric, to_store_t = metric_transformer()
    assert metric_transformer() is metric_transformer()  # cached
    x, y = to_metric.transform(120.9, 32.0)
    assert (x, y) == pytest.approx(from_store(120.9, 32.0, 4549), abs=1e-6)
    lon, lat = to_store_t.transform(x, y)
    assert (lon, lat) == pytest.approx((120.9, 32.0), abs=1e-10)


def test_coord_system_is_frozen_and_hashable():
    system = parse_crs(4549)
    with pytest.raises(AttributeError):
        system.key = "x"  # type: ignore[misc]
    assert {system: 1}[CoordSystem("EPSG:4549", system.label_zh, False)] == 1
    assert GCJ02.epsg is None and WGS84.epsg == 4326 and CGCS2000.epsg == 4490


@pytest.mark.parametrize("name", ["北京54", "西安80坐标系", "Beijing 1954", "西安1980"])
def test_old_datums_named_in_words_are_refused_with_the_reason(name):
    with pytest.raises(CrsError, match="旧大地基准"):
        parse_crs(name)

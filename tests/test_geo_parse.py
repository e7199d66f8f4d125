"""Typed/pasted coordinate parsing, and the lat/lon swap and range checks behind it."""

from __future__ import annotations

import numpy as np
import pytest

from geo import china_offsets
from geo.crs import from_store
from geo.parse import CoordinateParseError, ParsedPoint, parse_coordinate_text
from geo.sanity import CHINA_REGION, NANTONG_REGION, Region, check_points

DMS_LON = 120 + 54 / 60 + 30 / 3600  # 120°54′30″


# ---------------------------------------------------------------- check_points


def test_check_points_each_status_geographic():
    x = [120.9, 32.0, 116.4, 95.0, np.nan, 10.0, np.inf]
    y = [32.0, 120.9, 39.9, 200.0, 32.0, 100.0, 32.0]
    lon, lat, status = check_points(x, y, "wgs84")
    assert status.tolist() == [
        "ok",
        "swapped",  # lat,lon typed: corrected
        "outside_region",  # Beijing: valid, not Nantong either way
        "out_of_range",  # |lat| > 90 and swapping does not help
        "out_of_range",  # NaN
        "out_of_range",  # lat 100: swapped is valid but not in the region
        "out_of_range",  # inf
    ]
    assert (lon[0], lat[0]) == (120.9, 32.0)
    assert (lon[1], lat[1]) == (120.9, 32.0)  # the corrected values
    assert (lon[2], lat[2]) == (116.4, 39.9)
    assert np.isnan(lon[3:]).all() and np.isnan(lat[3:]).all()


def test_check_points_projected_northing_easting_swap():
    east, north = from_store(120.9, 32.0, 4549)
    lon, lat, status = check_points([east, north, 1e9], [north, east, 1e9], "EPSG:4549")
    assert status.tolist() == ["ok", "swapped", "out_of_range"]
    assert lon[:2] == pytest.approx([120.9, 120.9], abs=1e-9)
    assert lat[:2] == pytest.approx([32.0, 32.0], abs=1e-9)


def test_check_points_projected_with_zone_prefix():
    east, north = from_store(120.9, 32.0, 4528)  # east ~ 40,585,000
    _, _, status = check_points([east, north], [north, east], 4528)
    assert status.tolist() == ["ok", "swapped"]


def test_check_points_gcj_input_is_converted():
    lon, lat, status = check_points(32.0, 120.9, "gcj02")
    assert status == "swapped"
    assert (lon, lat) == china_offsets.gcj02_to_wgs84(120.9, 32.0)


def test_check_points_scalar_and_shape():
    lon, lat, status = check_points(120.9, 32.0, "wgs84")
    assert np.ndim(lon) == 0 and status == "ok"
    lon, lat, status = check_points(np.full((2, 2), 120.9), 32.0, "wgs84")
    assert lon.shape == lat.shape == status.shape == (2, 2)


def test_check_points_other_region():
    _, _, status = check_points([116.4, 39.9], [39.9, 116.4], "wgs84", CHINA_REGION)
    assert status.tolist() == ["ok", "swapped"]
    tiny = Region("测试", 0.0, 1.0, 0.0, 1.0)
    _, _, status = check_points(0.5, 0.5, "wgs84", tiny)
    assert status == "ok"


def test_regions():
    assert NANTONG_REGION.contains(120.9, 32.0)
    assert NANTONG_REGION.contains(122.5, 31.9)  # the sea off Qidong
    assert not NANTONG_REGION.contains(118.8, 32.1)  # Nanjing
    assert CHINA_REGION.contains(116.4, 39.9)


# ---------------------------------------------------------------- parse_coordinate_text


@pytest.mark.parametrize(
    ("text", "lon", "lat", "swapped"),
    [
        ("120.9,32.0", 120.9, 32.0, False),
        ("120.9, 32.0", 120.9, 32.0, False),
        ("120.9，32.0", 120.9, 32.0, False),  # full-width comma
        ("１２０．９，３２．０", 120.9, 32.0, False),  # full-width digits
        ("120.9 32.0", 120.9, 32.0, False),
        ("  120.9   32.0  ", 120.9, 32.0, False),
        ("120.9;32.0", 120.9, 32.0, False),
        ("120.9；32.0", 120.9, 32.0, False),
        ("120.9、32.0", 120.9, 32.0, False),
        ("(120.9, 32.0)", 120.9, 32.0, False),
        ("32.0,120.9", 120.9, 32.0, True),  # lat,lon by range
        ("32.0 120.9", 120.9, 32.0, True),
        ("E120.9 N32.0", 120.9, 32.0, False),
        ("e120.9 n32.0", 120.9, 32.0, False),
        ("E 120.9, N 32.0", 120.9, 32.0, False),
        ("120.9E 32.0N", 120.9, 32.0, False),
        ("120.9 E, 32.0 N", 120.9, 32.0, False),
        ("N32.0 E120.9", 120.9, 32.0, True),
        ("32.0N, 120.9E", 120.9, 32.0, True),
        ("东经120°54′30″ 北纬32°0′0″", DMS_LON, 32.0, False),
        ("北纬32°0′0″，东经120°54′30″", DMS_LON, 32.0, True),
        ("东经120.9 北纬32", 120.9, 32.0, False),
        ("120°54'30\"E, 32°N", DMS_LON, 32.0, False),
        ("120°54′30″E 32°00′00″N", DMS_LON, 32.0, False),
        ("120° 54' 30\" E, 32° 0' N", DMS_LON, 32.0, False),
        ("120º54'30\" 32º", DMS_LON, 32.0, False),  # masculine ordinal for degree
        ("120度54分30秒 32度", DMS_LON, 32.0, False),
        ("120°54.5', 32°0.5'", 120 + 54.5 / 60, 32 + 0.5 / 60, False),
        ("120.9°, 32.0°", 120.9, 32.0, False),
        ("经度：120.9，纬度：32.0", 120.9, 32.0, False),
        ("纬度32.0 经度120.9", 120.9, 32.0, True),
        ("lat=32.0 lon=120.9", 120.9, 32.0, True),
        ("Lng: 120.9; Lat: 32.0", 120.9, 32.0, False),
    ],
)
def test_accepted_forms(text, lon, lat, swapped):
    point = parse_coordinate_text(text)
    assert isinstance(point, ParsedPoint)
    assert point.lon == pytest.approx(lon, abs=1e-12)
    assert point.lat == pytest.approx(lat, abs=1e-12)
    assert point.swapped is swapped
    assert point.crs == "wgs84"
    if swapped:
        assert point.note_zh  # the UI shows why
        assert (point.x, point.y) == pytest.approx((lat, lon))
    else:
        assert point.note_zh == ""
        assert (point.x, point.y) == pytest.approx((lon, lat))


def test_swap_note_wording():
    by_range = parse_coordinate_text("32.0,120.9")
    assert "按数值范围判断" in by_range.note_zh and "已调换" in by_range.note_zh
    by_label = parse_coordinate_text("N32 E120.9")
    assert "标记" in by_label.note_zh


def test_hemispheres_give_signs():
    point = parse_coordinate_text("S33.9 W70.6")
    assert (point.lon, point.lat) == (-70.6, -33.9)
    assert point.swapped and "不在" in point.note_zh


def test_outside_region_is_a_note_not_an_error():
    beijing = parse_coordinate_text("116.4,39.9")
    assert (beijing.lon, beijing.lat, beijing.swapped) == (116.4, 39.9, False)
    assert beijing.note_zh == "不在南通市及其海域范围内"
    lat_first = parse_coordinate_text("39.9,116.4")  # lat,lon elsewhere in China
    assert (lat_first.lon, lat_first.lat, lat_first.swapped) == (116.4, 39.9, True)
    assert "已调换" in lat_first.note_zh and "不在南通" in lat_first.note_zh
    abroad = parse_coordinate_text("-0.1276, 51.5072")
    assert (abroad.lon, abroad.lat) == (-0.1276, 51.5072)


def test_other_input_systems():
    gcj = parse_coordinate_text("120.9,32.0", crs="高德")
    assert gcj.crs == "gcj02"
    assert (gcj.lon, gcj.lat) == pytest.approx(china_offsets.gcj02_to_wgs84(120.9, 32.0))
    bd = parse_coordinate_text("32.0,120.9", crs="bd09")
    assert bd.swapped
    assert (bd.lon, bd.lat) == pytest.approx(china_offsets.bd09_to_wgs84(120.9, 32.0))

    east, north = (float(v) for v in from_store(120.9, 32.0, 4549))
    gk = parse_coordinate_text(f"{east:.3f}, {north:.3f}", crs="EPSG:4549")
    assert (gk.lon, gk.lat) == pytest.approx((120.9, 32.0), abs=1e-7)
    assert not gk.swapped
    gk_swapped = parse_coordinate_text(f"{north:.3f} {east:.3f}", crs=4549)
    assert gk_swapped.swapped and "北坐标" in gk_swapped.note_zh
    assert (gk_swapped.lon, gk_swapped.lat) == pytest.approx((120.9, 32.0), abs=1e-7)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "内容为空"),
        ("   ", "内容为空"),
        ("abc", "无法识别的字符"),
        ("南通市崇川区", "无法识别的字符"),
        ("120.9", "找到 1 个数"),
        ("120.9,", "找到 1 个数"),
        ("120°54.5'", "找到 1 个数"),  # one D°M' group is one number
        ("120.9,32.0,5", "找到 3 个数"),
        ("1 2 3", "找到 3 个数"),
        ("120.9.32", "缺少分隔符"),
        ("E120 E32", "都标成了经度"),
        ("N120 N32", "都标成了纬度"),
        ("120°61', 32", "0 到 60"),
        ("120', 32", "缺少度数"),
        ("-120 W, 32", "负号"),
        ("E", "缺少数值"),
        ("95, 200", "超出经纬度范围"),
        ("200, 95", "超出经纬度范围"),
        ("E200 N32", "超出经纬度范围"),
        ("nan, 32", "无法识别的字符"),
    ],
)
def test_garbage_is_refused_with_quoted_input(text, reason):
    with pytest.raises(CoordinateParseError) as info:
        parse_coordinate_text(text)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"无法解析坐标：'{text}'（")
    assert reason in message


def test_projected_input_refuses_degree_notation():
    with pytest.raises(CoordinateParseError, match="投影坐标"):
        parse_coordinate_text("E585045 N3542206", crs=4549)
    with pytest.raises(CoordinateParseError, match="不是有效的"):
        parse_coordinate_text("1000000000 1000000000", crs=4549)


def test_long_input_is_shortened_in_message():
    with pytest.raises(CoordinateParseError) as info:
        parse_coordinate_text("x" * 500)
    assert len(str(info.value)) < 200

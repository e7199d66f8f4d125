"""Never a silent wrong answer: a pair of numbers that cannot be meant in the declared system
near Nantong is refused with what it looks like and which system to choose — in a single
route, in a batch row and on the command line — and only a plausible point is "outside"."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from geo.crs import from_store, parse_crs
from geo.plausibility import covers_nantong, implausible, implausible_many
from grids.batch import assign
from grids.routing import RoutingInputError
from tests.conftest import gridmap_exe
from tests.world import P

NANTONG = (120.86, 32.01)
E49, N49 = (float(v) for v in from_store(*NANTONG, "EPSG:4549"))  # ~486 km E, 3,543 km N


@pytest.mark.parametrize(("x", "y", "crs", "expect"), [
    (120.86, 32.01, "EPSG:4549", ["经纬度（度）", "WGS84/CGCS2000"]),  # degrees, metric system
    (120.86, 32.01, "EPSG:3857", ["经纬度（度）", "WGS84/CGCS2000"]),
    (32.01, 120.86, "EPSG:4549", ["经纬度（度）"]),  # degrees and swapped, metric system
    (E49, N49, "wgs84", ["不含带号的投影坐标", "EPSG:4549"]),  # metres, geographic system
    (E49 + 40_000_000, N49, "EPSG:4549", ["含带号 40", "EPSG:4528"]),  # prefix, wrong code
    (E49, N49, "EPSG:4528", ["不含带号", "EPSG:4549"]),  # no prefix for the prefixed code
    (E49, N49, "EPSG:4548", ["适用范围不含南通", "EPSG:4549"]),  # a zone far west
])
def test_implausible_pairs_say_what_they_look_like(x, y, crs, expect):
    why = implausible(x, y, parse_crs(crs))
    assert why is not None
    for words in expect:
        assert words in why, (words, why)


@pytest.mark.parametrize(("x", "y", "crs"), [
    (121.47, 31.23, "wgs84"),  # Shanghai: plausible, truly outside
    (E49, N49, "EPSG:4549"),  # right system
    (116.4, 39.9, "cgcs2000"),  # Beijing
    (NANTONG[0], NANTONG[1], "wgs84"),  # in Nantong as declared
    (E49 + 40_000_000, N49, "EPSG:4528"),  # prefixed easting with the prefixed code
])
def test_plausible_pairs_are_left_alone(x, y, crs):
    assert implausible(x, y, parse_crs(crs)) is None


def test_zones_that_cover_nantong():
    assert covers_nantong("EPSG:4549") and covers_nantong("EPSG:4550")
    assert covers_nantong("EPSG:4528") and covers_nantong("wgs84")
    assert not covers_nantong("EPSG:4548") and not covers_nantong("EPSG:4527")


def test_batch_of_many_is_checked_at_once():
    x = np.array([120.86, E49 + 40_000_000, 121.47, np.nan])
    y = np.array([32.01, N49, 31.23, 1.0])
    out = implausible_many(x, y, parse_crs("EPSG:4549"))
    assert "经纬度" in out[0] and "EPSG:4528" in out[1]
    assert "EPSG:4528" not in out[0]
    assert "不是有效数字" in out[3]
    out = implausible_many(x[2:3], y[2:3], parse_crs("wgs84"))
    assert out == [None]


def test_route_refuses_and_batch_rows_give_the_same_reason(router):
    with pytest.raises(RoutingInputError, match="看起来是经纬度"):
        router.route(*P["a2_plain"], "EPSG:4549")
    assert router.route(121.47, 31.23)["status"] == "outside"
    frame = pd.DataFrame({"编号": ["A", "B", "C"],
                          "经度": [P["a2_plain"][0], P["a2_plain"][0], 121.47],
                          "纬度": [P["a2_plain"][1], P["a2_plain"][1], 31.23],
                          "坐标系": ["EPSG:4549", "wgs84", "wgs84"]})
    t = assign(router, frame).table
    assert list(t["route_status"]) == ["error", "ok", "outside"]
    assert "看起来是经纬度" in t.loc[0, "route_error"]


def test_cli_says_it_in_chinese(sample_store):
    out = subprocess.run([gridmap_exe(), "--store", str(sample_store), "route", "120.86",
                          "32.01", "--crs", "EPSG:4549"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "看起来是经纬度" in out.stderr and "WGS84" in out.stderr
    assert "outside" not in out.stdout

"""The routing rules of DOMAIN.md on the hand-drawn world (tests/world.py)."""

from __future__ import annotations

import pytest

from geo.china_offsets import wgs84_to_bd09, wgs84_to_gcj02
from tests.world import P


def route(router, name, **kw):
    lon, lat = P[name]
    return router.route(lon, lat, **kw)


def codes(answer, *keys):
    return tuple(None if answer[k] is None else answer[k]["code"] for k in keys)


def test_plain_point_goes_to_county_bureau_with_chain(router):
    a = route(router, "a2_plain")
    assert a["status"] == "ok"
    assert codes(a, "county", "township", "bureau") == ("320901", "320901002", "B-A")
    assert a["grid"]["kind"] == "comprehensive"
    assert a["chain"] == ["B-A", "B-M"]
    assert a["rules"] == {"grid": "comprehensive", "bureau": "county"}
    assert [w["id"] for w in a["workers"]]  # the grid's worker is listed
    assert a["park"] is None and a["candidates"] == []


def test_numbered_bureau_area_ignores_township_borders(router):
    a = route(router, "a2_strip")
    assert codes(a, "township", "bureau") == ("320901002", "B-A-1")
    assert a["chain"] == ["B-A-1", "B-A", "B-M"]
    assert a["rules"]["bureau"] == "numbered"


def test_park_bureau_wins_over_numbered_and_chemical_park_over_zone(router):
    a = route(router, "chemical")
    assert codes(a, "park", "bureau") == ("P2", "B-P2")
    assert [p["code"] for p in a["parks"]] == ["P2", "P1"]
    assert a["grid"]["kind"] == "park"  # park grid beats the comprehensive grid
    assert a["rules"]["bureau"] == "park"


def test_zone_without_bureau_falls_back_to_county(router):
    a = route(router, "national")
    assert codes(a, "park", "bureau") == ("P1", "B-A")


def test_dedicated_grid_wins(router):
    a = route(router, "dedicated")
    assert a["grid"]["code"] == "320901002800001"
    assert a["rules"]["grid"] == "dedicated"
    assert any("专属网格" in r for r in a["reasons"])


def test_enclave_belongs_to_the_other_county(router):
    a = route(router, "enclave")
    assert codes(a, "county", "township", "bureau") == ("320902", "320902002", "B-B")


def test_exact_point_on_county_border_is_ambiguous(router):
    a = route(router, "border_ab")
    assert a["status"] == "ambiguous"
    assert a["county"] is None and a["bureau"] is None
    assert {c["county"]["code"] for c in a["candidates"]} == {"320901", "320902"}


def test_accuracy_circle_across_border_is_ambiguous_small_one_is_not(router):
    wide = route(router, "near_border", accuracy_m=300)
    assert wide["status"] == "ambiguous"
    assert {c["bureau"]["code"] for c in wide["candidates"]} == {"B-A", "B-B-1"}
    narrow = route(router, "near_border", accuracy_m=10)
    assert narrow["status"] == "ok" and narrow["county"]["code"] == "320901"


def test_ambiguity_keeps_what_all_candidates_share(router):
    # 300 m around the middle of A2's grid border: same county/township/bureau, two grids.
    a = router.route(120.68, 32.1, accuracy_m=300)
    assert a["status"] == "ambiguous"
    assert codes(a, "county", "township", "bureau") == ("320901", "320901002", "B-A")
    assert a["grid"] is None
    assert len({c["grid"]["code"] for c in a["candidates"]}) == 2


def test_sea_area_goes_to_its_county_bureau_flagged(router):
    a = route(router, "sea")
    assert a["status"] == "ok"
    assert "sea" in a["flags"]
    assert codes(a, "county", "sea_area", "bureau") == ("320902", "S1", "B-B")
    assert a["township"] is None and a["grid"] is None


def test_outside_is_a_clear_answer(router):
    a = route(router, "outside")
    assert a["status"] == "outside"
    assert a["bureau"] is None and a["county"] is None
    assert a["reasons"]


def test_swapped_lat_lon_is_flagged_not_silent(router):
    lon, lat = P["a2_plain"]
    a = router.route(lat, lon)
    assert "swapped" in a["flags"]
    assert a["county"]["code"] == "320901"
    assert "交换" in a["reasons"][0]


@pytest.mark.parametrize("crs,convert", [("gcj02", wgs84_to_gcj02), ("bd09", wgs84_to_bd09)])
def test_chinese_offset_inputs_route_to_the_true_place(router, crs, convert):
    # Just inside the dedicated grid: 500 m offsets would land elsewhere if not converted.
    lon, lat = 120.668, 32.038
    x, y = convert(lon, lat)
    a = router.route(float(x), float(y), crs=crs)
    assert a["grid"]["code"] == "320901002800001"
    assert a["point"]["wgs84"] == pytest.approx([lon, lat], abs=1e-7)
    raw = router.route(float(x), float(y))  # the same numbers taken as WGS84 land elsewhere
    assert raw["grid"]["code"] != "320901002800001"


def test_answer_names_its_version(router):
    a = route(router, "b1")
    assert a["version"]["generation"] == router.snapshot.generation.id

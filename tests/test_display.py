"""Display layers: simplified per zoom band with shared edges kept shared, compact encoding that
decodes to the same shapes, entity positions and details in one order, caching, GCJ-02 shift."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from geo.china_offsets import wgs84_to_gcj02
from grids.portfolio import entity_assignment
from grids.routing import Router
from layers import display
from layers.store import open_store
from tests.browser import build_map_world


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(str(build_map_world(tmp_path_factory.mktemp("display"))))
    yield s
    s.close()


@pytest.fixture(scope="module")
def snap(store):
    return store.snapshot()


def wiggly_pair() -> np.ndarray:
    """Two polygons sharing a zig-zag edge with many vertices (1 m steps)."""
    ys = np.linspace(32.0, 32.1, 401)
    xs = 120.6 + 0.0004 * np.sin(np.arange(len(ys)) / 3.0)
    edge = list(zip(xs, ys, strict=True))
    west = Polygon([(120.5, 32.0), *edge, (120.5, 32.1)])
    east = Polygon([*edge, (120.7, 32.1), (120.7, 32.0)])
    return np.array([west, east], dtype=object)


def test_zoom_bands_cover_every_zoom():
    assert display.level_for_zoom(7).index == 0
    assert display.level_for_zoom(10).index == 0
    assert display.level_for_zoom(11).index == 1
    assert display.level_for_zoom(13).index == 1
    assert display.level_for_zoom(14).index == 2
    assert display.level_for_zoom(25).index == 2


def test_coverage_simplify_keeps_shared_edges_shared():
    pair = wiggly_pair()
    level = display.LEVELS[0]
    simplified = display.simplify(pair, level.tolerance)
    before = shapely.get_num_coordinates(pair).sum()
    assert shapely.get_num_coordinates(simplified).sum() < before / 5
    assert shapely.coverage_is_valid(simplified)
    west, east = simplified
    assert west.intersection(east).area == pytest.approx(0, abs=1e-12)  # no overlap
    assert west.union(east).area == pytest.approx(box(120.5, 32.0, 120.7, 32.1).area, rel=1e-9)


def test_encoding_round_trip_and_shared_edges_after_rounding():
    pair = wiggly_pair()
    for level in display.LEVELS:
        simplified = display.simplify(pair, level.tolerance)
        scale = 10**level.decimals
        data = {"scale": scale, "geoms": [display.encode_geometry(g, scale) for g in simplified]}
        decoded = display.decode_polygons(data)
        for original, back in zip(pair, decoded, strict=True):
            # Within the band's tolerance plus rounding of the original shape.
            assert original.hausdorff_distance(back) <= level.tolerance + 2 / scale
        # Equal coordinates round to equal integers: the shared edge is still shared.
        assert decoded[0].intersection(decoded[1]).area == pytest.approx(0, abs=1e-12)


def test_overlapping_layers_simplified_per_group(snap):
    # Dedicated and park grids overlap comprehensive ones: not one coverage.
    geoms = snap["grids"].geometry.values
    assert not shapely.coverage_is_valid(np.asarray(geoms, dtype=object))
    out = display.simplify(geoms, 0.001, snap["grids"]["kind"].to_numpy(object))
    assert len(out) == len(geoms) and all(g.is_valid and not g.is_empty for g in out)


def test_encoded_layers_decode_to_the_layer(snap):
    for name in display.POLYGON_DISPLAY_LAYERS:
        for level in display.LEVELS:
            data = display.encode_layer(snap, name, level)
            assert data["format"] == display.FORMAT and data["count"] == len(snap[name])
            decoded = display.decode_polygons(data)
            for original, back in zip(snap[name].geometry.values, decoded, strict=True):
                assert original.hausdorff_distance(back) <= level.tolerance * 2 + 2e-4


def test_properties(snap):
    data = display.encode_layer(snap, "grids", 0)
    codes = data["props"]["c"]
    assert codes == snap["grids"]["code"].tolist()
    kinds = [display.KINDS["grids"][k] for k in data["props"]["k"]]
    assert kinds == snap["grids"]["kind"].tolist()
    towns = [data["dicts"]["t"][i] for i in data["props"]["t"]]
    assert towns[codes.index("320901002800001")] == "甲二镇"
    jur = display.encode_layer(snap, "jurisdictions", 0)
    assert jur["props"]["n"] == ["甲县执法一局", "乙县执法一局"]
    parks = display.encode_layer(snap, "parks", 0)
    assert display.KINDS["parks"][parks["props"]["k"][1]] == "chemical_park"


def test_cached_per_generation(snap):
    assert display.encode_layer(snap, "grids", 1) is display.encode_layer(snap, "grids", 1)


def test_entities_positions_and_details_align(store, snap):
    data = display.encode_entities(snap)
    assert data["count"] == len(snap["entities"])
    xy = np.cumsum(np.asarray(data["xy"]).reshape(-1, 2), axis=0) / data["scale"]
    order = display.entity_order(snap)
    geoms = snap["entities"].geometry.values[order]
    assert np.allclose(xy[:, 0], shapely.get_x(geoms), atol=1e-5)
    assert np.allclose(xy[:, 1], shapely.get_y(geoms), atol=1e-5)
    permits = [data["permit"][s] for s in data["s"]]
    assert permits == snap["entities"]["permit_class"].iloc[order].tolist()
    assignment = entity_assignment(Router(store))
    rows = display.entity_details(snap, assignment, 0)
    assert [r[0] for r in rows] == snap["entities"]["id"].iloc[order].astype(str).tolist()
    by_name = {r[1]: r for r in rows}
    printing = by_name["甲二镇印染有限公司"]
    assert printing[4] == "320901002001001" and "网格员" in printing[7]
    assert display.entity_chunks(snap) == 1


def test_gcj02_shift_moves_the_display_only(snap):
    def shift(lon, lat):
        return wgs84_to_gcj02(lon, lat)

    plain = shapely.get_coordinates(display.decode_polygons(
        display.encode_layer(snap, "counties", 2))[0])
    shifted = shapely.get_coordinates(display.decode_polygons(
        display.encode_layer(snap, "counties", 2, shift, "gcj02"))[0])
    assert plain.shape == shifted.shape
    offset = np.abs(shifted - plain).sum(axis=1)
    assert (offset > 0.002).all() and (offset < 0.02).all()  # hundreds of metres, as GCJ-02 is
    ex, ey = wgs84_to_gcj02(plain[:, 0], plain[:, 1])
    assert np.allclose(shifted, np.column_stack([ex, ey]), atol=3e-6)


def test_payload_is_compact(snap):
    body = display.compact_json(display.encode_layer(snap, "townships", 0))
    assert b" " not in body[:200] and "甲一镇".encode() in body  # UTF-8, not \\u escapes

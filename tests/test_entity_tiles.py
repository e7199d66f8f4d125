"""The map's entities per zoom band (layers/display.py ENTITY_BANDS): counts per square bin in
the city bands and every entity in the finest, in files per web-mercator tile. Every entity is
in exactly one tile of each band, counted once; a tile's points are where the tile is; the
files of the city view do not grow with the number of entities."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from layers import display
from layers.store import Generation, Snapshot

_GENERATIONS = iter(range(1_000_000, 2_000_000))


def snapshot(n: int, seed: int = 3) -> Snapshot:
    """n entities, most of them crowded around a few towns of Nantong, some alone (a
    generation of its own: display results are cached per generation)."""
    rng = np.random.default_rng(seed)
    towns = np.array([[120.86, 32.01], [121.18, 32.33], [120.56, 32.39], [121.55, 31.95]])
    pick = rng.integers(0, len(towns), n)
    xy = towns[pick] + rng.normal(0, 0.06, (n, 2))
    lone = rng.random(n) < 0.05
    xy[lone] = np.column_stack([rng.uniform(120.3, 121.9, lone.sum()),
                                rng.uniform(31.7, 32.7, lone.sum())])
    frame = gpd.GeoDataFrame({
        "id": [f"E{i:07d}" for i in range(n)],
        "name": [f"<b>企业{i}</b>" for i in range(n)],
        "permit_class": rng.choice(["重点管理", "简化管理", "登记管理", ""], n),
        "industry": rng.choice(["化工", "印染", "餐饮"], n),
        "attrs": [{} for _ in range(n)],
    }, geometry=shapely.points(xy), crs="EPSG:4490")
    gen = Generation(next(_GENERATIONS), "2026-01-01T00:00:00Z", ("entities",))
    return Snapshot(gen, {"entities": frame})


@pytest.mark.parametrize("n", [1, 37, 20_000])
def test_every_entity_in_exactly_one_tile_per_band(n):
    snap = snapshot(n)
    order = display.entity_order(snap)
    geoms = snap["entities"].geometry.values[order]
    x, y = np.round(shapely.get_x(geoms), 5), np.round(shapely.get_y(geoms), 5)
    index = display.entity_index(snap)
    assert index["count"] == n and len(index["bands"]) == len(display.ENTITY_BANDS)
    for band, listed in zip(display.ENTITY_BANDS, index["bands"], strict=True):
        tiles = display.entity_tiles(snap, band)
        assert listed["tiles"] == {k: t["count"] for k, t in tiles.items()}
        tx, ty = display.mercator_tile(x, y, band.tile_zoom)
        expected = pd.Series(1, index=[f"{a}_{b}" for a, b in zip(tx, ty, strict=True)])
        expected = expected.groupby(level=0).sum().to_dict()
        assert {k: t["count"] for k, t in tiles.items()} == expected  # each entity in its tile
        seen = []
        for key, t in tiles.items():
            pos = np.cumsum(t["points"]["pos"]).astype(int)
            bins = t["bins"]["n"]
            assert len(pos) + sum(bins) == t["count"]
            assert all(b >= 2 for b in bins)  # a lone entity is sent as itself
            assert len(t["points"]["s"]) == len(t["points"]["i"]) == len(pos)
            assert len(t["points"]["xy"]) == 2 * len(pos) and len(t["bins"]["xy"]) == 2 * len(bins)
            pxy = np.cumsum(np.asarray(t["points"]["xy"]).reshape(-1, 2), axis=0) / t["scale"]
            if len(pos):
                assert np.allclose(pxy[:, 0], x[pos]) and np.allclose(pxy[:, 1], y[pos])
                px, py = display.mercator_tile(pxy[:, 0], pxy[:, 1], band.tile_zoom)
                assert {f"{a}_{b}" for a, b in zip(px, py, strict=True)} == {key}
                permits = [t["permit"][s] for s in t["points"]["s"]]
                assert permits == snap["entities"]["permit_class"].iloc[order[pos]].tolist()
            if bins:  # a bin's mean position lies in its tile too
                bxy = np.cumsum(np.asarray(t["bins"]["xy"]).reshape(-1, 2), axis=0) / t["scale"]
                bx, by = display.mercator_tile(bxy[:, 0], bxy[:, 1], band.tile_zoom)
                assert {f"{a}_{b}" for a, b in zip(bx, by, strict=True)} == {key}
            seen.extend(pos.tolist())
        assert len(seen) == len(set(seen))  # no entity twice
        total = sum(t["count"] for t in tiles.values())
        assert total == n
        if not band.bin_zoom:  # the finest band: every entity as itself
            assert sorted(seen) == list(range(n))


def test_city_band_does_not_grow_with_the_entities():
    small, large = snapshot(2_000), snapshot(60_000)
    first = display.ENTITY_BANDS[0]

    def size(snap):
        return sum(len(display.compact_json(t))
                   for t in display.entity_tiles(snap, first).values())

    assert size(large) < 3 * size(small)
    assert size(large) < 30_000
    # The finest band holds every entity (it is fetched per view, never whole).
    assert sum(t["count"] for t in display.entity_tiles(large, display.ENTITY_BANDS[-1]).values()) \
        == 60_000


def test_bands_cover_every_zoom():
    assert [b.index for b in display.ENTITY_BANDS] == list(range(len(display.ENTITY_BANDS)))
    zooms = [b.max_zoom for b in display.ENTITY_BANDS]
    assert zooms == sorted(zooms) and zooms[-1] >= 30
    assert display.entity_band_for_zoom(7).index == 0
    assert display.entity_band_for_zoom(40) is display.ENTITY_BANDS[-1]
    assert display.ENTITY_BANDS[-1].bin_zoom == 0


def grids_snapshot(width_deg: float, n: int = 50) -> Snapshot:
    """n square grids of `width_deg` side by side."""
    geoms = [shapely.box(120.5 + i * width_deg, 32.0, 120.5 + (i + 1) * width_deg,
                         32.0 + width_deg) for i in range(n)]
    frame = gpd.GeoDataFrame({"code": [str(i) for i in range(n)]}, geometry=geoms,
                             crs="EPSG:4490")
    gen = Generation(next(_GENERATIONS), "2026-01-01T00:00:00Z", ("grids",))
    return Snapshot(gen, {"grids": frame})


def test_grids_drawn_from_the_band_where_they_are_legible():
    # At zoom 9 a pixel is ~0.0027° of longitude: 8 px ≈ 0.022°.
    assert display.grid_min_level(grids_snapshot(0.05), 9) == 0  # ~5 km grids: city view
    assert display.grid_min_level(grids_snapshot(0.016), 9) == 1  # ~1.6 km (the sample)
    assert display.grid_min_level(grids_snapshot(0.004), 9) == 2  # ~400 m (×16)
    hidden = display.empty_layer("grids", 0)
    assert hidden["count"] == 0 and hidden["geoms"] == [] and hidden["format"] == display.FORMAT


def test_the_legend_and_control_say_when_grids_appear():
    from ui import mapview
    from ui.mapdata import MapData

    config = mapview.map_config(MapData("k", "b/", "", 10, 1, ("entities.b1.1_2.json",), 14))
    grids = next(spec for spec in config["layers"] if spec["name"] == "grids")
    assert "放大后显示" in grids["title"] and config["gridMinZoom"] == 14
    assert config["labels"]["gridHint"] == "放大后显示网格"
    assert "entities.b1.1_2.json" in config["prefetch_files"]
    assert "entities.index.json" in config["prefetch_files"]
    assert "entities.json" not in config["prefetch_files"]
    shown = mapview.map_config(MapData("k", "b/", "", 10, 1, (), 0))
    assert next(s for s in shown["layers"] if s["name"] == "grids")["title"] == "网格"


def test_a_big_layer_per_tile_has_every_feature_where_it_is():
    snap = grids_snapshot(0.004, n=400)
    snap.layers["grids"] = snap["grids"].assign(
        name=lambda f: "网格" + f["code"], kind="comprehensive", township_code="t",
        attrs=[{"community": f"社区{i % 7}"} for i in range(400)])
    snap.layers["townships"] = pd.DataFrame({"code": ["t"], "name": ["<b>镇</b>"]})
    snap.layers["counties"] = pd.DataFrame({"code": [], "name": []})
    level = 2
    zoom = display.LAYER_TILE_ZOOM[level]
    tiles = display.layer_tiles(snap, "grids", level)
    where: dict[str, set[str]] = {}
    for key, t in tiles.items():
        assert t["format"] == display.FORMAT and t["count"] == len(t["geoms"])
        assert len(t["props"]["c"]) == t["count"]
        for i, code in enumerate(t["props"]["c"]):
            where.setdefault(code, set()).add(key)
            assert t["dicts"]["m"][t["props"]["m"][i]] == f"社区{int(code) % 7}"
    assert set(where) == set(snap["grids"]["code"])  # every grid in some tile
    for code, keys in where.items():  # in every tile its box (with the margin) touches
        minx, miny, maxx, maxy = snap["grids"].geometry.values[int(code)].bounds
        m = display.TILE_MARGIN
        x0, y1 = display.mercator_tile(np.array([minx - m]), np.array([miny - m]), zoom)
        x1, y0 = display.mercator_tile(np.array([maxx + m]), np.array([maxy + m]), zoom)
        assert keys == {f"{x}_{y}" for x in range(x0[0], x1[0] + 1)
                        for y in range(y0[0], y1[0] + 1)}
    index = display.tiled_index("grids", level, tiles)
    assert index["count"] == 0 and index["tiled"] == {"zoom": zoom, "tiles": sorted(tiles)}

"""The face raster (layers/faces.py) answers exactly as the finder does: for random points, for
every vertex of every routing polygon (on a boundary), and for points a hair beside them — in
both stores and on the Nantong sample."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.affinity

from grids.resolver import Resolver
from grids.routing import Router
from layers import faces as faces_mod
from layers.faces import FaceIndex
from layers.finder import Queries
from layers.schema import ROUTING_LAYERS
from layers.store import open_store


def boundary_points(snapshot, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the routing polygons and points beside them (1e-9° and a few metres off,
    both ways) and on their edges' midpoints."""
    xy = np.concatenate([
        shapely.get_coordinates(shapely.boundary(np.asarray(snapshot[n].geometry.values)))
        for n in ROUTING_LAYERS if len(snapshot[n])
    ])
    rng = np.random.default_rng(seed)
    if len(xy) > limit:
        xy = xy[rng.choice(len(xy), limit, replace=False)]
    mid = (xy[:-1] + xy[1:]) / 2  # of consecutive vertices: mostly the middle of an edge
    beside = [xy + rng.normal(0, scale, xy.shape) for scale in (1e-9, 1e-7, 3e-5)]
    pts = np.concatenate([xy, mid, *beside])
    return pts[:, 0], pts[:, 1]


def answers(resolver: Resolver, lon, lat, faces: bool, radius=None) -> list:
    resolver.use_faces = faces
    resolver.forget()
    results, index = resolver.resolve_indexed(Queries.build(lon, lat, radius))
    return [results[i].outcomes for i in index.tolist()]


def check_same(resolver: Resolver, lon, lat, radius=None) -> None:
    with_faces = answers(resolver, lon, lat, True, radius)
    finder_only = answers(resolver, lon, lat, False, radius)
    wrong = [i for i, (a, b) in enumerate(zip(with_faces, finder_only, strict=True)) if a != b]
    assert not wrong, (f"{len(wrong)} of {len(lon)} points differ, e.g. "
                       f"({lon[wrong[0]]:.10f}, {lat[wrong[0]]:.10f})")


def test_faces_agree_with_the_finder(router: Router, monkeypatch):
    monkeypatch.setattr(faces_mod, "MIN_BATCH", 1000)
    snap = router.snapshot
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(3)
    lon = rng.uniform(minx - 0.05, maxx + 0.05, 6_000)
    lat = rng.uniform(miny - 0.05, maxy + 0.05, 6_000)
    blon, blat = boundary_points(snap, 400, seed=4)
    lon, lat = np.concatenate([lon, blon]), np.concatenate([lat, blat])
    # non-finite input goes the finder's way, as before
    lon[:3] = np.nan
    check_same(router.resolver, lon, lat)
    # with accuracy discs among them (those stay with the store's finder)
    radius = np.zeros(len(lon))
    radius[-200:] = 25.0
    check_same(router.resolver, lon, lat, radius)
    router.resolver.use_faces = True


def test_single_routes_by_the_raster_are_the_finders(router: Router):
    """Once the raster is built (a served process builds or reads it before it listens) a
    single route takes it too: the whole answer — outcome, candidates, names, reasons — is the
    one the store's finder gives, for points anywhere, on and beside every kind of boundary,
    outside, and with an accuracy disc; and most points never reach the finder."""
    snap = router.snapshot
    FaceIndex.for_snapshot(snap, router.resolver.finder)
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(12)
    lon = rng.uniform(minx - 0.05, maxx + 0.05, 400)
    lat = rng.uniform(miny - 0.05, maxy + 0.05, 400)
    blon, blat = boundary_points(snap, 120, seed=13)
    lon, lat = np.concatenate([lon, blon]).tolist(), np.concatenate([lat, blat]).tolist()
    resolver = router.resolver
    calls = []
    found = resolver.finder.find

    def counting(queries):
        calls.append(len(queries))
        return found(queries)

    def routes(faces: bool, accuracy: float = 0.0, n: int | None = None) -> list:
        resolver.use_faces = faces
        resolver.forget()
        return [router.route(x, y, "cgcs2000", accuracy)
                for x, y in zip(lon[:n], lat[:n], strict=True)]

    try:
        resolver.finder.find = counting
        by_raster = routes(True)
        calls.clear()
        by_finder = routes(False)
        assert by_raster == by_finder
        assert len(calls) >= len(lon)
        calls.clear()
        resolver.use_faces = True
        for x, y in zip(lon[:400], lat[:400], strict=True):  # random: most away from any edge
            router.route(x, y, "cgcs2000")
        assert len(calls) < 400 / 3, f"{len(calls)} of 400 random single points reached a finder"
        assert {a["status"] for a in by_raster} >= {"ok", "outside"}
        # A disc is cut by the store's finder either way.
        assert routes(True, 30.0, 150) == routes(False, 30.0, 150)
    finally:
        del resolver.finder.find
        resolver.use_faces = True


def test_every_vertex_is_near_and_most_of_the_area_is_not(router: Router):
    index = FaceIndex.for_snapshot(router.snapshot, router.resolver.finder)
    snap = router.snapshot
    xy = np.concatenate([
        shapely.get_coordinates(shapely.boundary(np.asarray(snap[n].geometry.values)))
        for n in ROUTING_LAYERS if len(snap[n])
    ])
    assert (index.lookup(xy[:, 0], xy[:, 1]) == -1).all()
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(minx, maxx, 50_000), rng.uniform(miny, maxy, 50_000)
    by_raster = (index.lookup(lon, lat) >= 0).mean()
    assert by_raster > 0.8, f"only {by_raster:.0%} of random points answered by the raster"
    # far outside: the face of "no polygon here"
    far = index.lookup(np.array([minx - 5.0]), np.array([miny - 5.0]))
    assert index.sets[int(far[0])] == tuple(() for _ in ROUTING_LAYERS)


@pytest.fixture(scope="module")
def sample_router(sample_store):
    store = open_store(str(sample_store))
    yield Router(store)
    store.close()


def test_faces_agree_on_the_sample(sample_router: Router, monkeypatch):
    monkeypatch.setattr(faces_mod, "MIN_BATCH", 1000)
    snap = sample_router.snapshot
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(6)
    lon, lat = rng.uniform(minx, maxx, 40_000), rng.uniform(miny, maxy, 40_000)
    blon, blat = boundary_points(snap, 1_200, seed=7)
    check_same(sample_router.resolver, np.concatenate([lon, blon]),
               np.concatenate([lat, blat]))
    sample_router.resolver.use_faces = True


def test_a_large_file_is_assigned_through_the_raster(sample_router: Router, tmp_path,
                                                     monkeypatch):
    """`assign_file` builds the raster for a large file and every chunk uses it: the output is
    the finder's, byte for byte."""
    import pandas as pd

    from grids import batch

    snap = sample_router.snapshot
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(8)
    blon, blat = boundary_points(snap, 300, seed=9)
    n = 6000 - len(blon)
    src = tmp_path / "in.csv"
    pd.DataFrame({
        "编号": [f"TS{i}" for i in range(6000)],
        "经度": np.concatenate([rng.uniform(minx, maxx, n), blon]).round(9),
        "纬度": np.concatenate([rng.uniform(miny, maxy, n), blat]).round(9),
    }).to_csv(src, index=False)
    resolver = sample_router.resolver
    FaceIndex._cache.clear()
    monkeypatch.setattr(batch, "FACES_FROM_BYTES", 0)
    batch.assign_file(sample_router, src, tmp_path / "faces.csv", crs="wgs84", chunk_rows=1000)
    assert FaceIndex.built(snap)
    resolver.use_faces = False
    try:
        batch.assign_file(sample_router, src, tmp_path / "finder.csv", crs="wgs84",
                          chunk_rows=1000)
    finally:
        resolver.use_faces = True
    assert (tmp_path / "faces.csv").read_bytes() == (tmp_path / "finder.csv").read_bytes()


def test_every_boundary_point_is_near_even_on_a_cell_side(sample_router: Router):
    """The narrow band (layers/faces._mark) holds the raster's one promise: the cell of any point
    of a boundary is marked — points along every edge, and the points where edges cross the
    raster's cell sides (where rounding may put a point in either cell) — on the sample, whose
    edges run every way."""
    index = FaceIndex.for_snapshot(sample_router.snapshot, sample_router.resolver.finder)
    snap = sample_router.snapshot
    segments = []
    for n in ROUTING_LAYERS:
        if not len(snap[n]):
            continue
        for ring in shapely.get_parts(shapely.boundary(np.asarray(snap[n].geometry.values))):
            xy = shapely.get_coordinates(ring)
            segments.append(np.hstack([xy[:-1], xy[1:]]))
    seg = np.concatenate(segments)
    rng = np.random.default_rng(11)
    t = rng.uniform(0, 1, (len(seg), 4))
    along_x = seg[:, [0]] + t * (seg[:, [2]] - seg[:, [0]])
    along_y = seg[:, [1]] + t * (seg[:, [3]] - seg[:, [1]])
    assert (index.lookup(along_x.ravel(), along_y.ravel()) == -1).all()
    # Every cell an edge passes through, however little of it (a corner clipped between two
    # vertices of the densified boundary): the points where the edge crosses cell sides, and the
    # middle of each piece between two crossings.
    pieces = [np.zeros(len(seg)), np.ones(len(seg))]
    owners = [np.arange(len(seg)), np.arange(len(seg))]
    for a, c, origin in ((0, 2, index.x0), (1, 3, index.y0)):
        lo = np.floor((np.minimum(seg[:, a], seg[:, c]) - origin) / index.cell) + 1
        hi = np.floor((np.maximum(seg[:, a], seg[:, c]) - origin) / index.cell)
        count = np.maximum(hi - lo + 1, 0).astype(np.int64)
        owner = np.repeat(np.arange(len(seg)), count)
        k = lo[owner] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        side = origin + k * index.cell
        pieces.append((side - seg[owner, a]) / (seg[owner, c] - seg[owner, a]))
        owners.append(owner)
    t, owner = np.concatenate(pieces), np.concatenate(owners)
    order = np.lexsort((t, owner))
    t, owner = t[order], owner[order]
    same = owner[1:] == owner[:-1]
    mid = (t[1:] + t[:-1])[same] / 2
    t, owner = np.concatenate([t, mid]), np.concatenate([owner, owner[1:][same]])
    lon = seg[owner, 0] + t * (seg[owner, 2] - seg[owner, 0])
    lat = seg[owner, 1] + t * (seg[owner, 3] - seg[owner, 1])
    assert len(lon) > 10 * len(seg)
    assert (index.lookup(lon, lat) == -1).all()


def _fresh(snapshot, finder) -> FaceIndex:
    """The raster as a new process gets it (nothing in memory)."""
    FaceIndex._cache.clear()
    return FaceIndex.for_snapshot(snapshot, finder)


def test_a_new_process_reads_the_raster_its_first_one_built(sample_router: Router, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    snap, finder = sample_router.snapshot, sample_router.resolver.finder
    built = _fresh(snap, finder)
    assert not built.loaded
    files = list((tmp_path / "faces").glob("faces-*.npz"))
    assert len(files) == 1 and FaceIndex.fingerprint(snap) in files[0].name
    loaded = _fresh(snap, finder)
    assert loaded.loaded
    assert loaded.sets == built.sets and loaded._empty == built._empty
    assert np.array_equal(loaded.cell_face, built.cell_face)
    assert (loaded.x0, loaded.y0, loaded.cell) == (built.x0, built.y0, built.cell)
    minx, miny, maxx, maxy = snap["counties"].total_bounds
    rng = np.random.default_rng(12)
    lon, lat = rng.uniform(minx - 0.1, maxx + 0.1, 50_000), rng.uniform(miny - 0.1, maxy + 0.1,
                                                                        50_000)
    assert np.array_equal(loaded.lookup(lon, lat), built.lookup(lon, lat))
    FaceIndex._cache.clear()


def test_a_damaged_or_foreign_raster_file_is_never_used(sample_router: Router, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    snap, finder = sample_router.snapshot, sample_router.resolver.finder
    built = _fresh(snap, finder)
    path = next((tmp_path / "faces").glob("faces-*.npz"))
    whole = path.read_bytes()
    # cut short (a killed writer cannot leave this — it renames — but a full disk or a copy can)
    path.write_bytes(whole[: len(whole) // 2])
    again = _fresh(snap, finder)
    assert not again.loaded and path.exists() and path.read_bytes() != whole[: len(whole) // 2]
    assert again.sets == built.sets
    # a file of other polygons under this name (or a hand-edited one): its key does not match
    other = dict(np.load(path))
    other["key"] = np.array("0" * 40)
    np.savez(path, **other)
    assert not _fresh(snap, finder).loaded
    # faces it does not hold
    other = dict(np.load(path))
    other["cell_face"] = other["cell_face"].copy()
    other["cell_face"][0, 0] = len(built.sets) + 5
    np.savez(path, **other)
    assert not _fresh(snap, finder).loaded
    FaceIndex._cache.clear()


def test_other_polygons_make_another_raster(sample_router: Router):
    snap = sample_router.snapshot
    moved = snap["grids"].copy()
    moved.loc[moved.index[0], "geometry"] = shapely.affinity.translate(
        moved.geometry.iloc[0], 1e-7, 0)
    layers = dict(snap.layers)
    layers["grids"] = moved
    changed = type(snap)(snap.generation, layers)
    assert FaceIndex.fingerprint(changed) != FaceIndex.fingerprint(snap)
    reordered = dict(snap.layers)
    reordered["grids"] = snap["grids"].iloc[::-1]
    assert FaceIndex.fingerprint(type(snap)(snap.generation, reordered)) \
        != FaceIndex.fingerprint(snap)


def test_no_cache_folder_or_an_unwritable_one_only_costs_the_build(sample_router: Router,
                                                                   tmp_path, monkeypatch):
    snap, finder = sample_router.snapshot, sample_router.resolver.finder
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", "off")
    assert not _fresh(snap, finder).loaded
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(blocked))
    assert not _fresh(snap, finder).loaded
    assert not _fresh(snap, finder).loaded  # nothing could be kept
    FaceIndex._cache.clear()


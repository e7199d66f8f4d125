"""The embedded and the PostGIS store give the same answers, and PostGIS behaves as a
production database: migrations, concurrent imports, rollback."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest
import shapely

from geo.china_offsets import wgs84_to_bd09, wgs84_to_gcj02
from grids.routing import Router
from layers.finder import Queries
from layers.importer import import_path
from layers.postgis import INLINE_LIMIT, migrate
from layers.problems import ImportFailed
from layers.store import open_store
from tests import world
from tests.conftest import STORES, gridmap_exe


@pytest.fixture(scope="module")
def both(new_store, world_dir):
    routers = {}
    for kind in ("gpkg", "postgis"):
        store = new_store(kind)
        import_path(store, world_dir)
        routers[kind] = Router(store)
    return routers


def comparable(answer: dict) -> dict:
    out = dict(answer)
    out["version"] = answer["version"]["generation"]
    return out


def test_single_routes_are_identical(both):
    rng = np.random.default_rng(11)
    randoms = zip(rng.uniform(120.45, 121.05, 150), rng.uniform(31.95, 32.25, 150), strict=True)
    points = [*world.P.values(), *randoms]
    for i, (lon, lat) in enumerate(points):
        acc = (0.0, 25.0, 400.0, 3000.0)[i % 4]
        a = both["gpkg"].route(float(lon), float(lat), accuracy_m=acc)
        b = both["postgis"].route(float(lon), float(lat), accuracy_m=acc)
        assert comparable(a) == comparable(b), (lon, lat, acc)


@pytest.mark.parametrize("crs,convert", [("gcj02", wgs84_to_gcj02), ("bd09", wgs84_to_bd09)])
def test_offset_inputs_are_identical(both, crs, convert):
    for lon, lat in world.P.values():
        x, y = convert(lon, lat)
        a = both["gpkg"].route(float(x), float(y), crs=crs, accuracy_m=50)
        b = both["postgis"].route(float(x), float(y), crs=crs, accuracy_m=50)
        assert comparable(a) == comparable(b)


def test_batches_are_identical_through_copy(both):
    # More locations than the inline limit: PostGIS takes the COPY + set-based join path.
    rng = np.random.default_rng(5)
    n = 5000
    lon = np.concatenate([rng.uniform(120.45, 121.05, n), [120.7, 120.6, 120.62]])
    lat = np.concatenate([rng.uniform(31.95, 32.25, n), [32.1, 32.1, 32.05]])
    radius = np.where(rng.random(len(lon)) < 0.05, 500.0, 0.0)
    queries = Queries.build(lon, lat, radius)
    tables = [
        r.writer.frame(*r.resolver.resolve_indexed(queries)).drop(columns="generation")
        for r in (both["gpkg"], both["postgis"])
    ]
    assert tables[0].equals(tables[1])
    assert {"ok", "ambiguous", "outside"} <= set(tables[0]["status"])


def test_point_on_a_seam_between_routing_parts_is_inside(both):
    """PostGIS cuts big polygons into parts; a point on a cut is inside, not on an edge."""
    conn = both["postgis"].resolver.finder.store.conn
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ST_AsBinary(ST_Boundary(a.geom)), ST_AsBinary(ST_Boundary(b.geom)), "
            "ST_AsBinary(ST_Boundary(c.geom)) FROM routing_parts a JOIN routing_parts b "
            "ON a.fid = b.fid AND a.layer = b.layer AND a.ctid < b.ctid "
            "AND ST_Length(ST_Intersection(ST_Boundary(a.geom), ST_Boundary(b.geom))) > 0 "
            "JOIN counties c ON c.fid = a.fid WHERE a.layer = 0 LIMIT 1"
        )
        a, b, c = (shapely.from_wkb(bytes(g)) for g in cur.fetchone())
    seam = shapely.difference(shapely.intersection(a, b), c.buffer(1e-9))
    point = shapely.line_interpolate_point(shapely.get_geometry(seam, 0), 0.5, normalized=True)
    answers = [r.route(point.x, point.y) for r in (both["gpkg"], both["postgis"])]
    assert comparable(answers[0]) == comparable(answers[1])
    assert answers[1]["county"] is not None


def test_db_init_is_repeatable(pg_cluster):
    url = pg_cluster.new_database("t_migrate")
    cmd = [gridmap_exe(), "--store", url, "db", "init"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0 and "0001_layers" in first.stdout
    assert second.returncode == 0 and "最新" in second.stdout
    assert migrate(url) == []


def test_uninitialised_database_is_a_clear_error(pg_cluster):
    url = pg_cluster.new_database("t_empty")
    out = subprocess.run([gridmap_exe(), "--store", url, "layers"], capture_output=True, text=True)
    assert out.returncode == 2 and "gridmap db init" in out.stderr


@pytest.mark.parametrize("kind", STORES)
def test_concurrent_imports_do_not_interleave(kind, new_store, world_dir, tmp_path):
    """Two imports checked against the same generation: the second to commit is refused
    (its check is stale) instead of committing over the first, and says so."""
    store = new_store(kind)
    import_path(store, world_dir)
    variants = []
    for k in range(2):
        d = tmp_path / f"v{k}"
        d.mkdir()
        workers = world.layers()["workers"]
        workers["name"] = f"版本{k}"
        workers.to_csv(d / "workers.csv", index=False)
        grids = world.layers()["grids"]
        grids["name"] = f"版本{k}"
        grids.to_file(d / "grids.geojson", driver="GeoJSON")
        variants.append(d)
    errors = []

    def run(d):
        s = open_store(store.url)
        try:
            import_path(s, d)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    # Both check against generation 1 before either commits: hold the commits until both
    # checks are done.
    barrier = threading.Barrier(2, timeout=60)
    real_commit = type(store).commit_layers

    def commit_after_both_checked(self, *args, **kwargs):
        barrier.wait()
        return real_commit(self, *args, **kwargs)

    type(store).commit_layers = commit_after_both_checked
    try:
        threads = [threading.Thread(target=run, args=(d,)) for d in variants]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        type(store).commit_layers = real_commit
    assert len(errors) == 1 and "已被他人更新" in str(errors[0])
    assert "未写入" in str(errors[0])
    store.clear_cache()
    gens = store.generations()
    assert [g.id for g in gens] == [1, 2]
    snap = store.snapshot(2)  # the generation holds one import whole, never a mix
    names = set(snap["workers"]["name"]) | set(snap["grids"]["name"])
    assert len(names) == 1


def test_failed_import_rolls_back_in_postgis(new_store, world_dir, tmp_path):
    store = new_store("postgis")
    import_path(store, world_dir)
    bad = tmp_path / "bad"
    bad.mkdir()
    workers = world.layers()["workers"]
    workers.loc[0, "grid_code"] = "nonexistent"
    workers.to_csv(bad / "workers.csv", index=False)
    with pytest.raises(ImportFailed):
        import_path(store, bad)
    # A write that fails inside the database (a foreign key) is rolled back as a whole too.
    workers = world.layers()["workers"]
    frames = {"workers": workers.assign(attrs=[{}] * len(workers))}
    frames["workers"].loc[0, "grid_code"] = "nonexistent"
    from layers.store import StoreError

    with pytest.raises(StoreError, match="回滚"):
        store.commit_layers(frames)
    store.clear_cache()
    assert [g.id for g in store.generations()] == [1]
    assert "nonexistent" not in set(store.snapshot()["workers"]["grid_code"])


def test_one_router_serves_many_threads(new_store, world_dir):
    """A server shares one router (and its PostGIS connections) between threads: concurrent
    single routes, small and large batches all answer as they do one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    store = new_store("postgis")
    import_path(store, world_dir)
    router = Router(open_store(store.url))
    points = list(world.P.values()) * 4
    alone = [router.route(*p)["status"] for p in points]
    many = np.array([p for p in world.P.values()] * 200)  # over the inline limit: COPY path
    assert len(many) > INLINE_LIMIT

    def batch() -> int:
        results = router.resolver.resolve(Queries.build(many[:, 0], many[:, 1]))
        return len(results)

    with ThreadPoolExecutor(8) as pool:
        routed = list(pool.map(lambda p: router.route(*p)["status"], points * 5))
        sizes = [f.result() for f in [pool.submit(batch) for _ in range(3)]]
    assert routed == alone * 5
    assert sizes == [len(many)] * 3

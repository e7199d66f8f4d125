"""Shared fixtures. Every routing, import and batch test runs against both stores: the
embedded GeoPackage and a real PostGIS server (started by the test session, see tests/pg.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from grids.routing import Router
from layers.importer import import_path
from layers.store import open_store
from tests import world

ROOT = Path(__file__).resolve().parent.parent
STORES = ["gpkg", "postgis"]


@pytest.fixture(scope="session", autouse=True)
def cache_folder_of_the_run(tmp_path_factory):
    """Face rasters (layers/faces.py) are cached in a folder of this test process (servers and
    commands the tests start inherit it), never in the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("gridmap-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("GRIDMAP_CACHE_DIR", str(folder))
    yield folder
    patch.undo()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def world_password_hashed_once():
    """Every account of the test worlds has tests/signin.PASSWORD: its scrypt hash (production
    parameters, a real hash) is made once per test process and given to each of them, instead of
    0.09 s of scrypt per account (hundreds a run). Any other password, and every check at
    sign-in, is hashed for real; servers started by the tests hash for themselves."""
    from grids import accounts
    from tests.signin import PASSWORD

    real = accounts.hash_password
    known = real(PASSWORD)
    patch = pytest.MonkeyPatch()
    patch.setattr(accounts, "hash_password",
                  lambda password: known if password == PASSWORD else real(password))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostGIS cluster, or the server named by GRIDMAP_TEST_DATABASE_URL."""
    url = os.environ.get("GRIDMAP_TEST_DATABASE_URL")
    if url:
        yield ExternalServer(url)
        return
    from tests.pg import Cluster

    cluster = Cluster().start()
    yield cluster
    cluster.stop()


class ExternalServer:
    """An existing server: each store gets a database of its own in it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def new_database(self, name: str, template: str | None = None) -> str:
        from tests.pg import create_database

        return create_database(self.url, name, template)


@pytest.fixture(scope="session")
def new_store(tmp_path_factory, pg_cluster):
    """A factory of empty stores of a kind: new_store("gpkg") or new_store("postgis")."""
    from layers.postgis import migrate

    opened = []
    template: list[str] = []  # a database migrated once; each PostGIS store starts as its copy

    def make(kind: str):
        if kind == "gpkg":
            path = tmp_path_factory.mktemp("store") / "gridmap.gpkg"
            store = open_store(str(path), create=True)
        else:
            if not template:
                name = f"t_migrated_{uuid.uuid4().hex[:8]}"
                migrate(pg_cluster.new_database(name))
                template.append(name)
            url = pg_cluster.new_database(f"t_{uuid.uuid4().hex[:12]}", template=template[0])
            store = open_store(url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    return world.write(tmp_path_factory.mktemp("world") / "files")


@pytest.fixture(scope="session", params=STORES)
def world_store(request, new_store, world_dir):
    store = new_store(request.param)
    import_path(store, world_dir)
    return store


@pytest.fixture(scope="session")
def router(world_store) -> Router:
    return Router(world_store)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The Nantong sample store, built once by the real `gridmap demo` command."""
    base = tmp_path_factory.mktemp("sample")
    store = base / "gridmap.gpkg"
    subprocess.run(
        [gridmap_exe(), "--store", str(store), "demo", "--out", str(base / "files")],
        check=True,
        capture_output=True,
        text=True,
    )
    return store


def gridmap_exe() -> str:
    exe = Path(sys.executable).with_name("gridmap")
    return str(exe) if exe.exists() else shutil.which("gridmap") or "gridmap"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright. Missing, it is a failure, never a skip: the
    test command installs it."""
    from tests.browser import chromium_missing, launch

    why = chromium_missing()
    if why:
        pytest.fail(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


# The longest files first (longest processing time first: the two test processes of
# scripts/test.sh then end together, not one of them alone on a long file). Measured on the
# 2-core machine (sum of each file's test durations, `pytest --durations=0`, 2026-12-03); a
# file not named runs after these, in collection order. scripts/test.sh turns off xdist's own
# reordering (by number of tests), which would undo this.
_LONGEST_FIRST = (
    "test_console_browser.py", "test_faces.py", "test_roles_browser.py", "test_api.py",
    "test_batch_stream.py", "test_versions.py", "test_scale.py", "test_fuzz.py",
    "test_phone_browser.py", "test_checks_browser.py", "test_planner_browser.py",
    "test_multiprocess.py", "test_dispatch_browser.py", "test_intake_page.py",
    "test_browser.py", "test_production.py", "test_accounts.py", "test_conformance.py",
    "test_cli_messages.py", "test_cli.py", "test_map_tiles_browser.py", "test_planner_page.py",
    "test_hostile_import.py", "test_demo.py", "test_map_clicks_browser.py",
    "test_stats_browser.py", "test_import.py", "test_readme.py", "test_access.py",
)
_RANK = {name: i for i, name in enumerate(_LONGEST_FIRST)}


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: _RANK.get(item.path.name, len(_RANK)))  # stable within a file

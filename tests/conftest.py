"""Shared fixtures: the hand-drawn world imported into a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from grids.routing import Router
from layers.importer import import_path
from layers.store import open_store
from tests import world

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    return world.write(tmp_path_factory.mktemp("world") / "files")


@pytest.fixture(scope="session")
def world_store(tmp_path_factory, world_dir):
    store = open_store(str(tmp_path_factory.mktemp("store") / "world.gpkg"), create=True)
    import_path(store, world_dir)
    yield store
    store.close()


@pytest.fixture(scope="session")
def router(world_store) -> Router:
    return Router(world_store)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The Nantong sample store, built once by the real `gridmap demo` command."""
    import subprocess

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
    import shutil
    import sys

    exe = Path(sys.executable).with_name("gridmap")
    return str(exe) if exe.exists() else shutil.which("gridmap") or "gridmap"

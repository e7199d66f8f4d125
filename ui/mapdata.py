"""The map's data files: display layers written once per generation under static/cache/, which
Streamlit serves at /app/static/cache/ (server.enableStaticServing), so the browser fetches and
caches them instead of receiving them with every script run.

A directory per (store, generation, datum) holds, in the formats of layers/display.py:
  {layer}.{level}.json   polygon layers per zoom band
  entities.json          every entity's position, permit class and industry (for clustering)
  entities.{k}.json      details of chunk k (name, credit code, address, grid, workers)
  grid_workers.json      grid code → workers and phones (for grid tooltips)
  incidents-{hash}.json  open incidents (they change without a new generation), times as
                         Beijing time text, with the time limit of their step and overdue
The first zoom band, the entity positions and the workers are written before the page is
served; the other bands and the entity details follow in a background thread (the browser
retries a file that is not there yet).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grids.portfolio import entity_assignment
from grids.routing import Router
from layers import display
from ui.assets import STATIC_DIR, STATIC_URL
from ui.basemap import Basemap
from ui.cards import beijing_text

CACHE_DIR = STATIC_DIR / "cache"
KEEP_DIRS = 8  # older generations' directories beyond this many are removed
_LOCK = threading.Lock()
_DONE: dict[str, threading.Event] = {}
_AUDIENCE: dict[str, str] = {}  # incidents file name -> the audience it was written for


@dataclass(frozen=True)
class MapData:
    key: str
    base_url: str  # relative to the map iframe
    incidents_file: str  # file name inside base_url, "" when there are none
    entity_count: int
    entity_chunks: int


def _write(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(display.compact_json(data))
    os.replace(tmp, path)  # readers never see half a file


def data_key(store_url: str, router: Router, basemap: Basemap) -> str:
    g = router.snapshot.generation
    text = f"{store_url}|{g.id}|{g.created_at}|{basemap.datum}|{display.FORMAT}|{display.LEVELS}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def audience(actor) -> str:
    """Who an incidents file is for: everyone who reads all cases, or one role's own scope."""
    from grids.access import scope

    if scope(actor, "case.read") == "all":
        return "all"
    return f"{actor.role}:{actor.bureau_code or actor.worker_id}"


def audience_of(name: str) -> str | None:
    """The audience an incidents file was written for (None: not written by this process)."""
    with _LOCK:
        return _AUDIENCE.get(name)


def publish(store_url: str, router: Router, basemap: Basemap,
            incidents: pd.DataFrame | None = None, background: bool = True,
            audience: str = "all") -> MapData:
    """Write the map's data files for this generation and datum (once), and the incidents file
    for the current incidents; returns where the browser finds them."""
    snap = router.snapshot
    key = data_key(store_url, router, basemap)
    folder = CACHE_DIR / key
    shift = basemap.to_display if basemap.shifted else None
    with _LOCK:
        first = key not in _DONE or not (folder / "entities.json").exists()
        if first:
            folder.mkdir(parents=True, exist_ok=True)
            _ignore_cache_dir()
            for name in display.POLYGON_DISPLAY_LAYERS:
                _write(folder / f"{name}.0.json",
                       display.encode_layer(snap, name, 0, shift, basemap.datum))
            _write(folder / "entities.json", display.encode_entities(snap, shift, basemap.datum))
            _write(folder / "grid_workers.json", display.grid_workers(snap))
            done = _DONE[key] = threading.Event()
            _prune(keep=key)
    if first:
        rest = threading.Thread(target=_publish_rest, args=(folder, router, shift, basemap.datum,
                                                             done), daemon=True)
        rest.start()
        if not background:
            rest.join()
    incidents_file = _incidents(folder, incidents, shift, audience)
    return MapData(key, f"{STATIC_URL}cache/{key}/", incidents_file, len(snap["entities"]),
                   display.entity_chunks(snap))


def wait_published(key: str, timeout: float = 60.0) -> bool:
    """Block until the background part of `publish` for `key` is written (tests, benchmarks)."""
    event = _DONE.get(key)
    return event.wait(timeout) if event else False


def _publish_rest(folder: Path, router: Router, shift, datum: str, done: threading.Event) -> None:
    snap = router.snapshot
    try:
        for level in display.LEVELS[1:]:
            for name in display.POLYGON_DISPLAY_LAYERS:
                _write(folder / f"{name}.{level.index}.json",
                       display.encode_layer(snap, name, level, shift, datum))
        assignment = entity_assignment(router) if len(snap["entities"]) else None
        for chunk in range(display.entity_chunks(snap)):
            _write(folder / f"entities.{chunk}.json", {
                "columns": display.ENTITY_DETAIL_COLUMNS,
                "rows": display.entity_details(snap, assignment, chunk),
            })
    finally:
        done.set()


INCIDENT_FIELDS = ("id", "reported_at", "source", "category_zh", "status", "status_zh",
                   "description", "grid", "deadline")
# Shown as Beijing time to the minute (the store keeps ISO 8601, often UTC "…Z").
INCIDENT_TIMES = ("reported_at", "deadline")


def _texts(incidents: pd.DataFrame, col: str) -> list[str]:
    if col not in incidents:
        return [""] * len(incidents)
    if col in INCIDENT_TIMES:
        return [beijing_text(v) for v in incidents[col].tolist()]
    return incidents[col].fillna("").astype(str).tolist()


def _incidents(folder: Path, incidents: pd.DataFrame | None, shift, audience: str) -> str:
    if incidents is None or not len(incidents):
        return ""
    lon = incidents["lon"].to_numpy(float)
    lat = incidents["lat"].to_numpy(float)
    if shift is not None:
        lon, lat = shift(lon, lat)
    data = {"count": len(incidents), "x": [round(float(v), 6) for v in lon],
            "y": [round(float(v), 6) for v in lat]}
    for col in INCIDENT_FIELDS:
        data[col] = _texts(incidents, col)
    # Past the time limit of its current step (as grids/cases.case_list computes it): "1".
    overdue = incidents["overdue"].tolist() if "overdue" in incidents else [False] * len(incidents)
    data["overdue"] = ["1" if not pd.isna(v) and bool(v) else "" for v in overdue]
    body = display.compact_json(data)
    # The audience is part of the name: two audiences never share a file.
    digest = hashlib.sha256(body + audience.encode()).hexdigest()[:16]
    name = f"incidents-{digest}.json"
    with _LOCK:
        _AUDIENCE[name] = audience
    path = folder / name
    if not path.exists():
        tmp = path.with_name(f".{name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
    return name


def _ignore_cache_dir() -> None:
    marker = CACHE_DIR / ".gitignore"
    if not marker.exists():
        marker.write_text("# generated map data (ui/mapdata.py)\n*\n")


def _prune(keep: str) -> None:
    dirs = sorted((p for p in CACHE_DIR.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in dirs[KEEP_DIRS:]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
            _DONE.pop(old.name, None)

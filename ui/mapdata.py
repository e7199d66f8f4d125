"""The map's data files: display layers written once per generation under static/cache/, which
Streamlit serves at /app/static/cache/ (server.enableStaticServing), so the browser fetches and
caches them instead of receiving them with every script run.

A directory per (store, generation, datum) holds, in the formats of layers/display.py:
  {layer}.{level}.json   polygon layers per zoom band; a big grid layer at the finer bands is
                         an index of its tiles, {layer}.{level}.{tx}_{ty}.json
  entities.index.json    per entity zoom band (layers/display.py ENTITY_BANDS) its non-empty
                         tiles and their counts
  entities.b{band}.{tx}_{ty}.json  the entities of one web-mercator tile of a band: counts per
                         square bin (and lone entities) in the city bands, every entity in the
                         finest — the browser fetches the tiles in view, never all entities
  entities.{k}.json      details of chunk k (name, credit code, address, grid, workers)
  grid_workers.json      grid code → workers and phones (for grid tooltips)
  incidents-{audience}-{hash}.json  open incidents (they change without a new generation),
                         times as Beijing time text, with the time limit of their step and
                         overdue; {audience} is `audience_tag` of who it was written for
The first zoom band, the entity index, the tiles of the entity band of the city view and the
workers are written before the page is served; the other bands and the entity details follow
in a background thread (the browser retries a file that is not there yet). Grids too small to
see at a band's zooms are not in its file (display.grid_min_level).

Several app processes on one machine share the directory (README, *Production: more than one
process*): every file is written under a name of its own and renamed into place, the same
content whoever writes it, and who may fetch an incidents file is read from its name — any
process can answer for a file another one wrote. `complete.json`, written last, says the
directory is whole: a process that finds it uses the directory as it is (`warm`: the served
processes write it before they listen, one after the other).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
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
KEEP_DIRS = 8  # older generations' directories beyond this many are removed…
KEEP_RECENT_S = 3600  # …unless written within the hour: another process may still serve it
COMPLETE = "complete.json"  # written last: the directory is whole (any process may use it)
_LOCK = threading.Lock()
_DONE: dict[str, threading.Event] = {}
# key → (the files of the city view's entity band, the zoom the grids are drawn from)
_FIRST: dict[str, tuple[tuple[str, ...], int]] = {}


@dataclass(frozen=True)
class MapData:
    key: str
    base_url: str  # relative to the map iframe
    incidents_file: str  # file name inside base_url, "" when there are none
    entity_count: int
    entity_chunks: int
    entity_first: tuple[str, ...] = ()  # the tiles of the entity band of the city view
    grid_min_zoom: int = 0  # the grids are drawn from this zoom on


def _write(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(display.compact_json(data))
    os.replace(tmp, path)  # readers never see half a file


def data_key(store_url: str, router: Router, basemap: Basemap) -> str:
    g = router.snapshot.generation
    text = (f"{store_url}|{g.id}|{g.created_at}|{basemap.datum}|{display.FORMAT}|{display.LEVELS}"
            f"|{display.ENTITY_TILE_FORMAT}|{display.ENTITY_BANDS}|{display.GRID_MIN_PIXELS}"
            f"|{display.TILED_LAYER_MIN}|{display.LAYER_TILE_ZOOM}|{display.TILE_MARGIN}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def audience(actor) -> str:
    """Who an incidents file is for: everyone who reads all cases, or one role's own scope."""
    from grids.access import scope

    if scope(actor, "case.read") == "all":
        return "all"
    return f"{actor.role}:{actor.bureau_code or actor.worker_id}"


def audience_tag(audience: str) -> str:
    """The part of an incidents file's name that says whom it is for."""
    return hashlib.sha256(f"gridmap incidents for {audience}".encode()).hexdigest()[:16]


def written_for(name: str, audience: str) -> bool:
    """Whether the incidents file `name` was written for `audience` (read from the name, so
    any app process can tell, whichever wrote it)."""
    parts = name.removesuffix(".json").split("-")
    return (len(parts) == 3 and parts[0] == "incidents" and name.endswith(".json")
            and parts[1] == audience_tag(audience))


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
        if key not in _DONE:
            _adopt_complete(key, folder)
        first = (key not in _DONE or key not in _FIRST
                 or not (folder / "entities.index.json").exists())
        if first:
            folder.mkdir(parents=True, exist_ok=True)
            _ignore_cache_dir()
            for name in display.POLYGON_DISPLAY_LAYERS:
                _write(folder / f"{name}.0.json",
                       _layer(snap, name, display.LEVELS[0], shift, basemap.datum))
            city_band = city_entity_band(snap)
            _write_entity_band(folder, snap, city_band, shift, basemap.datum)
            # Kept here: the display cache is busy (and locked) while the rest is written.
            _FIRST[key] = (tuple(entity_tile_name(city_band.index, t) for t in
                                 display.entity_tiles(snap, city_band, shift, basemap.datum)),
                           grid_min_zoom(snap))
            # The index last: the browser asks only for the tiles it names.
            _write(folder / "entities.index.json", display.entity_index(snap, shift, basemap.datum))
            _write(folder / "grid_workers.json", display.grid_workers(snap))
            done = _DONE[key] = threading.Event()
            _prune(keep=key)
    if first:
        rest = threading.Thread(target=_publish_rest, args=(folder, router, shift, basemap.datum,
                                                             done, _FIRST[key]), daemon=True)
        rest.start()
        if not background:
            rest.join()
    incidents_file = _incidents(folder, incidents, shift, audience)
    first_files, min_zoom = _FIRST[key]
    # Counted, not read: a process that finds the files written reads no entity at all.
    return MapData(key, f"{STATIC_URL}cache/{key}/", incidents_file, snap.count("entities"),
                   display.entity_chunks(snap), first_files, min_zoom)


def grid_min_level(snap) -> int:
    """The first zoom band that draws the grids (layers/display.grid_min_level)."""
    from ui.mapview import view_for_bbox

    return display.grid_min_level(snap, view_for_bbox(display.city_bounds(snap))[1])


def grid_min_zoom(snap) -> int:
    level = grid_min_level(snap)
    return 0 if level == 0 else display.LEVELS[level - 1].max_zoom + 1


def _layer(snap, name: str, level, shift, datum: str) -> dict:
    if name == "grids" and level.index < grid_min_level(snap):
        return display.empty_layer(name, level)  # too small to see here: drawn from a finer band
    return display.encode_layer(snap, name, level, shift, datum)


def city_entity_band(snap) -> display.EntityBand:
    """The entity band of the zoom the city map opens at (ui/mapview.build_map)."""
    from ui.mapview import view_for_bbox  # the map view imports this module

    return display.entity_band_for_zoom(view_for_bbox(display.city_bounds(snap))[1])


def entity_tile_name(band: int, tile: str) -> str:
    return f"entities.b{band}.{tile}.json"


def _write_entity_band(folder: Path, snap, band, shift, datum: str) -> None:
    for tile, data in display.entity_tiles(snap, band, shift, datum).items():
        _write(folder / entity_tile_name(band.index, tile), data)


def wait_published(key: str, timeout: float = 60.0) -> bool:
    """Block until the background part of `publish` for `key` is written (tests, benchmarks)."""
    event = _DONE.get(key)
    return event.wait(timeout) if event else False


def _adopt_complete(key: str, folder: Path) -> None:
    """A directory another process (or this one before a restart) wrote whole: used as it is
    (its COMPLETE file says what the first part would have computed), not written again."""
    try:
        info = json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
        first, min_zoom = tuple(info["entity_first"]), int(info["grid_min_zoom"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not (folder / "entities.index.json").exists():
        return
    done = threading.Event()
    done.set()
    _DONE[key], _FIRST[key] = done, (first, min_zoom)


def warm(store_url: str, router: Router, basemap: Basemap) -> MapData:
    """The whole directory written before the app process listens (ui/server.warm_up): app
    processes started together take turns (a lock file), and all but the first find it
    complete. Without it each process wrote every zoom band and tile again in the background
    while its first visitors waited (22 s of CPU at 16× the sample)."""
    import fcntl

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".publish.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return publish(store_url, router, basemap, None, background=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _publish_rest(folder: Path, router: Router, shift, datum: str, done: threading.Event,
                  first_part: tuple[tuple[str, ...], int]) -> None:
    snap = router.snapshot
    try:
        for level in display.LEVELS[1:]:
            for name in display.POLYGON_DISPLAY_LAYERS:
                if (name == "grids" and level.index in display.LAYER_TILE_ZOOM
                        and level.index >= grid_min_level(snap)
                        and len(snap[name]) > display.TILED_LAYER_MIN):
                    # Too many to send whole: per tile, the browser fetches those in view.
                    tiles = display.layer_tiles(snap, name, level, shift, datum)
                    for tile, data in tiles.items():
                        _write(folder / f"{name}.{level.index}.{tile}.json", data)
                    _write(folder / f"{name}.{level.index}.json",
                           display.tiled_index(name, level, tiles))
                    continue
                _write(folder / f"{name}.{level.index}.json",
                       _layer(snap, name, level, shift, datum))
        first = city_entity_band(snap)
        for band in display.ENTITY_BANDS:
            if band != first:
                _write_entity_band(folder, snap, band, shift, datum)
        assignment = entity_assignment(router) if len(snap["entities"]) else None
        for chunk in range(display.entity_chunks(snap)):
            _write(folder / f"entities.{chunk}.json", {
                "columns": display.ENTITY_DETAIL_COLUMNS,
                "rows": display.entity_details(snap, assignment, chunk),
            })
        # Last, and only when everything above was written: other processes may use it as is.
        _write(folder / COMPLETE, {"entity_first": list(first_part[0]),
                                   "grid_min_zoom": first_part[1]})
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
    digest = hashlib.sha256(body).hexdigest()[:16]
    name = f"incidents-{audience_tag(audience)}-{digest}.json"
    path = folder / name
    if not path.exists():
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
    return name


def _ignore_cache_dir() -> None:
    marker = CACHE_DIR / ".gitignore"
    if not marker.exists():
        marker.write_text("# generated map data (ui/mapdata.py)\n*\n")


def _prune(keep: str, now: float | None = None) -> None:
    dirs = sorted((p for p in CACHE_DIR.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    cutoff = (time.time() if now is None else now) - KEEP_RECENT_S
    for old in dirs[KEEP_DIRS:]:
        if old.name != keep and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
            _DONE.pop(old.name, None)
            _FIRST.pop(old.name, None)

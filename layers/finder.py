"""Spatial lookup for routing: which polygons of which layer a batch of locations touches.

A location is a point with an accuracy radius in metres (0 = exact). For each (location, polygon)
pair that touch, a finder reports whether the polygon covers the location (the point lies in its
interior, or the accuracy disc lies inside it) or only reaches it at an edge; for edge hits of a
disc it also gives the part of the disc inside the polygon, which the resolver needs to list the
candidates. Stores implement this contract: the in-memory finder below (STRtrees over one
snapshot) and the PostGIS finder (one SQL statement); the resolver on top is shared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import shapely

from layers.schema import ROUTING_LAYERS
from layers.store import Snapshot


@dataclass
class Queries:
    lon: np.ndarray
    lat: np.ndarray
    radius: np.ndarray  # metres; 0 means an exact position
    discs: np.ndarray  # accuracy discs in lon/lat (the Point itself where radius is 0)

    def __len__(self) -> int:
        return len(self.lon)

    @classmethod
    def build(cls, lon, lat, radius=None) -> Queries:
        from geo.disc import accuracy_discs

        lon = np.atleast_1d(np.asarray(lon, dtype=float))
        lat = np.atleast_1d(np.asarray(lat, dtype=float))
        radius = (
            np.zeros(len(lon))
            if radius is None
            else np.broadcast_to(np.asarray(radius, dtype=float), lon.shape).copy()
        )
        radius[~np.isfinite(radius) | (radius < 0)] = 0.0
        discs = np.empty(len(lon), dtype=object)
        wide = radius > 0
        if wide.any():
            discs[wide] = accuracy_discs(lon[wide], lat[wide], radius[wide])
        return cls(lon, lat, radius, discs)

    def subset(self, index: np.ndarray) -> Queries:
        return Queries(self.lon[index], self.lat[index], self.radius[index], self.discs[index])


@dataclass
class Hits:
    """Flat arrays, one entry per (location, polygon) pair that touch."""

    layer: np.ndarray  # index into ROUTING_LAYERS
    query: np.ndarray  # index into the Queries
    row: np.ndarray  # positional row of the layer in the snapshot
    edge: np.ndarray  # True: touches the location without covering it
    parts: dict[int, object] = field(default_factory=dict)  # hit index -> disc ∩ polygon

    @classmethod
    def concat(cls, pieces: list[Hits]) -> Hits:
        if not pieces:
            empty = np.array([], dtype=np.int64)
            return cls(empty.astype(np.int8), empty, empty, empty.astype(bool))
        parts: dict[int, object] = {}
        offset = 0
        for piece in pieces:
            parts.update({offset + k: v for k, v in piece.parts.items()})
            offset += len(piece.query)
        return cls(
            np.concatenate([p.layer for p in pieces]).astype(np.int8),
            np.concatenate([p.query for p in pieces]),
            np.concatenate([p.row for p in pieces]),
            np.concatenate([p.edge for p in pieces]),
            parts,
        )


class MemoryFinder:
    """STRtree per routing layer, built once per snapshot; polygons prepared for fast tests."""

    _cache: ClassVar[dict[tuple[str, int], MemoryFinder]] = {}

    def __init__(self, snapshot: Snapshot) -> None:
        # GEOS prepared geometries are not thread-safe (libgeos/geos#825: their indexes are
        # built lazily, on first use), and shapely releases the GIL: two sessions' threads
        # testing the same polygon at once crashed the process (a segfault in `covers`). One
        # lock per finder, taken per layer, so a large batch lets a click in between layers.
        self._lock = threading.Lock()
        self.geoms: list[np.ndarray] = []
        self.trees: list[shapely.STRtree] = []
        for name in ROUTING_LAYERS:
            geoms = np.asarray(snapshot[name].geometry.values, dtype=object)
            shapely.prepare(geoms)
            self.geoms.append(geoms)
            self.trees.append(shapely.STRtree(geoms))

    @classmethod
    def for_snapshot(cls, snapshot: Snapshot) -> MemoryFinder:
        if not snapshot.shared:  # one place's, or a draft's: never shared
            return cls(snapshot)
        key = (snapshot.generation.created_at, snapshot.generation.id)
        if key not in cls._cache:
            while len(cls._cache) >= 4:  # a few generations side by side, not every one ever
                cls._cache.pop(next(iter(cls._cache)))
            cls._cache[key] = cls(snapshot)
        return cls._cache[key]

    def find(self, queries: Queries) -> Hits:
        if len(queries) == 1 and queries.radius[0] <= 0:
            return self._one_point(float(queries.lon[0]), float(queries.lat[0]))
        exact = np.flatnonzero(queries.radius <= 0)
        wide = np.flatnonzero(queries.radius > 0)
        points = shapely.points(queries.lon[exact], queries.lat[exact]) if len(exact) else None
        pieces = []
        for layer, (tree, geoms) in enumerate(zip(self.trees, self.geoms, strict=True)):
            with self._lock:
                if len(exact):
                    pieces.append(self._points(layer, tree, geoms, queries, exact, points))
                if len(wide):
                    pieces.append(self._discs(layer, tree, geoms, queries, wide))
        return Hits.concat(pieces)

    def _one_point(self, x: float, y: float) -> Hits:
        """The same relations as _points for a single point, without the array overhead."""
        point = shapely.Point(x, y)
        with self._lock:
            found = self._one_point_hits(point, x, y)
        layers, rows, edges = zip(*found, strict=True) if found else ((), (), ())
        return Hits(
            np.array(layers, dtype=np.int8),
            np.zeros(len(rows), dtype=np.int64),
            np.array(rows, dtype=np.int64),
            np.array(edges, dtype=bool),
        )

    def _one_point_hits(self, point, x: float, y: float) -> list[tuple[int, int, bool]]:
        found = []
        for layer, (tree, geoms) in enumerate(zip(self.trees, self.geoms, strict=True)):
            for r in tree.query(point).tolist():
                if shapely.contains_xy(geoms[r], x, y):
                    edge = False
                elif shapely.intersects_xy(geoms[r], x, y):
                    edge = True
                else:
                    continue
                found.append((layer, r, edge))
        return found

    @staticmethod
    def _points(layer, tree, geoms, queries: Queries, which: np.ndarray, points) -> Hits:
        x, y = queries.lon[which], queries.lat[which]
        qi, ri = tree.query(points)
        inside = shapely.contains_xy(geoms[ri], x[qi], y[qi])
        # A point on a boundary is contained by neither side: keep it as an edge hit.
        outside = np.flatnonzero(~inside)
        touch = shapely.intersects_xy(geoms[ri[outside]], x[qi[outside]], y[qi[outside]])
        keep = inside.copy()
        keep[outside[touch]] = True
        return Hits(
            np.full(int(keep.sum()), layer, dtype=np.int8),
            which[qi[keep]],
            ri[keep],
            ~inside[keep],
        )

    @staticmethod
    def _discs(layer, tree, geoms, queries: Queries, which: np.ndarray) -> Hits:
        discs = queries.discs[which]
        qi, ri = tree.query(discs, predicate="intersects")
        covers = shapely.covers(geoms[ri], discs[qi])
        parts = {
            int(k): shapely.intersection(geoms[ri[k]], discs[qi[k]])
            for k in np.flatnonzero(~covers)
        }
        return Hits(np.full(len(qi), layer, dtype=np.int8), which[qi], ri, ~covers, parts)

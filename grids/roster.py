"""Who works where, indexed once per snapshot: the roster's rows by worker and by grid, each
grid's township and its row in the grids layer. Every page of a grid worker asks these (their
units, their colleagues, the people of each unit, whose phones they may see); scanning the
whole roster for each answer cost a phone page tens of milliseconds on the sample city and
grows with the province's roster, while these lookups cost the same for 5,000 rows as for
160,000.

An index belongs to one snapshot object and is made the first time it is asked for (kept by a
weak reference: a snapshot let go takes its index with it)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layers.store import Snapshot

_NONE = np.zeros(0, dtype=np.intp)


@dataclass(frozen=True)
class Roster:
    workers: pd.DataFrame  # the snapshot's roster layer (one row per person and grid)
    by_worker: dict[str, np.ndarray]  # worker id (text) -> positions in `workers`
    by_grid: dict[str, np.ndarray]  # grid code -> positions in `workers`
    grid_row: dict[str, int]  # grid code -> position in the snapshot's grids layer
    township_of_grid: dict[str, str]  # grid code -> township code
    grids_of_township: dict[str, tuple[str, ...]]  # township code -> grid codes

    def of_worker(self, worker_id: str) -> pd.DataFrame:
        """The roster rows of one person (their grids and roles), in roster order."""
        return self.workers.iloc[self.by_worker.get(str(worker_id), _NONE)]

    def of_grids(self, codes: Iterable[str]) -> pd.DataFrame:
        """The roster rows of these grids, in roster order."""
        return self.workers.iloc[self._positions(self.by_grid, codes)]

    def people_of_grids(self, codes: Iterable[str]) -> list[tuple[str, str, str, str, str]]:
        """(id, name, role, phone, grid code) of each roster row of these grids, in roster
        order, as text (missing values ""): plain tuples, for a page that lists a few people."""
        rows = self._positions(self.by_grid, codes)
        if not len(rows):
            return []
        # Taken from the roster's own columns (text kept once per version, not again here).
        taken = [self.workers[c].take(rows).fillna("").astype(str).tolist()
                 for c in ("id", "name", "role", "phone", "grid_code")]
        return list(zip(*taken, strict=True))

    def workers_of_grids(self, codes: Iterable[str]) -> frozenset[str]:
        """The ids of everyone on the roster of these grids."""
        rows = self._positions(self.by_grid, codes)
        return frozenset(self.workers["id"].iloc[rows].astype(str))

    def grids_in_townships_of(self, codes: Iterable[str]) -> set[str]:
        """Every grid of the townships these grids lie in."""
        towns = {self.township_of_grid[c] for c in codes if c in self.township_of_grid}
        return {g for t in towns for g in self.grids_of_township.get(t, ())}

    def grid_positions(self, codes: Iterable[str]) -> np.ndarray:
        """Positions in the grids layer of these codes (unknown codes left out), ascending."""
        return np.array(sorted({self.grid_row[c] for c in codes if c in self.grid_row}),
                        dtype=np.intp)

    @staticmethod
    def _positions(index: dict[str, np.ndarray], keys: Iterable[str]) -> np.ndarray:
        parts = [index[k] for k in dict.fromkeys(str(k) for k in keys) if k in index]
        return np.sort(np.concatenate(parts)) if parts else _NONE


_KEPT: dict[int, tuple[weakref.ref, Roster]] = {}
_LOCK = threading.Lock()


def roster(snapshot: Snapshot) -> Roster:
    """The index of this snapshot (made once; later calls return the same object)."""
    with _LOCK:
        hit = _KEPT.get(id(snapshot))
        if hit is not None and hit[0]() is snapshot:
            return hit[1]
    made = _build(snapshot)
    with _LOCK:
        for key in [k for k, (ref, _) in _KEPT.items() if ref() is None]:
            del _KEPT[key]  # snapshots gone since: their indexes go too
        _KEPT[id(snapshot)] = (weakref.ref(snapshot), made)
    return made


def _groups(keys: np.ndarray) -> dict[str, np.ndarray]:
    if not len(keys):
        return {}
    order = np.argsort(keys, kind="stable")  # stable: each group keeps roster order
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    return {str(ordered[s]): order[s:e] for s, e in zip(starts, ends, strict=True)}


def _build(snapshot: Snapshot) -> Roster:
    workers = snapshot["workers"]
    grids = snapshot["grids"]
    ids = workers["id"].astype(str).to_numpy(dtype=object) if len(workers) else np.zeros(0, object)
    codes = (workers["grid_code"].astype(str).to_numpy(dtype=object) if len(workers)
             else np.zeros(0, object))
    grid_codes = grids["code"].astype(str).tolist()
    towns = grids["township_code"].fillna("").astype(str).tolist()
    grids_of_township: dict[str, list[str]] = {}
    for code, town in zip(grid_codes, towns, strict=True):
        grids_of_township.setdefault(town, []).append(code)
    return Roster(
        workers=workers,
        by_worker=_groups(ids),
        by_grid=_groups(codes),
        grid_row={c: i for i, c in enumerate(grid_codes)},
        township_of_grid=dict(zip(grid_codes, towns, strict=True)),
        grids_of_township={t: tuple(c) for t, c in grids_of_township.items()},
    )

"""One interface for stores (like pygeoapi's providers).

A store keeps every layer versioned by *generation* (as MapIt does): each import or edit makes a
new generation; a row carries the first and last generation it belongs to (`gen_from`,
`gen_to`, NULL while current), so any past generation can be read back exactly and an answer
can be reproduced with the layers it was given with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

DEFAULT_STORE = Path(__file__).resolve().parent.parent / "data" / "gridmap.gpkg"


class StoreError(RuntimeError):
    """A store that cannot be opened or used; the message is for the user (Chinese)."""


@dataclass(frozen=True)
class Generation:
    id: int
    created_at: str  # ISO 8601, UTC
    layers: tuple[str, ...]  # the layers this generation replaced or edited
    note: str = ""
    source: str = ""

    def as_dict(self) -> dict:
        return {"generation": self.id, "created_at": self.created_at}


@dataclass
class Snapshot:
    """Every layer as of one generation. Spatial layers are GeoDataFrames in EPSG:4490 with a
    `fid` column (the store's row id) and an `attrs` column (dict of the extra attributes)."""

    generation: Generation
    layers: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.layers[name]

    def counts(self) -> dict[str, int]:
        return {name: len(df) for name, df in self.layers.items()}


class CandidateFinder(Protocol):
    """Finds, for a batch of locations, every polygon of every routing layer they touch."""

    def find(self, queries) -> object: ...


class Store(Protocol):
    url: str

    def generations(self) -> list[Generation]:
        """All generations, oldest first."""
        ...

    def snapshot(self, generation: int | None = None) -> Snapshot:
        """Every layer as of `generation` (default: the current one)."""
        ...

    def commit_layers(
        self, layers: dict[str, pd.DataFrame], *, note: str = "", source: str = ""
    ) -> Generation:
        """Replace the given layers in one transaction; returns the new generation."""
        ...

    def finder(self, snapshot: Snapshot) -> CandidateFinder:
        """The spatial lookup for routing against `snapshot`."""
        ...

    def close(self) -> None: ...


def store_url(explicit: str | None = None) -> str:
    """The store to use: --store, then GRIDMAP_STORE, then DATABASE_URL, then the default file."""
    return (
        explicit
        or os.environ.get("GRIDMAP_STORE")
        or os.environ.get("DATABASE_URL")
        or str(DEFAULT_STORE)
    )


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str | None = None, *, create: bool = False) -> Store:
    """Open the store at `url` (a GeoPackage path or a postgresql:// URL)."""
    url = store_url(url)
    if is_postgres_url(url):
        from layers.postgis import PostgisStore

        return PostgisStore(url)
    from layers.embedded import GeoPackageStore

    return GeoPackageStore(Path(url), create=create)

"""What a dispatcher needs within a minute of a call: who is responsible, whether the category
goes to a partner agency instead, which supervised entities nearby are the likely sources, and
which open cases nearby may be the same matter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np
import pandas as pd
import shapely

from geo.disc import accuracy_disc, distance_m, distance_to_geometry_m
from grids.acting import Acting
from grids.flow import Category, load_categories
from grids.routing import Router
from layers.store import IncidentQuery

NEARBY_RADIUS_M = 1000.0
DUPLICATE_RADIUS_M = 1000.0
DUPLICATE_DAYS = 7
PERMIT_ORDER = {"重点管理": 0, "简化管理": 1, "登记管理": 2}


@dataclass
class IntakeAnswer:
    route: dict
    category: Category
    referral: str | None  # the partner agency when the category is not the eco bureau's
    nearby: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicates: pd.DataFrame = field(default_factory=pd.DataFrame)


class EntityIndex:
    """Supervised entities of one snapshot, for 'what is near this point'."""

    _cache: ClassVar[dict[tuple[int, str], EntityIndex]] = {}

    def __init__(self, entities: pd.DataFrame) -> None:
        self.entities = entities
        self.tree = shapely.STRtree(np.asarray(entities.geometry.values, dtype=object))

    @classmethod
    def of(cls, router: Router) -> EntityIndex:
        gen = router.snapshot.generation
        key = (gen.id, gen.created_at)
        if key not in cls._cache:
            cls._cache.clear()  # one generation at a time is what the intake page shows
            cls._cache[key] = cls(router.snapshot["entities"])
        return cls._cache[key]

    def near(self, lon: float, lat: float, radius_m: float, limit: int = 30) -> pd.DataFrame:
        hits = self.tree.query(accuracy_disc(lon, lat, radius_m), predicate="intersects")
        found = self.entities.iloc[np.sort(hits)]
        if found.empty:
            return pd.DataFrame(
                columns=[
                    "id",
                    "name",
                    "industry",
                    "permit_class",
                    "inspection_class",
                    "distance_m",
                    "lon",
                    "lat",
                ]
            )
        xs, ys = found.geometry.x.to_numpy(), found.geometry.y.to_numpy()
        out = pd.DataFrame(
            {
                "id": found["id"].to_numpy(),
                "name": found["name"].to_numpy(),
                "industry": found["industry"].to_numpy(),
                "permit_class": found["permit_class"].to_numpy(),
                "inspection_class": [a.get("inspection_class", "") for a in found["attrs"]],
                "distance_m": np.round(distance_m(lon, lat, xs, ys), 0),
                "lon": xs,
                "lat": ys,
            }
        )
        return out.sort_values(["distance_m", "id"]).head(limit).reset_index(drop=True)


def possible_duplicates(
    store,
    lon: float,
    lat: float,
    *,
    category: str | None = None,
    radius_m: float = DUPLICATE_RADIUS_M,
    days: int = DUPLICATE_DAYS,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Open cases within radius_m reported in the last `days`, same category first (the store
    filters by state, time and box; only the few it returns are measured here)."""
    now = now or datetime.now(UTC)
    columns = [
        "id",
        "reported_at",
        "category",
        "category_zh",
        "description",
        "status",
        "status_zh",
        "distance_m",
        "same_category",
        "lon",
        "lat",
    ]
    recent = store.query_incidents(IncidentQuery(
        not_statuses=("closed",), reported_since=(now - timedelta(days=days)).isoformat(),
        near=(lon, lat, radius_m)))
    if recent.empty:
        return pd.DataFrame(columns=columns)
    dist = np.round(distance_m(lon, lat, recent["lon"].to_numpy(), recent["lat"].to_numpy()), 0)
    same = recent["category"].to_numpy() == category
    order = np.lexsort((dist, ~same))  # same category first, then nearest
    out = {c: recent[c].to_numpy()[order] for c in columns
           if c not in ("distance_m", "same_category")}
    out["distance_m"], out["same_category"] = dist[order], same[order]
    return pd.DataFrame(out, columns=columns)


def intake(
    router: Router,
    acting: Acting,
    x: float,
    y: float,
    *,
    crs: str = "wgs84",
    accuracy_m: float = 0.0,
    category: str = "other",
    nearby_radius_m: float = NEARBY_RADIUS_M,
    now: datetime | None = None,
) -> IntakeAnswer:
    acting.require("case.create")
    cat, referral = _category(category)
    route = router.route(x, y, crs, accuracy_m)
    lon, lat = route["point"]["cgcs2000"]
    _refer(route, cat, referral)
    radius = max(nearby_radius_m, accuracy_m)
    return IntakeAnswer(
        route=route,
        category=cat,
        referral=referral,
        nearby=EntityIndex.of(router).near(lon, lat, radius),
        duplicates=possible_duplicates(
            acting.store,
            lon,
            lat,
            category=category,
            radius_m=max(DUPLICATE_RADIUS_M, accuracy_m),
            now=now,
        ),
    )


def _category(key: str) -> tuple[Category, str | None]:
    categories = load_categories()
    if key not in categories:
        raise ValueError(f"未知的事件类别：{key}")
    cat = categories[key]
    return cat, (cat.agency_zh if cat.handler == "partner" else None)


def _refer(route: dict, cat: Category, referral: str | None) -> None:
    if referral:
        route["reasons"].insert(0, f"事件类别“{cat.label_zh}”：{cat.note_zh or '移交' + referral}")


def intake_extent(
    router: Router, acting: Acting, extent, *, crs: str = "wgs84", category: str = "other",
    now: datetime | None = None,
) -> tuple[IntakeAnswer, object]:
    """The intake answer for a line or an area (WKT/GeoJSON in `crs`): routed as an extent
    (cross-county → municipal bureau), with the entities and open cases within 1 km of the
    extent itself. Also returns the extent in the store CRS."""
    acting.require("case.create")
    cat, referral = _category(category)
    route = router.route_extent(extent, crs)
    _refer(route, cat, referral)
    geom = router.extent_to_store(extent, crs)
    lon, lat = route["point"]["cgcs2000"]
    coords = shapely.get_coordinates(geom)
    reach = float(distance_m(lon, lat, coords[:, 0], coords[:, 1]).max()) if len(coords) else 0.0
    # A disc around the centre that holds the whole extent and its margin, then the real
    # distance to the extent.
    near = EntityIndex.of(router).near(lon, lat, reach + NEARBY_RADIUS_M, limit=1_000_000)
    if len(near):
        dist = np.round(distance_to_geometry_m(geom, near["lon"], near["lat"]), 0)
        near = near.assign(distance_m=dist)[dist <= NEARBY_RADIUS_M]
        near = near.sort_values(["distance_m", "id"]).head(30).reset_index(drop=True)
    dups = possible_duplicates(acting.store, lon, lat, category=category,
                               radius_m=reach + DUPLICATE_RADIUS_M, now=now)
    if len(dups):
        dist = np.round(distance_to_geometry_m(geom, dups["lon"].to_numpy(float),
                                               dups["lat"].to_numpy(float)), 0)
        dups = dups.assign(distance_m=dist)[dist <= DUPLICATE_RADIUS_M]
        dups = dups.sort_values(["same_category", "distance_m"], ascending=[False, True])
        dups = dups.reset_index(drop=True)
    return IntakeAnswer(route, cat, referral, near, dups), geom

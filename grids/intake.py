"""What a dispatcher needs within a minute of a call: who is responsible, whether the category
goes to a partner agency instead, which supervised entities nearby are the likely sources, and
which open cases nearby may be the same matter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import shapely

from geo.disc import accuracy_disc, distance_m, distance_to_geometry_m
from grids.acting import Acting
from grids.flow import Category, duplicate_rule, load_categories
from grids.routing import Router, RoutingInputError
from layers.store import IncidentQuery, Store

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
    """Supervised entities, for 'what is near this point'."""

    def __init__(self, entities: pd.DataFrame) -> None:
        self.entities = entities
        self.tree = shapely.STRtree(np.asarray(entities.geometry.values, dtype=object))

    @classmethod
    def around(cls, store: Store, router: Router, lon: float, lat: float,
               radius_m: float) -> EntityIndex:
        """The entities of the router's generation near a disc, asked of the store by the
        disc's box (its spatial index): never every entity to answer one place."""
        box = tuple(shapely.bounds(accuracy_disc(lon, lat, radius_m)).tolist())
        return cls(store.entities_in(box, router.snapshot.generation.id))

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
    days: float = DUPLICATE_DAYS,
    slack_m: float = 0.0,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Open cases near a place, same category first (the store filters by state, time and
    box; only the few it returns are measured here).

    Two circles: every open case within `radius_m` reported in the last `days` is listed, and
    those of the same category within the category's own rule (duplicate_rules.csv: radius,
    window; `slack_m`, the location's accuracy, widens the radius) are `likely` — the ones the
    dispatcher must decide about before filing a new case."""
    now = now or datetime.now(UTC)
    rule = duplicate_rule(category)
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
        "likely",
        "lon",
        "lat",
    ]
    reach = max(radius_m, rule.radius_m + slack_m)
    window = max(days, rule.days)
    recent = store.query_incidents(IncidentQuery(
        not_statuses=("closed",), reported_since=(now - timedelta(days=window)).isoformat(),
        near=(lon, lat, reach)))
    if recent.empty:
        return pd.DataFrame(columns=columns)
    dist = np.round(distance_m(lon, lat, recent["lon"].to_numpy(), recent["lat"].to_numpy()), 0)
    same = recent["category"].to_numpy() == category
    reported = pd.to_datetime(recent["reported_at"].astype(str), utc=True, format="ISO8601")
    age_days = ((pd.Timestamp(now) if pd.Timestamp(now).tzinfo else
                 pd.Timestamp(now, tz="UTC")) - reported).dt.total_seconds().to_numpy() / 86400
    likely = same & (dist <= rule.radius_m + slack_m) & (age_days <= rule.days)
    shown = likely | ((dist <= radius_m) & (age_days <= days))
    order = np.lexsort((dist, ~same, ~likely))  # likely first, then same category, nearest
    order = order[shown[order]]
    out = {c: recent[c].to_numpy()[order] for c in columns
           if c not in ("distance_m", "same_category", "likely")}
    out["distance_m"], out["same_category"] = dist[order], same[order]
    out["likely"] = likely[order]
    return pd.DataFrame(out, columns=columns)


UNSTATED = "unstated"  # the caller gave numbers but not their system
READINGS = (("wgs84", "按 WGS84（GPS 原始坐标）读"), ("gcj02", "按 GCJ-02（高德/腾讯/微信坐标）读"))
_SAME_PARTS = ("county", "township", "grid", "park", "sea_area", "bureau")


def route_unstated(router: Router, x: float, y: float, accuracy_m: float = 0.0) -> dict:
    """Route lon/lat whose system was not stated. A pair from a phone may be raw GPS (WGS84)
    or from a Chinese map app (GCJ-02, shifted by up to ~500 m): read both ways. When both
    readings give the same grid and bureau the answer is that one (with both points named);
    otherwise the answer is ambiguous with each reading as a candidate — like an accuracy
    circle that spans a border."""
    if not (abs(x) <= 180 and abs(y) <= 180):
        raise RoutingInputError("投影坐标（米）必须选择坐标系，请在“坐标系”中选择")
    answers = [router.route(x, y, crs, accuracy_m) for crs, _ in READINGS]
    points = [a["point"]["cgcs2000"] for a in answers]
    apart = float(distance_m(points[0][0], points[0][1], points[1][0], points[1][1]))
    readings = [{"crs": crs, "label_zh": label, "cgcs2000": pt, "status": a["status"],
                 "grid": a.get("grid"), "bureau": a.get("bureau")}
                for (crs, label), pt, a in zip(READINGS, points, answers, strict=True)]
    first, second = answers

    def key(a: dict) -> tuple:
        return (a["status"], *((a.get(k) or {}).get("code") for k in _SAME_PARTS))

    if key(first) == key(second) and first["status"] != "ambiguous":
        out = first
        out["reasons"].insert(0, f"来电人未说明坐标系：按 WGS84 与 GCJ-02 两种读法（相距 "
                                 f"{apart:.0f} 米）归属相同，按 WGS84 读法登记。")
    else:
        out = dict(first)
        out["status"] = "ambiguous"
        out["status_zh"] = "存在歧义"
        for part in (*_SAME_PARTS, "chain"):
            same = first.get(part) == second.get(part)
            out[part] = first.get(part) if same else (None if part != "chain" else [])
        out["workers"] = first["workers"] if first.get("grid") == second.get("grid") else []
        out["co_bureaus"] = []
        cands = []
        for (_, label), a in zip(READINGS, answers, strict=True):
            own = a.get("candidates") or [a]
            for c in own:
                cand = {k: c.get(k) for k in ("county", "township", "grid", "workers", "park",
                                             "sea_area", "bureau", "chain")}
                cand["reading"] = label
                place = " ".join(c[k]["name"] for k in ("county", "township") if c.get(k))
                cand["reasons"] = [f"{label}：{place or '—'}", *c.get("reasons", [])]
                cands.append(cand)
        out["candidates"] = cands
        out["reasons"] = [f"来电人未说明坐标系：按 WGS84 与 GCJ-02 两种读法（相距 {apart:.0f} 米）"
                          "归属不同，请向来电人确认坐标来自 GPS 还是高德/腾讯/微信地图，"
                          "或在地图上单击确定。"]
    out["flags"] = [*out.get("flags", []), "crs_unstated"]
    out["readings"] = readings
    out["point"] = {**out["point"], "input": {**out["point"]["input"], "crs": UNSTATED}}
    return out


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
    route = (route_unstated(router, x, y, accuracy_m) if crs == UNSTATED
             else router.route(x, y, crs, accuracy_m))
    lon, lat = route["point"]["cgcs2000"]
    _refer(route, cat, referral)
    radius = max(nearby_radius_m, accuracy_m)
    return IntakeAnswer(
        route=route,
        category=cat,
        referral=referral,
        nearby=EntityIndex.around(acting.store, router, lon, lat, radius).near(lon, lat, radius),
        duplicates=possible_duplicates(
            acting.store,
            lon,
            lat,
            category=category,
            radius_m=max(DUPLICATE_RADIUS_M, accuracy_m),
            slack_m=accuracy_m,
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
    near = EntityIndex.around(acting.store, router, lon, lat, reach + NEARBY_RADIUS_M).near(
        lon, lat, reach + NEARBY_RADIUS_M, limit=1_000_000)
    if len(near):
        dist = np.round(distance_to_geometry_m(geom, near["lon"], near["lat"]), 0)
        near = near.assign(distance_m=dist)[dist <= NEARBY_RADIUS_M]
        near = near.sort_values(["distance_m", "id"]).head(30).reset_index(drop=True)
    # From the centre with the extent's reach as slack: a superset, then the real distance
    # to the extent (within the rule's radius of the extent ⇒ within radius + reach of its
    # centre, so nothing likely is lost).
    dups = possible_duplicates(acting.store, lon, lat, category=category,
                               radius_m=reach + DUPLICATE_RADIUS_M, slack_m=reach, now=now)
    if len(dups):
        dist = np.round(distance_to_geometry_m(geom, dups["lon"].to_numpy(float),
                                               dups["lat"].to_numpy(float)), 0)
        likely = dups["likely"].to_numpy(bool) & (dist <= duplicate_rule(category).radius_m)
        dups = dups.assign(distance_m=dist, likely=likely)
        dups = dups[(dist <= DUPLICATE_RADIUS_M) | likely]
        dups = dups.sort_values(["likely", "same_category", "distance_m"],
                                ascending=[False, False, True])
        dups = dups.reset_index(drop=True)
    return IntakeAnswer(route, cat, referral, near, dups), geom

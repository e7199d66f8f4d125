"""Sample polygon layers: townships, parks, grids, sea areas, bureaus and their jurisdictions.

Only the county polygons and the township names/codes/centres are real reference data; every
polygon drawn here is synthetic (see data/SOURCES.md).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Point, Polygon, shape
from shapely.geometry.base import BaseGeometry

from layers import demo_geom as g
from layers.demo_names import RURAL_COMMUNITY, URBAN_COMMUNITY, pick_unique

# Vertex spacing along synthetic township borders and county edges (about 150 m), so that the
# grid partition inside a township has vertices to end its edges on.
EDGE_STEP = 0.0015


@dataclass
class County:
    code: str
    name: str
    short: str  # as used in bureau names: 南通市{short}生态环境综合行政执法局
    seat: tuple[float, float]  # approximate centre of the county seat (WGS84)
    seat_km: float  # radius of the urban area around the seat
    geojson: dict[str, Any]  # geometry exactly as in the reference file
    geom: BaseGeometry = field(init=False)

    def __post_init__(self) -> None:
        self.geom = shape(self.geojson)


# Seats are approximate town centres (for placing streets and the county bureau's own area).
_COUNTY_INFO = {
    "320613": ("崇川", (120.866, 32.010), 8.0),
    "320612": ("通州", (121.073, 32.084), 5.0),
    "320614": ("海门", (121.170, 31.895), 5.0),
    "320623": ("如东", (121.186, 32.316), 5.0),
    "320681": ("启东", (121.657, 31.808), 5.0),
    "320682": ("如皋", (120.573, 32.371), 5.0),
    "320685": ("海安", (120.467, 32.533), 5.0),
}
# How many numbered bureaus (执法一局, 二局 …) each county has in the sample.
NUMBERED_BUREAUS = {
    "320613": 3, "320612": 3, "320614": 2, "320623": 4, "320681": 3, "320682": 3, "320685": 2,
}
CN_NUM = "一二三四五六七八九"


def load_counties(ref: Path) -> list[County]:
    data = json.loads((ref / "nantong_counties.geojson").read_text(encoding="utf-8"))
    out = []
    for f in data["features"]:
        code, name = f["properties"]["code"], f["properties"]["name"]
        short, seat, seat_km = _COUNTY_INFO[code]
        out.append(County(code, name, short, seat, seat_km, f["geometry"]))
    return sorted(out, key=lambda c: c.code)


# ------------------------------------------------------------------------------- townships


def build_townships(
    rng: np.random.Generator, counties: list[County], ref: Path
) -> list[dict[str, Any]]:
    """The 103 MCA townships with synthetic Voronoi polygons that exactly partition counties."""
    with (ref / "nantong_townships.csv").open(encoding="utf-8", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["code"])
    out: list[dict[str, Any]] = []
    for county in counties:
        mine = [r for r in rows if r["county_code"] == county.code]
        core = g.buffer_km(county.geom, -2.0)
        seeds: dict[str, np.ndarray] = {}
        for r in mine:
            if r["lon"]:
                p = g.nearest_inside(county.geom, float(r["lon"]), float(r["lat"]), 0.5)
                seeds[r["code"]] = np.array([p.x, p.y])
        # Streets (街道) without a known centre go to the urban area around the seat, towns
        # anywhere in the county, both as far as possible from the seeds already placed.
        seat_area = core.intersection(g.buffer_km(Point(county.seat), county.seat_km))
        for kind, area in (("街道", seat_area), ("镇", core)):
            todo = [r["code"] for r in mine if not r["lon"] and r["kind"] == kind]
            if not todo:
                continue
            fixed = np.array(list(seeds.values())) if seeds else None
            pts = g.spread_points(rng, area, len(todo), fixed=fixed, edge_weight=2.0)
            seeds.update(zip(todo, pts, strict=True))
        codes = [r["code"] for r in mine]
        region = g.densify_exact(county.geom, EDGE_STEP)
        cells = g.partition(region, np.array([seeds[c] for c in codes]), densify_deg=EDGE_STEP)
        for r, cell in zip(mine, cells, strict=True):
            if cell is None:
                raise RuntimeError(f"township {r['code']} got no area")
            out.append({
                "code": r["code"], "name": r["name"], "county_code": county.code,
                "kind_zh": r["kind"], "geometry": cell,
            })
    return out


# ----------------------------------------------------------------------------------- parks


@dataclass(frozen=True)
class ParkSpec:
    code: str
    name: str
    kind: str
    county_code: str
    centre: tuple[float, float]
    area_km2: float
    level_zh: str
    parent: str = ""  # the park this one lies in
    nbs_code: str = ""  # code of the zone in the statistics bureau's 2023 table, if any


# Centres are near the real locations (NBS bounding-box centres where the 2023 table has one),
# sizes plausible; outlines are drawn at random.
PARKS = (
    ParkSpec("P01", "南通经济技术开发区", "dev_zone_national", "320613", (120.95, 31.885), 50,
             "国家级经济技术开发区", nbs_code="320671"),
    ParkSpec("P02", "南通经济技术开发区化工园区（南区）", "chemical_park", "320613",
             (120.965, 31.865), 8, "省级化工园区", parent="P01"),
    ParkSpec("P03", "如东洋口化学工业园", "chemical_park", "320623", (121.07, 32.545), 14,
             "省级化工园区"),
    ParkSpec("P04", "如皋港化工新材料产业园", "chemical_park", "320682", (120.585, 32.065), 10,
             "省级化工园区"),
    ParkSpec("P05", "南通高新技术产业开发区", "dev_zone_national", "320612", (121.06, 32.04), 40,
             "国家级高新技术产业开发区"),
    ParkSpec("P06", "海安经济技术开发区", "dev_zone_national", "320685", (120.50, 32.525), 40,
             "国家级经济技术开发区"),
    ParkSpec("P07", "海门经济技术开发区", "dev_zone_national", "320614", (121.22, 31.885), 35,
             "国家级经济技术开发区", nbs_code="320614400"),
    ParkSpec("P08", "如皋经济技术开发区", "dev_zone_national", "320682", (120.61, 32.39), 35,
             "国家级经济技术开发区"),
    ParkSpec("P09", "启东经济开发区", "dev_zone_provincial", "320681", (121.6155, 31.81477), 22,
             "省级经济开发区", nbs_code="320681400"),
    ParkSpec("P10", "如东经济开发区", "dev_zone_provincial", "320623", (121.16061, 32.35721), 22,
             "省级经济开发区", nbs_code="320623400"),
    ParkSpec("P11", "如皋高新技术产业开发区", "dev_zone_provincial", "320682",
             (120.63184, 32.3183), 18, "省级高新技术产业开发区", nbs_code="320682401"),
    ParkSpec("P12", "海安高新技术产业开发区", "dev_zone_provincial", "320685", (120.40, 32.565), 18,
             "省级高新技术产业开发区"),
)


def build_parks(rng: np.random.Generator, counties: list[County]) -> list[dict[str, Any]]:
    """Synthetic park outlines: inside their county, not overlapping except nested ones."""
    by_code = {c.code: c for c in counties}
    done: dict[str, BaseGeometry] = {}
    out = []
    for spec in PARKS:
        county = by_code[spec.county_code]
        core = g.buffer_km(county.geom, -1.0)
        if spec.parent:
            inside = g.buffer_km(done[spec.parent], -0.3)
            centre = g.nearest_inside(inside, *spec.centre, margin_km=1.0)
        else:
            centre = g.nearest_inside(core, *spec.centre, margin_km=2.0)
            others = [geom for code, geom in done.items() if not _nested(code)]
            inside = core
            if others:
                inside = shapely.difference(core, g.buffer_km(shapely.union_all(others), 0.2),
                                            grid_size=g.GRID)
        shape_ = g.blob(rng, (centre.x, centre.y), spec.area_km2)
        geom = shapely.intersection(shape_, inside, grid_size=g.GRID)
        geom = _largest_parts(geom)
        done[spec.code] = geom
        out.append({
            "code": spec.code, "name": spec.name, "kind": spec.kind,
            "county_code": spec.county_code, "level_zh": spec.level_zh,
            "parent_code": spec.parent, "nbs_code": spec.nbs_code,
            "area_km2": round(g.km2_area(geom), 3), "geometry": geom,
        })
    return out


def _nested(code: str) -> bool:
    return any(p.code == code and p.parent for p in PARKS)


def _largest_parts(geom: BaseGeometry, keep: float = 0.05) -> BaseGeometry:
    """Drop slivers a clip left behind (parts under `keep` of the largest)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    biggest = max(p.area for p in parts)
    return shapely.multipolygons([p for p in parts if p.area >= keep * biggest])


# ----------------------------------------------------------------------------------- grids


def build_comprehensive_grids(
    rng: np.random.Generator, townships: list[dict[str, Any]], densify_deg: float | None = None
) -> list[dict[str, Any]]:
    """Comprehensive grids: an exact partition of every township, smaller in streets.
    `densify_deg` adds lattice vertices along the edges between grids (for a subdivision)."""
    out = []
    for town in townships:
        urban = town["kind_zh"] == "街道"
        geom = town["geometry"]
        area = g.km2_area(geom)
        n = max(3 if urban else 2, round(area / (1.4 if urban else 7.0)))
        seeds = g.spread_points(rng, geom, n, candidates=10)
        # Communities (社区/村): a few grids each, around spread-out centres.
        m = max(1, math.ceil(n / (4 if urban else 3)))
        centres = seeds[np.argsort(rng.random(n))[:m]]
        member = np.argmin(((g.to_xy(seeds)[:, None] - g.to_xy(centres)[None]) ** 2).sum(2), 1)
        order = sorted(range(m), key=lambda k: (-round(centres[k][1], 4), centres[k][0]))
        names = pick_unique(rng, URBAN_COMMUNITY if urban else RURAL_COMMUNITY, m)
        cells = g.partition(geom, seeds, densify_deg=densify_deg)
        for cno, k in enumerate(order, start=1):
            community = names[cno - 1] + ("社区" if urban else "村")
            idx = [i for i in range(n) if member[i] == k and cells[i] is not None]
            idx.sort(key=lambda i: (-round(seeds[i][1], 4), seeds[i][0]))
            for gno, i in enumerate(idx, start=1):
                out.append({
                    "code": f"{town['code']}{cno:03d}{gno:03d}",
                    "name": f"{community}第{gno}网格",
                    "township_code": town["code"], "kind": "comprehensive",
                    "community": community, "area_km2": round(g.km2_area(cells[i]), 3),
                    "geometry": cells[i],
                })
    return out


def township_of(townships: list[dict[str, Any]], geom: BaseGeometry) -> str:
    """The township holding most of `geom`."""
    areas = shapely.area(shapely.intersection([t["geometry"] for t in townships], geom))
    return str(townships[int(np.argmax(areas))]["code"])


def build_park_grids(
    rng: np.random.Generator, parks: list[dict[str, Any]], townships: list[dict[str, Any]],
    densify_deg: float | None = None,
) -> list[dict[str, Any]]:
    """A few park grids per park, together covering the park (`densify_deg`: as above).

    Codes: township code + "9" + two-digit park number + three-digit running number.
    """
    out = []
    for pno, park in enumerate(parks, start=1):
        # A park nested in this one (the chemical park inside its zone) has grids of its own:
        # leave it out, so that two park grids never cover the same place.
        area = park["geometry"]
        for other in parks:
            if other is not park and other["geometry"].within(park["geometry"]):
                area = _largest_parts(shapely.difference(area, other["geometry"], grid_size=g.GRID))
        n = int(np.clip(round(park["area_km2"] / 10), 2, 5))
        seeds = g.spread_points(rng, area, n, candidates=16)
        cells = [c for c in g.partition(area, seeds, densify_deg=densify_deg) if c is not None]
        for k, cell in enumerate(cells, start=1):
            town = township_of(townships, cell)
            out.append({
                "code": f"{town}9{pno:02d}{k:03d}", "name": f"{park['name']}第{k}网格",
                "township_code": town, "kind": "park", "community": park["name"],
                "area_km2": round(g.km2_area(cell), 3), "geometry": cell,
            })
    return out


def build_dedicated_grids(
    rng: np.random.Generator,
    targets: list[tuple[str, tuple[float, float], float]],
    townships: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Dedicated grids (专属网格) around (name, (lon, lat), radius km) targets.

    Codes: township code + "800" + three-digit running number within the township.
    """
    tree = shapely.STRtree([t["geometry"] for t in townships])
    per_town: dict[str, int] = {}
    out = []
    for name, (lon, lat), km in targets:
        hit = tree.query(Point(lon, lat), predicate="intersects")
        town = townships[int(hit.min())]
        shape_ = g.buffer_km(Point(lon, lat), km, quad_segs=4)
        if km > 1.0:  # larger zones get an irregular outline
            shape_ = g.blob(rng, (lon, lat), math.pi * km * km, roughness=0.15)
        geom = _largest_parts(shapely.intersection(shape_, town["geometry"], grid_size=g.GRID))
        k = per_town.get(town["code"], 0) + 1
        per_town[town["code"]] = k
        out.append({
            "code": f"{town['code']}800{k:03d}", "name": f"{name}专属网格",
            "township_code": town["code"], "kind": "dedicated", "community": "",
            "area_km2": round(g.km2_area(geom), 3), "geometry": geom,
        })
    return out


# ------------------------------------------------------------------------------- sea areas


def build_sea_areas(counties: list[County], width_km: float = 20.0) -> list[dict[str, Any]]:
    """The sea band off the coast (beyond the county polygons), split by nearest county."""
    land = shapely.coverage_union_all([c.geom for c in counties])
    by_code = {c.code: c for c in counties}
    # The coast runs from the 海安/东台 border (north) to 启东's southern tip; both ends are
    # vertices of the county data so that the cut does not touch other county edges.
    north = _extreme_vertex(by_code["320685"].geom, lambda c: c[:, 1] - 3 * (c[:, 0] < 120.97))
    south = _extreme_vertex(by_code["320681"].geom, lambda c: -c[:, 1])
    seaward = Polygon([
        north, (north[0] + 0.35, north[1] + 0.3), (123.0, north[1] + 0.3), (123.0, south[1]),
        south, (121.3, 32.0), (120.9, 32.45), north,
    ])
    ring = g.buffer_km(land, width_km)
    band = shapely.difference(shapely.intersection(ring, seaward, grid_size=g.GRID), land,
                              grid_size=g.GRID)
    # Label sample points of every county's sea-facing edge; the band goes to the nearest.
    seen: dict[tuple[float, float], str] = {}
    near = shapely.buffer(band, 1e-6)
    for c in counties:
        coast = shapely.intersection(c.geom.boundary, near)
        if coast.length < 0.005:
            continue
        for x, y in shapely.get_coordinates(shapely.segmentize(coast, 0.005)).tolist():
            seen.setdefault((x, y), c.code)  # a vertex two counties share goes to one
    allpts = np.array(list(seen))
    labels = list(seen.values())
    cells = shapely.voronoi_polygons(shapely.multipoints(g.to_xy(allpts)))
    cell_of = shapely.STRtree(list(cells.geoms))
    owner: dict[str, list[BaseGeometry]] = {}
    for p, lab in zip(g.to_xy(allpts), labels, strict=True):
        hit = cell_of.query(Point(p), predicate="intersects")
        owner.setdefault(lab, []).append(cells.geoms[int(hit.min())])
    out = []
    for code in sorted(owner):
        zone = g.from_xy_geom(shapely.union_all(owner[code]))
        sea = _largest_parts(shapely.intersection(band, zone, grid_size=g.GRID), keep=0.01)
        if g.km2_area(sea) < 5:
            continue
        out.append({
            "code": f"S{code}", "name": f"{by_code[code].name}海域", "county_code": code,
            "area_km2": round(g.km2_area(sea), 1), "geometry": sea,
        })
    return out


def _extreme_vertex(
    geom: BaseGeometry, score: Callable[[np.ndarray], np.ndarray]
) -> tuple[float, float]:
    c = shapely.get_coordinates(geom)
    x, y = c[int(np.argmax(score(c)))]
    return (float(x), float(y))


# ------------------------------------------------------------------ bureaus and jurisdictions

MUNICIPAL = "NTZF"


def build_bureaus(
    rng: np.random.Generator, counties: list[County], parks: list[dict[str, Any]]
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The bureau table and the areas of the numbered bureaus.

    A numbered bureau's area is a Voronoi cell of a few seeds in its county (so its borders
    cut across townships) minus the county seat, which stays with the county bureau itself.
    """
    bureaus = [{
        "code": MUNICIPAL, "name": "南通市生态环境综合行政执法局", "level": "municipal",
        "parent_code": "", "county_code": "", "park_code": "",
    }]
    areas = []
    for county in counties:
        cb = f"{MUNICIPAL}-{county.code}"
        bureaus.append({
            "code": cb, "name": f"南通市{county.short}生态环境综合行政执法局",
            "level": "county", "parent_code": MUNICIPAL, "county_code": county.code,
            "park_code": "",
        })
        seat = g.blob(rng, county.seat, math.pi * (county.seat_km * 0.8) ** 2, roughness=0.2)
        n = NUMBERED_BUREAUS[county.code]
        # The seat area stays with the county bureau; keep it strictly inside the county.
        seat = _largest_parts(shapely.intersection(seat, g.buffer_km(county.geom, -0.5),
                                                   grid_size=g.GRID))
        core = shapely.difference(g.buffer_km(county.geom, -3.0), seat)
        seeds = g.spread_points(rng, core, n, edge_weight=2.0)
        seeds = seeds[np.lexsort((seeds[:, 0], -seeds[:, 1]))]  # number them north to south
        cells = g.partition(county.geom, seeds, hole=seat)
        for k, cell in enumerate(cells, start=1):
            code = f"{cb}-{k}"
            name = f"南通市{county.short}生态环境综合行政执法{CN_NUM[k - 1]}局"
            bureaus.append({
                "code": code, "name": name, "level": "numbered", "parent_code": cb,
                "county_code": county.code, "park_code": "",
            })
            if cell is None:
                continue
            areas.append({"bureau_code": code, "name": name, "geometry": cell})
    for park in parks:
        if park["kind"] != "chemical_park":
            continue
        # The zone of 南通经济技术开发区 is municipal-level, so its chemical park reports to the
        # municipal bureau; the others to their county bureau.
        parent = f"{MUNICIPAL}-{park['county_code']}"
        if park["parent_code"] == "P01":
            parent = MUNICIPAL
        bureaus.append({
            "code": f"{MUNICIPAL}-P-{park['code']}",
            "name": f"{park['name']}生态环境综合行政执法局",
            "level": "park", "parent_code": parent, "county_code": park["county_code"],
            "park_code": park["code"],
        })
    return bureaus, areas

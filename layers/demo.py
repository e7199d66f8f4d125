"""The reproducible Nantong sample dataset, written in the import format of layers/schema.py.

`build_sample(out_dir)` writes every layer as GeoJSON (RFC 7946, lon/lat WGS84) or CSV. The same
seed gives byte-identical files: one seeded random generator drives everything, features are
written in code order, coordinates are on a 1e-7 degree lattice and nothing carries a timestamp.

Only the county polygons and the township names/codes (and 58 township centres) are real; all
other geometry and every name, person and number is synthetic (see data/SOURCES.md).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from layers import demo_admin as admin
from layers import demo_entities as ents
from layers import demo_geom as g
from layers import demo_scale
from layers.demo_names import mobile, person_name

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"
DEFAULT_SEED = 20200901  # the month the Nantong reform plan was issued

# Columns of every written layer, in order: the schema's required columns first.
COLUMNS: dict[str, tuple[str, ...]] = {
    "counties": ("code", "name"),
    "townships": ("code", "name", "county_code", "kind_zh"),
    "parks": ("code", "name", "kind", "county_code", "level_zh", "parent_code", "nbs_code",
              "area_km2"),
    "grids": ("code", "name", "township_code", "kind", "community", "area_km2"),
    "sea_areas": ("code", "name", "county_code", "area_km2"),
    "jurisdictions": ("bureau_code", "name"),
    "bureaus": ("code", "name", "level", "parent_code", "county_code", "park_code"),
    "workers": ("id", "name", "phone", "grid_code", "role"),
    "entities": ("id", "name", "lon", "lat", "crs", "industry", "permit_class",
                 "inspection_class", "address", "park_code", "township_code"),
    "incidents": ("id", "reported_at", "source", "category", "category_zh", "description", "lon",
                  "lat", "crs", "accuracy_m", "status", "entity_id", "history"),
}


def build_sample(out_dir: Path, seed: int = DEFAULT_SEED,
                 as_of: datetime | None = None, scale: int = 1,
                 entity_count: int | None = None) -> dict[str, int]:
    """Write the complete sample dataset into `out_dir`; returns the row count of each layer.
    Incidents are dated over the 30 days before `as_of` (default: now, to the hour).
    `scale` N > 1: N times the grids, entities and incidents (layers/demo_scale.py);
    `entity_count`: that many supervised entities instead of 10,000 × N (a province's registry
    over fewer grids)."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, not {scale}")
    if entity_count is not None and entity_count < 100:
        raise ValueError(f"entity_count must be at least 100, not {entity_count}")
    step = demo_scale.edge_step(scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    counties = admin.load_counties(REFERENCE_DIR)
    townships = admin.build_townships(rng, counties, REFERENCE_DIR)
    parks = admin.build_parks(rng, counties)
    grids = admin.build_comprehensive_grids(rng, townships, densify_deg=step)
    _check_coverage("townships", [t["geometry"] for t in townships])
    _check_coverage("grids", [x["geometry"] for x in grids])
    grids += admin.build_park_grids(rng, parks, townships, densify_deg=step)
    sea_areas = admin.build_sea_areas(counties)
    bureaus, jurisdictions = admin.build_bureaus(rng, counties, parks)
    entities = ents.build_entities(rng, counties, townships, parks,
                                   n_total=entity_count or 10_000 * scale)
    targets = ents.dedicated_targets(rng, entities, counties)
    grids += admin.build_dedicated_grids(rng, targets, townships)
    if scale > 1:
        grids = demo_scale.subdivide_grids(grids, scale)
        _check_coverage("grids", [x["geometry"] for x in grids if x["kind"] == "comprehensive"])
    grids.sort(key=lambda x: x["code"])
    workers = _workers(rng, grids, townships)
    incidents = ents.build_incidents(rng, entities, counties, townships, sea_areas,
                                     as_of=as_of, **demo_scale.incident_counts(scale))

    county_rows = [
        {"code": c.code, "name": c.name, "geometry": c.geojson} for c in counties
    ]
    layers_geo = {
        "counties": county_rows, "townships": townships, "parks": parks, "grids": grids,
        "sea_areas": sea_areas, "jurisdictions": jurisdictions,
    }
    for name, rows in layers_geo.items():
        key = COLUMNS[name][0]
        _write_geojson(out_dir / f"{name}.geojson", sorted(rows, key=lambda r: r[key]),
                       COLUMNS[name])
    for name, rows in (("bureaus", bureaus), ("workers", workers), ("entities", entities),
                       ("incidents", incidents)):
        _write_csv(out_dir / f"{name}.csv", rows, COLUMNS[name])
    counts = {name: len(rows) for name, rows in layers_geo.items()}
    counts.update(bureaus=len(bureaus), workers=len(workers), entities=len(entities),
                  incidents=len(incidents))
    return counts


def _check_coverage(layer: str, geoms: list[BaseGeometry]) -> None:
    # A seed that trips the lattice rounding must fail loudly rather than write a bad sample.
    if not shapely.coverage_is_valid(geoms):
        raise RuntimeError(f"sample {layer} do not form a clean coverage")


def _workers(
    rng: np.random.Generator, grids: list[dict[str, Any]], townships: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """One grid worker per grid; one leader per township with a row for each of its grids."""
    phones: set[str] = set()

    def phone() -> str:
        while (p := mobile(rng)) in phones:
            pass
        phones.add(p)
        return p

    rows = [
        {"id": f"W{i:06d}", "name": person_name(rng), "phone": phone(), "grid_code": grid["code"],
         "role": "worker"}
        for i, grid in enumerate(grids, start=1)
    ]
    by_town: dict[str, list[str]] = {}
    for grid in grids:
        by_town.setdefault(grid["township_code"], []).append(grid["code"])
    for i, town in enumerate(sorted(t["code"] for t in townships), start=1):
        leader, tel = person_name(rng), phone()
        rows += [
            {"id": f"L{i:04d}", "name": leader, "phone": tel, "grid_code": code, "role": "leader"}
            for code in by_town.get(town, [])
        ]
    return rows


# ---------------------------------------------------------------------------------- writers


def _ring(coords: Iterable[Sequence[float]]) -> list[list[float]]:
    return [[round(float(x), 7), round(float(y), 7)] for x, y in coords]


def _geometry(geom: BaseGeometry | dict[str, Any]) -> dict[str, Any]:
    """A MultiPolygon as a GeoJSON dict, counter-clockwise shells (RFC 7946 § 3.1.6)."""
    if isinstance(geom, dict):  # reference geometry: same vertices, only the winding normalised
        geom = shape(geom)
    geom = g.ensure_ccw(g.as_multipolygon(geom))
    polys = []
    for p in geom.geoms:
        polys.append([_ring(p.exterior.coords)] + [_ring(r.coords) for r in p.interiors])
    return {"type": "MultiPolygon", "coordinates": polys}


def _write_geojson(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    lines = []
    for row in rows:
        feature = {
            "type": "Feature",
            "properties": {c: row.get(c, "") for c in columns},
            "geometry": _geometry(row["geometry"]),
        }
        lines.append(json.dumps(feature, ensure_ascii=False, separators=(",", ":")))
    text = '{"type":"FeatureCollection","features":[\n' + ",\n".join(lines) + "\n]}\n"
    path.write_text(text, encoding="utf-8", newline="\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c, "")) for c in columns])

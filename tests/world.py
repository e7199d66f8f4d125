"""A small hand-drawn world for rule tests, written as real import files.

Two counties side by side near Nantong (lon 120.5–120.9, lat 32.0–32.2). County B owns an
enclave inside county A (a hole in A). A national zone crosses a township border of A and holds a
chemical park with its own bureau; a numbered bureau of A covers a strip that ignores township
borders; a dedicated grid sits inside a comprehensive one; a sea area lies east of B.

    120.5     120.6  120.62     120.7         120.9   121.0
 32.2 +---------+------+---------+-------------+-------+
      |  A1     | A2             |  B1         | sea   |
      |  [enclave B2: .55-.6,    |             | (B)   |
      |   32.05-32.1]            |             |       |
 32.0 +---------+----------------+-------------+-------+
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely import segmentize
from shapely.geometry import MultiPolygon, box

ENCLAVE = box(120.55, 32.05, 120.6, 32.1)
# Counties have many vertices, like real ones: PostGIS cuts them into routing parts.
COUNTY_A = segmentize(box(120.5, 32.0, 120.7, 32.2).difference(ENCLAVE), 0.001)
COUNTY_B = MultiPolygon([segmentize(box(120.7, 32.0, 120.9, 32.2), 0.001), ENCLAVE])
A1 = box(120.5, 32.0, 120.6, 32.2).difference(ENCLAVE)
A2 = box(120.6, 32.0, 120.7, 32.2)
B1 = box(120.7, 32.0, 120.9, 32.2)
B2 = ENCLAVE
NATIONAL_ZONE = box(120.58, 32.12, 120.68, 32.18)
CHEMICAL_PARK = box(120.6, 32.13, 120.64, 32.17)
DEDICATED = box(120.65, 32.02, 120.67, 32.04)
NUMBERED_A = box(120.5, 32.0, 120.62, 32.2).difference(ENCLAVE)
NUMBERED_B = B1
SEA_B = box(120.9, 32.0, 121.0, 32.2)

# Points named after what they test.
P = {
    "a2_plain": (120.68, 32.08),
    "a1_numbered": (120.52, 32.03),
    "a2_strip": (120.61, 32.05),  # in A2 but inside numbered bureau A-1's strip
    "chemical": (120.61, 32.15),  # chemical park inside the national zone, inside strip
    "national": (120.66, 32.16),  # national zone only (no park bureau)
    "dedicated": (120.66, 32.03),
    "enclave": (120.575, 32.06),
    "b1": (120.8, 32.1),
    "sea": (120.95, 32.1),
    "outside": (121.5, 32.5),
    "border_ab": (120.7, 32.1),  # exactly on the county border
    "near_border": (120.699, 32.13),  # ~94 m west of it
}

CRS = "EPSG:4326"


def _polygonal(geom):
    """Drop the lines a clip leaves where it only touches (GeometryCollection -> polygons)."""
    polys = [
        g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")
    ]
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _halves(geom, code_prefix: str, township: str) -> list[dict]:
    minx, miny, maxx, maxy = geom.bounds
    mid = (miny + maxy) / 2
    south = _polygonal(geom.intersection(box(minx, miny, maxx, mid)))
    north = _polygonal(geom.intersection(box(minx, mid, maxx, maxy)))
    return [
        {
            "code": f"{code_prefix}001",
            "name": f"{township}南网格",
            "township_code": township,
            "kind": "comprehensive",
            "geometry": south,
        },
        {
            "code": f"{code_prefix}002",
            "name": f"{township}北网格",
            "township_code": township,
            "kind": "comprehensive",
            "geometry": north,
        },
    ]


def layers() -> dict[str, pd.DataFrame]:
    gdf = lambda rows: gpd.GeoDataFrame(rows, crs=CRS)  # noqa: E731
    counties = gdf(
        [
            {"code": "320901", "name": "甲县", "geometry": COUNTY_A},
            {"code": "320902", "name": "乙县", "geometry": COUNTY_B},
        ]
    )
    townships = gdf(
        [
            {"code": "320901001", "name": "甲一镇", "county_code": "320901", "geometry": A1},
            {"code": "320901002", "name": "甲二镇", "county_code": "320901", "geometry": A2},
            {"code": "320902001", "name": "乙一镇", "county_code": "320902", "geometry": B1},
            {"code": "320902002", "name": "乙飞地街道", "county_code": "320902", "geometry": B2},
        ]
    )
    grid_rows = []
    for geom, tcode in ((A1, "320901001"), (A2, "320901002"), (B1, "320902001"), (B2, "320902002")):
        grid_rows += _halves(geom, tcode + "001", tcode)
    grid_rows += [
        {
            "code": "320901002900001",
            "name": "化工园区网格",
            "township_code": "320901002",
            "kind": "park",
            "geometry": CHEMICAL_PARK,
        },
        {
            "code": "320901002800001",
            "name": "某化工厂专属网格",
            "township_code": "320901002",
            "kind": "dedicated",
            "geometry": DEDICATED,
        },
    ]
    grids = gdf(grid_rows)
    parks = gdf(
        [
            {
                "code": "P1",
                "name": "甲国家级开发区",
                "kind": "dev_zone_national",
                "county_code": "320901",
                "geometry": NATIONAL_ZONE,
            },
            {
                "code": "P2",
                "name": "甲化工园区",
                "kind": "chemical_park",
                "county_code": "320901",
                "geometry": CHEMICAL_PARK,
            },
        ]
    )
    seas = gdf([{"code": "S1", "name": "乙县海域", "county_code": "320902", "geometry": SEA_B}])
    jurisdictions = gdf(
        [
            {"bureau_code": "B-A-1", "name": "甲一局辖区", "geometry": NUMBERED_A},
            {"bureau_code": "B-B-1", "name": "乙一局辖区", "geometry": NUMBERED_B},
        ]
    )
    bureaus = pd.DataFrame(
        [
            ("B-M", "市执法局", "municipal", "", "", ""),
            ("B-A", "甲县执法局", "county", "B-M", "320901", ""),
            ("B-B", "乙县执法局", "county", "B-M", "320902", ""),
            ("B-A-1", "甲县执法一局", "numbered", "B-A", "320901", ""),
            ("B-B-1", "乙县执法一局", "numbered", "B-B", "320902", ""),
            ("B-P2", "甲化工园区执法局", "park", "B-A", "320901", "P2"),
        ],
        columns=["code", "name", "level", "parent_code", "county_code", "park_code"],
    )
    workers = pd.DataFrame(
        [
            (f"W{i:03d}", f"网格员{i}", f"1380000{i:04d}", code, "worker")
            for i, code in enumerate(grids["code"], start=1)
        ]
        + [("L001", "甲二镇网格长", "13900000001", "320901002001001", "leader")],
        columns=["id", "name", "phone", "grid_code", "role"],
    )
    return {
        "counties": counties,
        "townships": townships,
        "grids": grids,
        "parks": parks,
        "sea_areas": seas,
        "jurisdictions": jurisdictions,
        "bureaus": bureaus,
        "workers": workers,
    }


def write(directory: Path, overrides: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write the world as GeoJSON + CSV import files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in {**layers(), **(overrides or {})}.items():
        if isinstance(frame, gpd.GeoDataFrame):
            frame.to_file(directory / f"{name}.geojson", driver="GeoJSON")
        else:
            frame.to_csv(directory / f"{name}.csv", index=False)
    return directory

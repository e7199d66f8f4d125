"""Incident records (cases): what is stored, in both stores.

An incident row is written once, at intake: the location as given, the location as routed, the
routing answer and the layer generation it was routed with. Everything that happens afterwards
(dispatch, verification, transfer, reassignment, closing) is an appended event with time, person
and reason; the current state of a case is its latest event. Nothing is edited in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

# Columns of the incidents table (besides fid and the routed point geometry).
INCIDENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT NOT NULL UNIQUE"),
    ("reported_at", "TEXT NOT NULL"),
    ("source", "TEXT"),
    ("category", "TEXT NOT NULL"),
    ("description", "TEXT"),
    ("reporter", "TEXT"),
    ("given_x", "REAL"),
    ("given_y", "REAL"),
    ("given_crs", "TEXT"),
    ("accuracy_m", "REAL"),
    ("extent_wkt", "TEXT"),  # a line or area (river stretch, plume), in EPSG:4490
    ("generation", "INTEGER NOT NULL"),
    ("route_status", "TEXT NOT NULL"),
    ("county_code", "TEXT"),
    ("township_code", "TEXT"),
    ("grid_code", "TEXT"),
    ("park_code", "TEXT"),
    ("bureau_code", "TEXT"),
    ("answer", "TEXT NOT NULL"),  # the routing answer JSON, as shown at intake
    ("created_at", "TEXT NOT NULL"),
    ("created_by", "TEXT NOT NULL"),
)

# Every event: the status after it, and the assignment after it when the event changed it.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("incident_id", "TEXT NOT NULL"),
    ("at", "TEXT NOT NULL"),
    ("actor", "TEXT NOT NULL"),
    ("action", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("grid_code", "TEXT"),
    ("bureau_code", "TEXT"),
    ("reason", "TEXT"),
    ("data", "TEXT"),
)

CATEGORIES_ZH = {
    "air": "大气",
    "water": "水",
    "noise": "噪声",
    "solid_waste": "固体废物",
    "soil": "土壤",
    "radiation": "辐射",
    "marine": "海洋",
    "ecology": "生态",
    "other": "其他",
}
# The configurable category table (grids/categories.csv) names every category, partner ones
# included; the short names above are what complaint exports often use.
CATEGORY_TABLE = Path(__file__).resolve().parent.parent / "grids" / "categories.csv"


@lru_cache(maxsize=1)
def category_labels() -> dict[str, str]:
    labels = dict(CATEGORIES_ZH)
    if CATEGORY_TABLE.exists():
        table = pd.read_csv(CATEGORY_TABLE, dtype=str, keep_default_na=False)
        labels.update(zip(table["key"], table["label_zh"], strict=True))
    return labels


STATUSES_ZH = {
    "reported": "已受理",
    "dispatched": "已派遣",
    "verified": "已现场核实",
    "transferred": "已移送执法局",
    "handling": "处理中",
    "closed": "已结案",
}


@dataclass(frozen=True)
class Event:
    incident_id: str
    at: str
    actor: str
    action: str
    status: str
    grid_code: str | None = None
    bureau_code: str | None = None
    reason: str | None = None
    data: str | None = None

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in EVENT_COLUMNS)


INCIDENT_NAMES = [name for name, _ in INCIDENT_COLUMNS]
# The current state columns read with each incident (layers/incident_sql.py keeps them).
STATE_READ = ("status", "status_since", "updated_at", "grid_code", "bureau_code")


def frame_from_state(rows: list[tuple], geoms, store_epsg: int) -> gpd.GeoDataFrame:
    """Incident rows (INCIDENT_NAMES then STATE_READ) and their points -> the incidents frame
    every caller reads: the record, its current status and assignment, labels, lon/lat. Built
    from columns in one step (it runs on every intake answer: pandas' per-column edits cost
    milliseconds even for no rows)."""
    names = [*INCIDENT_NAMES, "status", "status_since", "updated_at", "assigned_grid_code",
             "assigned_bureau_code"]
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    data: dict[str, object] = {n: list(c) if rows else np.array([], dtype=object)
                               for n, c in zip(names, columns, strict=True)}
    labels = category_labels()
    data["category_zh"] = np.array([labels.get(c, c) for c in data["category"]], dtype=object)
    data["status_zh"] = np.array([STATUSES_ZH.get(st, st) for st in data["status"]],
                                 dtype=object)
    points = np.asarray(geoms, dtype=object) if rows else np.array([], dtype=object)
    data["lon"] = shapely.get_x(points) if rows else np.array([], dtype=float)
    data["lat"] = shapely.get_y(points) if rows else np.array([], dtype=float)
    return gpd.GeoDataFrame(data, geometry=points, crs=store_epsg)

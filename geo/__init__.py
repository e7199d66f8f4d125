"""Coordinates and geometry: input CRSs, Chinese map offsets, sanity checks, parsing,
accuracy discs. The store CRS is CGCS2000 lon/lat, EPSG:4490."""

from geo.china_offsets import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from geo.crs import (
    STORE_EPSG,
    CoordSystem,
    CrsError,
    from_store,
    gauss_kruger_zone,
    metric_transformer,
    parse_crs,
    to_store,
)
from geo.disc import accuracy_disc, accuracy_discs, distance_m
from geo.parse import CoordinateParseError, ParsedPoint, parse_coordinate_text
from geo.sanity import CHINA_REGION, NANTONG_REGION, Region, check_points

__all__ = [
    "CHINA_REGION",
    "NANTONG_REGION",
    "STORE_EPSG",
    "CoordSystem",
    "CoordinateParseError",
    "CrsError",
    "ParsedPoint",
    "Region",
    "accuracy_disc",
    "accuracy_discs",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "check_points",
    "distance_m",
    "from_store",
    "gauss_kruger_zone",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "metric_transformer",
    "parse_coordinate_text",
    "parse_crs",
    "to_store",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

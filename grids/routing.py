"""Routing a location given as the user has it: coordinates in some system, maybe swapped."""

from __future__ import annotations

import numpy as np
import shapely
import shapely.geometry

from geo.crs import CrsError, parse_crs, to_store
from geo.plausibility import implausible
from geo.sanity import check_points
from grids.answer import AnswerWriter
from grids.resolver import Resolver
from layers.finder import Queries
from layers.store import Store


class RoutingInputError(ValueError):
    """A location that cannot be routed; the message says why (Chinese)."""


class Router:
    """Everything needed to answer for one generation of a store's layers."""

    def __init__(self, store: Store, generation: int | None = None) -> None:
        snapshot = store.snapshot(generation)
        self.snapshot = snapshot
        self.resolver = Resolver(snapshot, store.finder(snapshot))
        self.writer = AnswerWriter(self.resolver)

    def route(self, x: float, y: float, crs: str = "wgs84", accuracy_m: float = 0.0) -> dict:
        """The routing answer for one location, as JSON-ready data."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        if not (np.isfinite(accuracy_m) and 0 <= accuracy_m <= 50_000):
            raise RoutingInputError(f"精度半径应在 0–50000 米之间，收到 {accuracy_m}")
        lon, lat, status = check_points(np.array([x]), np.array([y]), system)
        state = str(status[0])
        if state in ("out_of_range", "outside_region"):
            # Degrees with a metric system, a zone prefix for the wrong EPSG code…: refused
            # with what the numbers look like, never answered "outside".
            why = implausible(float(x), float(y), system)
            if why:
                raise RoutingInputError(why)
        if state == "out_of_range":
            raise RoutingInputError(f"坐标 ({x}, {y}) 在 {system.label_zh} 中不是有效坐标")
        flags = ("swapped",) if state == "swapped" else ()
        res = self.resolver.resolve(Queries.build(lon, lat, [accuracy_m]))[0]
        point = {
            "input": {"x": x, "y": y, "crs": system.key, "accuracy_m": accuracy_m},
            "cgcs2000": [round(float(lon[0]), 8), round(float(lat[0]), 8)],
            # CGCS2000 and WGS84 agree to centimetres: the same numbers serve both.
            "wgs84": [round(float(lon[0]), 8), round(float(lat[0]), 8)],
        }
        answer = self.writer.answer(res, point, flags)
        if state == "swapped":
            answer["reasons"].insert(
                0,
                f"输入的坐标 ({x}, {y}) 按给定顺序不在南通范围内，交换经纬度后才在范围内："
                f"已按经度 {lon[0]:.6f}、纬度 {lat[0]:.6f} 处理，请核实。",
            )
        return answer

    def route_extent(self, geometry, crs: str = "wgs84") -> dict:
        """The answer for a line or an area (WKT, GeoJSON mapping or shapely geometry) given in
        `crs`: cross-county extents go to the municipal bureau with the county bureaus."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        geom = self.extent_to_store(geometry, system)
        res = self.resolver.resolve_extent(geom)
        centre = shapely.centroid(geom)
        given = _as_geometry(geometry)
        point = {
            "input": {"extent": shapely.to_wkt(given, rounding_precision=8), "crs": system.key},
            "cgcs2000": [round(centre.x, 8), round(centre.y, 8)],
            "wgs84": [round(centre.x, 8), round(centre.y, 8)],
        }
        return self.writer.answer(res, point)

    @staticmethod
    def extent_to_store(geometry, crs="wgs84"):
        """A line or area (WKT, GeoJSON mapping or shapely) in `crs` -> shapely in EPSG:4490."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        geom = _as_geometry(geometry)
        if geom is None or geom.is_empty or not geom.is_valid:
            raise RoutingInputError("事件范围不是有效的线或面")

        def convert(coords: np.ndarray) -> np.ndarray:
            return np.column_stack(to_store(coords[:, 0], coords[:, 1], system))

        return shapely.transform(geom, convert)


def _as_geometry(value):
    """A geometry from WKT, a GeoJSON mapping or a shapely geometry (None if none of them)."""
    if isinstance(value, shapely.Geometry):
        return value
    try:
        if isinstance(value, dict):
            return shapely.geometry.shape(value)
        return shapely.from_wkt(str(value))
    except (shapely.errors.GEOSException, ValueError, TypeError, AttributeError):
        return None

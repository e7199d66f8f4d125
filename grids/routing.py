"""Routing a location given as the user has it: coordinates in some system, maybe swapped."""

from __future__ import annotations

import json
import math

import numpy as np
import shapely
import shapely.geometry

from geo.crs import CrsError, parse_crs, to_store
from geo.plausibility import implausible
from geo.sanity import NANTONG_REGION, check_points
from grids import face_answers
from grids.answer import AnswerWriter
from grids.face_answers import FaceAnswers
from grids.resolver import EDGE_RADIUS_M, Resolver
from layers.finder import Queries
from layers.store import Store


class RoutingInputError(ValueError):
    """A location that cannot be routed; the message says why (Chinese)."""


class Router:
    """Everything needed to answer for one generation of a store's layers.

    With `bbox` (lon/lat, EPSG:4490) a router for places inside that box only: its snapshot
    holds only the grids around it (Store.snapshot), which is what one answer needs (`route_once`:
    `gridmap route`); it refuses any place not inside the box."""

    def __init__(self, store: Store, generation: int | None = None, *,
                 bbox: tuple[float, float, float, float] | None = None) -> None:
        snapshot = store.snapshot(generation, bbox=bbox) if bbox else store.snapshot(generation)
        self.snapshot = snapshot
        self.resolver = Resolver(snapshot, store.finder(snapshot))
        self.writer = AnswerWriter(self.resolver)
        # The answers of every face of the raster, once `prepare_batch` has made them ready.
        self.face_answers: FaceAnswers | None = None

    def prepare_batch(self) -> None:
        """Ready for a large batch of exact points (`gridmap assign`): the face raster and the
        answers of its faces, each read from the cache folder or else made and kept there."""
        faces = self.resolver.faces()
        if faces is not None and self.face_answers is None:
            self.face_answers = face_answers.for_router(self.writer, faces)

    @staticmethod
    def locate(x: float, y: float, crs: str = "wgs84", accuracy_m: float = 0.0):
        """(system, lon, lat, state) of a location as the user gives it: lon/lat arrays of one
        in EPSG:4490, state as geo.sanity.check_points says (ok, swapped). RoutingInputError
        (Chinese) when it cannot be routed."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        if not (np.isfinite(accuracy_m) and 0 <= accuracy_m <= 50_000):
            raise RoutingInputError(f"精度半径应在 0–50000 米之间，收到 {accuracy_m}")
        if system.key in ("wgs84", "cgcs2000"):
            # The usual click or typed point: lon/lat of the store's own datum inside the
            # region as given — check_points' answer ("ok", as given) without its arrays
            # (a tenth of a single route's time). NaN compares false and goes the long way.
            fx, fy, r = float(x), float(y), NANTONG_REGION
            if r.lon_min <= fx <= r.lon_max and r.lat_min <= fy <= r.lat_max:
                return system, np.array([fx]), np.array([fy]), "ok"
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
        return system, lon, lat, state

    def route(self, x: float, y: float, crs: str = "wgs84", accuracy_m: float = 0.0) -> dict:
        """The routing answer for one location, as JSON-ready data."""
        system, lon, lat, state = self.locate(x, y, crs, accuracy_m)
        self._within_scope(point_box(float(lon[0]), float(lat[0]), accuracy_m))
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

    def _within_scope(self, box: tuple[float, float, float, float]) -> None:
        scope = self.snapshot.scope
        if scope is not None and not (scope[0] <= box[0] and scope[1] <= box[1]
                                      and box[2] <= scope[2] and box[3] <= scope[3]):
            raise ValueError(f"此路由器只回答 {scope} 范围内的位置")

    def route_extent(self, geometry, crs: str = "wgs84") -> dict:
        """The answer for a line or an area (WKT, GeoJSON geometry/Feature/FeatureCollection
        or shapely geometry) given in `crs`. Never ambiguous: a cross-county extent goes to the
        municipal bureau with the county bureaus; otherwise the lowest bureau covering all of it
        leads and the bureaus it reaches into co-handle. Every township and grid it touches is
        listed (`townships`, `grids` with their workers)."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        geom = self.extent_to_store(geometry, system)
        self._within_scope(extent_box(geom))
        res = self.resolver.resolve_extent(geom)
        centre = shapely.centroid(geom)
        given = _as_geometry(geometry)
        point = {
            "input": {"extent": shapely.to_wkt(given, rounding_precision=8), "crs": system.key},
            "cgcs2000": [round(centre.x, 8), round(centre.y, 8)],
            "wgs84": [round(centre.x, 8), round(centre.y, 8)],
        }
        return self.writer.answer(res, point)

    # -- areas chosen by name (a township, park, community or grid found by search) --------------
    def area_of(self, kind: str, code: str):
        """The outline (shapely, EPSG:4490) of a named area: kind county, township, park,
        sea, grid or community (a community/village: the union of its grids, see
        layers/search.py). RoutingInputError (Chinese) when there is none."""
        if kind == "community":
            from layers.search import community_grids

            rows, _ = community_grids(self.snapshot["grids"], str(code))
            if not len(rows):
                raise RoutingInputError(f"没有编码为 {code} 的社区/村")
            return shapely.union_all(np.asarray(rows.geometry.values, dtype=object))
        return self._area_row(kind, code).geometry

    def area_ref(self, kind: str, code: str) -> dict:
        """{kind, kind_zh, code, name} of a named area (what an area answer says it was)."""
        if kind == "community":
            from layers.search import community_grids

            name = community_grids(self.snapshot["grids"], str(code))[1]
        else:
            name = str(self._area_row(kind, code)["name"])
        return {"kind": kind, "kind_zh": AREA_KINDS_ZH[kind], "code": str(code), "name": name}

    def _area_row(self, kind: str, code: str):
        layer = AREA_LAYERS.get(kind)
        if layer is None:
            raise RoutingInputError(
                f"不能按区域受理的类型：{kind}（可用：{'、'.join(AREA_KINDS_ZH.values())}）"
            )
        frame = self.snapshot[layer]
        rows = frame[frame["code"].astype(str) == str(code)]
        if not len(rows):
            raise RoutingInputError(f"没有编码为 {code} 的{AREA_KINDS_ZH[kind]}")
        return rows.iloc[0]

    def route_area(self, kind: str, code: str) -> dict:
        """The extent answer for a whole named area (see `area_of`): the responsible bureau
        and every grid and worker of the area. `point.input` names the area instead of
        repeating its outline."""
        answer = self.route_extent(self.area_of(kind, code), "cgcs2000")
        mark_area(answer, self.area_ref(kind, code))
        return answer

    @staticmethod
    def extent_to_store(geometry, crs="wgs84"):
        """A line or area (WKT, GeoJSON or shapely) in `crs` -> shapely in EPSG:4490."""
        try:
            system = parse_crs(crs)
        except CrsError as exc:
            raise RoutingInputError(str(exc)) from exc
        geom = _as_geometry(geometry)
        if geom is None:
            raise RoutingInputError(
                "无法识别的事件范围：请给出 WKT（如 LINESTRING (…)、POLYGON ((…))）或 GeoJSON"
            )
        if geom.geom_type not in EXTENT_TYPES:
            raise RoutingInputError(
                f"事件范围应为线（LINESTRING）或面（POLYGON），收到 {geom.geom_type}"
                + ("：单个位置请按坐标查询" if geom.geom_type in ("Point", "MultiPoint") else "")
            )
        if geom.is_empty or not geom.is_valid:
            raise RoutingInputError("事件范围不是有效的线或面（例如空几何或面自相交），请检查坐标")
        coords = shapely.get_coordinates(geom)
        if not np.isfinite(coords).all():
            raise RoutingInputError("事件范围的坐标中有无效数值")
        # Where it lies as given: numbers that cannot be meant in this system are refused,
        # never answered "outside" (as for a point).
        centre = shapely.centroid(geom)
        state = str(check_points(np.array([centre.x]), np.array([centre.y]), system)[2][0])
        if state in ("out_of_range", "outside_region"):
            why = implausible(float(centre.x), float(centre.y), system)
            if why:
                raise RoutingInputError(f"事件范围：{why}")
        if state == "out_of_range":
            raise RoutingInputError(f"事件范围的坐标在 {system.label_zh} 中不是有效坐标")
        if state == "swapped":
            raise RoutingInputError(
                "事件范围的坐标按给定顺序不在南通范围内，交换经纬度后才在范围内："
                "请按“经度 纬度”的顺序给出每个点（WKT 与 GeoJSON 都是经度在前）"
            )

        def convert(coords: np.ndarray) -> np.ndarray:
            return np.column_stack(to_store(coords[:, 0], coords[:, 1], system))

        out = shapely.transform(geom, convert)
        if not np.isfinite(shapely.get_coordinates(out)).all():
            raise RoutingInputError(f"事件范围的坐标在 {system.label_zh} 中不是有效坐标")
        return out


def route_once(store: Store, x: float, y: float, crs: str = "wgs84", accuracy_m: float = 0.0,
               generation: int | None = None) -> dict:
    """One answer, reading only the grids around the place (`gridmap route`: its time and
    memory do not grow with the number of grids or entities). The same answer as
    `Router(store, generation).route(…)`."""
    _, lon, lat, _ = Router.locate(x, y, crs, accuracy_m)
    box = point_box(float(lon[0]), float(lat[0]), accuracy_m)
    return Router(store, generation, bbox=box).route(x, y, crs, accuracy_m)


def route_extent_once(store: Store, geometry, crs: str = "wgs84",
                      generation: int | None = None) -> dict:
    """One answer for a line or an area, reading only the grids around it (`gridmap route
    --wkt/--geojson`); the same as `Router(store, generation).route_extent(…)`."""
    box = extent_box(Router.extent_to_store(geometry, crs))
    return Router(store, generation, bbox=box).route_extent(geometry, crs)


# How far a scoped snapshot reaches beyond 1.1 × what the answer looks at (the accuracy disc,
# or the small disc of the second look at a point on a boundary), in metres.
SCOPE_MARGIN_M = 50.0


def point_box(lon: float, lat: float, accuracy_m: float = 0.0) -> tuple[float, ...]:
    """A lon/lat box holding everything the answer for a location looks at: its accuracy disc
    or the small disc of a point on a boundary (grids.resolver.EDGE_RADIUS_M), with a margin."""
    reach = 1.1 * max(float(accuracy_m), EDGE_RADIUS_M) + SCOPE_MARGIN_M
    dlat = reach / 110_574.0
    dlon = reach / (111_320.0 * max(math.cos(math.radians(lat)), 0.01))
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def extent_box(geom) -> tuple[float, ...]:
    """A lon/lat box holding a line or an area (EPSG:4490), with a margin."""
    minx, miny, maxx, maxy = shapely.bounds(geom).tolist()
    pad = point_box((minx + maxx) / 2, max(abs(miny), abs(maxy)))
    dlon, dlat = (pad[2] - pad[0]) / 2, (pad[3] - pad[1]) / 2
    return (minx - dlon, miny - dlat, maxx + dlon, maxy + dlat)


EXTENT_TYPES = ("LineString", "MultiLineString", "Polygon", "MultiPolygon")
AREA_LAYERS = {"county": "counties", "township": "townships", "park": "parks",
               "sea": "sea_areas", "grid": "grids"}
AREA_KINDS_ZH = {"county": "县（市）、区", "township": "乡镇/街道", "park": "园区",
                 "sea": "海域", "grid": "网格", "community": "社区/村"}


def mark_area(answer: dict, area: dict, position: int = 0) -> dict:
    """An extent answer for a named area: the input names the area (not its outline) and a
    reason (the first, or at `position`) says the whole area was routed."""
    point = answer.get("point") or {}
    point["input"] = {"area": area, "crs": "cgcs2000"}
    answer["point"] = point
    answer["reasons"].insert(
        position,
        f"按{area['kind_zh']}“{area['name']}”（{area['code']}）整个范围受理："
        "列出牵头执法机构及范围内全部网格和网格员。",
    )
    return answer


def _as_geometry(value):
    """A geometry from WKT, GeoJSON (a geometry, a Feature, or a FeatureCollection of lines or
    of areas, taken together) or a shapely geometry; None if none of them."""
    if isinstance(value, shapely.Geometry):
        return value
    try:
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = json.loads(value)
        if isinstance(value, dict):
            if value.get("type") == "Feature":
                return shapely.geometry.shape(value["geometry"])
            if value.get("type") == "FeatureCollection":
                parts = [shapely.geometry.shape(f["geometry"]) for f in value["features"]]
                if not parts:
                    return None
                if len(parts) == 1:
                    return parts[0]
                lines = all("LineString" in g.geom_type for g in parts)
                areas = all("Polygon" in g.geom_type for g in parts)
                if not (lines or areas):
                    return shapely.GeometryCollection(parts)
                return (shapely.union_all(parts) if areas
                        else shapely.MultiLineString([ln for g in parts
                                                      for ln in getattr(g, "geoms", [g])]))
            return shapely.geometry.shape(value)
        return shapely.from_wkt(str(value))
    except (shapely.errors.GEOSException, ValueError, TypeError, AttributeError, KeyError):
        return None

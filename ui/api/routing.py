"""Point → responsibility, MapIt-like: GET /route and GET /point/{srid}/{x},{y} answer exactly
what `gridmap route --json` prints (the same dict from `svc.route`); POST /route routes a batch
(GeoJSON points or CSV) with the routing core of `gridmap assign` and streams one NDJSON line
per input, in order; GET /areas/{code} is one unit of the current layers as GeoJSON.
Never anonymous: every route here needs a key whose role may `route` (or `batch.assign`,
`layers.read`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from geo.crs import CrsError, parse_crs
from grids.batch import BatchInputError, assign
from ui.api.batch import csv_chunks, geojson_chunks, id_column
from ui.api.formats import NDJSON_TYPE, ApiError, json_bytes, json_response
from ui.api.keys import SECURED, acting

router = APIRouter(tags=["位置查询（MapIt 风格）"])

_ERROR = {"description": "错误：[{\"code\": 400, \"description\": \"中文说明\"}]"}
_ERRORS = {400: _ERROR, 401: _ERROR, 403: _ERROR, 429: _ERROR}
# SRIDs that have names of their own in geo/crs.py (any other is passed on as EPSG:<srid>).
SRID_NAMES = {4326: "wgs84", 4490: "cgcs2000"}
CRS_HELP = "坐标系：wgs84（默认）、cgcs2000、gcj02、bd09 或 EPSG 代码如 EPSG:4549"


def _query(name: str, kind: str, description: str, required: bool = False,
           default=None) -> dict:
    schema = {"type": kind} if default is None else {"type": kind, "default": default}
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


# The hot routes read their parameters themselves (after the key is checked: an anonymous
# request is refused with 401 whatever its parameters); the docs still list them.
ACCURACY = _query("accuracy", "number", "定位精度半径（米）", default=0)
AT = _query("at", "string", "按历史图层查询：版本号（generation，整数），或时间（ISO 8601，"
             "如 2026-12-02T10:00；不写时区即为北京时间）——按当时有效的版本回答")
ROUTE_PARAMS = [_query("lon", "number", "经度（或投影坐标 X）", required=True),
                _query("lat", "number", "纬度（或投影坐标 Y）", required=True),
                _query("crs", "string", CRS_HELP, default="wgs84"), ACCURACY, AT]


def number_param(request: Request, name: str, default: float | None = None) -> float:
    text = request.query_params.get(name, "").strip()
    if not text:
        if default is None:
            raise ApiError(400, f"缺少参数 {name}")
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise ApiError(400, f"参数 {name} 应为数字，收到 {text[:30]}") from exc


def generation_param(request: Request) -> int | None:
    """`at` as a generation number (digits only), else None (see `time_param`)."""
    text = request.query_params.get("at", "").strip()
    return int(text) if text.isdigit() else None


def time_param(request: Request) -> str | None:
    """`at` as a time (anything but a bare number), checked here: a bad time is a 400."""
    text = request.query_params.get("at", "").strip()
    if not text or text.isdigit():
        return None
    if len(text) > 40:
        raise ApiError(400, "参数 at 过长")
    from layers.versions import VersionError, parse_at

    try:
        parse_at(text)
    except VersionError as exc:
        raise ApiError(400, f"参数 at 应为图层版本号（整数）或时间：{exc}") from exc
    return text


@router.get("/route", summary="按位置查询责任归属",
            openapi_extra={"parameters": ROUTE_PARAMS, **SECURED},
            description="与 `gridmap route LON LAT --json` 输出相同的 JSON。需 route 权限。",
            responses={200: {"description": "分派结果（status、county、township、grid、"
                                            "workers、park、bureau、chain、reasons …）"},
                       **_ERRORS})
async def get_route(request: Request) -> Response:
    svc = request.app.state.service

    def work(actor) -> Response:
        crs = request.query_params.get("crs", "").strip() or "wgs84"
        if len(crs) > 40:
            raise ApiError(400, "参数 crs 过长")
        return json_response(svc.route(
            actor, number_param(request, "lon"), number_param(request, "lat"), crs,
            number_param(request, "accuracy", 0.0), generation=generation_param(request),
            at=time_param(request)))

    return await acting(request, work)


@router.get("/point/{srid}/{coordinates}", summary="按位置查询（MapIt 的 /point 写法）",
            openapi_extra={"parameters": [ACCURACY, AT], **SECURED},
            description="如 /point/4326/120.86,32.01、/point/4549/581256.6,3543284.6；"
                        "与 /route 的回答相同。4326 为 WGS84，4490 为 CGCS2000，其他为 EPSG 代码。",
            responses={200: {"description": "同 /route"}, **_ERRORS})
async def get_point(request: Request, srid: int, coordinates: str) -> Response:
    svc = request.app.state.service

    def work(actor) -> Response:
        text = coordinates.removesuffix(".json")
        try:
            x, y = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise ApiError(400, f"坐标应写作 x,y（如 120.86,32.01），收到 {text[:40]}") from exc
        crs = SRID_NAMES.get(srid, f"EPSG:{srid}")
        return json_response(svc.route(actor, x, y, crs, number_param(request, "accuracy", 0.0),
                                       generation=generation_param(request),
                                       at=time_param(request)))

    return await acting(request, work)


@router.get("/areas/{code}", summary="一个区域（网格、乡镇、县区、园区或海域）",
            openapi_extra=SECURED,
            description="当前图层中编码为 code 的单元，GeoJSON Feature（网格含网格员）。"
                        "需 layers.read 权限。",
            responses={200: {"description": "GeoJSON Feature"}, 404: _ERROR, **_ERRORS})
async def get_area(request: Request, code: str) -> Response:
    from ui.api.formats import clean

    svc = request.app.state.service

    def work(actor) -> Response:
        feature = svc.area(actor, code)
        if feature is None:
            raise ApiError(404, f"当前图层中没有编码为 {code[:60]} 的网格、乡镇、县（市、区）、"
                                "园区或海域")
        return Response(json_bytes(clean(feature)), media_type="application/geo+json")

    return await acting(request, work)


# -- the streamed batch ----------------------------------------------------------------------------
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/geo+json": {
                "schema": {"type": "object"},
                "example": {"type": "FeatureCollection", "features": [
                    {"type": "Feature", "id": "A1", "properties": {"accuracy_m": 30},
                     "geometry": {"type": "Point", "coordinates": [120.86, 32.01]}}]}},
            "text/csv": {"schema": {"type": "string"},
                         "example": "id,lon,lat,crs\nA1,120.86,32.01,wgs84\n"},
        },
    }
}


@router.post("/route", summary="批量分派（流式 NDJSON）",
             description="请求体为点要素的 GeoJSON FeatureCollection 或 CSV（列同 gridmap assign："
                         "编号、经度/纬度、坐标系、精度）。每个输入一行 JSON，按输入顺序："
                         "row（CSV 为文件行号，表头为第 1 行；GeoJSON 为第几个要素）、id、status，"
                         "及 gridmap assign 的 route_* 各列（去掉前缀）；无法分派的行 status 为 "
                         "error，error 为原因。需 batch.assign 权限；请求体至多 20 MB。",
             openapi_extra={**BATCH_BODY, **SECURED},
             responses={200: {"description": "NDJSON，每行一个结果",
                              "content": {"application/x-ndjson": {}}},
                        413: _ERROR, 415: _ERROR, **_ERRORS})
async def post_route(request: Request,
                     crs: str | None = Query(None, description="整个文件的坐标系（文件中没有坐标系"
                                                               "列时；GeoJSON 默认 wgs84）",
                                             max_length=40),
                     at: int | None = Query(None, description="按历史图层版本分派"),
                     ) -> Response:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/geo+json", "application/json"):
        suffix = ".geojson"
    elif kind in ("text/csv", "application/csv"):
        suffix = ".csv"
    else:
        raise ApiError(415, "请求体须为 GeoJSON（application/geo+json）或 CSV（text/csv）")
    svc = request.app.state.service
    holder: dict = {}

    def get_router(actor) -> Response:
        holder["actor"] = actor
        holder["router"] = svc.batch_router(actor, at)  # checks batch.assign (403)
        return Response(status_code=204)

    await acting(request, get_router)
    if crs:  # the whole body's system: one refusal, not an error on every row
        try:
            parse_crs(crs)
        except CrsError as exc:
            raise ApiError(400, f"参数 crs：{exc}") from exc
    path = await _spool(request, suffix)
    try:
        first, lines = await run_in_threadpool(_start, path, suffix, crs, holder["router"])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    stream = _stream(svc, holder["actor"], holder["router"], path, first, lines, crs)
    return StreamingResponse(stream, media_type=NDJSON_TYPE)


async def _spool(request: Request, suffix: str) -> Path:
    """The body, written to a temporary file as it arrives (the middleware stops it at the
    size limit with 413)."""
    fd, name = tempfile.mkstemp(prefix="gridmap-api-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            async for block in request.stream():
                f.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _chunks(path: Path, suffix: str, crs: str | None):
    return csv_chunks(path) if suffix == ".csv" else geojson_chunks(path, crs)


def _start(path: Path, suffix: str, crs: str | None, router):
    """The chunk iterator and the first chunk's lines: a body that cannot be read at all is
    refused with 400 before anything is streamed."""
    chunks = _chunks(path, suffix, crs)
    try:
        first = next(chunks, None)
        lines = _lines(router, first, crs if suffix == ".csv" else None) if first else (b"", {})
    except BatchInputError as exc:
        hint = "；接口调用时用查询参数 crs 指定，如 ?crs=gcj02" if "坐标系列" in str(exc) else ""
        raise ApiError(400, f"{exc}{hint}") from exc
    return chunks, lines


def _lines(router, chunk, crs: str | None) -> tuple[bytes, dict]:
    """One JSON line per row of a chunk, and the counts by status."""
    frame, bad = chunk
    if frame.empty:
        return b"", {}
    table = assign(router, frame.reset_index(drop=True), crs=crs).table
    ident = id_column(frame)
    rows = frame.index.to_numpy()
    answers = table[[c for c in table.columns if c.startswith("route_")]]
    answers.columns = [c.removeprefix("route_") for c in answers.columns]
    out, counts = [], {}
    ids = frame[ident].to_numpy() if ident else [None] * len(frame)
    for row, ident_value, values in zip(rows, ids, answers.to_dict("records"), strict=True):
        line = {"row": int(row), "id": ident_value or None}
        why = bad.get(int(row))
        if why or values["status"] == "error":
            line.update(status="error", error=why or values["error"])
        else:
            line.update({k: _value(v) for k, v in values.items() if k != "error"})
        counts[line["status"]] = counts.get(line["status"], 0) + 1
        out.append(json_bytes(line))
    return b"\n".join(out) + b"\n", counts


def _value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if v == "" or (isinstance(v, float) and v != v):
        return None
    return v


def _stream(svc, actor, router, path: Path, chunks, first: tuple[bytes, dict],
            crs: str | None) -> Iterator[bytes]:
    """The lines, a chunk at a time (a sync generator: Starlette runs it in worker threads);
    the batch is audited at the end like `gridmap assign`. A body that turns out unreadable
    further down ends the stream with a line saying why."""
    counts: dict[str, int] = {}
    suffix = path.suffix

    def add(found: dict) -> None:
        for k, v in found.items():
            counts[k] = counts.get(k, 0) + v

    try:
        data, found = first
        add(found)
        if data:
            yield data
        while True:
            try:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                data, found = _lines(router, chunk, crs if suffix == ".csv" else None)
            except BatchInputError as exc:
                counts["error"] = counts.get("error", 0) + 1
                yield json_bytes({"row": None, "id": None, "status": "error",
                                  "error": f"{exc}（其后的内容未处理）"}) + b"\n"
                break
            add(found)
            yield data
        with contextlib.suppress(Exception):
            svc.record_batch(actor, "POST /route", {**counts, "total": sum(counts.values())})
    finally:
        with contextlib.suppress(Exception):
            chunks.close()
        path.unlink(missing_ok=True)

"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2) under /open311/v2/, JSON or XML
after the suffix: complaints from the 12369 platform, the 12345 hotline or WeChat become cases
through the same intake as the dispatcher's page (`svc.intake` + `svc.create_case`).

Services are the categories of grids/categories.csv. Extensions to the spec (documented in the
OpenAPI description): `coordinate_system` (lat/long in another system: gcj02, bd09, cgcs2000 or
an EPSG code — then `long` is X and `lat` is Y), `accuracy_m` (the location's radius of
uncertainty) and `client_request_id` (or the header `Idempotency-Key`): a retried POST with the
same id returns the same case, never a second one (the store checks it inside the transaction
that creates the case).

Where the spec's fields have no column of their own, they are kept in the case's record as the
dispatcher sees it: `address_string` and `media_url` as labelled last lines of the description
(and read back from there), the reporter's name, phone and e-mail as the reporter text.
"""

from __future__ import annotations

import json
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pandas as pd
from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as FastApiPath
from starlette.responses import Response

from grids.flow import CATEGORY_TABLE, Category, load_categories, load_flow
from layers.store import IncidentQuery
from ui.api.formats import ApiError, render
from ui.api.keys import SECURED, acting

BEIJING = ZoneInfo("Asia/Shanghai")
SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
FORMATS = ("json", "xml")
MAX_DESCRIPTION = 4000  # the spec's limit
MAX_REQUESTS = 1000  # the spec's default query limit (and 90 days)
MAX_CATEGORIES = 50  # service codes in one query (one store query each)
WINDOW = timedelta(days=90)
FIRST_YEAR, LAST_YEAR = 2000, 2199  # dates a query may name (pandas' times end in 2262)
ADDRESS_MARK = "【地址】"
MEDIA_MARK = "【图片】"
_MEDIA_URL = re.compile(r"(?i)https?://\S+$")

# The suffix of every Open311 path.
Fmt = Annotated[str, FastApiPath(description="格式：json 或 xml")]

router = APIRouter(prefix="/open311/v2", tags=["Open311 GeoReport v2（投诉受理）"])
discovery_router = APIRouter(tags=["Open311 GeoReport v2（投诉受理）"])

# -- documentation of the routes (the OpenAPI description) -----------------------------------------
_ERROR = {"description": "错误（Open311 格式）：[{\"code\": 400, \"description\": \"中文说明\"}]"}
_FORM_FIELDS = {
    "api_key": ("string", "接口密钥（也可用请求头 X-API-Key）"),
    "service_code": ("string", "服务类别编号，见 services.json（必填）"),
    "lat": ("number", "纬度（WGS84；coordinate_system 为投影坐标系时为 Y）"),
    "long": ("number", "经度（WGS84；coordinate_system 为投影坐标系时为 X）"),
    "coordinate_system": ("string", "扩展：坐标系 wgs84（默认）、gcj02（高德/腾讯/微信）、"
                                    "bd09（百度）、cgcs2000 或 EPSG 代码如 EPSG:4549"),
    "accuracy_m": ("number", "扩展：定位精度半径（米，0–50000）"),
    "client_request_id": ("string", "扩展：调用方的请求编号（重试时不变，同一编号只登记一件案件；"
                                    "也可用请求头 Idempotency-Key）"),
    "address_string": ("string", "地点描述（记入案件描述；本系统不做地址匹配，须同时给坐标）"),
    "description": ("string", "投诉内容（至多 4000 字）"),
    "media_url": ("string", "图片等附件的地址（http/https，记入案件描述）"),
    "first_name": ("string", "举报人名"),
    "last_name": ("string", "举报人姓"),
    "phone": ("string", "举报人电话"),
    "email": ("string", "举报人电子邮箱"),
}
POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {
                "type": "object", "required": ["service_code", "lat", "long"],
                "properties": {k: {"type": t, "description": d}
                               for k, (t, d) in _FORM_FIELDS.items()}}}
            for media in ("application/x-www-form-urlencoded", "application/json")
        },
    }
}


def _xml(fmt: str) -> bool:
    if fmt not in FORMATS:
        raise ApiError(404, f"不支持的格式 .{fmt[:20]}：请用 .json 或 .xml")
    return fmt == "xml"


# -- services ------------------------------------------------------------------------------------
def service_list() -> list[dict]:
    out = []
    for cat in load_categories().values():
        eco = cat.handler != "partner"
        if eco:
            what = f"{cat.label_zh}：由属地生态环境综合行政执法机构按网格受理、派遣、办理"
        else:
            what = (f"{cat.label_zh}：{cat.note_zh or '由' + cat.agency_zh + '负责'}"
                    f"（本系统登记后移交{cat.agency_zh}）")
        out.append({
            "service_code": cat.key,
            "service_name": cat.label_zh,
            "description": what,
            "metadata": False,
            "type": "realtime",
            "keywords": ",".join(k for k in (cat.label_zh, cat.key, cat.agency_zh) if k),
            "group": "生态环境" if eco else "移交其他部门",
        })
    return out


@router.get("/services.{fmt}", summary="服务类别列表（公开）",
            description="grids/categories.csv 中的事件类别；无需密钥（Open311 规范）。",
            responses={200: {"description": "类别列表"}, 404: _ERROR})
def get_services(fmt: Fmt) -> Response:
    return render(service_list(), "services", _xml(fmt))


@router.get("/services/{service_code}.{fmt}", summary="服务类别定义（公开）",
            description="本系统的类别没有附加字段：attributes 为空。",
            responses={200: {"description": "类别定义"}, 404: _ERROR})
def get_service(service_code: str, fmt: Fmt) -> Response:
    xml = _xml(fmt)
    if service_code not in load_categories():
        raise ApiError(404, f"没有编号为 {service_code[:50]} 的服务类别（见 services.json）")
    return render({"service_code": service_code, "attributes": []}, "service_definition", xml)


@discovery_router.get("/open311/discovery.{fmt}", summary="Open311 服务发现（公开）",
                      responses={200: {"description": "服务发现"}, 404: _ERROR})
def get_discovery(request: Request, fmt: Fmt) -> Response:
    xml = _xml(fmt)
    changed = datetime.fromtimestamp(Path(CATEGORY_TABLE).stat().st_mtime, BEIJING)
    changeset = changed.isoformat(timespec="seconds")
    return render({
        "changeset": changeset,
        "contact": "南通市生态环境局 12369 环保举报热线",
        "key_service": "接口密钥由本系统管理员用 gridmap apikey add 生成",
        "endpoints": [{"specification": SPEC_URL,
                       "url": str(request.base_url).rstrip("/") + router.prefix,
                       "changeset": changeset, "type": "production",
                       "formats": ["application/json", "text/xml"]}],
    }, "discovery", xml)


# -- POST a request --------------------------------------------------------------------------------
@router.post("/requests.{fmt}", summary="提交投诉（登记为案件）",
             description="表单（application/x-www-form-urlencoded，Open311 规范）或 JSON。"
                         "需 case.create 权限（调度员角色的密钥）。同一 client_request_id "
                         "（或 Idempotency-Key）重试返回同一案件编号；该编号用于另一条不同的"
                         "投诉时返回 409。位置不在本市辖区时返回 400。",
             openapi_extra={**POST_BODY, **SECURED},
             responses={200: {"description": "[{service_request_id, service_notice, "
                                             "account_id}]"},
                        400: _ERROR, 401: _ERROR, 403: _ERROR, 404: _ERROR, 409: _ERROR,
                        413: _ERROR, 415: _ERROR, 429: _ERROR})
async def post_request(request: Request, fmt: Fmt,
                       idempotency_key: str | None = Header(
                           None, alias="Idempotency-Key",
                           description="扩展：同 client_request_id")) -> Response:
    xml = _xml(fmt)
    form = await read_form(request)
    svc = request.app.state.service
    replays = request.app.state.replays

    def work(actor) -> Response:
        return render(create_request(svc, actor, form, idempotency_key, replays),
                      "service_requests", xml)

    return await acting(request, work, form)


async def read_form(request: Request) -> dict[str, str]:
    """The form fields (the first value of each), from a urlencoded or a JSON body. The body's
    size is limited by the server's middleware (413)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind == "" and body.lstrip()[:1] in (b"{", b"["):  # JSON sent without saying so
        raise ApiError(415, "请求内容像是 JSON，但没有请求头 Content-Type: application/json")
    if kind in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                              errors="strict", max_num_fields=200)
        except UnicodeDecodeError as exc:
            raise ApiError(400, "请求内容须为 UTF-8 编码（Open311 规范）") from exc
        except ValueError as exc:
            raise ApiError(400, "表单字段过多") from exc
        form: dict[str, str] = {}
        for k, v in pairs:
            form.setdefault(k, v)
        return form
    if kind == "application/json":
        try:
            data = json.loads(body.decode("utf-8-sig"))  # a BOM (some Windows clients) is fine
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
            raise ApiError(400, "请求内容不是有效的 JSON") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "JSON 请求内容须为对象（字段名: 值）")
        nested = sorted(str(k)[:50] for k, v in data.items()
                        if isinstance(v, list | dict) and k in READ_FIELDS)
        if nested:  # said, not dropped (a dropped service_code read as a missing one)
            raise ApiError(400, f"字段 {'、'.join(nested[:5])} 的值应为文字或数字，"
                                "不能是数组或对象")
        # Other fields (an Open311 client's attribute object …) are not read: left out.
        form = {str(k): "" if v is None else str(v) for k, v in data.items()
                if not isinstance(v, list | dict)}
        broken = sorted(k[:50] for k, v in form.items()
                        if k in READ_FIELDS and _has_surrogate(v))
        if broken:  # "\ud800" alone is no character: not text that can be stored or sent
            raise ApiError(400, f"字段 {'、'.join(broken[:5])} 含有无效的 Unicode 字符"
                                "（单独的代理项）")
        return form
    raise ApiError(415, "请求内容类型须为 application/x-www-form-urlencoded（Open311 规范）"
                        "或 application/json")


# The fields of a POST this service reads (a JSON array or object in one of them is refused):
# the documented ones, and the spec's address_id (refused with a word of its own).
READ_FIELDS = frozenset(_FORM_FIELDS) | {"address_id"}


def create_request(svc, actor, form: dict[str, str], idempotency_key: str | None,
                   replays: Replays | None = None) -> list[dict]:
    code = _text(form, "service_code", 50)
    if not code:
        raise ApiError(400, "缺少 service_code（服务类别编号，见 services.json）")
    categories = load_categories()
    if code not in categories:
        raise ApiError(404, f"没有编号为 {code} 的服务类别（见 services.json）")
    lat, lon = _number(form, "lat"), _number(form, "long")
    if lat is None or lon is None:
        if form.get("address_string") or form.get("address_id"):
            raise ApiError(400, "本系统不做地址匹配：请同时提供 lat 与 long 坐标"
                                "（address_string 可作为地点说明一并提交）")
        raise ApiError(400, "缺少位置：请同时提供 lat 与 long（WGS84；其他坐标系用 "
                            "coordinate_system 指明）")
    crs = _text(form, "coordinate_system", 40) or "wgs84"
    accuracy = _number(form, "accuracy_m") or 0.0
    request_id = client_request_id(form, idempotency_key)
    description = _text(form, "description", MAX_DESCRIPTION, multiline=True)
    marked = [m for m in (ADDRESS_MARK, MEDIA_MARK)
              if any(line.lstrip().startswith(m) for line in description.splitlines())]
    if marked:  # it would be read back as the address or the media link
        raise ApiError(400, f"description 的行不能以 {'、'.join(marked)} 开头：这两个标记留给 "
                            "address_string 与 media_url，请用这两个字段提交地址和图片")
    address = _text(form, "address_string", 500)
    media = _text(form, "media_url", 2000)
    if media and not _MEDIA_URL.match(media):
        raise ApiError(400, "media_url 须为 http 或 https 地址")
    name = _text(form, "last_name", 50) + _text(form, "first_name", 50)
    reporter = " ".join(p for p in (name, _text(form, "phone", 30), _text(form, "email", 100))
                        if p)

    composed = compose_description(description, address, media)

    def register() -> list[dict]:
        if request_id is not None:  # a retry that another process registered: no new intake
            known = svc.case_for_request(actor, request_id)
            if known is not None:
                _same_request(known, request_id, code, composed, lon, lat)
                return [{"service_request_id": str(known["id"]),
                         "service_notice": known_notice(known), "account_id": None}]
        # The same intake as the dispatcher's page; the entities nearby are not sent back.
        answer = svc.intake(actor, lon, lat, crs=crs, accuracy_m=accuracy, category=code,
                            nearby_radius_m=0.0)
        fields = {"category": code, "description": composed, "reporter": reporter,
                  "source": f"接口：{actor.name or actor.login}"}
        case_id = svc.create_case(actor, answer.route, fields, request_id=request_id)
        if request_id is not None:  # another attempt with this id may have been first
            _same_request(svc.case(actor, case_id), request_id, code, composed, lon, lat)
        return [{"service_request_id": case_id,
                 "service_notice": intake_notice(case_id, answer.route, answer.category,
                                                 answer.referral),
                 "account_id": None}]

    if request_id is None or replays is None:
        return register()
    # Keyed by what the request says too: a different complaint under a used id is not
    # answered from here with the first one's case, but refused by `_same_request`.
    return replays.run((actor.login, request_id, code, composed, lon, lat), register)


def _same_request(case, request_id: str, code: str, description: str, lon: float,
                  lat: float) -> None:
    """A client request id names one complaint: another one sent under it (a client reusing
    its ids) is refused, not silently answered with the first one's case — it would be lost."""
    same = (str(case["category"]) == code and str(case["description"] or "") == description
            and math.isclose(float(case["given_x"]), lon, abs_tol=1e-9)
            and math.isclose(float(case["given_y"]), lat, abs_tol=1e-9))
    if not same:
        raise ApiError(409, f"client_request_id {request_id} 已用于另一条不同的投诉（案件 "
                            f"{case['id']}）：重试须与原请求完全相同，新的投诉请使用新的编号")


class Replays:
    """The answers to POSTs with a client request id, kept per process: a retry that reaches
    the same process after its first attempt is answered from here, and identical retries
    that arrive together are registered once (the others wait for that answer). Only a saving:
    the store is what guarantees one case per id (`create_case(..., request_id=...)`), across
    processes and restarts; a case number, once given, never changes."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._done: OrderedDict[tuple, list[dict]] = OrderedDict()
        self._busy: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def run(self, key: tuple, register: Callable[[], list[dict]]) -> list[dict]:
        with self._lock:
            if key in self._done:
                return self._done[key]
            gate = self._busy.setdefault(key, threading.Lock())
        try:
            with gate:
                with self._lock:
                    if key in self._done:
                        return self._done[key]
                answer = register()
                with self._lock:
                    self._done[key] = answer
                    while len(self._done) > self.size:
                        self._done.popitem(last=False)
                return answer
        finally:
            with self._lock:
                if self._busy.get(key) is gate and not gate.locked():
                    del self._busy[key]


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def client_request_id(form: dict[str, str], header: str | None) -> str | None:
    given = _text(form, "client_request_id", 100)
    header = (header or "").strip()
    if header and given and header != given:
        raise ApiError(400, "client_request_id 与请求头 Idempotency-Key 不一致")
    value = given or header
    if len(value) > 100 or _has_control(value):
        raise ApiError(400, "Idempotency-Key 至多 100 个字符，且不能含控制字符")
    return value or None


def _has_control(text: str, allowed: str = "") -> bool:
    """Whether `text` holds a control or format character not in `allowed`, a lone surrogate
    (JSON's "\\ud800") or a noncharacter (U+FFFF …): nothing a person types, and what XML
    cannot carry."""
    return any((unicodedata.category(c) in ("Cc", "Cf", "Cs") or _noncharacter(c))
               and c not in allowed for c in text)


def _noncharacter(c: str) -> bool:
    code = ord(c)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def _text(form: dict[str, str], name: str, limit: int, multiline: bool = False) -> str:
    text = str(form.get(name) or "").strip()
    if len(text) > limit:
        raise ApiError(400, f"{name} 不能超过 {limit} 个字符（现有 {len(text)} 个）")
    if _has_control(text, "\n\r\t" if multiline else ""):
        raise ApiError(400, f"{name} 含有控制字符" + ("" if multiline else "或换行"))
    return text


def _number(form: dict[str, str], name: str) -> float | None:
    text = str(form.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(400, f"{name} 不是有效的数字：{text[:30]}")
    return value


def compose_description(text: str, address: str, media: str) -> str:
    """The case's description: the complaint, then the address and the media link as labelled
    last lines (the record has no columns of their own; the dispatcher reads them there)."""
    lines = [text] if text else []
    if address:
        lines.append(ADDRESS_MARK + address)
    if media:
        lines.append(MEDIA_MARK + media)
    return "\n".join(lines)


def split_description(stored: str) -> tuple[str, str | None, str | None]:
    """(complaint, address, media link) back from a description made by compose_description.
    A media line is taken only when it holds what `media_url` accepts (a case written on the
    dispatcher's page may hold any text: a "javascript:" link there stays text)."""
    lines = str(stored or "").split("\n")
    address = media = None
    if (lines and lines[-1].startswith(MEDIA_MARK)
            and _MEDIA_URL.match(lines[-1][len(MEDIA_MARK):])):
        media = lines.pop()[len(MEDIA_MARK):]
    if lines and lines[-1].startswith(ADDRESS_MARK):
        address = lines.pop()[len(ADDRESS_MARK):]
    return "\n".join(lines), address, media


# -- the notices -----------------------------------------------------------------------------------
def _ref(item: dict | None) -> str:
    return f"{item['name']}（{item['code']}）" if item else "—"


def known_notice(case) -> str:
    """The notice of a case registered by an earlier attempt of the same request."""
    import json

    route = json.loads(case["answer"]) if isinstance(case["answer"], str) else case["answer"]
    category = load_categories()[case["category"]]
    referral = category.agency_zh if category.handler == "partner" else None
    return intake_notice(str(case["id"]), route, category, referral)


def intake_notice(case_id: str, route: dict, category: Category, referral: str | None) -> str:
    """What the caller may tell the complainant: the case number, who is responsible."""
    parts = [f"已受理，案件编号 {case_id}。"]
    if referral:
        parts.append(f"“{category.label_zh}”类事项由{referral}负责，本系统已登记，将移交处理。")
    if route["status"] == "ambiguous":
        options = "；".join(dict.fromkeys(
            f"{_ref(c.get('bureau'))}，网格 {_ref(c.get('grid'))}"
            for c in route.get("candidates", [])))
        parts.append(f"位置处于管辖边界附近，可能属于：{options}。由调度员人工确认责任单位。")
    else:
        parts.append(f"责任执法机构：{_ref(route.get('bureau'))}；"
                     f"责任网格：{_ref(route.get('grid'))}。")
        if route.get("sea_area"):
            parts.append(f"海域：{_ref(route['sea_area'])}。")
    if "swapped" in (route.get("flags") or []):  # corrected, and said: the caller checks it
        lon, lat = (route.get("point") or {}).get("cgcs2000") or (None, None)
        where = f"（经度 {lon:.6f}，纬度 {lat:.6f}）" if lon is not None else ""
        parts.append(f"注意：所给 lat 与 long 像是填反了，已按对调后的位置{where}受理，请核对。")
    return "".join(parts)


# -- GET requests ----------------------------------------------------------------------------------
@router.get("/requests.{fmt}", summary="查询案件（列表）", openapi_extra=SECURED,
            description="service_request_id（逗号分隔，优先于其他参数）；否则按 start_date/"
                        "end_date（默认最近 90 天，跨度不超过 90 天）、status、service_code "
                        "筛选，最新在前，至多 1000 件。需 case.read 权限。",
            responses={200: {"description": "案件列表"}, 400: _ERROR, 401: _ERROR,
                       403: _ERROR, 429: _ERROR})
async def get_requests(
        request: Request, fmt: Fmt,
        service_request_id: str | None = Query(None, description="案件编号，逗号分隔"),
        service_code: str | None = Query(None, description="服务类别编号，逗号分隔"),
        start_date: str | None = Query(None, description="受理时间起，ISO 8601"),
        end_date: str | None = Query(None, description="受理时间止，ISO 8601"),
        status: str | None = Query(None, description="open、closed，逗号分隔"),
        jurisdiction_id: str | None = Query(None, description="本系统只服务南通市，可不填"),
        ) -> Response:
    xml = _xml(fmt)
    svc = request.app.state.service

    def work(actor) -> Response:
        return render(find_requests(svc, actor, service_request_id, service_code, start_date,
                                    end_date, status), "service_requests", xml)

    return await acting(request, work)


@router.get("/requests/{service_request_id}.{fmt}", summary="查询一件案件", openapi_extra=SECURED,
            responses={200: {"description": "[案件]"}, 401: _ERROR, 403: _ERROR, 404: _ERROR,
                       429: _ERROR})
async def get_request(request: Request, service_request_id: str, fmt: Fmt,
                      jurisdiction_id: str | None = Query(None, description="可不填"),
                      ) -> Response:
    xml = _xml(fmt)
    svc = request.app.state.service

    def work(actor) -> Response:
        found = svc.cases(actor, IncidentQuery(ids=(service_request_id,)))
        if found.empty:
            raise ApiError(404, f"没有编号为 {service_request_id[:60]} 的案件")
        return render(as_requests(svc, actor, found), "service_requests", xml)

    return await acting(request, work)


def find_requests(svc, actor, ids: str | None, codes: str | None, start: str | None,
                  end: str | None, status: str | None) -> list[dict]:
    if ids and ids.strip():
        wanted = tuple(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))
        if len(wanted) > MAX_REQUESTS:
            raise ApiError(400, f"一次至多查询 {MAX_REQUESTS} 件案件")
        return as_requests(svc, actor, svc.cases(actor, IncidentQuery(ids=wanted)))
    since, until = _window(start, end)
    states = {s.strip() for s in (status or "").split(",") if s.strip()}
    if states - {"open", "closed"}:
        raise ApiError(400, "status 只能是 open、closed（可用逗号分隔）")
    only = states if len(states) == 1 else set()
    categories = tuple(dict.fromkeys(c.strip() for c in (codes or "").split(",") if c.strip()))
    if len(categories) > MAX_CATEGORIES:
        raise ApiError(400, f"service_code 一次至多 {MAX_CATEGORIES} 个")
    # The newest MAX_REQUESTS, sorted and cut in the store (a province's 90 days hold hundreds
    # of thousands of cases: reading them all to keep a thousand took seconds and a worker's
    # memory); several categories: each one's newest, the newest of all being among them.
    query = IncidentQuery(
        reported_since=since.isoformat(), reported_until=until.isoformat(),
        statuses=("closed",) if only == {"closed"} else None,
        not_statuses=("closed",) if only == {"open"} else None,
        order="newest", limit=MAX_REQUESTS)
    parts = [svc.cases(actor, replace(query, category=c)) for c in categories or (None,)]
    parts = [p for p in parts if not p.empty]
    found = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (
        parts[0] if parts else pd.DataFrame())
    if not found.empty:
        at = pd.to_datetime(found["reported_at"], utc=True, format="ISO8601")
        found = found.assign(_at=at).sort_values(["_at", "id"], ascending=False)
        found = found.head(MAX_REQUESTS).drop(columns="_at")
    return as_requests(svc, actor, found)


def _when(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError as exc:
        # "…T00:00:00 08:00": a "+" left unencoded in the query string arrives as a space.
        hint = ("；查询参数中的“+”须写作 %2B" if re.search(r"\d \d{2}:?\d{2}$", text.strip())
                else "")
        raise ApiError(400, f"{name} 不是有效的时间：须为 ISO 8601，如 2026-11-01T00:00:00+08:00"
                       + hint) from exc
    if not FIRST_YEAR <= value.year <= LAST_YEAR:  # a window around it must stay a valid time
        raise ApiError(400, f"{name} 超出范围：须在 {FIRST_YEAR}–{LAST_YEAR} 年之间")
    return value if value.tzinfo else value.replace(tzinfo=BEIJING)


def _window(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The spec's window: the most recent 90 days by default, never more than 90 days."""
    since = _when(start, "start_date") if start and start.strip() else None
    until = _when(end, "end_date") if end and end.strip() else None
    if since is None and until is None:
        until = datetime.now(BEIJING)
    if since is None:
        since = until - WINDOW
    if until is None:
        until = since + WINDOW
    if until < since:
        raise ApiError(400, "end_date 早于 start_date")
    if until - since > WINDOW:
        raise ApiError(400, "start_date 与 end_date 相距不能超过 90 天（Open311 规范）")
    return since, until


def beijing(text) -> str | None:
    """An ISO time as Beijing time with its offset (+08:00), as the spec wants it."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return None
    ts = pd.Timestamp(str(text))
    if ts.tzinfo is None:
        ts = ts.tz_localize(BEIJING)
    return ts.tz_convert(BEIJING).to_pydatetime().isoformat(timespec="seconds")


def as_requests(svc, actor, cases: pd.DataFrame) -> list[dict]:
    if cases.empty:
        return []
    names = svc.bureau_names(actor)
    categories = load_categories()
    flow = load_flow()
    return [as_request(row, names, categories, flow) for row in cases.to_dict("records")]


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def as_request(row: dict, names: dict[str, str], categories: dict[str, Category], flow) -> dict:
    text, address, media = split_description(row.get("description") or "")
    try:
        answer = json.loads(row.get("answer") or "{}")
    except ValueError:
        answer = {}
    cat = categories.get(row["category"])
    status = row["status"]
    note = flow.label(status) if status in flow.states else (row.get("status_zh") or status)
    if row.get("overdue"):
        note += "；已超过办理时限"
    return {
        "service_request_id": row["id"],
        "status": "closed" if status == "closed" else "open",
        "status_notes": note,
        "service_name": cat.label_zh if cat else row["category"],
        "service_code": row["category"],
        "description": text,
        "agency_responsible": names.get(_str(row.get("assigned_bureau_code")) or ""),
        "service_notice": case_notice(row, answer, names, cat),
        "requested_datetime": beijing(row.get("reported_at")),
        "updated_datetime": beijing(row.get("updated_at")),
        "expected_datetime": beijing(row.get("deadline")),
        "address": address or place(answer),
        "address_id": None,
        "zipcode": None,
        "lat": round(float(row["lat"]), 8),
        "long": round(float(row["lon"]), 8),
        "media_url": media,
    }


def place(answer: dict) -> str | None:
    """The routed place, most specific first (the spec's order): grid, township, county."""
    names = [answer[k]["name"] for k in ("grid", "township", "county") if answer.get(k)]
    if answer.get("sea_area"):
        names.append(answer["sea_area"]["name"])
    return "，".join([*names, "南通市"]) if names else None


def case_notice(row: dict, answer: dict, names: dict[str, str], cat: Category | None) -> str:
    """Who is responsible now (after any reassignment)."""
    parts = []
    if cat is not None and cat.handler == "partner":
        parts.append(f"“{cat.label_zh}”类事项由{cat.agency_zh}负责，已移交处理。")
    bureau = _str(row.get("assigned_bureau_code"))
    grid = _str(row.get("assigned_grid_code"))
    routed_grid = answer.get("grid") or {}
    if (row.get("route_status") == "ambiguous" and bureau == _str(row.get("bureau_code"))
            and grid == _str(row.get("grid_code"))):
        parts.append("受理时位置存在歧义，待调度员人工确认责任单位。")
    grid_text = (_ref(routed_grid) if routed_grid.get("code") == grid
                 else (grid or "—"))
    parts.append(f"责任执法机构：{names.get(bureau or '', bureau or '—')}；责任网格：{grid_text}。")
    return "".join(parts)


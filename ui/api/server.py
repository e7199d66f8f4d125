"""The API app: FastAPI (Starlette) on uvicorn against one store — `gridmap api` runs it.

`create_api(store_url)` builds the app (tests and embedding); `run(store_url, host, port,
workers)` serves it: one uvicorn server, or `workers` spawned processes each with its own
listening socket on the port (`Workers`, `serve_worker`); each process builds its own app from
GRIDMAP_STORE and keeps its own replay cache (the rate buckets are the store's:
with PostGIS shared by every worker, layers/ratelimit.py).

Around the routes: a body-size limit (413 before a large body is read), an access log that
never writes query strings (they carry keys), and errors in Open311's format with Chinese
descriptions on every route — also for unknown paths, bad parameters and internal errors (no
traceback is ever sent).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo.crs import CrsError
from grids.access import Actor, PermissionDenied
from grids.accounts import AuthError
from grids.batch import BatchInputError
from grids.flow import CaseError
from grids.routing import RoutingInputError
from grids.service import Gridmap
from layers.store import StoreError, store_url
from ui.api import open311, routing
from ui.api.docs import add_docs
from ui.api.formats import ApiError, error_response, json_response
from ui.api.keys import SECURITY_SCHEMES, Keys, Limits
from ui.settle import settle

log = logging.getLogger("gridmap.api")


def loggable(text: object, limit: int = 200) -> str:
    """`text` for one line of the log: cut to `limit` characters, control characters (a
    decoded %0D%0A in a path, a tab) written as escapes, quotes and backslashes escaped — a
    request can neither start a log line of its own nor pass for another field."""
    return "".join(_escaped(ch) for ch in str(text)[:limit])


def _escaped(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    return ch if ch.isprintable() else ascii(ch)[1:-1]


TITLE = "南通市生态环境综合执法网格化监管 · HTTP 接口"
VERSION = "1"
DESCRIPTION = """
供其他系统（全国 12369 环保举报平台、12345 政务服务热线、微信小程序等）调用：

* **Open311 GeoReport v2**（`/open311/v2/`，`.json` 或 `.xml`）：服务类别、提交投诉（登记为案件，
  与调度员受理页面同一流程）、查询案件状态。扩展参数：`coordinate_system`（坐标系）、
  `accuracy_m`（定位精度）、`client_request_id` 或请求头 `Idempotency-Key`（重试不重复登记）。
* **位置查询**（MapIt 风格）：`/route`、`/point/{srid}/{x},{y}` 返回与 `gridmap route --json`
  相同的结果；`POST /route` 批量分派（GeoJSON 或 CSV，逐行流式返回 NDJSON）；`/areas/{code}`。

**密钥**：参数 `api_key`（查询参数或表单字段）或请求头 `X-API-Key`；由系统管理员用
`gridmap apikey add 名称 --role 角色` 生成，权限同该角色
（如 dispatcher 可提交投诉，viewer 只能查询）。
缺少或无效的密钥返回 401，无权限 403，请求过于频繁 429（见 `Retry-After`），请求体过大 413。
服务类别与本说明无需密钥。

**错误格式**（所有接口）：`[{"code": 400, "description": "中文说明"}]`。时间均为北京时间（+08:00）。
"""

# What the service refuses, and how (the messages are already Chinese).
SERVICE_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (PermissionDenied, 403), (RoutingInputError, 400), (CrsError, 400), (CaseError, 400),
    (BatchInputError, 400), (AuthError, 400), (StoreError, 400),
)
BATCH_PATH = "/route"


def create_api(url: str | None = None, limits: Limits | None = None) -> FastAPI:
    """The app over the store at `url` (default: GRIDMAP_STORE, DATABASE_URL, the default
    file)."""
    limits = limits or Limits.from_env()
    service = Gridmap(store_url(url))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        # Store work runs in worker threads, each with its own store connection: bounded.
        anyio.to_thread.current_default_thread_limiter().total_tokens = limits.threads
        await anyio.to_thread.run_sync(_preload, service)
        yield

    app = FastAPI(title=TITLE, version=VERSION, description=DESCRIPTION, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.service = service
    app.state.limits = limits
    app.state.keys = Keys(service, limits)
    app.state.replays = open311.Replays(limits.replays) if limits.replays else None
    app.include_router(open311.router)
    app.include_router(open311.discovery_router)
    app.include_router(routing.router)
    add_docs(app)
    _add_errors(app)
    generate = app.openapi

    def openapi() -> dict:
        schema = generate()  # made once and kept by FastAPI
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return schema

    app.openapi = openapi

    @app.get("/", include_in_schema=False)
    def index():
        return json_response({"name": TITLE, "docs": "/docs", "openapi": "/openapi.json",
                              "open311": "/open311/v2/services.json",
                              "discovery": "/open311/discovery.json"})

    # HEAD too: a load balancer's or a monitor's health check often asks for the headers only.
    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    def health():
        return json_response({"status": "ok"})

    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(AccessLog)
    return app


def _preload(service: Gridmap) -> None:
    """Load the current layers before the first request (a worker answers only once they are
    in memory), then settle (ui/settle.py: the loaded state frozen for the garbage collector,
    arrow's freed blocks given back)."""
    try:
        service.map_router(Actor.system("api")).resolver.faces()  # see Gridmap.warm
    except (StoreError, PermissionDenied) as exc:  # no layers yet: the first request says so
        log.warning("未能预先加载图层：%s", exc)
    service.serving()
    settle()


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (`run` sets GRIDMAP_STORE)."""
    _logging()
    return create_api(os.environ.get("GRIDMAP_STORE"))


def run(url: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    try:
        Limits.from_env()
    except ValueError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    if workers < 1:
        print("错误：--workers 至少为 1", file=sys.stderr)
        raise SystemExit(2)
    service = Gridmap(url)
    try:
        service.current_generation()  # no store or no layers: refused before serving
    finally:
        service.close()
    os.environ["GRIDMAP_STORE"] = url
    if workers == 1:
        server = uvicorn.Server(_config(host, port))
        server.run()
        if not server.started:
            raise SystemExit(3)
        return
    _probe(host, port)
    if not Workers(host, port, workers).run():
        raise SystemExit(3)


def _config(host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config("ui.api.server:app_from_env", factory=True, host=host, port=port,
                          access_log=False, server_header=False, log_level="info")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _probe(host: str, port: int) -> None:
    """Refuse a port in use — also by another `gridmap api` (whose workers share it through
    SO_REUSEPORT: a plain bind fails against them)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            print(f"错误：无法监听 {host}:{port}：{exc.strerror}", file=sys.stderr)
            raise SystemExit(2) from exc


def serve_worker(host: str, port: int) -> None:
    """One worker process: its own listening socket on the shared port (SO_REUSEPORT), so that
    the kernel spreads connections evenly over the workers — with one socket shared by all,
    whichever wakes first takes every waiting connection, and keep-alive clients stay on it.
    Nagle's algorithm is off (asyncio does that only on sockets it opens itself; with it on,
    each keep-alive answer waits ~40 ms for the client's delayed ACK)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    uvicorn.Server(_config(host, port)).run(sockets=[sock])


class Workers:
    """`--workers N`: N processes (spawned, not forked: the layers' libraries hold threads and
    state), each serving the app; one that dies is started again; SIGINT/SIGTERM stop them all
    (each finishes the requests in flight)."""

    def __init__(self, host: str, port: int, count: int) -> None:
        import multiprocessing

        self.host, self.port, self.count = host, port, count
        self.context = multiprocessing.get_context("spawn")
        self.processes: list = []
        self.stopping = False
        self.failed = False

    def _start(self):
        process = self.context.Process(target=serve_worker, args=(self.host, self.port))
        process.start()
        return process

    def _stop(self, *_args) -> None:
        self.stopping = True

    def run(self) -> bool:
        """Serve until stopped; False when a worker could not start."""
        import signal

        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        _logging()
        log.info("HTTP 接口：%d 个工作进程，监听 http://%s:%d", self.count, self.host, self.port)
        self.processes = [self._start() for _ in range(self.count)]
        since = [time.monotonic()] * self.count
        while not self.stopping:
            time.sleep(0.5)
            for i, process in enumerate(self.processes):
                if process.is_alive() or self.stopping:
                    continue
                if (process.exitcode or 0) > 0 and time.monotonic() - since[i] < 10:
                    # An error at start-up (the store, the port): restarting would not help.
                    log.error("工作进程启动失败（退出码 %s），停止服务", process.exitcode)
                    self.stopping = self.failed = True
                    break
                log.warning("工作进程 %s 已退出（退出码 %s），重新启动", process.pid,
                            process.exitcode)
                self.processes[i] = self._start()
                since[i] = time.monotonic()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        return not self.failed


def _logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


# -- errors ----------------------------------------------------------------------------------------
def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.description, request.url.path, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            text = f"没有这个接口地址：{request.url.path[:100]}（接口说明见 /docs）"
        elif exc.status_code == 405:
            text = f"该地址不支持 {request.method} 请求"
        else:
            text = str(exc.detail)
        return error_response(exc.status_code, text, request.url.path,
                              getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(400, validation_text(exc), request.url.path)

    for kind, status in SERVICE_ERRORS:
        app.add_exception_handler(kind, _refusal(status))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("内部错误 %s %s: %s: %s", request.method, loggable(request.url.path),
                  type(exc).__name__, loggable(exc, 1000))
        return error_response(500, "服务内部错误，请稍后重试；持续出现请联系系统管理员",
                              request.url.path)


def _refusal(status: int):
    async def handler(request: Request, exc: Exception):
        return error_response(status, str(exc), request.url.path)

    return handler


def validation_text(exc: RequestValidationError) -> str:
    """FastAPI's validation errors, in Chinese, naming the parameters."""
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "请求"
        kind = str(e.get("type", ""))
        if kind == "missing":
            parts.append(f"缺少参数 {name}")
        elif kind.startswith("int"):
            parts.append(f"参数 {name} 应为整数")
        elif kind.startswith(("float", "decimal")):
            parts.append(f"参数 {name} 应为数字")
        elif "too_long" in kind:
            parts.append(f"参数 {name} 过长")
        else:
            parts.append(f"参数 {name} 无效")
    return "；".join(dict.fromkeys(parts)) or "请求参数无效"


# -- middleware ------------------------------------------------------------------------------------
def size_text(limit: int) -> str:
    return f"{limit / 1e6:g} MB" if limit >= 1_000_000 else f"{limit / 1e3:g} KB"


class BodyLimit:
    """Request bodies up to `limits.max_batch` for POST /route, `limits.max_form` elsewhere:
    a larger declared length is refused before reading; a body without one is counted as it is
    read and refused (413) when it passes the limit."""

    def __init__(self, app, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limits.max_batch if path == BATCH_PATH else self.limits.max_form
        message = f"请求体过大：此接口至多 {size_text(limit)}"
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > limit:
            await error_response(413, message, path)(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    raise ApiError(413, message)
            return event

        await self.app(scope, counted, send)


class AccessLog:
    """One line per request: client, method, path (never the query string: keys travel in it),
    status, time and the key's account."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(event):
            nonlocal status
            if event["type"] == "http.response.start":
                status = event["status"]
            await send(event)

        try:
            await self.app(scope, receive, sending)
        finally:
            if log.isEnabledFor(logging.INFO):
                client = (scope.get("client") or ("-",))[0]
                who = (scope.get("state") or {}).get("api_login", "-")
                log.info('%s "%s %s" %s %.1fms %s', client, loggable(scope["method"], 20),
                         loggable(scope.get("path", "")), status,
                         (time.perf_counter() - started) * 1000, loggable(who, 100))

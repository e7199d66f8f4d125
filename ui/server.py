"""The web server: Streamlit (st.App, on Starlette/uvicorn) behind our own sign-in.

Nothing but the login form is served without a session: a pure-ASGI gate in front of every
route — pages, Streamlit's own scripts, its websocket, uploads, media and the map's static data
files — lets a request through only with a live session cookie. The session is checked in the
store (grids/service.py), so a logout, an expiry or a disabled account ends it everywhere. The
map's data files are further limited to the roles that may see the city map, and a file of
open incidents to the audience it was written for (ui/mapdata.py).

`gridmap serve` runs it (README); `streamlit run app.py` alone refuses to show anything.
"""

from __future__ import annotations

import asyncio
import html
import math
import os
import posixpath
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from grids.access import Actor, can
from grids.accounts import AuthError
from grids.service import Gridmap
from ui.production import SESSION_CHECK

# What a page asks when its connection has dropped: is my session still alive (204, or 401)?
# Unlike SESSION_CHECK (internal to the production proxy) it is reachable from the browser.
SESSION_ALIVE = "/_gridmap/alive"

ROOT = Path(__file__).resolve().parent.parent
SESSION_COOKIE = "gridmap_session"
CSRF_COOKIE = "gridmap_login_csrf"
SERVED_FLAG = "GRIDMAP_SERVED"  # set by serve(): the pages refuse to run without it
# Served without a session: the form, the way out, and the health check a supervisor asks
# (Streamlit's script-health-check is not among them: unhandled, it answered with the shell).
OPEN_PATHS = ("/login", "/logout", "/_stcore/health")
STATIC_DATA = "/app/static/cache/"
CHECK_TTL_S = 5.0  # a session checked this recently is not checked again for static files
MAX_FORM_BYTES = 4096

_checked: dict[str, tuple[float, Actor | None]] = {}
# Sessions ended here (logout) in the last minute: never answered from, nor put back into,
# _checked — a check that began before the logout and ends after it must not revive the token.
_ended: dict[str, float] = {}
ENDED_KEEP_S = 60.0
_service: Gridmap | None = None


def service() -> Gridmap:
    """The process's service object (also used by the pages, see ui/state.py)."""
    global _service
    from layers.store import store_url

    wanted = store_url(os.environ.get("GRIDMAP_STORE"))
    if _service is None or _service.url != wanted:
        _service = Gridmap(wanted)
        _checked.clear()
    return _service


def cookies_of(scope) -> dict[str, str]:
    jar = SimpleCookie()
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header counts as no cookie
                return {}
    return {k: m.value for k, m in jar.items()}


def _actor(token: str | None) -> Actor | None:
    """The session's actor (cached for a few seconds: a page load fetches ~150 files)."""
    if not token:
        return None
    now = time.monotonic()
    if token in _ended:
        return None
    hit = _checked.get(token)
    if hit and now - hit[0] < CHECK_TTL_S:
        return hit[1]
    # Runs in the thread pool: the service keeps one store per pool thread, reused.
    actor = service().actor_for(token)
    if len(_checked) > 10_000:
        _checked.clear()
    if token in _ended:  # logged out while the store was asked
        return None
    _checked[token] = (now, actor)
    return actor


class SessionGate:
    """Pure ASGI middleware: no session, no content (and no websocket)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = cookies_of(scope).get(SESSION_COOKIE)
        # A session checked moments ago is answered here, on the event loop: a page's first
        # load asks nginx for ~100 files, each checked (auth_request), and none of them needs
        # a hop to the thread pool for an answer already known.
        actor = _recently_checked(token)
        if actor is None:
            actor = await run_in_threadpool(_actor, token)
        if actor is None:
            await self._refuse(scope, receive, send, path)
            return
        if path in (SESSION_CHECK, SESSION_ALIVE):
            # The production proxy's auth_request (ui/production.py), or a page asking after
            # its connection dropped (ui/auth.py): a live session is all they ask (without one
            # the gate has answered 401 above).
            await Response(status_code=204, headers={"Cache-Control": "no-store"})(
                scope, receive, send)
            return
        # The file a handler will serve, not the path as sent: "/app/static/./cache/…" and
        # "//" name the same file and must meet the same check.
        served = posixpath.normpath("/" + path.lstrip("/"))
        if served.startswith(STATIC_DATA) and not _may_fetch(actor, served):
            await PlainTextResponse("无权访问该文件", status_code=403)(scope, receive, send)
            return
        if scope["type"] == "http":
            send = _page_headers(send)
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, receive, send, path: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "login required"})
            return
        method = scope.get("method", "GET")
        accept = dict(scope.get("headers", [])).get(b"accept", b"").decode("latin-1")
        if method == "GET" and ("text/html" in accept or path in ("/", "")):
            # With its query: a link to one case (/案件?case=…) opens that case after signing in.
            query = scope.get("query_string", b"").decode("latin-1")
            target = f"{path}?{query}" if query else path
            target = target if _safe_next(target) else path if _safe_next(path) else "/"
            response: Response = RedirectResponse(f"/login?next={quote(target)}",
                                                  status_code=303)
        else:
            response = PlainTextResponse("请先登录", status_code=401)
        await response(scope, receive, send)


# A page (Streamlit's HTML shell) of a signed-in person: never kept by the browser or a proxy
# (Back after signing out must not show it) and never framed by another site's page. Behind
# the production proxy nginx sets Cache-Control itself and leaves the framing to these.
_PAGE_HEADERS = ((b"cache-control", b"private, no-store"), (b"x-frame-options", b"SAMEORIGIN"),
                 (b"content-security-policy", b"frame-ancestors 'self'"))


def _page_headers(send):
    """`send`, with the headers of _PAGE_HEADERS put on an HTML response."""

    async def sending(message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if kind.startswith(b"text/html"):
                mine = {k for k, _ in _PAGE_HEADERS}
                headers = [(k, v) for k, v in headers if k.lower() not in mine]
                message = {**message, "headers": [*headers, *_PAGE_HEADERS]}
        await send(message)

    return sending


def _recently_checked(token: str | None) -> Actor | None:
    """The actor of a session checked within CHECK_TTL_S, or None (unknown: ask _actor)."""
    hit = _checked.get(token or "")
    if not hit or time.monotonic() - hit[0] >= CHECK_TTL_S or token in _ended:
        return None
    return hit[1]


def _may_fetch(actor: Actor, path: str) -> bool:
    """Map data files: the city map's roles only; an incidents file only for its audience."""
    from ui import mapdata

    if not can(actor, "map.city"):
        return False
    name = path.rsplit("/", 1)[-1]
    if name.startswith("incidents-"):
        return mapdata.written_for(name, mapdata.audience(actor))
    return True


def _safe_next(target: str) -> bool:
    """Only a path of this site (no scheme, no host, no //): no open redirect."""
    parts = urlsplit(target)
    return (target.startswith("/") and not target.startswith("//") and not parts.scheme
            and not parts.netloc and "\\" not in target and len(target) < 300)


# -- the login form -------------------------------------------------------------------------------
def _sample_store() -> bool:
    try:
        return service().is_sample_store()
    except Exception:  # no store yet: the form is shown all the same
        return False


def login_page(message: str = "", next_path: str = "/", csrf: str = "", login: str = "",
               status: int = 200, sample: bool = False) -> HTMLResponse:
    notice = ("<p class='demo'>这是示例数据库：演示账号及密码见 README，仅供演示，"
              "正式使用前请停用。</p>") if sample else ""
    error = f"<p class='err' role='alert'>{html.escape(message)}</p>" if message else ""
    body = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>登录 · 南通市生态环境执法网格地图</title>
<style>
body {{ font-family: "Microsoft YaHei", "PingFang SC", "WenQuanYi Micro Hei", sans-serif;
       background: #f3f6f4; margin: 0; display: flex; min-height: 100vh;
       align-items: center; justify-content: center; }}
form {{ background: #fff; padding: 28px 28px 20px; border-radius: 10px; width: min(360px, 88vw);
       box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
h1 {{ font-size: 19px; margin: 0 0 4px; color: #1d4f3a; }}
.sub {{ color: #667; font-size: 14px; margin: 0 0 18px; }}
label {{ display: block; font-size: 15px; margin: 12px 0 4px; color: #333; }}
input {{ width: 100%; box-sizing: border-box; font-size: 16px; padding: 10px; min-height: 44px;
        border: 1px solid #bbb; border-radius: 6px; }}
button {{ width: 100%; margin-top: 18px; min-height: 46px; font-size: 16px; border: 0;
         border-radius: 6px; background: #1f7a53; color: #fff; cursor: pointer; }}
.err {{ color: #b00020; font-size: 14px; }}
.demo {{ color: #8a5a00; background: #fff6e0; padding: 8px; font-size: 13px; border-radius: 6px; }}
.foot {{ color: #889; font-size: 12px; margin-top: 14px; }}
</style></head>
<body><form method="post" action="/login" autocomplete="on">
<h1>南通市生态环境综合执法网格地图</h1>
<p class="sub">请使用本人账号登录</p>
{notice}{error}
<label for="login">登录名</label>
<input id="login" name="login" value="{html.escape(login)}" autocomplete="username"
       maxlength="32" required autofocus>
<label for="password">密码</label>
<input id="password" name="password" type="password" autocomplete="current-password"
       maxlength="128" required>
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button type="submit">登录</button>
<p class="foot">连续 5 次密码错误将锁定账号 15 分钟。登录、操作均记入审计记录。</p>
</form></body></html>"""
    response = HTMLResponse(body, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    return response


def _with_csrf(response: HTMLResponse, csrf: str, secure: bool) -> HTMLResponse:
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=secure,
                        path="/login")
    return response


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or os.environ.get("GRIDMAP_COOKIE_SECURE") == "1"


async def login(request: Request) -> Response:
    secure = _secure(request)
    sample = await run_in_threadpool(_sample_store)  # store reads stay off the event loop
    if request.method == "GET":
        next_path = request.query_params.get("next", "/")
        csrf = secrets.token_urlsafe(24)
        return _with_csrf(login_page(next_path=next_path if _safe_next(next_path) else "/",
                                     csrf=csrf, sample=sample), csrf, secure)
    body = await _small_body(request)
    if body is None:
        return PlainTextResponse("请求过大", status_code=413)
    client = request.client.host if request.client else ""
    # Every attempt takes its token before it is checked (and a success gives it back): parallel
    # guesses cannot all pass a check made before the first of them failed.
    wait = await run_in_threadpool(_take, client, 1.0)
    if wait > 0:
        seconds = math.ceil(wait)
        return PlainTextResponse(f"该地址登录失败次数过多，请 {seconds} 秒后再试",
                                 status_code=429, headers={"Retry-After": str(seconds)})
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    next_path = form.get("next", "/")
    next_path = next_path if _safe_next(next_path) else "/"
    csrf_new = secrets.token_urlsafe(24)
    given = form.get("csrf", "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        return _with_csrf(login_page("页面已过期，请重新输入登录名和密码", next_path, csrf_new,
                                     status=400, sample=sample), csrf_new, secure)
    try:
        signed = await _signing(service().sign_in, form.get("login", "")[:64],
                                form.get("password", "")[:256], client)
    except AuthError as exc:
        return _with_csrf(login_page(str(exc), next_path, csrf_new, form.get("login", "")[:32],
                                     status=401, sample=sample), csrf_new, secure)
    await run_in_threadpool(_take, client, -1.0)  # a success is not a failure
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # this browser's earlier session ends with the new one
        forget(previous)
        await run_in_threadpool(service().sign_out, previous)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, signed.token, httponly=True, samesite="lax",
                        secure=secure, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/login")
    return response


async def _small_body(request: Request) -> bytes | None:
    """The request body, or None as soon as it is larger than a login form can be (a huge
    body is never read into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# Per client address: accounts lock after 5 failures, but one address trying many logins is
# slowed down too: IP_FAILURES failures at once, then one more every IP_WINDOW_S / IP_FAILURES
# seconds — a token bucket of the store (layers/ratelimit.py): with PostGIS one bucket per
# address for every app process behind the proxy.
IP_FAILURES = 30
IP_WINDOW_S = 600.0


def _take(client: str, cost: float) -> float:
    return service().take_token(f"login:{client}", IP_FAILURES / IP_WINDOW_S, IP_FAILURES,
                                cost)


# Password hashes wait their turn (accounts._HASHING) in threads of their own: a burst of
# sign-ins must not fill the thread pool that every signed-in page's session check uses.
_SIGNING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gridmap-sign-in")


async def _signing(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_SIGNING, fn, *args)


async def logout(request: Request) -> Response:
    # A link on another site must not sign people out (the cookie is Lax: a top-level GET
    # from elsewhere carries it); the sidebar's own link is same-origin.
    if request.headers.get("sec-fetch-site") == "cross-site":
        return RedirectResponse("/", status_code=303)
    token = request.cookies.get(SESSION_COOKIE)
    forget(token)
    await run_in_threadpool(service().sign_out, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def forget(token: str | None) -> None:
    """Drop a session from the gate's short cache (at a logout), for good in this process."""
    if not token:
        return
    now = time.monotonic()
    for old in [t for t, at in _ended.items() if now - at > ENDED_KEEP_S]:
        _ended.pop(old, None)
    _ended[token] = now  # before the pop: a check finishing in between sees it ended
    _checked.pop(token, None)


def create_app():
    import streamlit as st

    os.environ[SERVED_FLAG] = "1"
    return st.App(str(ROOT / "app.py"),
                  routes=[Route("/login", login, methods=["GET", "POST"]),
                          Route("/logout", logout, methods=["GET", "POST"])],
                  middleware=[Middleware(SessionGate)])


# Streamlit settings of the served app (the same as .streamlit/config.toml, so that the app
# behaves the same whatever directory it is started from).
SERVER_CONFIG = {
    "server.headless": True,
    "server.enableStaticServing": True,
    "server.fileWatcherType": "none",
    "server.maxUploadSize": 50,
    "browser.gatherUsageStats": False,
    "client.toolbarMode": "minimal",
    "client.showSidebarNavigation": False,
    # Tracebacks (with server paths) are for the log, not for visitors.
    "client.showErrorDetails": "none",
    # The app is not embedded in another site: no parent frame may send it messages (Streamlit's
    # default trusts its Community Cloud domains, and matching every message against that list
    # costs a phone's CPU on each script run).
    "client.allowedOrigins": [],
    "theme.base": "light",
    # Streamlit runs a full collection (gc.collect(2)) after every script run by default: with
    # the layers in memory that was a quarter of the server's CPU when many people open the app
    # at once (bench/bench_sessions.py). Python's own generational collection still runs.
    "runner.postScriptGC": False,
    # No page relies on "magic" (a bare expression written to the page): off, a page's script
    # is compiled as written, without Streamlit's AST rewrite each time its cache is filled
    # (every time the last session of a process has closed), and a stray expression can never
    # print data on a page.
    "runner.magicEnabled": False,
}


# Set by the production setup (ui/production.py) for the app behind nginx: websocket messages
# (the map's HTML rides in them) compressed with permessage-deflate, negotiated through nginx.
WS_COMPRESSION_FLAG = "GRIDMAP_WS_COMPRESSION"


# Imported inside Streamlit's own functions when a page first shows an emoji or an icon; and
# what the page modules left to the first run import (folium: half a second of a process's
# first page).
_LAZY_IMPORTS = ("streamlit.emojis", "streamlit.material_icon_names", "folium",
                 "folium.plugins")
# Left to the first page run: modules that declare Streamlit components when imported
# (streamlit_folium; ui.page, ui.worker, ui.geolocate …) register them with the running
# server only when imported inside a script run — imported before, the map would not load.
_IMPORTED_IN_A_RUN = ("ui", "streamlit_folium")


def preimport_pages() -> list[str]:
    """The modules the pages import, imported before the process listens (returns their
    names; not those of _IMPORTED_IN_A_RUN). The pages are scripts: otherwise their imports
    ran in the first visitors' page runs, in each process (py-spy of twenty sessions starting
    at once: a tenth of the app processes' CPU was importing)."""
    import ast
    import importlib

    names: list[str] = list(_LAZY_IMPORTS)
    for script in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
                # `from ui import cards`: the names may be modules of the package.
                names += [f"{node.module}.{alias.name}" for alias in node.names]
    done = []
    for name in dict.fromkeys(names):
        if name == "__future__" or name.split(".")[0] in _IMPORTED_IN_A_RUN:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a module that is there failed to import: say so now
                raise
            continue  # `from x import name`: a name, not a module
        done.append(name)
    return done


def warm_up() -> None:
    """Before the server listens: the layers loaded, the map's data files of the default
    basemap written whole (ui/mapdata.warm), the search index built, the entities let go,
    then the process settled (ui/settle.py: everything loaded frozen for the garbage
    collector, freed memory given back)."""
    from layers import display
    from ui import mapdata
    from ui.basemap import load_settings
    from ui.settle import settle

    preimport_pages()
    svc = service()
    svc.warm()
    settings = load_settings()
    # The process itself, before anyone is signed in: the local administrator's rights.
    admin = Actor.local_admin()
    router = svc.map_router(admin)
    mapdata.warm(svc.url, router, settings.get(settings.default))
    # The search index too: its first use otherwise read and indexed a province's million
    # entities while a dispatcher waited (25 s). It keeps only the columns it shows.
    svc.search_index(admin)
    # Then the entities let go: no page needs them all (a worker's page and a patrol visit
    # ask the store). A province's process kept 1.2 GB for nothing.
    router.snapshot.release("entities")
    display.forget_entities(router.snapshot)
    settle()


def serve(store: str, host: str = "127.0.0.1", port: int = 8501) -> None:
    os.environ["GRIDMAP_STORE"] = store
    warm_up()
    app = create_app()
    config = {**SERVER_CONFIG, "server.address": host, "server.port": port}
    if os.environ.get(WS_COMPRESSION_FLAG) == "1":
        config["server.enableWebsocketCompression"] = True
    app.run(config=config)

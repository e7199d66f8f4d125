"""Production serving: nginx (a Debian package) in front of `gridmap serve`.

`gridmap serve --production` (README "Production serving"; `make prod` installs nginx first)
starts the app on 127.0.0.1 at a port of its own, writes an nginx configuration into a run
directory (its own pid, logs and temp paths: no root needed), starts nginx in front of it, and
stops both on Ctrl-C (`--app-processes N`: N app processes in nginx's upstream, each browser
kept on one by its session cookie, see `upstream_servers`). Streamlit does not compress its
frontend (its 5 MB of scripts reach a phone as they are on disk); nginx does:

- **precompressed files** (`gzip_static`, `brotli_static`): Streamlit's frontend, the vendored
  map libraries (static/vendor) and the streamlit-folium frontend are mirrored into `.run/www/`
  (symlinks to the installed files, not copies) with a `.gz` (gzip -9) and, where Debian's
  `brotli` is installed, a `.br` (brotli -q 11) beside each compressible file. The mirror is
  shared by every run and redone only for files that changed; it is written in the background
  while nginx already serves (compressing on the fly until a file's turn has come);
- **on-the-fly compression** (brotli 5 / gzip 6) of everything the app answers itself: pages,
  `/_stcore/*`, the map's data files; the app behind nginx compresses its websocket messages
  (permessage-deflate: the map's HTML rides in them; 137 kB → 18 kB for the worker page);
- **caching**: `public, max-age=31536000, immutable` only for files whose URL changes with their
  content — Streamlit's content-hashed bundles (`/static/js/index.DormvYxC.js`), the vendored
  libraries (`package@version` directories), streamlit-folium's hashed build — and `private` for
  the app's own script (versioned by `?v=<digest>`); pages, `/login`, `/_stcore/*`, media and
  the per-user map data are `private` and never stored (map data: revalidated).

Nothing is served without a session, as before: nginx asks the app (`auth_request` to
`/_gridmap/session`, answered by the sign-in gate of ui/server.py) before it serves a file from
the mirror, and proxies everything else — the gate, the role checks on map data files and the
websocket included — to the app. The websocket `/_stcore/stream` is upgraded; the client's
address and scheme are passed on (X-Forwarded-For/-Proto, trusted by uvicorn from 127.0.0.1),
so the per-address login throttle and Secure cookies behind TLS work. The request body limit
is the app's upload limit.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run" / "production"
WWW_DIR = ROOT / ".run" / "www"
DEFAULT_PORT = 8080
DEBIAN_PACKAGES = ("nginx-light", "libnginx-mod-http-brotli-filter",
                   "libnginx-mod-http-brotli-static", "brotli")
IMMUTABLE = "public, max-age=31536000, immutable"
# Worth compressing (fonts in woff2, images in png/gif are compressed already).
COMPRESSIBLE = {".js", ".mjs", ".css", ".json", ".svg", ".html", ".txt", ".xml", ".ttf",
                ".eot", ".otf", ".map", ".ico", ".wasm"}
MIN_COMPRESS_BYTES = 256
# On-the-fly compression (nginx's gzip and brotli filters) of what the app answers itself.
COMPRESSED_TYPES = ("text/plain text/css text/xml application/javascript text/javascript "
                    "application/json application/xml image/svg+xml application/wasm "
                    "application/manifest+json")
HASHED_NAME = re.compile(r"[.-][A-Za-z0-9_-]{8}\.[a-z0-9]+$")  # index.DormvYxC.js
FOLIUM_COMPONENT = "streamlit_folium.st_folium"
APP_START_S = 900  # an app process's start, layers and map files included
# A stop is bounded: what has not ended by then is killed (an app process freeing a province's
# layers under load can take seconds; nobody waits for it at Ctrl-C).
NGINX_STOP_S = 8
APP_STOP_S = 10
SESSION_CHECK = "/_gridmap/session"  # answered by the sign-in gate of ui/server.py
# Streamlit's page shell gets one line (nginx sub_filter, before its module script): where the
# server is. Without it Streamlit's frontend first asks for /_stcore/health and host-config
# under the page's own path (/网格员/_stcore/health: 404) and only then at the root — a round
# trip lost on every page load, on a phone's 4G about 0.1–0.3 s.
SHELL_ANCHOR = '<script type="module" crossorigin'
SHELL_SCRIPT = ('<script>window.__streamlit=window.__streamlit||'
                '{BACKEND_BASE_URL:location.origin+"/"};</script>')


class ProductionError(RuntimeError):
    """The production setup cannot start; the message is for the user (Chinese)."""


# -- what is installed ----------------------------------------------------------------------------
def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def brotli_binary() -> str | None:
    return shutil.which("brotli")


def modules_dir(nginx: str) -> Path:
    """nginx's dynamic modules directory (from `nginx -V`; Debian: /usr/lib/nginx/modules)."""
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"--modules-path=(\S+)", out)
    return Path(found[1] if found else "/usr/lib/nginx/modules")


def brotli_modules(nginx: str) -> list[Path]:
    """The brotli filter and static modules (Debian's libnginx-mod-http-brotli-*), if both are
    installed; otherwise nginx serves gzip only."""
    mods = [modules_dir(nginx) / f"ngx_http_brotli_{m}_module.so" for m in ("filter", "static")]
    return mods if all(m.is_file() for m in mods) else []


def missing_message() -> str:
    return ("未找到 nginx。生产模式需要 Debian 的 nginx：请运行 make prod（会自动安装），或 "
            f"sudo apt-get install {' '.join(DEBIAN_PACKAGES)}")


# -- the precompressed mirror ---------------------------------------------------------------------
def streamlit_static_dir() -> Path:
    spec = importlib.util.find_spec("streamlit")
    return Path(spec.origin).parent / "static"


def folium_component_dir() -> Path:
    spec = importlib.util.find_spec("streamlit_folium")
    return Path(spec.origin).parent / "frontend" / "build"


def mirror_sources() -> dict[str, Path]:
    """Mirror subdirectory → the installed directory it mirrors."""
    from ui.assets import VENDOR_DIR

    return {"streamlit": streamlit_static_dir(), "vendor": VENDOR_DIR,
            f"component/{FOLIUM_COMPONENT}": folium_component_dir()}


def _files(directory: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(directory, followlinks=True):
        for name in names:
            yield Path(dirpath) / name


def _compressed_ok(target: Path, source: Path) -> bool:
    try:
        return target.stat().st_mtime_ns == source.stat().st_mtime_ns
    except OSError:
        return False


def _write_compressed(source: Path, target: Path, kind: str, brotli: str | None) -> None:
    """target (.gz or .br of source), written whole and then renamed: nginx never serves half
    a file; its mtime is the source's, which is how a stale one is recognised."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if kind == "gz":
            with source.open("rb") as src, tmp.open("wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                                  mtime=0) as out:
                shutil.copyfileobj(src, out)
        else:
            with tmp.open("wb") as out:
                nice = ["nice", "-n", "10"] if shutil.which("nice") else []  # serving first
                subprocess.run([*nice, brotli, "-q", "11", "-c", str(source)], stdout=out,
                               check=True)
        st = source.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _older(path: Path, seconds: float) -> bool:
    with contextlib.suppress(OSError):
        return time.time() - path.lstat().st_mtime > seconds
    return False


def plan_mirror(www: Path = WWW_DIR, sources: dict[str, Path] | None = None,
                brotli: str | None = None) -> list[tuple[Path, Path, str]]:
    """Lay out the mirror's symlinks (at once) and remove what no longer has a source; returns
    the compressions still to do, (source, target, "gz"|"br"), smallest file first (the page's
    own small chunks are ready soonest; Plotly's 4.7 MB last)."""
    sources = mirror_sources() if sources is None else sources
    todo: list[tuple[int, Path, Path, str]] = []
    for sub, src_dir in sources.items():
        dst_dir = www / sub
        wanted: set[Path] = set()
        for source in _files(src_dir):
            rel = source.relative_to(src_dir)
            link = dst_dir / rel
            wanted.add(link)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not (link.is_symlink() and os.readlink(link) == str(source)):
                tmp = link.with_name(f".{link.name}.{os.getpid()}.lnk")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(source)
                os.replace(tmp, link)
            size = source.stat().st_size
            if source.suffix.lower() not in COMPRESSIBLE or size < MIN_COMPRESS_BYTES:
                continue
            for kind in ("gz", "br") if brotli else ("gz",):
                target = link.with_name(f"{link.name}.{kind}")
                wanted.add(target)
                if not _compressed_ok(target, source):
                    todo.append((size, source, target, kind))
        if dst_dir.exists():
            for path in list(_files(dst_dir)):
                # (a dot file is another process's half-written file, or one left by a stop)
                if path not in wanted and (not path.name.startswith(".") or _older(path, 3600)):
                    path.unlink(missing_ok=True)
    todo.sort(key=lambda t: t[0])
    return [(s, t, k) for _, s, t, k in todo]


def compress(todo: list[tuple[Path, Path, str]], brotli: str | None,
             workers: int | None = None, stop: threading.Event | None = None) -> None:
    """Write the compressed copies, `workers` at a time; stops between two files once `stop`
    is set (daemon threads: a stopping server never waits for the mirror)."""
    left = list(reversed(todo))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while not (stop and stop.is_set()) and not errors:
            with lock:
                if not left:
                    return
                source, target, kind = left.pop()
            try:
                _write_compressed(source, target, kind, brotli)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True)
               for _ in range(workers or os.cpu_count() or 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def precompress(www: Path = WWW_DIR, sources: dict[str, Path] | None = None,
                brotli: str | None = "auto", workers: int | None = None) -> int:
    """Bring the mirror up to date; returns how many files were (re)compressed."""
    brotli = brotli_binary() if brotli == "auto" else brotli
    todo = plan_mirror(www, sources, brotli)
    compress(todo, brotli, workers)
    return len(todo)


# -- the nginx configuration ----------------------------------------------------------------------
@dataclass
class Setup:
    """Where things are for one run of the production setup."""

    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    app_port: int = 0  # 0: a free port
    app_processes: int = 1  # app processes behind nginx (sticky by session cookie)
    app_ports: list[int] = field(default_factory=list)  # all of them; the first is app_port
    run_dir: Path = RUN_DIR
    www: Path = WWW_DIR
    tls_cert: Path | None = None
    tls_key: Path | None = None
    nginx: str = ""
    brotli_modules: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{scheme}://{host}:{self.port}/"


def max_body_mb() -> int:
    """The app's upload limit (ui/server.py SERVER_CONFIG, in MB) plus 1 MB of form overhead."""
    from ui.server import SERVER_CONFIG

    return int(SERVER_CONFIG["server.maxUploadSize"]) + 1


def nginx_conf(s: Setup) -> str:
    run, www = s.run_dir.resolve(), s.www.resolve()
    user = pwd.getpwuid(os.geteuid()).pw_name
    modules = "".join(f"load_module {m};\n" for m in s.brotli_modules)
    brotli = ""
    brotli_static = ""
    if s.brotli_modules:
        brotli = (f"    brotli on;\n    brotli_comp_level 5;\n    brotli_min_length 1000;\n"
                  f"    brotli_types {COMPRESSED_TYPES};\n")
        brotli_static = "            brotli_static on;\n"
    listen = f"{s.host}:{s.port}" if ":" not in s.host else f"[{s.host}]:{s.port}"
    if s.tls_cert:
        listen_lines = (f"        listen {listen} ssl http2;\n"
                        f"        ssl_certificate {Path(s.tls_cert).resolve()};\n"
                        f"        ssl_certificate_key {Path(s.tls_key).resolve()};\n"
                        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                        "        ssl_session_cache shared:gridmap_tls:10m;\n")
    else:
        listen_lines = f"        listen {listen};\n"
    static = (f"            auth_request {SESSION_CHECK};\n"
              "            gzip_static on;\n" + brotli_static +
              f'            add_header Cache-Control "{IMMUTABLE}";\n'
              '            add_header X-Content-Type-Options "nosniff";\n')
    # Pages: never stored, no type sniffing, no full URL in a Referer sent elsewhere. Never
    # framed by another site: the app's pages say so themselves (ui/server.py, its
    # frame-ancestors 'self'), the login form more strictly ('none').
    no_store = ('            proxy_hide_header Cache-Control;\n'
                '            add_header Cache-Control "private, no-store" always;\n'
                '            add_header X-Content-Type-Options "nosniff" always;\n'
                '            add_header Referrer-Policy "same-origin" always;\n')
    return f"""# Written by `gridmap serve --production` (ui/production.py) at each start.
{modules}# Workers run as the invoking user ({user}); every path is under the run directory.
{"user " + user + ";" if os.geteuid() == 0 else "# (not root: no user directive)"}
worker_processes auto;
worker_shutdown_timeout 5s;  # a graceful stop does not wait for open websockets
daemon off;
pid {run}/nginx.pid;
error_log {run}/logs/error.log warn;
events {{ worker_connections 1024; }}

http {{
    types {{
        text/html html; text/css css; application/javascript js mjs; application/json json map;
        image/svg+xml svg; image/png png; image/gif gif; image/jpeg jpg jpeg; image/webp webp;
        image/x-icon ico; font/woff2 woff2; font/woff woff; font/ttf ttf; font/otf otf;
        application/vnd.ms-fontobject eot; text/plain txt; application/xml xml;
        application/wasm wasm;
    }}
    default_type application/octet-stream;
    charset_types text/css application/javascript application/json text/plain;
    client_body_temp_path {run}/tmp/body;
    proxy_temp_path {run}/tmp/proxy;
    fastcgi_temp_path {run}/tmp/fastcgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    log_format timed '$remote_addr [$time_local] "$request" $status $bytes_sent '
                     '$request_time $upstream_response_time $upstream_addr '
                     '"$http_user_agent"';
    access_log {run}/logs/access.log timed;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    server_tokens off;
    # The app's own upload limit (server.maxUploadSize) plus the form's overhead.
    client_max_body_size {max_body_mb()}m;
    proxy_read_timeout 120s;

    gzip on;
    gzip_comp_level 6;
    gzip_min_length 1000;
    gzip_vary on;
    gzip_proxied any;
    gzip_types {COMPRESSED_TYPES};
{brotli}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    # The app's own script is versioned by ?v=<digest> (ui/assets.own_url).
    map $arg_v $own_cache {{
        "" "private, no-cache";
        default "private, max-age=31536000, immutable";
    }}

    upstream gridmap_app {{
{upstream_servers(s)}        keepalive 16;
    }}

    server {{
{listen_lines}        # nginx's own answers in Chinese (its default pages are English and name
        # it); what the app answers passes as it is (proxy_intercept_errors is off).
        # (Internal addresses, not named locations: a request line too long to read has no URI
        # of its own to carry to a named one.)
        error_page 400 414 494 /_gridmap/bad_request;
        location = /_gridmap/bad_request {{
            internal;
            default_type "text/plain; charset=utf-8";
            return 400 "请求无效（地址或请求头过长，或格式不对）";
        }}
        error_page 404 /_gridmap/not_found;
        location = /_gridmap/not_found {{
            internal;
            default_type "text/plain; charset=utf-8";
            return 404 "没有这个页面或文件";
        }}
        error_page 413 /_gridmap/too_large;
        location = /_gridmap/too_large {{
            internal;
            default_type "text/plain; charset=utf-8";
            return 413 "请求过大";
        }}
        error_page 502 503 504 /_gridmap/unavailable;
        location = /_gridmap/unavailable {{
            internal;
            default_type "text/plain; charset=utf-8";
            add_header Retry-After "10" always;
            return 503 "服务正在启动或重启，请稍后刷新页面";
        }}
        # nginx's answer to a request the gate refused (the app's own words).
        error_page 401 = @login_required;
        location @login_required {{
            types {{ }}
            default_type "text/plain; charset=utf-8";
            add_header Cache-Control "private, no-store" always;
            return 401 "请先登录";
        }}

        # The sign-in gate's answer for nginx: 204 with a live session, 401 without.
        location = {SESSION_CHECK} {{
            internal;
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Accept "";
        }}

        # Streamlit's frontend: content-hashed names, served from the precompressed mirror.
        location ^~ /static/ {{
            root {www}/streamlit;
{static}        }}
        # Streamlit's icon (not content-hashed: a day).
        location = /favicon.png {{
            auth_request {SESSION_CHECK};
            root {www}/streamlit;
            add_header Cache-Control "public, max-age=86400";
        }}
        # The vendored map libraries: package@version directories (static/vendor/ASSETS.md).
        location ^~ /app/static/vendor/ {{
            alias {www}/vendor/;
{static}        }}
        # streamlit-folium's frontend build (the map iframe's script): content-hashed names.
        location ^~ /component/{FOLIUM_COMPONENT}/static/ {{
            alias {www}/component/{FOLIUM_COMPONENT}/static/;
{static}        }}
        # The app's own map script and style, versioned by ?v=<digest>.
        location ^~ /app/static/gridmap/ {{
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
            proxy_hide_header Cache-Control;
            add_header Cache-Control $own_cache;
        }}
        # The map's data files: per role and audience (the gate checks): the browser may keep
        # them but must ask again (ETag), no shared cache may.
        location ^~ /app/static/cache/ {{
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
            proxy_hide_header Cache-Control;
            proxy_hide_header Access-Control-Allow-Origin;  # Streamlit's "*": not needed
            add_header Cache-Control "private, no-cache" always;
            add_header X-Content-Type-Options "nosniff" always;
        }}
        # Streamlit's websocket: every script run and its answers.
        location = /_stcore/stream {{
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
        # The login form: a few hundred bytes (the app refuses more than 4 kB), so nginx takes
        # no more from someone without a session, nor spools a large body to disk first.
        location = /login {{
            client_max_body_size 16k;
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
{no_store}        }}
        # Everything else — pages, /logout, /_stcore/*, uploads, media, component pages — goes
        # to the app and is never stored.
        location / {{
            proxy_pass http://gridmap_app;
            include {run}/proxy_params.conf;
{no_store}{shell_filter()}        }}
    }}
}}
"""


def upstream_servers(s: Setup) -> str:
    """The app processes of the upstream block. With more than one, a browser stays on one of
    them: a Streamlit session (its websocket, widget state, uploads, downloads) lives in the
    process that opened it, so requests are spread by the session cookie (consistent hashing:
    a process added or gone moves only its own share). Requests without one (the login form)
    may reach any process: what they need — the form's CSRF cookie, the sessions, the login
    throttle — is in the cookie or the database, like cases, layer versions and rate limits
    (README, *Production: more than one process*)."""
    ports = s.app_ports or [s.app_port]
    sticky = ("        hash $cookie_gridmap_session consistent;  # sticky: one session, one "
              "process\n" if len(ports) > 1 else "")
    return sticky + "".join(f"        server 127.0.0.1:{p};\n" for p in ports)


def shell_filter() -> str:
    """nginx lines that put SHELL_SCRIPT into Streamlit's page shell (pages only: the app's
    own pages, the login form, have no module script and are left as they are)."""
    for text in (SHELL_ANCHOR, SHELL_SCRIPT):
        assert "'" not in text and "$" not in text  # one nginx string, no variables
    return (f"            sub_filter '{SHELL_ANCHOR}' '{SHELL_SCRIPT}{SHELL_ANCHOR}';\n"
            "            sub_filter_once on;\n")


PROXY_PARAMS = """# Included by every proxied location of nginx.conf.
proxy_http_version 1.1;
proxy_set_header Host $http_host;
proxy_set_header Connection "";
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Forwarded-Host $http_host;
# nginx compresses (brotli or gzip, as the browser accepts): the app sends it plain.
proxy_set_header Accept-Encoding "";
"""


def write_config(s: Setup) -> Path:
    for sub in ("logs", "tmp"):
        (s.run_dir / sub).mkdir(parents=True, exist_ok=True)
    (s.run_dir / "proxy_params.conf").write_text(PROXY_PARAMS, encoding="utf-8")
    conf = s.run_dir / "nginx.conf"
    conf.write_text(nginx_conf(s), encoding="utf-8")
    return conf


def nginx_command(s: Setup, *extra: str) -> list[str]:
    run = str(s.run_dir.resolve())
    return [s.nginx, "-p", run + "/", "-c", f"{run}/nginx.conf", "-e", f"{run}/logs/error.log",
            *extra]


def check_config(s: Setup) -> None:
    out = subprocess.run(nginx_command(s, "-t", "-q"), capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise ProductionError("nginx 配置检查未通过：" + (out.stderr or out.stdout).strip()[-800:])


# -- running it -----------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    import ssl

    context = ssl._create_unverified_context()  # our own self-signed certificate, if any
    with contextlib.suppress(OSError), urllib.request.urlopen(
            url + "_stcore/health", timeout=2, context=context) as r:
        return r.status == 200
    return False


def _wait(proc: subprocess.Popen, url: str, what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProductionError(f"{what}启动失败（退出码 {proc.returncode}），见日志 {log}")
        if _answers(url):
            return
        time.sleep(0.2)
    raise ProductionError(f"{what}在 {timeout:.0f} 秒内未就绪，见日志 {log}")


def _stop(procs: list[subprocess.Popen | None], sig: int, timeout: float) -> None:
    """Signal every process's group at once, wait for all of them on one deadline, then kill
    what is left (a stop is bounded by `timeout` whatever the number of processes)."""
    alive = [p for p in procs if p is not None and p.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Production:
    """The app and nginx in front of it; `start()`, then `stop()` (or a `with` block)."""

    def __init__(self, store: str, setup: Setup, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.s = setup
        self.env = env
        self.app: subprocess.Popen | None = None  # the first of `apps`
        self.apps: list[subprocess.Popen] = []
        self.nginx: subprocess.Popen | None = None
        self.mirror: threading.Thread | None = None
        self.mirror_error: BaseException | None = None
        self.stopping = threading.Event()

    def start(self) -> Production:
        s = self.s
        s.nginx = s.nginx or nginx_binary() or ""
        if not s.nginx:
            raise ProductionError(missing_message())
        if bool(s.tls_cert) != bool(s.tls_key):
            raise ProductionError("--tls-cert 与 --tls-key 需同时给出")
        s.brotli_modules = brotli_modules(s.nginx)
        if s.app_processes < 1:
            raise ProductionError("--app-processes 至少为 1")
        s.app_port = s.app_port or free_port()
        s.app_ports = [s.app_port, *(free_port() for _ in range(s.app_processes - 1))]
        logs = s.run_dir / "logs"
        write_config(s)
        check_config(s)
        # The mirror's files are there before nginx starts (symlinks: at once); their
        # compressed copies follow in the background.
        brotli = brotli_binary()
        todo = plan_mirror(s.www, brotli=brotli)
        self.mirror = threading.Thread(target=self._compress, args=(todo, brotli), daemon=True)
        self.mirror.start()
        # Websocket messages compressed too (permessage-deflate, negotiated through nginx):
        # the map's HTML rides in them.
        app_logs = [self._app_log(i) for i in range(len(s.app_ports))]
        for i in range(len(s.app_ports)):
            self.apps.append(self._spawn_app(i))
        self.app = self.apps[0]
        try:
            for app, port, app_log in zip(self.apps, s.app_ports, app_logs, strict=True):
                # An app process loads the layers and writes the map's files before it
                # listens (ui/server.warm_up): minutes for a province's layers.
                _wait(app, f"http://127.0.0.1:{port}/", "应用", app_log, timeout=APP_START_S)
            with (logs / "nginx.out").open("ab") as out:
                self.nginx = subprocess.Popen(nginx_command(s), cwd=s.run_dir, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            _wait(self.nginx, s.url, "nginx ", logs / "error.log", timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _app_log(self, i: int) -> Path:
        return self.s.run_dir / "logs" / ("app.log" if i == 0 else f"app-{i + 1}.log")

    def _spawn_app(self, i: int) -> subprocess.Popen:
        """App process `i` on its port (its log appended to)."""
        # Websocket messages compressed too (permessage-deflate, negotiated through nginx):
        # the map's HTML rides in them.
        env = {"GRIDMAP_WS_COMPRESSION": "1", **os.environ, **(self.env or {})}
        with self._app_log(i).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())",
                 "--store", self.store, "serve", "--host", "127.0.0.1", "--port",
                 str(self.s.app_ports[i])],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def revive(self) -> list[tuple[int, int]]:
        """Start again every app process that has ended (nginx sends their browsers to the
        others meanwhile); (port, exit code) of each one restarted."""
        revived = []
        for i, proc in enumerate(self.apps):
            code = proc.poll()
            if code is not None and not self.stopping.is_set():
                self.apps[i] = self._spawn_app(i)
                revived.append((self.s.app_ports[i], code))
        self.app = self.apps[0]
        return revived

    def _compress(self, todo, brotli) -> None:
        try:
            compress(todo, brotli, stop=self.stopping)
        except BaseException as exc:  # nginx compresses on the fly meanwhile; reported by wait
            self.mirror_error = exc

    def wait_precompressed(self, timeout: float = 600) -> None:
        if self.mirror is not None:
            self.mirror.join(timeout)
        if self.mirror_error is not None:
            raise ProductionError(f"预压缩失败：{self.mirror_error}")

    def stop(self) -> None:
        """nginx first (no new requests), then the app processes."""
        self.stopping.set()
        # Graceful: open requests finish (websockets are cut after nginx's
        # worker_shutdown_timeout, 5 s).
        _stop([self.nginx], signal.SIGQUIT, NGINX_STOP_S)
        _stop(list(self.apps), signal.SIGTERM, APP_STOP_S)

    def __enter__(self) -> Production:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# An app process that ends is restarted, up to MAX_RESTARTS within RESTART_WINDOW_S.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0


def serve_production(store: str, setup: Setup) -> int:
    """`gridmap serve --production`: start both, say where, wait for Ctrl-C (or SIGTERM), stop
    both. Returns the exit code."""

    def terminate(_sig, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    prod = Production(store, setup)
    try:
        prod.start()
        compression = "brotli + gzip" if setup.brotli_modules else "gzip（未安装 brotli 模块）"
        print(f"生产模式已启动：{setup.url}\n"
              f"  nginx（{compression}，静态文件长期缓存）→ 应用 "
              + "、".join(f"127.0.0.1:{p}" for p in setup.app_ports) + "\n"
              f"  配置与日志：{setup.run_dir}（nginx.conf、logs/）\n"
              "  按 Ctrl-C 停止。", flush=True)
        # An app process that ends is started again; its browsers reach the others meanwhile
        # (nginx marks it down). One that keeps ending (a crash at start) stops the service.
        restarts: list[float] = []
        while prod.nginx is not None and prod.nginx.poll() is None:
            for port, code in prod.revive():
                restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S]
                restarts.append(time.monotonic())
                print(f"应用进程 127.0.0.1:{port} 已退出（退出码 {code}），正在重新启动；"
                      "其用户由其他进程接待", file=sys.stderr, flush=True)
                if len(restarts) > MAX_RESTARTS:
                    print(f"错误：应用进程在 {RESTART_WINDOW_S:.0f} 秒内退出了 {len(restarts)} "
                          "次，停止服务，见日志 " + str(setup.run_dir / "logs"), file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("错误：nginx 已退出，见日志 " + str(setup.run_dir / "logs"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n正在停止 nginx 和应用…（最多约 {NGINX_STOP_S + APP_STOP_S} 秒）", flush=True)
        return 0
    finally:
        # A second Ctrl-C while stopping would end this process half-way and leave app
        # processes (their own sessions) listening with nobody to stop them: the stop is
        # bounded, so it is let to finish.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            prod.stop()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)

"""The production serving setup for real: `gridmap serve --production` (ui/production.py) on free
ports against the map world — nginx from Debian in front of the app. Over HTTP: the login works
through the proxy; Streamlit's scripts and the vendored libraries come compressed (brotli or
gzip) with the long-lived immutable header; pages, /login and map data are never stored by a
shared cache; without a session only the login is served (the gate works behind nginx, for the
files nginx serves itself too); the body limit is the app's. In Chromium: a dispatcher signs in
through the proxy and the city map renders over the proxied websocket. Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.browser import ROOT, ProductionServer, Tab, build_map_world, free_port
from tests.signin import PASSWORD
from ui import production
from ui.production import IMMUTABLE


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build_map_world(tmp_path_factory.mktemp("production"))


@pytest.fixture(scope="module")
def prod(world):
    with ProductionServer(world, world.parent / "run") as server:
        yield server


def signed_in(url: str, role_login: str = "t-dispatcher") -> requests.Session:
    s = requests.Session()
    page = s.get(url + "login", timeout=20)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    r = s.post(url + "login", data={"csrf": csrf, "next": "/", "login": role_login,
                                    "password": PASSWORD}, allow_redirects=False, timeout=20)
    assert r.status_code == 303, r.text
    return s


def entry_script() -> str:
    """Streamlit's entry bundle, as its index.html names it (static/js/index.<hash>.js)."""
    html = (production.streamlit_static_dir() / "index.html").read_text()
    return re.search(r'src="\./(static/js/index\.[^"]+\.js)"', html)[1]


def raw_get(s: requests.Session, url: str, encoding: str) -> requests.Response:
    """The bytes as sent (not decoded by requests)."""
    r = s.get(url, headers={"Accept-Encoding": encoding}, stream=True, timeout=20)
    r.raw_bytes = r.raw.read(decode_content=False)
    return r


def decoded(r: requests.Response) -> bytes:
    enc = r.headers.get("Content-Encoding", "")
    if enc == "gzip":
        return gzip.decompress(r.raw_bytes)
    if enc == "br":
        brotli = production.brotli_binary()
        assert brotli, "brotli (Debian) is installed with nginx's brotli modules"
        return subprocess.run([brotli, "-d", "-c"], input=r.raw_bytes, capture_output=True,
                              check=True).stdout
    return r.raw_bytes


def brotli_expected() -> bool:
    return bool(production.brotli_modules(production.nginx_binary()))


def test_test_command_installs_nginx():
    """scripts/test.sh (and serve-production.sh) install nginx and its brotli modules when
    missing (the list: scripts/nginx-packages.sh), and here they are."""
    for script in ("test.sh", "serve-production.sh"):
        assert "scripts/nginx-packages.sh" in (ROOT / "scripts" / script).read_text()
    text = (ROOT / "scripts" / "nginx-packages.sh").read_text()
    assert all(name in text for name in production.DEBIAN_PACKAGES)
    out = subprocess.run([str(ROOT / "scripts" / "nginx-packages.sh")], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""  # nothing missing
    assert production.nginx_binary(), production.missing_message()
    assert brotli_expected(), "libnginx-mod-http-brotli-filter/-static 未安装"


def test_login_works_through_the_proxy(prod):
    r = requests.get(prod.url + "login", timeout=20)
    assert r.status_code == 200 and "请使用本人账号登录" in r.text
    assert r.headers["Server"] == "nginx"  # it is the proxy that answered
    assert "no-store" in r.headers["Cache-Control"] and "private" in r.headers["Cache-Control"]
    s = signed_in(prod.url)
    page = s.get(prod.url, headers={"Accept": "text/html"}, timeout=20)
    assert page.status_code == 200 and entry_script() in page.text
    assert "no-store" in page.headers["Cache-Control"]
    assert "private" in page.headers["Cache-Control"]
    assert "immutable" not in page.headers["Cache-Control"]
    # Not framed by another site, no type sniffing, no URL in a Referer sent elsewhere.
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'self'"  # once
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]  # the login form
    assert "frame-ancestors 'self'" not in r.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"


def test_without_a_session_only_the_login(prod):
    r = requests.get(prod.url + "网格员", headers={"Accept": "text/html"}, allow_redirects=False,
                     timeout=20)
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=")
    for path in (entry_script(), "app/static/vendor/leaflet@1.9.4/leaflet.js",
                 f"component/{production.FOLIUM_COMPONENT}/index.html", "favicon.png",
                 "_stcore/host-config", "app/static/gridmap/gridmap.js"):
        r = requests.get(prod.url + path, timeout=20)
        assert r.status_code == 401, path
        assert "immutable" not in r.headers.get("Cache-Control", ""), path
        assert "请先登录" in r.text
    # nginx's question to the gate is not a URL of the site.
    assert requests.get(prod.url + "_gridmap/session", timeout=20).status_code == 404
    # A session ended by a logout opens nothing more, not even what nginx serves itself.
    s = signed_in(prod.url)
    assert s.get(prod.url + entry_script(), timeout=20).status_code == 200
    token = requests.utils.dict_from_cookiejar(s.cookies)["gridmap_session"]
    s.get(prod.url + "logout", timeout=20)
    old = requests.get(prod.url + entry_script(), cookies={"gridmap_session": token},
                       timeout=20)
    assert old.status_code == 401


def test_static_files_compressed_and_immutable(prod):
    s = signed_in(prod.url)
    best = "br" if brotli_expected() else "gzip"
    cases = {
        entry_script(): production.streamlit_static_dir() / entry_script(),
        "app/static/vendor/leaflet@1.9.4/leaflet.js":
            ROOT / "static" / "vendor" / "leaflet@1.9.4" / "leaflet.js",
    }
    build = production.folium_component_dir()
    main_js = next(build.glob("static/js/main.*.js"))
    cases[f"component/{production.FOLIUM_COMPONENT}/{main_js.relative_to(build)}"] = main_js
    for path, source in cases.items():
        for accept, encoding in (("br, gzip", best), ("gzip", "gzip")):
            r = raw_get(s, prod.url + path, accept)
            # The mirror's compressed copies are written in the background after the start
            # (gzip before brotli, smallest first): a file not yet there is sent gzip'd.
            deadline = time.monotonic() + 120
            while r.headers.get("Content-Encoding") != encoding and time.monotonic() < deadline:
                time.sleep(0.5)
                r = raw_get(s, prod.url + path, accept)
            assert r.status_code == 200, path
            assert r.headers["Content-Encoding"] == encoding, (path, accept)
            assert r.headers["Cache-Control"] == IMMUTABLE, path
            assert "Accept-Encoding" in r.headers.get("Vary", ""), path
            assert len(r.raw_bytes) < source.stat().st_size / 2, path
            assert decoded(r) == source.read_bytes(), path
    # The names Streamlit serves under /static/ carry their content's hash: immutable is safe.
    names = [p.name for p in production._files(production.streamlit_static_dir() / "static")]
    assert len(names) > 100
    assert [n for n in names if not production.HASHED_NAME.search(n)] == []
    # The app's own script: versioned by ?v=<digest>, kept by the browser only.
    r = s.get(prod.url + "app/static/gridmap/gridmap.js?v=abc", timeout=20)
    assert r.status_code == 200 and r.headers["Cache-Control"].startswith("private")
    assert "immutable" in r.headers["Cache-Control"]
    assert r.headers.get("Content-Encoding") in ("br", "gzip")
    r = s.get(prod.url + "app/static/gridmap/gridmap.js", timeout=20)
    assert r.headers["Cache-Control"] == "private, no-cache"
    # Streamlit's API answers are the user's: never stored.
    r = s.get(prod.url + "_stcore/host-config", timeout=20)
    assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"]


def test_websocket_upgrade_and_compression(prod):
    """/_stcore/stream is upgraded through nginx, and its messages are compressed
    (permessage-deflate, negotiated between the browser and the app); without a session the
    gate refuses it."""

    def handshake(cookie: str) -> str:
        with socket.create_connection(("127.0.0.1", prod.port), timeout=20) as sock:
            sock.sendall((
                "GET /_stcore/stream HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{prod.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                "Sec-WebSocket-Protocol: streamlit\r\n"
                f"Cookie: gridmap_session={cookie}\r\n\r\n").encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            return answer.decode("latin-1")

    token = requests.utils.dict_from_cookiejar(signed_in(prod.url).cookies)["gridmap_session"]
    answer = handshake(token)
    assert answer.startswith("HTTP/1.1 101"), answer
    assert "permessage-deflate" in answer
    assert not handshake("not-a-session").startswith("HTTP/1.1 101")


def test_request_body_limit_is_the_apps(prod):
    from ui.server import SERVER_CONFIG

    limit = production.max_body_mb()
    assert limit == SERVER_CONFIG["server.maxUploadSize"] + 1
    conf = (prod.run_dir / "nginx.conf").read_text()
    assert f"client_max_body_size {limit}m;" in conf
    conn = http.client.HTTPConnection("127.0.0.1", prod.port, timeout=20)
    conn.putrequest("PUT", "/_stcore/upload_file/x/y")
    conn.putheader("Content-Length", str((limit + 1) * 1024 * 1024))
    conn.endheaders()  # no body is sent: nginx answers from the declared length
    assert conn.getresponse().status == 413
    conn.close()
    # The login form takes no more than a form needs, before any body reaches disk or the app.
    conn = http.client.HTTPConnection("127.0.0.1", prod.port, timeout=20)
    conn.putrequest("POST", "/login")
    conn.putheader("Content-Length", str(100 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert "client_max_body_size 16k;" in conf
    # nginx's own refusals are in Chinese, without its name.
    long = requests.get(prod.url + "login?x=" + "a" * 20_000, timeout=20)
    assert long.status_code in (400, 414) and "请求无效" in long.text and "nginx" not in long.text
    s = signed_in(prod.url)
    missing = s.get(prod.url + "static/js/no-such-file.js", timeout=20)
    assert missing.status_code == 404 and missing.text == "没有这个页面或文件"


def test_a_browser_signs_in_and_the_map_renders_through_the_proxy(prod, browser, tmp_path):
    tab = Tab(browser, prod, tmp_path / "shots", role=None)
    seen: list[tuple[str, dict]] = []
    tab.page.on("response", lambda r: seen.append((r.url, r.headers)))
    tab.sign_in("dispatcher")
    tab.open()  # the city map drawn: Streamlit ran the page over the proxied websocket
    tab.shot("production-city-map")
    tab.check_clean()
    sockets = [u for u in tab.requests if u.startswith("ws")]
    assert sockets and set(sockets) == {f"ws://127.0.0.1:{prod.port}/_stcore/stream"}, sockets
    scripts = [(u, h) for u, h in seen if u.split("/", 3)[3].startswith("static/js/")]
    assert len(scripts) > 20
    for url, headers in scripts:
        size = (production.streamlit_static_dir() / url.split("/", 3)[3]).stat().st_size
        if size >= 1000:  # a few tiny chunks gain nothing from compression
            assert headers.get("content-encoding") in ("br", "gzip"), url
        assert headers.get("cache-control") == IMMUTABLE, url
    data = [(u, h) for u, h in seen if u.split("/", 3)[3].startswith("app/static/cache/")]
    assert data, "the city map's data files went through the proxy"
    for url, headers in data:
        assert headers.get("cache-control") == "private, no-cache", url
    tab.context.close()


def test_the_page_shell_says_where_the_server_is(prod, browser, tmp_path):
    """nginx puts one script into Streamlit's page shell (production.SHELL_SCRIPT, before its
    module script, pages only): a page under a path (/网格员) asks for /_stcore/health and
    host-config at the root at once, not first under its own path (a 404, a round trip lost on
    every page load); the worker's phone page then works as before, its map drawn in the page."""
    s = signed_in(prod.url, "t-worker")
    page = s.get(prod.url + "网格员", headers={"Accept": "text/html"}, timeout=20).text
    assert page.count(production.SHELL_SCRIPT) == 1
    assert page.index(production.SHELL_SCRIPT) < page.index(entry_script())
    assert production.SHELL_SCRIPT not in requests.get(prod.url + "login", timeout=20).text
    # Not embedded anywhere: no parent frame's messages are listened to (ui/server.py).
    assert s.get(prod.url + "_stcore/host-config", timeout=20).json()["allowedOrigins"] == []
    tab = Tab(browser, prod, tmp_path / "shots", role="grid_worker")
    tab.page.goto(prod.url + "网格员")
    tab.page.locator(".gm-phone-map[data-gridmap=ready]").wait_for(timeout=60_000)
    tab.page.get_by_role("button", name="打开 T0001").wait_for()
    assert tab.page.evaluate("() => window.__streamlit.BACKEND_BASE_URL") == prod.url
    health = [u for u in tab.requests if "/_stcore/health" in u or "/_stcore/host-config" in u]
    assert health and all(u.split("?")[0].split("/", 3)[3] in ("_stcore/health",
                                                               "_stcore/host-config")
                          for u in health), health
    tab.check_clean()
    tab.context.close()


def test_https_and_http2_with_secure_cookies(world, tmp_path):
    """With a certificate (phones need HTTPS for geolocation; Chromium offers brotli only over
    HTTPS beyond localhost): the session cookie is Secure (the app sees the scheme nginx
    forwards)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with ProductionServer(world, tmp_path / "run", "--tls-cert", str(cert),
                          "--tls-key", str(key)) as server:
        s = requests.Session()
        page = s.get(server.url + "login", timeout=20, verify=str(cert))
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        r = s.post(server.url + "login", data={"csrf": csrf, "next": "/", "login":
                                               "t-dispatcher", "password": PASSWORD},
                   allow_redirects=False, timeout=20, verify=str(cert))
        assert r.status_code == 303
        assert "secure" in r.headers["Set-Cookie"].lower()
        conf = (server.run_dir / "nginx.conf").read_text()
        assert "ssl http2;" in conf


def test_ctrl_c_stops_nginx_and_the_app(prod):
    """Ctrl-C stops everything — pressed twice too, as impatient people do: the second press
    while stopping must not leave app processes listening with nobody to stop them."""
    pid_file = prod.run_dir / "nginx.pid"
    nginx_pid = int(pid_file.read_text())
    started = prod.output.read_text(encoding="utf-8").split("配置与日志")[0]
    app_ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", started)}
    assert prod.app_port in app_ports
    prod.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    while "正在停止" not in prod.output.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, prod.output.read_text(encoding="utf-8")
        time.sleep(0.05)
    assert prod.interrupt() == 0  # the second press
    for port in (prod.port, *app_ports):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    with pytest.raises(ProcessLookupError):
        os.kill(nginx_pid, 0)


def test_precompressed_mirror(tmp_path):
    src = tmp_path / "src"
    (src / "js").mkdir(parents=True)
    script = src / "js" / "app.0123abcd.js"
    script.write_text("console.log('网格');\n" * 2000)
    (src / "font.woff2").write_bytes(os.urandom(4000))
    (src / "tiny.css").write_text("a{}")
    www = tmp_path / "www"
    brotli = production.brotli_binary()
    assert production.precompress(www, {"s": src}, brotli=brotli) == (2 if brotli else 1)
    link = www / "s" / "js" / "app.0123abcd.js"
    assert link.is_symlink() and link.resolve() == script
    assert gzip.decompress((link.parent / (link.name + ".gz")).read_bytes()) == script.read_bytes()
    if brotli:
        out = subprocess.run([brotli, "-d", "-c", str(link) + ".br"], capture_output=True,
                             check=True).stdout
        assert out == script.read_bytes()
    assert not (www / "s" / "font.woff2.gz").exists()  # compressed already
    assert not (www / "s" / "tiny.css.gz").exists()  # too small to gain
    assert production.precompress(www, {"s": src}, brotli=brotli) == 0  # nothing changed
    script.write_text("console.log('changed');\n" * 2000)
    os.utime(script, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert production.precompress(www, {"s": src}, brotli=brotli) >= 1
    assert b"changed" in gzip.decompress((link.parent / (link.name + ".gz")).read_bytes())
    script.unlink()  # a file gone from the source (a new Streamlit) leaves the mirror
    production.precompress(www, {"s": src}, brotli=brotli)
    assert not link.exists() and not (link.parent / (link.name + ".gz")).exists()


def test_missing_nginx_is_explained(monkeypatch, capsys, tmp_path):
    import cli

    monkeypatch.setattr(production, "nginx_binary", lambda: None)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["--store", str(tmp_path / "none.gpkg"), "serve", "--production",
                     "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "未找到 nginx" in err and "make prod" in err and "nginx-light" in err
    assert signal.getsignal(signal.SIGTERM) == before


def test_several_app_processes_behind_nginx_keep_a_session_on_one(world, tmp_path):
    """`--app-processes 2` (README, *Production: more than one process*): the upstream lists
    both, hashed by the session cookie — nginx -t accepts it —, a signed-in browser's requests
    all reach one process while sessions are spread over both, and Ctrl-C stops all three."""
    ports = [free_port(), free_port()]
    one = production.nginx_conf(production.Setup(app_port=ports[0]))
    assert "hash $cookie_gridmap_session" not in one  # one process: nothing to keep
    setup = production.Setup(app_port=ports[0], app_ports=ports, run_dir=tmp_path / "conf",
                             nginx=production.nginx_binary() or "")
    setup.brotli_modules = production.brotli_modules(setup.nginx)
    production.write_config(setup)
    production.check_config(setup)  # the real nginx reads it
    upstream = re.search(r"upstream gridmap_app \{(.*?)\}", production.nginx_conf(setup), re.S)[1]
    assert re.findall(r"server 127\.0\.0\.1:(\d+);", upstream) == [str(p) for p in ports]
    assert "hash $cookie_gridmap_session consistent;" in upstream

    with ProductionServer(world, tmp_path / "run", "--app-processes", "2") as server:
        said = server.output.read_text(encoding="utf-8")
        apps = re.findall(r"127\.0\.0\.1:(\d+)", said.split("应用", 1)[1].split("\n", 1)[0])
        assert len(apps) == 2 and str(server.app_port) in apps, said
        for port in apps:  # both answer on their own
            assert requests.get(f"http://127.0.0.1:{port}/_stcore/health",
                                timeout=10).status_code == 200
        log = server.run_dir / "logs" / "access.log"
        served_by: dict[int, set[str]] = {}
        for n in range(20):  # until both processes have sessions (each 1 in 2)
            s = signed_in(server.url)
            for k in range(4):
                assert s.get(f"{server.url}_stcore/health?session={n}&k={k}",
                             timeout=10).status_code == 200
            time.sleep(0.3)  # nginx writes its log line after the answer
            lines = [ln for ln in log.read_text().splitlines() if f"?session={n}&" in ln]
            assert len(lines) == 4, lines
            served_by[n] = {re.search(r" (127\.0\.0\.1:\d+) ", ln)[1] for ln in lines}
            if n >= 2 and len(set().union(*served_by.values())) == 2:
                break
        assert all(len(v) == 1 for v in served_by.values()), served_by  # sticky
        assert set().union(*served_by.values()) == {f"127.0.0.1:{p}" for p in apps}
        # One app process killed: the service goes on (its browsers reach the other) and the
        # process is started again on its port (it once stopped the whole service).
        victim = apps[1]
        listing = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True,
                             text=True).stdout
        [pid] = [int(line.split()[0]) for line in listing.splitlines()
                 if f"serve --host 127.0.0.1 --port {victim}" in line and "cli import" in line]
        os.kill(pid, signal.SIGKILL)
        s = signed_in(server.url)
        for _ in range(5):
            assert s.get(f"{server.url}_stcore/health", timeout=30).status_code == 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{victim}/_stcore/health",
                                timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the killed app process was not started again")
        said = server.output.read_text(encoding="utf-8")
        assert f"应用进程 127.0.0.1:{victim} 已退出" in said and "正在重新启动" in said
        assert server.proc.poll() is None
        assert server.interrupt() == 0
    for port in (server.port, *map(int, apps)):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

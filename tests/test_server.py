"""The sign-in gate over HTTP, as an attacker would try it (against a real `gridmap serve`):
forged and oversized forms, hostile logins, open redirects, a session after logout."""

from __future__ import annotations

import re
import subprocess
import sys
from urllib.parse import quote, unquote

import pytest
import requests

from grids.access import Actor
from grids.service import Gridmap
from tests.browser import AppServer, build_map_world
from tests.conftest import ROOT
from tests.signin import PASSWORD


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("server"))) as s:
        yield s


def form(session: requests.Session, url: str) -> dict:
    page = session.get(url + "login?next=/案件", timeout=20)
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    return {"csrf": csrf, "next": "/"}


def test_sign_in_sets_a_guarded_cookie_and_no_open_redirect(server):
    s = requests.Session()
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD,
            "next": "//evil.example/x"}
    r = s.post(server.url + "login", data=data, allow_redirects=False, timeout=20)
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "gridmap_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert s.get(server.url + "static/js/index.js", timeout=20).status_code in (200, 404)
    s.get(server.url + "logout", timeout=20)
    old = requests.get(server.url + "static/js/index.js", timeout=20,
                       cookies={"gridmap_session": cookie.split(";")[0].split("=", 1)[1]})
    assert old.status_code == 401


def test_forged_and_oversized_forms_are_refused(server):
    s = requests.Session()
    r = s.post(server.url + "login", data={"login": "t-dispatcher", "password": PASSWORD},
               allow_redirects=False, timeout=20)
    assert r.status_code == 400 and "页面已过期" in r.text  # no CSRF token: no sign-in
    assert "gridmap_session" not in r.headers.get("Set-Cookie", "")
    data = {**form(s, server.url), "login": "t-dispatcher", "password": "x" * 100_000}
    assert s.post(server.url + "login", data=data, timeout=20).status_code == 413
    r = s.post(server.url + "login", data=b"login=a", timeout=20,
               headers={"Content-Length": "7", "Content-Type":
                        "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 401)


@pytest.mark.parametrize("login", ["'; DROP TABLE users;--", "a" * 1_000, "t-admin\x00",
                                   "<script>alert(1)</script>", "${7*7}", "t-admin\u202e"])
def test_hostile_logins_are_plain_failures(server, login):
    s = requests.Session()
    data = {**form(s, server.url), "login": login, "password": PASSWORD}
    r = s.post(server.url + "login", data=data, allow_redirects=False, timeout=20)
    assert r.status_code == 401 and "登录名或密码错误" in r.text
    assert "<script>alert(1)</script>" not in r.text  # echoed back escaped, if at all
    svc = Gridmap(str(server.store))
    try:
        assert len(svc.users(Actor.local_admin())) == 7  # the users table is intact
        assert svc.audit_verify(Actor.local_admin()).ok
    finally:
        svc.close()


def test_map_data_files_need_a_session(server):
    """The map's data files (every worker's name and phone) are behind the gate too, with no
    CORS opening."""
    from ui.mapdata import CACHE_DIR

    s = requests.Session()
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD}
    s.post(server.url + "login", data=data, timeout=20)
    page = s.get(server.url, timeout=20)
    assert page.status_code == 200
    folders = [p.name for p in CACHE_DIR.iterdir() if p.is_dir()] if CACHE_DIR.exists() else []
    for folder in folders:
        url = f"{server.url}app/static/cache/{folder}/grid_workers.json"
        anonymous = requests.get(url, timeout=20)
        assert anonymous.status_code == 401 and "1380000" not in anonymous.text
        assert anonymous.headers.get("Access-Control-Allow-Origin") is None


def test_no_tracebacks_for_visitors():
    import tomllib
    from pathlib import Path

    from ui.server import SERVER_CONFIG

    assert SERVER_CONFIG["client.showErrorDetails"] == "none"
    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" /
                            "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"


def test_magic_is_off_and_no_page_relies_on_it():
    """Streamlit's magic (a bare expression written to the page) is off, served and run from
    the project directory alike; so no page may hold a bare expression that it meant to show
    (a call, a docstring or a yield are no magic)."""
    import ast
    import tomllib
    from pathlib import Path

    from ui.server import SERVER_CONFIG

    root = Path(__file__).resolve().parent.parent
    assert SERVER_CONFIG["runner.magicEnabled"] is False
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["magicEnabled"] is False
    scripts = [root / "app.py", *sorted((root / "pages").glob("*.py"))]
    assert len(scripts) > 5
    bare = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Expr) or isinstance(
                    node.value, ast.Call | ast.Await | ast.Yield | ast.YieldFrom):
                continue
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                continue  # a docstring
            bare.append(f"{script.name}:{node.lineno}")
    assert not bare, f"bare expressions that magic would have shown: {bare}"


def test_database_passwords_are_never_printed(pg_cluster, tmp_path):
    import subprocess

    from layers.store import redact_url
    from tests.conftest import gridmap_exe

    assert redact_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    url = pg_cluster.new_database("t_redact")
    with_password = url.replace("://gridmap@", "://gridmap:s3cret-pw@")
    out = subprocess.run([gridmap_exe(), "--store", with_password, "layers"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "s3cret-pw" not in out.stdout + out.stderr
    out = subprocess.run([gridmap_exe(), "--store", "mysql://x@h/db", "layers"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "不支持的数据库地址" in out.stderr


def test_a_check_that_ends_after_a_logout_does_not_revive_the_session(monkeypatch):
    """A page's files are checked in the thread pool while the user logs out: a check that
    asked the store before the logout and answers after it must not put the live answer back
    into the gate's 5-second cache (the old cookie would pass for seconds after the logout)."""
    import ui.server as gate

    token = "t" * 43
    live = Actor("t-dispatcher", "dispatcher", "调度员甲")

    class LogoutDuringCheck:
        def actor_for(self, asked: str) -> Actor:
            gate.forget(asked)  # the logout arrives while the store is asked
            return live

    monkeypatch.setattr(gate, "service", lambda: LogoutDuringCheck())
    monkeypatch.setattr(gate, "_checked", {})
    monkeypatch.setattr(gate, "_ended", {})
    assert gate._actor(token) is None
    assert token not in gate._checked and gate._recently_checked(token) is None

    # Checked first, then logged out: neither the cache nor the event-loop fast path answers.
    other = "u" * 43
    monkeypatch.setattr(gate, "service", lambda: type("S", (), {"actor_for": lambda s, t: live})())
    assert gate._actor(other) == live and gate._recently_checked(other) == live
    gate.forget(other)
    assert gate._recently_checked(other) is None and gate._actor(other) is None


def test_page_imports_are_made_before_listening_but_no_component_module():
    """warm_up imports what the pages import (their first visitors no longer wait for it),
    never a module that declares a Streamlit component: imported outside a script run, the
    component would not be registered with the server and the map would not load."""
    code = (
        "import sys\n"
        "from ui.server import preimport_pages\n"
        "done = preimport_pages()\n"
        "print(sorted(m for m in ('streamlit_folium', 'ui.page', 'ui.worker', 'ui.geolocate')"
        " if m in sys.modules))\n"
        "print(all(m in sys.modules for m in ('folium', 'grids.patrols', 'grids.stats',"
        " 'layers.spreadsheet', 'streamlit.emojis')), 'grids.patrols' in done)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True True"], out.stdout + out.stderr


def test_guesses_sent_all_at_once_are_counted_before_they_are_checked(server):
    """Each attempt takes its token before the password is checked: a burst from one address
    gets at most IP_FAILURES answers, the rest 429 (they were all let through when the check
    came before the count)."""
    from concurrent.futures import ThreadPoolExecutor

    from ui.server import IP_FAILURES

    def attempt(n: int) -> int:
        s = requests.Session()
        data = {**form(s, server.url), "login": f"t-nobody{n}", "password": "wrong"}
        r = s.post(server.url + "login", data=data, allow_redirects=False, timeout=60,
                   headers={"X-Forwarded-For": "10.77.0.1"})  # an address of its own
        return r.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(attempt, range(IP_FAILURES + 15)))
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) <= IP_FAILURES + 1 and codes.count(429) >= 14, codes
    # Another address is not held up, and a success gives its token back.
    s = requests.Session()
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD}
    r = s.post(server.url + "login", data=data, allow_redirects=False, timeout=60,
               headers={"X-Forwarded-For": "10.77.0.2"})
    assert r.status_code == 303


def test_no_page_shell_without_a_session_and_no_logout_from_another_site(server):
    r = requests.get(server.url + "_stcore/script-health-check", timeout=20,
                     allow_redirects=False)
    assert r.status_code == 401 and "<script" not in r.text
    s = requests.Session()
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD}
    assert s.post(server.url + "login", data=data, allow_redirects=False,
                  timeout=20).status_code == 303
    s.get(server.url + "logout", headers={"Sec-Fetch-Site": "cross-site"}, timeout=20)
    assert s.get(server.url + "_stcore/host-config", timeout=20).status_code == 200  # still in
    s.get(server.url + "logout", headers={"Sec-Fetch-Site": "same-origin"}, timeout=20)
    assert s.get(server.url + "_stcore/host-config", timeout=20).status_code == 401


def test_a_signed_in_page_is_never_stored_nor_framed_by_another_site(server):
    """Back after signing out must not bring the page back from the browser's cache, and
    another site on the same domain must not frame it: the headers the production proxy puts
    on pages, from `gridmap serve` itself."""
    s = requests.Session()
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD}
    assert s.post(server.url + "login", data=data, allow_redirects=False,
                  timeout=20).status_code == 303
    for path in ("", "案件", "网格员"):
        page = s.get(server.url + path, timeout=20)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert page.headers["Cache-Control"] == "private, no-store", path
        assert page.headers["X-Frame-Options"] == "SAMEORIGIN", path
        assert page.headers["Content-Security-Policy"] == "frame-ancestors 'self'", path
    alive = s.get(server.url + "_gridmap/alive", timeout=20)
    assert alive.status_code == 204 and alive.headers["Cache-Control"] == "no-store"
    s.get(server.url + "logout", headers={"Sec-Fetch-Site": "same-origin"}, timeout=20)
    gone = s.get(server.url + "_gridmap/alive", headers={"Accept": "application/json"},
                 timeout=20, allow_redirects=False)
    assert gone.status_code == 401


def test_a_link_to_one_case_opens_that_case_after_signing_in(server):
    """Someone sent /案件?case=T0001 without a session signs in and lands on that case, not on
    the case list."""
    s = requests.Session()
    r = s.get(server.url + "案件?case=T0001", headers={"Accept": "text/html"}, timeout=20,
              allow_redirects=False)
    assert r.status_code == 303
    wanted = "/案件?case=T0001"
    assert r.headers["Location"] == "/login?next=" + quote(wanted)
    data = {**form(s, server.url), "login": "t-dispatcher", "password": PASSWORD,
            "next": wanted}
    done = s.post(server.url + "login", data=data, allow_redirects=False, timeout=20)
    assert done.status_code == 303 and unquote(done.headers["Location"]) == wanted

"""Signing in, as a person does, in Debian's Chromium against `gridmap serve`: nothing but the
login form without a session (no page, no script, no websocket, no data file); each role sees
what it may and no more; logout ends the session; script-carrying names in the data, in an
account name and in a case never run on any page (a dialog listener on every tab)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from grids.access import Actor
from grids.service import Gridmap
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab, build_map_world, wait_idle
from tests.signin import PASSWORD

SHOTS = ARTIFACTS / "roles"
PHONE = re.compile(r"1[3-9]\d{9}")
HOSTILE = "${alert(7)}`</script><img src=x onerror=alert(8)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workers = world.layers()["workers"]
    workers.loc[workers["id"] == "W002", "name"] = HOSTILE  # a colleague of W003's township
    path = build_map_world(tmp_path_factory.mktemp("roles"), {"workers": workers})
    svc = Gridmap(str(path))
    svc.add_user(Actor.local_admin(), "t-hostile", "viewer", PASSWORD,
                 name="<img src=x onerror=alert(9)>")
    svc.close()
    with AppServer(path) as s:
        yield s


def fetch(url: str, cookie: str = "", accept: str = "*/*") -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Cookie": cookie, "Accept": accept})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, r.read().decode("utf-8", "replace"), r.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace"), exc.headers.get("Location", "")


def session_cookie(tab: Tab) -> str:
    [c] = [c for c in tab.context.cookies() if c["name"] == "gridmap_session"]
    assert c["httpOnly"] and c["sameSite"] in ("Lax", "Strict")
    return f"gridmap_session={c['value']}"


def visible_text(tab: Tab, wait_for: str, timeout: int = 60_000) -> str:
    tab.page.get_by_text(wait_for, exact=False).first.wait_for(timeout=timeout)
    wait_idle(tab.page)  # the rest of the run
    return tab.page.inner_text("body")


def test_nothing_but_the_login_form_without_a_session(browser, server):
    base = server.url
    status, _, location = fetch(base, accept="text/html")
    assert status == 303 and location.startswith("/login")
    status, body, _ = fetch(base + "login")
    assert status == 200 and "登录名" in body and "示例" not in body
    assert not PHONE.search(body) and "网格员" not in body.replace("网格员、", "")
    for path in ("static/js/index.js", "_stcore/host-config", "app/static/vendor/manifest.json",
                 "%E7%BD%91%E6%A0%BC%E5%91%98", "media/x.png", "_stcore/upload_file/x/y"):
        status, body, _ = fetch(base + path)
        assert status in (401, 303), (path, status)
        assert not PHONE.search(body)
    assert fetch(base + "_stcore/health")[0] == 200
    tab = Tab(browser, server, SHOTS, role=None)
    tab.page.goto(base)
    tab.page.wait_for_url(re.compile(r"/login"))
    text = tab.page.inner_text("body")
    assert "登录" in text and not PHONE.search(text)
    opened = tab.page.evaluate("""() => new Promise(done => {
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/_stcore/stream');
        ws.onopen = () => done('open'); ws.onerror = () => done('refused');
        setTimeout(() => done('timeout'), 5000); })""")
    assert opened == "refused"
    tab.shot("00_login")
    # A wrong password says so, and nothing more.
    tab.page.fill("#login", "t-dispatcher")
    tab.page.fill("#password", "Wrong#pass2026")
    tab.page.click("button[type=submit]")
    assert "登录名或密码错误" in tab.page.inner_text("body")
    tab.check_clean()
    tab.context.close()


ROLE_PAGES = {
    # role: (the page it lands on / waits for, links it must see, links it must not see)
    "dispatcher": ("南通市生态环境综合执法",
                   ["网格地图", "投诉受理（12369）", "案件办理", "批量分派"],
                   ["用户管理", "审计记录", "数据质检"]),
    "grid_worker": ("网格员工作台", ["网格员工作台", "案件办理"],
                    ["网格地图", "投诉受理（12369）", "批量分派", "用户管理"]),
    "viewer": ("南通市生态环境综合执法", ["网格地图", "网格员工作台", "案件办理", "数据质检"],
               ["投诉受理（12369）", "用户管理", "审计记录", "批量分派"]),
    "admin": ("南通市生态环境综合执法", ["用户管理", "审计记录", "网格地图"],
              ["投诉受理（12369）"]),
    "planner": ("南通市生态环境综合执法", ["网格地图", "批量分派", "数据质检"],
                ["案件办理", "用户管理", "网格员工作台"]),
    "bureau": ("南通市生态环境综合执法", ["网格地图", "案件办理"],
               ["投诉受理（12369）", "用户管理"]),
    "grid_leader": ("网格员工作台", ["网格员工作台", "案件办理"], ["网格地图"]),
}


@pytest.mark.parametrize("role", list(ROLE_PAGES))
def test_each_role_sees_what_it_may(browser, server, role):
    landing, shown, hidden = ROLE_PAGES[role]
    tab = Tab(browser, server, SHOTS, role=role)
    text = visible_text(tab, landing)
    bar = tab.page.locator("[data-testid=stSidebar]")
    bar.get_by_text("退出登录").wait_for(timeout=30_000)
    if shown:  # the page links come with the navigation, not always before the rest
        bar.get_by_text(shown[0]).first.wait_for(timeout=30_000)
    wait_idle(tab.page)
    sidebar = bar.inner_text()
    for label in shown:
        assert label in sidebar, (role, label)
    for label in hidden:
        assert label not in sidebar, (role, label)
    tab.shot(f"10_{role}")
    cookie = session_cookie(tab)
    status, _, _ = fetch(server.url + "static/js/index.js", cookie)  # the session works
    assert status in (200, 404)
    if role in ("grid_worker", "grid_leader"):
        # Their own units, their own and their colleagues' phones; nobody else's.
        name, phone = (("网格员3", "13800000003") if role == "grid_worker"
                       else ("甲二镇网格长", "13900000001"))
        assert name in text and phone in text
        assert "13800000009" not in text  # a worker of county B
        # The city's data files are not theirs, even with a session.
        # Nor by another spelling of the same path ("./", "%2e", "//" once let them through).
        for name in ("grid_workers.json", "entities.index.json"):
            for folder in _cache_dirs():
                for way in ("app/static/cache", "app/static/./cache", "app/static/%2e/cache",
                            "app//static/cache", "app/static/cache/./"):
                    status = fetch(f"{server.url}{way}/{folder}/{name}", cookie)[0]
                    assert status in (403, 400, 404), (way, status)
        # Another worker's page is refused below the page.
        tab.page.goto(server.url + "网格员?worker=W009")
        other = visible_text(tab, "网格员工作台")
        assert "13800000009" not in other
    tab.check_clean()
    tab.context.close()


def _cache_dirs() -> list[str]:
    from ui.mapdata import CACHE_DIR

    return [p.name for p in CACHE_DIR.iterdir() if p.is_dir()] if CACHE_DIR.exists() else []


def test_case_actions_follow_the_role(browser, server):
    """The viewer reads a case and has no buttons; the dispatcher dispatches it."""
    svc = Gridmap(str(server.store))
    cases = svc.cases(Actor("t-viewer", "viewer"))
    cid = cases[cases["status"] == "reported"]["id"].iat[0]
    svc.close()
    viewer = Tab(browser, server, SHOTS, role="viewer")
    viewer.page.goto(f"{server.url}案件?case={cid}")
    text = visible_text(viewer, "办理记录")
    assert cid in text and "当前环节由其他岗位办理" in text
    assert viewer.page.get_by_role("button", name="派遣至网格员").count() == 0
    viewer.check_clean()
    viewer.context.close()
    desk = Tab(browser, server, SHOTS, role="dispatcher")
    desk.page.goto(f"{server.url}案件?case={cid}")
    visible_text(desk, "办理记录")
    desk.page.get_by_role("button", name="派遣至网格员").click()
    desk.page.get_by_text(f"案件 {cid}：派遣至网格员（调度员甲）").wait_for(timeout=15_000)
    desk.check_clean()
    desk.context.close()


def test_hostile_names_never_run_on_any_page(browser, server):
    """Every page as the roles that open it, with the world's script-carrying entity, worker,
    incident description and account name on screen: no dialog, no page error."""
    visits = [
        ("dispatcher", "", "南通市生态环境综合执法"),
        ("dispatcher", "网格员?worker=W002", "网格员工作台"),
        ("dispatcher", "受理", "投诉受理"),
        ("dispatcher", "案件?case=T0001", "办理记录"),
        ("dispatcher", "批量分派", "批量分派"),
        ("admin", "用户管理", "新增用户"),
        ("admin", "审计记录", "校验审计链"),
        ("grid_worker", "网格员", "网格员工作台"),
        ("grid_worker", "案件?case=T0001", "办理记录"),
    ]
    tabs: dict[str, Tab] = {}  # one signed-in tab per role, page after page as a user goes
    for role, path, wait_for in visits:
        if role not in tabs:
            tabs[role] = Tab(browser, server, SHOTS, role=role)
        tab = tabs[role]
        tab.page.goto(server.url + path)
        visible_text(tab, wait_for)
        # Hover over the map so that tooltips open too.
        box = tab.page.locator("iframe").first
        if box.count():
            tab.page.mouse.move(700, 450)
            tab.page.wait_for_timeout(500)
        tab.shot(f"20_{role}_{path.split('?')[0] or 'map'}")
        tab.check_clean()
    for tab in tabs.values():
        tab.context.close()


def test_logout_ends_the_session(browser, server):
    tab = Tab(browser, server, SHOTS, role="dispatcher")
    visible_text(tab, "南通市生态环境综合执法")
    cookie = session_cookie(tab)
    tab.check_clean()  # the signed-in page, before its session is ended under it
    tab.page.get_by_text("退出登录").click()
    tab.page.wait_for_url(re.compile(r"/login"), timeout=15_000)
    # Ending the session closes the page's websocket under Streamlit's client, which may
    # report a bare "Event" while that page is torn down (once in five full runs): what is
    # checked below is the login page that follows.
    tab.errors.clear()
    status, _, _ = fetch(server.url + "static/js/index.js", cookie)
    assert status == 401  # the old cookie is dead, not just forgotten by the browser
    tab.page.goto(server.url)
    tab.page.wait_for_url(re.compile(r"/login"))
    tab.check_clean()
    tab.context.close()

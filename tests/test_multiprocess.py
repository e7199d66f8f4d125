"""More than one app process (issue 14; README, *Production: more than one process*): two
`gridmap serve` processes and two `gridmap api` processes (each a real uvicorn), all against one
PostGIS, as real OS processes; the test process is a planner and a dispatcher of its own.

- A publish (a planner in the test process, through the service layer) is seen by every
  process: the first answer each API process and each app process (its 受理 page, in headless
  Chromium, the session signed in through the login form) gives after the publish is the new
  version's, where the same place gave the old one just before.
- Cases filed at the same moment through both app processes (the 受理 page's button), both API
  processes (threads with keys of their own) and the test process get distinct numbers, none
  lost, none skipped, each audited once; the pages' numbers fall amid the others'.
- Rate limits hold across processes: a key's requests alternating between the two API
  processes get the key's burst, not twice it; failed logins from one address alternating
  between the two app processes are refused after the throttle's count, not twice it.

The two app processes share the app directory (static/cache/) as processes on one machine do.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from shapely.geometry import box

from grids import publishing
from grids.access import Actor
from grids.service import Gridmap
from layers.importer import import_path
from layers.store import AuditQuery
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab, world_entities
from tests.signin import add_world_users
from tests.test_api import ApiServer

SHOTS = ARTIFACTS / "multiprocess"
PLANNER = Actor("t-planner", "planner", "规划员")
DISPATCHER = Actor("t-dispatcher", "dispatcher", "调度员甲")
ADMIN = Actor.local_admin()
# The chemical park P2 (bureau B-P2) drawn 0.02° further east, over part of the national zone
# P1 (no bureau of its own: county bureau B-A). MOVED lies in P1 only before, in P2 after.
P2_WIDER = box(120.6, 32.13, 120.66, 32.17)
MOVED = (120.65, 32.15)
OLD_BUREAU, NEW_BUREAU = ("B-A", "甲县执法局"), ("B-P2", "甲化工园区执法局")
# Both API processes: a small burst, so that the rate limit test is quick; every filing thread
# has a key of its own and stays within it.
RATE, BURST = 2.0, 20
API_ENV = {"GRIDMAP_API_RATE": f"{RATE:g}/s", "GRIDMAP_API_BURST": str(BURST),
           "GRIDMAP_API_REPLAY_CACHE": "0"}
CASE_ID = re.compile(r"^12369-(\d{8})-(\d{4})$")
FILER_MAX = 30  # cases per filing thread at most (one every 0.2 s: ~6 s)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, new_store):
    """One PostGIS database with the world, and the four server processes against it."""
    files = world.write(tmp_path_factory.mktemp("multiprocess") / "files")
    world_entities().to_csv(files / "entities.csv", index=False)
    store = new_store("postgis")
    import_path(store, files)
    add_world_users(store.url)
    servers = [AppServer(store.url), AppServer(store.url),
               ApiServer(store.url, env=API_ENV), ApiServer(store.url, env=API_ENV)]
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        with ThreadPoolExecutor(len(servers)) as pool:  # they start side by side
            entered = list(pool.map(_enter, servers))
        for server in servers:
            stack.callback(server.__exit__, None, None, None)
        for error in entered:
            if error is not None:
                raise error
        print(f"four processes serving after {time.monotonic() - started:.1f} s")
        yield store.url, servers[:2], servers[2:]


def _enter(server):
    try:
        server.__enter__()
    except Exception as exc:  # reported by the fixture, after every server is stopped
        return exc
    return None


class Desk(Tab):
    """A dispatcher's 受理 page on one app process."""

    def __init__(self, browser, server) -> None:
        super().__init__(browser, server, SHOTS, height=1400)
        self.page.goto(server.url + "受理")
        self.textbox("坐标（可直接粘贴）").wait_for(timeout=60_000)
        self.choose("坐标系", "WGS", "WGS84（GPS）")

    def choose(self, label: str, typed: str, option: str) -> None:
        box_ = self.page.get_by_label(label, exact=True).and_(self.page.locator("input"))
        box_.click()
        self.page.keyboard.type(typed)
        self.page.get_by_role("option", name=option, exact=True).click()

    def textbox(self, name: str):
        return self.page.get_by_role("textbox", name=name, exact=True)

    def locate(self, text: str) -> None:
        """Type a location; the answer is drawn by the script run this starts."""
        box_ = self.textbox("坐标（可直接粘贴）")
        box_.fill(text)
        box_.press("Enter")

    def card(self, expect: str) -> str:
        """The answer card once it says `expect`."""
        card = self.page.locator(".gm-route-card").first
        card.get_by_text(expect, exact=False).first.wait_for(timeout=30_000)
        return card.inner_text()

    def fill_case(self, category: tuple[str, str], description: str) -> None:
        self.choose("事件类别", *category)
        self.textbox("事件描述").fill(description)
        self.textbox("事件描述").press("Tab")

    def filed(self) -> str:
        done = self.page.get_by_text("已登记案件", exact=False)
        done.wait_for(timeout=60_000)
        return re.search(r"已登记案件 (\S+)，", done.inner_text())[1]


def route_via(api, key: str) -> dict:
    r = requests.get(api.url + "/route", params={"lon": MOVED[0], "lat": MOVED[1]},
                     headers={"X-API-Key": key}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wider_park(svc: Gridmap):
    """The planner's publish: P2 drawn wider, every warning of the checks acknowledged."""
    d = svc.create_draft(PLANNER, "parks", "化工园区向东扩展（多进程测试）")
    parks = svc.draft_features(PLANNER, d.id, "parks")
    parks.loc[parks["code"] == "P2", "geometry"] = P2_WIDER
    svc.save_draft(PLANNER, d.id, parks)
    findings = svc.check_draft(PLANNER, d.id)
    errors = [f.message_zh for f in findings if f.severity == "error"]
    assert not errors, errors
    return svc.publish_draft(PLANNER, d.id, [publishing.finding_id(f) for f in findings])


def test_a_publish_is_seen_by_every_process_and_cases_get_distinct_numbers(deployment,
                                                                          browser):
    url, apps, apis = deployment
    svc = Gridmap(url)
    viewer_key, _ = svc.add_api_key(ADMIN, "领导驾驶舱", "viewer")
    filer_keys = [svc.add_api_key(ADMIN, f"12369平台{i}", "dispatcher")[0] for i in range(6)]
    desks = [Desk(browser, app) for app in apps]
    try:
        # -- before: every process answers with version 1 -------------------------------------
        for api in apis:
            answer = route_via(api, viewer_key)
            assert (answer["bureau"]["code"], answer["version"]["generation"]) == (
                OLD_BUREAU[0], 1)
        for desk in desks:
            desk.locate(f"{MOVED[0]},{MOVED[1]}")
        for desk in desks:
            shown = desk.card("图层版本 1")
            assert NEW_BUREAU[1] not in shown and OLD_BUREAU[1] in shown, shown

        # -- a planner publishes; the next answer of every process is version 2 ---------------
        gen = wider_park(svc)
        published = time.monotonic()
        assert gen.id == 2
        seen = {}
        for i, api in enumerate(apis):
            answer = route_via(api, viewer_key)
            seen[f"api{i}"] = time.monotonic() - published
            assert (answer["bureau"]["code"], answer["version"]["generation"]) == (
                NEW_BUREAU[0], 2), answer["version"]
        for desk in desks:  # the same place typed the other way round: a new script run
            desk.locate(f"{MOVED[1]},{MOVED[0]}")
        for i, desk in enumerate(desks):
            shown = desk.card("图层版本 2")
            seen[f"app{i}"] = time.monotonic() - published
            assert NEW_BUREAU[1] in shown, shown
            desk.shot(f"app{i}_after_publish")
        print("seen after the publish (s):", {k: round(v, 2) for k, v in seen.items()})

        # -- cases filed at once through all five processes -----------------------------------
        desks[0].fill_case(("噪声", "工业噪声"), "多进程测试：噪声")
        desks[1].fill_case(("水", "水污染"), "多进程测试：水")
        desks[0].page.wait_for_timeout(500)  # the widgets' values reach the servers first
        filed, errors, stop = [], [], threading.Event()
        go = threading.Barrier(len(filer_keys) + 2)

        def api_filer(k: int) -> None:
            lon, lat = world.P["b1"] if k % 2 else world.P["a2_plain"]
            go.wait()
            # Every 0.2 s until the pages have filed: within the key's bucket for ~6 s.
            for n in range(FILER_MAX):
                r = requests.post(f"{apis[(k + n) % 2].url}/open311/v2/requests.json",
                                  timeout=60, data={
                                      "api_key": filer_keys[k], "service_code": "air",
                                      "lat": lat, "long": lon,
                                      "description": f"多进程测试 API {k}-{n}"})
                if r.status_code != 200:
                    errors.append((r.status_code, r.text))
                else:
                    filed.append(("api", r.json()[0]["service_request_id"]))
                if stop.wait(0.2):
                    return

        def local_filer() -> None:
            mine = Gridmap(url)
            try:
                answer = mine.route(DISPATCHER, *world.P["a1_numbered"])
                go.wait()
                for n in range(FILER_MAX):
                    filed.append(("test", mine.create_case(DISPATCHER, answer, {
                        "category": "water", "description": f"多进程测试 本进程 {n}"})))
                    if stop.wait(0.2):
                        return
            finally:
                mine.close()

        with ThreadPoolExecutor(len(filer_keys) + 1) as pool:
            jobs = [pool.submit(api_filer, k) for k in range(len(filer_keys))]
            jobs.append(pool.submit(local_filer))
            go.wait()
            started = time.monotonic()
            for desk in desks:  # both clicks before either answer is awaited
                desk.page.get_by_role("button", name="登记为新案件").click(no_wait_after=True)
            from_pages = [desk.filed() for desk in desks]
            stop.set()
            for job in jobs:
                job.result()
        elapsed = time.monotonic() - started
        filed += [("app", c) for c in from_pages]
        for i, desk in enumerate(desks):
            desk.shot(f"app{i}_filed")
        print(f"{len(filed)} cases filed in {elapsed:.1f} s:",
              dict(Counter(via for via, _ in filed)))
        assert not errors, errors[:3]
        ids = [c for _, c in filed]
        assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
        numbers: dict[str, list[int]] = {}
        for c in ids:
            m = CASE_ID.match(c)
            assert m, c
            numbers.setdefault(m[1], []).append(int(m[2]))
        # No gap: each day's numbers are 1..n (the day may turn at midnight, Beijing time).
        for day, got in numbers.items():
            assert sorted(got) == list(range(1, len(got) + 1)), (day, sorted(got))
        # The pages filed amid the others: numbers were taken before and after theirs.
        for case_id in from_pages:
            day, number = CASE_ID.match(case_id).groups()
            assert min(numbers[day]) < int(number) < max(numbers[day]), (case_id, numbers)
        # Nothing lost: the store holds exactly these cases, each created once in the audit.
        cases = svc.cases(ADMIN)
        stored = set(cases["id"])
        assert stored == set(ids)
        created = svc.audit_entries(ADMIN, AuditQuery(action="case.create", limit=None))
        assert Counter(created["target"]) == Counter(ids)
        # The pages filed with the layers they had just shown: version 2, the park's bureau.
        for case_id in from_pages:
            case = svc.case(ADMIN, case_id)
            assert int(case["generation"]) == 2 and case["assigned_bureau_code"] == NEW_BUREAU[0]
        for desk in desks:
            desk.check_clean()
    finally:
        for desk in desks:
            desk.context.close()
        svc.close()


def test_a_keys_rate_limit_holds_across_api_processes(deployment):
    """BURST requests at once, not BURST per process: the bucket is the database's."""
    url, _apps, apis = deployment
    svc = Gridmap(url)
    try:
        key, _ = svc.add_api_key(ADMIN, "限流测试", "viewer")
    finally:
        svc.close()
    started = time.monotonic()
    codes = []
    with requests.Session() as a, requests.Session() as b:
        for n in range(2 * BURST):
            http, api = (a, apis[0]) if n % 2 == 0 else (b, apis[1])
            r = http.get(api.url + "/route", params={"lon": MOVED[0], "lat": MOVED[1]},
                         headers={"X-API-Key": key}, timeout=30)
            codes.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
    elapsed = time.monotonic() - started
    ok = codes.count(200)
    print(f"{ok} of {len(codes)} let through in {elapsed:.2f} s")
    assert set(codes) <= {200, 429}
    assert ok >= BURST  # the burst itself is never refused
    # Per process, each would have let its BURST through: every request.
    assert ok <= BURST + RATE * elapsed + 1, (ok, elapsed)
    assert codes[:BURST] == [200] * BURST and 429 in codes


def test_failed_logins_are_counted_across_app_processes(deployment):
    """The login form's per-address throttle: failures from one address, made alternately on
    the two app processes, are refused after IP_FAILURES (and what refilled meanwhile) — per
    process, each would have let IP_FAILURES through."""
    from ui.server import IP_FAILURES, IP_WINDOW_S

    _url, apps, _apis = deployment
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    sessions = [requests.Session() for _ in apps]
    try:
        tokens = [csrf.search(s.get(app.url + "login", timeout=30).text)[1]
                  for s, app in zip(sessions, apps, strict=True)]
        codes = []
        started = time.monotonic()
        for n in range(2 * IP_FAILURES):
            i = n % 2
            r = sessions[i].post(apps[i].url + "login", timeout=60, allow_redirects=False,
                                 data={"login": "t-nobody", "password": "wrong",
                                       "csrf": tokens[i], "next": "/"})
            codes.append(r.status_code)
            if r.status_code != 401:
                break
            tokens[i] = csrf.search(r.text)[1]
        elapsed = time.monotonic() - started
        print(f"{len(codes) - 1} failed logins, then {codes[-1]}, in {elapsed:.1f} s")
        assert codes[-1] == 429, codes
        assert set(codes[:-1]) == {401}
        refilled = elapsed * IP_FAILURES / IP_WINDOW_S
        assert IP_FAILURES <= len(codes) - 1 <= IP_FAILURES + refilled, (len(codes), elapsed)
        assert "该地址登录失败次数过多" in r.text and int(r.headers["Retry-After"]) >= 1
    finally:
        for s in sessions:
            s.close()

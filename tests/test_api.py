"""The HTTP API (ui/api/, `gridmap api`) against real servers on free ports, on both stores: the
hand-drawn world of tests/world.py with its entities, incidents and accounts (tests/signin.py),
as a GeoPackage and in PostGIS. Each store gets a main server (two worker processes) and a
limited one (a tiny rate and tiny body limits); both are started as `gridmap --store S api`."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from grids.access import Actor
from grids.flow import load_categories
from grids.service import Gridmap
from layers.store import AuditQuery
from tests import world
from tests.browser import ARTIFACTS, free_port, is_local, world_entities, world_incidents
from tests.conftest import gridmap_exe

STORES = ["gpkg", "postgis"]
ADMIN = Actor.local_admin()
SPEC_SERVICE = {"service_code", "service_name", "description", "metadata", "type", "keywords",
                "group"}
SPEC_REQUEST = {"service_request_id", "status", "status_notes", "service_name", "service_code",
                "description", "agency_responsible", "service_notice", "requested_datetime",
                "updated_datetime", "expected_datetime", "address", "address_id", "zipcode",
                "lat", "long", "media_url"}


class ApiServer:
    """`gridmap --store S api --port P` on a free port; stopped with its process group."""

    def __init__(self, store: str, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"api-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ApiServer:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [gridmap_exe(), "--store", self.store, "api", "--port", str(self.port),
             "--workers", str(self.workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gridmap api exited: see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    self.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"gridmap api did not answer within 60 s: see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class World:
    kind: str
    url: str
    keys: dict[str, str] = field(default_factory=dict)

    def service(self) -> Gridmap:
        return Gridmap(self.url)


def add_key(url: str, name: str, role: str) -> str:
    svc = Gridmap(url)
    try:
        return svc.add_api_key(ADMIN, name, role)[0]
    finally:
        svc.close()


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([gridmap_exe(), "--store", url, *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module", params=STORES)
def api_world(request, tmp_path_factory, new_store) -> World:
    """The world with entities, incidents and one account per role, and keys: the dispatcher's
    made by the real `gridmap apikey add` command."""
    from grids.cases import load_incident_file
    from grids.routing import Router
    from layers.importer import import_path
    from tests.signin import add_world_users

    base = tmp_path_factory.mktemp(f"api-{request.param}")
    files = world.write(base / "files")
    world_entities().to_csv(files / "entities.csv", index=False)
    world_incidents().to_csv(base / "incidents.csv", index=False)
    store = new_store(request.param)
    url = str(store.path) if request.param == "gpkg" else store.url
    import_path(store, files)
    load_incident_file(store, Router(store), base / "incidents.csv", actor="测试")
    add_world_users(url)
    made = cli(url, "apikey", "add", "12369平台", "--role", "dispatcher")
    assert made.returncode == 0, made.stderr
    keys = {"dispatcher": made.stdout.strip().splitlines()[-1]}
    assert keys["dispatcher"].startswith("gmk_")
    for name, role in (("12345热线", "dispatcher"), ("领导驾驶舱", "viewer"),
                       ("规划平台", "planner"), ("运维", "admin")):
        keys[name if name == "12345热线" else role] = add_key(url, name, role)
    return World(request.param, url, keys)


@pytest.fixture(scope="module")
def api(api_world):
    # No replay cache: concurrent retries all reach the store, whose guarantee is tested.
    with ApiServer(api_world.url, workers=2, env={"GRIDMAP_API_RATE": "1000/s",
                                                  "GRIDMAP_API_BURST": "1000",
                                                  "GRIDMAP_API_REPLAY_CACHE": "0"}) as s:
        yield s


@pytest.fixture(scope="module")
def limited(api_world):
    env = {"GRIDMAP_API_RATE": "1/s", "GRIDMAP_API_BURST": "3",
           "GRIDMAP_API_MAX_FORM": "20000", "GRIDMAP_API_MAX_BATCH": "50000"}
    with ApiServer(api_world.url, env=env) as s:
        yield s


def get(server, path: str, key: str | None = None, **params) -> requests.Response:
    headers = {"X-API-Key": key} if key else {}
    return requests.get(server.url + path, params=params, headers=headers, timeout=60)


def post_form(server, fmt: str = "json", **form) -> requests.Response:
    return requests.post(f"{server.url}/open311/v2/requests.{fmt}", data=form, timeout=60)


def assert_error(r: requests.Response, status: int, text: str = "") -> str:
    """The spec's error format with a Chinese description; the description."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"code", "description"}
    assert body[0]["code"] == status
    description = body[0]["description"]
    assert any("\u4e00" <= c <= "\u9fff" for c in description), description
    assert text in description, description
    return description


def beijing_time(text: str) -> datetime:
    assert text.endswith("+08:00"), text
    return datetime.fromisoformat(text)


# -- Open311: services -------------------------------------------------------------------------
def test_services_follow_the_spec(api):
    r = get(api, "/open311/v2/services.json")  # public, as in the spec
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    services = r.json()
    categories = load_categories()
    assert [s["service_code"] for s in services] == list(categories)
    for s in services:
        assert set(s) == SPEC_SERVICE
        cat = categories[s["service_code"]]
        assert s["service_name"] == cat.label_zh and s["metadata"] is False
        assert s["type"] == "realtime" and cat.label_zh in s["keywords"]
    fumes = next(s for s in services if s["service_code"] == "cooking_fumes")
    assert "城市管理" in fumes["description"] and fumes["group"] == "移交其他部门"
    tree = ET.fromstring(get(api, "/open311/v2/services.xml").content)
    assert tree.tag == "services" and len(tree.findall("service")) == len(categories)
    assert tree.find("service/metadata").text == "false"
    definition = get(api, "/open311/v2/services/water.json").json()
    assert definition == {"service_code": "water", "attributes": []}
    assert_error(get(api, "/open311/v2/services/nope.json"), 404, "nope")
    assert_error(get(api, "/open311/v2/services.yaml"), 404, "格式")
    xml_error = ET.fromstring(get(api, "/open311/v2/services/nope.xml").content)
    assert xml_error.tag == "errors" and xml_error.find("error/code").text == "404"
    discovery = get(api, "/open311/discovery.json").json()
    endpoint = discovery["endpoints"][0]
    assert endpoint["url"] == api.url + "/open311/v2" and "text/xml" in endpoint["formats"]


# -- Open311: POST a request -------------------------------------------------------------------
def test_post_request_registers_a_case_through_the_intake(api, api_world):
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["a2_plain"]
    expected = get(api, "/route", key, lon=lon, lat=lat).json()
    r = post_form(api, api_key=key, service_code="air", lat=lat, long=lon,
                  description="化工厂夜间排放刺鼻气体\n持续两小时",
                  address_string="甲二镇工业路 8 号",
                  media_url="https://example.invalid/p/1.jpg", first_name="三", last_name="张",
                  phone="13800001111", email="zs@example.invalid", client_request_id="t-post-1")
    assert r.status_code == 200, r.text
    [created] = r.json()
    assert set(created) == {"service_request_id", "service_notice", "account_id"}
    assert created["account_id"] is None
    case_id = created["service_request_id"]
    notice = created["service_notice"]
    assert case_id in notice and expected["bureau"]["name"] in notice
    assert expected["grid"]["name"] in notice and expected["grid"]["code"] in notice

    [found] = get(api, f"/open311/v2/requests/{case_id}.json", key).json()
    assert set(found) == SPEC_REQUEST
    assert found["service_request_id"] == case_id and found["status"] == "open"
    assert found["service_code"] == "air" and found["service_name"] == "大气污染"
    assert found["description"] == "化工厂夜间排放刺鼻气体\n持续两小时"
    assert found["address"] == "甲二镇工业路 8 号"
    assert found["media_url"] == "https://example.invalid/p/1.jpg"
    assert found["agency_responsible"] == expected["bureau"]["name"]
    assert expected["grid"]["name"] in found["service_notice"]
    assert found["status_notes"] == "已受理（待派遣）"
    assert abs(found["lat"] - lat) < 1e-7 and abs(found["long"] - lon) < 1e-7
    requested = beijing_time(found["requested_datetime"])
    assert beijing_time(found["updated_datetime"]) == requested
    # The workflow's time limit of the state 'reported' (grids/case_flow.csv: 0.5 h).
    assert beijing_time(found["expected_datetime"]) - requested == timedelta(minutes=30)
    assert abs((datetime.now(requested.tzinfo) - requested).total_seconds()) < 120

    svc = api_world.service()
    try:
        case = svc.case(ADMIN, case_id)
        assert case["reporter"] == "张三 13800001111 zs@example.invalid"
        assert case["source"] == "接口：12369平台" and case["category"] == "air"
        assert case["assigned_grid_code"] == expected["grid"]["code"]
        assert "甲二镇工业路 8 号" in case["description"]
        audit = svc.audit_entries(ADMIN, AuditQuery(action="case.create", target=case_id))
        assert len(audit) == 1
        login = svc.actor_for_key(key).login
        assert audit["actor"].iat[0] == login and audit["via"].iat[0] == "api"
        assert '"key_name": "12369平台"' in audit["detail"].iat[0]  # the key's name
    finally:
        svc.close()


def test_post_request_variants_and_refusals(api, api_world):
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["b1"]
    # JSON body, XML answer, a partner agency's category, GCJ-02 coordinates with an accuracy.
    r = requests.post(f"{api.url}/open311/v2/requests.xml", timeout=60,
                      json={"api_key": key, "service_code": "cooking_fumes", "lat": lat,
                            "long": lon, "coordinate_system": "gcj02", "accuracy_m": 30})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    request = ET.fromstring(r.content).find("request")
    assert request.find("service_request_id").text.startswith("12369-")
    assert "城市管理" in request.find("service_notice").text
    assert request.find("account_id").text is None
    svc = api_world.service()
    try:
        case = svc.case(ADMIN, request.find("service_request_id").text)
        routed = json.loads(case["answer"])["point"]["input"]
        assert routed["crs"] == "gcj02" and routed["accuracy_m"] == 30
    finally:
        svc.close()
    outside_lon, outside_lat = world.P["outside"]
    assert_error(post_form(api, api_key=key, service_code="air", lat=outside_lat,
                           long=outside_lon), 400, "不在本市管辖范围内")
    assert_error(post_form(api, api_key=key, lat=lat, long=lon), 400, "service_code")
    assert_error(post_form(api, api_key=key, service_code="graffiti", lat=lat, long=lon), 404,
                 "graffiti")
    assert_error(post_form(api, api_key=key, service_code="air", address_string="某路"), 400,
                 "地址匹配")
    assert_error(post_form(api, api_key=key, service_code="air", lat="北纬32", long=lon), 400,
                 "lat")
    assert_error(post_form(api, api_key=key, service_code="air", lat=lat, long=lon,
                           coordinate_system="beijing54"), 400)
    assert_error(post_form(api, api_key=key, service_code="air", lat=lat, long=lon,
                           description="x" * 4001), 400, "4000")
    assert_error(post_form(api, api_key=key, service_code="air", lat=lat, long=lon,
                           media_url="javascript:alert(1)"), 400, "media_url")
    r = requests.post(f"{api.url}/open311/v2/requests.json", data=b"<x/>", timeout=60,
                      headers={"Content-Type": "application/xml", "X-API-Key": key})
    assert_error(r, 415, "application/x-www-form-urlencoded")
    r = requests.post(f"{api.url}/open311/v2/requests.json", timeout=60,
                      data={"api_key": key, "service_code": "air", "lat": lat, "long": lon,
                            "client_request_id": "a"}, headers={"Idempotency-Key": "b"})
    assert_error(r, 400, "Idempotency-Key")


def test_retries_make_one_case_even_when_concurrent(api, api_world):
    """20 identical retries at once (half naming the id in the form, half in the header):
    exactly one case, and every answer names it; another system's same id is its own case."""
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["a1_numbered"]
    marker = f"重试测试 {api_world.kind} {time.time_ns()}"
    barrier = threading.Barrier(20)

    def attempt(i: int) -> requests.Response:
        form = {"api_key": key, "service_code": "water", "lat": lat, "long": lon,
                "description": marker}
        headers = {}
        if i % 2:
            headers["Idempotency-Key"] = "retry-42"
        else:
            form["client_request_id"] = "retry-42"
        barrier.wait()
        return requests.post(f"{api.url}/open311/v2/requests.json", data=form,
                             headers=headers, timeout=120)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(attempt, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
    ids = {r.json()[0]["service_request_id"] for r in answers}
    assert len(ids) == 1
    again = post_form(api, api_key=key, service_code="water", lat=lat, long=lon,
                      description=marker, client_request_id="retry-42")
    assert again.json()[0]["service_request_id"] in ids
    # Another complaint under the same id (a client reusing its ids) would be lost if it got
    # the first one's case: refused, naming that case.
    for changed in ({"description": marker + "（另一起）"}, {"service_code": "air"},
                    {"lat": lat + 0.001}):
        reused = post_form(api, **({"api_key": key, "service_code": "water", "lat": lat,
                                    "long": lon, "description": marker,
                                    "client_request_id": "retry-42"} | changed))
        assert_error(reused, 409, next(iter(ids)))
    other = post_form(api, api_key=api_world.keys["12345热线"], service_code="water", lat=lat,
                      long=lon, description=marker, client_request_id="retry-42")
    assert other.status_code == 200 and other.json()[0]["service_request_id"] not in ids
    svc = api_world.service()
    try:
        cases = svc.cases(ADMIN)
        mine = cases[cases["description"] == marker]
        assert len(mine) == 2 and set(mine["id"]) == ids | {
            other.json()[0]["service_request_id"]}
        created = svc.audit_entries(ADMIN, AuditQuery(action="case.create", target=ids.pop()))
        assert len(created) == 1
    finally:
        svc.close()


def test_retries_are_answered_from_the_replay_cache(limited, api_world):
    """The limited server keeps answers (GRIDMAP_API_REPLAY_CACHE's default): a retry gets the
    first answer, in either format; a refused attempt is not kept."""
    key = api_world.keys["12345热线"]
    lon, lat = world.P["a2_strip"]
    ident = f"cache-{api_world.kind}-{time.time_ns()}"
    assert_error(post_form(limited, api_key=key, service_code="air", lat=world.P["outside"][1],
                           long=world.P["outside"][0], client_request_id=ident), 400,
                 "不在本市管辖范围内")
    first = post_form(limited, api_key=key, service_code="air", lat=lat, long=lon,
                      client_request_id=ident)
    assert first.status_code == 200, first.text
    again = post_form(limited, "xml", api_key=key, service_code="air", lat=lat, long=lon,
                      client_request_id=ident)
    [created] = first.json()
    request = ET.fromstring(again.content).find("request")
    assert request.find("service_request_id").text == created["service_request_id"]
    assert request.find("service_notice").text == created["service_notice"]
    # The kept answer is for that complaint only: another one under the id is refused.
    time.sleep(1.1)  # this server's rate limit: 1 a second, 3 at once
    assert_error(post_form(limited, api_key=key, service_code="noise", lat=lat, long=lon,
                           client_request_id=ident), 409, created["service_request_id"])
    svc = api_world.service()
    try:
        assert svc.case(ADMIN, created["service_request_id"])["source"] == "接口：12345热线"
    finally:
        svc.close()


# -- Open311: GET requests ---------------------------------------------------------------------
def test_get_requests_filters(api, api_world):
    key = api_world.keys["viewer"]
    window = {"start_date": "2026-10-20T00:00:00+08:00", "end_date": "2026-11-10T00:00:00Z"}

    def ids(**params) -> list[str]:
        r = get(api, "/open311/v2/requests.json", key, **params)
        assert r.status_code == 200, r.text
        for item in r.json():
            assert set(item) == SPEC_REQUEST
        return [item["service_request_id"] for item in r.json()]

    assert sorted(ids(**window)) == ["T0001", "T0002", "T0003"]
    assert ids(**window, status="closed") == ["T0003"]
    assert sorted(ids(**window, status="open")) == ["T0001", "T0002"]
    assert sorted(ids(**window, status="open,closed")) == ["T0001", "T0002", "T0003"]
    assert ids(**window, service_code="water") == ["T0002"]
    assert sorted(ids(**window, service_code="water,noise")) == ["T0002", "T0003"]
    assert ids(start_date="2026-11-02T00:00:00+08:00", end_date="2026-11-20T00:00:00+08:00",
               service_code="air,water,noise") == []
    # service_request_id overrides every other argument.
    assert sorted(ids(service_request_id="T0003,T0001", status="open",
                      start_date="2020-01-01T00:00:00Z", end_date="2020-01-02T00:00:00Z")) == [
        "T0001", "T0003"]
    [closed] = get(api, "/open311/v2/requests/T0003.json", key).json()
    assert closed["status"] == "closed" and closed["expected_datetime"] is None
    assert closed["requested_datetime"] == "2026-11-01T08:00:00+08:00"
    assert beijing_time(closed["updated_datetime"]) > beijing_time(closed["requested_datetime"])
    [dispatched] = get(api, "/open311/v2/requests/T0001.json", key).json()
    assert dispatched["status"] == "open" and "待网格员现场核实" in dispatched["status_notes"]
    assert "已超过办理时限" in dispatched["status_notes"]  # 2 h after 2026-11-01
    assert dispatched["address"].endswith("甲县，南通市")
    assert dispatched["agency_responsible"] == "甲县执法局"
    tree = ET.fromstring(get(api, "/open311/v2/requests.xml", key, **window).content)
    assert tree.tag == "service_requests" and len(tree.findall("request")) == 3
    assert_error(get(api, "/open311/v2/requests/T9999.json", key), 404, "T9999")
    assert_error(get(api, "/open311/v2/requests.json", key, start_date="2026-01-01T00:00:00Z",
                     end_date="2026-06-01T00:00:00Z"), 400, "90 天")
    assert_error(get(api, "/open311/v2/requests.json", key, start_date="昨天"), 400,
                 "start_date")
    assert_error(get(api, "/open311/v2/requests.json", key, status="pending"), 400, "status")


def test_get_requests_are_the_newest_cut_in_the_store(api_world, monkeypatch):
    """The newest MAX_REQUESTS of the window, sorted and cut by the store's query (never every
    case of 90 days read to keep a thousand); several categories: the newest of all."""
    from grids.access import Actor
    from grids.service import Gridmap
    from ui.api import open311
    from ui.api.formats import ApiError

    svc = Gridmap(api_world.url)
    asked = []
    real = svc.cases

    def cases(actor, query=None, now=None):
        asked.append(query)
        return real(actor, query, now)

    monkeypatch.setattr(svc, "cases", cases)
    actor = Actor(login="k", role="viewer", via="api", name="测试")
    window = ("2026-10-20T00:00:00+08:00", "2026-11-10T00:00:00Z")

    def ids(codes=None) -> list[str]:
        found = open311.find_requests(svc, actor, None, codes, *window, None)
        return [r["service_request_id"] for r in found]

    try:
        assert ids() == ["T0003", "T0002", "T0001"]  # the same time: by number, newest first
        monkeypatch.setattr(open311, "MAX_REQUESTS", 2)
        asked.clear()
        assert ids() == ["T0003", "T0002"]
        assert [(q.order, q.limit) for q in asked] == [("newest", 2)]
        asked.clear()
        assert ids("air,water") == ["T0002", "T0001"]
        assert [(q.category, q.limit) for q in asked] == [("air", 2), ("water", 2)]
        monkeypatch.setattr(open311, "MAX_REQUESTS", 1)
        assert ids("noise,air") == ["T0003"] and ids("smell") == []
        with pytest.raises(ApiError) as refused:
            ids(",".join(f"c{i}" for i in range(open311.MAX_CATEGORIES + 1)))
        assert refused.value.status == 400
    finally:
        svc.close()


# -- keys and limits ---------------------------------------------------------------------------
def test_keys_are_required_checked_and_revocable(api, api_world):
    lon, lat = world.P["b1"]
    csv = "id,lon,lat\n1,120.8,32.1\n"
    for r in (get(api, "/route", None, lon=lon, lat=lat),
              get(api, "/point/4326/120.8,32.1"),
              get(api, "/areas/320901"),
              get(api, "/open311/v2/requests.json"),
              get(api, "/open311/v2/requests/T0001.json"),
              requests.post(api.url + "/route?crs=wgs84", data=csv, timeout=60,
                            headers={"Content-Type": "text/csv"}),
              post_form(api, service_code="air", lat=lat, long=lon)):
        assert_error(r, 401, "缺少接口密钥")
    real = api_world.keys["viewer"]
    for bad in ("gmk_000000000000_nope", real[:-2] + "xx", "x" * 500, "' OR 1=1 --"):
        assert_error(get(api, "/route", bad, lon=lon, lat=lat), 401, "无效")
    # The key as the spec's query parameter, as the header, and (POST) as a form field.
    assert requests.get(f"{api.url}/route", params={"lon": lon, "lat": lat, "api_key": real},
                        timeout=60).status_code == 200
    assert get(api, "/route", real, lon=lon, lat=lat).status_code == 200

    fresh = add_key(api_world.url, "临时系统", "viewer")
    assert get(api, "/route", fresh, lon=lon, lat=lat).status_code == 200
    key_id = "api-" + fresh.split("_")[1]
    revoked = cli(api_world.url, "apikey", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert_error(get(api, "/route", fresh, lon=lon, lat=lat), 401, "已吊销")


def test_roles_are_enforced_by_the_service_and_audited(api, api_world):
    lon, lat = world.P["b1"]
    viewer, planner = api_world.keys["viewer"], api_world.keys["planner"]
    assert_error(post_form(api, api_key=viewer, service_code="air", lat=lat, long=lon), 403,
                 "无权限")
    assert_error(get(api, "/open311/v2/requests.json", planner), 403, "无权限")
    r = requests.post(api.url + "/route?crs=wgs84", data="id,lon,lat\n1,120.8,32.1\n",
                      headers={"Content-Type": "text/csv", "X-API-Key": viewer}, timeout=60)
    assert_error(r, 403, "批量分派")
    assert get(api, "/route", planner, lon=lon, lat=lat).status_code == 200
    svc = api_world.service()
    try:
        login = svc.actor_for_key(viewer).login
        denied = svc.audit_entries(ADMIN, AuditQuery(actor=login, action="denied"))
        refused = [json.loads(d)["refused"] for d in denied["detail"]]
        assert "case.create" in refused and "batch.assign" in refused
        assert set(denied["via"]) == {"api"}
        assert svc.audit_verify(ADMIN).ok
    finally:
        svc.close()


def test_rate_limit_answers_429_with_retry_after(limited, api_world):
    key = api_world.keys["viewer"]
    lon, lat = world.P["b1"]
    answers = [get(limited, "/route", key, lon=lon, lat=lat) for _ in range(6)]
    codes = [r.status_code for r in answers]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
    refused = next(r for r in answers if r.status_code == 429)
    assert_error(refused, 429, "请求过于频繁")
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 2
    # Another key has a bucket of its own.
    assert get(limited, "/route", api_world.keys["planner"], lon=lon, lat=lat).status_code == 200
    time.sleep(wait + 0.2)
    assert get(limited, "/route", key, lon=lon, lat=lat).status_code == 200


def test_bodies_are_size_limited(api, limited, api_world):
    key = api_world.keys["dispatcher"]
    big = {"api_key": key, "service_code": "air", "lat": "32.1", "long": "120.8",
           "description": "x" * 30_000}
    assert_error(post_form(limited, **big), 413, "20 KB")

    def chunks(total: int):
        for _ in range(total // 15_000):
            yield b"description=" + b"x" * 14_988

    r = requests.post(f"{limited.url}/open311/v2/requests.json", data=chunks(30_000),
                      timeout=60, headers={"Content-Type": "application/x-www-form-urlencoded",
                                           "X-API-Key": key})
    assert_error(r, 413, "请求体过大")
    rows = "id,lon,lat\n" + "".join(f"{i},120.8,32.1\n" for i in range(5000))
    r = requests.post(f"{limited.url}/route?crs=wgs84", data=rows.encode(), timeout=60,
                      headers={"Content-Type": "text/csv", "X-API-Key": key})
    assert_error(r, 413, "50 KB")
    # The defaults (1 MB forms, 20 MB batches), refused from the declared length alone.
    for path, length, text in (("/open311/v2/requests.json", 1_000_001, "1 MB"),
                               ("/route", 20_000_001, "20 MB")):
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "text/csv")
        conn.putheader("Content-Length", str(length))
        conn.putheader("X-API-Key", key)
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 413 and text in body[0]["description"]
        conn.close()


# -- routing -----------------------------------------------------------------------------------
def _route_cases() -> list[tuple[dict, list[str]]]:
    """(GET /route parameters, the same as `gridmap route` arguments)."""
    from pyproj import Transformer

    x, y = Transformer.from_crs(4490, 4549, always_xy=True).transform(*world.P["chemical"])
    lon, lat = world.P["a2_plain"]
    cases = [
        ({"lon": lon, "lat": lat}, [str(lon), str(lat)]),
        ({"lon": lat, "lat": lon}, [str(lat), str(lon)]),  # swapped
        (dict(zip(("lon", "lat"), world.P["border_ab"], strict=True)),
         [str(v) for v in world.P["border_ab"]]),  # ambiguous
        ({"lon": world.P["sea"][0], "lat": world.P["sea"][1], "accuracy": 300.0},
         [str(v) for v in world.P["sea"]] + ["--accuracy", "300.0"]),
        ({"lon": world.P["outside"][0], "lat": world.P["outside"][1]},
         [str(v) for v in world.P["outside"]]),
        ({"lon": x, "lat": y, "crs": "EPSG:4549"}, [repr(x), repr(y), "--crs", "EPSG:4549"]),
        ({"lon": world.P["enclave"][0], "lat": world.P["enclave"][1], "crs": "gcj02",
          "at": 1}, [str(v) for v in world.P["enclave"]] + ["--crs", "gcj02",
                                                           "--generation", "1"]),
    ]
    return cases


def test_route_answers_exactly_as_the_command_line(api, api_world):
    key = api_world.keys["viewer"]
    cases = _route_cases()
    with ThreadPoolExecutor(4) as pool:
        printed = list(pool.map(
            lambda c: cli(api_world.url, "route", *c[1], "--json"), cases))
    statuses = set()
    for (params, _), out in zip(cases, printed, strict=True):
        assert out.returncode == 0, out.stderr
        expected = json.loads(out.stdout)
        r = get(api, "/route", key, **params)
        assert r.status_code == 200, r.text
        assert r.json() == expected, params
        statuses.add(expected["status"])
        srid = {"EPSG:4549": 4549}.get(params.get("crs", "wgs84"))
        if srid or "crs" not in params:
            extra = {k: params[k] for k in ("accuracy", "at") if k in params}
            point = get(api, f"/point/{srid or 4326}/{params['lon']!r},{params['lat']!r}",
                        key, **extra)
            assert point.json() == expected, params
    assert statuses == {"ok", "ambiguous", "outside"}
    assert_error(get(api, "/route", key, lon=120.8, lat=32.1, crs="beijing54"), 400)
    assert_error(get(api, "/route", key, lon=120.8), 400, "缺少参数 lat")
    assert_error(get(api, "/route", key, lon=120.8, lat=32.1, at=99), 400, "99")
    assert_error(get(api, "/point/4326/120.8;32.1", key), 400, "x,y")


def test_areas(api, api_world):
    key = api_world.keys["viewer"]
    grid = get(api, "/areas/320901002001001", key)
    assert grid.status_code == 200 and grid.headers["content-type"] == "application/geo+json"
    feature = grid.json()
    assert feature["type"] == "Feature" and feature["id"] == "320901002001001"
    assert feature["properties"]["layer"] == "grids"
    assert feature["properties"]["township_code"] == "320901002"
    assert {w["id"] for w in feature["properties"]["workers"]} >= {"L001"}
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    county = get(api, "/areas/320902", key).json()
    assert county["properties"]["name"] == "乙县"
    assert_error(get(api, "/areas/999", key), 404, "999")


def _lines(r: requests.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.iter_lines() if line]


def test_batch_streams_one_line_per_input_in_order(api, api_world):
    key = api_world.keys["dispatcher"]
    url = api.url + "/route"
    csv = ("编号,经度,纬度,坐标系\n"
           f"A,{world.P['a2_plain'][0]},{world.P['a2_plain'][1]},wgs84\n"
           "B,不是数字,32.1,wgs84\n"
           "\n"
           f"C,{world.P['outside'][0]},{world.P['outside'][1]},wgs84\n"
           f"D,{world.P['a2_plain'][1]},{world.P['a2_plain'][0]},wgs84\n"
           f"E,{world.P['b1'][0]},{world.P['b1'][1]},mars\n"
           f"F,{world.P['border_ab'][0]},{world.P['border_ab'][1]},wgs84\n")
    r = requests.post(url, data=csv.encode("gbk"), headers={"Content-Type": "text/csv",
                                                            "X-API-Key": key},
                      stream=True, timeout=60)
    lines = _lines(r)
    assert [(x["row"], x["id"], x["status"]) for x in lines] == [
        (2, "A", "ok"), (3, "B", "error"), (5, "C", "outside"), (6, "D", "ok"),
        (7, "E", "error"), (8, "F", "ambiguous")]
    assert lines[1]["error"] == "坐标为空或不是数字" and "mars" in lines[4]["error"]
    expected = get(api, "/route", key, lon=world.P["a2_plain"][0],
                   lat=world.P["a2_plain"][1]).json()
    assert lines[0]["grid_code"] == expected["grid"]["code"]
    assert lines[0]["bureau_name"] == expected["bureau"]["name"]
    assert "swapped" in lines[3]["flags"]

    features = [{"type": "Feature", "id": "g1", "properties": {},
                 "geometry": {"type": "Point", "coordinates": list(world.P["a2_plain"])}},
                {"type": "Feature", "properties": {"id": "g2"},
                 "geometry": {"type": "LineString", "coordinates": [[120.6, 32], [120.7, 32]]}},
                {"type": "Feature", "properties": {"accuracy_m": 500},
                 "geometry": {"type": "Point", "coordinates": list(world.P["near_border"])}},
                {"type": "Feature", "properties": {"id": "g4"}, "geometry": None}]
    body = json.dumps({"type": "FeatureCollection", "features": features})
    r = requests.post(url, data=body, headers={"Content-Type": "application/geo+json",
                                               "X-API-Key": key}, stream=True, timeout=60)
    lines = _lines(r)
    assert [(x["row"], x["id"], x["status"]) for x in lines] == [
        (1, "g1", "ok"), (2, "g2", "error"), (3, None, "ambiguous"), (4, "g4", "error")]
    assert "点要素" in lines[1]["error"] and "geometry" in lines[3]["error"]
    assert_error(requests.post(url, data='{"type": "FeatureCollection", "features": [',
                               headers={"Content-Type": "application/geo+json",
                                        "X-API-Key": key}, timeout=60), 400, "GeoJSON")
    assert_error(requests.post(url, data="id,lon,lat\n1,120.8,32.1\n", timeout=60,
                               headers={"Content-Type": "text/csv", "X-API-Key": key}), 400,
                 "crs")
    assert_error(requests.post(url, data="x", timeout=60, headers={
        "Content-Type": "application/pdf", "X-API-Key": key}), 415)


def test_large_batch_streams_in_chunks_in_order(api, api_world):
    """5,000 points (three chunks), a bad one every 1,000: every line in input order."""
    key = api_world.keys["dispatcher"]
    features = []
    for i in range(5000):
        lon = 120.52 + (i % 370) * 0.001
        coords = [lon, 32.01 + (i // 370) * 0.005] if i % 1000 != 999 else ["x", 1]
        features.append({"type": "Feature", "id": i,
                         "geometry": {"type": "Point", "coordinates": coords}})
    body = json.dumps({"type": "FeatureCollection", "name": "t", "features": features})
    r = requests.post(api.url + "/route", data=body, stream=True, timeout=120,
                      headers={"Content-Type": "application/geo+json", "X-API-Key": key})
    lines = _lines(r)
    assert [x["row"] for x in lines] == list(range(1, 5001))
    assert [x["id"] for x in lines] == [str(i) for i in range(5000)]
    bad = [x["row"] for x in lines if x["status"] == "error"]
    assert bad == [1000, 2000, 3000, 4000, 5000]
    assert {x["status"] for x in lines} - {"error"} <= {"ok", "ambiguous"}
    # A body broken after 2,050 features: those are answered, then a line says why it stopped.
    broken = json.dumps({"type": "FeatureCollection", "features": features[:2050]})[:-2] + ", {"
    r = requests.post(api.url + "/route", data=broken, stream=True, timeout=120,
                      headers={"Content-Type": "application/geo+json", "X-API-Key": key})
    lines = _lines(r)
    assert [x["row"] for x in lines] == [*range(1, 2051), None]
    assert lines[-1]["status"] == "error" and "GeoJSON" in lines[-1]["error"]
    svc = api_world.service()
    try:
        login = svc.actor_for_key(key).login
        batches = svc.audit_entries(ADMIN, AuditQuery(actor=login, action="batch.assign"))
        assert any(json.loads(d)["counts"]["total"] == 5000 for d in batches["detail"])
    finally:
        svc.close()


# -- docs ----------------------------------------------------------------------------------------
def test_openapi_is_served_by_the_api(api):
    spec = get(api, "/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/open311/v2/services.{fmt}", "/open311/v2/requests.{fmt}",
            "/open311/v2/requests/{service_request_id}.{fmt}", "/route",
            "/point/{srid}/{coordinates}", "/areas/{code}"} <= paths
    assert {"get", "post"} <= set(spec["paths"]["/route"])
    schemes = spec["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "X-API-Key"),
                                                                ("query", "api_key")}
    assert get(api, "/redoc").status_code == 404
    page = requests.get(api.url + "/docs", timeout=30)
    assert "cdn" not in page.text.lower() and "script-src 'self'" in page.headers[
        "Content-Security-Policy"]


def test_docs_page_works_offline_in_chromium(api, browser):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    seen, errors = [], []
    page.on("request", lambda r: seen.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(api.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "HTTP 接口" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 9
        assert page.locator(".btn.authorize").count() == 1
        shots = ARTIFACTS / "api"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "docs.png"))
    finally:
        context.close()
    outside = [u for u in seen if not is_local(u, api.port)]
    assert not outside, f"requests leaving the host: {outside}"
    assert any(u.endswith("/openapi.json") for u in seen)
    assert any("swagger-ui-bundle.js" in u for u in seen)
    assert not errors, errors


def test_route_on_the_sample_store_answers_as_the_command_line(sample_store, tmp_path):
    """The Nantong sample (real county and township outlines, 2,544 grids): random points,
    with and without an accuracy, in WGS84 and GCJ-02, answered as `gridmap route --json`."""
    import random
    import shutil

    store = tmp_path / "sample.gpkg"
    shutil.copy(sample_store, store)
    svc = Gridmap(str(store))
    key, _ = svc.add_api_key(ADMIN, "抽样核对", "viewer")
    svc.close()
    rnd = random.Random(20261202)
    points = [(round(rnd.uniform(120.3, 121.9), 6), round(rnd.uniform(31.7, 32.7), 6),
               rnd.choice(["wgs84", "gcj02"]), rnd.choice([0, 0, 300])) for _ in range(6)]
    # (a `gridmap route` process each: 2 s of start-up; every crs and accuracy is among them)
    assert {p[2] for p in points} == {"wgs84", "gcj02"} and {p[3] for p in points} == {0, 300}
    with ApiServer(str(store)) as server:
        for lon, lat, crs, acc in points:
            out = subprocess.run([gridmap_exe(), "--store", str(store), "route", str(lon),
                                  str(lat), "--crs", crs, "--accuracy", str(acc), "--json"],
                                 capture_output=True, text=True, timeout=120)
            expected = json.loads(out.stdout)
            got = requests.get(f"{server.url}/route", headers={"X-API-Key": key}, timeout=30,
                               params={"lon": lon, "lat": lat, "crs": crs, "accuracy": acc})
            assert got.status_code == 200 and got.json() == expected, (lon, lat, crs, acc)


def test_a_request_cannot_write_a_log_line_of_its_own(api, api_world):
    forged = "2026-12-03 13:00:00,000 INFO FAKE"
    path = "/open311/v2/requests/abc%0D%0A" + forged.replace(" ", "%20") + '%22%20200.json'
    r = requests.get(api.url + path, headers={"X-API-Key": api_world.keys["dispatcher"]},
                     timeout=60)
    assert r.status_code == 404
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the access line is written as the response ends
        lines = api.log_path.read_text(encoding="utf-8").splitlines()
        mine = [line for line in lines if "FAKE" in line]
        if mine:
            break
        time.sleep(0.1)
    assert len(mine) == 1 and not mine[0].startswith(forged)
    assert '/abc\\r\\n2026-12-03 13:00:00,000 INFO FAKE\\" 200.json" 404' in mine[0]


def test_an_unreadable_batch_body_is_explained_without_server_file_names(api, api_world):
    key = api_world.keys["dispatcher"]
    for body, said in (("id,lon,lat\n1,120.8,32.1,9,9\n", "有的行字段比表头多"),
                       ('id,lon,lat\n1,"120.8,32.1\n2,120.9,32.2\n', "第 2 行：引号没有闭合")):
        r = requests.post(api.url + "/route?crs=wgs84", data=body.encode(), timeout=60,
                          headers={"Content-Type": "text/csv", "X-API-Key": key})
        description = assert_error(r, 400, said)
        assert description.startswith("请求正文：") and "gridmap-api-" not in description
        assert "Error" not in description


def test_a_json_field_of_the_wrong_kind_is_named(api, api_world):
    key = api_world.keys["dispatcher"]
    r = requests.post(api.url + "/open311/v2/requests.json", timeout=60,
                      json={"service_code": ["air"], "lat": 32.0, "long": {"x": 1}},
                      headers={"X-API-Key": key})
    description = assert_error(r, 400, "不能是数组或对象")
    assert "service_code" in description and "long" in description
    assert "缺少" not in description
    # A field this service does not read may be an object (an Open311 client's attributes).
    lon, lat = world.P["b1"]
    r = requests.post(api.url + "/open311/v2/requests.json", timeout=60,
                      json={"service_code": "air", "lat": lat, "long": lon,
                            "attribute": {"WHISPER": "1"}}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text


def test_swapped_coordinates_are_taken_and_said(api, api_world):
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["b1"]
    r = post_form(api, api_key=key, service_code="air", lat=lon, long=lat)  # the wrong way
    assert r.status_code == 200, r.text
    [made] = r.json()
    assert "填反" in made["service_notice"] and f"纬度 {lat:.6f}" in made["service_notice"]
    svc = api_world.service()
    try:
        case = svc.case(ADMIN, made["service_request_id"])
        assert "swapped" in json.loads(case["answer"])["flags"]
    finally:
        svc.close()
    r = post_form(api, api_key=key, service_code="air", lat=lat, long=lon)
    assert "填反" not in r.json()[0]["service_notice"]


def test_an_unknown_system_for_a_whole_batch_is_one_refusal(api, api_world):
    key = api_world.keys["dispatcher"]
    r = requests.post(api.url + "/route?crs=evil", data=b"id,lon,lat\n1,120.8,32.1\n",
                      timeout=60, headers={"Content-Type": "text/csv", "X-API-Key": key})
    assert "evil" in assert_error(r, 400, "参数 crs")
    r = requests.post(api.url + "/route?crs=evil", data=b"id,lon,lat\n1,120.8,32.1\n",
                      timeout=60, headers={"Content-Type": "text/csv"})
    assert_error(r, 401, "缺少接口密钥")  # the key first, as everywhere


def test_hostile_text_is_refused_or_sent_back_as_valid_xml(api, api_world):
    """Text no XML can carry, a description posing as the address and media lines, JSON
    nested past Python's recursion limit, lone surrogates and dates past pandas' range: each a
    clear 400 (never a 500), and XML answers stay parseable whatever a stored case holds."""
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["b1"]
    base = {"api_key": key, "service_code": "air", "lat": lat, "long": lon}
    assert_error(post_form(api, **base, description="x \uffff"), 400, "控制字符")
    assert_error(post_form(api, **base, description="正常投诉\n【图片】javascript:alert(1)"),
                 400, "【图片】")
    assert_error(post_form(api, **base, description="正常投诉\n 【地址】伪造地址"), 400,
                 "【地址】")
    url = f"{api.url}/open311/v2/requests.json"
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    r = requests.post(url, data=deep.encode(), headers={"Content-Type": "application/json"},
                      timeout=60)
    assert_error(r, 400, "JSON")
    for name in ("description", "service_code", "api_key"):
        body = json.dumps(base | {name: "a\ud800b"})  # "\ud800" alone: not a character
        r = requests.post(url, data=body.encode(), timeout=60,
                          headers={"Content-Type": "application/json"})
        assert_error(r, 400, name)
    viewer = api_world.keys["viewer"]
    for date in ("9999-12-31", "0001-01-01"):
        assert_error(get(api, "/open311/v2/requests.json", viewer, start_date=date), 400,
                     "超出范围")
    # A case whose text XML cannot hold (written by another way in: the store takes any text)
    # is sent with those characters dropped; the XML list and an error echoing a path parse.
    svc = api_world.service()
    try:
        desk = Actor("t-desk", "dispatcher", "调度员")
        case_id = svc.create_case(desk, svc.route(desk, lon, lat), {"category": "air",
                                                  "description": "油烟\x01\uffff味\r重"})
    finally:
        svc.close()
    r = get(api, f"/open311/v2/requests/{case_id}.xml", viewer)
    assert r.status_code == 200
    assert ET.fromstring(r.content).find("request/description").text == "油烟味\r重"
    r = get(api, "/open311/v2/requests/a%01b.xml", viewer)
    assert r.status_code == 404 and ET.fromstring(r.content).find("error/code").text == "404"


def test_health_answers_a_monitors_head_request(api):
    r = requests.head(api.url + "/health", timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert requests.get(api.url + "/health", timeout=60).json() == {"status": "ok"}


def test_common_client_slips_are_explained(api, api_world):
    """JSON without its Content-Type, a JSON body with a BOM, and a "+08:00" left unencoded in
    the query string (it arrives as a space)."""
    key = api_world.keys["dispatcher"]
    lon, lat = world.P["b1"]
    body = json.dumps({"api_key": key, "service_code": "air", "lat": lat, "long": lon})
    url = f"{api.url}/open311/v2/requests.json"
    r = requests.post(url, data=body.encode(), timeout=60)
    assert_error(r, 415, "Content-Type: application/json")
    r = requests.post(url, data="\ufeff".encode() + body.encode(), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    r = requests.get(f"{api.url}/open311/v2/requests.json?start_date=2026-11-01T00:00:00+08:00",
                     headers={"X-API-Key": api_world.keys["viewer"]}, timeout=60)
    assert_error(r, 400, "%2B")

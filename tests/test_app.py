"""The pages' logic with Streamlit's AppTest (no browser): what goes to the map element, the
routing card of a click, search, escaping, the offline check, basemaps, the worker page."""

from __future__ import annotations

import hashlib
import io
import json
import re

import folium
import folium.plugins
import pytest
from openpyxl import load_workbook
from streamlit.testing.v1 import AppTest

from grids.access import ROLES_ZH
from grids.routing import Router
from layers.store import open_store
from tests import world
from tests.browser import ROOT, XSS_NAME, build_map_world, map_config
from tests.signin import sign_in_page
from ui import assets, basemap, cards

URL_IN_TEXT = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.IGNORECASE)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("app"))


@pytest.fixture
def app(store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path)
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    return at.run()


def map_args(at) -> dict:
    [element] = [e for e in at.get("component_instance")
                 if e.proto.component_name == "streamlit_folium.st_folium"]
    return json.loads(element.proto.json_args)


def component_data(at, name: str, key: str) -> dict:
    """The data of the components-v2 element `name` mounted with `key`."""
    [element] = [e for e in at.get("bidi_component")
                 if e.proto.component_name == name and e.proto.id.endswith(key)]
    return json.loads(element.proto.json)


def card(at) -> str:
    return "".join(h.proto.body for h in at.get("html"))


def click(at, lon, lat):
    at.session_state["citymap"] = {"last_clicked": {"lat": lat, "lng": lon}}
    return at.run()


def test_no_asset_leaves_the_host(app):
    assert not app.exception
    args = map_args(app)
    links = args["js_links"] + args["css_links"]
    assert links and not [u for u in links if assets.is_external(u)]
    assert any(u.endswith("leaflet@1.9.4/leaflet.js") for u in args["js_links"])
    # The map script loads more itself: every URL in its config is the app's own.
    config = map_config(args["script"])
    own = config["js"] + config["css"] + config["prefetch"] + [config["base"], config["imagePath"]]
    assert all(u.startswith("../../app/static/") for u in own), own
    for part in ("script", "header", "html"):
        assert not URL_IN_TEXT.findall(args[part] or ""), part
    # Only clicks come back: panning and zooming never rerun the script.
    assert args["returned_objects"] == ["last_clicked"]
    assert "imagePath" in config and config["imagePath"].endswith("leaflet@1.9.4/images/")


def test_click_shows_the_routing_answer(app, store_path):
    at = click(app, *world.P["a2_plain"])
    html = card(at)
    expected = Router(open_store(str(store_path))).route(*world.P["a2_plain"])
    assert "明确" in html and expected["grid"]["code"] in html
    for w in expected["workers"]:
        assert w["name"] in html and w["phone"] in html
    assert expected["bureau"]["name"] in html
    [shown] = at.json
    assert json.loads(shown.proto.body)["grid"] == expected["grid"]  # the CLI's JSON
    # The clicked point and the grid are highlighted without reloading the map.
    assert "feature_group" in (map_args(at)["feature_group"] or "")


def test_ambiguous_and_outside(app):
    app.selectbox(key="accuracy").set_value(500).run()
    html = card(click(app, *world.P["near_border"]))
    assert "存在歧义" in html and "候选 1" in html and "候选 2" in html
    assert "乙县" in html and "甲县" in html
    html = card(click(app, *world.P["outside"]))
    assert "不在辖区内" in html


def test_search_zooms_and_escapes(app):
    at = app.text_input(key="query").input("<img").run()
    assert not at.exception
    html = card(at)
    assert XSS_NAME not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    args = map_args(at)
    lon, lat = world.P["a2_strip"]
    assert args["center"] == pytest.approx([lat, lon], abs=1e-5) and args["zoom"] == 16
    # A grid code zooms to the grid's extent.
    at = at.text_input(key="query").input("320901002800001").run()
    assert "某化工厂专属网格" in card(at)
    assert map_args(at)["zoom"] >= 14


def test_a_searched_township_is_answered_as_the_whole_area(app):
    at = app.text_input(key="query").input("甲二镇").run()
    assert not at.exception
    assert "甲县执法局" in card(at)
    # Every grid of the township, not the one under an interior point.
    answer = json.loads(at.json[0].value)
    codes = {g["code"] for g in answer.get("grids", [])}
    assert {"320901002001001", "320901002001002"} <= codes
    assert answer["status"] == "ok" and answer["bureau"]["code"] == "B-A"


def test_worker_hit_links_to_the_worker_page(app):
    at = app.text_input(key="query").input("甲二镇网格长").run()
    assert "网格员：甲二镇网格长" in card(at)
    links = [link for link in at.get("page_link") if "工作台" in link.proto.label]
    assert links and "worker=L001" in links[0].proto.page + links[0].proto.query_string


def test_cdn_link_is_an_error_not_a_blank_map(store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path)
    monkeypatch.delitem(assets.VENDORED, "leaflet")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert any("外部网站" in e.value and "cdn.jsdelivr.net" in e.value for e in at.error)
    assert not at.get("component_instance")


def test_offline_check_covers_plugins():
    m = folium.Map(tiles=None)
    folium.plugins.Draw().add_to(m)
    folium.plugins.MarkerCluster().add_to(m)
    assets.localize(m)
    assert assets.external_urls(m) == []
    draw = next(e for e in m._children.values() if isinstance(e, folium.plugins.Draw))
    assert all("leaflet-draw@1.0.4" in u for _, u in draw.default_js + draw.default_css)
    folium.plugins.Fullscreen().add_to(m)  # not vendored
    assets.localize(m)
    with pytest.raises(assets.OfflineAssetError, match="fullscreen"):
        assets.ensure_offline(m)
    tiles = folium.Map(tiles="OpenStreetMap")
    assets.localize(tiles)
    assert any("openstreetmap" in u for u in assets.external_urls(tiles))


def test_vendored_files_match_the_manifest():
    files = assets.manifest()["files"]
    for f in files:
        data = (assets.VENDOR_DIR / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
        assert f["package"] and f["version"] and f["license"], f
    listed = {f["path"] for f in files}
    assert set(assets.VENDORED.values()) <= listed
    notes = (assets.VENDOR_DIR / "ASSETS.md").read_text(encoding="utf-8")
    for package, version in {(f["package"], f["version"]) for f in files}:
        assert f"{package}@{version}" in notes or package == "(generated)", package
    assert assets.missing_files() == []


def test_basemap_settings():
    s = basemap.load_settings({})
    assert [b.key for b in s.basemaps] == ["none"] and s.default == "none" and not s.problems
    s = basemap.load_settings({"GRIDMAP_TIANDITU_KEY": "k123", "GRIDMAP_BASEMAP": "tianditu_img"})
    img = s.get(s.default)
    assert img.key == "tianditu_img" and len(img.tiles) == 2 and img.tiles[1].overlay
    assert "tk=k123" in img.tiles[0].url and not img.shifted
    amap = "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}"
    s = basemap.load_settings({"GRIDMAP_TILE_URL": amap, "GRIDMAP_TILE_DATUM": "wgs84",
                               "GRIDMAP_TILE_SUBDOMAINS": "1234"})
    custom = s.get("custom")
    assert custom.shifted and custom.click_crs == "gcj02" and "GCJ-02" in custom.notice
    x, y = custom.to_display([120.9], [32.0])
    assert 0.002 < abs(x[0] - 120.9) + abs(y[0] - 32.0) < 0.02
    s = basemap.load_settings({"GRIDMAP_TILE_URL": amap, "GRIDMAP_GCJ02": "refuse"})
    assert [b.key for b in s.basemaps] == ["none"] and "拒绝" in s.problems[0]
    s = basemap.load_settings({"GRIDMAP_TILE_URL": "https://maponline0.bdimg.com/tile/?x={x}&y={y}&z={z}"})
    assert [b.key for b in s.basemaps] == ["none"] and "百度" in s.problems[0]
    s = basemap.load_settings({"GRIDMAP_TILE_URL": "http://10.0.0.5/tiles/{z}/{x}/{y}.png",
                               "GRIDMAP_BASEMAP": "custom"})
    assert s.default == "custom" and s.get("custom").hosts == ("10.0.0.5",)
    assert "{z}" in basemap.load_settings({"GRIDMAP_TILE_URL": "http://x/tiles"}).problems[0]


def test_cards_escape_everything():
    answer = {"status": "ok", "status_zh": "明确", "point": {"cgcs2000": [120.1, 32.1],
              "input": {"accuracy_m": 0}}, "version": {"generation": 1},
              "county": {"code": "1", "name": "<b>县</b>"}, "township": None,
              "grid": {"code": "g", "name": "<script>x()</script>", "kind": "park"},
              "workers": [{"name": "<i>张</i>", "phone": '1"><x', "role": "worker"}],
              "parks": [], "bureau": None, "chain": [], "flags": ["swapped"],
              "reasons": ["<img src=x>"], "candidates": []}
    html = cards.route_card(answer)
    assert "<script>" not in html and "<img" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html and "经纬度已对调" in html and '1&quot;&gt;&lt;x' in html


def test_missing_store_is_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDMAP_STORE", str(tmp_path / "none.gpkg"))
    monkeypatch.setenv("GRIDMAP_SERVED", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("数据库文件不存在" in e.value for e in at.error)


def test_a_name_written_like_markdown_stays_text(store_path, monkeypatch):
    """A display name with a link and an image in markdown: shown as typed in the sidebar and
    in a refusal, never as a link or an image fetched from another host."""
    import ui.auth
    import ui.server
    from grids.access import Actor

    sign_in_page(monkeypatch, store_path, "viewer")
    name = "[登录](https://e.example/)![](http://198.51.100.7/t)"
    svc = ui.server.service()
    if not any(u.login == "md-viewer" for u in svc.users(Actor.local_admin())):
        svc.add_user(Actor.local_admin(), "md-viewer", "viewer", "Md#viewer2026x", name=name)
    token = svc.sign_in("md-viewer", "Md#viewer2026x", "apptest").token
    monkeypatch.setattr(ui.auth, "session_token", lambda: token)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert not at.exception
    shown = [c.value for c in at.sidebar.caption]
    assert any(v.startswith("当前用户：") and cards.md(name) in v for v in shown), shown
    at.switch_page("pages/2_受理.py").run()  # not for a viewer: refused, with the name
    shown += [w.value for w in at.warning]
    assert any(cards.md(name) in v and "无权打开此页面" in v for v in shown), shown
    assert not any(name in v for v in shown), shown


def test_worker_page(store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.query_params["worker"] = "W003"  # A2 south
    at.switch_page("pages/1_网格员.py").run()
    assert not at.exception
    assert at.selectbox(key="worker").value == "W003"
    shown = "".join(h.proto.body for h in at.get("html"))
    assert "网格员3" in shown and "320901002南网格（综合网格）" in shown
    # Its open case, in the task list (cards drawn by static/gridmap/rows.js from plain text).
    tasks = component_data(at, "gridmap_rows", "wk_tasks")["rows"]
    assert [(r["id"], r["button"]) for r in tasks] == [("T0001", "打开 T0001")]
    assert tasks[0]["lines"][1].startswith("有刺鼻异味<script>")  # text, set as text
    # The map of its units, drawn in the page (static/gridmap/phonemap.js), no iframe.
    assert not [e for e in at.get("component_instance")
                if e.proto.component_name == "streamlit_folium.st_folium"]
    drawn = component_data(at, "gridmap_phone_map", "wk_map")
    assert len(drawn["units"]["features"]) == 1 and [c[0:2] for c in drawn["cases"]]
    assert any("leaflet-gesture-handling" in a for a in drawn["assets"])  # two fingers move it
    assert not any(assets.is_external(a) for a in drawn["assets"])
    (s, w), (n, e) = drawn["bounds"]
    assert s < n and w < e and all(s <= c[0] <= n and w <= c[1] <= e for c in drawn["cases"])
    # The entities of its units (names as text, however they look), findable by name.
    names = [r["title"] for r in component_data(at, "gridmap_rows", "wk_ents")["rows"]]
    assert XSS_NAME in names
    at.text_input(key="wk_find").input("印染").run()
    names = [r["title"] for r in component_data(at, "gridmap_rows", "wk_ents")["rows"]]
    assert "甲二镇印染有限公司" in names and "甲一镇机械制造厂" not in names
    downloads = [d.proto.label for d in at.get("download_button")]
    assert any(label.startswith("下载 Excel 花名册") for label in downloads)
    # The roster itself is checked in test_portfolio; here: it is a workbook of this worker.
    from grids import portfolio

    opened = open_store(str(store_path))
    mine = portfolio.build_portfolio(Router(opened), "W003", opened)
    wb = load_workbook(io.BytesIO(portfolio.roster_excel(mine)))
    facts = dict(wb["网格员"].iter_rows(min_row=2, values_only=True))
    assert facts["编号"] == "W003"


def test_a_leader_sees_the_coverage_of_their_units_in_percent(store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path, "grid_leader")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/1_网格员.py").run()
    assert not at.exception
    [table] = at.table
    shown = table.value
    assert list(shown.columns) == ["网格编码", "网格名称", "监管对象", "已巡查", "覆盖率"]
    assert len(shown) and all(v.endswith("%") for v in shown["覆盖率"])
    visited, total = shown["已巡查"].astype(int), shown["监管对象"].astype(int)
    assert [f"{a / b:.1%}" for a, b in zip(visited, total, strict=True)] == list(shown["覆盖率"])


def test_a_leader_opens_on_their_own_page_and_every_pick_of_the_chooser_holds(
        store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path, "grid_leader")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/1_网格员.py").run()
    assert not at.exception
    chooser = at.selectbox(key="worker")
    assert chooser.value == "L001" and at.query_params["worker"] == "L001"
    assert "#### 我的工作台" in [m.value for m in at.markdown]
    from grids.service import Gridmap

    led = Gridmap(str(store_path)).workers(sign_in_page(monkeypatch, store_path, "grid_leader"))
    others = [i for i in led["id"] if i != "L001"]
    assert others and len(chooser.options) == len(led)
    # Pick after pick (each one once failed every other time: the address it had written was
    # taken for a link and undid the next pick).
    for picked in (others[0], "L001", others[0], "L001"):
        at.selectbox(key="worker").set_value(picked).run()
        assert not at.exception
        assert at.selectbox(key="worker").value == picked
        assert at.query_params["worker"] == picked
        shown = "".join(h.proto.body for h in at.get("html"))
        assert f"编号 {picked}" in shown


def test_gcj02_basemap_shifts_layers_and_clicks(store_path, monkeypatch):
    from geo.china_offsets import wgs84_to_gcj02

    sign_in_page(monkeypatch, store_path)
    monkeypatch.setenv("GRIDMAP_TILE_URL",
                       "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}")
    monkeypatch.setenv("GRIDMAP_TILE_SUBDOMAINS", "1234")
    monkeypatch.setenv("GRIDMAP_BASEMAP", "custom")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert not at.exception and not at.error
    assert any("GCJ-02" in i.value for i in at.sidebar.info)  # said, not silently shifted
    args = map_args(at)
    assert "autonavi.com" in args["script"]  # the configured tiles, the only other host
    config = map_config(args["script"])
    assert "/cache/" in config["base"]
    # A click on the shifted map at the GCJ-02 position of a place routes that place.
    lon, lat = world.P["a2_plain"]
    glon, glat = wgs84_to_gcj02(lon, lat)
    html = card(click(at, float(glon), float(glat)))
    assert "320901002001001" in html and f"{lon:.6f}, {lat:.6f}" in html


def test_a_refused_new_user_keeps_the_form_and_an_added_one_empties_it(store_path, monkeypatch):
    sign_in_page(monkeypatch, store_path, "admin")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/5_用户管理.py").run()
    assert not at.exception
    at.text_input(key="um_login_0").input("zhang.san")
    at.selectbox(key="um_role_0").set_value("grid_worker")
    at.text_input(key="um_name_0").input("张三")
    at.text_input(key="um_pw1_0").input("Zhang#san2026")
    at.text_input(key="um_pw2_0").input("Zhang#san2026")
    at = at.get("form_submit_button")[0].click().run()
    [error] = at.error
    assert "花名册编号" in error.value
    assert at.text_input(key="um_login_0").value == "zhang.san"  # kept, to correct one field
    assert at.text_input(key="um_name_0").value == "张三"
    at.text_input(key="um_worker_0").input("W003")
    at = at.get("form_submit_button")[0].click().run()
    assert not at.error and any("已新增用户 zhang.san（网格员）" in s.value for s in at.success)
    assert at.text_input(key="um_login_1").value == ""  # a new, empty form
    assert "um_pw1_0" not in at.session_state  # the typed password is not kept
    # The audit trail says who did it, in which role and how, in Chinese.
    at.switch_page("pages/6_审计记录.py").run()
    assert not at.exception
    shown = at.dataframe[0].value
    added = shown[shown["对象"] == "zhang.san"]
    assert len(added) == 1
    assert added["角色"].iloc[0] == "系统管理员" and added["途径"].iloc[0] == "网页"
    assert set(shown["角色"]) <= set(ROLES_ZH.values())


def test_a_case_at_the_bureau_says_whose_turn_it_is_on_the_workers_phone(store_path,
                                                                         monkeypatch):
    from PIL import Image

    from grids.access import Actor
    from grids.evidence import Upload
    from grids.service import Gridmap

    photo = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(photo, "PNG")
    svc = Gridmap(str(store_path))
    worker = Actor("t-worker", "grid_worker", "网格员3", worker_id="W003")
    try:
        case = svc.case(worker, "T0001")
        if case["status"] == "reported":
            svc.step_case(Actor("t-dispatcher", "dispatcher", "调度员甲"), "T0001", "dispatched")
        svc.step_case(worker, "T0001", "verified", "现场核实",
                      files=[Upload("现场.png", photo.getvalue())])
        svc.step_case(worker, "T0001", "transferred", "移送",
                      files=[Upload("现场2.png", photo.getvalue())])
    finally:
        svc.close()
    sign_in_page(monkeypatch, store_path, "grid_worker")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.query_params["case"] = "T0001"
    at.switch_page("pages/1_网格员.py").run()
    assert not at.exception
    assert any(i.value == "当前环节由其他岗位办理：执法局受理" for i in at.info)
    assert not [b for b in at.button if str(b.key).startswith(("wk_step_", "wk_mark_"))]


def test_the_stats_dates_show_the_chosen_period(store_path, monkeypatch):
    from datetime import datetime, timedelta

    from ui.intake import TZ

    sign_in_page(monkeypatch, store_path, "viewer")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/7_绩效考评.py").run()
    assert not at.exception
    today = datetime.now(TZ).date()
    since, until = at.date_input(key="st_since"), at.date_input(key="st_until")
    assert at.selectbox(key="st_preset").value == "近 30 天"
    assert (since.value, until.value) == (today - timedelta(days=29), today)
    assert since.disabled and until.disabled
    assert any(f"统计期 {today - timedelta(days=29)}" in c.value for c in at.caption)
    at.selectbox(key="st_preset").set_value("本年").run()
    assert at.date_input(key="st_since").value == today.replace(month=1, day=1)
    # 自定义 starts from the dates shown, and then they are the person's.
    at.selectbox(key="st_preset").set_value("自定义").run()
    assert at.date_input(key="st_since").value == today.replace(month=1, day=1)
    assert not at.date_input(key="st_since").disabled
    at.date_input(key="st_since").set_value(today - timedelta(days=3)).run()
    assert at.date_input(key="st_since").value == today - timedelta(days=3)
    assert any(f"统计期 {today - timedelta(days=3)}" in c.value for c in at.caption)


def test_a_search_that_finds_nothing_takes_the_previous_card_away(app):
    at = app.text_input(key="query").input("甲二镇").run()
    assert "甲县执法局" in card(at)
    at = at.text_input(key="query").input("zzz不存在").run()
    assert not at.exception
    assert any("没有找到" in c.value for c in at.caption)
    assert "甲县执法局" not in card(at)
    assert any("在地图上任意位置单击" in i.value for i in at.info)

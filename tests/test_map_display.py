"""What the city map shows, without a browser: Beijing time (never UTC "…Z") in the map's
incident file and the sidebar, the incidents' time limit and overdue flag, the legend of the
incident colours, a metric-only scale, the layer control closed, the case link only for roles
that may read cases, and a click on the same place counted again (a marker clicked after a
search hit). The clicks themselves are proven in Chromium: tests/test_map_clicks_browser.py."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from grids.access import Actor
from grids.routing import Router
from layers import display
from layers.store import open_store
from tests import world
from tests.browser import ROOT, build_map_world
from tests.browser import map_config as script_config
from tests.signin import sign_in_page
from ui import cards, mapdata, mapview, page
from ui.basemap import NONE

UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z\b")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("mapdisplay"))


def test_beijing_text():
    bj = cards.beijing_text
    assert bj("2026-11-01T08:00:00Z") == "2026-11-01 16:00"
    assert bj("2026-11-30T17:30:00.123Z") == "2026-12-01 01:30"  # the next day in Nantong
    assert bj("2026-11-01T08:00:00+08:00") == "2026-11-01 08:00"
    assert bj("2026-11-01T09:15:00+09:00") == "2026-11-01 08:15"
    assert bj("2026-11-01 08:00") == "2026-11-01 08:00"  # no offset: the store means Beijing
    assert bj(datetime(2026, 11, 1, 0, 0, tzinfo=UTC)) == "2026-11-01 08:00"
    assert bj(pd.Timestamp("2026-11-01T00:00Z")) == "2026-11-01 08:00"
    for empty in (None, "", float("nan"), pd.NaT):
        assert bj(empty) == ""
    for kept in ("2026-11-01", "now", "${alert(1)}", "昨天下午"):  # never guessed at
        assert bj(kept) == kept


def incident_frame() -> pd.DataFrame:
    lon, lat = world.P["a2_plain"]
    return pd.DataFrame([
        {"id": "C1", "reported_at": "2026-11-30T17:30:00Z", "source": "12369热线",
         "category_zh": "大气污染", "status": "reported", "status_zh": "已受理",
         "description": "冒黑烟", "grid": "320901002001001", "lon": lon, "lat": lat,
         "deadline": "2026-12-01T02:00:00+08:00", "overdue": True},
        {"id": "C2", "reported_at": "2026-12-01T09:00:00+08:00", "source": "网络",
         "category_zh": "噪声", "status": "handling", "status_zh": "处理中",
         "description": "夜间施工", "grid": "", "lon": lon + 0.01, "lat": lat,
         "deadline": "", "overdue": False},
    ])


def test_incident_file_in_beijing_time_with_overdue(store_path, tmp_path, monkeypatch):
    monkeypatch.setattr(mapdata, "CACHE_DIR", tmp_path / "cache")
    router = Router(open_store(str(store_path)))
    data = mapdata.publish(str(store_path), router, NONE, incident_frame(), background=False)
    raw = (tmp_path / "cache" / data.key / data.incidents_file).read_text(encoding="utf-8")
    assert not UTC_TIME.search(raw), raw
    shown = json.loads(raw)
    assert shown["reported_at"] == ["2026-12-01 01:30", "2026-12-01 09:00"]
    assert shown["deadline"] == ["2026-12-01 02:00", ""]
    assert shown["overdue"] == ["1", ""]
    # Without the case list's columns (another caller): no limit, nothing overdue.
    bare = incident_frame().drop(columns=["deadline", "overdue"])
    data = mapdata.publish(str(store_path), router, NONE, bare, background=False)
    shown = json.loads((tmp_path / "cache" / data.key / data.incidents_file).read_text())
    assert shown["deadline"] == ["", ""] and shown["overdue"] == ["", ""]


def test_a_whole_directory_is_used_as_it_is_by_another_process(store_path, tmp_path,
                                                               monkeypatch):
    """complete.json, written last, lets another app process (here: this one with its memory
    emptied) use the directory without writing a file again; a directory without it — a
    writer killed half way — is written again."""
    monkeypatch.setattr(mapdata, "CACHE_DIR", tmp_path / "cache")
    router = Router(open_store(str(store_path)))
    data = mapdata.warm(str(store_path), router, NONE)
    folder = tmp_path / "cache" / data.key
    complete = json.loads((folder / mapdata.COMPLETE).read_text())
    assert complete["entity_first"] == list(data.entity_first) and data.entity_first
    assert complete["grid_min_zoom"] == data.grid_min_zoom
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert len(written) > 5
    monkeypatch.setattr(mapdata, "_DONE", {})
    monkeypatch.setattr(mapdata, "_FIRST", {})
    again = mapdata.warm(str(store_path), router, NONE)
    assert again == data
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written
    # Half written (no complete.json): the next process writes it whole again.
    (folder / mapdata.COMPLETE).unlink()
    (folder / "grids.0.json").unlink()
    monkeypatch.setattr(mapdata, "_DONE", {})
    monkeypatch.setattr(mapdata, "_FIRST", {})
    assert mapdata.warm(str(store_path), router, NONE) == data
    assert (folder / "grids.0.json").exists() and (folder / mapdata.COMPLETE).exists()


def test_legend_scale_and_controls(store_path, tmp_path, monkeypatch):
    monkeypatch.setattr(mapdata, "CACHE_DIR", tmp_path / "cache")
    router = Router(open_store(str(store_path)))
    with_incidents = mapdata.publish(str(store_path), router, NONE, incident_frame(),
                                     background=False)
    config = mapview.map_config(with_incidents, case_page="案件")
    labels = [item["label"] for item in config["legend"]]
    for state, colour in mapview.STATUS_COLORS.items():  # every state's colour is explained
        if state:
            [item] = [i for i in config["legend"] if i.get("fill") == colour
                      and i.get("shape") == "diamond"]
            assert item["label"].startswith("未结事件：")
    assert any("超过本环节时限" in label for label in labels)
    assert any(i.get("shape") == "cluster" for i in config["legend"])
    assert config["collapsedControl"] is True and config["clicks"] is True
    assert config["incidents"]["casePage"] == "案件"
    # No incidents (a planner): none of their symbols in the legend, no case link.
    without = mapdata.publish(str(store_path), router, NONE, None, background=False)
    config = mapview.map_config(without, clicks=False)
    assert not any(label.startswith("未结事件") for label in
                   (i["label"] for i in config["legend"]))
    assert config["incidents"]["casePage"] == "" and config["clicks"] is False
    # The scale: metres and kilometres only, once.
    m = mapview.build_map(with_incidents, NONE, display.city_bounds(router.snapshot))
    html = m.get_root().render()
    assert html.count("L.control.scale(") == 1
    assert re.search(r"L\.control\.scale\(\{[^}]*imperial: false", html)


def map_args(at) -> dict:
    [element] = [e for e in at.get("component_instance")
                 if e.proto.component_name == "streamlit_folium.st_folium"]
    return json.loads(element.proto.json_args)


def map_config(at) -> dict:
    return script_config(map_args(at)["script"])


def card(at) -> str:
    return "".join(h.proto.body for h in at.get("html"))


def test_case_link_and_beijing_time_by_role(store_path, monkeypatch):
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    sign_in_page(monkeypatch, store_path, "dispatcher")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert not at.exception
    config = map_config(at)
    assert config["incidents"]["casePage"] == page.case_page_path() == "案件"
    assert config["incidents"]["file"]
    # The incidents file has Beijing times and the case list's limit and overdue.
    folder = mapdata.CACHE_DIR / Path(config["base"].rstrip("/")).name
    shown = json.loads((folder / config["incidents"]["file"]).read_text(encoding="utf-8"))
    assert shown["count"] == 2 and shown["reported_at"] == ["2026-11-01 08:00"] * 2
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", d) for d in shown["deadline"])
    assert set(shown["overdue"]) <= {"1", ""}
    # The layer version's time in the sidebar: Beijing time, said so.
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "图层版本" in sidebar and "北京时间" in sidebar and not UTC_TIME.search(sidebar)
    # A planner may not read cases: no incidents, no link.
    sign_in_page(monkeypatch, store_path, "planner")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert not at.exception
    config = map_config(at)
    assert config["incidents"]["casePage"] == "" and config["incidents"]["file"] == ""


def test_the_same_place_clicked_again_after_a_search_hit(store_path, monkeypatch):
    """A marker has one position: clicked, then a search hit, then the marker again, the
    second click is new by its number (gridmap.js counts clicks) and routes again."""
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    sign_in_page(monkeypatch, store_path, "dispatcher")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    lon, lat = world.P["dedicated"]

    def click(n):
        at.session_state["citymap"] = {"last_clicked": {"lat": lat, "lng": lon, "n": n}}
        return at.run()

    assert "该位置的责任归属" in card(click(1)) and "gm-hit-card" not in card(at)
    at.text_input(key="query").input("印染").run()
    assert "gm-hit-card" in card(at)
    assert "gm-hit-card" in card(click(1))  # the same report again: nothing new
    html = card(click(2))
    assert "gm-hit-card" not in html and f"{lon:.6f}, {lat:.6f}" in html


def test_an_incidents_file_says_whom_it_is_for_to_any_process(store_path, tmp_path,
                                                              monkeypatch):
    """Several app processes share static/cache/ (README, *Production: more than one
    process*): a process that did not write an incidents file still lets only its audience
    fetch it — the audience is read from the name, not from the writer's memory."""
    import subprocess
    import sys

    monkeypatch.setattr(mapdata, "CACHE_DIR", tmp_path / "cache")
    router = Router(open_store(str(store_path)))
    bureau = Actor("t-bureau", "bureau", bureau_code="B-A")
    data = mapdata.publish(str(store_path), router, NONE, incident_frame(), background=False,
                           audience=mapdata.audience(bureau))
    assert mapdata.audience_tag(mapdata.audience(bureau)) in data.incidents_file
    path = f"/app/static/cache/{data.key}/{data.incidents_file}"
    other = f"/app/static/cache/{data.key}/incidents-{'0' * 16}-{'1' * 16}.json"
    script = (
        "import sys\n"
        "from grids.access import Actor\n"
        "from ui.server import _may_fetch\n"
        "path, other = sys.argv[1:]\n"
        "for actor in (Actor('t-bureau', 'bureau', bureau_code='B-A'),\n"
        "              Actor('t-bureau-b', 'bureau', bureau_code='B-B'),\n"
        "              Actor('t-dispatcher', 'dispatcher')):\n"
        "    print(_may_fetch(actor, path), _may_fetch(actor, other))\n")
    out = subprocess.run([sys.executable, "-c", script, path, other], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["True False", "False False", "False False"]


def test_old_directories_pruned_but_not_one_written_within_the_hour(tmp_path, monkeypatch):
    """Beyond KEEP_DIRS, directories go, but only those not written for an hour: another app
    process (or test server) started on another generation may still be serving one."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(mapdata, "CACHE_DIR", cache)
    now = 1_900_000_000.0
    ages = {f"old{i:02d}": 7200 + i for i in range(10)} | {f"new{i:02d}": 60 + i for i in range(10)}
    for name, age in ages.items():
        (cache / name).mkdir(parents=True)
        os.utime(cache / name, (now - age, now - age))
    mapdata._prune(keep="old09", now=now)
    left = sorted(p.name for p in cache.iterdir())
    # Ten recent ones stay although they exceed KEEP_DIRS; of the old ones only `keep` stays.
    assert left == sorted([f"new{i:02d}" for i in range(10)] + ["old09"])
    mapdata._prune(keep="new00", now=now + 7200)
    newest = [f"new{i:02d}" for i in range(mapdata.KEEP_DIRS)]
    assert sorted(p.name for p in cache.iterdir()) == newest

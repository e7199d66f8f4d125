"""The batch page's filing section with Streamlit's AppTest (no browser): who sees it, what it
says when the file lacks a case column, and "file anyway" chosen on the page."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from grids.cases import BEIJING
from layers.store import open_store
from tests import world
from tests.browser import ROOT, build_map_world
from tests.signin import sign_in_page

BATCH = "pages/4_批量分派.py"


@pytest.fixture(scope="module")
def map_world(tmp_path_factory):
    return build_map_world(tmp_path_factory.mktemp("batch_page"))


@pytest.fixture
def store_path(map_world, tmp_path):
    path = tmp_path / "desk.gpkg"
    shutil.copy(map_world, path)
    return path


def open_page(store, monkeypatch, role: str = "dispatcher") -> AppTest:
    sign_in_page(monkeypatch, store, role)
    for name in ("GRIDMAP_BASEMAP", "GRIDMAP_TIANDITU_KEY", "GRIDMAP_TILE_URL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page(BATCH).run()
    assert not at.exception, at.exception
    return at


def text(at) -> str:
    """Everything the page says in alerts, captions and markdown."""
    parts = [e.value for e in (*at.error, *at.warning, *at.success, *at.info)]
    parts += [m.value for m in at.caption] + [m.value for m in at.markdown]
    return "\n".join(parts)


def upload(at, rows: list[dict], name: str = "投诉.csv"):
    data = pd.DataFrame(rows).to_csv(index=False).encode("utf-8")
    at.file_uploader(key="bt_file").set_value((name, data, "text/csv"))
    return at.run()


def row(ref: str, place: str, text: str, hours: float = 1) -> dict:
    at = datetime.now(BEIJING) - timedelta(hours=hours)
    lon, lat = world.P[place]
    return {"工单编号": ref, "经度": lon, "纬度": lat, "坐标系": "wgs84", "问题类型": "大气",
            "诉求内容": text, "来电时间": at.strftime("%Y-%m-%d %H:%M")}


def test_file_anyway_chosen_on_the_page(store_path, monkeypatch):
    at = open_page(store_path, monkeypatch)
    at = upload(at, [row("A", "dedicated", "第一次", 2), row("B", "dedicated", "第二次")])
    assert not at.exception and not at.error
    assert "事件类别“问题类型”" in text(at) and "举报时间“来电时间”" in text(at)
    at.radio(key="bt_dup").set_value("file").run()
    [button] = [b for b in at.button if b.label == "将 2 行登记为案件"]
    at = button.click().run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["已登记"], metrics["已并入原案件"], metrics["未登记"]) == ("2", "0", "0")
    report = at.dataframe[-1].value
    assert list(report["结果"]) == ["已登记", "已登记"]
    first, second = report["案件编号"]
    assert first != second and first in report["说明"].iat[1]  # told about the repeat
    store = open_store(str(store_path))
    try:
        cases = store.query_incidents().set_index("id")
    finally:
        store.close()
    assert cases.loc[second, "description"] == "第二次"


def test_a_file_without_case_columns_is_told_what_is_missing(store_path, monkeypatch):
    at = open_page(store_path, monkeypatch)
    at = upload(at, [{"编号": "A", "经度": 120.68, "纬度": 32.08, "坐标系": "wgs84"}])
    assert not at.exception and not at.error
    shown = text(at)
    assert "登记为案件还需要这些列" in shown and "事件描述" in shown and "举报时间" in shown
    assert not [b for b in at.button if "登记为案件" in b.label]


def test_only_roles_that_file_cases_see_the_section(store_path, monkeypatch):
    at = open_page(store_path, monkeypatch, role="planner")
    at = upload(at, [row("A", "dedicated", "规划员上传")])
    assert not at.exception and {m.label: m.value for m in at.metric}["明确"] == "1"
    assert not any("登记为案件" in m.value for m in at.markdown)
    assert not [b for b in at.button if "登记为案件" in b.label]

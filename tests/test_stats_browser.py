"""The 绩效考评 page in Debian's Chromium against `gridmap serve`: the hand-counted cases of
tests/test_stats.py moved into the page's default period (the last 30 days), read back from the
tables, the choropleth (colours and tooltips, one township named like a script) and the Excel
download; each role sees what it may."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab
from tests.signin import add_world_users
from tests.test_stats import add_cases

SHOTS = ARTIFACTS / "stats"
HOSTILE = "${alert(7)}`</script><img src=x onerror=alert(8)>"
MAP = "iframe[title='streamlit_folium.st_folium']"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("statspage")
    towns = world.layers()["townships"]
    towns.loc[towns["code"] == "320902002", "name"] = HOSTILE  # the enclave: no case
    files = world.write(base / "files", {"townships": towns})
    path = base / "stats.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, files)
    # The table's last day (2026-11-10) becomes the day before yesterday: every case of it,
    # C11 and C12 too, lies in the last 30 days.
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    add_cases(store, timedelta(days=(today - datetime(2026, 11, 12).date()).days))
    store.close()
    add_world_users(path)
    with AppServer(path) as s:
        yield s


def open_page(tab: Tab) -> None:
    # Wide enough for every column: the tables' accessible rows hold the visible columns only.
    tab.page.set_viewport_size({"width": 2400, "height": 1300})
    tab.page.goto(tab.server.url + "绩效考评")
    tab.page.get_by_text("按乡镇/街道").first.wait_for(timeout=60_000)
    tab.page.locator("[data-testid=stDataFrame]").nth(1).wait_for(timeout=30_000)
    tab.page.wait_for_timeout(1500)  # let the rest of the run arrive


def metrics(tab: Tab) -> dict[str, str]:
    out = {}
    for m in tab.page.locator("[data-testid=stMetric]").all():
        label = m.locator("[data-testid=stMetricLabel]").inner_text().strip()
        out[label] = m.locator("[data-testid=stMetricValue]").inner_text().strip()
    return out


def grid_rows(tab: Tab, index: int) -> dict[str, list[str]]:
    """The rows of the index-th st.dataframe (its accessible table), by their second cell."""
    table = tab.page.locator("[data-testid=stDataFrame]").nth(index)
    rows = table.evaluate("""t => Array.from(t.querySelectorAll('tr')).map(
        r => Array.from(r.querySelectorAll('td')).map(c => c.textContent))""")
    return {r[1]: r for r in rows if len(r) > 1}


def test_tables_map_and_excel(browser, server, tmp_path):
    tab = Tab(browser, server, SHOTS, role="dispatcher")
    open_page(tab)
    # Hand count (tests/test_stats.py): 11 cases; late C2 C4 C5 C7 C11 C12 (C11, C12, C4, C7
    # still open and past their limit); closed C1 C2 C3 C5 C6 C9: median of 80 min, 2, 2.5,
    # 3.5, 5.5 and 50 h = 3.0 h.
    assert metrics(tab) == {"受理数": "11", "已结案": "6", "按时率": "45.5%", "超时": "6",
                            "未结且已超时": "4", "结案用时中位数": "3.0 小时"}
    bureaus = grid_rows(tab, 0)
    # code, name, level, parent, received, closed, open, on time, overdue, open overdue,
    # share, median hours, referred, partner, returned
    assert bureaus["甲县执法局"][4:] == ["4", "1", "3", "1", "3", "3", "25.0%", "50.0", "1",
                                        "0", "0"]  # C3 C4 C11 C12
    assert bureaus["甲县执法一局"][4:] == ["4", "3", "1", "3", "1", "0", "75.0%", "2.5", "1",
                                          "0", "1"]  # C1 C2 C6 C10
    assert bureaus["乙县执法一局"][4:12] == ["1", "1", "0", "0", "1", "0", "0.0%", "3.5"]  # C5
    assert bureaus["市执法局"][4] == "0" and bureaus["市执法局"][10] == "—"
    assert bureaus["（未确定责任机构）"][4] == "1"  # C7
    towns = grid_rows(tab, 1)
    assert towns["甲一镇"][3] == "4" and towns["乙一镇"][3:5] == ["2", "2"]
    assert towns[HOSTILE][3] == "0"  # the name is text in the table

    frame = tab.page.query_selector(MAP).content_frame()
    fills = frame.evaluate("""() => Array.from(document.querySelectorAll(
        'path.leaflet-interactive')).map(p => p.getAttribute('fill'))""")
    # 甲一镇 75 % (60–80 %), 甲二镇 25 % and 乙一镇 50 % (< 60 %), the enclave without cases.
    assert fills == ["#fc8d59", "#d73027", "#d73027", "#d9d9d9"]
    paths = frame.locator("path.leaflet-interactive")
    paths.nth(1).hover()
    tip = frame.locator(".leaflet-tooltip")
    tip.first.wait_for(timeout=10_000)
    assert tip.first.inner_text().strip() == ("甲二镇（甲县）：按时率 25.0%｜受理 4 件，已结案 1，"
                                               "超时 3，未结且已超时 3")
    paths.nth(3).hover()
    frame.get_by_text("统计期内无受理案件").wait_for(timeout=10_000)
    assert frame.locator(".leaflet-tooltip").last.inner_text().strip() == (
        f"{HOSTILE}（乙县）：统计期内无受理案件")
    tab.shot("10_dispatcher")

    with tab.page.expect_download(timeout=30_000) as download:
        tab.page.get_by_role("button", name="下载 Excel").click()
    saved = tmp_path / "stats.xlsx"
    download.value.save_as(saved)
    assert download.value.suggested_filename.startswith("绩效考评_")
    book = openpyxl.load_workbook(saved)
    assert book.sheetnames == ["按执法机构", "按乡镇街道", "说明"]
    sheet = book["按执法机构"]
    header = [c.value for c in sheet[1]]
    rows = {r[1]: dict(zip(header, r, strict=True))
            for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert rows["合计"]["受理数"] == 11 and rows["合计"]["超时"] == 6
    assert rows["合计"]["按时率（%）"] == 45.5
    assert rows["甲县执法局"]["结案用时中位数（小时）"] == 50.0
    assert rows["市执法局"]["按时率（%）"] is None  # empty, not 0
    towns_sheet = {r[1]: r for r in book["按乡镇街道"].iter_rows(min_row=2, values_only=True)}
    assert towns_sheet[HOSTILE][3] == 0
    tab.check_clean()  # nothing left the host; no dialog from the hostile name; no error
    tab.context.close()


def test_each_role_sees_its_own_figures(browser, server):
    bureau = Tab(browser, server, SHOTS, role="bureau")  # B-A, over B-A-1 and B-P2
    open_page(bureau)
    bureau.page.locator("[data-testid=stSidebar]").get_by_text("绩效考评").first.wait_for()
    assert metrics(bureau)["受理数"] == "8"  # C1 C2 C3 C4 C6 C10 C11 C12
    assert set(grid_rows(bureau, 0)) == {"甲县执法局", "甲县执法一局", "甲化工园区执法局"}
    bureau.shot("20_bureau")
    bureau.check_clean()
    bureau.context.close()

    worker = Tab(browser, server, SHOTS, role="grid_worker")
    worker.page.goto(server.url + "网格员")
    bar = worker.page.locator("[data-testid=stSidebar]")
    bar.get_by_text("退出登录").wait_for(timeout=60_000)
    # The page links are drawn by the same script run; wait for them, not only for logout.
    bar.get_by_text("案件办理").wait_for(timeout=60_000)
    assert "绩效考评" not in bar.inner_text()
    worker.page.goto(server.url + "绩效考评")
    worker.page.get_by_text("无权打开此页面").wait_for(timeout=60_000)
    assert worker.page.locator("[data-testid=stDataFrame]").count() == 0
    assert "受理数" not in worker.page.inner_text("body")
    worker.check_clean()
    worker.context.close()

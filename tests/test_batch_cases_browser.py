"""The batch page in a real browser (Debian's Chromium via Playwright, `gridmap serve` on the map
world): a dispatcher uploads a small complaint file, downloads the routed table in Chinese, files
the rows as cases and reads, per row, what was filed, linked or refused — on the page and in the
Excel report; sending the file again files nothing twice. Screenshots go to
test-artifacts/batch_cases/."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import pandas as pd
import pytest
from openpyxl import load_workbook

from grids.cases import BEIJING
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, SCRIPT_IDLE, AppServer, Tab, build_map_world

SHOTS = ARTIFACTS / "batch_cases"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(build_map_world(tmp_path_factory.mktemp("batch_cases"))) as s:
        yield s


@pytest.fixture
def tab(browser, server):
    t = Tab(browser, server, SHOTS, height=2200)  # signed in as the world's dispatcher
    yield t
    t.context.close()


def complaints() -> bytes:
    """Five complaints as a 12369 export has them (GBK CSV, Chinese headers), none near the
    world's own incidents: a new matter, its repeat, one outside the city, one without a
    description, one whose accuracy circle crosses the county border."""
    now = datetime.now(BEIJING).replace(second=0, microsecond=0)

    def ago(hours: float) -> str:
        return (now - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M")

    rows = [
        ("B1", "dedicated", 0, "大气", "化工厂刺鼻气味", ago(3)),
        ("B2", "dedicated", 0, "大气污染", "化工厂气味又来了", ago(1)),
        ("B3", "outside", 0, "水", "市外河道发黑", ago(2)),
        ("B4", "chemical", 0, "水", "", ago(2)),
        ("B5", "near_border", 300, "噪声", "夜间机器轰鸣", ago(2)),
    ]
    frame = pd.DataFrame([
        {"编号": ref, "经度": world.P[p][0], "纬度": world.P[p][1], "坐标系": "WGS84",
         "精度": acc, "类别": cat, "举报内容": text, "举报时间": at}
        for ref, p, acc, cat, text, at in rows])
    return frame.to_csv(index=False).encode("gbk")


def download(page, name: str) -> bytes:
    """One click on a download button, as a user gives it, and the file it brings."""
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    with page.expect_download(timeout=30_000) as got:
        page.get_by_role("button", name=name).click()
    return got.value.path().read_bytes()


def metric(page, label: str) -> str:
    box = page.locator("[data-testid=stMetric]").filter(has_text=label).first
    return box.locator("[data-testid=stMetricValue]").inner_text().strip()


def wait_metric(page, label: str, value: str) -> None:
    box = page.locator("[data-testid=stMetric]").filter(has_text=label).first
    box.locator("[data-testid=stMetricValue]", has_text=value).wait_for(timeout=60_000)


def test_complaint_file_filed_as_cases_with_a_report_per_row(tab, server, tmp_path):
    tab.open("批量分派")
    page = tab.page
    upload = tmp_path / "投诉导出.csv"
    upload.write_bytes(complaints())
    page.locator("input[type=file]").set_input_files(str(upload))
    button = page.get_by_role("button", name="登记为案件（4 行可登记，1 行不登记）")
    button.wait_for(timeout=60_000)
    assert "举报时间“举报时间”" in page.locator("body").inner_text()  # the columns it found

    # The routed table downloads in Chinese.
    routed = pd.read_csv(io.BytesIO(download(page, "下载 CSV")), encoding="utf-8-sig",
                         dtype=str, keep_default_na=False)
    assert list(routed["编号"]) == ["B1", "B2", "B3", "B4", "B5"]
    assert list(routed["分派状态"]) == ["明确", "明确", "不在辖区内", "明确", "存在歧义"]
    assert routed.loc[0, "网格类型"] == "专属网格"
    assert not any(c.startswith("route_") for c in routed.columns)
    tab.shot("01_routed")

    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    button.click()
    wait_metric(page, "已登记", "2")
    assert metric(page, "已并入原案件") == "1" and metric(page, "未登记") == "2"
    tab.shot("02_filed")

    report = load_workbook(io.BytesIO(download(page, "下载登记结果（Excel）")))
    assert report.sheetnames == ["登记结果", "机器字段"]
    rows = list(report["登记结果"].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    got = {r[header.index("编号")]: dict(zip(header, r, strict=True)) for r in body}
    assert [got[f"B{i}"]["结果"] for i in range(1, 6)] == [
        "已登记", "已并入原案件", "未登记", "未登记", "已登记"]
    first = got["B1"]["案件编号"]
    assert first and got["B2"]["案件编号"] == first  # the repeat joins the new case
    assert "不在本市管辖范围内" in got["B3"]["说明"] and got["B4"]["说明"] == "事件描述为空"
    assert got["B4"]["分派状态"] == "明确"
    assert got["B5"]["分派状态"] == "存在歧义" and "歧义" in got["B5"]["说明"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", got["B1"]["举报时间（北京时间）"])
    machine = list(report["机器字段"].iter_rows(values_only=True))
    assert machine[0][:4] == ("row", "ref", "outcome", "case_id")
    assert [r[2] for r in machine[1:]] == ["filed", "linked", "refused", "refused", "filed"]

    # The page's own report table lists the case numbers (st.dataframe's accessible cells).
    grid = page.locator("[data-testid=stDataFrame]").last
    grid.locator("[role=gridcell]", has_text=first).first.wait_for(state="attached",
                                                                   timeout=15_000)

    # The cases are in the store: two new ones, the repeat recorded on the first.
    store = open_store(str(server.store))
    try:
        cases = store.query_incidents().set_index("id")
        events = store.incident_events(first)
    finally:
        store.close()
    new = {got["B1"]["案件编号"], got["B5"]["案件编号"]}
    assert new <= set(cases.index)
    assert cases.loc[got["B5"]["案件编号"], "route_status"] == "ambiguous"
    assert cases.loc[first, "description"] == "化工厂刺鼻气味"
    assert "化工厂气味又来了" in events[events["action"] == "link"]["reason"].iat[0]
    count = len(cases)

    # Sent again: nothing is filed twice, and the page says so.
    page.wait_for_function(SCRIPT_IDLE, timeout=60_000)
    page.get_by_role("button", name="登记为案件（4 行可登记，1 行不登记）").click()
    page.get_by_text("其中 3 行在此前提交同一文件时已处理", exact=False).wait_for(timeout=60_000)
    assert metric(page, "已登记") == "2" and metric(page, "已并入原案件") == "1"
    store = open_store(str(server.store))
    try:
        assert len(store.query_incidents()) == count
        assert (store.incident_events(first)["action"] == "link").sum() == 1
    finally:
        store.close()
    tab.shot("03_sent_again")
    tab.check_clean()

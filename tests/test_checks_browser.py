"""The 数据质检 page in Debian's Chromium against `gridmap serve`, on a store with problems the
importer lets through (a park overlapping another, named like a script; a park beyond the city;
a narrow gap between two grids; a grid without its worker): the planner sees each of them on
the map and in the table, filters them and downloads them; a dispatcher does not see the page."""

from __future__ import annotations

import zipfile

import openpyxl
import pytest
from shapely.geometry import box

from layers.importer import import_path
from layers.store import open_store
from tests import world
from tests.browser import ARTIFACTS, AppServer, Tab
from tests.signin import add_world_users

SHOTS = ARTIFACTS / "checks"
HOSTILE = "${alert(7)}`</script><img src=x onerror=alert(8)>园区"
MAP = "iframe[title='streamlit_folium.st_folium']"
ERROR_FILL, WARNING_FILL = "#d73027", "#f39c12"


def crafted_files(base):
    parks = world.layers()["parks"]
    parks.loc[len(parks)] = {"code": "P3", "name": HOSTILE, "kind": "other",
                             "county_code": "320901",
                             "geometry": box(120.66, 32.10, 120.69, 32.14)}  # overlaps P1
    parks.loc[len(parks)] = {"code": "P4", "name": "出海园区", "kind": "other",
                             "county_code": "320902",
                             "geometry": box(120.85, 32.15, 120.95, 32.25)}  # beyond the city
    grids = world.layers()["grids"]
    grids.loc[grids["code"] == "320901002001001", "geometry"] = box(120.6, 32.0, 120.7,
                                                                    32.09998)
    workers = world.layers()["workers"]
    workers = workers[workers["grid_code"] != "320902001001002"]
    return world.write(base / "files", {"parks": parks, "grids": grids, "workers": workers})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("checkspage")
    path = base / "checks.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, crafted_files(base))
    store.close()
    add_world_users(path)
    with AppServer(path) as s:
        yield s


def open_page(tab: Tab) -> None:
    tab.page.set_viewport_size({"width": 2600, "height": 1400})
    tab.page.goto(tab.server.url + "数据质检")
    tab.page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=60_000)
    tab.page.frame_locator(MAP).locator("path.leaflet-interactive").first.wait_for(
        timeout=30_000)
    tab.page.wait_for_timeout(1000)


def metrics(tab: Tab) -> dict[str, str]:
    out = {}
    for m in tab.page.locator("[data-testid=stMetric]").all():
        label = m.locator("[data-testid=stMetricLabel]").inner_text().strip()
        out[label] = m.locator("[data-testid=stMetricValue]").inner_text().strip()
    return out


def table_rows(tab: Tab) -> list[list[str]]:
    table = tab.page.locator("[data-testid=stDataFrame]").first
    rows = table.evaluate("""t => Array.from(t.querySelectorAll('tr')).map(
        r => Array.from(r.querySelectorAll('td')).map(c => c.textContent))""")
    return [r for r in rows if len(r) > 3]


def map_fills(tab: Tab) -> list[str]:
    frame = tab.page.query_selector(MAP).content_frame()
    return frame.evaluate("""() => Array.from(document.querySelectorAll(
        'path.leaflet-interactive')).map(p => p.getAttribute('fill'))""")


def tooltips(tab: Tab, fill: str) -> list[str]:
    """The tooltip of every shape of a colour, as Leaflet shows it on hovering."""
    frame = tab.page.query_selector(MAP).content_frame()
    return frame.evaluate("""fill => Array.from(document.querySelectorAll(
        `path.leaflet-interactive[fill='${fill}']`)).map(p => {
            p.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
            const tips = document.querySelectorAll('.leaflet-tooltip');
            const text = tips.length ? tips[tips.length - 1].innerText : '';
            p.dispatchEvent(new MouseEvent('mouseout', {bubbles: true}));
            return text.trim();
        })""", fill)


def test_the_planner_sees_every_finding_on_the_map_and_in_the_table(browser, server,
                                                                      tmp_path):
    tab = Tab(browser, server, SHOTS, role="planner")
    open_page(tab)
    assert metrics(tab)["错误"] == "2" and metrics(tab)["警告"] == "2"
    rows = table_rows(tab)
    # severity, kind, layer, codes, area, lon, lat, message, check, id (errors first)
    by_check = {r[8]: r for r in rows}
    assert set(by_check) == {"park_overlap", "outside", "sliver", "grid_without_worker"}
    assert by_check["park_overlap"][:3] == ["错误", "重叠", "园区"]
    assert HOSTILE in by_check["park_overlap"][7]  # the name is text in the table
    assert by_check["outside"][3] == "P4"
    assert by_check["sliver"][:2] == ["警告", "狭长缝隙"]
    assert by_check["grid_without_worker"][3] == "320902001001002"
    # On the map: three areas (the overlap, the part outside, the sliver; the grid without
    # a worker is its outline) and a marker per finding, red for errors, orange for warnings.
    fills = map_fills(tab)
    assert fills.count(ERROR_FILL) == 2 * 2 and fills.count(WARNING_FILL) == 2 * 2
    tips = tooltips(tab, ERROR_FILL)
    assert len(tips) == 4 and all(t.startswith("错误·") for t in tips)
    overlap = f"错误·重叠·园区（约 {float(by_check['park_overlap'][4]):,.0f} 平方米）："
    assert sum(t.startswith(overlap) and HOSTILE in t for t in tips) == 2  # area and marker
    assert all(t.startswith("警告·") for t in tooltips(tab, WARNING_FILL))
    tab.shot("10_planner")

    # Only the warnings: the table and the map follow the filter.
    sev = tab.page.get_by_label("严重程度", exact=True).and_(tab.page.locator("input"))
    sev.click()
    tab.page.get_by_role("option", name="警告", exact=True).click()
    tab.page.keyboard.press("Escape")
    tab.page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=stDataFrame]')[0]"
        ".querySelectorAll('tbody tr').length === 2", timeout=30_000)
    tab.page.wait_for_timeout(1500)
    assert sorted(r[8] for r in table_rows(tab)) == ["grid_without_worker", "sliver"]
    assert ERROR_FILL not in map_fills(tab)

    with tab.page.expect_download(timeout=30_000) as download:
        tab.page.get_by_role("button", name="下载 Excel").click()
    saved = tmp_path / "checks.xlsx"
    download.value.save_as(saved)
    book = openpyxl.load_workbook(saved)
    assert book.sheetnames == ["问题清单", "检查规则", "说明"]
    sheet = list(book["问题清单"].iter_rows(values_only=True))
    assert sheet[0][:4] == ("严重程度", "类型", "图层", "编码")
    assert sorted(r[8] for r in sheet[1:]) == ["grid_without_worker", "sliver"]
    tab.check_clean()  # nothing left the host, no dialog from the hostile name, no error
    tab.context.close()


def test_a_dispatcher_does_not_see_the_page(browser, server):
    tab = Tab(browser, server, SHOTS, role="dispatcher")
    tab.page.goto(server.url + "案件")
    bar = tab.page.locator("[data-testid=stSidebar]")
    bar.get_by_text("绩效考评").wait_for(timeout=60_000)  # the dispatcher's last page link
    assert "案件办理" in bar.inner_text() and "数据质检" not in bar.inner_text()
    tab.page.goto(server.url + "数据质检")
    tab.page.get_by_text("无权打开此页面").wait_for(timeout=60_000)
    assert tab.page.locator("[data-testid=stDataFrame]").count() == 0
    assert "问题合计" not in tab.page.inner_text("body")
    planner = Tab(browser, server, SHOTS, role="planner")
    planner.page.goto(server.url + "数据质检")
    planner.page.locator("[data-testid=stSidebar]").get_by_text("数据质检").wait_for(
        timeout=60_000)
    planner.check_clean()
    planner.context.close()
    tab.check_clean()
    tab.context.close()


def test_a_zip_in_the_import_format_is_checked_without_being_written(browser, server,
                                                                      tmp_path):
    """Upload a zip: its layers are checked as they would replace the current ones (a cycle in
    the bureaus' parents, and the crafted grids put right), and nothing is imported."""
    b = world.layers()["bureaus"]
    b.loc[b["code"] == "B-A", "parent_code"] = "B-A-1"
    files = world.write(tmp_path / "upload", {"bureaus": b})
    archive = tmp_path / "layers.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("bureaus.csv", "grids.geojson"):
            z.write(files / name, name)
    tab = Tab(browser, server, SHOTS, role="planner")
    open_page(tab)
    tab.page.get_by_text("检查一套导入格式的图层").click()
    tab.page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(
        str(archive))
    tab.page.get_by_text("layers.zip 中的图层").wait_for(timeout=60_000)
    tab.page.wait_for_timeout(1500)
    assert metrics(tab)["错误"] == "3"  # the cycle; the park overlap and the park outside
    checks = sorted(r[8] for r in table_rows(tab))
    assert checks == ["cycle", "grid_without_worker", "outside", "park_overlap"]  # no sliver
    tab.shot("20_upload")
    store = open_store(str(server.store))
    try:
        assert len(store.generations()) == 1
    finally:
        store.close()
    tab.check_clean()
    tab.context.close()

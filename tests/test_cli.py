"""The real `gridmap` command on the sample store: answers, files, and clean errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from grids.routing import Router
from layers.store import open_store
from tests.conftest import gridmap_exe


def run(*args, store: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [gridmap_exe(), *(["--store", str(store)] if store else []), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_layers_lists_counts_and_versions(sample_store):
    out = run("layers", "--json", store=sample_store)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    counts = data["counts"]
    assert counts["counties"] == 7 and counts["townships"] == 103
    assert 2000 <= counts["grids"] <= 3200 and counts["entities"] >= 9000
    assert counts["precedence"] > 0  # the rules are stored with the layers
    assert data["generations"][0]["generation"] == 1


def test_route_json_has_every_field(sample_store):
    # 南通市区 (崇川区), a WGS84 point from a GPS
    out = run("route", "120.86", "32.01", "--json", store=sample_store)
    assert out.returncode == 0, out.stderr
    a = json.loads(out.stdout)
    assert a["status"] == "ok"
    assert a["county"] == {"code": "320613", "name": "崇川区"}
    assert a["township"]["code"].startswith("320613")
    assert a["grid"]["code"].startswith(a["township"]["code"]) and a["grid"]["kind"]
    assert {w["role"] for w in a["workers"]} == {"worker", "leader"}
    assert all(w["phone"] for w in a["workers"])
    assert a["bureau"]["level"] in ("county", "numbered", "park")
    assert a["chain"][-1] == "NTZF" and a["chain"][0] == a["bureau"]["code"]
    assert a["point"]["wgs84"] == [120.86, 32.01]
    assert a["version"]["generation"] == 1 and a["reasons"]
    for key in ("park", "flags", "candidates"):
        assert key in a


def test_route_chemical_park_entity_goes_to_park_bureau(sample_store, tmp_path):
    files = sample_store.parent / "files"
    parks = pd.read_csv(files / "bureaus.csv", dtype=str, keep_default_na=False)
    park_bureaus = parks[parks["level"] == "park"]
    ents = pd.read_csv(files / "entities.csv", dtype=str, keep_default_na=False)
    chem = ents[ents["park_code"].isin(park_bureaus["park_code"])].iloc[0]
    out = run("route", chem["lon"], chem["lat"], "--json", store=sample_store)
    a = json.loads(out.stdout)
    assert a["bureau"]["level"] == "park", a["reasons"]
    assert a["park"]["kind"] == "chemical_park"


def test_route_text_card_and_sea_and_outside(sample_store):
    card = run("route", "120.86", "32.01", store=sample_store)
    assert "网格员" in card.stdout and "责任执法机构" in card.stdout
    seas = gpd.read_file(sample_store.parent / "files" / "sea_areas.geojson")
    inside = seas.geometry.iloc[0].representative_point()
    sea = json.loads(run("route", inside.x, inside.y, "--json", store=sample_store).stdout)
    assert sea["status"] == "ok" and "sea" in sea["flags"]
    assert sea["sea_area"]["code"] == seas["code"].iloc[0]
    assert sea["bureau"]["level"] == "county" and sea["township"] is None
    outside = json.loads(run("route", "118.8", "32.05", "--json", store=sample_store).stdout)
    assert outside["status"] == "outside"


@pytest.mark.parametrize(
    "args,needle",
    [
        (("route", "120.86", "32.01", "--crs", "EPSG:99999"), "99999"),
        (("route", "120.86", "132.01"), "有效"),
        (("route", "120.86", "32.01", "--generation", "9"), "版本 9"),
        (("import", "/nonexistent/dir"), "不存在"),
    ],
)
def test_errors_go_to_stderr_with_exit_2(sample_store, args, needle):
    out = run(*args, store=sample_store)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_missing_store_is_a_clear_error(tmp_path):
    out = run("route", "120.86", "32.01", store=tmp_path / "none.gpkg")
    assert out.returncode == 2 and "gridmap demo" in out.stderr


def test_assign_routes_every_row_like_route(sample_store, tmp_path):
    ents = pd.read_csv(sample_store.parent / "files" / "entities.csv", dtype=str)
    sample = ents.sample(300, random_state=1)
    sample.loc[sample.index[5], "lon"] = "不是数字"
    src = tmp_path / "企业.xlsx"
    sample.to_excel(src, index=False)
    out_file = tmp_path / "结果.xlsx"
    out = run("assign", src, "--out", out_file, store=sample_store)
    assert out.returncode == 0, out.stderr
    assert "第 7 行无法分派" in out.stderr
    # People's sheet first (Chinese); the machine names and codes on the second.
    result = pd.read_excel(out_file, sheet_name="机器字段", dtype=str, keep_default_na=False)
    assert len(result) == 300 and list(result["id"]) == list(sample["id"])
    assert (result["route_status"] == "error").sum() == 1
    routed = result[result["route_status"] != "error"]
    # Two rows as `gridmap route` answers them (a process each, 2 s of start-up) …
    for _, row in routed.sample(2, random_state=2).iterrows():
        single = json.loads(
            run("route", row["lon"], row["lat"], "--json", store=sample_store).stdout
        )
        assert row["route_grid_code"] == (single["grid"] or {}).get("code", "")
        assert row["route_bureau_code"] == (single["bureau"] or {}).get("code", "")
    # … and every row as the router that command uses answers it.
    store = open_store(str(sample_store))
    try:
        router = Router(store)
        for row in routed.itertuples(index=False):
            single = router.route(float(row.lon), float(row.lat))
            assert row.route_grid_code == (single["grid"] or {}).get("code", ""), row.id
            assert row.route_bureau_code == (single["bureau"] or {}).get("code", ""), row.id
    finally:
        store.close()


def test_import_refusal_leaves_store_unchanged(sample_store, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "workers.csv").write_text("id,name,phone,grid_code\nW1,张三,13800000000,1\n")
    before = run("layers", "--json", store=sample_store).stdout
    out = run("import", bad, store=sample_store)
    assert out.returncode == 2
    assert "workers.csv" in out.stderr and "role" in out.stderr
    assert run("layers", "--json", store=sample_store).stdout == before

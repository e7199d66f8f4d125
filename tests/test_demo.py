"""The reproducible Nantong sample dataset (layers/demo.py)."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from grids.flow import load_flow
from layers import credit_code
from layers.demo import build_sample
from layers.schema import LAYERS

GEO_LAYERS = ("counties", "townships", "parks", "grids", "sea_areas", "jurisdictions")
CSV_LAYERS = ("bureaus", "workers", "entities", "incidents")


class Sample:
    """The files of one build, parsed once."""

    def __init__(self, root: Path, counts: dict[str, int]) -> None:
        self.root = root
        self.counts = counts
        self.props: dict[str, list[dict[str, Any]]] = {}
        self.geoms: dict[str, list[Any]] = {}
        for name in GEO_LAYERS:
            data = json.loads((root / f"{name}.geojson").read_text(encoding="utf-8"))
            self.props[name] = [f["properties"] for f in data["features"]]
            self.geoms[name] = [shape(f["geometry"]) for f in data["features"]]
        for name in CSV_LAYERS:
            with (root / f"{name}.csv").open(encoding="utf-8", newline="") as fh:
                self.props[name] = list(csv.DictReader(fh))

    def by(self, layer: str, key: str = "code") -> dict[str, tuple[dict[str, Any], Any]]:
        return {p[key]: (p, g) for p, g in zip(self.props[layer], self.geoms[layer], strict=True)}


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    root = tmp_path_factory.mktemp("sample")
    counts = build_sample(root, as_of=AS_OF)
    return Sample(root, counts)


# The build time the sample's incidents are dated from (fixed here: two builds compared).
AS_OF = datetime(2026, 12, 2, 10, 0, tzinfo=timezone(timedelta(hours=8)))


def test_second_build_is_byte_identical(sample: Sample, tmp_path: Path) -> None:
    build_sample(tmp_path / "again", as_of=AS_OF)
    assert _hashes(tmp_path / "again") == _hashes(sample.root)


def test_a_later_build_dates_its_incidents_from_then(sample: Sample, tmp_path: Path) -> None:
    build_sample(tmp_path / "later", as_of=AS_OF + timedelta(days=40))
    later = _hashes(tmp_path / "later")
    assert later["grids.geojson"] == _hashes(sample.root)["grids.geojson"]
    assert later["incidents.csv"] != _hashes(sample.root)["incidents.csv"]


def test_other_seed_differs(sample: Sample, tmp_path: Path) -> None:
    build_sample(tmp_path / "other", seed=7, as_of=AS_OF)
    other = _hashes(tmp_path / "other")
    mine = _hashes(sample.root)
    assert other["counties.geojson"] == mine["counties.geojson"]
    assert other["grids.geojson"] != mine["grids.geojson"]


def test_a_registry_of_another_size(sample: Sample, tmp_path: Path) -> None:
    """`gridmap demo --entities N`: the same grids and layers with N supervised entities (a
    province's registry over the city's grids, for the benchmarks); nonsense is refused."""
    counts = build_sample(tmp_path / "many", as_of=AS_OF, entity_count=25_000)
    assert counts["entities"] == 25_000
    with open(tmp_path / "many" / "entities.csv", encoding="utf-8-sig", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    assert len(ids) == 25_000 and len(set(ids)) == 25_000
    other, mine = _hashes(tmp_path / "many"), _hashes(sample.root)
    assert other["counties.geojson"] == mine["counties.geojson"]
    assert other["entities.csv"] != mine["entities.csv"]
    with pytest.raises(ValueError, match="at least 100"):
        build_sample(tmp_path / "few", as_of=AS_OF, entity_count=5)


def test_names_never_run_out():
    """Near a million entities the drawn names run out: when every name drawn is taken, a
    numbered branch of the last one is used (and the next one after that)."""
    import numpy as np

    from layers.demo_entities import _company_name

    class AllTaken(set):
        def __contains__(self, name):  # every drawn name taken; branches as recorded
            return "分厂" not in name or super().__contains__(name)

    taken = AllTaken()
    rng = np.random.default_rng(1)
    first, _ = _company_name(rng, "化工", "320612", "十总镇", taken)
    second, _ = _company_name(rng, "化工", "320612", "十总镇", taken)
    assert first.endswith("十总镇第2分厂") and second.endswith("分厂") and first != second
    assert {first, second} <= set(iter(taken))


def test_files_and_formats(sample: Sample) -> None:
    names = {p.name for p in sample.root.iterdir()}
    assert names == {f"{n}.geojson" for n in GEO_LAYERS} | {f"{n}.csv" for n in CSV_LAYERS}
    for name in GEO_LAYERS:
        text = (sample.root / f"{name}.geojson").read_text(encoding="utf-8")
        assert '"crs"' not in text
        assert not re.search(r"\d\.\d{8,}", text), f"{name}: more than 7 decimals"
    for name in CSV_LAYERS:
        raw = (sample.root / f"{name}.csv").read_bytes()
        assert b"\r" not in raw
        raw.decode("utf-8")
    # RFC 7946: exterior rings counter-clockwise.
    for name in GEO_LAYERS:
        for geom in sample.geoms[name]:
            assert all(shapely.is_ccw(p.exterior) for p in geom.geoms), name


def test_counts(sample: Sample) -> None:
    c = sample.counts
    kinds = Counter(p["kind"] for p in sample.props["grids"])
    assert c["counties"] == 7
    assert c["townships"] == 103
    assert 2000 <= kinds["comprehensive"] <= 3000
    assert kinds["park"] >= c["parks"] * 2
    assert 10 <= kinds["dedicated"] <= 14
    assert c["parks"] >= 10
    assert 9500 <= c["entities"] <= 10500
    assert c["incidents"] >= 200
    assert c["sea_areas"] >= 3
    for name in GEO_LAYERS + CSV_LAYERS:
        assert c[name] == len(sample.props[name]), name


def test_counties_are_the_reference(sample: Sample) -> None:
    ref = json.loads(
        (Path(__file__).resolve().parent.parent / "data/reference/nantong_counties.geojson")
        .read_text(encoding="utf-8"))
    by_code = sample.by("counties")
    for f in ref["features"]:
        props, geom = by_code[f["properties"]["code"]]
        assert props["name"] == f["properties"]["name"]
        given = shapely.normalize(shape(f["geometry"]))
        assert shapely.equals_exact(shapely.normalize(geom), given)  # same vertices
    assert len(by_code["320623"][1].geoms) == 2  # 如东县 has an offshore part


def _assert_partition(parent: Any, children: list[Any], what: str) -> None:
    assert shapely.coverage_is_valid(children), what
    union = shapely.coverage_union_all(children)
    assert abs(union.area - parent.area) / parent.area < 1e-9, what
    assert shapely.symmetric_difference(union, parent).area / parent.area < 1e-9, what


def test_townships_partition_counties(sample: Sample) -> None:
    assert shapely.coverage_is_valid(sample.geoms["townships"])
    for code, (_, county) in sample.by("counties").items():
        mine = [g for p, g in zip(sample.props["townships"], sample.geoms["townships"],
                                  strict=True) if p["county_code"] == code]
        _assert_partition(county, mine, code)


def test_comprehensive_grids_partition_townships(sample: Sample) -> None:
    grids = [(p, g) for p, g in zip(sample.props["grids"], sample.geoms["grids"], strict=True)
             if p["kind"] == "comprehensive"]
    assert shapely.coverage_is_valid([g for _, g in grids])
    by_town: dict[str, list[Any]] = {}
    for p, g in grids:
        by_town.setdefault(p["township_code"], []).append(g)
    towns = sample.by("townships")
    assert set(by_town) == set(towns)
    for code, geoms in by_town.items():
        _assert_partition(towns[code][1], geoms, code)
    # Streets get more, smaller grids than towns.
    size = {"街道": [], "镇": []}
    for p, _ in grids:
        size[towns[p["township_code"]][0]["kind_zh"]].append(p["area_km2"])
    assert np.median(size["街道"]) * 3 < np.median(size["镇"])


def test_grid_codes(sample: Sample) -> None:
    codes = [p["code"] for p in sample.props["grids"]]
    assert len(set(codes)) == len(codes)
    for p in sample.props["grids"]:
        assert re.fullmatch(r"\d{15}", p["code"]), p["code"]
        assert p["code"].startswith(p["township_code"])
        if p["kind"] == "comprehensive":
            assert p["name"] == f"{p['community']}第{int(p['code'][-3:])}网格"


def test_park_and_dedicated_grids(sample: Sample) -> None:
    parks = sample.by("parks")
    towns = sample.by("townships")
    for p, g in zip(sample.props["grids"], sample.geoms["grids"], strict=True):
        if p["kind"] == "comprehensive":
            continue
        town = towns[p["township_code"]][1]
        if p["kind"] == "dedicated":  # clipped to its township, up to lattice rounding
            assert g.difference(town).area < 1e-6 * g.area, p["code"]
        else:  # the township holding most of the park grid
            share = g.intersection(town).area / g.area
            assert share >= max(g.intersection(t).area for _, t in towns.values()) / g.area - 1e-9
    for code, (props, park) in parks.items():
        mine = [g for p, g in zip(sample.props["grids"], sample.geoms["grids"], strict=True)
                if p["kind"] == "park" and p["community"] == props["name"]]
        assert len(mine) >= 2, code
        # A park nested inside this one has its own park grids: they are left out here.
        for _, inner in parks.values():
            if inner is not park and inner.within(park):
                park = park.difference(inner)
        _assert_partition(park, mine, code)
    park_grids = [g for p, g in zip(sample.props["grids"], sample.geoms["grids"], strict=True)
                  if p["kind"] == "park"]
    for i, a in enumerate(park_grids):  # no two park grids cover the same place
        for b in park_grids[i + 1:]:
            assert a.intersection(b).area < 1e-12, "overlapping park grids"


def test_parks(sample: Sample) -> None:
    parks = sample.by("parks")
    counties = sample.by("counties")
    kinds = Counter(p["kind"] for p in sample.props["parks"])
    assert kinds["chemical_park"] == 3
    assert kinds["dev_zone_national"] >= 4
    assert kinds["dev_zone_provincial"] >= 3
    by_name = {p["name"]: g for p, g in zip(sample.props["parks"], sample.geoms["parks"],
                                          strict=True)}
    # The chemical park (南区) lies inside the national zone (nested parks).
    inner = by_name["南通经济技术开发区化工园区（南区）"]
    outer = by_name["南通经济技术开发区"]
    assert inner.difference(outer).area == 0
    assert inner.area < outer.area
    for code, (props, geom) in parks.items():
        assert geom.difference(counties[props["county_code"]][1]).area < 1e-12, code
    # Parks do not overlap, except the nested one.
    items = list(parks.items())
    for i, (a, (pa, ga)) in enumerate(items):
        for b, (pb, gb) in items[i + 1:]:
            if b in (pa["parent_code"],) or a in (pb["parent_code"],):
                continue
            assert ga.intersection(gb).area < 1e-12, (a, b)
    # Some parks cross township borders.
    crossing = sum(
        1 for g in parks.values()
        if sum(1 for t in sample.geoms["townships"] if t.intersection(g[1]).area > 1e-6) > 1
    )
    assert crossing >= 3


def test_sea_areas(sample: Sample) -> None:
    land = shapely.union_all(sample.geoms["counties"])
    seas = sample.geoms["sea_areas"]
    coastal = {p["county_code"] for p in sample.props["sea_areas"]}
    assert {"320623", "320681"} <= coastal
    for s in seas:
        assert s.intersection(land).area < 1e-9
        assert s.distance(land) < 1e-6  # touches the coast
    for i, a in enumerate(seas):
        for b in seas[i + 1:]:
            assert a.intersection(b).area < 1e-9


def test_references_resolve(sample: Sample) -> None:
    keys = {
        name: {str(p[spec.key]) for p in sample.props[name]}
        for name, spec in LAYERS.items() if spec.key and name in sample.props
    }
    for name, spec in LAYERS.items():
        if name not in sample.props:
            assert spec.optional, f"required layer {name} missing"
            continue
        rows = sample.props[name]
        for row in rows:
            for col in spec.required:
                assert col in row, (name, col)
            for col, allowed in spec.choices.items():
                assert row[col] in allowed, (name, col, row[col])
            for col, target in spec.refs.items():
                value = str(row[col])
                if value == "" and col in spec.nullable:
                    continue
                assert value in keys[target], (name, col, value)
        if spec.key:
            values = [str(r[spec.key]) for r in rows]
            assert len(values) == len(set(values)), name
    entity_ids = keys["entities"]
    for row in sample.props["entities"]:
        assert row["township_code"] in keys["townships"]
        assert row["park_code"] == "" or row["park_code"] in keys["parks"]
    for row in sample.props["incidents"]:
        assert row["entity_id"] == "" or row["entity_id"] in entity_ids


def test_bureaus(sample: Sample) -> None:
    rows = sample.props["bureaus"]
    levels = Counter(r["level"] for r in rows)
    assert levels["municipal"] == 1 and levels["county"] == 7 and levels["park"] == 3
    by_code = {r["code"]: r for r in rows}
    for r in rows:
        if r["level"] == "numbered":
            parent = by_code[r["parent_code"]]
            assert parent["level"] == "county" and parent["county_code"] == r["county_code"]
        if r["level"] == "county":
            assert r["parent_code"] == "NTZF"
    per_county = Counter(r["county_code"] for r in rows if r["level"] == "numbered")
    assert set(per_county) == {r["county_code"] for r in rows if r["level"] == "county"}
    assert all(2 <= n <= 4 for n in per_county.values())
    parks = {p["code"]: p for p in sample.props["parks"]}
    for r in rows:
        if r["level"] == "park":
            assert parks[r["park_code"]]["kind"] == "chemical_park"
            nested = parks[r["park_code"]]["parent_code"]  # inside the municipal-level zone
            assert r["parent_code"] == ("NTZF" if nested else f"NTZF-{r['county_code']}")


def test_jurisdictions(sample: Sample) -> None:
    bureaus = {r["code"]: r for r in sample.props["bureaus"]}
    counties = sample.by("counties")
    geoms = sample.geoms["jurisdictions"]
    assert shapely.coverage_is_valid(geoms)  # in particular: no overlaps
    covered: dict[str, float] = {}
    for p, g in zip(sample.props["jurisdictions"], geoms, strict=True):
        bureau = bureaus[p["bureau_code"]]
        assert bureau["level"] == "numbered"
        county = counties[bureau["county_code"]][1]
        assert g.difference(county).area < 1e-12
        covered[bureau["county_code"]] = covered.get(bureau["county_code"], 0) + g.area
    for code, (_, county) in counties.items():
        assert 0.6 < covered[code] / county.area < 0.99, code
    # Borders cut across townships rather than following them.
    towns = sample.geoms["townships"]
    split = sum(1 for t in towns if sum(1 for j in geoms if j.intersection(t).area > 1e-7) > 1)
    assert split >= 10


def test_workers(sample: Sample) -> None:
    rows = sample.props["workers"]
    grids = {p["code"]: p for p in sample.props["grids"]}
    workers = Counter(r["grid_code"] for r in rows if r["role"] == "worker")
    assert set(workers) == set(grids) and set(workers.values()) == {1}
    leaders: dict[str, set[str]] = {}
    for r in rows:
        assert re.fullmatch(r"1[3-9]\d{9}", r["phone"])
        if r["role"] == "leader":
            leaders.setdefault(r["id"], set()).add(grids[r["grid_code"]]["township_code"])
    assert len(leaders) == 103
    assert all(len(towns) == 1 for towns in leaders.values())
    lead_rows = Counter(r["grid_code"] for r in rows if r["role"] == "leader")
    assert set(lead_rows) == set(grids) and set(lead_rows.values()) == {1}


def test_entities(sample: Sample) -> None:
    rows = sample.props["entities"]
    assert all(credit_code.validate(r["id"]) is None for r in rows)
    assert len({r["name"] for r in rows}) == len(rows)
    regions = Counter(credit_code.region_code(r["id"]) for r in rows)
    for old in ("320602", "320611", "320684"):  # registered before the 2020 adjustment
        assert regions[old] > 50, old
    assert Counter(r["inspection_class"] for r in rows).keys() == {
        "重点监管对象", "一般监管对象", "特殊监管对象"}
    assert {r["crs"] for r in rows} == {"wgs84"}
    assert all(r["permit_class"] for r in rows)  # the importer requires a value
    xy = np.array([[float(r["lon"]), float(r["lat"])] for r in rows])
    assert np.array_equal(np.round(xy, 6), xy)
    land = shapely.union_all(sample.geoms["counties"])
    sea = shapely.union_all(sample.geoms["sea_areas"])
    assert shapely.contains_xy(land, xy[:, 0], xy[:, 1]).all()
    assert not shapely.contains_xy(sea, xy[:, 0], xy[:, 1]).any()
    # The stated township and park are where the point is.
    towns = sample.by("townships")
    parks = sample.by("parks")
    for r, (x, y) in zip(rows[::50], xy[::50], strict=True):
        assert shapely.intersects_xy(towns[r["township_code"]][1], x, y)
        if r["park_code"]:
            assert shapely.intersects_xy(parks[r["park_code"]][1], x, y)


def test_entities_denser_in_parks(sample: Sample) -> None:
    rows = sample.props["entities"]
    parks = shapely.union_all(sample.geoms["parks"])
    land = shapely.union_all(sample.geoms["counties"])
    xy = np.array([[float(r["lon"]), float(r["lat"])] for r in rows])
    inside = shapely.contains_xy(parks, xy[:, 0], xy[:, 1])
    density_in = inside.sum() / parks.area
    density_out = (~inside).sum() / (land.area - parks.area)
    assert density_in > 5 * density_out
    chem = [p["code"] for p in sample.props["parks"] if p["kind"] == "chemical_park"]
    chemical = [r for r in rows if r["industry"] == "化工"]
    assert sum(r["park_code"] in chem for r in chemical) > len(chemical) / 2
    by_industry = Counter((r["industry"], r["permit_class"]) for r in rows)
    share = {i: by_industry[(i, "重点管理")] / sum(v for (j, _), v in by_industry.items() if j == i)
             for i in ("化工", "电镀", "纺织印染", "机械制造")}
    assert min(share["化工"], share["电镀"], share["纺织印染"]) > 2 * share["机械制造"]


def test_incidents(sample: Sample) -> None:
    rows = sample.props["incidents"]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    allowed = {
        "source": {"12369热线", "网络举报", "巡查发现", "在线监控报警"},
        "category": {"air", "water", "noise", "solid_waste", "soil", "radiation", "marine",
                     "ecology", "other"},
        "crs": {"wgs84", "gcj02", "bd09"},
        "status": {"reported", "dispatched", "verified", "transferred", "handling", "closed"},
    }
    for col, values in allowed.items():
        assert {r[col] for r in rows} <= values, col
    flow = load_flow()
    for r in rows:
        assert re.fullmatch(r"2026-1[12]-\d\dT\d\d:\d\d:\d\d\+08:00", r["reported_at"])
        reported = datetime.fromisoformat(r["reported_at"])
        assert AS_OF - timedelta(days=30) <= reported <= AS_OF  # the 30 days before the build
        # The steps so far: in workflow order, after the report, before the build time.
        steps = [p.split("@") for p in r["history"].split(";") if p]
        times = [reported] + [datetime.fromisoformat(t) for _, t in steps]
        assert times == sorted(times) and times[-1] <= AS_OF
        states = ["reported"] + [s for s, _ in steps]
        assert all(pair in flow.steps for pair in itertools.pairwise(states))
        assert states[-1] == r["status"]
        assert r["category_zh"] and r["description"]
        assert int(r["accuracy_m"]) == 50 or 300 <= int(r["accuracy_m"]) <= 1000
        if r["source"] in ("巡查发现", "在线监控报警"):
            assert r["crs"] == "wgs84" and r["accuracy_m"] == "50"
    phone = [r for r in rows if r["source"] in ("12369热线", "网络举报")]
    assert sum(r["crs"] == "gcj02" for r in phone) > len(phone) / 2
    assert sum(bool(r["entity_id"]) for r in rows) > len(rows) / 2
    sea = shapely.union_all(sample.geoms["sea_areas"])
    at_sea = [r for r in rows if r["crs"] == "wgs84"
              and shapely.contains_xy(sea, float(r["lon"]), float(r["lat"]))]
    assert len(at_sea) >= 3
    # Phone reports are shifted: a GCJ-02 point near an entity is not at the WGS84 spot.
    entities = {r["id"]: r for r in sample.props["entities"]}
    offsets = [
        abs(float(r["lon"]) - float(entities[r["entity_id"]]["lon"]))
        for r in rows if r["entity_id"] and r["crs"] == "gcj02"
    ]
    assert np.median(offsets) > 0.003  # GCJ-02 shifts Nantong by about 0.0045° east


def test_incidents_near_county_borders(sample: Sample) -> None:
    counties = sample.geoms["counties"]
    borders = shapely.union_all([
        shapely.intersection(a.boundary, b.boundary)
        for i, a in enumerate(counties) for b in counties[i + 1:]
    ])
    near = [r for r in sample.props["incidents"] if int(r["accuracy_m"]) >= 500
            and shapely.distance(borders, shapely.Point(float(r["lon"]), float(r["lat"]))) < 0.01]
    assert len(near) >= 5

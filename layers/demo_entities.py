"""Sample point data: supervised entities and incidents (all fictitious)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from layers import credit_code
from layers import demo_geom as g
from layers.demo_admin import County
from layers.demo_names import COMPANY_WORDS, COUNTY_PREFIX, INDUSTRIES, PERMIT_CLASSES, ROADS

# Chinese characters of made-up brand names (字号); two of them make one brand.
BRAND_CHARS = (
    "华鑫润泰恒达宏瑞盛金源远丰嘉诚通海天永中联博鸿凯锦祥宝汇兴长正德强龙申鼎川"
    "明益安信科宇晶昌隆富清绿蓝港星银和利光图越优创孚元弘振协精融亿"
)

# Industry mixes (weights) by where an entity is.
MIX_CHEMICAL_PARK = {
    "化工": 60, "医药": 15, "危废处置": 5, "污水处理": 3, "热电": 2, "金属制品": 5, "印刷包装": 3,
    "机械制造": 7,
}
MIX_OTHER_PARK = {
    "机械制造": 22, "电子": 20, "金属制品": 14, "纺织印染": 8, "医药": 5, "化工": 2, "食品加工": 7,
    "印刷包装": 8, "建材": 4, "电镀": 4, "造纸": 2, "汽修": 2, "餐饮": 2, "污水处理": 1,
}
MIX_URBAN = {
    "餐饮": 30, "汽修": 15, "印刷包装": 8, "电子": 10, "机械制造": 10, "金属制品": 7, "食品加工": 8,
    "建材": 4, "纺织印染": 5, "电镀": 2, "医药": 1,
}
MIX_RURAL = {
    "畜禽养殖": 22, "纺织印染": 12, "机械制造": 12, "金属制品": 10, "建材": 8, "食品加工": 10,
    "餐饮": 8, "汽修": 6, "船舶修造": 2, "造纸": 2, "化工": 2, "电镀": 2, "污水处理": 2,
    "危废处置": 1,
}
# 港闸区 (320611, merged into 崇川 in 2020) covered these streets of today's 崇川区.
GANGZHA_STREETS = {"唐闸镇街道", "天生港镇街道", "秦灶街道", "陈桥街道", "永兴街道", "幸福街道"}
INDIVIDUAL_ENDINGS = ("饭店", "酒楼", "小吃店", "汽修厂", "生猪养殖场", "家禽养殖场")
COUNTY_PREFIX_IND = {
    "320613": "南通市崇川区", "320612": "南通市通州区", "320614": "海门区", "320623": "如东县",
    "320681": "启东市", "320682": "如皋市", "320685": "海安市",
}


class Locator:
    """Point lookups against the sample's townships and parks."""

    def __init__(self, townships: list[dict[str, Any]], parks: list[dict[str, Any]]) -> None:
        self.townships = townships
        self.parks = parks
        self._towns = shapely.STRtree([t["geometry"] for t in townships])
        self._parks = shapely.STRtree([p["geometry"] for p in parks])
        self._park_area = np.array([p["geometry"].area for p in parks])

    def township(self, xy: np.ndarray) -> list[dict[str, Any] | None]:
        hits = self._towns.query(shapely.points(xy), predicate="intersects")
        found: dict[int, int] = {}
        for i, t in zip(hits[0].tolist(), hits[1].tolist(), strict=True):
            found[i] = min(t, found.get(i, t))  # points on a border: lowest index wins
        return [self.townships[found[i]] if i in found else None for i in range(len(xy))]

    def park(self, xy: np.ndarray) -> list[str]:
        """The most specific (smallest) park containing each point, or ''."""
        hits = self._parks.query(shapely.points(xy), predicate="intersects")
        best: dict[int, int] = {}
        for i, p in zip(hits[0].tolist(), hits[1].tolist(), strict=True):
            if i not in best or self._park_area[p] < self._park_area[best[i]]:
                best[i] = p
        return [self.parks[best[i]]["code"] if i in best else "" for i in range(len(xy))]


def _choose(rng: np.random.Generator, mix: dict[str, int], n: int) -> list[str]:
    keys = list(mix)
    w = np.array([mix[k] for k in keys], dtype=float)
    return [keys[int(i)] for i in rng.choice(len(keys), size=n, p=w / w.sum())]


def _registration_region(rng: np.random.Generator, county: str, town_name: str) -> str:
    """Region code at registration: old codes survive on entities registered before 2020."""
    r = rng.random()
    if r < 0.05:
        return "320600"  # registered with the city-level authority
    if county == "320613":
        if r < 0.6:
            return "320611" if town_name in GANGZHA_STREETS else "320602"
        return "320613"
    if county == "320614":
        return "320684" if r < 0.6 else "320614"
    return county


def build_entities(
    rng: np.random.Generator,
    counties: list[County],
    townships: list[dict[str, Any]],
    parks: list[dict[str, Any]],
    n_total: int = 10_000,
) -> list[dict[str, Any]]:
    """About `n_total` supervised entities, dense in parks, the rest by urban/rural weight."""
    land = shapely.coverage_union_all([c.geom for c in counties])
    # Keep off the outer edge: the county polygons reach into the Yangtze and the sea.
    mask = g.buffer_km(land, -1.5)
    county_name = {c.code: c.name for c in counties}
    loc = Locator(townships, parks)

    places: list[tuple[BaseGeometry, int, dict[str, int]]] = []
    chem = [p for p in parks if p["kind"] == "chemical_park"]
    other = [p for p in parks if p["kind"] != "chemical_park"]
    n_chem, n_park = round(n_total * 0.06), round(n_total * 0.29)
    chem_area = sum(p["area_km2"] for p in chem)
    for p in chem:
        places.append((p["geometry"], round(n_chem * p["area_km2"] / chem_area), MIX_CHEMICAL_PARK))
    children = {p["parent_code"]: p["geometry"] for p in parks if p["parent_code"]}
    other_geoms = [
        shapely.difference(p["geometry"], children[p["code"]]) if p["code"] in children
        else p["geometry"] for p in other
    ]
    other_area = sum(float(shapely.area(x)) for x in other_geoms)
    for geom in other_geoms:
        places.append((geom, round(n_park * float(shapely.area(geom)) / other_area),
                       MIX_OTHER_PARK))
    all_parks = shapely.union_all([p["geometry"] for p in parks])
    rest = n_total - sum(n for _, n, _ in places)
    weights = np.array([
        g.km2_area(t["geometry"]) * (5.0 if t["kind_zh"] == "街道" else 1.0) for t in townships
    ])
    counts = rng.multinomial(rest, weights / weights.sum())
    for t, k in zip(townships, counts, strict=True):
        if k:
            geom = shapely.difference(shapely.intersection(t["geometry"], mask), all_parks)
            places.append((geom, int(k), MIX_URBAN if t["kind_zh"] == "街道" else MIX_RURAL))

    out: list[dict[str, Any]] = []
    names: set[str] = set()
    ids: set[str] = set()
    for geom, k, mix in places:
        geom = shapely.intersection(geom, mask)
        if k == 0 or geom.is_empty:
            continue
        xy = g.random_points_in(rng, geom, k, decimals=6)
        towns = loc.township(xy)
        park_codes = loc.park(xy)
        for (lon, lat), town, park_code, industry in zip(
            xy.tolist(), towns, park_codes, _choose(rng, mix, k), strict=True
        ):
            if town is None:
                continue
            county = town["county_code"]
            name, kind = _company_name(rng, industry, county, town["name"], names)
            code = credit_code.generate(rng, _registration_region(rng, county, town["name"]),
                                        kind=kind)
            if code in ids:
                continue
            ids.add(code)
            permit = PERMIT_CLASSES[int(rng.choice(4, p=INDUSTRIES[industry][1]))]
            out.append({
                "id": code, "name": name, "lon": lon, "lat": lat, "crs": "wgs84",
                "industry": industry,
                "permit_class": permit, "inspection_class": _inspection_class(rng, permit),
                "address": (f"江苏省南通市{county_name[county]}{town['name']}"
                            f"{ROADS[int(rng.integers(len(ROADS)))]}{int(rng.integers(1, 999))}号"),
                "park_code": park_code, "township_code": town["code"],
            })
    out.sort(key=lambda e: e["id"])
    return out


def _company_name(
    rng: np.random.Generator, industry: str, county: str, town: str, taken: set[str]
) -> tuple[str, str]:
    """A unique, plausible name and the credit-code entity type that goes with it. The names
    drawn run out near a million entities (`gridmap demo --entities`): after a run of names
    already taken, the last one is made unique as a numbered branch works (第N分厂) — never
    reached by the sample's 10,000, whose names stay as they are."""
    endings = INDUSTRIES[industry][0]
    for _ in range(_NAME_TRIES):
        ending = endings[int(rng.integers(len(endings)))]
        if rng.random() < 0.3:
            brand = COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))]
        else:
            a, b = rng.choice(len(BRAND_CHARS), size=2, replace=False)
            brand = BRAND_CHARS[int(a)] + BRAND_CHARS[int(b)]
        if ending in INDIVIDUAL_ENDINGS:
            name, kind = f"{COUNTY_PREFIX_IND[county]}{town}{brand}{ending}", "2"
        else:
            r = rng.random()
            prefix = "南通" if r < 0.2 else "江苏" if r < 0.35 else COUNTY_PREFIX[county]
            name, kind = f"{prefix}{brand}{ending}", "3" if "合作社" in ending else "1"
        if name not in taken:
            taken.add(name)
            return name, kind
    branch = 2
    while f"{name}{town}第{branch}分厂" in taken:
        branch += 1
    name = f"{name}{town}第{branch}分厂"
    taken.add(name)
    return name, kind


_NAME_TRIES = 16


def _inspection_class(rng: np.random.Generator, permit: str) -> str:
    r = rng.random()
    if permit == "重点管理":
        return "重点监管对象" if r < 0.9 else "特殊监管对象"
    return "特殊监管对象" if r < 0.04 else "一般监管对象"


def dedicated_targets(
    rng: np.random.Generator, entities: list[dict[str, Any]], counties: list[County]
) -> list[tuple[str, tuple[float, float], float]]:
    """Big plants (one per county, then a few more) and a drinking-water source zone."""
    big = [e for e in entities if e["permit_class"] == "重点管理"
           and e["industry"] in ("热电", "危废处置", "污水处理", "化工", "造纸")]
    picked: list[dict[str, Any]] = []

    def far_enough(e: dict[str, Any]) -> bool:
        return all(math.hypot((e["lon"] - p["lon"]) * g.COS_LAT, e["lat"] - p["lat"]) > 0.03
                   for p in picked)

    for county in counties:
        mine = [e for e in big if e["address"].startswith(f"江苏省南通市{county.name}")]
        for i in rng.permutation(len(mine)):
            if far_enough(mine[int(i)]):
                picked.append(mine[int(i)])
                break
    for i in rng.permutation(len(big)):
        if len(picked) >= 11:
            break
        if far_enough(big[int(i)]):
            picked.append(big[int(i)])
    targets = [(e["name"], (e["lon"], e["lat"]), 0.5) for e in picked]
    targets.append(("长江狼山水厂饮用水水源保护区", (120.862, 31.925), 1.2))
    return targets


# -------------------------------------------------------------------------------- incidents

CATEGORY_ZH = {
    "air": "大气", "water": "水", "noise": "噪声", "solid_waste": "固体废物", "soil": "土壤",
    "radiation": "辐射", "marine": "海洋", "ecology": "生态", "other": "其他",
}
# What complaints about an entity of an industry are usually about.
INDUSTRY_CATEGORIES = {
    "化工": ("air", "air", "water", "solid_waste"), "医药": ("air", "water"),
    "纺织印染": ("water", "water", "air"), "电镀": ("water", "soil", "solid_waste"),
    "金属制品": ("noise", "air"), "机械制造": ("noise", "air"), "电子": ("air", "solid_waste"),
    "食品加工": ("water", "air"), "造纸": ("water", "air"), "印刷包装": ("air",),
    "建材": ("air", "noise"), "船舶修造": ("air", "noise", "water"), "热电": ("air",),
    "畜禽养殖": ("water", "air"), "餐饮": ("air", "noise"), "汽修": ("air", "solid_waste"),
    "污水处理": ("water", "air"), "危废处置": ("solid_waste", "air", "soil"),
}
# Complaints about a named entity ({who}) and about a described place ({where}).
ENTITY_TEMPLATES = {
    "air": ("{who}厂区附近有刺鼻异味，疑似废气未经处理直排", "{who}烟囱冒黑烟，周边居民反映强烈",
            "{who}夜间异味明显，影响居民休息"),
    "water": ("{who}附近河道水体发黑发臭，疑似偷排废水", "{who}排口有不明废水流入河道",
              "{who}旁边沟渠出现大量泡沫和死鱼"),
    "noise": ("{who}夜间生产噪声扰民", "{who}设备噪声大，持续到深夜"),
    "solid_waste": ("{who}厂区外随意堆放疑似危险废物", "{who}将工业固废倾倒在厂外空地"),
    "soil": ("{who}厂区周边土壤颜色异常，疑似化学品渗漏",),
}
PLACE_TEMPLATES = {
    "air": ("{where}一带有刺鼻异味，晚上更明显", "{where}附近有人露天焚烧垃圾，烟雾很大",
            "{where}附近餐馆油烟直排扰民"),
    "water": ("{where}附近河道水体发黑发臭", "{where}附近河道出现大量死鱼"),
    "noise": ("{where}建筑工地夜间施工噪声扰民", "{where}附近商铺高音喇叭噪声扰民"),
    "solid_waste": ("{where}路边有人倾倒建筑垃圾和工业固废", "{where}附近农田边堆放不明废桶"),
    "soil": ("{where}附近农田土壤颜色异常",),
    "radiation": ("{where}附近疑似有单位无证使用射线装置进行探伤作业",),
    "marine": ("{where}海面发现油污带，疑似船舶排污", "{where}出现大面积漂浮垃圾",
               "{where}滩涂养殖区附近有不明废水入海"),
    "ecology": ("{where}附近湿地有人非法围垦", "{where}附近河道滩地有人非法采砂",
                "{where}附近有人非法捕鸟"),
    "other": ("{where}附近有人露天焚烧秸秆", "{where}环境问题咨询，请相关部门核实"),
}
SOURCES = ("12369热线", "网络举报", "巡查发现", "在线监控报警")


def build_incidents(
    rng: np.random.Generator,
    entities: list[dict[str, Any]],
    counties: list[County],
    townships: list[dict[str, Any]],
    sea_areas: list[dict[str, Any]],
    n_entity: int = 200,
    n_random: int = 70,
    n_sea: int = 10,
    n_border: int = 14,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Sample incidents: near entities, anywhere, at sea and near county borders, reported
    over the 30 days before `as_of` (the build time), each as far along the workflow as a
    plausible pace of handling would have taken it by then — so the demo shows fresh,
    due-soon and overdue cases. The same seed and `as_of` give the same incidents."""
    loc = Locator(townships, [])
    county_name = {c.code: c.name for c in counties}
    draft: list[dict[str, Any]] = []

    def place(town: dict[str, Any] | None) -> str:
        if town is None:
            return "县界"
        road = ROADS[int(rng.integers(len(ROADS)))]
        return f"{county_name[town['county_code']]}{town['name']}{road}"

    weights = np.array([3.0 if e["inspection_class"] != "一般监管对象" else 1.0 for e in entities])
    for i in rng.choice(len(entities), size=n_entity, replace=False, p=weights / weights.sum()):
        e = entities[int(i)]
        bearing, dist_km = rng.uniform(0, 2 * math.pi), rng.uniform(0.03, 0.4)
        lon = e["lon"] + dist_km * math.sin(bearing) / (g.KM_PER_DEG_LAT * g.COS_LAT)
        lat = e["lat"] + dist_km * math.cos(bearing) / g.KM_PER_DEG_LAT
        cats = INDUSTRY_CATEGORIES[e["industry"]]
        source = _choose(rng, {"12369热线": 45, "网络举报": 25, "巡查发现": 15,
                               "在线监控报警": 15 if e["permit_class"] == "重点管理" else 0}, 1)[0]
        draft.append({"lon": lon, "lat": lat, "source": source, "entity_id": e["id"],
                      "category": cats[int(rng.integers(len(cats)))], "who": e["name"]})

    land = shapely.coverage_union_all([c.geom for c in counties])
    weights_t = np.array([g.km2_area(t["geometry"]) * (5.0 if t["kind_zh"] == "街道" else 1.0)
                          for t in townships])
    counts = rng.multinomial(n_random, weights_t / weights_t.sum())
    for t, k in zip(townships, counts, strict=True):
        if not k:
            continue
        area = shapely.intersection(t["geometry"], g.buffer_km(land, -1.5))
        for lon, lat in g.random_points_in(rng, area, int(k)).tolist():
            cat = _choose(rng, {"noise": 30, "air": 20, "water": 20, "ecology": 8,
                                "solid_waste": 10, "other": 10, "radiation": 2}, 1)[0]
            source = _choose(rng, {"12369热线": 50, "网络举报": 35, "巡查发现": 15}, 1)[0]
            draft.append({"lon": lon, "lat": lat, "source": source, "entity_id": "",
                          "category": cat, "town": t})

    sea_geom = shapely.union_all([s["geometry"] for s in sea_areas])
    for k, (lon, lat) in enumerate(g.random_points_in(rng, sea_geom, n_sea).tolist()):
        # Mostly patrol boats (GPS), some reports from fishermen's phones.
        source = "网络举报" if k % 3 == 2 else "巡查发现"
        sea = next(s for s in sea_areas if shapely.contains_xy(s["geometry"], lon, lat))
        draft.append({"lon": lon, "lat": lat, "source": source, "entity_id": "",
                      "category": _choose(rng, {"marine": 8, "ecology": 2}, 1)[0],
                      "where": f"{county_name[sea['county_code']]}近岸海域"})

    # Points on county borders, reported from a described place: ambiguous by design.
    shared = shapely.line_merge(shapely.union_all([
        shapely.intersection(a.geom.boundary, b.geom.boundary)
        for i, a in enumerate(counties) for b in counties[i + 1:]
    ]))
    shared = shapely.intersection(shared, g.buffer_km(land, -3.0))
    for _ in range(n_border):
        p = shapely.line_interpolate_point(shared, rng.uniform(0, shared.length))
        bearing, dist_km = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.25)
        lon = p.x + dist_km * math.sin(bearing) / (g.KM_PER_DEG_LAT * g.COS_LAT)
        lat = p.y + dist_km * math.cos(bearing) / g.KM_PER_DEG_LAT
        draft.append({"lon": lon, "lat": lat, "source": "12369热线", "entity_id": "",
                      "category": _choose(rng, {"water": 5, "air": 4, "ecology": 1}, 1)[0],
                      "border": True})

    as_of = (as_of or default_as_of()).astimezone(BEIJING)
    start = as_of - timedelta(days=30)
    seconds = np.sort(rng.integers(0, 30 * 86400, size=len(draft)))
    order = rng.permutation(len(draft))
    out = []
    for no, (k, sec) in enumerate(zip(order.tolist(), seconds.tolist(), strict=True), start=1):
        d = draft[k]
        when = start + timedelta(seconds=int(sec))
        crs, acc = _crs_and_accuracy(rng, d["source"], d.get("border", False))
        if "who" in d:
            templates = ENTITY_TEMPLATES[d["category"]]
        else:
            templates = PLACE_TEMPLATES[d["category"]]
            if "where" not in d:
                town = d.get("town") or loc.township(np.array([[d["lon"], d["lat"]]]))[0]
                d["where"] = place(town)
        lon, lat = _to_crs(d["lon"], d["lat"], crs)
        status, history = _lifecycle(rng, when, as_of)
        out.append({
            "id": f"XF{start:%Y%m}{no:04d}", "reported_at": when.isoformat(),
            "source": d["source"],
            "category": d["category"], "category_zh": CATEGORY_ZH[d["category"]],
            "description": templates[int(rng.integers(len(templates)))].format(
                who=d.get("who", ""), where=d.get("where", "")),
            "lon": round(lon, 6), "lat": round(lat, 6), "crs": crs, "accuracy_m": acc,
            "status": status, "entity_id": d["entity_id"], "history": history,
        })
    return out


def _crs_and_accuracy(rng: np.random.Generator, source: str, border: bool) -> tuple[str, int]:
    """Phones and web maps report GCJ-02 (or BD-09); inspectors and monitors real GPS."""
    r = rng.random()
    if source in ("巡查发现", "在线监控报警"):
        return "wgs84", 50
    if source == "12369热线" or border:
        # The operator geocodes a described place on a web map.
        return ("gcj02" if r < 0.75 else "bd09"), int(rng.integers(3, 11)) * 100
    crs = "gcj02" if r < 0.75 else "bd09" if r < 0.9 else "wgs84"
    return crs, (50 if rng.random() < 0.7 else int(rng.integers(3, 11)) * 100)


BEIJING = timezone(timedelta(hours=8))
# How long each step of the workflow typically takes in the sample (hours, uniform ranges):
# mostly within the limits of grids/case_flow.csv, sometimes beyond them.
PACE = {"dispatched": (0.08, 0.45), "verified": (0.4, 1.9), "transferred": (0.5, 3.8),
        "closed_on_site": (0.5, 3.8), "handling": (2.0, 22.0), "closed": (20.0, 160.0)}
# A step that dragged (a worker on leave, a bureau short of staff): well past its limit.
SLOW = {"dispatched": (0.6, 3.0), "verified": (2.5, 12.0), "transferred": (4.5, 20.0),
        "closed_on_site": (4.5, 20.0), "handling": (26.0, 90.0), "closed": (170.0, 420.0)}
SLOW_SHARE = 0.15


def default_as_of() -> datetime:
    """The build time the sample is dated from: now in Beijing, to the hour (two builds in
    the same hour are identical)."""
    return datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0)


def _lifecycle(rng: np.random.Generator, reported: datetime,
               as_of: datetime) -> tuple[str, str]:
    """(status at `as_of`, the steps so far as "state@ISO;…"): dispatched, verified on site,
    then closed there (40 %) or transferred to the bureau, accepted and closed by it."""
    on_site_close = rng.random() < 0.4
    path = (["dispatched", "verified", "closed_on_site"] if on_site_close
            else ["dispatched", "verified", "transferred", "handling", "closed"])
    at, status, steps = reported, "reported", []
    for step in path:
        low, high = (SLOW if rng.random() < SLOW_SHARE else PACE)[step]
        at = at + timedelta(hours=float(rng.uniform(low, high)))
        if at > as_of:
            break
        status = "closed" if step == "closed_on_site" else step
        steps.append(f"{status}@{at.replace(microsecond=0).isoformat()}")
    return status, ";".join(steps)


# ---------------------------------------------------------------- GCJ-02 / BD-09 (forward)
# The published forward formulas; the inverse lives in geo/ (another module).

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by GCJ-02
_EE = 0.00669342162296594323


def _gcj_dlat(x: float, y: float) -> float:
    r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    r += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return r


def _gcj_dlon(x: float, y: float) -> float:
    r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    r += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return r


def _wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    dlat = _gcj_dlat(lon - 105.0, lat - 35.0)
    dlon = _gcj_dlon(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lon + dlon, lat + dlat


def _gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    x_pi = math.pi * 3000.0 / 180.0
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * x_pi)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * x_pi)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def _to_crs(lon: float, lat: float, crs: str) -> tuple[float, float]:
    if crs == "wgs84":
        return lon, lat
    glon, glat = _wgs84_to_gcj02(lon, lat)
    return (glon, glat) if crs == "gcj02" else _gcj02_to_bd09(glon, glat)

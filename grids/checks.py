"""Data-quality checks over a whole layer set: what would be wrong if these layers were live.

`check_layers(layers)` takes every layer (the current snapshot's, or a candidate set: the
current layers with some replaced by a draft or an import) and returns a list of `Finding`s.
It is pure: no store, no permission, no I/O but the rules table. The publishing flow, `gridmap
validate` and the data-quality page all call it.

Topology is computed in the stored CRS (EPSG:4490 lon/lat), where neighbouring polygons share
their vertices exactly: projecting first would bend straight edges and open false slivers of a
few metres between a densified edge and the same edge with fewer vertices. Only the pieces
found (gaps, overlaps, parts outside) are projected to metres (EPSG:4549, geo/crs.py) for their
area and width.

The checks, kinds and severities, and every tolerance are data: grids/check_rules.csv, one row
per check (a deployment passes its own table, or overrides, as `settings`). The kinds:

- ``invalid``: a polygon that is missing, empty, not a polygon or not valid (the later checks
  use its repaired form, so one bad ring does not hide everything else);
- ``duplicate``: two features of a layer with one code;
- ``unknown_code``: a reference to a code that does not exist (a grid's township, a bureau's
  parent, county or park, a jurisdiction's bureau …);
- ``cycle``: bureaus whose parent_code chain loops;
- ``orphan``: a worker whose grid does not exist, a grid without a worker, a numbered bureau
  without an area, a chemical park without its own bureau;
- ``outside``: a feature reaching beyond the union of the counties (an entity beyond the
  counties and sea areas);
- ``overlap``: counties, townships, comprehensive grids, jurisdictions or (not nested) parks
  sharing area; sea areas over land;
- ``gap``: part of a county with no township, part of a township with no comprehensive grid
  (comprehensive grids must tile their township exactly), holes in the city;
- ``sliver``: a gap narrower than the sliver width (negative-buffer test) between neighbours;
  for numbered bureaus' areas only narrow gaps are findings — a wide part of a county outside
  every numbered bureau's area is the county bureau's own area (DOMAIN.md, rule 2);
- ``crossing``: a township beyond its county, a comprehensive or dedicated grid beyond its
  township, a park grid beyond the parks, a park beyond its county, a numbered bureau's area
  beyond its county.

Per group (a county's townships, a township's comprehensive grids, a county's jurisdictions)
the coverage functions of GEOS decide: `coverage_is_valid` (no overlap, matching edges) and,
when valid, `coverage_union_all`; overlapping pairs are found with an STRtree only in groups
that are not valid coverages. Nothing is compared pairwise over a whole layer.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from shapely.errors import GEOSException

from geo.validity import reason_zh
from layers.problems import errno_zh
from layers.schema import GRID_KIND_ZH, LAYERS, STORE_EPSG

RULES_TABLE = Path(__file__).with_name("check_rules.csv")
SEVERITIES = ("error", "warning")
SEVERITY_ZH = {"error": "错误", "warning": "警告"}
KIND_ZH = {
    "invalid": "几何无效",
    "duplicate": "编码重复",
    "unknown_code": "编码不存在",
    "cycle": "循环上级",
    "orphan": "无人负责",
    "outside": "超出范围",
    "overlap": "重叠",
    "gap": "缺口",
    "sliver": "狭长缝隙",
    "crossing": "跨越边界",
    "format": "文件格式",
}
# Layers by role in the messages (a grid kind has its own word).
M_PER_DEGREE = 111_320.0
_TIGHT = re.compile(r"(）|平方米|平方公里)\s+(?=[\u4e00-\u9fff])")
MAX_CODES = 8  # codes named per finding (neighbours of a gap …)


# -- findings -------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One problem found. `codes` name the features involved (the first is the one to fix);
    `location` is a point on the problem (lon, lat, EPSG:4490); `bbox` its extent; `geometry`
    the problem itself where it is an area (a gap, an overlap, the part outside) or the
    feature's outline, for maps. `id` is stable while the problem stays the same (it names the
    check, the codes and, for a piece of area, where it is), so a warning can be acknowledged."""

    kind: str
    severity: str
    layer: str
    codes: list[str] = field(default_factory=list)
    area_m2: float | None = None
    location: tuple[float, float] | None = None
    message_zh: str = ""
    id: str = ""
    check: str = ""
    bbox: tuple[float, float, float, float] | None = None
    geometry: object = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        """The JSON form (`gridmap validate --json`): no geometry, plain numbers."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "layer": self.layer,
            "codes": list(self.codes),
            "area_m2": None if self.area_m2 is None else round(float(self.area_m2), 1),
            "location": None if self.location is None else [round(float(v), 6)
                                                            for v in self.location],
            "bbox": None if self.bbox is None else [round(float(v), 6) for v in self.bbox],
            "message": self.message_zh,
            "check": self.check,
        }


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    found = list(findings)
    return {s: sum(f.severity == s for f in found) for s in SEVERITIES}


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """The findings as a table with Chinese column names (the page's table and Excel)."""
    rows = [{
        "严重程度": SEVERITY_ZH.get(f.severity, f.severity),
        "类型": KIND_ZH.get(f.kind, f.kind),
        "图层": layer_zh(f.layer),
        "编码": "、".join(f.codes),
        "面积（平方米）": None if f.area_m2 is None else round(float(f.area_m2), 1),
        "经度": None if f.location is None else round(float(f.location[0]), 6),
        "纬度": None if f.location is None else round(float(f.location[1]), 6),
        "说明": f.message_zh,
        "检查项": f.check,
        "编号": f.id,
    } for f in findings]
    columns = ["严重程度", "类型", "图层", "编码", "面积（平方米）", "经度", "纬度", "说明",
               "检查项", "编号"]
    return pd.DataFrame(rows, columns=columns)


def layer_zh(layer: str) -> str:
    spec = LAYERS.get(layer)
    return spec.title_zh if spec else layer


# -- rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    check: str
    kind: str
    severity: str
    tolerance_m2: float | None
    width_m: float | None
    label_zh: str
    note_zh: str = ""


class RulesError(ValueError):
    """A rules table that cannot be used (message in Chinese)."""


class Rules:
    """The check table: check -> Rule."""

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self.rules = dict(rules)

    def __getitem__(self, check: str) -> Rule:
        return self.rules[check]

    def __contains__(self, check: str) -> bool:
        return check in self.rules

    def with_overrides(self, overrides: Mapping[str, Mapping]) -> Rules:
        """A copy with some fields of some checks changed: {check: {"tolerance_m2": 50}}."""
        out = dict(self.rules)
        for check, changes in overrides.items():
            if check not in out:
                raise RulesError(f"没有名为 {check} 的检查项")
            rule = replace(out[check], **dict(changes))
            _validate_rule(rule)
            out[check] = rule
        return Rules(out)


def load_rules(path: Path | str | None = None) -> Rules:
    """The rules table (default grids/check_rules.csv)."""
    path = Path(path) if path else RULES_TABLE
    rules = {}
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise RulesError(f"无法读取检查规则表 {path}：{errno_zh(exc)}") from exc
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError as exc:
            raise RulesError(f"检查规则表 {path} 须为 UTF-8 编码的 CSV") from exc
        lacking = [c for c in ("check", "kind", "severity") if c not in header]
        if lacking:
            raise RulesError(f"检查规则表 {path} 缺少列：{'、'.join(lacking)}（表头应为 "
                             "check,kind,severity,tolerance_m2,width_m,label_zh,note_zh，"
                             f"见 {RULES_TABLE.name}）")
        try:
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise RulesError(f"检查规则表 {path} 须为 UTF-8 编码的 CSV（第 {reader.line_num} 行"
                             "无法读取）") from exc
        for row in rows:
            rule = Rule(
                check=(row["check"] or "").strip(), kind=(row["kind"] or "").strip(),
                severity=(row["severity"] or "").strip(),
                tolerance_m2=_number(row.get("tolerance_m2")),
                width_m=_number(row.get("width_m")),
                label_zh=(row.get("label_zh") or "").strip(),
                note_zh=(row.get("note_zh") or "").strip())
            _validate_rule(rule)
            rules[rule.check] = rule
    missing = sorted(set(_default_rules().rules) - set(rules)) if path != RULES_TABLE else []
    if missing:
        raise RulesError(f"检查规则表 {path} 缺少检查项：{'、'.join(missing)}")
    return Rules(rules)


_DEFAULT: Rules | None = None


def _default_rules() -> Rules:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rules(RULES_TABLE)
    return _DEFAULT


def _number(text) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _validate_rule(rule: Rule) -> None:
    if rule.severity not in SEVERITIES:
        raise RulesError(f"检查项 {rule.check} 的 severity 应为 error 或 warning，"
                         f"现为 {rule.severity!r}")
    for name in ("tolerance_m2", "width_m"):
        value = getattr(rule, name)
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise RulesError(f"检查项 {rule.check} 的 {name} 应为非负数，现为 {value!r}")


def rules_for(settings) -> Rules:
    """`settings` as check_layers takes it: None (the default table), a Rules, a path to a
    table, or overrides of the default table ({check: {field: value}})."""
    if settings is None:
        return _default_rules()
    if isinstance(settings, Rules):
        return settings
    if isinstance(settings, str | Path):
        return load_rules(settings)
    if isinstance(settings, Mapping):
        return _default_rules().with_overrides(settings)
    raise RulesError(f"无法识别的检查设置：{type(settings).__name__}")


# -- the entry point ------------------------------------------------------------------------------
def check_layers(layers: Mapping[str, pd.DataFrame], *, settings=None) -> list[Finding]:
    """Every finding over a full layer set (missing layers are skipped: their checks need
    them). Frames are the store's (EPSG:4490 GeoDataFrames with the schema's columns and an
    optional `attrs` dict column); another CRS is converted. Sorted: errors first, then by
    kind, layer and codes."""
    ctx = _Context(layers, rules_for(settings))
    ctx.run()
    order = {k: i for i, k in enumerate(KIND_ZH)}
    ctx.findings.sort(key=lambda f: (f.severity != "error", order.get(f.kind, 99), f.layer,
                                     f.codes, f.id))
    return ctx.findings


# -- geometry helpers -----------------------------------------------------------------------------
def _to_metric(geoms):
    from geo.crs import metric_transformer

    forward = metric_transformer()[0]

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = forward.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, project)


def _from_metric(geoms):
    from geo.crs import metric_transformer

    inverse = metric_transformer()[1]

    def unproject(coords: np.ndarray) -> np.ndarray:
        x, y = inverse.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, unproject)


def _area_m2(geoms) -> np.ndarray:
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return np.zeros(0)
    return shapely.area(_to_metric(geoms))


def _approx_m2(geoms) -> np.ndarray:
    """Areas from degrees² by the cosine of the latitude: for choosing what to measure."""
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return np.zeros(0)
    bounds = shapely.bounds(geoms)
    lat = np.nan_to_num((bounds[:, 1] + bounds[:, 3]) / 2)
    return shapely.area(geoms) * M_PER_DEGREE**2 * np.cos(np.radians(lat))


def _polygonal(geom):
    """The polygons of a geometry (a clip or a repair may leave lines and points)."""
    if geom is None:
        return None
    parts = shapely.get_parts(geom)
    polys = [p for p in parts if shapely.get_type_id(p) in (3, 6)]
    if not polys:
        return shapely.MultiPolygon()
    flat = []
    for p in polys:
        flat.extend(shapely.get_parts(p))
    return flat[0] if len(flat) == 1 else shapely.MultiPolygon(flat)


def _pieces(geom) -> np.ndarray:
    """The polygons of an area, as an array (empty for nothing)."""
    if geom is None or shapely.is_empty(geom):
        return np.array([], dtype=object)
    parts = shapely.get_parts(geom)
    return parts[np.isin(shapely.get_type_id(parts), (3,))]


def _narrow(pieces_m: np.ndarray, width_m: float) -> np.ndarray:
    """Which pieces (in metres) are narrower than `width_m` everywhere: nothing is left of
    them after a negative buffer of half the width."""
    if not len(pieces_m):
        return np.zeros(0, dtype=bool)
    shrunk = shapely.buffer(pieces_m, -width_m / 2.0, quad_segs=2)
    return shapely.is_empty(shrunk) | (shapely.area(shrunk) <= 0)


def _point(geom) -> tuple[float, float] | None:
    if geom is None or shapely.is_empty(geom):
        return None
    p = shapely.point_on_surface(geom)
    return float(p.x), float(p.y)


def _bbox(geom) -> tuple[float, float, float, float] | None:
    if geom is None or shapely.is_empty(geom):
        return None
    b = shapely.bounds(geom)
    return tuple(float(v) for v in b)  # type: ignore[return-value]


def _area_text(m2: float) -> str:
    if m2 >= 1e6:
        return f"{m2 / 1e6:,.2f} 平方公里"
    return f"{m2:,.0f} 平方米"


# -- the checks -----------------------------------------------------------------------------------
class _Context:
    def __init__(self, layers: Mapping[str, pd.DataFrame], rules: Rules) -> None:
        self.rules = rules
        self.findings: list[Finding] = []
        self.frames: dict[str, pd.DataFrame] = {}
        self.geoms: dict[str, np.ndarray] = {}
        for name, frame in layers.items():
            if name not in LAYERS or frame is None:
                continue
            frame = _in_store_crs(frame)
            self.frames[name] = frame.reset_index(drop=True)
        self._city = None

    # -- plumbing --
    def has(self, *names: str) -> bool:
        return all(n in self.frames for n in names)

    def codes(self, layer: str) -> np.ndarray:
        key = LAYERS[layer].key or ("bureau_code" if layer == "jurisdictions" else "id")
        return self.frames[layer][key].astype(str).to_numpy()

    def label(self, layer: str, i: int) -> str:
        """A feature as the messages name it: 名称（编码）."""
        frame = self.frames[layer]
        row = frame.iloc[int(i)]
        if layer == "jurisdictions":
            code = str(row["bureau_code"])
            name = self._bureau_names().get(code) or _attr(row, "name")
            return f"{name}（{code}）的辖区" if name else f"执法机构 {code} 的辖区"
        key = LAYERS[layer].key or "id"
        code = str(row.get(key, ""))
        name = str(row.get("name", "") or _attr(row, "name"))
        return f"{name}（{code}）" if name and name != code else code

    def _bureau_names(self) -> dict[str, str]:
        if "bureaus" not in self.frames:
            return {}
        b = self.frames["bureaus"]
        return dict(zip(b["code"].astype(str), b["name"].astype(str), strict=True))

    def add(self, check: str, layer: str, codes: Iterable[str], message: str, *,
            area_m2: float | None = None, geometry=None, location=None,
            piece: bool = False, severity: str | None = None) -> Finding | None:
        """Record a finding of `check` (its rule gives kind and severity); `piece`: the
        finding is one piece of area among possibly several with the same codes, and its id
        names where it is."""
        if check not in self.rules:
            return None
        rule = self.rules[check]
        codes = [str(c) for c in codes if str(c)]
        message = _TIGHT.sub(r"\1", message)  # "（P1） 与" -> "（P1）与"
        if location is None:
            location = _point(geometry)
        key = [rule.check, layer, *codes]
        if piece and location is not None:
            key.append(f"{location[0]:.3f},{location[1]:.3f}")
        digest = hashlib.sha1("|".join(key).encode("utf-8")).hexdigest()[:12]
        found = Finding(
            kind=rule.kind, severity=severity or rule.severity, layer=layer, codes=codes,
            area_m2=None if area_m2 is None else float(area_m2), location=location,
            message_zh=message, id=f"{rule.kind}-{digest}", check=rule.check,
            bbox=_bbox(geometry) if geometry is not None else None, geometry=geometry)
        self.findings.append(found)
        return found

    def tol(self, check: str, default: float = 0.0) -> float:
        rule = self.rules.rules.get(check)
        return float(rule.tolerance_m2) if rule and rule.tolerance_m2 is not None else default

    @property
    def city(self):
        """The union of the counties (repaired), or None without counties."""
        if self._city is None and "counties" in self.geoms:
            polys = self.geoms["counties"]
            try:
                city = (shapely.coverage_union_all(polys) if shapely.coverage_is_valid(polys)
                        else shapely.union_all(polys))
            except GEOSException:
                city = shapely.union_all(shapely.make_valid(polys))
            self._city = _polygonal(city)
            shapely.prepare(self._city)
        return self._city

    # -- run --
    def run(self) -> None:
        for name in self.frames:
            if LAYERS[name].geometry == "polygon":
                self.geoms[name] = self._valid_polygons(name)
        self._duplicates()
        self._references()
        self._cycles()
        self._orphans()
        if "counties" in self.geoms:
            self._counties()
        if self.has("townships", "counties"):
            self._tiling("townships", "counties", "county_code", np.arange(
                len(self.frames["townships"])), prefix="township")
        elif "townships" in self.geoms:
            self._outside_each("townships", np.arange(len(self.frames["townships"])))
        if "grids" in self.geoms:
            self._grids()
        if "parks" in self.geoms:
            self._parks()
        if "jurisdictions" in self.geoms:
            self._jurisdictions()
        if "sea_areas" in self.geoms:
            self._seas()
        if "entities" in self.frames:
            self._entities()

    # -- invalid geometry --
    def _valid_polygons(self, layer: str) -> np.ndarray:
        """The layer's polygons, each repaired when it is not valid (findings say so)."""
        frame = self.frames[layer]
        geoms = _geometries(frame)
        if geoms is None:
            geoms = np.full(len(frame), None, dtype=object)
        out = geoms.copy()
        missing = shapely.is_missing(geoms)
        types = shapely.get_type_id(geoms)
        for i in np.flatnonzero(missing | ~np.isin(types, (3, 6)) | shapely.is_empty(geoms)):
            what = ("几何为空" if missing[i] or shapely.is_empty(geoms[i])
                    else f"几何类型是 {geoms[i].geom_type}，应为面（Polygon/MultiPolygon）")
            self.add("invalid", layer, [self.codes(layer)[i]],
                     f"{layer_zh(layer)} {self.label(layer, i)}：{what}",
                     geometry=None if missing[i] else geoms[i])
            out[i] = _polygonal(geoms[i]) if not missing[i] else shapely.MultiPolygon()
        ok = ~missing & np.isin(types, (3, 6))
        bad = np.flatnonzero(ok & ~shapely.is_valid(np.where(ok, geoms, None)))
        for i in bad:
            reason, where = reason_zh(shapely.is_valid_reason(geoms[i]))
            fixed = _polygonal(shapely.make_valid(geoms[i]))
            self.add("invalid", layer, [self.codes(layer)[i]],
                     f"{layer_zh(layer)} {self.label(layer, i)} 几何无效：{reason}"
                     "（可在 QGIS 中用“修复几何”处理；其余检查按修复后的几何进行）",
                     geometry=geoms[i], location=where or _point(fixed))
            out[i] = fixed
        return out

    # -- codes --
    def _duplicates(self) -> None:
        for layer, frame in self.frames.items():
            key = LAYERS[layer].key
            if not key or key not in frame:
                continue
            values = frame[key].astype(str)
            dup = values[values.duplicated(keep=False) & (values != "")]
            for code, rows in dup.groupby(dup).groups.items():
                rows = list(rows)
                self.add("duplicate", layer, [code],
                         f"{layer_zh(layer)}编码 {code} 重复：共 {len(rows)} 个要素使用该编码",
                         geometry=self._outline(layer, rows[0]))

    def _outline(self, layer: str, i: int):
        geoms = self.geoms.get(layer)
        if geoms is not None:
            return geoms[int(i)]
        geoms = _geometries(self.frames[layer])
        return None if geoms is None else geoms[int(i)]

    def _references(self) -> None:
        known = {name: set(self.codes(name)) for name in self.frames if LAYERS[name].key}
        for layer, frame in self.frames.items():
            spec = LAYERS[layer]
            for col, target in spec.refs.items():
                if target not in known or col not in frame:
                    continue
                if layer == "workers" and col == "grid_code":
                    continue  # a worker without a grid: an orphan (below)
                values = frame[col].fillna("").astype(str).to_numpy()
                bad = np.flatnonzero((values != "") & ~_isin(values, known[target]))
                for i in bad:
                    self.add("unknown_code", layer, [self.codes(layer)[i], values[i]],
                             f"{layer_zh(layer)} {self.label(layer, i)} 的 {col} "
                             f"“{values[i]}”在{layer_zh(target)}图层中不存在",
                             geometry=self._outline(layer, i))

    def _cycles(self) -> None:
        if "bureaus" not in self.frames:
            return
        b = self.frames["bureaus"]
        codes = b["code"].astype(str).tolist()
        parents = b["parent_code"].fillna("").astype(str).tolist()
        parent_of = {c: p for c, p in zip(codes, parents, strict=True) if c and p}
        names = self._bureau_names()
        done: set[str] = set()
        for start in sorted(parent_of):
            path: list[str] = []
            seen: dict[str, int] = {}
            code = start
            while code in parent_of and code not in done:
                if code in seen:
                    cycle = path[seen[code]:]
                    first = min(range(len(cycle)), key=lambda k: cycle[k])
                    cycle = cycle[first:] + cycle[:first]
                    chain = " → ".join(f"{names.get(c, '')}（{c}）" for c in [*cycle, cycle[0]])
                    what = ("上级机构是它自身" if len(cycle) == 1 else "上级机构形成循环")
                    self.add("cycle", "bureaus", cycle,
                             f"执法机构{what}：{chain}（parent_code 必须逐级通向市级执法机构）")
                    break
                seen[code] = len(path)
                path.append(code)
                code = parent_of[code]
            done.update(path)

    def _orphans(self) -> None:
        if self.has("workers", "grids"):
            w = self.frames["workers"]
            grids = self.frames["grids"]
            gcodes = grids["code"].astype(str).to_numpy()
            wgrid = w["grid_code"].fillna("").astype(str).to_numpy()
            wid = w["id"].astype(str).to_numpy()
            for i in np.flatnonzero(~_isin(wgrid, gcodes)):
                what = (f"所属网格编码 {wgrid[i]} 不是任何网格" if wgrid[i] else "没有填写所属网格")
                self.add("worker_without_grid", "workers", [wid[i], wgrid[i]],
                         f"网格员 {w['name'].iat[i]}（{wid[i]}）{what}：该网格员不负责任何网格")
            roles = w["role"].astype(str).to_numpy() if "role" in w else np.full(len(w), "worker")
            staffed = set(wgrid[roles == "worker"])
            leaders = set(wgrid[roles != "worker"])
            geoms = self.geoms.get("grids")
            for i in np.flatnonzero(~_isin(gcodes, staffed)):
                extra = "（只有网格长）" if gcodes[i] in leaders else ""
                kind = GRID_KIND_ZH.get(str(grids["kind"].iat[i]), "网格")
                self.add("grid_without_worker", "grids", [gcodes[i]],
                         f"{kind} {self.label('grids', i)} 没有网格员{extra}："
                         "每个网格都应有负责的网格员",
                         geometry=None if geoms is None else geoms[i])
        if self.has("bureaus", "jurisdictions"):
            b = self.frames["bureaus"]
            with_area = set(self.frames["jurisdictions"]["bureau_code"].astype(str))
            for row in b.itertuples(index=False):
                if str(row.level) == "numbered" and str(row.code) not in with_area:
                    self.add("bureau_without_area", "bureaus", [str(row.code)],
                             f"编号执法局 {row.name}（{row.code}）在执法辖区图层中没有辖区范围："
                             "其所在县（市）、区的位置将不会分派给它")
        if self.has("bureaus", "parks"):
            b = self.frames["bureaus"]
            with_bureau = set(b.loc[b["level"].astype(str) == "park", "park_code"].astype(str))
            parks = self.frames["parks"]
            for i, row in enumerate(parks.itertuples(index=False)):
                if str(row.kind) == "chemical_park" and str(row.code) not in with_bureau:
                    self.add("chemical_park_without_bureau", "parks", [str(row.code)],
                             f"化工园区 {row.name}（{row.code}）没有独立的园区执法机构"
                             "（执法机构表中没有 park_code 为它的 park 级机构）",
                             geometry=self.geoms["parks"][i])

    # -- counties --
    def _counties(self) -> None:
        polys = self.geoms["counties"]
        codes = self.codes("counties")
        self._overlaps("counties", np.arange(len(polys)), "county_overlap", "县（市）、区")
        city = self.city
        if city is None or shapely.is_empty(city):
            return
        self._narrow_gaps(polys, codes)
        holes = [shapely.Polygon(r) for p in shapely.get_parts(city) for r in p.interiors]
        if not holes:
            return
        holes = np.asarray(holes, dtype=object)
        tree = shapely.STRtree(polys)
        for hole, area, narrow in self._measure(holes, self.tol("county_gap")):
            near = codes[tree.query(hole, predicate="intersects")]
            if not narrow and area > self.tol("county_gap"):  # narrow: _narrow_gaps
                self.add("county_gap", "counties", near[:MAX_CODES],
                         f"全市范围内约 {_area_text(area)} 不属于任何县（市）、区"
                         f"（周边：{'、'.join(near[:MAX_CODES]) or '—'}）", area_m2=area,
                         geometry=hole, piece=True)

    def _narrow_gaps(self, polys: np.ndarray, codes: np.ndarray) -> None:
        """Narrow gaps between counties, holes or channels open to the city's edge alike: what
        a closing (out, then in, by half the sliver width, in metres) adds to the union of the
        counties and that touches two counties or more (a concave corner of one county's
        coast is filled by a closing too, but touches that county only)."""
        rule = self.rules.rules.get("sliver")
        if rule is None or not rule.width_m or len(polys) < 2:
            return
        radius = rule.width_m / 2.0
        metric = _to_metric(polys)
        union = _to_metric(self.city)
        closed = shapely.buffer(shapely.buffer(union, radius, quad_segs=4), -radius,
                                quad_segs=4)
        added = _pieces(_polygonal(shapely.difference(closed, union)))
        if not len(added):
            return
        tree = shapely.STRtree(metric)
        for piece in added[shapely.area(added) > (rule.tolerance_m2 or 0.0)]:
            near = sorted(tree.query(shapely.buffer(piece, 0.01), predicate="intersects"))
            if len(near) < 2:
                continue
            names = [codes[k] for k in near][:MAX_CODES]
            self._sliver("counties", names, _from_metric(piece), float(piece.area),
                         f"县（市）、区之间（{'、'.join(names)}）")

    def _measure(self, pieces: np.ndarray, floor: float):
        """(piece, area m², narrow) of every piece over `floor` m² (the smallest tolerance
        that could report it); narrow: thinner than the sliver width everywhere."""
        if not len(pieces):
            return []
        pieces = pieces[_approx_m2(pieces) > floor * 0.5]
        if not len(pieces):
            return []
        metric = _to_metric(pieces)
        areas = shapely.area(metric)
        sliver = self.rules.rules.get("sliver")
        width = sliver.width_m if sliver and sliver.width_m else 0.0
        narrow = _narrow(metric, width) if width > 0 else np.zeros(len(pieces), dtype=bool)
        return [(p, float(a), bool(n)) for p, a, n in zip(pieces, areas, narrow, strict=True)
                if a > floor]

    def _sliver(self, layer: str, codes, geom, area: float, where: str) -> None:
        rule = self.rules.rules.get("sliver")
        if rule is None or area <= (rule.tolerance_m2 or 0.0):
            return
        self.add("sliver", layer, codes,
                 f"{where}有狭长缝隙：宽不足 {rule.width_m:g} 米，面积约 {_area_text(area)}"
                 "（请将相邻边界吸附对齐）", area_m2=area, geometry=geom, piece=True)

    # -- overlaps within a set of features --
    def _overlaps(self, layer: str, idx: np.ndarray, check: str, what: str) -> None:
        """Pairs of features among `idx` sharing more than the tolerance of area (only run
        when they do not form a valid coverage)."""
        polys = self.geoms[layer][idx]
        if len(polys) < 2:
            return
        try:
            if shapely.coverage_is_valid(polys):
                return
        except GEOSException:
            pass
        for i, j, inter, area in self._overlap_pairs(polys):
            if area <= self.tol(check):
                continue
            a, b = int(idx[i]), int(idx[j])
            self.add(check, layer, [self.codes(layer)[a], self.codes(layer)[b]],
                     f"{what} {self.label(layer, a)} 与 {self.label(layer, b)} 重叠约 "
                     f"{_area_text(area)}", area_m2=area, geometry=inter)

    def _overlap_pairs(self, polys: np.ndarray):
        """(i, j, intersection, m²) of pairs whose interiors share area (STRtree, no
        all-pairs loop)."""
        left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
        keep = left < right
        left, right = left[keep], right[keep]
        if not len(left):
            return []
        inner = shapely.relate_pattern(polys[left], polys[right], "2********")
        left, right = left[inner], right[inner]
        if not len(left):
            return []
        inters = np.array([_polygonal(g) for g in shapely.intersection(polys[left],
                                                                       polys[right])],
                          dtype=object)
        areas = _area_m2(inters)
        return list(zip(left.tolist(), right.tolist(), inters, areas.tolist(), strict=True))

    # -- a layer tiling its parents --
    def _tiling(self, child: str, parent: str, column: str, members: np.ndarray, *,
                prefix: str, gaps: str = "all", overlaps: bool = True) -> None:
        """Children (`members`, indices into the child layer) grouped by their parent code
        in `column` must tile their parent: overlaps, gaps (`gaps`: "all" reports wide gaps
        and slivers, "narrow" only slivers) and parts beyond the parent (crossing, or outside
        the city)."""
        parent_codes = self.codes(parent)
        parent_geoms = self.geoms[parent]
        child_geoms = self.geoms[child]
        group = self.frames[child][column].fillna("").astype(str).to_numpy()[members]
        by_parent = pd.Series(members).groupby(group).indices if len(members) else {}
        known = set(parent_codes)
        # Children of an unknown parent (reported as unknown codes): checked against the city.
        orphans = np.asarray([m for m, g in zip(members, group, strict=True) if g not in known],
                             dtype=int)
        if len(orphans):
            self._outside_each(child, orphans)
        parent_tree = shapely.STRtree(parent_geoms)
        what_child = {"townships": "乡镇/街道", "grids": "综合网格",
                      "jurisdictions": "执法辖区"}[child]
        for p, code in enumerate(parent_codes):
            if code not in by_parent and gaps != "all":
                continue
            mine = members[by_parent[code]] if code in by_parent else np.zeros(0, dtype=int)
            container = parent_geoms[p]
            if shapely.is_empty(container):
                continue
            polys = child_geoms[mine]
            try:
                valid = len(polys) < 2 or bool(shapely.coverage_is_valid(polys))
            except GEOSException:
                valid = False
            if not valid and overlaps:
                self._overlaps(child, mine, f"{prefix}_overlap", what_child)
            try:
                if not len(polys):
                    union = shapely.MultiPolygon()
                elif valid:
                    union = shapely.coverage_union_all(polys)
                else:
                    union = shapely.union_all(polys)
                # The usual case, a clean tiling, decided by one relate (no overlay).
                if valid and len(polys) and shapely.equals(container, union):
                    continue
                gap = shapely.difference(container, union)
                beyond = shapely.difference(union, container)
            except GEOSException:
                continue
            self._report_gaps(child, parent, p, mine, _pieces(_polygonal(gap)), prefix, gaps)
            self._report_beyond(child, parent, p, mine, _pieces(_polygonal(beyond)),
                                f"{prefix}_crossing", what_child, parent_tree)

    def _report_gaps(self, child, parent, p, mine, pieces, prefix, gaps) -> None:
        if not len(pieces):
            return
        parent_label = f"{layer_zh(parent)} {self.label(parent, p)}"
        child_tree = shapely.STRtree(self.geoms[child][mine]) if len(mine) else None
        floor = self.tol("sliver")
        if gaps == "all":
            floor = min(floor, self.tol(f"{prefix}_gap"))
        for piece, area, narrow in self._measure(pieces, floor):
            near = []
            if child_tree is not None:
                near = [self.codes(child)[mine[k]] for k in sorted(
                    child_tree.query(piece, predicate="intersects"))][:MAX_CODES]
            codes = [self.codes(parent)[p], *near]
            if narrow:
                between = "、".join(near) if near else ""
                where = (f"{parent_label}内{('（' + between + ' 之间）') if between else ''}"
                         if child != "townships" else f"{parent_label}与其乡镇/街道之间")
                self._sliver(child, codes, piece, area, where)
            elif gaps == "all" and area > self.tol(f"{prefix}_gap"):
                rule = self.rules.rules.get(f"{prefix}_gap")
                what = {"townships": "乡镇/街道", "grids": "综合网格"}.get(child, layer_zh(child))
                whole = not len(mine)
                text = (f"{parent_label}内没有任何{what}（约 {_area_text(area)}）" if whole else
                        f"{parent_label}内约 {_area_text(area)} 没有{what}覆盖"
                        + (f"（相邻：{'、'.join(near)}）" if near else ""))
                if rule is not None:
                    self.add(rule.check, child, codes, text, area_m2=area, geometry=piece,
                             piece=True)

    def _report_beyond(self, child, parent, p, mine, pieces, check, what_child,
                       parent_tree) -> None:
        """Parts of a parent's children beyond it: outside the city, or into another parent."""
        if not len(pieces):
            return
        floor = min(self.tol(check, 0.0), self.tol("outside", 0.0))
        measured = self._measure(pieces, floor)
        if not measured:
            return
        child_geoms = self.geoms[child]
        parent_codes = self.codes(parent)
        for piece, _area, _narrow in measured:
            near = mine[shapely.intersects(child_geoms[mine], piece)] if len(mine) else mine
            owners = [int(m) for m in near
                      if shapely.area(shapely.intersection(child_geoms[m], piece)) > 0]
            for m in owners or [None]:
                part = piece if m is None else _polygonal(
                    shapely.intersection(child_geoms[m], piece))
                code = [] if m is None else [self.codes(child)[m]]
                inside, outside = self._split_city(part)
                label = self.label(child, m) if m is not None else ""
                if outside is not None:
                    area = float(_area_m2([outside])[0])
                    if area > self.tol("outside"):
                        self.add("outside", child, code,
                                 f"{what_child} {label} 有约 {_area_text(area)} 超出全市"
                                 "（各县（市）、区合并）范围", area_m2=area, geometry=outside,
                                 piece=True)
                if inside is None:
                    continue
                area = float(_area_m2([inside])[0])
                if area <= self.tol(check):
                    continue
                into = [parent_codes[k] for k in sorted(parent_tree.query(
                    inside, predicate="intersects")) if k != p and shapely.area(
                        shapely.intersection(self.geoms[parent][k], inside)) > 0]
                into_text = "、".join(self.label(parent, int(np.flatnonzero(
                    parent_codes == c)[0])) for c in into[:3])
                self.add(check, child, [*code, parent_codes[p], *into[:MAX_CODES]],
                         f"{what_child} {label} 超出所属{layer_zh(parent)} "
                         f"{self.label(parent, p)} 约 {_area_text(area)}"
                         + (f"，伸入 {into_text}" if into_text else ""),
                         area_m2=area, geometry=inside, piece=True)

    def _split_city(self, geom):
        """(part inside the city, part outside) of an area; None for nothing."""
        city = self.city
        if city is None:
            return geom, None
        if shapely.covers(city, geom):
            return geom, None
        inside = _polygonal(shapely.intersection(geom, city))
        outside = _polygonal(shapely.difference(geom, city))
        return (None if inside is None or shapely.is_empty(inside) else inside,
                None if outside is None or shapely.is_empty(outside) else outside)

    def _outside_each(self, layer: str, idx: Iterable[int], what: str | None = None) -> None:
        """Each feature against the city (for features no tiling check covers)."""
        city = self.city
        if city is None:
            return
        geoms = self.geoms[layer]
        idx = np.asarray(list(idx), dtype=int)
        if not len(idx):
            return
        covered = shapely.covers(city, geoms[idx])
        for i in idx[~covered]:
            outside = _polygonal(shapely.difference(geoms[i], city))
            if outside is None or shapely.is_empty(outside):
                continue
            area = float(_area_m2([outside])[0])
            if area > self.tol("outside"):
                self.add("outside", layer, [self.codes(layer)[i]],
                         f"{what or layer_zh(layer)} {self.label(layer, i)} 有约 "
                         f"{_area_text(area)} 超出全市（各县（市）、区合并）范围",
                         area_m2=area, geometry=outside, piece=True)

    def _beyond_each(self, layer: str, idx: np.ndarray, containers: np.ndarray, check: str,
                     what: str, container_text: list[str]) -> None:
        """Each feature (`idx`) against its own container (same order; None: unknown)."""
        for i, box, text in zip(idx, containers, container_text, strict=True):
            if box is None or shapely.is_empty(box) or shapely.covers(box, self.geoms[layer][i]):
                continue
            part = _polygonal(shapely.difference(self.geoms[layer][i], box))
            inside, _ = self._split_city(part)  # outside the city: reported by _outside_each
            if inside is None:
                continue
            area = float(_area_m2([inside])[0])
            if area > self.tol(check):
                self.add(check, layer, [self.codes(layer)[i]],
                         f"{what} {self.label(layer, i)} 超出{text}约 {_area_text(area)}",
                         area_m2=area, geometry=inside, piece=True)

    # -- grids --
    def _grids(self) -> None:
        grids = self.frames["grids"]
        kinds = grids["kind"].astype(str).to_numpy()
        comp = np.flatnonzero(kinds == "comprehensive")
        others = np.flatnonzero(kinds != "comprehensive")
        if "townships" in self.geoms:
            self._tiling("grids", "townships", "township_code", comp, prefix="grid")
        else:
            self._outside_each("grids", comp, "综合网格")
        self._outside_each("grids", others, "网格")
        if "townships" in self.geoms:
            dedicated = np.flatnonzero(kinds == "dedicated")
            where = dict(zip(self.codes("townships"), self.geoms["townships"], strict=True))
            tcode = grids["township_code"].astype(str).to_numpy()
            self._beyond_each("grids", dedicated, np.array(
                [where.get(tcode[i]) for i in dedicated], dtype=object), "dedicated_crossing",
                "专属网格", [f"所属乡镇/街道 {tcode[i]} " for i in dedicated])
        if "parks" in self.geoms:
            park = np.flatnonzero(kinds == "park")
            if len(park):
                parks = _polygonal(shapely.union_all(self.geoms["parks"]))
                self._beyond_each("grids", park, np.array([parks] * len(park), dtype=object),
                                  "park_grid_crossing", "园区网格", ["所有园区的范围"] * len(park))

    # -- parks --
    def _parks(self) -> None:
        polys = self.geoms["parks"]
        codes = self.codes("parks")
        self._outside_each("parks", np.arange(len(polys)), "园区")
        for i, j, inter, area in self._overlap_pairs(polys):
            if area <= self.tol("park_overlap"):
                continue
            # Nested parks (a chemical park inside its development zone) are not overlaps.
            rest_i = float(_area_m2([_polygonal(shapely.difference(polys[i], polys[j]))])[0])
            rest_j = float(_area_m2([_polygonal(shapely.difference(polys[j], polys[i]))])[0])
            if min(rest_i, rest_j) <= self.tol("park_overlap"):
                continue
            self.add("park_overlap", "parks", [codes[i], codes[j]],
                     f"园区 {self.label('parks', i)} 与园区 {self.label('parks', j)} 部分重叠约 "
                     f"{_area_text(area)}（一个园区完整位于另一个园区内不算重叠）",
                     area_m2=area, geometry=inter)
        if "counties" in self.geoms:
            where = dict(zip(self.codes("counties"), self.geoms["counties"], strict=True))
            ccode = self.frames["parks"]["county_code"].astype(str).to_numpy()
            idx = np.arange(len(polys))
            self._beyond_each("parks", idx, np.array([where.get(c) for c in ccode],
                                                     dtype=object),
                              "park_crossing", "园区", [f"所属县（市）、区 {c} " for c in ccode])

    # -- numbered bureaus' areas --
    def _jurisdictions(self) -> None:
        j = self.frames["jurisdictions"]
        n = len(j)
        if not n:
            return
        self._overlaps("jurisdictions", np.arange(n), "jurisdiction_overlap", "执法辖区")
        if not self.has("bureaus", "counties"):
            self._outside_each("jurisdictions", np.arange(n), "执法辖区")
            return
        b = self.frames["bureaus"]
        county_of = dict(zip(b["code"].astype(str), b["county_code"].fillna("").astype(str),
                             strict=True))
        frame = self.frames["jurisdictions"]
        frame["_county"] = [county_of.get(c, "") for c in frame["bureau_code"].astype(str)]
        # Overlaps were checked over the whole layer; per county only gaps and crossings.
        self._tiling("jurisdictions", "counties", "_county", np.arange(n),
                     prefix="jurisdiction", gaps="narrow", overlaps=False)

    # -- sea areas --
    def _seas(self) -> None:
        polys = self.geoms["sea_areas"]
        codes = self.codes("sea_areas")
        for i, j, inter, area in self._overlap_pairs(polys):
            if area > self.tol("sea_overlap"):
                self.add("sea_overlap", "sea_areas", [codes[i], codes[j]],
                         f"海域 {self.label('sea_areas', i)} 与海域 "
                         f"{self.label('sea_areas', j)} 重叠约 {_area_text(area)}",
                         area_m2=area, geometry=inter)
        city = self.city
        if city is None:
            return
        over = np.flatnonzero(shapely.intersects(city, polys))
        for i in over:
            land = _polygonal(shapely.intersection(polys[i], city))
            if land is None or shapely.is_empty(land):
                continue
            area = float(_area_m2([land])[0])
            if area > self.tol("sea_overlap"):
                self.add("sea_overlap", "sea_areas", [codes[i]],
                         f"海域 {self.label('sea_areas', i)} 有约 {_area_text(area)} 与陆域"
                         "（县（市）、区）重叠", area_m2=area, geometry=land, piece=True)

    # -- entities --
    def _entities(self) -> None:
        e = self.frames["entities"]
        city = self.city
        pts = _geometries(e)
        if city is None or pts is None or not len(e):
            return
        x, y = shapely.get_x(pts), shapely.get_y(pts)
        inside = shapely.intersects_xy(city, x, y)
        if "sea_areas" in self.geoms and len(self.geoms["sea_areas"]):
            sea = _polygonal(shapely.union_all(self.geoms["sea_areas"]))
            shapely.prepare(sea)
            inside |= shapely.intersects_xy(sea, x, y)
        ids = e["id"].astype(str).to_numpy()
        for i in np.flatnonzero(~inside & np.isfinite(x) & np.isfinite(y)):
            self.add("entity_outside", "entities", [ids[i]],
                     f"监管对象 {e['name'].iat[i]}（{ids[i]}）位于 ({x[i]:.6f}, {y[i]:.6f})，"
                     "不在任何县（市）、区或海域内", location=(float(x[i]), float(y[i])),
                     geometry=pts[i])


def _isin(values: np.ndarray, allowed) -> np.ndarray:
    """Membership of text values by hashing (numpy's isin sorts object arrays: slow)."""
    return pd.Series(values, dtype=object).isin(set(allowed)).to_numpy()


def _attr(row, key: str) -> str:
    attrs = row.get("attrs") if hasattr(row, "get") else None
    if isinstance(attrs, dict):
        value = attrs.get(key)
        return "" if value is None else str(value)
    return ""


def _geometries(frame: pd.DataFrame) -> np.ndarray | None:
    """The geometries of a frame (a GeoDataFrame's active column, else a `geometry` column),
    or None for a plain table."""
    try:
        values = frame.geometry.values  # a GeoDataFrame, whatever its column is called
    except AttributeError:
        if "geometry" not in frame:
            return None
        values = frame["geometry"].values
    return np.asarray(values, dtype=object)


def _in_store_crs(frame: pd.DataFrame) -> pd.DataFrame:
    try:
        crs = frame.geometry.crs
    except AttributeError:
        crs = None
    if crs is None:
        return frame
    try:
        epsg = crs.to_epsg()
    except Exception:  # a CRS pyproj cannot name: convert anyway
        epsg = None
    if epsg in (STORE_EPSG, 4326):
        return frame
    return frame.to_crs(STORE_EPSG)

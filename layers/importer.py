"""`gridmap import`: read a directory or zip of layer files, check everything, then write it all
in one transaction as a new generation. Any problem and nothing is written; the report names
the file, the feature or row and the field of every problem found.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from geo.crs import CrsError, parse_crs, to_store
from geo.sanity import CHINA_REGION, check_points
from layers.problems import ImportFailed, Problem
from layers.readers import (
    TABLE_SUFFIXES,
    VECTOR_SUFFIXES,
    RawLayer,
    ReadError,
    lonlat_columns,
    points_from_columns,
    read_table,
    read_vector,
)
from layers.schema import LAYER_ORDER, LAYERS, STORE_EPSG, LayerSpec
from layers.store import Generation, Store, StoreError

GEOMETRY_TYPE_IDS = {"polygon": {3, 6}, "point": {0}}
TYPE_ZH = {"polygon": "面（Polygon/MultiPolygon）", "point": "点（Point）"}
MAX_PER_CHECK = 20  # problems listed per kind of check and file, the rest counted
CRS_COLUMNS = ("crs", "坐标系")


@dataclass
class ImportReport:
    generation: Generation
    counts: dict[str, int]
    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Source:
    layer: str
    path: Path
    display: str
    gpkg_layer: str | None = None


def import_path(
    store: Store,
    path: Path,
    *,
    crs: str | None = None,
    encoding: str | None = None,
    note: str = "",
) -> ImportReport:
    """Import every layer file found under `path` (a directory or a .zip)."""
    path = Path(path)
    if not path.exists():
        raise ImportFailed([Problem(str(path), "文件或目录不存在")])
    with _staged(path) as root:
        sources, problems, warnings = find_sources(root)
        try:
            current = store.snapshot() if store.generations() else None
        except StoreError:
            current = None
        if current is None:
            missing = [n for n, s in LAYERS.items() if not s.optional and n not in sources]
            if missing:
                problems.append(
                    Problem(
                        path.name,
                        "数据库为空，首次导入必须包含这些图层："
                        + "、".join(f"{m}.*" for m in missing),
                    )
                )
        frames: dict[str, pd.DataFrame] = {}
        files: dict[str, str] = {}
        for name in LAYER_ORDER:
            if name not in sources:
                continue
            src = sources[name]
            try:
                raw = _read(src, encoding)
            except ReadError as exc:
                problems.append(exc.problem)
                continue
            frame, layer_problems, described = check_layer(LAYERS[name], raw, crs)
            problems += layer_problems
            if frame is not None:
                frames[name] = frame
                files[name] = f"{src.display}（{described}）"
        if not problems:
            problems += check_references(frames, current)
        if current is None and "precedence" not in frames:
            # The rules live in the store, versioned with the layers they were applied to.
            from grids.precedence import default_frame

            frames["precedence"] = default_frame().assign(attrs=[{}] * len(default_frame()))
            files["precedence"] = "默认优先规则（grids/precedence.csv）"
        if problems:
            raise ImportFailed(problems)
        generation = store.commit_layers(frames, note=note or "导入", source=str(path))
    return ImportReport(generation, {n: len(f) for n, f in frames.items()}, files, warnings)


# -- finding the files ---------------------------------------------------------------------------
@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield path
        return
    if path.suffix.lower() != ".zip":
        raise ImportFailed([Problem(path.name, "请提供一个目录或 .zip 压缩包")])
    with tempfile.TemporaryDirectory(prefix="gridmap-import-") as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = _zip_member_name(info)
                    target = Path(tmp, name)
                    if not target.resolve().is_relative_to(Path(tmp).resolve()):
                        raise ImportFailed([Problem(path.name, f"压缩包中有非法路径：{name}")])
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(info))
        except zipfile.BadZipFile as exc:
            raise ImportFailed([Problem(path.name, f"压缩包已损坏：{exc}")]) from exc
        yield Path(tmp)


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """Zips made on Chinese Windows store GBK names without the UTF-8 flag."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def find_sources(root: Path) -> tuple[dict[str, Source], list[Problem], list[str]]:
    found: dict[str, list[Source]] = {}
    warnings: list[str] = []
    problems: list[Problem] = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.name.startswith(".") or "__MACOSX" in file.parts:
            continue
        suffix = file.suffix.lower()
        if suffix not in VECTOR_SUFFIXES + TABLE_SUFFIXES:
            continue
        display = str(file.relative_to(root))
        stem = file.stem.lower()
        if suffix == ".gpkg":
            try:
                inner = [str(n) for n, _ in pyogrio.list_layers(file)]
            except Exception as exc:
                problems.append(Problem(display, f"无法读取 GeoPackage：{exc}"))
                continue
            if stem in LAYERS:
                pick = stem if stem in inner else (inner[0] if len(inner) == 1 else None)
                if pick is None:
                    problems.append(Problem(display, f"含多个图层，但没有名为 {stem} 的图层"))
                    continue
                found.setdefault(stem, []).append(Source(stem, file, f"{display}:{pick}", pick))
            else:
                for name in inner:
                    if name.lower() in LAYERS:
                        found.setdefault(name.lower(), []).append(
                            Source(name.lower(), file, f"{display}:{name}", name)
                        )
                    else:
                        warnings.append(f"未识别的图层，已忽略：{display}:{name}")
        elif stem in LAYERS:
            found.setdefault(stem, []).append(Source(stem, file, display))
        elif stem == "incidents":
            warnings.append(f"{display} 是事件文件，不是图层，未导入（可用 gridmap assign 分派）")
        else:
            warnings.append(
                f"未识别的文件，已忽略：{display}（图层文件名应为 {'、'.join(LAYERS)}）"
            )
    sources = {}
    for name, items in found.items():
        if len(items) > 1:
            problems.append(
                Problem(name, "同一图层有多个来源文件：" + "、".join(s.display for s in items))
            )
        else:
            sources[name] = items[0]
    return sources, problems, warnings


def _read(src: Source, encoding: str | None) -> RawLayer:
    if src.path.suffix.lower() in TABLE_SUFFIXES:
        return read_table(src.path, src.display, encoding)
    return read_vector(src.path, src.display, src.gpkg_layer, encoding)


# -- checking one layer ----------------------------------------------------------------------------
def check_layer(
    spec: LayerSpec, raw: RawLayer, crs_override: str | None
) -> tuple[pd.DataFrame | None, list[Problem], str]:
    """Validate one layer; returns (frame in store form, problems, description of the source)."""
    columns, problems = _map_columns(spec, raw)
    if problems:
        return None, problems, ""
    frame = pd.DataFrame({col: [_text(v) for v in raw.frame[src]] for col, src in columns.items()})
    used = set(columns.values())
    described = [raw.encoding] if raw.encoding and raw.encoding != "xlsx" else []
    geoms = None
    if spec.geometry:
        geoms, geo_problems, crs_text, used_cols = _geometry(spec, raw, crs_override)
        problems += geo_problems
        used |= used_cols
        if crs_text:
            described.append(crs_text)
    problems += _check_values(spec, raw, frame)
    extras = [c for c in raw.frame.columns if c not in used and c != "geometry"]
    frame["attrs"] = (
        [
            {c: _jsonable(v) for c, v in zip(extras, row, strict=True) if _jsonable(v) is not None}
            for row in raw.frame[extras].itertuples(index=False)
        ]
        if extras
        else [{}] * len(frame)
    )
    if problems:
        return None, problems, ""
    if spec.geometry:
        frame = gpd.GeoDataFrame(frame, geometry=geoms, crs=STORE_EPSG)
    return frame, problems, "，".join(described)


def _map_columns(spec: LayerSpec, raw: RawLayer) -> tuple[dict[str, str], list[Problem]]:
    """Required column -> file column: exact, case-insensitive, or cut to 10 by a Shapefile."""
    have = list(raw.frame.columns)
    lower = {str(c).lower(): c for c in have}
    mapping, problems = {}, []
    for col in spec.required:
        match = lower.get(col) or lower.get(col[:10])
        if match is None:
            problems.append(
                Problem(
                    raw.file,
                    f"缺少必需字段 {col}（文件中的字段：{'、'.join(map(str, have)) or '无'}）",
                    field=col,
                )
            )
        else:
            mapping[col] = match
    return mapping, problems


def _geometry(spec: LayerSpec, raw: RawLayer, crs_override: str | None):
    """Geometries in EPSG:4490, with problems; from the file's geometry or lon/lat columns."""
    used: set[str] = set()
    if raw.geometry is None:
        if not spec.lonlat:
            return (
                None,
                [
                    Problem(
                        raw.file,
                        f"{spec.name} 必须是带几何的图层文件（Shapefile/GeoPackage/GeoJSON）",
                    )
                ],
                "",
                used,
            )
        cols = lonlat_columns(raw.frame)
        if cols is None:
            return (
                None,
                [Problem(raw.file, "缺少经纬度字段（lon/lat 或 经度/纬度）", field="lon/lat")],
                "",
                used,
            )
        used |= set(cols)
        x, y, problems = points_from_columns(raw, *cols)
        crs_col = next((c for c in raw.frame.columns if str(c).lower() in CRS_COLUMNS), None)
        if crs_col:
            used.add(crs_col)
            row_crs = raw.frame[crs_col].to_numpy(dtype=object)
            row_crs = np.where(row_crs == "", crs_override or "", row_crs)
        elif crs_override:
            row_crs = np.full(len(x), crs_override, dtype=object)
        else:
            problems.append(
                Problem(
                    raw.file,
                    "表格没有声明坐标系：请增加 crs 列（如 wgs84、gcj02、bd09、cgcs2000），"
                    "或用 --crs 指定",
                )
            )
            return None, problems, "", used
        lon, lat = np.full(len(x), np.nan), np.full(len(x), np.nan)
        for value in pd.unique(row_crs):
            rows = np.flatnonzero((row_crs == value) & np.isfinite(x) & np.isfinite(y))
            if not value:
                problems += [
                    Problem(raw.file, "坐标系为空", raw.where(i), crs_col or "crs")
                    for i in rows[:MAX_PER_CHECK]
                ]
                continue
            try:
                lo, la, status = check_points(x[rows], y[rows], value)
            except CrsError as exc:
                problems.append(
                    Problem(raw.file, str(exc), raw.where(int(rows[0])), crs_col or "crs")
                )
                continue
            lon[rows], lat[rows] = lo, la
            problems += _point_status(raw, rows, status, x, y)
        return (
            shapely.points(lon, lat),
            problems,
            "坐标系见 crs 列" if crs_col else crs_override,
            used,
        )
    declared = raw.crs or crs_override
    if not declared:
        return (
            None,
            [
                Problem(
                    raw.file,
                    "没有坐标系信息（缺少 .prj 等），请用 --crs 指定，例如 --crs EPSG:4549",
                )
            ],
            "",
            used,
        )
    try:
        convert, label = _converter(declared)
    except CrsError as exc:
        return None, [Problem(raw.file, str(exc))], "", used
    geoms = raw.geometry
    problems = _check_shapes(spec, raw, geoms)
    if problems:
        return None, problems, label, used
    if convert is not None:
        geoms = shapely.transform(geoms, convert)
    problems += _check_validity_and_region(raw, geoms)
    return geoms, problems, label, used


def _converter(declared: str):
    """A coordinate function to EPSG:4490 for the declared CRS (None when already there)."""
    try:
        system = parse_crs(declared)
    except CrsError:
        try:
            crs = pyproj.CRS.from_user_input(declared)
        except pyproj.exceptions.CRSError as exc:
            raise CrsError(f"无法识别的坐标系定义：{str(declared)[:80]}…") from exc
        epsg = crs.to_epsg(min_confidence=70)
        if epsg is None:
            raise CrsError(f"无法识别的坐标系（没有对应的 EPSG 代码）：{crs.name}") from None
        system = parse_crs(f"EPSG:{epsg}")
    label = system.label_zh
    if system.key in ("wgs84", "cgcs2000", "EPSG:4326", "EPSG:4490"):
        return None, label

    def convert(coords: np.ndarray) -> np.ndarray:
        lon, lat = to_store(coords[:, 0], coords[:, 1], system)
        return np.column_stack([lon, lat])

    return convert, label


def _check_shapes(spec: LayerSpec, raw: RawLayer, geoms: np.ndarray) -> list[Problem]:
    problems = []
    missing = np.flatnonzero(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    problems += [Problem(raw.file, "几何为空", raw.where(i)) for i in missing[:MAX_PER_CHECK]]
    types = shapely.get_type_id(geoms)
    allowed = list(GEOMETRY_TYPE_IDS[spec.geometry])
    wrong = np.flatnonzero(~np.isin(types, allowed) & ~np.isin(np.arange(len(geoms)), missing))
    problems += [
        Problem(
            raw.file,
            f"几何类型是 {geoms[i].geom_type}，应为{TYPE_ZH[spec.geometry]}",
            raw.where(int(i)),
        )
        for i in wrong[:MAX_PER_CHECK]
    ]
    return problems + _more(raw, len(missing) + len(wrong))


def _check_validity_and_region(raw: RawLayer, geoms: np.ndarray) -> list[Problem]:
    problems = []
    invalid = np.flatnonzero(~shapely.is_valid(geoms))
    for i in invalid[:MAX_PER_CHECK]:
        problems.append(
            Problem(
                raw.file,
                f"几何无效：{shapely.is_valid_reason(geoms[i])}"
                "（可在 QGIS 中用“修复几何”处理后重新导入）",
                raw.where(int(i)),
            )
        )
    bounds = shapely.bounds(geoms)
    r = CHINA_REGION
    lon0, lat0, lon1, lat1 = r.lon_min, r.lat_min, r.lon_max, r.lat_max
    outside = np.flatnonzero(
        (bounds[:, 0] < lon0)
        | (bounds[:, 2] > lon1)
        | (bounds[:, 1] < lat0)
        | (bounds[:, 3] > lat1)
    )
    for i in outside[:MAX_PER_CHECK]:
        x, y = bounds[i, 0], bounds[i, 1]
        hint = (
            "经纬度顺序可能颠倒"
            if lon0 <= y <= lon1 and lat0 <= x <= lat1
            else "坐标系可能指定错误"
        )
        problems.append(
            Problem(raw.file, f"坐标 ({x:.6f}, {y:.6f}) 不在中国范围内：{hint}", raw.where(int(i)))
        )
    return problems + _more(raw, len(invalid) + len(outside) - 2 * MAX_PER_CHECK)


def _point_status(raw: RawLayer, rows: np.ndarray, status: np.ndarray, x, y) -> list[Problem]:
    messages = {
        "swapped": "经纬度疑似颠倒（交换后才落在南通范围内），请核对后修正",
        "out_of_range": "坐标超出有效范围",
    }
    problems = []
    for kind, text in messages.items():
        bad = rows[status == kind]
        problems += [
            Problem(raw.file, f"{text}：({x[i]}, {y[i]})", raw.where(int(i)), "lon/lat")
            for i in bad[:MAX_PER_CHECK]
        ]
    return problems


def _more(raw: RawLayer, count: int) -> list[Problem]:
    extra = count - MAX_PER_CHECK
    return [Problem(raw.file, f"……同类问题另有 {extra} 处")] if extra > 0 else []


def _check_values(spec: LayerSpec, raw: RawLayer, frame: pd.DataFrame) -> list[Problem]:
    problems = []
    for col in spec.required:
        if col in spec.nullable:
            continue
        empty = np.flatnonzero(frame[col].to_numpy() == "")
        problems += [
            Problem(raw.file, "必填字段为空", raw.where(int(i)), col) for i in empty[:MAX_PER_CHECK]
        ]
    for col, allowed in spec.choices.items():
        bad = np.flatnonzero(~frame[col].isin(allowed))
        shown = "、".join(a or "（空）" for a in allowed)
        problems += [
            Problem(
                raw.file, f"取值 {frame[col].iat[i]!r} 无效，应为：{shown}", raw.where(int(i)), col
            )
            for i in bad[:MAX_PER_CHECK]
        ]
    if spec.key:
        dup = frame[spec.key].duplicated(keep=False) & (frame[spec.key] != "")
        for code, rows in frame[dup].groupby(spec.key).groups.items():
            where = "、".join(raw.where(int(i)) for i in list(rows)[:5])
            problems.append(Problem(raw.file, f"编码 {code} 重复（{where}）", field=spec.key))
    if spec.name == "entities":
        from layers.credit_code import validate

        for i, code in enumerate(frame["id"]):
            reason = validate(code) if code else None
            if reason:
                problems.append(
                    Problem(raw.file, f"统一社会信用代码 {code} 无效：{reason}", raw.where(i), "id")
                )
    if spec.name == "bureaus":
        problems += _check_bureaus(raw, frame)
    if spec.name == "precedence":
        from grids.precedence import Precedence, PrecedenceError

        bad_rank = [i for i, r in enumerate(frame["rank"]) if not r.lstrip("-").isdigit()]
        problems += [Problem(raw.file, "rank 必须是整数", raw.where(i), "rank") for i in bad_rank]
        if not bad_rank:
            try:
                Precedence.from_frame(frame.assign(rank=frame["rank"].astype(int)))
            except PrecedenceError as exc:
                problems.append(Problem(raw.file, str(exc)))
    return problems


def _check_bureaus(raw: RawLayer, frame: pd.DataFrame) -> list[Problem]:
    problems = []
    needs = {"county": "county_code", "numbered": "parent_code", "park": "park_code"}
    for i, row in enumerate(frame.itertuples(index=False)):
        col = needs.get(row.level)
        if col and not getattr(row, col):
            problems.append(
                Problem(raw.file, f"{row.level} 级执法机构必须填写 {col}", raw.where(i), col)
            )
    municipal = int((frame["level"] == "municipal").sum())
    if municipal != 1:
        problems.append(
            Problem(
                raw.file,
                f"应有且只有一个市级（municipal）执法机构，现有 {municipal} 个",
                field="level",
            )
        )
    return problems


def check_references(frames: dict[str, pd.DataFrame], current) -> list[Problem]:
    """Every code referenced exists, in this import or (for layers not imported) in the store."""

    def codes(layer: str) -> set[str]:
        key = LAYERS[layer].key
        if layer in frames:
            return set(frames[layer][key])
        if current is not None and layer in current.layers:
            return set(current[layer][key])
        return set()

    problems = []
    names = set(frames) | (set(current.layers) if current is not None else set())
    for name in LAYER_ORDER:
        spec = LAYERS[name]
        if name not in names:
            continue
        frame = frames.get(name)
        stored = frame is None
        if stored:
            if not any(target in frames for target in spec.refs.values()):
                continue
            frame = current[name]
        for col, target in spec.refs.items():
            valid = codes(target)
            bad = [(i, v) for i, v in enumerate(frame[col]) if v and v not in valid]
            where_file = f"数据库中现有的 {name}" if stored else name
            for i, v in bad[:MAX_PER_CHECK]:
                problems.append(
                    Problem(where_file, f"引用的 {target} 编码 {v} 不存在", f"第 {i + 1} 条", col)
                )
            if len(bad) > MAX_PER_CHECK:
                problems.append(
                    Problem(where_file, f"……同类问题另有 {len(bad) - MAX_PER_CHECK} 处", field=col)
                )
    return problems


def _text(value) -> str:
    """Attribute values as text: codes that a spreadsheet or dbf turned into numbers come back."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    return str(value).strip()


def _jsonable(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)):
        return value if value != "" else None
    return str(value)

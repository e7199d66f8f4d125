"""`gridmap import`: read a directory or zip of layer files, check everything, then write it all
in one transaction as a new generation. Any problem and nothing is written; the report names
the file, the feature or row and the field of every problem found.

Input is treated as hostile: a zip is checked from its central directory before anything is
extracted (no paths outside the staging directory, no links, no bombs) and extracted in bounded
chunks; text with control characters or of absurd length, phone numbers that are not phone
numbers, bureau hierarchies that loop and overlapping comprehensive grids are refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import shutil
import stat
import tempfile
import time
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
from geo.validity import invalid_zh
from layers.problems import UNSAFE_CHARS, ImportFailed, Problem, escaped, shown
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
from layers.schema import (
    LAYER_ORDER,
    LAYERS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    STORE_EPSG,
    LayerSpec,
)
from layers.store import Generation, Store, StoreError

GEOMETRY_TYPE_IDS = {"polygon": {3, 6}, "point": {0}}
TYPE_ZH = {"polygon": "面（Polygon/MultiPolygon）", "point": "点（Point）"}
MAX_PER_CHECK = 20  # problems listed per kind of check and file, the rest counted
CRS_COLUMNS = ("crs", "坐标系")
MAX_CRS_VALUES = 20  # distinct coordinate systems one table may mix

# Zip archives: checked from the central directory before extracting, then extracted in chunks.
MiB = 1 << 20
ZIP_MEMBER_LIMIT = 512 * MiB  # uncompressed size of one member (and of any layer file)
ZIP_TOTAL_LIMIT = 2048 * MiB  # uncompressed size of all members together
ZIP_RATIO_LIMIT = 200  # uncompressed : compressed, for members over ZIP_RATIO_MIN_SIZE
ZIP_RATIO_MIN_SIZE = 1 * MiB
ZIP_MAX_MEMBERS = 10_000
CHUNK = 1 * MiB
# Staging directories: removed when the import ends; ones a killed import left behind are
# removed by the next import once they are an hour old and their process is gone.
TEMP_PREFIX = "gridmap-import-"
STALE_AFTER_S = 3600

# Comprehensive grids partition the land: two may share a border but not an area. Slivers
# from digitising are tolerated up to this many square metres or this share of the smaller grid.
OVERLAP_TOLERANCE_M2 = 10.0
OVERLAP_TOLERANCE_SHARE = 1e-5
M_PER_DEGREE = 111_320.0
CHAR_NAMES = {
    "\x00": "NUL",
    "\t": "制表符",
    "\n": "换行",
    "\r": "回车",
    "\x1b": "ESC 转义符",
    "\x7f": "DEL",
    "\u202e": "从右到左强制符",
    "\u202d": "从左到右强制符",
}


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
    base_generation: int | None = None,
    audit=None,
) -> ImportReport:
    """Import every layer file found under `path` (a directory or a .zip). The layers are
    checked against the current generation and committed only if it is still current
    (`base_generation`, default: the one checked against), with `audit` (an AuditRecord) in
    the same transaction."""
    path = Path(path)
    remove_stale_tempdirs()
    if not path.exists():
        raise ImportFailed([Problem(str(path), "文件或目录不存在")])
    with _staged(path) as root:
        sources, problems, warnings = find_sources(root)
        if not sources and not problems:
            raise ImportFailed([Problem(path.name, _nothing_found(path, warnings))])
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
        places: dict[str, tuple[str, object]] = {}  # layer -> (file shown, row -> place)
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
                places[name] = (raw.file, raw.where)
        # References are checked in the same run (every problem reported at once), except
        # those to a layer of this import that failed its own checks: its codes are unknown.
        failed = {n for n in sources if n not in frames}
        problems += check_references(frames, current, skip=failed, places=places)
        if current is None and "precedence" not in frames:
            # The rules live in the store, versioned with the layers they were applied to.
            from grids.precedence import default_frame

            frames["precedence"] = default_frame().assign(attrs=[{}] * len(default_frame()))
            files["precedence"] = "默认优先规则（grids/precedence.csv）"
        if problems:
            raise ImportFailed(problems)
        checked = current.generation.id if current is not None else 0
        if audit is not None:
            from dataclasses import replace

            audit = replace(audit, detail={**audit.detail,
                                           "counts": {n: len(f) for n, f in frames.items()},
                                           "base_generation": checked})
        try:
            generation = store.commit_layers(
                frames, note=note or "导入", source=str(path),
                base_generation=checked if base_generation is None else base_generation,
                audit=[audit] if audit is not None else None,
                actor=audit.actor if audit is not None else "")
        except StoreError as exc:  # the store rolled its transaction back
            raise ImportFailed([Problem(path.name, f"写入数据库失败，已全部回滚：{exc}")]) from exc
    return ImportReport(generation, {n: len(f) for n, f in frames.items()}, files, warnings)


def _nothing_found(path: Path, warnings: list[str]) -> str:
    what = "目录" if path.is_dir() else "压缩包"
    text = (
        f"{what}中没有找到任何图层文件：文件名应为图层名加扩展名（如 grids.geojson、"
        f"workers.csv、counties.shp），图层名为 {'、'.join(LAYERS)}"
    )
    ignored = [w for w in warnings if w.startswith("未识别的文件")]
    if ignored:
        text += f"；有 {len(ignored)} 个文件未被识别"
    return text


# -- finding the files ---------------------------------------------------------------------------
@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield path
        return
    if path.suffix.lower() != ".zip":
        raise ImportFailed([Problem(path.name, "请提供一个目录或 .zip 压缩包")])
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    try:
        _extract(path, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_tempdirs(now: float | None = None) -> list[Path]:
    """Remove staging directories that killed imports left behind (an hour old, process gone)."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        try:
            info = entry.lstat()
            if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
                continue
            if now - info.st_mtime < STALE_AFTER_S or _process_alive(entry.name):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        except OSError:
            continue
    return removed


def _process_alive(name: str) -> bool:
    """Whether the process whose pid is in a staging directory's name still runs."""
    match = re.match(re.escape(TEMP_PREFIX) + r"(\d{1,10})-", name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True  # another import in this process (a web server thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True  # exists but not ours, or cannot tell: leave it
    return True


def _extract(path: Path, tmp: Path) -> None:
    """Check the archive's central directory, then extract it in chunks into `tmp`."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, truncated or not a zip at all
        broken = "压缩包已损坏，或不是 zip 文件（可能只是改了扩展名）"
        raise ImportFailed([Problem(path.name, broken)]) from exc
    with archive:
        plan = _check_archive(archive, path.name)
        total = 0
        for info, parts, name in plan:
            where = f"压缩包内的文件 {shown(name, 120)}"
            target = tmp.joinpath(*parts)
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as dst:
                    total += copy_member(src, dst, info.file_size, ZIP_TOTAL_LIMIT - total)
            except _Oversize as exc:
                raise ImportFailed([Problem(path.name, str(exc), where)]) from None
            except ImportFailed:
                raise
            except Exception as exc:  # bad CRC, truncated data, unsupported method, disk full…
                why = ("文件校验失败，压缩包已损坏" if "CRC" in str(exc)
                       else f"无法解压（{str(exc)[:200]}）")
                raise ImportFailed([Problem(path.name, f"解压失败：{why}", where)]) from exc


def _check_archive(
    archive: zipfile.ZipFile, display: str
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...], str]]:
    """Every member's target path, or ImportFailed naming each unsafe member."""
    infos = archive.infolist()
    if len(infos) > ZIP_MAX_MEMBERS:
        raise ImportFailed(
            [Problem(display, f"压缩包内文件过多：{len(infos)} 个，上限 {ZIP_MAX_MEMBERS} 个")]
        )
    problems: list[Problem] = []
    plan = []
    seen: set[str] = set()
    declared = 0
    for info in infos:
        name = _zip_member_name(info)
        where = f"压缩包内的文件 {shown(name, 120)}"
        parts = re.split(r"[\\/]", name)
        kept = tuple(p for p in parts if p not in ("", "."))
        if not info.is_dir():
            declared += info.file_size  # of every member: a refused one still counts
        refuse = None
        if UNSAFE_CHARS.search(name):
            refuse = "文件名含有控制字符"
        elif name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            refuse = "路径指向解压目录之外（绝对路径或含 ..），已拒绝"
        elif stat.S_ISLNK(info.external_attr >> 16):
            refuse = "是符号链接，已拒绝（压缩包内只能有普通文件和目录）"
        elif info.flag_bits & 0x1:
            refuse = "已加密，不支持加密的压缩包"
        elif not info.is_dir() and info.file_size > ZIP_MEMBER_LIMIT:
            refuse = (
                f"解压后大小 {info.file_size / MiB:,.0f} MiB，"
                f"超过单个文件上限 {ZIP_MEMBER_LIMIT // MiB} MiB"
            )
        elif (
            not info.is_dir()
            and info.file_size > ZIP_RATIO_MIN_SIZE
            and info.file_size > ZIP_RATIO_LIMIT * max(info.compress_size, 1)
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            refuse = f"压缩比 {ratio:,.0f}:1 异常（上限 {ZIP_RATIO_LIMIT}:1），疑似压缩炸弹"
        elif kept and "/".join(kept) in seen and not info.is_dir():
            refuse = "与压缩包内另一个文件同名"
        if refuse:
            problems.append(Problem(display, refuse, where))
            continue
        if not kept:
            continue
        if not info.is_dir():
            seen.add("/".join(kept))
        plan.append((info, kept, name))
    if declared > ZIP_TOTAL_LIMIT:
        problems.append(
            Problem(
                display,
                f"解压后总大小 {declared / MiB:,.0f} MiB，超过上限 {ZIP_TOTAL_LIMIT // MiB} MiB",
            )
        )
    if problems:
        raise ImportFailed(problems)
    return plan


class _Oversize(Exception):
    pass


def copy_member(src, dst, declared: int, budget: int) -> int:
    """Copy a zip member in chunks; stop as soon as it grows past its declared size (the
    central directory lied) or past what the archive may still unpack. Returns bytes written."""
    written = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return written
        written += len(chunk)
        if written > declared:
            raise _Oversize(f"实际解压大小超过压缩包声明的 {declared:,} 字节，已停止解压")
        if written > min(budget, ZIP_MEMBER_LIMIT):
            raise _Oversize(
                f"解压后大小超过上限（单个文件 {ZIP_MEMBER_LIMIT // MiB} MiB，"
                f"全部 {ZIP_TOTAL_LIMIT // MiB} MiB），已停止解压"
            )
        dst.write(chunk)


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
        display = escaped(str(file.relative_to(root)))
        stem = file.stem.lower()
        try:
            size = file.stat().st_size
        except OSError as exc:
            problems.append(Problem(display, f"无法读取文件：{exc}"))
            continue
        if size > ZIP_MEMBER_LIMIT:
            problems.append(
                Problem(
                    display, f"文件过大：{size / MiB:,.0f} MiB，上限 {ZIP_MEMBER_LIMIT // MiB} MiB"
                )
            )
            continue
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
                        warnings.append(f"未识别的图层，已忽略：{display}:{shown(name, 80)}")
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
    spec: LayerSpec, raw: RawLayer, crs_override: str | None, *, topology: bool = True
) -> tuple[pd.DataFrame | None, list[Problem], str]:
    """Validate one layer; returns (frame in store form, problems, description of the source).
    With `topology=False` invalid polygons, overlapping comprehensive grids and bureau parent
    cycles are let through (`gridmap validate` reports them as findings of grids/checks.py)."""
    columns, problems = _map_columns(spec, raw)
    problems += _check_headers(raw)
    if problems:
        return None, problems, ""
    if len(raw.frame) == 0:  # almost surely the wrong file; the stores write no empty layer
        what = "数据行" if raw.is_table else "要素"
        empty = Problem(raw.file, f"文件中没有任何{what}：导入的 {spec.name} 图层不能为空")
        return None, [empty], ""
    frame = pd.DataFrame(
        {col: [_text(v) for v in raw.frame[src]] for col, src in columns.items()},
        index=pd.RangeIndex(len(raw.frame)),
    )
    used = set(columns.values())
    described = [raw.encoding] if raw.encoding and raw.encoding != "xlsx" else []
    geoms = None
    if spec.geometry:
        geoms, geo_problems, crs_text, used_cols = _geometry(spec, raw, crs_override, topology)
        problems += geo_problems
        used |= used_cols
        if crs_text:
            described.append(crs_text)
    extras = [c for c in raw.frame.columns if c not in used and c != "geometry"]
    frame["attrs"] = _attrs(raw, extras)
    problems += _check_text(raw, frame, spec.required)
    problems += _check_values(spec, raw, frame, topology)
    if spec.name == "grids" and geoms is not None and not problems and topology:
        problems += _check_grid_overlaps(raw, frame, geoms)
    if problems:
        return None, problems, ""
    if spec.geometry:
        frame = gpd.GeoDataFrame(frame, geometry=geoms, crs=STORE_EPSG)
    return frame, problems, "，".join(described)


def _map_columns(spec: LayerSpec, raw: RawLayer) -> tuple[dict[str, str], list[Problem]]:
    """Required column -> file column: exact, else case-insensitive, or cut to 10 by a
    Shapefile. Two candidates for one column (``code`` and ``CODE``) are refused, not guessed."""
    have = list(raw.frame.columns)
    mapping, problems = {}, []
    for col in spec.required:
        match = [c for c in have if c == col]
        for name in (col, col[:10]):
            if not match:
                match = [c for c in have if str(c).lower() == name]
        if len(match) == 1:
            mapping[col] = match[0]
        elif match:
            listed = "、".join(shown(c) for c in match)
            problems.append(Problem(raw.file, f"有多个字段都可作为 {col}：{listed}", field=col))
        else:
            listed = "、".join(shown(c) for c in have[:20]) or "无"
            if len(have) > 20:
                listed += f" 等 {len(have)} 个"
            problems.append(
                Problem(raw.file, f"缺少必需字段 {col}（文件中的字段：{listed}）", field=col)
            )
    return mapping, problems


def _check_headers(raw: RawLayer) -> list[Problem]:
    """Column names become keys of the stored attributes: the same rules as any text."""
    problems = []
    for col in raw.frame.columns:
        name = str(col)
        reason = _bad_text(name, MAX_NAME_CHARS)
        if reason:
            problems.append(Problem(raw.file, f"字段名{reason}", field=shown(name)))
    return problems[:MAX_PER_CHECK] + _more(raw, len(problems))


def _bad_text(text: str, limit: int) -> str | None:
    """Why `text` may not be stored (control characters, too long), or None."""
    if len(text) > limit:
        return f"过长：{len(text):,} 个字符，上限 {limit} 个字符"
    found = UNSAFE_CHARS.search(text)
    if found:
        char = found.group()
        code = f"U+{ord(char):04X}"
        name = f"（{CHAR_NAMES[char]}）" if char in CHAR_NAMES else ""
        return (
            f"含有不允许的控制字符 {code}{name}，位于第 {found.start() + 1} 个字符："
            "控制字符（换行、制表、转义等）和文字方向控制符会篡改显示，请删除后重新导入"
        )
    return None


def _check_text(raw: RawLayer, frame: pd.DataFrame, required: tuple[str, ...]) -> list[Problem]:
    """Every text that would be stored: required columns (names, codes: short) and the extra
    attributes (free text: longer)."""
    found: list[Problem] = []
    for col in required:
        for i, value in enumerate(frame[col]):
            reason = _bad_text(value, MAX_NAME_CHARS)
            if reason:
                found.append(Problem(raw.file, reason, raw.where(i), col))
    for i, attrs in enumerate(frame["attrs"]):
        for key, value in attrs.items():
            if isinstance(value, str):
                reason = _bad_text(value, MAX_TEXT_CHARS)
                if reason:
                    found.append(Problem(raw.file, reason, raw.where(i), key))
    return found[:MAX_PER_CHECK] + _more(raw, len(found))


def _attrs(raw: RawLayer, extras: list) -> list[dict]:
    """The extra columns of each row as a JSON-safe dict: blank, NaN and NaT values are left
    out, so a row whose extra columns are all blank has ``{}`` (never NaN, never a float)."""
    if not extras:
        return [{} for _ in range(len(raw.frame))]
    keys = [str(c) for c in extras]
    columns = [raw.frame[c].tolist() for c in extras]
    out = []
    for values in zip(*columns, strict=True):
        row = {}
        for key, value in zip(keys, values, strict=True):
            value = _jsonable(value)
            if value is not None:
                row[key] = value
        out.append(row)
    return out


def _check_grid_overlaps(raw: RawLayer, frame: pd.DataFrame, geoms: np.ndarray) -> list[Problem]:
    """Comprehensive grids must not overlap each other (park and dedicated grids may overlap
    them: they are layered on top)."""
    comp = np.flatnonzero(frame["kind"].to_numpy() == "comprehensive")
    if len(comp) < 2:
        return []
    polys = np.asarray(geoms, dtype=object)[comp]
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    try:
        inner = shapely.relate_pattern(polys[left], polys[right], "2********")
        left, right = left[inner], right[inner]
        shared = shapely.area(shapely.intersection(polys[left], polys[right]))
    except shapely.errors.GEOSException as exc:
        return [Problem(raw.file, f"无法检查综合网格是否重叠：{exc}", field="geometry")]
    lat = shapely.get_y(shapely.centroid(polys[left])) if len(left) else np.zeros(0)
    to_m2 = M_PER_DEGREE**2 * np.cos(np.radians(lat))
    smaller = np.minimum(shapely.area(polys[left]), shapely.area(polys[right]))
    tolerance = np.maximum(OVERLAP_TOLERANCE_M2, OVERLAP_TOLERANCE_SHARE * smaller * to_m2)
    bad = np.flatnonzero(shared * to_m2 > tolerance)
    problems = []
    codes = frame["code"].to_numpy()
    for k in bad[:MAX_PER_CHECK]:
        i, j = int(comp[left[k]]), int(comp[right[k]])
        problems.append(
            Problem(
                raw.file,
                f"综合网格 {shown(codes[i])} 与综合网格 {shown(codes[j])}（{raw.where(j)}）"
                f"重叠约 {shared[k] * to_m2[k]:,.0f} 平方米：综合网格之间不能重叠"
                "（专属网格、园区网格可以与综合网格重叠）",
                raw.where(i),
                "geometry",
            )
        )
    return problems + _more(raw, len(bad))


def _geometry(spec: LayerSpec, raw: RawLayer, crs_override: str | None,
              topology: bool = True):
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
        systems = pd.unique(row_crs)
        if len(systems) > MAX_CRS_VALUES:
            problems.append(
                Problem(
                    raw.file,
                    f"坐标系列有 {len(systems)} 种不同的取值，一个文件最多 {MAX_CRS_VALUES} 种",
                    field=crs_col or "crs",
                )
            )
            return None, problems, "", used
        for value in systems:
            first = raw.where(int(np.flatnonzero(row_crs == value)[0]))  # even if no row is usable
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
                problems.append(Problem(raw.file, str(exc), first, crs_col or "crs"))
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
                    "没有坐标系信息（缺少 .prj 等）：请指定坐标系，例如 EPSG:4549"
                    "（命令行用 --crs，网页上填写“坐标系”）",
                )
            ],
            "",
            used,
        )
    try:
        convert, label = _converter(declared)
    except CrsError as exc:
        return None, [Problem(raw.file, str(exc))], "", used
    geoms = shapely.force_2d(raw.geometry)  # a Z or M value would not fit the store's columns
    problems = _check_shapes(spec, raw, geoms)
    if problems:
        return None, problems, label, used
    if convert is not None:
        geoms = shapely.transform(geoms, convert)
    problems += _check_validity_and_region(raw, geoms, topology)
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
    problems += _more(raw, len(missing) + len(wrong))
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    infinite = np.unique(index[~np.isfinite(coords).all(axis=1)])
    problems += [
        Problem(raw.file, "坐标含有 NaN 或无穷大，不是有效的坐标", raw.where(int(i)))
        for i in infinite[:MAX_PER_CHECK]
    ]
    return problems + _more(raw, len(infinite))


def _check_validity_and_region(raw: RawLayer, geoms: np.ndarray,
                               validity: bool = True) -> list[Problem]:
    bounds = shapely.bounds(geoms)
    r = CHINA_REGION
    lon0, lat0, lon1, lat1 = r.lon_min, r.lat_min, r.lon_max, r.lat_max
    away = (
        (bounds[:, 0] < lon0)
        | (bounds[:, 2] > lon1)
        | (bounds[:, 1] < lat0)
        | (bounds[:, 3] > lat1)
        | ~np.isfinite(bounds).all(axis=1)  # a projected value the CRS cannot convert
    )
    outside = np.flatnonzero(away)
    # A shape with a vertex far away is said so; whether it crosses itself there is noise
    # (GEOS overflows on 1e300 and names some other point).
    problems = []
    invalid = np.flatnonzero(~shapely.is_valid(geoms) & ~away if validity
                             else np.zeros(len(geoms), bool))
    for i in invalid[:MAX_PER_CHECK]:
        problems.append(
            Problem(
                raw.file,
                f"几何无效：{invalid_zh(geoms[i])}"
                "（可在 QGIS 中用“修复几何”处理后重新导入）",
                raw.where(int(i)),
            )
        )
    for i in outside[:MAX_PER_CHECK]:
        x, y = _first_away(geoms[i], lon0, lat0, lon1, lat1)
        hint = (
            "经纬度顺序可能颠倒"
            if lon0 <= y <= lon1 and lat0 <= x <= lat1
            else "坐标系可能指定错误"
        )
        problems.append(
            Problem(raw.file, f"坐标 ({_coordinate(x)}, {_coordinate(y)}) 不在中国范围内：{hint}",
                    raw.where(int(i)))
        )
    return problems + _more(raw, max(len(invalid), len(outside)))


def _first_away(geom, lon0: float, lat0: float, lon1: float, lat1: float
                ) -> tuple[float, float]:
    """The first vertex of `geom` outside the box (or not a number): the one to name."""
    xy = shapely.get_coordinates(geom)
    if not len(xy):  # an empty shape (said by the shape checks): nothing to name
        return float("nan"), float("nan")
    bad = ~((xy[:, 0] >= lon0) & (xy[:, 0] <= lon1) & (xy[:, 1] >= lat0) & (xy[:, 1] <= lat1))
    x, y = xy[int(np.argmax(bad))] if bad.any() else xy[0]
    return float(x), float(y)


def _coordinate(value: float) -> str:
    """A coordinate as people read it: 6 decimals, or 1e+300 rather than 301 digits."""
    return f"{value:.6f}" if abs(value) < 1e7 else f"{value:.6g}"


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
        problems += _more(raw, len(bad))
    return problems


def _more(raw: RawLayer, count: int) -> list[Problem]:
    extra = count - MAX_PER_CHECK
    return [Problem(raw.file, f"……同类问题另有 {extra} 处")] if extra > 0 else []


def _check_values(spec: LayerSpec, raw: RawLayer, frame: pd.DataFrame,
                  hierarchy: bool = True) -> list[Problem]:
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
        listed = "、".join(a or "（空）" for a in allowed)
        problems += [
            Problem(
                raw.file,
                f"取值 '{shown(frame[col].iat[i])}' 无效，应为：{listed}",
                raw.where(int(i)),
                col,
            )
            for i in bad[:MAX_PER_CHECK]
        ]
        problems += _more(raw, len(bad))
    for col, (pattern, hint) in spec.checked_patterns.items():
        regex = re.compile(pattern)
        bad = [
            i
            for i, v in enumerate(frame[col])
            if v and len(v) <= MAX_NAME_CHARS and not regex.fullmatch(v)
        ]
        problems += [
            Problem(raw.file, f"'{shown(frame[col].iat[i])}' 格式无效：{hint}", raw.where(i), col)
            for i in bad[:MAX_PER_CHECK]
        ]
        problems += _more(raw, len(bad))
    if spec.key:
        dup = frame[spec.key].duplicated(keep=False) & (frame[spec.key] != "")
        groups = list(frame[dup].groupby(spec.key).groups.items())
        for code, rows in groups[:MAX_PER_CHECK]:
            where = "、".join(raw.where(int(i)) for i in list(rows)[:5])
            problems.append(
                Problem(raw.file, f"编码 {shown(code)} 重复（{where}）", field=spec.key)
            )
        problems += _more(raw, len(groups))
    if spec.name == "entities":
        from layers.credit_code import validate

        bad_ids = [(i, code) for i, code in enumerate(frame["id"]) if code and validate(code)]
        problems += [
            Problem(
                raw.file,
                f"统一社会信用代码 {shown(code)} 无效：{shown(validate(code), 80)}",
                raw.where(i),
                "id",
            )
            for i, code in bad_ids[:MAX_PER_CHECK]
        ]
        problems += _more(raw, len(bad_ids))
    if spec.name == "bureaus":
        problems += _check_bureaus(raw, frame, hierarchy)
    if spec.name == "precedence":
        from grids.precedence import Precedence, PrecedenceError

        # ASCII digits only: "²" and "١" are digits to str.isdigit but not to a database.
        bad_rank = [i for i, r in enumerate(frame["rank"]) if not re.fullmatch(r"-?[0-9]{1,9}", r)]
        problems += [
            Problem(raw.file, "rank 必须是整数（最多 9 位）", raw.where(i), "rank")
            for i in bad_rank[:MAX_PER_CHECK]
        ]
        if not bad_rank:
            try:
                Precedence.from_frame(frame.assign(rank=frame["rank"].astype(int)))
            except PrecedenceError as exc:
                problems.append(Problem(raw.file, str(exc)))
    return problems


def _check_bureaus(raw: RawLayer, frame: pd.DataFrame, hierarchy: bool = True) -> list[Problem]:
    problems = _check_hierarchy(raw, frame) if hierarchy else []
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


def _check_hierarchy(raw: RawLayer, frame: pd.DataFrame) -> list[Problem]:
    """parent_code must lead up to a top: no bureau its own parent, no A → B → A loops."""
    codes, parents = frame["code"].tolist(), frame["parent_code"].tolist()
    row_of: dict[str, int] = {}
    for i, code in enumerate(codes):
        row_of.setdefault(code, i)
    parent_of = {c: p for c, p in zip(codes, parents, strict=True) if c and p}
    problems = [
        Problem(raw.file, f"上级机构不能是自身（{shown(c)}）", raw.where(i), "parent_code")
        for i, (c, p) in enumerate(zip(codes, parents, strict=True))
        if c and p == c
    ]
    done: set[str] = set()
    for start in parent_of:
        path: list[str] = []
        position: dict[str, int] = {}
        code = start
        while code in parent_of and code not in done:
            if code in position:
                cycle = path[position[code] :]
                if len(cycle) > 1:
                    first = min(range(len(cycle)), key=lambda k: row_of[cycle[k]])
                    cycle = cycle[first:] + cycle[:first]
                    chain = " → ".join(shown(c) for c in [*cycle, cycle[0]])
                    problems.append(
                        Problem(
                            raw.file,
                            f"上级机构形成循环：{chain}（parent_code 必须逐级通向市级机构）",
                            raw.where(row_of[cycle[0]]),
                            "parent_code",
                        )
                    )
                break
            position[code] = len(path)
            path.append(code)
            code = parent_of[code]
        done.update(path)
    return problems[:MAX_PER_CHECK] + _more(raw, len(problems))


def _stored_row(spec, frame: pd.DataFrame, i: int) -> str:
    """A stored feature as a person finds it: by its code (or a worker by their id)."""
    if spec.key:
        return f"编码 {shown(frame[spec.key].iat[i])}"
    if "id" in frame:
        return f"编号 {shown(frame['id'].iat[i])}"
    return f"第 {i + 1} 条"


def check_references(frames: dict[str, pd.DataFrame], current, skip: set[str] | None = None,
                     places: dict | None = None) -> list[Problem]:
    """Every code referenced exists, in this import or (for layers not imported) in the store.
    References to layers in `skip` are not checked; `places` names the rows of imported files
    as their other problems do (file line for tables, feature number for vector files)."""
    skip = skip or set()
    places = places or {}

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
            if target in skip:
                continue
            valid = codes(target)
            bad = [(i, v) for i, v in enumerate(frame[col]) if v and v not in valid]
            where_file, place = (f"数据库中现有的{spec.title_zh}（{name}）", None) if stored \
                else places.get(name, (name, None))
            for i, v in bad[:MAX_PER_CHECK]:
                # A stored feature by its code (its row number means nothing to anyone).
                at = (place(i) if place else _stored_row(spec, frame, i) if stored
                      else f"第 {i + 1} 条")
                problems.append(
                    Problem(
                        where_file,
                        f"引用的{LAYERS[target].title_zh}（{target}）编码 {shown(v)} 不存在",
                        at, col
                    )
                )
            if len(bad) > MAX_PER_CHECK:
                problems.append(
                    Problem(where_file, f"……同类问题另有 {len(bad) - MAX_PER_CHECK} 处", field=col)
                )
    return problems


def _scalar(value):
    """numpy and pandas scalars as plain Python values; missing (NaN, NaT, NA) as None."""
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(value) -> str:
    """Attribute values as text: codes that a spreadsheet or dbf turned into numbers come back."""
    value = _scalar(value)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int):
        return str(int(value))
    return str(value).strip()


def _jsonable(value):
    """An extra attribute as a JSON value (None to leave it out): no NaN or infinity, which
    JSON cannot hold and PostgreSQL's jsonb refuses."""
    value = _scalar(value)
    if value is None:
        return None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value).strip() or None

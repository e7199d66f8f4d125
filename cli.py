"""The `gridmap` command. Errors go to stderr with exit code 2, never as a traceback
(set GRIDMAP_DEBUG=1 to see one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from geo.crs import CrsError
from grids.batch import BatchInputError, assign, read_rows, write_result
from grids.routing import Router, RoutingInputError
from layers.problems import ImportFailed
from layers.store import DEFAULT_STORE, StoreError, is_postgres_url, open_store, store_url

SAMPLE_DIR = DEFAULT_STORE.parent / "sample"
USER_ERRORS = (StoreError, ImportFailed, RoutingInputError, BatchInputError, CrsError)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("GRIDMAP_DEBUG"):
            raise
        print(
            f"内部错误：{type(exc).__name__}: {exc}（设置 GRIDMAP_DEBUG=1 可查看详细信息）",
            file=sys.stderr,
        )
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridmap", description="南通市生态环境综合执法网格化监管：图层导入、位置分派与查询"
    )
    parser.add_argument(
        "--store",
        help="数据库：GeoPackage 文件路径或 postgresql:// 连接串"
        "（默认取 GRIDMAP_STORE、DATABASE_URL 或 data/gridmap.gpkg）",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="生成南通示例数据并导入数据库")
    p.add_argument("--out", type=Path, default=SAMPLE_DIR, help="示例数据文件目录")
    p.add_argument("--seed", type=int, default=20200901)
    p.add_argument("--force", action="store_true", help="数据库已有数据时也重建")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="导入图层目录或 zip（整体成功或整体失败）")
    p.add_argument("path", type=Path)
    p.add_argument("--crs", help="文件未声明坐标系时使用的坐标系，如 EPSG:4549、wgs84、gcj02")
    p.add_argument("--encoding", help="Shapefile/CSV 的文字编码，如 gbk、utf-8（默认自动识别）")
    p.add_argument("--note", default="", help="本次导入的说明，记入版本记录")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("route", help="查询一个位置的网格、网格员和责任执法机构")
    p.add_argument("lon", type=float, help="经度（或投影坐标 X）")
    p.add_argument("lat", type=float, help="纬度（或投影坐标 Y）")
    p.add_argument(
        "--crs", default="wgs84", help="坐标系：wgs84、cgcs2000、gcj02、bd09 或 EPSG 代码"
    )
    p.add_argument("--accuracy", type=float, default=0.0, help="定位精度半径（米）")
    p.add_argument("--generation", type=int, help="按历史版本查询")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("assign", help="批量分派企业或事件文件中的每一行")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, help="结果文件（.csv 或 .xlsx）")
    p.add_argument("--crs", help="文件没有坐标系列时整个文件的坐标系")
    p.add_argument("--generation", type=int)
    p.set_defaults(func=cmd_assign)

    p = sub.add_parser("db", help="PostGIS 数据库管理")
    p.add_argument("action", choices=["init"], help="init：创建或升级数据库结构（可重复执行）")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("layers", help="列出已加载的图层、数量和版本")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layers)
    return parser


def cmd_demo(args) -> int:
    from layers.demo import build_sample
    from layers.importer import import_path

    url = store_url(args.store)
    if is_postgres_url(url):
        store = open_store(url)
        has_data = bool(store.generations())
        store.close()
        if has_data:
            raise StoreError(f"PostGIS 数据库 {url} 已有数据：示例数据只导入空库，请换一个新库")
    elif Path(url).exists():
        store = open_store(url)
        has_data = bool(store.generations())
        store.close()
        if has_data and not args.force:
            raise StoreError(f"数据库 {url} 已有数据；如确要用示例数据重建，请加 --force")
        Path(url).unlink()
    from grids.cases import load_incident_file

    started = time.perf_counter()
    counts = build_sample(args.out, seed=args.seed)
    store = open_store(url, create=True)
    try:
        report = import_path(store, args.out, note="南通示例数据（合成，仅供演示）")
        loaded, bad = load_incident_file(
            store, Router(store), args.out / "incidents.csv", actor="示例数据"
        )
    finally:
        store.close()
    print(f"已生成示例数据：{args.out}")
    for name, count in counts.items():
        print(f"  {name:14s} {count:>7,d}")
    print(
        f"已导入 {url}，版本 {report.generation.id}；示例事件 {loaded} 件，"
        f"用时 {time.perf_counter() - started:.1f} 秒"
    )
    for row, reason in bad:
        print(f"  示例事件第 {row + 2} 行未能登记：{reason}", file=sys.stderr)
    return 0


def cmd_db(args) -> int:
    from layers.postgis import migrate

    url = store_url(args.store)
    if not is_postgres_url(url):
        raise StoreError("gridmap db init 只用于 PostGIS：请用 --store postgresql://… 指定数据库")
    applied = migrate(url)
    if applied:
        print("已执行数据库迁移：" + "、".join(applied))
    else:
        print("数据库结构已是最新，无需迁移")
    return 0


def cmd_import(args) -> int:
    from layers.importer import import_path

    url = store_url(args.store)
    store = open_store(url, create=True)
    try:
        report = import_path(store, args.path, crs=args.crs, encoding=args.encoding, note=args.note)
    finally:
        store.close()
    print(f"导入成功：{url}，新版本 {report.generation.id}（{report.generation.created_at}）")
    for name, count in report.counts.items():
        print(f"  {name:14s} {count:>7,d}  {report.files[name]}")
    for warning in report.warnings:
        print(f"注意：{warning}", file=sys.stderr)
    return 0


def cmd_route(args) -> int:
    store = open_store(args.store)
    answer = Router(store, args.generation).route(args.lon, args.lat, args.crs, args.accuracy)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        print(format_answer(answer))
    return 0


def cmd_assign(args) -> int:
    store = open_store(args.store)
    router = Router(store, args.generation)
    result = assign(router, read_rows(args.file), crs=args.crs)
    out = args.out or args.file.with_name(args.file.stem + "_分派结果.csv")
    write_result(result, out)
    total = len(result.table)
    counts = "，".join(f"{k} {v}" for k, v in sorted(result.counts.items()))
    print(f"共 {total} 行（{counts}），版本 {router.snapshot.generation.id}，结果已写入 {out}")
    errors = result.errors
    for i, row in errors.head(50).iterrows():
        print(f"  第 {i + 2} 行无法分派：{row['route_error']}", file=sys.stderr)
    if len(errors) > 50:
        print(
            f"  ……另有 {len(errors) - 50} 行无法分派，见结果文件的 route_error 列", file=sys.stderr
        )
    return 0


def cmd_layers(args) -> int:
    store = open_store(args.store)
    gens = store.generations()
    if not gens:
        raise StoreError("数据库中还没有图层，请先运行 `gridmap demo` 或 `gridmap import`")
    snap = store.snapshot()
    from layers.schema import LAYERS

    if args.json:
        print(
            json.dumps(
                {
                    "store": store.url,
                    "generation": snap.generation.as_dict(),
                    "counts": snap.counts(),
                    "generations": [
                        {**g.as_dict(), "layers": list(g.layers), "note": g.note} for g in gens
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print(f"数据库：{store.url}")
    print(f"当前版本：{snap.generation.id}（{snap.generation.created_at}）")
    for name, count in snap.counts().items():
        changed = max((g.id for g in gens if name in g.layers), default=None)
        print(f"  {name:14s} {LAYERS[name].title_zh:8s} {count:>7,d}  版本 {changed or '-'}")
    print("版本记录：")
    for g in gens:
        print(f"  {g.id:>3d}  {g.created_at}  {','.join(g.layers)}  {g.note}")
    return 0


def format_answer(a: dict) -> str:
    """A readable card of a routing answer for the terminal."""

    def ref(d):
        return f"{d['name']}（{d['code']}）" if d else "—"

    lines = [f"状态：{a['status_zh']}（{a['status']}）   图层版本：{a['version']['generation']}"]
    if "point" in a:
        lon, lat = a["point"]["cgcs2000"]
        lines.append(f"位置（CGCS2000/WGS84）：{lon:.6f}, {lat:.6f}")
    if a.get("flags"):
        lines.append("标记：" + "、".join(a["flags"]))
    lines += [
        f"县（市）、区：{ref(a['county'])}",
        f"乡镇/街道：{ref(a['township'])}",
        f"网格：{ref(a['grid'])}",
    ]
    for w in a["workers"]:
        lines.append(
            f"  {'网格长' if w['role'] == 'leader' else '网格员'}：{w['name']}  {w['phone']}"
        )
    lines.append(f"园区：{ref(a['park'])}")
    if a.get("sea_area"):
        lines.append(f"海域：{ref(a['sea_area'])}")
    lines.append(f"责任执法机构：{ref(a['bureau'])}")
    if a["chain"]:
        lines.append("上级链：" + " → ".join(a["chain"]))
    for c in a["candidates"]:
        lines.append(
            "  候选："
            + " / ".join(ref(c[k]) for k in ("county", "township", "grid", "bureau"))
        )
    lines.append("依据：")
    lines += [f"  - {r}" for r in a["reasons"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

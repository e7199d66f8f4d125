"""The `gridmap` command. Errors go to stderr with exit code 2, never as a traceback
(set GRIDMAP_DEBUG=1 to see one)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

# No command does linear algebra: OpenBLAS's worker threads (numpy starts them when it is
# imported) would only spin on the cores a batch's own threads need. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from geo.crs import CrsError
from grids.access import ROLES_ZH, Actor, PermissionDenied
from grids.accounts import AuthError
from grids.flow import CaseError
from grids.routing import Router, RoutingInputError
from layers.audit import beijing
from layers.problems import ImportFailed
from layers.store import (
    DEFAULT_STORE,
    AuditQuery,
    StoreError,
    is_postgres_url,
    open_store,
    redact_url,
    store_url,
)
from ui import terminal

SAMPLE_DIR = DEFAULT_STORE.parent / "sample"
USER_ERRORS = (StoreError, ImportFailed, RoutingInputError, CrsError, PermissionDenied,
               AuthError, CaseError)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix (evaluated only when one is raised: the batch
    module, with Excel and vector readers, is not imported by `gridmap route`)."""
    from grids.batch import BatchInputError

    return (*USER_ERRORS, BatchInputError)


# What a command built and the process would only free on its way out (a ×16 router, its
# decisions and answer columns: a second of freeing object by object). `run` ends the process
# without freeing it when a command left something here.
_LEFT_TO_EXIT: list = []


def run() -> None:
    """The `gridmap` command: main(), then exit — at once (os._exit, output flushed) after a
    command that left its objects to the exit; the operating system drops them in no time."""
    code = main()
    if _LEFT_TO_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    terminal.install()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except _user_errors() as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `gridmap … | head`: the reader has gone; end quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"错误：{terminal.os_error(exc)}", file=sys.stderr)
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
    parser = terminal.ChineseArgumentParser(
        prog="gridmap", description="南通市生态环境综合执法网格化监管：图层导入、位置分派与查询"
    )
    parser.add_argument(
        "--store",
        help="数据库：GeoPackage 文件路径或 postgresql:// 连接串"
        "（默认取 GRIDMAP_STORE、DATABASE_URL 或 data/gridmap.gpkg）",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # --store is accepted after the subcommand as well (`gridmap route … --store x.gpkg`).
    store_opt = terminal.ChineseArgumentParser(add_help=False)
    store_opt.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_parser = sub.add_parser

    def with_store(name: str, **kwargs):
        return add_parser(name, parents=[store_opt], **kwargs)

    sub._parser_class = terminal.ChineseArgumentParser  # type: ignore[attr-defined]

    sub.add_parser = with_store  # type: ignore[method-assign]

    p = sub.add_parser("demo", help="生成南通示例数据并导入数据库")
    p.add_argument("--out", type=Path, default=None,
                   help="示例数据文件目录（默认 data/sample；放大时 data/sample-xN）")
    p.add_argument("--seed", type=int, default=20200901, help="随机种子（相同种子生成相同数据）")
    p.add_argument("--force", action="store_true", help="数据库已有数据时也重建")
    p.add_argument("--as-of", dest="as_of", metavar="时间",
                   help="示例事件以此时间为准向前 30 天生成（北京时间，如 2026-12-02T10:00；"
                        "默认当前整点；相同种子和时间生成相同数据）")
    p.add_argument("--scale", type=_scale, default=1, metavar="N",
                   help="放大倍数：网格、监管对象和事件均为示例的 N 倍（每个综合网格和园区网格"
                        "再细分为 N 个微网格），供性能测试用；默认 1 即标准示例")
    p.add_argument("--entities", type=_entity_count, default=None, metavar="N",
                   help="监管对象数量（默认 10000 × 放大倍数；"
                        "如 1000000 模拟全省规模的监管对象名录）")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="导入图层目录或 zip（整体成功或整体失败）")
    p.add_argument("path", type=Path, help="图层文件所在目录或 zip 压缩包")
    p.add_argument("--crs", help="文件未声明坐标系时使用的坐标系，如 EPSG:4549、wgs84、gcj02")
    p.add_argument("--encoding", help="Shapefile/CSV 的文字编码，如 gbk、utf-8（默认自动识别）")
    p.add_argument("--note", default="", help="本次导入的说明，记入版本记录")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("route", help="查询一个位置（或一条线、一个面）的网格、网格员和责任执法机构")
    p.add_argument("lon", type=float, nargs="?", help="经度（或投影坐标 X）")
    p.add_argument("lat", type=float, nargs="?", help="纬度（或投影坐标 Y）")
    p.add_argument("--wkt", metavar="WKT",
                   help="事件范围（线或面）的 WKT，如 \"LINESTRING (120.8 32.0, 120.9 32.0)\"")
    p.add_argument("--geojson", type=Path, metavar="文件",
                   help="事件范围（线或面）的 GeoJSON 文件（几何、Feature 或 FeatureCollection）")
    p.add_argument(
        "--crs", help="坐标系：wgs84（默认）、cgcs2000、gcj02、bd09 或 EPSG 代码"
    )
    p.add_argument("--accuracy", type=float, default=0.0, help="定位精度半径（米）")
    p.add_argument("--generation", type=int, help="按历史版本查询")
    p.add_argument("--at", metavar="时间",
                   help="按当时有效的图层版本查询（ISO 8601，如 2026-12-02T10:00；"
                        "不写时区即为北京时间）")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("assign", help="批量分派企业或事件文件中的每一行")
    p.add_argument("file", type=Path, help="企业或事件文件（CSV、Excel 或点图层文件）")
    p.add_argument("--out", type=Path, help="结果文件（.csv 或 .xlsx）")
    p.add_argument("--crs", help="文件没有坐标系列时整个文件的坐标系")
    p.add_argument("--generation", type=int, help="按历史图层版本分派")
    p.add_argument("--headers", choices=["zh", "machine"], default="zh",
                   help="zh（默认）：中文列名和中文取值，.xlsx 的第二个工作表为机器字段名"
                        "和原始取值；machine：route_* 列名和原始取值（供其他程序读取）")
    p.set_defaults(func=cmd_assign)

    p = sub.add_parser("db", help="PostGIS 数据库管理")
    p.add_argument("action", choices=["init"], help="init：创建或升级数据库结构（可重复执行）")
    p.add_argument("--app-role", default="gridmap_app",
                   help="应用运行账号（只能追加记录，不能修改、删除或清空；默认 gridmap_app）")
    p.add_argument("--app-password-stdin", action="store_true",
                   help="从标准输入读取运行账号的密码")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("layers", help="列出已加载的图层、数量和版本（谁、为什么、改了什么）")
    p.add_argument("--generation", type=int, metavar="版本",
                   help="列出该版本新增、修改、删除的要素（按编码）")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("validate",
                       help="数据质检：检查图层的缺口、重叠、越界、编码和无人负责的网格等")
    p.add_argument("path", type=Path, nargs="?",
                   help="导入格式的图层目录或 zip：按替换当前同名图层后的结果检查"
                        "（不写入数据库）；省略则检查数据库当前图层")
    p.add_argument("--draft", type=int, metavar="编号", help="检查规划草稿修改后的图层")
    p.add_argument("--crs", help="文件未声明坐标系时使用的坐标系，如 EPSG:4549")
    p.add_argument("--encoding", help="Shapefile/CSV 的文字编码，如 gbk")
    p.add_argument("--rules", type=Path, metavar="文件",
                   help="检查规则表（默认 grids/check_rules.csv）")
    p.add_argument("--json", action="store_true", help="输出 JSON（每项问题的类型、严重程度、"
                   "图层、编码、面积、位置、说明）")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("serve", help="启动网页（登录后使用）")
    p.add_argument("--host", default="127.0.0.1", help="监听地址（默认仅本机 127.0.0.1）")
    p.add_argument("--port", type=int, default=None,
                   help="端口（默认 8501；--production 时为 nginx 的端口，默认 8080）")
    p.add_argument("--production", action="store_true",
                   help="生产模式：nginx（Debian 软件包）在前，压缩并长期缓存静态文件，"
                        "应用在本机另一端口；Ctrl-C 同时停止（见 README“Production serving”）")
    p.add_argument("--app-port", type=int, default=0,
                   help="生产模式下应用自身的端口（仅 127.0.0.1；默认任选空闲端口）")
    p.add_argument("--app-processes", type=int, default=1,
                   help="生产模式下应用进程数（默认 1；多于 1 个时 nginx 按会话 Cookie 固定分配，"
                        "宜配合 PostGIS，见 README“Production: more than one process”）")
    p.add_argument("--run-dir", default=None,
                   help="生产模式的配置、日志、临时文件目录（默认 .run/production）")
    p.add_argument("--tls-cert", default=None, help="生产模式：HTTPS 证书文件（PEM）")
    p.add_argument("--tls-key", default=None, help="生产模式：HTTPS 私钥文件（PEM）")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("user", help="用户管理：新增、改密、停用、列表")
    usub = p.add_subparsers(dest="user_command", required=True)
    q = usub.add_parser("add", help="新增用户（密码从标准输入读取：非终端时第二行为确认）")
    q.add_argument("login", help="登录名")
    q.add_argument("--role", required=True, choices=list(ROLES_ZH),
                   help="；".join(f"{k}：{v}" for k, v in ROLES_ZH.items()))
    q.add_argument("--worker", default="", help="网格员/网格长的花名册编号")
    q.add_argument("--bureau", default="", help="执法局人员所属执法机构编码")
    q.add_argument("--name", default="", help="姓名")
    q.set_defaults(func=cmd_user_add)
    q = usub.add_parser("passwd", help="修改密码（从标准输入读取）")
    q.add_argument("login", help="登录名")
    q.set_defaults(func=cmd_user_passwd)
    q = usub.add_parser("disable", help="停用用户（立即退出其所有会话）")
    q.add_argument("login", help="登录名")
    q.set_defaults(func=cmd_user_disable)
    q = usub.add_parser("enable", help="重新启用用户")
    q.add_argument("login", help="登录名")
    q.set_defaults(func=cmd_user_enable)
    q = usub.add_parser("list", help="列出用户")
    q.add_argument("--json", action="store_true", help="输出 JSON")
    q.set_defaults(func=cmd_user_list)

    p = sub.add_parser("apikey", help="其他系统（12369 平台等）调用接口的密钥")
    ksub = p.add_subparsers(dest="apikey_command", required=True)
    q = ksub.add_parser("add", help="新增密钥（密钥只显示一次，在输出的最后一行；只存其哈希）")
    q.add_argument("name", help="调用方名称，如 12369平台")
    q.add_argument("--role", required=True,
                   choices=[r for r in ROLES_ZH if r not in ("grid_worker", "grid_leader",
                                                              "bureau")],
                   help="密钥的角色（权限同该角色的用户），"
                        "如 dispatcher（受理投诉）、viewer（只查询）")
    q.set_defaults(func=cmd_apikey_add)
    q = ksub.add_parser("list", help="列出密钥（不显示密钥本身）")
    q.add_argument("--json", action="store_true", help="输出 JSON")
    q.set_defaults(func=cmd_apikey_list)
    q = ksub.add_parser("revoke", help="吊销密钥（立即失效）")
    q.add_argument("key_id", help="密钥编号（gridmap apikey list 中的 api-…）")
    q.set_defaults(func=cmd_apikey_revoke)

    p = sub.add_parser("api", help="启动 HTTP 接口（Open311 GeoReport v2 与位置查询）")
    p.add_argument("--host", default="127.0.0.1", help="监听地址（默认仅本机）")
    p.add_argument("--port", type=int, default=8000, help="端口（默认 8000）")
    p.add_argument("--workers", type=int, default=1,
                   help="工作进程数（生产环境可设为 CPU 核数）")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("audit", help="审计记录：校验哈希链、查询、导出")
    asub = p.add_subparsers(dest="audit_command", required=True)
    q = asub.add_parser("verify", help="校验审计哈希链，指出第一条被修改、删除或重排的记录")
    q.add_argument("--json", action="store_true", help="输出 JSON")
    q.set_defaults(func=cmd_audit_verify)
    q = asub.add_parser("list", help="查询审计记录（最新在前）")
    q.add_argument("--actor", help="只看该用户（登录名，命令行为 os:系统用户名）")
    q.add_argument("--action", help="只看该操作，如 login_failed、case.create、import")
    q.add_argument("--target", help="只看该对象，如案件编号、登录名")
    q.add_argument("--limit", type=_at_least(1), default=50, help="最多显示条数（默认 50）")
    q.add_argument("--json", action="store_true", help="输出 JSON")
    q.set_defaults(func=cmd_audit_list)

    p = sub.add_parser("stats", help="绩效考评：按执法机构、乡镇/街道统计案件数量与时效")
    p.add_argument("--since", help="开始日期（北京时间，含当日），如 2026-11-01；默认近 30 天")
    p.add_argument("--until", help="结束日期（含当日），默认今天")
    p.add_argument("--bureau", help="只统计该执法机构及其下属机构（机构编码）")
    p.add_argument("--township", help="只统计该乡镇/街道（编码）")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.set_defaults(func=cmd_stats)
    return parser


def _service(args, create: bool = False):
    from grids.service import Gridmap

    return Gridmap(args.store, create=create)


def _as_admin(args, action, create: bool = False):
    """Run `action(service, actor)` as the local administrator (the command line holds the
    store's credentials; the audit names the operating-system user)."""
    svc = _service(args, create)
    try:
        return action(svc, Actor.local_admin())
    finally:
        svc.close()


def _read_password(confirm: bool = True) -> str:
    """The password from standard input: asked twice on a terminal; from a pipe, the first
    line (and a second line, when given, must match it). Never echoed, logged or stored."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("密码：")
        if confirm and getpass.getpass("再次输入密码：") != first:
            raise AuthError("两次输入的密码不一致")
        return first
    lines = sys.stdin.read().splitlines()
    if not lines:
        raise AuthError("没有从标准输入读到密码")
    if len(lines) > 1 and lines[1] and lines[1] != lines[0]:
        raise AuthError("两次输入的密码不一致")
    return lines[0]


def cmd_user_add(args) -> int:
    password = _read_password()
    user = _as_admin(args, lambda svc, me: svc.add_user(
        me, args.login, args.role, password, name=args.name, worker_id=args.worker,
        bureau_code=args.bureau))
    print(f"已新增用户 {user.login}（{ROLES_ZH[user.role]}）")
    return 0


def cmd_user_passwd(args) -> int:
    password = _read_password()
    _as_admin(args, lambda svc, me: svc.set_password(me, args.login, password))
    print(f"已修改用户 {args.login} 的密码，其所有会话已退出")
    return 0


def cmd_user_disable(args) -> int:
    _as_admin(args, lambda svc, me: svc.set_disabled(me, args.login, True))
    print(f"已停用用户 {args.login}，其所有会话已退出")
    return 0


def cmd_user_enable(args) -> int:
    _as_admin(args, lambda svc, me: svc.set_disabled(me, args.login, False))
    print(f"已启用用户 {args.login}")
    return 0


def cmd_user_list(args) -> int:
    users = _as_admin(args, lambda svc, me: svc.users(me))
    if args.json:
        print(json.dumps([u.__dict__ for u in users], ensure_ascii=False, indent=2))
        return 0
    if not users:
        print("还没有用户。用 `gridmap user add LOGIN --role admin` 新增第一个管理员。")
    for u in users:
        state = "已停用" if u.disabled else ("已锁定" if u.locked_until else "正常")
        link = f" 花名册 {u.worker_id}" if u.worker_id else (
            f" 执法机构 {u.bureau_code}" if u.bureau_code else "")
        print(f"{u.login}\t{ROLES_ZH.get(u.role, u.role)}\t{u.name}\t{state}{link}")
    return 0


def cmd_audit_verify(args) -> int:
    result = _as_admin(args, lambda svc, me: svc.audit_verify(me))
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    elif result.ok:
        print(f"审计链完整：共 {result.entries} 条，末条序号 {result.head_seq}，"
              f"末条哈希 {result.head_hash}（可另行记录以便日后核对）")
    else:
        print(f"审计链被破坏：{result.problem_zh}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_audit_list(args) -> int:
    query = AuditQuery(actor=args.actor, action=args.action, target=args.target,
                       limit=args.limit)
    rows = _as_admin(args, lambda svc, me: svc.audit_entries(me, query))
    if args.json:
        print(rows.to_json(orient="records", force_ascii=False, indent=2))
        return 0
    from layers.audit import ACTIONS_ZH, beijing

    for r in rows.itertuples(index=False):
        print(f"{r.seq:>6}  {beijing(r.at)}  {r.actor}  {ACTIONS_ZH.get(r.action, r.action)}"
              f"  {r.target}  {r.detail}")
    return 0


def cmd_apikey_add(args) -> int:
    key, view = _as_admin(args, lambda svc, me: svc.add_api_key(me, args.name, args.role))
    print(f"已新增接口密钥 {view.login}（{args.name}，角色 {ROLES_ZH[view.role]}）。"
          "密钥只显示这一次，请妥善交给调用方：")
    print(key)
    return 0


def cmd_apikey_list(args) -> int:
    keys = _as_admin(args, lambda svc, me: svc.api_keys(me))
    if args.json:
        print(json.dumps([k.__dict__ for k in keys], ensure_ascii=False, indent=2))
        return 0
    if not keys:
        print("还没有接口密钥。用 `gridmap apikey add 名称 --role dispatcher` 新增。")
    for k in keys:
        state = "已吊销" if k.disabled else "有效"
        print(f"{k.login}\t{k.name}\t{ROLES_ZH.get(k.role, k.role)}\t{state}")
    return 0


def cmd_apikey_revoke(args) -> int:
    _as_admin(args, lambda svc, me: svc.revoke_api_key(me, args.key_id))
    print(f"已吊销接口密钥 {args.key_id}")
    return 0


def cmd_stats(args) -> int:
    from grids.stats import PeriodError

    try:
        result = _as_admin(args, lambda svc, me: svc.stats(
            me, args.since, args.until, bureau_code=args.bureau, township_code=args.township))
    except PeriodError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_stats(result))
    return 0


def format_stats(result) -> str:
    """The figures as aligned tables for the terminal (the definitions: `--json` or the
    Excel export of the 绩效考评 page)."""
    from grids.stats import percent

    def share(value) -> str:
        pct = percent(value)
        return "—" if pct is None else f"{pct:.1f}%"

    def hours(value, unit: str = "") -> str:
        return "—" if value is None or value != value else f"{float(value):.1f}{unit}"

    heads = ("受理", "结案", "按时", "超时", "未结超时", "按时率", "结案中位(时)", "移送",
             "移交", "退回")
    widths = (6, 6, 6, 6, 9, 8, 13, 6, 6, 6)

    def row(label: str, f, first: int) -> str:
        cells = (f["received"], f["closed"], f["on_time"], f["overdue"], f["open_overdue"],
                 share(f["on_time_share"]), hours(f["median_hours_to_close"]), f["referred"],
                 f["partner"], f["returned"])
        return "  " + terminal.pad(label, first) + "".join(
            " " * max(1, w - terminal.width(str(c))) + str(c)
            for c, w in zip(cells, widths, strict=True))

    t = result.totals
    lines = [f"绩效考评 {result.period.label}（北京时间，按受理日期；案件状态截至统计时）"
             f"  范围：{result.scope_zh}",
             f"合计：受理 {t['received']} 件，已结案 {t['closed']}，按时办理 {t['on_time']}，"
             f"超时 {t['overdue']}（其中未结且已超时 {t['open_overdue']}），"
             f"按时率 {share(t['on_time_share'])}，结案用时中位数 "
             f"{hours(t['median_hours_to_close'], ' 小时')}；移送执法局 {t['referred']}，"
             f"移交其他部门 {t['partner']}，退回重派 {t['returned']}"]
    for title, table in (("按执法机构", result.bureaus), ("按乡镇/街道", result.townships)):
        names = [str(n) for n in table["name"]]
        first = max([terminal.width(n) for n in names] + [12]) + 1
        lines.append(f"{title}：")
        lines.append("  " + terminal.pad("", first) + "".join(
            " " * max(1, w - terminal.width(h)) + h for h, w in zip(heads, widths, strict=True)))
        lines += [row(n, f, first) for n, f in zip(names, table.to_dict("records"),
                                                   strict=True)] or ["  （无案件）"]
    return "\n".join(lines)


def cmd_api(args) -> int:
    from ui.api.server import run

    run(store_url(args.store), host=args.host, port=args.port, workers=args.workers)
    return 0


def cmd_serve(args) -> int:
    if args.production:
        from ui import production

        setup = production.Setup(
            port=args.port or production.DEFAULT_PORT, host=args.host, app_port=args.app_port,
            app_processes=args.app_processes,
            run_dir=Path(args.run_dir) if args.run_dir else production.RUN_DIR,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None)
        try:
            return production.serve_production(store_url(args.store), setup)
        except production.ProductionError as exc:
            print(f"错误：{exc}", file=sys.stderr)
            return 2
    if args.app_processes != 1:
        print("错误：--app-processes 仅用于生产模式（--production）：nginx 在多个应用进程之前",
              file=sys.stderr)
        return 2
    from ui.server import serve

    serve(store_url(args.store), host=args.host, port=args.port or 8501)
    return 0


def _as_of(text: str | None):
    """--as-of as an aware time (no zone = Beijing time), or None for now."""
    if not text:
        return None
    from datetime import datetime, timedelta, timezone

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise StoreError(f"--as-of “{text}”不是有效时间，请写成 2026-12-02T10:00 的形式") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone(timedelta(hours=8)))


def _at_least(least: int):
    """An argparse type: an integer of at least `least`, refused in Chinese otherwise."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"“{text}”不是大于等于 {least} 的整数")
        return value

    return whole


_scale = _at_least(1)
_entity_count = _at_least(100)


def cmd_demo(args) -> int:
    from grids.demo_users import add_demo_users
    from layers.demo import build_sample

    url = store_url(args.store)
    shown = redact_url(url)
    if is_postgres_url(url):
        store = open_store(url)
        has_data = bool(store.generations())
        store.close()
        if has_data:
            raise StoreError(f"PostGIS 数据库 {shown} 已有数据：示例数据只导入空库，请换一个新库")
    elif Path(url).exists():
        store = open_store(url)
        has_data = bool(store.generations())
        store.close()
        if has_data and not args.force:
            raise StoreError(f"数据库 {shown} 已有数据；如确要用示例数据重建，请加 --force")
        Path(url).unlink()
    from grids.cases import load_incident_file

    started = time.perf_counter()
    if args.out is None:
        args.out = SAMPLE_DIR if args.scale == 1 else SAMPLE_DIR.with_name(f"sample-x{args.scale}")
    counts = build_sample(args.out, seed=args.seed, as_of=_as_of(args.as_of), scale=args.scale,
                          entity_count=args.entities)
    # Built under a temporary name and renamed when complete: a killed build never leaves a
    # half-built store that the next `make run` would take as done.
    work = url if is_postgres_url(url) else str(Path(url).with_name(Path(url).name + ".building"))
    if not is_postgres_url(url):
        Path(work).unlink(missing_ok=True)
    svc = _service(argparse.Namespace(store=work), create=True)
    try:
        report = svc.import_layers(Actor.local_admin(), args.out,
                                   note="南通示例数据（合成，仅供演示）")
        store = svc.store()
        loaded, bad = load_incident_file(
            store, Router(store), args.out / "incidents.csv", actor="示例数据"
        )
        users = add_demo_users(svc, Actor.local_admin())
    finally:
        svc.close()
    if not is_postgres_url(url):
        os.replace(work, url)
    print(f"已生成示例数据：{args.out}")
    for name, count in counts.items():
        print(f"  {terminal.pad(name, 14)} {count:>7,d}")
    print(
        f"已导入 {shown}，版本 {report.generation.id}；示例事件 {loaded} 件，"
        f"用时 {time.perf_counter() - started:.1f} 秒"
    )
    print("演示账号（仅供演示，正式使用前请用 `gridmap user disable` 停用）：")
    for login, role, password in users:
        print(f"  {login:18s} {ROLES_ZH[role]:10s} 密码 {password}")
    for row, reason in bad:
        print(f"  示例事件第 {row + 2} 行未能登记：{reason}", file=sys.stderr)
    return 0


def cmd_db(args) -> int:
    from layers.postgis import grant_runtime, migrate

    url = store_url(args.store)
    if not is_postgres_url(url):
        raise StoreError("gridmap db init 只用于 PostGIS：请用 --store postgresql://… 指定数据库")
    applied = migrate(url)
    if applied:
        print("已执行数据库迁移：" + "、".join(applied))
    else:
        print("数据库结构已是最新，无需迁移")
    password = _read_password(confirm=False) if args.app_password_stdin else None
    grant_runtime(url, args.app_role, password)
    print(f"运行账号 {args.app_role}：可读全部数据，只能追加案件与审计记录（不能修改、删除、"
          "清空或停用触发器）。网页和命令行请用该账号连接，例如 "
          f"postgresql://{args.app_role}:***@主机/{url.rsplit('/', 1)[-1].split('?')[0]}")
    return 0


def cmd_import(args) -> int:
    svc = _service(args, create=True)
    try:
        report = svc.import_layers(Actor.local_admin(), args.path, crs=args.crs,
                                   encoding=args.encoding, note=args.note)
    finally:
        svc.close()
    print(f"导入成功：{redact_url(svc.url)}，新版本 {report.generation.id}"
          f"（{beijing(report.generation.created_at)}）")
    for name, count in report.counts.items():
        print(f"  {name:14s} {count:>7,d}  {report.files[name]}")
    for warning in report.warnings:
        print(f"注意：{warning}", file=sys.stderr)
    return 0


def cmd_route(args) -> int:
    extent, crs = _route_extent_args(args)
    if extent is not None:
        answer = _as_admin(args, lambda svc, me: svc.route_extent(
            me, extent, crs, generation=args.generation, at=args.at, once=True))
    else:
        answer = _as_admin(args, lambda svc, me: svc.route(
            me, args.lon, args.lat, crs, args.accuracy, generation=args.generation,
            at=args.at, once=True))
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        print(format_answer(answer))
    return 0


def _route_extent_args(args) -> tuple[object, str]:
    """(the extent to route or None for a point, its coordinate system) from `gridmap route`'s
    arguments: a point, --wkt or --geojson, exactly one of them."""
    given = [name for name, value in (("经纬度", args.lon is not None), ("--wkt", args.wkt),
                                       ("--geojson", args.geojson)) if value]
    if len(given) != 1:
        raise RoutingInputError(
            ("只能给出其中一种位置：" + "、".join(given)) if given else
            "请给出位置：经度 纬度，或 --wkt 线/面，或 --geojson 文件")
    if args.lon is not None and args.lat is None:
        raise RoutingInputError("缺少必需的参数：lat（请给出 经度 纬度 两个数）")
    if args.lon is None and args.accuracy:
        raise RoutingInputError("--accuracy 只用于单个位置；线或面按其本身范围查询")
    if args.wkt:
        return args.wkt, args.crs or "wgs84"
    if args.geojson:
        return _read_geojson(args.geojson, args.crs)
    return None, args.crs or "wgs84"


def _read_geojson(path: Path, crs: str | None) -> tuple[dict, str]:
    """A GeoJSON file's content and its coordinate system: --crs, else the file's (old-style)
    "crs" member, else WGS84 as RFC 7946 says."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RoutingInputError(f"{path}：不是有效的 GeoJSON（第 {getattr(exc, 'lineno', '?')} "
                                f"行：{getattr(exc, 'msg', exc)}）") from None
    if not isinstance(data, dict) or "type" not in data:
        raise RoutingInputError(f"{path}：不是 GeoJSON（缺少 type）")
    if crs:
        return data, crs
    named = str(((data.get("crs") or {}).get("properties") or {}).get("name") or "")
    if not named or named.upper().endswith("CRS84"):
        return data, "wgs84"
    # "urn:ogc:def:crs:EPSG::4549" or "EPSG:4549"
    return data, "EPSG:" + named.rsplit(":", 1)[-1] if "EPSG" in named.upper() else named


def cmd_assign(args) -> int:
    from grids.batch import OpenedFile, assign_file

    svc = _service(args)
    actor = Actor.local_admin()
    try:
        opened = OpenedFile(args.file)  # checked through while the layers are read
        router = svc.batch_router(actor, args.generation)
        # The layers and their indexes live until the process ends: out of the collector's
        # full passes, which would walk them again and again with the GIL held.
        gc.freeze()
        out = args.out or args.file.with_name(args.file.stem + "_分派结果.csv")
        # Read, routed and written a chunk at a time: memory does not grow with the file.
        summary = assign_file(router, opened, out, crs=args.crs, headers=args.headers)
        svc.record_batch(actor, args.file.name, {**summary.counts, "total": summary.total})
        _LEFT_TO_EXIT.append((router, summary))  # the file is written and closed, the store too
    finally:
        svc.close()
    counts = "，".join(f"{terminal.STATUS_ZH.get(k, k)} {v}"
                      for k, v in sorted(summary.counts.items()))
    print(f"共 {summary.total} 行（{counts}），版本 {summary.generation}，结果已写入 {out}")
    for bad in summary.bad_rows[:50]:
        print(f"  {bad.where}无法分派：{bad.reason}", file=sys.stderr)
    if summary.errors > 50:
        print(
            f"  ……另有 {summary.errors - 50} 行无法分派，见结果文件的"
            + ("“无法分派原因”列" if args.headers == "zh" else " route_error 列"),
            file=sys.stderr,
        )
    return 0


def cmd_validate(args) -> int:
    """Exit code 1 when the checks find errors (0: none, warnings allowed)."""
    from grids.checks import RulesError

    if args.path is not None and args.draft is not None:
        raise StoreError("只能检查一个对象：图层目录/zip 或 --draft 草稿，不能同时给出")
    settings = args.rules

    def run(svc, me):
        if args.draft is not None:
            if not hasattr(svc.store(), "draft"):
                raise StoreError("草稿功能尚未提供")
            return svc.check_draft_report(me, args.draft, settings=settings)
        if args.path is not None:
            return svc.check_path(me, args.path, crs=args.crs, encoding=args.encoding,
                                  settings=settings)
        return svc.check_layers(me, settings=settings)

    try:
        report = _as_admin(args, run)
    except RulesError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2
    except ImportFailed as exc:  # nothing to check (no such path, not a zip …)
        print("错误：无法检查（数据库未作任何改动）：\n" + "\n".join(
            f"  - {p}" for p in exc.problems[:30]), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_findings(report))
    return 1 if report.has_errors else 0


MAX_FINDINGS_SHOWN = 200  # rows of `gridmap validate`'s table; --json gives every finding


def format_findings(report) -> str:
    """The findings as a table for the terminal: errors first (no timing: the JSON has it)."""
    from grids.checks import KIND_ZH, SEVERITY_ZH, layer_zh

    counts = report.counts()
    lines = [f"检查对象：{report.subject_zh}"]
    for layer, file in report.files.items():
        lines.append(f"  {terminal.pad(layer, 14)} {file}")
    lines += [f"  注意：{note}" for note in report.notes]
    if not report.findings:
        lines.append("未发现问题。")
        return "\n".join(lines)
    heads = (("严重程度", 8), ("类型", 10), ("图层", 14), ("编码", 34), ("面积(平方米)", 14),
             ("位置(经度,纬度)", 22))
    lines.append("  ".join(terminal.pad(h, w) for h, w in heads) + "  说明")
    for f in report.findings[:MAX_FINDINGS_SHOWN]:
        codes = "、".join(f.codes)
        if terminal.width(codes) > 34:
            codes = codes[:30] + "…"
        area = "" if f.area_m2 is None else f"{f.area_m2:,.0f}"
        where = "" if f.location is None else f"{f.location[0]:.5f},{f.location[1]:.5f}"
        cells = (SEVERITY_ZH.get(f.severity, f.severity), KIND_ZH.get(f.kind, f.kind),
                 layer_zh(f.layer), codes, area, where)
        lines.append("  ".join(terminal.pad(c, w) for c, (_, w) in zip(cells, heads,
                                                                      strict=True))
                     + "  " + f.message_zh)
    if len(report.findings) > MAX_FINDINGS_SHOWN:
        lines.append(f"……另有 {len(report.findings) - MAX_FINDINGS_SHOWN} 项未列出"
                     "（--json 输出全部，或在“数据质检”页面查看）")
    groups: dict[tuple[str, str, str], int] = {}
    for f in report.findings:
        key = (f.severity, f.kind, f.layer)
        groups[key] = groups.get(key, 0) + 1
    lines.append("按类型：" + "；".join(
        f"{SEVERITY_ZH.get(s, s)}·{KIND_ZH.get(k, k)}·{layer_zh(la)} {n} 项"
        for (s, k, la), n in groups.items()))
    lines.append(f"共 {len(report.findings)} 项：错误 {counts['error']} 项，警告 "
                 f"{counts['warning']} 项。"
                 + ("有错误，不能发布。" if counts["error"] else "警告须在发布时确认。"))
    return "\n".join(lines)


def cmd_layers(args) -> int:
    if args.generation is not None:
        return cmd_layers_generation(args)
    svc = _service(args)
    try:
        gens, counts = svc.layer_versions(Actor.local_admin())
    finally:
        svc.close()
    current = gens[-1]
    from layers.schema import LAYERS

    if args.json:
        print(
            json.dumps(
                {
                    "store": redact_url(svc.url),
                    "generation": current.as_dict(),
                    "counts": counts,
                    "generations": [
                        {**g.as_dict(), "layers": list(g.layers), "note": g.note,
                         "actor": g.actor, "source": g.source, "changes": g.changes}
                        for g in gens
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print(f"数据库：{redact_url(svc.url)}")
    print(f"当前版本：{current.id}（{beijing(current.created_at)}，北京时间）")
    for name, count in counts.items():
        changed = max((g.id for g in gens if name in g.layers), default=None)
        print(f"  {terminal.pad(name, 14)} {terminal.pad(LAYERS[name].title_zh, 14)} "
              f"{count:>7,d}  版本 {changed or '-'}")
    from layers.versions import describe_changes

    print("版本记录（时间为北京时间；改动按要素计）：")
    for g in gens:
        print(f"  {g.id:>3d}  {beijing(g.created_at)}  {g.actor or '—'}  {g.note or '—'}")
        print(f"       改动：{describe_changes(g.changes) if g.changes else ','.join(g.layers)}")
    return 0


def cmd_layers_generation(args) -> int:
    """What one version changed: per layer, the codes of the features it added, changed and
    removed."""
    from layers.schema import LAYERS
    from layers.versions import keys_of

    svc = _service(args)
    try:
        me = Actor.local_admin()
        gens = {g.id: g for g in svc.versions(me)}
        if args.generation not in gens:
            raise StoreError(f"版本 {args.generation} 不存在（现有版本 1–{max(gens, default=0)}）")
        gen = gens[args.generation]
        out = {}
        for layer in gen.layers:
            diff = svc.version_diff(me, gen.id, layer)
            spec = LAYERS[layer]
            old = set(keys_of(spec, diff.removed))
            new = set(keys_of(spec, diff.added))
            out[layer] = {"added": sorted(new - old), "changed": sorted(new & old),
                          "removed": sorted(old - new)}
    finally:
        svc.close()
    if args.json:
        print(json.dumps({**gen.as_dict(), "actor": gen.actor, "note": gen.note,
                          "source": gen.source, "changes": gen.changes, "features": out},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"版本 {gen.id}（{beijing(gen.created_at)}，北京时间）  发布人：{gen.actor or '—'}  "
          f"说明：{gen.note or '—'}  来源：{gen.source or '—'}")
    if not out:
        print("  没有改动任何要素")
    for layer, found in out.items():
        print(f"  {LAYERS[layer].title_zh}（{layer}）：")
        for kind, zh in (("added", "新增"), ("changed", "修改"), ("removed", "删除")):
            if found[kind]:
                codes = [c.replace("\x1f", "/") for c in found[kind]]
                more = f" 等 {len(codes)} 个" if len(codes) > 20 else ""
                print(f"    {zh} {len(codes)}：{'、'.join(codes[:20])}{more}")
    return 0


def format_answer(a: dict) -> str:
    """A readable card of a routing answer for the terminal."""

    def ref(d):
        return f"{d['name']}（{d['code']}）" if d else "—"

    if "grids" in a:
        return format_extent_answer(a)
    lines = [f"状态：{a['status_zh']}（{a['status']}）   图层版本：{a['version']['generation']}"]
    if "point" in a:
        lon, lat = a["point"]["cgcs2000"]
        lines.append(f"位置（CGCS2000/WGS84）：{lon:.6f}, {lat:.6f}")
    if a.get("flags"):
        lines.append("标记：" + terminal.flags_zh(a["flags"]))
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


def format_extent_answer(a: dict) -> str:
    """The terminal card of a line or area: who leads, who co-handles, every grid it touches
    with its workers."""
    from grids.answer import FLAG_ZH

    def ref(d):
        return f"{d['name']}（{d['code']}）" if d else "—"

    def several(items: list[dict]) -> str:
        return "、".join(ref(d) for d in items) or "—"

    lines = [f"状态：{a['status_zh']}（{a['status']}）   图层版本：{a['version']['generation']}"]
    lon, lat = a["point"]["cgcs2000"]
    lines.append(f"范围中心（CGCS2000/WGS84）：{lon:.6f}, {lat:.6f}")
    if a.get("flags"):
        lines.append("标记：" + "、".join(terminal.FLAGS_ZH.get(f) or FLAG_ZH.get(f, f)
                                          for f in a["flags"]))
    lines.append(f"县（市）、区：{ref(a['county'])}")
    lines.append(f"乡镇/街道：{several(a.get('townships', []))}")
    if a.get("parks"):
        lines.append(f"园区：{several(a['parks'])}")
    if a.get("sea_area"):
        lines.append(f"海域：{ref(a['sea_area'])}")
    lines.append(f"牵头执法机构：{ref(a['bureau'])}")
    if a.get("co_bureaus"):
        lines.append(f"协办执法机构：{several(a['co_bureaus'])}")
    if a["chain"]:
        lines.append("上级链：" + " → ".join(a["chain"]))
    lines.append(f"涉及网格（{len(a['grids'])} 个）：")
    for g in a["grids"]:
        people = "；".join(f"{'网格长' if w['role'] == 'leader' else '网格员'} {w['name']} "
                          f"{w['phone']}" for w in g["workers"]) or "无网格员"
        lines.append(f"  {ref(g)}：{people}")
    lines.append("依据：")
    lines += [f"  - {r}" for r in a["reasons"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

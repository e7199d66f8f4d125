"""The case desk of pages/3_案件.py: the case list with its filters, one case's record, audit
trail and the steps it may take next. Every change is a grids/cases.py call that appends an
event; the workflow table (grids/case_flow.csv) decides which steps exist."""

from __future__ import annotations

import json

import folium
import numpy as np
import pandas as pd
import streamlit as st

from geo.crs import CrsError, parse_crs
from grids.access import Actor, PermissionDenied
from grids.cases import with_deadlines  # noqa: F401  (the page labels one case)
from grids.deadlines import LEVEL_COLOR
from grids.evidence import Upload, thumbnail
from grids.flow import CaseError, load_categories, load_flow
from grids.intake import UNSTATED, route_unstated
from grids.routing import Router, RoutingInputError
from grids.service import Gridmap
from layers.incidents import CATEGORIES_ZH
from layers.schema import WORKER_ROLE_ZH
from layers.store import StoreError
from ui import assets, cards, mapview
from ui.basemap import Basemap

ACTION_ZH = {"create": "受理登记", "transition": "状态变更", "reassign": "人工改派（干预留痕）",
             "link": "重复举报并入", "accept": "接单", "arrive": "到达现场"}
MSG = "_cs_msg"  # (kind, text, where) of the last action, shown once next to where it was done
LIST_COLUMNS = {"id": "案件编号", "reported_local": "上报时间", "category_zh": "类别",
                "status_label": "状态", "deadline_local": "本环节时限", "overdue_zh": "超时",
                "grid_label": "网格", "bureau_label": "责任执法机构", "source": "渠道",
                "description": "描述"}


def category_zh(key: str) -> str:
    cats = load_categories()
    return cats[key].label_zh if key in cats else CATEGORIES_ZH.get(key, key)


def local_time(value: object) -> str:
    """An ISO time as Beijing time, to the minute ("" for none)."""
    return cards.beijing_text(value)


ORDER_ZH = {"deadline": "按时限（超时在前）", "newest": "最新受理在前", "reported": "最早受理在前"}
PAGE_SIZE = 50


def counts_html(counts: dict[str, int]) -> str:
    """The console's headline numbers on one line."""
    items = (("未结案件", counts["open"], "#1f2328"), ("超时未办", counts["overdue"], "#8e0000"),
             ("待我办理", counts["mine"], "#0b5394"), ("全部案件", counts["all"], "#57606a"))
    cells = "".join(f'<span style="margin-right:28px">{k} <b style="font-size:1.35rem;'
                    f'color:{c}">{v}</b></span>' for k, v, c in items)
    return f'<div style="margin:-6px 0 2px 0">{cells}</div>'


def grid_codes_matching(router: Router, text: str) -> tuple[str, ...] | None:
    """The grid codes a typed grid filter means: a code prefix (a township's code finds its
    grids) or words of the name. None when nothing was typed."""
    text = text.strip()
    if not text:
        return None
    grids = router.snapshot["grids"]
    codes = grids["code"].astype(str)
    hit = codes.str.startswith(text) | grids["name"].astype(str).str.contains(text, regex=False)
    return tuple(codes[hit]) or ("",)


def labelled(rows: pd.DataFrame, router: Router) -> pd.DataFrame:
    """The page's rows with what the list shows (labels, names, Beijing times)."""
    if rows.empty:
        return rows.assign(category_zh=[], status_label=[], grid_label=[], bureau_label=[],
                           reported_local=[], deadline_local=[])
    flow = load_flow()
    snap = router.snapshot
    grid_names = dict(zip(snap["grids"]["code"], snap["grids"]["name"], strict=True))
    bureau_names = dict(zip(snap["bureaus"]["code"], snap["bureaus"]["name"], strict=True))
    out = rows.copy()
    out["category_zh"] = out["category"].map(category_zh)
    out["status_label"] = [flow.label(s) if s in flow.states else s for s in out["status"]]
    out["deadline_local"] = out["deadline"].map(local_time)
    out["grid_label"] = [
        f"{grid_names.get(c, '')} {c}".strip() if isinstance(c, str) and c else "—"
        for c in out["assigned_grid_code"]]
    out["bureau_label"] = [bureau_names.get(c, c) if isinstance(c, str) and c else "—"
                           for c in out["assigned_bureau_code"]]
    out["reported_local"] = out["reported_at"].map(local_time)
    return out


LIST_COLUMNS = {"countdown": "剩余时限", "id": "案件编号", "status_label": "状态",
                "category_zh": "类别", "deadline_local": "本环节截止", "reported_local": "上报时间",
                "grid_label": "网格", "bureau_label": "责任执法机构", "description": "描述"}


def list_table(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.reindex(columns=list(LIST_COLUMNS)).rename(columns=LIST_COLUMNS)


def list_styler(rows: pd.DataFrame):
    """The list with its time-left cell coloured by the share of the limit left."""
    table = list_table(rows)
    levels = list(rows["level"]) if "level" in rows else []

    def colour(col: pd.Series) -> list[str]:
        return [f"background-color:{LEVEL_COLOR[lv]};color:"
                f"{'#000' if lv == 'amber' else '#fff'};font-weight:600"
                if lv in LEVEL_COLOR and lv != "none" else "" for lv in levels]

    return table.style.apply(colour, subset=["剩余时限"])


def cases_map(basemap: Basemap, rows: pd.DataFrame, selected: str | None) -> folium.Map:
    """The listed cases as dots coloured like their time left; the selected one ringed and
    in view. Every text is `cards.js_html` (folium's tooltips are JavaScript template
    literals)."""
    pts = rows.dropna(subset=["lon", "lat"]) if len(rows) else rows
    if len(pts):
        minx, miny = float(pts["lon"].min()), float(pts["lat"].min())
        maxx, maxy = float(pts["lon"].max()), float(pts["lat"].max())
    else:
        minx, miny, maxx, maxy = 120.5, 31.6, 121.9, 32.7
    m = mapview._base_map(basemap, (miny + maxy) / 2, (minx + maxx) / 2, 10)
    group = folium.FeatureGroup(name=cards.js_html("案件"), control=False)
    chosen = None
    for row in pts.itertuples(index=False):
        x, y = basemap.to_display([float(row.lon)], [float(row.lat)])
        at = [float(np.ravel(y)[0]), float(np.ravel(x)[0])]
        mine = row.id == selected
        if mine:
            chosen = at
        tip = f"{row.id} {row.category_zh} · {row.countdown}：{str(row.description)[:50]}"
        folium.CircleMarker(
            at, radius=11 if mine else 7, color="#000000" if mine else "#ffffff",
            weight=4 if mine else 2, fill_color=LEVEL_COLOR.get(row.level, "#9e9e9e"),
            fill_opacity=1, tooltip=folium.Tooltip(cards.js_html(tip)),
        ).add_to(group)
    group.add_to(m)
    if chosen is not None:
        folium.CircleMarker(chosen, radius=18, color="#000000", weight=2, fill=False,
                            dash_array="4 4", interactive=False).add_to(m)
    if len(pts) > 1:
        basemap.fit(m, (minx, miny, maxx, maxy), padding=(20, 20))
    assets.localize(m)
    return m


def clicked_case(value, rows: pd.DataFrame, basemap: Basemap) -> str | None:
    """The case whose dot was clicked on the console map (the nearest listed case)."""
    obj = value.get("last_object_clicked") if isinstance(value, dict) else None
    if not obj or rows.empty:
        return None
    x, y = basemap.to_display(rows["lon"].to_numpy(float), rows["lat"].to_numpy(float))
    d = (np.asarray(x) - float(obj["lng"])) ** 2 + (np.asarray(y) - float(obj["lat"])) ** 2
    return str(rows["id"].iloc[int(np.argmin(d))])


def events_table(events: pd.DataFrame, router: Router) -> pd.DataFrame:
    """The audit trail as people read it: when, who, what, the state after, why."""
    flow = load_flow()
    snap = router.snapshot
    grid_names = dict(zip(snap["grids"]["code"], snap["grids"]["name"], strict=True))
    bureau_names = dict(zip(snap["bureaus"]["code"], snap["bureaus"]["name"], strict=True))

    def target(row) -> str:
        parts = []
        if isinstance(row.grid_code, str) and row.grid_code:
            parts.append(f"网格 {grid_names.get(row.grid_code, '')} {row.grid_code}")
        if isinstance(row.bureau_code, str) and row.bureau_code:
            parts.append(f"执法机构 {bureau_names.get(row.bureau_code, row.bureau_code)}")
        if row.action == "reassign" and isinstance(row.data, str) and row.data:
            before = json.loads(row.data)
            old_bureau = before.get("from_bureau")
            parts.append(f"（原：{before.get('from_grid') or '—'} / "
                         f"{bureau_names.get(old_bureau, old_bureau) or '—'}）")
        return " ".join(parts)

    return pd.DataFrame({
        "时间": events["at"].map(local_time),
        "办理人": events["actor"],
        "操作": events["action"].map(lambda a: ACTION_ZH.get(a, a)),
        "操作后状态": [flow.label(s) if s in flow.states else s for s in events["status"]],
        "改派至": [target(r) for r in events.itertuples(index=False)],
        "理由/说明": events["reason"].fillna(""),
    })


def crs_text(key: str) -> str:
    """A stored system key (wgs84, bd09, EPSG:4549, unstated …) as people read it."""
    if key == UNSTATED:
        return "坐标系未说明"
    try:
        return parse_crs(key).label_zh
    except CrsError:
        return key or "坐标系未记录"


def record_html(case: pd.Series, deadline: str, overdue: bool, countdown: str = "",
                level: str = "") -> str:
    """The case's own record: what was reported, where as given and as routed."""
    given = ""
    if pd.notna(case.get("given_x")):
        crs = crs_text(str(case.get("given_crs") or ""))
        given = f"{case['given_x']:.6f}, {case['given_y']:.6f}（{cards.esc(crs)}）"
        acc = case.get("accuracy_m")
        if pd.notna(acc) and float(acc) > 0:
            given += f" ±{float(acc):g} 米"
    lon, lat = case.get("lon"), case.get("lat")
    routed = f"{float(lon):.6f}, {float(lat):.6f}" if pd.notna(lon) and pd.notna(lat) else "—"
    rows = [
        ("类别", cards.esc(category_zh(str(case["category"])))),
        ("描述", cards.esc(case.get("description"))),
        ("渠道", cards.esc(case.get("source"))),
        ("举报人", cards.esc(case.get("reporter")) or "—"),
        ("举报时间", cards.esc(local_time(case.get("reported_at")))),
        ("受理", f"{cards.esc(case.get('created_by'))} · "
                 f"{cards.esc(local_time(case['created_at']))}"),
        ("位置（原始）", given or "—"),
        ("位置（CGCS2000）", routed),
    ]
    if isinstance(case.get("extent_wkt"), str) and case["extent_wkt"]:
        kind = "线" if "LINE" in case["extent_wkt"][:20].upper() else "面"
        rows.append(("事件范围", f"{kind}范围（已存 WKT，CGCS2000）"))
    limit = f"截止 {cards.esc(local_time(deadline))}（北京时间）" if deadline else "无时限"
    if countdown and level in LEVEL_COLOR:
        fg = "#000" if level == "amber" else "#fff"
        limit = (f'<span style="background:{LEVEL_COLOR[level]};color:{fg};padding:1px 6px;'
                 f'border-radius:3px;font-weight:600">{cards.esc(countdown)}</span> {limit}')
    elif overdue:
        limit = f'<span class="gm-chem">⚠️ 已超时</span>（{limit}）'
    rows.append(("本环节时限", limit))
    body = "".join(f"<tr><th>{cards.esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'{cards.CSS}<div class="gm-card"><table>{body}</table></div>'


def assignment_html(case: pd.Series, router: Router) -> str:
    """Who has the case now (after any reassignment), with phone numbers."""
    snap = router.snapshot
    grid = case.get("assigned_grid_code")
    bureau = case.get("assigned_bureau_code")
    rows = []
    if isinstance(grid, str) and grid:
        g = snap["grids"][snap["grids"]["code"] == grid]
        name = g["name"].iloc[0] if len(g) else "（当前图层中已无此网格）"
        workers = router.writer.workers_by_grid.get(grid, [])
        rows.append(("网格", f'{cards.esc(name)} <span class="gm-code">{cards.esc(grid)}</span>'))
        rows.append(("网格员", "<br>".join(
            f'{cards.esc(WORKER_ROLE_ZH.get(w["role"], w["role"]))} {cards.esc(w["name"])} '
            f'<a href="tel:{cards.esc(w["phone"])}">{cards.esc(w["phone"])}</a>'
            for w in workers) or "—"))
    else:
        rows.append(("网格", "—（待人工指定）"))
    if isinstance(bureau, str) and bureau:
        b = snap["bureaus"][snap["bureaus"]["code"] == bureau]
        name = b["name"].iloc[0] if len(b) else bureau
        rows.append(("执法机构",
                     f'{cards.esc(name)} <span class="gm-code">{cards.esc(bureau)}</span>'))
    else:
        rows.append(("执法机构", "—（待人工指定）"))
    changed = (case.get("assigned_grid_code") != case.get("grid_code")
               or case.get("assigned_bureau_code") != case.get("bureau_code"))
    note = ('<div class="gm-meta">已人工改派，原自动分派见下方“登记时的责任归属”。</div>'
            if changed else "")
    body = "".join(f"<tr><th>{cards.esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (f'{cards.CSS}<div class="gm-card"><h4>当前承办</h4><table>{body}</table>{note}'
            "</div>")


def stored_answer(case: pd.Series) -> dict:
    return json.loads(case["answer"]) if isinstance(case["answer"], str) else dict(case["answer"])


def reproduce(svc: Gridmap, actor: Actor, case: pd.Series) -> tuple[bool, list[str]]:
    """Route the case again with the layer generation it was routed with; (same?, differences).
    Shows that a stored answer can be reproduced, whatever was imported since."""
    old = stored_answer(case)
    router = svc.case_router(actor, str(case["id"]))
    try:
        if isinstance(case.get("extent_wkt"), str) and case["extent_wkt"]:
            new = router.route_extent(case["extent_wkt"], "cgcs2000")
        elif case["given_crs"] == UNSTATED:
            new = route_unstated(router, float(case["given_x"]), float(case["given_y"]),
                                 float(case["accuracy_m"] or 0))
        else:
            new = router.route(float(case["given_x"]), float(case["given_y"]),
                               str(case["given_crs"]), float(case["accuracy_m"] or 0))
    except RoutingInputError as exc:
        return False, [str(exc)]

    def code(a: dict, key: str):
        return (a.get(key) or {}).get("code")

    diffs = []
    for key, label in (("county", "县（市）、区"), ("township", "乡镇/街道"), ("grid", "网格"),
                       ("park", "园区"), ("bureau", "执法机构")):
        if code(old, key) != code(new, key):
            diffs.append(f"{label}：登记时 {code(old, key) or '—'}，复核 {code(new, key) or '—'}")
    if old.get("status") != new.get("status"):
        diffs.append(f"状态：登记时 {old.get('status')}，复核 {new.get('status')}")
    return not diffs, diffs


# -- actions (widget callbacks: they run before the page, with the values it showed) -------------
def _say(kind: str, text: str, where: str = "steps") -> None:
    st.session_state[MSG] = (kind, text, where)


def show_message(message, where: str) -> None:
    if message and message[2] == where:
        (st.error if message[0] == "error" else st.success)(cards.md(message[1]))


def files_key() -> str:
    """The uploader's key: a new one after each step, so the next step starts empty."""
    return f"cs_files_{st.session_state.get('_cs_files_n', 0)}"


CONFIRM = "_cs_confirm"  # (case, target) of a closing step waiting for its confirmation
LEFT = "_cs_left"  # a case the person has just reassigned out of their own scope


def do_step(svc: Gridmap, actor: Actor, case_id: str, target: str, shown_status: str,
            confirmed: bool = False) -> None:
    """One step of the workflow, as offered for the state the page showed, with the result
    text and the files chosen. Closing a case asks first. If someone else has moved the case
    meanwhile, the step is refused and the page says why."""
    ss = st.session_state
    flow = load_flow()
    if flow.closes(shown_status, target) and not confirmed:
        ss[CONFIRM] = (case_id, target, shown_status)
        return
    ss.pop(CONFIRM, None)
    reason = str(ss.get("cs_reason") or "")
    files = [Upload(f.name, f.getvalue()) for f in (ss.get(files_key()) or [])]
    try:
        svc.step_case(actor, case_id, target, reason, expected_status=shown_status,
                      files=files)
    except (CaseError, PermissionDenied, StoreError) as exc:
        _say("error", f"未办理：{exc}")
        return
    step = flow.steps.get((shown_status, target), flow.label(target))
    more = f"，附件 {len(files)} 个" if files else ""
    _say("success", f"案件 {case_id}：{step}（{actor.name or actor.login}{more}）")
    ss["cs_reason"] = ""
    ss["_cs_files_n"] = ss.get("_cs_files_n", 0) + 1


def cancel_confirm() -> None:
    st.session_state.pop(CONFIRM, None)


def attachments_view(svc: Gridmap, actor: Actor, case_id: str) -> None:
    """The case's photos as thumbnails (documents as names), each downloadable, with its
    size and the start of its SHA-256 (the hash the audit records)."""
    files = svc.case_files(actor, case_id)
    if not files:
        return
    st.markdown(f"**现场照片与附件**（{len(files)} 个，只追加）")
    cols = st.columns(3)
    for i, info in enumerate(files):
        _, data = svc.case_file(actor, info.id)
        with cols[i % 3]:
            thumb = thumbnail(data) if info.mime.startswith("image/") else None
            if thumb:
                st.image(thumb, width="stretch")
            else:
                st.markdown(f"📄 {cards.md(info.name)}")
            st.caption(f"{cards.md(info.name)} · {info.size / 1024:.0f} KB · "
                       f"{local_time(info.event_at)} · SHA-256 {info.sha256[:12]}…")
            st.download_button("下载", data, file_name=info.name, mime=info.mime,
                               key=f"cs_dl_{info.id}")


def do_reassign(svc: Gridmap, actor: Actor, case_id: str, grid_now: str | None,
                bureau_now: str | None) -> None:
    ss = st.session_state
    grid = ss.get("cs_grid") or None
    bureau = ss.get("cs_bureau") or None
    grid, bureau = (grid if grid != grid_now else None), (bureau if bureau != bureau_now else None)
    if not grid and not bureau:
        _say("error", "未改派：所选网格和执法机构与当前相同，请选择要改派到的网格或执法机构",
             "reassign")
        return
    try:
        svc.reassign_case(actor, case_id, str(ss.get("cs_why") or ""), grid_code=grid,
                          bureau_code=bureau)
    except (CaseError, PermissionDenied, StoreError) as exc:
        _say("error", f"未改派：{exc}", "reassign")
        return
    ss["cs_why"] = ""
    after = {"assigned_grid_code": grid or grid_now, "assigned_bureau_code": bureau or bureau_now}
    if not svc.can_take(actor, after, "case.read"):  # handed over (移送) to someone else
        ss[LEFT] = case_id
        _say("success", f"案件 {case_id} 已改派，理由已记入办理记录；改派后不在您的办理范围内，"
             "已从您的案件列表移出", "top")
        return
    _say("success", f"案件 {case_id} 已改派，理由已记入办理记录", "reassign")

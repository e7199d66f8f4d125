"""The case desk of pages/3_案件.py: the case list with its filters, one case's record, audit
trail and the steps it may take next. Every change is a grids/cases.py call that appends an
event; the workflow table (grids/case_flow.csv) decides which steps exist."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from grids.access import Actor, PermissionDenied
from grids.flow import CaseError, load_categories, load_flow
from grids.routing import Router, RoutingInputError
from grids.service import Gridmap
from layers.incidents import CATEGORIES_ZH
from layers.store import StoreError
from ui import cards
from ui.intake import TZ

ACTION_ZH = {"create": "受理登记", "transition": "状态变更", "reassign": "人工改派（干预留痕）",
             "link": "重复举报并入"}
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
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return ""
    try:
        t = pd.Timestamp(str(value))
    except ValueError:
        return str(value)
    if t.tzinfo is None:
        t = t.tz_localize(UTC)
    return t.tz_convert(TZ).strftime("%Y-%m-%d %H:%M")


def load_cases(svc: Gridmap, actor: Actor, router: Router,
               now: datetime | None = None) -> pd.DataFrame:
    """The cases the actor may read (filtered in the store) with what the list shows
    (labels, names, Beijing times)."""
    cases = svc.cases(actor, now=now)
    if cases.empty:
        return cases
    flow = load_flow()
    snap = router.snapshot
    grid_names = dict(zip(snap["grids"]["code"], snap["grids"]["name"], strict=True))
    bureau_names = dict(zip(snap["bureaus"]["code"], snap["bureaus"]["name"], strict=True))
    cases = cases.copy()
    cases["category_zh"] = cases["category"].map(category_zh)
    cases["status_label"] = [flow.label(s) if s in flow.states else s for s in cases["status"]]
    cases["deadline_local"] = cases["deadline"].map(local_time)
    cases["overdue_zh"] = cases["overdue"].map({True: "⚠️ 已超时", False: ""})
    cases["grid_label"] = [
        f"{grid_names.get(c, '')} {c}".strip() if isinstance(c, str) and c else "—"
        for c in cases["assigned_grid_code"]]
    cases["bureau_label"] = [bureau_names.get(c, c) if isinstance(c, str) and c else "—"
                             for c in cases["assigned_bureau_code"]]
    when = pd.to_datetime(cases["reported_at"], utc=True, format="ISO8601", errors="coerce")
    cases["reported_local"] = cases["reported_at"].map(local_time)
    order = pd.DataFrame({"t": when, "c": cases["created_at"]}).sort_values(
        ["t", "c"], ascending=False, na_position="last").index
    return cases.loc[order].reset_index(drop=True)  # newest first


def filter_cases(cases: pd.DataFrame, statuses: list[str], overdue_only: bool,
                 bureau: str | None, grid: str, text: str) -> pd.DataFrame:
    if cases.empty:
        return cases
    keep = pd.Series(True, index=cases.index)
    if statuses:
        keep &= cases["status"].isin(statuses)
    if overdue_only:
        keep &= cases["overdue"].astype(bool)
    if bureau:
        keep &= cases["assigned_bureau_code"] == bureau
    if grid.strip():
        g = grid.strip()
        keep &= (cases["assigned_grid_code"].fillna("").str.startswith(g)
                 | cases["grid_label"].str.contains(g, regex=False))
    if text.strip():
        t = text.strip()
        keep &= (cases["id"].str.contains(t, regex=False, case=False)
                 | cases["description"].fillna("").str.contains(t, regex=False))
    return cases[keep]


def list_table(cases: pd.DataFrame) -> pd.DataFrame:
    return cases[list(LIST_COLUMNS)].rename(columns=LIST_COLUMNS)


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


def record_html(case: pd.Series, deadline: str, overdue: bool) -> str:
    """The case's own record: what was reported, where as given and as routed."""
    given = ""
    if pd.notna(case.get("given_x")):
        crs = str(case.get("given_crs") or "")
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
    limit = f"截止 {cards.esc(local_time(deadline))}" if deadline else "无时限"
    if overdue:
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
            f'{cards.esc(cards.ROLE_ZH.get(w["role"], w["role"]))} {cards.esc(w["name"])} '
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


def do_step(svc: Gridmap, actor: Actor, case_id: str, target: str, shown_status: str) -> None:
    """One step of the workflow, as offered for the state the page showed. If someone else has
    moved the case meanwhile, the step is refused and the page says why."""
    ss = st.session_state
    flow = load_flow()
    reason = str(ss.get("cs_reason") or "")
    try:
        svc.step_case(actor, case_id, target, reason, expected_status=shown_status)
    except (CaseError, PermissionDenied, StoreError) as exc:
        _say("error", f"未办理：{exc}")
        return
    step = flow.steps.get((shown_status, target), flow.label(target))
    _say("success", f"案件 {case_id}：{step}（{actor.name or actor.login}）")
    ss["cs_reason"] = ""


def do_reassign(svc: Gridmap, actor: Actor, case_id: str, grid_now: str | None,
                bureau_now: str | None) -> None:
    ss = st.session_state
    grid = ss.get("cs_grid") or None
    bureau = ss.get("cs_bureau") or None
    try:
        svc.reassign_case(actor, case_id, str(ss.get("cs_why") or ""),
                          grid_code=grid if grid != grid_now else None,
                          bureau_code=bureau if bureau != bureau_now else None)
    except (CaseError, PermissionDenied, StoreError) as exc:
        _say("error", f"未改派：{exc}", "reassign")
        return
    _say("success", f"案件 {case_id} 已改派，理由已记入办理记录", "reassign")
    ss["cs_why"] = ""

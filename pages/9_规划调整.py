"""规划调整 — planners redraw a park's boundary (or create a park and its bureau) as a draft:
draw, move vertices, cut holes, snap to the neighbours, paint grid units in and out, or upload
a file; every change is saved to the draft (undo, leave and resume, discard) with the impact
preview beside the map; the checks' findings (errors block, warnings acknowledged one by one)
and the publish; the versions of the layers with a diff on the map and roll back.

Only `layers.publish` (planners) opens the page; the service checks it again on every call
(grids/publishing.py) and the page never opens the store. The pieces are in ui/planner.py."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
import streamlit as st
from shapely.errors import GEOSException
from streamlit_folium import st_folium

from grids.publishing import PublishBlocked, RebaseClash, finding_id
from layers import spreadsheet
from layers.problems import ImportFailed
from layers.schema import BUREAU_LEVEL_ZH, BUREAU_LEVELS, LAYERS, PARK_KINDS
from layers.store import StoreError
from layers.versions import LayerConflict, describe_changes
from ui import assets, cards, page, state
from ui import planner as pl

st.set_page_config(page_title="规划调整 · 南通市生态环境执法网格地图", page_icon="🧭",
                   layout="wide")
svc, actor, router = state.load("layers.publish")
page.sidebar(router, actor, accuracy=False)
options = page.options()
ss = st.session_state
snapshot = router.snapshot
DRAW_KEY, PAINT_KEY, VIEW_KEY, NEW_KEY = "pl_map_draw", "pl_map_paint", "pl_map_view", "pl_map_new"
MODES = {"draw": "在地图上绘制/修改边界", "paint": "按网格单元增减（点选网格）",
         "upload": "上传文件（GeoJSON、Shapefile、KML、GeoPackage）"}


def flash(kind: str, text: str) -> None:
    ss.setdefault("_pl_flash", []).append((kind, str(text)))


def say(kind: str, text: str) -> None:
    """A message whose text may hold data: markdown escaped, line breaks kept."""
    getattr(st, kind)(cards.md(text).replace("\n", "  \n"))


def show_flash() -> None:
    for kind, text in ss.pop("_pl_flash", []):
        say(kind, text)


def snap_settings() -> float:
    return float(ss.get("pl_snap_m", pl.DEFAULT_SNAP_M)) if ss.get("pl_snap", True) else 0.0


def layers_with(draft_id: int | None) -> dict:
    """The current layers, with the draft's parks and bureaus as it proposes them."""
    layers = dict(snapshot.layers)
    if draft_id is not None:
        for name in ("parks", "bureaus"):
            layers[name] = svc.draft_features(actor, draft_id, name)
    return layers


# -- callbacks (they run before the page is drawn again) ------------------------------------------
def save(draft_id: int, revision: int, data, what: str, note: str | None = None) -> None:
    try:
        saved = svc.save_draft(actor, draft_id, data, expected_revision=revision, note=note)
    except (StoreError, ValueError) as exc:
        flash("error", f"未保存：{exc}")
        return
    flash("success", f"{what}：已保存到草稿 {saved.id}（第 {saved.revision} 次保存）")


def start_pick() -> None:
    code = ss.get("pl_pick")
    if not code:
        return
    try:
        made = svc.create_draft(actor, ["parks"], ss.get("pl_pick_note", ""))
    except StoreError as exc:
        flash("error", str(exc))
        return
    ss["pl_draft"], ss["pl_park"] = made.id, code
    flash("info", f"已新建草稿 {made.id}，正在调整园区 {code}。")


def resume(draft_id: int) -> None:
    ss["pl_draft"] = int(draft_id)
    ss.pop("pl_park", None)


def leave() -> None:
    ss.pop("pl_draft", None)
    flash("info", "已离开草稿：草稿已保存，可在“继续已有草稿”中继续。")


def undo(draft_id: int) -> None:
    try:
        done = svc.undo_draft(actor, draft_id)
    except StoreError as exc:
        flash("error", str(exc))
        return
    flash("info", f"已撤销上一步（草稿 {done.id}，还可撤销 {done.undo_depth} 步）")


def discard(draft_id: int) -> None:
    try:
        svc.discard_draft(actor, draft_id)
    except StoreError as exc:
        flash("error", str(exc))
        return
    ss.pop("pl_draft", None)
    flash("info", f"草稿 {draft_id} 已放弃（记入审计记录）。")


def rebase(draft_id: int, overwrite: bool = False) -> None:
    try:
        done = svc.rebase_draft(actor, draft_id, overwrite=overwrite)
    except RebaseClash as exc:  # the draft would undo someone's change: asked, not done
        ss["pl_clash"] = draft_id
        flash("error", str(exc))
        return
    except StoreError as exc:
        flash("error", str(exc))
        return
    ss.pop("pl_clash", None)
    flash("info", f"草稿 {done.id} 已改为基于当前版本"
          + ("（草稿中的要素覆盖了他人的修改）" if overwrite else "")
          + "：请查看影响、重新检查后再发布。")


def set_note(draft_id: int, revision: int) -> None:
    from grids.publishing import FeatureEdits

    save(draft_id, revision, FeatureEdits("parks"), "修改原因",
         note=ss.get(f"pl_note_{draft_id}", ""))


def run_checks(draft_id: int, revision: int) -> None:
    try:
        found = svc.check_draft(actor, draft_id)
    except StoreError as exc:
        flash("error", str(exc))
        return
    ss["_pl_checks"] = (draft_id, revision, found)


def publish(draft_id: int, acknowledged: list[str]) -> None:
    try:
        gen = svc.publish_draft(actor, draft_id, acknowledged)
    except LayerConflict as exc:
        flash("error", f"{exc}\n草稿已保留：可单击“在最新版本上继续”，查看影响、重新检查后再发布。")
        return
    except PublishBlocked as exc:
        flash("error", str(exc))
        return
    except StoreError as exc:
        flash("error", str(exc))
        return
    ss.pop("pl_draft", None)
    ss["_pl_published"] = gen.id
    flash("success", f"已发布为版本 {gen.id}（{cards.beijing_text(gen.created_at)}，北京时间）："
                     f"{describe_changes(gen.changes)}。可在“版本历史与回退”中查看。")


def upload_put(draft_id: int, revision: int) -> None:
    found = ss.get("_pl_upload")
    if not found:
        return
    frame = found[1]
    parks = svc.draft_features(actor, draft_id, "parks")
    codes = set(frame["code"].astype(str))
    kept = parks[~parks["code"].astype(str).isin(codes)]
    merged = gpd.GeoDataFrame(pd.concat([kept, frame[list(kept.columns)]], ignore_index=True),
                              geometry="geometry", crs=parks.crs)
    save(draft_id, revision, {"parks": merged}, f"上传文件中的 {len(frame)} 个园区")


def upload_shape(draft_id: int, revision: int, code: str) -> None:
    found = ss.get("_pl_upload")
    if not found:
        return
    geom = pl.polygonal(shapely.union_all(list(found[1].geometry.values)))
    if geom is None:
        flash("error", "文件中没有有效的面")
        return
    parks = svc.draft_features(actor, draft_id, "parks")
    save(draft_id, revision, {"parks": pl.with_geometry(parks, code, geom)},
         f"园区 {code} 的边界（取自上传文件）")


# -- taking what the map sent -------------------------------------------------------------------
def seen(key: str, token: str) -> bool:
    marks = ss.setdefault("_pl_seen", {})
    if marks.get(key) == token:
        return True
    marks[key] = token
    return False


def take_drawing(draft, code: str, boundary, layers: dict) -> bool:
    """A finished drawing or edit on the draw map, applied to the boundary and saved."""
    value = ss.get(DRAW_KEY)
    drawing = value.get("last_active_drawing") if isinstance(value, dict) else None
    kind = pl.drawing_kind(drawing)
    if not kind or seen(DRAW_KEY, json.dumps(drawing, sort_keys=True)):
        return False
    display = pl.Display(options.basemap, ss.get("_pl_sent"))
    tolerance = snap_settings()
    try:
        geom = display.back(pl.geojson_geometry(drawing))
        if kind == "created":
            new = pl.combine(boundary, geom, ss.get("pl_op", "replace"))
            what = pl.OPERATIONS[ss.get("pl_op", "replace")]
        else:
            if geom is None:
                raise ValueError("园区边界不能全部删除（要恢复请单击“撤销”）")
            new, what = geom, ("修改边界节点" if kind == "edited" else "删除园区的一部分")
        if tolerance:
            new = pl.snap(new, pl.neighbours(layers, new, tolerance, {"parks": [code]}),
                          tolerance)
    except (ValueError, TypeError, KeyError, AttributeError, GEOSException) as exc:
        flash("error", f"未保存：{exc}")
        return False
    parks = pl.with_geometry(layers["parks"], code, new)
    save(draft.id, draft.revision, {"parks": parks},
         f"{what}" + (f"（已吸附到 {tolerance:g} 米内的相邻边界）" if tolerance else ""))
    return True


def take_paint(draft, code: str, boundary, layers: dict) -> bool:
    """A click on a grid unit in paint mode: the unit joins or leaves the park."""
    value = ss.get(PAINT_KEY)
    if not isinstance(value, dict):
        return False
    # A click on a unit is reported as an object clicked; a click elsewhere on the map (a unit
    # beyond those drawn) as a map click: whichever is new.
    click = None
    for field, token in (
            ("last_object_clicked", [value.get("last_object_clicked"),
                                     value.get("last_object_clicked_count")]),
            ("last_clicked", [value.get("last_clicked")])):
        found = value.get(field)
        if isinstance(found, dict) and "lat" in found and not seen(
                f"{PAINT_KEY}.{field}", json.dumps(token, sort_keys=True)):
            click = found
    if click is None:
        return False
    display = pl.Display(options.basemap, ss.get("_pl_sent"))
    lon, lat = display.point(float(click["lng"]), float(click["lat"]))
    unit = pl.unit_at(layers, lon, lat)
    if unit is None:
        flash("info", "单击处没有综合网格单元")
        return False
    try:
        new, added = pl.toggle_unit(boundary, unit.geometry)
    except ValueError as exc:
        flash("error", str(exc))
        return False
    parks = pl.with_geometry(layers["parks"], code, new)
    save(draft.id, draft.revision, {"parks": parks},
         f"网格单元 {unit['name']}（{unit['code']}）{'并入园区' if added else '移出园区'}")
    return True


def show_map(m, key: str, returned: list[str]):
    try:
        assets.ensure_offline(m, allowed_hosts=options.basemap.hosts)
    except assets.OfflineAssetError as exc:
        say("error", str(exc))
        st.stop()
    return st_folium(m, key=key, height=pl.MAP_HEIGHT, use_container_width=True,
                     returned_objects=returned)


# -- the impact -----------------------------------------------------------------------------------
def impact_of(draft):
    if not draft.changed:
        return None
    found = ss.get("_pl_impact")
    if found and found[0] == (draft.id, draft.revision, draft.updated_at):
        return found[1]
    try:
        impact = svc.impact(actor, draft.id)
    except StoreError as exc:
        say("error", str(exc))
        return None
    ss["_pl_impact"] = ((draft.id, draft.revision, draft.updated_at), impact)
    return impact


def live_preview(impact) -> None:
    st.markdown("###### 影响预览（随每次修改更新）")
    if impact is None:
        st.caption("草稿尚无改动。")
        return
    cells = st.columns(2)
    for n, (label, value) in enumerate(pl.impact_metrics(impact)):
        cells[n % 2].metric(label, value)
    if len(impact.entities):
        st.dataframe(pl.entity_brief(impact, 10), hide_index=True, width="stretch",
                     key="pl_live_entities")
        if len(impact.entities) > 10:
            st.caption(f"共 {len(impact.entities)} 个，完整清单见下方“发布前核对”。")
    st.caption(f"按 {impact.entities_routed:,} 个监管对象比对，用时 {impact.elapsed_s:.2f} 秒。")


# -- sections ----------------------------------------------------------------------------------
def start_section() -> None:
    drafts = svc.drafts(actor)
    labels = {"pick": "调整现有园区", "new": "新建园区及其执法机构",
              "resume": f"继续已有草稿（{len(drafts)}）"}
    choices = ["pick", "new"] + (["resume"] if drafts else [])
    if ss.get("pl_start") not in choices:
        ss["pl_start"] = "pick"
    how = st.radio("开始", choices, format_func=labels.get, horizontal=True, key="pl_start",
                   label_visibility="collapsed")
    if how == "resume":
        st.dataframe(pl.drafts_frame(drafts), hide_index=True, width="stretch",
                     key="pl_drafts")
        ids = [d.id for d in drafts]
        named = {d.id: f"草稿 {d.id}：{d.note or '（未填写原因）'}（{d.author}）" for d in drafts}
        chosen = st.selectbox("草稿", ids, key="pl_resume_id", format_func=named.get)
        st.button("继续编辑", key="pl_resume", on_click=resume, args=(chosen,), type="primary")
    elif how == "pick":
        table = pl.parks_table(snapshot.layers)
        if not len(table):
            st.info("当前图层中没有园区：请新建园区。")
            return
        labels = {r["code"]: pl.park_label(r) for _, r in table.iterrows()}
        st.selectbox("要调整的园区", list(labels), format_func=labels.get, key="pl_pick")
        st.text_input("修改原因（发布时记入版本记录）", key="pl_pick_note",
                      placeholder="如：按省政府批复调整化工园区四至范围")
        st.button("开始调整（新建草稿）", key="pl_pick_go", on_click=start_pick, type="primary")
        with st.expander(f"全部园区（{len(table)}）"):
            st.dataframe(pl.parks_frame_zh(table), hide_index=True, width="stretch",
                         key="pl_parks")
    else:
        new_park_section()


def new_park_section() -> None:
    layers = snapshot.layers
    counties = layers["counties"]
    county_names = dict(zip(counties["code"].astype(str), counties["name"].astype(str),
                            strict=True))
    bureaus = layers["bureaus"]
    bureau_names = dict(zip(bureaus["code"].astype(str), bureaus["name"].astype(str),
                            strict=True))
    c1, c2, c3, c4 = st.columns(4)
    c1.text_input("园区编码", key="pl_new_code")
    c2.text_input("园区名称", key="pl_new_name")
    c3.selectbox("园区类型", PARK_KINDS, key="pl_new_kind",
                 format_func=lambda k: cards.PARK_KIND_ZH.get(k, k))
    county = c4.selectbox("所属县（市）、区", list(county_names), key="pl_new_county",
                          format_func=lambda c: f"{county_names[c]}（{c}）")
    with_bureau = st.checkbox("同时新建园区执法机构（化工园区须有独立执法机构）", value=True,
                              key="pl_new_with_bureau")
    if with_bureau:
        county_bureaus = bureaus[(bureaus["county_code"].astype(str) == county)
                                 & (bureaus["level"] == "county")]["code"].astype(str).tolist()
        parents = list(bureau_names)
        if county_bureaus and (ss.get("_pl_new_county") != county
                               or ss.get("pl_new_bparent") not in parents):
            ss["pl_new_bparent"] = county_bureaus[0]  # the county's bureau, for a new county
        ss["_pl_new_county"] = county
        b1, b2, b3, b4 = st.columns(4)
        b1.text_input("执法机构编码", key="pl_new_bcode")
        b2.text_input("执法机构名称", key="pl_new_bname",
                      placeholder="如：南通市某园区生态环境综合行政执法局")
        b3.selectbox("执法机构级别", BUREAU_LEVELS, index=BUREAU_LEVELS.index("park"),
                     key="pl_new_blevel", format_func=lambda v: BUREAU_LEVEL_ZH.get(v, v))
        b4.selectbox("上级执法机构", parents, key="pl_new_bparent",
                     format_func=lambda c: f"{bureau_names[c]}（{c}）")
    st.text_input("修改原因（发布时记入版本记录）", key="pl_new_note",
                  placeholder="如：省政府批复新设化工园区")
    st.markdown("###### 初始范围")
    st.caption("在地图上画出园区范围，和/或选择网格单元（合并为园区范围）；创建后可继续修改、吸附、按单元增减。")
    grids = layers["grids"]
    in_county = set(layers["townships"][layers["townships"]["county_code"].astype(str)
                                        == county]["code"].astype(str))
    units = grids[(grids["kind"].isin(pl.PAINT_KINDS))
                  & grids["township_code"].astype(str).isin(in_county)]
    unit_names = dict(zip(units["code"].astype(str), units["name"].astype(str), strict=True))
    st.multiselect("网格单元", list(unit_names), select_all=False, key="pl_new_units",
                   format_func=lambda c: f"{unit_names.get(c, c)}（{c}）", placeholder="可不选")
    # A polygon drawn on the map (kept until the park is created).
    value = ss.get(NEW_KEY)
    drawing = value.get("last_active_drawing") if isinstance(value, dict) else None
    if pl.drawing_kind(drawing) and not seen(NEW_KEY, json.dumps(drawing, sort_keys=True)):
        display = pl.Display(options.basemap, ss.get("_pl_sent"))
        try:
            geom = display.back(pl.geojson_geometry(drawing))
            tolerance = snap_settings()
            if geom is not None and tolerance:
                geom = pl.snap(geom, pl.neighbours(layers, geom, tolerance), tolerance)
            ss["_pl_new_shape"] = None if geom is None else shapely.to_wkb(geom)
        except (ValueError, TypeError, KeyError, AttributeError, GEOSException) as exc:
            flash("error", f"无法使用画出的范围：{exc}")
    shape = shapely.from_wkb(ss["_pl_new_shape"]) if ss.get("_pl_new_shape") else None
    chosen = [g for c, g in zip(units["code"].astype(str), units.geometry.values, strict=True)
              if c in set(ss.get("pl_new_units") or [])]
    initial = pl.polygonal(shapely.union_all([g for g in [shape, *chosen] if g is not None])
                           ) if (shape is not None or chosen) else None
    county_geom = counties[counties["code"].astype(str) == county].geometry.values
    display = pl.Display(options.basemap)
    m = pl.edit_map(options.basemap, layers, code=None, boundary=initial, published=None,
                    mode="draw", display=display,
                    focus=list(county_geom) if initial is None else None)
    ss["_pl_sent"] = display.sent
    show_map(m, NEW_KEY, ["last_active_drawing"])
    st.caption("工具栏“画园区边界”画出范围（再画一次则替换）；" + pl.LEGEND)
    if initial is not None:
        st.caption(f"初始范围约 {pl.area_text(pl.area_m2(initial))}。")
    if st.button("创建园区草稿", key="pl_new_go", type="primary"):
        park = {"code": ss.get("pl_new_code", ""), "name": ss.get("pl_new_name", ""),
                "kind": ss.get("pl_new_kind", ""), "county_code": county}
        bureau = ({"code": ss.get("pl_new_bcode", ""), "name": ss.get("pl_new_bname", ""),
                   "level": ss.get("pl_new_blevel", "park"),
                   "parent_code": ss.get("pl_new_bparent", "")} if with_bureau else None)
        try:
            frames = pl.new_park_frames(layers["parks"], bureaus, park, bureau, initial)
        except ValueError as exc:
            say("error", str(exc))
            return
        try:
            made = svc.create_draft(actor, list(frames), ss.get("pl_new_note", ""))
        except StoreError as exc:
            say("error", str(exc))
            return
        try:
            svc.save_draft(actor, made.id, frames, expected_revision=made.revision)
        except StoreError as exc:
            svc.discard_draft(actor, made.id)
            say("error", f"未创建：{exc}")
            return
        ss["pl_draft"], ss["pl_park"] = made.id, park["code"].strip()
        ss.pop("_pl_new_shape", None)
        flash("success", f"已新建草稿 {made.id}：园区 {park['code']}"
                         + (f" 及执法机构 {bureau['code']}" if bureau else "") + "。")
        st.rerun()


def editor(draft) -> None:
    layers = layers_with(draft.id)
    parks = layers["parks"]
    table = pl.parks_table(layers)
    labels = {r["code"]: pl.park_label(r) for _, r in table.iterrows()}
    codes = list(labels)
    if not codes:
        st.warning("草稿中没有园区。")
        return
    if ss.get("pl_park") not in codes:
        edited = [c for c in pl.edited_codes(draft) if c in codes]
        ss["pl_park"] = edited[0] if edited else codes[0]
    # What the map sent since the last run, applied before anything is drawn (the widgets'
    # values are in the session already).
    code, mode = ss["pl_park"], ss.get("pl_mode", "draw")
    boundary = parks[parks["code"].astype(str) == code].geometry.values[0]
    took = False
    if mode == "draw":
        took = take_drawing(draft, code, boundary, layers)
    elif mode == "paint":
        took = take_paint(draft, code, boundary, layers)
    if took:
        draft = svc.draft(actor, draft.id)
        layers = layers_with(draft.id)
        parks = layers["parks"]
        boundary = parks[parks["code"].astype(str) == code].geometry.values[0]
    head = st.columns([3, 2])
    head[0].markdown(f"**草稿 {draft.id}** · 编制人 {cards.md(draft.author)} · 创建于 "
                     f"{cards.beijing_text(draft.created_at)}（北京时间） · 已保存 "
                     f"{draft.revision} 次 · 改动：{cards.md(describe_changes(draft.counts))}")
    for conflict in draft.conflicts:
        say("warning", conflict)
    if draft.conflicts:
        if ss.get("pl_clash") == draft.id:
            st.button("确认用草稿覆盖上述修改并变基", key="pl_rebase_over", on_click=rebase,
                      args=(draft.id, True))
        else:
            st.button("在最新版本上继续（变基）", key="pl_rebase", on_click=rebase,
                      args=(draft.id,))
    head[1].selectbox("正在编辑的园区", codes, format_func=labels.get, key="pl_park")
    n1, n2 = st.columns([4, 1], vertical_alignment="bottom")
    n1.text_input("修改原因（发布时记入版本记录）", value=draft.note, key=f"pl_note_{draft.id}")
    n2.button("更新原因", key="pl_note_go", on_click=set_note, args=(draft.id, draft.revision))
    st.radio("编辑方式", list(MODES), format_func=MODES.get, horizontal=True, key="pl_mode")
    if mode == "draw":
        o1, o2, o3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        o1.radio("新画的面用于", list(pl.OPERATIONS), format_func=pl.OPERATIONS.get,
                 horizontal=True, key="pl_op")
        o2.checkbox("吸附到相邻边界", value=True, key="pl_snap",
                    help="在服务器端完成：节点移到吸附距离内的相邻边界节点或边线上")
        o3.number_input("吸附距离（米）", min_value=0.0, max_value=pl.MAX_SNAP_M,
                        value=pl.DEFAULT_SNAP_M, step=5.0, key="pl_snap_m")
    show_flash()
    b1, b2, b3, _ = st.columns([1, 1.6, 1, 2])
    b1.button(f"撤销（{draft.undo_depth}）", key="pl_undo", on_click=undo, args=(draft.id,),
              disabled=not draft.can_undo, help="恢复上一次保存前的草稿")
    b2.button("离开草稿（稍后继续）", key="pl_leave", on_click=leave)
    with b3.popover("放弃草稿"):
        st.caption("放弃后草稿不能再编辑或发布（记入审计记录）。")
        st.button(f"确认放弃草稿 {draft.id}", key="pl_discard", on_click=discard,
                  args=(draft.id,))
    impact = impact_of(draft)
    published_parks = snapshot["parks"]
    published = published_parks[published_parks["code"].astype(str) == code].geometry.values
    published = published[0] if len(published) else None
    left, right = st.columns([1.7, 1], gap="medium")
    with left:
        display = pl.Display(options.basemap)
        m = pl.edit_map(options.basemap, layers, code=code, boundary=boundary,
                        published=published, mode="view" if mode == "upload" else mode,
                        display=display, impact=impact,
                        cut_geoms=pl.cut_geometries(layers, impact))
        ss["_pl_sent"] = display.sent
        if mode == "draw":
            show_map(m, DRAW_KEY, ["last_active_drawing"])
            st.caption("工具栏：画园区边界 / 画矩形（按上方所选方式替换、并入或挖去）；"
                       "编辑边界节点；删除园区的某一部分。" + pl.LEGEND)
        elif mode == "paint":
            show_map(m, PAINT_KEY, ["last_object_clicked", "last_object_clicked_count",
                                    "last_clicked"])
            st.caption("单击综合网格单元：园区外的单元并入园区，园区内的单元移出园区。" + pl.LEGEND)
        else:
            show_map(m, VIEW_KEY, [])
            st.caption(pl.LEGEND)
            upload_section(draft, code)
    with right:
        live_preview(impact)
    publish_section(draft, impact)


def upload_section(draft, code: str) -> None:
    file = st.file_uploader("园区图层文件（GeoJSON、KML、GeoPackage，或 Shapefile 打包的 zip；"
                            f"{page.UPLOAD_LIMIT_ZH}）",
                            type=["geojson", "json", "kml", "gpkg", "zip"], key="pl_upload")
    u1, u2 = st.columns(2)
    crs = u1.text_input("坐标系（文件没有坐标系信息时，如 EPSG:4490、EPSG:4549）",
                        key="pl_upload_crs")
    encoding = u2.text_input("属性表编码（Shapefile 的 .dbf，如 GBK；可不填）",
                             key="pl_upload_encoding")
    if file is None:
        ss.pop("_pl_upload", None)
        return
    if (ss.get("_pl_upload") or (None,))[0] != file.file_id:
        with tempfile.TemporaryDirectory(prefix="gridmap-plan-") as tmp:
            path = Path(tmp) / Path(file.name).name
            path.write_bytes(file.getvalue())
            try:
                frame = svc.read_layer_file(actor, path, "parks", crs=crs.strip() or None,
                                            encoding=encoding.strip() or None)
            except ImportFailed as exc:
                ss.pop("_pl_upload", None)
                st.error(cards.lines_md(exc.summary(head="文件未读入，草稿未作改动。")))
                return
            except StoreError as exc:
                ss.pop("_pl_upload", None)
                say("error", str(exc))
                return
        ss["_pl_upload"] = (file.file_id, frame)
    frame = ss["_pl_upload"][1]
    shown = frame[["code", "name", "kind", "county_code"]].assign(
        kind=frame["kind"].map(lambda k: cards.PARK_KIND_ZH.get(k, k)))
    st.dataframe(shown.rename(columns={
        "code": "编码", "name": "名称", "kind": "类型", "county_code": "县（市）、区编码"}),
        hide_index=True, width="stretch", key="pl_upload_table")
    c1, c2 = st.columns(2)
    c1.button(f"按编码写入草稿（{len(frame)} 个园区）", key="pl_upload_put", on_click=upload_put,
              args=(draft.id, draft.revision))
    if len(frame) == 1:
        c2.button(f"仅取其范围作为园区 {code} 的边界", key="pl_upload_shape",
                  on_click=upload_shape, args=(draft.id, draft.revision, code))


def publish_section(draft, impact) -> None:
    st.markdown("##### 发布前核对与发布")
    if impact is not None:
        with st.expander("完整影响清单（监管对象、未结案件、被切分网格、面积变化）"):
            tabs = pl.full_tables(impact)
            for (title, frame), tab in zip(tabs.items(), st.tabs(
                    [f"{t}（{len(f)}）" for t, f in tabs.items()]), strict=True):
                with tab:
                    st.dataframe(frame, hide_index=True, width="stretch",
                                 key=f"pl_full_{title}")
        st.download_button("下载影响评估 Excel（签字确认用）",
                           lambda: svc.impact_excel(actor, draft.id),
                           file_name=f"规划调整影响评估_草稿{draft.id}.xlsx",
                           mime=spreadsheet.XLSX_MIME, key="pl_excel", on_click="ignore")
    st.button("检查草稿", key="pl_check", on_click=run_checks, args=(draft.id, draft.revision),
              help="按草稿修改后的全部图层检查：错误须改正，警告须逐条确认")
    checks = ss.get("_pl_checks")
    fresh = bool(checks) and checks[0] == draft.id and checks[1] == draft.revision
    acked: list[str] = []
    all_acked = False
    errors = []
    if fresh:
        findings = checks[2]
        errors = [f for f in findings if f.severity == "error"]
        warnings = [f for f in findings if f.severity != "error"]
        if not findings:
            st.success("检查未发现问题。")
        if errors:
            say("error", f"检查发现 {len(errors)} 个错误，须改正后才能发布：\n"
                + "\n".join(f"- {pl.findings_text(f)}" for f in errors))
        if warnings:
            st.warning(f"{len(warnings)} 个警告：逐条确认后才能发布（确认记入审计记录）。")
            for f in warnings:
                fid = finding_id(f)
                if st.checkbox(cards.md(f"已知悉：{pl.findings_text(f)}"),
                               key=f"pl_ack_{draft.id}_{draft.revision}_{fid}"):
                    acked.append(fid)
        all_acked = len(acked) == len(warnings)
    elif checks and checks[0] == draft.id:
        st.caption("草稿已修改：请重新检查。")
    if not draft.note.strip():
        st.caption("发布前请填写修改原因（上方“修改原因”，再单击“更新原因”）。")
    ready = (fresh and not errors and all_acked and draft.changed and bool(draft.note.strip())
             and not draft.conflicts)
    st.button("发布为新版本", key="pl_publish", type="primary", disabled=not ready,
              on_click=publish, args=(draft.id, acked),
              help="一次事务写入：只有改动的要素生成新记录；之后的路由、案件按新版本")


def history_section() -> None:
    try:
        gens, _counts = svc.layer_versions(actor)
    except StoreError as exc:
        say("error", str(exc))
        return
    show_flash()
    st.dataframe(pl.versions_frame(gens), hide_index=True, width="stretch", key="pl_versions",
                 column_config={"改动": st.column_config.TextColumn(width="large")})
    by_id = {g.id: g for g in gens}
    ids = [g.id for g in reversed(gens)]
    c1, c2 = st.columns(2)
    if ss.get("_pl_hist_show") in ids:  # a version just published here (a rollback): shown
        ss["pl_hist_gen"] = ss.pop("_pl_hist_show")
    gen_id = c1.selectbox("查看版本的改动", ids, key="pl_hist_gen", format_func=lambda i: (
        f"版本 {i} · {cards.beijing_text(by_id[i].created_at)} · {by_id[i].actor or '导入'} · "
        f"{by_id[i].note}"))
    changed = [n for n in pl.changed_layers(by_id[gen_id]) if n in LAYERS]
    if not changed:
        c2.caption("该版本没有要素改动。")
    else:
        default = "parks" if "parks" in changed else changed[0]
        if ss.get("pl_hist_layer") not in changed:
            ss["pl_hist_layer"] = default
        layer = c2.selectbox("图层", changed, key="pl_hist_layer",
                             format_func=lambda n: f"{LAYERS[n].title_zh}（{n}）")
        try:
            diff = svc.version_diff(actor, gen_id, layer)
        except StoreError as exc:
            say("error", str(exc))
            diff = None
        if diff is not None:
            left, right = st.columns([1.7, 1])
            with left:
                if LAYERS[layer].geometry == "polygon":
                    context = snapshot["counties"].geometry.values
                    show_map(pl.diff_map(options.basemap, diff, context), "pl_map_diff", [])
                    st.caption("红色：本版本关闭的要素（删除或修改前）；绿色：本版本新增的要素（新增或修改后）。")
            with right:
                st.dataframe(pl.diff_table(diff), hide_index=True, width="stretch",
                             key="pl_diff_table")
    rollback_section(gens)


def rollback_section(gens) -> None:
    st.markdown("##### 回退")
    current = gens[-1].id
    targets = [g.id for g in reversed(gens) if g.id < current]
    if not targets:
        st.caption("只有一个版本，无可回退。")
        return
    by_id = {g.id: g for g in gens}
    c1, c2 = st.columns(2)
    to = c1.selectbox("回退到版本", targets, key="pl_rb_to", format_func=lambda i: (
        f"版本 {i} · {cards.beijing_text(by_id[i].created_at)} · {by_id[i].note}"))
    names = [n for n in LAYERS if LAYERS[n].geometry or n == "bureaus"]
    picked = c2.multiselect("回退的图层", names, default=["parks"], select_all=False,
                            key="pl_rb_layers",
                            format_func=lambda n: f"{LAYERS[n].title_zh}（{n}）")
    st.text_input("回退原因（记入版本记录）", key="pl_rb_note")
    blocked = ss.get("_pl_rb_blocked")
    acked = []
    if blocked and blocked[0] == (to, tuple(picked)):
        warnings = [f for f in blocked[1] if f.severity != "error"]
        for f in warnings:
            if st.checkbox(cards.md(f"已知悉：{pl.findings_text(f)}"),
                           key=f"pl_rb_ack_{to}_{finding_id(f)}"):
                acked.append(finding_id(f))
    st.caption("回退把所选图层在该版本时的要素发布为一个新版本（历史不改写）。")
    asked = ss.get("_pl_rb_ask") == (current, to, tuple(picked))
    if not asked:
        if st.button("回退为新版本…", key="pl_rb_go", disabled=not picked):
            if not str(ss.get("pl_rb_note") or "").strip():
                flash("error", "回退前请填写原因：它会记入版本记录")
            else:
                ss["_pl_rb_ask"] = (current, to, tuple(picked))
            st.rerun()
        return
    # A rollback publishes at once for everyone: say what it undoes, then ask.
    try:
        changes = svc.rollback_changes(actor, picked, to)
    except StoreError as exc:
        st.error(str(exc))
        ss.pop("_pl_rb_ask", None)
        return
    what = describe_changes(changes)
    st.warning(f"确认把{'、'.join(LAYERS[n].title_zh for n in picked)}回退到版本 {to}？"
               f"将立即发布为版本 {current + 1}，所有人的查询和分派随即按它进行。"
               f"相对当前版本 {current}：{what}。")
    yes, no = st.columns(2)
    if yes.button("确认回退", key="pl_rb_yes", type="primary", width="stretch"):
        ss.pop("_pl_rb_ask", None)
        try:
            gen = svc.rollback(actor, picked, to, ss.get("pl_rb_note", ""), acked)
        except PublishBlocked as exc:
            ss["_pl_rb_blocked"] = ((to, tuple(picked)), exc.findings)
            flash("error", str(exc))
        except StoreError as exc:
            flash("error", str(exc))
        else:
            ss.pop("_pl_rb_blocked", None)
            ss["_pl_hist_show"] = gen.id  # the history shows what the rollback did
            flash("success", f"已回退为版本 {gen.id}：{describe_changes(gen.changes)}")
        st.rerun()
    if no.button("取消", key="pl_rb_no", width="stretch"):
        ss.pop("_pl_rb_ask", None)
        st.rerun()


# -- the page ------------------------------------------------------------------------------------
st.markdown("#### 规划调整（园区边界、园区执法机构）")
with st.expander("使用说明"):
    st.markdown(pl.HELP)
VIEWS = {"edit": "编辑草稿", "history": "版本历史与回退"}
view = st.radio("视图", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="pl_view",
                label_visibility="collapsed")
if view == "history":
    history_section()
else:
    active = None
    if ss.get("pl_draft") is not None:
        try:
            active = svc.draft(actor, int(ss["pl_draft"]))
        except StoreError as exc:
            flash("error", str(exc))
            active = None
        if active is not None and active.status != "draft":
            done = "发布" if active.status == "published" else "放弃"
            flash("info", f"草稿 {active.id} 已{done}。")
            active = None
        if active is None:
            ss.pop("pl_draft", None)
    if active is None:
        show_flash()
        start_section()
    else:
        editor(active)

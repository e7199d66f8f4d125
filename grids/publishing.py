"""Planners' changes of the layers: drafts, checks, the impact preview, publishing a version and
rolling one back (issue 11).

A change starts as a *draft* (who, when, why; the generation each of its layers starts from)
holding edits of the current layers (layers/versions.py). It can be saved any number of times,
undone step by step, left and resumed, discarded. Publishing runs the checks (errors block,
warnings must be acknowledged and are recorded with the publish), then writes a new generation
in one transaction in which only the features that changed get new rows. If someone published
a newer version of one of the draft's layers since the draft began, the publish is refused
and the draft kept (optimistic locking; other layers' changes do not conflict). Rolling back
publishes an old generation's features of a layer as a new version: history is never
rewritten.

Every function takes an `Acting` and requires `layers.publish` (planners); publishes,
rollbacks, refusals, draft creation and discarding are audited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from geo.validity import invalid_zh
from grids.acting import Acting
from grids.resolver import Resolver
from layers import spreadsheet
from layers.finder import MemoryFinder, Queries
from layers.schema import LAYERS, ROUTING_LAYERS, STORE_EPSG, LayerSpec
from layers.store import DraftRecord, Generation, IncidentQuery, Snapshot, Store
from layers.versions import (
    LayerConflict,
    VersionError,
    apply_edits,
    diff_layer,
    edit_counts,
    edits_between,
    layer_frame,
    merge_edits,
)

PERMISSION = "layers.publish"
# Layers whose polygons a park or bureau line cuts grids with (the impact's "cut grids").
CUTTING_LAYERS = ("parks", "jurisdictions")
# A grid is cut when more than this much of it lies on each side of the line (m²).
CUT_TOLERANCE_M2 = 1.0
# An equal-area projection centred on Nantong for areas in m² (CGCS2000 ellipsoid).
AREA_CRS = "+proj=laea +lat_0=32 +lon_0=121 +ellps=GRS80 +units=m +no_defs"
MAX_LISTED = 20  # findings named in a refusal message


class PublishBlocked(VersionError):
    """The checks found errors, or warnings not acknowledged: nothing was published."""

    def __init__(self, message: str, findings: list | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


@dataclass(frozen=True)
class Draft:
    """A draft as the planner page shows it."""

    id: int
    layers: tuple[str, ...]
    base: dict[str, int]
    author: str
    created_at: str
    updated_at: str
    note: str
    status: str
    revision: int
    undo_depth: int
    generation: int | None  # the version it was published as
    edits: dict  # layer -> {"put": [...], "drop": [...]} | {"rows": [...]}
    counts: dict  # layer -> {"added", "changed", "removed"} against the current layer
    conflicts: tuple[str, ...] = ()  # why publishing would be refused now (Chinese)

    @property
    def can_undo(self) -> bool:
        return self.status == "draft" and self.undo_depth > 0

    @property
    def changed(self) -> bool:
        return any(sum(c.values()) for c in self.counts.values())


@dataclass(frozen=True)
class FeatureEdits:
    """Edits of some features of one layer (paint-by-unit, one moved boundary): `put` the
    features added or changed (a frame with the layer's columns), `drop` the codes removed."""

    layer: str
    put: pd.DataFrame | None = None
    drop: tuple[str, ...] = ()


# -- drafts ---------------------------------------------------------------------------------------
def create_draft(acting: Acting, layers: str | Sequence[str], note: str = "") -> Draft:
    acting.require(PERMISSION, "draft")
    names = _layer_names(layers)
    store = acting.store
    current = _current_id(store)
    record = DraftRecord(0, names, dict.fromkeys(names, current), acting.actor.login, "", "",
                         str(note or "").strip(), "draft", {"layers": {}})
    draft_id = store.add_draft(record, audit=acting.record(
        "draft.create", "", layers=list(names), note=record.note, base_generation=current))
    return _view(store, store.draft(draft_id))


def drafts(acting: Acting, status: str | None = "draft") -> list[Draft]:
    """Drafts of every planner (a colleague may take one over), newest first."""
    acting.require(PERMISSION)
    return [_view(acting.store, r) for r in acting.store.drafts(status)]


def draft(acting: Acting, draft_id: int) -> Draft:
    acting.require(PERMISSION, f"draft:{draft_id}")
    return _view(acting.store, _record(acting.store, draft_id))


def draft_features(acting: Acting, draft_id: int, layer: str) -> pd.DataFrame:
    """A layer as the draft proposes it (the current layer with the draft's edits)."""
    acting.require(PERMISSION, f"draft:{draft_id}")
    record = _record(acting.store, draft_id)
    spec = _spec(layer)
    edits = record.content.get("layers", {}).get(layer, {})
    return apply_edits(spec, acting.store.snapshot()[layer], edits)


def save_draft(acting: Acting, draft_id: int,
               data: pd.DataFrame | dict | FeatureEdits | Sequence[FeatureEdits], *,
               layer: str | None = None, note: str | None = None,
               expected_revision: int | None = None) -> Draft:
    """Save new content: a whole proposed layer (a GeoDataFrame with the layer's columns, for
    `layer` or the draft's only layer), several ({layer: frame}), or `FeatureEdits` merged into
    what the draft holds. The previous content goes onto the undo history."""
    acting.require(PERMISSION, f"draft:{draft_id}")
    store = acting.store
    record = _record(store, draft_id)
    snapshot = store.snapshot()
    content = {k: dict(v) for k, v in record.content.get("layers", {}).items()}
    layers, base = list(record.layers), dict(record.base)
    for name, edits in _new_edits(record, snapshot, data, layer, content).items():
        if edits:
            content[name] = edits
        else:
            content.pop(name, None)
        if name not in layers:
            layers.append(name)
            base[name] = snapshot.generation.id
    saved = store.save_draft(draft_id, content={"layers": content}, layers=tuple(layers),
                             base=base, note=None if note is None else str(note).strip(),
                             expected_revision=expected_revision)
    return _view(store, saved)


def undo_draft(acting: Acting, draft_id: int) -> Draft:
    acting.require(PERMISSION, f"draft:{draft_id}")
    return _view(acting.store, acting.store.undo_draft(draft_id))


class RebaseClash(VersionError):
    """The draft edits features someone else changed since it began: rebasing would put the
    draft's versions over theirs. `codes`: (layer, code) of those features."""

    def __init__(self, message: str, codes: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.codes = codes


def rebase_draft(acting: Acting, draft_id: int, *, overwrite: bool = False) -> Draft:
    """Take the draft's edits over to the newest version of its layers (after someone else
    published one): edits keyed by code apply to the new version as they are; the planner
    checks the result (impact, checks) before publishing. When the draft edits a feature that
    the newer versions changed too, its edit would silently undo theirs: refused (RebaseClash,
    naming the features and the versions) unless `overwrite` says the planner has seen it."""
    acting.require(PERMISSION, f"draft:{draft_id}")
    store = acting.store
    record = _record(store, draft_id)
    current = _current_id(store)
    if not overwrite:
        clashes = _clashes(store, record)
        if clashes:
            raise RebaseClash(_clash_message(store, record, clashes), clashes)
    saved = store.save_draft(draft_id, content=record.content, layers=record.layers,
                             base=dict.fromkeys(record.layers, current),
                             expected_revision=record.revision)
    return _view(store, saved)


def _clashes(store: Store, record: DraftRecord) -> list[tuple[str, str]]:
    """(layer, code) of the features the draft edits that changed since its base version (a
    whole-layer edit of a layer without codes clashes with any change, as code "")."""
    edits = record.content.get("layers", {})
    now = store.snapshot()
    found: list[tuple[str, str]] = []
    for name in sorted(edits):
        base = record.base.get(name)
        if not edits[name] or base is None or base == now.generation.id:
            continue
        spec = LAYERS[name]
        since = edits_between(spec, store.snapshot(base)[name], now[name])
        if not since:
            continue
        if "rows" in edits[name] or "rows" in since:
            found.append((name, ""))
            continue
        changed = {str(r["values"][spec.key]) for r in since.get("put", [])}
        changed |= {str(c) for c in since.get("drop", [])}
        mine = {str(r["values"][spec.key]) for r in edits[name].get("put", [])}
        mine |= {str(c) for c in edits[name].get("drop", [])}
        found += [(name, code) for code in sorted(mine & changed)]
    return found


def _clash_message(store: Store, record: DraftRecord, clashes: list[tuple[str, str]]) -> str:
    names = "、".join(f"{LAYERS[layer].title_zh} {code}" if code else
                     f"整个{LAYERS[layer].title_zh}图层" for layer, code in clashes[:10])
    more = f" 等 {len(clashes)} 个要素" if len(clashes) > 10 else ""
    layers = {layer for layer, _ in clashes}
    newer = [g for g in store.generations()
             if g.id > min(record.base.get(n, g.id) for n in layers) and layers & set(g.layers)]
    by = "、".join(f"版本 {g.id}（{g.actor or '他人'}）" for g in newer)
    return (f"未变基：草稿修改的 {names}{more} 在草稿开始之后已被修改（{by}）。直接变基会用草稿"
            "覆盖这些修改。请先查看该版本的改动：放弃草稿并在最新版本上重新编辑，或确认用草稿覆盖。")


def discard_draft(acting: Acting, draft_id: int) -> Draft:
    acting.require(PERMISSION, f"draft:{draft_id}")
    store = acting.store
    _record(store, draft_id)
    done = store.set_draft_status(draft_id, "discarded", audit=acting.record(
        "draft.discard", f"draft:{draft_id}"))
    return _view(store, done)


# Nodes of one uploaded feature at most: a surveyed park boundary has thousands; a million (an
# export at full resolution) would take the editing map a minute to draw.
MAX_UPLOAD_NODES = 50_000


def read_layer_file(path: Path, layer: str, *, crs: str | None = None,
                    encoding: str | None = None) -> pd.DataFrame:
    """A layer uploaded as a file (GeoJSON, KML, GeoPackage, or a zip with a Shapefile), read and
    checked as an import reads it, for `save_draft`. A layer exported from the store's
    `<layer>_current` view (QGIS) comes back with its extra attributes."""
    import json

    from layers.importer import Source, _read, _staged, check_layer
    from layers.problems import ImportFailed, Problem
    from layers.readers import VECTOR_SUFFIXES, ReadError, vector_error_zh

    spec = _spec(layer)
    path = Path(path)
    with _staged(path.parent if path.suffix.lower() != ".zip" else path) as root:
        if path.suffix.lower() == ".zip":
            files = [f for f in sorted(root.rglob("*")) if f.is_file()
                     and f.suffix.lower() in VECTOR_SUFFIXES and "__MACOSX" not in f.parts]
            named = [f for f in files if f.stem.lower() in (layer, f"{layer}_current")]
            files = named or files
            if len(files) != 1:
                raise ImportFailed([Problem(path.name, "压缩包中应只有一个图层文件"
                                            f"（或名为 {layer} 的文件），找到 {len(files)} 个")])
            file = files[0]
        else:
            file = path
        inner = None
        if file.suffix.lower() == ".gpkg":
            import pyogrio

            try:
                names = [str(n) for n, _ in pyogrio.list_layers(file)]
            except Exception as exc:  # not a GeoPackage, or a broken one: GDAL says which
                raise ImportFailed([Problem(file.name, vector_error_zh(exc, file, encoding))]
                                   ) from exc
            picks = [n for n in names if n.lower() in (layer, f"{layer}_current")]
            inner = picks[0] if picks else (names[0] if len(names) == 1 else None)
            if inner is None:
                raise ImportFailed([Problem(file.name, f"含多个图层，但没有名为 {layer} 的图层")])
        try:
            raw = _read(Source(layer, file, file.name, inner), encoding)
        except ReadError as exc:  # an empty or unreadable file: the same typed refusal
            raise ImportFailed([exc.problem]) from exc
        if not len(raw.frame):  # said as such, not as every required field missing
            raise ImportFailed([Problem(file.name, "文件中没有要素（0 个）：请确认导出时包含了"
                                                   "要编辑的边界")])
        stored = raw.frame.pop("attrs") if "attrs" in raw.frame.columns else None
        raw.frame = raw.frame.drop(columns=[c for c in ("fid", "gen_from", "gen_to")
                                            if c in raw.frame])
        frame, problems, _ = check_layer(spec, raw, crs)
    if problems or frame is None:
        raise ImportFailed(problems)
    if spec.geometry:
        nodes = shapely.get_num_coordinates(np.asarray(frame.geometry.values, dtype=object))
        heavy = np.flatnonzero(nodes > MAX_UPLOAD_NODES)
        if len(heavy):
            raise ImportFailed([Problem(
                file.name, f"边界有 {int(nodes[i]):,} 个节点，超过 {MAX_UPLOAD_NODES:,} 个（地图上"
                "无法流畅编辑和显示）：请先在 QGIS 中用“简化”（容差 0.5 米即可）处理后再上传",
                f"第 {i + 1} 个要素（编码 {frame[spec.key].iat[i]}）") for i in heavy[:10]])
    if stored is not None:
        merged = []
        for text, extra in zip(stored, frame["attrs"], strict=True):
            try:  # JSON text, or an object where the format has them (GeoJSON)
                kept = json.loads(text) if isinstance(text, str) and text else text
            except ValueError:
                kept = {}
            merged.append({**(kept if isinstance(kept, dict) else {}), **(extra or {})})
        frame["attrs"] = merged
    return frame


# -- publishing -----------------------------------------------------------------------------------
def publish_draft(acting: Acting, draft_id: int,
                  acknowledged_warnings: Sequence[str] = ()) -> Generation:
    """Publish the draft as a new generation (one transaction). Refused, with the draft kept:
    when one of its layers was published by someone else since the draft began
    (LayerConflict), when the checks find errors or warnings not in `acknowledged_warnings`
    (their ids or kinds; PublishBlocked), when it changes nothing."""
    target = f"draft:{draft_id}"
    acting.require(PERMISSION, target)
    store = acting.store
    record = _record(store, draft_id)
    if record.status != "draft":
        done = "发布" if record.status == "published" else "放弃"
        raise VersionError(f"草稿 {draft_id} 已{done}，不能再发布")
    if not record.note.strip():
        raise VersionError("发布前请填写本次修改的原因（草稿说明）：它会记入版本记录")
    view = _view(store, record)
    if view.conflicts:
        _refused(acting, target, "conflict", view.conflicts[0])
        raise LayerConflict(view.conflicts[0])
    current = store.snapshot()
    frames = _proposed(record, current)
    return _commit(acting, target, "publish", current, frames, note=record.note,
                   source=target, bases={n: record.base.get(n, 0) for n in frames},
                   acknowledged=acknowledged_warnings, draft_id=draft_id,
                   detail={"draft": draft_id, "author": record.author})


def rollback(acting: Acting, layers: str | Sequence[str], to_generation: int, note: str,
             acknowledged_warnings: Sequence[str] = ()) -> Generation:
    """Publish the features `layers` had in `to_generation` as a new version (the history
    stays: the versions in between can still be read and rolled back to)."""
    names = _layer_names(layers)
    target = f"{','.join(names)}@{int(to_generation)}"
    acting.require(PERMISSION, target)
    if not str(note or "").strip():
        raise VersionError("回退前请填写原因：它会记入版本记录")
    current, old = _rollback_ends(acting.store, to_generation)
    frames = {n: old[n].drop(columns=["fid"]).reset_index(drop=True) for n in names}
    return _commit(acting, target, "rollback", current, frames, note=str(note).strip(),
                   source=f"rollback:{target}",
                   bases=dict.fromkeys(names, current.generation.id),
                   acknowledged=acknowledged_warnings, draft_id=None,
                   detail={"to_generation": int(to_generation)})


def rollback_changes(acting: Acting, layers: str | Sequence[str], to_generation: int
                     ) -> dict[str, dict[str, int]]:
    """What a rollback would do to each layer (features added, changed, removed against the
    current version), to show before it is confirmed."""
    names = _layer_names(layers)
    acting.require(PERMISSION, f"{','.join(names)}@{int(to_generation)}")
    current, old = _rollback_ends(acting.store, to_generation)
    return {n: edit_counts(LAYERS[n], current[n], edits_between(LAYERS[n], current[n], old[n]))
            for n in names}


def _rollback_ends(store: Store, to_generation: int) -> tuple[Snapshot, Snapshot]:
    """The current snapshot and the one rolled back to (an earlier generation)."""
    current = store.snapshot()
    if not 0 < int(to_generation) < current.generation.id:
        raise VersionError(f"只能回退到此前的版本（1–{current.generation.id - 1}），"
                           f"收到 {to_generation}")
    return current, store.snapshot(int(to_generation))


def check_draft(acting: Acting, draft_id: int) -> list:
    """The findings of the checks over the layers as the draft would leave them."""
    acting.require(PERMISSION, f"draft:{draft_id}")
    current = acting.store.snapshot()
    frames = _proposed(_record(acting.store, draft_id), current)
    return _findings({**current.layers, **frames}, changed=tuple(frames))


def finding_id(finding) -> str:
    """What acknowledges a warning: its id, else kind:layer:codes."""
    given = getattr(finding, "id", "")
    if given:
        return str(given)
    codes = "+".join(str(c) for c in getattr(finding, "codes", []) or [])
    return f"{finding.kind}:{finding.layer}:{codes}"


def _findings(layers: dict[str, pd.DataFrame], *, changed: tuple[str, ...] = ()) -> list:
    """The checks of grids/checks.py (another module, imported when first needed) over a whole
    layer set; [] while it does not exist. Errors block a publish, warnings need an
    acknowledgement."""
    try:
        from grids import checks
    except ImportError:
        return []
    check = getattr(checks, "check_layers", None)
    if check is None:
        return []
    return list(check(layers))


def _commit(acting: Acting, target: str, action: str, current: Snapshot,
            frames: dict[str, pd.DataFrame], *, note: str, source: str, bases: dict[str, int],
            acknowledged: Sequence[str], draft_id: int | None, detail: dict) -> Generation:
    store = acting.store
    diffs = {n: diff_layer(LAYERS[n], current[n], f) for n, f in frames.items()}
    if not any(d.any for d in diffs.values()):
        raise VersionError("与当前版本相比没有任何改动，无需发布")
    kept = "草稿已保留" if draft_id is not None else "数据未作任何改动"
    problems = _reference_problems(frames, current)
    if problems:
        hint = ("；若是回退了园区，请把执法机构一并回退到同一版本" if action == "rollback"
                and any(p.field == "park_code" for p in problems) else "")
        message = (f"发布被阻止：引用了不存在的编码（本次未发布，{kept}{hint}）：\n"
                   + "\n".join(f"  - {p}" for p in problems[:MAX_LISTED]))
        _refused(acting, target, "references", message)
        raise PublishBlocked(message)
    findings = _findings({**current.layers, **frames}, changed=tuple(frames))
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity != "error"]
    acked = {str(a) for a in acknowledged}
    missing = [f for f in warnings if finding_id(f) not in acked and f.kind not in acked]
    if errors or missing:
        message = _blocked_message(errors, missing, kept)
        _refused(acting, target, "checks", message, [finding_id(f) for f in errors + missing])
        raise PublishBlocked(message, errors + missing)
    audit = acting.record(action, target, note=note, layers=sorted(frames),
                          base=bases, warnings=[finding_id(f) for f in warnings],
                          acknowledged=sorted(acked), **detail)
    try:
        return store.commit_layers(frames, note=note, source=source, actor=acting.actor.login,
                                   layer_bases=bases, draft_id=draft_id, audit=[audit])
    except LayerConflict as exc:  # published by someone else between the check and the commit
        _refused(acting, target, "conflict", str(exc))
        raise


def _blocked_message(errors: list, missing: list, kept: str = "草稿已保留") -> str:
    lines = [f"发布被阻止（本次未发布，{kept}）："]
    if errors:
        lines.append(f"检查发现 {len(errors)} 个错误，须先修改：")
        lines += [f"  - {_finding_text(f)}" for f in errors[:MAX_LISTED]]
    if missing:
        lines.append(f"有 {len(missing)} 个警告尚未确认（确认后可发布，确认记入审计）：")
        lines += [f"  - [{finding_id(f)}] {_finding_text(f)}" for f in missing[:MAX_LISTED]]
    shown = min(len(errors), MAX_LISTED) + min(len(missing), MAX_LISTED)
    if len(errors) + len(missing) > shown:
        lines.append(f"  …… 另有 {len(errors) + len(missing) - shown} 项未列出")
    return "\n".join(lines)


def _finding_text(f) -> str:
    """A finding in words: its own message (which names the features), else kind and codes."""
    text = getattr(f, "message_zh", "")
    if text:
        return text
    codes = "、".join(str(c) for c in (getattr(f, "codes", None) or [])[:5])
    area = getattr(f, "area_m2", None)
    return (f"{f.kind}（{f.layer}" + (f"：{codes}" if codes else "")
            + (f"，{area:,.0f} 平方米" if area else "") + "）")


def _refused(acting: Acting, target: str, why: str, message: str,
             findings: list[str] | None = None) -> None:
    detail = {"reason": why, "message": message[:2000]}
    if findings:
        detail["findings"] = findings[:200]
    acting.store.append_audit([acting.record("publish.refused", target, **detail)])


def _reference_problems(frames: dict[str, pd.DataFrame], current: Snapshot) -> list:
    from layers.importer import check_references

    return check_references(frames, current)


# -- the impact preview ---------------------------------------------------------------------------
@dataclass
class Impact:
    """What a draft would change, before it is published."""

    draft_id: int
    generation: int  # the current generation it is compared with
    entities: pd.DataFrame  # supervised entities whose bureau, grid or workers change
    cases: pd.DataFrame  # open cases in areas that change hands
    cut_grids: pd.DataFrame  # grid units a changed park or bureau line cuts
    areas: pd.DataFrame  # per changed polygon: m² added and removed (and the pieces)
    entities_routed: int = 0
    elapsed_s: float = 0.0
    summary: dict = field(default_factory=dict)


ENTITY_COLUMNS = {
    "id": "统一社会信用代码", "name": "名称", "industry": "行业", "lon": "经度", "lat": "纬度",
    "changes": "变化", "bureau_before": "原执法机构编码", "bureau_before_name": "原执法机构",
    "bureau_after": "新执法机构编码", "bureau_after_name": "新执法机构",
    "grid_before": "原网格编码", "grid_before_name": "原网格", "grid_after": "新网格编码",
    "grid_after_name": "新网格", "workers_before": "原网格员", "workers_after": "新网格员",
}
CASE_COLUMNS = {
    "id": "案件编号", "status_zh": "状态", "category_zh": "类别", "reported_at": "受理时间",
    "assigned_bureau_code": "当前承办执法机构", "assigned_grid_code": "当前网格",
    "changes": "变化", "bureau_before": "按现行图层的执法机构",
    "bureau_after": "按草稿的执法机构", "grid_before": "按现行图层的网格",
    "grid_after": "按草稿的网格", "lon": "经度", "lat": "纬度",
}
CUT_COLUMNS = {
    "layer_zh": "图层", "code": "边界编码", "name": "边界名称", "grid_code": "网格编码",
    "grid_name": "网格名称", "inside_m2": "线内面积（平方米）", "outside_m2": "线外面积（平方米）",
    "already_cut": "原边界已切分",
}
AREA_COLUMNS = {
    "layer_zh": "图层", "code": "编码", "name": "名称", "change_zh": "改动",
    "area_before_m2": "原面积（平方米）", "area_after_m2": "新面积（平方米）",
    "added_m2": "增加面积（平方米）", "removed_m2": "减少面积（平方米）",
}
CHANGES_ZH = {"bureau": "执法机构", "grid": "网格", "workers": "网格员"}
CHANGE_ZH = {"added": "新增", "removed": "删除", "changed": "修改"}


def impact(acting: Acting, draft_id: int) -> Impact:
    acting.require(PERMISSION, f"draft:{draft_id}")
    store = acting.store
    record = _record(store, draft_id)
    current = store.snapshot()
    return impact_of(store, current, _proposed(record, current), draft_id)


def impact_of(store: Store, current: Snapshot, frames: dict[str, pd.DataFrame],
              draft_id: int = 0) -> Impact:
    """The impact of replacing `frames` in the `current` layers: every supervised entity
    compared (routed in one batch with the current layers and with the proposed ones, in
    memory, the same finder for both — only those where an answer can change, see
    `_reach`), open cases likewise, grids cut by changed park and bureau lines, area added and
    removed."""
    started = time.perf_counter()
    proposed = Snapshot(current.generation, {**current.layers, **frames}, proposed=True)
    before = _resolver(current)
    after = Resolver(proposed, _DraftFinder(proposed, MemoryFinder.for_snapshot(current),
                                            set(frames)))
    _share_decisions(before, after, set(frames))
    reach = _reach(current, frames)
    entities = current.layers.get("entities")
    points = (np.asarray(entities.geometry.values, dtype=object)
              if entities is not None and len(entities) else np.array([], dtype=object))
    near = _within(points, reach)
    ent = _routed_changes(before, after, current, proposed, points[near])
    entity_rows = pd.DataFrame(columns=list(ENTITY_COLUMNS))
    if len(ent) and ent["changed"].any():
        mine = near[ent["changed"].to_numpy()]
        e = entities.iloc[mine]
        entity_rows = pd.DataFrame({
            "id": e["id"].astype(str).to_numpy(), "name": e["name"].to_numpy(),
            "industry": e["industry"].to_numpy(),
            "lon": np.round(shapely.get_x(points[mine]), 6),
            "lat": np.round(shapely.get_y(points[mine]), 6),
            **{c: ent[c].to_numpy()[ent["changed"].to_numpy()] for c in ent.columns
               if c != "changed"},
        })[list(ENTITY_COLUMNS)]
    cases = _case_changes(store, before, after, current, proposed, reach)
    cut = _cut_grids(current, proposed, frames)
    areas = _area_changes(current, frames)
    summary = {
        "entities": len(entity_rows),
        "entities_bureau": int(entity_rows["changes"].str.contains("执法机构").sum()),
        "entities_grid": int(entity_rows["changes"].str.contains("网格").sum()),
        "cases": len(cases), "cut_grids": len(cut),
        "added_m2": float(areas["added_m2"].sum()) if len(areas) else 0.0,
        "removed_m2": float(areas["removed_m2"].sum()) if len(areas) else 0.0,
    }
    summary["entities_in_reach"] = len(near)  # routed; the rest lie where nothing changed
    return Impact(draft_id, current.generation.id, entity_rows, cases, cut, areas,
                  len(points), time.perf_counter() - started, summary)


# Layers a change of which alters answers only inside the changed features' old and new
# shapes. Any other (bureaus, rules, jurisdictions — a county bureau covers its county where
# no jurisdiction is drawn —, workers) may alter answers anywhere.
LOCAL_LAYERS = ("counties", "townships", "grids", "parks", "sea_areas")


def _reach(current: Snapshot, frames: dict[str, pd.DataFrame]):
    """Where an answer can change: the old and new shapes of every changed feature (an
    STRtree over them), or None when the change can reach every place."""
    if set(frames) - set(LOCAL_LAYERS):
        return None
    shapes = []
    for name, frame in frames.items():
        diff = diff_layer(LAYERS[name], current[name], frame)
        now = current[name]
        shapes += list(now[now["fid"].isin(diff.close)].geometry.values)
        shapes += list(frame.iloc[diff.insert].geometry.values)
    return shapely.STRtree(np.asarray([g for g in shapes if g is not None], dtype=object))


def _within(points: np.ndarray, reach) -> np.ndarray:
    """Positions of the points inside (or on) the reach, ascending; all without one."""
    if reach is None or not len(points):
        return np.arange(len(points))
    found = reach.query(points, predicate="intersects")
    return np.unique(found[0]) if found.size else np.array([], dtype=np.int64)


def _share_decisions(before: Resolver, after: Resolver, changed: set[str]) -> None:
    """Seed the proposed layers' resolver with the current one's decisions for places that no
    changed layer covers: they decide alike (the same rows of the unchanged layers). Not when
    bureaus, rules or jurisdictions change: those reach every place (a county bureau covers its
    county only where no jurisdiction is drawn)."""
    if changed & {"bureaus", "precedence", "jurisdictions"}:
        return
    mine = [ROUTING_LAYERS.index(n) for n in changed if n in ROUTING_LAYERS]
    after._cache.update({sets: found for sets, found in list(before._cache.items())
                         if not any(sets[k] for k in mine)})


class _DraftFinder(MemoryFinder):
    """The in-memory finder of a proposed snapshot: the trees of unchanged layers are the
    current finder's (a park redraw rebuilds one small tree, not the 2,544 grids')."""

    def __init__(self, snapshot: Snapshot, base: MemoryFinder, changed: set[str]) -> None:
        # The base's lock: the polygons of unchanged layers are the base's own prepared
        # geometries, which the two finders must not test at once (layers/finder.py).
        self._lock = base._lock
        self.geoms, self.trees = [], []
        for k, name in enumerate(ROUTING_LAYERS):
            if name in changed:
                geoms = np.asarray(snapshot[name].geometry.values, dtype=object)
                shapely.prepare(geoms)
                self.geoms.append(geoms)
                self.trees.append(shapely.STRtree(geoms))
            else:
                self.geoms.append(base.geoms[k])
                self.trees.append(base.trees[k])


_RESOLVERS: dict[tuple, Resolver] = {}
_CACHE_LOCK = threading.Lock()  # the page's server threads share these caches


def _resolver(snapshot: Snapshot) -> Resolver:
    """The current layers' resolver over the in-memory finder (the proposed layers can only be
    routed in memory; both sides are routed alike), kept per generation."""
    key = (snapshot.generation.created_at, snapshot.generation.id, id(snapshot))
    with _CACHE_LOCK:
        found = _RESOLVERS.get(key)
    if found is None:
        found = Resolver(snapshot, MemoryFinder.for_snapshot(snapshot))
        with _CACHE_LOCK:
            while len(_RESOLVERS) >= 2:
                _RESOLVERS.pop(next(iter(_RESOLVERS)))
            _RESOLVERS[key] = found
    return found


def _answers(resolver: Resolver, snapshot: Snapshot, points: np.ndarray) -> pd.DataFrame:
    """Bureau and grid (codes, names) and the grid's workers for each point, in one batch:
    distinct places are decided once (`resolve_indexed`). An ambiguous place lists every
    candidate, joined by '、'."""
    cols = ("bureau", "bureau_name", "grid", "grid_name", "workers")
    if not len(points):
        return pd.DataFrame({c: [] for c in cols})
    results, index = resolver.resolve_indexed(
        Queries.build(shapely.get_x(points), shapely.get_y(points)))
    b, g = resolver.bureaus, resolver.grids
    people: dict[str, list[str]] = {}
    w = snapshot["workers"]
    for grid, name, wid in zip(w["grid_code"].tolist(), w["name"].tolist(), w["id"].tolist(),
                               strict=True):
        people.setdefault(grid, []).append(f"{name}（{wid}）")
    distinct = []
    for res in results:
        bureaus = sorted({o.bureau for o in res.outcomes if o.bureau is not None})
        grids = sorted({o.grid for o in res.outcomes if o.grid is not None})
        grid_codes = [g["code"][x] for x in grids]
        distinct.append((
            "、".join(b["code"][x] for x in bureaus), "、".join(b["name"][x] for x in bureaus),
            "、".join(grid_codes), "、".join(g["name"][x] for x in grids),
            "、".join(sorted(p for c in grid_codes for p in people.get(c, [])))))
    table = pd.DataFrame(distinct, columns=list(cols))
    return table.iloc[index].reset_index(drop=True)


_BEFORE: dict[tuple, pd.DataFrame] = {}


def _answers_now(resolver: Resolver, snapshot: Snapshot, points: np.ndarray) -> pd.DataFrame:
    """`_answers` with the current layers, kept per generation and set of points: a preview
    while editing routes only the proposed side again."""
    import hashlib

    digest = hashlib.blake2b(shapely.get_coordinates(points).tobytes(), digest_size=16)
    key = (snapshot.generation.created_at, snapshot.generation.id, digest.hexdigest())
    with _CACHE_LOCK:
        found = _BEFORE.get(key)
    if found is None:
        found = _answers(resolver, snapshot, points)
        with _CACHE_LOCK:
            while len(_BEFORE) >= 4:
                _BEFORE.pop(next(iter(_BEFORE)))
            _BEFORE[key] = found
    return found


def _routed_changes(before: Resolver, after: Resolver, current: Snapshot, proposed: Snapshot,
                    points: np.ndarray) -> pd.DataFrame:
    old = _answers_now(before, current, points)
    new = _answers(after, proposed, points)
    bureau = old["bureau"].to_numpy() != new["bureau"].to_numpy()
    grid = old["grid"].to_numpy() != new["grid"].to_numpy()
    workers = old["workers"].to_numpy() != new["workers"].to_numpy()
    changes = ["、".join(CHANGES_ZH[k] for k, v in (("bureau", x), ("grid", y),
                                                    ("workers", z)) if v)
               for x, y, z in zip(bureau, grid, workers, strict=True)]
    return pd.DataFrame({
        "changed": bureau | grid | workers, "changes": changes,
        "bureau_before": old["bureau"], "bureau_before_name": old["bureau_name"],
        "bureau_after": new["bureau"], "bureau_after_name": new["bureau_name"],
        "grid_before": old["grid"], "grid_before_name": old["grid_name"],
        "grid_after": new["grid"], "grid_after_name": new["grid_name"],
        "workers_before": old["workers"], "workers_after": new["workers"],
    })


def _case_changes(store: Store, before: Resolver, after: Resolver, current: Snapshot,
                  proposed: Snapshot, reach) -> pd.DataFrame:
    """Open cases whose place would belong to another bureau or grid."""
    found = store.query_incidents(IncidentQuery(not_statuses=("closed",)))
    if len(found):
        found = found.iloc[_within(np.asarray(found.geometry.values, dtype=object), reach)]
    if not len(found):
        return pd.DataFrame(columns=list(CASE_COLUMNS))
    points = np.asarray(found.geometry.values, dtype=object)
    routed = _routed_changes(before, after, current, proposed, points)
    moved = (routed["bureau_before"] != routed["bureau_after"]) | (
        routed["grid_before"] != routed["grid_after"])
    mine = moved.to_numpy()
    if not mine.any():
        return pd.DataFrame(columns=list(CASE_COLUMNS))
    rows = found[mine].reset_index(drop=True)
    r = routed[mine].reset_index(drop=True)
    out = pd.DataFrame({c: rows[c] for c in ("id", "status_zh", "category_zh", "reported_at",
                                               "assigned_bureau_code", "assigned_grid_code",
                                               "lon", "lat")})
    out["changes"] = ["、".join(k for k, v in (("执法机构", x != y), ("网格", p != q)) if v)
                      for x, y, p, q in zip(r["bureau_before"], r["bureau_after"],
                                            r["grid_before"], r["grid_after"], strict=True)]
    for c in ("bureau_before", "bureau_after", "grid_before", "grid_after"):
        out[c] = r[c]
    return out[list(CASE_COLUMNS)]


def _changed_features(spec: LayerSpec, current: pd.DataFrame, frame: pd.DataFrame):
    """(code, name, old geometry or None, new geometry or None) of each feature that changed,
    matched by code (jurisdictions: by bureau)."""
    from layers.versions import identity, keys_of

    diff = diff_layer(spec, current, frame)
    if not diff.any:
        return []
    closed = current[current["fid"].isin(diff.close)]
    inserted = frame.iloc[diff.insert]
    old = dict(zip(keys_of(spec, closed), closed.geometry.values, strict=True))
    new = dict(zip(keys_of(spec, inserted), inserted.geometry.values, strict=True))
    names = {}
    name_col = "name" if "name" in frame.columns else identity(spec)[0]
    for rows in (current, frame):
        names.update(zip(keys_of(spec, rows), rows[name_col].astype(str), strict=True))
    return [(k, names.get(k, k), old.get(k), new.get(k)) for k in sorted(set(old) | set(new))]


@lru_cache(maxsize=1)
def _to_area_crs():
    import pyproj

    return pyproj.Transformer.from_crs(STORE_EPSG, AREA_CRS, always_xy=True)


def _projected(geoms):
    transformer = _to_area_crs()
    return shapely.transform(np.asarray(geoms, dtype=object),
                             lambda xy: np.column_stack(transformer.transform(xy[:, 0],
                                                                              xy[:, 1])))


def _area_m2(geoms) -> np.ndarray:
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return np.array([], dtype=float)
    empty = np.array([g is None for g in geoms])
    out = np.zeros(len(geoms))
    if (~empty).any():
        out[~empty] = shapely.area(_projected(geoms[~empty]))
    return out


def _area_changes(current: Snapshot, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for name, frame in frames.items():
        spec = LAYERS[name]
        if spec.geometry != "polygon":
            continue
        for code, label, old, new in _changed_features(spec, current[name], frame):
            empty = shapely.Polygon()
            added = shapely.difference(new, old) if new is not None and old is not None else new
            removed = (shapely.difference(old, new) if new is not None and old is not None
                       else old)
            a_before, a_after, a_added, a_removed = _area_m2([old, new, added, removed])
            change = "added" if old is None else "removed" if new is None else "changed"
            rows.append({"layer": name, "layer_zh": spec.title_zh, "code": code, "name": label,
                         "change": change,
                         "change_zh": CHANGE_ZH[change],
                         "area_before_m2": round(float(a_before), 1),
                         "area_after_m2": round(float(a_after), 1),
                         "added_m2": round(float(a_added), 1),
                         "removed_m2": round(float(a_removed), 1),
                         "added_geometry": added if added is not None else empty,
                         "removed_geometry": removed if removed is not None else empty})
    columns = ["layer", "layer_zh", "code", "name", "change", "change_zh", "area_before_m2",
               "area_after_m2", "added_m2", "removed_m2", "added_geometry", "removed_geometry"]
    return pd.DataFrame(rows, columns=columns)


def _cut_grids(current: Snapshot, proposed: Snapshot,
               frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Grids (of the proposed layers) that a new or moved park or bureau boundary cuts: more
    than CUT_TOLERANCE_M2 on each side of it."""
    columns = ["layer", "layer_zh", "code", "name", "grid_code", "grid_name", "inside_m2",
               "outside_m2", "already_cut"]
    grids = proposed["grids"]
    geoms = np.asarray(grids.geometry.values, dtype=object)
    tree = shapely.STRtree(geoms)
    rows = []
    for name in CUTTING_LAYERS:
        if name not in frames:
            continue
        spec = LAYERS[name]
        for code, label, old, new in _changed_features(spec, current[name], frames[name]):
            if new is None or (old is not None and shapely.equals_exact(old, new, 0.0)):
                continue  # removed, or only its attributes changed: no boundary moved
            hit = tree.query(new, predicate="intersects")
            if not len(hit):
                continue
            inside = _area_m2(shapely.intersection(geoms[hit], new))
            grid_area = np.zeros(len(geoms))
            grid_area[hit] = _area_m2(geoms[hit])
            outside = grid_area[hit] - inside
            cut = (inside > CUT_TOLERANCE_M2) & (outside > CUT_TOLERANCE_M2)
            if old is not None and cut.any():
                before = _area_m2(shapely.intersection(geoms[hit[cut]], old))
                was = (before > CUT_TOLERANCE_M2) & (grid_area[hit[cut]] - before
                                                     > CUT_TOLERANCE_M2)
            else:
                was = np.zeros(int(cut.sum()), dtype=bool)
            for k, i in enumerate(hit[cut]):
                rows.append({"layer": name, "layer_zh": spec.title_zh, "code": code,
                             "name": label, "grid_code": grids["code"].iat[i],
                             "grid_name": grids["name"].iat[i],
                             "inside_m2": round(float(inside[cut][k]), 1),
                             "outside_m2": round(float(outside[cut][k]), 1),
                             "already_cut": "是" if was[k] else "否"})
    return pd.DataFrame(rows, columns=columns)


def impact_excel(impact: Impact, draft: Draft | None = None) -> bytes:
    """The impact for the sign-off, as an .xlsx with Chinese headers (text always as text)."""
    from datetime import UTC, datetime

    from grids.deadlines import beijing_text

    s = impact.summary
    facts = [("草稿编号", impact.draft_id), ("对比的现行版本", impact.generation)]
    if draft is not None:
        facts += [("修改原因", draft.note), ("编制人", draft.author),
                  ("涉及图层", "、".join(LAYERS[n].title_zh for n in draft.layers))]
    facts += [("参与比对的监管对象", impact.entities_routed),
              ("执法机构、网格或网格员变化的监管对象", s.get("entities", 0)),
              ("其中执法机构变化", s.get("entities_bureau", 0)),
              ("其中网格变化", s.get("entities_grid", 0)),
              ("受影响的未结案件", s.get("cases", 0)),
              ("被新边界切分的网格", s.get("cut_grids", 0)),
              ("增加面积（平方米）", round(s.get("added_m2", 0.0), 1)),
              ("减少面积（平方米）", round(s.get("removed_m2", 0.0), 1)),
              ("导出时间（北京时间）", beijing_text(datetime.now(UTC)))]
    return spreadsheet.xlsx_bytes({
        "概况": spreadsheet.facts_table(facts),
        "监管对象变化": spreadsheet.headed(impact.entities, ENTITY_COLUMNS),
        "受影响案件": spreadsheet.headed(impact.cases, CASE_COLUMNS),
        "被切分网格": spreadsheet.headed(impact.cut_grids, CUT_COLUMNS),
        "面积变化": spreadsheet.headed(impact.areas, AREA_COLUMNS),
    })


# -- versions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionDiff:
    """What one generation changed in one layer: the rows it closed and the rows it added
    (for the history's diff on the map)."""

    generation: Generation
    layer: str
    removed: pd.DataFrame  # rows of the generation before that it closed
    added: pd.DataFrame  # rows it inserted


def version_diff(store: Store, generation: int, layer: str) -> VersionDiff:
    _spec(layer)
    gens = {g.id: g for g in store.generations()}
    if generation not in gens:
        raise VersionError(f"版本 {generation} 不存在")
    after = store.snapshot(generation)[layer]
    if generation == min(gens):
        before = after.iloc[0:0]
    else:
        before = store.snapshot(max(g for g in gens if g < generation))[layer]
    removed = before[~before["fid"].isin(after["fid"])].reset_index(drop=True)
    added = after[~after["fid"].isin(before["fid"])].reset_index(drop=True)
    return VersionDiff(gens[generation], layer, removed, added)


# -- helpers --------------------------------------------------------------------------------------
def _spec(layer: str) -> LayerSpec:
    spec = LAYERS.get(str(layer))
    if spec is None:
        raise VersionError(f"没有图层“{layer}”（可用：{'、'.join(LAYERS)}）")
    return spec


def _layer_names(layers: str | Sequence[str]) -> tuple[str, ...]:
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise VersionError("请至少选择一个图层")
    for name in names:
        _spec(name)
    return tuple(dict.fromkeys(names))


def _current_id(store: Store) -> int:
    gens = store.generations()
    if not gens:
        raise VersionError("数据库中还没有图层，请先导入数据")
    return gens[-1].id


def _record(store: Store, draft_id: int) -> DraftRecord:
    record = store.draft(int(draft_id))
    if record is None:
        raise VersionError(f"草稿 {draft_id} 不存在")
    return record


def _proposed(record: DraftRecord, current: Snapshot) -> dict[str, pd.DataFrame]:
    """The whole layers the draft proposes (only the layers it edits)."""
    edits = record.content.get("layers", {})
    return {name: apply_edits(LAYERS[name], current[name], edits[name])
            for name in record.layers if edits.get(name)}


def _conflicts(store: Store, record: DraftRecord) -> tuple[str, ...]:
    from layers.versions import conflict_message

    if record.status != "draft":
        return ()
    found = []
    edited = set(record.content.get("layers", {})) or set(record.layers)
    for gen in store.generations():
        for layer in sorted(edited):
            if gen.id > record.base.get(layer, gen.id) and layer in gen.layers:
                found.append(conflict_message(layer, record.base[layer], gen))
    return tuple(dict.fromkeys(found))


def _view(store: Store, record: DraftRecord) -> Draft:
    edits = record.content.get("layers", {})
    counts = {}
    if record.status == "draft" and edits:
        current = store.snapshot()
        counts = {n: edit_counts(LAYERS[n], current[n], e) for n, e in edits.items()}
    return Draft(record.id, record.layers, dict(record.base), record.author, record.created_at,
                 record.updated_at, record.note, record.status, record.revision,
                 record.undo_depth, record.generation, edits, counts,
                 _conflicts(store, record))


def _new_edits(record: DraftRecord, snapshot: Snapshot, data, layer: str | None,
               content: dict) -> dict[str, dict]:
    """layer -> its new draft content from what `save_draft` was given."""
    if isinstance(data, FeatureEdits):
        data = [data]
    if isinstance(data, list | tuple) and all(isinstance(d, FeatureEdits) for d in data):
        out: dict[str, dict] = {}
        for e in data:
            spec = _spec(e.layer)
            put = _validated(spec, e.put) if e.put is not None and len(e.put) else None
            out[e.layer] = merge_edits(spec, out.get(e.layer, content.get(e.layer, {})), put,
                                       list(e.drop))
        return out
    if isinstance(data, pd.DataFrame):
        if layer is None:
            if len(record.layers) != 1:
                raise VersionError("草稿含多个图层：请指明保存的是哪个图层（layer=…）")
            layer = record.layers[0]
        data = {layer: data}
    if not isinstance(data, dict) or not data:
        raise VersionError("保存草稿需要图层数据（GeoDataFrame）或要素修改（FeatureEdits）")
    out = {}
    for name, frame in data.items():
        spec = _spec(name)
        out[name] = edits_between(spec, snapshot[name], _validated(spec, frame))
    return out


def _validated(spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The layer's own rules on a proposed frame (what the database would refuse anyway):
    required values, allowed values, geometry kind and validity."""
    import re

    frame = layer_frame(spec, frame)
    problems = []
    keys = _identity_text(spec, frame)
    for col in spec.required:
        if col in spec.nullable or col == "rank":
            continue
        empty = [keys[i] for i, v in enumerate(frame[col]) if not str(v).strip()]
        if empty:
            problems.append(f"字段 {col} 为空：{'、'.join(empty[:5])}")
    for col, allowed in spec.choices.items():
        bad = sorted({str(v) for v in frame[col] if str(v) not in allowed})
        if bad:
            listed = "、".join(a for a in allowed if a)
            problems.append(f"字段 {col} 的取值不在允许范围（{listed}）：" + "、".join(bad[:5]))
    for col, (pattern, hint) in spec.checked_patterns.items():
        bad = [keys[i] for i, v in enumerate(frame[col])
               if str(v) and not re.fullmatch(pattern, str(v))]
        if bad:
            problems.append(f"字段 {col} {hint}：{'、'.join(bad[:5])}")
    if spec.geometry:
        geoms = np.asarray(frame.geometry.values, dtype=object)
        wanted = {"polygon": (3, 6), "point": (0,)}[spec.geometry]
        for i, g in enumerate(geoms):
            if g is None or shapely.is_empty(g):
                problems.append(f"{keys[i]}：没有几何")
            elif shapely.get_type_id(g) not in wanted:
                kind = "面" if spec.geometry == "polygon" else "点"
                problems.append(f"{keys[i]}：几何类型应为{kind}，收到 {g.geom_type}")
            elif not shapely.is_valid(g):
                problems.append(f"{keys[i]}：几何无效（{invalid_zh(g)}）")
            if len(problems) > MAX_LISTED:
                break
    if problems:
        raise VersionError(f"图层 {spec.name}（{spec.title_zh}）有 {len(problems)} 处问题，"
                           "未保存：\n" + "\n".join(f"  - {p}" for p in problems[:MAX_LISTED]))
    return frame


def _identity_text(spec: LayerSpec, frame: pd.DataFrame) -> list[str]:
    from layers.versions import keys_of

    return [k.replace("\x1f", "/") or f"第 {i + 1} 个要素" for i, k in
            enumerate(keys_of(spec, frame))]


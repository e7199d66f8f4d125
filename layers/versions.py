"""What changed between two states of a layer, and drafts as edits of the current layers.

A new generation writes only the features that changed (MapIt): each feature is compared with
the current rows by its attributes, its extra attributes and its geometry, normalised (polygons
as multipolygons, `shapely.normalize`, 2-D WKB) and compared exactly, without a tolerance.
Unchanged rows stay open (`gen_to` NULL); changed and removed ones are closed; changed and new
ones are inserted with the new generation.

A draft holds edits of the current layers: per layer keyed by the feature's code (`put` the
features added or changed, `drop` the codes removed), or for layers without a code the whole
proposed layer (`rows`). Edits keyed by code re-apply cleanly on a newer version of the layer
(a rebase), and the undo history stays small: a park redraw is one feature, not 2,544 grids.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from layers.schema import LAYERS, STORE_EPSG, LayerSpec
from layers.store import StoreError

BEIJING = timezone(timedelta(hours=8), "北京时间")
# Feature identity of layers without a code column: used to count "changed" (closed and
# re-inserted) apart from "added" and "removed"; drafts of these layers hold whole layers.
IDENTITY = {"jurisdictions": ("bureau_code",), "workers": ("id",),
            "precedence": ("subject", "key")}
STATUS_ZH = {"draft": "草稿", "published": "已发布", "discarded": "已放弃"}
CHANGE_ZH = {"added": "新增", "changed": "修改", "removed": "删除", "unchanged": "未变"}
# Previous contents kept per draft for undo (the brief asks for at least 50).
UNDO_DEPTH = 100


class VersionError(StoreError):
    """A version, time or draft that cannot be used as asked; the message is for the user."""


class LayerConflict(VersionError):
    """A layer was published by someone else after the draft (or rollback) began: nothing was
    written."""

    def __init__(self, message: str, layer: str = "", generation: int = 0) -> None:
        super().__init__(message)
        self.layer = layer
        self.generation = generation


# -- times ----------------------------------------------------------------------------------------
def parse_at(value) -> datetime:
    """An ISO 8601 time (a datetime, or text such as 2026-12-02, 2026-12-02T10:00,
    2026-12-02 10:00:00+08:00, …Z) as an aware UTC instant. Without a zone it is Beijing time.
    A '+' that a URL turned into a space is taken back."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value or "").strip()
        if len(text) > 6 and text[-6] == " " and text[-5:-3].isdigit() and text[-3] == ":":
            text = text[:-6] + "+" + text[-5:]  # "…10:00 08:00" from an unescaped URL
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise VersionError(
                f"时间“{text[:40]}”无法识别：请写成 ISO 8601 格式，如 2026-12-02T10:00"
                "（不写时区即为北京时间）或 2026-12-02T02:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=BEIJING)
    return moment.astimezone(UTC)


def utc_instant(text: str) -> datetime:
    """A stored UTC ISO time as an aware instant."""
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def beijing_time(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


# -- feature identity and fingerprints ------------------------------------------------------------
def identity(spec: LayerSpec) -> tuple[str, ...]:
    return (spec.key,) if spec.key else IDENTITY.get(spec.name, spec.required)


def keyed(spec: LayerSpec) -> bool:
    """Whether drafts of the layer are edits by code (else whole layers)."""
    return bool(spec.key)


def keys_of(spec: LayerSpec, frame: pd.DataFrame) -> list[str]:
    cols = identity(spec)
    if len(cols) == 1:
        return [_text(v) for v in frame[cols[0]]]
    return ["\x1f".join(_text(v) for v in values)
            for values in zip(*(frame[c] for c in cols), strict=True)]


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _canonical(value):
    """JSON values that compare equal whatever store they came back from (jsonb gives 1 for
    1.0, sqlite's JSON text keeps 1.0)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def attrs_text(attrs) -> str:
    if not isinstance(attrs, dict) or not attrs:
        return "{}"
    return json.dumps(_canonical(attrs), ensure_ascii=False, sort_keys=True, default=str)


def normalised_wkb(spec: LayerSpec, geoms) -> list[bytes | None]:
    """Geometries as the store keeps them (polygons as multipolygons), normalised, 2-D WKB."""
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return []
    geoms = geoms.copy()
    if spec.geometry == "polygon":
        single = np.array([g is not None and shapely.get_type_id(g) == 3 for g in geoms])
        if single.any():
            geoms[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
    normal = shapely.normalize(geoms)
    return list(shapely.to_wkb(normal, byte_order=1, flavor="iso", output_dimension=2))


def fingerprints(spec: LayerSpec, frame: pd.DataFrame) -> list[bytes]:
    """One digest per row over its attributes, extra attributes and normalised geometry."""
    n = len(frame)
    if not n:
        return []
    columns = [[_text(v) for v in frame[c]] for c in spec.required]
    attrs = frame["attrs"] if "attrs" in frame else [None] * n
    wkb = normalised_wkb(spec, frame.geometry.values) if spec.geometry else [b""] * n
    out = []
    for i, (a, g) in enumerate(zip(attrs, wkb, strict=True)):
        h = hashlib.blake2b(digest_size=20)
        h.update(json.dumps([c[i] for c in columns], ensure_ascii=False).encode())
        h.update(b"\x00" + attrs_text(a).encode() + b"\x00")
        h.update(g or b"")
        out.append(h.digest())
    return out


# -- the diff a commit writes ---------------------------------------------------------------------
@dataclass
class LayerDiff:
    layer: str
    close: list[int] = field(default_factory=list)  # fids of current rows to close
    insert: list[int] = field(default_factory=list)  # positions of the new frame to insert
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0

    @property
    def any(self) -> bool:
        return bool(self.close or self.insert)

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed,
                "unchanged": self.unchanged}


def diff_layer(spec: LayerSpec, current: pd.DataFrame, new: pd.DataFrame) -> LayerDiff:
    """Which current rows (`fid`) to close and which new rows to insert so that the layer
    becomes `new`, touching only what changed. Identical rows match one to one."""
    pool: dict[bytes, list[int]] = defaultdict(list)
    fids = current["fid"].astype(np.int64).tolist() if len(current) else []
    for fp, fid in zip(fingerprints(spec, current), fids, strict=True):
        pool[fp].append(fid)
    insert = []
    for i, fp in enumerate(fingerprints(spec, new)):
        if pool.get(fp):
            pool[fp].pop()
        else:
            insert.append(i)
    close = sorted(fid for left in pool.values() for fid in left)
    closed_keys = Counter(keys_of(spec, current[current["fid"].isin(close)])) if close else {}
    new_keys = Counter(keys_of(spec, new.iloc[insert])) if insert else {}
    changed = sum(min(n, new_keys.get(k, 0)) for k, n in closed_keys.items())
    return LayerDiff(spec.name, close, insert, len(insert) - changed, changed,
                     len(close) - changed, len(new) - len(insert))


def describe_changes(changes: dict) -> str:
    """{layer: counts} as a short Chinese line: 园区 修改 1、新增 1；网格 …"""
    parts = []
    order = [n for n in LAYERS if n in changes] + [n for n in changes if n not in LAYERS]
    for layer in order:
        counts = changes[layer]
        bits = [f"{CHANGE_ZH[k]} {counts.get(k, 0)}" for k in ("added", "changed", "removed")
                if counts.get(k)]
        if bits:
            title = LAYERS[layer].title_zh if layer in LAYERS else layer
            parts.append(f"{title}（{layer}）" + "、".join(bits))
    return "；".join(parts) or "无改动"


# -- draft content --------------------------------------------------------------------------------
def layer_frame(spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """A proposed layer as the stores take it: the required columns (text; `rank` integer),
    `attrs` (dict) and, for spatial layers, geometry in EPSG:4490. Other columns go to attrs,
    except the page's own (named with a leading underscore) and the store's (fid, gen_*)."""
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        raise VersionError(f"图层 {spec.name}（{spec.title_zh}）缺少必需字段："
                           + "、".join(missing))
    if spec.geometry:
        if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry is None:
            raise VersionError(f"图层 {spec.name}（{spec.title_zh}）应带几何（GeoDataFrame）")
        if frame.crs is not None and frame.crs.to_epsg() != STORE_EPSG:
            frame = frame.to_crs(STORE_EPSG)
    skip = {*spec.required, "attrs", "fid", "gen_from", "gen_to", "geometry", "geom"}
    if spec.geometry:
        skip.add(frame.geometry.name)
    extras = [c for c in frame.columns if c not in skip and not str(c).startswith("_")]
    base = (list(frame["attrs"]) if "attrs" in frame.columns else [{}] * len(frame))
    attrs = []
    for i, a in enumerate(base):
        merged = dict(a) if isinstance(a, dict) else {}
        for c in extras:
            v = frame[c].iat[i]
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "":
                merged[str(c)] = _canonical(v)
        attrs.append(merged)
    data = {c: ([int(v) for v in frame[c]] if c == "rank" else [_text(v) for v in frame[c]])
            for c in spec.required}
    data["attrs"] = attrs
    if spec.geometry:
        return gpd.GeoDataFrame(data, geometry=np.asarray(frame.geometry.values, dtype=object),
                                crs=STORE_EPSG)
    return pd.DataFrame(data)


def row_dicts(spec: LayerSpec, frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (geometry as WKB hex: exact doubles, the same feature after a
    round trip)."""
    frame = layer_frame(spec, frame)
    wkb = (shapely.to_wkb(np.asarray(frame.geometry.values, dtype=object), hex=True,
                          output_dimension=2) if spec.geometry else [None] * len(frame))
    out = []
    for i, g in enumerate(wkb):
        row = {c: frame[c].iat[i] for c in spec.required}
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        out.append({"values": row, "attrs": frame["attrs"].iat[i] or {}, "wkb": g})
    return out


def rows_frame(spec: LayerSpec, rows: list[dict]) -> pd.DataFrame:
    data = {c: [r["values"][c] for r in rows] for c in spec.required}
    data["attrs"] = [dict(r.get("attrs") or {}) for r in rows]
    if spec.geometry:
        geoms = (shapely.from_wkb(np.array([r["wkb"] for r in rows], dtype=object))
                 if rows else np.array([], dtype=object))
        return gpd.GeoDataFrame(data, geometry=geoms, crs=STORE_EPSG)
    frame = pd.DataFrame(data)
    return frame if len(rows) else pd.DataFrame({c: [] for c in [*spec.required, "attrs"]})


def edits_between(spec: LayerSpec, current: pd.DataFrame, proposed: pd.DataFrame) -> dict:
    """The edits that turn `current` into `proposed` ({} when they are the same)."""
    proposed = layer_frame(spec, proposed)
    if not keyed(spec):
        same = Counter(fingerprints(spec, current)) == Counter(fingerprints(spec, proposed))
        return {} if same else {"rows": row_dicts(spec, proposed)}
    keys = keys_of(spec, proposed)
    dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dupes:
        raise VersionError(f"图层 {spec.name}（{spec.title_zh}）中编码重复："
                           + "、".join(dupes[:10]))
    if "" in keys:
        raise VersionError(f"图层 {spec.name}（{spec.title_zh}）中有要素缺少编码 {spec.key}")
    now = dict(zip(keys_of(spec, current), fingerprints(spec, current), strict=True))
    put = [i for i, (k, fp) in enumerate(zip(keys, fingerprints(spec, proposed), strict=True))
           if now.get(k) != fp]
    drop = sorted(set(now) - set(keys))
    if not put and not drop:
        return {}
    return {"put": row_dicts(spec, proposed.iloc[put]) if put else [], "drop": drop}


def merge_edits(spec: LayerSpec, before: dict, put: pd.DataFrame | None,
                drop: list[str] | None) -> dict:
    """Feature edits on top of a layer's draft content: `put` features (by code) replace or
    add, `drop` codes remove."""
    if not keyed(spec):
        raise VersionError(f"图层 {spec.name}（{spec.title_zh}）没有编码字段，"
                           "只能整体保存（传入完整图层）")
    rows = {r["values"][spec.key]: r for r in before.get("put", [])}
    dropped = set(before.get("drop", []))
    if put is not None and len(put):
        new = row_dicts(spec, put)
        for r in new:
            code = _text(r["values"][spec.key])
            if not code:
                raise VersionError(f"图层 {spec.name} 中有要素缺少编码 {spec.key}")
            rows[code] = r
            dropped.discard(code)
    for code in drop or []:
        rows.pop(str(code), None)
        dropped.add(str(code))
    if not rows and not dropped:
        return {}
    return {"put": list(rows.values()), "drop": sorted(dropped)}


def apply_edits(spec: LayerSpec, current: pd.DataFrame, edits: dict) -> pd.DataFrame:
    """The proposed layer: `current` with the draft's edits (or its whole rows)."""
    base = current.drop(columns=["fid"], errors="ignore")
    if not edits:
        return base.reset_index(drop=True)
    if "rows" in edits:
        return rows_frame(spec, edits["rows"])
    put = rows_frame(spec, edits.get("put", []))
    gone = set(edits.get("drop", [])) | set(keys_of(spec, put))
    keys = keys_of(spec, base)
    kept = base[[k not in gone for k in keys]]
    # Replaced features stay where they were; new ones come last.
    order = {k: i for i, k in enumerate(keys)}
    put = put.assign(_o=[order.get(k, len(keys) + i) for i, k in enumerate(keys_of(spec, put))])
    kept = kept.assign(_o=[order[k] for k in keys_of(spec, kept)])
    frames = [f for f in (kept, put) if len(f)]
    if not frames:
        return base.iloc[0:0].reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True).sort_values("_o", kind="stable")
    out = out.drop(columns="_o").reset_index(drop=True)
    if spec.geometry:
        return gpd.GeoDataFrame(out, geometry="geometry", crs=STORE_EPSG)
    return out


def edit_counts(spec: LayerSpec, current: pd.DataFrame, edits: dict) -> dict[str, int]:
    """How many features a layer's edits add, change and remove against `current`."""
    if not edits:
        return {"added": 0, "changed": 0, "removed": 0}
    if "rows" in edits:
        diff = diff_layer(spec, current.assign(fid=np.arange(len(current))),
                          rows_frame(spec, edits["rows"]))
        return {k: v for k, v in diff.counts().items() if k != "unchanged"}
    have = set(keys_of(spec, current))
    put = {r["values"][spec.key] for r in edits.get("put", [])}
    removed = [c for c in edits.get("drop", []) if c in have]
    return {"added": len(put - have), "changed": len(put & have), "removed": len(removed)}


def content_json(content: dict) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)


def content_from(text) -> dict:
    if isinstance(text, dict):
        return text
    return json.loads(text) if text else {}


# -- optimistic locking ---------------------------------------------------------------------------
def check_layer_bases(later: list, layer_bases: dict[str, int]) -> None:
    """LayerConflict when one of the layers changed in a generation after the one its edits
    started from (`later`: the generations after the oldest base, read in the write
    transaction). Changes of other layers do not conflict."""
    for gen in later:
        for layer, base in sorted(layer_bases.items()):
            if gen.id > base and layer in gen.layers:
                raise LayerConflict(conflict_message(layer, base, gen), layer, gen.id)


def conflict_message(layer: str, base: int, gen) -> str:
    title = LAYERS[layer].title_zh if layer in LAYERS else layer
    who = gen.actor or "他人"
    when = beijing_time(utc_instant(gen.created_at))
    why = f"，说明：{gen.note}" if gen.note else ""
    return (f"发布冲突：图层“{title}”（{layer}）在本次修改开始之后（基于版本 {base}）已由 {who} "
            f"发布了新版本 {gen.id}（{when}，北京时间{why}）。为避免覆盖他人的修改，本次没有发布"
            "任何内容，草稿已保留：请先将草稿更新到最新版本、核对改动后再发布。")


def stamp_audit(records: list, generation: int, changes: dict) -> list:
    """The audit entries of a commit, with the generation it made and what changed."""
    from dataclasses import replace

    return [replace(r, detail={**r.detail, "generation": generation, "changes": changes})
            for r in records]

"""The rules that turn a location into responsibility.

Both stores hand the resolver the same thing: for each location, which polygons of which layer
touch it (see layers/finder.py). From those sets the resolver picks county, township, grid,
park and bureau by the precedence table, and explains itself. Batch and single routing go through
the same code: locations with the same set of covering polygons share one decision, so a million
points cost a few thousand rule evaluations.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import shapely

from grids.outcome import Outcome, Resolution
from grids.precedence import Precedence
from layers import faces as faces_mod
from layers.finder import Hits, Queries
from layers.schema import GRID_KIND_ZH, PARK_KIND_ZH, ROUTING_LAYERS
from layers.store import CandidateFinder, Snapshot

COUNTY, TOWNSHIP, GRID, PARK, SEA, JURISDICTION = (
    ROUTING_LAYERS.index(n)
    for n in ("counties", "townships", "grids", "parks", "sea_areas", "jurisdictions")
)
N_LAYERS = len(ROUTING_LAYERS)
# A point exactly on a boundary is looked at again with this radius, to list both sides.
EDGE_RADIUS_M = 0.5
# Pieces of an accuracy disc smaller than this share of it are numerical slivers, not places.
SLIVER_SHARE = 1e-6
MAX_PARTIAL_HITS = 400
SMALL_BATCH = 8

KIND_ZH = {**GRID_KIND_ZH, **PARK_KIND_ZH}  # grid and park kinds share no code

Sets = tuple[tuple[int, ...], ...]
# How many names a reason lists before "等".
NAMES_SHOWN = 10


@dataclass(frozen=True)
class ExtentResolution(Resolution):
    """A line or an area: one outcome (who leads), and every township and grid it touches
    (rows, in code order)."""

    grids: tuple[int, ...] = ()
    townships: tuple[int, ...] = ()
    # The grids answering for some part of it by the grid-kind order (a comprehensive grid
    # whose part lies wholly under a dedicated or park grid is touched but not responsible).
    responsible: tuple[int, ...] = ()


class Resolver:
    def __init__(self, snapshot: Snapshot, finder: CandidateFinder) -> None:
        self.snapshot = snapshot
        self.finder = finder
        self.precedence = Precedence.from_frame(snapshot.layers.get("precedence"))
        # Plain lists per column: the rules run once per distinct place, pandas lookups would
        # dominate their cost.
        t = {name: frame_columns(snapshot.layers[name]) for name in (*ROUTING_LAYERS, "bureaus")}
        self.counties, self.townships, self.grids = t["counties"], t["townships"], t["grids"]
        self.parks, self.seas, self.bureaus = t["parks"], t["sea_areas"], t["bureaus"]
        self.jurisdictions = t["jurisdictions"]
        rank = self.precedence.rank
        self.grid_rank = [rank("grid_kind", k) for k in self.grids["kind"]]
        self.park_rank = [rank("park_kind", k) for k in self.parks["kind"]]
        self._index_bureaus()
        self._cache: dict[Sets, tuple[Outcome, ...]] = {}
        # Per face of the raster last used, its Resolution once decided: a file's chunks meet
        # the same faces again (a ×16 file: ~10,000 faces a chunk, 50 chunks).
        self._face_results: tuple[object, np.ndarray] | None = None  # object array of them
        # Per signature of a place found by the finder (first and last row per layer), its
        # Resolution: near-boundary points of a file's chunks meet the same places again.
        self._by_signature: dict[tuple[int, ...], Resolution] = {}
        # The pieces of an explanation that depend on one row only, built once: at 40k grids a
        # batch decides ~40k places, and formatting the same county, township and bureau texts
        # again for each was half of the rules' time.
        self._county_text = [f"位于{n}（{c}）" for n, c in
                             zip(self.counties["name"], self.counties["code"], strict=True)]
        self._township_text = [f"位于{n}（{c}）" for n, c in
                               zip(self.townships["name"], self.townships["code"], strict=True)]
        self._grid_text: dict[int, str] = {}  # filled as grids are met (most never are)
        self._bureau_part: dict[int, tuple[tuple[str, str], str]] = {}
        self._bureaus_of: dict[tuple, list[int]] = {}
        # Large batches of exact points go through the face raster (layers/faces.py).
        self.use_faces = True

    # -- bureaus ----------------------------------------------------------------------------
    def _index_bureaus(self) -> None:
        b = self.bureaus
        self.bureau_row = {code: i for i, code in enumerate(b["code"])}
        explicit = set(self.jurisdictions["bureau_code"])
        self.county_bureau: dict[str, int] = {}  # covers its county by default
        self.sea_bureau: dict[str, int] = {}  # the county bureau, whatever its area
        self.park_bureau: dict[str, int] = {}
        self.municipal: int | None = None
        for i, (code, level, county, park) in enumerate(
            zip(b["code"], b["level"], b["county_code"], b["park_code"], strict=True)
        ):
            if level == "municipal" and self.municipal is None:
                self.municipal = i
            elif level == "county":
                self.sea_bureau.setdefault(county, i)
                if code not in explicit:
                    self.county_bureau.setdefault(county, i)
            elif level == "park" and park and code not in explicit:
                self.park_bureau.setdefault(park, i)
        self.jurisdiction_bureau = [
            self.bureau_row.get(c) for c in self.jurisdictions["bureau_code"]
        ]
        self.chains: list[tuple[int, ...]] = []
        for i in range(len(b["code"])):
            chain, seen = [i], {i}
            parent = self.bureau_row.get(b["parent_code"][i])
            while parent is not None and parent not in seen:
                chain.append(parent)
                seen.add(parent)
                parent = self.bureau_row.get(b["parent_code"][parent])
            self.chains.append(tuple(chain))

    def _level_rank(self, bureau: int) -> int:
        return self.precedence.rank("bureau_level", self.bureaus["level"][bureau])

    def forget(self) -> None:
        """Forget every decision remembered (benchmarks: each run decides afresh)."""
        self._cache.clear()
        self._face_results = None
        self._by_signature.clear()

    # -- the rules on one set of covering polygons ---------------------------------------------
    def decide(self, sets: Sets) -> tuple[Outcome, ...]:
        """All outcomes for a place covered by exactly these polygons (ties give several)."""
        cached = self._cache.get(sets)
        if cached is None:
            cached = self._decide(sets)
            if len(self._cache) < 200_000:
                self._cache[sets] = cached
        return cached

    def _decide(self, sets: Sets) -> tuple[Outcome, ...]:
        counties, townships, grids, parks, seas, jurisdictions = sets
        if not counties:
            if seas:
                return tuple(self._sea(s) for s in seas)
            return (
                Outcome(
                    rules=(("bureau", "outside"),),
                    reasons=(
                        "不在任何县（市）、区范围内，也不在已加载的海域内：不属于本市管辖范围。",
                    ),
                ),
            )
        bureaus = self._bureaus(counties, parks, jurisdictions)
        if (len(counties) == 1 and len(townships) <= 1 and len(grids) <= 1 and len(parks) <= 1
                and len(bureaus) <= 1):  # most places: one of each at most, nothing to rank
            return (self._explain(counties[0], townships[0] if townships else None,
                                  grids[0] if grids else None, grids, parks,
                                  bureaus[0] if bureaus else None),)
        park_order = sorted(parks, key=lambda p: (self.park_rank[p], p))
        outcomes = []
        for county, township, grid, park, bureau in itertools.product(
            counties,
            townships or (None,),
            _best(grids, self.grid_rank) or (None,),
            _best(parks, self.park_rank) or (None,),
            bureaus or (None,),
        ):
            parks_here = (
                tuple([park, *(p for p in park_order if p != park)]) if park is not None else ()
            )
            outcomes.append(self._explain(county, township, grid, grids, parks_here, bureau))
        return tuple(outcomes)

    def _bureaus(self, counties, parks, jurisdictions) -> list[int]:
        """The bureaus whose areas cover the place, best first by (level rank, park rank).
        Places of one bureau area share the answer (every grid of a township asks alike)."""
        key = (counties, parks, jurisdictions)
        found = self._bureaus_of.get(key)
        if found is None:
            found = self._bureaus_of[key] = self._bureaus_covering(counties, parks, jurisdictions)
        return found

    def _bureaus_covering(self, counties, parks, jurisdictions) -> list[int]:
        candidates: dict[int, tuple[int, int]] = {}
        for p in parks:
            b = self.park_bureau.get(self.parks["code"][p])
            if b is not None:
                candidates[b] = (self._level_rank(b), self.park_rank[p])
        for j in jurisdictions:
            b = self.jurisdiction_bureau[j]
            if b is not None:
                candidates.setdefault(b, (self._level_rank(b), 0))
        for c in counties:
            b = self.county_bureau.get(self.counties["code"][c])
            if b is not None:
                candidates.setdefault(b, (self._level_rank(b), 0))
        if not candidates:
            return []
        top = min(candidates.values())
        return sorted(b for b, r in candidates.items() if r == top)

    def _explain(self, county, township, grid, grids, parks, bureau) -> Outcome:
        g, p = self.grids, self.parks
        reasons = [self._county_text[county]]
        rules: list[tuple[str, str]] = []
        flags: list[str] = []
        if township is None:
            flags.append("no_township")
            reasons.append("未落入任何乡镇/街道（图层缺口）")
        else:
            reasons.append(self._township_text[township])
        if grid is None:
            flags.append("no_grid")
            reasons.append("未落入任何网格（图层缺口），请人工指定网格")
        else:
            kind = g["kind"][grid]
            rules.append(("grid", kind))
            text = self._grid_text.get(grid)
            if text is None:
                text = self._grid_text[grid] = (
                    f"网格：{g['name'][grid]}（{g['code'][grid]}，{KIND_ZH[kind]}）")
            if len(grids) > 1:
                others = [o for o in grids if o != grid]
                names = "、".join(f"{g['name'][o]}（{KIND_ZH[g['kind'][o]]}）" for o in others)
                text += f"；同时位于{names}。规则：{self.precedence.label('grid_kind', kind)}"
            reasons.append(text)
        if parks:
            park = parks[0]
            text = f"位于{p['name'][park]}（{KIND_ZH[p['kind'][park]]}）"
            if len(parks) > 1:
                names = "、".join(p["name"][o] for o in parks[1:])
                rule = self.precedence.label("park_kind", p["kind"][park])
                text += f"，该处同时属于{names}；规则：{rule}"
            reasons.append(text)
        if bureau is None:
            flags.append("no_bureau")
            reasons.append("没有执法机构的辖区覆盖此处，请检查执法机构数据")
        else:
            part = self._bureau_part.get(bureau)
            if part is None:
                level, name = self.bureaus["level"][bureau], self.bureaus["name"][bureau]
                rule = self.precedence.label("bureau_level", level)
                part = self._bureau_part[bureau] = (
                    ("bureau", level), f"责任执法机构：{name}。规则：{rule}")
            rules.append(part[0])
            reasons.append(part[1])
        return Outcome(
            county=county,
            township=township,
            grid=grid,
            park=parks[0] if parks else None,
            parks=tuple(parks),
            bureau=bureau,
            rules=tuple(rules),
            reasons=tuple(reasons),
            flags=tuple(flags),
        )

    def _sea(self, sea: int) -> Outcome:
        s = self.seas
        county_code = s["county_code"][sea]
        county = _row_of(self.counties["code"], county_code)
        bureau = self.sea_bureau.get(county_code)
        reasons = [
            f"位于海域{s['name'][sea]}（{s['code'][sea]}），"
            f"属{_name(self.counties, county) or county_code}",
            "海洋生态环境执法已并入综合执法：由所属县（市）、区执法局负责"
            if bureau is not None
            else "该海域所属县（市）、区没有执法机构数据",
        ]
        return Outcome(
            county=county,
            sea=sea,
            bureau=bureau,
            rules=(("bureau", "sea"),),
            reasons=tuple(reasons),
            flags=("sea",),
        )

    # -- extents (a polluted river stretch, a plume area) ------------------------------------------
    def resolve_extent(self, geom) -> ExtentResolution:
        """A line or an area. It is split by every polygon that decides a bureau (county, park,
        sea area, jurisdiction) and each piece is decided as a point there would be; every
        township and grid it touches is listed. A known extent is never ambiguous:

        - pieces in more than one county: a cross-county case, the municipal bureau leads and
          the bureaus of the counties involved co-handle;
        - otherwise the lowest bureau whose area covers every piece leads (the bureau-level
          order of the precedence table; within one county across numbered bureaus, a park's
          edge or the county's sea: the county bureau), and the other bureaus whose areas the
          extent reaches into co-handle."""
        # A line as a thin band, cut square at its ends: a line that ends on a border does not
        # reach across it.
        area = (geom if shapely.get_type_id(geom) in (3, 6)
                else shapely.buffer(geom, 1e-6, cap_style="flat"))
        centre = shapely.centroid(area)
        queries = Queries(
            np.array([centre.x]),
            np.array([centre.y]),
            np.array([1.0]),
            np.array([area], dtype=object),
        )
        hits = self.finder.find(queries)
        every = np.arange(len(hits.query))
        min_area = shapely.area(area) * SLIVER_SHARE
        touched: dict[int, dict[int, object]] = {TOWNSHIP: {}, GRID: {}}
        whole_parks: list[int] = []
        for k in every[np.isin(hits.layer, (TOWNSHIP, GRID, PARK))].tolist():
            layer, row = int(hits.layer[k]), int(hits.row[k])
            part = area if not hits.edge[k] else hits.parts.get(k)
            if layer == PARK:
                if not hits.edge[k]:
                    whole_parks.append(row)
            elif part is area or shapely.area(part) > min_area:  # not just a shared boundary
                touched[layer][row] = part
        grids = tuple(sorted(touched[GRID], key=lambda g: (self.grids["code"][g], g)))
        responsible = self._responsible_grids(touched[GRID], min_area)
        townships = tuple(sorted(touched[TOWNSHIP], key=lambda t: (self.townships["code"][t], t)))
        deciding = every[np.isin(hits.layer, (COUNTY, PARK, SEA, JURISDICTION))]
        every_piece = self._pieces(area, hits, deciding)
        pieces = [p for p in every_piece if p[COUNTY] or p[SEA]]
        if not pieces:
            return ExtentResolution(self._decide(((),) * N_LAYERS), grids, townships,
                                    responsible)
        outside = len(pieces) < len(every_piece)
        counties: set[int] = set()
        for p in pieces:
            counties.update(p[COUNTY])
            for s in p[SEA]:
                county = _row_of(self.counties["code"], self.seas["county_code"][s])
                if county is not None:
                    counties.add(county)
        if len(counties) > 1:
            outcome = self._cross_county(sorted(counties), grids, responsible, townships)
        else:
            outcome = self._extent_lead(
                pieces, next(iter(counties), None), grids, responsible, townships, whole_parks,
                outside,
            )
        if outside:
            outcome = replace(
                outcome,
                flags=(*outcome.flags, "partly_outside"),
                reasons=(
                    *outcome.reasons,
                    "事件范围有一部分不在本市任何县（市）、区或已加载的海域内："
                    "按本市范围内的部分确定牵头机构，范围外部分请联系相邻地区。",
                ),
            )
        return ExtentResolution((outcome,), grids, townships, responsible)

    def _pieces(self, area, hits: Hits, mine: np.ndarray) -> list[Sets]:
        """The sets of polygons covering each piece of `area`, split by every polygon of
        `mine` that only partly covers it (slivers dropped); distinct sets only."""
        full = [k for k in mine if not hits.edge[k]]
        partial = [k for k in mine if hits.edge[k]]
        if len(partial) > MAX_PARTIAL_HITS:
            raise ValueError(f"精度范围过大：圆内有 {len(partial)} 个边界，请缩小精度半径")
        min_area = shapely.area(area) * SLIVER_SHARE
        pieces: list[tuple[object, tuple[int, ...]]] = [(area, ())]
        for k in partial:
            part = hits.parts.get(int(k))
            split = []
            for geom, assigned in pieces:
                inside = shapely.intersection(geom, part)
                rest = shapely.difference(geom, part)
                if shapely.area(inside) > min_area:
                    split.append((inside, (*assigned, int(k))))
                if shapely.area(rest) > min_area:
                    split.append((rest, assigned))
            pieces = split
        out: dict[Sets, None] = {}
        for _, assigned in pieces:
            chosen = [*full, *assigned]
            out.setdefault(_sets(hits.layer[chosen], hits.row[chosen]), None)
        return list(out)

    def _covering(self, sets: Sets) -> set[int]:
        """Every bureau whose area covers a place with these polygons: the park bureau of its
        parks, the bureau of its jurisdictions, its county's bureau (of the county or of its
        sea area), and the municipal bureau."""
        counties, _, _, parks, seas, jurisdictions = sets
        found = {self.park_bureau.get(self.parks["code"][p]) for p in parks}
        found |= {self.jurisdiction_bureau[j] for j in jurisdictions}
        found |= {self.county_bureau.get(self.counties["code"][c]) for c in counties}
        found |= {self.sea_bureau.get(self.seas["county_code"][s]) for s in seas}
        found.add(self.municipal)
        found.discard(None)
        return found  # type: ignore[return-value]

    def _lowness(self, bureau: int) -> tuple[int, int, int]:
        """Sort key, lowest bureau first: the bureau-level order of the precedence table
        (the municipal bureau last), then the longer chain (a bureau below another), then row."""
        level = self.bureaus["level"][bureau]
        rank = 1_000 if level == "municipal" else self._level_rank(bureau)
        return (rank, -len(self.chains[bureau]), bureau)

    def _responsible_grids(self, parts: dict[int, object], min_area: float) -> tuple[int, ...]:
        """The grids answering for some part of an extent by the grid-kind order (code order):
        a grid whose part lies wholly in more specific grids (a comprehensive grid around a
        dedicated one) is touched, but not responsible there."""
        out = []
        for g, part in parts.items():
            better = [o for o in parts if self.grid_rank[o] < self.grid_rank[g]]
            if better:
                rest = shapely.difference(part, shapely.union_all([parts[o] for o in better]))
                if shapely.area(rest) <= min_area:
                    continue
            out.append(g)
        return tuple(sorted(out, key=lambda g: (self.grids["code"][g], g)))

    def _extent_lead(self, pieces: list[Sets], county: int | None, grids, responsible,
                     townships, whole_parks: list[int], partly_outside: bool = False) -> Outcome:
        """One county (with its sea area): the lowest bureau covering every piece leads, the
        bureaus of the pieces co-handle."""
        b = self.bureaus
        common = set.intersection(*(self._covering(p) for p in pieces))
        spanned: dict[int, None] = {}
        parks: set[int] = set()
        seas: set[int] = set()
        for p in pieces:
            parks.update(p[PARK])
            seas.update(p[SEA])
            for o in self.decide(p):
                if o.bureau is not None:
                    spanned.setdefault(o.bureau, None)
        lead = min(common, key=self._lowness) if common else None
        co = tuple(sorted((x for x in spanned if x != lead), key=self._lowness))
        # One grid answers for all of it (the dedicated grid of a plume inside it): that grid.
        grid_row = responsible[0] if len(responsible) == 1 else None
        park_order = tuple(sorted(parks, key=lambda p: (self.park_rank[p], p)))
        park_whole = _best(whole_parks, self.park_rank)
        township = townships[0] if len(townships) == 1 else None
        c, t, g = self.counties, self.townships, self.grids
        extent = "事件范围在本市的部分" if partly_outside else "整个事件范围"
        reasons: list[str] = []
        flags: list[str] = []
        rules: list[tuple[str, str]] = []
        if county is not None:
            text = f"事件范围位于{c['name'][county]}（{c['code'][county]}）"
            if len(townships) > 1:
                text += f"，涉及 {len(townships)} 个乡镇/街道：" + _names(t, townships)
            elif township is not None:
                text += f"{t['name'][township]}（{t['code'][township]}）"
            reasons.append(text)
        if grids:
            reasons.append(self._grids_reason(grids, responsible))
        else:
            flags.append("no_grid")
            reasons.append("范围内没有网格（图层缺口），请人工指定网格")
        if grid_row is not None:
            rules.append(("grid", g["kind"][grid_row]))
        if park_order:
            reasons.append("涉及园区：" + "、".join(self.parks["name"][p] for p in park_order))
        if seas:
            flags.append("sea")
            reasons.append("涉及海域：" + "、".join(self.seas["name"][s] for s in sorted(seas)))
        if lead is None:
            flags.append("no_bureau")
            reasons.append("没有执法机构的辖区覆盖整个事件范围，请检查执法机构数据")
        else:
            level = b["level"][lead]
            rules += [("extent", "lowest_cover"), ("bureau", level)]
            rule = self.precedence.label("bureau_level", level) if level != "municipal" else ""
            if co:
                flags.append("multi_bureau")
                names = "、".join(b["name"][x] for x in co)
                reasons.append(
                    f"牵头：{b['name'][lead]}——事件范围跨越多个执法机构的辖区，其辖区覆盖"
                    f"{extent}，是覆盖全范围的最低一级执法机构；协办：{names}（范围涉及其辖区）。"
                    + (f"规则：{rule}" if rule else "")
                )
            else:
                reasons.append(
                    f"责任执法机构：{b['name'][lead]}——{extent}都在其辖区内。"
                    + (f"规则：{rule}" if rule else "")
                )
        return Outcome(
            county=county,
            township=township,
            grid=grid_row,
            park=park_whole[0] if park_whole else None,
            parks=park_order,
            sea=next(iter(seas)) if len(seas) == 1 else None,
            bureau=lead,
            co_bureaus=co,
            rules=tuple(rules),
            reasons=tuple(reasons),
            flags=tuple(flags),
        )

    def _grids_reason(self, grids, responsible) -> str:
        g = self.grids
        text = f"涉及 {len(grids)} 个网格：{_names(g, grids)}（网格及网格员见列表）"
        under = [x for x in grids if x not in set(responsible)]
        if under:
            text += (f"；其中{_names(g, under)}在范围内的部分全部位于专属或园区网格内，"
                     f"由后者负责。规则：{self.precedence.label('grid_kind', 'dedicated')}")
        return text

    def _cross_county(self, counties: list[int], grids, responsible, townships) -> Outcome:
        names = "、".join(self.counties["name"][c] for c in counties)
        co = tuple(
            b
            for b in (self.sea_bureau.get(self.counties["code"][c]) for c in counties)
            if b is not None
        )
        reasons = [
            f"事件范围涉及{names}，属跨县（市）、区案件。"
            f"规则：{self.precedence.label('extent', 'cross_county')}",
        ]
        if grids:
            reasons.append(f"涉及 {len(townships)} 个乡镇/街道；"
                           + self._grids_reason(grids, responsible))
        return Outcome(
            bureau=self.municipal,
            co_bureaus=co,
            rules=(("bureau", "cross_county"),),
            reasons=tuple(reasons),
            flags=("cross_county",),
        )

    # -- locations ------------------------------------------------------------------------------
    def resolve(self, queries: Queries) -> list[Resolution]:
        """One Resolution per location. Identical inputs share Resolution objects."""
        results, index = self.resolve_indexed(queries)
        return [results[i] for i in index]

    def resolve_indexed(self, queries: Queries) -> tuple[list[Resolution], np.ndarray]:
        """Distinct resolutions and, per location, the index of its resolution (batch form)."""
        exact = queries.radius <= 0
        points = int(exact.sum())
        if self.use_faces and points and (
            points >= faces_mod.MIN_BATCH or faces_mod.FaceIndex.built(self.snapshot)
        ):
            faces = self.faces()
            if faces is not None:
                if len(queries) == 1:
                    return self._resolve_one_by_faces(queries, faces)
                return self._resolve_by_faces(queries, faces, exact)
        return self._resolve_found(queries)

    def faces(self) -> faces_mod.FaceIndex | None:
        """The face raster of this snapshot (built on the first large batch), or None when the
        snapshot has no routing polygons."""
        try:
            return faces_mod.FaceIndex.for_snapshot(self.snapshot, self.finder)
        except ValueError:
            return None

    def _resolve_one_by_faces(self, queries: Queries, faces: faces_mod.FaceIndex,
                              ) -> tuple[list[Resolution], np.ndarray]:
        """`_resolve_by_faces` for one exact point (a click, an API call) without its arrays:
        whatever the store, a point away from every boundary is one cell lookup and a decision
        (remembered per place); near one, the in-memory STRtrees of the same snapshot; exactly
        on one, the store's finder looks again (as in a batch)."""
        face = faces.face_at(float(queries.lon[0]), float(queries.lat[0]))
        if face >= 0:
            return self._face_resolutions(faces, [face]), np.zeros(1, dtype=np.int64)
        return self._resolve_found(queries, faces.finder)

    def _resolve_by_faces(self, queries: Queries, faces: faces_mod.FaceIndex,
                          exact: np.ndarray) -> tuple[list[Resolution], np.ndarray]:
        """Points away from every boundary by the face raster (one decision per face present),
        the rest (near a boundary, discs, non-finite) by the finder."""
        n = len(queries)
        face = np.full(n, -1, dtype=np.int32)
        which = np.flatnonzero(exact)
        face[which] = faces.lookup(queries.lon[which], queries.lat[which])
        known = face >= 0
        present = np.flatnonzero(np.bincount(face[known], minlength=faces.count))
        results = self._face_resolutions(faces, present)
        slot = np.full(faces.count, -1, dtype=np.int64)
        slot[present] = np.arange(len(present))
        index = np.empty(n, dtype=np.int64)
        index[known] = slot[face[known]]
        rest = np.flatnonzero(~known)
        if len(rest):
            # Exact points: the in-memory lookup (a disc's pieces stay the store's to cut).
            bulk = faces.finder if exact[rest].all() else None
            more, sub = self._resolve_found(queries.subset(rest), bulk)
            index[rest] = sub + len(results)
            results.extend(more)
        return results, index

    def face_ids(self, queries: Queries, faces: faces_mod.FaceIndex) -> np.ndarray:
        """Per location the face of `faces` whose polygon sets it has, or -1: a disc, a point
        on a boundary or among more than two polygons of a layer, or sets no face has. A point
        away from every boundary by the raster; one near a boundary by the in-memory finder,
        its sets then matched to a face's (the same sets make the same decision, so such a
        point shares that face's answer)."""
        n = len(queries)
        face = np.full(n, -1, dtype=np.int32)
        which = np.flatnonzero(queries.radius <= 0)
        face[which] = faces.lookup(queries.lon[which], queries.lat[which])
        near = which[face[which] < 0]
        if not len(near):
            return face
        hits = faces.finder.find(queries.subset(near))
        slow, signature = _signatures(hits, len(near))
        fast = np.flatnonzero(~slow)
        if len(fast):
            first, last = signature[fast, :N_LAYERS], signature[fast, N_LAYERS:]
            face[near[fast]] = faces.of_signatures(
                np.hstack([np.minimum(first, last), np.maximum(first, last)]))
        return face

    def _face_resolutions(self, faces: faces_mod.FaceIndex, present: np.ndarray | list[int]
                          ) -> list[Resolution]:
        """The Resolution of each face in `present`, decided once per face and raster."""
        memo = self._face_results
        if memo is None or memo[0] is not faces:
            memo = self._face_results = (faces, np.full(faces.count, None, dtype=object))
        known = memo[1]
        out = known[present]  # one gather, not a loop: most faces were decided before
        for k in np.flatnonzero(np.equal(out, None)).tolist():
            f = present[k]
            out[k] = known[f] = Resolution(self.decide(faces.face_sets(f)))
        return out.tolist()

    def _resolve_found(self, queries: Queries, finder=None) -> tuple[list[Resolution], np.ndarray]:
        """Every location through the finder's (location, polygon) pairs (`finder`: another
        finder over the same snapshot, e.g. the in-memory one next to the face raster, for the
        bulk lookup; a point exactly on a boundary is looked at again by the store's)."""
        n = len(queries)
        finder = finder or self.finder
        hits = finder.find(queries)
        if n <= SMALL_BATCH:  # a click or a typed point: grouping costs more than it saves
            results = [
                self._resolve_slow(queries, hits, q, np.flatnonzero(hits.query == q))
                for q in range(n)
            ]
            return results, np.arange(n)
        slow, signature = _signatures(hits, n)
        results: list[Resolution] = []
        index = np.empty(n, dtype=np.int64)
        fast = np.flatnonzero(~slow)
        if len(fast):
            uniq, inverse = _unique_rows(signature[fast])
            memo = self._by_signature
            if len(memo) > 200_000:
                memo.clear()
            for sig in map(tuple, uniq.tolist()):
                res = memo.get(sig)
                if res is None:
                    res = memo[sig] = Resolution(self.decide(_signature_sets(sig)))
                results.append(res)
            index[fast] = inverse
        # The hits of the slow locations, grouped by location (one sort, not a scan each).
        slow_hits = np.flatnonzero(slow[hits.query])
        slow_hits = slow_hits[np.argsort(hits.query[slow_hits], kind="stable")]
        slow_q = np.flatnonzero(slow)
        starts = np.searchsorted(hits.query[slow_hits], slow_q)
        ends = np.searchsorted(hits.query[slow_hits], slow_q, side="right")
        for q, a, b in zip(slow_q.tolist(), starts, ends, strict=True):
            index[q] = len(results)
            results.append(self._resolve_slow(queries, hits, q, slow_hits[a:b]))
        return results, index

    def _resolve_slow(self, queries: Queries, hits: Hits, q: int, mine: np.ndarray) -> Resolution:
        if not hits.edge[mine].any():
            sets = _sets(hits.layer[mine], hits.row[mine])
            return Resolution(self.decide(sets))
        if queries.radius[q] <= 0:
            # Exactly on a boundary: look again with a tiny disc to see both sides.
            wider = Queries.build(queries.lon[q : q + 1], queries.lat[q : q + 1], [EDGE_RADIUS_M])
            # The store's own finder: how a disc is split at a boundary is the store's answer.
            again = self.finder.find(wider)
            return self._resolve_disc(wider.discs[0], again, np.arange(len(again.query)))
        return self._resolve_disc(queries.discs[q], hits, mine)

    def _resolve_disc(self, disc, hits: Hits, mine: np.ndarray) -> Resolution:
        """Split the disc by every polygon that only partly covers it; decide each piece."""
        outcomes: dict[tuple, Outcome] = {}
        for sets in self._pieces(disc, hits, mine):
            for outcome in self.decide(sets):
                outcomes.setdefault(outcome.key(), outcome)
        # The same candidates in the same order whatever order the store listed the hits in.
        ordered = sorted(outcomes.values(), key=lambda o: [-1 if v is None else v for v in o.key()])
        return Resolution(tuple(ordered))


def frame_columns(frame) -> dict[str, list]:
    """A frame's columns (all but the geometry) as plain lists."""
    return {col: frame[col].tolist() for col in frame.columns if col != "geometry"}


def _signatures(hits: Hits, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per location of `hits` (n of them): whether it must go the slow way (on an edge, or more
    than two polygons of a layer), and its signature: per layer the first and the last polygon
    touching it (-1: none). With at most two per layer, {first, last} is the exact set."""
    slow = np.zeros(n, dtype=bool)
    slow[hits.query[hits.edge]] = True
    signature = np.full((n, 2 * N_LAYERS), -1, dtype=np.int64)
    for layer in range(N_LAYERS):
        mine = hits.layer == layer
        q, r = hits.query[mine], hits.row[mine]
        slow |= np.bincount(q, minlength=n) > 2
        signature[q[::-1], layer] = r[::-1]  # with repeated indices the last write wins
        signature[q, layer + N_LAYERS] = r
    return slow, signature


def _signature_sets(sig: tuple[int, ...]) -> Sets:
    """The polygon sets of a (fast) signature."""
    return tuple(_pair(sig[k], sig[k + N_LAYERS]) for k in range(N_LAYERS))


def _pair(first: int, last: int) -> tuple[int, ...]:
    """The polygon set of one layer from the first and last of at most two rows (-1: none)."""
    if first < 0:
        return ()
    if first == last:
        return (first,)
    return (first, last) if first < last else (last, first)


def _best(rows: Sequence[int], rank: Sequence[int]) -> Sequence[int]:
    if len(rows) <= 1:  # most places: nothing to choose between
        return rows
    top = min(rank[r] for r in rows)
    return [r for r in rows if rank[r] == top]


def _sets(layers: np.ndarray, rows: np.ndarray) -> Sets:
    grouped: dict[int, set[int]] = defaultdict(set)
    for layer, row in zip(layers.tolist(), rows.tolist(), strict=True):
        grouped[layer].add(row)
    return tuple(tuple(sorted(grouped.get(k, ()))) for k in range(N_LAYERS))


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(rows, axis=0) through a 64-bit hash (much faster), verified exactly."""
    hashed = faces_mod.row_hash(rows)
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    uniq = rows[first]
    if not np.array_equal(uniq[inverse], rows):  # a hash collision: take the slow, exact way
        uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _row_of(codes, code) -> int | None:
    matches = np.flatnonzero(np.asarray(codes) == code)
    return int(matches[0]) if len(matches) else None


def _names(frame, rows: Sequence[int]) -> str:
    shown = "、".join(f"{frame['name'][r]}（{frame['code'][r]}）" for r in rows[:NAMES_SHOWN])
    return shown + (f" 等 {len(rows)} 个" if len(rows) > NAMES_SHOWN else "")


def _name(frame, row: int | None) -> str | None:
    return None if row is None else frame["name"][row]

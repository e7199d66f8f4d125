"""What the user last pointed at (a click on the map or a search hit), its routing answer, the
card that shows it and what to highlight on the map. The newer of the two wins; it is routed
again at every run, so changing the accuracy or a new generation updates the card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from geo.disc import accuracy_disc
from grids.routing import Router, RoutingInputError
from layers.search import Hit
from ui import cards, mapview
from ui.page import Click, Options, new_view


@dataclass
class Selection:
    card: str  # HTML
    answer: dict | None  # the routing answer (JSON of `gridmap route`), if any
    highlight: object  # folium.FeatureGroup
    worker_id: str | None = None


def geometries(router: Router, layer: str, codes) -> list:
    frame = router.snapshot[layer]
    key = "code" if "code" in frame else "grid_code"
    rows = frame[frame[key].astype(str).isin([str(c) for c in codes])]
    return list(rows.geometry.values)


def worker_grids(router: Router, worker_id: str) -> list[str]:
    w = router.snapshot["workers"]
    return w.loc[w["id"].astype(str) == worker_id, "grid_code"].astype(str).tolist()


def _answer_grids(answer: dict) -> list[str]:
    codes = [answer["grid"]["code"]] if answer.get("grid") else []
    codes += [c["grid"]["code"] for c in answer.get("candidates", []) if c.get("grid")]
    return list(dict.fromkeys(codes))


def track(hit: Hit | None, click: Click | None, options: Options,
          searched: bool = False) -> dict | None:
    """Remember which of click and hit is newer; returns a view to move to for a new hit.
    A click is new by its number too: the same marker clicked again after a search hit is
    selected again. `searched`: a search was typed; one that finds nothing takes the card of
    the previous hit away (its answer is not this search's)."""
    ss = st.session_state
    view = None
    if click is not None and tuple(click) != ss.get("_seen_click"):
        ss["_seen_click"] = tuple(click)
        ss["_selected"] = ("click", (click[0], click[1]))
    hit_key = (hit.kind, hit.code) if hit else None
    if hit_key != ss.get("_seen_hit"):
        ss["_seen_hit"] = hit_key
        if hit is None and searched and (ss.get("_selected") or ("",))[0] == "hit":
            ss.pop("_selected")
        if hit is not None:
            ss["_selected"] = ("hit", hit)
            view = new_view(bbox=hit.bbox, basemap=options.basemap) if hit.bbox else new_view(
                point=(hit.lon, hit.lat), zoom=16, basemap=options.basemap)
            ss["_view"] = view
    return ss.get("_view")


def current(svc, actor, router: Router, options: Options,
            bureau_names: dict[str, str]) -> Selection | None:
    chosen = st.session_state.get("_selected")
    if chosen is None:
        return None
    kind, what = chosen
    if kind == "click":
        lat, lng = what
        try:
            answer = svc.route(actor, lng, lat, options.basemap.click_crs, options.accuracy_m)
        except RoutingInputError as exc:
            return Selection(cards.error_card(str(exc)), None,
                             mapview.highlight_group(options.basemap))
        return Selection(cards.route_card(answer, bureau_names), answer,
                         _highlight(router, options, answer))
    hit: Hit = what
    if hit.kind == "worker":
        codes = worker_grids(router, hit.code)
        group = mapview.highlight_group(options.basemap, geometries(router, "grids", codes))
        return Selection(cards.hit_card(hit), None, group, worker_id=hit.code)
    if hit.is_area:
        # A township, park, grid or community is answered as the whole area: its bureau and
        # every grid and worker in it (as at intake), the area outlined.
        answer = svc.route_area(actor, hit.kind, hit.code)
        group = mapview.highlight_group(options.basemap, [router.area_of(hit.kind, hit.code)])
    else:  # an entity, an address or a road: a point
        answer = svc.route(actor, hit.lon, hit.lat, "wgs84", 0.0)
        group = _highlight(router, options, answer)
    return Selection(cards.hit_card(hit, answer, bureau_names), answer, group)


def _highlight(router: Router, options: Options, answer: dict):
    lon, lat = answer["point"]["cgcs2000"]
    shapes = geometries(router, "grids", _answer_grids(answer))
    radius = float(answer["point"]["input"].get("accuracy_m") or 0)
    if radius > 0 and np.isfinite(radius):
        shapes.append(accuracy_disc(lon, lat, radius).exterior)
    return mapview.highlight_group(options.basemap, shapes, [(lon, lat)])

"""The 绩效考评 page's pieces: the period presets, the tables' column formats, and the
choropleth of on-time share by township (folium, offline: no tiles unless a basemap is
configured, no colormap library — branca's would load d3 from a CDN)."""

from __future__ import annotations

from datetime import date, timedelta

import folium
import numpy as np
import pandas as pd
import shapely

from grids.stats import Period, percent
from ui import assets, cards, mapview
from ui.basemap import Basemap

PRESETS = ("近 30 天", "本月", "上月", "本年", "自定义")

# On-time share → fill colour, from the best band down; no case: grey.
BANDS = (
    (0.95, "#1a9850", "≥ 95%"),
    (0.90, "#91cf60", "90%–95%"),
    (0.80, "#fee08b", "80%–90%"),
    (0.60, "#fc8d59", "60%–80%"),
    (0.00, "#d73027", "< 60%"),
)
NO_CASES = ("#d9d9d9", "无受理案件")
MAP_HEIGHT = 560


def preset_period(choice: str, today: date, since: date | None = None,
                  until: date | None = None) -> Period:
    """The period of a preset (Beijing dates; `since`/`until` for 自定义)."""
    if choice == "本月":
        return Period(today.replace(day=1), today)
    if choice == "上月":
        last = today.replace(day=1) - timedelta(days=1)
        return Period.month(last.year, last.month)
    if choice == "本年":
        return Period(today.replace(month=1, day=1), today)
    if choice == "自定义":
        return Period(since or today, until or today)
    return Period.last_days(30, today)


def share_color(share) -> str:
    if share is None or pd.isna(share):
        return NO_CASES[0]
    return next(color for floor, color, _ in BANDS if float(share) >= floor)


def styled(table: pd.DataFrame) -> pd.DataFrame:
    """A display table (grids.stats.display_table) for st.dataframe: the share as a
    percentage and hours with one decimal, as text, "—" where there is no value (Streamlit
    writes "None" for a missing number, whatever the format; the Excel keeps numbers)."""
    formats = {"按时率（%）": "{:.1f}%", "结案用时中位数（小时）": "{:.1f}"}
    out = table.copy()
    for column, fmt in formats.items():
        if column in out:
            out[column] = ["—" if pd.isna(v) else fmt.format(v) for v in out[column]]
    return out


def table_height(rows: int, most: int = MAP_HEIGHT) -> int:
    """Pixels for a table of `rows` rows and its header, at most `most`."""
    return min(most, 35 * (rows + 1) + 3)


def tooltip(row: dict) -> str:
    """What hovering a township says (plain text; escaped for the map by the caller)."""
    where = f"{row['name']}（{row['county_name']}）" if row.get("county_name") else row["name"]
    if not row["received"]:
        return f"{where}：统计期内无受理案件"
    pct = percent(row["on_time_share"])
    return (f"{where}：按时率 {pct:.1f}%｜受理 {row['received']} 件，已结案 {row['closed']}，"
            f"超时 {row['overdue']}，未结且已超时 {row['open_overdue']}")


def choropleth(basemap: Basemap, townships, table: pd.DataFrame) -> folium.Map:
    """Townships (the current layer, EPSG:4490) filled by on-time share of `table` (the
    townships figures of a stats result); the view fits the townships with cases (all when
    none has). Every text on the map goes through `cards.js_html`."""
    figures = table[table["code"] != ""].set_index("code")
    features = []
    active = []
    for code, name, county, geom in zip(townships["code"].astype(str), townships["name"],
                                        townships.get("county_name", [""] * len(townships)),
                                        townships.geometry, strict=True):
        if geom is None or geom.is_empty:
            continue
        if code in figures.index:
            row = {**figures.loc[code].to_dict(), "name": name}
        else:
            row = {"name": name, "county_name": county, "received": 0, "on_time_share": None}
        if row["received"]:
            active.append(geom)
        shape = shapely.set_precision(shapely.simplify(geom, 0.0002), 1e-6)
        if basemap.shifted:
            shape = shapely.transform(shape, lambda xy: np.column_stack(
                basemap.to_display(xy[:, 0], xy[:, 1])))
        features.append({
            "type": "Feature", "id": code,
            "geometry": shapely.geometry.mapping(shape),
            "properties": {"tip": cards.js_html(tooltip(row)),
                           "fill": share_color(row["on_time_share"] if row["received"]
                                               else None)},
        })
    shown = active or [f for f in townships.geometry if f is not None and not f.is_empty]
    minx, miny, maxx, maxy = (shapely.total_bounds(np.asarray(shown, dtype=object))
                              if shown else (120.5, 31.6, 121.9, 32.7))
    m = mapview._base_map(basemap, (miny + maxy) / 2, (minx + maxx) / 2, 9)
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name=cards.js_html("按时率"),
        style_function=lambda f: {"color": "#555555", "weight": 0.8, "fillOpacity": 0.75,
                                  "fillColor": f["properties"]["fill"]},
        highlight_function=lambda _f: {"weight": 2.5, "color": "#000000"},
        tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
        zoom_on_click=False,
    ).add_to(m)
    basemap.fit(m, (minx, miny, maxx, maxy))
    assets.localize(m)
    assets.trim_map_assets(m)
    return m


def legend_html() -> str:
    """The colour key under the map (constant text)."""
    items = [*((color, label) for _, color, label in BANDS), NO_CASES]
    chips = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:0.9rem">'
        f'<span style="display:inline-block;width:1.1rem;height:0.8rem;background:{color};'
        f'border:1px solid #777;margin-right:0.3rem"></span>{cards.esc(label)}</span>'
        for color, label in items)
    return f'<div class="gm-stats-legend" style="font-size:0.85rem">按时率：{chips}</div>'


def township_shapes(snapshot):
    """The townships of the current layers with their county's name (for the tooltips of
    townships without cases)."""
    towns = snapshot["townships"]
    counties = dict(zip(snapshot["counties"]["code"].astype(str), snapshot["counties"]["name"],
                        strict=True))
    return towns.assign(county_name=towns["county_code"].astype(str).map(counties).fillna(""))

"""Incidents at intake: route them and turn them into immutable records plus first events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import geopandas as gpd
import pandas as pd

from grids.routing import Router, RoutingInputError
from layers.incidents import Event
from layers.schema import STORE_EPSG


def now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _code(answer: dict, key: str) -> str | None:
    return answer[key]["code"] if answer.get(key) else None


def record_from_answer(fields: dict, answer: dict, actor: str, created_at: str) -> dict:
    """One incident record: the location as given and as routed, and the whole answer."""
    lon, lat = answer["point"]["cgcs2000"]
    return {
        "id": str(fields["id"]),
        "reported_at": str(fields["reported_at"]),
        "source": str(fields.get("source", "")),
        "category": str(fields["category"]),
        "description": str(fields.get("description", "")),
        "reporter": str(fields.get("reporter", "")),
        "given_x": answer["point"]["input"]["x"],
        "given_y": answer["point"]["input"]["y"],
        "given_crs": answer["point"]["input"]["crs"],
        "accuracy_m": answer["point"]["input"]["accuracy_m"],
        "extent_wkt": fields.get("extent_wkt"),
        "generation": answer["version"]["generation"],
        "route_status": answer["status"],
        "county_code": _code(answer, "county"),
        "township_code": _code(answer, "township"),
        "grid_code": _code(answer, "grid"),
        "park_code": _code(answer, "park"),
        "bureau_code": _code(answer, "bureau"),
        "answer": json.dumps(answer, ensure_ascii=False),
        "created_at": created_at,
        "created_by": actor,
        "geometry": (lon, lat),
    }


def records_from_table(
    router: Router, frame: pd.DataFrame, actor: str
) -> tuple[gpd.GeoDataFrame, list[Event], list[tuple[int, str]]]:
    """Route every row of an incident table (id, reported_at, category, description, lon, lat,
    crs, accuracy_m, source). Returns the records, their 'create' events, and the rows that
    could not be routed with the reason (kept aside, never dropped silently)."""
    created = now_iso()
    rows, bad = [], []
    for i, fields in enumerate(frame.to_dict("records")):
        try:
            answer = router.route(
                float(fields["lon"]),
                float(fields["lat"]),
                str(fields.get("crs") or "wgs84"),
                float(fields.get("accuracy_m") or 0.0),
            )
        except (RoutingInputError, ValueError) as exc:
            bad.append((i, str(exc)))
            continue
        rows.append(record_from_answer(fields, answer, actor, created))
    records = pd.DataFrame(rows)
    geometry = gpd.points_from_xy(*zip(*records.pop("geometry"), strict=True)) if rows else []
    records = gpd.GeoDataFrame(records, geometry=geometry, crs=STORE_EPSG)
    events = [
        Event(r["id"], r["reported_at"], actor, "create", "reported", reason="受理登记")
        for r in rows
    ]
    return records, events, bad


def sample_events(records: gpd.GeoDataFrame, statuses: pd.Series, actor: str) -> list[Event]:
    """The later events of sample incidents whose sample status is past 'reported'."""
    path = {"dispatched": ["dispatched"], "closed": ["dispatched", "verified", "closed"]}
    events = []
    for rec, status in zip(records.itertuples(index=False), statuses, strict=True):
        at = pd.Timestamp(rec.reported_at)
        for step, state in enumerate(path.get(status, []), start=1):
            events.append(
                Event(
                    rec.id,
                    (at + pd.Timedelta(minutes=20 * step)).isoformat(),
                    actor,
                    "transition",
                    state,
                    reason="示例数据",
                )
            )
    return events


def load_incident_file(
    store, router: Router, path, actor: str
) -> tuple[int, list[tuple[int, str]]]:
    """Route and store every incident of a CSV (the sample's incidents.csv)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    records, events, bad = records_from_table(router, frame, actor)
    known = frame.set_index("id")["status"] if "status" in frame else pd.Series(dtype=str)
    events += sample_events(records, records["id"].map(known).fillna("reported"), actor)
    store.add_incidents(records, events)
    return len(records), bad

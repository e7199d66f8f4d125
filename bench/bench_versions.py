"""Drafts and publishing speed (run by hand): a park redraw on the Nantong sample, on both
stores.

    .venv/bin/python bench/bench_versions.py                # both stores, a throwaway PostGIS
    .venv/bin/python bench/bench_versions.py --skip-postgis

The sample layers (layers/demo.py: 2,544 grids, 10,000 supervised entities) are imported into a
new GeoPackage and a new PostGIS database, with the sample's cases. A planner then redraws the
park with the most entities around it (its boundary moved out by `--buffer-m` metres) through
the service layer, as the planner page does, and times:

- `save_draft`: the whole parks layer saved (edits computed against the current layer);
- `impact` cold (the first preview of a generation: the current layers' in-memory finder is
  built) and warm (`--repeat` times: every preview while editing), median and minimum: every
  entity routed in one batch with the current and with the proposed layers, open cases, cut
  grids, areas;
- the same for a change that can reach every place (a numbered bureau's area withdrawn):
  all 10,000 entities routed both ways;
- `publish_draft`: the checks (grids/checks.py, as far as they exist) and the commit of the
  new generation (only the changed park gets a new row);
- `gridmap route --at` style lookup: `Store.generation_at` + routing one point as of the time
  before the publish.

Writes the figures with the machine's details to bench/results/versions-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grids.access import Actor  # noqa: E402
from grids.cases import load_incident_file  # noqa: E402
from grids.routing import Router  # noqa: E402
from grids.service import Gridmap  # noqa: E402
from layers.demo import build_sample  # noqa: E402
from layers.importer import import_path  # noqa: E402
from layers.store import open_store  # noqa: E402

BJ = ZoneInfo("Asia/Shanghai")
RESULTS = ROOT / "bench" / "results"
PLANNER = Actor("bench-planner", "planner", "规划员（基准测试）")


def timed(fn, repeat: int) -> tuple[object, list[float]]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return out, times


def figures(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "runs": len(times)}


def measure(url: str, label: str, files: Path, args) -> dict:
    store = open_store(url, create=True)
    import_path(store, files)
    load_incident_file(store, Router(store), files / "incidents.csv", actor="基准测试")
    store.close()
    svc = Gridmap(url)
    try:
        snap = svc.store().snapshot()
        entities = snap["entities"]
        parks = snap["parks"]
        bureaus = snap["bureaus"]
        with_bureau = set(bureaus.loc[bureaus["level"] == "park", "park_code"])
        near = {str(c): int(shapely.intersects(shapely.buffer(g, 0.02),
                                               entities.geometry.values).sum())
                for c, g in zip(parks["code"], parks.geometry.values, strict=True)}
        # A park with its own bureau (its entities change hands), the most entities around
        # it first, whose redraw the checks accept.
        for code in sorted(with_bureau, key=lambda c: -near.get(c, 0)):
            draft = svc.create_draft(PLANNER, "parks",
                                     f"基准测试：{code} 边界外扩 {args.buffer_m} 米")
            proposed = svc.draft_features(PLANNER, draft.id, "parks")
            row = proposed["code"] == code
            degrees = args.buffer_m / 111_000.0
            proposed.loc[row, "geometry"] = [shapely.buffer(g, degrees, join_style="mitre")
                                             for g in proposed.loc[row, "geometry"]]
            started = time.perf_counter()
            draft = svc.save_draft(PLANNER, draft.id, proposed)
            save_s = time.perf_counter() - started
            if not any(f.severity == "error" for f in svc.check_draft(PLANNER, draft.id)):
                break
            svc.discard_draft(PLANNER, draft.id)
        impact, cold = timed(lambda: svc.impact(PLANNER, draft.id), 1)
        _, warm = timed(lambda: svc.impact(PLANNER, draft.id), args.repeat)
        excel, excel_t = timed(lambda: svc.impact_excel(PLANNER, draft.id), 1)
        before = svc.store().generations()[-1]
        found, checks = timed(lambda: svc.check_draft(PLANNER, draft.id), 1)
        warnings = [f.kind for f in found]
        gen, publish = timed(lambda: svc.publish_draft(PLANNER, draft.id, warnings), 1)
        x, y = (float(v) for v in shapely.get_coordinates(
            impact.areas["added_geometry"].iat[0].representative_point())[0])
        _, as_of = timed(lambda: svc.route(PLANNER, x, y, "cgcs2000", at=before.created_at),
                         args.repeat)
        # A change that can reach every place (a numbered bureau's area withdrawn: its county
        # bureau covers it again): all 10,000 entities are routed both ways.
        areas = svc.create_draft(PLANNER, "jurisdictions", "基准测试：撤销一个执法辖区")
        rows = svc.draft_features(PLANNER, areas.id, "jurisdictions")
        areas = svc.save_draft(PLANNER, areas.id, rows.iloc[1:])
        every, every_cold = timed(lambda: svc.impact(PLANNER, areas.id), 1)
        _, every_warm = timed(lambda: svc.impact(PLANNER, areas.id), args.repeat)
        svc.discard_draft(PLANNER, areas.id)
        result = {
            "store": label, "park": code, "buffer_m": args.buffer_m,
            "entities": int(impact.entities_routed), "grids": len(snap["grids"]),
            "changed_entities": len(impact.entities), "cases": len(impact.cases),
            "cut_grids": len(impact.cut_grids),
            "added_m2": round(impact.summary["added_m2"]),
            "save_draft_s": round(save_s, 4),
            "impact_cold_s": round(cold[0], 4), "impact_warm": figures(warm),
            "entities_in_reach": impact.summary["entities_in_reach"],
            "impact_excel_s": round(excel_t[0], 4), "excel_bytes": len(excel),
            "every_entity": {"in_reach": every.summary["entities_in_reach"],
                             "changed": len(every.entities), "cold_s": round(every_cold[0], 4),
                             "warm": figures(every_warm)},
            "checks_s": round(checks[0], 4), "warnings": len(warnings),
            "publish_s": round(publish[0], 4), "generation": gen.id,
            "changes": gen.changes.get("parks"),
            "route_as_of": figures(as_of),
        }
        print(json.dumps(result, ensure_ascii=False))
        return result
    finally:
        svc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--buffer-m", type=float, default=500.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", help="an empty PostGIS database (default: a throwaway cluster)")
    parser.add_argument("--skip-postgis", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="gridmap-bench-versions-"))
    build_sample(work / "files")
    results = [measure(str(work / "bench.gpkg"), "GeoPackage", work / "files", args)]
    pg_version = None
    if not args.skip_postgis:
        cluster = None
        if args.url:
            url = args.url
        else:
            from tests.pg import Cluster

            cluster = Cluster().start()
            url = cluster.new_database("bench_versions")
        try:
            from layers.postgis import migrate

            migrate(url)
            import psycopg2

            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                pg_version = cur.fetchone()[0]
            results.append(measure(url, "PostGIS", work / "files", args))
        finally:
            if cluster:
                cluster.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(BJ)
    report = {
        "benchmark": "bench/bench_versions.py", "at": stamp.isoformat(timespec="seconds"),
        "args": vars(args), "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "postgresql": pg_version,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "results": results,
    }
    path = RESULTS / f"versions-{stamp:%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written {path.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

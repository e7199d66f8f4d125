"""Stores written before the state table kept what 绩效考评 needs (the longest stint per state,
times sent back, report time, township) are upgraded in place: the GeoPackage by schema 4,
PostGIS by migration 0004, both rebuilding each case's state from its events. Afterwards the
per-case facts are those of a store that kept them from the start (the hand-counted cases of
test_stats.py), and new events keep them up to date."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from layers.importer import import_path
from layers.incidents import Event
from layers.schema import LAYERS
from layers.store import open_store
from tests.test_stats import NOW, add_cases, limits, period_query

NEW_COLUMNS = ("since_epoch", "reported_epoch", "stays", "returns", "township_code")


def facts(store, now: str = NOW.isoformat()) -> pd.DataFrame:
    return store.case_facts(period_query(), limits(), now=now).set_index(
        "incident_id").sort_index()


def back_to_schema_3(path) -> None:
    """A GeoPackage as schema 3 wrote it: no versions (5), no attachments, visits or the
    state's newer columns (4)."""
    conn = sqlite3.connect(path)
    for name in LAYERS:
        conn.execute(f'DROP VIEW "{name}_current"')
    conn.execute("DELETE FROM gpkg_geometry_columns WHERE table_name LIKE '%_current'")
    gone = ("drafts", "draft_history", "attachments", "visits")
    conn.execute(f"DELETE FROM gpkg_contents WHERE table_name LIKE '%_current' OR table_name IN "
                 f"({', '.join('?' * len(gone))})", gone)
    for table in gone:
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE generations DROP COLUMN actor")
    conn.execute("ALTER TABLE generations DROP COLUMN changes")
    conn.execute("DROP INDEX incident_state_deadline")
    for column in NEW_COLUMNS:
        conn.execute(f"ALTER TABLE incident_state DROP COLUMN {column}")
    conn.execute("UPDATE gridmap_meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def before_0004(url: str) -> None:
    """A PostGIS database as migrations 0001–0003 (and 0005) left it."""
    from layers.postgis import connect

    conn = connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE attachments, visits")
        cur.execute("DROP INDEX incident_state_deadline")
        cur.execute("ALTER TABLE incident_state "
                    + ", ".join(f"DROP COLUMN {c}" for c in NEW_COLUMNS))
        cur.execute("DELETE FROM schema_migrations WHERE version = '0004_attachments'")
    conn.close()


def state_of(store, incident_id: str) -> dict:
    """The new columns of a case's state row, as the store holds them."""
    sql = (f"SELECT {', '.join(NEW_COLUMNS)} FROM incident_state WHERE incident_id = "
           + ("?" if store.url.endswith(".gpkg") else "%s"))
    if store.url.endswith(".gpkg"):
        row = store.conn.execute(sql, (incident_id,)).fetchone()
    else:
        with store.conn, store.conn.cursor() as cur:
            cur.execute(sql, (incident_id,))
            row = cur.fetchone()
    return dict(zip(NEW_COLUMNS, row, strict=True))


@pytest.mark.parametrize("kind", ["gpkg", "postgis"])
def test_an_older_store_gets_its_case_state_rebuilt(kind, new_store, world_dir):
    store = new_store(kind)
    import_path(store, world_dir)
    add_cases(store)
    want = facts(store)
    assert len(want) == 9 and want["late"].sum() == 4
    if kind == "gpkg":
        path = store.path
        store.close()
        back_to_schema_3(path)
        store = open_store(str(path))
        assert store.conn.execute("SELECT value FROM gridmap_meta WHERE key = "
                                  "'schema_version'").fetchone()[0] == "5"
    else:
        from layers.postgis import migrate

        before_0004(store.url)
        assert migrate(store.url) == ["0004_attachments"]
        store = open_store(store.url)
    try:
        pd.testing.assert_frame_equal(facts(store), want)
        c3 = state_of(store, "C3")  # referred: transferred 21 h, handling 27 h
        stays = c3["stays"] if isinstance(c3["stays"], dict) else json.loads(c3["stays"])
        assert stays["transferred"] == 21 * 3600 and stays["handling"] == 27 * 3600
        assert state_of(store, "C6")["returns"] == 1  # sent back once
        # New events keep the rebuilt columns: C4, dispatched since 11-05 14:10, is closed.
        store.append_events([Event("C4", "2026-11-05T18:10:00+08:00", "测试", "transition",
                                   "closed")])
        after = facts(store)
        assert after.loc["C4", "status"] == "closed" and not after.loc["C4", "late_now"]
        assert after.loc["C4", "late"]  # 4 h in dispatched: over its 2 h, closed or not
        assert after.loc["C4", "hours_to_close"] == pytest.approx(4 + 10 / 60)  # from 14:00
    finally:
        store.close()

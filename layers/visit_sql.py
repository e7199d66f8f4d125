"""What both stores share about patrol visits in SQL: the columns, the filters, and the last
visit per entity (for "last visited" and the coverage of a leader's units)."""

from __future__ import annotations

from layers.store import VISIT_FIELDS, VisitQuery

VISIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("entity_id", "TEXT NOT NULL"),
    ("grid_code", "TEXT"),
    ("worker_id", "TEXT"),
    ("actor", "TEXT NOT NULL"),
    ("visited_at", "TEXT NOT NULL"),
    ("visited_epoch", "REAL NOT NULL"),
    ("lon", "REAL"),
    ("lat", "REAL"),
    ("accuracy_m", "REAL"),
    ("distance_m", "REAL"),
    ("checklist", "TEXT NOT NULL"),
    ("note", "TEXT NOT NULL"),
    ("result", "TEXT NOT NULL"),
    ("incident_id", "TEXT"),
    ("created_at", "TEXT NOT NULL"),
)
LAST = ["entity_id", "last_epoch", "last_at", "visits"]
assert [n for n, _ in VISIT_COLUMNS] == list(VISIT_FIELDS[1:])


def _among(column: str, values, ph: str, clauses: list[str], params: list) -> None:
    if values is None:
        return
    values = list(values)
    if not values:
        clauses.append("1 = 0")
        return
    clauses.append(f"{column} IN ({', '.join([ph] * len(values))})")
    params.extend(values)


def select(query: VisitQuery, ph: str) -> tuple[str, list]:
    clauses: list[str] = []
    params: list = []
    _among("entity_id", query.entity_ids, ph, clauses, params)
    _among("grid_code", query.grid_codes, ph, clauses, params)
    if query.since_epoch is not None:
        clauses.append(f"visited_epoch >= {ph}")
        params.append(float(query.since_epoch))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    limit = ""
    if query.limit is not None:
        limit = f" LIMIT {ph}"
        params.append(int(query.limit))
    return (f"SELECT {', '.join(VISIT_FIELDS)} FROM visits{where} "
            f"ORDER BY visited_epoch DESC, id DESC{limit}", params)


def last(grid_codes: tuple[str, ...], ph: str) -> tuple[str, list]:
    clauses: list[str] = []
    params: list = []
    _among("grid_code", grid_codes, ph, clauses, params)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    # The time text of the latest visit goes with its epoch (max of a (epoch, text) pair is not
    # portable): join back on the maximum.
    return (f"SELECT v.entity_id, v.visited_epoch, max(v.visited_at), m.n FROM visits v JOIN "
            f"(SELECT entity_id, max(visited_epoch) AS e, count(*) AS n FROM visits{where} "
            "GROUP BY entity_id) m ON m.entity_id = v.entity_id AND m.e = v.visited_epoch "
            "GROUP BY v.entity_id, v.visited_epoch, m.n", params)

"""The facts of each case that performance figures are counted from (grids/stats.py), computed
in SQL by both stores from the append-only record, one row per case.

How a case's record is read (the same rules the live deadlines of the case list follow):

- A case enters its first state (`reported`) at the time it was reported (`reported_utc` of
  `incident_state`); each event then puts it in the event's status at the event's time `at`.
- A **stint** is one uninterrupted stay in one state: events that keep the status (a
  reassignment, a linked duplicate) do not end it; a change of status does. A case sent back
  (dispatched → reported) starts a new stint in `reported`, with a new limit, as the timer of
  the workflow does.
- A stint is **late** when it lasted longer than the limit of its state (`limit_hours` of
  grids/case_flow.csv), to the second (half a second of grace absorbs the rounding of times
  kept as floating-point seconds: a stint of exactly the limit is in time); the last stint of a case that is not closed is measured up to `now`.
  States without a limit (closed) are never late. A case is `late` if any stint was, and
  `late_now` if its current stint is (an open case past its deadline now).
- A case is **referred** (移送执法局, 案件移送) if it ever entered the referral state
  (`transferred`).
- A case was **returned** (退回重新派遣) if it entered its first state more than once.
- **closed_at** is when its current stint in `closed` began (NULL while open); hours to close
  count from the report.

Times are ISO 8601 texts as the system writes them (with an offset or `Z`; a time without an
offset is Beijing time, as everywhere in gridmap). The work is one statement: the period and
scope filter of `incident_sql.where` on `incident_state`, window functions (LAG, LEAD: SQLite
≥ 3.25 and PostgreSQL) over the events of those cases, and one row per case back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layers import incident_sql
from layers.store import IncidentQuery

FIRST_STATE = "reported"
CLOSED_STATE = "closed"
REFERRAL_STATE = "transferred"

# The per-case frame `Store.case_facts` returns.
FACT_COLUMNS = ("incident_id", "bureau_code", "township_code", "grid_code", "category",
                "status", "reported_utc", "closed_at", "hours_to_close", "late", "late_now",
                "referred", "returned")


@dataclass(frozen=True)
class Dialect:
    """What differs between the stores: the placeholder and turning ISO text into seconds since
    1970 (a double)."""

    ph: str
    epoch_utc: Callable[[str], str]  # of a column always written in UTC ("…Z")
    epoch_any: Callable[[str], str]  # of a column with an offset, or none (= Beijing time)


SQLITE = Dialect(
    "?",
    lambda col: f"((julianday({col}) - 2440587.5) * 86400.0)",
    # julianday() reads "+08:00"/"Z" itself and takes a time without an offset for UTC.
    lambda col: (f"((julianday({col}) - 2440587.5) * 86400.0 - CASE WHEN {col} GLOB '*Z' OR "
                 f"{col} GLOB '*[+-][0-9][0-9]:[0-9][0-9]' THEN 0 ELSE 28800 END)"),
)
POSTGRES = Dialect(
    "%s",
    lambda col: f"date_part('epoch', {col}::timestamptz)",
    lambda col: (f"date_part('epoch', CASE WHEN {col} ~ '(Z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$' "
                 f"THEN {col}::timestamptz "
                 f"ELSE {col}::timestamp AT TIME ZONE 'Asia/Shanghai' END)"),
)


def facts_sql(query: IncidentQuery, limits: dict[str, float | None], now_epoch: float,
              dialect: Dialect, township_codes: Iterable[str] | None = None,
              referral_state: str = REFERRAL_STATE) -> tuple[str, list]:
    """The statement and its parameters (every value a parameter, never SQL text)."""
    ph = dialect.ph
    where, params = incident_sql.where(query, ph)
    if township_codes is not None:
        towns = list(township_codes)
        clause = (f"i.township_code IN ({', '.join([ph] * len(towns))})" if towns else "1 = 0")
        where = f"{where} AND {clause}" if where else f" WHERE {clause}"
        params += towns
    real = "DOUBLE PRECISION"
    known = [(s, h) for s, h in limits.items() if h is not None]
    limit_case = ("CASE st.status " + " ".join(f"WHEN {ph} THEN CAST({ph} AS {real})"
                                               for _ in known) + " END") if known else "NULL"
    limit_params = [v for s, h in known for v in (s, float(h))]
    sql = f"""
WITH scope AS (
    SELECT s.incident_id, s.bureau_code, i.township_code, s.grid_code, s.category, s.status,
           s.reported_utc, {dialect.epoch_utc("s.reported_utc")} AS t_rep
    FROM incident_state s JOIN incidents i ON i.id = s.incident_id{where}
),
ev AS (
    SELECT c.incident_id, 0 AS seq, CAST({ph} AS TEXT) AS status, c.t_rep AS t FROM scope c
    UNION ALL
    SELECT e.incident_id, e.seq, e.status, {dialect.epoch_any("e.at")} AS t
    FROM incident_events e JOIN scope c ON c.incident_id = e.incident_id
),
marked AS (
    SELECT incident_id, seq, status, t,
           LAG(status) OVER (PARTITION BY incident_id ORDER BY seq) AS prev
    FROM ev
),
stints AS (
    SELECT incident_id, status, t AS t0,
           LEAD(t) OVER (PARTITION BY incident_id ORDER BY seq) AS t1
    FROM marked WHERE prev IS NULL OR prev <> status
),
judged AS (
    SELECT st.incident_id, st.status, st.t0, st.t1,
           CASE WHEN COALESCE(st.t1, CAST({ph} AS {real})) - st.t0
                     > {limit_case} * 3600.0 + 0.5 THEN 1 ELSE 0 END AS over
    FROM stints st
),
per AS (
    SELECT incident_id,
           MAX(over) AS late,
           MAX(CASE WHEN t1 IS NULL THEN over ELSE 0 END) AS late_now,
           MAX(CASE WHEN status = {ph} THEN 1 ELSE 0 END) AS referred,
           SUM(CASE WHEN status = {ph} THEN 1 ELSE 0 END) AS first_stints,
           MAX(CASE WHEN status = {ph} AND t1 IS NULL THEN t0 END) AS t_closed
    FROM judged GROUP BY incident_id
)
SELECT c.incident_id, c.bureau_code, c.township_code, c.grid_code, c.category, c.status,
       c.reported_utc, p.t_closed, (p.t_closed - c.t_rep) / 3600.0, p.late, p.late_now,
       p.referred, p.first_stints
FROM scope c JOIN per p ON p.incident_id = c.incident_id"""
    ordered = [*params, FIRST_STATE, float(now_epoch), *limit_params, referral_state,
               FIRST_STATE, CLOSED_STATE]
    return sql, ordered


def facts_frame(rows: list[tuple]) -> pd.DataFrame:
    """The rows of `facts_sql` as the frame of FACT_COLUMNS (closed_at as UTC timestamps)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * 13
    (ids, bureaus, towns, grids, cats, statuses, reported, t_closed, hours, late, late_now,
     referred, first) = columns
    closed = np.array([np.nan if v is None else float(v) for v in t_closed], dtype=float)
    return pd.DataFrame({
        "incident_id": pd.array(ids, dtype=object),
        "bureau_code": pd.array(bureaus, dtype=object),
        "township_code": pd.array(towns, dtype=object),
        "grid_code": pd.array(grids, dtype=object),
        "category": pd.array(cats, dtype=object),
        "status": pd.array(statuses, dtype=object),
        "reported_utc": pd.array(reported, dtype=object),
        "closed_at": pd.to_datetime(closed, unit="s", utc=True).round("ms"),
        "hours_to_close": np.array([np.nan if v is None else float(v) for v in hours],
                                   dtype=float),
        "late": np.array([bool(v) for v in late], dtype=bool),
        "late_now": np.array([bool(v) for v in late_now], dtype=bool),
        "referred": np.array([bool(v) for v in referred], dtype=bool),
        "returned": np.array([int(v or 0) > 1 for v in first], dtype=bool),
    }, columns=list(FACT_COLUMNS))


def now_epoch(now: str) -> float:
    """An ISO time (no offset = Beijing time) as seconds since 1970."""
    ts = pd.Timestamp(str(now))
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Shanghai")
    return ts.timestamp()

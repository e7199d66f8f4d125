"""The facts of each case that performance figures are counted from (grids/stats.py), computed
in SQL by both stores from the append-only record, one row per case.

How a case's record is read (the same rules the live deadlines of the case list follow):

- The events of a case, in the order they were recorded (`seq`), each put the case in the
  event's status at the event's time `at`. Its first stint (normally `reported`, opened by the
  `create` event) counts from the time the case was reported (`reported_utc`).
- A **stint** is one uninterrupted stay in one state: events that keep the status (a
  reassignment, a linked duplicate) do not end it; a change of status does. A case sent back
  (dispatched → reported) starts a new stint in `reported`, with a new limit, as the timer of
  the workflow does.
- A stint is **late** when it lasted longer than the limit of its state (`limit_hours` of
  grids/case_flow.csv), to the second (half a second of grace absorbs the rounding of times
  kept as floating-point seconds: a stint of exactly the limit is in time); the last stint of
  a case that is not closed is measured up to `now`. States without a limit (closed) are never
  late. A case is `late` if any stint was, and `late_now` if its current stint is (an open
  case past its deadline now).
- A case is **referred** (移送执法局, 案件移送) if it ever entered the referral state
  (`transferred`).
- A case was **returned** (退回重新派遣) if it had more than one stint in its first state.
- **closed_at** is when its current stint in `closed` began (NULL while open); hours to close
  count from the report.

Times are ISO 8601 texts as the system writes them (with an offset or `Z`; a time without an
offset is Beijing time, as everywhere in gridmap). The work is one statement: the period and
scope filter of `incident_sql.where` on `incident_state`; one window (LAG, LEAD: SQLite ≥ 3.25
and PostgreSQL) over the events of those cases, which finds where each stint begins and ends;
a second window over the few events inside stints of several events only; one row per case
back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    """What differs between the stores: the placeholder, and turning ISO text into seconds
    since 1970 (a double)."""

    ph: str
    epoch_utc: Callable[[str], str]  # of a column always written in UTC ("…Z")
    epoch_any: Callable[[str], str]  # of a column with an offset, or none (= Beijing time)
    # PostgreSQL sorts the events for the window anyway: their times are parsed once, before;
    # sqlite reads them in the order of its index on (incident_id, seq), so that the window
    # needs no sort, and parses the next event's time again rather than lose that order.
    parse_first: bool = False
    # Statements to run first in the same transaction (PostgreSQL: the session's time zone,
    # which reads a time without an offset, and memory for the window's sort).
    setup: tuple[str, ...] = ()


SQLITE = Dialect(
    "?",
    lambda col: f"((julianday({col}) - 2440587.5) * 86400.0)",
    # A time without an offset reads as Beijing time once "+08:00" is added; one with an
    # offset (or Z) then no longer parses (NULL) and is read as it is.
    lambda col: (f"((COALESCE(julianday({col} || '+08:00'), julianday({col})) - 2440587.5)"
                 " * 86400.0)"),
)
POSTGRES = Dialect(
    "%s",
    lambda col: f"date_part('epoch', {col}::timestamptz)",
    lambda col: f"date_part('epoch', {col}::timestamptz)",
    True,
    ("SET LOCAL TimeZone = 'Asia/Shanghai'", "SET LOCAL work_mem = '64MB'"),
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
    limit_params = [v for s, h in known for v in (s, float(h))]

    def limit(column: str) -> str:
        if not known:
            return "NULL"
        return (f"CASE {column} " + " ".join(f"WHEN {ph} THEN CAST({ph} AS {real})"
                                             for _ in known) + " END")

    now = f"CAST({ph} AS {real})"
    run_start = dialect.epoch_any("y.at")
    # Rows of r: each event with its neighbours (prev, next: statuses; t_next: the next
    # event's time). A row opens a stint when its status differs from the one before, ends
    # one when it differs from the one after. An event that keeps the status (rare: a
    # reassignment, a link) is looked up back to the event that opened its stint. The first
    # stint is judged last, against the report time of the case (from `scope`). sqlite folds
    # r and f into the aggregate of `per` (one pass in index order, no sort) and so evaluates
    # a time again wherever it is named: the cheap conditions come first in each CASE.
    sql = f"""
WITH scope AS MATERIALIZED (
    SELECT s.incident_id, s.bureau_code, i.township_code, s.grid_code, s.category, s.status,
           s.reported_utc, {dialect.epoch_utc("s.reported_utc")} AS t_rep
    FROM incident_state s JOIN incidents i ON i.id = s.incident_id{where}
),
r AS ({_neighbours(dialect, where)}),
f AS (
    SELECT r.incident_id, r.status, r.next, r.t_next,
           CASE WHEN r.prev IS NULL OR r.prev <> r.status THEN 1 ELSE 0 END AS opens,
           CASE WHEN r.next IS NULL OR r.next <> r.status THEN 1 ELSE 0 END AS ends,
           CASE WHEN r.prev IS NULL OR r.prev <> r.status THEN r.t ELSE (
               SELECT {run_start} FROM incident_events y
               WHERE y.incident_id = r.incident_id AND y.seq > COALESCE((
                   SELECT MAX(x.seq) FROM incident_events x WHERE x.incident_id = r.incident_id
                   AND x.seq < r.seq AND x.status <> r.status), -1)
               ORDER BY y.seq LIMIT 1) END AS t0,
           CASE WHEN r.prev IS NULL THEN 1 WHEN r.prev <> r.status THEN 0
                WHEN EXISTS (SELECT 1 FROM incident_events x WHERE x.incident_id = r.incident_id
                             AND x.seq < r.seq AND x.status <> r.status) THEN 0
                ELSE 1 END AS is_first
    FROM r
),
per AS (
    SELECT incident_id,
           MAX(CASE WHEN ends = 1 AND is_first = 0
                     AND COALESCE(t_next, {now}) - t0 > {limit("status")} * 3600.0 + 0.5
                    THEN 1 ELSE 0 END) AS late,
           MAX(CASE WHEN next IS NULL AND is_first = 0
                     AND {now} - t0 > {limit("status")} * 3600.0 + 0.5
                    THEN 1 ELSE 0 END) AS late_now,
           MAX(CASE WHEN ends = 1 AND is_first = 1 THEN status END) AS first_status,
           MAX(CASE WHEN ends = 1 AND is_first = 1 THEN COALESCE(t_next, -1.0) END)
               AS first_end,
           MAX(CASE WHEN status = {ph} THEN 1 ELSE 0 END) AS referred,
           SUM(CASE WHEN opens = 1 AND status = {ph} THEN 1 ELSE 0 END) AS first_stints,
           MAX(CASE WHEN next IS NULL AND status = {ph} THEN t0 END) AS t_closed
    FROM f GROUP BY incident_id
),
cases AS (
    SELECT c.incident_id, c.bureau_code, c.township_code, c.grid_code, c.category, c.status,
           c.reported_utc, c.t_rep, p.late, p.late_now, p.referred, p.first_stints,
           p.t_closed, p.first_end,
           CASE WHEN (CASE WHEN p.first_end < 0 THEN {now} ELSE p.first_end END) - c.t_rep
                     > {limit("p.first_status")} * 3600.0 + 0.5 THEN 1 ELSE 0 END AS first_over
    FROM scope c JOIN per p ON p.incident_id = c.incident_id
)
SELECT incident_id, bureau_code, township_code, grid_code, category, status, reported_utc,
       t_closed, (t_closed - t_rep) / 3600.0,
       CASE WHEN late = 1 OR first_over = 1 THEN 1 ELSE 0 END,
       CASE WHEN late_now = 1 OR (first_over = 1 AND first_end < 0) THEN 1 ELSE 0 END,
       referred, first_stints
FROM cases"""
    ordered = [*params, *(params if dialect.parse_first else []), float(now_epoch),
               *limit_params, float(now_epoch), *limit_params, referral_state, FIRST_STATE,
               CLOSED_STATE, float(now_epoch), *limit_params]
    return sql, ordered


def _neighbours(dialect: Dialect, where: str) -> str:
    """Every event of the cases in scope with its neighbours' status and time (a window).
    PostgreSQL selects the events by joining the tables of `scope` again (their statistics
    give it a hash join; the CTE's would not)."""
    at = dialect.epoch_any("e.at")
    if dialect.parse_first:
        return f"""
    SELECT incident_id, seq, status, t,
           LAG(status) OVER win AS prev, LEAD(status) OVER win AS next,
           LEAD(t) OVER win AS t_next
    FROM (SELECT e.incident_id, e.seq, e.status, {at} AS t FROM incident_events e
          JOIN incident_state s ON s.incident_id = e.incident_id
          JOIN incidents i ON i.id = s.incident_id{where}) ev
    WINDOW win AS (PARTITION BY incident_id ORDER BY seq)
"""
    # sqlite: the neighbours by two seeks in its index on (incident_id, seq), which costs
    # half of LAG and LEAD there (its window functions are slow; PostgreSQL's are not).
    nxt = dialect.epoch_any("n.at")
    return f"""
    SELECT e.incident_id, e.seq, e.status, {at} AS t, p.status AS prev, n.status AS next,
           {nxt} AS t_next
    FROM incident_events e
    LEFT JOIN incident_events n ON n.seq = (SELECT MIN(x.seq) FROM incident_events x
        WHERE x.incident_id = e.incident_id AND x.seq > e.seq)
    LEFT JOIN incident_events p ON p.seq = (SELECT MAX(x.seq) FROM incident_events x
        WHERE x.incident_id = e.incident_id AND x.seq < e.seq)
    WHERE e.incident_id IN (SELECT incident_id FROM scope)
"""


def facts_frame(rows: list[tuple]) -> pd.DataFrame:
    """The rows of `facts_sql` as the frame of FACT_COLUMNS (closed_at as UTC timestamps)."""
    raw = pd.DataFrame.from_records(rows, columns=[*FACT_COLUMNS[:7], "t_closed", "hours",
                                                   "late", "late_now", "referred", "stints"],
                                    coerce_float=True)
    t_closed = pd.to_numeric(raw["t_closed"], errors="coerce").to_numpy(dtype=float)
    raw["closed_at"] = pd.to_datetime(t_closed, unit="s", utc=True).round("ms")
    raw["hours_to_close"] = pd.to_numeric(raw["hours"], errors="coerce").astype(float)
    for column in ("late", "late_now", "referred"):
        raw[column] = raw[column].fillna(0).to_numpy(dtype=float) > 0
    raw["returned"] = raw["stints"].fillna(0).to_numpy(dtype=float) > 1
    return raw[list(FACT_COLUMNS)]


def now_epoch(now: str) -> float:
    """An ISO time (no offset = Beijing time) as seconds since 1970."""
    ts = pd.Timestamp(str(now))
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Shanghai")
    return ts.timestamp()

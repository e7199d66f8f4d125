"""The facts of each case that performance figures are counted from (grids/stats.py), computed
in SQL by both stores, one row per case, from the current-state projection of the append-only
record.

How a case's record is read (the same rules the live deadlines of the case list follow):

- The events of a case, in the order they were recorded (`seq`), each put the case in the
  event's status at the event's time `at`. Its first stint, in `reported` (where the `create`
  event puts every case), counts from the time the case was reported (`reported_utc`).
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

The stints are followed as the events are written: each store keeps, in the same transaction as
every event, the case's current state in `incident_state` (layers/incident_sql.py
`apply_event`), and with it what these rules need of the past — the longest finished stint per
state (`stays`, JSON: a state is a key once the case has left it), the times the case came back
to its first state (`returns`), the report time and the start of the current stint as Unix
seconds (`reported_epoch`, `since_epoch`, from ISO times with an offset or `Z`, or none =
Beijing time). A case is late when any state's longest stint exceeds that state's limit, or its
current stint does up to `now`: the limits come with the query (the store knows no rules), so
the statement reads one row per case of `incident_state` (which keeps the township of the
intake, too) and no event — with the period and scope filter of `incident_sql.where`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from layers import incident_sql
from layers.store import IncidentQuery

FIRST_STATE = incident_sql.FIRST_STATE  # back in it: sent back (`returns`)
CLOSED_STATE = "closed"
REFERRAL_STATE = "transferred"

# The per-case frame `Store.case_facts` returns.
FACT_COLUMNS = ("incident_id", "bureau_code", "township_code", "grid_code", "category",
                "status", "reported_utc", "closed_at", "hours_to_close", "late", "late_now",
                "referred", "returned")


@dataclass(frozen=True)
class Dialect:
    """What differs between the stores: the placeholder, and reading the longest stint in a
    state (seconds, NULL if the case never left it) out of `s.stays`."""

    ph: str
    stay: str  # SQL of the stint, with one placeholder for `key(state)`
    key: Callable[[str], str]


SQLITE = Dialect("?", "json_extract(s.stays, ?)", lambda state: f'$."{state}"')
POSTGRES = Dialect("%s", "CAST(s.stays ->> %s AS DOUBLE PRECISION)", lambda state: state)


def facts_sql(query: IncidentQuery, limits: dict[str, float | None], now_epoch: float,
              dialect: Dialect, township_codes: Iterable[str] | None = None,
              referral_state: str = REFERRAL_STATE) -> tuple[str, list]:
    """The statement and its parameters (every value a parameter, never SQL text)."""
    ph = dialect.ph
    where, where_params = incident_sql.where(query, ph)
    if township_codes is not None:
        towns = list(township_codes)
        clause = (f"s.township_code IN ({', '.join([ph] * len(towns))})" if towns else "1 = 0")
        where = f"{where} AND {clause}" if where else f" WHERE {clause}"
        where_params += towns
    join = " JOIN incidents i ON i.id = s.incident_id" if incident_sql.needs_record(query) else ""
    real = "DOUBLE PRECISION"
    # The longest a stint may last in each state with a limit, in seconds: to the second, with
    # half a second of grace for times kept as floating-point seconds (exactly the limit is in
    # time).
    allowed = [(s, float(h) * 3600.0 + 0.5) for s, h in limits.items() if h is not None]
    if allowed:
        current = (f"CAST({ph} AS {real}) - s.since_epoch > CASE s.status "
                   + " ".join(f"WHEN {ph} THEN CAST({ph} AS {real})" for _ in allowed)
                   + " END")
        current_params = [float(now_epoch), *(v for pair in allowed for v in pair)]
        past = " OR ".join(f"{dialect.stay} > CAST({ph} AS {real})" for _ in allowed)
        past_params = [v for s, secs in allowed for v in (dialect.key(s), secs)]
    else:
        current, current_params, past, past_params = "1 = 0", [], "1 = 0", []
    sql = f"""
SELECT s.incident_id, s.bureau_code, s.township_code, s.grid_code, s.category, s.status,
       s.reported_utc,
       CASE WHEN s.status = {ph} THEN s.since_epoch END,
       CASE WHEN s.status = {ph} THEN (s.since_epoch - s.reported_epoch) / 3600.0 END,
       CASE WHEN ({current}) OR {past} THEN 1 ELSE 0 END,
       CASE WHEN {current} THEN 1 ELSE 0 END,
       CASE WHEN s.status = {ph} OR {dialect.stay} IS NOT NULL THEN 1 ELSE 0 END,
       s.returns
FROM incident_state s{join}{where}"""
    params = [CLOSED_STATE, CLOSED_STATE, *current_params, *past_params, *current_params,
              referral_state, dialect.key(referral_state), *where_params]
    return sql, params


def facts_frame(rows: list[tuple]) -> pd.DataFrame:
    """The rows of `facts_sql` as the frame of FACT_COLUMNS (closed_at as UTC timestamps)."""
    raw = pd.DataFrame.from_records(rows, columns=[*FACT_COLUMNS[:7], "t_closed", "hours",
                                                   "late", "late_now", "referred", "returns"],
                                    coerce_float=True)
    t_closed = pd.to_numeric(raw["t_closed"], errors="coerce").to_numpy(dtype=float)
    raw["closed_at"] = pd.to_datetime(t_closed, unit="s", utc=True).round("ms")
    raw["hours_to_close"] = pd.to_numeric(raw["hours"], errors="coerce").astype(float)
    for column in ("late", "late_now", "referred"):
        raw[column] = raw[column].fillna(0).to_numpy(dtype=float) > 0
    raw["returned"] = raw["returns"].fillna(0).to_numpy(dtype=float) > 0
    return raw[list(FACT_COLUMNS)]


def now_epoch(now: str) -> float:
    """An ISO time (no offset = Beijing time) as seconds since 1970."""
    ts = pd.Timestamp(str(now))
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Shanghai")
    return ts.timestamp()

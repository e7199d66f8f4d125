"""绩效考评: performance figures per enforcement bureau and per township over a period.

The plan makes "the number, quality and timeliness of cases" the basis of assessment. The
figures count the **cases reported in the period** (a cohort: Beijing dates, both days
included), each as it stands at the time of the report (`now`):

- 受理数 `received`: cases reported in the period.
- 已结案 `closed` / 未结案 `open`: whether the case is closed now.
- 按时办理 `on_time` / 超时 `overdue`: a case is **on time** when no stint in a state (one
  uninterrupted stay, see layers/case_facts.py) lasted longer than that state's `limit_hours`
  in grids/case_flow.csv — for a case still open, its current stint counted up to now. A case
  late in any one state is overdue, even if it was closed afterwards: on_time + overdue =
  received.
- 未结且已超时 `open_overdue`: open now and its current state already past its limit (what
  the case console shows as 超时).
- 按时率 `on_time_share`: on_time / received (empty with no case).
- 结案用时中位数 `median_hours_to_close`: median hours from report to closing, of the closed
  cases.
- 移送执法局 `referred`: cases that went through 移送执法局 (`transferred`), the 案件移送 from
  the grid to the enforcement bureau. 移交其他部门 `partner`: cases of a category handled by a
  partner agency (grids/categories.csv `handler = partner`: 城管, 住建, 公安, 农业农村) — two
  different kinds of referral, counted apart.
- 退回重派 `returned` (quality): cases sent back for a new dispatch at least once.

A case counts for the bureau it is assigned to now (after any 人工改派) and for the township
it was routed to at intake; cases without one (ambiguous or outside locations) form a row of
their own. The work per case is done in SQL by the store (`Store.case_facts`); only the
per-case rows are aggregated here.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from grids.acting import Acting
from grids.flow import load_categories, load_flow
from layers.schema import BUREAU_LEVEL_ZH
from layers.store import IncidentQuery

BEIJING = ZoneInfo("Asia/Shanghai")
ACTION = "stats.read"

# key -> column header (Chinese), in the order tables show them.
FIGURES: dict[str, str] = {
    "received": "受理数",
    "closed": "已结案",
    "open": "未结案",
    "on_time": "按时办理",
    "overdue": "超时",
    "open_overdue": "未结且已超时",
    "on_time_share": "按时率",
    "median_hours_to_close": "结案用时中位数（小时）",
    "referred": "移送执法局",
    "partner": "移交其他部门",
    "returned": "退回重派",
}
COUNTS = [k for k in FIGURES if k not in ("on_time_share", "median_hours_to_close")]
DEFINITIONS_ZH: dict[str, str] = {
    "received": "统计期内（北京时间，含起止日）受理登记的案件数",
    "closed": "上述案件中截至统计时已结案的件数",
    "open": "上述案件中截至统计时未结案的件数",
    "on_time": "每个环节的停留时间均未超过流程表（case_flow.csv）规定时限的案件；未结案件的"
               "当前环节计至统计时",
    "overdue": "任一环节超过规定时限的案件（结案前曾超时的也计入）；按时办理 + 超时 = 受理数",
    "open_overdue": "截至统计时未结案且当前环节已超过时限的案件",
    "on_time_share": "按时办理 ÷ 受理数",
    "median_hours_to_close": "已结案件从受理到结案用时的中位数（小时）",
    "referred": "经“移送执法局（案件移送）”环节的案件",
    "partner": "类别属其他部门职责（城管、住建、公安、农业农村等）需移交的案件",
    "returned": "曾被退回重新派遣的案件",
}
NO_BUREAU = "（未确定责任机构）"
NO_TOWNSHIP = "（未确定乡镇/街道）"


class PeriodError(ValueError):
    """A period that cannot be counted; the message says why (Chinese)."""


@dataclass(frozen=True)
class Period:
    """Beijing dates, both included."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise PeriodError(f"开始日期 {self.since} 晚于结束日期 {self.until}")
        if (self.until - self.since).days > 3660:
            raise PeriodError("统计期不能超过 10 年")

    @classmethod
    def last_days(cls, days: int = 30, today: date | None = None) -> Period:
        today = today or datetime.now(BEIJING).date()
        return cls(today - timedelta(days=days - 1), today)

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        return cls(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))

    @classmethod
    def parse(cls, since: str | date | None, until: str | date | None,
              today: date | None = None) -> Period:
        """From texts like 2026-11-01 (either may be missing: the last 30 days end today;
        a start alone runs to today; an end alone starts 29 days before it)."""
        end = _day(until, "结束日期") if until else (today or datetime.now(BEIJING).date())
        start = _day(since, "开始日期") if since else end - timedelta(days=29)
        return cls(start, end)

    def bounds(self) -> tuple[str, str]:
        """The first and last instant of the period, as ISO times with the Beijing offset."""
        return (f"{self.since.isoformat()}T00:00:00+08:00",
                f"{self.until.isoformat()}T23:59:59.999999+08:00")

    @property
    def label(self) -> str:
        return f"{self.since.isoformat()} 至 {self.until.isoformat()}"


def _day(value: str | date, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise PeriodError(f"{what}“{value}”不是有效日期，请写成 2026-11-01 的形式") from None


@dataclass
class PerformanceStats:
    period: Period
    computed_at: str  # Beijing time, ISO
    scope_zh: str  # whose cases: 全市, a bureau and those under it, a leader's units …
    totals: dict[str, float | int | None]
    bureaus: pd.DataFrame  # code, name, level_zh, parent_name + FIGURES
    townships: pd.DataFrame  # code, name, county_name + FIGURES
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS_ZH))

    def as_dict(self) -> dict:
        return {
            "period": {"since": self.period.since.isoformat(),
                       "until": self.period.until.isoformat(), "timezone": "Asia/Shanghai"},
            "computed_at": self.computed_at,
            "scope": self.scope_zh,
            "totals": self.totals,
            "bureaus": _records(self.bureaus),
            "townships": _records(self.townships),
            "definitions": {k: {"label": FIGURES[k], "rule": v}
                            for k, v in self.definitions.items()},
        }


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


# -- figures from per-case facts -----------------------------------------------------------------
def case_flags(facts: pd.DataFrame) -> pd.DataFrame:
    """One row per case with a 0/1 column per count of FIGURES and the hours to close."""
    partner = {k for k, c in load_categories().items() if c.handler == "partner"}
    closed = (facts["status"] == "closed").to_numpy()
    late = facts["late"].to_numpy(bool)
    return pd.DataFrame({
        "received": np.ones(len(facts), dtype=int),
        "closed": closed.astype(int),
        "open": (~closed).astype(int),
        "on_time": (~late).astype(int),
        "overdue": late.astype(int),
        "open_overdue": facts["late_now"].to_numpy(bool).astype(int),
        "referred": facts["referred"].to_numpy(bool).astype(int),
        "partner": facts["category"].isin(partner).to_numpy().astype(int),
        "returned": facts["returned"].to_numpy(bool).astype(int),
        "hours": facts["hours_to_close"].to_numpy(float),
    }, index=facts.index)


def figures(flags: pd.DataFrame, keys: pd.Series | None = None) -> pd.DataFrame:
    """FIGURES per value of `keys` (one row "" for all with no keys)."""
    keys = pd.Series([""] * len(flags), index=flags.index) if keys is None else keys
    grouped = flags.assign(_key=keys.to_numpy()).groupby("_key", sort=False)
    out = grouped[COUNTS].sum()
    out["median_hours_to_close"] = grouped["hours"].median()
    out["on_time_share"] = out["on_time"] / out["received"].where(out["received"] > 0)
    return out[list(FIGURES)]


def totals_of(flags: pd.DataFrame) -> dict[str, float | int | None]:
    if not len(flags):
        row = {k: 0 for k in COUNTS} | {"on_time_share": None, "median_hours_to_close": None}
        return {k: row[k] for k in FIGURES}
    row = figures(flags).iloc[0]
    return {k: int(row[k]) if k in COUNTS else _plain(row[k]) for k in FIGURES}


def _table(flags: pd.DataFrame, keys: pd.Series, idle: list[str], names: pd.DataFrame,
           none_label: str) -> pd.DataFrame:
    """FIGURES per unit: the units with cases, and the `idle` ones (with zeros), in the order
    of `names` (indexed by code), then codes not in the current layers, then no unit."""
    found = figures(flags, keys.fillna("")) if len(flags) else figures(flags.iloc[:0])
    codes = list(dict.fromkeys([*idle, *found.index]))
    ordered = ([c for c in names.index if c in set(codes)]
               + sorted(c for c in codes if c and c not in names.index)
               + ([""] if "" in codes else []))
    table = found.reindex(ordered)
    table[COUNTS] = table[COUNTS].fillna(0).astype(int)
    info = names.reindex(ordered)
    info.loc[[c for c in ordered if c and c not in names.index], "name"] = [
        c for c in ordered if c and c not in names.index]
    if "" in ordered:
        info.loc["", "name"] = none_label
    info = info.fillna("")
    return pd.concat([info, table], axis=1).rename_axis("code").reset_index()


# -- the service's part ----------------------------------------------------------------------------
def subtree(bureaus: pd.DataFrame, code: str) -> frozenset[str]:
    """A bureau and every bureau under it (parent_code links, cycle-safe)."""
    children: dict[str, list[str]] = {}
    for c, parent in zip(bureaus["code"].astype(str),
                         bureaus["parent_code"].fillna("").astype(str), strict=True):
        children.setdefault(parent, []).append(c)
    seen: set[str] = set()
    todo = [code]
    while todo:
        c = todo.pop()
        if c not in seen:
            seen.add(c)
            todo.extend(children.get(c, []))
    return frozenset(seen)


def performance(acting: Acting, period: Period, *, bureau_code: str | None = None,
                township_code: str | None = None,
                now: datetime | None = None) -> PerformanceStats:
    """The figures of the cases the actor may assess (`stats.read`: all, or their own bureau
    tree / led units), optionally of one bureau (with those under it) or one township."""
    target = bureau_code or township_code or ""
    scope = acting.require(ACTION, target)
    actor = acting.actor
    snap = acting.snapshot
    bureaus = snap["bureaus"].assign(code=lambda f: f["code"].astype(str))
    towns = snap["townships"].assign(code=lambda f: f["code"].astype(str))
    by_bureau = scope == "own" and actor.role == "bureau"
    since, until = period.bounds()
    query = IncidentQuery(reported_since=since, reported_until=until)
    scope_zh = "全市" if scope == "all" else (
        f"{_name(bureaus, actor.bureau_code)}及下属机构" if by_bureau else "本人负责的网格")
    idle_bureaus: list[str] = []
    idle_towns: list[str] = []
    township_codes = None
    if bureau_code:
        if bureau_code not in set(bureaus["code"]):
            raise PeriodError(f"执法机构 {bureau_code} 不存在")
        if by_bureau and bureau_code not in acting.own_bureaus:
            acting.deny(ACTION, bureau_code,
                        f"{actor.label} 无权限：只能查看本局及下属机构的绩效考评")
        tree = subtree(bureaus, bureau_code)
        query = replace(query, bureau_codes=tuple(sorted(tree)))
        idle_bureaus = sorted(tree & acting.own_bureaus) if by_bureau else sorted(tree)
        scope_zh = f"{_name(bureaus, bureau_code)}及下属机构"
    elif scope == "all":
        idle_bureaus = list(bureaus["code"])
    elif by_bureau:
        idle_bureaus = sorted(acting.own_bureaus)
    if township_code:
        if township_code not in set(towns["code"]):
            raise PeriodError(f"乡镇/街道 {township_code} 不存在")
        if scope == "own" and not by_bureau and township_code not in _own_townships(acting):
            acting.deny(ACTION, township_code,
                        f"{actor.label} 无权限：只能查看本人负责网格所在乡镇/街道的绩效考评")
        township_codes = (township_code,)
        idle_towns = [township_code]
        scope_zh += f" · {_name(towns, township_code)}"
    elif scope == "all" and not bureau_code:
        idle_towns = list(towns["code"])
    query = acting.incident_query(ACTION, query)  # an own scope is filtered in the store
    moment = now or datetime.now(UTC)
    flow = load_flow()
    limits = {state: hours for state, (_label, hours) in flow.states.items()}
    facts = acting.store.case_facts(query, limits, now=moment.isoformat(),
                                    township_codes=township_codes)
    flags = case_flags(facts)
    bureau_names = bureaus.set_index("code")
    parents = bureau_names["parent_code"].map(
        lambda p: bureau_names["name"].get(p, p) if isinstance(p, str) and p else "")
    bureau_info = pd.DataFrame({"name": bureau_names["name"],
                                "level_zh": bureau_names["level"].map(BUREAU_LEVEL_ZH).fillna(""),
                                "parent_name": parents})
    counties = dict(zip(snap["counties"]["code"].astype(str), snap["counties"]["name"],
                        strict=True))
    town_names = towns.set_index("code")
    town_info = pd.DataFrame({"name": town_names["name"],
                              "county_name": town_names["county_code"].astype(str).map(counties)})
    return PerformanceStats(
        period=period,
        computed_at=moment.astimezone(BEIJING).isoformat(timespec="seconds"),
        scope_zh=scope_zh,
        totals=totals_of(flags),
        bureaus=_table(flags, facts["bureau_code"], idle_bureaus, bureau_info, NO_BUREAU),
        townships=_table(flags, facts["township_code"], idle_towns, town_info, NO_TOWNSHIP),
    )


def choices(acting: Acting) -> tuple[dict[str, str], dict[str, str]]:
    """The bureaus and townships (code -> name) the actor may narrow the figures to: every one
    for `all`; a bureau's own tree (and no township choice: its cases name them); a leader's
    townships (and no bureau choice)."""
    scope = acting.require(ACTION)
    snap = acting.snapshot
    bureaus = dict(zip(snap["bureaus"]["code"].astype(str), snap["bureaus"]["name"],
                       strict=True))
    towns = dict(zip(snap["townships"]["code"].astype(str), snap["townships"]["name"],
                     strict=True))
    if scope == "all":
        return bureaus, towns
    if acting.actor.role == "bureau":
        return {c: n for c, n in bureaus.items() if c in acting.own_bureaus}, {}
    own = _own_townships(acting)
    return {}, {c: n for c, n in towns.items() if c in own}


def _own_townships(acting: Acting) -> set[str]:
    grids = acting.snapshot["grids"]
    mine = grids[grids["code"].astype(str).isin(acting.own_grids)]
    return set(mine["township_code"].astype(str))


def _name(frame: pd.DataFrame, code: str) -> str:
    rows = frame[frame["code"] == code]
    return str(rows["name"].iat[0]) if len(rows) else code


# -- Excel ---------------------------------------------------------------------------------------
def percent(share) -> float | None:
    """A share 0–1 as a percentage with one decimal (None when there is none)."""
    share = _plain(share)
    return None if share is None else round(float(share) * 100, 1)


UNIT_COLUMNS = {
    "bureaus": {"code": "机构编码", "name": "执法机构", "level_zh": "层级",
                "parent_name": "上级机构"},
    "townships": {"code": "乡镇/街道编码", "name": "乡镇/街道", "county_name": "县（市）、区"},
}


def display_table(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """A figures table with Chinese headers (the page and the workbook): the share in %."""
    first = UNIT_COLUMNS[kind]
    out = pd.DataFrame({label: table[key].to_numpy() for key, label in first.items()})
    for key, label in FIGURES.items():
        values = table[key]
        if key == "on_time_share":  # empty (NaN) without cases
            out["按时率（%）"] = np.array([np.nan if percent(v) is None else percent(v)
                                       for v in values], dtype=float)
        elif key == "median_hours_to_close":
            out[label] = np.array([np.nan if pd.isna(v) else round(float(v), 1)
                                   for v in values], dtype=float)
        else:
            out[label] = values.astype(int).to_numpy()
    return out


def excel(result: PerformanceStats) -> bytes:
    """The workbook: per bureau, per township (each with a 合计 row), and the definitions."""
    from layers import spreadsheet

    total = {k: result.totals[k] for k in FIGURES}
    sheets = {}
    for kind, title, table in (("bureaus", "按执法机构", result.bureaus),
                               ("townships", "按乡镇街道", result.townships)):
        shown = display_table(table, kind)
        unit = {**dict.fromkeys(UNIT_COLUMNS[kind], ""), "name": "合计"}
        row = display_table(pd.DataFrame([{**unit, **total}]), kind)
        sheets[title] = pd.concat([shown, row], ignore_index=True)
    sheets["说明"] = pd.DataFrame({
        "项目": ["统计期（北京时间）", "统计范围", "统计时间", *FIGURES.values()],
        "说明": [result.period.label, result.scope_zh, result.computed_at,
                 *(DEFINITIONS_ZH[k] for k in FIGURES)],
    })
    return spreadsheet.xlsx_bytes(sheets)

"""Time left on a case: each state of the workflow table (grids/case_flow.csv) has a limit in
hours from the moment the case entered it; what is left is shown as a countdown and a colour
by the share of the limit that remains (数字城管 consoles: green, amber, red, overdue).

All arithmetic is on aware instants; what people read is Beijing time, so a deadline that
falls after midnight in Beijing is "tomorrow" even when it is still today in UTC.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from grids.flow import Flow

BEIJING = ZoneInfo("Asia/Shanghai")
# Share of the limit still left → colour. Below AMBER the case needs attention, below RED
# it is about to be late.
AMBER, RED = 0.5, 0.2
LEVEL_ZH = {"green": "充裕", "amber": "临近", "red": "紧急", "overdue": "已超时", "none": "无时限"}
LEVEL_COLOR = {"green": "#2e7d32", "amber": "#f9a825", "red": "#e53935", "overdue": "#8e0000",
               "none": "#9e9e9e"}


@dataclass(frozen=True)
class TimeLeft:
    deadline: datetime | None  # aware, in Beijing time
    limit_hours: float | None
    remaining_hours: float | None  # negative when overdue
    share: float | None  # remaining / limit
    level: str  # green | amber | red | overdue | none

    @property
    def overdue(self) -> bool:
        return self.level == "overdue"


def as_instant(value: object) -> datetime:
    """An ISO time (with an offset, or none = Beijing time) or a datetime, as aware UTC."""
    moment = value if isinstance(value, datetime) else pd.Timestamp(str(value)).to_pydatetime()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=BEIJING)
    return moment.astimezone(UTC)


def time_left(flow: Flow, status: str, since: object, now: object) -> TimeLeft:
    hours = flow.states[status][1] if status in flow.states else None
    if not hours:
        return TimeLeft(None, None, None, None, "none")
    due = as_instant(since) + timedelta(hours=hours)
    remaining = (due - as_instant(now)).total_seconds() / 3600
    share = remaining / hours
    level = ("overdue" if remaining < 0 else "red" if share < RED
             else "amber" if share < AMBER else "green")
    return TimeLeft(due.astimezone(BEIJING), hours, remaining, share, level)


def countdown_zh(left: TimeLeft) -> str:
    """'剩 1 小时 20 分', '超时 2 天 3 小时', '无时限'."""
    if left.remaining_hours is None:
        return "无时限"
    minutes = int(abs(left.remaining_hours) * 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        span = f"{days} 天 {hours} 小时"
    elif hours:
        span = f"{hours} 小时 {mins} 分"
    else:
        span = f"{mins} 分"
    return f"超时 {span}" if left.remaining_hours < 0 else f"剩 {span}"


def deadline_zh(left: TimeLeft, now: object) -> str:
    """The deadline as a Nantong reader says it: 今天 17:30 / 明天 01:30 / 12月5日 09:00."""
    if left.deadline is None:
        return "无时限"
    today = as_instant(now).astimezone(BEIJING).date()
    day = left.deadline.date()
    clock = left.deadline.strftime("%H:%M")
    names = {today: "今天", today + timedelta(days=1): "明天", today - timedelta(days=1): "昨天"}
    if day in names:
        return f"{names[day]} {clock}"
    return f"{day.year}年{day.month}月{day.day}日 {clock}"


_DATE_ONLY = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def beijing_text(value: object) -> str:
    """A time as people in Nantong read it: Beijing time to the minute, "YYYY-MM-DD HH:MM".

    `value` is what the store holds — ISO 8601 text in UTC ("…Z"), with an offset, or without
    one, which the store means as Beijing time (layers/incident_sql.py `utc_text`,
    grids/deadlines.py) — or a datetime. None, "" and NaN/NaT give ""; a date alone, and text
    that is not an ISO time, come back as they are (never guessed at: "now" stays "now")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, datetime):
        moment = value
        if moment != moment:  # NaT
            return ""
    elif isinstance(value, date):
        return value.isoformat()
    else:
        text = str(value).strip()
        if not text or _DATE_ONLY.fullmatch(text):
            return text
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=BEIJING)
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")

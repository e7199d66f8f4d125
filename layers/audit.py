"""The audit trail: append-only entries chained by hash.

Each entry carries the hash of the one before it, and its own hash covers its fields and that
previous hash. Editing an entry changes its hash; deleting or reordering entries breaks the link
of the next one. Both stores refuse UPDATE and DELETE on the table (triggers, and in PostGIS the
runtime role has no such privilege); the chain catches what a person with direct file or
database access does around them. The head (last sequence number and hash) is printed by
`gridmap audit verify`: written down elsewhere, it also anchors against truncating the tail.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

GENESIS = "0" * 64
AUDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("at", "TEXT NOT NULL"),  # UTC, ISO 8601 with milliseconds
    ("actor", "TEXT NOT NULL"),  # login (os:<user> for the command line)
    ("actor_role", "TEXT NOT NULL"),
    ("via", "TEXT NOT NULL"),  # session, cli, api, system
    ("action", "TEXT NOT NULL"),
    ("target", "TEXT NOT NULL"),
    ("detail", "TEXT NOT NULL"),  # JSON: before/after, reasons, counts
    ("prev_hash", "TEXT NOT NULL"),
    ("hash", "TEXT NOT NULL"),
)
AUDIT_NAMES = [n for n, _ in AUDIT_COLUMNS]

ACTIONS_ZH = {
    "login": "登录成功",
    "login_failed": "登录失败",
    "login_locked": "账号锁定",
    "logout": "退出登录",
    "session_expired": "会话过期",
    "denied": "越权被拒",
    "import": "导入图层",
    "publish": "发布图层版本",
    "publish.refused": "发布被拒（冲突或检查未通过）",
    "rollback": "回退图层版本",
    "draft.create": "新建图层草稿",
    "draft.discard": "放弃图层草稿",
    "case.create": "登记案件",
    "case.step": "案件流转",
    "case.reassign": "人工改派",
    "case.link": "重复举报并入",
    "case.mark": "案件进度标记（接单、到达现场）",
    "patrol.record": "记录巡查",
    "batch.assign": "批量分派",
    "roster.export": "导出花名册",
    "user.add": "新增用户",
    "user.passwd": "修改密码",
    "user.disable": "停用用户",
    "user.enable": "启用用户",
    "audit.export": "导出审计记录",
    "apikey.add": "新增接口密钥",
    "apikey.revoke": "吊销接口密钥",
    "sample": "生成示例数据",
}


def beijing(at: str) -> str:
    """A stored UTC time as people in Nantong read it (Beijing time, to the second)."""
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return str(at)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    """What happened, before it is given its place in the chain by the store."""

    actor: str
    actor_role: str
    via: str
    action: str
    target: str = ""
    detail: dict = field(default_factory=dict)
    at: str = field(default_factory=utc_now)

    def detail_json(self) -> str:
        return json.dumps(self.detail, ensure_ascii=False, sort_keys=True, default=str)


def entry_hash(seq: int, values: dict) -> str:
    """The hash of entry `seq` with its fields (AUDIT_NAMES without `hash`)."""
    body = [seq, *(str(values[n]) for n in AUDIT_NAMES if n != "hash")]
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chain(records: list[AuditRecord], last_seq: int, last_hash: str) -> list[tuple]:
    """Rows (seq, *AUDIT_NAMES) for `records` appended after (last_seq, last_hash). The store
    calls this under its write lock, so two writers never chain onto the same head."""
    rows = []
    prev, seq = last_hash or GENESIS, last_seq
    for rec in records:
        seq += 1
        values = {
            "at": rec.at, "actor": rec.actor, "actor_role": rec.actor_role, "via": rec.via,
            "action": rec.action, "target": rec.target, "detail": rec.detail_json(),
            "prev_hash": prev,
        }
        values["hash"] = entry_hash(seq, values)
        rows.append((seq, *(values[n] for n in AUDIT_NAMES)))
        prev = values["hash"]
    return rows


@dataclass
class Verification:
    ok: bool
    entries: int
    head_seq: int = 0
    head_hash: str = GENESIS
    first_bad_seq: int | None = None
    problem_zh: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "head_seq": self.head_seq,
                "head_hash": self.head_hash, "first_bad_seq": self.first_bad_seq,
                "problem": self.problem_zh}


def verify(rows) -> Verification:
    """Walk entries (dicts with seq and AUDIT_NAMES) in the order the store returns them (by
    seq); name the first one that was edited, deleted, inserted or reordered."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in rows:
        count += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            what = "缺失（被删除）" if seq > expected_seq else "顺序错乱或重复"
            return Verification(False, count, expected_seq - 1, prev, expected_seq,
                                f"第 {expected_seq} 条审计记录{what}，其后出现的是第 {seq} 条")
        if row["prev_hash"] != prev:
            return Verification(False, count, seq - 1, prev, seq,
                                f"第 {seq} 条审计记录与前一条的链接不符"
                                "（前一条被删除、插入或重排）")
        if entry_hash(seq, row) != row["hash"]:
            return Verification(False, count, seq - 1, prev, seq,
                                f"第 {seq} 条审计记录的内容与其哈希不符（记录被修改）")
        prev, expected_seq = row["hash"], seq + 1
    return Verification(True, count, expected_seq - 1, prev)


def with_target(audit: AuditRecord, target: str) -> AuditRecord:
    from dataclasses import replace

    return replace(audit, target=target, detail={**audit.detail, "id": target})


def audit_where(query, ph: str) -> tuple[str, list]:
    clauses, params = [], []
    for column, value in (("actor", query.actor), ("action", query.action),
                          ("target", query.target)):
        if value:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    if query.since:
        clauses.append(f"at >= {ph}")
        params.append(query.since)
    if query.until:
        clauses.append(f"at <= {ph}")
        params.append(query.until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

"""Drafts in SQL, the same statements for both stores (sqlite `?`, psycopg2 `%s`): a draft row
holds the current content; `draft_history` its previous contents, newest last, for undo. The
caller runs each function inside its write transaction and passes a cursor."""

from __future__ import annotations

import json

from layers.audit import utc_now
from layers.store import DraftRecord
from layers.versions import STATUS_ZH, UNDO_DEPTH, VersionError, content_from, content_json

COLUMNS = ("id", "layers", "base", "author", "created_at", "updated_at", "note", "status",
           "content", "revision", "generation")
_SELECT = (f"SELECT {', '.join('d.' + c for c in COLUMNS)}, "
           "(SELECT count(*) FROM draft_history h WHERE h.draft_id = d.id) FROM drafts d")


def record(row) -> DraftRecord:
    values = dict(zip(COLUMNS, row[:-1], strict=True))
    return DraftRecord(
        id=int(values["id"]), layers=tuple(json.loads(values["layers"])),
        base={k: int(v) for k, v in json.loads(values["base"]).items()},
        author=values["author"], created_at=values["created_at"],
        updated_at=values["updated_at"], note=values["note"], status=values["status"],
        content=content_from(values["content"]), revision=int(values["revision"]),
        undo_depth=int(row[-1]),
        generation=None if values["generation"] is None else int(values["generation"]))


def add(cur, ph: str, draft: DraftRecord) -> int:
    now = utc_now()
    cur.execute(
        "INSERT INTO drafts (layers, base, author, created_at, updated_at, note, status, "
        f"revision, generation, content) VALUES ({', '.join([ph] * 10)}) RETURNING id",
        (json.dumps(list(draft.layers)), json.dumps(draft.base), draft.author,
         draft.created_at or now, draft.updated_at or now, draft.note, "draft", 0, None,
         content_json(draft.content)))
    return int(cur.fetchone()[0])


def select(cur, ph: str, *, draft_id: int | None = None,
           status: str | None = None) -> list[DraftRecord]:
    sql, params = _SELECT, []
    if draft_id is not None:
        sql += f" WHERE d.id = {ph}"
        params.append(int(draft_id))
    elif status is not None:
        sql += f" WHERE d.status = {ph}"
        params.append(status)
    cur.execute(sql + " ORDER BY d.id DESC", params)
    return [record(r) for r in cur.fetchall()]


def _open(cur, ph: str, draft_id: int) -> DraftRecord:
    found = select(cur, ph, draft_id=draft_id)
    if not found:
        raise VersionError(f"草稿 {draft_id} 不存在")
    draft = found[0]
    if draft.status != "draft":
        raise VersionError(f"草稿 {draft_id} {STATUS_ZH.get(draft.status, draft.status)}，"
                           "不能再修改或发布")
    return draft


def save(cur, ph: str, draft_id: int, *, content: dict, layers, base: dict,
         note: str | None, expected_revision: int | None) -> None:
    draft = _open(cur, ph, draft_id)
    if expected_revision is not None and draft.revision != expected_revision:
        raise VersionError(
            f"草稿 {draft_id} 已在别处保存过（现为第 {draft.revision} 次保存，"
            f"本页打开的是第 {expected_revision} 次）：请重新打开草稿后再修改，以免覆盖")
    cur.execute(
        "INSERT INTO draft_history (draft_id, revision, layers, base, content, saved_at) "
        f"VALUES ({', '.join([ph] * 6)})",
        (draft_id, draft.revision, json.dumps(list(draft.layers)), json.dumps(draft.base),
         content_json(draft.content), utc_now()))
    cur.execute(
        f"DELETE FROM draft_history WHERE draft_id = {ph} AND id NOT IN (SELECT id FROM "
        f"draft_history WHERE draft_id = {ph} ORDER BY id DESC LIMIT {int(UNDO_DEPTH)})",
        (draft_id, draft_id))
    cur.execute(
        f"UPDATE drafts SET layers = {ph}, base = {ph}, content = {ph}, note = {ph}, "
        f"updated_at = {ph}, revision = revision + 1 WHERE id = {ph} AND revision = {ph}",
        (json.dumps(list(layers)), json.dumps(base), content_json(content),
         draft.note if note is None else note, utc_now(), draft_id, draft.revision))
    _one(cur, draft_id)


def undo(cur, ph: str, draft_id: int) -> None:
    draft = _open(cur, ph, draft_id)
    cur.execute(f"SELECT id, layers, base, content FROM draft_history WHERE draft_id = {ph} "
                "ORDER BY id DESC LIMIT 1", (draft_id,))
    row = cur.fetchone()
    if row is None:
        raise VersionError(f"草稿 {draft_id} 没有可撤销的修改")
    cur.execute(
        f"UPDATE drafts SET layers = {ph}, base = {ph}, content = {ph}, updated_at = {ph}, "
        f"revision = revision + 1 WHERE id = {ph} AND revision = {ph}",
        (row[1], row[2], row[3], utc_now(), draft_id, draft.revision))
    _one(cur, draft_id)
    cur.execute(f"DELETE FROM draft_history WHERE id = {ph}", (row[0],))


def _one(cur, draft_id: int) -> None:
    """The update above found the draft as it was read (another save did not come between:
    PostgreSQL re-checks the revision after waiting for the other writer)."""
    if cur.rowcount != 1:
        raise VersionError(f"草稿 {draft_id} 刚被另一处保存，本次未保存：请重新打开草稿后再修改")


def set_status(cur, ph: str, draft_id: int, status: str, generation: int | None = None) -> None:
    """draft -> discarded, or draft -> published (as `generation`), never from another state."""
    _open(cur, ph, draft_id)
    cur.execute(
        f"UPDATE drafts SET status = {ph}, generation = {ph}, updated_at = {ph}, "
        f"revision = revision + 1 WHERE id = {ph} AND status = 'draft'",
        (status, generation, utc_now(), draft_id))
    if cur.rowcount != 1:
        raise VersionError(f"草稿 {draft_id} 已不是草稿状态，未做更改")

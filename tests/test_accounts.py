"""Accounts and the audit trail, on both stores: hashed passwords, lock-out, sessions that
expire, logout, disabling; the hash chain verified, and what a person with direct file or
database access does to it found; the command line's user and audit commands."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from grids import accounts
from grids.access import Actor, PermissionDenied
from grids.service import Gridmap
from layers.audit import AuditRecord
from layers.importer import import_path
from layers.store import AuditQuery, StoreError, open_store
from tests.conftest import STORES, gridmap_exe
from tests.signin import PASSWORD, WORLD_USERS, add_world_users

ADMIN = Actor.local_admin()


@pytest.fixture(params=STORES)
def svc(request, new_store, world_dir):
    store = new_store(request.param)
    import_path(store, world_dir)
    add_world_users(store.url)
    s = Gridmap(store.url)
    yield s
    s.close()


def test_passwords_are_hashed_never_stored_or_audited(svc):
    user = svc.store().user("t-dispatcher")
    assert user.password_hash.startswith("scrypt$32768$8$1$")
    assert PASSWORD not in user.password_hash
    assert accounts.check_password(PASSWORD, user.password_hash)
    assert not accounts.check_password(PASSWORD + "x", user.password_hash)
    trail = svc.audit_entries(ADMIN, AuditQuery(limit=None))
    assert not trail["detail"].str.contains(PASSWORD, regex=False).any()
    assert not trail["detail"].str.contains("scrypt$", regex=False).any()
    assert all("password_hash" not in u.__dict__ for u in svc.users(ADMIN))


def test_weak_passwords_and_bad_logins_are_refused(svc):
    for weak in ("short1A!", "alllowercaseletters", "12345678901"):
        with pytest.raises(accounts.AuthError):
            svc.add_user(ADMIN, "weak-user", "viewer", weak)
    with pytest.raises(accounts.AuthError, match="登录名"):
        svc.add_user(ADMIN, "<script>", "viewer", PASSWORD)
    with pytest.raises(accounts.AuthError, match="花名册"):
        svc.add_user(ADMIN, "w-nobody", "grid_worker", PASSWORD, worker_id="NOBODY")
    with pytest.raises(accounts.AuthError, match="--worker"):
        svc.add_user(ADMIN, "w-none", "grid_worker", PASSWORD)
    # The roster's role must be the account's: a worker's account on a leader's id gets the
    # leader's grids (and the reverse).
    with pytest.raises(accounts.AuthError, match="L001 的岗位是网格长，不能用于网格员账号"):
        svc.add_user(ADMIN, "w-as-leader", "grid_worker", PASSWORD, worker_id="L001")
    with pytest.raises(accounts.AuthError, match="W003 的岗位是网格员，不能用于网格长账号"):
        svc.add_user(ADMIN, "l-as-worker", "grid_leader", PASSWORD, worker_id="W003")
    for login in ("weak-user", "w-as-leader", "l-as-worker"):
        assert svc.store().user(login) is None


def test_sign_in_lock_out_and_unknown_logins(svc):
    login = WORLD_USERS["viewer"][0]
    with pytest.raises(accounts.AuthError, match="登录名或密码错误"):
        svc.sign_in("no-such-user", PASSWORD)
    for _ in range(accounts.LOCK_AFTER - 1):
        with pytest.raises(accounts.AuthError, match="登录名或密码错误"):
            svc.sign_in(login, "wrong-Password-1")
    with pytest.raises(accounts.AuthError, match="锁定"):
        svc.sign_in(login, "wrong-Password-1")
    with pytest.raises(accounts.AuthError, match="锁定"):  # even the right password
        svc.sign_in(login, PASSWORD)
    actions = list(svc.audit_entries(ADMIN, AuditQuery(target=login, limit=None))["action"])
    assert actions.count("login_failed") == accounts.LOCK_AFTER + 1
    assert "login_locked" in actions
    # Locked, unknown and wrong are one answer: nobody learns which logins exist.
    for who in (login, "no-such-user"):
        with pytest.raises(accounts.AuthError) as err:
            svc.sign_in(who, "wrong-Password-1")
        assert str(err.value) == accounts.REFUSED
    svc.set_password(ADMIN, login, "New#pass2026x")  # an administrator unlocks
    assert svc.sign_in(login, "New#pass2026x").actor.role == "viewer"


def test_sessions_expire_and_end(svc):
    signed = svc.sign_in(WORLD_USERS["dispatcher"][0], PASSWORD, "test")
    store = svc.store()
    assert accounts.session_actor(store, signed.token).login == "t-dispatcher"
    assert store.session(signed.token) is None  # only the hash is stored
    idle = datetime.now(UTC) + accounts.SESSION_IDLE + timedelta(minutes=1)
    assert accounts.session_actor(store, signed.token, now=idle) is None
    assert accounts.session_actor(store, signed.token) is None  # ended, not just skipped
    again = svc.sign_in(WORLD_USERS["dispatcher"][0], PASSWORD)
    late = datetime.now(UTC) + accounts.SESSION_MAX + timedelta(minutes=1)
    assert accounts.session_actor(store, again.token, now=late) is None
    third = svc.sign_in(WORLD_USERS["dispatcher"][0], PASSWORD)
    assert svc.sign_out(third.token)
    assert svc.actor_for(third.token) is None
    fourth = svc.sign_in(WORLD_USERS["dispatcher"][0], PASSWORD)
    svc.set_disabled(ADMIN, "t-dispatcher", True)
    assert svc.actor_for(fourth.token) is None
    with pytest.raises(accounts.AuthError):
        svc.sign_in("t-dispatcher", PASSWORD)
    assert svc.actor_for("x" * 5000) is None and svc.actor_for("") is None


def test_user_admin_is_for_admins_only(svc):
    viewer = Actor("t-viewer", "viewer")
    with pytest.raises(PermissionDenied):
        svc.add_user(viewer, "someone", "admin", PASSWORD)
    with pytest.raises(PermissionDenied):
        svc.set_password(viewer, "t-admin", PASSWORD)
    svc.set_password(viewer, "t-viewer", "Mine#pass2026")  # one's own password
    assert svc.sign_in("t-viewer", "Mine#pass2026").actor.login == "t-viewer"
    assert svc.store().user("someone") is None


# -- the audit chain ------------------------------------------------------------------------------
def test_changes_are_audited_with_before_and_after(svc):
    dispatcher = Actor("t-dispatcher", "dispatcher", "调度员甲")
    from tests.world import P

    cid = svc.create_case(dispatcher, svc.route(dispatcher, *P["a2_plain"]),
                          {"category": "air", "description": "黑烟"})
    svc.reassign_case(dispatcher, cid, "企业在北侧", grid_code="320901002001002")
    rows = svc.audit_entries(ADMIN, AuditQuery(target=cid, newest_first=False))
    assert list(rows["action"]) == ["case.create", "case.reassign"]
    assert '"after": {"bureau": "B-A", "grid": "320901002001002"}' in rows["detail"].iloc[1]
    assert '"before": {"bureau": "B-A", "grid": "320901002001001"}' in rows["detail"].iloc[1]
    assert rows["at"].iloc[0].endswith("Z")  # stored in UTC
    assert svc.audit_verify(ADMIN).ok


def test_tampering_is_found(svc):
    """Edit, delete and reorder entries around the triggers, as someone with direct access
    to the file or the database would; verification names the first broken entry."""
    assert svc.audit_verify(ADMIN).ok
    n = svc.audit_verify(ADMIN).entries
    assert n >= 7  # the seven accounts of the world
    url = svc.url
    _raw(url, "UPDATE audit_log SET target = 'forged' WHERE seq = 3")
    result = svc.audit_verify(ADMIN)
    assert not result.ok and result.first_bad_seq == 3 and "修改" in result.problem_zh
    _raw(url, "UPDATE audit_log SET target = (SELECT target FROM audit_log WHERE seq = 4) "
              "WHERE seq = 3")  # undo with the wrong value stays broken
    assert svc.audit_verify(ADMIN).first_bad_seq == 3
    _raw(url, "DELETE FROM audit_log WHERE seq = 3")
    result = svc.audit_verify(ADMIN)
    assert not result.ok and result.first_bad_seq == 3 and "删除" in result.problem_zh
    out = subprocess.run([gridmap_exe(), "--store", url, "audit", "verify"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "第 3 条" in out.stderr


def _raw(url: str, sql: str) -> None:
    """Run SQL as the file's owner / the database superuser, triggers out of the way."""
    if url.startswith("postgresql://"):
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SET search_path = gridmap")
            cur.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
            cur.execute(sql)
            cur.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
        conn.close()
        return
    conn = sqlite3.connect(url)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND tbl_name = 'audit_log'").fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(sql)
    for _, ddl in triggers:
        conn.execute(ddl)
    conn.commit()
    conn.close()


def test_the_record_refuses_update_delete_and_replace_in_the_file(tmp_path, world_dir):
    path = tmp_path / "g.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, world_dir)
    store.close()
    add_world_users(path)
    conn = sqlite3.connect(path)
    for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log",
                "INSERT OR REPLACE INTO audit_log SELECT * FROM audit_log WHERE seq = 1",
                "REPLACE INTO audit_log SELECT * FROM audit_log WHERE seq = 2"):
        with pytest.raises(sqlite3.DatabaseError, match="只能追加"):
            conn.execute(sql)
    conn.close()
    assert path.stat().st_mode & 0o077 == 0  # owner only: names and phones inside


def test_the_runtime_role_cannot_rewrite_the_record(new_store, world_dir, pg_cluster):
    """PostGIS: tables are owned by the role that ran `gridmap db init`; the app runs as
    gridmap_app, which can append but not update, delete, truncate or disable triggers."""
    from layers.postgis import grant_runtime

    store = new_store("postgis")
    import_path(store, world_dir)
    grant_runtime(store.url, "gridmap_app")
    app_url = store.url.replace("://gridmap@", "://gridmap_app@")
    svc = Gridmap(app_url)
    dispatcher = Actor("t-dispatcher", "dispatcher", "调度员甲")
    from tests.world import P

    cid = svc.create_case(dispatcher, svc.route(dispatcher, *P["a2_plain"]),
                          {"category": "air", "description": "黑烟"})
    svc.step_case(dispatcher, cid, "dispatched")
    # A photo with the on-site check: inserted by the runtime role (its id sequence too).
    from grids.evidence import Upload
    from tests.test_console import png

    worker = Actor("t-worker", "grid_worker", "网格员3", worker_id="W003")
    svc.step_case(worker, cid, "verified", "现场核实", files=[Upload("现场.png", png())])
    assert [f.name for f in svc.case_files(worker, cid)] == ["现场.png"]
    svc.add_user(ADMIN, "app-made", "viewer", PASSWORD)
    # Imports and batches work as the runtime role too (new generation, work tables).
    assert svc.import_layers(ADMIN, world_dir, note="运行账号导入").generation.id == 2
    import numpy as np

    from layers.finder import Queries

    router = svc.batch_router(ADMIN)
    n = 3000  # over the inline limit: the COPY path with its work tables
    lon = np.full(n, P["a2_plain"][0])
    lat = np.full(n, P["a2_plain"][1])
    results = router.resolver.resolve(Queries.build(lon, lat))
    assert len(results) == n
    # The rate limits' buckets (layers/ratelimit.py) are kept by the runtime role.
    assert [svc.take_token("api:t", 0.5, 2) for _ in range(2)] == [0.0, 0.0]
    assert svc.take_token("api:t", 0.5, 2) > 1.5
    svc.close()
    conn = psycopg2.connect(app_url, options="-c search_path=gridmap,public")
    conn.autocommit = True
    refused = ("UPDATE incidents SET description = 'x'", "DELETE FROM incident_events",
               "TRUNCATE audit_log", "UPDATE audit_log SET actor = 'x'",
               "ALTER TABLE audit_log DISABLE TRIGGER USER",
               "DROP TRIGGER audit_log_append_only ON audit_log",
               "CREATE TABLE gridmap.shadow (x int)",
               "UPDATE attachments SET name = 'x'", "DELETE FROM attachments")
    with conn.cursor() as cur:
        for sql in refused:
            with pytest.raises(psycopg2.Error):
                cur.execute(sql)
    conn.close()
    assert Gridmap(store.url).audit_verify(ADMIN).ok


def test_cli_user_commands(tmp_path, world_dir):
    path = tmp_path / "g.gpkg"
    store = open_store(str(path), create=True)
    import_path(store, world_dir)
    store.close()

    def run(*args, stdin: str = ""):
        return subprocess.run([gridmap_exe(), "--store", str(path), *args], input=stdin,
                              capture_output=True, text=True, timeout=120)

    assert "还没有用户" in run("user", "list").stdout  # no default account, no password
    out = run("user", "add", "chief", "--role", "admin", "--name", "科长",
              stdin="Chief#pass2026\nChief#pass2026\n")
    assert out.returncode == 0, out.stderr
    out = run("user", "add", "typo", "--role", "admin", stdin="Chief#pass2026\nChief#pass2027\n")
    assert out.returncode == 2 and "不一致" in out.stderr
    out = run("user", "add", "w1", "--role", "grid_worker", "--worker", "W003",
              stdin="Work#pass20261\n")
    assert out.returncode == 0, out.stderr
    listed = run("user", "list", "--json").stdout
    assert '"w1"' in listed and "scrypt" not in listed and "Chief#pass2026" not in listed
    assert run("user", "disable", "w1").returncode == 0
    assert '"disabled": true' in run("user", "list", "--json").stdout
    out = run("audit", "list", "--json")
    assert '"os:' in out.stdout and "user.disable" in out.stdout  # the CLI acts as the OS user
    out = run("audit", "verify", "--json")
    assert out.returncode == 0 and '"ok": true' in out.stdout


def test_password_hashes_take_turns_one_per_core(monkeypatch):
    """Thirty sign-ins at once: each answered right, never more than one hash per core at a
    time (scrypt holds 32 MiB while it runs: a burst holds that per core, not per request)."""
    import threading
    import time

    real = accounts.hashlib.scrypt
    running, most, lock = [0], [0], threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # long enough for the others to pile up behind it
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(accounts.hashlib, "scrypt", counted)
    stored = accounts.hash_password("a-long-enough-Passw0rd")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(accounts.check_password(
        "a-long-enough-Passw0rd" if i % 3 else "wrong-Passw0rd-x", stored))) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 10 + [True] * 20
    assert most[0] == accounts.HASHING_AT_ONCE >= 1


def test_a_revoked_key_stays_revoked_and_a_key_is_no_password_login(svc):
    from grids.accounts import api_key_actor, sign_in

    key, view = svc.add_api_key(ADMIN, "只读平台", "viewer")
    store = svc.store()
    assert api_key_actor(store, key).role == "viewer"
    # A key's account never takes a password, nor signs in with one.
    with pytest.raises(accounts.AuthError, match="是接口密钥"):
        svc.set_password(ADMIN, view.login, "Str0ng#Pass2026")
    with pytest.raises(accounts.AuthError):
        sign_in(store, view.login, key)
    svc.revoke_api_key(ADMIN, view.login)
    assert api_key_actor(store, key) is None
    # Revoked for good: not enabled again by the user commands, not revoked twice.
    with pytest.raises(accounts.AuthError, match="是接口密钥"):
        svc.set_disabled(ADMIN, view.login, False)
    with pytest.raises(accounts.AuthError, match="已吊销"):
        svc.revoke_api_key(ADMIN, view.login)
    store.update_user(view.login, {"disabled": False}, audit=AuditRecord(
        actor="t-test", actor_role="admin", via="cli", action="test.edit", target=view.login,
        detail={}))
    assert api_key_actor(store, key) is None  # even with the flag put back by hand
    with pytest.raises(StoreError, match="接口密钥 nope 不存在"):
        svc.revoke_api_key(ADMIN, "nope")
    revoked = svc.audit_entries(ADMIN, AuditQuery(action="apikey.revoke", limit=None))
    assert len(revoked) == 1
    # A person disabled twice: said, not audited twice.
    svc.set_disabled(ADMIN, "t-viewer", True)
    with pytest.raises(accounts.AuthError, match="已停用"):
        svc.set_disabled(ADMIN, "t-viewer", True)
    assert len(svc.audit_entries(ADMIN, AuditQuery(action="user.disable", limit=None))) == 1



def test_guesses_at_one_account_at_once_are_counted_one_by_one(svc):
    """Twenty guesses sent together: the lock counted before the first failure let them all
    be checked against the hash (and a right one among them would have signed in)."""
    from concurrent.futures import ThreadPoolExecutor

    login = WORLD_USERS["dispatcher"][0]

    def guess(n: int) -> str:
        try:
            svc.sign_in(login, PASSWORD if n == 19 else f"wrong-Password-{n}")
        except accounts.AuthError:
            return "refused"
        return "in"

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(guess, range(20)))
    audit = svc.audit_entries(ADMIN, AuditQuery(target=login, limit=None))
    checked = audit[(audit["action"] == "login_failed")
                    & audit["detail"].str.contains('"why": "password"')]
    assert 1 <= len(checked) <= accounts.LOCK_AFTER  # only five were checked against the hash
    # The right password, sent with the guesses, got in only if it came before the lock.
    assert outcomes.count("in") <= 1 and outcomes.count("refused") >= 19 - accounts.LOCK_AFTER + 1

"""Accounts: password hashing, sign-in with lock-out, sessions that expire, and the rules for
logins and passwords. The functions here take the store; grids/service.py wraps them with
the permission checks (who may add a user) and is what the pages and the CLI call.

Passwords are hashed with scrypt (memory-hard, in the standard library): 2^15 × 8 × 128 B =
32 MiB per hash, ~0.1 s here. Only the hash is stored; a password is never logged, printed or
put in the audit. Session tokens are random (256 bits); the store keeps their SHA-256 only, so
a copy of the database holds no usable session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from grids.access import ROLES, ROLES_ZH, WORKER_ROLES, Actor
from layers.audit import AuditRecord, utc_now
from layers.store import SessionRecord, Store, StoreError, UserRecord

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
LOCK_AFTER = 5  # failed attempts in a row
LOCK_MINUTES = 15
SESSION_IDLE = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # how often a busy session's last_seen is written
LOGIN_RE = re.compile(r"^[A-Za-z0-9_.-]{2,32}$")
MIN_PASSWORD = 10
NAME_MAX = 50


class AuthError(ValueError):
    """A sign-in that did not succeed, or an account rule broken; the message is Chinese and
    says no more than the user may know (never whether a login exists)."""


@dataclass(frozen=True)
class SignedIn:
    token: str  # the cookie value: shown to nobody, stored nowhere
    actor: Actor
    expires_at: str


# -- passwords ------------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     _b64(salt), _b64(digest)])


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


_DUMMY_HASH: str | None = None


def _burn_time(password: str) -> None:
    """Hash anyway when the login is unknown or locked, so the answer takes as long as a
    wrong password: timing tells an attacker nothing about which logins exist."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    check_password(password, _DUMMY_HASH)


# Password hashes computed at once in this process: one per core. Twenty people signing in
# at the same moment then take turns — the first are in after one hash instead of all waiting
# for twenty hashes sharing two cores — and a burst of sign-ins (or of guesses) holds at most
# this many × 32 MiB of scrypt's memory, not 32 MiB per request.
HASHING_AT_ONCE = max(1, os.cpu_count() or 1)
_HASHING = threading.BoundedSemaphore(HASHING_AT_ONCE)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _HASHING:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                              maxmem=2 * 128 * n * r + 1_048_576, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None (等保 practice: length and mixed kinds)."""
    if len(password) < MIN_PASSWORD:
        return f"密码至少 {MIN_PASSWORD} 位"
    if len(password) > 128:
        return "密码不能超过 128 位"
    if any(unicodedata.category(c).startswith("C") for c in password):
        return "密码不能包含控制字符"
    kinds = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    if kinds < 3:
        return "密码须包含大写字母、小写字母、数字、符号中的至少三类"
    return None


def clean_login(login: str) -> str:
    """A login as the audit may record it when it is not a valid one (hostile input)."""
    text = "".join(c for c in str(login) if not unicodedata.category(c).startswith("C"))
    return text[:40]


# -- accounts -------------------------------------------------------------------------------------
def new_user(login: str, role: str, password: str, *, name: str = "", worker_id: str = "",
             bureau_code: str = "") -> UserRecord:
    """A checked account record (the password hashed); AuthError says what is wrong."""
    if not LOGIN_RE.match(login or ""):
        raise AuthError("登录名须为 2–32 位字母、数字、点、下划线或连字符")
    if role not in ROLES:
        raise AuthError(f"未知角色：{clean_login(role)}；可选：" + "、".join(
            f"{r}（{z}）" for r, z in ROLES_ZH.items()))
    if role in WORKER_ROLES and not worker_id:
        raise AuthError(f"{ROLES_ZH[role]}账号须关联网格员花名册编号（命令行：--worker）")
    if role == "bureau" and not bureau_code:
        raise AuthError("执法局人员账号须关联执法机构编码（命令行：--bureau）")
    name = (name or "").strip()
    if len(name) > NAME_MAX or any(unicodedata.category(c).startswith("C") for c in name):
        raise AuthError(f"姓名不能超过 {NAME_MAX} 个字符，且不能含控制字符")
    problem = password_problem(password)
    if problem:
        raise AuthError(problem)
    now = utc_now()
    return UserRecord(login=login, role=role, name=name, worker_id=worker_id,
                      bureau_code=bureau_code, password_hash=hash_password(password),
                      created_at=now, updated_at=now)


def actor_of(user: UserRecord, via: str = "session") -> Actor:
    return Actor(login=user.login, role=user.role, name=user.name, worker_id=user.worker_id,
                 bureau_code=user.bureau_code, via=via)


def _record(actor_login: str, role: str, action: str, target: str = "", via: str = "session",
            **detail) -> AuditRecord:
    return AuditRecord(actor=actor_login, actor_role=role, via=via, action=action,
                       target=target, detail=detail)


# -- sign-in and sessions -------------------------------------------------------------------------
# One answer for every refused sign-in: an unknown login, a disabled or locked account and a
# wrong password must not be told apart (nor, by timing, are they: _burn_time).
REFUSED = f"登录名或密码错误（连续 {LOCK_AFTER} 次错误的账号将锁定 {LOCK_MINUTES} 分钟）"
# Attempts on one login take turns (striped locks): parallel guesses would otherwise all pass
# the lock check before the first failure is counted. With PostGIS and several processes, at
# most one attempt per process runs at once.
_ATTEMPTS = [threading.Lock() for _ in range(64)]


def sign_in(store: Store, login: str, password: str, client: str = "",
            now: datetime | None = None) -> SignedIn:
    """Check the password; count failures and lock after LOCK_AFTER; open a session."""
    with _ATTEMPTS[hash(str(login)) % len(_ATTEMPTS)]:
        return _sign_in(store, login, password, client, now)


def _sign_in(store: Store, login: str, password: str, client: str,
             now: datetime | None) -> SignedIn:
    now = now or datetime.now(UTC)
    stamp = _iso(now)
    user = store.user(login) if LOGIN_RE.match(login or "") else None
    if user is not None and user.login.startswith(API_PREFIX):
        user = None  # an API key's account never signs in with a password
    if user is None or user.disabled:
        _burn_time(password)
        store.append_audit([_record(clean_login(login) or "?", "", "login_failed",
                                    clean_login(login), client=client[:64],
                                    why="unknown" if user is None else "disabled")])
        raise AuthError(REFUSED)
    if user.locked_until and user.locked_until > stamp:
        _burn_time(password)
        store.append_audit([_record(login, user.role, "login_failed", login, client=client[:64],
                                    why="locked", locked_until=user.locked_until)])
        raise AuthError(REFUSED)
    if not check_password(password, user.password_hash):
        until = _iso(now + timedelta(minutes=LOCK_MINUTES))
        count = store.count_failure(
            login, lock_after=LOCK_AFTER, lock_until=until,
            audit=_record(login, user.role, "login_failed", login, client=client[:64],
                          why="password"))
        if count >= LOCK_AFTER:
            store.append_audit([_record(login, user.role, "login_locked", login,
                                        failures=count, locked_until=until)])
        raise AuthError(REFUSED)
    # Sessions that were abandoned (never used again) end here, not only when next used.
    store.end_sessions(idle_before=_iso(now - SESSION_IDLE))
    token = secrets.token_urlsafe(32)
    expires = _iso(now + SESSION_MAX)
    session = SessionRecord(token_hash=token_hash(token), login=login, created_at=stamp,
                            expires_at=expires, last_seen=stamp, client=client[:64])
    store.add_session(session, audit=_record(login, user.role, "login", login,
                                             client=client[:64]))
    if user.failed_count or user.locked_until:
        store.update_user(login, {"failed_count": 0, "locked_until": ""})
    return SignedIn(token, actor_of(user), expires)


def session_actor(store: Store, token: str | None, now: datetime | None = None) -> Actor | None:
    """The actor of a live session, or None (no token, unknown, expired, user disabled)."""
    if not token or len(token) > 200:
        return None
    now = now or datetime.now(UTC)
    digest = token_hash(token)
    session = store.session(digest)
    if session is None:
        return None
    stamp = _iso(now)
    idle_limit = _iso(_parse(session.last_seen) + SESSION_IDLE)
    if session.expires_at <= stamp or idle_limit <= stamp:
        store.end_sessions(token_hash=digest, audit=_record(
            session.login, "", "session_expired", session.login,
            why="absolute" if session.expires_at <= stamp else "idle"))
        return None
    user = store.user(session.login)
    if user is None or user.disabled:
        store.end_sessions(token_hash=digest)
        return None
    if _parse(session.last_seen) + TOUCH_EVERY <= now:
        store.touch_session(digest, stamp)
    return actor_of(user)


def sign_out(store: Store, token: str | None) -> bool:
    if not token or len(token) > 200:
        return False
    digest = token_hash(token)
    session = store.session(digest)
    if session is None:
        return False
    user = store.user(session.login)
    store.end_sessions(token_hash=digest, audit=_record(
        session.login, user.role if user else "", "logout", session.login))
    return True


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def require_user(store: Store, login: str) -> UserRecord:
    user = store.user(login)
    if user is None:
        raise StoreError(f"用户 {clean_login(login)} 不存在")
    return user


def require_person(store: Store, login: str) -> UserRecord:
    """`require_user` for a person's account: an API key's is managed as a key (apikey add /
    revoke), never given a password or enabled again."""
    if str(login).startswith(API_PREFIX):
        raise AuthError(f"{clean_login(login)} 是接口密钥，不是用户账号：请用 gridmap apikey "
                        "管理（吊销后不能恢复，需要时新建密钥）")
    return require_user(store, login)


# -- API keys -------------------------------------------------------------------------------------
# An API key is an account of a role like any other (the same permission table and audit), with
# login `api-<id>` and its secret hashed with SHA-256: a key has 256 random bits, so a fast hash
# is as safe as a slow one, and every request can afford it. The key is shown once.
API_PREFIX = "api-"


def new_api_key(name: str, role: str) -> tuple[str, UserRecord]:
    """(the key, its account record); the key is `gmk_<id>_<secret>`."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or any(
            unicodedata.category(c).startswith("C") for c in name):
        raise AuthError(f"接口密钥名称须为 1–{NAME_MAX} 个字符，且不能含控制字符")
    if role not in ROLES:
        raise AuthError(f"未知角色：{clean_login(role)}")
    if role in WORKER_ROLES or role == "bureau":
        raise AuthError("接口密钥不能是网格员、网格长或执法局人员角色（它们需关联花名册或机构）")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = utc_now()
    user = UserRecord(login=API_PREFIX + key_id, role=role, name=name,
                      password_hash="sha256$" + hashlib.sha256(secret.encode()).hexdigest(),
                      created_at=now, updated_at=now)
    return f"gmk_{key_id}_{secret}", user


def api_key_actor(store: Store, key: str | None) -> Actor | None:
    """The actor of a valid, enabled API key, or None."""
    if not key or len(key) > 100 or not key.startswith("gmk_"):
        return None
    try:
        _, key_id, secret = key.split("_", 2)
    except ValueError:
        return None
    if not re.fullmatch(r"[0-9a-f]{12}", key_id):
        return None
    user = store.user(API_PREFIX + key_id)
    if user is None or user.disabled or not user.password_hash.startswith("sha256$"):
        return None
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if not hmac.compare_digest(digest, user.password_hash.split("$", 1)[1]):
        return None
    return actor_of(user, via="api")

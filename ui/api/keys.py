"""Who is calling: API keys and their limits.

A key (`gmk_<id>_<secret>`, made by `gridmap apikey add NAME --role ROLE`) is an account of a
role (grids/accounts.py): the same permission table and the same audit trail as a person of that
role. It is given as the Open311 parameter `api_key` (query string or form field) or as the
header `X-API-Key`, checked in the store on every request (a revoked key stops at once), and
limited per key by a token bucket (layers/ratelimit.py): with PostGIS in the database, one bucket
per key for every worker process and every machine.

Settings (environment, read when the app is created):

- `GRIDMAP_API_RATE`  requests per key: `50/s` (default), `3000/min` or a number per second;
  `off` for no limit
- `GRIDMAP_API_BURST` how many requests a key may make at once before the rate applies (100)
- `GRIDMAP_API_MAX_FORM`  largest request body of a form (POST requests.json), bytes (1 MB)
- `GRIDMAP_API_MAX_BATCH` largest body of a batch (POST /route), bytes (20 MB)
- `GRIDMAP_API_THREADS`   threads per worker process for store work (8)
- `GRIDMAP_API_REPLAY_CACHE` answers to POSTs with a client request id kept per process, so
  that retries are answered without registering again (20000; 0: every retry goes to the store)

With the embedded store (GeoPackage) each process keeps its own buckets: with `--workers N` a key
may make up to N times the rate there.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grids.access import Actor
from ui.api.formats import ApiError

KEY_HEADER = "X-API-Key"
KEY_PARAM = "api_key"
KEY_HELP = "接口密钥（由系统管理员用 `gridmap apikey add 名称 --role 角色` 生成）"

# The OpenAPI description of the two ways to give a key (what the docs' "Authorize" button
# fills in). Routes read the key themselves (`key_of`): cheaper than a dependency per request.
SECURITY_SCHEMES = {
    "X-API-Key": {"type": "apiKey", "in": "header", "name": KEY_HEADER,
                  "description": KEY_HELP},
    "api_key": {"type": "apiKey", "in": "query", "name": KEY_PARAM,
                "description": KEY_HELP + "；Open311 规范的写法"},
}
SECURED = {"security": [{"X-API-Key": []}, {"api_key": []}]}


@dataclass(frozen=True)
class Limits:
    rate: float  # requests per second and key (inf: no limit)
    burst: float
    max_form: int  # bytes
    max_batch: int
    threads: int
    replays: int = 20_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The settings, or ValueError naming the variable (Chinese)."""
        env = os.environ if env is None else env
        rate = parse_rate(env.get("GRIDMAP_API_RATE", "50/s"))
        burst = _number(env, "GRIDMAP_API_BURST", 100, minimum=1)
        return cls(rate=rate, burst=burst,
                   max_form=int(_number(env, "GRIDMAP_API_MAX_FORM", 1_000_000, minimum=1024)),
                   max_batch=int(_number(env, "GRIDMAP_API_MAX_BATCH", 20_000_000,
                                         minimum=1024)),
                   threads=int(_number(env, "GRIDMAP_API_THREADS", 8, minimum=1)),
                   replays=int(_number(env, "GRIDMAP_API_REPLAY_CACHE", 20_000, minimum=0)))

    def rate_text(self) -> str:
        return f"{self.rate:g} 次/秒（可连续 {self.burst:g} 次）"


def parse_rate(text: str) -> float:
    """`50/s`, `3000/min`, `50` (per second) or `off`, as requests per second."""
    value = str(text).strip().lower().replace(" ", "")
    if value in ("off", "none", "0", "inf"):
        return math.inf
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:/(s|sec|second|m|min|minute|h|hour))?", value)
    if not m or float(m[1]) <= 0:
        raise ValueError(f"GRIDMAP_API_RATE 的值“{text}”无效：应为如 50/s、3000/min 或 off")
    per = {"m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}.get(m[2] or "s", 1)
    return float(m[1]) / per


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    text = env.get(name, "")
    if not str(text).strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} 的值“{text}”无效：应为不小于 {minimum:g} 的数")
    return value


class Keys:
    """Turns a given key into the actor it belongs to, or refuses (401, 429)."""

    def __init__(self, service, limits: Limits) -> None:
        self.service = service
        self.limits = limits

    def actor(self, key: str | None) -> Actor:
        """Blocking (reads the store): call from a worker thread."""
        if not key:
            raise ApiError(401, f"缺少接口密钥：请用参数 {KEY_PARAM} 或请求头 {KEY_HEADER} 提供"
                                "（密钥由系统管理员用 gridmap apikey add 生成）",
                           {"WWW-Authenticate": f'ApiKey header="{KEY_HEADER}"'})
        actor = self.service.actor_for_key(key.strip())
        if actor is None:
            raise ApiError(401, "接口密钥无效或已吊销，请联系系统管理员",
                           {"WWW-Authenticate": f'ApiKey header="{KEY_HEADER}"'})
        wait = self.service.take_token(f"api:{actor.login}", self.limits.rate, self.limits.burst)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"请求过于频繁：每个接口密钥至多 {self.limits.rate_text()}，"
                                f"请 {seconds} 秒后重试", {"Retry-After": str(seconds)})
        return actor


def key_of(request: Request, form: Mapping[str, str] | None = None) -> str | None:
    """The key from the header, the query string or (Open311 POST) the form; the header wins."""
    return (request.headers.get(KEY_HEADER) or request.query_params.get(KEY_PARAM)
            or (form or {}).get(KEY_PARAM) or None)


async def acting(request: Request, work: Callable[[Actor], Response],
                 form: Mapping[str, str] | None = None) -> Response:
    """Authenticate the request's key and run `work(actor)`, both in a worker thread (they read
    the store, which may wait on a lock or the network: never on the event loop); the key's
    account is noted for the access log."""
    keys: Keys = request.app.state.keys
    key = key_of(request, form)

    def run() -> Response:
        actor = keys.actor(key)
        request.state.api_login = actor.login
        return work(actor)

    return await run_in_threadpool(run)

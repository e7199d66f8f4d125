"""Token buckets: the API's requests per key (ui/api/keys.py) and the login form's failures per
client address (ui/server.py).

A bucket holds up to `burst` tokens and is refilled at `rate` tokens per second; a request is let
through while the bucket holds at least one token, and takes `cost` of them (a negative cost
gives tokens back, up to a full bucket).

Where the buckets live is the store's business (`Store.take_token`): with PostGIS they are rows
of `rate_buckets` (migration 0006, an UNLOGGED table: nothing to keep across a crash), so every
process of a deployment — several `gridmap serve` processes, the API's workers, on any number of
machines — draws from the same bucket, in one statement (one round trip) with the database's
clock. The embedded store keeps them in the process (`LOCAL`): a GeoPackage serves one machine,
and N processes then allow up to N times the rate.
"""

from __future__ import annotations

import math
import random
import threading
import time


class TokenBuckets:
    """Buckets of this process, one per name."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, rate: float, burst: float, cost: float = 1.0,
             now: float | None = None) -> float:
        """0 when the bucket held a token (then `cost` were taken), else the seconds until it
        will hold one."""
        if math.isinf(rate):
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(name, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - last) * rate)
            if cost < 0:  # tokens given back (a login that succeeded), up to a full bucket
                self._buckets[name] = (min(burst, tokens - cost), now)
                return 0.0
            if tokens >= 1:
                self._buckets[name] = (tokens - cost, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            if len(self._buckets) > 100_000:  # full buckets are the same as absent ones
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * rate < burst}
            return (1 - tokens) / rate


LOCAL = TokenBuckets()

# The refilled level, computed once per row (a concurrent taker waits for the row lock, then
# refills from what the other left; a clock read before that wait never moves time backwards).
_LEVEL = ("least(%(burst)s, b.tokens + greatest(0, excluded.at - b.at) * %(rate)s)")
TAKE_SQL = f"""
INSERT INTO rate_buckets AS b (name, tokens, at, taken)
VALUES (%(name)s, least(%(burst)s, %(burst)s - %(cost)s), extract(epoch FROM clock_timestamp()),
        true)
ON CONFLICT (name) DO UPDATE SET
    tokens = CASE WHEN {_LEVEL} >= 1 OR %(cost)s < 0
                  THEN least(%(burst)s, {_LEVEL} - %(cost)s) ELSE {_LEVEL} END,
    taken = {_LEVEL} >= 1 OR %(cost)s < 0,
    at = greatest(b.at, excluded.at)
RETURNING taken, tokens
"""
# A bucket left alone for a day is full (whatever the settings, burst/rate is far less): the same
# as no row. Removed now and then by whoever takes a token.
PRUNE_SQL = ("DELETE FROM rate_buckets WHERE at < extract(epoch FROM clock_timestamp()) - 86400")
PRUNE_CHANCE = 0.001


def take_in_database(cur, name: str, rate: float, burst: float, cost: float = 1.0) -> float:
    """`TokenBuckets.take` on the database's `rate_buckets` (PostGIS), inside the caller's
    transaction."""
    if math.isinf(rate):
        return 0.0
    cur.execute(TAKE_SQL, {"name": name, "rate": float(rate), "burst": float(burst),
                           "cost": float(cost)})
    taken, tokens = cur.fetchone()
    if random.random() < PRUNE_CHANCE:
        cur.execute(PRUNE_SQL)
    return 0.0 if taken else (1 - float(tokens)) / rate

"""Who is calling the gateway: API keys as bearer tokens, tenants, priority ceilings, rates.

With auth off (the default when the gateway listens on loopback) every caller is the anonymous
tenant ``None`` with the full priority range and no rate limit: a local tool, not a service.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from infermq.errors import InvalidApiKey, PriorityNotAllowed, RateLimited
from infermq.keys import RedisKeys
from routing.topology import MAX_PRIORITY
from stores.apikeys import find_key

RATE_WINDOW_S = 60
DEFAULT_PRIORITY = 5


@dataclass(frozen=True)
class Caller:
    """An authenticated caller (or the anonymous one when auth is off)."""

    tenant: str | None
    key_id: str | None
    priority_ceiling: int = MAX_PRIORITY

    def priority_for(self, asked: int | None) -> int:
        """The job's priority: what was asked, else the key's tier (its ceiling, capped at the
        default for anonymous callers).

        Raises:
            PriorityNotAllowed: ``asked`` is above the key's ceiling.
        """
        if asked is None:
            return DEFAULT_PRIORITY if self.key_id is None else self.priority_ceiling
        if asked > self.priority_ceiling:
            raise PriorityNotAllowed(
                f"priority {asked} is above this API key's ceiling {self.priority_ceiling}: ask "
                "for less, or use a key with a higher ceiling (`infermq keys create --priority`)"
            )
        return asked


ANONYMOUS = Caller(tenant=None, key_id=None)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Checks a request's API key and counts it against the key's rate."""

    def __init__(self, database: Engine, redis: aioredis.Redis, keys: RedisKeys,
                 required: bool) -> None:
        self.database = database
        self.redis = redis
        self.keys = keys
        self.required = required

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization: Bearer <key>`` header.

        Keys are read from PostgreSQL on every request, so a revoke takes effect at once.

        Raises:
            InvalidApiKey: auth is on and the key is missing, unknown or revoked.
            RateLimited: the key is over its requests per minute.
        """
        if not self.required:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            raise InvalidApiKey("no API key: send `Authorization: Bearer <key>` "
                                "(`infermq keys create <tenant>` makes one)")
        key = await run_in_threadpool(find_key, self.database, token)
        if key.revoked:
            raise InvalidApiKey(f"API key {key.id} was revoked: ask for a new one")
        await self._count(key.id, key.rate_per_minute)
        return Caller(tenant=key.tenant, key_id=key.id, priority_ceiling=key.priority_ceiling)

    async def _count(self, key_id: str, rate_per_minute: int) -> None:
        # A sliding one-minute log (a sorted set of request times) rather than fixed windows:
        # a burst at a window's edge cannot reach twice the rate, and a key at its limit is
        # refused until its oldest request is a minute old, whatever the clock reads.
        now_s = time.time()
        oldest_s = await self.redis.eval(
            SLIDING_WINDOW_SCRIPT, 1, self.keys.rate_window(key_id), now_s, RATE_WINDOW_S,
            rate_per_minute, uuid.uuid4().hex)
        if oldest_s is not None:
            retry_after_s = max(1, math.ceil(float(oldest_s) + RATE_WINDOW_S - now_s))
            raise RateLimited(
                f"API key {key_id} is over its rate of {rate_per_minute} requests a minute; "
                f"retry in {retry_after_s} s",
                retry_after_s,
            )


SLIDING_WINDOW_SCRIPT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  return redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('EXPIRE', key, math.ceil(window))
return nil
"""
"""Admits a request if fewer than ``limit`` were admitted in the last ``window`` seconds;
else returns the time of the oldest one (when a slot frees up). Atomic in Redis."""

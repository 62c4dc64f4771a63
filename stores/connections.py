"""Redis clients for the configured URL, shared per process."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import redis

from infermq.errors import RedisUnavailable
from infermq.settings import Settings

REDIS_OUTAGES = (redis.ConnectionError, redis.TimeoutError)
"""What a caller survives by retrying: the connection refused, dropped or timed out (a restart,
a failover). redis.asyncio raises the same classes."""

_clients: dict[tuple[str, bool], redis.Redis] = {}
_lock = threading.Lock()


def get_redis(settings: Settings) -> redis.Redis:
    """A pooled client that decodes responses to ``str``.

    No read timeout: waiting on a result is a blocking XREAD of up to the caller's timeout,
    which redis-py's default socket timeout would cut short; keepalive finds dead peers.
    """
    return _client(settings.redis_url, decode_responses=True)


def get_binary_redis(settings: Settings) -> redis.Redis:
    """A pooled client that returns ``bytes`` (compressed session contexts)."""
    return _client(settings.redis_url, decode_responses=False)


def _client(url: str, decode_responses: bool) -> redis.Redis:
    with _lock:
        client = _clients.get((url, decode_responses))
        if client is None:
            client = redis.Redis.from_url(
                url,
                decode_responses=decode_responses,
                health_check_interval=30,
                socket_timeout=None,
                socket_connect_timeout=5,
                socket_keepalive=True,
            )
            _clients[(url, decode_responses)] = client
        return client


def redis_unavailable(settings: Settings, error: Exception) -> RedisUnavailable:
    """The typed error for a Redis request that failed, saying what to do next."""
    url = urlsplit(settings.redis_url)
    where = f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"
    return RedisUnavailable(
        f"Redis at {where} failed ({error}): is it running? `infermq services` starts it; "
        f"retry the request once it answers.")

"""Redis clients for the configured URL, shared per process."""

from __future__ import annotations

import threading

import redis

from infermq.settings import Settings

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

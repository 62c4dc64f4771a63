"""Redis clients for the configured URL, shared per process."""

from __future__ import annotations

import threading

import redis

from infermq.settings import Settings

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def get_redis(settings: Settings) -> redis.Redis:
    """A pooled client that decodes responses to ``str``.

    No read timeout: waiting on a result is a blocking XREAD of up to the caller's timeout,
    which redis-py's default socket timeout would cut short; keepalive finds dead peers.
    """
    with _lock:
        client = _clients.get(settings.redis_url)
        if client is None:
            client = redis.Redis.from_url(
                settings.redis_url,
                decode_responses=True,
                health_check_interval=30,
                socket_timeout=None,
                socket_connect_timeout=5,
                socket_keepalive=True,
            )
            _clients[settings.redis_url] = client
        return client

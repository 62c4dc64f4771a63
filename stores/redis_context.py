"""The Redis tier of session contexts: a bounded, LFU + TTL evicted copy of PostgreSQL's.

Redis is shared with job statuses, token streams and the cache, so infermq cannot rely on a
server-wide ``maxmemory-policy``: it evicts its own keys. Every context key has a TTL renewed
on use (idle contexts expire), and a sorted set scores each key by its number of uses; a write
that takes the set past ``max_contexts`` deletes the least used keys. The tier's memory is
therefore at most ``max_contexts`` contexts.

Every value starts with the context's turn count (``b"<turns>|"`` + the zlib blob), so a
write never replaces a newer context with an older one, and a reader can tell a stale copy.
Redis is a cache here: an unreachable Redis makes every call a miss (logged), never an error,
because PostgreSQL holds every context.
"""

from __future__ import annotations

import logging
from typing import Final

import redis

from infermq.errors import SessionContextError
from infermq.keys import RedisKeys
from infermq.sessions import SessionContext, decode_context, encode_context

log = logging.getLogger(__name__)

# KEYS: context key, LFU index. ARGV: turns, value, ttl_s, max_contexts.
_WRITE_LUA: Final = """
local current = redis.call('GET', KEYS[1])
if current then
  local turns = tonumber(string.match(current, '^(%d+)|'))
  if turns and turns > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('ZINCRBY', KEYS[2], 1, KEYS[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local evicted = 0
  for _, victim in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess)) do
    if evicted < excess and victim ~= KEYS[1] then
      redis.call('DEL', victim)
      redis.call('ZREM', KEYS[2], victim)
      evicted = evicted + 1
    end
  end
end
return 1
"""

# KEYS: context key, LFU index. ARGV: ttl_s.
_READ_LUA: Final = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('ZINCRBY', KEYS[2], 1, KEYS[1])
end
return value
"""


class RedisContextTier:
    """Session contexts in Redis, bounded by count (LFU) and by idle time (TTL)."""

    def __init__(
        self, client: redis.Redis, keys: RedisKeys, *, ttl_s: int, max_contexts: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self.max_contexts = max_contexts
        self._write_script = client.register_script(_WRITE_LUA)
        self._read_script = client.register_script(_READ_LUA)

    def read(self, session_id: str) -> SessionContext | None:
        """The context held in Redis, or ``None`` (absent, undecodable, Redis unreachable).

        A hit counts as a use (LFU) and renews the key's TTL.
        """
        try:
            value = self._read_script(
                keys=[self.keys.session_context(session_id), self.keys.session_index()],
                args=[self.ttl_s],
            )
        except redis.RedisError as e:
            log.warning("Redis context read for session %s failed: %s", session_id, e)
            return None
        if value is None:
            return None
        _, _, blob = bytes(value).partition(b"|")
        try:
            return decode_context(blob)
        except SessionContextError as e:  # a miss: PostgreSQL holds the reference copy
            log.warning("Redis context of session %s is undecodable: %s", session_id, e)
            return None

    def write(self, session_id: str, context: SessionContext) -> bool:
        """Stores ``context`` unless Redis holds a newer one; evicts the least used if full.

        Returns False when nothing was written (a newer copy is there, or Redis failed).
        """
        return self.write_encoded(session_id, context.turns, encode_context(context))

    def write_encoded(self, session_id: str, turns: int, blob: bytes) -> bool:
        """``write`` for a context already encoded (as PostgreSQL returns it)."""
        try:
            written = self._write_script(
                keys=[self.keys.session_context(session_id), self.keys.session_index()],
                args=[turns, b"%d|" % turns + blob, self.ttl_s, self.max_contexts],
            )
        except redis.RedisError as e:
            log.warning("Redis context write for session %s failed: %s", session_id, e)
            return False
        return bool(written)

    def drop(self, *session_ids: str) -> None:
        """Removes contexts from Redis (the session sleeps or ended)."""
        if not session_ids:
            return
        context_keys = [self.keys.session_context(s) for s in session_ids]
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(*context_keys)
            pipe.zrem(self.keys.session_index(), *context_keys)
            pipe.execute()
        except redis.RedisError as e:
            log.warning("Redis context drop of %d sessions failed: %s", len(session_ids), e)

    def prune_index(self, scan_count: int = 1000) -> int:
        """Removes index entries whose key expired by TTL; returns how many it removed.

        Expired keys leave their index entry behind (Redis has no expiry hook), which would
        count against ``max_contexts``; the periodic sweep calls this.
        """
        index = self.keys.session_index()
        removed = 0
        batch: list[bytes] = []
        try:
            for member, _score in self.client.zscan_iter(index, count=scan_count):
                batch.append(member)
                if len(batch) >= scan_count:
                    removed += self._remove_missing(index, batch)
                    batch = []
            removed += self._remove_missing(index, batch)
        except redis.RedisError as e:
            log.warning("pruning the Redis context index failed: %s", e)
        return removed

    def _remove_missing(self, index: str, members: list[bytes]) -> int:
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.exists(member)
        missing = [m for m, exists in zip(members, pipe.execute(), strict=True) if not exists]
        if missing:
            self.client.zrem(index, *missing)
        return len(missing)

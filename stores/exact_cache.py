"""The result cache's exact tier in Redis, shared by the producer and the worker (the keys and
the policy are pure, in ``infermq/cache_keys.py``).

Redis is shared with job statuses, streams and idempotency keys, so eviction is infermq's own:
per task type, an LFU index (LFU with dynamic aging) caps the number of entries and every entry
carries the task type's TTL. A server-wide ``allkeys-lfu`` would evict the other keys too.

No torch and no ``workers`` import here: the producer calls this at submit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from infermq.cache_keys import (
    CacheableJob,
    cache_namespace,
    cache_policy_allows,
    exact_hash,
)
from infermq.errors import RedisUnavailable, ServiceUnavailable
from infermq.jobs import TaskType
from infermq.keys import RedisKeys
from infermq.registry import ModelSpec, Registry, TaskTypePolicy


@dataclass(frozen=True)
class CacheEntry:
    """A cached answer and where it came from."""

    output: Any
    model: str
    revision: str
    source_job_id: str
    created_at: float  # unix seconds
    text: str | None = None  # the input as first asked (the near-miss guard reads it)
    entry_id: str = ""

    @classmethod
    def from_redis(cls, entry_id: str, fields: dict[bytes, bytes]) -> CacheEntry:
        text = fields.get(b"text")
        return cls(
            output=json.loads(fields[b"output"]),
            model=fields[b"model"].decode(),
            revision=fields[b"revision"].decode(),
            source_job_id=fields[b"source_job_id"].decode(),
            created_at=float(fields[b"created_at"]),
            text=text.decode() if text is not None else None,
            entry_id=entry_id,
        )


StatKind = str  # "exact_hit" | "exact_miss" | "semantic_hit" | "semantic_miss"

# ``get_entry`` then ``count`` as one script. KEYS: entry, LFU index, stats; ARGV: entry id,
# hit field, miss field. Returns the entry's fields (flat), empty on a miss.
_LOOKUP_COUNTED = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
    redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
    return fields
end
redis.call('ZADD', KEYS[2], 'XX', 'INCR', 1, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return fields
"""

# ``put_entry``'s write as one script, refused (-1, nothing written) while an entry of the task
# type has expired: the caller drops those first. KEYS: entry, LFU index, expiry index, LFU
# floor, memberships, then the member sets; ARGV: expired-before score, TTL in seconds, entry
# id, expiry score, memberships JSON ('' for none), then the entry's field/value pairs.
# Returns the index size that the cap check needs.
_PUT_UNLESS_EXPIRED = """
if #redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 1) > 0 then return -1 end
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', floor + 1, ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[5], ARGV[3], ARGV[5]) end
for i = 6, #KEYS do
    redis.call('SADD', KEYS[i], ARGV[3])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return redis.call('ZCARD', KEYS[2])
"""


class ExactCache:
    """The exact tier and the entry store both tiers share (TTL, LFU cap, counters)."""

    def __init__(self, redis_client: redis.Redis, keys: RedisKeys, registry: Registry) -> None:
        self.redis, self.keys, self.registry = redis_client, keys, registry
        self._lookup_counted = redis_client.register_script(_LOOKUP_COUNTED)
        self._put_unless_expired = redis_client.register_script(_PUT_UNLESS_EXPIRED)

    def policy_for(self, task_type: TaskType | str) -> TaskTypePolicy:
        return self.registry.task_types[TaskType(task_type)]

    def allows(self, job: CacheableJob, spec: ModelSpec) -> bool:
        """The cache policy applied to one job (see ``cache_policy_allows``)."""
        policy = self.registry.task_types.get(job.task_type)
        return policy is not None and cache_policy_allows(
            job.task_type, job.params, job.session_id, spec, policy
        )

    def lookup(self, job: CacheableJob, spec: ModelSpec) -> CacheEntry | None:
        """The cached answer to exactly this input (after normalization), or None.

        Returns None without counting for a job the policy does not cache.

        Raises:
            RedisUnavailable: Redis cannot be reached.
        """
        if not self.allows(job, spec):
            return None
        namespace = cache_namespace(job.task_type, spec, job.params)
        entry_id = f"{namespace}:{exact_hash(job.input)}"
        task = str(job.task_type)
        # get_entry and count in one round trip: the producer and the worker do it per job.
        try:
            flat: list[bytes] = self._lookup_counted(
                keys=[self.keys.cache_entry(entry_id), self.keys.cache_index(task),
                      self.keys.cache_stats()],
                args=[entry_id, f"{task}:exact_hit", f"{task}:exact_miss"])
        except redis.RedisError as e:
            raise RedisUnavailable(f"Redis failed on a cache lookup ({e}): is it running? "
                                   f"`infermq services` starts it; retry then.") from e
        if not flat:
            return None
        return CacheEntry.from_redis(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    def store(self, job: CacheableJob, spec: ModelSpec, output: Any, source_job_id: str) -> bool:
        """Caches ``output`` as the answer to ``job``; False when the policy does not allow it.

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not self.allows(job, spec):
            return False
        namespace = cache_namespace(job.task_type, spec, job.params)
        text = job.input if isinstance(job.input, str) else None
        self.put_entry(job.task_type, f"{namespace}:{exact_hash(job.input)}", output, spec,
                       source_job_id, text)
        return True

    # -- the entry store, also used by the semantic tier ------------------------------------

    def get_entry(self, task_type: TaskType | str, entry_id: str) -> CacheEntry | None:
        """One entry by id; a hit counts once more towards keeping it (LFU)."""
        try:
            fields: dict[bytes, bytes] = self.redis.hgetall(  # type: ignore[assignment]
                self.keys.cache_entry(entry_id)
            )
            if not fields:
                return None
            self.redis.zadd(self.keys.cache_index(str(task_type)), {entry_id: 1}, xx=True,
                            incr=True)
        except redis.RedisError as e:
            raise RedisUnavailable(f"Redis failed on a cache lookup ({e}): is it running? "
                                   f"`infermq services` starts it; retry then.") from e
        return CacheEntry.from_redis(entry_id, fields)

    def put_entry(self, task_type: TaskType | str, entry_id: str, output: Any, spec: ModelSpec,
                  source_job_id: str, text: str | None,
                  extra: dict[str, bytes | str] | None = None,
                  member_of: list[str] | None = None) -> None:
        """Writes one entry (with its TTL) and its memberships, then holds the size cap.

        ``member_of`` are the sets (semantic bands) that list the entry; they get the same TTL
        and lose the entry when it is evicted.

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        task = str(task_type)
        policy = self.policy_for(task)
        now = time.time()
        fields: dict[str, bytes | str] = {
            "output": json.dumps(output), "model": spec.name, "revision": spec.revision,
            "source_job_id": source_job_id, "created_at": repr(now),
        }
        if text is not None:
            fields["text"] = text
        fields.update(extra or {})
        # LFU with dynamic aging: a new entry starts just above the floor (see
        # ``evict_over_cap``), so entries that were hot long ago do not stay forever. The
        # memberships are kept outside the entry, so that an entry that expired can still be
        # taken out of its bands.
        keys = [self.keys.cache_entry(entry_id), self.keys.cache_index(task),
                self.keys.cache_expiry(task), self.keys.cache_lfu_floor(task),
                self.keys.cache_memberships(task), *(member_of or [])]
        args: list[bytes | str | float | int] = [
            repr(now), policy.cache_ttl_s, entry_id, now + policy.cache_ttl_s,
            json.dumps(member_of) if member_of else "",
            *(part for pair in fields.items() for part in pair)]
        try:
            # One round trip on the job path; a second and the sweep only when entries expired.
            size = int(self._put_unless_expired(keys=keys, args=args))
            if size < 0:
                self.drop_expired(task, now)
                size = int(self._put_unless_expired(keys=keys, args=["-inf", *args[1:]]))
            if size > policy.cache_max_entries:
                self.evict_over_cap(task, policy.cache_max_entries)
        except redis.RedisError as e:
            raise ServiceUnavailable(f"Redis failed while writing a cache entry: {e}") from e

    def drop_expired(self, task_type: str, now: float) -> int:
        """Removes the records of entries whose TTL has passed; the count removed."""
        expired = self.redis.zrangebyscore(self.keys.cache_expiry(task_type), "-inf", now)
        if expired:
            self._drop(task_type, expired)  # type: ignore[arg-type]
        return len(expired)

    def _drop(self, task_type: str, expired: list[bytes]) -> None:
        ids = [member.decode() for member in expired]
        self.redis.zrem(self.keys.cache_index(task_type), *ids)
        self.forget(task_type, ids)

    def forget(self, task_type: str, ids: list[str]) -> None:
        """Deletes entries with their band memberships and expiry records."""
        memberships_key = self.keys.cache_memberships(task_type)
        member_of = self.redis.hmget(memberships_key, ids)
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, sets in zip(ids, member_of, strict=True):
            pipe.delete(self.keys.cache_entry(entry_id))
            for member_set in json.loads(sets or b"[]"):
                pipe.srem(member_set, entry_id)
        pipe.hdel(memberships_key, *ids)
        pipe.zrem(self.keys.cache_expiry(task_type), *ids)
        pipe.execute()

    def evict_over_cap(self, task_type: str, max_entries: int) -> int:
        """Evicts the least frequently used entries beyond ``max_entries``; the count evicted.

        ZPOPMIN is atomic, so concurrent writers never evict the same entry twice and the cap
        holds once every writer has finished.
        """
        index = self.keys.cache_index(task_type)
        excess = int(self.redis.zcard(index)) - max_entries
        if excess <= 0:
            return 0
        popped: list[tuple[bytes, float]] = self.redis.zpopmin(  # type: ignore[assignment]
            index, excess
        )
        if not popped:
            return 0
        self.forget(task_type, [member.decode() for member, _ in popped])
        # The floor rises only when what is evicted had hits beyond its start: a stream of
        # one-off entries does not age out entries that are asked again and again.
        floor = float(self.redis.get(self.keys.cache_lfu_floor(task_type)) or 0)
        highest = max(score for _, score in popped)
        self.redis.set(self.keys.cache_lfu_floor(task_type), repr(max(floor, highest - 1)))
        return len(popped)

    def count(self, task_type: TaskType | str, kind: StatKind) -> None:
        """Adds one to a hit/miss counter of ``task_type``."""
        try:
            self.redis.hincrby(self.keys.cache_stats(), f"{task_type}:{kind}", 1)
        except redis.RedisError as e:
            raise ServiceUnavailable(f"Redis failed while counting a cache {kind}: {e}") from e

    def stats(self) -> dict[str, dict[str, int]]:
        """Hit and miss counters per task type: ``{"generate": {"exact_hit": 3, ...}}``."""
        raw: dict[bytes, bytes] = self.redis.hgetall(  # type: ignore[assignment]
            self.keys.cache_stats()
        )
        out: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            task, kind = field.decode().split(":", 1)
            out.setdefault(task, {})[kind] = int(value)
        return out

    def entry_count(self, task_type: TaskType | str) -> int:
        """Entries the LFU index of ``task_type`` holds (what the size cap bounds)."""
        return int(self.redis.zcard(self.keys.cache_index(str(task_type))))

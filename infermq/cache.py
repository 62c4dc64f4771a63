"""The result cache's keys, policy and exact tier, shared by the producer and the worker.

A cached answer is only ever served for the same task type, model, model revision and output
parameters: all of them go into the entry's namespace, so a new revision invalidates every older
entry at once (they stop matching and age out through LFU and TTL). Inside a namespace the exact
tier keys an entry by a hash of the normalized input; the semantic tier (``workers/
semantic_cache.py``) finds paraphrases among the same entries.

Redis is shared with job statuses, streams and idempotency keys, so eviction is infermq's own:
per task type, an LFU index (LFU with dynamic aging) caps the number of entries and every entry
carries the task type's TTL. A server-wide ``allkeys-lfu`` would evict the other keys too.

No torch and no ``workers`` import here: the producer calls this at submit.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from infermq.errors import RedisUnavailable, ServiceUnavailable
from infermq.jobs import ChatMessage, GenerationParams, JobInput, TaskType
from infermq.keys import RedisKeys
from routing.registry import ModelSpec, Registry, TaskTypePolicy

NORMALIZER_VERSION = 1

_DASHES = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\u2010\u2011"), "-")
_QUOTES = dict.fromkeys(map(ord, "\u2018\u2019\u02bc`"), "'")
# Characters that change what is asked: arithmetic, comparison, currency, ids, degrees.
_OPERATORS = r"+\-*/^%=<>$€£#@&°"


def normalize_text(text: str) -> str:
    """The input as the exact tier compares it: the same question typed differently is equal.

    NFKC, casefold and whitespace are folded, and punctuation that carries no meaning is
    dropped (``?``, ``!``, quotes, commas between words, a sentence's final period), but
    operators, signs, decimal points, thousands separators and times are kept, so "2+3" and
    "2-3", "-5" and "5", "3.5" and "35" stay apart while "What is 2 + 3?" and "what is 2+3"
    meet.
    """
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000 -> 1000
    # Keep '.', ',' and ':' only inside a number or an identifier (3.5, 10:30, file.txt).
    text = re.sub(r"(?<![0-9a-z_])[.,:]|[.,:](?![0-9a-z_])", " ", text)
    text = re.sub(rf"[^\w\s.,:'{_OPERATORS}]", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes
    text = re.sub(rf"\s*([{_OPERATORS}])\s*", r"\1", text)
    text = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", text)  # two-factor == two factor
    return " ".join(text.split())


def _normalized_input(value: JobInput) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    return [
        normalize_text(item) if isinstance(item, str) else [item.role, normalize_text(item.content)]
        for item in value
    ]


def _digest(payload: Any, size: int = 32) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:size]


def exact_hash(value: JobInput) -> str:
    """The exact-tier id of an input: a hash of its normalized form."""
    return _digest([NORMALIZER_VERSION, _normalized_input(value)])


def cache_namespace(task_type: TaskType | str, spec: ModelSpec, params: GenerationParams,
                    context: str = "") -> str:
    """Where the entries of one (task type, model, revision, output parameters) live.

    Generation parameters only change a ``generate`` output, so they key only that task type;
    ``context`` separates semantic entries whose chat history differs. The readable head
    (task and model) is for operators; the digest is what keeps namespaces apart.
    """
    task = str(task_type)
    fields: dict[str, Any] = {"task": task, "model": spec.name, "revision": spec.revision,
                              "context": context}
    if task == TaskType.GENERATE:
        fields["params"] = params.model_dump(mode="json")
    return f"{task}:{spec.name}:{_digest(fields, 16)}"


def semantic_text(value: JobInput) -> tuple[str, str] | None:
    """(text to embed, context digest) when an input can be matched by meaning, else None.

    A single text, or a chat whose last message is the user's: the earlier messages must then
    match exactly (their digest goes into the namespace). Lists of texts (batch embeddings)
    only use the exact tier.
    """
    if isinstance(value, str):
        return value, ""
    if value and isinstance(value[-1], ChatMessage) and value[-1].role == "user":
        history = [m for m in value[:-1] if isinstance(m, ChatMessage)]
        return value[-1].content, (_digest(_normalized_input(history), 16) if history else "")
    return None


class CacheableJob(Protocol):
    """The fields of a ``JobRequest`` or ``JobMessage`` the cache reads."""

    @property
    def task_type(self) -> TaskType: ...
    @property
    def input(self) -> JobInput: ...
    @property
    def params(self) -> GenerationParams: ...
    @property
    def session_id(self) -> str | None: ...


def cache_policy_allows(task_type: TaskType | str, params: GenerationParams,
                        session_id: str | None, spec: ModelSpec, policy: TaskTypePolicy) -> bool:
    """Whether a job's answer may be served from, and written to, the cache.

    ``embed`` and ``classify`` are deterministic: cacheable. ``generate`` is cacheable at
    temperature 0 (greedy decoding gives one answer); sampling at temperature > 0 is not, since
    a repeat should give a fresh sample, unless the task type's policy sets ``cache_sampled``
    (the seed and temperature are then part of the key). Jobs of a session are never cached:
    their answer depends on the session's context, which is not part of the key. The task
    type's policy and the model may switch caching off.
    """
    if session_id is not None or not (policy.cacheable and spec.cacheable):
        return False
    if str(task_type) == TaskType.GENERATE and params.temperature > 0:
        return policy.cache_sampled
    return True


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

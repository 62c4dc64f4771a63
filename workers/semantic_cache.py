"""The semantic cache tier: answers a paraphrase from cache, never a different question.

Runs in the worker, which has the embedder. Candidates come from a locality-sensitive hash of
the embedding (random-hyperplane SimHash cut into bands; one Redis set per band value), so a
lookup reads a few sets instead of scanning the namespace. A candidate is served only when its
cosine similarity reaches the task type's ``semantic_threshold``, the near-miss guard
(``workers/cache_guard.py``) finds nothing that changes the answer, and, where the worker has
one, the learned verifier (``workers/verifier.py``) scores the pair at or above the threshold
certified for it. The verifier reads only the best ``MAX_VERIFIED`` candidates.

Entries live in the exact tier's store (``stores/exact_cache.py``): same namespace, TTL, LFU cap,
provenance and counters; the semantic tier adds the vector and the band memberships.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from infermq.cache_keys import CacheableJob, cache_namespace, exact_hash, semantic_text
from infermq.errors import ServiceUnavailable
from infermq.jobs import TaskType
from infermq.keys import RedisKeys
from infermq.registry import ModelSpec, Registry
from stores.exact_cache import CacheEntry, ExactCache
from workers.cache_guard import near_miss_reason
from workers.verifier import CertifiedVerifier

Embedder = Callable[[list[str]], np.ndarray]

# 32 bands of 10 bits: a pair at cosine 0.8 shares a band with probability 0.97, at 0.7 with
# 0.83, while a random vector shares one with ~1/1024 per band, so a band set of a 100k-entry
# namespace holds ~100 ids.
BANDS = 32
BITS_PER_BAND = 10
LSH_SEED = 20_240_605  # every worker must draw the same hyperplanes
MAX_CANDIDATES = 24  # the most entries whose vectors are read per lookup
MAX_VERIFIED = 2  # the most candidates the verifier scores per lookup (one forward pass)


@dataclass(frozen=True)
class SemanticHit:
    """A cached answer found for a job, how it was found, and how close it was."""

    entry: CacheEntry
    tier: str  # "exact" or "semantic"
    similarity: float

    @property
    def source_job_id(self) -> str:
        return self.entry.source_job_id


class SemanticCache:
    """Exact lookup first, then SimHash candidates verified by cosine and the near-miss guard."""

    def __init__(self, redis_client: redis.Redis, keys: RedisKeys, embed: Embedder,
                 registry: Registry, *, guard: bool = True,
                 verifier: CertifiedVerifier | None = None) -> None:
        self.exact = ExactCache(redis_client, keys, registry)
        self.redis, self.keys, self.embed, self.guard = redis_client, keys, embed, guard
        self.verifier = verifier
        self._planes: np.ndarray | None = None
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    # -- job level: what the worker calls --------------------------------------------------

    def lookup(self, job: CacheableJob, spec: ModelSpec) -> SemanticHit | None:
        """The cached answer to ``job`` or to a paraphrase of it, or None.

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not self.exact.allows(job, spec):
            return None
        namespace = cache_namespace(job.task_type, spec, job.params)
        entry = self.exact.get_entry(job.task_type, f"{namespace}:{exact_hash(job.input)}")
        if entry is not None:
            self.exact.count(job.task_type, "exact_hit")
            return SemanticHit(entry, "exact", 1.0)
        found = semantic_text(job.input)
        if found is None:
            self.exact.count(job.task_type, "semantic_miss")
            return None
        text, context = found
        policy = self.exact.policy_for(job.task_type)
        return self.lookup_text(cache_namespace(job.task_type, spec, job.params, context),
                                job.task_type, text, policy.semantic_threshold)

    def store(self, job: CacheableJob, spec: ModelSpec, output: Any, source_job_id: str) -> bool:
        """Caches ``output`` for ``job`` in both tiers; False when the policy does not allow it.

        Raises:
            ServiceUnavailable: Redis cannot be reached.
        """
        if not self.exact.allows(job, spec):
            return False
        found = semantic_text(job.input)
        if found is None:
            return self.exact.store(job, spec, output, source_job_id)
        text, context = found
        # The entry id is the exact hash of the whole input, so the exact tier finds it too.
        self.store_text(cache_namespace(job.task_type, spec, job.params, context),
                        job.task_type, text, output, spec, source_job_id,
                        exact_namespace=cache_namespace(job.task_type, spec, job.params),
                        entry_hash=exact_hash(job.input))
        return True

    # -- text level: the benchmark and the tests drive these directly ----------------------

    def lookup_text(self, namespace: str, task_type: TaskType | str, text: str,
                    threshold: float, vector: np.ndarray | None = None) -> SemanticHit | None:
        """The best verified entry of ``namespace`` for ``text``, or None (counted either way)."""
        vector = self._vector(text) if vector is None else vector
        band_keys = self._band_keys(namespace, vector)
        scratch = self.keys.cache_scratch(uuid.uuid4().hex)
        try:
            # Votes are tallied in Redis (a set counts 1 per member in ZUNIONSTORE), so only
            # the best candidates travel, however crowded the bands are.
            pipe = self.redis.pipeline(transaction=True)
            pipe.zunionstore(scratch, band_keys)
            pipe.zrange(scratch, 0, MAX_CANDIDATES - 1, desc=True)
            pipe.delete(scratch)
            ids = [m.decode() for m in pipe.execute()[1]]
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.hmget(self.keys.cache_entry(entry_id), ["vec", "text"])
            rows = pipe.execute()
        except redis.RedisError as e:
            raise ServiceUnavailable(f"Redis failed on a semantic cache lookup: {e}") from e
        scored: list[tuple[float, str, str]] = []
        for entry_id, (blob, cached_text) in zip(ids, rows, strict=True):
            if blob is None:  # expired or evicted since it joined the band
                continue
            similarity = float(np.dot(np.frombuffer(blob, dtype=np.float32), vector))
            if similarity >= threshold:
                scored.append((similarity, entry_id, cached_text.decode()))
        passed = [(similarity, entry_id, cached_text)
                  for similarity, entry_id, cached_text in sorted(scored, reverse=True)
                  if not (self.guard and near_miss_reason(text, cached_text) is not None)]
        if self.verifier is not None and passed:
            passed = passed[:MAX_VERIFIED]
            verdicts = self.verifier.score([(text, cached) for _, _, cached in passed])
            passed = [c for c, v in zip(passed, verdicts, strict=True)
                      if v >= self.verifier.threshold]
        for similarity, entry_id, _ in passed:
            entry = self.exact.get_entry(task_type, entry_id)
            if entry is not None:
                self.exact.count(task_type, "semantic_hit")
                return SemanticHit(entry, "semantic", similarity)
        self.exact.count(task_type, "semantic_miss")
        return None

    def store_text(self, namespace: str, task_type: TaskType | str, text: str, output: Any,
                   spec: ModelSpec, source_job_id: str, *, vector: np.ndarray | None = None,
                   exact_namespace: str | None = None, entry_hash: str | None = None) -> str:
        """Writes one entry findable by meaning in ``namespace``; returns its id."""
        vector = self._vector(text) if vector is None else vector
        entry_id = f"{exact_namespace or namespace}:{entry_hash or exact_hash(text)}"
        self.exact.put_entry(
            task_type, entry_id, output, spec, source_job_id, text,
            extra={"vec": np.asarray(vector, dtype=np.float32).tobytes()},
            member_of=self._band_keys(namespace, vector),
        )
        return entry_id

    def band_signature(self, vector: np.ndarray) -> list[int]:
        """The SimHash band values of a normalized vector (one int per band)."""
        planes = self._hyperplanes(vector.shape[-1])
        bits = (planes @ vector > 0).reshape(BANDS, BITS_PER_BAND)
        weights = 1 << np.arange(BITS_PER_BAND)
        return [int(v) for v in bits @ weights]

    def _band_keys(self, namespace: str, vector: np.ndarray) -> list[str]:
        lsh_namespace = f"{namespace}:lsh{BANDS}x{BITS_PER_BAND}s{LSH_SEED}"
        return [self.keys.cache_band(lsh_namespace, band, f"{value:x}")
                for band, value in enumerate(self.band_signature(vector))]

    def _hyperplanes(self, dim: int) -> np.ndarray:
        if self._planes is None or self._planes.shape[1] != dim:
            rng = np.random.default_rng(LSH_SEED)
            self._planes = rng.standard_normal((BANDS * BITS_PER_BAND, dim)).astype(np.float32)
        return self._planes

    def _vector(self, text: str) -> np.ndarray:
        # A worker looks a job up and then stores its answer: embed the text once.
        with self._lock:
            if text in self._recent:
                self._recent.move_to_end(text)
                return self._recent[text]
        vector = np.asarray(self.embed([text])[0], dtype=np.float32)
        with self._lock:
            self._recent[text] = vector
            if len(self._recent) > 1024:
                self._recent.popitem(last=False)
        return vector

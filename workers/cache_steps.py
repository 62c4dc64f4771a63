"""A job's cache steps in the worker: look up before the engine, store after the commit.

Which tier serves which task: ``embed`` jobs use the exact tier only (a paraphrase's vector is
another text's vector, never the answer to this one); ``generate`` and ``classify`` use the
semantic tier (SimHash candidates verified by cosine, the near-miss guard and the learned
verifier at its certified threshold) when this worker runs a real embedder and has the trained
verifier (``INFERMQ_CACHE_VERIFIER=on``, the default), else the exact tier: a worker without
the verifier's weights logs it and serves exact hits only. Jobs in a session are never cached:
their answer depends on the session's context (``cache_policy_allows``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from infermq.errors import EngineUnavailable
from infermq.jobs import CacheOutcome, JobMessage, JobResult, JobStatus, TaskType
from infermq.keys import RedisKeys
from infermq.registry import load_registry
from infermq.settings import Settings
from stores.cache_audit_store import CacheAuditStore
from stores.connections import get_binary_redis
from stores.database import get_engine
from stores.exact_cache import CacheEntry, ExactCache
from workers.semantic_cache import SemanticCache
from workers.verifier import FULL, SMALL, CertifiedVerifier, verifier_dir

log = logging.getLogger(__name__)

Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class CachedAnswer:
    """An answer found in the cache for a job, with where it came from."""

    entry: CacheEntry
    tier: CacheOutcome
    similarity: float

    def result_for(self, message: JobMessage, started_monotonic: float) -> JobResult:
        return JobResult(
            job_id=message.job_id,
            status=JobStatus.DONE,
            model=message.model,
            output=self.entry.output,
            cache=self.tier,
            cache_source_job=self.entry.source_job_id,
            cache_similarity=self.similarity,
            latency_ms=(time.monotonic() - started_monotonic) * 1000,
        )


class CacheSteps:
    """The cache side of the job runner, one per worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = load_registry(settings.registry_path)
        self.redis = get_binary_redis(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        self.exact = ExactCache(self.redis, self.keys, self.registry)
        self.switches = CacheAuditStore(get_engine(settings), settings.namespace,
                                        settings.cache_switch_recheck_s)
        self.semantic: SemanticCache | None = None

    def use_embedder(self, embed: Embedder) -> bool:
        """Turns the semantic tier on, with the worker's own embedding model; False if it stays
        off because the certified verifier it needs is missing (logged)."""
        verifier = None
        if self.settings.cache_verifier == "on":
            config = SMALL if self.settings.cache_verifier_variant == "small" else FULL
            path = verifier_dir(self.settings.models_dir, config)
            try:
                verifier = CertifiedVerifier.load(path)
            except EngineUnavailable as e:
                log.warning("semantic cache tier off, exact tier only: %s", e)
                return False
            log.info("cache verifier %s, certified threshold %.5f", path.name,
                     verifier.threshold)
        else:
            log.warning("semantic cache tier without the verifier (INFERMQ_CACHE_VERIFIER=off): "
                        "cosine and the rule guard only, no certified bound")
        self.semantic = SemanticCache(self.redis, self.keys, embed, self.registry,
                                      verifier=verifier)
        return True

    def lookup(self, message: JobMessage) -> CachedAnswer | None:
        spec = self.registry.models.get(message.model)
        if spec is None:
            return None
        if (self.semantic is not None and message.task_type != TaskType.EMBED
                # The switch the live audit (or an operator) sets, read from PostgreSQL at
                # most every cache_switch_recheck_s: every worker obeys it within that.
                and self.switches.semantic_enabled(str(message.task_type))):
            hit = self.semantic.lookup(message, spec)
            if hit is None:
                return None
            tier: CacheOutcome = "exact" if hit.tier == "exact" else "semantic"
            return CachedAnswer(hit.entry, tier, hit.similarity)
        entry = self.exact.lookup(message, spec)
        return CachedAnswer(entry, "exact", 1.0) if entry is not None else None

    def store(self, message: JobMessage, output: Any) -> None:
        spec = self.registry.models.get(message.model)
        if spec is None:
            return
        if self.semantic is not None and message.task_type != TaskType.EMBED:
            self.semantic.store(message, spec, output, message.job_id)
        else:
            self.exact.store(message, spec, output, message.job_id)

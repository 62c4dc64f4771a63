"""The live cache audit in the worker: re-runs a share of semantic hits on the engine.

After a semantic hit is committed and acked, ``after_semantic_hit`` picks it for audit with
probability ``cache_audit_share`` (a hash of the job id, ``infermq/audit_policy.py``) and hands
it to one background thread, which submits the same input to the worker's batcher at priority 0
(the lowest, so audits wait behind every user job) under an ``audit-`` id that is no job: no
row, no result, no metrics of users' jobs. The fresh answer is compared with the served one and
the outcome counted in PostgreSQL per task type and model; a disagreement evicts the entry at
once; when the interval's lower bound passes ``cache_audit_target`` the task type's semantic
tier is switched off fleet-wide. An audit that cannot run is counted as what it is: ``starved``
(more than ``MAX_PENDING`` waiting) or ``failed`` (the engine failed or timed out), never as
agreement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from infermq.audit_policy import AuditCounts, answers_agree, breached, picked_for_audit
from infermq.errors import EngineError, InfermqError
from infermq.jobs import JobMessage
from infermq.settings import Settings
from stores.cache_audit_store import AuditOutcome, CacheAuditStore
from stores.exact_cache import CacheEntry, ExactCache
from workers.engines.base import EngineOutput, EngineRequest

log = logging.getLogger(__name__)

MAX_PENDING = 64
AUDIT_PRIORITY = 0

SubmitToEngine = Callable[[str, EngineRequest], Future[EngineOutput]]


class CacheAudit:
    """Re-runs picked semantic hits in the background and acts on what they show."""

    def __init__(self, settings: Settings, store: CacheAuditStore, exact: ExactCache,
                 submit_to_engine: SubmitToEngine,
                 on_counts: Callable[[str, str, AuditCounts, bool], None] | None = None
                 ) -> None:
        self.share, self.target = settings.cache_audit_share, settings.cache_audit_target
        self.store, self.exact, self.submit_to_engine = store, exact, submit_to_engine
        self.on_counts = on_counts  # metrics: (task type, model, counts, tier still on)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cache-audit")
        self._pending = 0
        self._lock = threading.Lock()

    def after_semantic_hit(self, message: JobMessage, entry: CacheEntry) -> Future[None] | None:
        """Schedules the audit of a served semantic hit if it is picked; its future, or None."""
        if not picked_for_audit(message.job_id, self.share):
            return None
        with self._lock:
            starved = self._pending >= MAX_PENDING
            if not starved:
                self._pending += 1
        if starved:
            self._count(message, "starved")
            return None
        return self._pool.submit(self._audit, message, entry)

    def _audit(self, message: JobMessage, entry: CacheEntry) -> None:
        try:
            request = EngineRequest(job_id=f"audit-{message.job_id}", task_type=message.task_type,
                                    input=message.input, params=message.params,
                                    priority=AUDIT_PRIORITY, timeout_s=message.timeout_s)
            try:
                fresh = self.submit_to_engine(message.model, request).result(
                    timeout=message.timeout_s + 30)
            except (EngineError, FutureTimeout) as e:
                fresh = EngineOutput(output=None, error=e)
            if fresh.error is not None:
                log.warning("cache audit of job %s could not run: %s", message.job_id,
                            fresh.error)
                self._count(message, "failed")
                return
            agree = answers_agree(str(message.task_type), entry.output, fresh.output)
            if not agree:
                # Wrong once is wrong: the entry goes now, not when the evidence adds up.
                self.exact.forget(str(message.task_type), [entry.entry_id])
                log.warning("cache audit: the semantic hit of job %s (entry %s) disagreed with "
                            "the engine; entry evicted", message.job_id, entry.entry_id)
            self._count(message, "agreed" if agree else "disagreed")
        except InfermqError as e:
            log.warning("cache audit of job %s failed: %s", message.job_id, e)
        finally:
            with self._lock:
                self._pending -= 1

    def _count(self, message: JobMessage, outcome: AuditOutcome) -> None:
        task, model = str(message.task_type), message.model
        counts = self.store.record(task, model, outcome)
        still_on = True
        if outcome == "disagreed" and breached(counts, self.target):
            low, high = counts.interval()
            self.store.set_semantic(
                task, False,
                f"live audit: {counts.disagreed} of {counts.compared} audited semantic hits of "
                f"{model} wrong, 95 % interval [{low:.4f}, {high:.4f}] above the target "
                f"{self.target}; `infermq cache enable {task}` turns it back on")
            still_on = False
        if self.on_counts is not None:
            self.on_counts(task, model, counts, still_on)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

"""Every Redis key and every RabbitMQ exchange and queue name, built in one place.

Redis is shared (job statuses, token streams, the cache, sessions, metrics), so every key
starts with the settings' ``redis_prefix``; every AMQP name starts with ``namespace``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """Builds the Redis keys of one deployment (one ``redis_prefix``)."""

    prefix: str

    def job_status(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:status"

    def job_result(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:result"

    def job_events(self, job_id: str) -> str:
        """The job's Redis stream: status changes and generated tokens, in order."""
        return f"{self.prefix}:job:{job_id}:events"

    def job_cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def cache_entry(self, cache_key: str) -> str:
        return f"{self.prefix}:cache:{cache_key}"

    def cache_index(self, task_type: str) -> str:
        """The LFU index of a task type's cache entries (a sorted set: id -> priority)."""
        return f"{self.prefix}:cacheidx:{task_type}"

    def cache_expiry(self, task_type: str) -> str:
        """When each cache entry of a task type expires (a sorted set: id -> unix seconds)."""
        return f"{self.prefix}:cacheexp:{task_type}"

    def cache_lfu_floor(self, task_type: str) -> str:
        """The LFU-with-aging floor: the score of the last entry evicted."""
        return f"{self.prefix}:cachefloor:{task_type}"

    def cache_memberships(self, task_type: str) -> str:
        """The band sets each semantic entry of a task type is listed in (a hash)."""
        return f"{self.prefix}:cachemembers:{task_type}"

    def cache_band(self, namespace: str, band: int, band_hash: str) -> str:
        """The entries of a namespace whose SimHash agrees on one band."""
        return f"{self.prefix}:cacheband:{namespace}:{band}:{band_hash}"

    def cache_scratch(self, token: str) -> str:
        """A short-lived key one semantic lookup tallies its band votes in."""
        return f"{self.prefix}:cachescratch:{token}"

    def cache_stats(self) -> str:
        return f"{self.prefix}:cache:stats"

    def session_context(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}:context"

    def session_lock(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}:lock"

    def sweep_lock(self) -> str:
        """Held while a session sweep runs, so two never overlap."""
        return f"{self.prefix}:session:sweep-lock"

    def session_index(self) -> str:
        """The sorted set of context keys held in Redis, scored by use (LFU eviction)."""
        return f"{self.prefix}:session:lfu"

    def session_turns(self, session_id: str) -> str:
        """The session's Redis stream of finished turns; a job waiting for its turn reads it."""
        return f"{self.prefix}:session:{session_id}:turns"

    def model_metrics(self, model: str, worker: str) -> str:
        return f"{self.prefix}:metrics:{model}:{worker}"

    def model_metrics_pattern(self, model: str) -> str:
        return f"{self.prefix}:metrics:{model}:*"

    def rate_window(self, key_id: str) -> str:
        """When an API key's requests of the last minute came (a sorted set: id -> time)."""
        return f"{self.prefix}:rate:{key_id}"

    def test_gate(self, name: str) -> str:
        """A list the test engine blocks on until a test pushes to it."""
        return f"{self.prefix}:testgate:{name}:open"

    def test_gate_entered(self, name: str) -> str:
        """A list the test engine pushes to when a job reaches the gate."""
        return f"{self.prefix}:testgate:{name}:entered"


@dataclass(frozen=True)
class QueueNames:
    """Builds the exchange and queue names of one deployment (one ``namespace``)."""

    namespace: str

    @property
    def exchange(self) -> str:
        """The direct exchange every job is published to."""
        return self.namespace

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead(self) -> str:
        """Where jobs that failed for good and undecodable messages end."""
        return f"{self.namespace}.dead"

    @property
    def route(self) -> str:
        """Requests of task type ``auto`` wait here for the router task."""
        return f"{self.namespace}.route"

    @property
    def webhooks(self) -> str:
        return f"{self.namespace}.webhooks"

    def webhook_delay(self, attempt: int) -> str:
        """Where a webhook retry waits (a message TTL) before it is dead-lettered back to
        ``webhooks``; one queue per attempt, so a short wait never queues behind a long one."""
        return f"{self.namespace}.webhooks.delay{attempt}"

    def for_model(self, task_type: str, model: str) -> str:
        """``infer.<task>.<model>``: one queue per task type and model."""
        return f"{self.namespace}.{task_type}.{model}"

    @staticmethod
    def low_band(queue: str) -> str:
        """``<queue>.low``: the jobs of ``queue`` below the high band (routing/topology.py)."""
        return f"{queue}.low"


RUN_JOB_TASK = "infermq.run_job"
"""The Celery task that runs one job on a model."""

ROUTE_JOB_TASK = "infermq.route_job"
"""The Celery task that chooses a model for a job of task type ``auto``."""

DELIVER_WEBHOOK_TASK = "infermq.deliver_webhook"
"""The Celery task that POSTs a finished job to its webhook URL."""

SWEEP_SESSIONS_TASK = "infermq.sweep_sessions"
"""The periodic Celery task (sent by ``infermq beat``) that sleeps and ends idle sessions."""

DRAIN_WORKER_COMMAND = "infermq_drain"
"""The Celery remote-control command that makes a worker stop consuming every queue and report
its models DRAINING: the first step of a scale-down (workers/local_scaling.py)."""

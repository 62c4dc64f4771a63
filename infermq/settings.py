"""One typed settings object for every process, read from ``INFERMQ_*`` environment variables.

Defaults point at the services of a developer machine (loopback, guest/guest, trust auth), so a
fresh checkout runs with no configuration; compose.yaml and production set the variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a producer, worker or gateway needs to find its services and behave."""

    model_config = SettingsConfigDict(env_prefix="INFERMQ_", extra="forbid", frozen=True)

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema for every table (tests isolate by schema)"
    )

    namespace: str = Field(
        default="infer",
        pattern=r"^[a-z][a-z0-9_-]{0,30}$",
        description="prefix of every exchange and queue name (tests isolate by namespace)",
    )
    redis_prefix: str = Field(default="infermq", pattern=r"^[a-zA-Z0-9_:-]{1,40}$")

    registry_path: Path | None = Field(
        default=None, description="a models TOML file replacing the one shipped with infermq"
    )
    models_dir: Path = Field(
        default=Path(".models"), description="where converted and generated model weights live"
    )

    publish_confirm_timeout_s: float = Field(default=10.0, gt=0)
    queue_max_length: int = Field(default=100_000, ge=1)
    max_attempts: int = Field(
        default=3, ge=1,
        description="runs alone in the engine that did not finish (the worker died) before a "
        "job is dead (workers/isolation.py)")
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    default_timeout_s: float = Field(default=120.0, gt=0)

    max_input_chars: int = Field(default=32_768, ge=1)
    max_inputs_per_job: int = Field(default=2048, ge=1)

    worker_slots: int = Field(
        default=16, ge=1,
        description="high-band jobs a worker process holds (its prefetch on the task channel)")
    worker_low_slots: int | None = Field(
        default=None, ge=1,
        description="low-band jobs (priority below 5) a worker holds besides, on a channel of "
        "their own (workers/low_band.py); None: as many as worker_slots, so low-priority work "
        "alone still fills the worker",
    )
    task_events: bool = Field(
        default=True,
        description="workers send Celery task events from their first job, so Flower shows every "
        "job that starts after it is up (Flower's periodic enable_events broadcast reaches a new "
        "worker only after its first jobs). They cost about 1 ms of worker and RabbitMQ CPU per "
        "job on a no-op engine (bench/pipeline_overhead.py --task-events); off, none are sent "
        "until Flower turns them on",
    )
    max_batch_size: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    torch_threads: int | None = Field(default=None, ge=1)
    device_memory_mib: int | None = Field(
        default=None, ge=0,
        description="the worker's device memory budget for model weights (registry memory_mib); "
        "models that do not fit, by load_priority, load when their queue has jobs, evicting the "
        "least recently used idle ones; None: no limit",
    )
    model_load_attempts: int = Field(
        default=3, ge=1,
        description="loads of one model in a row before the worker gives up on it (until restart)",
    )
    model_load_backoff_s: float = Field(
        default=5.0, ge=0, description="wait before a failed model load's first retry; doubles"
    )
    model_demand_poll_s: float = Field(
        default=1.0, gt=0,
        description="how often a worker looks for queued jobs of its models that are not loaded, "
        "to load them on demand (evicting idle ones when the budget is short)",
    )
    device: str | None = Field(default=None, description="torch device; CUDA when present")
    torch_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        default=None, description="weights' dtype; float16 on CUDA and float32 on CPU if unset"
    )
    cuda_graphs: bool = Field(
        default=True,
        description="on CUDA, the paged engine replays each decode step as a CUDA graph (one "
        "launch instead of one per kernel; workers/engines/paged/runner.py); no effect on the CPU",
    )

    metrics_interval_s: float = Field(
        default=5.0, gt=0, description="how often a worker publishes its per-model metrics"
    )
    metrics_ttl_s: float = Field(
        default=15.0, gt=0,
        description="a worker's metrics expire from Redis (and routing ignores them) after this",
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="the worker's Prometheus /metrics port; 0: off"
    )
    metrics_host: str = Field(default="127.0.0.1", description="address /metrics binds to")

    session_idle_sleep_after_s: float = Field(
        default=15 * 60, gt=0, description="an ACTIVE session idle this long is put to SLEEP"
    )
    session_terminate_after_s: float = Field(
        default=7 * 24 * 3600, gt=0, description="a session idle this long is TERMINATED"
    )
    session_context_ttl_s: int = Field(
        default=3600, ge=1, description="TTL of a context in Redis, renewed on each use"
    )
    session_redis_max_contexts: int = Field(
        default=100_000, ge=1, description="contexts held in Redis; the least used are evicted"
    )
    session_turn_wait_s: float = Field(
        default=30.0, ge=0, description="how long a job waits for its session turn, then requeues"
    )
    cache_verifier: Literal["on", "off"] = Field(
        default="on",
        description="on: the semantic tier serves only what the learned verifier accepts at "
        "its certified threshold; a worker without trained weights (`infermq prepare`) serves "
        "the exact tier only and logs why. off: cosine and the rule guard alone (uncertified)",
    )
    cache_verifier_variant: Literal["full", "small"] = Field(
        default="full", description="which trained verifier to load; small is for tests"
    )
    cache_audit_share: float = Field(
        default=0.05, ge=0, le=1,
        description="share of semantic hits re-run on the engine (lowest priority) and compared",
    )
    cache_audit_target: float = Field(
        default=0.005, gt=0, lt=1,
        description="a task type's semantic tier turns off when the audit's 95 % interval on "
        "P(wrong | served hit) lies above this",
    )
    cache_switch_recheck_s: float = Field(
        default=2.0, ge=0,
        description="how old a worker's reading of the semantic tiers' switches (PostgreSQL) may "
        "be: a switch turned by another worker or `infermq cache` is obeyed within this",
    )
    worker_context_cache_size: int = Field(
        default=1024, ge=1, description="session contexts held in each worker's memory"
    )

    transient_retry_for_s: float = Field(
        default=120.0, gt=0,
        description="a job delivery that meets PostgreSQL or Redis unreachable runs again in "
        "place, without counting an attempt, for this long before it is republished",
    )
    waiter_recheck_s: float = Field(
        default=5.0, gt=0,
        description="a waiter whose Redis stream stays quiet this long (or fails) looks at the "
        "job's PostgreSQL row: Redis may have been flushed or restarted",
    )

    gateway_auth: Literal["auto", "on", "off"] = Field(
        default="auto", description="API keys at the gateway; auto: off on loopback, else on"
    )
    gateway_wait_s: float = Field(
        default=300.0, gt=0, description="how long an OpenAI-style request waits for its job"
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="accept webhook URLs that resolve to private, loopback or link-local hosts",
    )
    webhook_default_secret: str = Field(
        default="infermq-dev-webhook-secret", min_length=8,
        description="signs webhooks of jobs without a tenant (set it in production)",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="one delivery attempt")
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0)
    webhook_backoff_max_s: float = Field(default=300.0, gt=0)
    webhook_retry_for_s: float = Field(
        default=3600.0, gt=0, description="after this long past the job's end, stop retrying"
    )

    session_sweep_every_s: float = Field(default=60.0, gt=0, description="infermq beat period")

    test_hooks: bool = Field(
        default=False, description="enables the gates of the test engine; never in production"
    )

    @property
    def low_slots(self) -> int:
        """Low-band jobs a worker holds besides its slots (``worker_low_slots``)."""
        return self.worker_low_slots or self.worker_slots

    @property
    def task_threads(self) -> int:
        """A worker's task threads: one per job it may hold, of either band, so that no
        delivered job waits for a thread (the batcher orders them)."""
        return self.worker_slots + self.low_slots

    def as_env(self) -> dict[str, str]:
        """These settings as ``INFERMQ_*`` variables, to start a child process with them."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"INFERMQ_{name.upper()}"] = text
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

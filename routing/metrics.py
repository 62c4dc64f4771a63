"""Live model metrics: what a worker publishes per model, and the per-model view routing reads.

A worker writes one ``ModelMetricsSnapshot`` per model it serves, every few seconds, as JSON to
``RedisKeys.model_metrics(model, worker)`` with a TTL (the publishing is the worker's job). The
router reads every worker's snapshot of a model and folds them into one ``ModelMetrics`` with
``aggregate_snapshots``: RabbitMQ spreads a model's queue over its workers, so routing chooses
models, not instances. Pure: no Redis here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

InstanceStateName = Literal["LOADING", "READY", "DRAINING", "FAILED"]


class ModelMetricsSnapshot(BaseModel):
    """One worker's figures for one model over its last publishing period (JSON on Redis).

    Rates and percentiles cover the period that ended at ``taken_at_s``; ``jobs_completed`` and
    ``jobs_failed`` are counts in that period, so readers can weight workers by their traffic.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    worker: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=64)
    state: InstanceStateName
    taken_at_s: float = Field(description="unix time the period ended")
    period_s: float = Field(gt=0)
    latency_p50_s: float | None = Field(default=None, ge=0)
    latency_p99_s: float | None = Field(default=None, ge=0)
    throughput_jobs_per_s: float = Field(default=0.0, ge=0)
    queue_depth: int = Field(default=0, ge=0, description="messages ready in the model's queue")
    in_flight: int = Field(default=0, ge=0)
    batch_size_mean: float | None = Field(default=None, ge=0)
    gpu_util: float | None = Field(default=None, ge=0, le=1)
    cpu_util: float | None = Field(default=None, ge=0, le=1)
    memory_used_mib: float = Field(default=0.0, ge=0)
    memory_total_mib: float | None = Field(default=None, gt=0)
    jobs_completed: int = Field(default=0, ge=0)
    jobs_failed: int = Field(default=0, ge=0)
    cache_hits: int = Field(default=0, ge=0)

    @property
    def error_rate(self) -> float:
        finished = self.jobs_completed + self.jobs_failed
        return self.jobs_failed / finished if finished else 0.0


@dataclass(frozen=True)
class ModelMetrics:
    """One model's live figures, over all of its workers: the input of QoS and scaling."""

    model: str
    latency_p50_s: float
    latency_p99_s: float
    throughput_jobs_per_s: float
    queue_depth: int
    gpu_util: float | None
    cpu_util: float | None
    memory_fraction: float | None
    error_rate: float
    updated_at_s: float
    ready_instances: int = 1
    instances: int = 1

    @property
    def util(self) -> float:
        """The busiest compute resource: GPU when the model has one, else CPU."""
        return max(u for u in (self.gpu_util, self.cpu_util, 0.0) if u is not None)

    @property
    def resource_usage(self) -> float:
        """The scarcest resource as a fraction of the whole (compute or memory), unclamped."""
        return max(u for u in (self.gpu_util, self.cpu_util, self.memory_fraction, 0.0)
                   if u is not None)


def _weighted_mean(pairs: list[tuple[float, float]]) -> float:
    """Mean of ``(value, weight)`` pairs; an unweighted mean when every weight is zero."""
    total = sum(w for _, w in pairs)
    if total == 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total


def _mean_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def aggregate_snapshots(
    snapshots: Iterable[ModelMetricsSnapshot], now_s: float, stale_after_s: float
) -> dict[str, ModelMetrics]:
    """Per-model metrics from the fresh snapshots of every worker.

    Percentiles of different workers cannot be merged exactly; p50 is the traffic-weighted mean
    of the workers' p50 (what a job sees on average) and p99 the worst worker's p99 (a bound).
    Throughputs add up; queue depth is one RabbitMQ queue seen by every worker, so the newest
    reading wins; utilisation and memory are means over workers; the error rate is failures
    over finished jobs of all workers. A snapshot older than ``stale_after_s`` is ignored, and a
    model with no fresh snapshot is absent from the result (routing treats it as not loaded).
    """
    fresh: dict[str, list[ModelMetricsSnapshot]] = defaultdict(list)
    for snap in snapshots:
        if now_s - snap.taken_at_s <= stale_after_s:
            fresh[snap.model].append(snap)
    result: dict[str, ModelMetrics] = {}
    for model, snaps in fresh.items():
        serving = [s for s in snaps if s.latency_p50_s is not None]
        completed = sum(s.jobs_completed for s in snaps)
        failed = sum(s.jobs_failed for s in snaps)
        memory = [
            s.memory_used_mib / s.memory_total_mib if s.memory_total_mib else None for s in snaps
        ]
        result[model] = ModelMetrics(
            model=model,
            latency_p50_s=_weighted_mean(
                [(s.latency_p50_s or 0.0, s.jobs_completed) for s in serving]
            ) if serving else 0.0,
            latency_p99_s=max((s.latency_p99_s or 0.0 for s in serving), default=0.0),
            throughput_jobs_per_s=sum(s.throughput_jobs_per_s for s in snaps),
            queue_depth=max(snaps, key=lambda s: s.taken_at_s).queue_depth,
            gpu_util=_mean_or_none([s.gpu_util for s in snaps]),
            cpu_util=_mean_or_none([s.cpu_util for s in snaps]),
            memory_fraction=_mean_or_none(memory),
            error_rate=failed / (completed + failed) if completed + failed else 0.0,
            updated_at_s=max(s.taken_at_s for s in snaps),
            ready_instances=sum(1 for s in snaps if s.state == "READY"),
            instances=len(snaps),
        )
    return result

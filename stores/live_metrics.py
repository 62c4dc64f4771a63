"""Live model metrics on Redis: workers write one snapshot per model, routing and scaling read.

Each snapshot is ``ModelMetricsSnapshot`` JSON at ``RedisKeys.model_metrics(model, worker)``
with a TTL of a few publishing periods, so a worker that dies stops counting on its own: its
keys expire, and a model whose every worker is gone reads as "not loaded". The folding of
several workers' snapshots into one per-model view is pure (``routing.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import redis
from pydantic import ValidationError

from infermq.errors import ServiceUnavailable
from infermq.keys import RedisKeys
from routing.metrics import ModelMetrics, ModelMetricsSnapshot, aggregate_snapshots


def write_snapshot(
    client: redis.Redis, keys: RedisKeys, snapshot: ModelMetricsSnapshot, ttl_s: float
) -> None:
    """Publishes one worker's figures for one model, expiring after ``ttl_s``.

    Raises:
        ServiceUnavailable: Redis cannot be reached.
    """
    try:
        client.set(keys.model_metrics(snapshot.model, snapshot.worker),
                   snapshot.model_dump_json(), px=max(1, math.ceil(ttl_s * 1000)))
    except redis.RedisError as e:
        raise ServiceUnavailable(
            f"cannot publish metrics of {snapshot.model} to Redis ({e}): is it running? "
            "`infermq services` starts it."
        ) from e


def read_snapshots(
    client: redis.Redis, keys: RedisKeys, models: Iterable[str]
) -> list[ModelMetricsSnapshot]:
    """Every live snapshot of ``models`` (one per model and worker); unreadable ones skipped.

    Raises:
        ServiceUnavailable: Redis cannot be reached.
    """
    try:
        names = [name for model in models
                 for name in client.scan_iter(match=keys.model_metrics_pattern(model), count=500)]
        raws = client.mget(names) if names else []
    except redis.RedisError as e:
        raise ServiceUnavailable(
            f"cannot read model metrics from Redis ({e}): is it running? "
            "`infermq services` starts it."
        ) from e
    snapshots = []
    for raw in raws:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            snapshots.append(ModelMetricsSnapshot.model_validate_json(raw))
        except ValidationError:
            continue  # another version's worker; its own readers understand it
    return snapshots


def read_model_metrics(
    client: redis.Redis, keys: RedisKeys, models: Iterable[str], now_s: float,
    stale_after_s: float,
) -> dict[str, ModelMetrics]:
    """Per-model live metrics of ``models``, over all their workers (see
    ``aggregate_snapshots``); a model without a fresh snapshot is absent.

    Raises:
        ServiceUnavailable: Redis cannot be reached.
    """
    return aggregate_snapshots(read_snapshots(client, keys, models), now_s, stale_after_s)

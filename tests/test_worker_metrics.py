"""Live metrics: a real worker publishes per-model snapshots to Redis (with a TTL) and serves
the same figures on /metrics in Prometheus' format."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from infermq.errors import JobFailed
from infermq.keys import RedisKeys
from infermq.settings import Settings
from producer.client import Client
from routing.metrics import ModelMetricsSnapshot
from stores.connections import get_redis
from stores.live_metrics import read_model_metrics, read_snapshots
from tests.support import WorkerProcess

WAIT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_snapshot(settings: Settings, model: str,
                      accept: Callable[[ModelMetricsSnapshot], bool]) -> ModelMetricsSnapshot:
    """The first snapshot of ``model`` that ``accept`` takes; the worker publishes every
    ``metrics_interval_s``, so this waits on that period, not on a guess."""
    client, keys = get_redis(settings), RedisKeys(settings.redis_prefix)
    deadline = time.monotonic() + WAIT_S
    period = threading.Event()
    while time.monotonic() < deadline:
        for snapshot in read_snapshots(client, keys, [model]):
            if accept(snapshot):
                return snapshot
        period.wait(settings.metrics_interval_s / 2)
    raise AssertionError(f"no accepted snapshot of {model} within {WAIT_S} s")


def test_worker_publishes_model_snapshots_to_redis_and_serves_prometheus_metrics(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    port = free_port()
    settings = echo_settings.model_copy(update={"metrics_interval_s": 0.3, "metrics_ttl_s": 5.0,
                                                "metrics_port": port})
    client = client_for(settings)
    # Given a worker that ran a few jobs, one of them failed
    start_worker(settings, ["echo"])
    for i in range(3):
        assert client.submit("generate", f"count me {i}").result(timeout_s=WAIT_S).output
    with pytest.raises(JobFailed):
        client.submit("generate", "fail this one").result(timeout_s=WAIT_S)

    # Then its snapshot of the model is on Redis, READY, with a TTL that lets it go stale
    snapshot = wait_for_snapshot(settings, "echo", lambda s: s.state == "READY")
    assert snapshot.cpu_util is not None and snapshot.memory_used_mib > 0
    assert snapshot.memory_total_mib is not None and snapshot.period_s > 0
    key = RedisKeys(settings.redis_prefix).model_metrics("echo", snapshot.worker)
    assert 0 < get_redis(settings).pttl(key) <= 5000
    # the router's view of it: one READY instance
    live = read_model_metrics(get_redis(settings), RedisKeys(settings.redis_prefix), ["echo"],
                              time.time(), stale_after_s=5.0)
    assert live["echo"].ready_instances == 1

    # And /metrics answers with infermq's figures, counting every job by outcome
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for name in ("infermq_job_latency_seconds_bucket", "infermq_batch_size_bucket",
                 "infermq_queue_depth", "infermq_latency_p99_seconds", "infermq_error_rate",
                 "infermq_throughput_jobs_per_second", "infermq_cpu_utilisation",
                 "infermq_memory_used_bytes", "infermq_cache_hits",
                 "infermq_job_queue_wait_seconds_bucket", "infermq_job_end_to_end_seconds_bucket",
                 "infermq_engine_call_seconds_bucket", "infermq_batch_fill_ratio_bucket",
                 'infermq_model_loads_total{model="echo",outcome="ready"} 1.0',
                 'infermq_cache_misses_total{model="echo",task_type="generate"} 3.0',
                 'infermq_model_state{model="echo",state="READY"} 1.0'):
        assert name in text, name
    assert 'infermq_jobs_total{model="echo",outcome="done",task_type="generate"} 3.0' in text
    assert 'infermq_jobs_total{model="echo",outcome="failed",task_type="generate"} 1.0' in text

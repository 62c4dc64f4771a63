"""A worker's live metrics: per-model figures to Redis every few seconds, and ``/metrics``.

Routing and scaling read the Redis snapshots (``infermq.live_metrics``); Prometheus scrapes the
same figures, plus batch sizes, model states and cache hits, from each worker's HTTP port. The
period's figures (latency percentiles, throughput, error rate) are computed over the jobs that
ended since the last publish, so each snapshot says how the model is doing now, not since start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from kombu import Connection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from infermq.errors import InfermqError
from infermq.jobs import JobResult, JobStatus
from infermq.keys import RedisKeys
from infermq.live_metrics import write_snapshot
from infermq.settings import Settings
from routing.metrics import InstanceStateName, ModelMetricsSnapshot
from workers.batching import BatcherHooks
from workers.engines.base import EngineOutput, EngineRequest

log = logging.getLogger(__name__)

STATES: tuple[InstanceStateName, ...] = ("LOADING", "READY", "DRAINING", "FAILED")
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class _Period:
    """What happened to one model since the last publish."""

    latencies_s: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    cache_hits: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class HostUsage:
    """CPU, GPU and memory use of this worker's host, sampled once per period.

    CPU is the whole host's busy fraction since the last sample (psutil where installed, else
    this process's CPU time over the host's cores): scaling asks whether the host is saturated.
    Memory is the device's: GPU memory on CUDA, else this process's resident set over RAM.
    """

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            psutil = None
        self._psutil: Any = psutil
        self._last = (time.monotonic(), sum(os.times()[:2]))
        if self._psutil is not None:
            self._psutil.cpu_percent(interval=None)  # starts psutil's interval

    def cpu_util(self) -> float:
        if self._psutil is not None:
            return min(1.0, self._psutil.cpu_percent(interval=None) / 100)
        now, cpu_s = time.monotonic(), sum(os.times()[:2])
        wall_s, used_s = now - self._last[0], cpu_s - self._last[1]
        self._last = (now, cpu_s)
        return min(1.0, used_s / (wall_s * (os.cpu_count() or 1))) if wall_s > 0 else 0.0

    @staticmethod
    def _cuda() -> Any:
        try:
            import torch
        except ImportError:
            return None
        return torch.cuda if torch.cuda.is_available() else None

    def gpu_util(self) -> float | None:
        cuda = self._cuda()
        if cuda is None:
            return None
        try:
            return min(1.0, cuda.utilization() / 100)
        except Exception:  # noqa: BLE001 - needs pynvml; the figure is optional
            return None

    def memory_mib(self) -> tuple[float, float | None]:
        """(used, total) MiB of the device the models live on."""
        cuda = self._cuda()
        if cuda is not None:
            free_b, total_b = cuda.mem_get_info()
            return (total_b - free_b) / 2**20, total_b / 2**20
        if self._psutil is not None:
            rss_b = self._psutil.Process().memory_info().rss
            return rss_b / 2**20, self._psutil.virtual_memory().total / 2**20
        with open("/proc/self/statm") as statm:
            rss_b = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        total_b = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return rss_b / 2**20, total_b / 2**20


class QueueDepths:
    """Messages ready in a queue, by a passive declare on one lazily (re)opened connection."""

    def __init__(self, broker_url: str) -> None:
        self._broker_url = broker_url
        self._connection: Connection | None = None

    def ready(self, queue: str) -> int | None:
        """Messages ready in ``queue``; None when the broker cannot say (it is retried next)."""
        try:
            if self._connection is None:
                self._connection = Connection(self._broker_url, connect_timeout=5)
            declared = self._connection.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
        except Exception as e:  # noqa: BLE001 - a missing figure must not stop the publisher
            log.debug("cannot read the depth of %s: %r", queue, e)
            self.close()
            return None

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None


class WorkerMetrics:
    """Records every job and batch of one worker's models and publishes them per period.

    Thread-safe: task threads call ``job_ended``, batcher threads ``batch_ran``; one thread
    publishes. ``queues`` maps each model the worker may serve to its queues (one per task
    type); its snapshot reports their total depth. A model is published from its first state
    (``set_state``) until it is unloaded (``forget``): a model not on the device has no
    instance here.
    """

    def __init__(self, settings: Settings, worker: str, queues: dict[str, list[str]],
                 client: redis.Redis) -> None:
        self.settings = settings
        self.worker = worker
        self.queues = queues
        self.client = client
        self.keys = RedisKeys(settings.redis_prefix)
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        # Held across a whole publish, so that ``forget`` deletes a snapshot after the last
        # write of it, never before.
        self._publish_lock = threading.Lock()
        self._periods = {model: _Period() for model in queues}
        self._states: dict[str, InstanceStateName] = {}
        self._in_flight = dict.fromkeys(queues, 0)
        self._period_start_s = time.time()
        self._host = HostUsage()
        self._depths = QueueDepths(settings.broker_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._define_prometheus_metrics()

    def _define_prometheus_metrics(self) -> None:
        r, m = self.registry, ["model"]
        self.job_latency = Histogram("infermq_job_latency_seconds",
                                     "Time from a job's start in the worker to its result", m,
                                     registry=r)
        self.jobs = Counter("infermq_jobs", "Jobs ended, by outcome", [*m, "outcome"],
                            registry=r)
        self.batch_size = Histogram("infermq_batch_size", "Inputs per engine call", m,
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.cache_hits = Counter("infermq_cache_hits", "Jobs answered from the cache in the "
                                  "worker, by tier", [*m, "tier"], registry=r)
        self.queue_depth = Gauge("infermq_queue_depth", "Messages ready in the model's queue",
                                 m, registry=r)
        self.in_flight = Gauge("infermq_jobs_in_flight", "Jobs of the model inside this worker",
                               m, registry=r)
        self.latency_p50 = Gauge("infermq_latency_p50_seconds", "Median job latency over the "
                                 "last period", m, registry=r)
        self.latency_p99 = Gauge("infermq_latency_p99_seconds", "99th percentile job latency "
                                 "over the last period", m, registry=r)
        self.throughput = Gauge("infermq_throughput_jobs_per_second", "Jobs completed per "
                                "second over the last period", m, registry=r)
        self.error_rate = Gauge("infermq_error_rate", "Failed over ended jobs in the last "
                                "period", m, registry=r)
        self.model_state = Gauge("infermq_model_state", "1 for the model's current instance "
                                 "state", [*m, "state"], registry=r)
        self.cpu = Gauge("infermq_cpu_utilisation", "Host CPU busy fraction", registry=r)
        self.gpu = Gauge("infermq_gpu_utilisation", "GPU busy fraction", registry=r)
        self.memory_used = Gauge("infermq_memory_used_bytes", "Device memory in use", registry=r)

    # -- recording (task and batcher threads) ------------------------------------------------

    def set_state(self, model: str, state: InstanceStateName) -> None:
        with self._lock:
            self._states[model] = state
        for name in STATES:
            self.model_state.labels(model, name).set(1 if name == state else 0)

    def forget(self, model: str) -> None:
        """The model was unloaded: its snapshot leaves Redis now (routing stops counting this
        instance at once), and it is not published again until it has a state again."""
        with self._publish_lock:
            with self._lock:
                self._states.pop(model, None)
            for name in STATES:
                self.model_state.remove(model, name)
            try:
                self.client.delete(self.keys.model_metrics(model, self.worker))
            except redis.RedisError as e:
                log.warning("snapshot of %s not deleted (it expires on its own): %s", model, e)

    def job_started(self, model: str) -> None:
        with self._lock:
            self._in_flight[model] = self._in_flight.get(model, 0) + 1

    def job_ended(self, model: str, result: JobResult | None) -> None:
        """Counts one job of ``model`` that ended (``result`` None: failed with no result)."""
        done = result is not None and result.status == JobStatus.DONE
        latency_s = result.latency_ms / 1000 if done and result and result.latency_ms else None
        tier = result.cache if done and result else "miss"
        with self._lock:
            self._in_flight[model] = max(0, self._in_flight.get(model, 0) - 1)
            period = self._periods.setdefault(model, _Period())
            if done:
                period.completed += 1
                if latency_s is not None:
                    period.latencies_s.append(latency_s)
                if tier != "miss":
                    period.cache_hits += 1
            else:
                period.failed += 1
        outcome = "done" if done else (result.status.value if result else "failed")
        self.jobs.labels(model, outcome).inc()
        if latency_s is not None:
            self.job_latency.labels(model).observe(latency_s)
        if tier != "miss":
            self.cache_hits.labels(model, tier).inc()

    def batch_ran(self, model: str, inputs: int) -> None:
        with self._lock:
            self._periods.setdefault(model, _Period()).batch_sizes.append(inputs)
        self.batch_size.labels(model).observe(inputs)

    def batcher_hooks(self, model: str) -> BatcherHooks:
        """Hooks that record each engine call's batch size for ``model``."""
        return _BatchSizeHooks(lambda inputs: self.batch_ran(model, inputs))

    # -- publishing (its own thread) --------------------------------------------------------

    def snapshots(self, now_s: float | None = None) -> list[ModelMetricsSnapshot]:
        """This period's snapshot of every model; starts the next period."""
        now_s = time.time() if now_s is None else now_s
        with self._lock:
            periods, self._periods = self._periods, {m: _Period() for m in self.queues}
            states, in_flight = dict(self._states), dict(self._in_flight)
            period_s = max(now_s - self._period_start_s, 1e-3)
            self._period_start_s = now_s
        cpu, gpu = self._host.cpu_util(), self._host.gpu_util()
        used_mib, total_mib = self._host.memory_mib()
        self.cpu.set(cpu)
        if gpu is not None:
            self.gpu.set(gpu)
        self.memory_used.set(used_mib * 2**20)
        result = []
        for model, state in states.items():
            p = periods.get(model, _Period())
            depths = [self._depths.ready(queue) for queue in self.queues.get(model, [])]
            depth = None if None in depths else sum(d or 0 for d in depths)
            p50 = float(np.percentile(p.latencies_s, 50)) if p.latencies_s else None
            p99 = float(np.percentile(p.latencies_s, 99)) if p.latencies_s else None
            snapshot = ModelMetricsSnapshot(
                worker=self.worker, model=model, state=state,
                taken_at_s=now_s, period_s=period_s, latency_p50_s=p50, latency_p99_s=p99,
                throughput_jobs_per_s=p.completed / period_s, queue_depth=depth or 0,
                in_flight=in_flight.get(model, 0),
                batch_size_mean=float(np.mean(p.batch_sizes)) if p.batch_sizes else None,
                gpu_util=gpu, cpu_util=cpu, memory_used_mib=used_mib, memory_total_mib=total_mib,
                jobs_completed=p.completed, jobs_failed=p.failed, cache_hits=p.cache_hits,
            )
            self._export(snapshot, depth)
            result.append(snapshot)
        return result

    def _export(self, snap: ModelMetricsSnapshot, depth: int | None) -> None:
        m = snap.model
        if depth is not None:
            self.queue_depth.labels(m).set(depth)
        self.in_flight.labels(m).set(snap.in_flight)
        if snap.latency_p50_s is not None and snap.latency_p99_s is not None:
            self.latency_p50.labels(m).set(snap.latency_p50_s)
            self.latency_p99.labels(m).set(snap.latency_p99_s)
        self.throughput.labels(m).set(snap.throughput_jobs_per_s)
        self.error_rate.labels(m).set(snap.error_rate)

    def publish_once(self) -> None:
        """Writes this period's snapshots to Redis (with the settings' TTL)."""
        with self._publish_lock:
            for snapshot in self.snapshots():
                write_snapshot(self.client, self.keys, snapshot, self.settings.metrics_ttl_s)

    def start(self) -> None:
        """Starts the publisher thread (first publish at once) and, if a port is set, the
        Prometheus HTTP server."""
        if self.settings.metrics_port:
            self._server, _ = start_http_server(self.settings.metrics_port,
                                                self.settings.metrics_host,
                                                registry=self.registry)
            log.info("Prometheus metrics on http://%s:%d/metrics", self.settings.metrics_host,
                     self.settings.metrics_port)
        self._thread = threading.Thread(target=self._publish_forever, name="metrics",
                                        daemon=True)
        self._thread.start()

    def _publish_forever(self) -> None:
        while True:
            try:
                self.publish_once()
            except InfermqError as e:
                log.warning("metrics not published: %s", e)
            if self._stop.wait(self.settings.metrics_interval_s):
                return

    def stop(self) -> None:
        """Stops publishing and serving; the last snapshots expire on their own."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._depths.close()


class _BatchSizeHooks(BatcherHooks):
    def __init__(self, record: Callable[[int], None]) -> None:
        self._record = record

    def after_batch(self, batch: Sequence[EngineRequest], outputs: Sequence[EngineOutput]) -> None:
        self._record(sum(request.input_count for request in batch))

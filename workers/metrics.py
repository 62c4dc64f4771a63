"""A worker's live metrics: per-model figures to Redis every few seconds, and ``/metrics``.

Routing and scaling read the Redis snapshots (``stores.live_metrics``); Prometheus scrapes the
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
from prometheus_client import CollectorRegistry

from infermq.audit_policy import AuditCounts
from infermq.errors import InfermqError
from infermq.jobs import JobMessage, JobResult, JobStatus, utcnow
from infermq.keys import QueueNames, RedisKeys
from infermq.settings import Settings
from routing.metrics import InstanceStateName, ModelMetricsSnapshot
from stores.live_metrics import write_snapshot
from workers.batching import BatcherHooks
from workers.engines.base import EngineOutput, EngineRequest
from workers.metric_families import WorkerFamilies
from workers.metrics_server import MetricsServer
from workers.runner_hooks import RunnerHooks

log = logging.getLogger(__name__)

STATES: tuple[InstanceStateName, ...] = ("LOADING", "READY", "DRAINING", "FAILED")


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

    def ready_in_bands(self, queue: str) -> int | None:
        """Messages ready in both bands of ``queue`` (it and its low band, routing/topology.py),
        the backlog of its jobs; None when the broker cannot say."""
        depths = [self.ready(band) for band in (queue, QueueNames.low_band(queue))]
        return None if None in depths else sum(d for d in depths if d is not None)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None


class WorkerMetrics(RunnerHooks):
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
        self._server: MetricsServer | None = None
        self.families = WorkerFamilies(self.registry)
        self._loading_since_s: dict[str, float] = {}

    # -- recording (task and batcher threads) ------------------------------------------------

    def set_state(self, model: str, state: InstanceStateName) -> None:
        """Records ``model``'s new state; a load's end (READY or FAILED after LOADING) is
        counted by outcome and, when READY, timed."""
        now_s = time.monotonic()
        with self._lock:
            self._states[model] = state
            loading_since_s = (self._loading_since_s.pop(model, None) if state != "LOADING"
                               else self._loading_since_s.setdefault(model, now_s))
        f = self.families
        for name in STATES:
            f.model_state.labels(model, name).set(1 if name == state else 0)
        if state != "LOADING" and loading_since_s is not None:
            loaded = state != "FAILED"  # READY, or DRAINING when the worker drains meanwhile
            f.model_loads.labels(model, "ready" if loaded else "failed").inc()
            if loaded:
                f.model_load_time.labels(model).observe(now_s - loading_since_s)

    def model_states(self) -> dict[str, InstanceStateName]:
        """Each model's instance state here (the readiness probe's answer)."""
        with self._lock:
            return dict(self._states)

    def forget(self, model: str) -> None:
        """The model was unloaded: its snapshot leaves Redis now (routing stops counting this
        instance at once), and it is not published again until it has a state again."""
        with self._publish_lock:
            with self._lock:
                self._states.pop(model, None)
            for name in STATES:
                self.families.model_state.remove(model, name)
            try:
                self.client.delete(self.keys.model_metrics(model, self.worker))
            except redis.RedisError as e:
                log.warning("snapshot of %s not deleted (it expires on its own): %s", model, e)

    def job_started(self, message: JobMessage) -> None:
        """Counts the job in flight and how long it waited since submit (producer's clock:
        a skew between hosts is clamped at zero)."""
        with self._lock:
            self._in_flight[message.model] = self._in_flight.get(message.model, 0) + 1
        waited_s = max(0.0, (utcnow() - message.submitted_at).total_seconds())
        self.families.queue_wait.labels(message.model, message.task_type.value).observe(waited_s)

    def job_ended(self, message: JobMessage, result: JobResult | None) -> None:
        """Counts one job that ended (``result`` None: failed with no result)."""
        model, task_type = message.model, message.task_type.value
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
        f = self.families
        outcome = "done" if done else (result.status.value if result else "failed")
        f.jobs.labels(model, task_type, outcome).inc()
        if latency_s is not None:
            f.job_latency.labels(model).observe(latency_s)
        if done:
            end_to_end_s = max(0.0, (utcnow() - message.submitted_at).total_seconds())
            f.end_to_end.labels(model, task_type).observe(end_to_end_s)
            if tier == "miss":
                f.cache_misses.labels(model, task_type).inc()
            else:
                f.cache_hits.labels(model, tier).inc()

    def session_restored(self, model: str, restore_s: float | None) -> None:
        """Times one session activation and context restore (None: it failed)."""
        if restore_s is None:
            self.families.session_restore_failures.labels(model).inc()
        else:
            self.families.session_restore.labels(model).observe(restore_s)

    def cache_audited(self, task_type: str, model: str, counts: AuditCounts,
                      semantic_on: bool) -> None:
        """Exports the audit counts after one audit, the rate with its interval, the switch."""
        f = self.families
        for outcome in ("agreed", "disagreed", "starved", "failed"):
            f.cache_audits.labels(task_type, model, outcome).set(getattr(counts, outcome))
        low, high = counts.interval()
        rate = counts.wrong_rate()
        f.cache_audit_wrong_rate.labels(task_type, model, "estimate").set(
            rate if rate is not None else float("nan"))
        f.cache_audit_wrong_rate.labels(task_type, model, "low").set(low)
        f.cache_audit_wrong_rate.labels(task_type, model, "high").set(high)
        f.cache_semantic_enabled.labels(task_type).set(1.0 if semantic_on else 0.0)

    def job_routed(self, request_class: str | None, model: str | None, route_s: float) -> None:
        """Counts one auto job the router placed on ``model`` (None: no model could take it)."""
        f = self.families
        f.route_time.observe(route_s)
        if model is None or request_class is None:
            f.route_failures.inc()
        else:
            f.routed.labels(request_class, model).inc()

    def batch_ran(self, model: str, inputs: int, max_batch_size: int, engine_s: float) -> None:
        with self._lock:
            self._periods.setdefault(model, _Period()).batch_sizes.append(inputs)
        f = self.families
        f.batch_size.labels(model).observe(inputs)
        f.batch_fill.labels(model).observe(min(1.0, inputs / max_batch_size))
        f.engine_call.labels(model).observe(engine_s)

    def batcher_hooks(self, model: str, max_batch_size: int) -> BatcherHooks:
        """Hooks that record each engine call's batch size, fill and time for ``model``."""
        return _BatchHooks(lambda inputs, engine_s: self.batch_ran(model, inputs, max_batch_size,
                                                                   engine_s))

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
        f = self.families
        f.cpu.set(cpu)
        if gpu is not None:
            f.gpu.set(gpu)
        f.memory_used.set(used_mib * 2**20)
        if total_mib is not None:
            f.memory_total.set(total_mib * 2**20)
        result = []
        for model, state in states.items():
            p = periods.get(model, _Period())
            depths = [self._depths.ready_in_bands(queue) for queue in self.queues.get(model, [])]
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
        m, f = snap.model, self.families
        if depth is not None:
            f.queue_depth.labels(m).set(depth)
        f.in_flight.labels(m).set(snap.in_flight)
        if snap.latency_p50_s is not None and snap.latency_p99_s is not None:
            f.latency_p50.labels(m).set(snap.latency_p50_s)
            f.latency_p99.labels(m).set(snap.latency_p99_s)
        f.throughput.labels(m).set(snap.throughput_jobs_per_s)
        f.error_rate.labels(m).set(snap.error_rate)

    def publish_once(self) -> None:
        """Writes this period's snapshots to Redis (with the settings' TTL)."""
        with self._publish_lock:
            for snapshot in self.snapshots():
                write_snapshot(self.client, self.keys, snapshot, self.settings.metrics_ttl_s)

    def start(self) -> None:
        """Starts the publisher thread (first publish at once) and, if a port is set, the
        Prometheus HTTP server."""
        if self.settings.metrics_port:
            self._server = MetricsServer(self.settings.metrics_host, self.settings.metrics_port,
                                         self.registry, self.model_states)
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
            self._server.stop()
        self._depths.close()


class _BatchHooks(BatcherHooks):
    """Times each engine call; the batcher calls both hooks on its one thread."""

    def __init__(self, record: Callable[[int, float], None]) -> None:
        self._record = record
        self._started_s = 0.0

    def before_batch(self, batch: Sequence[EngineRequest]) -> None:
        self._started_s = time.perf_counter()

    def after_batch(self, batch: Sequence[EngineRequest], outputs: Sequence[EngineOutput]) -> None:
        self._record(sum(request.input_count for request in batch),
                     time.perf_counter() - self._started_s)

"""Every Prometheus family a worker exports, defined once on the worker's registry.

Names follow Prometheus' conventions: units in names (``_seconds``, ``_bytes``, ``_ratio``),
counters exported with ``_total``. The dashboard (``deploy/grafana/infermq.json``) and the alert
rules (``deploy/prometheus/alerts.yaml``) read these names; ``tests/test_dashboard.py`` checks
that each has a panel or is listed as internal. Every figure is recorded in the process that
sees it (no extra round trip per job): queue depths and device memory once per period.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class WorkerFamilies:
    """The worker's metric families; labels are model, task type, outcome, tier, state."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r, m, mt = registry, ["model"], ["model", "task_type"]
        self.job_latency = Histogram(
            "infermq_job_latency_seconds", "Time from a job's start in the worker to its result",
            m, buckets=LATENCY_BUCKETS_S, registry=r)
        self.queue_wait = Histogram(
            "infermq_job_queue_wait_seconds", "Time from submit to the job's start in a worker",
            mt, buckets=LATENCY_BUCKETS_S, registry=r)
        self.end_to_end = Histogram(
            "infermq_job_end_to_end_seconds", "Time from submit to the job's committed result",
            mt, buckets=LATENCY_BUCKETS_S, registry=r)
        self.engine_call = Histogram(
            "infermq_engine_call_seconds", "Time of one engine call (one batch)", m,
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.jobs = Counter("infermq_jobs", "Jobs ended in a worker, by outcome",
                            [*mt, "outcome"], registry=r)
        self.batch_size = Histogram("infermq_batch_size", "Inputs per engine call", m,
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_fill = Histogram(
            "infermq_batch_fill_ratio", "Inputs per engine call over the model's max batch size",
            m, buckets=FILL_BUCKETS, registry=r)
        self.cache_hits = Counter("infermq_cache_hits", "Jobs answered from the cache in the "
                                  "worker, by tier", [*m, "tier"], registry=r)
        self.cache_misses = Counter("infermq_cache_misses", "Jobs done on the engine, no cache "
                                    "answer (a miss or not cacheable)", mt, registry=r)
        self.queue_depth = Gauge("infermq_queue_depth", "Messages ready in the model's queues",
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
        self.model_loads = Counter("infermq_model_loads", "Model loads that ended, by outcome "
                                   "(ready, failed)", [*m, "outcome"], registry=r)
        self.model_load_time = Histogram(
            "infermq_model_load_seconds", "Time from LOADING to READY", m,
            buckets=LOAD_BUCKETS_S, registry=r)
        self.session_restore = Histogram(
            "infermq_session_restore_seconds", "Time to activate a session and restore its "
            "context", m, buckets=LATENCY_BUCKETS_S, registry=r)
        self.session_restore_failures = Counter(
            "infermq_session_restore_failures", "Session jobs whose session could not be "
            "activated or restored", m, registry=r)
        self.cache_audits = Gauge(
            "infermq_cache_audits", "Live cache audits of semantic hits, fleet-wide (from "
            "PostgreSQL), by outcome: agreed, disagreed, starved, failed",
            ["task_type", "model", "outcome"], registry=r)
        self.cache_audit_wrong_rate = Gauge(
            "infermq_cache_audit_wrong_rate", "P(wrong | served semantic hit) from the live "
            "audit: estimate, and the 95 % interval's low and high ends",
            ["task_type", "model", "bound"], registry=r)
        self.cache_semantic_enabled = Gauge(
            "infermq_cache_semantic_enabled", "1 while the task type's semantic tier serves, 0 "
            "once the audit (or an operator) switched it off", ["task_type"], registry=r)
        self.routed = Counter("infermq_routed_jobs", "Auto jobs the router task placed, by "
                              "request class and model", ["request_class", "model"], registry=r)
        self.route_failures = Counter("infermq_route_failures", "Auto jobs no model could take",
                                      registry=r)
        self.route_time = Histogram("infermq_route_seconds", "Time to classify and place one "
                                    "auto job", buckets=LATENCY_BUCKETS_S, registry=r)
        self.cpu = Gauge("infermq_cpu_utilisation", "Host CPU busy fraction", registry=r)
        self.gpu = Gauge("infermq_gpu_utilisation", "GPU busy fraction", registry=r)
        self.memory_used = Gauge("infermq_memory_used_bytes", "Device memory in use (GPU "
                                 "memory on CUDA)", registry=r)
        self.memory_total = Gauge("infermq_memory_total_bytes", "Device memory in all (GPU "
                                  "memory on CUDA)", registry=r)

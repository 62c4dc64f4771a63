"""A fleet through a synthetic day at 100x this machine's rate, on a simulated clock, scaled by
infermq's own decision code, against a static fleet sized for the peak.

    python bench/fleet.py             # table on stdout, plot in bench/out/fleet.png

The day (bench/data/fleet_day.toml): three model sizes, each offered a diurnal load (a night
trough at 15 % of the afternoon peak) with random 10-minute bursts at 2x, Poisson arrivals per
15 s period. At the peak each model needs about ``scale x peak_share`` workers.

The policies, all on the same arrivals:

- static: a fleet sized for the day's highest period (bursts included), loaded before the day;
- infermq: ``routing.scaling.ScalingSignals`` decides per model each period (backlog over the
  model's max_backlog, latency over its SLA + 20 %, utilisation over 85 % for 3 periods; down
  after 5 low periods, drain first; one instance per decision); each new worker cold-starts
  through its own ``routing.coldstart.ColdStartScheduler`` (LOADING for load_s, warm-up, READY);
- keda: KEDA's queue-length rule, ceil(waiting / value) workers, at least min_replicas, the
  same cold starts; value = max_backlog (what deploy/kubernetes/workers.yaml sets), and value =
  the jobs one worker serves in half the SLA.

The physics: a READY worker serves ``worker_rate_jobs_per_s``; jobs are served first come,
first served; a job's latency is its wait plus ``service_s``; a worker costs GPU time from its
start until it has drained. A job misses its SLA when its latency exceeds ``latency_sla_s``.
"""

from __future__ import annotations

import math
import sys
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.coldstart import ColdStartScheduler, InstanceState, StartLoad  # noqa: E402
from routing.metrics import ModelMetrics  # noqa: E402
from routing.scaling import ScalingAction, ScalingSignals, ScalingThresholds  # noqa: E402

DAY = Path(__file__).parent / "data" / "fleet_day.toml"
OUT = Path(__file__).parent / "out"
MAX_INSTANCES = 1000


@dataclass(frozen=True)
class FleetModel:
    name: str
    worker_rate_jobs_per_s: float
    service_s: float
    load_s: float
    warmup_s: float
    latency_sla_s: float
    max_backlog: int
    min_replicas: int
    peak_share: float


@dataclass(frozen=True)
class FleetDay:
    scale: float
    day_s: float
    period_s: float
    seed: int
    trough_fraction: float
    peak_hour: float
    burst_count: int
    burst_s: float
    burst_factor: float


def load_day(path: Path = DAY) -> tuple[FleetDay, list[FleetModel]]:
    data = tomllib.loads(path.read_text())
    models = [FleetModel(name=name, **spec) for name, spec in data.pop("models").items()]
    return FleetDay(**data), models


def arrival_counts(day: FleetDay, model: FleetModel, rng: np.random.Generator) -> np.ndarray:
    """Jobs arriving in each period: diurnal (cosine, trough at night) times the bursts."""
    t_s = np.arange(0.0, day.day_s, day.period_s)
    phase = 2 * np.pi * (t_s / 3600 - day.peak_hour) / 24
    diurnal = day.trough_fraction + (1 - day.trough_fraction) * 0.5 * (1 + np.cos(phase))
    burst = np.ones_like(t_s)
    for start_s in rng.uniform(0, day.day_s, day.burst_count):
        burst[(t_s >= start_s) & (t_s < start_s + day.burst_s)] = day.burst_factor
    peak_rate = day.scale * model.peak_share * model.worker_rate_jobs_per_s
    return rng.poisson(peak_rate * diurnal * burst * day.period_s)


@dataclass
class Worker:
    """One worker pod, its cold start driven by its own device's scheduler."""

    scheduler: ColdStartScheduler
    started_s: float
    loaded_at_s: float | None = None
    ready_at_s: float | None = None

    def state(self, model: str) -> InstanceState | None:
        return self.scheduler.state(model)


@dataclass
class ModelFleet:
    """The workers and the queue of one model under one policy."""

    model: FleetModel
    workers: list[Worker] = field(default_factory=list)
    queue: deque[list[float]] = field(default_factory=deque)  # [arrival_s, jobs]
    gpu_s: float = 0.0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (latency_s, jobs)
    waits: list[tuple[float, float]] = field(default_factory=list)
    instances_over_time: list[int] = field(default_factory=list)

    def start_worker(self, now_s: float, preloaded: bool = False) -> None:
        m = self.model
        scheduler = ColdStartScheduler(memory_budget_mib=1)
        scheduler.request(m.name, 1, now_s)
        [action] = scheduler.next_actions(now_s)
        assert isinstance(action, StartLoad)
        worker = Worker(scheduler, now_s)
        if preloaded:
            scheduler.loaded(m.name, now_s)
            scheduler.warmed_up(m.name, now_s)
        self.workers.append(worker)

    def advance_cold_starts(self, now_s: float) -> None:
        m = self.model
        for w in self.workers:
            if w.state(m.name) == InstanceState.LOADING:
                if w.loaded_at_s is None and now_s >= w.started_s + m.load_s:
                    w.scheduler.loaded(m.name, now_s)
                    w.loaded_at_s = now_s
                if w.loaded_at_s is not None and now_s >= w.loaded_at_s + m.warmup_s:
                    w.scheduler.warmed_up(m.name, now_s)
                    w.ready_at_s = now_s

    def ready(self) -> int:
        return sum(w.state(self.model.name) == InstanceState.READY for w in self.workers)

    def drain_one(self) -> None:
        """Scale-down: the newest worker stops consuming and finishes its in-flight jobs
        (a service time on the GPU), then goes; a loading one goes at once."""
        m = self.model
        worker = self.workers.pop()
        if worker.state(m.name) == InstanceState.READY:
            worker.scheduler.drain(m.name)
            self.gpu_s += m.service_s

    def serve(self, start_s: float, period_s: float, arrivals: int) -> tuple[float, float, int]:
        """One period: arrivals join the queue, READY workers serve it first come first
        served. Returns (busy fraction, p50 latency of the jobs done, jobs waiting)."""
        m = self.model
        if arrivals:
            self.queue.append([start_s + period_s / 2, float(arrivals)])
        rate = self.ready() * m.worker_rate_jobs_per_s
        capacity, served = rate * period_s, 0.0
        done: list[tuple[float, float]] = []
        while self.queue and served < capacity - 1e-9:
            arrival_s, jobs = self.queue[0]
            take = min(jobs, capacity - served)
            begin_s = max(arrival_s, start_s + (served + take / 2) / rate)
            wait_s = begin_s - arrival_s
            done.append((wait_s + m.service_s, take))
            self.waits.append((wait_s, take))
            served += take
            if take >= jobs - 1e-9:
                self.queue.popleft()
            else:
                self.queue[0][1] = jobs - take
        self.latencies.extend(done)
        self.gpu_s += len(self.workers) * period_s
        self.instances_over_time.append(len(self.workers))
        p50 = weighted_quantile(done, 0.5) if done else 0.0
        waiting = int(sum(jobs for _, jobs in self.queue))
        return (served / capacity if capacity else 1.0), p50, waiting


def weighted_quantile(pairs: list[tuple[float, float]], q: float) -> float:
    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs])
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


class Policy(Protocol):
    def decide(self, fleet: ModelFleet, now_s: float, util: float, p50_s: float,
               waiting: int) -> int: ...


class StaticPolicy:
    def decide(self, fleet: ModelFleet, now_s: float, util: float, p50_s: float,
               waiting: int) -> int:
        return len(fleet.workers)


class InfermqPolicy:
    """``routing.scaling.ScalingSignals``, one per model, with the model's SLA and bound."""

    def __init__(self, models: list[FleetModel]) -> None:
        self.signals = {m.name: ScalingSignals(ScalingThresholds(
            latency_sla_s=m.latency_sla_s, backlog_high=m.max_backlog,
            min_instances=m.min_replicas, max_instances=MAX_INSTANCES)) for m in models}

    def decide(self, fleet: ModelFleet, now_s: float, util: float, p50_s: float,
               waiting: int) -> int:
        m, n = fleet.model, len(fleet.workers)
        metrics = ModelMetrics(model=m.name, latency_p50_s=p50_s, latency_p99_s=p50_s,
                               throughput_jobs_per_s=0.0, queue_depth=waiting, gpu_util=util,
                               cpu_util=None, memory_fraction=None, error_rate=0.0,
                               updated_at_s=now_s, ready_instances=fleet.ready(), instances=n)
        decision = self.signals[m.name].observe(metrics, n)
        if decision.action == ScalingAction.SCALE_UP and n == 0:
            return 1
        return decision.target_instances


class KedaQueueLengthPolicy:
    """KEDA's rabbitmq QueueLength target through the HPA: ceil(messages / value) workers,
    messages counting the unacked ones in flight, scale-up limited as the HPA's default (4 pods
    or 100 % per period), scale-down held by its 300 s stabilisation window (the highest
    recommendation in it wins).

    With value the model's max_backlog (as deploy/kubernetes/workers.yaml sets it) a steady
    queue settles near value jobs per worker, a wait of value / rate; ``sla_value`` sets value
    to the jobs one worker clears in half the SLA (Little's law) instead."""

    STABILISATION_S = 300.0

    def __init__(self, sla_value: bool, period_s: float) -> None:
        self.sla_value = sla_value
        self.window = max(1, int(self.STABILISATION_S / period_s))
        self.recent: dict[str, deque[int]] = {}

    def decide(self, fleet: ModelFleet, now_s: float, util: float, p50_s: float,
               waiting: int) -> int:
        m = fleet.model
        value = (max(1.0, m.worker_rate_jobs_per_s * m.latency_sla_s / 2) if self.sla_value
                 else m.max_backlog)
        in_flight = util * fleet.ready() * m.worker_rate_jobs_per_s * m.service_s
        desired = min(MAX_INSTANCES, max(m.min_replicas,
                                         math.ceil((waiting + in_flight) / value)))
        # the HPA's default scale-up limit: 4 pods or 100 % per period, whichever is more
        current = len(fleet.workers)
        desired = min(desired, max(current + 4, 2 * current))
        recent = self.recent.setdefault(m.name, deque(maxlen=self.window))
        recent.append(desired)
        return max(recent)


def run_day(day: FleetDay, models: list[FleetModel], policy: Policy,
            counts: dict[str, np.ndarray], static: bool) -> dict[str, ModelFleet]:
    period_s = day.period_s
    fleets = {m.name: ModelFleet(m) for m in models}
    for m in models:
        initial = (math.ceil(counts[m.name].max() / period_s / m.worker_rate_jobs_per_s)
                   if static else m.min_replicas)
        for _ in range(initial):
            fleets[m.name].start_worker(0.0, preloaded=True)
    for step in range(len(next(iter(counts.values())))):
        now_s = step * period_s
        for m in models:
            fleet = fleets[m.name]
            fleet.advance_cold_starts(now_s)
            util, p50_s, waiting = fleet.serve(now_s, period_s, int(counts[m.name][step]))
            target = policy.decide(fleet, now_s + period_s, util, p50_s, waiting)
            while len(fleet.workers) < target:
                fleet.start_worker(now_s + period_s)
            while len(fleet.workers) > target:
                fleet.drain_one()
    return fleets


@dataclass(frozen=True)
class Row:
    policy: str
    model: str
    jobs: float
    sla_miss_pct: float
    wait_p50_s: float
    wait_p99_s: float
    gpu_hours: float
    peak_workers: int


def summarize(policy: str, fleets: dict[str, ModelFleet]) -> list[Row]:
    rows = []
    for name, fleet in fleets.items():
        m = fleet.model
        jobs = sum(n for _, n in fleet.latencies)
        missed = sum(n for latency_s, n in fleet.latencies if latency_s > m.latency_sla_s)
        left = sum(n for _, n in fleet.queue)
        rows.append(Row(policy, name, jobs + left, 100 * (missed + left) / (jobs + left),
                        weighted_quantile(fleet.waits, 0.5), weighted_quantile(fleet.waits, 0.99),
                        fleet.gpu_s / 3600, max(fleet.instances_over_time)))
    return rows


def main() -> None:
    day, models = load_day()
    rng = np.random.default_rng(day.seed)
    counts = {m.name: arrival_counts(day, m, rng) for m in models}
    period_s = day.period_s
    policies: list[tuple[str, Policy, bool]] = [
        ("static peak", StaticPolicy(), True),
        ("infermq scaling", InfermqPolicy(models), False),
        ("keda, value = max_backlog", KedaQueueLengthPolicy(False, period_s), False),
        ("keda, value = rate x SLA / 2", KedaQueueLengthPolicy(True, period_s), False),
    ]
    results = {name: run_day(day, models, policy, counts, static)
               for name, policy, static in policies}
    rows = [row for name, fleets in results.items() for row in summarize(name, fleets)]
    static_gpu = {r.model: r.gpu_hours for r in rows if r.policy == "static peak"}
    print(f"A day at {day.scale:g}x this machine's per-worker rates, "
          f"{day.period_s:g} s periods, seed {day.seed}\n")
    print("| policy | model | jobs | SLA missed | wait p50 | wait p99 | GPU-hours | "
          "vs static | peak workers |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.policy} | {r.model} | {r.jobs:,.0f} | {r.sla_miss_pct:.2f} % "
              f"| {r.wait_p50_s:.2f} s | {r.wait_p99_s:.1f} s | {r.gpu_hours:.0f} | "
              f"{r.gpu_hours / static_gpu[r.model]:.2f}x | {r.peak_workers} |")
    for policy in results:
        total = sum(r.gpu_hours for r in rows if r.policy == policy)
        print(f"{policy}: {total:.0f} GPU-hours, "
              f"{total / sum(static_gpu.values()):.2f}x the static fleet")
    plot(day, models, counts, results)


def plot(day: FleetDay, models: list[FleetModel], counts: dict[str, np.ndarray],
         results: dict[str, dict[str, ModelFleet]]) -> None:
    OUT.mkdir(exist_ok=True)
    period_s = day.period_s
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 3.2 * len(models)), sharex=True)
    for ax, m in zip(axes, models, strict=True):
        hours = np.arange(len(counts[m.name])) * period_s / 3600
        needed = counts[m.name] / period_s / m.worker_rate_jobs_per_s
        ax.plot(hours, needed, color="0.7", lw=0.8, label="workers the load needs")
        for policy, fleets in results.items():
            ax.plot(hours, fleets[m.name].instances_over_time, lw=1.2, label=policy)
        # the runaway KEDA rows would flatten the others: cut at twice the static fleet
        ax.set_ylim(0, 2 * max(results["static peak"][m.name].instances_over_time))
        ax.set_ylabel(f"{m.name}: workers")
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("hour of the simulated day")
    fig.suptitle(f"Fleet size through a synthetic day at {day.scale:g}x")
    fig.tight_layout()
    fig.savefig(OUT / "fleet.png", dpi=120)
    print(f"plot: {OUT / 'fleet.png'}")


if __name__ == "__main__":
    main()

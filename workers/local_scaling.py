"""Scaling on this machine: decisions from the live metrics, carried out on worker processes.

``Autoscaler.observe`` is the thin orchestrator around the pure ``routing.scaling``: one call is
one period; it reads every worker's snapshots (``stores.live_metrics``) and, for models that
no worker serves, the queue depth, and returns one decision per model. ``LocalActuator`` carries
decisions out here: scale-up starts an ``infermq worker`` process for the model; scale-down
drains one instance first (the worker's ``DRAIN_WORKER_COMMAND``: it cancels its consumer on
each of its queues, so RabbitMQ stops delivering to it, and reports its models DRAINING; then
its in-flight jobs finish and are acked; then ``shutdown``), so no job is redelivered or lost.
Elsewhere (compose, Kubernetes) an actuator of the same shape would scale containers; the
decisions do not change.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from celery import Celery

from infermq.errors import DrainFailed
from infermq.keys import DRAIN_WORKER_COMMAND, QueueNames, RedisKeys
from infermq.registry import load_registry
from infermq.settings import Settings
from routing.metrics import ModelMetrics, ModelMetricsSnapshot, aggregate_snapshots
from routing.scaling import ScalingAction, ScalingDecision, ScalingSignals, ScalingThresholds
from stores.connections import get_redis
from stores.live_metrics import read_snapshots
from workers.celery_app import create_app
from workers.metrics import QueueDepths

CONTROL_TIMEOUT_S = 5.0
IN_FLIGHT_POLL_S = 0.2
"""How often a drain asks the worker whether it still holds jobs: Celery's inspect has no
"tell me when idle", and a fraction of a second is nothing against a job's run time."""


@dataclass
class LocalWorker:
    """A worker process this actuator started (or one it was told the node name of)."""

    hostname: str
    models: list[str]
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)


class LocalActuator:
    """Starts and drains ``infermq worker`` processes on this machine."""

    def __init__(self, settings: Settings, log_dir: Path | None = None,
                 app: Celery | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.app = app or create_app(settings)
        self.workers: list[LocalWorker] = []
        self._lock = threading.Lock()

    def start(self, models: list[str], slots: int | None = None) -> LocalWorker:
        """Starts a worker process serving ``models``; returns at once (it loads them)."""
        hostname = f"scaled-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
        argv = [sys.executable, "-m", "infermq.cli", "worker", f"--models={','.join(models)}",
                f"--hostname={hostname}"]
        if slots is not None:
            argv.append(f"--slots={slots}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMQ_")}
        env.update(self.settings.as_env())
        log = None
        if self.log_dir is not None:
            log = open(self.log_dir / f"{hostname.split('@')[0]}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(argv, env=env, stdout=log or subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        worker = LocalWorker(hostname, list(models), process, log)
        with self._lock:
            self.workers.append(worker)
        return worker

    def stop_consuming(self, worker: LocalWorker) -> list[str]:
        """Step 1 of a drain: the worker cancels its consumer on every queue it consumes, so
        RabbitMQ delivers it nothing more, reports its models DRAINING and loads no other;
        returns those queues. Messages it already holds stay with it (unacked) and finish
        there.

        Raises:
            DrainFailed: the worker did not answer (not running, or another broker), or still
                consumes a queue after answering.
        """
        control = self.app.control
        replies = control.broadcast(DRAIN_WORKER_COMMAND, destination=[worker.hostname],
                                    reply=True, timeout=CONTROL_TIMEOUT_S) or []
        answer = next((r[worker.hostname] for r in replies if worker.hostname in r), None)
        if answer is None or "queues" not in answer:
            raise DrainFailed(f"worker {worker.hostname} did not answer {DRAIN_WORKER_COMMAND} "
                              f"within {CONTROL_TIMEOUT_S} s ({answer}): is it running on this "
                              "broker, with this version of infermq?")
        # The worker cancels its consumers just after it answers (as Celery's cancel_consumer
        # does, from its event loop): done once it says it consumes nothing.
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        pause = threading.Event()
        while left := self.consumed_queues(worker):
            if time.monotonic() > deadline:
                raise DrainFailed(f"worker {worker.hostname} still consumes {left} "
                                  f"{CONTROL_TIMEOUT_S} s after {DRAIN_WORKER_COMMAND}")
            pause.wait(IN_FLIGHT_POLL_S)
        return list(answer["queues"])

    def consumed_queues(self, worker: LocalWorker) -> list[str]:
        """The queues the worker consumes now.

        Raises:
            DrainFailed: the worker did not answer.
        """
        active = self.app.control.inspect(destination=[worker.hostname],
                                          timeout=CONTROL_TIMEOUT_S).active_queues() or {}
        if worker.hostname not in active:
            raise DrainFailed(f"worker {worker.hostname} did not say which queues it consumes "
                              f"within {CONTROL_TIMEOUT_S} s")
        return [q["name"] for q in active[worker.hostname]]

    def in_flight(self, worker: LocalWorker) -> int:
        """Jobs the worker holds: running, or prefetched and waiting for a task slot."""
        inspect = self.app.control.inspect(destination=[worker.hostname],
                                           timeout=CONTROL_TIMEOUT_S)
        held = 0
        for answer in (inspect.active(), inspect.reserved()):
            if answer is None or worker.hostname not in answer:
                raise DrainFailed(f"worker {worker.hostname} stopped answering mid-drain")
            held += len(answer[worker.hostname])
        return held

    def finish_and_stop(self, worker: LocalWorker, timeout_s: float = 300.0) -> None:
        """Steps 2 and 3 of a drain: waits until the worker holds no job, then shuts it down
        (and, for a process started here, waits for it to exit).

        Raises:
            DrainFailed: jobs were still in flight after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        idle = threading.Event()
        while self.in_flight(worker):
            if time.monotonic() > deadline:
                raise DrainFailed(f"worker {worker.hostname} still holds jobs after "
                                  f"{timeout_s} s; it keeps them, nothing was lost")
            idle.wait(IN_FLIGHT_POLL_S)
        self.app.control.shutdown(destination=[worker.hostname])
        if worker.process is not None:
            worker.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        self._forget(worker)

    def drain(self, worker: LocalWorker, timeout_s: float = 300.0) -> None:
        """Scale-down of one instance, drain first: stop consuming, finish, stop.

        Raises:
            DrainFailed: the worker did not answer, or still held jobs after ``timeout_s``.
        """
        self.stop_consuming(worker)
        self.finish_and_stop(worker, timeout_s)

    def _forget(self, worker: LocalWorker) -> None:
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)
        if worker.log is not None:
            worker.log.close()

    def close(self) -> None:
        """Stops the processes started here that are still running (SIGTERM: warm shutdown)."""
        for worker in list(self.workers):
            if worker.process is not None and worker.process.poll() is None:
                worker.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=60)
            self._forget(worker)


class Autoscaler:
    """One scaling decision per registry model per period, from the live metrics."""

    def __init__(self, settings: Settings, thresholds: ScalingThresholds | None = None) -> None:
        self.settings = settings
        self.registry = load_registry(settings.registry_path)
        self.signals = ScalingSignals(thresholds or ScalingThresholds())
        self.redis = get_redis(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        self.names = QueueNames(settings.namespace)
        self.snapshots: list[ModelMetricsSnapshot] = []
        self._depths = QueueDepths(settings.broker_url)

    def observe(self, now_s: float | None = None) -> list[ScalingDecision]:
        """This period's decisions. A model with no live instance holds (nothing to drain;
        starting one is a deployment's choice) with its backlog in the reason."""
        now_s = time.time() if now_s is None else now_s
        self.snapshots = read_snapshots(self.redis, self.keys, self.registry.models)
        live = aggregate_snapshots(self.snapshots, now_s, self.settings.metrics_ttl_s)
        decisions = []
        for name, spec in self.registry.models.items():
            metrics: ModelMetrics | None = live.get(name)
            if metrics is None:
                queued = sum(self._depths.ready_in_bands(self.names.for_model(t.value, name)) or 0
                             for t in spec.task_types)
                decisions.append(ScalingDecision(name, ScalingAction.HOLD, (
                    f"no live instance; {queued} queued",), 0, 0))
                continue
            decisions.append(self.signals.observe(metrics, metrics.instances))
        return decisions

    def instances_of(self, model: str) -> list[ModelMetricsSnapshot]:
        """The live instances of ``model`` in the last period, the least busy first (the one
        to drain on a scale-down)."""
        return sorted((s for s in self.snapshots if s.model == model), key=lambda s: s.in_flight)

    def apply(self, decisions: list[ScalingDecision], actuator: LocalActuator) -> list[str]:
        """Carries out the decisions on this machine; returns what was done, one line each.

        A scale-down drains the model's least busy instance: a worker process, with every
        model it serves.

        Raises:
            DrainFailed: an instance chosen for scale-down could not be drained.
        """
        done = []
        for decision in decisions:
            if decision.action == ScalingAction.SCALE_UP:
                worker = actuator.start([decision.model])
                done.append(f"{decision.model}: started {worker.hostname}")
            elif decision.action == ScalingAction.SCALE_DOWN:
                instances = self.instances_of(decision.model)
                if not instances:
                    continue
                worker = LocalWorker(instances[0].worker, [decision.model])
                actuator.drain(worker)
                done.append(f"{decision.model}: drained and stopped {worker.hostname}")
        return done

    def close(self) -> None:
        self._depths.close()

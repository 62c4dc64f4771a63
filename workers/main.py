"""The worker entry point: the only place that assembles a Celery worker from the parts."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from celery import signals
from celery.utils.nodenames import host_format

from infermq.settings import Settings
from producer.publisher import ConfirmedPublisher
from stores.connections import get_redis
from stores.database import get_engine
from workers.celery_app import create_app
from workers.consumer_queues import ConsumerQueues, register_drain_command
from workers.low_band import LowBand, low_band_step
from workers.metrics import WorkerMetrics
from workers.model_demand import ModelDemand
from workers.route_task import (
    Fallbacks,
    JobRouter,
    RouterSlot,
    register_route_task,
)
from workers.runtime import WorkerRuntime, job_state_store, served_specs, sized_for
from workers.tasks import register_tasks
from workers.webhooks import register_webhook_task


def run_worker(
    settings: Settings,
    model_names: list[str] | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
) -> None:
    """Runs a worker in this process until SIGTERM (warm shutdown: stop consuming, finish the
    jobs it holds, then exit) or SIGINT.

    The worker serves every model in ``model_names`` (all the registry's when None): those
    that fit the device memory budget load before it consumes anything, the others when their
    jobs wait (workers/model_demand.py), evicting idle ones. A worker with a real embedding
    model also consumes the route queue: it has what the router task needs to classify
    ``auto`` jobs.
    """
    specs = served_specs(settings, model_names)
    settings = sized_for(settings, specs)
    app = create_app(settings)
    topology = app.conf.infermq_topology
    names = topology.names
    model_queues = {spec.name: [names.for_model(task.value, spec.name)
                                for task in spec.task_types] for spec in specs}
    name = hostname or f"infermq-{os.getpid()}@{socket.gethostname()}"
    # What the job runner calls, all given here: live metrics, the router's fallbacks for a
    # routed job its model fails, webhook delivery after the commit.
    metrics = WorkerMetrics(settings, host_format(name), model_queues, get_redis(settings))
    publisher = ConfirmedPublisher(settings, topology)
    fallbacks = Fallbacks(get_engine(settings), job_state_store(settings), publisher)
    webhooks = register_webhook_task(app, settings, publisher)
    runtime = WorkerRuntime(settings, model_names, hooks=[fallbacks, webhooks], metrics=metrics)
    register_tasks(app, runtime)
    router_slot = RouterSlot()
    register_route_task(app, router_slot)
    # Celery sets logging up as its worker starts, after the start's loads: set it up now, so
    # that they are logged too (Celery's worker then leaves it as it is).
    app.log.setup(loglevel=loglevel, hostname=host_format(name))
    # The models that fit load before Celery starts, so that only READY models' queues are
    # consumed from the start: a model that did not fit or failed to load waits for the demand
    # thread, its jobs in RabbitMQ (or with other workers).
    runtime.start()
    queues = [queue for spec in runtime.ready_specs for queue in model_queues[spec.name]]
    # Webhook deliveries share the task threads but never an engine: no GPU slot is held.
    queues.append(names.webhooks)
    embed = runtime.embedder()
    if embed is not None:
        queues.append(names.route)
        # The router's training features, kept per embedding model and weights source.
        embedder = runtime.runner.cache.registry.models[str(runtime.embedding_model)]
        source = hashlib.sha256(embedder.source.encode()).hexdigest()[:12]
        router_slot.router = JobRouter(
            settings, runtime.runner.cache.registry, runtime.runner.database,
            runtime.runner.state, publisher, embed,
            feature_cache=settings.models_dir / f"router-features-{embedder.name}-{source}.npz",
            on_routed=metrics.job_routed,
        )

    # The low band's channel consumes the low bands of the queues consumed from the start.
    low_band = LowBand(topology, settings.low_slots)
    low_band.add(queues)
    app.steps["consumer"].add(low_band_step(low_band))
    consumer_queues = ConsumerQueues(low_band)
    demand = ModelDemand(settings, runtime, model_queues, consumer_queues)

    def start_demand(sender: Any, **_: Any) -> None:
        consumer_queues.attach(sender)  # the sender of worker_ready is the consumer
        demand.start()

    def drain_worker() -> None:
        demand.stop()
        runtime.begin_worker_drain()

    def stop_loading(**_: Any) -> None:
        # SIGTERM (Kubernetes stopping the pod): Celery's warm shutdown stops consuming and
        # finishes the jobs held; the models report DRAINING, as in a scale-down drain, so
        # /readyz answers 503 and nothing loads meanwhile.
        consumer_queues.close()
        drain_worker()

    def stop_runtime(**_: Any) -> None:
        stop_loading()
        demand.join()
        runtime.stop()

    register_drain_command(consumer_queues, drain_worker)
    signals.worker_ready.connect(start_demand, weak=False)
    signals.worker_shutting_down.connect(stop_loading, weak=False)
    signals.worker_shutdown.connect(stop_runtime, weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.task_threads}",
            f"--queues={','.join(queues)}",
            *(["--task-events"] if settings.task_events else []),
            f"--hostname={name}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )

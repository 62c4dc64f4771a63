"""The worker entry point: the only place that assembles a Celery worker from the parts."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import signals
from celery.utils.nodenames import host_format

from infermq.connections import get_redis
from infermq.settings import Settings
from workers.celery_app import create_app
from workers.metrics import WorkerMetrics
from workers.router import (
    ConfirmedJobPublisher,
    Fallbacks,
    JobRouter,
    RouterSlot,
    register_route_task,
)
from workers.runtime import WorkerRuntime
from workers.tasks import register_tasks


def run_worker(
    settings: Settings,
    model_names: list[str] | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
) -> None:
    """Runs a worker in this process until SIGTERM (warm shutdown: stop consuming, finish the
    jobs it holds, then exit) or SIGINT.

    A worker with a real embedding model also consumes the route queue: it has what the router
    task needs to classify ``auto`` jobs.
    """
    app = create_app(settings)
    runtime = WorkerRuntime(settings, model_names)
    register_tasks(app, runtime)
    router_slot = RouterSlot()
    register_route_task(app, router_slot)
    topology = app.conf.infermq_topology
    names = topology.names
    model_queues = {spec.name: [names.for_model(task.value, spec.name)
                                for task in spec.task_types] for spec in runtime.admitted}
    name = hostname or f"infermq-{os.getpid()}@{socket.gethostname()}"
    runtime.metrics = WorkerMetrics(settings, host_format(name), model_queues,
                                    get_redis(settings))
    publisher = ConfirmedJobPublisher(app, topology, settings.publish_confirm_timeout_s)
    runtime.runner.reroute = Fallbacks(runtime.runner.database, runtime.runner.state,
                                       publisher).reroute
    # The models load before Celery starts, so that only READY models' queues are consumed: a
    # model that did not fit the memory budget or failed to load leaves its queue to others.
    runtime.start()
    queues = [queue for spec in runtime.ready_specs for queue in model_queues[spec.name]]
    # Webhook deliveries share the task threads but never an engine: no GPU slot is held.
    queues.append(names.webhooks)
    embed = runtime.embedder()
    if embed is not None:
        queues.append(names.route)
        router_slot.router = JobRouter(settings, runtime.runner.cache.registry,
                                       runtime.runner.database, runtime.runner.state,
                                       publisher, embed)

    def stop_runtime(**_: Any) -> None:
        runtime.stop()

    signals.worker_shutdown.connect(stop_runtime, weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.worker_slots}",
            f"--queues={','.join(queues)}",
            *(["--task-events"] if settings.task_events else []),
            f"--hostname={name}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )

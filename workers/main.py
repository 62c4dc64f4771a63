"""The worker entry point: the only place that assembles a Celery worker from the parts."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import signals

from infermq.settings import Settings
from workers.celery_app import create_app
from workers.runtime import WorkerRuntime
from workers.tasks import register_tasks


def run_worker(
    settings: Settings,
    model_names: list[str] | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
) -> None:
    """Runs a worker in this process until SIGTERM (warm shutdown: stop consuming, finish the
    jobs it holds, then exit) or SIGINT."""
    app = create_app(settings)
    runtime = WorkerRuntime(settings, model_names)
    register_tasks(app, runtime)
    names = app.conf.infermq_topology.names
    queues = [names.for_model(task.value, spec.name)
              for spec in runtime.specs for task in spec.task_types]
    # Webhook deliveries share the task threads but never an engine: no GPU slot is held.
    queues.append(names.webhooks)

    def start_runtime(**_: Any) -> None:
        runtime.start()

    def stop_runtime(**_: Any) -> None:
        runtime.stop()

    signals.worker_init.connect(start_runtime, weak=False)
    signals.worker_shutdown.connect(stop_runtime, weak=False)
    name = hostname or f"infermq-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.worker_slots}",
            f"--queues={','.join(queues)}",
            "--task-events",
            f"--hostname={name}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


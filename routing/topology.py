"""The RabbitMQ topology, described as data so that the publisher and the Celery worker (both kombu)
declare exactly the same queues with exactly the same arguments (RabbitMQ refuses a second
declaration whose arguments differ).

One durable direct exchange; one durable classic queue per task type and model, with
priorities 0-9, a length limit that refuses at publish, and dead-lettering to ``<ns>.dead``.

Two bands per work queue. RabbitMQ serves a priority queue strictly highest first, so under
sustained high-priority load a low-priority message would never leave the broker. Jobs of
priority ``LOW_BAND_BELOW`` and above go to the queue itself (the high band, strict priority);
jobs below go to ``<queue>.low``, a FIFO queue with the same limit and dead-lettering, which
the worker consumes on a channel of its own with its own prefetch (workers/low_band.py): a
low job reaches a worker whatever the high load, and is never overtaken at the broker by one
submitted after it. In the worker the batcher's aging orders the two bands together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infermq.keys import QueueNames
from infermq.registry import Registry, load_registry
from infermq.settings import Settings

MAX_PRIORITY = 9
LOW_BAND_BELOW = 5
"""Jobs of a lower priority go to the low band (``<queue>.low``)."""


@dataclass(frozen=True)
class QueueSpec:
    """One queue: its name, the routing key that reaches it, its declaration arguments."""

    name: str
    routing_key: str
    arguments: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """Every exchange and queue one deployment uses."""

    names: QueueNames
    job_queues: tuple[QueueSpec, ...]
    route_queue: QueueSpec
    webhook_queue: QueueSpec
    dead_queue: QueueSpec
    low_bands: dict[str, QueueSpec] = field(default_factory=dict)
    """The low band of each job queue and of the route queue, by the high band's name."""

    @property
    def work_queues(self) -> tuple[QueueSpec, ...]:
        """Queues a worker consumes and the producer publishes to (jobs and routing), both
        bands."""
        return (*self.job_queues, self.route_queue, *self.low_bands.values())

    def band_for(self, queue: QueueSpec, priority: int) -> QueueSpec:
        """The band of ``queue`` a job of ``priority`` is published to (``queue`` itself when
        it has no low band: a topology without them is the single priority queue of old, which
        bench/priority.py measures against)."""
        if priority >= LOW_BAND_BELOW:
            return queue
        return self.low_bands.get(queue.name, queue)

    def queue_for(self, task_type: str, model: str, priority: int = MAX_PRIORITY) -> QueueSpec:
        """The queue a job of this task type, model and priority is published to."""
        name = self.names.for_model(task_type, model)
        for spec in self.job_queues:
            if spec.name == name:
                return self.band_for(spec, priority)
        raise KeyError(name)


def job_queue_arguments(names: QueueNames, max_length: int) -> dict[str, object]:
    """Arguments of every job queue.

    ``reject-publish`` makes a full queue nack the publish, so the producer raises
    ``QueueFull`` instead of the queue growing without bound or dropping old jobs.
    """
    return {
        "x-max-priority": MAX_PRIORITY,
        "x-max-length": max_length,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-queue-type": "classic",
    }


def low_band_arguments(names: QueueNames, max_length: int) -> dict[str, object]:
    """Arguments of every low band: a job queue's, without priorities (FIFO, so that no job
    submitted later overtakes one at the broker)."""
    arguments = job_queue_arguments(names, max_length)
    del arguments["x-max-priority"]
    return arguments


def build_topology(registry: Registry, names: QueueNames, max_length: int) -> Topology:
    """The topology for every model of ``registry``."""
    arguments = job_queue_arguments(names, max_length)
    low_arguments = low_band_arguments(names, max_length)

    def spec(name: str) -> QueueSpec:
        return QueueSpec(name=name, routing_key=name, arguments=arguments)

    job_queues = tuple(spec(names.for_model(t, m)) for t, m in registry.queues())
    route_queue = spec(names.route)
    low_bands = {queue.name: QueueSpec(names.low_band(queue.name), names.low_band(queue.name),
                                       low_arguments)
                 for queue in (*job_queues, route_queue)}
    return Topology(
        names=names,
        job_queues=job_queues,
        route_queue=route_queue,
        low_bands=low_bands,
        webhook_queue=QueueSpec(
            names.webhooks,
            names.webhooks,
            # x-max-priority as on every queue: Celery's worker declares each queue it consumes
            # with task_queue_max_priority, and RabbitMQ refuses a redeclaration that differs.
            {"x-max-priority": MAX_PRIORITY,
             "x-dead-letter-exchange": names.dead_letter_exchange, "x-queue-type": "classic"},
        ),
        dead_queue=QueueSpec(names.dead, names.dead, {"x-queue-type": "classic"}),
    )


def topology_for(settings: Settings) -> Topology:
    """The topology of the settings' registry, namespace and queue length limit."""
    registry = load_registry(settings.registry_path)
    return build_topology(registry, QueueNames(settings.namespace), settings.queue_max_length)

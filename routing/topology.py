"""The RabbitMQ topology, described as data so that the producer (pika) and the worker (kombu)
declare exactly the same queues with exactly the same arguments (RabbitMQ refuses a second
declaration whose arguments differ).

One durable direct exchange; one durable classic queue per task type and model, with
priorities 0-9, a length limit that refuses at publish, and dead-lettering to ``<ns>.dead``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infermq.keys import QueueNames
from infermq.registry import Registry

MAX_PRIORITY = 9


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

    @property
    def work_queues(self) -> tuple[QueueSpec, ...]:
        """Queues a worker consumes and the producer publishes to (jobs and routing)."""
        return (*self.job_queues, self.route_queue)

    def queue_for(self, task_type: str, model: str) -> QueueSpec:
        name = self.names.for_model(task_type, model)
        for spec in self.job_queues:
            if spec.name == name:
                return spec
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


def build_topology(registry: Registry, names: QueueNames, max_length: int) -> Topology:
    """The topology for every model of ``registry``."""
    arguments = job_queue_arguments(names, max_length)

    def spec(name: str) -> QueueSpec:
        return QueueSpec(name=name, routing_key=name, arguments=arguments)

    return Topology(
        names=names,
        job_queues=tuple(spec(names.for_model(t, m)) for t, m in registry.queues()),
        route_queue=spec(names.route),
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

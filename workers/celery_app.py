"""The Celery application of a worker: JSON only, late acks, prefetch 1 per task slot.

Why these settings: a worker holds at most one unacked message per task slot (prefetch
multiplier 1), so the broker keeps the rest and keeps ordering them by priority; a message is
acked only after its result is committed (late acks), so a killed worker loses nothing; a
message that cannot be decoded is rejected into the dead-letter queue instead of being acked
and dropped (Celery's default).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.worker.consumer.consumer import Consumer

from infermq.settings import Settings
from producer.publisher import consumed_queues
from routing.topology import topology_for


class DeadLetteringConsumer(Consumer):
    """Rejects undecodable messages without requeue, so RabbitMQ dead-letters them; takes
    ``worker_slots`` messages on the task channel, fewer than its threads (the low band's
    channel has the others' credits, workers/low_band.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings: Settings = kwargs["app"].conf.infermq_settings
        kwargs["initial_prefetch_count"] = settings.worker_slots * kwargs["prefetch_multiplier"]
        super().__init__(*args, **kwargs)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        message.reject(requeue=False)

    def connection_for_write(self, url: Any = None, heartbeat: Any = None) -> Any:
        """The connection of the task event dispatcher (the consumer's only writer with gossip
        off), without publisher confirms: three events per job each waiting for a confirm cost
        the worker and RabbitMQ more CPU than the job's own path, and a lost event loses no job
        (Flower's view is best effort). Task messages (retries) keep their confirms."""
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}))


def create_app(settings: Settings) -> Celery:
    """A Celery app bound to the settings' broker and topology."""
    topology = topology_for(settings)
    queues = consumed_queues(topology)
    app = Celery("infermq", broker=settings.broker_url, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.task_threads,
        worker_pool="threads",
        worker_consumer=f"{__name__}:DeadLetteringConsumer",
        worker_send_task_events=settings.task_events,
        # Events per namespace: `infermq flower` (this app) shows its own deployment's workers
        # and jobs, not those of every namespace on the broker's vhost.
        event_exchange=f"{topology.names.namespace}.celeryev",
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Off: after a broker connection loss with tasks in flight (threads cannot be
        # cancelled), Celery lowers the prefetch to 1 and restores it as tasks complete; the
        # chaos suite (tests/test_chaos.py, RabbitMQ stop_app/start_app with jobs held in the
        # engine) saw the worker never restore it and stop consuming for good. Without the
        # reduction it may hold up to ``slots`` more messages for a moment, acked late as ever.
        worker_enable_prefetch_count_reduction=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        task_queues=queues,
        task_default_exchange=topology.names.exchange,
        task_default_queue=topology.job_queues[0].name,
        task_create_missing_queues=False,
        task_default_priority=5,
        enable_utc=True,
    )
    app.conf.infermq_settings = settings
    app.conf.infermq_topology = topology
    return app

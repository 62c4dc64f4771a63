"""The low band's consumer: a channel of the worker's connection with a prefetch of its own.

Why a channel of its own: a RabbitMQ prefetch is one channel's credit, shared by every queue
consumed on it, and a freed credit goes to whichever of its queues has messages. On Celery's
task channel, priority-9 jobs would take every credit under sustained load and low-band jobs
(``<queue>.low``, routing/topology.py) would wait at the broker for ever, unseen by the
batcher's aging. Here the low band has ``Settings.low_slots`` credits that nothing else takes.
Its messages go through Celery's own task handler (``Consumer.create_task_handler``), so they
run, ack late, retry and dead-letter as any task, each acked on this channel.

The worker has a task thread for every credit of both channels (``Settings.task_threads``), so
no delivered job waits for a thread in arrival order: the batcher orders the jobs of both
bands by effective priority (workers/batching.py), which is what bounds a low job's wait.

A job retried with a countdown from this band is held by Celery's timer like any, which raises
the task channel's prefetch meanwhile (Celery keeps one QoS, the task channel's): for a moment
the worker may hold one more high-band message than its slots.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.consumer.consumer import Consumer
from kombu import Consumer as KombuConsumer
from kombu import Exchange, Queue

from routing.topology import Topology


class LowBand:
    """The low bands this worker consumes, changed in the Celery consumer's thread only
    (``ConsumerQueues`` runs its changes there); kept across reconnections."""

    def __init__(self, topology: Topology, prefetch: int) -> None:
        self.topology = topology
        self.prefetch = prefetch
        self.exchange = Exchange(topology.names.exchange, type="direct", durable=True)
        self._specs = {spec.name: spec for spec in topology.low_bands.values()}
        self._consumed: list[str] = []  # the low bands' names, in the order they were added
        self._consumer: KombuConsumer | None = None

    def low_bands_of(self, queues: list[str]) -> list[str]:
        """The low bands of those of ``queues`` that have one (not the webhook queue)."""
        bands = self.topology.low_bands
        return [bands[queue].name for queue in queues if queue in bands]

    def add(self, queues: list[str]) -> None:
        """Consumes the low bands of ``queues`` too."""
        for name in self.low_bands_of(queues):
            if name in self._consumed:
                continue
            self._consumed.append(name)
            if self._consumer is not None:
                self._consumer.add_queue(self._queue(name))
        if self._consumer is not None:
            self._consumer.consume()

    def cancel(self, queues: list[str]) -> list[str]:
        """Stops consuming the low bands of ``queues``; returns them."""
        cancelled = [name for name in self.low_bands_of(queues) if name in self._consumed]
        for name in cancelled:
            self._consumed.remove(name)
            if self._consumer is not None:
                self._consumer.cancel_by_queue(name)
        return cancelled

    def open(self, channel: Any, consumer: Consumer) -> KombuConsumer:
        """The kombu consumer of the low bands on ``channel`` (a connection's start)."""
        kombu_consumer = KombuConsumer(
            channel, queues=[self._queue(name) for name in self._consumed], accept=["json"],
            on_message=consumer.create_task_handler(), on_decode_error=consumer.on_decode_error)
        # Global: one credit count for the channel, however many low bands it consumes.
        kombu_consumer.qos(prefetch_count=self.prefetch, apply_global=True)
        self._consumer = kombu_consumer
        return kombu_consumer

    def closed(self) -> None:
        self._consumer = None

    def _queue(self, name: str) -> Queue:
        spec = self._specs[name]
        return Queue(spec.name, exchange=self.exchange, routing_key=spec.routing_key,
                     durable=True, queue_arguments=spec.arguments)


def low_band_step(band: LowBand) -> type[bootsteps.ConsumerStep]:
    """A consumer bootstep that runs ``band`` on its own channel (``app.steps["consumer"]``);
    Celery starts it with the connection and again after each reconnection."""

    class LowBandStep(bootsteps.ConsumerStep):
        """Consumes the worker's low bands on a channel of their own."""

        # After Celery's task consumer: its start fills the task strategies that the handler
        # looks messages up in (a message that came before would be an unknown task).
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def get_consumers(self, channel: Any) -> list[KombuConsumer]:
            return [band.open(channel, self.parent)]

        def __init__(self, parent: Consumer, **kwargs: Any) -> None:
            self.parent = parent
            super().__init__(parent, **kwargs)

        def stop(self, parent: Consumer) -> None:
            band.closed()
            super().stop(parent)

        def shutdown(self, parent: Consumer) -> None:
            band.closed()
            super().shutdown(parent)

    return LowBandStep

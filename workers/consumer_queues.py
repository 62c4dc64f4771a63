"""Which queues a running Celery worker consumes, changed from outside its consumer thread.

The cold-start driver (workers/model_demand.py) starts consuming a model's queues once the
model is READY and stops before evicting it. Both go through the Celery consumer of this
process (``Consumer.add_task_queue`` / ``cancel_task_queue``), called in the consumer's own
thread through ``Consumer.call_soon``: kombu's channels are not thread-safe, and the event
loop's hub takes callbacks from other threads and wakes its poller for them. The caller waits
until the call has run, so when ``stop_consuming`` returns the broker has been told, and a
message it delivered before is already on its way to a task slot. Celery's remote control
(``add_consumer`` / ``cancel_consumer`` with this worker as destination) does the same work by
the same ``call_soon``, but through a round trip to the broker, and it answers before the
consumer has changed: it would tell the driver nothing it can wait on.

Each change covers the queues' low bands too (workers/low_band.py, consumed on a channel of
their own): a model's two bands start and stop together.

``drain_all`` is the worker's side of a scale-down: ``DRAIN_WORKER_COMMAND``, a remote-control
command, stops every consumer and reports the models DRAINING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.worker.consumer.consumer import Consumer
from celery.worker.control import control_command

from infermq.keys import DRAIN_WORKER_COMMAND
from workers.low_band import LowBand

log = logging.getLogger(__name__)

SWITCH_TIMEOUT_S = 30.0
"""How long a change may wait for the consumer thread: it runs callbacks between two reads of
the socket, so only a consumer that is reconnecting or stopping takes longer."""


class ConsumerQueues:
    """Starts and stops the consumers of this worker's queues, from any thread.

    Once the worker is draining or stopping (``drain_all``, ``close``), nothing starts
    consuming again: a load that finishes then leaves its queues to other workers.
    """

    def __init__(self, low_band: LowBand) -> None:
        self._low_band = low_band
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._draining = False  # no queue starts being consumed any more
        self._stopping = False  # the consumer may not run changes any more: nobody waits
        self._waiting: set[threading.Event] = set()

    def attach(self, consumer: Consumer) -> None:
        """The worker's consumer, once it is ready (Celery's ``worker_ready`` signal)."""
        self._consumer = consumer

    def start_consuming(self, queues: list[str]) -> bool:
        """Consumes ``queues`` from now on; False when the worker is draining or stopping, or
        its consumer did not run the change within ``SWITCH_TIMEOUT_S``."""

        def add(consumer: Consumer) -> bool:
            if self._draining:  # read in the consumer thread, where drain_all sets it
                return False
            for queue in queues:
                consumer.add_task_queue(queue)
            self._low_band.add(queues)
            return True

        return self._in_consumer_thread(add)

    def stop_consuming(self, queues: list[str]) -> bool:
        """Stops consuming ``queues``; False when the worker is stopping or its consumer did
        not run the change within ``SWITCH_TIMEOUT_S``."""

        def cancel(consumer: Consumer) -> bool:
            for queue in queues:
                consumer.cancel_task_queue(queue)
            self._low_band.cancel(queues)
            return True

        return self._in_consumer_thread(cancel)

    def drain_all(self, consumer: Consumer) -> list[str]:
        """Stops consuming every queue, in the consumer thread (a control command runs
        there); nothing starts consuming afterwards. Returns the queues."""
        self._draining = True
        queues = [queue.name for queue in consumer.task_consumer.queues]
        for queue in queues:
            # Deferred as Celery's own cancel_consumer is: a command must not wait on the
            # connection whose frame it is being called from.
            consumer.call_soon(consumer.cancel_task_queue, queue)
        consumer.call_soon(self._low_band.cancel, queues)
        return [*queues, *self._low_band.low_bands_of(queues)]

    def close(self) -> None:
        """The worker is stopping: changes are refused, and a caller waiting for one returns."""
        with self._lock:
            self._draining = self._stopping = True
            for waiting in self._waiting:
                waiting.set()

    def _in_consumer_thread(self, change: Callable[[Consumer], bool]) -> bool:
        consumer = self._consumer
        if consumer is None:
            log.warning("no Celery consumer attached yet: queues not changed")
            return False
        done = threading.Event()
        outcome: list[bool] = []

        def run() -> None:
            try:
                outcome.append(change(consumer))
            finally:
                done.set()

        with self._lock:
            if self._stopping:
                return False
            self._waiting.add(done)
        try:
            consumer.call_soon(run)
            if not done.wait(SWITCH_TIMEOUT_S):
                log.warning("the Celery consumer did not change its queues within %s s",
                            SWITCH_TIMEOUT_S)
        finally:
            with self._lock:
                self._waiting.discard(done)
        return bool(outcome and outcome[0])


def register_drain_command(queues: ConsumerQueues, on_drain: Callable[[], None]) -> None:
    """Registers ``DRAIN_WORKER_COMMAND`` on this process's Celery workers: it stops every
    consumer, then calls ``on_drain`` (the models report DRAINING, nothing loads any more), and
    answers with the queues it stopped consuming."""

    @control_command(name=DRAIN_WORKER_COMMAND)
    def drain_worker(state: Any, **_: Any) -> dict[str, Any]:
        """Stop consuming every queue and report the models DRAINING (scale-down)."""
        stopped = queues.drain_all(state.consumer)
        on_drain()
        return {"ok": "draining", "queues": stopped}

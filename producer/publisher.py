"""Publishes job messages to RabbitMQ and waits for the broker's confirm (pika).

A publish returns only once the broker has taken responsibility for the message: persistent
(delivery mode 2), ``mandatory`` (an unroutable message comes back instead of vanishing) and
confirmed. Everything that stops that from happening is a typed ``QueueError``.

The body is Celery's task message protocol 2 in JSON, so the Celery worker consumes it like any
task it sent itself; pika gives what Celery's own publisher does not: a confirm timeout and the
broker's nack and return as exceptions.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions

from infermq.errors import QueueFull, QueueUnavailable
from infermq.settings import Settings
from infermq.task_message import celery_task_message
from routing.topology import QueueSpec, Topology


@dataclass
class _Channel:
    connection: pika.BlockingConnection
    channel: Any


class ConfirmedPublisher:
    """A pool of confirmed AMQP channels, each used by one thread at a time; declares the
    topology once per connection.

    Pooled rather than one per thread: a thread that ends (a request's worker thread, a
    benchmark round's submitters) would otherwise leave its connection open and its successor
    would pay a new connection and topology declaration.
    """

    def __init__(self, settings: Settings, topology: Topology) -> None:
        self._settings = settings
        self._topology = topology
        self._idle: list[_Channel] = []
        self._all: list[_Channel] = []
        self._lock = threading.Lock()

    def _broker_address(self) -> str:
        parts = urlsplit(self._settings.broker_url)
        return f"{parts.hostname}:{parts.port or 5672}"

    def _open(self) -> _Channel:
        parameters = pika.URLParameters(self._settings.broker_url)
        parameters.blocked_connection_timeout = self._settings.publish_confirm_timeout_s
        parameters.socket_timeout = self._settings.publish_confirm_timeout_s
        parameters.connection_attempts = 1
        try:
            connection = pika.BlockingConnection(parameters)
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel, self._topology)
        except pika.exceptions.ChannelClosedByBroker as e:
            with contextlib.suppress(Exception):
                connection.close()
            if e.reply_code == 406:
                raise QueueUnavailable(
                    f"RabbitMQ refused to declare infermq's queues: {e.reply_text}. A queue of "
                    f"namespace {self._topology.names.namespace!r} exists with other arguments "
                    "(an older infermq?): delete it (`rabbitmqctl delete_queue <name>`) or set "
                    "INFERMQ_NAMESPACE to a new one"
                ) from e
            raise QueueUnavailable(f"RabbitMQ refused infermq's topology: {e.reply_text}") from e
        except pika.exceptions.AMQPError as e:
            raise QueueUnavailable(
                f"RabbitMQ at {self._broker_address()} refused the connection ({e!r}): is it "
                "running? `infermq services` starts it."
            ) from e
        opened = _Channel(connection, channel)
        with self._lock:
            self._all.append(opened)
        return opened

    def _take(self) -> _Channel:
        """An idle open channel (the most recently used), or a new one."""
        while True:
            with self._lock:
                current = self._idle.pop() if self._idle else None
            if current is None:
                return self._open()
            if current.channel.is_open:
                return current
            self._discard(current)

    def _give_back(self, current: _Channel) -> None:
        with self._lock:
            if current in self._all:  # not discarded or closed meanwhile
                self._idle.append(current)

    def _discard(self, current: _Channel) -> None:
        with self._lock:
            if current in self._all:
                self._all.remove(current)
        with contextlib.suppress(Exception):
            current.connection.close()

    def publish(
        self, queue: QueueSpec, task: str, task_id: str, kwargs: dict[str, Any], priority: int
    ) -> None:
        """Publishes a task message to ``queue`` and returns once the broker confirmed it.

        Raises:
            QueueFull: the queue is at its length limit and refused the message.
            QueueUnavailable: the broker is unreachable, dropped the connection, returned the
                message as unroutable, nacked it, or did not confirm in time.
        """
        body, headers = celery_task_message(task, task_id, kwargs)
        properties = pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=pika.DeliveryMode.Persistent,
            priority=priority,
            correlation_id=task_id,
            message_id=task_id,
            headers=headers,
        )
        current = self._take()
        timed_out = threading.Event()

        def abort_unconfirmed() -> None:
            timed_out.set()
            current.connection._impl._terminate_stream(
                pika.exceptions.StreamLostError("no publisher confirm in time")
            )

        # BlockingConnection.call_later timers do not fire while basic_publish waits for the
        # confirm; the underlying ioloop's timers do, and dropping the stream ends the wait.
        timer = current.connection._impl.ioloop.call_later(
            self._settings.publish_confirm_timeout_s, abort_unconfirmed
        )
        discarded = False
        try:
            current.channel.basic_publish(
                exchange=self._topology.names.exchange,
                routing_key=queue.routing_key,
                body=body,
                properties=properties,
                mandatory=True,
            )
        except pika.exceptions.UnroutableError as e:
            raise QueueUnavailable(
                f"RabbitMQ returned job {task_id} as unroutable: queue {queue.name} is not "
                "bound; run `infermq migrate` or start a worker to declare the queues"
            ) from e
        except pika.exceptions.NackError as e:
            if self._is_full(current, queue):
                raise QueueFull(
                    f"queue {queue.name} is full and refused job {task_id}: retry later, or "
                    "start more workers (`infermq worker`)"
                ) from e
            raise QueueUnavailable(f"RabbitMQ refused job {task_id} on {queue.name}") from e
        except (pika.exceptions.AMQPError, OSError) as e:
            discarded = True
            self._discard(current)
            if timed_out.is_set():
                raise QueueUnavailable(
                    f"RabbitMQ at {self._broker_address()} did not confirm job {task_id} within "
                    f"{self._settings.publish_confirm_timeout_s} s; it may be overloaded or "
                    "unreachable; the job was not queued, submit it again"
                ) from e
            raise QueueUnavailable(
                f"lost the connection to RabbitMQ at {self._broker_address()} while publishing "
                f"job {task_id} ({e!r}); the job was not queued, submit it again"
            ) from e
        finally:
            current.connection._impl.ioloop.remove_timeout(timer)
            if not discarded:
                self._give_back(current)

    def _is_full(self, current: _Channel, queue: QueueSpec) -> bool:
        limit = queue.arguments.get("x-max-length")
        if not isinstance(limit, int):
            return False
        try:
            depth = current.channel.queue_declare(queue.name, passive=True)
        except pika.exceptions.AMQPError:
            return False
        return int(depth.method.message_count) >= limit

    def close(self) -> None:
        with self._lock:
            channels, self._all, self._idle = self._all, [], []
        for current in channels:
            with contextlib.suppress(Exception):
                current.connection.close()


def declare_topology(channel: Any, topology: Topology) -> None:
    """Declares every exchange and queue of ``topology``; idempotent."""
    names = topology.names
    channel.exchange_declare(names.exchange, exchange_type="direct", durable=True)
    channel.exchange_declare(names.dead_letter_exchange, exchange_type="fanout", durable=True)
    for queue in (*topology.work_queues, topology.webhook_queue):
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        channel.queue_bind(queue.name, names.exchange, routing_key=queue.routing_key)
    dead = topology.dead_queue
    channel.queue_declare(dead.name, durable=True, arguments=dead.arguments)
    channel.queue_bind(dead.name, names.dead_letter_exchange, routing_key="")


def delete_topology(channel: Any, topology: Topology, extra_queues: Sequence[str] = ()) -> None:
    """Deletes every queue and exchange of ``topology`` (and ``extra_queues``): the undo of
    ``declare_topology``, for tests and benchmarks that own a namespace."""
    names = topology.names
    queues = [q.name for q in (*topology.work_queues, topology.webhook_queue,
                               topology.dead_queue)]
    for queue in (*queues, *extra_queues):
        channel.queue_delete(queue)
    for exchange in (names.exchange, names.dead_letter_exchange):
        channel.exchange_delete(exchange)

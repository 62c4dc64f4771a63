"""The one publisher of infermq: task messages to RabbitMQ, returned once the broker confirmed.

The producer, the router task and its fallbacks, webhook deliveries and dead-letter replays all
publish through ``ConfirmedPublisher``. A publish returns only once the broker has taken
responsibility for the message: persistent (delivery mode 2), ``mandatory`` (an unroutable
message comes back instead of vanishing) and confirmed within ``publish_confirm_timeout_s``.
Everything that stops that is a typed ``QueueError``.

kombu carries it (``confirm_publish`` with a confirm timeout, ``on_return`` for returned
messages) and Celery builds the message (``app.amqp.as_task_v2``), so the worker consumes
exactly what Celery itself would send. bench/publisher.py measured it against pika's
BlockingConnection on the same broker and kept the faster.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from amqp.exceptions import AMQPError, MessageNacked, PreconditionFailed
from amqp.exceptions import ConnectionError as AMQPConnectionError
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import KombuError

from infermq.errors import QueueFull, QueueUnavailable
from infermq.jobs import JobMessage, TaskType
from infermq.keys import ROUTE_JOB_TASK, RUN_JOB_TASK
from infermq.settings import Settings
from routing.topology import QueueSpec, Topology

ORIGIN = "infermq"
"""The ``origin`` header of every message infermq sends (Celery's worker logs it)."""

CONNECTIONS = 64
"""Connections the publisher keeps at most: one per thread publishing at the same time (the
gateway's request threads, a benchmark's submitters); a thread waits for a free one up to the
confirm timeout."""


def kombu_queue(spec: QueueSpec, exchange: Exchange) -> Queue:
    """The kombu declaration of ``spec``, bound to ``exchange`` by its routing key."""
    return Queue(spec.name, exchange=exchange, routing_key=spec.routing_key, durable=True,
                 queue_arguments=spec.arguments)


def consumed_queues(topology: Topology) -> list[Queue]:
    """The queues a worker consumes (work queues, both bands, and webhooks), bound to the
    topology's direct exchange."""
    exchange = Exchange(topology.names.exchange, type="direct", durable=True)
    return [kombu_queue(spec, exchange)
            for spec in (*topology.work_queues, topology.webhook_queue)]


def topology_queues(topology: Topology) -> list[Queue]:
    """Every queue of ``topology``, each bound to its exchange (the dead-letter queue to the
    fanout dead-letter exchange): declaring them all declares the topology."""
    dead_exchange = Exchange(topology.names.dead_letter_exchange, type="fanout", durable=True)
    dead = topology.dead_queue
    return [*consumed_queues(topology),
            Queue(dead.name, exchange=dead_exchange, routing_key="", durable=True,
                  queue_arguments=dead.arguments)]


def _rejects_when_full(queue: Queue) -> bool:
    """Whether the broker nacks a publish to ``queue`` when it is full: every length-limited
    queue of the topology overflows with ``reject-publish``, so its nack is ``QueueFull``."""
    arguments = getattr(queue, "queue_arguments", None) or {}
    return arguments.get("x-overflow") == "reject-publish"


class _ConnectionLost(Exception):
    """A pooled connection turned out dead mid-publish (its cause is the error)."""


class ConfirmedPublisher:
    """A pool of confirmed AMQP connections, each used by one thread at a time; declares the
    topology once per connection (again after a reconnect). Safe to share between threads."""

    def __init__(self, settings: Settings, topology: Topology) -> None:
        self._settings = settings
        self.topology = topology
        self._timeout_s = settings.publish_confirm_timeout_s
        self._exchange = Exchange(topology.names.exchange, type="direct", durable=True)
        self._declarations = topology_queues(topology)
        self._queues = {queue.name: queue for queue in self._declarations}
        self._broker = Connection(
            settings.broker_url, connect_timeout=self._timeout_s,
            # One connection attempt: a broker that is down is a QueueUnavailable now, not a
            # submit that hangs in kombu's reconnect loop.
            transport_options={"confirm_publish": True, "max_retries": 0,
                               # Every read and write bounded (declarations too, not only
                               # the confirm): a stalled broker is a QueueUnavailable.
                               "read_timeout": self._timeout_s,
                               "write_timeout": self._timeout_s})
        self._pool = self._broker.Pool(limit=CONNECTIONS)
        self._declared: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._amqp = Celery("infermq-publisher", set_as_current=False).amqp
        # The broker's returns, seen by the thread whose publish drains them (py-amqp calls
        # on_return in the thread waiting for the confirm): per thread, so no publish reads
        # another's return.
        self._returns = threading.local()

    def _broker_address(self) -> str:
        parts = urlsplit(self._settings.broker_url)
        return f"{parts.hostname}:{parts.port or 5672}"

    def publish(self, queue: QueueSpec | Queue, task: str, task_id: str, *,
                kwargs: dict[str, Any] | None = None, args: Sequence[Any] = (),
                priority: int = 0, expiration_s: float | None = None) -> None:
        """Publishes a Celery message that calls ``task(*args, **kwargs)`` with id ``task_id``
        to ``queue`` and returns once the broker confirmed it. ``queue`` is a queue of the
        topology (declared with it, once per connection) or any kombu ``Queue`` (declared by
        kombu on its first use per connection: a webhook retry's delay queue, whose TTL is
        ``expiration_s``).

        A connection that broke since its last use (the broker restarted) is replaced and the
        publish tried once more on a new one: the broker confirmed nothing on the dead one, and
        should it have queued the message anyway, the job's row makes the second copy a no-op.

        Raises:
            QueueFull: the queue is at its length limit and refused the message.
            QueueUnavailable: the broker is unreachable, dropped the connection, returned the
                message as unroutable, nacked it, or did not confirm in time.
        """
        if isinstance(queue, Queue):
            target, declare = queue, [queue]
        else:
            target = self._queues.get(queue.name) or kombu_queue(queue, self._exchange)
            declare = []
        message = self._amqp.as_task_v2(
            task_id, task, args=tuple(args), kwargs=kwargs or {}, argsrepr=repr(tuple(args)),
            kwargsrepr=f"{{job {task_id}}}" if kwargs else "{}", origin=ORIGIN,
            ignore_result=True)
        options = {"headers": message.headers, "priority": priority,
                   "expiration": expiration_s, "message_id": task_id, **message.properties}
        for last_try in (False, True):
            try:
                self._publish_once(target, message.body, task_id, declare, options)
                return
            except _ConnectionLost as lost:
                if last_try:
                    raise QueueUnavailable(
                        f"lost the connection to RabbitMQ at {self._broker_address()} while "
                        f"publishing job {task_id} ({lost.__cause__!r}); the job was not "
                        "queued, submit it again") from lost.__cause__

    def publish_job(self, message: JobMessage) -> None:
        """Publishes ``message`` as a task on the queue its task type, model and priority name
        (an ``auto`` job: the route queue's band); raises as ``publish``."""
        if message.task_type == TaskType.AUTO:
            queue = self.topology.band_for(self.topology.route_queue, message.priority)
            task = ROUTE_JOB_TASK
        else:
            queue = self.topology.queue_for(message.task_type.value, message.model,
                                             message.priority)
            task = RUN_JOB_TASK
        self.publish(queue, task, message.job_id,
                     kwargs={"message": message.model_dump(mode="json")},
                     priority=message.priority)

    def _publish_once(self, target: Queue, body: Any, task_id: str, declare: list[Queue],
                      options: dict[str, Any]) -> None:
        try:
            connection = self._pool.acquire(block=True, timeout=self._timeout_s)
        except KombuError as e:
            raise QueueUnavailable(
                f"all {CONNECTIONS} publisher connections stayed busy for {self._timeout_s} s; "
                f"job {task_id} was not queued, submit it again") from e
        try:
            self._publish_on(connection, target, body, task_id, declare, options)
        finally:
            connection.release()

    def _publish_on(self, connection: Connection, target: Queue, body: Any, task_id: str,
                    declare: list[Queue], options: dict[str, Any]) -> None:
        self._returns.ids = set()
        try:
            producer = Producer(connection, on_return=self._on_return)
            if connection not in self._declared:
                for queue in self._declarations:
                    queue(producer.channel).declare()
                self._declared.add(connection)
            producer.publish(
                body, exchange=target.exchange, routing_key=target.routing_key,
                serializer="json", delivery_mode=2, mandatory=True, retry=False, declare=declare,
                timeout=self._timeout_s, confirm_timeout=self._timeout_s, **options)
        except MessageNacked as e:
            if _rejects_when_full(target):
                raise QueueFull(
                    f"queue {target.name} is full and refused job {task_id}: retry later, or "
                    "start more workers (`infermq worker`)") from e
            raise QueueUnavailable(f"RabbitMQ refused job {task_id} on {target.name}") from e
        except TimeoutError as e:
            self._collect(connection)
            raise QueueUnavailable(
                f"RabbitMQ at {self._broker_address()} did not confirm job {task_id} within "
                f"{self._timeout_s} s; it may be overloaded or unreachable; the job was not "
                "queued, submit it again") from e
        except KombuError as e:  # kombu's OperationalError: the connection could not be made
            self._collect(connection)
            raise QueueUnavailable(
                f"RabbitMQ at {self._broker_address()} refused the connection ({e!r}): is it "
                "running? `infermq services` starts it.") from e
        except (OSError, AMQPConnectionError) as e:
            # A socket that died since this connection's last use (the broker restarted,
            # closed it, or it was cut): nothing was confirmed; the caller tries a new one.
            self._collect(connection)
            raise _ConnectionLost from e
        except PreconditionFailed as e:
            self._collect(connection)
            raise QueueUnavailable(
                f"RabbitMQ refused to declare infermq's queues: {e.reply_text}. A queue of "
                f"namespace {self.topology.names.namespace!r} exists with other arguments "
                "(an older infermq?): delete it (`rabbitmqctl delete_queue <name>`) or set "
                "INFERMQ_NAMESPACE to a new one") from e
        except AMQPError as e:
            self._collect(connection)
            raise QueueUnavailable(
                f"RabbitMQ refused job {task_id} on {target.name} ({e!r})") from e
        if task_id in self._returns.ids:
            raise QueueUnavailable(
                f"RabbitMQ returned job {task_id} as unroutable: queue {target.name} is not "
                "bound; run `infermq migrate` or start a worker to declare the queues")

    def _collect(self, connection: Connection) -> None:
        self._declared.discard(connection)
        connection.collect()

    def _on_return(self, exception: Exception, exchange: str, routing_key: str,
                   message: Any) -> None:
        """The broker sends an unroutable message back before its confirm: remembered by id,
        so the publish that is waiting for that confirm raises instead of returning."""
        self._returns.ids.add(str(message.properties.get("message_id")))

    def close(self) -> None:
        self._pool.force_close_all()
        self._broker.release()


def delete_topology(channel: Any, topology: Topology, extra_queues: Sequence[str] = ()) -> None:
    """Deletes every queue and exchange of ``topology`` (and ``extra_queues``) on a kombu or
    py-amqp channel: the undo of the publisher's declaration, for tests and benchmarks that
    own a namespace."""
    names = topology.names
    for queue in (*(q.name for q in topology_queues(topology)), *extra_queues):
        channel.queue_delete(queue)
    for exchange in (names.exchange, names.dead_letter_exchange):
        channel.exchange_delete(exchange)

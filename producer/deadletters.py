"""The dead-letter queue: what ended there and why, and replaying it.

RabbitMQ records why a message was dead-lettered in its ``x-death`` header; infermq records the
job's error on its row. Replay resets a dead or failed job's row (status, attempts and runs
alone) and publishes the task again to the queue it died in, through the one publisher (a fresh
Celery message: no retries count, no death history). A webhook delivery replays as it was.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import NotFound
from kombu import Connection, Queue
from kombu.exceptions import KombuError
from kombu.message import Message
from sqlalchemy import update

from infermq.errors import QueueUnavailable
from infermq.jobs import JobStatus
from infermq.keys import ROUTE_JOB_TASK, RUN_JOB_TASK, QueueNames
from infermq.settings import Settings
from infermq.tables import jobs
from producer.publisher import ConfirmedPublisher
from routing.topology import topology_for
from stores.database import get_engine

JOB_TASKS = (RUN_JOB_TASK, ROUTE_JOB_TASK)


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    task: str
    reason: str
    queue: str
    body: str | bytes
    priority: int


def _letters(channel: Any, queue: str, limit: int) -> Iterator[tuple[Message, DeadLetter]]:
    """(the message, what it says) for up to ``limit`` dead letters, unacked."""
    dead = Queue(queue, no_declare=True)(channel)
    for _ in range(limit):
        try:
            message = dead.get(no_ack=False)
        except NotFound:  # no worker or submit declared it yet: nothing has died
            return
        if message is None:
            return
        headers = message.headers or {}
        deaths = headers.get("x-death") or [{}]
        yield message, DeadLetter(
            job_id=str(headers.get("id") or message.properties.get("correlation_id") or "?"),
            task=str(headers.get("task") or "?"),
            reason=str(deaths[0].get("reason", "?")),
            queue=str(deaths[0].get("queue", "?")),
            body=message.body,
            priority=int(message.properties.get("priority") or 0),
        )


def peek_dead(settings: Settings, limit: int = 50) -> list[DeadLetter]:
    """The first ``limit`` dead letters; they stay in the queue (closing the connection
    returns every message it got and did not ack).

    Raises:
        QueueUnavailable: RabbitMQ is unreachable.
    """
    with _broker(settings) as connection:
        return [letter for _, letter in _letters(connection.default_channel,
                                                 QueueNames(settings.namespace).dead, limit)]


@contextlib.contextmanager
def _broker(settings: Settings) -> Iterator[Connection]:
    """A connection to the settings' broker; an unreachable one is ``QueueUnavailable``."""
    connection = Connection(settings.broker_url, connect_timeout=settings.publish_confirm_timeout_s)
    try:
        try:
            connection.ensure_connection(max_retries=0)
        except KombuError as e:
            raise QueueUnavailable(
                f"RabbitMQ is unreachable ({e}): is it running? `infermq services` starts it"
            ) from e
        yield connection
    finally:
        connection.release()


def replay_dead(settings: Settings, job_id: str | None = None, limit: int = 10_000) -> int:
    """Republishes dead letters (all, or one job's) to the queue they died in, resetting the
    job's row; returns how many were replayed. A letter is acked only after its new
    message was confirmed, so a replay cut short loses nothing."""
    topology = topology_for(settings)
    queues = {spec.name: spec for spec in (*topology.work_queues, topology.webhook_queue)}
    publisher = ConfirmedPublisher(settings, topology)
    replayed = 0
    try:
        with _broker(settings) as connection:
            for message, letter in list(_letters(connection.default_channel,
                                                 topology.names.dead, limit)):
                if job_id is not None and letter.job_id != job_id:
                    continue
                call = _task_call(letter.body)
                queue = queues.get(letter.queue)
                if call is None or queue is None:
                    continue
                if letter.task in JOB_TASKS and not _reset_job(settings, letter.job_id):
                    continue  # done since (a stale letter): its result stays
                args, kwargs = call
                publisher.publish(queue, letter.task, letter.job_id, args=args, kwargs=kwargs,
                                  priority=letter.priority)
                message.ack()
                replayed += 1
    finally:
        publisher.close()
    return replayed


def _reset_job(settings: Settings, job_id: str) -> bool:
    """Makes a dead or failed job runnable again from its first delivery; False when the row
    is in any other status."""
    with get_engine(settings).begin() as db:
        changed = db.execute(
            update(jobs)
            .where(jobs.c.id == job_id,
                   jobs.c.status.in_([JobStatus.DEAD.value, JobStatus.FAILED.value]))
            .values(attempts=0, solo_runs=0, status=JobStatus.QUEUED.value, error=None,
                    result=None)
            .returning(jobs.c.id)
        ).first()
    return changed is not None


def _task_call(body: str | bytes) -> tuple[list[Any], dict[str, Any]] | None:
    """The args and kwargs of a Celery protocol 2 body; None for anything else."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], list)
            and isinstance(decoded[1], dict)):
        return None
    return decoded[0], decoded[1]

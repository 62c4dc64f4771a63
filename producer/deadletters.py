"""The dead-letter queue: what ended there and why, and replaying it.

RabbitMQ records why a message was dead-lettered in its ``x-death`` header; infermq records the
job's error on its row. Replay resets the attempts and republishes to the original queue.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
from sqlalchemy import update

from infermq.jobs import JobStatus
from infermq.keys import QueueNames
from infermq.settings import Settings
from infermq.tables import jobs
from stores.database import get_engine


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    task: str
    reason: str
    queue: str
    body: bytes
    properties: Any


def _letters(channel: Any, queue: str, limit: int) -> Iterator[tuple[Any, DeadLetter]]:
    for _ in range(limit):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return
        headers = properties.headers or {}
        deaths = headers.get("x-death") or [{}]
        yield method, DeadLetter(
            job_id=str(headers.get("id") or properties.correlation_id or "?"),
            task=str(headers.get("task") or "?"),
            reason=str(deaths[0].get("reason", "?")),
            queue=str(deaths[0].get("queue", "?")),
            body=body,
            properties=properties,
        )


def peek_dead(settings: Settings, limit: int = 50) -> list[DeadLetter]:
    """The first ``limit`` dead letters; they stay in the queue."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        letters = [letter for _, letter in _letters(channel, QueueNames(settings.namespace).dead,
                                                    limit)]
        # Closing the channel returns every message we got and did not ack.
        return letters
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def replay_dead(settings: Settings, job_id: str | None = None, limit: int = 10_000) -> int:
    """Republishes dead letters (all, or one job's) to the queue they died in, resetting the
    job's attempts; returns how many were replayed."""
    names = QueueNames(settings.namespace)
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    replayed = 0
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for method, letter in list(_letters(channel, names.dead, limit)):
            if job_id is not None and letter.job_id != job_id:
                continue
            if letter.queue == "?" or not _is_job_message(letter.body):
                continue
            with get_engine(settings).begin() as db:
                db.execute(
                    update(jobs)
                    .where(jobs.c.id == letter.job_id)
                    .values(attempts=0, status=JobStatus.QUEUED.value, error=None, result=None)
                )
            properties = letter.properties
            headers = dict(properties.headers or {})
            headers.pop("x-death", None)
            headers.pop("x-first-death-exchange", None)
            headers.pop("x-first-death-queue", None)
            headers.pop("x-first-death-reason", None)
            properties.headers = headers
            channel.basic_publish(names.exchange, letter.queue, letter.body, properties,
                                  mandatory=True)
            channel.basic_ack(method.delivery_tag)
            replayed += 1
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    return replayed


def _is_job_message(body: bytes) -> bool:
    try:
        decoded = json.loads(body)
    except ValueError:
        return False
    return isinstance(decoded, list) and len(decoded) == 3

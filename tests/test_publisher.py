"""The one publisher: a returned message is refused typed without confusing the next confirm,
its messages are Celery's own, and dead letters replay through it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from kombu import Connection, Queue
from sqlalchemy import update

from infermq.errors import JobFailed, QueueUnavailable
from infermq.keys import RUN_JOB_TASK
from infermq.settings import Settings
from infermq.tables import jobs
from producer.client import Client
from producer.deadletters import peek_dead, replay_dead
from producer.publisher import ConfirmedPublisher
from routing.topology import QueueSpec
from stores.jobstore import get_job
from tests.support import WorkerProcess, queue_depth

GATE_WAIT_S = 120


def test_an_unroutable_message_is_refused_and_the_next_publish_confirms_its_own(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    client = client_for(echo_settings)
    publisher = client.publisher
    nowhere = QueueSpec(f"{echo_settings.namespace}.nowhere", f"{echo_settings.namespace}.nowhere")
    # The broker returns the message, then confirms it: the publish raises on the return...
    with pytest.raises(QueueUnavailable, match="unroutable"):
        publisher.publish(nowhere, RUN_JOB_TASK, str(uuid.uuid4()), kwargs={"message": {}})
    # ...and the same connection's next publish waits for its own confirm, not that one's.
    job = client.submit("embed", f"after a return {echo_settings.namespace}")
    assert queue_depth(echo_settings, client.topology.queue_for("embed", "echo").name) == 1
    assert get_job(client.engine, job.id).status == "queued"


def test_a_message_is_the_one_celery_itself_would_send(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    client = client_for(echo_settings)
    job = client.submit("embed", "how does it look", priority=7)
    queue = client.topology.queue_for("embed", "echo", 7)
    with Connection(echo_settings.broker_url) as connection:
        message = Queue(queue.name, no_declare=True)(connection.default_channel).get(
            no_ack=True)
    assert message is not None
    assert message.headers["task"] == RUN_JOB_TASK and message.headers["id"] == job.id
    assert message.headers["origin"] == "infermq" and message.headers["ignore_result"]
    assert message.properties["delivery_mode"] == 2 and message.properties["priority"] == 7
    assert message.properties["correlation_id"] == job.id
    args, kwargs, embed = json.loads(message.body)
    assert args == [] and kwargs["message"]["job_id"] == job.id
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}


def test_a_dead_letter_replays_to_its_queue_with_its_attempts_reset(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    worker = start_worker(echo_settings, ["echo"])
    job = client.submit("embed", "fail on purpose", priority=6)
    with pytest.raises(JobFailed):
        job.result(timeout_s=GATE_WAIT_S)
    worker.stop()
    [letter] = [d for d in peek_dead(echo_settings) if d.job_id == job.id]
    assert letter.queue == client.topology.queue_for("embed", "echo", 6).name
    # As if its runs alone had killed workers: a replay gives it its runs back too.
    with client.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == job.id).values(solo_runs=3))

    assert replay_dead(echo_settings, job.id) == 1

    assert [d.job_id for d in peek_dead(echo_settings)] == []
    row = get_job(client.engine, job.id)
    assert row.status == "queued" and row.attempts == 0 and row.solo_runs == 0
    assert queue_depth(echo_settings, letter.queue) == 1


def test_the_publisher_declares_its_topology_on_first_use(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    client = client_for(echo_settings)
    publisher = ConfirmedPublisher(echo_settings, client.topology)
    try:
        publisher.publish(client.topology.webhook_queue, "infermq.deliver_webhook",
                          str(uuid.uuid4()), args=(1, 0))
    finally:
        publisher.close()
    assert queue_depth(echo_settings, client.topology.webhook_queue.name) == 1
    assert queue_depth(echo_settings, client.topology.dead_queue.name) == 0

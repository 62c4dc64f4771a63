"""The path of one job through real processes: SDK → RabbitMQ → worker → Redis + PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from infermq.errors import InvalidRequest, UnknownModel, UnknownTaskType
from infermq.settings import Settings
from producer.client import Client
from stores.jobstore import transitions_of
from tests.support import WorkerProcess, queue_depth


def test_job_comes_back_from_a_worker_process(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    start_worker(echo_settings, ["echo"])
    job = client.submit("generate", "hello there world", priority=7)
    result = job.result(timeout_s=120)
    assert result.output == "hello there world"
    assert result.model == "echo"
    assert result.cache == "miss"
    assert job.status() == "done"
    assert transitions_of(client.engine, job.id) == ["submitting", "queued", "running", "done"]


def _job_rows(client: Client) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from infermq.tables import jobs

    with client.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(select(jobs.c.id, jobs.c.status))]


@pytest.mark.parametrize(
    ("task_type", "input", "fields", "error"),
    [
        ("paint", "hello", {}, UnknownTaskType),
        ("embed", "hello", {"priority": 12}, InvalidRequest),
        ("embed", "", {}, InvalidRequest),
        ("embed", [], {}, InvalidRequest),
        ("embed", "x" * 40_000, {}, InvalidRequest),
        ("embed", 42, {}, InvalidRequest),
        ("embed", "hello", {"priority": "high"}, InvalidRequest),
        ("embed", "hello", {"model": "nope"}, UnknownModel),
        ("generate", "hello", {"params": {"max_new_tokens": "many"}}, InvalidRequest),
    ],
)
def test_bad_input_raises_typed_error_and_publishes_nothing(
    echo_settings: Settings,
    client_for: Callable[[Settings], Client],
    task_type: str,
    input: object,
    fields: dict[str, Any],
    error: type[Exception],
) -> None:
    client = client_for(echo_settings)
    rows_before = _job_rows(client)
    with pytest.raises(error):
        client.submit(task_type, input, **fields)
    queue = client.topology.queue_for("embed", "echo").name
    assert queue_depth(echo_settings, queue) == 0
    assert _job_rows(client) == rows_before


def test_a_repeat_arriving_before_the_queued_mark_is_written_publishes_nothing(
    echo_settings: Settings, client_for: Callable[[Settings], Client],
) -> None:
    # Given a first submit whose row still reads submitting (its queued mark is written behind)
    from sqlalchemy import update

    from infermq.tables import jobs

    client = client_for(echo_settings)
    first = client.submit("embed", "at once", idempotency_key="order-43")
    client.writes.flush()
    with client.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == first.id).values(status="submitting"))
    # When the same key is submitted again
    second = client.submit("embed", "at once", idempotency_key="order-43")
    # Then it is the same job, published once
    assert second.id == first.id
    assert queue_depth(echo_settings, client.topology.queue_for("embed", "echo").name) == 1


def test_same_idempotency_key_gives_one_job_and_one_message(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    first = client.submit("embed", "once only", idempotency_key="order-42")
    second = client.submit("embed", "once only", idempotency_key="order-42")
    assert first.id == second.id
    assert queue_depth(echo_settings, client.topology.queue_for("embed", "echo").name) == 1

    # Two waiters on the same job both get its result: reading consumes nothing.
    results = []
    waiters = [threading.Thread(target=lambda: results.append(first.result(120)))
               for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    start_worker(echo_settings, ["echo"])
    for waiter in waiters:
        waiter.join(timeout=150)
    assert len(results) == 2
    assert results[0].output == results[1].output and len(results[0].output) == 8
    assert transitions_of(client.engine, first.id).count("done") == 1

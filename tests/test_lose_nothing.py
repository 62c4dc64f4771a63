"""Nothing is lost: killed workers, poison jobs, malformed messages, refused publishes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pika
import pytest
from sqlalchemy import Text, cast, select

from infermq.errors import JobFailed, QueueFull, QueueUnavailable
from infermq.keys import RedisKeys
from infermq.settings import Settings
from infermq.tables import jobs
from producer.client import Client
from stores.connections import get_redis
from stores.jobstore import get_job, transitions_of
from tests.support import WorkerProcess, queue_depth, take_dead_letters
from tests.tcp_proxy import TcpProxy
from workers.isolation import levels_before_solo

GATE_WAIT_S = 120
SLOTS = 4


def wait_at_gate(settings: Settings, name: str) -> str:
    """Blocks until a job reaches the test engine's gate ``name``; returns its input."""
    client = get_redis(settings)
    popped = client.blpop([RedisKeys(settings.redis_prefix).test_gate_entered(name)],
                          timeout=GATE_WAIT_S)
    assert popped is not None, f"no job reached gate {name} within {GATE_WAIT_S} s"
    return str(popped[1])


def open_gate(settings: Settings, name: str, times: int = 1) -> None:
    client = get_redis(settings)
    client.rpush(RedisKeys(settings.redis_prefix).test_gate(name), *(["open"] * times))


def test_worker_killed_mid_job_loses_nothing(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a job held inside the engine of a worker
    client = client_for(echo_settings)
    job = client.submit("generate", "gate:held survive the crash")
    first = start_worker(echo_settings, ["echo"])
    wait_at_gate(echo_settings, "held")
    # When the worker's process group is killed -9 there, and a new worker starts
    first.kill()
    start_worker(echo_settings, ["echo"])
    wait_at_gate(echo_settings, "held")
    open_gate(echo_settings, "held")
    # Then the job completes once, with one recorded result
    result = job.result(timeout_s=GATE_WAIT_S)
    assert result.output == "gate:held survive the crash"
    assert transitions_of(client.engine, job.id).count("done") == 1
    assert get_job(client.engine, job.id).attempts == 2


def crashes_before_dead(settings: Settings, slots: int) -> int:
    """The crashes a job that kills every worker it runs in causes before it is dead: its
    clean delivery, the group levels of a worker of ``slots``, then ``max_attempts`` alone."""
    held = settings.model_copy(update={"worker_slots": slots}).task_threads
    return 1 + levels_before_solo(held) + settings.max_attempts


@pytest.mark.timeout(600)  # a worker start per crash, one after another
def test_job_that_kills_its_worker_every_time_ends_dead(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    settings = echo_settings.model_copy(update={"max_attempts": 2})
    client = client_for(settings)
    job = client.submit("embed", "crash on every delivery")
    for _ in range(crashes_before_dead(settings, SLOTS)):
        worker = start_worker(settings, ["echo"], slots=SLOTS)
        assert worker.wait_exit(timeout_s=GATE_WAIT_S) != 0
    start_worker(settings, ["echo"], slots=SLOTS)
    with pytest.raises(JobFailed) as failed:
        job.result(timeout_s=GATE_WAIT_S)
    assert failed.value.status == "dead"
    [letter] = take_dead_letters(settings, 1)
    assert letter["id"] == job.id
    # The worker that dead-lettered it keeps serving.
    assert client.submit("embed", "still alive").result(timeout_s=GATE_WAIT_S).output


def wait_counted(client: Client, job_ids: list[str], attempts: int) -> None:
    """Waits until each job's row counts ``attempts`` deliveries."""
    deadline = time.monotonic() + GATE_WAIT_S
    while any(get_job(client.engine, job_id).attempts < attempts for job_id in job_ids):
        assert time.monotonic() < deadline, f"jobs not counted {attempts} times"
        time.sleep(0.02)


@pytest.mark.timeout(600)  # a worker start per crash, one after another
def test_poison_job_held_beside_innocent_jobs_is_the_only_one_dead(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a worker holding a job that kills it each time it runs, at the test's gate, and
    # three innocent jobs counted beside it (they cannot finish: the engine is held)
    settings = echo_settings.model_copy(update={"max_attempts": 2})
    client = client_for(settings)
    poison = client.submit("embed", "gate:poison crash")
    worker = start_worker(settings, ["echo"], slots=SLOTS)
    wait_at_gate(settings, "poison")
    texts = [f"innocent {n} held beside the poison" for n in range(3)]
    innocents = [client.submit("generate", text) for text in texts]
    wait_counted(client, [job.id for job in innocents], attempts=1)
    # When it kills every worker that runs it, and a new worker starts after each crash
    for crash in range(crashes_before_dead(settings, SLOTS)):
        if crash > 0:
            worker = start_worker(settings, ["echo"], slots=SLOTS)
            wait_at_gate(settings, "poison")
        open_gate(settings, "poison")
        assert worker.wait_exit(timeout_s=GATE_WAIT_S) != 0
    start_worker(settings, ["echo"], slots=SLOTS)
    # Then the poison job alone is dead, charged with its runs alone in the engine
    with pytest.raises(JobFailed) as failed:
        poison.result(timeout_s=GATE_WAIT_S)
    assert failed.value.status == "dead"
    assert f"{settings.max_attempts} of them alone" in str(failed.value)
    [letter] = take_dead_letters(settings, 1)
    assert letter["id"] == poison.id
    # And every innocent job is done once, with its own output
    for job, text in zip(innocents, texts, strict=True):
        assert job.result(timeout_s=GATE_WAIT_S).output == text
        assert transitions_of(client.engine, job.id).count("done") == 1
    assert min(get_job(client.engine, job.id).attempts for job in innocents) >= 2


def test_malformed_messages_end_dead_and_the_worker_keeps_serving(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    queue = client.topology.queue_for("embed", "echo")
    client.submit("embed", "declare the topology first").id  # noqa: B018
    connection = pika.BlockingConnection(pika.URLParameters(echo_settings.broker_url))
    channel = connection.channel()
    exchange = client.topology.names.exchange
    # Not JSON at all, though it claims to be a Celery task
    channel.basic_publish(exchange, queue.routing_key, b"{not json",
                          pika.BasicProperties(content_type="application/json",
                                               headers={"task": "infermq.run_job", "id": "bad1"}))
    # No Celery headers at all
    channel.basic_publish(exchange, queue.routing_key, b"hello",
                          pika.BasicProperties(content_type="text/plain"))
    # A well-formed task whose job message is not a job
    body = json.dumps([[], {"message": {"job_id": 5}}, {}]).encode()
    channel.basic_publish(exchange, queue.routing_key, body,
                          pika.BasicProperties(content_type="application/json",
                                               content_encoding="utf-8",
                                               headers={"task": "infermq.run_job", "id": "bad3"}))
    connection.close()
    start_worker(echo_settings, ["echo"])
    assert client.submit("embed", "after the garbage").result(timeout_s=GATE_WAIT_S).output
    take_dead_letters(echo_settings, 3)


def _statuses(client: Client) -> list[str]:
    """Statuses of the jobs whose input carries this test's namespace (the schema is shared)."""
    tag = client.settings.namespace
    with client.engine.connect() as connection:
        return list(connection.execute(
            select(jobs.c.status).where(cast(jobs.c.input, Text).contains(tag))
        ).scalars())


def test_publish_to_a_refusing_broker_raises_and_queues_nothing(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    settings = echo_settings.model_copy(
        update={"broker_url": "amqp://guest:guest@127.0.0.1:1/%2F"})
    client = client_for(settings)
    before = _statuses(client).count("queued")
    with pytest.raises(QueueUnavailable, match="infermq services"):
        client.submit("embed", f"nobody listens {settings.namespace}")
    assert _statuses(client).count("queued") == before


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    tcp_proxy = TcpProxy("127.0.0.1", 5672)
    yield tcp_proxy
    tcp_proxy.close()


@pytest.mark.parametrize("failure", ["cut", "stall"])
def test_connection_lost_mid_publish_raises_and_queues_nothing(
    echo_settings: Settings,
    client_for: Callable[[Settings], Client],
    proxy: TcpProxy,
    failure: str,
) -> None:
    settings = echo_settings.model_copy(update={
        "broker_url": f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        "publish_confirm_timeout_s": 2.0,
    })
    client = client_for(settings)
    tag = settings.namespace
    client.submit("embed", f"through the proxy {tag}")  # the connection is up and declared
    getattr(proxy, failure)()
    with pytest.raises(QueueUnavailable):
        client.submit("embed", f"lost on the way {tag}")
    lost = _statuses(client)
    assert lost.count("queued") == 1
    assert lost.count("rejected") == 1
    assert queue_depth(echo_settings, client.topology.queue_for("embed", "echo").name) == 1


def test_full_queue_refuses_at_submit(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    settings = echo_settings.model_copy(update={"queue_max_length": 2})
    client = client_for(settings)
    tag = settings.namespace
    client.submit("embed", f"one {tag}")
    client.submit("embed", f"two {tag}")
    with pytest.raises(QueueFull, match="full"):
        client.submit("embed", f"three {tag}")
    statuses = _statuses(client)
    assert statuses.count("queued") == 2 and statuses.count("rejected") == 1

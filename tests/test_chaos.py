"""The chaos suite: each shared service fails under a stream of jobs, and nothing is lost.

Each case runs a few hundred cheap jobs (the test engine: this is plumbing) with submitters and
waiters throughout, injects one fault, and ends with every accepted job ``done`` exactly once
(counted in the job's transitions), every waiter answered and every refusal typed. It restarts
services other tests use, so it runs as its own pytest run (``make test-chaos``, at the end of
``.ci/run``), holding ``/tmp/infermq-services.lock`` exclusively per case.

Each case prints one JSON line (accepted / done / done twice / refused / waiters answered /
result keys left in Redis), appended to ``$CHAOS_REPORT`` when that is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from infermq.keys import RedisKeys
from infermq.settings import Settings
from infermq.tables import job_transitions, jobs
from producer.client import Client, JobHandle
from stores.connections import get_redis
from tests.chaos_support import (
    JobStream,
    SseReader,
    StreamOutcome,
    flush_redis,
    restart_postgresql,
    restart_redis,
    services_held,
    start_rabbitmq_app,
    stop_rabbitmq_app,
    summary,
)
from tests.conftest import base_settings
from tests.gateway_support import GatewayProcess
from tests.support import TEST_REGISTRY, WorkerProcess, delete_namespace
from tests.test_lose_nothing import open_gate, wait_at_gate

# The time limit covers the case, not the wait for the services lock (other suites hold it
# shared while they run).
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420, func_only=True)]

WAIT_S = 180
BEFORE, DURING, AFTER = 100, 80, 120
# One job held in the engine across each fault: the batcher would put two gated jobs in one
# batch, which the engine runs in turn, so the second would never reach the gate.
HELD = 1
SSE_CLIENTS = 8


@pytest.fixture
def chaos_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=TEST_REGISTRY,
                             waiter_recheck_s=1.0)
    with services_held(settings):
        yield settings
    delete_namespace(settings)
    redis = get_redis(settings)
    keys = list(redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        redis.delete(*keys)


def sdk_stream(client: Client, name: str, task_type: str = "embed") -> JobStream[JobHandle]:
    """Jobs through the SDK; each waiter uses the handle that ``submit()`` returned."""
    tag = client.settings.namespace

    def wait(handle: JobHandle) -> str:
        return handle.result(timeout_s=WAIT_S).status.value

    return JobStream(lambda n: client.submit(task_type, f"{tag} {name} job {n}"),
                     lambda handle: handle.id, wait, BEFORE, DURING, AFTER)


@contextlib.contextmanager
def held_in_engine(client: Client, stream: JobStream[JobHandle], name: str) -> Iterator[None]:
    """Jobs in the worker's engine across the fault: ``HELD`` of them wait at a gate until the
    block ends (every delivery of them: a fault may make the worker run one again)."""
    for n in range(HELD):
        stream.add(client.submit("generate", f"gate:{name} {client.settings.namespace} {n}"))
    for _ in range(HELD):
        wait_at_gate(client.settings, name)
    try:
        yield
    finally:
        open_gate(client.settings, name, times=HELD * 10)


def done_transitions(client: Client, job_ids: list[str]) -> dict[str, int]:
    with client.engine.connect() as connection:
        return dict(connection.execute(
            select(job_transitions.c.job_id, func.count())
            .where(job_transitions.c.job_id.in_(job_ids), job_transitions.c.status == "done")
            .group_by(job_transitions.c.job_id)).all())


def attempts_of(client: Client, job_ids: list[str]) -> list[int]:
    with client.engine.connect() as connection:
        return list(connection.execute(
            select(jobs.c.attempts).where(jobs.c.id.in_(job_ids))).scalars())


def result_keys(settings: Settings, job_ids: list[str]) -> int:
    keys = RedisKeys(settings.redis_prefix)
    pipe = get_redis(settings).pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(keys.job_result(job_id))
    return sum(pipe.execute())


def check_and_report(name: str, client: Client, outcome: StreamOutcome,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Asserts the case's promise, and reports its figures."""
    done = done_transitions(client, outcome.accepted)
    line = summary(name, outcome, done, result_keys(client.settings, outcome.accepted),
                   {"max_attempts_seen": max(attempts_of(client, outcome.accepted), default=0),
                    **(extra or {})})
    print(json.dumps(line))
    if os.environ.get("CHAOS_REPORT"):
        with Path(os.environ["CHAOS_REPORT"]).open("a") as report:
            report.write(json.dumps(line) + "\n")
    assert outcome.untyped == [], outcome.untyped[:5]
    not_answered = {j: a for j, a in outcome.answers.items() if a != "done"}
    assert not not_answered, list(not_answered.items())[:5]
    assert len(outcome.answers) == len(outcome.accepted)
    assert line["done"] == line["accepted"], [j for j in outcome.accepted if j not in done][:5]
    assert line["done_twice"] == 0
    return line


def test_rabbitmq_app_stopped_and_started_loses_nothing(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(chaos_settings)
    start_worker(chaos_settings, ["echo"])
    stream = sdk_stream(client, "rabbitmq")
    stream.start()
    stream.wait_accepted(BEFORE)
    # When RabbitMQ's app stops (connections dropped, publishes refused) and starts again
    with held_in_engine(client, stream, "rabbitmq"):
        stop_rabbitmq_app()
        stream.fault_begun()
        try:
            stream.wait_refused(3)
        finally:
            start_rabbitmq_app()
    outcome = stream.finish()
    # Then submits were refused typed while it was down, and the worker and publisher came back
    assert set(outcome.refused) <= {"QueueUnavailable", "QueueFull"}, outcome.refused
    check_and_report("rabbitmq stop_app/start_app", client, outcome)


def test_postgresql_restarted_records_each_job_once(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(chaos_settings)
    start_worker(chaos_settings, ["echo"])
    stream = sdk_stream(client, "postgresql")
    stream.start()
    stream.wait_accepted(BEFORE)
    with held_in_engine(client, stream, "postgresql"):
        stream.fault_begun()
        restart_postgresql(chaos_settings)
    outcome = stream.finish()
    assert set(outcome.refused) <= {"ServiceUnavailable", "QueueUnavailable"}, outcome.refused
    check_and_report("postgresql restart", client, outcome)


def test_redis_flushed_leaves_no_waiter_hanging(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(chaos_settings)
    start_worker(chaos_settings, ["echo"])
    stream = sdk_stream(client, "flush", task_type="generate")
    stream.start()
    stream.wait_accepted(BEFORE)
    with held_in_engine(client, stream, "flush"):
        stream.fault_begun()
        flush_redis(chaos_settings)
    outcome = stream.finish()
    assert outcome.refused == {}, outcome.refused
    check_and_report("redis FLUSHALL", client, outcome)


def test_redis_restarted_leaves_no_waiter_hanging(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(chaos_settings)
    start_worker(chaos_settings, ["echo"])
    stream = sdk_stream(client, "redis-restart", task_type="generate")
    stream.start()
    stream.wait_accepted(BEFORE)
    with held_in_engine(client, stream, "redis-restart"):
        stream.fault_begun()
        restart_redis(chaos_settings)
    outcome = stream.finish()
    assert set(outcome.refused) <= {"RedisUnavailable"}, outcome.refused
    check_and_report("redis restart", client, outcome)


def test_worker_killed_twice_loses_nothing(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(chaos_settings)
    worker = start_worker(chaos_settings, ["echo"])
    stream = sdk_stream(client, "kill")
    stream.start()
    stream.wait_accepted(BEFORE)
    # Held jobs are in the engine at both kills: they see two kills, one fewer than
    # INFERMQ_MAX_ATTEMPTS, and must still end done.
    with held_in_engine(client, stream, "kill"):
        stream.fault_begun()
        worker.kill()
        worker = start_worker(chaos_settings, ["echo"])
        for _ in range(HELD):
            wait_at_gate(chaos_settings, "kill")
        worker.kill()
        start_worker(chaos_settings, ["echo"])
        for _ in range(HELD):
            wait_at_gate(chaos_settings, "kill")
    outcome = stream.finish()
    assert outcome.refused == {}, outcome.refused
    line = check_and_report("worker kill -9 twice", client, outcome)
    assert line["max_attempts_seen"] == chaos_settings.max_attempts


def test_gateway_restarted_sse_clients_resume_with_last_event_id(
    chaos_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client], tmp_path: Path,
) -> None:
    # Given SSE clients of generations paused mid-way, and a stream of jobs through the SDK
    client = client_for(chaos_settings)
    start_worker(chaos_settings, ["echo"])
    gateway = GatewayProcess(chaos_settings, tmp_path / "gateway.log")
    try:
        texts = [f"alpha beta pause:gw gamma delta {n}" for n in range(SSE_CLIENTS)]
        with httpx.Client(base_url=gateway.url, timeout=WAIT_S) as api:
            job_ids = [api.post("/v1/jobs", json={"task_type": "generate", "input": text})
                       .json()["id"] for text in texts]
        readers = [SseReader(gateway.url, job_id) for job_id in job_ids]
        threads = [threading.Thread(target=r.run, args=(WAIT_S,)) for r in readers]
        for thread in threads:
            thread.start()
        stream = sdk_stream(client, "gateway")
        stream.start()
        stream.wait_accepted(BEFORE)
        wait_at_gate(chaos_settings, "gw")
        for reader in readers:
            assert reader.connected.wait(WAIT_S)
        # When the gateway is killed and another takes its socket, then the engine goes on
        stream.fault_begun()
        gateway.restart()
        open_gate(chaos_settings, "gw", times=SSE_CLIENTS * 3)
        for thread in threads:
            thread.join(timeout=WAIT_S)
        outcome = stream.finish()
        # Then every client has the whole text, each event once, in order, ending done
        assert [r.error for r in readers if r.error] == []
        assert [r.text() for r in readers] == texts
        for reader in readers:
            ids = [e["id"] for e in reader.events if "id" in e]
            assert len(ids) == len(set(ids)), reader.events
        check_and_report("gateway restart (SSE)", client, outcome, {
            "sse_clients": len(readers), "sse_reconnects": sum(r.reconnects for r in readers),
            "sse_complete": sum(r.text() == t for r, t in zip(readers, texts, strict=True))})
    finally:
        gateway.stop()

"""No waiter left hanging: when Redis forgets a job or cannot be reached, the job's PostgreSQL
row answers the SDK (sync and asyncio) and the gateway's SSE clients.

Redis "forgetting" is simulated per test by deleting only that test's job keys (a flush or a
restart does the same to every key; the chaos suite does the real FLUSHALL).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from infermq.errors import RedisUnavailable
from infermq.jobs import JobResult
from infermq.keys import RedisKeys
from infermq.settings import Settings
from infermq.tables import jobs
from producer.client import AsyncClient, Client, JobHandle
from stores.connections import get_redis
from tests.conftest import base_settings
from tests.gateway_support import GatewayProcess
from tests.support import TEST_REGISTRY, WorkerProcess, delete_namespace, queue_depth
from tests.tcp_proxy import TcpProxy
from tests.test_gateway import read_events
from tests.test_lose_nothing import open_gate, wait_at_gate

JOBS = 5
TIMEOUT_S = 60


@pytest.fixture
def waiter_settings(database_schema: str) -> Iterator[Settings]:
    """The test registry, and waiters that look at the row after 0.2 s of quiet."""
    settings = base_settings(database_schema=database_schema, registry_path=TEST_REGISTRY,
                             waiter_recheck_s=0.2)
    yield settings
    delete_namespace(settings)


def forget_jobs(settings: Settings, job_ids: list[str]) -> None:
    """What a Redis flush or restart does to these jobs: their status, result and stream go."""
    keys = RedisKeys(settings.redis_prefix)
    get_redis(settings).delete(*[key for job_id in job_ids for key in (
        keys.job_status(job_id), keys.job_result(job_id), keys.job_events(job_id))])


def test_handles_from_submit_answer_after_redis_forgets_their_jobs(
    waiter_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given five jobs submitted and finished
    client = client_for(waiter_settings)
    start_worker(waiter_settings, ["echo"])
    handles = [client.submit("generate", f"job number {n}") for n in range(JOBS)]
    first = [h.result(timeout_s=TIMEOUT_S) for h in handles]
    # When Redis forgets them
    forget_jobs(waiter_settings, [h.id for h in handles])
    # Then the handles that submit() returned still answer, from the row, as a fresh one does
    again = [h.result(timeout_s=TIMEOUT_S) for h in handles]
    assert [r.output for r in again] == [r.output for r in first]
    assert [JobHandle(client, h.id).result(timeout_s=TIMEOUT_S).output for h in handles] \
        == [r.output for r in first]
    # And their streams end, with the row's final status
    assert ["".join(h.stream(timeout_s=TIMEOUT_S)) for h in handles] == [""] * JOBS


def test_async_handles_answer_after_redis_forgets_their_jobs(
    waiter_settings: Settings, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(waiter_settings, ["echo"])

    async def scenario() -> tuple[list[JobResult], list[JobResult]]:
        client = AsyncClient(waiter_settings)
        try:
            handles = [await client.submit("embed", f"text {n}") for n in range(JOBS)]
            first = [await h.result(timeout_s=TIMEOUT_S) for h in handles]
            forget_jobs(waiter_settings, [h.id for h in handles])
            again = list(await asyncio.gather(*(h.result(timeout_s=TIMEOUT_S)
                                                 for h in handles)))
            return first, again
        finally:
            await client.close()

    first, again = asyncio.run(scenario())
    assert [r.output for r in again] == [r.output for r in first]
    assert all(r.status.value == "done" for r in again)


def test_sse_clients_get_the_end_from_the_row_when_redis_lost_the_final_event(
    waiter_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client], tmp_path: Path,
) -> None:
    # Given five jobs submitted through the gateway and finished, their events read once
    start_worker(waiter_settings, ["echo"])
    gateway = GatewayProcess(waiter_settings, tmp_path / "gateway.log")
    client = client_for(waiter_settings)
    keys = RedisKeys(waiter_settings.redis_prefix)
    try:
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as api:
            job_ids = [api.post("/v1/jobs", json={"task_type": "generate",
                                                  "input": f"one two {n}"}).json()["id"]
                       for n in range(JOBS)]
            for job_id in job_ids:
                client.job(job_id).result(timeout_s=TIMEOUT_S)
            seen = {job_id: read_events(api, job_id, None) for job_id in job_ids}
            # When Redis loses each job's last writes (result, status, the final event) ...
            redis = get_redis(waiter_settings)
            for job_id, events in seen.items():
                assert events[-1]["data"] == '{"status":"done"}'
                redis.delete(keys.job_status(job_id), keys.job_result(job_id))
                redis.xdel(keys.job_events(job_id), events[-1]["id"])
            # ... and clients resume after the last event they still have
            resumed = {job_id: read_events(api, job_id, events[-2]["id"])
                       for job_id, events in seen.items()}
            # Then each gets the final status, from the row (no id: nothing to resume from)
            assert all(events == [{"event": "status", "data": '{"status":"done"}'}]
                       for events in resumed.values()), resumed
            # And with every key gone, a resuming client gets it too
            forget_jobs(waiter_settings, job_ids)
            assert all(read_events(api, job_id, events[-2]["id"])[-1]["data"]
                       == '{"status":"done"}' for job_id, events in seen.items())
    finally:
        gateway.stop()


def test_a_waiter_outlives_its_redis_connection(
    waiter_settings: Settings, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a client whose Redis is behind a proxy, waiting on a job held in the engine
    proxy = TcpProxy("127.0.0.1", 6379)
    proxied = waiter_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}/1"})
    client = Client(proxied)
    start_worker(waiter_settings, ["echo"])
    try:
        handle = client.submit("generate", "gate:outage held then done")
        wait_at_gate(waiter_settings, "outage")
        answers: list[JobResult | Exception] = []

        def wait() -> None:
            try:
                answers.append(handle.result(timeout_s=TIMEOUT_S))
            except Exception as e:  # noqa: BLE001 - the test reports what the waiter got
                answers.append(e)

        waiter = threading.Thread(target=wait)
        waiter.start()
        # When its Redis connection drops and stays refused, and the job then finishes
        proxy.close()
        open_gate(waiter_settings, "outage")
        waiter.join(timeout=TIMEOUT_S)
        # Then the waiter has the result (from the row), not an error
        assert len(answers) == 1 and isinstance(answers[0], JobResult), answers
        assert answers[0].output == "gate:outage held then done"
        # And a submit while Redis is unreachable is refused typed, nothing written or sent
        with client.engine.connect() as connection:
            rows_before = connection.execute(select(func.count()).select_from(jobs)).scalar()
        with pytest.raises(RedisUnavailable, match="infermq services"):
            client.submit("embed", "never sent")
        with client.engine.connect() as connection:
            assert connection.execute(
                select(func.count()).select_from(jobs)).scalar() == rows_before
        assert queue_depth(waiter_settings, client.topology.queue_for(
            "embed", "echo").name) == 0
    finally:
        client.close()
        proxy.close()

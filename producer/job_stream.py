"""The gateway's asyncio view of a job's Redis state: its event stream and its result.

The SDK waits in threads (``JobHandle.result``); the gateway waits for many jobs at once on
one event loop, so it reads the same keys with ``redis.asyncio``: a blocking XREAD per waiter,
no polling, and a thread only for the rare fallback to the PostgreSQL row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from infermq.errors import JobFailed, JobTimeout
from infermq.jobs import JobResult
from infermq.keys import RedisKeys
from producer.client import FAILED_STATUSES, Client
from producer.waiting import REDIS_OUTAGES, is_final_event, job_events_async, result_from_row
from stores.jobstore import get_job
from stores.results import JobEvent

START_ID = "0-0"


class AsyncJobStream:
    """Reads job events and results for the gateway."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, client: Client) -> None:
        self.redis = redis
        self.keys = keys
        self.client = client

    async def read(self, job_id: str, after_id: str, block_ms: int) -> list[JobEvent]:
        """Events after ``after_id``, waiting up to ``block_ms`` for the first one."""
        answer: Any = await self.redis.xread(
            {self.keys.job_events(job_id): after_id}, block=block_ms, count=1000)
        return [JobEvent(str(event_id), fields["kind"], fields["data"])
                for _stream, entries in answer or [] for event_id, fields in entries]

    async def has_stream(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.job_events(job_id)))

    async def events(self, job_id: str, after_id: str,
                     timeout_s: float) -> AsyncIterator[JobEvent | None]:
        """Events after ``after_id`` until the job's final status; None marks a quiet
        interval (so that proxies keep an idle stream open). When Redis has forgotten the job
        or cannot be reached, the final status comes from the PostgreSQL row
        (``producer/waiting.py``), as an event without an id.

        Raises:
            JobTimeout: the job did not end within ``timeout_s``.
        """
        def read(after: str, block_ms: int) -> Awaitable[list[JobEvent]]:
            return self.read(job_id, after, block_ms)

        async for event in job_events_async(read, self.client.engine, job_id, after_id,
                                            timeout_s, self.client.settings.waiter_recheck_s):
            yield event

    async def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """Waits for the job to end and returns its result.

        Raises:
            JobFailed: the job ended failed, dead, cancelled or rejected.
            JobTimeout: it did not end within ``timeout_s``.
        """
        result = await self.final_result(job_id)
        if result is None:
            async for event in self.events(job_id, START_ID, timeout_s):
                if event is not None and is_final_event(event):
                    result = await self.final_result(job_id, known_final=True)
        if result is None:  # pragma: no cover - a final event always has a final row
            raise JobTimeout(f"job {job_id} ended without a result")
        if result.status in FAILED_STATUSES:
            raise JobFailed(job_id, result.status.value, result.error)
        return result

    async def final_result(self, job_id: str, known_final: bool = False) -> JobResult | None:
        """The job's result if it has ended: Redis, else (expired, flushed, unreachable) its
        PostgreSQL row. ``known_final``: its end was seen, so a stream in Redis cannot mean
        "still running"."""
        try:
            raw = await self.redis.get(self.keys.job_result(job_id))
            if raw is not None:
                return JobResult.model_validate_json(raw)
            if not known_final and await self.has_stream(job_id):
                return None
        except REDIS_OUTAGES:
            pass
        return result_from_row(await run_in_threadpool(get_job, self.client.engine, job_id))

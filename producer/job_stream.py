"""The gateway's asyncio view of a job's Redis state: its event stream and its result.

The SDK waits in threads (``JobHandle.result``); the gateway waits for many jobs at once on
one event loop, so it reads the same keys with ``redis.asyncio``: a blocking XREAD per waiter,
no polling, and a thread only for the rare fallback to the PostgreSQL row.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from infermq.errors import JobFailed, JobTimeout
from infermq.jobs import JobResult, JobStatus
from infermq.keys import RedisKeys
from producer.client import FAILED_STATUSES, Client
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

    async def events(self, job_id: str, after_id: str, timeout_s: float,
                     keepalive_s: float = 15.0) -> AsyncIterator[JobEvent | None]:
        """Events after ``after_id`` until the job's final status; None marks a quiet
        ``keepalive_s`` (so that proxies keep an idle stream open).

        Raises:
            JobTimeout: the job did not end within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise JobTimeout(f"job {job_id} did not end within {timeout_s} s")
            batch = await self.read(job_id, after_id, min(remaining_ms, int(keepalive_s * 1000)))
            if not batch:
                yield None
                continue
            for event in batch:
                after_id = event.event_id
                yield event
                if event.kind == "status" and JobStatus(event.data).is_final:
                    return

    async def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """Waits for the job to end and returns its result.

        Raises:
            JobFailed: the job ended failed, dead, cancelled or rejected.
            JobTimeout: it did not end within ``timeout_s``.
        """
        result = await self.final_result(job_id)
        if result is None:
            async for event in self.events(job_id, START_ID, timeout_s):
                if event is not None and event.kind == "status" \
                        and JobStatus(event.data).is_final:
                    result = await self.final_result(job_id)
        if result is None:  # pragma: no cover - the stream ended without a final result
            raise JobTimeout(f"job {job_id} ended without a result")
        if result.status in FAILED_STATUSES:
            raise JobFailed(job_id, result.status.value, result.error)
        return result

    async def final_result(self, job_id: str) -> JobResult | None:
        """The job's result if it has ended: Redis, else (expired) its PostgreSQL row."""
        raw = await self.redis.get(self.keys.job_result(job_id))
        if raw is not None:
            return JobResult.model_validate_json(raw)
        if await self.has_stream(job_id):
            return None
        row = await run_in_threadpool(get_job, self.client.engine, job_id)
        if not row.status.is_final:
            return None
        if row.result is not None:
            return JobResult.model_validate(row.result)
        return JobResult(job_id=job_id, status=row.status, error=row.error)

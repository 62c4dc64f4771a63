"""Waiting for a job's end when Redis may forget or fail: one loop for the SDK and the gateway.

A waiter reads the job's Redis stream with a blocking XREAD (no polling). Redis is a cache
here: a flush or a restart (it keeps nothing on disk) drops the stream and its final event, and
a connection error cuts the read. So the read blocks at most ``waiter_recheck_s`` at a time;
when it comes back empty, or Redis fails, the waiter looks at the job's PostgreSQL row (the
durable record) and ends with the row's final status if it has one, else reads Redis again
(after a backoff when Redis failed) until the caller's deadline. A job that ends within one
recheck interval costs no PostgreSQL read; a longer one costs one primary-key read per interval.

The sync SDK (and the asyncio SDK, which runs it in a thread) use ``job_events``; the gateway's
event loop uses ``job_events_async``. Both share ``WaitClock`` and ``result_from_row``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from redis.backoff import ExponentialBackoff
from sqlalchemy import Engine

from infermq.errors import JobTimeout, ServiceUnavailable
from infermq.jobs import JobResult, JobStatus
from stores.connections import REDIS_OUTAGES
from stores.jobstore import JobRow, get_job
from stores.results import JobEvent

# The id of a final status event told by the PostgreSQL row, not read from the stream: it has
# no place in the stream, so an SSE client gets it without an ``id:`` to resume from.
ROW_EVENT_ID = ""


@dataclass
class WaitClock:
    """One waiter's deadline, how long each blocking read may last, and its Redis backoff."""

    job_id: str
    timeout_s: float
    recheck_s: float
    started: float = field(default_factory=time.monotonic)
    redis_failures: int = 0
    backoff: ExponentialBackoff = field(
        default_factory=lambda: ExponentialBackoff(cap=1.0, base=0.05))

    def next_block_ms(self) -> int:
        """How long the next XREAD may block: up to the recheck interval, never past the
        deadline.

        Raises:
            JobTimeout: the deadline has passed.
        """
        remaining_s = self.started + self.timeout_s - time.monotonic()
        if remaining_s <= 0:
            raise JobTimeout(
                f"job {self.job_id} did not end within {self.timeout_s} s; wait longer or "
                f"check the workers (`infermq status {self.job_id}`)")
        return max(1, int(min(remaining_s, self.recheck_s) * 1000))

    def redis_answered(self) -> None:
        self.redis_failures = 0

    def redis_failed_backoff_s(self) -> float:
        """The pause before the next Redis attempt after one more failure in a row, never past
        the deadline."""
        self.redis_failures += 1
        remaining_s = self.started + self.timeout_s - time.monotonic()
        return max(0.0, min(float(self.backoff.compute(self.redis_failures)), remaining_s))


def result_from_row(row: JobRow) -> JobResult | None:
    """The job's result as its PostgreSQL row records it; None while it has not ended."""
    if not row.status.is_final:
        return None
    if row.result is not None:
        return JobResult.model_validate(row.result)
    return JobResult(job_id=row.id, status=row.status, error=row.error)


def final_status_from_row(engine: Engine, job_id: str) -> JobStatus | None:
    """The row's status if it is final; None while the job runs or when PostgreSQL cannot be
    reached (the waiter goes on waiting: PostgreSQL may be restarting too).

    Raises:
        JobNotFound: no job has this id.
    """
    try:
        row = get_job(engine, job_id)
    except ServiceUnavailable:
        return None
    return row.status if row.status.is_final else None


def _final_event(status: JobStatus) -> JobEvent:
    return JobEvent(ROW_EVENT_ID, "status", status.value)


def is_final_event(event: JobEvent) -> bool:
    return event.kind == "status" and JobStatus(event.data).is_final


def job_events(
    read: Callable[[str, int], list[JobEvent]], engine: Engine, job_id: str, after_id: str,
    timeout_s: float, recheck_s: float,
) -> Iterator[JobEvent | None]:
    """The job's events after ``after_id`` until its final status (from the stream, or from the
    row when Redis has forgotten it or cannot be reached); None for each quiet recheck interval.

    ``read(after_id, block_ms)`` is one blocking XREAD of the job's stream.

    Raises:
        JobTimeout: the job did not end within ``timeout_s``.
        JobNotFound: no job has this id.
    """
    clock = WaitClock(job_id, timeout_s, recheck_s)
    while True:
        block_ms = clock.next_block_ms()
        try:
            batch = read(after_id, block_ms)
        except REDIS_OUTAGES:
            final = final_status_from_row(engine, job_id)
            if final is not None:
                yield _final_event(final)
                return
            time.sleep(clock.redis_failed_backoff_s())
            continue
        clock.redis_answered()
        for event in batch:
            after_id = event.event_id
            yield event
            if is_final_event(event):
                return
        if not batch:
            final = final_status_from_row(engine, job_id)
            if final is not None:
                yield _final_event(final)
                return
            yield None


async def job_events_async(
    read: Callable[[str, int], Awaitable[list[JobEvent]]], engine: Engine, job_id: str,
    after_id: str, timeout_s: float, recheck_s: float,
) -> AsyncIterator[JobEvent | None]:
    """``job_events`` on an event loop: ``read`` is awaited, the row is read in a thread.

    Raises:
        JobTimeout: the job did not end within ``timeout_s``.
        JobNotFound: no job has this id.
    """
    clock = WaitClock(job_id, timeout_s, recheck_s)
    while True:
        block_ms = clock.next_block_ms()
        try:
            batch = await read(after_id, block_ms)
        except REDIS_OUTAGES:
            final = await asyncio.to_thread(final_status_from_row, engine, job_id)
            if final is not None:
                yield _final_event(final)
                return
            await asyncio.sleep(clock.redis_failed_backoff_s())
            continue
        clock.redis_answered()
        for event in batch:
            after_id = event.event_id
            yield event
            if is_final_event(event):
                return
        if not batch:
            final = await asyncio.to_thread(final_status_from_row, engine, job_id)
            if final is not None:
                yield _final_event(final)
                return
            yield None

"""Runs one job idempotently, with its PostgreSQL row as the commit point.

The steps of one delivery: count the attempt (dead-letter past the limit) → skip a job that is
already final, finishing what happened after its commit → honour a cancel mark → engine (through
the batcher, tokens streamed to Redis) → one transaction marking the row done → result to Redis
→ return, after which Celery acks the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from infermq.errors import EngineError, InfermqError
from infermq.jobs import JobMessage, JobResult, JobStatus
from infermq.jobstore import JobRow, begin_attempt, set_status
from infermq.results import JobStateStore
from infermq.settings import Settings
from workers.engines.base import EngineOutput, EngineRequest

log = logging.getLogger(__name__)

RUNNABLE = (JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING)


class DeadLetter(InfermqError):
    """Raised when a delivery must go to the dead-letter queue (the task rejects it)."""


class JobRunner:
    """Executes job messages; shared by every task thread of a worker."""

    def __init__(
        self,
        settings: Settings,
        database: Engine,
        state: JobStateStore,
        submit_to_engine: Callable[[str, EngineRequest], Future[EngineOutput]],
    ) -> None:
        self.settings = settings
        self.database = database
        self.state = state
        self.submit_to_engine = submit_to_engine

    def run(self, payload: dict[str, Any]) -> JobResult | None:
        """Runs one delivery of a job message.

        Raises:
            DeadLetter: the message is malformed, the job failed for good, or it used up its
                attempts; the caller rejects the message without requeue.
            sqlalchemy/redis errors: transient; the caller retries with backoff.
        """
        try:
            message = JobMessage.model_validate(payload)
        except ValidationError as e:
            raise DeadLetter(f"malformed job message: {e}") from e
        with self.database.begin() as connection:
            row = begin_attempt(connection, message.job_id)
        if row is None:
            raise DeadLetter(f"job {message.job_id} has no row: it was not submitted by infermq")
        if row.status not in RUNNABLE:
            return self._finish_already_final(row)
        if row.attempts > self.settings.max_attempts:
            error = f"gave up after {row.attempts - 1} deliveries that did not finish"
            self._end(message, JobStatus.DEAD, error=error)
            raise DeadLetter(f"job {message.job_id}: {error}")
        if self.state.is_cancel_requested(message.job_id):
            self._end(message, JobStatus.CANCELLED, error="cancelled before it started")
            return None
        self.state.mark_status(message.job_id, JobStatus.RUNNING)
        started = time.monotonic()
        try:
            output = self._run_engine(message)
        except EngineError as e:
            self._end(message, JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
            raise DeadLetter(f"job {message.job_id} failed: {e}") from e
        result = JobResult(
            job_id=message.job_id,
            status=JobStatus.DONE,
            model=message.model,
            output=output.output,
            tokens=output.tokens,
            latency_ms=(time.monotonic() - started) * 1000,
        )
        return self._commit(result)

    def _run_engine(self, message: JobMessage) -> EngineOutput:
        request = EngineRequest(
            job_id=message.job_id,
            task_type=message.task_type,
            input=message.input,
            params=message.params,
            priority=message.priority,
            timeout_s=message.timeout_s,
            on_token=lambda text: self.state.append_token(message.job_id, text),
        )
        future = self.submit_to_engine(message.model, request)
        # The batcher enforces timeout_s; the margin only guards against a lost future.
        return future.result(timeout=message.timeout_s + 30)

    def _commit(self, result: JobResult) -> JobResult:
        with self.database.begin() as connection:
            set_status(
                connection,
                result.job_id,
                JobStatus.DONE,
                only_from=RUNNABLE,
                result=result.model_dump(mode="json"),
                cache=result.cache,
            )
        self.state.write_result(result)
        return result

    def _end(self, message: JobMessage, status: JobStatus, error: str) -> None:
        result = JobResult(job_id=message.job_id, status=status, model=message.model,
                           error=error)
        with self.database.begin() as connection:
            set_status(connection, message.job_id, status, only_from=RUNNABLE, error=error,
                       result=result.model_dump(mode="json"))
        self.state.write_result(result)

    def _finish_already_final(self, row: JobRow) -> JobResult | None:
        """A redelivered job whose row is final: only the steps after the commit remain."""
        log.info("job %s is already %s; finishing its post-commit steps", row.id, row.status)
        if row.result is None:
            return None
        result = JobResult.model_validate(row.result)
        if self.state.read_result(row.id) is None:
            self.state.write_result(result)
        return result

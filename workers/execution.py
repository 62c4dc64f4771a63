"""Runs one job idempotently, with its PostgreSQL row as the commit point.

The steps of one delivery: make sure the model is READY here (else give the message back,
uncounted) → count the attempt (dead-letter past the limit) → skip a job that is
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

from infermq.errors import EngineError, InfermqError, SessionError
from infermq.jobs import JobMessage, JobResult, JobStatus
from infermq.jobstore import JobRow, set_status
from infermq.outbox import record_webhook, untried_webhooks
from infermq.results import JobStateStore
from infermq.sessions import SessionContext
from infermq.settings import Settings
from workers.cache_audit import CacheAudit
from workers.cache_steps import CacheSteps
from workers.engines.base import EngineOutput, EngineRequest
from workers.job_commits import JobCommits
from workers.session_steps import SessionSteps, Turn

log = logging.getLogger(__name__)

RUNNABLE = (JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING)


class DeadLetter(InfermqError):
    """Raised when a delivery must go to the dead-letter queue (the task rejects it)."""


class ModelNotReady(InfermqError):
    """Raised when a delivery's model is not READY in this worker (the task requeues it)."""


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
        self.sessions = SessionSteps(settings, database)
        self.cache = CacheSteps(settings)
        self.audit = CacheAudit(settings, self.cache.switches, self.cache.exact,
                                submit_to_engine)
        self.commits = JobCommits(database)
        # Set by the worker entry point when it registers webhook delivery (workers/webhooks.py).
        self.send_webhook: Callable[[int], None] | None = None
        # Set by the worker entry point: live metrics (workers/metrics.py) see each job start
        # and end on its model; a routed job that its model fails may go to the router's next
        # fallback instead of failing (workers/router.py; True: it was republished).
        self.on_job_started: Callable[[JobMessage], None] | None = None
        self.on_job_ended: Callable[[JobMessage, JobResult | None], None] | None = None
        # (model, seconds to activate and restore; None: it failed)
        self.on_session_restored: Callable[[str, float | None], None] | None = None
        self.reroute: Callable[[JobMessage, EngineError], bool] | None = None
        # Set by the worker runtime (workers/runtime.py): ``hold_model`` admits a job only while
        # its model is READY here and counts it in flight until ``release_model``, so that a
        # model being evicted is never pulled from under a job.
        self.hold_model: Callable[[str], bool] | None = None
        self.release_model: Callable[[str], None] | None = None

    def run(self, payload: dict[str, Any]) -> JobResult | None:
        """Runs one delivery of a job message.

        Raises:
            DeadLetter: the message is malformed, the job failed for good, or it used up its
                attempts; the caller rejects the message without requeue.
            ModelNotReady: the model is not READY in this worker (loading, being evicted, or
                not loaded); nothing was counted or written, the caller requeues the message.
            sqlalchemy/redis errors: transient; the caller retries with backoff.
        """
        try:
            message = JobMessage.model_validate(payload)
        except ValidationError as e:
            raise DeadLetter(f"malformed job message: {e}") from e
        in_session = message.session_id is not None and message.session_seq is not None
        if in_session:
            # Before counting the attempt: a job that waits for an earlier turn is requeued
            # (TurnNotReady) without using up its attempts; ALREADY_DONE falls through to the
            # final-row path below.
            self.sessions.wait_for_turn(message)
        if self.hold_model is None:
            return self._run_held(message, in_session)
        # Before counting the attempt, as for a session turn: a message that reached this
        # worker after its model stopped being served (from the prefetch buffer of a cancelled
        # consumer) is not the job's fault and must not use up its attempts.
        if not self.hold_model(message.model):
            raise ModelNotReady(f"job {message.job_id}: model {message.model} is not READY in "
                                "this worker; requeued for a worker that serves it")
        try:
            return self._run_held(message, in_session)
        finally:
            if self.release_model is not None:
                self.release_model(message.model)

    def _run_held(self, message: JobMessage, in_session: bool) -> JobResult | None:
        row = self.commits.begin_attempt(message.job_id)
        if row is None:
            raise DeadLetter(f"job {message.job_id} has no row: it was not submitted by infermq")
        if row.status not in RUNNABLE:
            return self._finish_already_final(row)
        if row.attempts > self.settings.max_attempts:
            error = f"gave up after {row.attempts - 1} deliveries that did not finish"
            self._end(message, JobStatus.DEAD, error=error)
            raise DeadLetter(f"job {message.job_id}: {error}")
        # The cancel check and the running mark in one Redis round trip.
        if not self.state.mark_running_unless_cancelled(message.job_id):
            self._end(message, JobStatus.CANCELLED, error="cancelled before it started")
            return None
        turn: Turn | None = None
        if in_session:
            restore_started = time.monotonic()
            try:
                turn = self.sessions.begin(message)
            except SessionError as e:
                if self.on_session_restored is not None:
                    self.on_session_restored(message.model, None)
                self._end(message, JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
                raise DeadLetter(f"job {message.job_id} failed: {e}") from e
            if self.on_session_restored is not None:
                self.on_session_restored(message.model, time.monotonic() - restore_started)
        if self.on_job_started is not None:
            self.on_job_started(message)
        started = time.monotonic()
        cached = self.cache.lookup(message)
        if cached is not None:
            committed = self._commit(message, cached.result_for(message, started), turn)
            if cached.tier == "semantic":
                self.audit.after_semantic_hit(message, cached.entry)
            return committed
        try:
            output = self._run_engine(message, turn)
        except EngineError as e:
            if self.on_job_ended is not None:
                self.on_job_ended(message, None)
            if turn is None and self.reroute is not None and self.reroute(message, e):
                return None
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
        return self._commit(message, result, turn)

    def _run_engine(self, message: JobMessage, turn: Turn | None) -> EngineOutput:
        request = EngineRequest(
            job_id=message.job_id,
            task_type=message.task_type,
            input=message.input if turn is None else self.sessions.engine_input(message, turn),
            params=message.params,
            priority=message.priority,
            timeout_s=message.timeout_s,
            on_token=lambda text: self.state.append_token(message.job_id, text),
        )
        future = self.submit_to_engine(message.model, request)
        # The batcher enforces timeout_s; the margin only guards against a lost future.
        return future.result(timeout=message.timeout_s + 30)

    def _commit(self, message: JobMessage, result: JobResult, turn: Turn | None) -> JobResult:
        context: SessionContext | None = None
        if turn is None:
            committed = self.commits.commit_done(result, has_webhook=bool(message.webhook_url))
            changed, outbox_id = committed.changed, committed.outbox_id
        else:
            context = self.sessions.next_context(message, turn, result.output)
            with self.database.begin() as connection:
                changed = set_status(
                    connection,
                    result.job_id,
                    JobStatus.DONE,
                    only_from=RUNNABLE,
                    result=result.model_dump(mode="json"),
                    cache=result.cache,
                )
                if changed:
                    self.sessions.record_turn(connection, message, turn, context)
                outbox_id = (record_webhook(connection, result)
                             if changed and message.webhook_url else None)
        self.state.write_result(result)
        if self.on_job_ended is not None:
            self.on_job_ended(message, result)
        if changed and result.cache == "miss":
            self.cache.store(message, result.output)
        if turn is not None:
            self.sessions.after_commit(turn.session_id, context)
        self._send_webhooks([outbox_id] if outbox_id is not None else [])
        return result

    def _end(self, message: JobMessage, status: JobStatus, error: str) -> None:
        result = JobResult(job_id=message.job_id, status=status, model=message.model,
                           error=error)
        with self.database.begin() as connection:
            changed = set_status(connection, message.job_id, status, only_from=RUNNABLE,
                                 error=error, result=result.model_dump(mode="json"))
            if changed:
                self.sessions.skip_turn(connection, message)
            outbox_id = (record_webhook(connection, result)
                         if changed and message.webhook_url else None)
        self.state.write_result(result)
        if message.session_id is not None:
            self.sessions.after_commit(message.session_id, None)
        self._send_webhooks([outbox_id] if outbox_id is not None else [])

    def _send_webhooks(self, outbox_ids: list[int]) -> None:
        """Sends the first delivery attempt of committed outbox rows (after the commit, so a
        delivery never sees a row that may roll back)."""
        if self.send_webhook is not None:
            for outbox_id in outbox_ids:
                self.send_webhook(outbox_id)

    def _finish_already_final(self, row: JobRow) -> JobResult | None:
        """A redelivered job whose row is final: only the steps after the commit remain."""
        log.info("job %s is already %s; finishing its post-commit steps", row.id, row.status)
        if row.result is None:
            return None
        result = JobResult.model_validate(row.result)
        if self.state.read_result(row.id) is None:
            self.state.write_result(result)
        self._send_webhooks(untried_webhooks(self.database, row.id))
        return result

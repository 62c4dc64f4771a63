"""Runs one job idempotently, with its PostgreSQL row as the commit point.

The steps of one delivery: make sure the model is READY here (else give the message back,
uncounted) → count the delivery → skip a job that is already final, finishing what happened
after its commit → dead-letter a job whose runs alone in the engine killed the worker
``max_attempts`` times → honour a cancel mark → the isolation gate (after a crash, suspects
enter the engine in halving groups: workers/isolation.py) → engine (through the batcher,
tokens streamed to Redis) → one transaction marking the row done → result to Redis → return,
after which Celery acks the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from infermq.errors import (
    DeadLetter,
    EngineError,
    FinishedMeanwhile,
    ModelNotReady,
    SessionError,
)
from infermq.jobs import JobMessage, JobResult, JobStatus
from infermq.sessions import SessionContext
from infermq.settings import Settings
from stores.connections import REDIS_OUTAGES
from stores.jobstore import JobRow, get_job
from stores.outbox import untried_webhooks
from stores.results import JobStateStore
from workers.cache_audit import CacheAudit
from workers.cache_steps import CacheSteps
from workers.engines.base import EngineOutput, EngineRequest
from workers.isolation import IsolationGate, unfinished_deliveries_allowed
from workers.job_commits import JobCommits, TurnWriter
from workers.runner_hooks import ModelGate, RunnerHooks
from workers.session_steps import SessionSteps, Turn
from workers.transient import Delivery

log = logging.getLogger(__name__)

RUNNABLE = (JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING)


class JobRunner:
    """Executes job messages; shared by every task thread of a worker."""

    def __init__(
        self,
        settings: Settings,
        database: Engine,
        state: JobStateStore,
        submit_to_engine: Callable[[str, EngineRequest], Future[EngineOutput]],
        models: ModelGate,
        hooks: Sequence[RunnerHooks] = (),
    ) -> None:
        """``models`` admits a job only while its model is READY here and counts it in flight
        until released, so that a model being evicted is never pulled from under a job;
        ``hooks`` hear each job start and end (metrics), may reroute a failed routed job (the
        router's fallbacks) and send committed webhooks, in their order."""
        self.settings = settings
        self.database = database
        self.state = state
        self.submit_to_engine = submit_to_engine
        self.models = models
        self.hooks = tuple(hooks)
        # After a crash, the jobs it redelivers enter the engine in shrinking groups, so that
        # the one at fault ends up alone (workers/isolation.py).
        self.isolation = IsolationGate(settings.task_threads)
        self.sessions = SessionSteps(settings, database)
        self.cache = CacheSteps(settings)
        self.audit = CacheAudit(settings, self.cache.switches, self.cache.exact,
                                self._submit_clean)
        self.commits = JobCommits(database)

    def run(self, payload: dict[str, Any], delivery: Delivery | None = None
            ) -> JobResult | None:
        """Runs one delivery of a job message; ``delivery`` carries, across in-place runs of
        the same delivery after a transient error, whether its attempt is counted already.

        Raises:
            DeadLetter: the message is malformed, the job failed for good, or its runs alone
                killed the worker ``max_attempts`` times; the caller rejects the message
                without requeue.
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
        delivery = delivery or Delivery()
        # Before counting the attempt, as for a session turn: a message that reached this
        # worker after its model stopped being served (from the prefetch buffer of a cancelled
        # consumer) is not the job's fault and must not use up its attempts.
        if not self.models.hold_model(message.model):
            raise ModelNotReady(f"job {message.job_id}: model {message.model} is not READY in "
                                "this worker; requeued for a worker that serves it")
        try:
            return self._run_held(message, in_session, delivery)
        finally:
            self.models.release_model(message.model)

    def _run_held(self, message: JobMessage, in_session: bool,
                  delivery: Delivery) -> JobResult | None:
        if delivery.attempt_counted:
            row: JobRow | None = get_job(self.database, message.job_id)
        else:
            row = self.commits.begin_attempt(message.job_id)
            delivery.attempt_counted = True
        if row is None:
            raise DeadLetter(f"job {message.job_id} has no row: it was not submitted by infermq")
        if row.status not in RUNNABLE:
            return self._finish_already_final(row)
        unfinished = row.attempts - 1
        # An in-place run again after a blip sees its own solo run counted already.
        earlier_solo_runs = row.solo_runs - int(delivery.solo_run_counted)
        if earlier_solo_runs >= self.settings.max_attempts or unfinished >= (
                unfinished_deliveries_allowed(self.settings.max_attempts,
                                              self.isolation.slots)):
            error = (f"gave up after {unfinished} deliveries that did not finish, "
                     f"{earlier_solo_runs} of them alone in the engine")
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
                for hook in self.hooks:
                    hook.session_restored(message.model, None)
                self._end(message, JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
                raise DeadLetter(f"job {message.job_id} failed: {e}") from e
            for hook in self.hooks:
                hook.session_restored(message.model, time.monotonic() - restore_started)
        for hook in self.hooks:
            hook.job_started(message)
        started = time.monotonic()
        cached = self.cache.lookup(message)
        if cached is not None:
            committed = self._commit(message, cached.result_for(message, started), turn)
            if cached.tier == "semantic":
                self.audit.after_semantic_hit(message, cached.entry)
            return committed
        try:
            output = self._run_engine(message, turn, unfinished, earlier_solo_runs, delivery)
        except FinishedMeanwhile:
            final = get_job(self.database, message.job_id)
            return None if final is None else self._finish_already_final(final)
        except EngineError as e:
            for hook in self.hooks:
                hook.job_ended(message, None)
            if turn is None and any(hook.reroute(message, e) for hook in self.hooks):
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

    def _run_engine(self, message: JobMessage, turn: Turn | None, level: int,
                    earlier_solo_runs: int, delivery: Delivery) -> EngineOutput:
        """Runs the job in the engine once the isolation gate admits it at ``level`` (its
        earlier deliveries that did not finish); a run alone is counted before it starts."""
        request = EngineRequest(
            job_id=message.job_id,
            task_type=message.task_type,
            input=message.input if turn is None else self.sessions.engine_input(message, turn),
            params=message.params,
            priority=message.priority,
            timeout_s=message.timeout_s,
            on_token=lambda text: self._stream_token(message.job_id, text),
        )
        def submit() -> Future[EngineOutput]:
            if level >= 1:
                # A suspect may have waited long at the gate: another copy of the job (a
                # redelivery after a lost connection) may have finished it meanwhile.
                now = get_job(self.database, message.job_id)
                if now is None or now.status not in RUNNABLE:
                    raise FinishedMeanwhile(message.job_id)
            if self.isolation.runs_alone(level) and not delivery.solo_run_counted:
                self.commits.count_solo_run(message.job_id)
                delivery.solo_run_counted = True
            return self.submit_to_engine(message.model, request)

        future = self.isolation.submit_admitted(level, earlier_solo_runs, submit)
        # The batcher enforces timeout_s; the margin only guards against a lost future.
        return future.result(timeout=message.timeout_s + 30)

    def _submit_clean(self, model: str, request: EngineRequest) -> Future[EngineOutput]:
        """``submit_to_engine`` through the isolation gate as a clean job (the cache audit's
        runs: they must not share the engine with a suspect running alone)."""
        return self.isolation.submit_admitted(
            0, 0, partial(self.submit_to_engine, model, request))

    def _stream_token(self, job_id: str, text: str) -> None:
        """Best effort: a token that Redis did not take is not worth the job (its result is
        committed all the same, and waiters read the row when the stream stays quiet)."""
        try:
            self.state.append_token(job_id, text)
        except REDIS_OUTAGES as e:
            log.warning("job %s: a token was not streamed (%s)", job_id, e)

    def _commit(self, message: JobMessage, result: JobResult, turn: Turn | None) -> JobResult:
        context: SessionContext | None = None
        write_turn: TurnWriter | None = None
        if turn is not None:
            context = self.sessions.next_context(message, turn, result.output)
            write_turn = partial(self.sessions.record_turn, message=message, turn=turn,
                                 context=context)
        # One commit path: a session job's turn joins the group commit (workers/job_commits.py).
        committed = self.commits.commit_done(result, has_webhook=bool(message.webhook_url),
                                             write_turn=write_turn)
        changed, outbox_id = committed.changed, committed.outbox_id
        self.state.write_result(result)
        for hook in self.hooks:
            hook.job_ended(message, result)
        if changed and result.cache == "miss":
            self.cache.store(message, result.output)
        if turn is not None:
            self.sessions.after_commit(turn.session_id, context)
        self._send_webhooks([outbox_id] if outbox_id is not None else [])
        return result

    def _end(self, message: JobMessage, status: JobStatus, error: str) -> None:
        result = JobResult(job_id=message.job_id, status=status, model=message.model,
                           error=error)
        committed = self.commits.commit_final(
            result, has_webhook=bool(message.webhook_url),
            write_turn=partial(self.sessions.skip_turn, message=message))
        outbox_id = committed.outbox_id
        self.state.write_result(result)
        if message.session_id is not None:
            self.sessions.after_commit(message.session_id, None)
        self._send_webhooks([outbox_id] if outbox_id is not None else [])

    def _send_webhooks(self, outbox_ids: list[int]) -> None:
        """Sends the first delivery attempt of committed outbox rows (after the commit, so a
        delivery never sees a row that may roll back)."""
        for outbox_id in outbox_ids:
            for hook in self.hooks:
                hook.webhook_committed(outbox_id)

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

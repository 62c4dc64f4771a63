"""The router task: places a job of task type ``auto`` on a model, and falls back when one fails.

A worker that has a real embedding model consumes ``<ns>.route``. For each message it embeds
the request with that model (through its batcher, like the semantic cache), sorts it into a
request class (``routing.request_classes``), asks the pure choice for a model on the live
metrics of every worker (``stores.live_metrics``), records the decision on the job row,
republishes the job with the same id and priority to ``<ns>.<task>.<model>`` and waits for the
broker's confirm; only then is the route message acked. A routed job carries its fallbacks, so
any worker whose model fails it (a remote endpoint down or timing out) republishes it to the
next one instead of failing it (``Fallbacks.reroute``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from pydantic import ValidationError
from sqlalchemy import Engine

from infermq.errors import (
    DeadLetter,
    EngineError,
    JobNotFound,
    JobTimedOut,
    NoEligibleModel,
    QueueError,
    QueueFull,
    QueueUnavailable,
)
from infermq.jobs import JobMessage, JobResult, JobStatus, RouteRecord, TaskType
from infermq.keys import ROUTE_JOB_TASK, RedisKeys
from infermq.registry import Registry
from infermq.settings import Settings
from producer.publisher import ConfirmedPublisher
from routing.metrics import ModelMetrics
from routing.qos import ErrorCooldowns, QosPolicy
from routing.request_classes import (
    Embed,
    RequestClass,
    RequestClassifier,
    RouteDecision,
    choose_model_for_class,
    load_request_classes,
    load_training_requests,
    request_text,
)
from stores.connections import get_redis
from stores.jobstore import forget_deliveries, get_job, record_route, set_status
from stores.live_metrics import read_model_metrics
from stores.results import JobStateStore
from workers.execution import RUNNABLE
from workers.runner_hooks import RunnerHooks
from workers.tasks import MAX_TRANSIENT_RETRIES
from workers.transient import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

METRICS_REFRESH_S = 1.0
"""How long the router reuses one reading of the live metrics: workers publish every few
seconds, so reading Redis for every routed job would only repeat the same figures."""


class Fallbacks(RunnerHooks):
    """Moves a routed job that its model failed to the next of its fallbacks."""

    def __init__(self, database: Engine, state: JobStateStore,
                 publisher: ConfirmedPublisher) -> None:
        self.database = database
        self.state = state
        self.publisher = publisher

    def reroute(self, message: JobMessage, error: EngineError) -> bool:
        """Republishes ``message`` to its next untried fallback; False when there is none.

        Not after ``JobTimedOut``: the job's own deadline has passed, no model can still
        answer in time. The row records the model and the reason before the publish, so the
        job is never running on a model its row does not name.
        """
        route = message.route
        if route is None or isinstance(error, JobTimedOut):
            return False
        tried = (*route.tried, message.model)
        remaining = [m for m in route.fallbacks if m not in tried]
        for index, model in enumerate(remaining):
            reason = f"{route.reason}; {message.model} failed ({type(error).__name__}: " \
                     f"{error}), fell back to {model}"
            moved = message.model_copy(update={"model": model, "route": route.model_copy(
                update={"reason": reason, "tried": tried,
                        "fallbacks": tuple(remaining[index + 1:])})})
            with self.database.begin() as connection:
                if not set_status(connection, message.job_id, JobStatus.QUEUED,
                                  only_from=RUNNABLE, error=None):
                    return True  # finished or cancelled meanwhile: nothing left to run
                record_route(connection, message.job_id, model, reason)
                forget_deliveries(connection, message.job_id)
            self.state.mark_status(message.job_id, JobStatus.QUEUED)
            try:
                self.publisher.publish_job(moved)
            except QueueFull:
                tried = (*tried, model)
                continue
            except QueueError as e:
                log.warning("job %s: fallback to %s not published: %s", message.job_id, model, e)
                return False
            log.info("job %s: %s failed, fell back to %s", message.job_id, message.model, model)
            return True
        return False


class JobRouter:
    """Classifies ``auto`` jobs with the worker's embedder and publishes them to a model."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        database: Engine,
        state: JobStateStore,
        publisher: ConfirmedPublisher,
        embed: Embed,
        classes: Mapping[str, RequestClass] | None = None,
        policy: QosPolicy | None = None,
        feature_cache: Path | None = None,
        on_routed: Callable[[str | None, str | None, float], None] | None = None,
    ) -> None:
        """``on_routed(request_class, model, seconds)`` sees every placement (None, None: no
        model could take the job); the worker's metrics count them."""
        self.settings = settings
        self.on_routed = on_routed
        self.registry = registry
        self.database = database
        self.state = state
        self.publisher = publisher
        self.classes = dict(classes if classes is not None else load_request_classes())
        self.policy = policy or QosPolicy(stale_after_s=settings.metrics_ttl_s)
        self.cooldowns = ErrorCooldowns.for_policy(self.policy)
        self.redis = get_redis(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        # Embeds every labelled request once and learns from them, here, at worker start (the
        # shipped labelled requests belong to the shipped classes only).
        training = load_training_requests() if classes is None else ()
        self.classifier = RequestClassifier(self.classes, embed, training,
                                            feature_cache=feature_cache)
        self._lock = threading.Lock()
        self._metrics: dict[str, ModelMetrics] = {}
        self._metrics_read_at_s = float("-inf")

    def live_metrics(self, now_s: float) -> dict[str, ModelMetrics]:
        """Every model's aggregated live metrics, read at most once per ``METRICS_REFRESH_S``."""
        with self._lock:
            if now_s - self._metrics_read_at_s >= METRICS_REFRESH_S:
                self._metrics = read_model_metrics(self.redis, self.keys, self.registry.models,
                                                   now_s, self.policy.stale_after_s)
                self._metrics_read_at_s = now_s
            return self._metrics

    def decide(self, message: JobMessage, now_s: float,
               exclude: Collection[str] = ()) -> RouteDecision:
        """Where ``message`` should run, unless on a model of ``exclude`` (pure apart from
        reading the live metrics).

        Raises:
            NoEligibleModel: no model can take the request's class.
        """
        [classified] = self.classifier.classify([request_text(message.input)])
        metrics = self.live_metrics(now_s)
        with self._lock:  # ErrorCooldowns is shared by every task thread
            decision = choose_model_for_class(
                classified.request_class, self.registry, self.classes, job_id=message.job_id,
                metrics=metrics, now_s=now_s, policy=self.policy, cooldowns=self.cooldowns,
                exclude=exclude)
        reason = (f"classified {classified.request_class} (score {classified.score:.2f}, "
                  f"margin {classified.margin:.2f}); {decision.reason}")
        if exclude:
            reason += f"; full: {', '.join(exclude)}"
        return RouteDecision(decision.request_class, decision.task_type, decision.model,
                             decision.arm, reason, decision.fallbacks)

    def route(self, payload: dict[str, Any]) -> RouteDecision | None:
        """Routes one delivery of an ``auto`` job; returns the decision (None: nothing to do).

        A redelivered job (the worker died after the publish, before the ack) is routed again
        to the same place (classification and canary split are deterministic); the model's
        worker runs a job once, whatever the number of copies (the row is the commit point).

        Raises:
            DeadLetter: the message is malformed or not an ``auto`` job, the job has no row,
                or no model can take it (the job is marked failed).
            QueueUnavailable: the broker did not take the routed job; retry later.
        """
        try:
            message = JobMessage.model_validate(payload)
        except ValidationError as e:
            raise DeadLetter(f"malformed job message on the route queue: {e}") from e
        if message.task_type != TaskType.AUTO:
            raise DeadLetter(f"job {message.job_id} on the route queue is {message.task_type}, "
                             "not auto")
        try:
            row = get_job(self.database, message.job_id)
        except JobNotFound as e:
            raise DeadLetter(f"job {message.job_id} has no row: not submitted by infermq") from e
        if row.status not in RUNNABLE:
            return None
        full: list[str] = []
        started_s = time.monotonic()
        while True:
            try:
                decision = self.decide(message, time.time(), exclude=full)
            except NoEligibleModel as e:
                if self.on_routed is not None:
                    self.on_routed(None, None, time.monotonic() - started_s)
                self._fail(message, f"no model can take it: {e}")
                raise DeadLetter(f"job {message.job_id}: {e}") from e
            routed = message.model_copy(update={
                "task_type": decision.task_type, "model": decision.model,
                "route": RouteRecord(request_class=decision.request_class, arm=decision.arm,
                                     reason=decision.reason, fallbacks=decision.fallbacks)})
            with self.database.begin() as connection:
                record_route(connection, message.job_id, decision.model, decision.reason)
            try:
                self.publisher.publish_job(routed)
            except QueueFull:
                full.append(decision.model)
                continue
            log.info("job %s routed to %s: %s", message.job_id, decision.model, decision.reason)
            if self.on_routed is not None:
                self.on_routed(decision.request_class, decision.model,
                               time.monotonic() - started_s)
            return decision

    def _fail(self, message: JobMessage, error: str) -> None:
        result = JobResult(job_id=message.job_id, status=JobStatus.FAILED, error=error)
        with self.database.begin() as connection:
            set_status(connection, message.job_id, JobStatus.FAILED, only_from=RUNNABLE,
                       error=error, result=result.model_dump(mode="json"))
        self.state.write_result(result)


class RouterSlot:
    """Holds the worker's router once its embedder is loaded (once the runtime has started)."""

    router: JobRouter | None = None


def register_route_task(app: Celery, slot: RouterSlot) -> None:
    """Registers ``infermq.route_job`` on ``app``; it routes with ``slot.router``."""

    @app.task(name=ROUTE_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
    def route_job(self: Task, message: dict[str, Any]) -> None:
        if slot.router is None:
            # This worker has no embedder: it should not consume the route queue at all.
            raise Reject("this worker cannot route (no embedding model)", requeue=True)
        try:
            slot.router.route(message)
        except DeadLetter as e:
            raise Reject(str(e), requeue=False) from e
        except (*TRANSIENT_ERRORS, QueueUnavailable) as e:
            countdown_s = min(30, 2 ** self.request.retries)
            raise self.retry(
                exc=e, countdown=countdown_s, max_retries=MAX_TRANSIENT_RETRIES
            ) from e

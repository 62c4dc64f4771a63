"""The client SDK: submit a job, get a handle at once, wait for its result without polling.

``Client.submit`` validates (a typed error and nothing written for bad input), answers an
exact repeat from the cache, writes the job row as ``submitting`` (grouped with concurrent
submits), publishes with a broker confirm, then marks the job ``queued``: at once in Redis,
written behind in PostgreSQL (the worker treats ``submitting`` and ``queued`` alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from infermq.errors import (
    InvalidRequest,
    JobFailed,
    JobTimeout,
    QueueError,
    UnknownTaskType,
)
from infermq.jobs import (
    AUTO_MODEL,
    JobMessage,
    JobRequest,
    JobResult,
    JobStatus,
    TaskType,
    utcnow,
)
from infermq.keys import QueueNames, RedisKeys
from infermq.registry import load_registry
from infermq.settings import Settings, get_settings
from infermq.webhook_policy import check_webhook_url
from producer.publisher import ConfirmedPublisher
from producer.submit_writes import SubmitWrites
from producer.waiting import REDIS_OUTAGES, is_final_event, job_events, result_from_row
from routing.topology import build_topology
from stores.connections import get_binary_redis, get_redis, redis_unavailable
from stores.database import get_engine
from stores.exact_cache import CacheEntry, ExactCache
from stores.jobstore import (
    JobRow,
    database_unavailable,
    get_job,
    insert_submitting,
    set_status,
)
from stores.results import JobEvent, JobStateStore
from stores.session_store import SessionStore
from stores.session_turns import TurnGate

FAILED_STATUSES = (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.REJECTED)


class Client:
    """Submits jobs and reads their results; safe to share between threads."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.registry = load_registry(self.settings.registry_path)
        self.topology = build_topology(
            self.registry, QueueNames(self.settings.namespace), self.settings.queue_max_length
        )
        self.keys = RedisKeys(self.settings.redis_prefix)
        self.engine = get_engine(self.settings)
        self.state = JobStateStore(get_redis(self.settings), self.keys, self.settings.result_ttl_s)
        self.publisher = ConfirmedPublisher(self.settings, self.topology)
        self.writes = SubmitWrites(self.engine)
        self.sessions = SessionStore.from_settings(
            self.settings, self.engine, get_binary_redis(self.settings)
        )
        self.turns = TurnGate(self.sessions)
        self.cache = ExactCache(get_binary_redis(self.settings), self.keys, self.registry)

    def validate(self, task_type: str, input: Any, **fields: Any) -> tuple[JobRequest, str]:
        """The validated request and the model that will run it.

        Raises:
            InvalidRequest: (or a subclass) the request is malformed, too large, or names a
                task type or model the registry does not serve.
        """
        if task_type not in {t.value for t in TaskType}:
            known = ", ".join(sorted(t.value for t in self.registry.task_types))
            raise UnknownTaskType(f"unknown task type {task_type!r}; known: {known}")
        try:
            request = JobRequest.model_validate(
                {"task_type": task_type, "input": input, **fields}
            )
        except ValidationError as e:
            raise InvalidRequest(f"invalid job request: {_describe(e)}") from e
        if request.input_chars() > self.settings.max_input_chars:
            raise InvalidRequest(
                f"input has {request.input_chars()} characters; the limit is "
                f"{self.settings.max_input_chars} (INFERMQ_MAX_INPUT_CHARS): split it"
            )
        if request.input_count() > self.settings.max_inputs_per_job:
            raise InvalidRequest(
                f"input has {request.input_count()} items; the limit is "
                f"{self.settings.max_inputs_per_job} per job: split it over several jobs"
            )
        if request.webhook_url is not None:
            check_webhook_url(str(request.webhook_url), self.settings.webhook_allow_private)
        if request.task_type == TaskType.AUTO:
            if request.model is not None:
                raise InvalidRequest(
                    f"task type auto lets the router choose the model; name none, or give "
                    f"the task type that {request.model} serves")
            return request, AUTO_MODEL
        spec = self.registry.choose_model(request.task_type, request.model)
        return request, spec.name

    def submit(
        self, task_type: str, input: Any, *, tenant: str | None = None, **fields: Any
    ) -> JobHandle:
        """Submits one job and returns its handle once the broker has confirmed it.

        Fields: ``model``, ``params`` (dict or GenerationParams), ``priority`` (0-9),
        ``session_id``, ``webhook_url``, ``idempotency_key``, ``timeout_s``. The same
        idempotency key returns the same job and publishes once. ``tenant`` (set by the
        gateway from the API key) owns the job: only that tenant reads it over HTTP.

        Raises:
            InvalidRequest: bad input; nothing was published or written.
            QueueFull, QueueUnavailable: the broker did not take the job; its row says
                ``rejected``.
            ServiceUnavailable: PostgreSQL or Redis (``RedisUnavailable``) cannot be reached;
                the row, if one was written, says ``rejected`` and nothing was published.
        """
        request, model = self.validate(task_type, input, **fields)
        message = JobMessage(
            job_id=str(uuid.uuid4()),
            task_type=request.task_type,
            model=model,
            input=request.input,
            params=request.params,
            priority=request.priority,
            session_id=request.session_id,
            webhook_url=str(request.webhook_url) if request.webhook_url else None,
            timeout_s=request.timeout_s or self.settings.default_timeout_s,
            submitted_at=utcnow(),
        )
        # An auto job's cache key needs its model: the worker's cache steps look it up once
        # the router has chosen one.
        entry = None if model == AUTO_MODEL else self.cache.lookup(
            request, self.registry.models[model])
        if entry is not None:
            return self._answer_from_cache(message, entry, request.idempotency_key, tenant)
        return self.publish(message, request.idempotency_key, tenant)

    def _answer_from_cache(
        self, message: JobMessage, entry: CacheEntry, idempotency_key: str | None,
        tenant: str | None,
    ) -> JobHandle:
        """Records a job answered by the exact cache tier at submit: done, nothing published."""
        result = JobResult(job_id=message.job_id, status=JobStatus.DONE, model=entry.model,
                           output=entry.output, cache="exact",
                           cache_source_job=entry.source_job_id, cache_similarity=1.0,
                           latency_ms=0.0)
        try:
            with self.engine.begin() as connection:
                existing = insert_submitting(connection, message, idempotency_key, tenant)
                if existing is not None:
                    return JobHandle(self, existing.id)
                set_status(connection, message.job_id, JobStatus.DONE,
                           result=result.model_dump(mode="json"), cache="exact")
        except OperationalError as e:
            raise database_unavailable(self.engine, e) from e
        # The row is the record: a waiter finds the result there if Redis missed it.
        with contextlib.suppress(*REDIS_OUTAGES):
            self.state.write_result(result)
        return JobHandle(self, message.job_id)

    def publish(
        self, message: JobMessage, idempotency_key: str | None = None, tenant: str | None = None
    ) -> JobHandle:
        """Records and publishes an already validated job message (see ``submit``)."""
        existing: JobRow | None = None
        try:
            if idempotency_key is None and message.session_id is None:
                # A new job without a turn to take: its insert shares a transaction with
                # the other submitting threads' (group commit).
                self.writes.insert_submitting(message, tenant)
            else:
                with self.engine.begin() as connection:
                    if message.session_id is not None and message.session_seq is None:
                        # The turn is taken in the job row's transaction: the session's jobs
                        # run in this order whatever their priorities.
                        seq = self.turns.assign_sequence(connection, message.session_id)
                        message = message.model_copy(update={"session_seq": seq})
                    existing = insert_submitting(connection, message, idempotency_key, tenant)
        except OperationalError as e:
            raise database_unavailable(self.engine, e) from e
        if existing is not None and self._already_published(existing):
            return JobHandle(self, existing.id)
        job_id = existing.id if existing is not None else message.job_id
        message = message.model_copy(update={"job_id": job_id})
        # The hot status goes first: the worker cannot see the job before the publish, so its
        # own status events always come after this one.
        try:
            queued_event_id = self.state.mark_status(job_id, JobStatus.QUEUED)
        except REDIS_OUTAGES as e:
            error = redis_unavailable(self.settings, e)
            self._reject(job_id, error)
            raise error from e
        try:
            self.publisher.publish_job(message)
        except QueueError as e:
            self._reject(job_id, e)
            with contextlib.suppress(*REDIS_OUTAGES):
                self.state.mark_status(job_id, JobStatus.REJECTED)
            raise
        # Written behind (producer/submit_writes.py): the row is the record already, and the
        # worker runs a submitting job like a queued one.
        self.writes.mark_queued_behind(job_id)
        return JobHandle(self, job_id, after_event_id=queued_event_id)

    def _reject(self, job_id: str, error: Exception) -> None:
        """Records that this submit did not publish its job: the row ends ``rejected``."""
        self.writes.flush()  # the record of earlier jobs reads queued before this one
        try:
            with self.engine.begin() as connection:
                set_status(connection, job_id, JobStatus.REJECTED, error=str(error))
        except OperationalError as e:
            raise database_unavailable(self.engine, e) from e

    def _already_published(self, existing: JobRow) -> bool:
        """Whether the first submit of an idempotency key published its job (or is publishing).

        The row's ``queued`` mark is written behind, so a repeat arriving at once finds the row
        still ``submitting``; the hot status in Redis, marked before the publish, tells it that
        the first submit got that far. Only a row with neither (a submit that died before its
        publish, or Redis forgot) is published again; the worker's commit point keeps a
        duplicate message from running the job twice.
        """
        if existing.status == JobStatus.REJECTED:
            return False
        if existing.status != JobStatus.SUBMITTING:
            return True
        try:
            hot = self.state.read_status(existing.id)
        except REDIS_OUTAGES as e:
            raise redis_unavailable(self.settings, e) from e
        return hot not in (None, JobStatus.REJECTED)

    def session(self, session_id: str | None = None, tenant: str | None = None) -> Session:
        """Opens a session (or returns the existing one with this id): its jobs share a
        context and run in submission order. Usable as a context manager that closes it."""
        return Session(self, self.sessions.create(session_id, tenant).id)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job."""
        return JobHandle(self, job_id)

    def close(self) -> None:
        self.writes.close()
        self.publisher.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """A conversation or multi-step job: each job sees the turns of the jobs before it."""

    def __init__(self, client: Client, session_id: str) -> None:
        self.client = client
        self.id = session_id

    def submit(self, task_type: str, input: Any, **fields: Any) -> JobHandle:
        """``Client.submit`` within this session (same arguments).

        Raises:
            SessionTerminated: the session was closed or expired; open a new one.
        """
        return self.client.submit(task_type, input, session_id=self.id, **fields)

    def state(self) -> str:
        """"INIT" | "ACTIVE" | "SLEEP" | "TERMINATED"."""
        return self.client.sessions.get(self.id).state.value

    def close(self) -> None:
        """Terminates the session; later jobs in it are refused."""
        self.client.sessions.close(self.id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JobHandle:
    """A submitted job: its id, its status, its result, its token stream."""

    def __init__(self, client: Client, job_id: str, after_event_id: str | None = None) -> None:
        """``after_event_id``: the job's ``queued`` event when this submit just wrote it;
        waiters read the job's stream after it and skip the first read of the result (before
        it the job was not published yet, so nothing final can precede it)."""
        self.client = client
        self.id = job_id
        self._after_event_id = after_event_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def status(self) -> str:
        """The job's status: Redis first, then the PostgreSQL row (the durable record)."""
        try:
            hot = self.client.state.read_status(self.id)
        except REDIS_OUTAGES:
            hot = None
        if hot is not None:
            return hot.value
        return get_job(self.client.engine, self.id).status.value

    def result(self, timeout_s: float = 60.0) -> JobResult:
        """Waits for the job to end and returns its result; does not consume it. When Redis
        has forgotten the job or cannot be reached, the PostgreSQL row answers
        (``producer/waiting.py``).

        Raises:
            JobFailed: the job ended failed, dead, cancelled or rejected.
            JobTimeout: the job did not end within ``timeout_s``.
        """
        result = None if self._after_event_id is not None else self._final_result()
        if result is None:
            for event in self._events(timeout_s):
                if event is not None and is_final_event(event):
                    result = self._final_result(known_final=True)
        if result is None:  # pragma: no cover - a final event always has a final row
            raise JobTimeout(f"job {self.id} ended without a result; read it with `infermq "
                             f"status {self.id}`")
        return result

    def _events(self, timeout_s: float) -> Iterator[JobEvent | None]:
        def read(after_id: str, block_ms: int) -> list[JobEvent]:
            return list(self.client.state.events(self.id, after_id, block_ms=block_ms))

        return job_events(read, self.client.engine, self.id, self._after_event_id or "0-0",
                          timeout_s, self.client.settings.waiter_recheck_s)

    def _final_result(self, known_final: bool = False) -> JobResult | None:
        """The job's result if it has ended (else None); raises ``JobFailed`` if it failed.
        ``known_final``: its end was seen, so a missing hot status cannot mean "on its way"."""
        try:
            result, hot = self.client.state.read_result_and_status(self.id)
        except REDIS_OUTAGES:
            result, hot = None, None
        if result is None:
            if hot is not None and not hot.is_final and not known_final:
                # On its way: every change reaches Redis (and wakes the waiter) after the
                # row, so the row has nothing newer to say; no PostgreSQL read per wait.
                return None
            result = result_from_row(get_job(self.client.engine, self.id))
            if result is None:
                return None
        if result.status in FAILED_STATUSES:
            raise JobFailed(self.id, result.status.value, result.error)
        return result

    def stream(self, timeout_s: float = 60.0) -> Iterator[str]:
        """Yields generated text pieces as the worker produces them, until the job ends (told
        by the PostgreSQL row when Redis has forgotten it or cannot be reached).

        Raises:
            JobTimeout: the job did not end within ``timeout_s``.
        """
        for event in self._events(timeout_s):
            if event is not None and event.kind == "token":
                yield event.data

    def cancel(self) -> None:
        """Asks the worker not to run the job if it has not started; a durable mark."""
        self.client.state.request_cancel(self.id)


class AsyncClient:
    """The asyncio twin of ``Client``: the same calls, awaited."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._client = Client(settings)

    async def submit(self, task_type: str, input: Any, **fields: Any) -> AsyncJobHandle:
        handle = await asyncio.to_thread(self._client.submit, task_type, input, **fields)
        return AsyncJobHandle(handle)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


class AsyncJobHandle:
    def __init__(self, handle: JobHandle) -> None:
        self._handle = handle
        self.id = handle.id

    async def status(self) -> str:
        return await asyncio.to_thread(self._handle.status)

    async def result(self, timeout_s: float = 60.0) -> JobResult:
        return await asyncio.to_thread(self._handle.result, timeout_s)

    async def stream(self, timeout_s: float = 60.0) -> AsyncIterator[str]:
        iterator = self._handle.stream(timeout_s)
        while True:
            piece = await asyncio.to_thread(next, iterator, None)
            if piece is None:
                return
            yield piece


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'request'}: {item['msg']}"
        for item in error.errors()
    )

"""The HTTP gateway: the SDK's twin over HTTP (FastAPI), sharing its validation and publishing.

``create_app(settings)`` builds the app; ``infermq gateway`` serves it with uvicorn. Routes:
``/v1/jobs`` (submit, read, stream events over SSE, cancel), the OpenAI-compatible routes of
``producer/openai_api.py``, ``/healthz``, ``/readyz``, ``/metrics`` and the OpenAPI docs at
``/docs``. Blocking work (PostgreSQL, the confirmed publish) runs in the thread pool; waiting
on a job is a blocking XREAD on the event loop, so waiters cost no thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from kombu import Connection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infermq.errors import InfermqError, JobTimeout
from infermq.jobs import JobRequest, JobResult, JobStatus
from infermq.keys import RedisKeys
from infermq.settings import Settings
from producer.auth import Authenticator
from producer.client import Client
from producer.gateway_context import (
    CallerDep,
    Gateway,
    GatewayDep,
    InputChat,
    InputText,
    InputTexts,
)
from producer.http_errors import (
    error_body,
    error_response,
    http_error_handler,
    infermq_error_handler,
    validation_error_handler,
)
from producer.job_stream import START_ID, AsyncJobStream
from producer.waiting import REDIS_OUTAGES
from stores.connections import redis_unavailable
from stores.jobstore import JobRow
from stores.outbox import webhook_state

THREADPOOL_SIZE = 200
"""Threads for blocking calls (publishes, PostgreSQL); waiting on jobs takes none."""

class JobSubmission(JobRequest):
    """``POST /v1/jobs``: a job request as the SDK takes it; ``priority`` defaults to the API
    key's tier."""

    input: InputText | InputTexts | InputChat
    priority: int | None = Field(default=None, ge=0, le=9)  # type: ignore[assignment]


class JobAccepted(BaseModel):
    id: str
    status: str
    events_url: str
    url: str


class JobView(BaseModel):
    id: str
    status: JobStatus
    task_type: str
    model: str | None
    created_at: str
    result: JobResult | None = None
    error: str | None = None
    webhook: dict[str, Any] | None = None


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("infermq_gateway_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "infermq_gateway_request_seconds", "time to answer (to the first byte of a stream)",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60))
        self.in_progress = Gauge("infermq_gateway_requests_in_progress", "Requests being "
                                 "answered, open SSE streams and waits included",
                                 registry=self.registry)


class MetricsMiddleware:
    """Counts requests by route template (not raw path: job ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.latency.labels(route).observe(time.perf_counter() - started)
                metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            await send(message)

        metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            metrics.in_progress.dec()


def sse_event(event_id: str | None, kind: str, data: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def create_app(settings: Settings, auth_required: bool = False) -> FastAPI:
    """The gateway app for ``settings``; with ``auth_required`` every /v1 route wants an API
    key (``Authorization: Bearer <key>``)."""
    from producer.openai_api import router as openai_router

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADPOOL_SIZE
        client = Client(settings)
        # No read timeout: a waiter blocks in XREAD for as long as it waits (see get_redis).
        redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True,
                                        socket_timeout=None, socket_connect_timeout=5,
                                        socket_keepalive=True, health_check_interval=30)
        keys = RedisKeys(settings.redis_prefix)
        app.state.gateway = Gateway(
            settings, client, AsyncJobStream(redis, keys, client),
            Authenticator(client.engine, redis, keys, auth_required), redis)
        try:
            yield
        finally:
            await redis.aclose()
            await run_in_threadpool(client.close)

    app = FastAPI(title="infermq gateway", version="1", lifespan=lifespan,
                  description="Prioritized, batched, cached model inference over RabbitMQ.")
    app.add_exception_handler(InfermqError, infermq_error_handler)

    async def redis_outage_handler(_request: Request, error: Exception) -> JSONResponse:
        return error_response(redis_unavailable(settings, error))

    for outage in REDIS_OUTAGES:  # a 503 that says what failed, not a bare 500
        app.add_exception_handler(outage, redis_outage_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(openai_router)

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted, tags=["jobs"])
    async def submit_job(body: JobSubmission, gateway: GatewayDep, caller: CallerDep,
                         response: Response) -> JobAccepted:
        """Submits a job; answers at once with its id (202). Nothing is published for bad
        input (400)."""
        fields = body.model_dump(exclude={"task_type", "input"}, mode="json", exclude_unset=True)
        handle = await gateway.submit(caller, body.task_type.value, body.model_dump(
            mode="json")["input"], **fields)
        response.headers["Location"] = f"/v1/jobs/{handle.id}"
        return JobAccepted(id=handle.id, status=JobStatus.QUEUED.value, url=f"/v1/jobs/{handle.id}",
                           events_url=f"/v1/jobs/{handle.id}/events")

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"])
    async def read_job(job_id: str, gateway: GatewayDep, caller: CallerDep) -> JobView:
        """The job's status, its result once it has one, and its webhook's delivery state."""
        row = await gateway.job_row(caller, job_id)
        hot = await gateway.stream.redis.get(gateway.stream.keys.job_status(job_id))
        status = JobStatus(str(hot)) if hot is not None else row.status
        result = await gateway.stream.final_result(job_id) if status.is_final else None
        webhook = await run_in_threadpool(webhook_state, gateway.client.engine, job_id)
        return JobView(id=row.id, status=status, task_type=row.task_type, model=row.model,
                       created_at=row.created_at.isoformat(), result=result,
                       error=result.error if result else row.error, webhook=webhook)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(
        job_id: str, gateway: GatewayDep, caller: CallerDep,
        last_event_id: Annotated[str | None, Header(pattern=r"^\d+-\d+$")] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``status`` changes and generated ``token``s, in order, until the
        job ends. Reconnect with ``Last-Event-ID`` to resume after the last event received."""
        row = await gateway.job_row(caller, job_id)
        after_id = last_event_id or START_ID
        if row.status.is_final and not await _has_stream_if_reachable(gateway, job_id):
            events = _final_only(row)
        else:
            events = _sse_from_stream(gateway, job_id, after_id)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"])
    async def cancel_job(job_id: str, gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
        """Asks the worker not to run the job if it has not started (a durable mark)."""
        row = await gateway.job_row(caller, job_id)
        if row.status.is_final:
            return {"id": job_id, "status": row.status.value, "cancel_requested": False}
        await run_in_threadpool(gateway.client.job(job_id).cancel)
        return {"id": job_id, "status": row.status.value, "cancel_requested": True}

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (it does not look at the services: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(gateway: GatewayDep) -> JSONResponse:
        """RabbitMQ, Redis and PostgreSQL are reachable: 200, else 503 naming what is not."""
        checks = {"broker": await run_in_threadpool(_broker_ready, settings),
                  "redis": await _redis_ready(gateway.redis),
                  "postgresql": await run_in_threadpool(_database_ready, gateway.client)}
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"ready": ready, **checks}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _sse_from_stream(gateway: Gateway, job_id: str, after_id: str) -> AsyncIterator[str]:
    try:
        async for event in gateway.stream.events(job_id, after_id, gateway.settings.gateway_wait_s):
            if event is None:
                yield ": keep-alive\n\n"
            elif event.kind == "token":
                yield sse_event(event.event_id, "token", {"text": event.data})
            else:
                yield sse_event(event.event_id, event.kind, {"status": event.data})
    except JobTimeout as e:
        yield sse_event(None, "error", error_body(str(e), 504, "job_timeout"))


async def _has_stream_if_reachable(gateway: Gateway, job_id: str) -> bool:
    """Whether Redis still holds the job's stream; False when Redis cannot be reached (the
    row, already final, tells the end)."""
    try:
        return await gateway.stream.has_stream(job_id)
    except REDIS_OUTAGES:
        return False


async def _final_only(row: JobRow) -> AsyncIterator[str]:
    """A job whose stream expired: only its final status is left to tell."""
    yield sse_event(None, "status", {"status": row.status.value})


def _broker_ready(settings: Settings) -> str:
    try:
        with Connection(settings.broker_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=0)  # one attempt, no back-off
    except Exception as e:  # noqa: BLE001 - any failure means "not ready", reported as text
        return f"unreachable: {e!r}"
    return "ok"


async def _redis_ready(redis: aioredis.Redis) -> str:
    try:
        await redis.ping()
    except Exception as e:  # noqa: BLE001
        return f"unreachable: {e!r}"
    return "ok"


def _database_ready(client: Client) -> str:
    try:
        with client.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001
        return f"unreachable: {e!r}"
    return "ok"


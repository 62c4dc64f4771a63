"""What the gateway's routes share (``producer/gateway.py`` and ``producer/openai_api.py``): the
``Gateway`` object on the app's state, the caller dependency, the schema's caps on texts.

Both route modules import this one, so neither imports the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from infermq.jobs import ChatMessage
from infermq.settings import Settings
from producer.auth import Authenticator, Caller
from producer.client import Client, JobHandle
from producer.job_stream import AsyncJobStream
from stores.jobstore import JobRow, get_job

MAX_TEXT_CHARS: int = Settings.model_fields["max_input_chars"].default
MAX_TEXTS: int = Settings.model_fields["max_inputs_per_job"].default
"""The schema's caps on one text and on a list of them: the SDK's default limits, written into
the OpenAPI document so that clients (and fuzzers) see them; a job's total size is still checked
against the configured ``max_input_chars`` at submit."""

BoundedText = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
InputText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
"""A text to run a model on: blank ones are refused too (``JobRequest``), the schema says what
it can (not empty)."""
InputTexts = Annotated[list[InputText], Field(min_length=1, max_length=MAX_TEXTS)]
InputChat = Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_TEXTS)]


@dataclass
class Gateway:
    """What the routes share: the SDK client, the async job reader, the authenticator."""

    settings: Settings
    client: Client
    stream: AsyncJobStream
    auth: Authenticator
    redis: aioredis.Redis

    async def submit(self, caller: Caller, task_type: str, input: Any,
                     **fields: Any) -> JobHandle:
        """Submits a job for ``caller``: its priority checked against the key's ceiling, its
        idempotency key kept apart from other tenants'.

        Raises:
            InvalidRequest, PriorityNotAllowed, QueueError, ServiceUnavailable: as the SDK.
        """
        fields["priority"] = caller.priority_for(fields.get("priority"))
        key = fields.get("idempotency_key")
        if key is not None and caller.tenant is not None:
            fields["idempotency_key"] = \
                f"t:{caller.tenant}:{hashlib.sha256(str(key).encode()).hexdigest()}"
        fields = {name: value for name, value in fields.items() if value is not None}
        return await run_in_threadpool(
            lambda: self.client.submit(task_type, input, tenant=caller.tenant, **fields))

    async def job_row(self, caller: Caller, job_id: str) -> JobRow:
        """The job's row if ``caller`` may see it.

        Raises:
            JobNotFound: no such job, or another tenant's (the same answer, so ids leak nothing).
        """
        return await run_in_threadpool(get_job, self.client.engine, job_id, caller.tenant)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def current_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    return await gateway_of(request).auth.authenticate(authorization)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
CallerDep = Annotated[Caller, Depends(current_caller)]

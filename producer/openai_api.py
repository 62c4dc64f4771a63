"""OpenAI-compatible routes: chat and text completions (streamed or not), embeddings, models.

Each request becomes one job like any other (same validation, routing, priority queue,
cache), waited for on the job's Redis stream and answered in OpenAI's shapes, so the official
``openai`` package works unchanged. Model ``auto`` lets the router choose (task type ``auto``).
Fields that OpenAI defines and infermq does not use (``stop``, penalties, ``logprobs``...) are
accepted and ignored, as other OpenAI-compatible servers do, so existing clients keep working.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from infermq.errors import InvalidRequest, JobFailed, JobTimeout
from infermq.jobs import JobResult, JobStatus, TaskType
from producer.auth import Caller
from producer.gateway_context import BoundedText, CallerDep, Gateway, GatewayDep, InputText
from producer.http_errors import error_response

router = APIRouter(prefix="/v1", tags=["openai"])

AUTO_MODEL = "auto"
MAX_PROMPTS = 256
MAX_EMBEDDING_INPUTS = 2048
MAX_MESSAGES = 256
MAX_CONTENT_PARTS = 256

PriorityHeader = Annotated[int | None, Header(alias="X-Infermq-Priority", ge=0, le=9)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: BoundedText


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    # Each branch capped on its own: a length on the union would cap a string at the parts'
    # count (and the reverse), as pydantic applies it to whichever branch matched.
    content: BoundedText | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)]

    def as_chat_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(
            part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class SamplingFields(BaseModel):
    """What chat and text completions share; ``max_tokens`` maps to ``max_new_tokens``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int | None = Field(default=None, ge=1, le=1, description="one choice per request")
    stream: bool = False
    user: str | None = Field(default=None, max_length=256)

    def params(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        values = {"max_new_tokens": max_new_tokens or self.max_tokens,
                  "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {name: value for name, value in values.items() if value is not None}


class ChatCompletionRequest(SamplingFields):
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)


class CompletionRequest(SamplingFields):
    prompt: InputText | Annotated[list[InputText], Field(min_length=1, max_length=MAX_PROMPTS)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=64)
    input: InputText | Annotated[list[InputText],
                                 Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)


def task_and_model(task_type: str, model: str) -> tuple[str, str | None]:
    """``auto`` means: let the router choose (task type ``auto``); else the named model."""
    return (TaskType.AUTO.value, None) if model == AUTO_MODEL else (task_type, model)


def approximate_tokens(text: str) -> int:
    """Whitespace words: the engines do not report prompt tokens, and ``usage`` must be set."""
    return len(text.split())


def unstreamed(output: str, streamed: str) -> str:
    """The part of ``output`` that the token stream has not carried."""
    return output[len(streamed):] if output.startswith(streamed) else output


def finish_reason(result: JobResult | None, tokens: int, max_new_tokens: int) -> str:
    count = result.tokens if result is not None and result.tokens is not None else tokens
    return "length" if count >= max_new_tokens else "stop"


async def submit(gateway: Gateway, caller: Caller, task_type: str, model: str, input: Any,
                 priority: int | None, params: dict[str, Any] | None = None) -> str:
    task, chosen = task_and_model(task_type, model)
    handle = await gateway.submit(caller, task, input, model=chosen, priority=priority,
                                  params=params)
    return handle.id


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, gateway: GatewayDep, caller: CallerDep,
                           priority: PriorityHeader = None) -> Any:
    """A chat completion; with ``stream: true`` its tokens as OpenAI's SSE chunks."""
    messages = [m.as_chat_message() for m in body.messages]
    params = body.params(body.max_completion_tokens)
    job_id = await submit(gateway, caller, "generate", body.model, messages, priority, params)
    max_new = params.get("max_new_tokens", 64)
    prompt_tokens = sum(approximate_tokens(m["content"]) for m in messages)
    if body.stream:
        return _stream(gateway, job_id, body.model, max_new, "chat.completion.chunk")
    result = await gateway.stream.wait_result(job_id, gateway.settings.gateway_wait_s)
    content = str(result.output)
    completion_tokens = result.tokens or approximate_tokens(content)
    return {
        "id": f"chatcmpl-{job_id}", "object": "chat.completion", "created": int(time.time()),
        # OpenAI's schema: ``refusal`` is required (null: the model refused nothing) and
        # ``system_fingerprint``, when present, is a string; infermq has none, so it is left out.
        "model": result.model or body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                             "refusal": None},
                     "logprobs": None,
                     "finish_reason": finish_reason(result, completion_tokens, max_new)}],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


@router.post("/completions")
async def completions(body: CompletionRequest, gateway: GatewayDep, caller: CallerDep,
                      priority: PriorityHeader = None) -> Any:
    """A text completion of one prompt, or of each prompt of a list (one choice each)."""
    params = body.params()
    max_new = params.get("max_new_tokens", 64)
    if body.stream and isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise InvalidRequest("stream one prompt at a time: give `prompt` as a single string")
    prompt = body.prompt[0] if isinstance(body.prompt, list) and len(body.prompt) == 1 \
        else body.prompt
    job_id = await submit(gateway, caller, "generate", body.model, prompt, priority, params)
    if body.stream:
        return _stream(gateway, job_id, body.model, max_new, "text_completion")
    result = await gateway.stream.wait_result(job_id, gateway.settings.gateway_wait_s)
    texts = [str(t) for t in result.output] if isinstance(prompt, list) else [str(result.output)]
    prompts = prompt if isinstance(prompt, list) else [prompt]
    completion_tokens = sum(approximate_tokens(t) for t in texts)
    return {
        "id": f"cmpl-{job_id}", "object": "text_completion", "created": int(time.time()),
        "model": result.model or body.model,
        "choices": [{"index": i, "text": t, "logprobs": None,
                     "finish_reason": finish_reason(None, approximate_tokens(t), max_new)}
                    for i, t in enumerate(texts)],
        "usage": _usage(sum(approximate_tokens(p) for p in prompts), completion_tokens),
    }


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, gateway: GatewayDep, caller: CallerDep,
                     priority: PriorityHeader = None) -> dict[str, Any]:
    """Embeddings of one text or a list; ``encoding_format: base64`` packs float32 values
    little-endian, as OpenAI does (the ``openai`` package asks for it by default)."""
    model = None if body.model == AUTO_MODEL else body.model
    job = await gateway.submit(caller, "embed", body.input, model=model, priority=priority)
    result = await gateway.stream.wait_result(job.id, gateway.settings.gateway_wait_s)
    vectors = result.output if isinstance(body.input, list) else [result.output]
    texts = body.input if isinstance(body.input, list) else [body.input]
    tokens = sum(approximate_tokens(t) for t in texts)
    return {
        "object": "list", "model": result.model or body.model,
        "data": [{"object": "embedding", "index": i,
                  "embedding": _encode(vector, body.encoding_format)}
                 for i, vector in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/models")
async def list_models(gateway: GatewayDep, caller: CallerDep) -> dict[str, Any]:
    """The registry's models, plus ``auto`` (the router chooses)."""
    names = [*gateway.client.registry.models, AUTO_MODEL]
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "infermq"} for name in names]}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _stream(gateway: Gateway, job_id: str, model: str, max_new_tokens: int,
            kind: str) -> StreamingResponse:
    return StreamingResponse(_chunks(gateway, job_id, model, max_new_tokens, kind),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chunks(gateway: Gateway, job_id: str, model: str, max_new_tokens: int,
                  kind: str) -> AsyncIterator[str]:
    """OpenAI's stream: ``data: <chunk>`` per token, a last chunk with the finish reason, then
    ``data: [DONE]``; a job that fails mid-way ends with ``data: {"error": ...}``, which the
    ``openai`` package raises as an ``APIError``."""
    chat = kind == "chat.completion.chunk"
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{job_id}", "object": kind,
            "created": int(time.time()), "model": model}

    def chunk(text: str | None, reason: str | None, first: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": text} if text is not None else {})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        return f"data: {_json({**head, 'choices': [choice]})}\n\n"

    if chat:
        yield chunk(None, None, first=True)
    streamed: list[str] = []
    try:
        async for event in gateway.stream.events(job_id, "0-0", gateway.settings.gateway_wait_s):
            if event is None:
                yield ": keep-alive\n\n"
            elif event.kind == "token":
                streamed.append(event.data)
                yield chunk(event.data, None)
            elif event.kind == "status" and JobStatus(event.data).is_final:
                result = await gateway.stream.wait_result(job_id, 1.0)
                # A cache hit, or an engine that does not stream, produced no (or not all)
                # tokens: the rest of the text comes as one last piece.
                rest = unstreamed(str(result.output), "".join(streamed))
                if rest:
                    yield chunk(rest, None)
                yield chunk(None, finish_reason(result, len(streamed), max_new_tokens))
        yield "data: [DONE]\n\n"
    except (JobFailed, JobTimeout) as e:
        yield f"data: {bytes(error_response(e).body).decode()}\n\n"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

"""The wire format of a job: what a caller asks for, what travels on RabbitMQ, what comes back.

JSON only. Every model carries a ``schema_version`` so that a worker can refuse a message it
does not understand instead of guessing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_validator

SCHEMA_VERSION: Literal[1] = 1


class TaskType(StrEnum):
    """What a job asks a model to do; ``auto`` lets the router choose."""

    EMBED = "embed"
    GENERATE = "generate"
    CLASSIFY = "classify"
    AUTO = "auto"


class JobStatus(StrEnum):
    """A job's lifecycle; ``done``, ``failed``, ``dead``, ``cancelled``, ``rejected`` are final."""

    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.DONE, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.REJECTED}
)

CacheOutcome = Literal["exact", "semantic", "miss"]

UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """Refuses text that cannot be stored: PostgreSQL keeps no NUL in text or jsonb, and a lone
    surrogate (JSON can spell one, ``"\\ud800"``) is not Unicode, so nothing can encode it.
    Caught at validation, either is a clear 400 instead of a database error at the first write.

    Raises:
        ValueError: the text holds such a character (pydantic reports it as a validation error).
    """
    found = UNSTORABLE_CHARACTER.search(text)
    if found is not None:
        raise ValueError(f"text holds U+{ord(found.group()):04X} at character {found.start()}, "
                         "which cannot be stored: remove it")
    return text


StorableText = Annotated[str, AfterValidator(storable_text)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: StorableText = Field(max_length=32_768)


JobInput = str | list[str] | list[ChatMessage]


class GenerationParams(BaseModel):
    """Parameters that change the output; the cache key includes every one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)


class JobRequest(BaseModel):
    """What a caller submits. Validated at the edge; a failure publishes and writes nothing."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    input: JobInput
    model: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    params: GenerationParams = GenerationParams()
    priority: Annotated[int, Field(ge=0, le=9)] = 5
    session_id: StorableText | None = Field(default=None, min_length=1, max_length=64)
    webhook_url: HttpUrl | None = None
    idempotency_key: StorableText | None = Field(default=None, min_length=1, max_length=200)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: JobInput) -> JobInput:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("input is empty: give a non-blank text")
        elif not value:
            raise ValueError("input is an empty list: give at least one text or message")
        elif isinstance(value[0], str) and any(not text.strip() for text in value):
            raise ValueError("input holds a blank text")
        for text in [value] if isinstance(value, str) else value:
            if isinstance(text, str):
                storable_text(text)
        return value

    def input_chars(self) -> int:
        """Total characters of the input, to refuse oversized jobs before publishing."""
        if isinstance(self.input, str):
            return len(self.input)
        return sum(len(i) if isinstance(i, str) else len(i.content) for i in self.input)

    def input_count(self) -> int:
        return 1 if isinstance(self.input, str) else len(self.input)


def utcnow() -> datetime:
    return datetime.now(UTC)


AUTO_MODEL = "auto"
"""The ``model`` of a job message waiting in ``<ns>.route``: the router task has not chosen yet
(a registry model name cannot be ``auto``: ``Registry`` refuses it)."""


class RouteRecord(BaseModel):
    """How the router placed a job of task type ``auto``: carried by the routed message, so a
    worker whose model fails the job can try the next fallback without classifying again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_class: str
    arm: Literal["primary", "canary"] = "primary"
    reason: str
    fallbacks: tuple[str, ...] = ()
    tried: tuple[str, ...] = Field(default=(), description="models that failed the job already")


class JobMessage(BaseModel):
    """The body that travels on RabbitMQ: a validated request with its id and chosen model.

    A job of task type ``auto`` travels first to the router with ``model == AUTO_MODEL``; the
    router republishes it with the task type and model it chose and a ``route`` record.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    task_type: TaskType
    model: str
    input: JobInput
    params: GenerationParams = GenerationParams()
    priority: int = Field(ge=0, le=9)
    session_id: str | None = None
    session_seq: int | None = Field(default=None, ge=0, description="the job's turn in its session")
    webhook_url: str | None = None
    timeout_s: float = Field(gt=0)
    submitted_at: datetime
    route: RouteRecord | None = None


class JobResult(BaseModel):
    """What a finished job gives back, written to Redis and to the job's PostgreSQL row."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    status: JobStatus
    model: str | None = None
    output: Any = None
    error: str | None = None
    cache: CacheOutcome = "miss"
    cache_source_job: str | None = None
    cache_similarity: float | None = None
    tokens: int | None = None
    latency_ms: float | None = None
    finished_at: datetime = Field(default_factory=utcnow)

"""infermq: prioritized, batched, cached model inference over RabbitMQ.

``from infermq import Client`` is the public face; the contracts (settings, jobs, errors, keys,
tables) live in this package's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infermq.errors import InfermqError, JobFailed, JobTimeout
from infermq.jobs import JobResult, JobStatus, TaskType
from infermq.settings import Settings

if TYPE_CHECKING:
    from producer.client import AsyncClient, Client, JobHandle

__all__ = [
    "AsyncClient",
    "Client",
    "InfermqError",
    "JobFailed",
    "JobHandle",
    "JobResult",
    "JobStatus",
    "JobTimeout",
    "Settings",
    "TaskType",
]


def __getattr__(name: str) -> Any:
    # The SDK lives in producer/, which imports this package: import it on first use.
    if name in ("Client", "AsyncClient", "JobHandle"):
        import producer.client

        return getattr(producer.client, name)
    raise AttributeError(f"module 'infermq' has no attribute {name!r}")

"""What the job runner tells the rest of the worker, given to it at construction.

``RunnerHooks`` has a no-op method per moment of a job (dramatiq's ``Middleware`` shape): the
worker's metrics, the router's fallbacks and webhook delivery each override the ones they need,
and ``workers/main.py`` hands the list to the runtime that builds the runner. Reading
``JobRunner.__init__`` therefore tells everything a job's run calls.
"""

from __future__ import annotations

from typing import Protocol

from infermq.errors import EngineError
from infermq.jobs import JobMessage, JobResult


class RunnerHooks:
    """No-op hooks of ``JobRunner``; subclasses override what they watch or decide."""

    def job_started(self, message: JobMessage) -> None:
        """The job is about to reach its engine (after its attempt is counted)."""

    def job_ended(self, message: JobMessage, result: JobResult | None) -> None:
        """The job ended: its result, or None when its engine failed it."""

    def session_restored(self, model: str, restore_s: float | None) -> None:
        """A session job's context was restored in ``restore_s`` (None: the restore failed)."""

    def reroute(self, message: JobMessage, error: EngineError) -> bool:
        """Whether the hook republished a job its model failed (True: the job is not failed)."""
        return False

    def webhook_committed(self, outbox_id: int) -> None:
        """A webhook outbox row committed: its first delivery attempt may go."""


class ModelGate(Protocol):
    """Admits a job only while its model is READY in this worker (``WorkerRuntime``)."""

    def hold_model(self, model: str) -> bool: ...

    def release_model(self, model: str) -> None: ...

"""The one error tree of infermq: every error a user can see is an ``InfermqError``.

Messages say what happened and what to do next.
"""

from __future__ import annotations


class InfermqError(Exception):
    """Root of every error infermq raises on purpose."""


class ConfigError(InfermqError):
    """Raised when settings or the model registry are invalid."""


class ServiceUnavailable(InfermqError):
    """Raised when RabbitMQ, Redis or PostgreSQL cannot be reached."""


class RedisUnavailable(ServiceUnavailable):
    """Raised when Redis refused, dropped or timed out a request a caller cannot do without
    (a submit's hot status); waiters instead retry Redis and read PostgreSQL meanwhile."""


class SubmitError(InfermqError):
    """Base of the errors raised while a job is being submitted."""


class InvalidRequest(SubmitError):
    """Raised when a request fails validation; nothing was published or written."""


class UnknownTaskType(InvalidRequest):
    """Raised when a request names a task type that no model in the registry serves."""


class UnknownModel(InvalidRequest):
    """Raised when a request names a model that the registry does not list for its task."""


class WebhookUrlRefused(InvalidRequest):
    """Raised when a webhook URL is malformed or resolves to a private, loopback or link-local
    address that the settings do not allow."""


class QueueError(SubmitError):
    """Base of the errors raised when the broker did not take a job."""


class QueueUnavailable(QueueError):
    """Raised when the broker refused, dropped, returned or did not confirm a publish."""


class QueueFull(QueueError):
    """Raised when the job's queue is at its length limit and refused the message."""


class JobError(InfermqError):
    """Base of the errors raised while waiting on a job."""


class JobNotFound(JobError):
    """Raised when no job has the given id."""


class JobFailed(JobError):
    """Raised by ``result()`` when the job ended failed or dead."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        self.job_id, self.status, self.error = job_id, status, error
        super().__init__(f"job {job_id} ended {status}: {error or 'no error recorded'}")


class JobTimeout(JobError):
    """Raised by ``result()`` when the job did not finish in the time given."""


class EngineError(InfermqError):
    """Base of the errors raised by a model engine."""


class EngineUnavailable(EngineError):
    """Raised when an engine cannot be loaded (a missing extra, missing weights)."""


class EngineInputError(EngineError):
    """Raised when one job's input cannot be run by the engine; only that job fails."""


class JobTimedOut(EngineError):
    """Raised when a job ran past its ``timeout_s`` inside the worker."""


class SessionError(InfermqError):
    """Base of the errors raised by the session manager."""


class SessionNotFound(SessionError):
    """Raised when no session has the given id."""


class InvalidTransition(SessionError):
    """Raised when a session state change is not one of the allowed edges."""


class SessionTerminated(SessionError):
    """Raised when a job is submitted to a session that has been terminated."""


class SessionConflict(SessionError):
    """Raised when a session changed under a write (a turn built on a stale context); retry."""


class SessionContextError(SessionError):
    """Raised when a session context is not plain JSON or a stored one cannot be decoded."""


class RoutingError(InfermqError):
    """Base of the errors raised while choosing a model or scheduling model loads."""


class UnknownRequestClass(RoutingError):
    """Raised when a request class is not one the request class file lists."""


class NoEligibleModel(RoutingError):
    """Raised when no model in the registry can take a request (none serves it, or all are full)."""


class InvalidInstanceTransition(RoutingError):
    """Raised when a model instance state change is not one of the allowed edges."""


class DrainFailed(RoutingError):
    """Raised when a worker did not stop consuming or still held jobs at the drain's limit."""


class AccessError(InfermqError):
    """Base of the errors raised when a caller may not use the gateway as it asked."""


class InvalidApiKey(AccessError):
    """Raised when an API key is missing, unknown or revoked."""


class RateLimited(AccessError):
    """Raised when an API key made more requests this minute than its rate allows."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class PriorityNotAllowed(AccessError):
    """Raised when a request asks for a priority above its API key's ceiling."""


class WebhookError(InfermqError):
    """Base of the errors raised while delivering a webhook."""


class WebhookDeliveryFailed(WebhookError):
    """Raised when one delivery attempt did not get a 2xx answer; it is retried later."""


class DeliveryError(InfermqError):
    """Base for what a worker decides about a delivery it cannot run now (the task acts on it)."""


class DeadLetter(DeliveryError):
    """Raised when a delivery must go to the dead-letter queue (the task rejects it)."""


class ModelNotReady(DeliveryError):
    """Raised when a delivery's model is not READY in this worker (the task requeues it)."""


class FinishedMeanwhile(DeliveryError):
    """Raised inside the runner when a suspect admitted to the engine after a wait finds its
    job final (another copy finished it): the delivery ends as a redelivery of a final job."""


class TurnNotReady(DeliveryError):
    """Raised when an earlier job of the session has not finished: requeue, do not hold a slot."""

"""A job's hot state in Redis: status, result and its event stream (statuses and tokens).

Workers write; any number of readers wait on the stream with a blocking XREAD, so waiting
needs no polling loop and reading consumes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from infermq.jobs import JobResult, JobStatus
from infermq.keys import RedisKeys

# KEYS: cancel mark, status, events; ARGV: status, TTL in seconds. Returns 1 when marked.
_MARK_UNLESS_CANCELLED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'kind', 'status', 'data', ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""

# KEYS: status, events; ARGV: status, TTL in seconds. Returns the event's id.
_MARK_STATUS = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local event_id = redis.call('XADD', KEYS[2], '*', 'kind', 'status', 'data', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return event_id
"""

# KEYS: result, status, events; ARGV: result JSON, status, TTL in seconds. Atomic like the
# MULTI it replaces, with one reply to parse instead of six.
_WRITE_RESULT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('XADD', KEYS[3], '*', 'kind', 'status', 'data', ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
"""


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's stream: a status change or a generated piece of text."""

    event_id: str
    kind: str  # "status" | "token"
    data: str


class JobStateStore:
    """Reads and writes the Redis side of jobs for one deployment.

    The client must decode responses (``decode_responses=True``).
    """

    def __init__(self, client: redis.Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._mark_running_unless_cancelled = client.register_script(_MARK_UNLESS_CANCELLED)
        self._write_result = client.register_script(_WRITE_RESULT)
        self._mark_status = client.register_script(_MARK_STATUS)

    def mark_status(self, job_id: str, status: JobStatus) -> str:
        """Sets the hot status and appends the change to the job's stream; returns the id of
        the stream event (a reader that saw the change may read on from there). One script:
        one round trip and one reply."""
        event_id = self._mark_status(
            keys=[self.keys.job_status(job_id), self.keys.job_events(job_id)],
            args=[status.value, self.ttl_s])
        return _text(event_id)

    def mark_running_unless_cancelled(self, job_id: str) -> bool:
        """``mark_status(RUNNING)`` unless the job has a cancel mark, atomically and in one
        round trip (a worker's step on every job); returns False, writing nothing, when the
        job was cancelled."""
        keys = [self.keys.job_cancel(job_id), self.keys.job_status(job_id),
                self.keys.job_events(job_id)]
        marked = self._mark_running_unless_cancelled(
            keys=keys, args=[JobStatus.RUNNING.value, self.ttl_s])
        return bool(marked)

    def append_token(self, job_id: str, text: str) -> None:
        self.client.xadd(self.keys.job_events(job_id), {"kind": "token", "data": text})

    def append_event(self, job_id: str, kind: str, data: str) -> None:
        """Appends an event after the job's end (kind ``webhook``: a delivery's outcome);
        readers that stop at the final status never see it."""
        self.client.xadd(self.keys.job_events(job_id), {"kind": kind, "data": data})

    def write_result(self, result: JobResult) -> None:
        """Writes the result, then the final status event that wakes every waiter, atomically
        and in one round trip."""
        keys = [self.keys.job_result(result.job_id), self.keys.job_status(result.job_id),
                self.keys.job_events(result.job_id)]
        self._write_result(keys=keys,
                           args=[result.model_dump_json(), result.status.value, self.ttl_s])

    def read_status(self, job_id: str) -> JobStatus | None:
        raw = self.client.get(self.keys.job_status(job_id))
        return JobStatus(_text(raw)) if raw is not None else None

    def read_result(self, job_id: str) -> JobResult | None:
        raw = self.client.get(self.keys.job_result(job_id))
        return JobResult.model_validate_json(raw) if raw is not None else None

    def read_result_and_status(self, job_id: str) -> tuple[JobResult | None, JobStatus | None]:
        """The result and the hot status in one round trip (what a waiter reads first)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.job_result(job_id))
        pipe.get(self.keys.job_status(job_id))
        raw_result, raw_status = pipe.execute()
        return (JobResult.model_validate_json(raw_result) if raw_result is not None else None,
                JobStatus(_text(raw_status)) if raw_status is not None else None)

    def events(
        self, job_id: str, after_id: str = "0-0", block_ms: int = 1000
    ) -> Iterator[JobEvent]:
        """Events after ``after_id``, waiting up to ``block_ms`` for the first new one."""
        answer: Any = self.client.xread(
            {self.keys.job_events(job_id): after_id}, block=block_ms, count=1000
        )
        for _stream, entries in answer or []:
            for event_id, fields in entries:
                yield JobEvent(_text(event_id), fields["kind"], fields["data"])

    def request_cancel(self, job_id: str) -> None:
        self.client.set(self.keys.job_cancel(job_id), "1", ex=self.ttl_s)

    def is_cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.exists(self.keys.job_cancel(job_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


"""The SDK's job-row writes, group-committed: the ``submitting`` inserts of concurrent
submitters share one transaction, and the ``queued`` marks are written behind the publish
(stores/group_commit.py).

Why the ``queued`` mark may lag: the ``submitting`` row is the record (it precedes the
publish, so no message exists without a row); ``queued`` only says the broker confirmed it,
and the worker treats both alike (it records the ``queued`` transition itself when it finds the
row still ``submitting``). Redis carries the hot ``queued`` status before the publish, so
readers of a job's status see it at once. A client flushes its marks on ``close``, before a
rejection is written (so a job's record never reads rejected before an earlier job's queued),
and at interpreter exit.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from infermq.jobs import JobMessage
from stores.group_commit import GroupCommitter
from stores.jobstore import NewJob, insert_submitting_many, mark_queued_many

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Insert:
    job_id: str
    job: NewJob


@dataclass(frozen=True)
class _MarkQueued:
    job_id: str


_Write = _Insert | _MarkQueued


class SubmitWrites:
    """One per client, shared by its submitting threads."""

    def __init__(self, engine: Engine) -> None:
        self._committer: GroupCommitter[_Write, None] = GroupCommitter(
            engine, _write_group, key_of=lambda write: write.job_id, name="submit-writes")
        # Also runs at interpreter exit (weakref.finalize's default): marks are not dropped.
        weakref.finalize(self, _close_committer, self._committer)

    def insert_submitting(self, message: JobMessage, tenant: str | None) -> None:
        """Inserts the job's row as ``submitting`` with the other threads' inserts; returns
        once committed. Only for a job without idempotency key or session.

        Raises:
            OperationalError: PostgreSQL failed; nothing was written.
        """
        self._committer.write(_Insert(message.job_id, NewJob(message, tenant)))

    def mark_queued_behind(self, job_id: str) -> None:
        """Marks the job ``queued`` in a later group; does not wait (a failure is logged: the
        row stays ``submitting``, which the worker runs alike)."""
        self._committer.submit(_MarkQueued(job_id)).add_done_callback(_log_failure)

    def flush(self) -> None:
        """Waits until every mark written behind so far is committed."""
        self._committer.flush()

    def close(self) -> None:
        """Writes what is queued and stops the writer thread."""
        self._committer.close()


def _write_group(connection: Connection, writes: Sequence[_Write]) -> list[None]:
    inserts = [w.job for w in writes if isinstance(w, _Insert)]
    if inserts:
        insert_submitting_many(connection, inserts)
    queued = [w.job_id for w in writes if isinstance(w, _MarkQueued)]
    if queued:
        mark_queued_many(connection, queued)
    return [None] * len(writes)


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("a job's queued mark was not written (%r); its row stays submitting, "
                    "which workers run alike", error)


def _close_committer(committer: GroupCommitter[_Write, None]) -> None:
    committer.close()

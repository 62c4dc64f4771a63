"""The worker's job-row writes, group-committed: every task thread's attempt count and ``done``
commit go through one writer thread, which writes all that gathered in one transaction
(stores/group_commit.py). ARCHITECTURE.md: the worker writes its PostgreSQL updates in as
few transactions as it can.

A task thread still waits for its own write to commit before it goes on (and, in the end,
acks), so a kill -9 loses nothing: an uncommitted write's message is redelivered. Jobs of a
session commit on their own path (workers/session_steps.py): their turn is written in the
same transaction as the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Engine

from infermq.jobs import JobResult
from stores.group_commit import GroupCommitter
from stores.jobstore import FinishedJob, JobRow, begin_attempts, finish_done
from stores.outbox import record_webhook


@dataclass(frozen=True)
class _BeginAttempt:
    job_id: str


@dataclass(frozen=True)
class _CommitDone:
    job_id: str
    result: JobResult
    has_webhook: bool


@dataclass(frozen=True)
class DoneCommitted:
    """How a ``done`` commit ended: whether the row changed (False: it was final already) and
    the webhook outbox row written with it, if any."""

    changed: bool
    outbox_id: int | None


_Write = _BeginAttempt | _CommitDone
_Outcome = JobRow | DoneCommitted | None


class JobCommits:
    """One per worker process, shared by its task threads."""

    def __init__(self, database: Engine) -> None:
        self._committer: GroupCommitter[_Write, _Outcome] = GroupCommitter(
            database, _write_group, key_of=lambda write: write.job_id, name="job-commits")

    def begin_attempt(self, job_id: str) -> JobRow | None:
        """``jobstore.begin_attempt``, committed with the other threads' writes.

        Raises:
            OperationalError: PostgreSQL failed (transient; nothing was counted).
        """
        return cast(JobRow | None, self._committer.write(_BeginAttempt(job_id)))

    def commit_done(self, result: JobResult, has_webhook: bool) -> DoneCommitted:
        """Marks the job ``done`` with ``result`` (only from a runnable status), with its
        transition and, for a job with a webhook, its outbox row; returns once committed.

        Raises:
            OperationalError: PostgreSQL failed (transient; nothing was written).
        """
        return cast(DoneCommitted,
                    self._committer.write(_CommitDone(result.job_id, result, has_webhook)))

    def close(self) -> None:
        """Writes what is queued and stops the writer thread."""
        self._committer.close()


def _write_group(connection: Connection, writes: Sequence[_Write]) -> list[_Outcome]:
    """One transaction: the attempts counted, then the ``done`` rows with their outbox rows."""
    attempted = [w.job_id for w in writes if isinstance(w, _BeginAttempt)]
    rows = begin_attempts(connection, attempted) if attempted else {}
    done = [w for w in writes if isinstance(w, _CommitDone)]
    changed = finish_done(connection, [
        FinishedJob(w.job_id, w.result.model_dump_json(), w.result.cache) for w in done
    ]) if done else set()
    outbox_ids = {w.job_id: record_webhook(connection, w.result)
                  for w in done if w.has_webhook and w.job_id in changed}
    return [rows.get(w.job_id) if isinstance(w, _BeginAttempt)
            else DoneCommitted(w.job_id in changed, outbox_ids.get(w.job_id))
            for w in writes]

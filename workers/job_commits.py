"""The worker's job-row writes, group-committed: every task thread's attempt count and ``done``
commit go through one writer thread, which writes all that gathered in one transaction
(stores/group_commit.py). ARCHITECTURE.md: the worker writes its PostgreSQL updates in as
few transactions as it can.

A task thread still waits for its own write to commit before it goes on (and, in the end,
acks), so a kill -9 loses nothing: an uncommitted write's message is redelivered. A job of a
session, and every failed, dead or cancelled ending, joins the same groups: its row, its
session turn (or the skip of it) and its webhook outbox row are written under a savepoint of
the group's transaction, so they commit together, and a turn that fails (a stale session
version: ``SessionConflict``) rolls back that job's savepoint alone, not the other jobs of its
group; the error is raised in that job's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Engine

from infermq.errors import SessionError
from infermq.jobs import JobResult, JobStatus
from stores.group_commit import GroupCommitter
from stores.jobstore import (
    RUNNABLE_STATUSES,
    FinishedJob,
    JobRow,
    begin_attempts,
    count_solo_runs,
    finish_done,
    set_status,
)
from stores.outbox import record_webhook


@dataclass(frozen=True)
class _BeginAttempt:
    job_id: str


@dataclass(frozen=True)
class _CountSoloRun:
    job_id: str


# Writes a session job's turn in its commit transaction (after its row changed).
TurnWriter = Callable[[Connection], None]


@dataclass(frozen=True)
class _CommitFinal:
    """A job's final row (``result.status``: done, failed, dead or cancelled)."""

    job_id: str
    result: JobResult
    has_webhook: bool
    write_turn: TurnWriter | None = None


@dataclass(frozen=True)
class FinalCommitted:
    """How a final commit ended: whether the row changed (False: it was final already) and
    the webhook outbox row written with it, if any."""

    changed: bool
    outbox_id: int | None


_Write = _BeginAttempt | _CountSoloRun | _CommitFinal
_Outcome = JobRow | FinalCommitted | SessionError | None


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

    def count_solo_run(self, job_id: str) -> None:
        """``jobstore.count_solo_runs`` for this job, committed with the other threads' writes;
        returns once committed, so a crash after it is charged to the job.

        Raises:
            OperationalError: PostgreSQL failed (transient; nothing was counted).
        """
        self._committer.write(_CountSoloRun(job_id))

    def commit_done(self, result: JobResult, has_webhook: bool,
                    write_turn: TurnWriter | None = None) -> FinalCommitted:
        """Marks the job ``done`` with ``result`` (only from a runnable status), with its
        transition, its session turn (``write_turn``, for a job of a session) and, for a job
        with a webhook, its outbox row, all in one transaction; returns once committed.

        Raises:
            OperationalError: PostgreSQL failed (transient; nothing was written).
            SessionError: the turn could not be written (``SessionConflict``: stale session
                version); nothing of this job was written, the rest of its group was.
        """
        return self.commit_final(result, has_webhook, write_turn)

    def commit_final(self, result: JobResult, has_webhook: bool,
                     write_turn: TurnWriter | None = None) -> FinalCommitted:
        """``commit_done`` for any final ``result.status``: a failed, dead or cancelled
        ending (with ``result.error``) commits through the same groups, under a savepoint."""
        outcome = self._committer.write(
            _CommitFinal(result.job_id, result, has_webhook, write_turn))
        if isinstance(outcome, SessionError):
            raise outcome
        return cast(FinalCommitted, outcome)

    def close(self) -> None:
        """Writes what is queued and stops the writer thread."""
        self._committer.close()


def _write_group(connection: Connection, writes: Sequence[_Write]) -> list[_Outcome]:
    """One transaction: the attempts and solo runs counted, the ``done`` rows with their
    outbox rows, then each session job's row, turn and outbox row, and each other ending,
    under a savepoint of its own."""
    attempted = [w.job_id for w in writes if isinstance(w, _BeginAttempt)]
    rows = begin_attempts(connection, attempted) if attempted else {}
    alone = [w.job_id for w in writes if isinstance(w, _CountSoloRun)]
    if alone:
        count_solo_runs(connection, alone)
    done = [w for w in writes if isinstance(w, _CommitFinal) and w.write_turn is None
            and w.result.status is JobStatus.DONE]
    changed = finish_done(connection, [
        FinishedJob(w.job_id, w.result.model_dump_json(), w.result.cache) for w in done
    ]) if done else set()
    outcomes: dict[str, _Outcome] = {
        w.job_id: FinalCommitted(w.job_id in changed,
                                record_webhook(connection, w.result)
                                if w.has_webhook and w.job_id in changed else None)
        for w in done}
    for w in writes:
        if isinstance(w, _CommitFinal) and w.job_id not in outcomes:
            outcomes[w.job_id] = _write_alone(connection, w)
    return [rows.get(w.job_id) if isinstance(w, _BeginAttempt)
            else None if isinstance(w, _CountSoloRun) else outcomes[w.job_id]
            for w in writes]


def _write_alone(connection: Connection, write: _CommitFinal) -> FinalCommitted | SessionError:
    done = write.result.status is JobStatus.DONE
    try:
        with connection.begin_nested():
            changed = set_status(connection, write.job_id, write.result.status,
                                 only_from=RUNNABLE_STATUSES, error=write.result.error,
                                 result=write.result.model_dump(mode="json"),
                                 cache=write.result.cache if done else None)
            if changed and write.write_turn is not None:
                write.write_turn(connection)
            outbox_id = (record_webhook(connection, write.result)
                         if changed and write.has_webhook else None)
    except SessionError as e:
        # The savepoint rolled back this job alone; its thread raises the error.
        return e
    return FinalCommitted(changed, outbox_id)

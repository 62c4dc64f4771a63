"""Group commit: many threads' job-row writes in one transaction, each thread told how its own
write ended; and the grouped job-row statements behave like the one-job ones."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import pytest
from sqlalchemy import Connection, Engine, select, text

from infermq.errors import JobFailed, SessionConflict
from infermq.jobs import JobMessage, JobResult, JobStatus, TaskType, utcnow
from infermq.settings import Settings
from infermq.tables import webhook_outbox
from producer.client import Client
from producer.submit_writes import SubmitWrites
from stores.group_commit import GroupCommitter
from stores.jobstore import (
    FinishedJob,
    NewJob,
    begin_attempts,
    finish_done,
    get_job,
    insert_submitting_many,
    mark_queued_many,
    transitions_of,
)
from tests.support import take_job_message
from workers.job_commits import JobCommits, _CommitFinal, _write_group
from workers.runtime import WorkerRuntime

GATE_WAIT_S = 30


class GatedWriter:
    """A group writer whose first group waits on a gate, so that the next ones gather."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.first_group_entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, connection: Connection, items: Sequence[str]) -> list[str]:
        connection.execute(text("SELECT 1"))
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.first_group_entered.set()
            assert self.gate.wait(GATE_WAIT_S)
        if "poison" in items:
            raise ValueError("this item cannot be written")
        return [f"wrote {item}" for item in items]


def test_writes_that_gather_during_a_transaction_commit_together(db_engine: Engine) -> None:
    # Given a writer busy with a first group
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(db_engine, writer, key_of=str,
                                                         name="test-commits")
    first = committer.submit("a")
    assert writer.first_group_entered.wait(GATE_WAIT_S)
    # When five more writes arrive meanwhile
    later = [committer.submit(item) for item in "bcdef"]
    writer.gate.set()
    # Then they are written as one group, and each caller gets its own result
    assert first.result(GATE_WAIT_S) == "wrote a"
    assert [f.result(GATE_WAIT_S) for f in later] == [f"wrote {i}" for i in "bcdef"]
    assert writer.groups == [["a"], list("bcdef")]
    committer.close()


def test_writes_of_one_key_never_share_a_group(db_engine: Engine) -> None:
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(
        db_engine, writer, key_of=lambda item: item[0], name="test-commits")
    committer.submit("x0")
    assert writer.first_group_entered.wait(GATE_WAIT_S)
    futures = [committer.submit(item) for item in ("x1", "y1", "x2")]
    writer.gate.set()
    for future in futures:
        future.result(GATE_WAIT_S)
    # x2 waits for the group after x1's, in submission order
    assert writer.groups == [["x0"], ["x1", "y1"], ["x2"]]
    committer.close()


def test_one_bad_write_fails_alone(db_engine: Engine) -> None:
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(db_engine, writer, key_of=str,
                                                         name="test-commits")
    committer.submit("a")
    assert writer.first_group_entered.wait(GATE_WAIT_S)
    futures: list[Future[str]] = [committer.submit(item) for item in ("b", "poison", "c")]
    writer.gate.set()
    assert futures[0].result(GATE_WAIT_S) == "wrote b"
    with pytest.raises(ValueError, match="cannot be written"):
        futures[1].result(GATE_WAIT_S)
    assert futures[2].result(GATE_WAIT_S) == "wrote c"
    committer.close()


def _message(tag: str, webhook_url: str | None = None) -> JobMessage:
    return JobMessage(job_id=str(uuid.uuid4()), task_type=TaskType.EMBED, model="echo",
                      input=f"group commit {tag}", priority=3, timeout_s=30,
                      webhook_url=webhook_url, submitted_at=utcnow())


def test_grouped_statements_record_every_transition(db_engine: Engine) -> None:
    # Given three jobs inserted together, one of them marked queued by its producer
    messages = [_message(str(i)) for i in range(3)]
    with db_engine.begin() as connection:
        insert_submitting_many(connection, [NewJob(m, tenant="t1") for m in messages])
        mark_queued_many(connection, [messages[0].job_id])
    # When a worker begins all three (two still say submitting) and finishes them
    ids = [m.job_id for m in messages]
    with db_engine.begin() as connection:
        rows = begin_attempts(connection, ids)
    assert {row.status for row in rows.values()} == {JobStatus.RUNNING}
    assert {row.attempts for row in rows.values()} == {1}
    results = [JobResult(job_id=i, status=JobStatus.DONE, model="echo", output=[0.5], cache="miss")
               for i in ids]
    with db_engine.begin() as connection:
        changed = finish_done(connection, [FinishedJob(r.job_id, r.model_dump_json(), r.cache)
                                           for r in results])
        # A producer's late queued mark changes nothing any more
        mark_queued_many(connection, ids)
    # Then each job reads as one submitted, queued, run and done, with its result
    assert changed == set(ids)
    for job_id in ids:
        assert transitions_of(db_engine, job_id) == ["submitting", "queued", "running", "done"]
        row = get_job(db_engine, job_id)
        assert row.status == JobStatus.DONE and row.tenant == "t1"
        assert row.result is not None and row.result["output"] == [0.5]
    # And a second done commit (a redelivery) changes nothing
    with db_engine.begin() as connection:
        assert finish_done(connection, [FinishedJob(ids[0], results[0].model_dump_json())]) == set()


def test_worker_commits_write_the_webhook_outbox_with_the_row(db_engine: Engine) -> None:
    hooked, plain = _message("hooked", "https://example.com/hook"), _message("plain")
    with db_engine.begin() as connection:
        insert_submitting_many(connection, [NewJob(hooked), NewJob(plain)])
    commits = JobCommits(db_engine)
    try:
        assert commits.begin_attempt(hooked.job_id) is not None
        assert commits.begin_attempt("no-such-job") is None
        outcomes = {m.job_id: commits.commit_done(
            JobResult(job_id=m.job_id, status=JobStatus.DONE, output="ok"),
            has_webhook=m.webhook_url is not None) for m in (hooked, plain)}
    finally:
        commits.close()
    assert outcomes[hooked.job_id].changed and outcomes[hooked.job_id].outbox_id is not None
    assert outcomes[plain.job_id].changed and outcomes[plain.job_id].outbox_id is None
    with db_engine.connect() as connection:
        outbox_jobs = connection.execute(select(webhook_outbox.c.job_id).where(
            webhook_outbox.c.id == outcomes[hooked.job_id].outbox_id)).scalars().all()
    assert outbox_jobs == [hooked.job_id]


def test_producer_queued_marks_are_written_by_flush(db_engine: Engine) -> None:
    writes = SubmitWrites(db_engine)
    message = _message("behind")
    writes.insert_submitting(message, tenant=None)
    writes.mark_queued_behind(message.job_id)
    writes.flush()
    assert get_job(db_engine, message.job_id).status == JobStatus.QUEUED
    writes.close()


def test_job_cancelled_before_it_starts_never_runs(
    echo_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    # Given a submitted job, cancelled before any worker took it
    client = client_for(echo_settings)
    handle = client.submit("embed", f"cancel me {echo_settings.namespace}")
    handle.cancel()
    payload = take_job_message(echo_settings,
                                client.topology.queue_for("embed", "echo").name)
    # When a worker's runner gets it
    runtime = WorkerRuntime(echo_settings, ["echo"])
    runtime.start()
    try:
        assert runtime.runner.run(payload) is None
    finally:
        runtime.stop()
    # Then it ends cancelled without ever being marked running in Redis
    with pytest.raises(JobFailed, match="cancelled"):
        handle.result(timeout_s=GATE_WAIT_S)
    statuses = [e.data for e in client.state.events(handle.id, block_ms=0)
                if e.kind == "status"]
    assert statuses == ["queued", "cancelled"]
    assert transitions_of(client.engine, handle.id) == ["submitting", "queued", "running",
                                                         "cancelled"]


def test_a_closed_committer_writes_again_when_asked(db_engine: Engine) -> None:
    writer = GatedWriter()
    writer.gate.set()
    committer: GroupCommitter[str, str] = GroupCommitter(db_engine, writer, key_of=str,
                                                         name="test-commits")
    assert committer.write("a") == "wrote a"
    committer.close()
    assert committer.write("b") == "wrote b"
    committer.close()


def test_a_stale_session_turn_rolls_back_its_own_job_not_its_group(db_engine: Engine) -> None:
    # Given three finished jobs with webhooks in one commit group: a plain one, a session job
    # whose turn writes, and a session job whose turn is stale (SessionConflict)
    plain, good, stale = (_message(tag, "https://example.com/hook")
                          for tag in ("plain", "good turn", "stale turn"))
    with db_engine.begin() as connection:
        insert_submitting_many(connection, [NewJob(m) for m in (plain, good, stale)])
    turns_written: list[str] = []

    def good_turn(connection: Connection) -> None:
        connection.execute(text("SELECT 1"))
        turns_written.append(good.job_id)

    def stale_turn(connection: Connection) -> None:
        raise SessionConflict("the session moved on: stale version")

    def done(message: JobMessage) -> JobResult:
        return JobResult(job_id=message.job_id, status=JobStatus.DONE, output="ok")

    # When the group is written in one transaction
    with db_engine.begin() as connection:
        outcomes = _write_group(connection, [
            _CommitFinal(plain.job_id, done(plain), True),
            _CommitFinal(stale.job_id, done(stale), True, stale_turn),
            _CommitFinal(good.job_id, done(good), True, good_turn),
        ])
    # Then the stale job alone is rolled back (row still runnable, no outbox row) and its
    # error is its outcome; the plain job and the good turn commit with their outbox rows
    assert isinstance(outcomes[1], SessionConflict)
    assert get_job(db_engine, stale.job_id).status == JobStatus.SUBMITTING
    assert get_job(db_engine, plain.job_id).status == JobStatus.DONE
    assert get_job(db_engine, good.job_id).status == JobStatus.DONE
    assert turns_written == [good.job_id]
    with db_engine.connect() as connection:
        hooked = set(connection.execute(select(webhook_outbox.c.job_id).where(
            webhook_outbox.c.job_id.in_([plain.job_id, good.job_id, stale.job_id]))).scalars())
    assert hooked == {plain.job_id, good.job_id}


def test_failed_dead_and_cancelled_endings_commit_in_the_group(db_engine: Engine) -> None:
    # Given four jobs with webhooks in one commit group: one done, one failed (its session's
    # skipped turn written with it), one dead whose turn skip fails, one cancelled
    done, failed, dead, cancelled = (_message(tag, "https://example.com/hook")
                                     for tag in ("done", "failed", "dead", "cancelled"))
    with db_engine.begin() as connection:
        insert_submitting_many(connection, [NewJob(m) for m in (done, failed, dead, cancelled)])
    skipped: list[str] = []

    def skip_turn(connection: Connection) -> None:
        connection.execute(text("SELECT 1"))
        skipped.append(failed.job_id)

    def stale_skip(connection: Connection) -> None:
        raise SessionConflict("the session moved on: stale version")

    def ending(message: JobMessage, status: JobStatus, error: str | None = None) -> JobResult:
        return JobResult(job_id=message.job_id, status=status, output="ok" if error is None
                         else None, error=error)

    # When the group is written in one transaction
    with db_engine.begin() as connection:
        outcomes = _write_group(connection, [
            _CommitFinal(done.job_id, ending(done, JobStatus.DONE), True),
            _CommitFinal(failed.job_id, ending(failed, JobStatus.FAILED, "boom"), True,
                         skip_turn),
            _CommitFinal(dead.job_id, ending(dead, JobStatus.DEAD, "gave up"), True,
                         stale_skip),
            _CommitFinal(cancelled.job_id, ending(cancelled, JobStatus.CANCELLED, "cancelled"),
                         True),
        ])
    # Then each ending has its own status, error and outbox row, the skipped turn committed
    # with its row, and the member whose turn failed rolled back alone
    assert isinstance(outcomes[2], SessionConflict)
    assert get_job(db_engine, dead.job_id).status == JobStatus.SUBMITTING
    assert get_job(db_engine, done.job_id).status == JobStatus.DONE
    failed_row, cancelled_row = get_job(db_engine, failed.job_id), get_job(db_engine,
                                                                          cancelled.job_id)
    assert (failed_row.status, failed_row.error) == (JobStatus.FAILED, "boom")
    assert (cancelled_row.status, cancelled_row.error) == (JobStatus.CANCELLED, "cancelled")
    assert transitions_of(db_engine, failed.job_id) == ["submitting", "failed"]
    assert skipped == [failed.job_id]
    with db_engine.connect() as connection:
        hooked = set(connection.execute(select(webhook_outbox.c.job_id).where(
            webhook_outbox.c.job_id.in_([m.job_id for m in (done, failed, dead, cancelled)])
        )).scalars())
    assert hooked == {done.job_id, failed.job_id, cancelled.job_id}


def test_a_session_jobs_commit_raises_its_turns_error_in_its_thread(db_engine: Engine) -> None:
    message = _message("stale alone")
    with db_engine.begin() as connection:
        insert_submitting_many(connection, [NewJob(message)])

    def stale_turn(connection: Connection) -> None:
        raise SessionConflict("stale version")

    commits = JobCommits(db_engine)
    try:
        with pytest.raises(SessionConflict):
            commits.commit_done(JobResult(job_id=message.job_id, status=JobStatus.DONE,
                                          output="ok"), has_webhook=False, write_turn=stale_turn)
    finally:
        commits.close()
    assert get_job(db_engine, message.job_id).status == JobStatus.SUBMITTING

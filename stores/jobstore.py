"""Job rows in PostgreSQL: the durable record and the commit point of every job.

The producer writes the row before publishing (``submitting``) and marks it ``queued`` after
the broker's confirm; the worker counts attempts and commits the result here. A row marked
``done`` is never run again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    case,
    cast,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import OperationalError

from infermq.errors import JobNotFound, ServiceUnavailable
from infermq.jobs import JobMessage, JobStatus, utcnow
from infermq.tables import job_transitions, jobs

RUNNABLE_STATUSES = (JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING)
_RUNNABLE_SQL = ", ".join(f"'{s.value}'" for s in RUNNABLE_STATUSES)


@dataclass(frozen=True)
class JobRow:
    id: str
    status: JobStatus
    attempts: int
    model: str | None
    task_type: str
    result: dict[str, Any] | None
    error: str | None
    tenant: str | None
    created_at: datetime
    route_reason: str | None = None
    solo_runs: int = 0


def _row(record: Any) -> JobRow:
    return JobRow(
        id=record.id,
        status=JobStatus(record.status),
        attempts=record.attempts,
        model=record.model,
        task_type=record.task_type,
        result=record.result,
        error=record.error,
        tenant=record.tenant,
        created_at=record.created_at,
        route_reason=record.route_reason,
        solo_runs=record.solo_runs,
    )


def database_unavailable(engine: Engine, error: OperationalError) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} failed "
        f"({error.orig}): is it running? `infermq services` starts it."
    )


def insert_submitting(
    connection: Connection,
    message: JobMessage,
    idempotency_key: str | None,
    tenant: str | None = None,
    route_reason: str | None = None,
) -> JobRow | None:
    """Writes the job row as ``submitting``; returns the existing row for a known idempotency
    key instead (and writes nothing)."""
    values = {
        "id": message.job_id,
        "idempotency_key": idempotency_key,
        "tenant": tenant,
        "task_type": message.task_type.value,
        "model": message.model,
        "priority": message.priority,
        "status": JobStatus.SUBMITTING.value,
        "input": message.model_dump(mode="json")["input"],
        "params": message.params.model_dump(mode="json"),
        "timeout_s": message.timeout_s,
        "session_id": message.session_id,
        "session_seq": message.session_seq,
        "webhook_url": message.webhook_url,
        "route_reason": route_reason,
    }
    statement = pg_insert(jobs).values(**values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["idempotency_key"])
    inserted = statement.returning(jobs.c.id).cte("inserted")
    recorded = connection.execute(
        insert(job_transitions)
        .from_select(["job_id", "status"], select(inserted.c.id, literal("submitting")))
        .returning(job_transitions.c.job_id)
    ).first()
    if recorded is None:
        existing = connection.execute(
            select(jobs).where(jobs.c.idempotency_key == idempotency_key)
        ).one()
        return _row(existing)
    return None


def set_status(
    connection: Connection,
    job_id: str,
    status: JobStatus,
    *,
    only_from: tuple[JobStatus, ...] | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    cache: str | None = None,
) -> bool:
    """Moves the job to ``status`` (from one of ``only_from`` if given) and records the
    transition; returns whether the row changed."""
    statement = update(jobs).where(jobs.c.id == job_id)
    if only_from is not None:
        statement = statement.where(jobs.c.status.in_([s.value for s in only_from]))
    values: dict[str, Any] = {"status": status.value, "updated_at": _now()}
    if error is not None:
        values["error"] = error
    if result is not None:
        values["result"] = result
    if cache is not None:
        values["cache"] = cache
    if status.is_final:
        values["finished_at"] = _now()
    # One round trip: the update and its transition row in a data-modifying CTE.
    changed = statement.values(**values).returning(jobs.c.id).cte("changed")
    recorded = connection.execute(
        insert(job_transitions)
        .from_select(
            ["job_id", "status", "detail"],
            select(changed.c.id, literal(status.value), literal(error, Text)),
        )
        .returning(job_transitions.c.job_id)
    ).first()
    return recorded is not None


def record_route(connection: Connection, job_id: str, model: str, reason: str) -> bool:
    """Records where the router sent a job of task type ``auto`` and why (the model column
    then names the model that runs it); returns whether a row has this id."""
    changed = connection.execute(
        update(jobs).where(jobs.c.id == job_id)
        .values(model=model, route_reason=reason, updated_at=_now()).returning(jobs.c.id)
    ).first()
    return changed is not None


def forget_deliveries(connection: Connection, job_id: str) -> None:
    """Clears a job's counted deliveries and runs alone when its delivery ended normally and
    moved it on (a fallback to another model): its next delivery is not a crash suspect."""
    connection.execute(update(jobs).where(jobs.c.id == job_id).values(attempts=0, solo_runs=0))


def begin_attempt(connection: Connection, job_id: str) -> JobRow | None:
    """Counts one more delivery of the job and marks it ``running`` unless it is final.

    Counting happens before the engine runs, so a job that kills its worker is counted too.
    Returns None when no row has this id.
    """
    runnable = jobs.c.status.in_(
        [s.value for s in (JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING)]
    )
    now = _now()
    # One round trip: count the attempt, move a runnable job to running, record the transition.
    counted = (
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(
            attempts=jobs.c.attempts + 1,
            updated_at=now,
            status=case((runnable, JobStatus.RUNNING.value), else_=jobs.c.status),
            started_at=case((runnable, now), else_=jobs.c.started_at),
        )
        .returning(*jobs.c)
        .cte("counted")
    )
    recorded = (
        insert(job_transitions)
        .from_select(
            ["job_id", "status", "detail"],
            select(counted.c.id, counted.c.status,
                   literal("attempt ") + cast(counted.c.attempts, Text))
            .where(counted.c.status == JobStatus.RUNNING.value),
        )
        .cte("recorded")
    )
    record = connection.execute(
        select(counted).add_cte(recorded)
    ).first()
    return _row(record) if record is not None else None


# The grouped statements of the group commits (stores/group_commit.py): one statement for
# any number of jobs, plain SQL compiled once (the expression-built statements above cost more
# CPU to build per call than PostgreSQL spends running them). Ids are sorted so that
# concurrent groups lock rows in one order. Rows come back without their input and params
# (JSON that nobody reads here would be parsed per row).
_BEGIN_ATTEMPTS = text(f"""
WITH previous AS (
    SELECT id, status FROM jobs WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE
), counted AS (
    UPDATE jobs SET
        attempts = jobs.attempts + 1,
        updated_at = :now,
        status = CASE WHEN jobs.status IN ({_RUNNABLE_SQL}) THEN 'running' ELSE jobs.status END,
        started_at = CASE WHEN jobs.status IN ({_RUNNABLE_SQL}) THEN :now
                          ELSE jobs.started_at END
    FROM previous WHERE jobs.id = previous.id
    RETURNING jobs.id, jobs.status, jobs.attempts, jobs.model, jobs.task_type, jobs.result,
              jobs.error, jobs.tenant, jobs.created_at, jobs.route_reason, jobs.solo_runs,
              previous.status AS previous_status
), recorded AS (
    INSERT INTO job_transitions (job_id, status, detail)
    SELECT id, status, detail FROM (
        SELECT id, 'queued' AS status, NULL AS detail, 0 AS step
        FROM counted WHERE previous_status = 'submitting'
        UNION ALL
        SELECT id, 'running', 'attempt ' || attempts, 1 FROM counted WHERE status = 'running'
    ) AS steps ORDER BY id, step
)
SELECT * FROM counted
""")

_FINISH_DONE = text(f"""
WITH finished AS (
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(CAST(:results AS text[]) AS jsonb[]),
                         CAST(:caches AS text[])) AS f(id, result, cache)
), changed AS (
    UPDATE jobs SET
        status = 'done', result = finished.result,
        cache = COALESCE(finished.cache, jobs.cache),
        updated_at = :now, finished_at = :now
    FROM finished
    WHERE jobs.id = finished.id AND jobs.status IN ({_RUNNABLE_SQL})
    RETURNING jobs.id
), recorded AS (
    INSERT INTO job_transitions (job_id, status) SELECT id, 'done' FROM changed ORDER BY id
)
SELECT id FROM changed
""")


_INSERT_SUBMITTING = text("""
WITH inserted AS (
    INSERT INTO jobs (id, tenant, task_type, model, priority, status, input, params, timeout_s,
                      webhook_url, route_reason)
    SELECT id, tenant, task_type, model, priority, 'submitting', CAST(input AS jsonb),
           CAST(params AS jsonb), timeout_s, webhook_url, route_reason
    FROM unnest(CAST(:ids AS text[]), CAST(:tenants AS text[]), CAST(:task_types AS text[]),
                CAST(:models AS text[]), CAST(:priorities AS int[]), CAST(:inputs AS text[]),
                CAST(:params AS text[]), CAST(:timeouts_s AS float8[]),
                CAST(:webhook_urls AS text[]), CAST(:route_reasons AS text[]))
         AS new(id, tenant, task_type, model, priority, input, params, timeout_s, webhook_url,
                route_reason)
    ORDER BY id
    RETURNING id
)
INSERT INTO job_transitions (job_id, status) SELECT id, 'submitting' FROM inserted ORDER BY id
""")

_MARK_QUEUED = text("""
WITH changed AS (
    UPDATE jobs SET status = 'queued', updated_at = :now
    WHERE id = ANY(CAST(:ids AS text[])) AND status IN ('submitting', 'rejected')
    RETURNING id
)
INSERT INTO job_transitions (job_id, status) SELECT id, 'queued' FROM changed ORDER BY id
""")


@dataclass(frozen=True)
class NewJob:
    """A job row to insert as ``submitting``: one without idempotency key or session (those
    need ``insert_submitting``'s conflict and turn handling)."""

    message: JobMessage
    tenant: str | None = None
    route_reason: str | None = None


def insert_submitting_many(connection: Connection, new_jobs: Sequence[NewJob]) -> None:
    """``insert_submitting`` for many new jobs in one statement, with their transitions."""
    dumped = [(n, n.message.model_dump(mode="json")) for n in new_jobs]
    connection.execute(_INSERT_SUBMITTING, {
        "ids": [n.message.job_id for n, _ in dumped],
        "tenants": [n.tenant for n, _ in dumped],
        "task_types": [d["task_type"] for _, d in dumped],
        "models": [d["model"] for _, d in dumped],
        "priorities": [d["priority"] for _, d in dumped],
        "inputs": [json.dumps(d["input"]) for _, d in dumped],
        "params": [json.dumps(d["params"]) for _, d in dumped],
        "timeouts_s": [d["timeout_s"] for _, d in dumped],
        "webhook_urls": [d["webhook_url"] for _, d in dumped],
        "route_reasons": [n.route_reason for n, _ in dumped],
    })


def mark_queued_many(connection: Connection, job_ids: Sequence[str]) -> None:
    """Marks jobs ``queued`` (only from ``submitting`` or ``rejected``: a worker may have
    started one already) and records the transitions, in one statement."""
    connection.execute(_MARK_QUEUED, {"ids": sorted(job_ids), "now": _now()})


def begin_attempts(connection: Connection, job_ids: Sequence[str]) -> dict[str, JobRow]:
    """``begin_attempt`` for many jobs in one statement: the rows found, by id (a job id
    must appear once).

    A job still ``submitting`` gets its ``queued`` transition recorded too: its message is in
    the worker's hands, so it was queued; the producer writes that mark behind the publish
    (producer/submit_writes.py) and may come after the worker.
    """
    records = connection.execute(
        _BEGIN_ATTEMPTS, {"ids": sorted(job_ids), "now": _now()}).all()
    return {record.id: _row(record) for record in records}


_COUNT_SOLO_RUNS = text("""
UPDATE jobs SET solo_runs = solo_runs + 1
WHERE id = ANY(CAST(:ids AS text[]))
""")


def count_solo_runs(connection: Connection, job_ids: Sequence[str]) -> None:
    """Counts one more run alone in the engine for each job (workers/isolation.py), before it
    enters, so that a crash during it is charged to that job."""
    connection.execute(_COUNT_SOLO_RUNS, {"ids": sorted(job_ids)})


@dataclass(frozen=True)
class FinishedJob:
    """A job's ``done`` write: its result as JSON text and its cache outcome."""

    job_id: str
    result_json: str
    cache: str | None = None


def finish_done(connection: Connection, finished: Sequence[FinishedJob]) -> set[str]:
    """Marks many jobs ``done`` with their results (only from a runnable status) and records
    the transitions, in one statement; returns the ids whose row changed (a job id must
    appear once)."""
    ordered = sorted(finished, key=lambda f: f.job_id)
    changed = connection.execute(_FINISH_DONE, {
        "ids": [f.job_id for f in ordered],
        "results": [f.result_json for f in ordered],
        "caches": [f.cache for f in ordered],
        "now": _now(),
    }).scalars()
    return set(changed)


def get_job(engine: Engine, job_id: str, tenant: str | None = None) -> JobRow:
    """The job's row.

    Raises:
        JobNotFound: no job has this id (or it belongs to another tenant).
        ServiceUnavailable: PostgreSQL cannot be reached.
    """
    statement = select(jobs).where(jobs.c.id == job_id)
    if tenant is not None:
        statement = statement.where(jobs.c.tenant == tenant)
    try:
        with engine.connect() as connection:
            record = connection.execute(statement).first()
    except OperationalError as e:
        raise database_unavailable(engine, e) from e
    if record is None:
        raise JobNotFound(f"no job {job_id}: check the id (`infermq status <id>`)")
    return _row(record)


def transitions_of(engine: Engine, job_id: str) -> list[str]:
    """The statuses the job went through, in order."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(job_transitions.c.status)
                .where(job_transitions.c.job_id == job_id)
                .order_by(job_transitions.c.id)
            ).scalars()
        )



def _now() -> datetime:
    return utcnow()

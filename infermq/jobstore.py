"""Job rows in PostgreSQL: the durable record and the commit point of every job.

The producer writes the row before publishing (``submitting``) and marks it ``queued`` after
the broker's confirm; the worker counts attempts and commits the result here. A row marked
``done`` is never run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Text, case, cast, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import OperationalError

from infermq.errors import JobNotFound, ServiceUnavailable
from infermq.jobs import JobMessage, JobStatus, utcnow
from infermq.tables import job_transitions, jobs


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

"""The webhook outbox: one row per webhook a finished job owes, written in the transaction
that marks the job final, so a job is never done without its webhook recorded (or the
reverse). Delivery (workers/webhooks.py) reads and updates the rows; the gateway shows them.

Row statuses: ``pending`` (not tried yet) → ``retrying`` (a retry waits in a delay queue) →
``delivered`` | ``failed`` (gave up; visible on the job).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB

from infermq.jobs import JobResult, utcnow
from infermq.tables import jobs, webhook_outbox

OPEN_STATUSES = ("pending", "retrying")


@dataclass(frozen=True)
class OutboxRow:
    """One webhook to deliver, with what signing it needs."""

    id: int
    job_id: str
    url: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    tenant: str | None


def webhook_payload(result: JobResult) -> dict[str, Any]:
    """The JSON body a receiver gets: what happened and the job's result."""
    return {"event": "job.finished", "job_id": result.job_id, "status": result.status.value,
            "result": result.model_dump(mode="json")}


def record_webhook(connection: Connection, result: JobResult) -> int | None:
    """Adds the outbox row of a job that names a webhook URL, in the caller's transaction;
    returns its id, or None when the job has no webhook."""
    source = select(jobs.c.id, jobs.c.webhook_url, literal(webhook_payload(result), JSONB)) \
        .where(jobs.c.id == result.job_id, jobs.c.webhook_url.is_not(None))
    inserted = connection.execute(
        webhook_outbox.insert()
        .from_select(["job_id", "url", "payload"], source)
        .returning(webhook_outbox.c.id)
    ).first()
    return int(inserted[0]) if inserted is not None else None


def untried_webhooks(engine: Engine, job_id: str) -> list[int]:
    """Outbox rows of the job never tried: what a redelivered, already final job re-sends."""
    with engine.connect() as connection:
        return [int(i) for i in connection.execute(
            select(webhook_outbox.c.id).where(
                webhook_outbox.c.job_id == job_id, webhook_outbox.c.status == "pending",
                webhook_outbox.c.attempts == 0)
        ).scalars()]


def claim_webhook(connection: Connection, outbox_id: int, attempt: int) -> OutboxRow | None:
    """Locks the row for delivery attempt ``attempt`` (0-based) in the caller's transaction.

    None when the row is final, already past this attempt (a duplicate message), or locked by
    a delivery in flight: at most one delivery of a webhook runs at a time, and a worker that
    dies mid-delivery releases the lock with its connection.
    """
    record = connection.execute(
        select(webhook_outbox, jobs.c.tenant)
        .join(jobs, jobs.c.id == webhook_outbox.c.job_id)
        .where(webhook_outbox.c.id == outbox_id,
               webhook_outbox.c.status.in_(OPEN_STATUSES),
               webhook_outbox.c.attempts <= attempt)
        .with_for_update(skip_locked=True, of=webhook_outbox)
    ).first()
    if record is None:
        return None
    return OutboxRow(record.id, record.job_id, record.url, record.payload, record.attempts,
                     record.created_at, record.tenant)


def record_attempt(
    connection: Connection, outbox_id: int, status: str, error: str | None = None
) -> None:
    """Counts one delivery attempt and its outcome (``delivered``, ``retrying``, ``failed``)."""
    values: dict[str, Any] = {"status": status, "attempts": webhook_outbox.c.attempts + 1,
                              "last_error": error}
    if status == "delivered":
        values["delivered_at"] = utcnow()
    connection.execute(update(webhook_outbox).where(webhook_outbox.c.id == outbox_id)
                       .values(**values))


def webhook_state(engine: Engine, job_id: str) -> dict[str, Any] | None:
    """The job's webhook as a caller sees it, or None when it has none (yet)."""
    with engine.connect() as connection:
        record = connection.execute(
            select(webhook_outbox).where(webhook_outbox.c.job_id == job_id)
            .order_by(webhook_outbox.c.id.desc()).limit(1)
        ).first()
    if record is None:
        return None
    return {"status": record.status, "attempts": record.attempts, "last_error": record.last_error,
            "delivered_at": record.delivered_at.isoformat() if record.delivered_at else None}

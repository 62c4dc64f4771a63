"""Webhook delivery: POST a finished job to its URL, signed, retried with backoff.

The outbox row (stores/outbox.py) is written in the transaction that ends the job; the worker
then sends ``infermq.deliver_webhook`` to the ``<ns>.webhooks`` queue. That task never touches
an engine or a batcher, so it never holds a GPU slot. A failed attempt is not retried by
holding the message (RabbitMQ closes channels whose messages stay unacked past its consumer
timeout): the retry is published to a delay queue with a per-message TTL, whose dead-letter
route brings it back to ``<ns>.webhooks`` when the TTL runs out. There is one delay queue per
attempt number, because RabbitMQ expires messages only at a queue's head: in one shared queue a
1 s retry would wait behind a 5 min one.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable

import httpx
from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy import Engine

from infermq.errors import WebhookDeliveryFailed, WebhookUrlRefused
from infermq.keys import DELIVER_WEBHOOK_TASK, QueueNames, RedisKeys
from infermq.settings import Settings
from infermq.webhook_policy import pin_webhook_target
from infermq.webhook_signature import SIGNATURE_HEADER, sign
from producer.publisher import ConfirmedPublisher
from routing.topology import QueueSpec
from stores.apikeys import tenant_webhook_secret
from stores.connections import get_redis
from stores.database import get_engine
from stores.outbox import OutboxRow, claim_webhook, record_attempt
from stores.results import JobStateStore
from workers.runner_hooks import RunnerHooks

log = logging.getLogger(__name__)

WEBHOOK_PRIORITY = 5
"""Of every delivery attempt: the priority Celery gives the session sweep's tasks on the same
queue, so deliveries and sweeps go first come, first served."""

ScheduleRetry = Callable[[int, int, float], None]
"""(outbox id, attempt number, delay in seconds): publishes a delayed delivery attempt."""


def retry_delay_s(attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """The wait before attempt ``attempt`` (1 = the first retry): exponential, capped, with
    "equal jitter" (half fixed, half random with ``jitter`` in [0, 1)), so that receivers that
    come back up are not hit by every retry at the same instant, yet no retry comes early."""
    delay_s = min(cap_s, base_s * 2 ** (attempt - 1))
    return delay_s / 2 + delay_s / 2 * jitter


def gives_up(attempts_made: int, max_attempts: int, age_s: float, next_delay_s: float,
             retry_for_s: float) -> bool:
    """True when no retry is left: attempts used up, or the next one would come too late."""
    return attempts_made >= max_attempts or age_s + next_delay_s > retry_for_s


class WebhookSender:
    """Runs delivery attempts; one per worker process, shared by its task threads."""

    def __init__(self, settings: Settings, database: Engine, http: httpx.Client,
                 schedule_retry: ScheduleRetry, state: JobStateStore) -> None:
        self.settings = settings
        self.database = database
        self.http = http
        self.schedule_retry = schedule_retry
        self.state = state

    def deliver(self, outbox_id: int, attempt: int) -> str:
        """Makes delivery attempt ``attempt`` (0-based) of one outbox row; returns the row's new
        status, or ``skipped`` when the row is final, past this attempt or being delivered.

        The row stays locked for the POST (at most ``webhook_timeout_s``), which is what keeps
        two copies of one message from delivering twice. Once the outcome is committed it is
        appended to the job's event stream (kind ``webhook``), so waiters learn it at once.
        """
        with self.database.begin() as connection:
            row = claim_webhook(connection, outbox_id, attempt)
            if row is None:
                return "skipped"
            try:
                self._post(row)
            except WebhookDeliveryFailed as e:
                status = self._after_failure(row, str(e))
                record_attempt(connection, row.id, status, str(e))
            else:
                status = "delivered"
                record_attempt(connection, row.id, status)
        self.state.append_event(row.job_id, "webhook", status)
        return status

    def _after_failure(self, row: OutboxRow, error: str) -> str:
        attempts_made = row.attempts + 1
        delay_s = retry_delay_s(attempts_made, self.settings.webhook_backoff_base_s,
                                self.settings.webhook_backoff_max_s, random.random())
        age_s = time.time() - row.created_at.timestamp()
        if gives_up(attempts_made, self.settings.webhook_max_attempts, age_s, delay_s,
                    self.settings.webhook_retry_for_s):
            log.warning("webhook %s of job %s failed for good after %d attempt(s): %s",
                        row.id, row.job_id, attempts_made, error)
            return "failed"
        # Published before the row's update commits: if the commit fails, the retry still
        # comes (the claim accepts a row that is behind the message's attempt number).
        self.schedule_retry(row.id, attempts_made, delay_s)
        return "retrying"

    def _post(self, row: OutboxRow) -> None:
        secret = (tenant_webhook_secret(self.database, row.tenant) if row.tenant else None) \
            or self.settings.webhook_default_secret
        body = json.dumps(row.payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "infermq-webhooks/1",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            "X-Infermq-Event": str(row.payload.get("event", "job.finished")),
            "X-Infermq-Delivery": str(row.id),
            "X-Infermq-Attempt": str(row.attempts + 1),
        }
        try:
            target = pin_webhook_target(row.url, self.settings.webhook_allow_private)
        except WebhookUrlRefused as e:
            raise WebhookDeliveryFailed(f"not delivered: {e}") from e
        headers["Host"] = target.host_header
        try:
            # No redirects: a public URL answering 302 to a private address is the SSRF that
            # the submit-time check cannot see.
            response = self.http.post(target.url, content=body, headers=headers,
                                      follow_redirects=False,
                                      extensions={"sni_hostname": target.server_name})
        except httpx.HTTPError as e:
            raise WebhookDeliveryFailed(f"POST {row.url} failed: {e!r}") from e
        if not 200 <= response.status_code < 300:
            raise WebhookDeliveryFailed(f"POST {row.url} answered {response.status_code}")


def delay_queue(names: QueueNames, attempt: int) -> Queue:
    """The delay queue of retry ``attempt``: expired messages go back to ``<ns>.webhooks``."""
    name = names.webhook_delay(attempt)
    return Queue(name, exchange=Exchange(""), routing_key=name, durable=True, queue_arguments={
        "x-dead-letter-exchange": names.exchange,
        "x-dead-letter-routing-key": names.webhooks,
        "x-queue-type": "classic",
    })


class FirstWebhookAttempt(RunnerHooks):
    """The job runner's hook that sends a committed outbox row's first delivery attempt."""

    def __init__(self, send: Callable[[int], None]) -> None:
        self.send = send

    def webhook_committed(self, outbox_id: int) -> None:
        self.send(outbox_id)


def register_webhook_task(app: Celery, settings: Settings,
                          publisher: ConfirmedPublisher) -> FirstWebhookAttempt:
    """Registers ``infermq.deliver_webhook`` on ``app``; returns the runner hook that sends a
    first delivery attempt of an outbox row (after the job's commit). Attempts are published
    through ``publisher``: confirmed, so a committed outbox row's attempt is not lost on the
    way (the outbox sweep would find it, late)."""
    names = QueueNames(settings.namespace)
    webhook_queue = publisher.topology.webhook_queue
    http = httpx.Client(timeout=settings.webhook_timeout_s)

    @app.task(name=DELIVER_WEBHOOK_TASK, acks_late=True, ignore_result=True)
    def deliver_webhook(outbox_id: int, attempt: int = 0) -> None:
        sender.deliver(outbox_id, attempt)

    def send(queue: Queue | QueueSpec, outbox_id: int, attempt: int,
             delay_s: float | None = None) -> None:
        publisher.publish(queue, DELIVER_WEBHOOK_TASK, str(uuid.uuid4()),
                          args=(outbox_id, attempt), priority=WEBHOOK_PRIORITY,
                          expiration_s=delay_s)

    def schedule_retry(outbox_id: int, attempt: int, delay_s: float) -> None:
        send(delay_queue(names, attempt), outbox_id, attempt, delay_s)

    def send_first_attempt(outbox_id: int) -> None:
        send(webhook_queue, outbox_id, 0)

    state = JobStateStore(get_redis(settings), RedisKeys(settings.redis_prefix),
                          settings.result_ttl_s)
    sender = WebhookSender(settings, get_engine(settings), http, schedule_retry, state)
    return FirstWebhookAttempt(send_first_attempt)

"""Webhooks end to end: a real worker POSTs to a receiver this test runs on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from infermq.errors import WebhookUrlRefused
from infermq.keys import QueueNames, RedisKeys
from infermq.settings import Settings
from infermq.webhook_signature import SIGNATURE_HEADER, verify
from producer.client import Client
from stores.apikeys import create_key
from stores.connections import get_redis
from stores.outbox import webhook_state
from stores.results import JobStateStore
from tests.gateway_support import WebhookReceiver
from tests.support import WorkerProcess
from workers.webhooks import gives_up, retry_delay_s

WAIT_S = 120


@pytest.fixture
def hook_settings(echo_settings: Settings) -> Iterator[Settings]:
    """Private receivers allowed (the test's is on loopback), retries within milliseconds."""
    settings = echo_settings.model_copy(update={
        "webhook_allow_private": True, "webhook_backoff_base_s": 0.05,
        "webhook_backoff_max_s": 0.2, "webhook_max_attempts": 4})
    yield settings
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    channel = connection.channel()
    for attempt in range(1, settings.webhook_max_attempts + 1):
        channel.queue_delete(QueueNames(settings.namespace).webhook_delay(attempt))
    connection.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def wait_webhook_outcome(settings: Settings, job_id: str) -> str:
    """Blocks on the job's event stream until a delivery ends ``delivered`` or ``failed``."""
    state = JobStateStore(get_redis(settings), RedisKeys(settings.redis_prefix), 60)
    last_id, deadline = "0-0", time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for event in state.events(job_id, last_id, block_ms=int(WAIT_S * 1000)):
            last_id = event.event_id
            if event.kind == "webhook" and event.data in ("delivered", "failed"):
                return event.data
    raise AssertionError(f"no webhook outcome for job {job_id} within {WAIT_S} s")


def test_receiver_down_at_first_gets_the_webhook_later_once_and_signed(
    hook_settings: Settings, receiver: WebhookReceiver,
    start_worker: Callable[..., WorkerProcess], client_for: Callable[[Settings], Client],
) -> None:
    # Given a receiver that fails its first two requests, and a tenant with a key
    client = client_for(hook_settings)
    tenant = f"{hook_settings.namespace}-hooks"
    key = create_key(client.engine, tenant)
    receiver.statuses = [503, 503]
    start_worker(hook_settings, ["echo"])
    # When a job of that tenant with a webhook ends
    job = client.submit("embed", "tell me when done", tenant=tenant, webhook_url=receiver.url)
    assert job.result(timeout_s=WAIT_S).status == "done"
    # Then the third attempt delivers it, once, signed with the tenant's secret
    assert wait_webhook_outcome(hook_settings, job.id) == "delivered"
    assert [d.answered for d in receiver.deliveries] == [503, 503, 200]
    delivered = receiver.deliveries[-1]
    assert verify(key.webhook_secret, delivered.headers[SIGNATURE_HEADER], delivered.body,
                  now_s=time.time())
    assert not verify(hook_settings.webhook_default_secret, delivered.headers[SIGNATURE_HEADER],
                      delivered.body, now_s=time.time())
    payload = json.loads(delivered.body)
    assert payload["job_id"] == job.id and payload["status"] == "done"
    assert len(payload["result"]["output"]) == 8
    state = webhook_state(client.engine, job.id)
    assert state is not None and state["status"] == "delivered" and state["attempts"] == 3


def test_receiver_that_never_answers_2xx_is_recorded_failed(
    hook_settings: Settings, receiver: WebhookReceiver,
    start_worker: Callable[..., WorkerProcess], client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(hook_settings)
    receiver.statuses = [500] * 10
    start_worker(hook_settings, ["echo"])
    job = client.submit("generate", "nobody listens", webhook_url=receiver.url)
    job.result(timeout_s=WAIT_S)
    assert wait_webhook_outcome(hook_settings, job.id) == "failed"
    assert len(receiver.deliveries) == hook_settings.webhook_max_attempts
    # Jobs without a tenant are signed with the settings' default secret
    first = receiver.deliveries[0]
    assert verify(hook_settings.webhook_default_secret, first.headers[SIGNATURE_HEADER],
                  first.body, now_s=time.time())
    state = webhook_state(client.engine, job.id)
    assert state is not None and state["status"] == "failed"
    assert state["last_error"] is not None and "500" in state["last_error"]


@pytest.mark.parametrize("url", ["http://10.1.2.3/hook", "http://192.168.0.1/",
                                 "http://169.254.169.254/latest", "http://127.0.0.1:9/",
                                 "http://localhost/hook", "http://[::1]/"])
def test_private_or_odd_webhook_url_is_refused_at_submit(
    echo_settings: Settings, client_for: Callable[[Settings], Client], url: str
) -> None:
    client = client_for(echo_settings)
    with pytest.raises(WebhookUrlRefused):
        client.validate("embed", "x", webhook_url=url)


def test_backoff_grows_is_capped_and_never_early() -> None:
    delays = [retry_delay_s(attempt, 1.0, 8.0, jitter=0.0) for attempt in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert retry_delay_s(3, 1.0, 8.0, jitter=0.999) < 4.0
    assert gives_up(attempts_made=4, max_attempts=4, age_s=0, next_delay_s=1, retry_for_s=60)
    assert gives_up(attempts_made=1, max_attempts=4, age_s=59.5, next_delay_s=1,
                    retry_for_s=60)
    assert not gives_up(attempts_made=1, max_attempts=4, age_s=0, next_delay_s=1,
                        retry_for_s=60)


def test_a_webhook_host_that_resolves_private_at_delivery_gets_no_request(
    hook_settings: Settings, receiver: WebhookReceiver,
    start_worker: Callable[..., WorkerProcess], client_for: Callable[[Settings], Client],
) -> None:
    # Given a job whose webhook host passed the check at submit (here: a submitter that allows
    # private hosts, standing in for DNS that answered a public address then) ...
    submitter = client_for(hook_settings)
    # ... and a worker that refuses private hosts, where the name now resolves to loopback
    delivering = hook_settings.model_copy(update={"webhook_allow_private": False,
                                                  "webhook_max_attempts": 1})
    start_worker(delivering, ["echo"])
    url = receiver.url.replace("127.0.0.1", "localhost")
    job = submitter.submit("embed", "rebound", webhook_url=url)
    job.result(timeout_s=WAIT_S)
    # When the worker delivers, Then it checks the address again and sends nothing
    assert wait_webhook_outcome(hook_settings, job.id) == "failed"
    assert receiver.deliveries == []
    state = webhook_state(submitter.engine, job.id)
    assert state is not None and "non-public" in state["last_error"]


def test_a_delivery_connects_to_the_address_it_checked() -> None:
    from infermq.webhook_policy import pin_webhook_target

    pinned = pin_webhook_target("https://user@93.184.216.34:8443/hook?x=1", False)
    assert (pinned.url, pinned.host_header, pinned.server_name) == (
        "https://user@93.184.216.34:8443/hook?x=1", "93.184.216.34:8443", "93.184.216.34")
    loopback = pin_webhook_target("http://localhost:9/hook", allow_private=True)
    assert loopback.url in ("http://127.0.0.1:9/hook", "http://[::1]:9/hook")
    assert (loopback.host_header, loopback.server_name) == ("localhost:9", "localhost")
    with pytest.raises(WebhookUrlRefused, match="non-public"):
        pin_webhook_target("http://localhost:9/hook", allow_private=False)

"""The gateway's OpenAPI document fuzzed by schemathesis: whatever a client sends, valid or not,
the gateway answers without a 5xx, and every /v1 refusal has the typed error body.

The schema comes from the app itself; the requests go to a real ``infermq gateway`` process
with a real worker (the noop engine, so the model costs nothing) behind it, on the real
RabbitMQ, Redis and PostgreSQL. Hypothesis runs derandomized with a fixed number of examples
per operation, so every run sends the same requests.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pika
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from pydantic import HttpUrl, TypeAdapter, ValidationError

from infermq.keys import QueueNames
from infermq.settings import Settings
from producer.client import Client
from producer.gateway import create_app
from tests.conftest import base_settings
from tests.gateway_support import GatewayProcess, WebhookReceiver
from tests.support import WorkerProcess, delete_namespace

NOOP_REGISTRY = Path(__file__).parent / "data" / "registry_noop.toml"
EXAMPLES_PER_OPERATION = 30
REQUEST_TIMEOUT_S = 60
OPENAI_OPERATIONS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
WEBHOOK_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)

SCHEMA = schemathesis.openapi.from_dict(create_app(base_settings()).openapi())


class FuzzTarget:
    """The gateway under test, the ids of real things a generated request may point at, and the
    receiver every generated webhook is delivered to."""

    def __init__(self, gateway: GatewayProcess, model: str, job_id: str,
                 receiver: WebhookReceiver) -> None:
        self.gateway = gateway
        self.model = model
        self.job_id = job_id
        self.receiver = receiver


@pytest.fixture(scope="module")
def fuzz_settings(database_schema: str) -> Iterator[Settings]:
    """No API keys (a fuzzer's random bearer tokens would only ever reach the 401); private
    webhook hosts allowed, so no URL is resolved at submit (every generated one is pointed at the
    test's receiver on loopback before it is sent), one delivery attempt."""
    settings = base_settings(database_schema=database_schema, registry_path=NOOP_REGISTRY,
                             gateway_auth="off", webhook_allow_private=True,
                             webhook_max_attempts=1, webhook_timeout_s=5.0)
    yield settings
    delete_namespace(settings)
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        channel.queue_delete(QueueNames(settings.namespace).webhook_delay(1))
    finally:
        connection.close()


@pytest.fixture(scope="module")
def target(fuzz_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[FuzzTarget]:
    logs = tmp_path_factory.mktemp("gateway_schema")
    worker = WorkerProcess(fuzz_settings, ["noop"], logs / "worker.log", slots=4)
    gateway = GatewayProcess(fuzz_settings, logs / "gateway.log")
    receiver = WebhookReceiver()
    try:
        with Client(fuzz_settings) as client:
            job = client.submit("generate", f"a finished job {fuzz_settings.namespace}")
            job.result(timeout_s=REQUEST_TIMEOUT_S)
        yield FuzzTarget(gateway, "noop", job.id, receiver)
    finally:
        gateway.stop()
        worker.stop()
        receiver.stop()


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
def test_generated_requests_never_get_a_server_error(case: Any, target: FuzzTarget) -> None:
    keep_webhooks_local(case, target.receiver.url)
    point_at_real_things(case, target)
    response = case.call(base_url=target.gateway.url, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: "
        f"{response.text[:1000]}\nreproduce: {case.as_curl_command()}\n"
        f"gateway log tail:\n{target.gateway.log()[-3000:]}")
    if case.path.startswith("/v1/") and response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "code"} <= error.keys(), response.text


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        # PostgreSQL stores no NUL, and a lone surrogate is not Unicode: both were 500s
        ("/v1/jobs", {"task_type": "embed", "input": "a NUL \x00 inside"}, 400,
         "invalid_request"),
        ("/v1/jobs", {"task_type": "embed", "input": ["fine", "lone \ud800 half"]}, 400,
         "invalid_request"),
        ("/v1/chat/completions", {"model": "noop", "messages": [
            {"role": "user", "content": "a NUL \x00 inside"}]}, 400, "invalid_request"),
        # A session that does not exist was a 500
        ("/v1/jobs", {"task_type": "embed", "input": "x", "session_id": "no-such-session"},
         404, "session_not_found"),
    ],
)
def test_what_the_fuzzer_found_gets_a_typed_4xx(
    target: FuzzTarget, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    # Sent as raw JSON: an HTTP client would refuse to encode the lone surrogate itself
    answer = httpx.post(f"{target.gateway.url}{path}", content=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def test_a_completion_prompt_may_be_longer_than_the_prompt_count_cap(target: FuzzTarget) -> None:
    # The cap on the number of prompts (256) once capped a single prompt's characters too
    prompt = " ".join(f"word{i}" for i in range(100))
    answer = httpx.post(f"{target.gateway.url}/v1/completions", timeout=REQUEST_TIMEOUT_S,
                        json={"model": "noop", "prompt": prompt, "max_tokens": 200})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["text"] == prompt


def keep_webhooks_local(case: Any, receiver_url: str) -> None:
    """Points a generated webhook URL that the gateway would accept at the test's receiver,
    keeping its path and query: the test never resolves or POSTs to a host it did not start."""
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("webhook_url"), str):
        return
    try:
        url = WEBHOOK_URL.validate_python(body["webhook_url"])
    except ValidationError:
        return  # refused at submit, before anything is resolved or delivered
    local = urlsplit(receiver_url)
    query = f"?{url.query}" if url.query else ""
    body["webhook_url"] = f"{local.scheme}://{local.netloc}{url.path or '/'}{query}"


def point_at_real_things(case: Any, target: FuzzTarget) -> None:
    """Half of the generated requests (chosen by a hash of the case, so runs repeat) name the
    registry's model and a real job instead of random ones: random names only ever reach the
    404, and the paths behind a found model or job are where server errors would hide."""
    if not chosen(case):
        return
    if case.path in OPENAI_OPERATIONS and isinstance(case.body, dict) \
            and isinstance(case.body.get("model"), str):
        case.body["model"] = target.model
    if case.path_parameters and "job_id" in case.path_parameters:
        case.path_parameters["job_id"] = target.job_id


def chosen(case: Any) -> bool:
    seen = repr((case.method, case.path, case.path_parameters, case.headers, case.body))
    return zlib.crc32(seen.encode()) % 2 == 0

"""The HTTP gateway as a real process, with a real worker behind it: the ``openai`` package
unchanged, SSE with resume, tenants, keys, rates, typed errors.

One gateway (API keys on) and one worker serve the whole module, to keep it fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import Text, cast, select

from infermq.settings import Settings
from infermq.tables import jobs
from stores.apikeys import CreatedKey, create_key, revoke_key
from stores.database import get_engine
from tests.conftest import base_settings
from tests.gateway_support import GatewayProcess
from tests.support import TEST_REGISTRY, WorkerProcess, delete_namespace
from tests.test_lose_nothing import open_gate, wait_at_gate

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def gw_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=TEST_REGISTRY,
                             gateway_auth="on")
    yield settings
    delete_namespace(settings)


@pytest.fixture(scope="module")
def gateway(gw_settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayProcess]:
    logs = tmp_path_factory.mktemp("gateway")
    worker = WorkerProcess(gw_settings, ["echo"], Path(logs / "worker.log"), slots=4)
    process = GatewayProcess(gw_settings, Path(logs / "gateway.log"))
    yield process
    process.stop()
    worker.stop()


def new_key(settings: Settings, tenant: str, rate: int = 600) -> CreatedKey:
    return create_key(get_engine(settings), f"{settings.namespace}-{tenant}", 7, rate)


def http(gateway: GatewayProcess, key: CreatedKey | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key.secret}"} if key else {}
    return httpx.Client(base_url=gateway.url, headers=headers, timeout=TIMEOUT_S)


def test_openai_package_works_unchanged(gw_settings: Settings, gateway: GatewayProcess) -> None:
    key = new_key(gw_settings, "openai")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key.secret, max_retries=0,
                           timeout=TIMEOUT_S)
    # Chat, non-streamed: the echo engine says the conversation back
    chat = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello gateway world"}],
        max_tokens=32)
    content = chat.choices[0].message.content
    assert content is not None and "gateway" in content
    assert chat.choices[0].finish_reason in ("stop", "length")
    # Chat, streamed: the deltas add up to the same text
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello gateway world"}],
        max_tokens=32, stream=True)]
    assert "".join(pieces) == content
    # Completions, streamed: one piece per generated word
    prompt = f"stream {gw_settings.namespace} word by word"
    streamed = [chunk.choices[0].text for chunk in client.completions.create(
        model="echo", prompt=prompt, max_tokens=32, stream=True)]
    assert "".join(streamed) == prompt and len([p for p in streamed if p]) == 5
    assert client.completions.create(model="echo", prompt=prompt).choices[0].text == prompt
    # Embeddings: base64 by default in the openai package, decoded back to floats
    embedded = client.embeddings.create(model="echo", input=["first text", "second text"])
    expected = [b / 255.0 for b in hashlib.sha256(b"second text").digest()[:8]]
    assert [round(v, 5) for v in embedded.data[1].embedding] == [round(v, 5) for v in expected]
    as_floats = client.embeddings.create(model="echo", input="one", encoding_format="float")
    assert len(as_floats.data[0].embedding) == 8
    # Models from the registry; an unknown one is OpenAI's NotFoundError
    assert "echo" in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_sse_gives_a_strict_prefix_while_running_and_resumes_without_gaps(
    gw_settings: Settings, gateway: GatewayProcess
) -> None:
    key = new_key(gw_settings, "sse")
    with http(gateway, key) as api:
        # Given a generation paused by the engine after its second token
        submitted = api.post("/v1/jobs", json={
            "task_type": "generate", "input": "alpha beta pause:sse gamma delta"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        wait_at_gate(gw_settings, "sse")
        # When a client reads its events until it has two tokens
        first = read_events(api, job_id, None, stop_after_tokens=2)
        # Then it has a strict prefix and the job is running
        assert [e["data"] for e in first if e["event"] == "token"] == ['{"text":"alpha"}',
                                                                      '{"text":" beta"}']
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        # When the engine goes on and the client reconnects with Last-Event-ID
        open_gate(gw_settings, "sse")
        rest = read_events(api, job_id, first[-1]["id"])
        # Then it gets the rest, each event once, in order, ending with done
        ids = [e["id"] for e in first + rest]
        assert len(ids) == len(set(ids)) and ids == sorted(ids, key=_stream_order)
        everything = read_events(api, job_id, None)
        assert [e["id"] for e in everything] == ids
        assert rest[-1] == {**rest[-1], "event": "status", "data": '{"status":"done"}'}
        text = "".join(_token(e) for e in first + rest if e["event"] == "token")
        assert text == "alpha beta pause:sse gamma delta"
        assert api.get(f"/v1/jobs/{job_id}").json()["result"]["output"] == text


def test_tenants_keys_and_rates(gw_settings: Settings, gateway: GatewayProcess) -> None:
    alice, bob = new_key(gw_settings, "alice"), new_key(gw_settings, "bob")
    with http(gateway, alice) as as_alice, http(gateway, bob) as as_bob:
        job_id = as_alice.post("/v1/jobs", json={"task_type": "embed", "input": "mine"}
                               ).json()["id"]
        # A tenant never reads another tenant's job: the answer is the same as for no job
        assert as_alice.get(f"/v1/jobs/{job_id}").status_code == 200
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            answer = as_bob.get(path)
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "job_not_found"
        assert as_bob.delete(f"/v1/jobs/{job_id}").status_code == 404
        # No key, or a revoked one: 401
        assert httpx.get(f"{gateway.url}/v1/models").status_code == 401
        assert revoke_key(get_engine(gw_settings), alice.id)
        revoked = as_alice.get(f"/v1/jobs/{job_id}")
        assert revoked.status_code == 401
        assert revoked.json()["error"]["type"] == "authentication_error"
        # Above the key's priority ceiling (7): 403
        assert as_bob.post("/v1/jobs", json={"task_type": "embed", "input": "x",
                                             "priority": 9}).status_code == 403
    slow = new_key(gw_settings, "slow", rate=2)
    with http(gateway, slow) as as_slow:
        assert [as_slow.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        limited = as_slow.get("/v1/models")
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task_type": "paint", "input": "x"}, "invalid_request"),
        ({"task_type": "embed", "input": ""}, "invalid_request"),
        ({"task_type": "embed", "input": "x", "priority": 12}, "invalid_request"),
        ({"task_type": "embed", "input": "x", "surprise": 1}, "invalid_request"),
        ({"task_type": "embed", "input": "x", "model": "nope"}, "unknown_model"),
        ({"task_type": "embed", "input": "x" * 40_000}, "invalid_request"),
        ({"task_type": "embed", "input": "x", "webhook_url": "http://10.1.2.3/hook"},
         "webhook_url_refused"),
        ({"task_type": "embed", "input": "x", "webhook_url": "http://169.254.169.254/"},
         "webhook_url_refused"),
    ],
)
def test_bad_input_gets_a_typed_4xx_and_nothing_is_written(
    gw_settings: Settings, gateway: GatewayProcess, body: dict, code: str
) -> None:
    key = new_key(gw_settings, "bad")
    marker = f"{gw_settings.namespace}-bad-{code}"
    if isinstance(body.get("input"), str) and body["input"] == "x":
        body = {**body, "input": marker}
    with http(gateway, key) as api:
        answer = api.post("/v1/jobs", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"] == code
    with get_engine(gw_settings).connect() as connection:
        written = connection.execute(
            select(jobs.c.id).where(cast(jobs.c.input, Text).contains(marker))).all()
    assert written == []


def test_operations_endpoints(gw_settings: Settings, gateway: GatewayProcess) -> None:
    with http(gateway, None) as api:
        assert api.get("/healthz").json() == {"status": "ok"}
        ready = api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "broker": "ok", "redis": "ok",
                                "postgresql": "ok"}
        assert "/v1/jobs" in api.get("/openapi.json").json()["paths"]
        assert "infermq_gateway_requests_total" in api.get("/metrics").text


def read_events(api: httpx.Client, job_id: str, last_event_id: str | None,
                stop_after_tokens: int | None = None) -> list[dict[str, str]]:
    """Reads SSE events (id, event, data) until the stream ends or enough tokens came."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                current[name] = value
                continue
            if current:
                events.append(current)
                current = {}
            tokens = sum(1 for e in events if e["event"] == "token")
            if stop_after_tokens is not None and tokens >= stop_after_tokens:
                break
    return events


def _stream_order(event_id: str) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq)


def _token(event: dict[str, str]) -> str:
    import json

    return str(json.loads(event["data"])["text"])

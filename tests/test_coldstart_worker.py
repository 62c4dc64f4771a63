"""The worker's model loads, driven by the cold-start scheduler: within the device memory
budget the highest-priority models load and only their queues are consumed; a model whose load
fails is retried, given up on, and does not stop the worker from serving the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infermq.settings import Settings
from producer.client import Client
from routing.registry import load_registry
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace, queue_depth
from tests.test_scale_drain import consumers_of
from workers.runtime import admit_models

COLDSTART_REGISTRY = Path(__file__).parent / "data" / "registry_coldstart.toml"
WAIT_S = 120


@pytest.fixture
def coldstart_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=COLDSTART_REGISTRY,
                             model_load_attempts=2, model_load_backoff_s=0.0)
    yield settings
    delete_namespace(settings)


def test_admission_takes_models_by_priority_while_they_fit() -> None:
    specs = list(load_registry(COLDSTART_REGISTRY).models.values())
    assert [s.name for s in admit_models(specs, 250)] == ["broken", "first"]
    assert [s.name for s in admit_models(specs, None)] == ["broken", "first", "second", "third"]
    # a model too big for what is left is skipped, not a blocker of smaller ones after it
    no_broken = [s for s in specs if s.name != "broken"]
    big = no_broken[0].model_copy(update={"memory_mib": 500, "load_priority": 9})
    assert [s.name for s in admit_models([big, *no_broken[1:]], 250)] == ["second", "third"]


def test_a_budget_for_two_of_three_models_serves_the_two_highest_priorities(
    coldstart_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    settings = coldstart_settings.model_copy(update={"device_memory_mib": 250})
    client = client_for(settings)
    jobs = {model: client.submit("generate", f"hello {model}", model=model)
            for model in ("first", "second", "third")}
    start_worker(settings, ["third", "second", "first"])

    for model in ("first", "second"):
        result = jobs[model].result(timeout_s=WAIT_S)
        assert result.status == "done", result
    third = client.topology.queue_for("generate", "third").name
    # the worker consumes all its queues from one start, which its two results prove is past
    assert consumers_of(settings, third) == 0
    assert queue_depth(settings, third) == 1
    assert jobs["third"].status() == "queued"


def test_a_model_that_fails_to_load_does_not_stop_the_others(
    coldstart_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(coldstart_settings)
    broken_job = client.submit("generate", "hello broken", model="broken")
    served_job = client.submit("generate", "hello first", model="first")
    worker = start_worker(coldstart_settings, ["broken", "first"])

    assert served_job.result(timeout_s=WAIT_S).status == "done"
    assert worker.process.poll() is None
    broken = client.topology.queue_for("generate", "broken").name
    assert consumers_of(coldstart_settings, broken) == 0
    assert broken_job.status() == "queued"
    log = worker.log()
    assert "model broken failed to load (attempt 1); will retry" in log
    assert "model broken failed to load (attempt 2); giving up on it" in log

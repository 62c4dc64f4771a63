"""A worker serving the paged engine killed -9 with jobs in flight: each completes once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infermq.jobs import GenerationParams, TaskType
from infermq.registry import load_registry
from infermq.settings import Settings
from producer.client import Client
from stores.jobstore import transitions_of
from tests.conftest import base_settings
from tests.engine_support import MODELS_DIR
from tests.support import WorkerProcess, delete_namespace
from workers.batching import Batcher
from workers.engines.base import EngineRequest
from workers.engines.paged.engine import PagedEngine

PAGED_REGISTRY = Path(__file__).parent / "data" / "registry_paged_test.toml"
MODEL = "gpt2-tiny-paged"
WAIT_S = 180
PARAMS = GenerationParams(max_new_tokens=200)


@pytest.fixture
def paged_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=PAGED_REGISTRY,
                             device="cpu", models_dir=MODELS_DIR)
    yield settings
    delete_namespace(settings)


def greedy_outputs(settings: Settings, prompts: list[str]) -> list[object]:
    """What the paged engine answers each prompt with, run here, outside any worker."""
    spec = load_registry(settings.registry_path).models[MODEL]
    engine = PagedEngine(spec, MODELS_DIR, device="cpu")
    engine.load()
    batcher = Batcher(engine, spec.max_batch_size, 0.0)
    batcher.start()
    try:
        futures = [batcher.submit(EngineRequest(
            job_id=f"expected-{n}", task_type=TaskType.GENERATE, input=prompt, params=PARAMS,
            timeout_s=WAIT_S)) for n, prompt in enumerate(prompts)]
        return [future.result(timeout=WAIT_S).output for future in futures]
    finally:
        batcher.stop()
        engine.unload()


@pytest.mark.timeout(600)
def test_paged_worker_killed_with_jobs_in_flight_completes_each_once(
    paged_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a paged worker with several jobs in flight (each has streamed a token)
    prompts = [f"the story of river {n} begins" for n in range(4)]
    expected = greedy_outputs(paged_settings, prompts)
    client = client_for(paged_settings)
    first = start_worker(paged_settings, [MODEL])
    jobs = [client.submit("generate", prompt, model=MODEL, params=PARAMS)
            for prompt in prompts]
    for job in jobs:
        next(iter(job.stream(timeout_s=WAIT_S)))
    # When the worker is killed -9 there, and a new one starts
    first.kill()
    unfinished = [job.id for job in jobs
                  if "done" not in transitions_of(client.engine, job.id)]
    assert unfinished, "every job finished before the kill: give them more tokens"
    start_worker(paged_settings, [MODEL])
    # Then every job completes exactly once, with its greedy output
    for job, output in zip(jobs, expected, strict=True):
        assert job.result(timeout_s=WAIT_S).output == output
        assert transitions_of(client.engine, job.id).count("done") == 1

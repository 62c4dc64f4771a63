"""Models and engines shared by the engine and batcher tests (in-process, no services)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from infermq.jobs import TaskType
from infermq.registry import ModelSpec, load_registry
from workers.batching import BatcherHooks
from workers.engines.base import EngineOutput, EngineRequest
from workers.engines.noop import NoopEngine

torch.set_num_threads(1)

MODELS_DIR = Path(__file__).resolve().parents[1] / ".models"
GPT2_TINY = ModelSpec(name="gpt2-tiny", task_types=(TaskType.GENERATE,), engine="paged",
                      source="random:gpt2-tiny", revision="0", memory_mib=32, max_batch_size=8,
                      kv_cache_mib=4)


def registry_spec(name: str) -> ModelSpec:
    return load_registry().models[name]


def noop_spec(task: TaskType = TaskType.EMBED) -> ModelSpec:
    return ModelSpec(name="noop", task_types=(task,), engine="noop", memory_mib=0)


class PoisonEngine(NoopEngine):
    """A noop engine whose whole batch raises when any input contains ``POISON``."""

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        if any("POISON" in str(request.input) for request in requests):
            raise ValueError("cannot embed a poisoned text")
        return super().run_batch(requests)


class GateHooks(BatcherHooks):
    """Holds the first engine call on ``gate`` and records every call's requests."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def before_batch(self, batch: Sequence[EngineRequest]) -> None:
        self.batches.append([request.job_id for request in batch])
        self.entered.set()
        if not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")

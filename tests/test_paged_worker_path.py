"""The paged engine behind the worker's batcher, held at a step gate (CPU, in-process)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import pytest

from infermq.errors import JobTimedOut
from infermq.jobs import GenerationParams, TaskType
from infermq.registry import ModelSpec
from infermq.settings import Settings
from tests.engine_support import MODELS_DIR
from workers.batching import Batcher, BatcherHooks
from workers.engines.base import EngineOutput, EngineRequest
from workers.engines.paged.engine import PagedEngine
from workers.runtime import sized_for

GATE_TIMEOUT_S = 60


def paged_spec(max_num_seqs: int) -> ModelSpec:
    return ModelSpec(name="gpt2-tiny-paged", task_types=(TaskType.GENERATE,), engine="paged",
                     source="random:gpt2-tiny", revision="0", memory_mib=32,
                     max_batch_size=max_num_seqs, kv_cache_mib=4)


class StepGate(BatcherHooks):
    """Pauses the engine loop after every step until the test lets the next one run."""

    def __init__(self) -> None:
        self.paused = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.engine: PagedEngine | None = None
        self.seen: list[dict[str, int]] = []

    def after_step(self, batch: Sequence[EngineRequest], step: int) -> None:
        assert self.engine is not None
        self.seen.append(self.engine.in_flight())
        self.paused.release()
        if not self.go.acquire(timeout=GATE_TIMEOUT_S):
            raise TimeoutError("the test never released the step gate")

    def wait_paused(self) -> dict[str, int]:
        assert self.paused.acquire(timeout=GATE_TIMEOUT_S), "the engine never stepped"
        return self.seen[-1]

    def step(self) -> dict[str, int]:
        """Lets one step run and returns the tokens per job after it."""
        self.go.release()
        return self.wait_paused()


@pytest.fixture
def gated() -> object:
    made: list[tuple[Batcher, StepGate]] = []

    def make(max_num_seqs: int = 4) -> tuple[Batcher, StepGate]:
        engine = PagedEngine(paged_spec(max_num_seqs), MODELS_DIR, device="cpu")
        engine.load()
        gate = StepGate()
        gate.engine = engine
        batcher = Batcher(engine, max_num_seqs, 0.0, hooks=gate)
        batcher.start()
        made.append((batcher, gate))
        return batcher, gate

    yield make
    for batcher, gate in made:
        for _ in range(10_000):
            gate.go.release()
        batcher.stop()
        batcher.engine.unload()


def job(job_id: str, tokens: int, priority: int = 5) -> EngineRequest:
    return EngineRequest(job_id=job_id, task_type=TaskType.GENERATE,
                         input=f"the story of {job_id} begins", priority=priority,
                         params=GenerationParams(max_new_tokens=tokens), timeout_s=120)


def test_a_job_admitted_mid_flight_joins_the_next_step(gated) -> None:  # noqa: ANN001
    batcher, gate = gated()
    first = batcher.submit(job("first", 30))
    assert gate.wait_paused() == {"first": 1}
    gate.step()
    second = batcher.submit(job("second", 5))
    after = gate.step()
    assert after == {"first": 3, "second": 1}
    while not second.done():
        gate.step()
    assert not first.done(), "the short job finished while the long one still decodes"
    assert second.result().tokens == 5
    while not first.done():
        gate.step()
    assert first.result().tokens == 30


def test_priority_9_runs_within_two_steps_of_a_full_priority_0_set(gated) -> None:  # noqa: ANN001
    batcher, gate = gated(max_num_seqs=2)
    solo: Future[EngineOutput] = batcher.submit(job("low-b", 24, priority=0))
    gate.wait_paused()
    while not solo.done():
        gate.step()
    alone = solo.result().output
    low = [batcher.submit(job("low-a", 24, priority=0)), batcher.submit(job("low-b", 24, 0))]
    tokens = gate.step()
    while tokens.get("low-a", 0) < 1 or tokens.get("low-b", 0) < 1:
        tokens = gate.step()
    urgent = batcher.submit(job("urgent", 4, priority=9))
    first = gate.step()
    second = first if first.get("urgent") else gate.step()
    assert second.get("urgent", 0) >= 1, "priority 9 got its first token within two steps"
    assert batcher.engine.core.scheduler.preemption_count == 1
    while not all(f.done() for f in [*low, urgent]):
        gate.step()
    assert low[1].result().output == alone, "the preempted job recomputed the same tokens"
    assert urgent.result().tokens == 4


def test_a_job_past_its_timeout_fails_alone_and_leaves_the_running_set(gated) -> None:  # noqa: ANN001
    # Given two jobs decoding, one of them with a short timeout, the engine held at a step
    batcher, gate = gated()
    patient = batcher.submit(job("patient", 8))
    impatient = batcher.submit(EngineRequest(
        job_id="impatient", task_type=TaskType.GENERATE, input="the story of impatient begins",
        params=GenerationParams(max_new_tokens=200), timeout_s=0.2))
    tokens = gate.wait_paused()
    while "impatient" not in tokens and not impatient.done():
        tokens = gate.step()
    # When its deadline passes while the engine is held, Then it fails with JobTimedOut
    assert isinstance(impatient.exception(timeout=GATE_TIMEOUT_S), JobTimedOut)
    # And at the next step the engine has dropped it, and the other job runs to its end
    assert "impatient" not in gate.step()
    while not patient.done():
        gate.step()
    assert patient.result().tokens == 8


def test_a_paged_models_worker_holds_max_num_seqs_plus_a_margin() -> None:
    # Given a paged model of max_num_seqs 32, the same with explicit slots, an embed model
    paged = paged_spec(32)
    pinned = paged.model_copy(update={"slots": 12})
    embed = ModelSpec(name="minilm", task_types=(TaskType.EMBED,), engine="torch", memory_mib=100)
    # Then the paged model wants 32 + 8 slots, an explicit `slots` wins, a torch model leaves
    # the worker's default
    assert paged.wanted_slots() == 40 and paged_spec(8).wanted_slots() == 12
    assert pinned.wanted_slots() == 12 and embed.wanted_slots() is None
    # And a worker's slots (its prefetch) are sized from the largest want, unless --slots or
    # INFERMQ_WORKER_SLOTS set them
    default = Settings()
    assert sized_for(default, [embed, paged]).worker_slots == 40
    assert sized_for(default, [embed]).worker_slots == default.worker_slots
    assert sized_for(Settings(worker_slots=5), [paged]).worker_slots == 5

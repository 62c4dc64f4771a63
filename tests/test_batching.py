"""The dynamic micro-batcher: batch sizes, priority order, failures and timeouts per job."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import numpy as np
import pytest

from infermq.errors import EngineInputError, JobTimedOut
from infermq.jobs import GenerationParams, TaskType
from tests.engine_support import (
    GPT2_TINY,
    MODELS_DIR,
    GateHooks,
    PoisonEngine,
    noop_spec,
    registry_spec,
)
from workers.batching import (
    Batcher,
    BatcherHooks,
    PendingRequest,
    effective_priority,
    select_batch,
    urgency_key,
)
from workers.engines.base import EngineOutput, EngineRequest
from workers.engines.noop import NoopEngine
from workers.engines.paged.engine import PagedEngine
from workers.engines.torch_engine import TorchEngine


@pytest.fixture(scope="module")
def minilm() -> Iterator[TorchEngine]:
    engine = TorchEngine(registry_spec("minilm"), MODELS_DIR)
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def gpt2_tiny() -> Iterator[PagedEngine]:
    engine = PagedEngine(GPT2_TINY, MODELS_DIR, device="cpu")
    engine.load()
    yield engine
    engine.unload()


def embed(job_id: str, text: str | list[str], priority: int = 5,
          timeout_s: float = 60.0) -> EngineRequest:
    return EngineRequest(job_id, TaskType.EMBED, text, priority=priority, timeout_s=timeout_s)


def pending(job_id: str, priority: int, sequence: int, key: str = "a",
            inputs: int = 1) -> PendingRequest:
    request = EngineRequest(job_id, TaskType.EMBED, [key] * inputs, priority=priority)
    return PendingRequest((-priority, sequence), request, Future(), inputs)


def test_selection_takes_priority_then_age_and_packs_inputs() -> None:
    # Given a heap of mixed priorities, keys and sizes
    heap = [pending("old-low", 1, 0), pending("new-high", 9, 5), pending("old-high", 9, 1),
            pending("other-key", 9, 2, key="b"), pending("big", 5, 3, inputs=3),
            pending("small", 5, 4)]
    import heapq

    heapq.heapify(heap)
    key = lambda request: request.input[0]  # noqa: E731 - the key is the text
    # When batches of 4 inputs are selected
    first = [item.request.job_id for item in select_batch(heap, 4, key)]
    second = [item.request.job_id for item in select_batch(heap, 4, key)]
    third = [item.request.job_id for item in select_batch(heap, 4, key)]
    # Then the urgent lead, the incompatible wait, and smaller jobs fill what a big one cannot
    assert first == ["old-high", "new-high", "small", "old-low"]
    assert second == ["other-key"]
    assert third == ["big"]
    assert heap == []


def test_an_aged_low_priority_request_overtakes_younger_high_priority_ones() -> None:
    import heapq

    # Given aging of one level per 100 ms: a priority-1 request submitted at t = 0, and
    # priority-9 requests submitted at t = 0, 700, 800 and 900 ms
    def item(job_id: str, priority: int, submitted_ms: float, sequence: int) -> PendingRequest:
        request = EngineRequest(job_id, TaskType.EMBED, "text", priority=priority)
        return PendingRequest(urgency_key(priority, submitted_ms, sequence, aging_ms=100),
                              request, Future(), 1)

    heap = [item("low", 1, 0, 0), item("high-0", 9, 0, 1), item("high-700", 9, 700, 2),
            item("high-800", 9, 800, 3), item("high-900", 9, 900, 4)]
    heapq.heapify(heap)
    # When batches of one are selected
    order = [select_batch(heap, 1, lambda r: 0)[0].request.job_id for _ in range(5)]
    # Then the low request comes after the highs submitted less than 8 levels x 100 ms after it,
    # ties going to the older, and before every later one
    assert order == ["high-0", "high-700", "low", "high-800", "high-900"]
    assert effective_priority(1, waited_ms=800, aging_ms=100) == 9
    assert effective_priority(1, waited_ms=10_000, aging_ms=100) == 9


@pytest.mark.parametrize("aging_ms", [100.0, None])
def test_sustained_high_priority_load_delays_a_low_request_by_a_bounded_amount(
        aging_ms: float | None) -> None:
    # Given the engine held, a clock we move by hand, one low request at t = 0 and then a
    # high-priority request every 100 ms for 3 s: more than the engine can take one at a time
    clock = {"now_ms": 0.0}
    hooks = GateHooks()
    engine = NoopEngine(noop_spec())
    engine.load()
    batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, hooks=hooks, aging_ms=aging_ms,
                      clock_ms=lambda: clock["now_ms"])
    batcher.start()
    held = batcher.submit(embed("held", "in the engine"))
    assert hooks.entered.wait(10)
    low = batcher.submit(embed("low", "patient", priority=1))
    highs = []
    for i in range(30):
        clock["now_ms"] = 100.0 * i
        highs.append(batcher.submit(embed(f"high-{i}", f"urgent {i}", priority=9)))
    # When the engine runs them
    hooks.gate.set()
    for future in [held, low, *highs]:
        future.result(timeout=30)
    batcher.stop()
    order = [batch[0] for batch in hooks.batches]
    # Then with aging the low request waits only for highs submitted within 8 x 100 ms of it;
    # with strict priority it waits for all 30
    assert order.index("low") == (1 + 8 if aging_ms else 1 + 30), order


def test_a_job_larger_than_the_batch_runs_alone() -> None:
    import heapq

    heap = [pending("huge", 5, 0, inputs=100), pending("next", 5, 1)]
    heapq.heapify(heap)
    assert [i.request.job_id for i in select_batch(heap, 8, lambda r: 0)] == ["huge"]


def test_64_queued_embeddings_run_in_few_calls_and_equal_each_run_alone(
        minilm: TorchEngine) -> None:
    # Given the engine held on a gate while 64 requests queue behind the first
    hooks = GateHooks()
    batcher = Batcher(minilm, max_batch_size=16, max_wait_ms=5, hooks=hooks)
    batcher.start()
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" * (1 + i % 3)
             for i in range(64)]
    futures = [batcher.submit(embed(f"job-{i}", text)) for i, text in enumerate(texts)]
    assert hooks.entered.wait(10)
    # When the gate opens
    hooks.gate.set()
    results = [future.result(timeout=60) for future in futures]
    batcher.stop()
    # Then few engine calls ran them, and each vector equals the text embedded alone
    assert batcher.engine_calls <= math.ceil(64 / 16) + 1
    alone = [minilm.run_batch([embed("alone", text)])[0].output for text in texts]
    np.testing.assert_allclose(np.array([r.output for r in results]), np.array(alone),
                               atol=1e-5)
    assert all(result.tokens > 0 for result in results)


def test_high_priority_requests_overtake_a_backlog() -> None:
    # Given the engine held while 2,000 low-priority requests and then 20 high ones queue
    hooks = GateHooks()
    engine = NoopEngine(noop_spec())
    engine.load()
    batcher = Batcher(engine, max_batch_size=32, max_wait_ms=1, hooks=hooks)
    batcher.start()
    finished: list[str] = []
    lock = threading.Lock()

    def record(job_id: str, _: Future[EngineOutput]) -> None:
        with lock:
            finished.append(job_id)

    futures = []
    for i in range(2000):
        futures.append(batcher.submit(embed(f"low-{i}", f"text {i}", priority=1)))
        if i == 0:
            assert hooks.entered.wait(10)
    for i in range(20):
        futures.append(batcher.submit(embed(f"high-{i}", f"urgent {i}", priority=9)))
    job_ids = [*(f"low-{i}" for i in range(2000)), *(f"high-{i}" for i in range(20))]
    for future, job_id in zip(futures, job_ids, strict=True):
        future.add_done_callback(functools.partial(record, job_id))
    # When the gate opens
    hooks.gate.set()
    for future in futures:
        future.result(timeout=60)
    batcher.stop()
    # Then every high-priority request finished before 90 % of the backlog
    ranks = [finished.index(f"high-{i}") for i in range(20)]
    assert max(ranks) < 0.1 * len(finished), ranks


def test_a_poisoned_input_fails_only_its_own_request() -> None:
    engine = PoisonEngine(noop_spec())
    hooks = GateHooks()
    batcher = Batcher(engine, max_batch_size=16, max_wait_ms=1, hooks=hooks)
    batcher.start()
    first = batcher.submit(embed("first", "fine"))
    assert hooks.entered.wait(10)
    futures = {f"job-{i}": batcher.submit(embed(f"job-{i}", "POISON" if i == 5 else f"ok {i}"))
               for i in range(12)}
    hooks.gate.set()
    assert first.result(timeout=30).output
    with pytest.raises(EngineInputError, match="job-5.*poisoned"):
        futures.pop("job-5").result(timeout=30)
    assert all(len(f.result(timeout=30).output) == 16 for f in futures.values())
    batcher.stop()


def test_a_request_past_its_timeout_fails_alone() -> None:
    # Given the engine held on a gate, a request with a short timeout among patient ones
    engine = NoopEngine(noop_spec())
    hooks = GateHooks()
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=1, hooks=hooks)
    batcher.start()
    running = batcher.submit(embed("running", "held in the engine"))
    assert hooks.entered.wait(10)
    impatient = batcher.submit(embed("impatient", "short fuse", timeout_s=0.05))
    patient = [batcher.submit(embed(f"patient-{i}", f"text {i}")) for i in range(5)]
    # When its deadline passes (while the gate is still closed)
    assert isinstance(impatient.exception(timeout=30), JobTimedOut)
    hooks.gate.set()
    # Then only it failed
    assert running.result(timeout=30).output
    assert all(future.result(timeout=30).output for future in patient)
    assert all("impatient" not in batch for batch in hooks.batches)
    batcher.stop()


class PauseAfterStep(BatcherHooks):
    def __init__(self, step: int) -> None:
        self.step = step
        self.paused = threading.Event()
        self.resume = threading.Event()

    def after_step(self, batch: Sequence[EngineRequest], step: int) -> None:
        if step == self.step:
            self.paused.set()
            if not self.resume.wait(timeout=60):
                raise TimeoutError("the test never resumed generation")


def test_streamed_tokens_are_a_prefix_while_running_and_the_whole_at_the_end(
        gpt2_tiny: PagedEngine) -> None:
    hooks = PauseAfterStep(step=3)
    batcher = Batcher(gpt2_tiny, max_batch_size=4, max_wait_ms=1, hooks=hooks)
    batcher.start()
    pieces: list[str] = []
    future: Future[EngineOutput] = batcher.submit(EngineRequest(
        "stream", TaskType.GENERATE, "Tell me a story", on_token=pieces.append,
        params=GenerationParams(max_new_tokens=24)))
    # Given generation paused after step 3
    assert hooks.paused.wait(30)
    so_far = "".join(pieces)
    assert not future.done()
    hooks.resume.set()
    result = future.result(timeout=60)
    batcher.stop()
    # Then what streamed by then was a strict prefix, and everything streamed is the result
    assert result.output.startswith(so_far) and len(result.output) > len(so_far)
    assert "".join(pieces) == result.output
    assert result.tokens > 4


def test_stop_drains_what_is_queued() -> None:
    engine = NoopEngine(noop_spec())
    hooks = GateHooks()
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=1, hooks=hooks)
    batcher.start()
    futures = [batcher.submit(embed(f"job-{i}", f"text {i}")) for i in range(10)]
    assert hooks.entered.wait(10)
    hooks.gate.set()
    batcher.stop(drain=True)
    assert all(future.result(timeout=0).output for future in futures)

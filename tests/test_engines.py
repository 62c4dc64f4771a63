"""The engines: real models on the torch engine (embed, classify) and the paged engine
(generate), the noop engine, the vLLM adapter."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from infermq.errors import ConfigError, EngineUnavailable, JobTimedOut
from infermq.jobs import ChatMessage, GenerationParams, TaskType
from infermq.registry import ModelSpec, load_registry, parse_registry
from infermq.settings import Settings
from tests.engine_support import GPT2_TINY, MODELS_DIR, noop_spec, registry_spec
from workers.batching import Batcher
from workers.engines import build_engine
from workers.engines.base import EngineRequest
from workers.engines.noop import NoopEngine
from workers.engines.paged.engine import PagedEngine
from workers.engines.sources import READY_MARKER, model_dir, prepare_model
from workers.engines.torch_engine import TorchEngine
from workers.engines.vllm import VllmEngine


@pytest.fixture(scope="session")
def smollm2_dir() -> Any:
    """The one-time GGUF → safetensors conversion (about 25 s the first time, then cached)."""
    return prepare_model(registry_spec("smollm2"), MODELS_DIR)


def test_build_engine_chooses_by_the_registry_engine_field() -> None:
    settings = Settings(models_dir=MODELS_DIR, torch_threads=1)
    assert isinstance(build_engine(noop_spec(), settings), NoopEngine)
    assert isinstance(build_engine(registry_spec("minilm"), settings), TorchEngine)
    assert isinstance(build_engine(registry_spec("smollm2"), settings), PagedEngine)


def test_every_generation_model_of_the_registry_is_paged_and_torch_is_refused() -> None:
    registry = load_registry()
    generate = [spec for spec in registry.models.values() if TaskType.GENERATE in spec.task_types]
    assert generate and {spec.engine for spec in generate} == {"paged"}
    data = {"task_types": {"generate": {"default_model": "static"}},
            "models": {"static": {"task_types": ["generate"], "engine": "torch",
                                  "source": "random:gpt2-tiny", "memory_mib": 16}}}
    with pytest.raises(ConfigError, match=r'torch engine serves embed and classify.*"paged"'):
        parse_registry(data)
    with pytest.raises(ConfigError, match='"paged"'):
        TorchEngine(GPT2_TINY.model_copy(update={"engine": "torch"}), MODELS_DIR)


@pytest.fixture
def gpt2_paged() -> Iterator[PagedEngine]:
    engine = PagedEngine(GPT2_TINY, MODELS_DIR, device="cpu")
    engine.load()
    yield engine
    engine.unload()


def test_minilm_embeddings_equal_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    engine = TorchEngine(registry_spec("minilm"), MODELS_DIR)
    engine.load()
    texts = ["A man is eating food.", "The weather is lovely today, isn't it?"]
    [single, several] = engine.run_batch([
        EngineRequest("one", TaskType.EMBED, texts[0]),
        EngineRequest("two", TaskType.EMBED, texts)])
    reference = SentenceTransformer(str(model_dir(registry_spec("minilm"), MODELS_DIR)),
                                    device="cpu").encode(texts)
    # The reference runs in float32 on the CPU; on CUDA the engine runs in float16, whose
    # resolution (2**-10 relative) bounds how close the two can be.
    atol = 1e-5 if engine.dtype == torch.float32 else 2e-3
    assert len(single.output) == 384 and len(several.output) == 2
    np.testing.assert_allclose(np.array(several.output), reference, atol=atol)
    np.testing.assert_allclose(np.array(single.output), reference[0], atol=atol)


def test_classifier_labels_each_text_and_batches_like_alone() -> None:
    engine = TorchEngine(registry_spec("tiny-classifier"), MODELS_DIR)
    engine.load()
    texts = ["great product", "terrible service, never again", "it is fine"]
    batched = engine.run_batch([EngineRequest("all", TaskType.CLASSIFY, texts)])[0].output
    for text, result in zip(texts, batched, strict=True):
        alone = engine.run_batch([EngineRequest("one", TaskType.CLASSIFY, text)])[0].output
        assert result["label"] == alone["label"] in result["scores"]
        assert sum(result["scores"].values()) == pytest.approx(1.0)


def test_generation_honours_each_requests_max_new_tokens_and_a_bad_input_fails_alone(
        gpt2_paged: PagedEngine) -> None:
    outputs = gpt2_paged.run_batch([
        EngineRequest("short", TaskType.GENERATE, "hi", params=GenerationParams(max_new_tokens=3)),
        EngineRequest("long", TaskType.GENERATE, [ChatMessage(role="user", content="hello")],
                      params=GenerationParams(max_new_tokens=20, temperature=0.7, seed=1)),
        EngineRequest("two", TaskType.GENERATE, ["a", "b"],
                      params=GenerationParams(max_new_tokens=5)),
        EngineRequest("too-long", TaskType.GENERATE, "x",
                      params=GenerationParams(max_new_tokens=4000)),
    ])
    assert 0 < outputs[0].tokens <= 3 and 0 < outputs[1].tokens <= 20
    assert isinstance(outputs[1].output, str)
    assert isinstance(outputs[2].output, list) and len(outputs[2].output) == 2
    assert outputs[3].error is not None and "too-long" in str(outputs[3].error)


def test_greedy_and_seeded_rows_give_in_a_batch_what_they_give_alone(
        gpt2_paged: PagedEngine) -> None:
    # Given greedy requests of uneven prompts and lengths, and a seeded sampled one
    prompts = ["hi", "a much longer prompt about the history of Rome and its roads", "x y z"]

    def requests() -> list[EngineRequest]:
        batch = [EngineRequest(f"r{i}", TaskType.GENERATE, prompt,
                               params=GenerationParams(max_new_tokens=6 + 5 * i))
                 for i, prompt in enumerate(prompts)]
        return [*batch, EngineRequest("sampled", TaskType.GENERATE, prompts[0],
                                      params=GenerationParams(max_new_tokens=12, temperature=0.9,
                                                              seed=7))]

    # When they run together and each alone, Then every row's text and token count are the same
    together = gpt2_paged.run_batch(requests())
    alone = [gpt2_paged.run_batch([request])[0] for request in requests()]
    assert [o.output for o in together] == [o.output for o in alone]
    assert [o.tokens for o in together] == [o.tokens for o in alone]
    assert all(o.error is None and o.tokens > 0 for o in together)


def test_a_prepared_model_is_reused_and_an_interrupted_one_rebuilt(tmp_path: Any) -> None:
    spec = ModelSpec(name="clf", task_types=(TaskType.CLASSIFY,), engine="torch",
                     source="random:bert-tiny-classifier", memory_mib=10)
    (tmp_path / "tokenizers").symlink_to(MODELS_DIR / "tokenizers")
    first = prepare_model(spec, tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert prepare_model(spec, tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    (first / READY_MARKER).unlink()
    assert (prepare_model(spec, tmp_path) / READY_MARKER).exists()


@pytest.mark.timeout(60)
def test_smollm2_answers_with_text(smollm2_dir: Any) -> None:
    # The GGUF SmolLM2 (Llama, grouped KV heads) on the paged engine, with its chat template
    engine = PagedEngine(registry_spec("smollm2"), MODELS_DIR)
    engine.load()
    try:
        question = [ChatMessage(role="user", content="What is the capital of France?")]
        [answer] = engine.run_batch([EngineRequest(
            "q", TaskType.GENERATE, question, params=GenerationParams(max_new_tokens=12))])
    finally:
        engine.unload()
    assert answer.error is None and answer.output.strip() and answer.tokens > 0


# --- the vLLM adapter, against a stand-in of vllm 0.11.0's API surface ----------------------


@dataclass
class StandInArgs:
    model: str
    dtype: str = "auto"
    scheduling_policy: str = "fcfs"
    gpu_memory_utilization: float = 0.9


@dataclass
class StandInSamplingParams:
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class StandInCompletion:
    text: str
    token_ids: list[int]


@dataclass
class StandInRequestOutput:
    request_id: str
    outputs: list[StandInCompletion]
    finished: bool


@dataclass
class StandInAsyncLLM:
    """Echoes the prompt's words (cumulative outputs, as vLLM's default output kind)."""

    args: StandInArgs
    priorities: dict[str, int] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    abort_called: threading.Event = field(default_factory=threading.Event)
    shut_down: bool = False

    @classmethod
    def from_engine_args(cls, args: StandInArgs) -> StandInAsyncLLM:
        asyncio.get_running_loop()  # the adapter must create it on its loop
        engine = cls(args)
        engine.hold.set()
        return engine

    async def get_tokenizer(self) -> Any:
        return types.SimpleNamespace(chat_template=None)

    async def generate(self, prompt: str, sampling_params: StandInSamplingParams,
                       request_id: str, *, priority: int = 0
                       ) -> AsyncIterator[StandInRequestOutput]:
        self.priorities[request_id] = priority
        words = prompt.split()[: sampling_params.max_tokens]
        for i in range(1, len(words) + 1):
            while not self.hold.is_set():
                if request_id in self.aborted:
                    return
                await asyncio.sleep(0.001)
            text = " ".join(words[:i])
            yield StandInRequestOutput(request_id, [StandInCompletion(text, list(range(i)))],
                                       i == len(words))

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self.abort_called.set()

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def stand_in_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("vllm")
    module.AsyncEngineArgs = StandInArgs  # type: ignore[attr-defined]
    module.SamplingParams = StandInSamplingParams  # type: ignore[attr-defined]
    module.AsyncLLMEngine = StandInAsyncLLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    yield module


def vllm_engine() -> VllmEngine:
    spec = ModelSpec(name="tiny-vllm", task_types=(TaskType.GENERATE,), engine="vllm",
                     source="random:gpt2-tiny", revision="0", memory_mib=16)
    return VllmEngine(spec, MODELS_DIR)


def test_vllm_adapter_streams_and_passes_priority(stand_in_vllm: types.ModuleType) -> None:
    engine = vllm_engine()
    engine.load()
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=1)
    batcher.start()
    pieces: list[str] = []
    streamed = batcher.submit(EngineRequest("s", TaskType.GENERATE, "one two three four",
                                            priority=9, on_token=pieces.append))
    several = batcher.submit(EngineRequest("m", TaskType.GENERATE, ["a b", "c d e"], priority=2,
                                           params=GenerationParams(max_new_tokens=2)))
    assert streamed.result(timeout=30).output == "".join(pieces) == "one two three four"
    assert several.result(timeout=30).output == ["a b", "c d"]
    batcher.stop()
    llm = engine._engine
    assert llm.args.scheduling_policy == "priority"
    assert llm.priorities == {"s": 0, "m:0": 7, "m:1": 7}
    engine.unload()
    assert llm.shut_down


def test_vllm_adapter_aborts_a_request_past_its_timeout(stand_in_vllm: types.ModuleType) -> None:
    engine = vllm_engine()
    engine.load()
    llm = engine._engine
    llm.hold.clear()
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=1)
    batcher.start()
    future = batcher.submit(EngineRequest("late", TaskType.GENERATE, "never ends", timeout_s=0.05))
    assert isinstance(future.exception(timeout=30), JobTimedOut)
    assert llm.abort_called.wait(10)
    assert llm.aborted == ["late"]
    batcher.stop()
    engine.unload()


def test_vllm_missing_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'infermq\[vllm\]'"):
        vllm_engine().load()

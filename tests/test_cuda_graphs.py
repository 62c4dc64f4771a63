"""CUDA-graph decoding gives what eager fixed-shape decoding gives (CUDA only: skipped on a CPU).

On a GPU machine without the queue's services: ``pytest --noconftest tests/test_cuda_graphs.py``.
"""

from __future__ import annotations

import pytest
import torch

from infermq.jobs import GenerationParams, TaskType
from infermq.registry import ModelSpec
from tests.engine_support import GPT2_TINY, MODELS_DIR
from workers.engines import gqa_attention
from workers.engines.base import EngineRequest
from workers.engines.cuda_graphs import DecodeGraphs
from workers.engines.torch_engine import TorchEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")

SMOLLM2_135M_RANDOM = ModelSpec(name="smollm2-135m-random", task_types=(TaskType.GENERATE,),
                                engine="torch", source="random:smollm2-135m", revision="0",
                                memory_mib=600)

PROMPTS = ["hi", "a much longer prompt about the history of Rome and its roads", "x y z",
           "the weather", "interest rates went up again this spring, said the bank"]


def requests(count: int, sampled_seed: int | None = None) -> list[EngineRequest]:
    """Greedy requests of uneven prompts and lengths; the last one sampled when seeded."""
    batch = [EngineRequest(f"r{i}", TaskType.GENERATE, PROMPTS[i % len(PROMPTS)],
                           params=GenerationParams(max_new_tokens=6 + 5 * i))
             for i in range(count)]
    if sampled_seed is not None:
        batch[-1] = EngineRequest("sampled", TaskType.GENERATE, PROMPTS[0], params=GenerationParams(
            max_new_tokens=12, temperature=0.7, seed=sampled_seed))
    return batch


def engine_pair(spec: ModelSpec, dtype: str) -> tuple[TorchEngine, TorchEngine]:
    eager = TorchEngine(spec, MODELS_DIR, "cuda", dtype, static_shapes=True, cuda_graphs=False)
    graphed = TorchEngine(spec, MODELS_DIR, "cuda", dtype, static_shapes=True, cuda_graphs=True)
    eager.load()
    graphed.load()
    # No EOS: every row runs to its max_new_tokens, so every step is compared.
    eager._eos_ids = graphed._eos_ids = set()
    return eager, graphed


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("spec", [GPT2_TINY, SMOLLM2_135M_RANDOM], ids=lambda s: s.name)
def test_graph_decoding_writes_the_eager_fixed_shape_tokens(spec: ModelSpec, dtype: str) -> None:
    # Given two engines of one model in fixed shapes, one replaying CUDA graphs
    eager, graphed = engine_pair(spec, dtype)
    # When both decode batches of three shapes (3 rows, 5 rows, 3 rows again with a seeded
    # sampled row), reusing the first shape's graph
    for batch in (requests(3), requests(5), requests(3, sampled_seed=7)):
        expected = eager.run_batch(batch)
        got = graphed.run_batch(batch)
        # Then every row's text and token count are the same
        assert [o.output for o in got] == [o.output for o in expected]
        assert [o.tokens for o in got] == [o.tokens for o in expected]
    # And the graphed engine did decode with graphs
    assert graphed._decode_graphs is not None and not graphed._decode_graphs.failed
    assert len(graphed._decode_graphs) == 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fused", [True, False], ids=["enable-gqa", "folded"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gqa_attention_replays_the_greedy_tokens_of_copied_kv_heads(
        dtype: str, fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given SmolLM2-135M's shape (9 query heads over 3 KV heads) decoding with graphs, with the
    # GQA attention (SDPA's enable_gqa, or the folded decode step where no fused kernel takes
    # it) and with transformers' sdpa
    if not fused:
        monkeypatch.setattr(gqa_attention, "sdpa_fuses_gqa", lambda *args: False)
    folded = TorchEngine(SMOLLM2_135M_RANDOM, MODELS_DIR, "cuda", dtype, static_shapes=True)
    copied = TorchEngine(SMOLLM2_135M_RANDOM, MODELS_DIR, "cuda", dtype, static_shapes=True,
                         gqa_attention=False)
    folded.load()
    copied.load()
    folded._eos_ids = copied._eos_ids = set()
    # When both decode batches of two shapes, Then every row's text and token count are the same
    for batch in (requests(3), requests(5)):
        expected = copied.run_batch(batch)
        got = folded.run_batch(batch)
        assert [o.output for o in got] == [o.output for o in expected]
        assert [o.tokens for o in got] == [o.tokens for o in expected]
    assert folded._decode_graphs is not None and not folded._decode_graphs.failed


@pytest.mark.timeout(120)
def test_warm_up_captures_the_buckets_and_at_most_max_graphs_are_kept() -> None:
    engine = TorchEngine(GPT2_TINY.model_copy(update={"max_batch_size": 4}), MODELS_DIR, "cuda",
                         "float32")
    engine.load()
    engine.warm_up()
    graphs = engine._decode_graphs
    assert graphs is not None and not graphs.failed
    # Buckets 4, 2, 1, each at the default request's cache length and the warm-up's own
    assert len(graphs) == 6
    # When three more shapes that fit the cache arena are captured under a bound of two
    graphs.max_graphs = 2
    for rows, cache_len in ((1, 192), (2, 192), (1, 256)):
        assert graphs.graph_for(rows, cache_len) is not None
    # Then the two most recent are kept
    assert len(graphs) == 2


def test_a_capture_that_fails_turns_graphs_off_and_decoding_goes_on() -> None:
    eager, graphed = engine_pair(GPT2_TINY, "float32")
    assert graphed._decode_graphs is not None

    class SynchronisingModel:
        device = graphed.device

        def __call__(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("operation not permitted when stream is capturing")

    # Given graphs of a model whose capture fails
    graphed._decode_graphs = DecodeGraphs(SynchronisingModel(), "broken")
    # When the engine decodes, Then it gives the eager tokens and stops trying to capture
    expected = eager.run_batch(requests(3))
    got = graphed.run_batch(requests(3))
    assert [o.output for o in got] == [o.output for o in expected]
    assert graphed._decode_graphs.failed and len(graphed._decode_graphs) == 0

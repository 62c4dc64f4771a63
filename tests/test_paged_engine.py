"""The paged engine's core on the CPU: greedy equals transformers' generate, preemption by
priority, seeded sampling independent of neighbours, and block accounting (property test)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.engines.paged.blocks import BlockManager
from workers.engines.paged.core import EngineCore, Sampling
from workers.engines.paged.scheduler import Scheduler, Sequence

PROMPTS = [[5, 17, 99, 3], [7, 1, 7, 2, 7, 3, 7, 4, 7, 5, 7], list(range(1, 19)), [42]]


def tiny_model(kind: str) -> Any:
    """A small random model of GPT-2 or Llama shape (grouped KV heads for Llama)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        gpt2 = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=211, n_positions=256,
                            bos_token_id=0, eos_token_id=0, initializer_range=0.3)
        return GPT2LMHeadModel(gpt2).eval()
    llama = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=211,
                         max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
                         initializer_range=0.3)
    return LlamaForCausalLM(llama).eval()


def reference(model: Any, prompt: list[int], new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_and_reference(request: pytest.FixtureRequest
                        ) -> tuple[Any, list[list[int]]]:
    model = tiny_model(request.param)
    with torch.inference_mode():
        return model, [reference(model, prompt, 24) for prompt in PROMPTS]


def test_greedy_alone_equals_generate(model_and_reference) -> None:  # noqa: ANN001
    model, expected = model_and_reference
    for prompt, tokens in zip(PROMPTS, expected, strict=True):
        core = EngineCore(model, num_blocks=32, block_size=4)
        seq = Sequence(prompt, 24)
        core.add(seq)
        core.run_to_end()
        assert seq.new_ids == tokens
    assert len(set(map(tuple, expected))) == len(expected), "the reference is degenerate"


def test_greedy_mixed_into_a_running_batch_equals_generate(model_and_reference) -> None:  # noqa: ANN001
    model, expected = model_and_reference
    core = EngineCore(model, num_blocks=64, block_size=4)
    seqs = [Sequence(prompt, 24) for prompt in PROMPTS]
    core.add(seqs[0])
    core.step()
    core.step()
    core.add(seqs[1])
    core.step()
    core.add(seqs[2])
    core.add(seqs[3])
    for _ in range(5):
        core.step()
    assert {len(s.new_ids) for s in seqs[2:]} == {5}, "joined at the next step"
    core.run_to_end()
    assert [seq.new_ids for seq in seqs] == expected
    assert core.blocks.free_count == core.blocks.num_blocks


def test_priority_9_preempts_a_full_priority_0_running_set(model_and_reference) -> None:  # noqa: ANN001
    model, expected = model_and_reference
    core = EngineCore(model, num_blocks=64, block_size=4, max_num_seqs=2)
    low = [Sequence(PROMPTS[0], 24, priority=0), Sequence(PROMPTS[1], 24, priority=0)]
    for seq in low:
        core.add(seq)
    for _ in range(3):
        core.step()
    urgent = Sequence(PROMPTS[2], 24, priority=9)
    core.add(urgent)
    first = core.step()
    assert urgent in first.plan.prefill and len(urgent.new_ids) == 1
    assert [seq.running for seq in low].count(False) == 1
    assert first.plan.preempted == [low[1]], "the later of the equal priority-0 jobs yields"
    core.run_to_end()
    assert urgent.new_ids == expected[2]
    assert [seq.new_ids for seq in low] == expected[:2], "the preempted job recomputes exactly"
    assert low[1].preemptions == 1


def test_preemption_is_bounded_per_sequence(model_and_reference) -> None:  # noqa: ANN001
    model, _ = model_and_reference
    core = EngineCore(model, num_blocks=64, block_size=4, max_num_seqs=1, max_preemptions=2)
    low = Sequence(PROMPTS[0], 40, priority=0)
    core.add(low)
    urgent = []
    for _ in range(3):
        while not low.running:
            core.step()
        urgent.append(Sequence([1, 2], 2, priority=9))
        core.add(urgent[-1])
        while not urgent[-1].finished:
            core.step()
    assert low.preemptions == 2
    assert low.finished, "the third priority-9 job waited for the twice-preempted one"
    assert len(low.new_ids) == 40


def test_aging_orders_admission_without_starving(model_and_reference) -> None:  # noqa: ANN001
    model, _ = model_and_reference
    clock = [0.0]
    aging_ms = 100.0

    def key(seq: Sequence, sequence: int) -> tuple[float, int]:
        return (clock[0] - seq.priority * aging_ms, sequence)

    core = EngineCore(model, num_blocks=64, block_size=4, max_num_seqs=1, scheduler_key=key)
    old = Sequence([3, 4], 2, priority=0)
    core.add(old)
    clock[0] = 1000.0  # ten aging periods later, a stream of priority-5 jobs
    fresh = [Sequence([5, 6], 2, priority=5) for _ in range(3)]
    for seq in fresh:
        core.add(seq)
    first = core.step()
    assert first.plan.prefill == [old], "the aged priority-0 job is admitted first"


def test_seeded_row_does_not_depend_on_neighbours(model_and_reference) -> None:  # noqa: ANN001
    model, _ = model_and_reference

    def run(neighbours: int) -> list[int]:
        core = EngineCore(model, num_blocks=64, block_size=4)
        mine = Sequence(PROMPTS[1], 12)
        core.add(mine, Sampling(temperature=1.0, top_p=0.9, seed=7))
        for i in range(neighbours):
            core.add(Sequence(PROMPTS[i % 3], 12), Sampling(temperature=1.0, seed=100 + i))
        core.run_to_end()
        return mine.new_ids

    alone = run(0)
    assert run(3) == alone
    assert len(set(alone)) > 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "step", "finish"]),
                          st.integers(0, 9), st.integers(1, 30), st.integers(1, 20)),
                max_size=60))
def test_blocks_free_plus_used_equal_the_arena(ops: list[tuple[str, int, int, int]]) -> None:
    blocks = BlockManager(num_blocks=24, block_size=4)
    scheduler = Scheduler(blocks, max_num_seqs=5, max_prefill_tokens=40)
    live: list[Sequence] = []
    for op, priority, prompt_len, new in ops:
        if op == "add":
            seq = Sequence(list(range(prompt_len)), new, priority=priority)
            scheduler.add(seq)
            live.append(seq)
        elif op == "step":
            plan = scheduler.schedule()
            for seq in plan.prefill + plan.decode:  # each got a token; at its end it finishes
                seq.new_ids.append(1)
                if len(seq.new_ids) >= seq.max_new_tokens:
                    scheduler.finish(seq)
        elif live:
            scheduler.finish(live[priority % len(live)])
        owned = [block for table in blocks.tables.values() for block in table]
        assert len(owned) == len(set(owned))
        assert blocks.free_count + blocks.used_count == blocks.num_blocks
        assert set(blocks.tables) == {seq.seq_id for seq in scheduler.running.values()}
        assert all(seq.preemptions <= scheduler.max_preemptions for seq in live)
        assert len(scheduler.running) <= scheduler.max_num_seqs
    while scheduler.has_work:
        plan = scheduler.schedule()
        assert plan.prefill or plan.decode, "work left but nothing runs"
        for seq in plan.prefill + plan.decode:
            seq.new_ids.append(1)
            if len(seq.new_ids) >= seq.max_new_tokens:
                scheduler.finish(seq)
    assert blocks.free_count == blocks.num_blocks

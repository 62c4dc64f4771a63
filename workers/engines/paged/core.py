"""The paged engine's step loop without threads: scheduler + block manager + runner.

``EngineCore.step`` plans one step (``Scheduler.schedule``), prefills the admitted sequences,
decodes the running ones in one batched call (a CUDA graph per bucket on CUDA), samples, and
returns the sequences that got a token and those that finished. The engine class
(``engine.py``) drives it from its own thread; tests drive it directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engines.paged.blocks import BlockManager
from workers.engines.paged.runner import DecodeStep, PagedModel, bucket, sample
from workers.engines.paged.scheduler import Scheduler, Sequence, StepPlan


@dataclass
class Sampling:
    """A sequence's sampling parameters; an unseeded sampled row gets a random seed."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    eos_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False


@dataclass
class StepResult:
    plan: StepPlan
    stepped: list[Sequence] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)


class EngineCore:
    """One model's paged KV arena and the scheduler over it."""

    def __init__(self, hf_model: Any, num_blocks: int, block_size: int = 16,
                 max_num_seqs: int = 256, cuda_graphs: bool = True,
                 max_prefill_tokens: int = 8192, scheduler_key: Any = None,
                 max_preemptions: int = 2) -> None:
        self.model = PagedModel(hf_model, num_blocks, block_size)
        self.blocks = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_prefill_tokens,
                                   max_preemptions, key=scheduler_key)
        self.cuda_graphs = cuda_graphs and self.model.device.type == "cuda"
        self.max_num_seqs = max_num_seqs
        self._steps: dict[tuple[int, int], DecodeStep] = {}
        self.step_count = 0

    def add(self, seq: Sequence, sampling: Sampling | None = None) -> None:
        """Queues ``seq`` (its ``payload`` keeps the caller's data; sampling rides beside)."""
        sampling = sampling or Sampling()
        if sampling.temperature > 0 and sampling.seed is None:
            sampling.seed = random.getrandbits(31)
        seq.sampling = sampling  # type: ignore[attr-defined]
        self.scheduler.add(seq)

    def cancel(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)

    def decode_step(self, rows: int, blocks: int) -> DecodeStep:
        key = (bucket(rows), bucket(blocks))
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = DecodeStep(self.model, key[0], key[1], self.cuda_graphs)
        return step

    @torch.inference_mode()
    def warm_up(self, max_context: int) -> None:
        """Captures every bucket's decode graph up to ``max_num_seqs`` rows and contexts of
        ``max_context`` tokens (largest first), so no job pays for a capture."""
        if not self.cuda_graphs:
            return
        top = bucket(-(-max_context // self.blocks.block_size))
        rows = bucket(self.max_num_seqs)
        while rows >= 1:
            blocks = top
            while blocks >= 1:
                self.decode_step(rows, blocks)
                blocks //= 2
            rows //= 2

    @torch.inference_mode()
    def step(self) -> StepResult:
        """Runs one scheduler step; sequences that reached their end are finished."""
        plan = self.scheduler.schedule()
        result = StepResult(plan)
        stepped: list[Sequence] = []
        picked: list[torch.Tensor] = []  # each part's next tokens, read with one sync
        tables = self.blocks.tables
        if plan.prefill:
            logits = self.model.prefill([seq.tokens() for seq in plan.prefill],
                                        [tables[seq.seq_id] for seq in plan.prefill])
            picked.append(self._sample(plan.prefill, logits, logits.argmax(dim=-1)))
            stepped += plan.prefill
        if plan.decode:
            rows = plan.decode
            n = len(rows)
            held = [tables[seq.seq_id] for seq in rows]
            step = self.decode_step(n, max(map(len, held)))
            step.load([seq.new_ids[-1] for seq in rows], [seq.length - 1 for seq in rows], held)
            logits, greedy = step.run()
            picked.append(self._sample(rows, logits[:n], greedy[:n]))
            stepped += rows
        new_tokens: list[int] = torch.cat(picked).tolist() if picked else []
        for seq, token in zip(stepped, new_tokens, strict=True):
            sampling: Sampling = seq.sampling  # type: ignore[attr-defined]
            if token in sampling.eos_ids and not sampling.ignore_eos:
                self.scheduler.finish(seq)
                result.finished.append(seq)
                continue
            seq.new_ids.append(token)
            result.stepped.append(seq)
            if len(seq.new_ids) >= seq.max_new_tokens:
                self.scheduler.finish(seq)
                result.finished.append(seq)
        self.step_count += 1
        return result

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor, greedy: torch.Tensor
                ) -> torch.Tensor:
        """The rows' next tokens, on the device (the step reads them all at once)."""
        params = [seq.sampling for seq in seqs]  # type: ignore[attr-defined]
        if all(p.temperature <= 0 for p in params):
            return greedy
        device = logits.device
        tokens = sample(
            logits, greedy,
            torch.tensor([p.temperature for p in params], device=device),
            torch.tensor([p.top_p for p in params], device=device),
            torch.tensor([p.seed or 0 for p in params], device=device),
            torch.tensor([len(seq.new_ids) for seq in seqs], device=device))
        return tokens

    def run_to_end(self) -> None:
        """Steps until nothing waits or runs (tests, offline use)."""
        while self.scheduler.has_work:
            self.step()

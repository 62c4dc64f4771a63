"""The paged engine's scheduler: who prefills, who decodes, who is preempted, each step.

Pure Python, no torch. Waiting sequences sit in a heap by the batcher's ``urgency_key`` (so
aging carries over from ``workers/batching.py``); running ones hold KV blocks from the
``BlockManager``. ``schedule`` is called once per engine step and decides, in this order:

1. Every running sequence gets room for the token it decodes this step. When blocks run out,
   the least important running sequence (lowest base priority, latest arrival) is preempted
   until the rest fit: this preemption is forced by memory and has no bound.
2. Waiting sequences are admitted by urgency (effective priority, aging included) while a
   slot (``max_num_seqs``) and blocks for their whole context are free, and the step's prefill
   budget lasts.
3. When the most urgent waiting sequence does not fit and its *base* priority is strictly
   higher than the lowest base priority running, that running sequence is preempted (blocks
   freed, its tokens kept, recomputed when readmitted, its place in the heap kept) and
   admission retries. Aging never preempts. A sequence is preempted this way at most
   ``max_preemptions`` times (default 2); after that only memory can preempt it, so nothing
   ping-pongs.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.engines.paged.blocks import BlockManager

DEFAULT_MAX_PREEMPTIONS = 2


@dataclass(eq=False)
class Sequence:
    """One prompt being generated: its tokens so far and its scheduling state."""

    prompt_ids: list[int]
    max_new_tokens: int
    priority: int = 5
    key: tuple[float, int] = (0.0, 0)
    payload: Any = None
    seq_id: int = -1
    new_ids: list[int] = field(default_factory=list)
    preemptions: int = 0
    running: bool = False
    finished: bool = False

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.new_ids)

    def tokens(self) -> list[int]:
        return self.prompt_ids + self.new_ids

    def importance(self) -> tuple[int, float, int]:
        """Larger is kept longer: base priority, then earlier arrival."""
        return (self.priority, -self.key[0], -self.key[1])


@dataclass
class StepPlan:
    """What one engine step runs: sequences to prefill, to decode, and those preempted."""

    prefill: list[Sequence]
    decode: list[Sequence]
    preempted: list[Sequence]


class Scheduler:
    """Waiting heap, running set and block accounting of one engine."""

    def __init__(self, blocks: BlockManager, max_num_seqs: int,
                 max_prefill_tokens: int = 8192,
                 max_preemptions: int = DEFAULT_MAX_PREEMPTIONS,
                 key: Callable[[Sequence, int], tuple[float, int]] | None = None) -> None:
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.max_preemptions = max_preemptions
        self._key = key or (lambda seq, sequence: (-seq.priority, sequence))
        self._ids = itertools.count()
        self.waiting: list[tuple[tuple[float, int], int, Sequence]] = []
        self.running: dict[int, Sequence] = {}
        self.preemption_count = 0

    def add(self, seq: Sequence) -> None:
        """Queues ``seq``; its urgency key is fixed now (aging needs no re-keying).

        Raises:
            ValueError: ``seq`` could never fit into the whole arena.
        """
        if self.blocks.num_blocks * self.blocks.block_size < seq.length + seq.max_new_tokens:
            raise ValueError(
                f"a sequence of {seq.length} + {seq.max_new_tokens} tokens does not fit the "
                f"KV arena of {self.blocks.num_blocks * self.blocks.block_size} tokens")
        seq.seq_id = next(self._ids)
        seq.key = self._key(seq, seq.seq_id)
        heapq.heappush(self.waiting, (seq.key, seq.seq_id, seq))

    def finish(self, seq: Sequence) -> None:
        """Takes ``seq`` out (finished or cancelled) and frees its blocks."""
        seq.finished = True
        if seq.running:
            seq.running = False
            del self.running[seq.seq_id]
        self.blocks.release(seq.seq_id)

    @property
    def has_work(self) -> bool:
        return bool(self.running) or any(not seq.finished for _, _, seq in self.waiting)

    def _preempt(self, seq: Sequence, plan: StepPlan, by_priority: bool) -> None:
        seq.running = False
        del self.running[seq.seq_id]
        self.blocks.release(seq.seq_id)
        if by_priority:
            seq.preemptions += 1
        self.preemption_count += 1
        plan.preempted.append(seq)
        if seq in plan.decode:
            plan.decode.remove(seq)
        heapq.heappush(self.waiting, (seq.key, seq.seq_id, seq))

    def _least_important(self, exclude: Sequence | None = None, bounded: bool = False,
                         admitted: list[Sequence] | None = None) -> Sequence | None:
        skip = set(map(id, admitted or ()))
        candidates = [seq for seq in self.running.values() if seq is not exclude and not (
            bounded and seq.preemptions >= self.max_preemptions) and id(seq) not in skip]
        return min(candidates, key=Sequence.importance, default=None)

    def schedule(self) -> StepPlan:
        """Plans the next step (see the module's docstring for the rules)."""
        plan = StepPlan([], [], [])
        running = list(self.running.values())
        if self.blocks.reserve_all([(seq.seq_id, seq.length) for seq in running]):
            plan.decode = running  # room for all: no order to weigh, nobody preempted
            running = []
        for seq in sorted(running, key=Sequence.importance, reverse=True):
            if not seq.running:
                continue
            while not self.blocks.reserve(seq.seq_id, seq.length):
                victim = self._least_important(exclude=seq)
                if victim is None or victim.importance() > seq.importance():
                    victim = seq
                self._preempt(victim, plan, by_priority=False)
                if victim is seq:
                    break
            if seq.running:
                plan.decode.append(seq)
        budget = self.max_prefill_tokens
        while self.waiting:
            _, _, head = self.waiting[0]
            if head.finished:
                heapq.heappop(self.waiting)
                continue
            if plan.prefill and head.length > budget:
                break
            if len(self.running) < self.max_num_seqs and self.blocks.reserve(
                    head.seq_id, head.length):
                heapq.heappop(self.waiting)
                head.running = True
                self.running[head.seq_id] = head
                plan.prefill.append(head)
                budget -= head.length
                continue
            victim = self._least_important(bounded=True, admitted=plan.prefill)
            if victim is None or victim.priority >= head.priority:
                break
            self._preempt(victim, plan, by_priority=True)
        return plan

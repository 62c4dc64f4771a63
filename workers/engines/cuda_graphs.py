"""The fixed-shape decode step as a CUDA graph: one launch per step instead of one per kernel.

At batch 64 a decode step of a small model is bound by kernel launches, not arithmetic: on an
H100 the 30 thin layers of SmolLM2-135M cost more per request than the 24 wide ones of GPT-2
medium. Under fixed shapes (``static_cache``) every decode step of a batch has the same shapes,
so the step (the model's forward for one token per row, the mask, the greedy choice, moving the
inputs on by one position) is captured once per (row bucket, cache length) and replayed.

``torch.cuda.CUDAGraph`` rather than ``torch.compile(mode="reduce-overhead")``: capture costs
one forward pass and needs nothing of the model but that it does not synchronise, whereas
compiling traces transformers' Python per shape (seconds to minutes, recompiling on shapes the
guards did not expect) and has to understand the cache class.

What a graph reads and writes lives at fixed addresses: its inputs (tokens, positions, the
cache position, the visible keys) are tensors the loop fills before a replay, and the KV cache
is a view of one arena per engine that every graph shares (one batch decodes at a time), so
memory grows with the largest shape rather than the number of graphs. Graphs are captured
lazily, at most ``MAX_GRAPHS`` kept (least recently used dropped), all in one memory pool.
Top-p sampling stays outside the graph (per-row seeded generators would have to be registered
with every graph): the graph's greedy tokens are used when no row samples.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any

import torch

from workers.engines.static_cache import StaticKVCache, cache_kwargs

log = logging.getLogger(__name__)

MAX_GRAPHS = 32
"""Nine row buckets (1 to 256) at a few cache lengths. A graph holds little of its own (its
logits, the rest is the shared pool and arena), but each costs a capture."""


class KVArena:
    """Flat device buffers, one per layer and keys/values, that graphs' caches are views of."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor | None] = []
        self.grew = False
        """Set when a buffer was reallocated: graphs captured before still hold the old one."""

    def view(self, index: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        self._buffers.extend([None] * (index + 1 - len(self._buffers)))
        buffer = self._buffers[index]
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype:
            buffer = self._buffers[index] = like.new_zeros(numel)
            self.grew = True
        return buffer[:numel].view(shape)


class ArenaKVCache(StaticKVCache):
    """A ``StaticKVCache`` in arena memory that writes at ``write_positions``, a device tensor.

    A position held in a Python int would be frozen into the graph at capture; this one is a
    tensor the graph itself moves on.
    """

    def __init__(self, rows: int, cache_len: int, arena: KVArena,
                 write_positions: torch.Tensor) -> None:
        super().__init__(rows, cache_len)
        self.arena = arena
        self.write_positions = write_positions

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self._keys):
            batch, heads, _, key_dim = key_states.shape
            self._keys.append(self.arena.view(
                2 * layer_idx, (batch, heads, self.cache_len, key_dim), key_states))
            self._values.append(self.arena.view(
                2 * layer_idx + 1, (batch, heads, self.cache_len, value_states.shape[-1]),
                value_states))
        self._keys[layer_idx].index_copy_(2, self.write_positions, key_states)
        self._values[layer_idx].index_copy_(2, self.write_positions, value_states)
        return self._keys[layer_idx], self._values[layer_idx]

    def buffers(self) -> list[torch.Tensor]:
        return [*self._keys, *self._values]


class DecodeGraph:
    """One captured decode step for ``rows`` rows and a cache of ``cache_len`` positions.

    Per batch: ``start`` (a zeroed cache for the eager prefill), ``feed`` (the first tokens),
    then ``replay`` per step; after a replay the graph's greedy tokens are already its next
    input, and ``feed_tokens`` replaces them when some row samples.
    """

    def __init__(self, model: Any, rows: int, cache_len: int, arena: KVArena,
                 pool: Any) -> None:
        device = model.device
        self.model = model
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        self.write_at = torch.zeros(1, dtype=torch.long, device=device)
        # All visible while capturing: a row that sees nothing would write NaN into the cache.
        self.visible = torch.ones((rows, cache_len), dtype=torch.bool, device=device)
        self.keys = torch.arange(cache_len, device=device)
        self.cache = ArenaKVCache(rows, cache_len, arena, self.write_at)
        # Run once uncaptured, on a side stream as torch asks: lazy set-up (cuBLAS workspaces,
        # the cache's first allocation) must not happen inside the capture.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self._step()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other engines of the worker may launch work from their own threads.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.logits, self.greedy = self._step()

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.visible[:, None, None, :] & (self.keys <= self.write_at)
        logits = self.model(input_ids=self.tokens[:, None], attention_mask=mask,
                            position_ids=self.positions[:, None],
                            **cache_kwargs(self.model, self.cache)).logits[:, -1, :]
        greedy = logits.argmax(dim=-1)
        self.tokens.copy_(greedy)
        self.positions.add_(1)
        self.write_at.add_(1)
        return logits, greedy

    def start(self, visible: torch.Tensor, prompt_len: int) -> ArenaKVCache:
        """The zeroed cache, set to take the prompt's ``prompt_len`` positions (eager prefill)."""
        for buffer in self.cache.buffers():
            buffer.zero_()
        self.visible.copy_(visible)
        self.cache.write_positions = torch.arange(prompt_len, device=self.tokens.device)
        return self.cache

    def feed(self, tokens: torch.Tensor, positions: torch.Tensor, prompt_len: int) -> None:
        """The first decode step's inputs: each row's token and position, after the prompt."""
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.write_at.fill_(prompt_len)
        self.cache.write_positions = self.write_at

    def feed_tokens(self, tokens: torch.Tensor) -> None:
        self.tokens.copy_(tokens)

    def replay(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step: the logits and greedy tokens, valid until the next replay."""
        self.graph.replay()
        return self.logits, self.greedy


class DecodeGraphs:
    """The decode graphs of one model, captured on first use of a shape, least recent dropped.

    A capture that fails (a model that synchronises inside its forward, say) is logged once and
    turns graphs off for this model: ``graph_for`` then answers None and the caller decodes
    eagerly in the same fixed shapes.
    """

    def __init__(self, model: Any, name: str, max_graphs: int = MAX_GRAPHS) -> None:
        self.model = model
        self.name = name
        self.max_graphs = max_graphs
        self.failed = False
        self._graphs: OrderedDict[tuple[int, int], DecodeGraph] = OrderedDict()
        self._arena = KVArena()
        self._pool = torch.cuda.graph_pool_handle()

    def __len__(self) -> int:
        return len(self._graphs)

    @torch.inference_mode()
    def graph_for(self, rows: int, cache_len: int) -> DecodeGraph | None:
        """The graph of this shape, captured now if new; None once a capture has failed."""
        if self.failed:
            return None
        key = (rows, cache_len)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        try:
            graph = DecodeGraph(self.model, rows, cache_len, self._arena, self._pool)
        except Exception as e:  # noqa: BLE001 - any failure means: decode this model eagerly
            log.warning("capturing %s's decode step as a CUDA graph failed (%s: %s); decoding "
                        "without graphs", self.name, type(e).__name__, e)
            self.failed = True
            self._graphs.clear()
            return None
        if self._arena.grew:
            # The graphs captured before write into the outgrown buffers: drop them and their
            # memory; they are captured again on their next use.
            self._graphs.clear()
            self._arena.grew = False
        self._graphs[key] = graph
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return graph

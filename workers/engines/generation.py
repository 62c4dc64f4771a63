"""Batched autoregressive decoding with a KV cache: the loop behind the torch engine's generate.

Prompts are left-padded into one batch so every row's next token sits in the last column; one
forward pass per step serves every row. Each row keeps its own ``max_new_tokens``, sampling
parameters, seed and deadline, so requests with different parameters share a batch (the
sampler works per row). A row stops on an end-of-sequence token, at its ``max_new_tokens`` or
at its deadline. On the CPU the cache grows per step and, once a quarter of the rows have
stopped, their rows are dropped from it so the rest do not pay for them; on a GPU the batch is
decoded in fixed shapes instead (``static_cache`` says why).

Streaming is iteration-level: after every step each row with an ``on_token`` callback gets the
text its new token completed (held back while it ends in a partial UTF-8 character), and the
row's final text is the concatenation of what it streamed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from workers.engines.static_cache import StaticKVCache, StaticShape, cache_kwargs

if TYPE_CHECKING:
    from workers.engines.cuda_graphs import DecodeGraphs

SAMPLING_FLOOR_TEMPERATURE = 1e-5
COMPACT_FRACTION = 0.25
"""Drop stopped rows from the cache once this share of the batch has stopped: copying the
cache every step would cost as much as the attention it saves."""


@dataclass
class GenerationRow:
    """One prompt being decoded, and what it has produced so far."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    on_token: Callable[[str], None] | None = None
    deadline_monotonic: float | None = None
    new_ids: list[int] = field(default_factory=list)
    finished: bool = False
    timed_out: bool = False
    streamed: list[str] = field(default_factory=list)
    _prefix_offset: int = 0
    _read_offset: int = 0

    def stream_piece(self, tokenizer: Any, final: bool) -> str:
        """The text completed since the last piece (the vLLM/TGI incremental detokenizer)."""
        ids = self.new_ids
        prefix_text = tokenizer.decode(ids[self._prefix_offset:self._read_offset],
                                       skip_special_tokens=True)
        new_text = tokenizer.decode(ids[self._prefix_offset:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix_offset, self._read_offset = self._read_offset, len(ids)
            piece = new_text[len(prefix_text):]
            self.streamed.append(piece)
            return piece
        return ""


def sample_next_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                       generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Next token per row: greedy where the row's temperature is 0, else top-p sampling.

    A row with its own generator (a seeded request) draws from it, so its output does not
    depend on what else shares the batch.
    """
    greedy = logits.argmax(dim=-1)
    sampled_rows = temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    scaled = logits.float() / temperature.clamp(min=SAMPLING_FLOOR_TEMPERATURE).unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p; the most likely token always stays.
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p.unsqueeze(-1)
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    choice = torch.multinomial(sorted_probs, 1)
    for row, generator in enumerate(generators):
        if generator is not None:
            choice[row] = torch.multinomial(sorted_probs[row], 1, generator=generator)
    sampled = sorted_ids.gather(-1, choice).squeeze(-1)
    return torch.where(sampled_rows, sampled, greedy)


def _row_tensors(rows: list[GenerationRow], device: torch.device, padding_rows: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator | None]]:
    """Per-row temperature, top-p and generator; ``padding_rows`` empty rows decode greedily."""
    temperature = torch.tensor([row.temperature for row in rows] + [0.0] * padding_rows,
                               device=device)
    top_p = torch.tensor([row.top_p for row in rows] + [1.0] * padding_rows, device=device)
    generators: list[torch.Generator | None] = []
    for row in rows:
        generator = None
        if row.seed is not None and row.temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(row.seed)
        generators.append(generator)
    return temperature, top_p, generators + [None] * padding_rows


def _take_tokens(rows: list[GenerationRow], active: Sequence[int], tokens: Sequence[int],
                 tokenizer: Any, eos_ids: set[int]) -> None:
    """Appends each active row's new token, ends rows at EOS, length or deadline, streams."""
    now = time.monotonic()
    for token, index in zip(tokens, active, strict=True):
        row = rows[index]
        if row.finished:
            continue
        if token in eos_ids:
            row.finished = True
        else:
            row.new_ids.append(token)
            row.finished = len(row.new_ids) >= row.max_new_tokens
        if row.deadline_monotonic is not None and now >= row.deadline_monotonic:
            row.finished = row.timed_out = True
        if row.on_token is not None and not row.timed_out:
            piece = row.stream_piece(tokenizer, final=row.finished)
            if piece:
                row.on_token(piece)


@torch.inference_mode()
def generate_rows(model: Any, tokenizer: Any, rows: list[GenerationRow], device: torch.device,
                  eos_ids: set[int], pad_id: int,
                  on_step: Callable[[int], None] | None = None,
                  static_shape: StaticShape | None = None,
                  decode_graphs: DecodeGraphs | None = None) -> None:
    """Decodes every row to its end, filling ``new_ids``, ``finished`` and ``timed_out``.

    With ``static_shape`` (see ``static_cache``) the batch is padded to it and decoded with a
    preallocated cache, every step in the same shapes, each step replayed as a CUDA graph when
    ``decode_graphs`` gives one (``cuda_graphs``); without, the cache grows per step and
    stopped rows are dropped from it.
    """
    if not rows:
        return
    if static_shape is not None:
        _generate_static(model, tokenizer, rows, device, eos_ids, pad_id, on_step, static_shape,
                         decode_graphs)
        return
    from transformers import DynamicCache

    longest = max(len(row.prompt_ids) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, longest - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
        attention_mask[i, longest - len(row.prompt_ids):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    temperature, top_p, generators = _row_tensors(rows, device)

    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   **cache_kwargs(model, cache), logits_to_keep=1).logits[:, -1, :]
    active = list(range(len(rows)))
    next_position = position_ids[:, -1] + 1
    step = 0
    while True:
        next_ids = sample_next_tokens(logits, temperature, top_p,
                                      [generators[i] for i in active])
        _take_tokens(rows, active, next_ids.tolist(), tokenizer, eos_ids)
        if on_step is not None:
            on_step(step)
        step += 1
        still = [j for j, index in enumerate(active) if not rows[index].finished]
        if not still:
            return
        if len(active) - len(still) >= max(1, int(COMPACT_FRACTION * len(active))):
            keep = torch.tensor(still, device=device)
            cache.batch_select_indices(keep)
            attention_mask, next_ids = attention_mask[keep], next_ids[keep]
            next_position, temperature, top_p = (
                next_position[keep], temperature[keep], top_p[keep])
            active = [active[j] for j in still]
        attention_mask = torch.cat(
            [attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        logits = model(input_ids=next_ids.unsqueeze(-1), attention_mask=attention_mask,
                       position_ids=next_position.unsqueeze(-1),
                       **cache_kwargs(model, cache)).logits[:, -1, :]
        next_position = next_position + 1


def _generate_static(model: Any, tokenizer: Any, rows: list[GenerationRow],
                     device: torch.device, eos_ids: set[int], pad_id: int,
                     on_step: Callable[[int], None] | None, shape: StaticShape,
                     decode_graphs: DecodeGraphs | None) -> None:
    """The fixed-shape decoding loop: padded rows, one cache, a ready 4-D boolean mask.

    Stopped rows keep being computed (their tokens are ignored): on a GPU a step costs the
    same with or without them, and dropping them would change the shapes again. Every query
    may also see its own position, so a row of padding attends to something and stays finite.
    The prefill runs eagerly; a decode step replays the shape's CUDA graph when there is one,
    which computes what the eager step computes.
    """
    count, prompt_len, cache_len = shape.rows, shape.prompt_len, shape.cache_len
    input_ids = torch.full((count, prompt_len), pad_id, dtype=torch.long)
    visible = torch.zeros((count, cache_len), dtype=torch.bool)
    visible[:, prompt_len:] = True
    lengths = torch.zeros(count, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, prompt_len - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
        visible[i, prompt_len - len(row.prompt_ids):prompt_len] = True
        lengths[i] = len(row.prompt_ids)
    position_ids = (visible[:, :prompt_len].long().cumsum(dim=-1) - 1).clamp(min=0)
    input_ids, visible = input_ids.to(device), visible.to(device)
    position_ids, next_position = position_ids.to(device), lengths.to(device)
    temperature, top_p, generators = _row_tensors(rows, device, count - len(rows))
    keys = torch.arange(cache_len, device=device)
    queries = torch.arange(prompt_len, device=device)
    prefill_mask = (visible[:, None, None, :] & (keys <= queries[:, None])) | (
        keys == queries[:, None])
    graph = decode_graphs.graph_for(count, cache_len) if decode_graphs is not None else None
    cache = graph.start(visible, prompt_len) if graph is not None else StaticKVCache(
        count, cache_len)
    logits = model(input_ids=input_ids, attention_mask=prefill_mask, position_ids=position_ids,
                   **cache_kwargs(model, cache), logits_to_keep=1).logits[:, -1, :]
    cache.position = prompt_len
    next_ids = sample_next_tokens(logits, temperature, top_p, generators)
    if graph is not None:
        graph.feed(next_ids, next_position, prompt_len)
    sampling = any(row.temperature > 0 for row in rows)
    active = range(len(rows))
    step = 0
    while True:
        _take_tokens(rows, active, next_ids.tolist()[:len(rows)], tokenizer, eos_ids)
        if on_step is not None:
            on_step(step)
        step += 1
        if all(row.finished for row in rows):
            return
        if graph is not None:
            # The graph's greedy tokens are already the next step's input; sampled ones
            # replace them.
            logits, next_ids = graph.replay()
            if sampling:
                next_ids = sample_next_tokens(logits, temperature, top_p, generators)
                graph.feed_tokens(next_ids)
            continue
        step_mask = visible[:, None, None, :] & (keys <= cache.position)
        logits = model(input_ids=next_ids.unsqueeze(-1), attention_mask=step_mask,
                       position_ids=next_position.unsqueeze(-1),
                       **cache_kwargs(model, cache)).logits[:, -1, :]
        cache.position += 1
        next_position = next_position + 1
        next_ids = sample_next_tokens(logits, temperature, top_p, generators)


def final_text(row: GenerationRow, tokenizer: Any) -> str:
    """The row's output: what it streamed when it streamed, else its decoded tokens."""
    if row.on_token is not None:
        return "".join(row.streamed)
    return str(tokenizer.decode(row.new_ids, skip_special_tokens=True))

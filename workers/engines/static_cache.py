"""Fixed decoding shapes on the GPU: bucketed batch sizes and a preallocated KV cache.

A GPU decoding step of a mid-sized model costs about the same at 64 rows as at 256: it is
bound by kernel launches, not arithmetic. What it does not forgive is shapes it has not seen:
with a cache that grows by one position per step (transformers' ``DynamicCache``), every step of
a batch whose size differs from the last one allocates tensors of new sizes, and on an H100 such
steps ran at about 70 ms against 16 ms for shapes already met. So on CUDA the torch engine

* rounds the number of rows up to a power of two (the extra rows are empty and finish at once),
  the prompt length up to a multiple of ``PROMPT_MULTIPLE`` and the cache length up to a
  multiple of ``CACHE_MULTIPLE``, so a handful of shapes cover every batch;
* writes keys and values into one cache allocated at that full length for the whole batch, and
  passes a ready 4-D attention mask, so every step of a batch has identical shapes;
* warms each row bucket up at load.

``plan_static_shape`` is the pure decision; ``StaticKVCache`` is the cache (it touches torch).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from transformers import DynamicCache

PROMPT_MULTIPLE = 16
CACHE_MULTIPLE = 64


@dataclass(frozen=True)
class StaticShape:
    """The padded shape of one decoding batch."""

    rows: int
    prompt_len: int
    cache_len: int


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def row_bucket(rows: int) -> int:
    """The smallest power of two that holds ``rows`` (at least 1)."""
    return 1 << max(0, rows - 1).bit_length()


def plan_static_shape(rows: int, longest_prompt: int, most_new_tokens: int,
                      max_positions: int) -> StaticShape | None:
    """The bucketed shape of a batch, or None when no fixed shape fits the model's positions.

    The cache must hold the padded prompt plus the most tokens any row may generate; when even
    the unpadded prompt and that do not fit in ``max_positions`` (a long prompt sharing a batch
    with a long generation), the caller decodes with a growing cache instead.
    """
    if longest_prompt + most_new_tokens > max_positions:
        return None
    prompt_len = round_up(longest_prompt, PROMPT_MULTIPLE)
    if prompt_len + most_new_tokens > max_positions:
        prompt_len = longest_prompt
    cache_len = min(round_up(prompt_len + most_new_tokens, CACHE_MULTIPLE), max_positions)
    return StaticShape(row_bucket(rows), prompt_len, cache_len)


@cache
def _cache_keyword(forward: Any) -> str:
    parameters = inspect.signature(forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_kwargs(model: Any, kv_cache: Any) -> dict[str, Any]:
    """The keyword arguments that hand ``kv_cache`` to ``model``'s forward.

    transformers renamed ``past_key_values`` to ``cache`` (5.24 warns on the old name, 5.40
    removes it). Chosen by what the forward declares, not by version: 5.17 would take ``cache=``
    silently into ``**kwargs`` and decode without any cache.
    """
    return {_cache_keyword(type(model).forward): kv_cache, "use_cache": True}


class StaticKVCache(DynamicCache):
    """Keys and values of every layer in tensors allocated once at ``cache_len`` positions.

    The model calls ``update`` once per layer and step; it writes at ``position`` and returns
    the whole buffers, which the caller's 4-D mask restricts to the positions written so far.
    The buffers start zeroed: masked positions must hold finite values, since attention
    multiplies them by a zero weight. The caller advances ``position`` after each forward
    pass. Only ``update`` and ``get_seq_length`` of the transformers cache interface are used
    (the mask is passed ready-made), so it does not depend on transformers' cache internals.
    """

    def __init__(self, rows: int, cache_len: int) -> None:
        super().__init__()
        self.rows = rows
        self.cache_len = cache_len
        self.position = 0
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self._keys):
            batch, heads, _, key_dim = key_states.shape
            self._keys.append(key_states.new_zeros((batch, heads, self.cache_len, key_dim)))
            self._values.append(value_states.new_zeros(
                (batch, heads, self.cache_len, value_states.shape[-1])))
        end = self.position + key_states.shape[-2]
        self._keys[layer_idx][:, :, self.position:end].copy_(key_states)
        self._values[layer_idx][:, :, self.position:end].copy_(value_states)
        return self._keys[layer_idx], self._values[layer_idx]

    def get_seq_length(self, layer_idx: int | None = 0, *args: Any, **kwargs: Any) -> int:
        return self.position

"""Grouped-query attention that never copies KV heads, with the mask as given.

In a model with fewer key/value heads than query heads (SmolLM2-135M: 9 query heads over 3 KV
heads), transformers' ``sdpa`` attention copies every KV head to each of its query heads
(``repeat_kv``) whenever an attention mask is passed, and the fixed-shape decoding loop always
passes one: on an H100 those copies, two per layer of the whole cache, took 21 % of the GPU time
of SmolLM2-135M's eager decode step and about 40 % of its graphed one. Transformers avoids SDPA's
own ``enable_gqa`` with a mask because the kernel that takes it depends on the build and the
device: on CUDA neither flash (no mask) nor memory-efficient attention (no GQA) does, which leaves
cuDNN's attention or the math kernel (which copies the heads itself, and is slow); on the CPU the
flash kernel does.

So this attention asks SDPA which kernel it would run: a fused one gets ``enable_gqa`` and the
mask as is (an H100 with torch 2.11 runs cuDNN's: half the time of ``repeat_kv`` and SDPA at 64
rows x 256 positions, a sixth at 1,024, the same outputs). Otherwise, in a decode step (one query
per row) the query heads that share a KV head are folded into the query axis instead: queries
``(batch, kv_heads, group, dim)`` against the cache ``(batch, kv_heads, positions, dim)``, the
mask ``(batch, 1, 1, positions)`` broadcasting over both, a view rather than a copy, with equal
head counts that the fused kernels take (on that H100 about 15 % slower than ``enable_gqa``).
What is left (a prefill without such a kernel, no mask, features such as soft-capping or position
biases) goes to transformers' ``sdpa`` unchanged.

The function is registered with transformers under ``GQA_SDPA``, with ``sdpa``'s mask builder, and
the torch engine loads models with grouped KV heads with ``attn_implementation=GQA_SDPA``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.attention import SDPBackend

GQA_SDPA = "infermq_gqa_sdpa"

UNHANDLED_KWARGS = ("softcap", "position_bias", "cache", "s_aux", "sinks")
"""Keyword arguments of transformers' attention functions this one leaves to ``sdpa``."""


def has_grouped_kv_heads(config: Any) -> bool:
    """Whether the model's attention shares each key/value head among several query heads."""
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None)
    return isinstance(heads, int) and isinstance(kv_heads, int) and 0 < kv_heads < heads


def sdpa_fuses_gqa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   mask: torch.Tensor) -> bool:
    """Whether SDPA would run ``enable_gqa`` with this mask in a fused kernel, not the math one."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return False
    choice = int(choose(query, key, value, mask, 0.0, False, scale=None, enable_gqa=True))
    return choice not in (SDPBackend.ERROR.value, SDPBackend.MATH.value)


def gqa_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                       value: torch.Tensor, attention_mask: torch.Tensor | None,
                       dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any
                       ) -> tuple[torch.Tensor, None]:
    """Transformers' ``sdpa`` attention, but a masked one over grouped KV heads copies none.

    Takes and returns what transformers' attention functions do: ``query`` is ``(batch,
    heads, queries, dim)``, ``key`` and ``value`` ``(batch, kv_heads, positions, dim)``; the
    output is ``(batch, queries, heads, dim)``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1))
    batch, heads, queries, _ = query.shape
    if (groups > 1 and attention_mask is not None
            and all(kwargs.get(name) is None for name in UNHANDLED_KWARGS)):
        if sdpa_fuses_gqa(query, key, value, attention_mask):
            output = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
                enable_gqa=True)
            return output.transpose(1, 2).contiguous(), None
        if queries == 1 and attention_mask.shape[1] == 1:
            # Query head h reads KV head h // groups (``repeat_kv``'s order), so the heads axis
            # splits into (kv_heads, groups), each group's queries rows of one KV head's attention.
            folded = query.reshape(batch, heads // groups, groups, query.shape[-1])
            output = torch.nn.functional.scaled_dot_product_attention(
                folded, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
            output = output.reshape(batch, heads, 1, value.shape[-1])
            return output.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)


def register_gqa_attention() -> None:
    """Makes ``GQA_SDPA`` a valid ``attn_implementation``, its masks built as ``sdpa``'s are.

    Without the mask builder transformers would pass no mask at all to an attention function
    it does not know, and padded rows would attend to their padding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)

"""Decode attention over the paged arena: the fallback against a per-row reference, and (on
CUDA) the Triton kernel against the fallback, on scattered pages and GQA."""

from __future__ import annotations

import pytest
import torch

from workers.engines.paged.attention import (
    paged_decode_sdpa,
    paged_decode_triton,
    triton_available,
)

BLOCK = 16


def inputs(device: str, heads: int, kv_heads: int, dtype: torch.dtype
           ) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(heads * 7 + kv_heads)
    arena_blocks, rows, width = 40, 5, 8
    pages = torch.randperm(arena_blocks, generator=generator)
    lengths = torch.tensor([1, 16, 17, 100, 128])
    tables = torch.full((rows, width), arena_blocks, dtype=torch.long)
    taken = 0
    for i, n in enumerate(lengths.tolist()):
        need = -(-n // BLOCK)
        tables[i, :need] = pages[taken:taken + need]
        taken += need
    slots = arena_blocks * BLOCK + 1
    k = torch.randn(slots, kv_heads, 64, generator=generator).to(device, dtype)
    v = torch.randn(slots, kv_heads, 64, generator=generator).to(device, dtype)
    # q is a strided view, as the runner passes it (a slice of the fused qkv projection)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * 64, generator=generator).to(device, dtype)
    q = qkv[:, :heads * 64].view(rows, heads, 64)
    return q, k, v, tables.to(device), lengths.to(device)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor,
              lengths: torch.Tensor, scale: float) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64)
    for i, n in enumerate(lengths.tolist()):
        idx = (tables[i, :, None] * BLOCK + torch.arange(BLOCK, device=q.device)).view(-1)[:n]
        keys = k[idx].double().cpu().repeat_interleave(group, dim=1)
        values = v[idx].double().cpu().repeat_interleave(group, dim=1)
        s = torch.einsum("hd,nhd->hn", q[i].double().cpu(), keys) * scale
        out[i] = torch.einsum("hn,nhd->hd", s.softmax(-1), values)
    return out


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)])
def test_the_fallback_attends_to_each_rows_own_pages(heads: int, kv_heads: int) -> None:
    q, k, v, tables, lengths = inputs("cpu", heads, kv_heads, torch.float32)
    out = paged_decode_sdpa(q, k, v, tables, lengths, BLOCK, 0.125)
    ref = reference(q, k, v, tables, lengths, 0.125)
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.skipif(not triton_available(torch.device("cuda")) or not torch.cuda.is_available(),
                    reason="the Triton kernel needs CUDA")
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)])
def test_the_triton_kernel_matches_the_reference(heads: int, kv_heads: int) -> None:
    q, k, v, tables, lengths = inputs("cuda", heads, kv_heads, torch.float16)
    out = paged_decode_triton(q, k, v, tables, lengths, BLOCK, 0.125)
    ref = reference(q, k, v, tables, lengths, 0.125)
    assert float((out.double().cpu() - ref).norm() / ref.norm()) < 3e-3

"""Decode attention over the paged KV arena: one query token per row, keys read through the
row's block table.

Two ways, one function each, the same inputs and result:

* ``paged_decode_triton``: a Triton kernel, one program per (row, head), that reads the block
  table and walks the row's own slots with an online softmax; no copy of the KV is made. CUDA
  only, and only where Triton imports.
* ``paged_decode_sdpa``: the fallback (the CPU, CI): the row's slots gathered into a padded
  ``[B, Hkv, L, D]`` copy, then SDPA with a length mask.

``decode_attention`` picks the kernel for CUDA tensors when Triton is there, else the fallback.
Measured against each other (and flex_attention) by ``bench/paged_attention.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU image: the fallback serves
    triton = None

# keys a program scores at once (a multiple of the block size) and its warps: the fastest of
# 32/64/128 x 2/4/8 on the H200 (bench/results/paged-attention-h200.txt)
TOKENS_PER_ITERATION = 64
NUM_WARPS = 2


def paged_decode_sdpa(q: torch.Tensor, k_arena: torch.Tensor, v_arena: torch.Tensor,
                      tables: torch.Tensor, lengths: torch.Tensor, block_size: int,
                      scale: float) -> torch.Tensor:
    """``q`` [B, H, D]; arenas [slots, Hkv, D] (the last slot a dump); ``tables`` [B, blocks]
    (unused entries past the arena); ``lengths`` [B]. Returns [B, H, D]."""
    rows, blocks = tables.shape
    dump = k_arena.shape[0] - 1
    offsets = torch.arange(block_size, device=q.device)
    gather = (tables[:, :, None] * block_size + offsets).view(rows, -1).clamp(max=dump)
    keys = torch.arange(blocks * block_size, device=q.device)
    mask = (keys[None, :] < lengths[:, None])[:, None, None, :]
    k = k_arena[gather].transpose(1, 2)  # [B, Hkv, L, D]
    v = v_arena[gather].transpose(1, 2)
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale,
                                         enable_gqa=k.shape[1] != q.shape[1])
    return out[:, :, 0]


if triton is not None:
    @triton.jit
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, tables_ptr, lengths_ptr, out_ptr,
                             stride_qb, stride_qh, stride_slot, stride_kh, stride_tb,
                             stride_ob, stride_oh, scale,
                             GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, D: tl.constexpr,
                             N: tl.constexpr) -> None:
        row = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // GROUP
        length = tl.load(lengths_ptr + row)
        d = tl.arange(0, D)
        q = tl.load(q_ptr + row * stride_qb + head * stride_qh + d).to(tl.float32) * scale
        offs = tl.arange(0, N)
        m = tl.max(tl.full((N,), float("-inf"), tl.float32), axis=0)
        total = tl.sum(tl.zeros((N,), tl.float32), axis=0)
        acc = tl.zeros((D,), tl.float32)
        for start in range(0, length, N):
            token = start + offs
            valid = token < length
            page = tl.load(tables_ptr + row * stride_tb + token // BLOCK_SIZE, mask=valid,
                           other=0)
            slot = (page * BLOCK_SIZE + token % BLOCK_SIZE).to(tl.int64)
            where = slot[:, None] * stride_slot + kv_head * stride_kh + d[None, :]
            k = tl.load(k_ptr + where, mask=valid[:, None], other=0.0).to(tl.float32)
            v = tl.load(v_ptr + where, mask=valid[:, None], other=0.0).to(tl.float32)
            s = tl.where(valid, tl.sum(k * q[None, :], axis=1), float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=0))
            p = tl.exp(s - m_new)
            alpha = tl.exp(m - m_new)
            total = total * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            m = m_new
        out = acc / total
        tl.store(out_ptr + row * stride_ob + head * stride_oh + d,
                 out.to(out_ptr.dtype.element_ty))


def paged_decode_triton(q: torch.Tensor, k_arena: torch.Tensor, v_arena: torch.Tensor,
                        tables: torch.Tensor, lengths: torch.Tensor, block_size: int,
                        scale: float, tokens_per_iteration: int = TOKENS_PER_ITERATION,
                        num_warps: int = NUM_WARPS) -> torch.Tensor:
    """As ``paged_decode_sdpa``, by the Triton kernel (CUDA; arenas contiguous)."""
    rows, heads, dim = q.shape
    kv_heads = k_arena.shape[1]
    out = torch.empty((rows, heads, dim), dtype=q.dtype, device=q.device)
    kernel: Any = _paged_decode_kernel
    kernel[(rows, heads)](
        q, k_arena, v_arena, tables, lengths, out,
        q.stride(0), q.stride(1), k_arena.stride(0), k_arena.stride(1), tables.stride(0),
        out.stride(0), out.stride(1), scale,
        GROUP=heads // kv_heads, BLOCK_SIZE=block_size, D=dim,
        N=max(tokens_per_iteration, block_size), num_warps=num_warps)
    return out


def triton_available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


def decode_attention(q: torch.Tensor, k_arena: torch.Tensor, v_arena: torch.Tensor,
                     tables: torch.Tensor, lengths: torch.Tensor, block_size: int,
                     scale: float, kernel: str) -> torch.Tensor:
    """``kernel`` is ``"triton"`` or ``"sdpa"`` (see the module's docstring)."""
    if kernel == "triton":
        return paged_decode_triton(q, k_arena, v_arena, tables, lengths, block_size, scale)
    return paged_decode_sdpa(q, k_arena, v_arena, tables, lengths, block_size, scale)

"""The paged engine's model runner: the only torch file of ``workers/engines/paged``.

Our own forward for the two model families infermq serves, GPT-2 and Llama (SmolLM2), over
the weights of a loaded transformers model, so transformers' cache API does not matter. The
KV cache is one arena per layer, ``[slots + 1, kv_heads, head_dim]`` (the last slot is a dump
that padding rows write to and nobody reads); the block manager says which slots a sequence
owns.

* ``prefill`` runs whole contexts (a new prompt, or a preempted sequence's prompt plus what it
  had generated), right-padded into one batch, causal attention within each row, and writes
  their KV into the arena.
* ``decode`` runs one token per row. Its inputs live in fixed buffers per batch-size bucket
  and block-count bucket (tokens, positions, slot of the new token, block tables, lengths), so
  on CUDA each bucket's step is one CUDA graph; the new KV is written with ``index_copy_`` and
  attention reads the arena through the block tables (``attention.py``: a Triton kernel on
  CUDA, ``decode_kernel = "triton"``; SDPA over the row's blocks gathered into a padded copy
  elsewhere, ``"sdpa"``).
* ``sample`` is vectorised over the batch: argmax for greedy rows; sampled rows take the
  Gumbel-max of their top-p-filtered, temperature-scaled logits with noise hashed from the
  row's own seed and step, so a seeded row never depends on its neighbours.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from workers.engines.paged.attention import decode_attention, triton_available

SAMPLING_FLOOR_TEMPERATURE = 1e-5
PREFILL_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def bucket(n: int, smallest: int = 1) -> int:
    """The power of two at or above ``n`` (at least ``smallest``)."""
    size = smallest
    while size < n:
        size *= 2
    return size


@dataclass
class LayerWeights:
    norm1_w: torch.Tensor
    norm1_b: torch.Tensor | None
    qkv_w: torch.Tensor  # [hidden, (H + 2 Hkv) D], used as x @ qkv_w
    qkv_b: torch.Tensor | None
    out_w: torch.Tensor  # [H D, hidden]
    out_b: torch.Tensor | None
    norm2_w: torch.Tensor
    norm2_b: torch.Tensor | None
    up_w: torch.Tensor  # GPT-2: c_fc [hidden, inter]; Llama: gate and up fused [hidden, 2 inter]
    up_b: torch.Tensor | None
    down_w: torch.Tensor
    down_b: torch.Tensor | None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight + bias`` (one fused kernel when there is a bias)."""
    if bias is None:
        return x @ weight
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], -1)


class PagedModel:
    """A GPT-2 or Llama-shaped causal LM's weights, and its forward over a paged KV arena."""

    def __init__(self, hf_model: Any, num_blocks: int, block_size: int,
                 max_model_len: int | None = None, decode_kernel: str = "auto") -> None:
        config = hf_model.config
        # Inference only: weights that require grad would make every arena write record
        # autograd history (a capture outside inference mode kept each run's tensors alive).
        hf_model.requires_grad_(False)
        self.kind = config.model_type
        self.device = next(hf_model.parameters()).device
        self.dtype = next(hf_model.parameters()).dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        if self.kind == "gpt2":
            self._load_gpt2(hf_model)
        elif self.kind == "llama":
            self._load_llama(hf_model)
        else:
            raise ValueError(f"the paged engine runs gpt2 and llama models, not {self.kind}")
        self.max_model_len = max_model_len or self.max_positions
        slots = num_blocks * block_size + 1
        self.dump_slot = slots - 1
        shape = (self.num_layers, slots, self.kv_heads, self.head_dim)
        self.k_arena = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_arena = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.scale = 1.0 / math.sqrt(self.head_dim)
        if decode_kernel == "auto":
            decode_kernel = "triton" if triton_available(self.device) else "sdpa"
        self.decode_kernel = decode_kernel
        # every bucket's graph shares one memory pool: they replay one at a time
        self.graph_pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    # --- weights -------------------------------------------------------------------------

    def _load_gpt2(self, model: Any) -> None:
        c = model.config
        t = model.transformer
        self.num_layers, self.heads, self.kv_heads = c.n_layer, c.n_head, c.n_head
        self.head_dim = c.n_embd // c.n_head
        self.eps = c.layer_norm_epsilon
        self.max_positions = c.n_positions
        self.embed = t.wte.weight
        self.pos_embed = t.wpe.weight
        self.final_w, self.final_b = t.ln_f.weight, t.ln_f.bias
        self.lm_head = model.lm_head.weight
        self.layers = [LayerWeights(
            h.ln_1.weight, h.ln_1.bias, h.attn.c_attn.weight, h.attn.c_attn.bias,
            h.attn.c_proj.weight, h.attn.c_proj.bias, h.ln_2.weight, h.ln_2.bias,
            h.mlp.c_fc.weight, h.mlp.c_fc.bias, h.mlp.c_proj.weight, h.mlp.c_proj.bias)
            for h in t.h]

    def _load_llama(self, model: Any) -> None:
        c = model.config
        m = model.model
        self.num_layers, self.heads = c.num_hidden_layers, c.num_attention_heads
        self.kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.max_positions = c.max_position_embeddings
        self.embed = m.embed_tokens.weight
        self.pos_embed = None
        self.final_w, self.final_b = m.norm.weight, None
        self.lm_head = model.lm_head.weight

        def t(linear: Any) -> torch.Tensor:
            return linear.weight.t().contiguous()

        def bias(*linears: Any) -> torch.Tensor | None:
            if linears[0].bias is None:
                return None
            return torch.cat([linear.bias for linear in linears])

        self.layers = []
        for h in m.layers:
            a, mlp = h.self_attn, h.mlp
            self.layers.append(LayerWeights(
                h.input_layernorm.weight, None,
                torch.cat([t(a.q_proj), t(a.k_proj), t(a.v_proj)], dim=1),
                bias(a.q_proj, a.k_proj, a.v_proj), t(a.o_proj), bias(a.o_proj),
                h.post_attention_layernorm.weight, None,
                torch.cat([t(mlp.gate_proj), t(mlp.up_proj)], dim=1), None,
                t(mlp.down_proj), None))
        theta = float(getattr(c, "rope_theta", None) or (
            getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0))
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32,
                                                device=self.device) / self.head_dim)
        angles = torch.outer(torch.arange(self.max_positions, dtype=torch.float32,
                                          device=self.device), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos, self.sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    # --- the forward -----------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "gpt2":
            return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return w * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                attend: Any, last: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of ``tokens`` [B, T] after the final norm; writes their KV to ``slots``
        [B * T] (flattened) and attends with ``attend(layer, q)`` where q is [B, H, T, D].
        With ``last`` (flat indices into B * T) only those tokens get the final norm: a
        prefill needs each context's last token alone."""
        b, t = tokens.shape
        x = F.embedding(tokens, self.embed)
        if self.pos_embed is not None:
            x = x + F.embedding(positions, self.pos_embed)
        hd, h, kvh = self.head_dim, self.heads, self.kv_heads
        if self.kind == "llama":  # gathered once per forward, not per layer
            cos, sin = self.cos[positions].unsqueeze(-2), self.sin[positions].unsqueeze(-2)
        for index, layer in enumerate(self.layers):
            y = self._norm(x, layer.norm1_w, layer.norm1_b)
            qkv = linear(y, layer.qkv_w, layer.qkv_b)
            if self.kind == "llama":  # q and k rotated in one pass
                qk = self._rope(qkv[..., :(h + kvh) * hd].view(b, t, h + kvh, hd), cos, sin)
                q, k = qk[:, :, :h], qk[:, :, h:]
                v = qkv[..., (h + kvh) * hd:].view(b, t, kvh, hd)
            else:
                q, k, v = qkv.split([h * hd, kvh * hd, kvh * hd], dim=-1)
                q, k, v = q.view(b, t, h, hd), k.view(b, t, kvh, hd), v.view(b, t, kvh, hd)
            self.k_arena[index].index_copy_(0, slots, k.reshape(b * t, kvh, hd))
            self.v_arena[index].index_copy_(0, slots, v.reshape(b * t, kvh, hd))
            attn = attend(index, q.transpose(1, 2), k, v)  # [B, H, T, D]
            x = x + linear(attn.transpose(1, 2).reshape(b, t, h * hd), layer.out_w, layer.out_b)
            y = self._norm(x, layer.norm2_w, layer.norm2_b)
            if self.kind == "gpt2":
                y = F.gelu(linear(y, layer.up_w, layer.up_b), approximate="tanh")
                y = linear(y, layer.down_w, layer.down_b)
            else:
                gate, up = (y @ layer.up_w).chunk(2, dim=-1)
                y = (F.silu(gate) * up) @ layer.down_w
            x = x + y
        if last is not None:
            x = x.reshape(b * t, -1)[last]
        return self._norm(x, self.final_w, self.final_b)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.lm_head.t()

    def prefill(self, contexts: Sequence[list[int]], tables: Sequence[list[int]]
                ) -> torch.Tensor:
        """Logits [P, V] of each context's last token; writes every context's KV into the
        slots of its block table.

        The batch is built in numpy and goes to the device in one copy (no per-token Python).
        """
        p = len(contexts)
        lengths = np.fromiter(map(len, contexts), np.int64, p)
        t = int(lengths.max())
        bs = self.block_size
        host = np.zeros((2, p, t), dtype=np.int64)  # tokens, slots
        width = -(-t // bs)
        pages = np.full((p, width), self.num_blocks, dtype=np.int64)
        for i, (context, table) in enumerate(zip(contexts, tables, strict=True)):
            host[0, i, :len(context)] = context
            pages[i, :len(table)] = table
        position = np.arange(t)
        host[1] = pages[:, position // bs] * bs + position % bs
        host[1][position[None, :] >= lengths[:, None]] = self.dump_slot
        last = np.arange(p) * t + lengths - 1
        on_device = torch.from_numpy(np.concatenate([host.ravel(), last])).to(self.device)
        tokens, slots = on_device[:p * t].view(p, t), on_device[p * t:2 * p * t]
        positions = torch.arange(t, device=self.device).expand(p, t)
        # Rows are right-padded, so plain causal attention is each real token's own causal
        # attention within its row (a padding query sees real keys too, stays finite, and its
        # output is never read); no mask lets SDPA take its flash kernel.

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(
                q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=self.scale,
                enable_gqa=self.kv_heads != self.heads)

        # flash (or memory-efficient) first: other backends cost far more host time per call
        with sdpa_kernel(PREFILL_BACKENDS):
            hidden = self.forward(tokens, positions, slots, attend, last=on_device[2 * p * t:])
        return self.logits(hidden)


class DecodeStep:
    """One bucket's decode step over fixed buffers: eager, or replayed as a CUDA graph.

    Its inputs are one int64 buffer ``[rows, 2 + blocks]`` (token, position, block table), so a
    step's host-to-device traffic is a single copy; the new token's slot and each row's length
    are computed on the device (inside the graph). Padding rows sit at position 0 of a table of
    ``num_blocks`` entries, which is the dump slot.
    """

    def __init__(self, model: PagedModel, rows: int, blocks: int, graph: bool) -> None:
        self.model, self.rows, self.blocks = model, rows, blocks
        device = model.device
        empty = np.zeros((rows, 2 + blocks), dtype=np.int64)
        empty[:, 2:] = model.num_blocks
        self.empty = empty
        pinned = torch.from_numpy(empty.copy())
        self.host = pinned.pin_memory() if device.type == "cuda" else pinned
        self.inputs = self.host.to(device)
        self.logits: torch.Tensor | None = None
        self.greedy: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        if graph:
            self._capture()

    def _run(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        bs = m.block_size
        tokens, positions, tables = self.inputs[:, 0], self.inputs[:, 1], self.inputs[:, 2:]
        page = tables.gather(1, (positions // bs)[:, None])[:, 0]
        slots = page * bs + positions % bs
        lengths = positions + 1

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                   ) -> torch.Tensor:
            out = decode_attention(q[:, :, 0], m.k_arena[layer], m.v_arena[layer], tables,
                                   lengths, bs, m.scale, m.decode_kernel)
            return out[:, :, None]

        hidden = m.forward(tokens[:, None], positions[:, None], slots, attend)
        logits = m.logits(hidden[:, 0])
        return logits, logits.argmax(dim=-1)

    _stream: torch.cuda.Stream | None = None
    """One side stream for every capture: memory cached on a stream serves only that stream."""

    def _capture(self) -> None:
        if DecodeStep._stream is None:
            DecodeStep._stream = torch.cuda.Stream()
        stream = DecodeStep._stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph, pool=self.model.graph_pool):
            self.logits, self.greedy = self._run()

    def load(self, tokens: list[int], positions: list[int], tables: Sequence[list[int]]
             ) -> None:
        """Writes one step's inputs (``len(tokens)`` <= rows real rows) and copies them over.

        The host buffer is reused: the caller reads this step's tokens (a sync) before the
        next load.
        """
        n = len(tokens)
        host = self.host.numpy()
        host[...] = self.empty
        host[:n, 0] = tokens
        host[:n, 1] = positions
        lengths = np.fromiter(map(len, tables), np.int64, n)
        flat = np.fromiter(itertools.chain.from_iterable(tables), np.int64, int(lengths.sum()))
        row = np.repeat(np.arange(n), lengths)
        column = np.arange(flat.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        host[row, 2 + column] = flat
        self.inputs.copy_(self.host, non_blocking=True)

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is not None:
            self.graph.replay()
            return self.logits, self.greedy  # type: ignore[return-value]
        return self._run()


_MIX = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)
_MASK32 = 0xFFFFFFFF


def _hash_uniform(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform noise in (0, 1) of shape [B, V], a pure function of (seed, step, token id)."""
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.long)
    x = ((seeds[:, None] & _MASK32) * _MIX[0] + (steps[:, None] & _MASK32) * _MIX[1] + ids) \
        & _MASK32
    for constant in (_MIX[2], _MIX[3]):
        x = x ^ (x >> 15)
        x = (x * constant) & _MASK32
    x = x ^ (x >> 13)
    return ((x >> 8).double() + 0.5) / float(1 << 24)


def sample(logits: torch.Tensor, greedy: torch.Tensor, temperature: torch.Tensor,
           top_p: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Next token per row: ``greedy`` where temperature is 0, else seeded top-p sampling."""
    scaled = logits.float() / temperature.clamp(min=SAMPLING_FLOOR_TEMPERATURE)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p; the most likely token always stays.
    outside_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p[:, None]
    outside = torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)
    gumbel = -torch.log(-torch.log(_hash_uniform(seeds, steps, logits.shape[-1]))).float()
    sampled = (scaled + gumbel).masked_fill(outside, float("-inf")).argmax(dim=-1)
    return torch.where(temperature > 0, sampled, greedy)

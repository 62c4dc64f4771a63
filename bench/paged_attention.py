"""Decode attention over the paged KV arena, one layer: the ways torch 2.11 and Triton allow.

256 rows, one query token each, contexts uniform in 130..450 tokens, pages of 16 slots taken
at random from an arena of 16,000 (so the KV of a row is scattered, as in a served engine),
fp16, for the GPT-2-medium shape (16 heads x 64) and the SmolLM2-1.7B shape (32 x 64):

* sdpa (the baseline, today's runner): the row's slots gathered into a padded copy, then SDPA;
* flex: the same gathered copy, compiled ``flex_attention`` with a length block mask (flex has
  no public way to read K/V through a page table, so it cannot skip the gather);
* triton N/w: ``workers/engines/paged/attention.py``'s kernel, reading the block table
  directly, N keys per iteration, w warps.

Each is checked against a float64 reference (relative error), timed with
``triton.testing.do_bench`` (median), and set against the physical limit: the KV bytes the
rows must read (sum of lengths x heads x 64 x 2 bytes x K and V) at 4.3 TB/s. Prints a table
with each time's ratio to the baseline and saves a bar plot.

    python bench/paged_attention.py --plot bench/results/paged-attention-h200.png
"""

from __future__ import annotations

import argparse
import functools
import random
from collections.abc import Callable
from pathlib import Path

import torch

from workers.engines.paged.attention import paged_decode_sdpa, paged_decode_triton

BANDWIDTH = 4.3e12
ROWS, BLOCK, ARENA_BLOCKS, DIM = 256, 16, 16_000, 64


def case(heads: int, seed: int) -> tuple[torch.Tensor, ...]:
    rng = random.Random(seed)
    lengths = [rng.randint(130, 450) for _ in range(ROWS)]
    blocks = max(-(-n // BLOCK) for n in lengths)
    width = 1
    while width < blocks:
        width *= 2
    pages = list(range(ARENA_BLOCKS))
    rng.shuffle(pages)
    tables = torch.full((ROWS, width), ARENA_BLOCKS, dtype=torch.long)
    taken = 0
    for i, n in enumerate(lengths):
        need = -(-n // BLOCK)
        tables[i, :need] = torch.tensor(pages[taken:taken + need])
        taken += need
    slots = ARENA_BLOCKS * BLOCK + 1
    k = torch.randn(slots, heads, DIM, device="cuda", dtype=torch.float16)
    v = torch.randn(slots, heads, DIM, device="cuda", dtype=torch.float16)
    q = torch.randn(ROWS, heads, DIM, device="cuda", dtype=torch.float16)
    return q, k, v, tables.cuda(), torch.tensor(lengths, device="cuda")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor,
              lengths: torch.Tensor, scale: float) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    for i in range(q.shape[0]):
        n = int(lengths[i])
        idx = (tables[i, :, None] * BLOCK + torch.arange(BLOCK, device=q.device)).view(-1)[:n]
        keys, values = k[idx].double(), v[idx].double()  # [n, H, D]
        s = torch.einsum("hd,nhd->hn", q[i].double(), keys) * scale
        out[i] = torch.einsum("hn,nhd->hd", s.softmax(-1), values)
    return out


def flex_variant() -> Callable[..., torch.Tensor] | None:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    compiled = torch.compile(flex_attention, dynamic=False)

    def run(q: torch.Tensor, k_arena: torch.Tensor, v_arena: torch.Tensor,
            tables: torch.Tensor, lengths: torch.Tensor, block_size: int,
            scale: float) -> torch.Tensor:
        rows, width = tables.shape
        offsets = torch.arange(block_size, device=q.device)
        gather = (tables[:, :, None] * block_size + offsets).view(rows, -1).clamp(
            max=k_arena.shape[0] - 1)
        k = k_arena[gather].transpose(1, 2)
        v = v_arena[gather].transpose(1, 2)

        def keep(b: torch.Tensor, h: torch.Tensor, qi: torch.Tensor,
                 kv: torch.Tensor) -> torch.Tensor:
            return kv < lengths[b]

        mask = create_block_mask(keep, rows, None, 1, width * block_size, device="cuda")
        out = compiled(q[:, :, None], k, v, block_mask=mask, scale=scale)
        return out[:, :, 0]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", type=Path, default=Path("paged-attention.png"))
    args = parser.parse_args()
    import triton.testing

    variants: dict[str, Callable[..., torch.Tensor]] = {"sdpa": paged_decode_sdpa}
    for n in (32, 64, 128):
        for w in (2, 4, 8):
            variants[f"triton {n}/{w}"] = functools.partial(
                paged_decode_triton, tokens_per_iteration=n, num_warps=w)
    flex = flex_variant()  # last: its compile is the slowest part of the run
    if flex is not None:
        variants["flex"] = flex
    results: dict[str, dict[str, tuple[float, float]]] = {}
    limits: dict[str, float] = {}
    for shape, heads in (("gpt2-medium", 16), ("smollm2-1.7b", 32)):
        q, k, v, tables, lengths = case(heads, seed=heads)
        scale = DIM ** -0.5
        ref = reference(q, k, v, tables, lengths, scale)
        kv_bytes = int(lengths.sum()) * heads * DIM * 2 * 2
        limits[shape] = kv_bytes / BANDWIDTH * 1e3
        print(f"{shape}: {ROWS} rows, mean context {lengths.float().mean():.0f}, KV "
              f"{kv_bytes / 1e6:.0f} MB / 4.3 TB/s = {limits[shape] * 1e3:.1f} us limit",
              flush=True)
        results[shape] = {}
        for name, fn in variants.items():
            inputs = (q, k, v, tables, lengths, BLOCK, scale)
            try:
                out = fn(*inputs)
                torch.cuda.synchronize()
                err = float((out.double() - ref).norm() / ref.norm())
                ms = triton.testing.do_bench(
                    lambda fn=fn, inputs=inputs: fn(*inputs),
                    warmup=25, rep=100, return_mode="median")
            except Exception as error:  # a variant that does not build is reported, not fatal
                print(f"  {name}: failed: {type(error).__name__}: {str(error)[:300]}")
                continue
            results[shape][name] = (ms, err)
            print(f"  {name}: {ms * 1e3:.1f} us, rel err {err:.1e}", flush=True)
    print("\n| shape | variant | us | vs sdpa | limit us | share of limit | rel err |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape, rows in results.items():
        base = rows.get("sdpa", (float("nan"), 0.0))[0]
        for name, (ms, err) in rows.items():
            print(f"| {shape} | {name} | {ms * 1e3:.1f} | {base / ms:.2f}x | "
                  f"{limits[shape] * 1e3:.1f} | {limits[shape] / ms:.0%} | {err:.1e} |")
    plot(results, limits, args.plot)


def plot(results: dict[str, dict[str, tuple[float, float]]], limits: dict[str, float],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4), squeeze=False)
    for ax, (shape, rows) in zip(axes[0], results.items(), strict=True):
        names = list(rows)
        ax.bar(names, [rows[n][0] * 1e3 for n in names])
        ax.axhline(limits[shape] * 1e3, color="red", linestyle="--", label="memory-bound limit")
        ax.set_title(f"{shape}: decode attention, 256 rows, one layer")
        ax.set_ylabel("us (median)")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot saved to {path}")


if __name__ == "__main__":
    main()

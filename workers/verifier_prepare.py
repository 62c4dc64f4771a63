"""``infermq prepare``'s verifier step: train the weights, then certify their threshold.

The certified quantity is P(accepted | near-miss) of the whole serving pipeline, not of the
verifier alone: a near-miss is served only when it passes the embedding look-up (cosine >= the
task type's ``semantic_threshold``), the rule guard's exact vetoes, and the verifier score >= t.
On the calibration split (its own bank, never trained on), the threshold is the smallest ``t``
whose one-sided 95 % Clopper–Pearson upper bound is <= 0.5 % (``infermq/certificate.py``).

Pooled, not per task type: the bound needs ~950 near-misses to allow one accepted; the bank
holds 980 in all (generate 586, embed 243, classify 151), so a per-type certificate would
need three times the data for the same bound. The pooled bound is a bound on the mix; the live
audit measures each task type apart.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from infermq.certificate import Certificate, choose_threshold, clopper_pearson_upper
from infermq.registry import Registry
from workers.cache_guard import near_miss_reason
from workers.engines.sources import READY_MARKER
from workers.verifier import (
    CALIBRATION_FILE,
    CERTIFICATE_FILE,
    FULL,
    TRAINING_FILE,
    Verifier,
    VerifierConfig,
    read_pairs,
    train,
    verifier_dir,
)

log = logging.getLogger(__name__)

Embedder = Callable[[list[str]], np.ndarray]
TARGET = 0.005
ALPHA = 0.05


def pipeline_scores(rows: Sequence[dict[str, str]], embed: Embedder, verifier: Verifier,
                    registry: Registry) -> np.ndarray:
    """Per pair (``a`` stored, ``b`` asked): the verifier's score if the look-up and the rule
    guard let it through, else ``-inf``. The verifier scores only what got that far."""
    texts = sorted({t for r in rows for t in (r["a"], r["b"])})
    vectors = dict(zip(texts, embed(texts), strict=True))
    scores = np.full(len(rows), -math.inf)
    passed = [i for i, r in enumerate(rows)
              if float(vectors[r["a"]] @ vectors[r["b"]])
              >= registry.task_types[r["task_type"]].semantic_threshold  # type: ignore[index]
              and near_miss_reason(r["b"], r["a"]) is None]
    scores[passed] = verifier.score([(rows[i]["b"], rows[i]["a"]) for i in passed])
    return scores


def certify(rows: Sequence[dict[str, str]], scores: np.ndarray) -> dict[str, object]:
    """The certificate of ``scores`` on calibration ``rows``, with what it costs in hits."""
    near = np.array([r["label"] != "same" for r in rows])
    cert: Certificate = choose_threshold([float(s) for s in scores[near]], TARGET, ALPHA)
    accepted = scores >= cert.threshold
    by_type: dict[str, dict[str, float]] = {}
    for task in sorted({r["task_type"] for r in rows}):
        mine = np.array([r["task_type"] == task for r in rows])
        k, n = int((accepted & mine & near).sum()), int((mine & near).sum())
        by_type[task] = {"near_misses": n, "accepted": k,
                         "upper_bound": clopper_pearson_upper(k, n, ALPHA),
                         "paraphrase_hits": float(accepted[mine & ~near].mean())}
    families = Counter(r["family"] for r, a in zip(rows, accepted, strict=True)
                       if a and r["label"] != "same")
    return {"threshold": cert.threshold, "accepted": cert.accepted,
            "near_misses": cert.near_misses, "upper_bound": cert.upper_bound,
            "target": TARGET, "alpha": ALPHA, "certified": cert.certified, "pooled": True,
            "paraphrase_hits": float(accepted[~near].mean()),
            "accepted_by_family": dict(families), "by_task_type": by_type}


def prepare_verifier(models_dir: Path, embed: Embedder, registry: Registry,
                     config: VerifierConfig = FULL, threads: int | None = None) -> Path:
    """Trains and certifies the verifier once; later calls find its directory and return it.

    The directory is named after the config and the data (``verifier_dir``) and appears whole
    or not at all (built aside, renamed last), so a worker never loads half a verifier.
    """
    final = verifier_dir(models_dir, config)
    if (final / READY_MARKER).exists():
        return final
    building = final.with_name(final.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    seconds = train(config, read_pairs(TRAINING_FILE), building, threads)
    return install_certified(building, final, embed, registry, config, seconds)


def install_certified(building: Path, final: Path, embed: Embedder, registry: Registry,
                      config: VerifierConfig, train_seconds: float) -> Path:
    """Certifies the trained weights in ``building`` and moves them to ``final``."""
    (building / READY_MARKER).write_text("trained\n")
    rows = read_pairs(CALIBRATION_FILE)
    scores = pipeline_scores(rows, embed, Verifier(building), registry)
    certificate = certify(rows, scores) | {"train_seconds": train_seconds,
                                           "config": asdict(config)}
    (building / CERTIFICATE_FILE).write_text(json.dumps(certificate, indent=2))
    log.info("verifier %s: threshold %.5f, %d of %d calibration near-misses accepted "
             "(upper bound %.4f), paraphrase hits %.3f", final.name, certificate["threshold"],
             certificate["accepted"], certificate["near_misses"], certificate["upper_bound"],
             certificate["paraphrase_hits"])
    building.rename(final)
    return final


def load_certificate(path: Path) -> dict[str, object]:
    certificate: dict[str, object] = json.loads((path / CERTIFICATE_FILE).read_text())
    return certificate

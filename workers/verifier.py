"""The learned verifier: reads the asked and the cached text together and scores "same answer".

An embedding compares two texts through one vector each, and one changed word (hot / cold, a
swapped pair of names) barely moves the vector. A cross-encoder attends across both texts at
once, so it can see the word that differs. It is all-MiniLM-L6-v2 (the weights infermq ships
for its embedder) with a one-logit head, fine-tuned as a pair classifier on the labelled
pairs shipped in ``workers/verifier_data/`` (paraphrase = 1, near-miss = 0), both orders of
each pair. This is what sentence-transformers' ``CrossEncoder`` wraps; training is a plain
seeded torch loop over transformers' public API, so it is reproducible and bounded.

``VerifierConfig.digest`` names the trained weights after their data and settings: the worker
finds the directory ``infermq prepare`` wrote, or knows it has none.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from infermq.errors import EngineUnavailable
from workers.engines.sources import MINILM_DIR, READY_MARKER, package_path

log = logging.getLogger(__name__)

TRAINING_FILE = "pairs_train.jsonl.gz"  # tuning, dev, dev2 and heldout2: the spent banks
CALIBRATION_FILE = "pairs_calibration.jsonl.gz"  # its own bank: certifies the threshold
CERTIFICATE_FILE = "certificate.json"


@dataclass(frozen=True)
class VerifierConfig:
    """How the verifier is trained; every field goes into the weights' directory name."""

    max_length: int = 64
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_share: float = 0.1
    seed: int = 1305
    # The test variant trains on the first ``train_limit`` pairs of the shuffled training set.
    train_limit: int | None = None
    name: str = "full"

    def digest(self) -> str:
        """A short hash of this config, the training and calibration data and the base model."""
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for name in (TRAINING_FILE, CALIBRATION_FILE):
            h.update(data_bytes(name))
        h.update((package_path(*MINILM_DIR) / "model.safetensors").read_bytes()[:1 << 20])
        return h.hexdigest()[:12]


FULL = VerifierConfig()
# For tests: trains in well under a minute on two cores, still separates a fixed set.
SMALL = VerifierConfig(epochs=1, max_length=40, batch_size=16, train_limit=240, name="small")


def data_bytes(name: str) -> bytes:
    return (importlib.resources.files("workers") / "verifier_data" / name).read_bytes()


def read_pairs(name: str) -> list[dict[str, str]]:
    """The labelled pairs of one shipped data file (its header line skipped)."""
    rows = [json.loads(line) for line in gzip.decompress(data_bytes(name)).decode().splitlines()
            if line.strip()]
    return [r for r in rows if "_source" not in r]


def verifier_dir(models_dir: Path, config: VerifierConfig = FULL) -> Path:
    return models_dir / f"verifier-{config.name}-{config.digest()}"


def training_examples(rows: Sequence[dict[str, str]], config: VerifierConfig
                      ) -> list[tuple[str, str, float]]:
    """Both orders of every pair, shuffled with the config's seed (the cache asks either way)."""
    rows = list(rows)
    random.Random(config.seed).shuffle(rows)
    if config.train_limit is not None:
        rows = rows[: config.train_limit]
    examples = []
    for r in rows:
        label = 1.0 if r["label"] == "same" else 0.0
        examples += [(r["a"], r["b"], label), (r["b"], r["a"], label)]
    random.Random(config.seed + 1).shuffle(examples)
    return examples


def train(config: VerifierConfig, rows: Sequence[dict[str, str]], out_dir: Path,
          threads: int | None = None) -> float:
    """Fine-tunes the verifier on ``rows`` into ``out_dir``; returns the seconds it took.

    Raises:
        EngineUnavailable: the base weights are not installed.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    started = time.monotonic()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    base = package_path(*MINILM_DIR)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    examples = training_examples(rows, config)
    steps = config.epochs * math.ceil(len(examples) / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    warmup = max(1, int(steps * config.warmup_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = list(range(len(examples)))
        random.Random(config.seed + 2 + epoch).shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[start:start + config.batch_size]]
            features = tokenizer([a for a, _, _ in batch], [b for _, b, _ in batch],
                                 padding=True, truncation=True, max_length=config.max_length,
                                 return_tensors="pt")
            logits = model(**features).logits.squeeze(-1)
            loss = loss_fn(logits, torch.tensor([y for _, _, y in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0:
                log.info("verifier %s: step %d/%d loss %.4f", config.name, step, steps,
                         float(loss.detach()))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "verifier_config.json").write_text(json.dumps(asdict(config), indent=2))
    return time.monotonic() - started


class Verifier:
    """A trained verifier, ready to score (asked, cached) pairs; safe to share across threads."""

    def __init__(self, path: Path, *, max_length: int | None = None) -> None:
        """Loads the weights ``infermq prepare`` wrote.

        Raises:
            EngineUnavailable: ``path`` holds no complete verifier.
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (path / READY_MARKER).exists():
            raise EngineUnavailable(
                f"no trained verifier at {path}: `infermq prepare` trains it")
        config = json.loads((path / "verifier_config.json").read_text())
        self.path = path
        self.max_length = max_length or int(config["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        self._torch = torch
        self._lock = threading.Lock()

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        """P(same answer) per (asked, cached) pair, in [0, 1]."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        out = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start:start + batch_size]
                features = self.tokenizer([a for a, _ in chunk], [b for _, b in chunk],
                                          padding=True, truncation=True,
                                          max_length=self.max_length, return_tensors="pt")
                logits = self.model(**features).logits.squeeze(-1)
                out.append(self._torch.sigmoid(logits).double().numpy())
        return np.concatenate(out)


class PairScorer(Protocol):
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray: ...


@dataclass
class _Request:
    pairs: Sequence[tuple[str, str]]
    scores: np.ndarray | None = None
    error: BaseException | None = None


class CertifiedVerifier:
    """The verifier with the threshold ``infermq prepare`` certified for it, shared by a worker's
    task threads: concurrent look-ups are scored in one forward pass (the first caller to find
    the model idle takes every pair queued by then; the others wait for their scores)."""

    def __init__(self, verifier: PairScorer, threshold: float) -> None:
        self.verifier, self.threshold = verifier, threshold
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        self.batches = 0  # forward passes run, for the metrics and the tests

    @classmethod
    def load(cls, path: Path) -> CertifiedVerifier:
        """The verifier at ``path`` and its certified threshold.

        Raises:
            EngineUnavailable: ``path`` holds no complete, certified verifier.
        """
        certificate_path = path / CERTIFICATE_FILE
        if not certificate_path.exists():
            raise EngineUnavailable(f"no certified verifier at {path}: `infermq prepare` "
                                    "trains and certifies it")
        certificate = json.loads(certificate_path.read_text())
        if not certificate["certified"]:
            raise EngineUnavailable(
                f"the verifier at {path} could not be certified ({certificate['accepted']} of "
                f"{certificate['near_misses']} calibration near-misses accepted)")
        return cls(Verifier(path), float(certificate["threshold"]))

    @property
    def waiting(self) -> int:
        """Look-ups queued for the next forward pass."""
        with self._changed:
            return len(self._pending)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The scores of ``pairs`` (asked, cached), batched with other threads' pairs."""
        request = _Request(pairs)
        with self._changed:
            self._pending.append(request)
            while self._busy and request.scores is None and request.error is None:
                self._changed.wait()
            if request.scores is not None or request.error is not None:
                return self._result(request)
            self._busy = True
            batch, self._pending = self._pending, []
        try:
            scores = self.verifier.score([p for r in batch for p in r.pairs])
            start = 0
            for r in batch:
                r.scores = scores[start:start + len(r.pairs)]
                start += len(r.pairs)
        except BaseException as e:  # every waiter learns of the failure, not only the leader
            for r in batch:
                r.error = e
        with self._changed:
            self.batches += 1
            self._busy = False
            self._changed.notify_all()
        return self._result(request)

    @staticmethod
    def _result(request: _Request) -> np.ndarray:
        if request.error is not None:
            raise EngineUnavailable(f"the cache verifier failed: {request.error}") \
                from request.error
        if request.scores is None:
            raise EngineUnavailable("the cache verifier returned no scores")
        return request.scores

"""Task-aware routing: which class a request belongs to, and which model that class deserves.

Seed 001's rule: greetings and FAQs to a small model, hard tasks (contract parsing, technical
documents) to a large one. The classes and their example requests live in
``routing/request_classes.toml``, more labelled requests in ``routing/request_examples.jsonl``; a
logistic regression over their sentence embeddings learns the classes. The embedder is a
parameter (the worker has one loaded; tests build MiniLM), so this module imports neither torch
nor sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infermq.errors import ConfigError, NoEligibleModel, UnknownRequestClass
from infermq.jobs import ChatMessage, JobInput, TaskType
from infermq.registry import Registry
from routing.canary import Arm, split_canary
from routing.metrics import ModelMetrics
from routing.qos import ErrorCooldowns, QosChoice, QosPolicy, choose_by_qos

SHIPPED_REQUEST_CLASSES = Path(__file__).with_name("request_classes.toml")
SHIPPED_TRAINING_REQUESTS = Path(__file__).with_name("request_examples.jsonl")
MAX_CLASSIFIED_CHARS = 2000
MAX_INSTRUCTION_CHARS = 120
EMBED_CHUNK = 64
FEATURES_VERSION = 1
"""Bumped whenever ``RequestClassifier._features`` changes, so cached features go stale."""

Embed = Callable[[list[str]], np.ndarray]
"""Texts to L2-normalised embedding rows, one per text."""


class RequestClass(BaseModel):
    """One class of requests: the task type it runs as, the model size it needs, examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task_type: TaskType
    size_class: Literal["small", "large"]
    description: str = ""
    examples: tuple[str, ...] = Field(min_length=1)


@lru_cache(maxsize=8)
def load_request_classes(path: Path | None = None) -> dict[str, RequestClass]:
    """The request classes at ``path``, or the ones shipped with infermq.

    Raises:
        ConfigError: the file is missing, not TOML, or a class is malformed.
    """
    path = path or SHIPPED_REQUEST_CLASSES
    try:
        data = tomllib.loads(path.read_text())
        return {
            name: RequestClass.model_validate({**spec, "name": name})
            for name, spec in data.get("classes", {}).items()
        }
    except (OSError, tomllib.TOMLDecodeError, ValidationError, TypeError) as e:
        raise ConfigError(f"cannot read the request classes {path}: {e}") from e


class LabelledRequest(BaseModel):
    """One request with the class it belongs to: a row the classifier learns from."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    label: str


@lru_cache(maxsize=8)
def load_training_requests(path: Path | None = None) -> tuple[LabelledRequest, ...]:
    """The labelled requests at ``path`` (JSON lines with ``text`` and ``label``), or the ones
    shipped with infermq (written by ``bench/data/generate_requests.py`` from its tuning
    families; never from the held-out split).

    Raises:
        ConfigError: the file is missing or a line is malformed.
    """
    path = path or SHIPPED_TRAINING_REQUESTS
    try:
        return tuple(LabelledRequest.model_validate(json.loads(line))
                     for line in path.read_text().splitlines() if line.strip())
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        raise ConfigError(f"cannot read the labelled requests {path}: {e}") from e


def request_text(job_input: JobInput) -> str:
    """The text a request is classified by: the last user turn of a chat, else the input.

    Cut to ``MAX_CLASSIFIED_CHARS``: the embedder reads a few hundred tokens anyway, and the
    opening of a long document says what kind of task it is.
    """
    if isinstance(job_input, str):
        text = job_input
    elif job_input and isinstance(job_input[0], ChatMessage):
        users = [m.content for m in job_input if isinstance(m, ChatMessage) and m.role == "user"]
        last = job_input[-1]
        text = users[-1] if users else (last.content if isinstance(last, ChatMessage) else last)
    else:
        text = "\n".join(str(t) for t in job_input)
    return text[:MAX_CLASSIFIED_CHARS]


def instruction_head(text: str) -> str | None:
    """The instruction of an "instruction: payload" request, or None when it has no such shape.

    In "Assign a priority to: our payroll run failed" the payload dominates a sentence
    embedding, and the request looks like whatever the payload talks about; the words before
    the first colon, question mark or line break say what kind of task it is. A colon counts
    only before white space or the end, so the colon of an emoticon (":)") cuts nothing.
    """
    colon = re.search(r":(?=\s|$)", text)
    cut = min((i for i in (colon.start() if colon else -1, text.find("?"), text.find("\n"))
               if i > 0), default=-1)
    if cut <= 0 or cut > MAX_INSTRUCTION_CHARS or not re.search(r"\w", text[cut + 1 :]):
        return None
    return text[:cut].strip()


@dataclass(frozen=True)
class Classification:
    """A request's class, with every class's score (its probability under the classifier)."""

    request_class: str
    score: float
    scores: Mapping[str, float]

    @property
    def margin(self) -> float:
        """How far the winner leads the runner-up: a low margin is a doubtful call."""
        ordered = sorted(self.scores.values(), reverse=True)
        return ordered[0] - ordered[1] if len(ordered) > 1 else ordered[0]


class RequestClassifier:
    """A learned request classifier: logistic regression over sentence embeddings.

    Each request becomes one feature row: the embedding of the whole text, the embedding of its
    instruction (``instruction_head``; the whole text again when it has none), a flag for
    whether it has one, and its length (log chars, and whether it passes the 150 and 400 chars
    that separate a pasted document from a chat line). A nearest-prototype rule over the same
    embeddings (the first router) lost the "hard" class on documents whose vocabulary no
    example shared; a linear model learns which directions of the embedding, and which
    lengths, tell the classes apart. It is trained at construction, in about a second, on the
    classes' examples plus the labelled requests in ``training`` (``load_training_requests``),
    so no weights file is shipped beside the data. Embedding those requests takes longer (tens
    of seconds on a CPU): ``feature_cache`` names a file, one per embedding model, that keeps
    their features for the next worker start; it is rebuilt when the requests change.
    """

    def __init__(
        self,
        classes: Mapping[str, RequestClass],
        embed: Embed,
        training: Sequence[LabelledRequest] = (),
        regularisation: float = 4.0,
        feature_cache: Path | None = None,
    ) -> None:
        if not classes:
            raise ConfigError("the request classifier needs at least one request class")
        from sklearn.linear_model import LogisticRegression

        self.classes = dict(classes)
        self.embed = embed
        rows = [LabelledRequest(text=ex, label=name)
                for name, spec in self.classes.items() for ex in spec.examples]
        unknown = sorted({r.label for r in training} - set(self.classes))
        if unknown:
            raise ConfigError(f"training requests carry unknown classes {unknown}; known: "
                              f"{', '.join(self.classes)}")
        rows += training
        labels = {r.label for r in rows}
        if len(labels) < 2:
            # One class is every request's class; nothing to learn.
            self._only: str | None = next(iter(labels))
            return
        self._only = None
        # Balanced weights: the classes have unequal numbers of examples, not unequal odds.
        self._model = LogisticRegression(C=regularisation, max_iter=3000,
                                         class_weight="balanced")
        features = self._cached_features([r.text for r in rows], feature_cache)
        self._model.fit(features, [r.label for r in rows])

    def classify(self, texts: list[str]) -> list[Classification]:
        """The class of each text, in order, with every class's probability as its score."""
        if not texts:
            return []
        if self._only is not None:
            return [Classification(self._only, 1.0, {self._only: 1.0}) for _ in texts]
        probabilities = self._model.predict_proba(self._features(texts))
        names = [str(c) for c in self._model.classes_]
        results = []
        for row in probabilities:
            scores = {name: float(p) for name, p in zip(names, row, strict=True)}
            best = max(scores, key=lambda n: scores[n])
            results.append(Classification(request_class=best, score=scores[best], scores=scores))
        return results

    def _cached_features(self, texts: list[str], cache: Path | None) -> np.ndarray:
        if cache is None:
            return self._features(texts)
        key = hashlib.sha256(
            json.dumps([FEATURES_VERSION, texts], ensure_ascii=False).encode()).hexdigest()
        try:
            with np.load(cache) as stored:
                if str(stored["key"]) == key:
                    return np.asarray(stored["features"])
        except (OSError, KeyError, ValueError):
            pass  # absent, stale or unreadable: computed afresh below
        features = self._features(texts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial.npz")
        np.savez(partial, key=key, features=features)
        partial.replace(cache)  # atomic: a worker starting beside this one reads all or nothing
        return features

    def _features(self, texts: list[str]) -> np.ndarray:
        heads = [instruction_head(t) for t in texts]
        vectors = self._embed_distinct(texts + [h for h in heads if h is not None])
        shape = np.array(
            [[np.log1p(len(t)) / 8.0, float(len(t) >= 150), float(len(t) > 400),
              float(h is not None)] for t, h in zip(texts, heads, strict=True)],
            dtype=np.float32,
        )
        whole = np.stack([vectors[t] for t in texts])
        instruction = np.stack([vectors[h if h is not None else t]
                                for t, h in zip(texts, heads, strict=True)])
        return np.hstack([whole, instruction, shape])

    def _embed_distinct(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Each distinct text's embedding, asked for ``EMBED_CHUNK`` texts at a time: training
        embeds about 1,500 texts, and one request that large would outlast a job timeout."""
        distinct = list(dict.fromkeys(texts))
        vectors: dict[str, np.ndarray] = {}
        for i in range(0, len(distinct), EMBED_CHUNK):
            chunk = distinct[i : i + EMBED_CHUNK]
            rows = np.asarray(self.embed(chunk), dtype=np.float32)
            vectors.update(zip(chunk, rows, strict=True))
        return vectors


@dataclass(frozen=True)
class RouteDecision:
    """Where a routed job goes and why: recorded on the job, carried in its message."""

    request_class: str
    task_type: TaskType
    model: str
    arm: Arm
    reason: str
    fallbacks: tuple[str, ...]


def _size_order(preferred: str) -> list[str]:
    return [preferred] + [s for s in ("small", "large") if s != preferred]


def choose_model_for_class(
    request_class: str,
    registry: Registry,
    classes: Mapping[str, RequestClass] | None = None,
    *,
    job_id: str,
    metrics: Mapping[str, ModelMetrics] | None = None,
    now_s: float = 0.0,
    policy: QosPolicy = QosPolicy(),
    cooldowns: ErrorCooldowns | None = None,
    exclude: Collection[str] = (),
) -> RouteDecision:
    """The model a request of ``request_class`` runs on, with the reason and the fallbacks.

    The class names a model size; the registry's routable models of that size are eligible,
    chosen among by QoS weight when ``metrics`` are given (else the task type's default first).
    Models of the other size are fallbacks, taken only when no model of the right size can take
    the job (all cooling down, full or excluded): a hard task waits for a cold large model
    rather than going to a small one. Last, the job's canary slice (``job_id`` hash) may move it
    to a canary of the chosen model, unless that canary is cooling down or excluded.

    Raises:
        UnknownRequestClass: ``request_class`` is not a class of ``classes``.
        NoEligibleModel: no model serves the class's task type, or every one is full/excluded.
    """
    classes = classes if classes is not None else load_request_classes()
    spec = classes.get(request_class)
    if spec is None:
        raise UnknownRequestClass(
            f"request class {request_class!r} is unknown; known: {', '.join(sorted(classes))}"
        )
    cooldowns = cooldowns or ErrorCooldowns.for_policy(policy)
    live = metrics or {}
    choices: list[tuple[str, QosChoice]] = []
    for size in _size_order(spec.size_class):
        names = [m.name for m in registry.routable_models(spec.task_type, size)]
        if metrics is None:
            names = [n for n in names if n not in exclude]
        if not names:
            continue
        try:
            if metrics is None:
                choice = QosChoice(
                    model=names[0], tier="ranked", fallbacks=tuple(names[1:]),
                    reason=f"no live metrics; {names[0]} is first of the {size} models",
                )
            else:
                choice = choose_by_qos(names, live, now_s, policy, cooldowns, exclude)
        except NoEligibleModel:
            continue
        choices.append((size, choice))
        if choice.tier != "cooling":
            break
    if not choices:
        raise NoEligibleModel(
            f"no model can take a {request_class!r} request ({spec.task_type}): none is "
            f"routable, or all are full or excluded ({sorted(exclude)})"
        )
    size, choice = choices[-1] if choices[-1][1].tier != "cooling" else choices[0]
    fallbacks = [choice.model, *choice.fallbacks]
    for _, other in choices:
        fallbacks += [m for m in (other.model, *other.fallbacks) if m not in fallbacks]
    everyone = [m.name for m in registry.routable_models(spec.task_type)]
    fallbacks += [m for m in everyone if m not in fallbacks and m not in exclude]
    reason = f"class {request_class} wants a {spec.size_class} model"
    if size != spec.size_class:
        reason += f"; none can take it, so a {size} one"
    reason += f"; {choice.model}: {choice.reason}"

    canary = split_canary(job_id, choice.model, registry)
    model, arm = choice.model, canary.arm
    if canary.arm == "canary":
        if canary.model in live:
            cooldowns.observe(live[canary.model], now_s)
        if canary.model in exclude or cooldowns.is_cooling(canary.model, now_s):
            arm = "primary"
            reason += f"; canary {canary.model} skipped (cooling down or excluded)"
        else:
            model = canary.model
            reason += f"; canary slice (bucket {canary.bucket:.3f}) sent it to {canary.model}"
    return RouteDecision(
        request_class=request_class,
        task_type=spec.task_type,
        model=model,
        arm=arm,
        reason=reason,
        fallbacks=tuple(m for m in fallbacks if m != model),
    )

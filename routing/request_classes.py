"""Task-aware routing: which class a request belongs to, and which model that class deserves.

Seed 001's rule: greetings and FAQs to a small model, hard tasks (contract parsing, technical
documents) to a large one. The classes and their example requests live in
``routing/request_classes.toml``; a nearest-prototype classifier compares a request's embedding
with the examples' embeddings. The embedder is a parameter (the worker has one loaded; tests
build MiniLM), so this module imports neither torch nor sentence-transformers.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infermq.errors import ConfigError, NoEligibleModel, UnknownRequestClass
from infermq.jobs import ChatMessage, JobInput, TaskType
from routing.canary import Arm, split_canary
from routing.metrics import ModelMetrics
from routing.qos import ErrorCooldowns, QosChoice, QosPolicy, choose_by_qos
from routing.registry import Registry

SHIPPED_REQUEST_CLASSES = Path(__file__).with_name("request_classes.toml")
MAX_CLASSIFIED_CHARS = 2000
MAX_INSTRUCTION_CHARS = 120

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
    min_chars: int = Field(default=0, ge=0, description="shorter requests are rarely this class")
    max_chars: int | None = Field(default=None, ge=1, description="longer ones rarely are")

    def length_fits(self, chars: int) -> bool:
        return chars >= self.min_chars and (self.max_chars is None or chars <= self.max_chars)


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
    the first colon, question mark or line break say what kind of task it is.
    """
    cut = min((i for i in (text.find(":"), text.find("?"), text.find("\n")) if i > 0), default=-1)
    if cut <= 0 or cut > MAX_INSTRUCTION_CHARS or not text[cut + 1 :].strip():
        return None
    return text[:cut].strip()


@dataclass(frozen=True)
class Classification:
    """A request's class, with every class's score (mean similarity of its nearest examples)."""

    request_class: str
    score: float
    scores: Mapping[str, float]

    @property
    def margin(self) -> float:
        """How far the winner leads the runner-up: a low margin is a doubtful call."""
        ordered = sorted(self.scores.values(), reverse=True)
        return ordered[0] - ordered[1] if len(ordered) > 1 else ordered[0]


class PrototypeClassifier:
    """Nearest-prototype classification over the classes' example requests.

    A class's score for a request is the mean cosine similarity of its ``top_k`` most similar
    examples: one centroid per class blurs a class as varied as "hard" (contracts and device
    drivers), while a single nearest example is noisy; the mean of a few is neither. A request
    of the shape "instruction: payload" is scored on the whole text and on its instruction
    alone, and a class's score is the two blended with ``head_weight`` on the instruction (see
    ``instruction_head``). Length is the one signal besides meaning: a contract to parse comes
    with the contract, so a class whose ``min_chars``/``max_chars`` excludes the request's
    length loses ``length_penalty`` (a soft prior: a strong match still wins).
    """

    def __init__(
        self,
        classes: Mapping[str, RequestClass],
        embed: Embed,
        top_k: int = 3,
        head_weight: float = 0.6,
        length_penalty: float = 0.15,
    ) -> None:
        if not classes:
            raise ConfigError("the request classifier needs at least one request class")
        self.classes = dict(classes)
        self.embed = embed
        self.top_k = top_k
        self.head_weight = head_weight
        self.length_penalty = length_penalty
        self._names = list(self.classes)
        texts = [ex for name in self._names for ex in self.classes[name].examples]
        self._owners = np.array(
            [i for i, name in enumerate(self._names) for _ in self.classes[name].examples]
        )
        self._prototypes = np.asarray(embed(texts), dtype=np.float32)

    def classify(self, texts: list[str]) -> list[Classification]:
        """The class of each text, in order."""
        if not texts:
            return []
        heads = [instruction_head(t) for t in texts]
        extra = [h for h in heads if h is not None]
        vectors = np.asarray(self.embed(texts + extra), dtype=np.float32)
        similarity = vectors @ self._prototypes.T
        head_rows: list[int | None] = []
        next_row = len(texts)
        for h in heads:
            head_rows.append(next_row if h is not None else None)
            next_row += h is not None
        results = []
        for row_index, row in enumerate(similarity[: len(texts)]):
            head_row = head_rows[row_index]
            scores = {}
            for i, name in enumerate(self._names):
                score = self._class_score(row, i)
                if head_row is not None:
                    score = (1 - self.head_weight) * score + self.head_weight * self._class_score(
                        similarity[head_row], i
                    )
                if not self.classes[name].length_fits(len(texts[row_index])):
                    score -= self.length_penalty
                scores[name] = score
            best = max(scores, key=lambda n: scores[n])
            results.append(Classification(request_class=best, score=scores[best], scores=scores))
        return results

    def _class_score(self, similarities: np.ndarray, class_index: int) -> float:
        mine = np.sort(similarities[self._owners == class_index])[::-1][: self.top_k]
        return float(mine.mean())


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

"""The result cache's keys and policy: pure functions of a job, shared by the producer and the
worker (the exact tier's store is ``stores/exact_cache.py``).

A cached answer is only ever served for the same task type, model, model revision and output
parameters: all of them go into the entry's namespace, so a new revision invalidates every older
entry at once (they stop matching and age out through LFU and TTL). Inside a namespace the exact
tier keys an entry by a hash of the normalized input; the semantic tier (``workers/
semantic_cache.py``) finds paraphrases among the same entries.

No I/O here: no Redis, no torch, no ``workers`` import.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Protocol

from infermq.jobs import ChatMessage, GenerationParams, JobInput, TaskType
from infermq.registry import ModelSpec, TaskTypePolicy

NORMALIZER_VERSION = 1

_DASHES = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\u2010\u2011"), "-")
_QUOTES = dict.fromkeys(map(ord, "\u2018\u2019\u02bc`"), "'")
# Characters that change what is asked: arithmetic, comparison, currency, ids, degrees.
_OPERATORS = r"+\-*/^%=<>$€£#@&°"


def normalize_text(text: str) -> str:
    """The input as the exact tier compares it: the same question typed differently is equal.

    NFKC, casefold and whitespace are folded, and punctuation that carries no meaning is
    dropped (``?``, ``!``, quotes, commas between words, a sentence's final period), but
    operators, signs, decimal points, thousands separators and times are kept, so "2+3" and
    "2-3", "-5" and "5", "3.5" and "35" stay apart while "What is 2 + 3?" and "what is 2+3"
    meet.
    """
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000 -> 1000
    # Keep '.', ',' and ':' only inside a number or an identifier (3.5, 10:30, file.txt).
    text = re.sub(r"(?<![0-9a-z_])[.,:]|[.,:](?![0-9a-z_])", " ", text)
    text = re.sub(rf"[^\w\s.,:'{_OPERATORS}]", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes
    text = re.sub(rf"\s*([{_OPERATORS}])\s*", r"\1", text)
    text = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", text)  # two-factor == two factor
    return " ".join(text.split())


def _normalized_input(value: JobInput) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    return [
        normalize_text(item) if isinstance(item, str) else [item.role, normalize_text(item.content)]
        for item in value
    ]


def _digest(payload: Any, size: int = 32) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:size]


def exact_hash(value: JobInput) -> str:
    """The exact-tier id of an input: a hash of its normalized form."""
    return _digest([NORMALIZER_VERSION, _normalized_input(value)])


def cache_namespace(task_type: TaskType | str, spec: ModelSpec, params: GenerationParams,
                    context: str = "") -> str:
    """Where the entries of one (task type, model, revision, output parameters) live.

    Generation parameters only change a ``generate`` output, so they key only that task type;
    ``context`` separates semantic entries whose chat history differs. The readable head
    (task and model) is for operators; the digest is what keeps namespaces apart.
    """
    task = str(task_type)
    fields: dict[str, Any] = {"task": task, "model": spec.name, "revision": spec.revision,
                              "context": context}
    if task == TaskType.GENERATE:
        fields["params"] = params.model_dump(mode="json")
    return f"{task}:{spec.name}:{_digest(fields, 16)}"


def semantic_text(value: JobInput) -> tuple[str, str] | None:
    """(text to embed, context digest) when an input can be matched by meaning, else None.

    A single text, or a chat whose last message is the user's: the earlier messages must then
    match exactly (their digest goes into the namespace). Lists of texts (batch embeddings)
    only use the exact tier.
    """
    if isinstance(value, str):
        return value, ""
    if value and isinstance(value[-1], ChatMessage) and value[-1].role == "user":
        history = [m for m in value[:-1] if isinstance(m, ChatMessage)]
        return value[-1].content, (_digest(_normalized_input(history), 16) if history else "")
    return None


class CacheableJob(Protocol):
    """The fields of a ``JobRequest`` or ``JobMessage`` the cache reads."""

    @property
    def task_type(self) -> TaskType: ...
    @property
    def input(self) -> JobInput: ...
    @property
    def params(self) -> GenerationParams: ...
    @property
    def session_id(self) -> str | None: ...


def cache_policy_allows(task_type: TaskType | str, params: GenerationParams,
                        session_id: str | None, spec: ModelSpec, policy: TaskTypePolicy) -> bool:
    """Whether a job's answer may be served from, and written to, the cache.

    ``embed`` and ``classify`` are deterministic: cacheable. ``generate`` is cacheable at
    temperature 0 (greedy decoding gives one answer); sampling at temperature > 0 is not, since
    a repeat should give a fresh sample, unless the task type's policy sets ``cache_sampled``
    (the seed and temperature are then part of the key). Jobs of a session are never cached:
    their answer depends on the session's context, which is not part of the key. The task
    type's policy and the model may switch caching off.
    """
    if session_id is not None or not (policy.cacheable and spec.cacheable):
        return False
    if str(task_type) == TaskType.GENERATE and params.temperature > 0:
        return policy.cache_sampled
    return True

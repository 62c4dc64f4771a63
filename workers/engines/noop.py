"""The noop engine: trivial outputs at once, for plumbing tests and the pipeline benchmark.

Outputs are deterministic functions of the input, so a test can check that the right result
reached the right job: embed gives a unit vector derived from a hash of the text, generate
echoes the prompt (truncated to ``max_new_tokens`` words, streamed word by word), classify
labels a text by the parity of its hash.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence

from infermq.jobs import TaskType
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest, chats_of, texts_of

EMBEDDING_DIM = 16
LABELS = ("even", "odd")


def hash_embedding(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A unit vector that depends only on ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    values = [digest[i % len(digest)] - 127.5 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class NoopEngine(Engine):
    """Answers every request without a model."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def compatibility_key(self, request: EngineRequest) -> Hashable:
        return (request.task_type,)

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        return [self._run_one(request) for request in requests]

    def _run_one(self, request: EngineRequest) -> EngineOutput:
        if request.task_type == TaskType.GENERATE:
            replies = [self._echo(request, chat[-1]["content"]) for chat in chats_of(request)]
            output: object = replies if request.is_multi_input else replies[0]
            return EngineOutput(output, tokens=sum(len(r.split()) for r in replies))
        texts = texts_of(request)
        if request.task_type == TaskType.EMBED:
            values: list[object] = [hash_embedding(text) for text in texts]
        else:
            values = [self._label(text) for text in texts]
        tokens = sum(len(text.split()) for text in texts)
        return EngineOutput(values if request.is_multi_input else values[0], tokens=tokens)

    def _echo(self, request: EngineRequest, prompt: str) -> str:
        words = prompt.split()[: request.params.max_new_tokens]
        pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        for step, piece in enumerate(pieces):
            if request.on_token is not None and not request.is_multi_input:
                request.on_token(piece)
            self.notify_step(step)
        return "".join(pieces)

    @staticmethod
    def _label(text: str) -> dict[str, object]:
        odd = hashlib.sha256(text.encode()).digest()[0] % 2
        return {"label": LABELS[odd], "scores": {LABELS[odd]: 1.0, LABELS[1 - odd]: 0.0}}

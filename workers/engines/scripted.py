"""An engine for plumbing tests, driven by its input text; only with ``test_hooks`` on.

Inputs that start with an instruction change its behaviour, so a test can hold a job inside
the engine, kill the worker there, or make one job fail:

- ``gate:<name> ...``: announce arrival on ``test_gate_entered(name)``, then block until the
  test pushes to ``test_gate(name)``, then obey the rest (``gate:<name> crash``: a crash the
  test lets happen);
- ``... pause:<name> ...`` (a later word of a generate input): the same gate, reached after the
  words before it were streamed, so a test sees a job paused mid-generation;
- ``crash ...``: kill the worker process (SIGKILL), as a segfaulting model would;
- ``fail ...``: fail this job alone with ``EngineInputError``;
- a model whose registry ``source`` is ``"fail"``: its ``load`` raises ``EngineError``;
- anything else: embed → 8 floats derived from the text, generate → the text echoed back one
  word per step (a chat: every turn it saw, prefixed by the model's name), classify → a fixed
  label.

It talks to Redis for its gates, which is why it is not one of the portable engines.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Sequence

import redis

from infermq.errors import EngineError, EngineInputError
from infermq.jobs import ChatMessage, TaskType
from infermq.keys import RedisKeys
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest, texts_of

GATE_TIMEOUT_S = 300


class ScriptedEngine(Engine):
    """Deterministic outputs and test gates; no model weights."""

    __test__ = False  # not a pytest test class

    def __init__(self, spec: ModelSpec, client: redis.Redis, keys: RedisKeys) -> None:
        super().__init__(spec)
        self.client = client
        self.keys = keys

    def load(self) -> None:
        # A model whose registry source is "fail" cannot be loaded: tests of the cold start.
        if self.spec.source == "fail":
            raise EngineError(f"the test engine was told to fail loading {self.spec.name}")
        return None

    def warm_up(self) -> None:
        return None

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        return [self._run_one(request) for request in requests]

    def _run_one(self, request: EngineRequest) -> EngineOutput:
        if isinstance(request.input, list) and request.input and isinstance(
            request.input[0], ChatMessage
        ):
            # A chat (a session's history and this turn): answer with every turn it saw.
            self._obey(request.input[-1].content)
            seen = " / ".join(m.content for m in request.input)
            return EngineOutput(output=f"[{self.spec.name}] {seen}", tokens=len(request.input))
        texts = texts_of(request)
        outputs = []
        for text in texts:
            self._obey(text)
            outputs.append(self._answer(request, text))
        single = isinstance(request.input, str) or not request.is_multi_input
        return EngineOutput(output=outputs[0] if single else outputs, tokens=len(texts))

    def _obey(self, text: str) -> None:
        word = text.split(maxsplit=1)[0] if text.strip() else ""
        if word.startswith("gate:"):
            self._wait_at_gate(word.removeprefix("gate:"), text)
            self._obey(text.strip().removeprefix(word))
        elif word == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif word == "fail":
            raise EngineInputError(f"the test engine was told to fail on {text!r}")

    def _wait_at_gate(self, name: str, text: str) -> None:
        self.client.rpush(self.keys.test_gate_entered(name), text)
        self.client.blpop([self.keys.test_gate(name)], timeout=GATE_TIMEOUT_S)

    def _answer(self, request: EngineRequest, text: str) -> object:
        if request.task_type == TaskType.EMBED:
            digest = hashlib.sha256(text.encode()).digest()
            return [b / 255.0 for b in digest[:8]]
        if request.task_type == TaskType.CLASSIFY:
            return {"label": "test", "scores": {"test": 1.0}}
        pieces = []
        for step, word in enumerate(text.split()[: request.params.max_new_tokens]):
            if step > 0 and word.startswith("pause:"):
                self._wait_at_gate(word.removeprefix("pause:"), text)
            piece = word if step == 0 else " " + word
            pieces.append(piece)
            if request.on_token is not None:
                request.on_token(piece)
            self.notify_step(step)
        return "".join(pieces)

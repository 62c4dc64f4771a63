"""The engine protocol: what the batcher asks of any model runtime (torch, vLLM, noop, test).

An engine owns one model. ``run_batch`` runs several requests together and answers one output
per request, in order; the batcher decides what goes into a batch, the engine only how to run
it. Engines import only torch, transformers, numpy, the stdlib and the contracts, never Celery,
Redis or SQLAlchemy, so they run in-process on a machine that has none of the services.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from infermq.errors import EngineError
from infermq.jobs import ChatMessage, GenerationParams, JobInput, TaskType
from infermq.registry import ModelSpec

StepHook = Callable[[int], None]
"""Called by a generating engine after each decoding step with the step's index (0-based)."""


@dataclass
class EngineRequest:
    """One job's work for an engine: a single input or several (a list of texts)."""

    job_id: str
    task_type: TaskType
    input: JobInput
    params: GenerationParams = field(default_factory=GenerationParams)
    priority: int = 5
    timeout_s: float = 60.0
    on_token: Callable[[str], None] | None = None
    # Set by the batcher at submit: a generating engine stops a row whose deadline passed.
    deadline_monotonic: float | None = None
    # Set by ``Engine.prepare`` in the submitting thread (token ids, or the input's error).
    prepared: Any = None

    @property
    def input_count(self) -> int:
        """How many inputs this request adds to a batch: texts count one each, a chat one."""
        if isinstance(self.input, list) and self.input and isinstance(self.input[0], str):
            return len(self.input)
        return 1

    @property
    def is_multi_input(self) -> bool:
        """True when the output is a list, one per input (the input is a list of texts)."""
        return isinstance(self.input, list) and bool(self.input) and isinstance(
            self.input[0], str)

    def expired(self, now_monotonic: float | None = None) -> bool:
        if self.deadline_monotonic is None:
            return False
        return (now_monotonic or time.monotonic()) >= self.deadline_monotonic


@dataclass
class EngineOutput:
    """One request's result. ``error`` set means that request alone failed."""

    output: Any
    tokens: int = 0
    error: BaseException | None = None


def texts_of(request: EngineRequest) -> list[str]:
    """The request's inputs as a list of texts (a chat is rejected: it is not a text).

    Raises:
        EngineError: the input is a list of chat messages.
    """
    if isinstance(request.input, str):
        return [request.input]
    if request.is_multi_input:
        return list(request.input)  # type: ignore[arg-type]
    raise EngineError(f"job {request.job_id}: {request.task_type} takes texts, not chat messages")


def chats_of(request: EngineRequest) -> list[list[dict[str, str]]]:
    """The request's inputs as conversations: a text becomes one user turn."""
    if isinstance(request.input, str):
        return [[{"role": "user", "content": request.input}]]
    chats: list[list[dict[str, str]]] = []
    turns: list[dict[str, str]] = []
    for item in request.input:
        if isinstance(item, str):
            chats.append([{"role": "user", "content": item}])
        elif isinstance(item, ChatMessage):
            turns.append({"role": item.role, "content": item.content})
        else:  # a message that arrived as a plain mapping, not yet validated into ChatMessage
            turns.append({"role": str(item["role"]), "content": str(item["content"])})
    return chats if chats else [turns]


class Engine(ABC):
    """A loaded model that runs batches of requests. Not thread-safe: one batcher thread owns it.

    Lifecycle: ``load`` → ``warm_up`` → any number of ``run_batch`` → ``unload``.
    """

    spec: ModelSpec
    supports_continuous_batching: bool = False
    """True for engines that schedule requests themselves (vLLM): the batcher then hands each
    request to ``submit`` at once instead of closing batches."""
    launches_gpu_work: bool = False
    """True when the batcher thread spends its time in Python launching GPU kernels: the
    batcher then shortens the GIL switch interval (see ``Batcher.start``). On the CPU, or for
    engines that do nothing, a short interval only makes the task threads thrash the GIL."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._step_hook: StepHook | None = None

    @abstractmethod
    def load(self) -> None:
        """Loads the weights onto the device.

        Raises:
            EngineUnavailable: the runtime or the weights are missing.
        """

    def warm_up(self) -> None:
        """Runs a small batch of each task kind so the first job does not pay for allocation."""
        for task in self.spec.task_types:
            if task != TaskType.AUTO:
                self.run_batch([EngineRequest(job_id="warm-up", task_type=task, input="warm up",
                                              params=GenerationParams(max_new_tokens=2))])

    def prepare(self, request: EngineRequest) -> None:
        """Does a request's CPU-side work (tokenizing) ahead, in the thread that submits it.

        The batcher calls it from ``submit``, so the task slots tokenize the next jobs while
        the engine runs the current batch. It must not raise and must not touch the device;
        ``run_batch`` does the work itself for requests that were not prepared.
        """
        return None

    @abstractmethod
    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        """Runs ``requests`` together; one output per request, in order.

        A request the engine cannot run alone may come back with ``error`` set; an exception
        raised from here fails the whole call, and the batcher then retries the requests in
        smaller groups to find the one that caused it.
        """

    def unload(self) -> None:
        """Frees the model's memory. The engine can be loaded again."""
        return None

    @property
    def memory_mib(self) -> int:
        """Device memory the model needs: the registry's figure until loaded, then measured."""
        return self.spec.memory_mib

    def compatibility_key(self, request: EngineRequest) -> Hashable:
        """Requests with equal keys may share a batch.

        By default a batch holds one task kind and one set of parameters; engines that sample
        per row (the torch engine) relax this.
        """
        if request.task_type == TaskType.GENERATE:
            return (request.task_type, request.params)
        return (request.task_type,)

    def set_step_hook(self, hook: StepHook | None) -> None:
        """Installs the callback a generating engine calls after every decoding step."""
        self._step_hook = hook

    def notify_step(self, step: int) -> None:
        if self._step_hook is not None:
            self._step_hook(step)

    def submit(self, request: EngineRequest) -> Future[EngineOutput]:
        """Schedules one request on an engine that batches continuously.

        Raises:
            EngineError: this engine batches through ``run_batch`` only.
        """
        raise EngineError(f"engine {type(self).__name__} has no continuous batching")

    def cancel(self, request: EngineRequest) -> None:
        """Stops work on a request submitted with ``submit`` (its deadline passed)."""
        return None

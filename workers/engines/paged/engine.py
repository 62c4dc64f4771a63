"""The paged engine: generation batched per step over a paged KV arena (registry ``paged``).

``PagedEngine`` batches continuously (``supports_continuous_batching``): the batcher hands it
each request at once through ``submit``, and its own thread runs ``EngineCore.step`` in a
loop. Every step, sequences that ended leave (their future completes then, so the worker
commits and acks that job while the others keep decoding), new ones are admitted by urgency
(the batcher's ``urgency_key``, aging included), and a waiting job of strictly higher base
priority preempts the lowest running one when no room is left (``scheduler`` says the rules).
Tokens stream per step. The step hook (``set_step_hook``) is called in the engine thread after
every step, which is where tests hold the engine at a gate.

Only ``generate`` is served; embeddings and classification stay on the ``torch`` engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infermq.errors import (
    ConfigError,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    JobTimedOut,
)
from infermq.jobs import TaskType
from infermq.registry import ModelSpec
from workers.batching import DEFAULT_AGING_MS, settle_future, urgency_key
from workers.engines.base import Engine, EngineOutput, EngineRequest, chats_of
from workers.engines.generation import GenerationRow, final_text
from workers.engines.paged.scheduler import Sequence as PagedSequence
from workers.engines.sources import prepare_model

log = logging.getLogger(__name__)

BLOCK_SIZE = 16
DEFAULT_KV_CACHE_MIB = 64


@dataclass(eq=False)
class _Job:
    """One request in flight: its sequences (one per prompt) and its future."""

    request: EngineRequest
    future: Future[EngineOutput]
    rows: list[GenerationRow] = field(default_factory=list)
    seqs: list[PagedSequence] = field(default_factory=list)
    left: int = 0



class PagedEngine(Engine):
    """A GPT-2 or Llama causal LM served by the paged, continuously batching core."""

    supports_continuous_batching = True

    def __init__(self, spec: ModelSpec, models_dir: Path, device: str | None = None,
                 dtype: str | None = None, cuda_graphs: bool = True,
                 kv_cache_mib: int | None = None, max_num_seqs: int | None = None,
                 aging_ms: float | None = DEFAULT_AGING_MS) -> None:
        super().__init__(spec)
        if set(spec.task_types) - {TaskType.GENERATE, TaskType.AUTO}:
            raise ConfigError(
                f"model {spec.name}: the paged engine serves generate only; use the torch "
                "engine for embed and classify")
        from workers.engines.torch_engine import choose_device, choose_dtype

        self.models_dir = models_dir
        self.device = choose_device(device)
        self.dtype = choose_dtype(dtype, self.device)
        self.launches_gpu_work = self.device.type == "cuda"
        self.cuda_graphs = cuda_graphs
        self.kv_cache_mib = kv_cache_mib or spec.kv_cache_mib or DEFAULT_KV_CACHE_MIB
        self.max_num_seqs = max_num_seqs or spec.max_batch_size
        self.aging_ms = aging_ms
        self.model: Any = None
        self.tokenizer: Any = None
        self.core: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._inbox: deque[_Job] = deque()
        self._cancels: deque[EngineRequest] = deque()
        self._jobs: dict[int, _Job] = {}  # by id(request): job ids may repeat (warm-up)
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.first_token_at: dict[str, float] | None = None
        """When set to a dict (the benchmark does), job id → time.monotonic() of its first
        token."""

    # --- lifecycle ----------------------------------------------------------------------

    def load(self) -> None:
        """Loads the weights, sizes the KV arena from ``kv_cache_mib`` and starts the loop.

        Raises:
            EngineUnavailable: the weights cannot be found or loaded, or are not GPT-2/Llama.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = prepare_model(self.spec, self.models_dir)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(
                f"cannot load model {self.spec.name} from {path}: {e}; run "
                "`infermq models --prepare` to rebuild it") from e
        self.load_model(model.to(self.device).eval(), self.tokenizer)

    def load_model(self, model: Any, tokenizer: Any) -> None:
        """Serves an already loaded transformers model (``load`` and the benchmark use it)."""
        from workers.engines.paged.core import EngineCore

        self.model, self.tokenizer = model, tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self._eos_ids = frozenset(eos if isinstance(eos, list) else [eos]) - {None}
        config = model.config
        layers = getattr(config, "num_hidden_layers", None) or config.n_layer
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        hidden = getattr(config, "hidden_size", None) or config.n_embd
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        element = next(model.parameters()).element_size()
        block_bytes = 2 * layers * BLOCK_SIZE * kv_heads * head_dim * element
        num_blocks = max(1, self.kv_cache_mib * 2**20 // block_bytes)
        try:
            self.core = EngineCore(model, num_blocks, BLOCK_SIZE, self.max_num_seqs,
                                   cuda_graphs=self.cuda_graphs,
                                   scheduler_key=self._urgency)
        except ValueError as e:
            raise EngineUnavailable(f"model {self.spec.name}: {e}") from e
        self._max_positions = self.core.model.max_positions
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"paged-{self.spec.name}",
                                        daemon=True)
        self._thread.start()

    def _urgency(self, seq: PagedSequence, sequence: int) -> tuple[float, int]:
        return urgency_key(seq.priority, time.monotonic() * 1000, sequence, self.aging_ms)

    def warm_up(self) -> None:
        """Captures the decode graphs (CUDA) and runs one short job through the loop."""
        if self.core is not None:
            self.core.warm_up(min(self._max_positions, 1024))
        super().warm_up()

    def unload(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for held in list(self._jobs.values()) + list(self._inbox):
            settle_future(held.future, None, EngineError(
                f"job {held.request.job_id} was not finished: the engine was unloaded"))
        self._jobs.clear()
        self._inbox.clear()
        self.model = self.core = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    @property
    def memory_mib(self) -> int:
        if self.model is None:
            return self.spec.memory_mib
        tensors = [*self.model.parameters(), *self.model.buffers()]
        weights = sum(t.numel() * t.element_size() for t in tensors) // 2**20
        return weights + self.kv_cache_mib

    # --- requests -----------------------------------------------------------------------

    def submit(self, request: EngineRequest) -> Future[EngineOutput]:
        """Queues ``request``; its future ends when all its prompts have.

        Raises:
            EngineError: the engine is not loaded.
        """
        if self.core is None:
            raise EngineError(f"engine {self.spec.name} is not loaded: call load() first")
        future: Future[EngineOutput] = Future()
        future.set_running_or_notify_cancel()
        if request.task_type != TaskType.GENERATE:
            settle_future(future, None, EngineInputError(
                f"job {request.job_id}: the paged engine serves generate, not "
                f"{request.task_type}"))
            return future
        try:
            prompts = self._prompt_ids(request)
        except EngineInputError as e:
            settle_future(future, None, e)
            return future
        params = request.params
        stream = request.on_token if not request.is_multi_input else None
        job = _Job(request, future, left=len(prompts))
        for prompt in prompts:
            row = GenerationRow(prompt, params.max_new_tokens, params.temperature,
                                params.top_p, params.seed, stream)
            job.rows.append(row)
            seq = PagedSequence(prompt, params.max_new_tokens, request.priority, payload=job)
            seq.new_ids = row.new_ids  # one list: the row streams what the sequence makes
            job.seqs.append(seq)
        with self._wakeup:
            self._inbox.append(job)
            self._wakeup.notify()
        return future

    def cancel(self, request: EngineRequest) -> None:
        """Stops ``request``'s sequences at the next step (its deadline passed)."""
        with self._wakeup:
            self._cancels.append(request)
            self._wakeup.notify()

    def in_flight(self) -> dict[str, int]:
        """Job id → tokens generated so far, for every job the loop holds (read it from the
        step hook, where the loop is paused)."""
        return {job.request.job_id: sum(len(row.new_ids) for row in job.rows)
                for job in list(self._jobs.values())}

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        """Submits every request and waits for all; the loop batches them itself."""
        futures = [self.submit(request) for request in requests]
        outputs = []
        for future in futures:
            error = future.exception()
            outputs.append(EngineOutput(None, error=error) if error else future.result())
        return outputs

    def _prompt_ids(self, request: EngineRequest) -> list[list[int]]:
        limit = self._max_positions - request.params.max_new_tokens
        if limit < 1:
            raise EngineInputError(
                f"job {request.job_id}: max_new_tokens {request.params.max_new_tokens} leaves no "
                f"room for a prompt in this model's {self._max_positions} positions")
        prompts = []
        for chat in chats_of(request):
            if getattr(self.tokenizer, "chat_template", None):
                text = self.tokenizer.apply_chat_template(
                    chat, add_generation_prompt=True, tokenize=False)
            else:
                text = "\n".join(turn["content"] for turn in chat)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompts.append(ids[-limit:] or [self.tokenizer.eos_token_id or 0])
        return prompts

    # --- the loop -----------------------------------------------------------------------

    def _take_inbox(self) -> bool:
        """Moves new jobs and cancels into the core; False when stopping."""
        from workers.engines.paged.core import Sampling

        with self._wakeup:
            while not self._inbox and not self._cancels and not self.core.scheduler.has_work:
                if self._stopping:
                    return False
                self._wakeup.wait()
            if self._stopping:
                return False
            jobs, self._inbox = list(self._inbox), deque()
            cancels, self._cancels = list(self._cancels), deque()
        for job in jobs:
            params = job.request.params
            self._jobs[id(job.request)] = job
            for seq in job.seqs:
                try:
                    self.core.add(seq, Sampling(params.temperature, params.top_p, params.seed,
                                                self._eos_ids))
                except ValueError as e:
                    self._fail(job, EngineInputError(f"job {job.request.job_id}: {e}"))
                    break
        for request in cancels:
            cancelled = self._jobs.get(id(request))
            if cancelled is not None:
                self._fail(cancelled, JobTimedOut(
                    f"job {request.job_id} ran past its timeout of {request.timeout_s:g} s "
                    "while generating"))
        return True

    def _fail(self, job: _Job, error: BaseException) -> None:
        for seq in job.seqs:
            if not seq.finished:
                self.core.cancel(seq)
        self._jobs.pop(id(job.request), None)
        settle_future(job.future, None, error)

    def _loop(self) -> None:
        while self._take_inbox():
            try:
                result = self.core.step()
            except Exception as error:  # noqa: BLE001 - every job in flight fails with it
                log.exception("paged engine %s failed a step", self.spec.name)
                for failed in list(self._jobs.values()):
                    self._fail(failed, EngineError(
                        f"job {failed.request.job_id}: the engine failed a step: "
                        f"{type(error).__name__}: {error}"))
                continue
            finished = {id(seq) for seq in result.finished}
            for seq in result.stepped + result.finished:
                job: _Job = seq.payload
                row = job.rows[job.seqs.index(seq)] if len(job.seqs) > 1 else job.rows[0]
                done = id(seq) in finished
                if self.first_token_at is not None and len(seq.new_ids) == 1:
                    self.first_token_at.setdefault(job.request.job_id, time.monotonic())
                if row.on_token is not None:
                    piece = row.stream_piece(self.tokenizer, final=done)
                    if piece:
                        row.on_token(piece)
                if done:
                    job.left -= 1
                    if job.left == 0:
                        self._complete(job)
            self.notify_step(self.steps)
            self.steps += 1

    def _complete(self, job: _Job) -> None:
        self._jobs.pop(id(job.request), None)
        texts = [final_text(row, self.tokenizer) for row in job.rows]
        tokens = sum(len(row.new_ids) for row in job.rows)
        settle_future(job.future, EngineOutput(texts if job.request.is_multi_input else texts[0],
                                         tokens=tokens), None)

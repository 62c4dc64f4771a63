"""The vLLM engine: an adapter over vLLM's asynchronous engine, written against vllm==0.11.0.

vLLM batches continuously (a request joins the running batch at the next step), so the
micro-batcher hands each request straight to ``submit`` instead of closing batches. The API used
is the one vLLM 0.11.0 exports at its top level: ``AsyncEngineArgs``, ``SamplingParams`` and
``AsyncLLMEngine`` (the V1 ``AsyncLLM``), with ``AsyncLLMEngine.from_engine_args(args)``,
``await engine.get_tokenizer()``, ``engine.generate(prompt, sampling_params, request_id,
priority=...)`` (an async generator of cumulative ``RequestOutput``), ``await
engine.abort(request_id)`` and ``engine.shutdown()``. The engine is started with
``scheduling_policy="priority"``; vLLM runs lower priority values first, so infermq's 0–9
(9 most urgent) is passed as ``9 - priority``.

The adapter has only run against a stand-in of that API surface (tests/test_engines.py), not
against a real vLLM yet.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import Any

from infermq.errors import EngineError, EngineInputError, EngineUnavailable
from infermq.jobs import TaskType
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest, chats_of
from workers.engines.sources import prepare_model

PINNED_VLLM = "0.11.0"
HIGHEST_PRIORITY = 9


def import_vllm() -> ModuleType:
    """The vllm module.

    Raises:
        EngineUnavailable: vLLM is not installed.
    """
    try:
        import vllm
    except ImportError as e:
        raise EngineUnavailable(
            f"the vllm engine needs vLLM {PINNED_VLLM}, which is not installed: "
            "pip install 'infermq[vllm]' on a machine with a CUDA GPU, or set the model's "
            "engine to \"torch\" in the registry") from e
    return vllm


class VllmEngine(Engine):
    """Generation on vLLM's AsyncLLMEngine, driven from an event loop on its own thread."""

    supports_continuous_batching = True
    launches_gpu_work = True

    def __init__(self, spec: ModelSpec, models_dir: Path, dtype: str | None = None,
                 gpu_memory_utilization: float = 0.9) -> None:
        super().__init__(spec)
        if set(spec.task_types) - {TaskType.GENERATE}:
            raise EngineUnavailable(
                f"model {spec.name}: the vllm engine serves generate only; use the torch "
                "engine for embed and classify")
        self.models_dir = models_dir
        self.dtype = dtype or "auto"
        self.gpu_memory_utilization = gpu_memory_utilization
        self._vllm: ModuleType | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def load(self) -> None:
        """Starts vLLM on the prepared weights.

        Raises:
            EngineUnavailable: vLLM is not installed or could not start.
        """
        vllm = self._vllm = import_vllm()
        path = prepare_model(self.spec, self.models_dir)
        args = vllm.AsyncEngineArgs(
            model=str(path), dtype=self.dtype, scheduling_policy="priority",
            gpu_memory_utilization=self.gpu_memory_utilization)
        loop = self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=loop.run_forever, name=f"vllm-{self.spec.name}", daemon=True)
        self._loop_thread.start()

        async def start() -> tuple[Any, Any]:
            # AsyncLLM binds its output handler to the running loop: create it on that loop.
            engine = vllm.AsyncLLMEngine.from_engine_args(args)
            return engine, await engine.get_tokenizer()

        try:
            self._engine, self._tokenizer = asyncio.run_coroutine_threadsafe(
                start(), loop).result()
        except Exception as e:
            self.unload()
            raise EngineUnavailable(f"vLLM could not start model {self.spec.name} from {path}: "
                                    f"{e}") from e

    def warm_up(self) -> None:
        # vLLM profiles and captures its CUDA graphs while starting: nothing left to warm.
        return None

    def unload(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join()
            self._loop.close()
            self._loop = None

    def submit(self, request: EngineRequest) -> Future[EngineOutput]:
        """Hands one request to vLLM's scheduler; the future ends when all its prompts have.

        Raises:
            EngineError: the engine is not loaded.
        """
        if self._engine is None or self._loop is None:
            raise EngineError(f"engine {self.spec.name} is not loaded: call load() first")
        return asyncio.run_coroutine_threadsafe(self._generate(request), self._loop)

    def cancel(self, request: EngineRequest) -> None:
        """Aborts every prompt of ``request`` in vLLM (its deadline passed)."""
        if self._engine is None or self._loop is None:
            return
        for request_id in self._request_ids(request):
            asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        """Submits every request and waits for all; vLLM batches them itself."""
        futures = [self.submit(request) for request in requests]
        outputs = []
        for future in futures:
            error = future.exception()
            outputs.append(EngineOutput(None, error=error) if error else future.result())
        return outputs

    def _request_ids(self, request: EngineRequest) -> list[str]:
        count = request.input_count
        return [request.job_id] if count == 1 else [f"{request.job_id}:{i}" for i in range(count)]

    def _prompt(self, chat: list[dict[str, str]]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return str(self._tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False))
        return "\n".join(turn["content"] for turn in chat)

    async def _generate(self, request: EngineRequest) -> EngineOutput:
        if request.task_type != TaskType.GENERATE:
            raise EngineInputError(
                f"job {request.job_id}: the vllm engine serves generate, not {request.task_type}")
        vllm = self._vllm
        if vllm is None:
            raise EngineError(f"engine {self.spec.name} is not loaded: call load() first")
        params = request.params
        sampling = vllm.SamplingParams(
            n=1, max_tokens=params.max_new_tokens, temperature=params.temperature,
            top_p=params.top_p, seed=params.seed)
        stream = request.on_token if not request.is_multi_input else None
        prompts = [self._prompt(chat) for chat in chats_of(request)]
        results = await asyncio.gather(*(
            self._generate_one(prompt, sampling, request_id, request.priority, stream)
            for prompt, request_id in zip(prompts, self._request_ids(request), strict=True)))
        texts = [text for text, _ in results]
        tokens = sum(count for _, count in results)
        return EngineOutput(texts if request.is_multi_input else texts[0], tokens=tokens)

    async def _generate_one(self, prompt: str, sampling: Any, request_id: str, priority: int,
                            stream: Any) -> tuple[str, int]:
        text, tokens = "", 0
        async for output in self._engine.generate(
                prompt, sampling, request_id, priority=HIGHEST_PRIORITY - priority):
            completion = output.outputs[0]
            # Outputs are cumulative: the new piece is what the text gained since the last one.
            if stream is not None and len(completion.text) > len(text):
                stream(completion.text[len(text):])
            text, tokens = completion.text, len(completion.token_ids)
        return text, tokens
